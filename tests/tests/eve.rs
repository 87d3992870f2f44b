//! The alert lines as SIEMs read them: every line of the demo (every alert
//! type) validates against Suricata's own EVE schema with exactly one
//! property added, ours; Community ID against the specification's
//! published vectors; the correlation fields (`flow_id`, `pcap_cnt`,
//! `direction`, `host`) against the capture as tshark reads it; unknown
//! unit ids and function codes as `null`; one line per event on request.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use modbus_detect::output::eve::community_id;
use modbus_tests::{fixture, run, tshark_fields};
use serde_json::{json, Value};

fn demo(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../modbus-detect/demo")
        .join(file)
}

/// The demo with every rule on (every alert type, as the checked-in
/// report example): its report and its alert lines.
fn demo_run(extra: &[&str]) -> (Value, Vec<Value>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let eve = dir.path().join("alerts.eve.json");
    let (pcap, limits, baseline) = (
        demo("demo.pcap"),
        demo("register_limits.json"),
        demo("baseline.json"),
    );
    let mut args = vec![
        "--pcap",
        pcap.to_str().unwrap(),
        "--authorized-masters",
        "192.168.50.20,192.168.50.30,192.168.50.40",
        "--authorized-writers",
        "192.168.50.20",
        "--register-limits-file",
        limits.to_str().unwrap(),
        "--baseline-file",
        baseline.to_str().unwrap(),
        "--ml",
        "--eve",
        eve.to_str().unwrap(),
        "--sensor-name",
        "plant-a-cell-3",
    ];
    args.extend_from_slice(extra);
    let r = run(&args);
    assert_eq!(r.exit, Ok(0));
    let lines = std::fs::read_to_string(&eve)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    (r.report().clone(), lines, dir)
}

#[test]
fn every_line_validates_against_suricatas_schema() {
    let mut schema: Value =
        serde_json::from_slice(&std::fs::read(fixture("suricata/schema.json")).unwrap()).unwrap();
    assert_eq!(
        schema["additionalProperties"], false,
        "the schema forbids unknown keys"
    );
    // Our one key, and nothing else changed.
    schema["properties"]["modbus_detect"] = json!({"type": "object"});
    let validator = jsonschema::validator_for(&schema).expect("Suricata's schema compiles");
    let (report, lines, _dir) = demo_run(&[]);
    let mut types = BTreeSet::new();
    let mut failures = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        types.insert(line["modbus_detect"]["type"].as_str().unwrap().to_string());
        for e in validator.iter_errors(line) {
            failures.push(format!("line {}: {} at {}", i + 1, e, e.instance_path));
        }
    }
    assert!(
        failures.is_empty(),
        "{} errors:\n{}",
        failures.len(),
        failures[..failures.len().min(20)].join("\n")
    );
    let every: BTreeSet<String> = modbus_detect::alert::AlertKind::ALL
        .iter()
        .map(|k| k.name().to_string())
        .collect();
    assert_eq!(types, every, "the demo's lines cover every alert type");
    assert_eq!(
        lines.len() as u64,
        report["counters"]["eve_lines"]
            .as_u64()
            .unwrap_or(lines.len() as u64)
    );
}

#[test]
fn community_id_matches_the_published_vectors() {
    let vectors: Vec<Value> = serde_json::from_slice(
        &std::fs::read(fixture("community-id/baseline_deflt.json")).unwrap(),
    )
    .unwrap();
    let tcp: Vec<&Value> = vectors.iter().filter(|v| v["proto"] == 6).collect();
    assert!(tcp.len() >= 4, "the vectors have TCP flows");
    for v in tcp {
        let ip = |k: &str| v[k].as_str().unwrap().parse().unwrap();
        let port = |k: &str| v[k].as_u64().unwrap() as u16;
        assert_eq!(
            community_id(ip("saddr"), port("sport"), ip("daddr"), port("dport")),
            v["communityid"],
            "{v}"
        );
    }
}

