//! `--dump-adus`: every ADU with what it carries (values written and read,
//! FC 23's two parts, FC 22's masks, FC 43/14 objects), the response's
//! request by frame, Zeek's function name, and ICSNPP's field names.

use modbus_synth::{
    adu, mask_write_request, read_bits_response, read_device_id_request, read_device_id_response,
    read_registers_response, read_request, read_write_multiple_request,
    write_multiple_registers_request, write_multiple_registers_response,
};
use modbus_tests::{run, write_connection, MS};
use serde_json::{json, Value};

#[test]
fn the_dump_says_what_each_adu_carries() {
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("mix.pcap");
    write_connection(&cap, |c, w, t| {
        c.send(w, t, true, &adu(1, 1, &read_request(3, 100, 2)))?; // 4
        c.send(
            w,
            t + MS,
            false,
            &adu(1, 1, &read_registers_response(3, &[7, 65535])),
        )?; // 5
        c.send(w, t + 2 * MS, true, &adu(2, 1, &read_request(1, 8, 3)))?; // 6
        c.send(
            w,
            t + 3 * MS,
            false,
            &adu(2, 1, &read_bits_response(1, &[true, false, true])),
        )?; // 7
        c.send(
            w,
            t + 4 * MS,
            true,
            &adu(3, 1, &write_multiple_registers_request(20, &[1, 2])),
        )?; // 8
        c.send(
            w,
            t + 5 * MS,
            false,
            &adu(3, 1, &write_multiple_registers_response(20, 2)),
        )?; // 9
        c.send(
            w,
            t + 6 * MS,
            true,
            &adu(4, 1, &read_write_multiple_request(0, 1, 30, &[9])),
        )?; // 10
        c.send(
            w,
            t + 7 * MS,
            true,
            &adu(5, 1, &mask_write_request(40, 0xF0F0, 0x0001)),
        )?; // 11
        c.send(
            w,
            t + 8 * MS,
            true,
            &adu(6, 1, &read_device_id_request(1, 0)),
        )?; // 12
        c.send(
            w,
            t + 9 * MS,
            false,
            &adu(
                6,
                1,
                &read_device_id_response(1, &[(0, b"ACME"), (1, b"PLC-9")]),
            ),
        )?; // 13
        Ok(())
    });
    let dump = dir.path().join("adus.jsonl");
    let r = run(&[
        "--pcap",
        cap.to_str().unwrap(),
        "--dump-adus",
        dump.to_str().unwrap(),
    ]);
    assert_eq!(r.exit, Ok(0));
    let adus: Vec<Value> = std::fs::read_to_string(&dump)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let at = |frame: u64| {
        adus.iter()
            .find(|a| a["frame"] == frame)
            .unwrap_or_else(|| panic!("frame {frame}"))
    };
    let read_req = at(4);
    assert_eq!(
        (
            &read_req["source_h"],
            &read_req["destination_p"],
            &read_req["is_orig"],
            &read_req["request_response"]
        ),
        (
            &json!("10.0.0.20"),
            &json!(502),
            &json!(true),
            &json!("REQUEST")
        )
    );
    assert_eq!(
        (&read_req["func"], &read_req["function_name"]),
        (
            &json!("READ_HOLDING_REGISTERS"),
            &json!("Read Holding Registers")
        )
    );
    assert_eq!(
        (&read_req["address"], &read_req["quantity"]),
        (&json!(100), &json!(2))
    );
    let read_resp = at(5);
    assert_eq!(read_resp["values"], json!([7, 65535]));
    assert_eq!(
        (
            &read_resp["address"],
            &read_resp["quantity"],
            &read_resp["request_frame"]
        ),
        (&json!(100), &json!(2), &json!(4))
    );
    // The wire fields stay what Wireshark shows: none on a read response.
    assert_eq!(read_resp["reference_num"], Value::Null);
    let coils = at(7);
    assert_eq!(
        coils["values"],
        json!([1, 0, 1]),
        "padding bits cut at the quantity"
    );
    assert_eq!(at(8)["values"], json!([1, 2]));
    assert_eq!(at(9)["request_frame"], 8);
    let rw = at(10);
    assert_eq!(
        (
            &rw["read_start_address"],
            &rw["read_quantity"],
            &rw["write_start_address"],
            &rw["values"]
        ),
        (&json!(0), &json!(1), &json!(30), &json!([9]))
    );
    let mask = at(11);
    assert_eq!(
        (&mask["and_mask"], &mask["or_mask"], &mask["address"]),
        (&json!(0xF0F0), &json!(1), &json!(40))
    );
    let id = at(13);
    assert_eq!(
        id["objects"],
        json!([{"id": 0, "name": "vendor_name", "value": "ACME"}, {"id": 1, "name": "product_code", "value": "PLC-9"}])
    );
    assert_eq!(id["func"], "ENCAP_INTERFACE_TRANSPORT");
    assert_eq!(
        adus.len() as u64,
        r.report()["counters"]["modbus_adus"].as_u64().unwrap()
    );
}

/// A PDU whose byte count disagrees with its data is undecodable on either
/// side: dumped with its error on the side it came from, and alerted on
/// (INVALID_PDU_LENGTH) as the request or the response it was.
#[test]
fn an_undecodable_pdu_is_dumped_and_alerted_on_its_own_side() {
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("bad.pcap");
    write_connection(&cap, |c, w, t| {
        // Frame 4: FC 16, two registers (4 bytes) but a byte count of 3.
        c.send(w, t, true, &adu(7, 1, &[16, 0, 0, 0, 2, 3, 1, 2, 3]))?;
        // Frame 5: a read of two registers; frame 6, its answer with a
        // byte count of 4 over 2 bytes.
        c.send(w, t + MS, true, &adu(8, 1, &read_request(3, 0, 2)))?;
        c.send(w, t + 2 * MS, false, &adu(8, 1, &[3, 4, 0, 7]))?;
        Ok(())
    });
    let (dump, eve) = (dir.path().join("adus.jsonl"), dir.path().join("eve.json"));
    let r = run(&[
        "--pcap",
        cap.to_str().unwrap(),
        "--dump-adus",
        dump.to_str().unwrap(),
        "--eve",
        eve.to_str().unwrap(),
    ]);
    assert_eq!(r.exit, Ok(0));
    let lines = |p: &std::path::Path| -> Vec<Value> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let dumped: Vec<(Value, Value, Value)> = lines(&dump)
        .iter()
        .filter(|a| a["error"].is_string())
        .map(|a| {
            (
                a["frame"].clone(),
                a["request_response"].clone(),
                a["tid"].clone(),
            )
        })
        .collect();
    assert_eq!(
        dumped,
        vec![
            (json!(4), json!("REQUEST"), json!(7)),
            (json!(6), json!("RESPONSE"), json!(8))
        ]
    );
    // Suricata's `modbus` object names the side the alert was raised on.
    let alerted: Vec<(&str, Value)> = lines(&eve)
        .iter()
        .filter(|l| l["modbus_detect"]["type"] == "INVALID_PDU_LENGTH")
        .map(|l| {
            let m = &l["modbus"];
            let side = if m["request"].is_object() {
                "request"
            } else {
                "response"
            };
            (side, m[side]["transaction_id"].clone())
        })
        .collect();
    assert_eq!(alerted, vec![("request", json!(7)), ("response", json!(8))]);
}
