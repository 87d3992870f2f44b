//! What a write did, on its alerts: the table, the addresses and values it
//! wrote, and the PLC's answer (accepted, an exception, none), with the
//! frame numbers of request and response. The alert waits for the answer
//! (up to the transaction timeout); its line then carries Suricata's
//! `modbus.response` too.

use modbus_synth::{
    adu, exception, write_multiple_registers_request, write_single_coil, write_single_register,
};
use modbus_tests::{fixture, run, write_connection, MS};
use serde_json::{json, Value};

#[test]
fn write_alerts_carry_what_was_written_and_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("writes.pcap");
    write_connection(&cap, |c, w, t| {
        // Frames 4, 5: a register write, echoed (accepted).
        c.send(w, t, true, &adu(1, 1, &write_single_register(7, 42)))?;
        c.send(w, t + MS, false, &adu(1, 1, &write_single_register(7, 42)))?;
        // Frames 6, 7: four registers, refused with "illegal data address".
        c.send(
            w,
            t + 10 * MS,
            true,
            &adu(2, 1, &write_multiple_registers_request(100, &[1, 2, 3, 4])),
        )?;
        c.send(w, t + 11 * MS, false, &adu(2, 1, &exception(16, 2)))?;
        // Frame 8: a coil switched on, never answered; frames 9, 10 (40 s
        // on, past the transaction timeout): another write, answered.
        c.send(
            w,
            t + 20 * MS,
            true,
            &adu(3, 1, &write_single_coil(3, true)),
        )?;
        c.send(
            w,
            t + 40_000 * MS,
            true,
            &adu(4, 1, &write_single_register(8, 1)),
        )?;
        c.send(
            w,
            t + 40_001 * MS,
            false,
            &adu(4, 1, &write_single_register(8, 1)),
        )
    });
    let eve = dir.path().join("eve.json");
    let r = run(&[
        "--pcap",
        cap.to_str().unwrap(),
        "--authorized-writers",
        "10.0.0.99",
        "--eve",
        eve.to_str().unwrap(),
        "--eve-every-event",
    ]);
    assert_eq!(r.exit, Ok(0));
    let lines: Vec<Value> = std::fs::read_to_string(&eve)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|l: &Value| l["modbus_detect"]["type"] == "UNAUTHORIZED_MODBUS_WRITE")
        .collect();
    assert_eq!(lines.len(), 4);
    let by_tid = |tid: u64| {
        lines
            .iter()
            .find(|l| l["modbus"]["request"]["transaction_id"] == tid)
            .unwrap_or_else(|| panic!("no line for transaction {tid}"))
    };
    let accepted = by_tid(1);
    assert_eq!(
        accepted["modbus_detect"]["write"],
        json!({"table": "holding_registers", "address": 7, "count": 1, "values": [42],
               "answer": "accepted", "request_frame": 4, "response_frame": 5})
    );
    assert_eq!(
        accepted["modbus"]["response"]["function_code"],
        "WrSingleReg"
    );
    assert!(accepted["modbus"]["response"].get("exception").is_none());
    let refused = by_tid(2);
    assert_eq!(
        refused["modbus_detect"]["write"],
        json!({"table": "holding_registers", "address": 100, "count": 4, "values": [1, 2, 3, 4],
               "answer": "exception", "exception_code": 2, "exception_name": "Illegal Data Address",
               "request_frame": 6, "response_frame": 7})
    );
    assert_eq!(
        refused["modbus"]["response"]["exception"],
        json!({"raw": 2, "code": "IllegalDataAddr"})
    );
    assert_eq!(refused["modbus"]["response"]["function_raw"], 0x90);
    let unanswered = by_tid(3);
    assert_eq!(
        unanswered["modbus_detect"]["write"],
        json!({"table": "coils", "address": 3, "count": 1, "values": [1],
               "answer": "none", "request_frame": 8})
    );
    assert!(unanswered["modbus"].get("response").is_none());
    // Given up when the timeout passed (at frame 9), not at the end of
    // the capture: its line comes before the later write's.
    let position = |tid: u64| {
        lines
            .iter()
            .position(|l| l["modbus"]["request"]["transaction_id"] == tid)
            .unwrap()
    };
    assert!(
        position(3) < position(4),
        "the unanswered write waited for the end"
    );
    // The report's entries say the same; the lines validate as Suricata's.
    let entries: Vec<&Value> = r.report()["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["type"] == "UNAUTHORIZED_MODBUS_WRITE")
        .collect();
    let answers: std::collections::BTreeSet<&str> = entries
        .iter()
        .map(|a| a["write"]["answer"].as_str().unwrap())
        .collect();
    assert_eq!(
        answers,
        ["accepted", "exception", "none"].into_iter().collect()
    );
    let mut schema: Value =
        serde_json::from_slice(&std::fs::read(fixture("suricata/schema.json")).unwrap()).unwrap();
    schema["properties"]["modbus_detect"] = json!({"type": "object"});
    let v = jsonschema::validator_for(&schema).unwrap();
    for l in &lines {
        let errors: Vec<String> = v.iter_errors(l).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}");
    }
    assert_eq!(r.report()["counters"]["write_alerts_not_held"], 0);
}
