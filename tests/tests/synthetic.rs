//! Captures the tests write themselves, with known attacks: bulk traffic from
//! the generator (coalesced and split ADUs across hundreds of connections),
//! and hand-built TCP conversations that bend reassembly (out of order,
//! retransmitted, overlapping, lost segments, mid-stream pickup).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

use modbus_synth::{
    adu, generate, read_request, write_single_register, Conversation, PcapWriter, SynthConfig,
};
use modbus_tests::{run, write_capture};

const SEC: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;

fn join(ips: &[Ipv4Addr]) -> String {
    ips.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn generated_capture_with_attacks_gives_exact_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("synth.pcap");
    let cfg = SynthConfig {
        frames: 60_000,
        attacks: true,
        adus_per_segment: 3,
        split_adus: true,
        seed: 7,
        ..SynthConfig::default()
    };
    let file = std::fs::File::create(&pcap).unwrap();
    let s = generate(&cfg, std::io::BufWriter::new(file)).unwrap();
    assert_eq!(
        s.attack_requests, 1024,
        "every attack made it into the capture"
    );
    let writer = s
        .unauthorized_writer
        .expect("an unauthorized writer")
        .to_string();
    let r = run(&[
        "--pcap",
        pcap.to_str().unwrap(),
        "--authorized-masters",
        &join(&s.authorized_masters),
        "--authorized-writers",
        &join(&s.authorized_writers),
        "--threads",
        "3",
    ]);
    assert_eq!(r.exit, Ok(0));
    let c = &r.report()["counters"];
    assert_eq!(c["frames"], s.frames);
    // The protocol-id-7 ADU is malformed, and also a request: decoded by
    // its function code's shape, as a server that frames by function code
    // would execute it.
    assert_eq!(c["requests"], s.requests);
    assert_eq!(c["salvaged_requests"], 1);
    assert_eq!(c["responses"], s.responses);
    assert_eq!(c["exceptions"], s.exceptions);
    assert_eq!(c["matched_responses"], s.responses);
    assert_eq!(c["reassembly_gaps"], 0);
    let got: BTreeMap<_, _> = r
        .alert_counts()
        .into_iter()
        .filter(|((t, ..), _)| t != "EXCEPTION_BURST")
        .collect();
    let (rogue, slave) = ("10.9.9.9".to_string(), "10.2.0.1".to_string());
    let key = |t: &str, sev: &str, src: &str| (t.into(), sev.into(), src.into(), slave.clone());
    let want = BTreeMap::from([
        // 1022 well-framed requests, and the protocol-id-7 one.
        (key("ROGUE_MODBUS_MASTER", "CRITICAL", &rogue), 1023),
        (key("UNAUTHORIZED_MODBUS_WRITE", "CRITICAL", &writer), 1),
        // The FC 8 restart changes the operating mode; the FC 43 read of
        // the device's identity is reconnaissance.
        (key("PLC_PROGRAM_OPERATION", "CRITICAL", &rogue), 1),
        (key("DEVICE_ENUMERATION", "HIGH", &rogue), 1),
        (key("MODBUS_FLOOD", "HIGH", &rogue), 1000),
        (key("MALFORMED_MBAP_HEADER", "MEDIUM", &rogue), 1),
    ]);
    assert_eq!(got, want);
}

fn limits(dir: &Path) -> String {
    let p = dir.join("limits.json");
    std::fs::write(&p, r#"{"40011": {"name": "Valve", "min": 0, "max": 100}}"#).unwrap();
    p.display().to_string()
}

const HMI: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 20);
const EWS: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 40);
const PLC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 10);

fn detect(pcap: &Path, dir: &Path) -> modbus_tests::Run {
    let r = run(&[
        "--pcap",
        pcap.to_str().unwrap(),
        "--authorized-masters",
        "10.0.0.20,10.0.0.40",
        "--authorized-writers",
        "10.0.0.20",
        "--register-limits-file",
        &limits(dir),
    ]);
    assert_eq!(r.exit, Ok(0));
    r
}

/// The write from the engineering workstation: unauthorized and out of range.
fn bad_write() -> Vec<u8> {
    adu(9, 1, &write_single_register(10, 5000))
}

fn only_the_bad_write(r: &modbus_tests::Run) {
    let want = BTreeMap::from([
        (
            (
                "REGISTER_VALUE_OUT_OF_RANGE".into(),
                "CRITICAL".into(),
                EWS.to_string(),
                PLC.to_string(),
            ),
            1,
        ),
        (
            (
                "UNAUTHORIZED_MODBUS_WRITE".into(),
                "CRITICAL".into(),
                EWS.to_string(),
                PLC.to_string(),
            ),
            1,
        ),
    ]);
    assert_eq!(r.alert_counts(), want);
}

