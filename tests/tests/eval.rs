//! `modbus-detect eval`: the evaluation table on labelled captures. The lab
//! set (labels from its manifest) and a synthetic capture whose attack
//! frames the generator knows (labels as a per-frame CSV); every figure is
//! checked against what the labels and the other tools say.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use modbus_synth::{generate, SynthConfig};
use modbus_tests::{detector_binary, fixture, read_json};
use serde_json::Value;

const METHODS: [&str; 6] = [
    "original Isolation Forest (per ADU)",
    "original One-Class SVM (per ADU)",
    "our Isolation Forest (per window)",
    "our One-Class SVM (per window)",
    "rules",
    "rules + our models",
];

fn eval(args: &[&str], json: &Path) -> (Value, String) {
    let o = Command::new(detector_binary())
        .arg("eval")
        .args(args)
        .arg("--json")
        .arg(json)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (read_json(json), String::from_utf8(o.stdout).unwrap())
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap()
}

/// The totals are the captures' sums, and the ratios follow from them.
fn check_arithmetic(e: &Value) {
    let methods = e["methods"].as_array().unwrap();
    let names: Vec<&str> = methods
        .iter()
        .map(|m| m["method"].as_str().unwrap())
        .collect();
    assert_eq!(names, METHODS);
    let attacks: u64 = e["captures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| u(&c["attacks"]))
        .sum();
    for (i, m) in methods.iter().enumerate() {
        let sum = |k: &str| -> u64 {
            e["captures"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| u(&c["counts"][i][k]))
                .sum()
        };
        let (tp, fp, fn_) = (u(&m["tp"]), u(&m["fp"]), u(&m["fn_"]));
        assert_eq!(
            (tp, fp, fn_),
            (sum("tp"), sum("fp"), sum("fn_")),
            "{}",
            names[i]
        );
        assert_eq!(
            tp + fn_,
            attacks,
            "{}: every attack is found or missed",
            names[i]
        );
        let p = if tp + fp > 0 {
            tp as f64 / (tp + fp) as f64
        } else {
            0.0
        };
        let r = tp as f64 / attacks as f64;
        assert!((m["precision"].as_f64().unwrap() - p).abs() < 1e-12);
        assert!((m["recall"].as_f64().unwrap() - r).abs() < 1e-12);
        let f1 = if p + r > 0.0 {
            2.0 * p * r / (p + r)
        } else {
            0.0
        };
        assert!((m["f1"].as_f64().unwrap() - f1).abs() < 1e-12);
    }
}

fn capture<'a>(e: &'a Value, name: &str) -> &'a Value {
    e["captures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["capture"] == name)
        .unwrap_or_else(|| panic!("no capture {name}"))
}

fn method<'a>(e: &'a Value, name: &str) -> &'a Value {
    e["methods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["method"] == name)
        .unwrap()
}

