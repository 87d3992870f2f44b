//! The report's field names are an interface (users' scripts, SIEM
//! parsers, the dashboard): `output::report::Report` is its schema, and
//! these tests pin it against reports checked in under
//! `tests/fixtures/report/`.
//!
//! - Every checked-in report reads into `Report` (no field the schema does
//!   not know, none it needs missing) and writes back to the very same JSON:
//!   a field renamed, dropped or retyped in the schema fails here.
//! - A report written today has exactly the field names of the checked-in
//!   one of the same kind: a field renamed or removed in what the detector
//!   writes fails here. A new field fails too, on purpose: check in the
//!   new example (`cargo run -p modbus-detect -- ...`, as in
//!   `tests/fixtures/NOTICE.md`) with the change that adds it.

use std::collections::BTreeSet;

use modbus_detect::output::report::Report;
use modbus_tests::{fixture, run};
use serde_json::Value;

fn example(name: &str) -> (Value, Report) {
    let path = fixture(&format!("report/{name}"));
    let text = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let json: Value = serde_json::from_slice(&text).expect("valid JSON");
    let typed: Report = serde_json::from_slice(&text)
        .unwrap_or_else(|e| panic!("{}: does not match the schema: {e}", path.display()));
    (json, typed)
}

/// Every key path of a JSON document (array elements merged as `[]`).
fn paths(v: &Value) -> BTreeSet<String> {
    fn walk(v: &Value, at: String, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    let p = format!("{at}/{k}");
                    out.insert(p.clone());
                    walk(child, p, out);
                }
            }
            Value::Array(items) => {
                for child in items {
                    walk(child, format!("{at}/[]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    walk(v, String::new(), &mut out);
    out
}

#[test]
fn checked_in_reports_round_trip_through_the_schema() {
    for name in ["replay.json", "baseline-mode.json", "live.json"] {
        let (json, typed) = example(name);
        let back = serde_json::to_value(&typed).expect("serialises");
        assert_eq!(
            back, json,
            "{name}: the schema does not write back what it read"
        );
    }
}

#[test]
fn the_checked_in_examples_cover_every_section() {
    let (_, replay) = example("replay.json");
    let kinds: BTreeSet<&str> = replay
        .alerts
        .iter()
        .map(|a| a.common.kind.as_str())
        .collect();
    assert_eq!(
        kinds.len(),
        replay.counters.alerts_by_type.len(),
        "the replay example has every alert type: {kinds:?}"
    );
    assert!(replay.capture.is_none());
    let (_, live) = example("live.json");
    assert!(
        live.capture.is_some(),
        "the live example has a capture section"
    );
    let (_, learn) = example("baseline-mode.json");
    assert!(matches!(
        learn.ml,
        modbus_detect::output::report::MlSection::Learned(_)
    ));
}

/// The demo replay as `cargo xtask run` does it.
fn demo_report() -> Value {
    let demo = |f: &str| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../modbus-detect/demo")
            .join(f)
            .display()
            .to_string()
    };
    let (pcap, limits, baseline) = (
        demo("demo.pcap"),
        demo("register_limits.json"),
        demo("baseline.json"),
    );
    let r = run(&[
        "--pcap",
        &pcap,
        "--authorized-masters",
        "192.168.50.20,192.168.50.30,192.168.50.40",
        "--authorized-writers",
        "192.168.50.20",
        "--register-limits-file",
        &limits,
        "--baseline-file",
        &baseline,
        "--ml",
        "--eve",
        "{dir}/alerts.eve.json",
    ]);
    assert_eq!(r.exit, Ok(0));
    r.report().clone()
}

#[test]
fn a_report_written_today_has_the_checked_in_field_names() {
    let (replay, _) = example("replay.json");
    let now = demo_report();
    let (want, got) = (paths(&replay), paths(&now));
    let missing: Vec<_> = want.difference(&got).collect();
    let new: Vec<_> = got.difference(&want).collect();
    assert!(
        missing.is_empty() && new.is_empty(),
        "report fields differ from tests/fixtures/report/replay.json: no longer written {missing:?}, new {new:?}"
    );
    let (learned, _) = example("baseline-mode.json");
    let dir = tempfile::tempdir().unwrap();
    let (_, r) = modbus_tests::learn_lab_baseline(dir.path(), &[]);
    assert_eq!(paths(r.report()), paths(&learned), "baseline-mode report");
}

/// The test above can fail: a renamed field is caught.
#[test]
fn a_renamed_field_is_caught() {
    let (mut replay, _) = example("replay.json");
    let before = paths(&replay);
    let counters = replay["counters"].as_object_mut().unwrap();
    let frames = counters.remove("frames").unwrap();
    counters.insert("frame_count".into(), frames);
    assert_ne!(paths(&replay), before);
    let text = serde_json::to_vec(&replay).unwrap();
    assert!(
        serde_json::from_slice::<Report>(&text).is_err(),
        "the schema refuses a report with a renamed field"
    );
}
