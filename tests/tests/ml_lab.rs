//! The ML models on the lab captures: trained on `normal_baseline` with
//! `--baseline-mode`, they must stay silent on `normal_test` (the same
//! network, other minutes) and flag the pairs that carry the attacks — the
//! sources the manifest marks `primary` — where an attack changes how a
//! master talks to a slave over a window (a rogue master, an unauthorized
//! writer, a scan, a flood, a timing change, out-of-range writes,
//! exceptions).

use std::collections::BTreeSet;

use modbus_tests::{fixture, run};
use serde_json::Value;

fn learn(dir: &std::path::Path) -> String {
    let (path, r) = modbus_tests::learn_lab_baseline(dir, &[]);
    let ml = &r.report()["ml"];
    assert_eq!(ml["models_trained"], true, "{ml}");
    assert!(ml["windows_learned"].as_u64().unwrap() >= 30, "{ml}");
    path
}

/// Sources of the ML_ANOMALY alerts of a run with `--ml`.
fn flagged(capture: &str, baseline: &str, extra: &[&str]) -> (BTreeSet<String>, Value) {
    let pcap = fixture(&format!("lab/{capture}"));
    let mut args = vec![
        "--pcap",
        pcap.to_str().unwrap(),
        "--baseline-file",
        baseline,
        "--ml",
    ];
    args.extend_from_slice(extra);
    let r = run(&args);
    assert_eq!(r.exit, Ok(0), "{capture}");
    let report = r.report().clone();
    let ml = &report["ml"];
    assert_eq!(ml["enabled"], true);
    assert!(
        ml["windows_judged"].as_u64().unwrap() > 10,
        "{capture}: {ml}"
    );
    let sources = report["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["type"] == "ML_ANOMALY")
        .map(|a| {
            assert_eq!(a["rule_id"], "MBD-011");
            assert!(a["ocsvm_decision"].is_number() && a["iforest_score"].is_number());
            assert!(a["description"].as_str().unwrap().contains("most unusual"));
            a["src_ip"].as_str().unwrap().to_string()
        })
        .collect();
    (sources, report)
}

#[test]
fn normal_traffic_raises_nothing_and_attack_pairs_are_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let b = learn(dir.path());
    for normal in ["normal_test.pcap", "normal_test.pcapng"] {
        let (got, report) = flagged(normal, &b, &[]);
        assert!(got.is_empty(), "{normal}: {got:?}");
        assert_eq!(report["ml"]["anomalous_windows"], 0);
    }
    for (capture, primary) in [
        ("rogue_master.pcap", &["192.168.50.66"][..]),
        ("unauthorized_write.pcap", &["192.168.50.40"]),
        // Not register_out_of_range: a written value is no window feature
        // (the rules' REGISTER_VALUE_OUT_OF_RANGE finds it), and its few
        // writes among the HMI's hundred requests a window leave the
        // window ordinary (README, "Evaluation").
        (
            "device_enumeration.pcap",
            &["192.168.50.66", "192.168.50.40"],
        ),
        ("timing_anomaly.pcap", &["192.168.50.20"]),
        ("dos_flood.pcap", &["192.168.50.66", "192.168.50.30"]),
        // The burst's exceptions answer this master's requests.
        ("exception_burst.pcap", &["192.168.50.20"]),
    ] {
        let (got, _) = flagged(capture, &b, &[]);
        for p in primary {
            assert!(got.contains(*p), "{capture}: {p} not flagged, got {got:?}");
        }
    }
}

