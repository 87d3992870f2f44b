//! The same capture gives the same report whatever the number of shards:
//! every piece of rule state lives in the slave's shard, and the merger
//! orders alerts by severity, time and a stable key.

use modbus_tests::run;
use serde_json::Value;

fn demo_report(threads: &str) -> Value {
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../modbus-detect/demo");
    let p = |f: &str| demo.join(f).display().to_string();
    let r = run(&[
        "--pcap",
        &p("demo.pcap"),
        "--authorized-masters",
        "192.168.50.20,192.168.50.30,192.168.50.40",
        "--authorized-writers",
        "192.168.50.20",
        "--register-limits-file",
        &p("register_limits.json"),
        "--baseline-file",
        &p("baseline.json"),
        "--ml",
        "--threads",
        threads,
    ]);
    assert_eq!(r.exit, Ok(0));
    let mut report = r.report().clone();
    // What legitimately differs between runs.
    let obj = report.as_object_mut().unwrap();
    obj.remove("processing_seconds");
    obj.remove("peak_memory_kib");
    obj["settings"].as_object_mut().unwrap().remove("threads");
    report
}

#[test]
fn report_is_identical_for_any_shard_count() {
    let one = demo_report("1");
    let alerts = one["alerts"].as_array().unwrap().len();
    assert!(
        alerts > 20,
        "the demo raises many kinds of alerts ({alerts})"
    );
    for threads in ["2", "3", "4", "7"] {
        let other = demo_report(threads);
        assert_eq!(
            one["alerts"], other["alerts"],
            "alerts with {threads} threads"
        );
        assert_eq!(one, other, "whole report with {threads} threads");
    }
}

#[test]
fn alerts_are_sorted_by_severity_then_time() {
    let report = demo_report("2");
    let rank = |s: &str| match s {
        "CRITICAL" => 0,
        "HIGH" => 1,
        "MEDIUM" => 2,
        _ => 3,
    };
    let keys: Vec<(i32, f64)> = report["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                rank(a["severity"].as_str().unwrap()),
                a["first_seen_epoch"].as_f64().unwrap(),
            )
        })
        .collect();
    let mut sorted = keys.clone();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert_eq!(keys, sorted);
}

/// A real capture with 13 slaves, so that the shards really split the work.
#[test]
fn many_slaves_split_over_shards_give_the_same_report() {
    let pcap = modbus_tests::fixture("real/iti_mb2.pcap");
    let report = |threads: &str| {
        let r = run(&[
            "--pcap",
            pcap.to_str().unwrap(),
            "--authorized-masters",
            "10.0.0.1",
            "--authorized-writers",
            "10.0.0.1",
            "--threads",
            threads,
        ]);
        assert_eq!(r.exit, Ok(0));
        let mut v = r.report().clone();
        let obj = v.as_object_mut().unwrap();
        obj.remove("processing_seconds");
        obj.remove("peak_memory_kib");
        obj["settings"].as_object_mut().unwrap().remove("threads");
        v
    };
    let one = report("1");
    let slaves: std::collections::BTreeSet<&str> = one["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["dst_ip"].as_str().unwrap())
        .collect();
    assert!(slaves.len() >= 10, "alerts on {} slaves", slaves.len());
    for threads in ["2", "4", "5"] {
        assert_eq!(one, report(threads), "{threads} threads");
    }
}