/// tshark's frames of the demo: (frame number, source, source port,
/// transaction id, function code) of every Modbus request.
fn requests_by_tshark(pcap: &Path) -> Vec<(u64, String, u64, u64, u64)> {
    let fields = [
        "frame.number",
        "ip.src",
        "tcp.srcport",
        "mbtcp.trans_id",
        "modbus.func_code",
    ];
    tshark_fields(pcap, "mbtcp && tcp.dstport == 502", &fields, ',')
        .into_iter()
        .skip(1)
        .flat_map(|f| {
            // Several ADUs of a frame: their values joined by commas.
            let frame: u64 = f[0].parse().unwrap_or(0);
            let (src, port) = (f[1].to_string(), f[2].parse().unwrap_or(0));
            let tids: Vec<u64> = f[3].split(',').filter_map(|t| t.parse().ok()).collect();
            let fcs: Vec<u64> = f[4].split(',').filter_map(|t| t.parse().ok()).collect();
            tids.into_iter()
                .zip(fcs)
                .map(|(t, c)| (frame, src.clone(), port, t, c))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn lines_carry_what_analysts_pivot_on() {
    let (_, lines, _dir) = demo_run(&[]);
    let pcap = demo("demo.pcap");
    let frames = requests_by_tshark(&pcap);
    let mut flow_of_conn: BTreeMap<(String, u64, String, u64), BTreeSet<u64>> = BTreeMap::new();
    let mut checked = 0;
    for l in &lines {
        assert_eq!(l["host"], "plant-a-cell-3");
        assert_eq!(l["pcap_filename"], pcap.to_str().unwrap());
        assert!(l["community_id"].as_str().unwrap().starts_with("1:"));
        let sig = l["alert"]["signature"].as_str().unwrap();
        assert!(
            sig.starts_with("MODBUS ") && !sig.contains(l["src_ip"].as_str().unwrap()),
            "a fixed message per rule: {sig}"
        );
        let d = &l["modbus_detect"];
        if let Some(flow) = l["flow_id"].as_u64() {
            assert!(flow < 1 << 53);
            let conn = (
                l["src_ip"].as_str().unwrap().to_string(),
                l["src_port"].as_u64().unwrap(),
                l["dest_ip"].as_str().unwrap().to_string(),
                l["dest_port"].as_u64().unwrap(),
            );
            let conn = if l["direction"] == "to_server" {
                conn
            } else {
                (conn.2, conn.3, conn.0, conn.1)
            };
            flow_of_conn.entry(conn).or_default().insert(flow);
        }
        // Raised on a request: its frame is the request's, as tshark numbers it.
        let req = &l["modbus"]["request"];
        if req.is_object() && l["direction"] == "to_server" {
            let want = (
                l["src_ip"].as_str().unwrap().to_string(),
                l["src_port"].as_u64().unwrap(),
                req["transaction_id"].as_u64().unwrap(),
                req["function_raw"].as_u64().unwrap(),
            );
            let frame = l["pcap_cnt"].as_u64().unwrap();
            assert_eq!(d["frame"], frame);
            assert_eq!(d["unit_id"], req["unit_id"]);
            // Frames tshark decodes as Modbus (it does not decode the
            // demo's evasion connections the way the PLC takes them).
            if frames.iter().any(|(n, ..)| *n == frame) {
                assert!(
                    frames.iter().any(|(n, s, p, t, f)| *n == frame
                        && (s, *p, *t, *f) == (&want.0, want.1, want.2, want.3)),
                    "pcap_cnt {frame} is not tshark's frame of {want:?}"
                );
                checked += 1;
            }
        }
        // Alerts about many messages know no single unit or function.
        if matches!(
            d["type"].as_str(),
            Some("ML_ANOMALY" | "FUNCTION_CODE_SCAN" | "ADDRESS_SCAN" | "UNIT_ID_SCAN")
        ) {
            assert_eq!(d["unit_id"], Value::Null, "{d}");
            assert_eq!(d["function_code"], Value::Null, "{d}");
            assert!(l.get("modbus").is_none());
        }
        let meta = &l["alert"]["metadata"];
        let ours = d["mitre_techniques"].as_array().unwrap();
        if ours.is_empty() {
            assert!(meta.get("mitre_technique_id").is_none(), "{meta}");
        } else {
            assert_eq!(meta["mitre_technique_id"].as_array().unwrap(), ours);
        }
        assert!(!meta["mitre_tactic_id"].as_array().unwrap().is_empty());
        assert_eq!(
            meta["mitre_tactic_id"].as_array().unwrap().len(),
            meta["mitre_tactic_name"].as_array().unwrap().len()
        );
    }
    assert!(
        checked > 50,
        "{checked} request lines checked against tshark"
    );
    for (conn, ids) in &flow_of_conn {
        assert_eq!(ids.len(), 1, "one flow_id per connection: {conn:?} {ids:?}");
    }
    let ids: BTreeSet<u64> = flow_of_conn.values().flatten().copied().collect();
    assert_eq!(ids.len(), flow_of_conn.len(), "a flow_id per connection");
}

#[test]
fn one_line_per_event_when_asked() {
    let (report, limited, _d1) = demo_run(&[]);
    let (_, every, _d2) = demo_run(&["--eve-every-event"]);
    let total = report["counters"]["alerts_total"].as_u64().unwrap();
    // One line per raise; a line of a rule that recognises an attack
    // after several events stands for them all (`events`).
    let events: u64 = every
        .iter()
        .map(|l| l["modbus_detect"]["events"].as_u64().unwrap())
        .sum();
    assert_eq!(events, total, "every alert event has its line");
    assert!(every
        .iter()
        .any(|l| l["modbus_detect"]["events"].as_u64() > Some(1)));
    assert!(limited.len() < every.len());
    let suppressed = report["counters"]["eve_lines_suppressed"].as_u64().unwrap();
    let limited_events: u64 = limited
        .iter()
        .map(|l| l["modbus_detect"]["events"].as_u64().unwrap())
        .sum();
    assert_eq!(limited_events + suppressed, total);
    assert!(every
        .iter()
        .all(|l| l["modbus_detect"]["suppressed_since_last_line"] == 0));
}