#[test]
fn lab_set_evaluation_agrees_with_its_ground_truth() {
    let dir = tempfile::tempdir().unwrap();
    let manifest_path = fixture("lab/manifest.json");
    let (e, table) = eval(
        &["--manifest", manifest_path.to_str().unwrap()],
        &dir.path().join("e.json"),
    );
    check_arithmetic(&e);
    // The printed table is the JSON's.
    for m in e["methods"].as_array().unwrap() {
        let row = format!(
            "| {} | {:.3} | {:.3} | {:.3} | {} | {} | {} |",
            m["method"].as_str().unwrap(),
            m["precision"].as_f64().unwrap(),
            m["recall"].as_f64().unwrap(),
            m["f1"].as_f64().unwrap(),
            m["tp"],
            m["fp"],
            m["fn_"]
        );
        assert!(table.contains(&row), "{row} not in\n{table}");
    }

    let manifest = read_json(&manifest_path);
    let entries = manifest["captures"].as_array().unwrap();
    // Every capture but the baseline, each scenario once.
    let scenarios: BTreeSet<&str> = entries
        .iter()
        .filter(|c| c["file"] != manifest["baseline_pcap"])
        .map(|c| c["scenario"].as_str().unwrap())
        .collect();
    assert_eq!(e["captures"].as_array().unwrap().len(), scenarios.len());
    for c in entries
        .iter()
        .filter(|c| c["file"] != manifest["baseline_pcap"])
    {
        let row = capture(&e, c["scenario"].as_str().unwrap());
        // At least the attack requests the generators logged (a request
        // and its response are one unit; a flood lists only some).
        let listed: BTreeSet<u64> = c["attack_requests_sent"]["listed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| u(&r["frame"]))
            .collect();
        assert!(u(&row["attacks"]) >= listed.len() as u64, "{row}");
        assert!(
            u(&row["attacks"])
                <= u(&c["attack_requests_sent"]["total"]).max(listed.len() as u64) + 69,
            "{row}"
        );
        assert!(u(&row["units"]) >= u(&c["modbus_requests"]), "{row}");
    }
    assert_eq!(
        u(&capture(&e, "dos_flood")["attacks"]),
        851,
        "850 flood requests, the rogue's one more"
    );

    // The rules find each of these attacks on its own frames, nothing else.
    for name in [
        "rogue_master",
        "unauthorized_write",
        "device_enumeration",
        "exception_burst",
        "timing_anomaly",
        "dos_flood",
    ] {
        let row = capture(&e, name);
        let rules = &row["counts"][4];
        assert_eq!(u(&rules["tp"]), u(&row["attacks"]), "{name}: {rules}");
        assert_eq!(u(&rules["fp"]), 0, "{name}: {rules}");
    }
    // Normal traffic: nothing from the rules or our models.
    let normal = capture(&e, "normal_test");
    assert_eq!(u(&normal["attacks"]), 0);
    for i in 2..6 {
        assert_eq!(u(&normal["counts"][i]["fp"]), 0, "{}", METHODS[i]);
    }
    // Our window models do not lose to the original's per-ADU models
    // (README, "Evaluation"), and raise no false alarm on normal traffic.
    let best_original = (0..2)
        .map(|i| method(&e, METHODS[i])["f1"].as_f64().unwrap())
        .fold(0.0, f64::max);
    for name in &METHODS[2..4] {
        let m = method(&e, name);
        assert!(m["f1"].as_f64().unwrap() > best_original, "{name}: {m}");
        assert_eq!(u(&m["false_alarms_on_normal"]), 0, "{name}");
    }

    // The original models flag, per capture, the ADUs `ml score` reports.
    let ml = dir.path().join("ml");
    let o = Command::new(detector_binary())
        .args(["ml", "run", "--normal"])
        .arg(fixture("lab/normal_baseline.pcap"))
        .arg("--attack")
        .arg(fixture("lab/rogue_master.pcap"))
        .arg("--out-dir")
        .arg(&ml)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let row = capture(&e, "rogue_master");
    for (i, report) in ["iso_forest_report.csv", "ocsvm_report.csv"]
        .iter()
        .enumerate()
    {
        let rows = csv::Reader::from_path(ml.join(report))
            .unwrap()
            .records()
            .count() as u64;
        assert_eq!(u(&row["original_adus_flagged"][i]), rows, "{report}");
    }
}

#[test]
fn per_frame_labels_of_a_synthetic_capture() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, cfg: &SynthConfig| {
        let path = dir.path().join(name);
        let f = std::fs::File::create(&path).unwrap();
        (path, generate(cfg, std::io::BufWriter::new(f)).unwrap())
    };
    let base = SynthConfig {
        frames: 40_000,
        masters: 6,
        slaves: 3,
        ..SynthConfig::default()
    };
    let (normal, _) = write(
        "normal.pcap",
        &SynthConfig {
            seed: 21,
            ..base.clone()
        },
    );
    let (attack, s) = write(
        "attack.pcap",
        &SynthConfig {
            seed: 22,
            attacks: true,
            ..base
        },
    );
    assert_eq!(s.attack_requests, 1024);
    let labels = dir.path().join("labels.csv");
    let mut text = String::from("frame;label\n");
    let attack_frames: BTreeSet<u64> = s.attack_frames.iter().copied().collect();
    for f in 1..=s.frames {
        text += &format!("{f};{}\n", u8::from(attack_frames.contains(&f)));
    }
    std::fs::write(&labels, text).unwrap();
    let join = |v: &[std::net::Ipv4Addr]| {
        v.iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let spec = format!("{}={}", attack.display(), labels.display());
    let (e, _) = eval(
        &[
            "--normal",
            normal.to_str().unwrap(),
            "--capture",
            &spec,
            "--authorized-masters",
            &join(&s.authorized_masters),
            "--authorized-writers",
            &join(&s.authorized_writers),
        ],
        &dir.path().join("e.json"),
    );
    check_arithmetic(&e);
    let row = &e["captures"][0];
    // Each attack request is its own transaction (the malformed one a
    // frame of its own), and the rules flag every one.
    assert_eq!(u(&row["attacks"]), 1024, "{row}");
    assert_eq!(u(&row["counts"][4]["tp"]), 1024, "{row}");
    // Our models see the rogue's flood at least.
    for i in 2..4 {
        assert!(u(&row["counts"][i]["tp"]) >= 1000, "{}: {row}", METHODS[i]);
    }
}