#[test]
fn ml_alerts_are_the_same_for_any_number_of_threads() {
    let dir = tempfile::tempdir().unwrap();
    let b = learn(dir.path());
    let alerts = |threads: &str| {
        let (_, r) = flagged("dos_flood.pcap", &b, &["--threads", threads]);
        let ml: Vec<Value> = r["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["type"] == "ML_ANOMALY")
            .cloned()
            .collect();
        assert!(!ml.is_empty());
        (ml, r["ml"].clone())
    };
    let one = alerts("1");
    for t in ["2", "3"] {
        assert_eq!(alerts(t), one, "--threads {t}");
    }
}

#[test]
fn learning_twice_gives_the_same_models_and_without_ml_nothing_is_judged() {
    let dir = tempfile::tempdir().unwrap();
    let a = learn(dir.path());
    let other = tempfile::tempdir().unwrap();
    // Learned with three shards: the same windows, in the same order.
    let (path, _) = modbus_tests::learn_lab_baseline(other.path(), &["--threads", "3"]);
    let models = |p: &str| modbus_tests::read_json(std::path::Path::new(p))["models"].clone();
    assert!(models(&a).is_object());
    assert_eq!(models(&a), models(&path));

    let r = run(&[
        "--pcap",
        fixture("lab/dos_flood.pcap").to_str().unwrap(),
        "--baseline-file",
        &a,
    ]);
    assert_eq!(r.exit, Ok(0));
    assert_eq!(r.report()["ml"]["enabled"], false);
    assert!(r.report()["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["type"] != "ML_ANOMALY"));
}

/// Windows still open when the capture ends are judged too, and their
/// alerts reach the EVE stream like any other.
#[test]
fn every_ml_alert_has_an_eve_line() {
    let dir = tempfile::tempdir().unwrap();
    let b = learn(dir.path());
    let eve = dir.path().join("eve.json");
    let (sources, report) = flagged("dos_flood.pcap", &b, &["--eve", eve.to_str().unwrap()]);
    assert!(!sources.is_empty());
    let text = std::fs::read_to_string(&eve).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .filter(|v: &Value| v["modbus_detect"]["type"] == "ML_ANOMALY")
        .collect();
    let in_eve: u64 = lines
        .iter()
        .map(|l| {
            l["modbus_detect"]["suppressed_since_last_line"]
                .as_u64()
                .unwrap()
                + 1
        })
        .sum();
    let in_report: u64 = report["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["type"] == "ML_ANOMALY")
        .map(|a| a["count"].as_u64().unwrap())
        .sum();
    assert_eq!(
        in_eve, in_report,
        "every ML alert is in a line or counted as folded"
    );
    for src in sources {
        assert!(lines.iter().any(|l| l["src_ip"] == src.as_str()), "{src}");
    }
}

/// Every ML alert carries the original pipeline's threat label of its
/// window, first match wins: writes in it, then a master unknown to the
/// baseline, then requests under 5 ms apart, then diagnostics (ours).
#[test]
fn ml_alerts_carry_the_original_threat_labels() {
    let dir = tempfile::tempdir().unwrap();
    let b = learn(dir.path());
    let labels = |capture: &str, src: &str| -> BTreeSet<String> {
        let (_, report) = flagged(capture, &b, &[]);
        report["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["type"] == "ML_ANOMALY" && a["src_ip"] == src)
            .map(|a| {
                let label = a["threat_label"].as_str().expect("a threat label");
                assert!(
                    a["description"]
                        .as_str()
                        .unwrap()
                        .ends_with(&format!("threat label: {label}")),
                    "{a}"
                );
                label.to_string()
            })
            .collect()
    };
    // The rogue master is in no baseline: foreign, unless its window wrote.
    let rogue = labels("rogue_master.pcap", "192.168.50.66");
    assert!(rogue.contains("FOREIGN IP ACCESS"), "{rogue:?}");
    assert!(rogue
        .iter()
        .all(|l| l == "FOREIGN IP ACCESS" || l == "CRITICAL: UNAUTHORIZED STOP COMMAND"));
    // A known master that writes.
    let writer = labels("unauthorized_write.pcap", "192.168.50.40");
    assert!(
        writer.contains("CRITICAL: UNAUTHORIZED STOP COMMAND"),
        "{writer:?}"
    );
    // A known master flooding: requests closer than 5 ms.
    let flood = labels("dos_flood.pcap", "192.168.50.30");
    assert!(flood.contains("DoS ATTACK (High Volume)"), "{flood:?}");

    // --csv-dir's ml_alerts.csv: the report's ML entries, scores and label.
    let csv = dir.path().join("csv");
    let (_, report) = flagged("dos_flood.pcap", &b, &["--csv-dir", csv.to_str().unwrap()]);
    let mut rd = csv::Reader::from_path(csv.join("ml_alerts.csv")).unwrap();
    let header: Vec<String> = rd.headers().unwrap().iter().map(str::to_string).collect();
    let rows: Vec<csv::StringRecord> = rd.records().map(Result::unwrap).collect();
    let entries: Vec<&Value> = report["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["type"] == "ML_ANOMALY")
        .collect();
    assert_eq!(rows.len(), entries.len());
    let col = |r: &csv::StringRecord, name: &str| {
        r[header.iter().position(|h| h == name).unwrap()].to_string()
    };
    for (r, a) in rows.iter().zip(&entries) {
        assert_eq!(col(r, "src_ip"), a["src_ip"].as_str().unwrap());
        assert_eq!(col(r, "anomalous_windows"), a["count"].to_string());
        assert_eq!(col(r, "threat_label"), a["threat_label"].as_str().unwrap());
        for k in ["iforest_score", "ocsvm_decision", "feature_z"] {
            let v: f64 = col(r, k).parse().unwrap();
            assert_eq!(v, a[k].as_f64().unwrap(), "{k}");
        }
    }
    // Without ML alerts, no such file.
    let quiet = dir.path().join("quiet");
    flagged(
        "normal_test.pcap",
        &b,
        &["--csv-dir", quiet.to_str().unwrap()],
    );
    assert!(quiet.join("alerts.csv").exists() && !quiet.join("ml_alerts.csv").exists());
}