#[test]
fn evasion_by_segmentation_reordering_and_retransmission_is_seen_through() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("evasion.pcap");
    let w_adu = bad_write();
    write_capture(&pcap, |w| {
        let mut hmi = Conversation::new(HMI, 40001, PLC);
        let mut ews = Conversation::new(EWS, 40002, PLC);
        hmi.handshake(w, SEC)?;
        ews.handshake(w, SEC)?;
        hmi.send(w, 2 * SEC, true, &adu(1, 1, &read_request(3, 0, 10)))?;
        // The write, cut in three, sent last piece first, with a duplicate
        // and an overlapping retransmission.
        ews.send_at(w, 2 * SEC + MS, true, 8, &w_adu[8..])?;
        ews.send_at(w, 2 * SEC + 2 * MS, true, 3, &w_adu[3..8])?;
        ews.send_at(w, 2 * SEC + 3 * MS, true, 3, &w_adu[3..8])?;
        ews.send_at(w, 2 * SEC + 4 * MS, true, 0, &w_adu[..5])?;
        ews.send(w, 2 * SEC + 5 * MS, true, &w_adu)?;
        ews.send(w, 2 * SEC + 6 * MS, false, &w_adu)?;
        // A second, harmless request after the reassembled one.
        ews.send(w, 3 * SEC, true, &adu(10, 1, &read_request(3, 0, 1)))?;
        Ok(())
    });
    let r = detect(&pcap, dir.path());
    only_the_bad_write(&r);
    let c = &r.report()["counters"];
    assert_eq!(c["requests"], 3);
    assert_eq!(c["malformed_adus"], 0);
    assert_eq!(c["reassembly_gaps"], 0);
    assert!(c["out_of_order_segments"].as_u64().unwrap() >= 2);
    assert!(c["retransmitted_segments"].as_u64().unwrap() >= 2);
}

#[test]
fn a_write_after_capture_loss_confirmed_by_the_peer_is_detected_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("loss.pcap");
    write_capture(&pcap, |w| {
        let mut ews = Conversation::new(EWS, 40002, PLC);
        ews.handshake(w, SEC)?;
        let read = adu(1, 1, &read_request(3, 0, 10));
        // The capture sees only the first 6 bytes of the request ...
        ews.send_at(w, 2 * SEC, true, 0, &read[..6])?;
        // ... the rest of it reaches the slave unseen (a throw-away writer) ...
        let mut unseen = PcapWriter::new(Vec::new())?;
        ews.send(&mut unseen, 2 * SEC, true, &read)?;
        // ... whose response acknowledges the whole request.
        ews.send(w, 2 * SEC + MS, false, &adu(1, 1, &[3, 2, 0, 7]))?;
        ews.send(w, 3 * SEC, true, &bad_write())?;
        Ok(())
    });
    let r = detect(&pcap, dir.path());
    only_the_bad_write(&r);
    let c = &r.report()["counters"];
    assert_eq!(c["reassembly_gaps"], 1);
    assert_eq!(
        c["out_of_order_segments"], 0,
        "not held back: the ACK proved the loss"
    );
}

#[test]
fn data_held_behind_a_hole_is_delivered_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("hole.pcap");
    write_capture(&pcap, |w| {
        let mut ews = Conversation::new(EWS, 40002, PLC);
        ews.handshake(w, SEC)?;
        let read = adu(1, 1, &read_request(3, 0, 10));
        // The request is lost entirely and nothing acknowledges it: the
        // write after it waits for the hole to fill until the capture ends.
        ews.send_at(w, 3 * SEC, true, read.len() as i64, &bad_write())?;
        Ok(())
    });
    let r = detect(&pcap, dir.path());
    only_the_bad_write(&r);
    let c = &r.report()["counters"];
    assert_eq!(c["reassembly_gaps"], 1);
    assert_eq!(c["out_of_order_segments"], 1);
}

#[test]
fn mid_stream_pickup_without_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("midstream.pcap");
    write_capture(&pcap, |w| {
        let mut ews = Conversation::new(EWS, 40002, PLC);
        ews.send(w, SEC, true, &adu(1, 1, &read_request(3, 0, 10)))?;
        ews.send(w, 2 * SEC, true, &bad_write())?;
        Ok(())
    });
    only_the_bad_write(&detect(&pcap, dir.path()));
}

