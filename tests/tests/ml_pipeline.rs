//! The original ML pipeline, step by step (`modbus-detect ml ...`): feature
//! files with one row per ADU of every capture, models trained on the
//! normal ones, per-model reports of anomalies labelled by the original's
//! rules, and a printed breakdown that agrees with the reports.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output};

use modbus_tests::{detector_binary, fixture, read_json};

fn ml(args: &[&str]) -> Output {
    Command::new(detector_binary())
        .arg("ml")
        .args(args)
        .output()
        .unwrap()
}

fn rows(path: &Path) -> (Vec<String>, Vec<csv::StringRecord>) {
    let mut rd = csv::Reader::from_path(path).unwrap();
    let header = rd.headers().unwrap().iter().map(str::to_string).collect();
    (header, rd.records().map(Result::unwrap).collect())
}

fn col(header: &[String], name: &str) -> usize {
    header.iter().position(|h| h == name).unwrap()
}

const AUTHORIZED: &str = "192.168.50.20,192.168.50.30,192.168.50.40";

#[test]
fn run_writes_features_models_and_labelled_reports() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ml");
    let out_s = out.to_str().unwrap();
    let attack = ["rogue_master", "unauthorized_write", "dos_flood"];
    let attack_paths: Vec<String> = attack
        .iter()
        .map(|a| fixture(&format!("lab/{a}.pcap")).display().to_string())
        .collect();
    let normal = fixture("lab/normal_baseline.pcap");
    let mut args = vec!["run", "--normal", normal.to_str().unwrap(), "--attack"];
    args.extend(attack_paths.iter().map(String::as_str));
    args.extend(["--out-dir", out_s, "--authorized-masters", AUTHORIZED]);
    let o = ml(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8(o.stdout).unwrap();

    // One row per ADU: the manifest's count of tshark's ADUs, per capture.
    let manifest = read_json(&fixture("lab/manifest.json"));
    let adus = |scenario: &str| {
        manifest["captures"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["file"] == format!("{scenario}.pcap"))
            .unwrap()["modbus_adus"]
            .as_u64()
            .unwrap()
    };
    let (nh, normal_rows) = rows(&out.join("normal_features.csv"));
    assert_eq!(normal_rows.len() as u64, adus("normal_baseline"));
    let (ah, attack_rows) = rows(&out.join("attack_features.csv"));
    assert_eq!(nh, ah);
    assert_eq!(
        &ah[..5],
        [
            "delta_time",
            "packet_length",
            "src_ip_int",
            "src_ip_str",
            "function_code"
        ]
    );
    let mut per_capture: BTreeMap<String, u64> = BTreeMap::new();
    for r in &attack_rows {
        *per_capture
            .entry(r[col(&ah, "capture")].to_string())
            .or_default() += 1;
    }
    for (a, path) in attack.iter().zip(&attack_paths) {
        assert_eq!(per_capture[path], adus(a), "{a}");
    }
    // Each capture's first row starts its own clock.
    let mut seen = BTreeSet::new();
    for r in &attack_rows {
        if seen.insert(r[col(&ah, "capture")].to_string()) {
            assert_eq!(&r[0], "0.000000");
        }
    }

    // Training the saved features again gives the same models, byte for byte.
    let again = dir.path().join("again.json");
    let o = ml(&[
        "train",
        "--features",
        out.join("normal_features.csv").to_str().unwrap(),
        "--models",
        again.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read(&again).unwrap(),
        std::fs::read(out.join("original_models.json")).unwrap()
    );

    // Scoring alone gives the same reports as the run.
    let scored = dir.path().join("scored");
    let o = ml(&[
        "score",
        "--models",
        again.to_str().unwrap(),
        "--features",
        out.join("attack_features.csv").to_str().unwrap(),
        "--out-dir",
        scored.to_str().unwrap(),
        "--authorized-masters",
        AUTHORIZED,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let breakdown = |text: &str| -> Vec<String> {
        text.lines()
            .skip_while(|l| !l.starts_with("Isolation Forest"))
            .filter(|l| !l.trim_start().starts_with("report:"))
            .map(str::to_string)
            .collect()
    };
    let alone = String::from_utf8(o.stdout).unwrap();
    assert_eq!(breakdown(&alone), breakdown(&stdout));
    assert_eq!(breakdown(&stdout).len(), 10, "{stdout}");

    // The allow list: the flag's masters and every source of normal traffic.
    let mut allowed: BTreeSet<String> = AUTHORIZED.split(',').map(str::to_string).collect();
    allowed.extend(normal_rows.iter().map(|r| r[3].to_string()));
    for (file, model) in [
        ("iso_forest_report.csv", "Isolation Forest"),
        ("ocsvm_report.csv", "One-Class SVM"),
    ] {
        assert_eq!(
            std::fs::read(out.join(file)).unwrap(),
            std::fs::read(scored.join(file)).unwrap(),
            "{file}"
        );
        let (h, report) = rows(&out.join(file));
        assert_eq!(h[5..7], ["anomaly_score", "threat_label"]);
        assert_eq!(h[7..], ah[5..], "then the feature file's other columns");
        assert!(!report.is_empty(), "{file}: no anomalies at all");
        let mut by_label: BTreeMap<String, u64> = BTreeMap::new();
        for r in &report {
            let score: f64 = r[5].parse().unwrap();
            assert!(score < 0.0, "{file}: an anomaly scores below 0: {r:?}");
            let fc: u8 = r[4].parse().unwrap();
            let delta: f64 = r[0].parse().unwrap();
            // The original's rules, first match wins.
            let expected = if [5, 6, 15, 16].contains(&fc) {
                "CRITICAL: UNAUTHORIZED STOP COMMAND"
            } else if !allowed.contains(&r[3]) {
                "FOREIGN IP ACCESS"
            } else if delta < 0.005 {
                "DoS ATTACK (High Volume)"
            } else {
                "Unknown Anomaly (Statistical Deviation)"
            };
            assert_eq!(&r[6], expected, "{file}: {r:?}");
            *by_label.entry(r[6].to_string()).or_default() += 1;
        }
        // The breakdown printed is what the report holds.
        let block: Vec<&str> = stdout
            .lines()
            .skip_while(|l| !l.starts_with(model))
            .take(5)
            .collect();
        assert_eq!(
            block[0],
            format!(
                "{}: {} ADUs scored: {} normal, {} anomalies",
                block[0].split(':').next().unwrap(),
                attack_rows.len(),
                attack_rows.len() - report.len(),
                report.len()
            )
        );
        for line in &block[1..] {
            let (name, n) = line.trim().rsplit_once(' ').unwrap();
            let n: u64 = n.parse().unwrap();
            assert_eq!(by_label.get(name.trim()).copied().unwrap_or(0), n, "{line}");
        }
        // The rogue master's flood is foreign to both models.
        assert!(
            by_label.get("FOREIGN IP ACCESS").copied().unwrap_or(0) >= 100,
            "{file}: {by_label:?}"
        );
    }
}

#[test]
fn bad_inputs_are_one_line_and_a_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let text = d.join("notes.txt");
    std::fs::write(&text, "not a capture\n").unwrap();
    let normal = fixture("lab/normal_test.pcap");
    let out = d.join("out");
    let o = ml(&[
        "features",
        "--normal",
        normal.to_str().unwrap(),
        text.to_str().unwrap(),
        "--out-dir",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(3));
    let err = String::from_utf8(o.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("notes.txt"), "{err}");
    assert!(
        !out.join("normal_features.csv").exists(),
        "nothing half-written"
    );

    // Left out with --skip-bad-files: a warning naming it, and the rest.
    let o = ml(&[
        "features",
        "--normal",
        normal.to_str().unwrap(),
        text.to_str().unwrap(),
        "--out-dir",
        out.to_str().unwrap(),
        "--skip-bad-files",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("notes.txt"));
    let (_, r) = rows(&out.join("normal_features.csv"));
    assert_eq!(r.len(), 1624, "normal_test's ADUs");

    // A feature file without the original's columns.
    let bad = d.join("bad.csv");
    std::fs::write(&bad, "a,b\n1,2\n").unwrap();
    let o = ml(&[
        "train",
        "--features",
        bad.to_str().unwrap(),
        "--models",
        d.join("m.json").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(3));
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(
        err.contains("bad.csv: line 1: no delta_time column"),
        "{err}"
    );
    assert!(!d.join("m.json").exists());

    // A models file that is not one.
    let o = ml(&[
        "score",
        "--models",
        bad.to_str().unwrap(),
        "--features",
        out.join("normal_features.csv").to_str().unwrap(),
        "--out-dir",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(3));
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(err.contains("bad.csv: cannot read models"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}