/// Values read back are judged too, from a capture through the whole run:
/// a register that enters its out-of-range state alerts once (not on every
/// poll that finds it there), and a read-back rate is measured over at
/// least the time base (1 s), not between two polls close together.
#[test]
fn read_back_values_are_judged_for_range_and_rate() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("readback.pcap");
    write_capture(&pcap, |w| {
        let mut hmi = Conversation::new(HMI, 40001, PLC);
        hmi.handshake(w, SEC)?;
        // Polls of 40011 (range 0-100) and 40012 (at most 10 per second).
        let polls: [(u64, [u16; 2]); 4] = [
            (2 * SEC, [50, 100]),
            // 0.5 s after the reference: no rate judged, however fast.
            (2 * SEC + 500 * MS, [50, 180]),
            // 40011 enters out of range; 40012 changed 5 in 1.5 s.
            (3 * SEC + 500 * MS, [500, 105]),
            // 40011 stays out (no alert); 40012 changed 95 in 1 s.
            (4 * SEC + 500 * MS, [500, 200]),
        ];
        for (tid, (t, values)) in (1u16..).zip(polls) {
            hmi.send(w, t, true, &adu(tid, 1, &read_request(3, 10, 2)))?;
            let resp = modbus_synth::read_registers_response(3, &values);
            hmi.send(w, t + MS, false, &adu(tid, 1, &resp))?;
        }
        Ok(())
    });
    let limits = dir.path().join("limits.json");
    std::fs::write(
        &limits,
        r#"{"40011": {"min": 0, "max": 100}, "40012": {"max_rate": 10}}"#,
    )
    .unwrap();
    let r = run(&[
        "--pcap",
        pcap.to_str().unwrap(),
        "--authorized-masters",
        &HMI.to_string(),
        "--register-limits-file",
        limits.to_str().unwrap(),
    ]);
    assert_eq!(r.exit, Ok(0));
    let got: Vec<_> = r
        .typed()
        .alerts
        .iter()
        .map(|a| {
            let c = &a.common;
            let d = &a.details;
            (
                c.kind.as_str(),
                c.severity.as_str(),
                c.src_ip.to_string(),
                d.register,
                d.value,
                a.count,
            )
        })
        .collect();
    // Raised on what the slave sent: the slave is the source. The report
    // lists the more severe first.
    let plc = PLC.to_string();
    assert_eq!(
        got,
        vec![
            (
                "REGISTER_VALUE_OUT_OF_RANGE",
                "CRITICAL",
                plc.clone(),
                Some(40011),
                Some(500),
                1
            ),
            (
                "REGISTER_VALUE_EXCESSIVE_RATE",
                "HIGH",
                plc,
                Some(40012),
                Some(200),
                1
            ),
        ]
    );
}

/// With several RX queues the two directions of a connection can reach the
/// shard through different queues: a response may overtake its request. The
/// shard holds it briefly and still matches it (live capture turns this on).
#[test]
fn a_response_that_overtakes_its_request_is_still_matched() {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    use modbus_detect::config::limits::RegisterLimits;
    use modbus_detect::config::DetectConfig;
    use modbus_detect::output::report::Summary;

    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("overtake.pcap");
    write_capture(&pcap, |w| {
        let mut hmi = Conversation::new(HMI, 40001, PLC);
        hmi.handshake(w, SEC)?;
        let req = adu(5, 1, &read_request(3, 10, 1));
        // Register 40011 reads back as 5000: out of range.
        let resp = adu(5, 1, &modbus_synth::read_registers_response(3, &[5000]));
        let mut later = PcapWriter::new(Vec::new())?;
        // The response is captured first, its request 20 us later.
        let req_seq = hmi.next_seq(false);
        hmi.send(&mut later, 2 * SEC, true, &req)?;
        hmi.send(w, 2 * SEC, false, &resp)?;
        let mut replay = Conversation::new(HMI, 40001, PLC).with_isn(req_seq, hmi.next_seq(true));
        replay.send(w, 2 * SEC + 20_000, true, &req)?;
        Ok(())
    });
    let limits = RegisterLimits::parse(r#"{"40011": {"min": 0, "max": 100}}"#).unwrap();
    let run = |hold_ns: u64| {
        let mut cfg = DetectConfig {
            limits_file: Some(Arc::new(limits.clone())),
            ..DetectConfig::default()
        };
        cfg.limits.early_response_hold_ns = hold_ns;
        let capture = modbus_detect::source::CaptureFile::open(&pcap).unwrap();
        let out = modbus_detect::runtime::offline::replay(
            Arc::new(cfg),
            &capture,
            modbus_detect::runtime::Plan::Threads(1),
            None,
            &AtomicBool::new(false),
            None,
        )
        .unwrap();
        Summary::merge(&out.dispatch, out.shards)
    };
    let held = run(50_000_000);
    assert_eq!(held.counters.matched_responses, 1);
    assert_eq!(held.counters.unmatched_responses, 0);
    assert_eq!(held.alerts.len(), 1, "the read-back value is checked");
    let strict = run(0);
    assert_eq!(strict.counters.unmatched_responses, 1);
    // Without the request the register is unknown; and as the response
    // acknowledges request bytes the sensor has not seen yet, it is no
    // unsolicited answer either.
    assert!(
        strict.alerts.is_empty(),
        "without the request the register is unknown"
    );
}
