//! The `modbus-detect` binary on bad input: a clear one-line error naming the
//! file and the problem, the documented exit code, never a panic; and what
//! was detected before a capture broke off is still reported.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_modbus-detect"))
}

fn lab(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/lab")
        .join(name)
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run modbus-detect")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exactly one line, an error, mentioning `needle`; no panic.
fn assert_one_line_error(o: &Output, code: i32, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert!(lines[0].starts_with("modbus-detect: error: "), "{err}");
    assert!(lines[0].contains(needle), "{needle:?} in {err}");
}

#[test]
fn missing_capture_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.json");
    let o = run(&[
        "--pcap",
        "/nonexistent/x.pcap",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_one_line_error(&o, 3, "/nonexistent/x.pcap");
    assert!(!out.exists());
}

#[test]
fn wrong_magic() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("notes.pcap");
    std::fs::write(&p, b"this is not a capture file at all").unwrap();
    let out = dir.path().join("r.json");
    let o = run(&[
        "--pcap",
        p.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_one_line_error(&o, 3, "notes.pcap: not a pcap or pcapng file");
}

#[test]
fn truncated_capture_reports_what_came_before() {
    let dir = tempfile::tempdir().unwrap();
    let full = std::fs::read(lab("rogue_master.pcap")).unwrap();
    // Cut in the middle of a record, after the rogue master's requests.
    let cut = dir.path().join("cut.pcap");
    std::fs::write(&cut, &full[..full.len() * 3 / 4 + 5]).unwrap();
    let out = dir.path().join("r.json");
    let o = run(&[
        "--pcap",
        cut.to_str().unwrap(),
        "--authorized-masters",
        "192.168.50.20,192.168.50.30,192.168.50.40",
        "--output",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    assert_one_line_error(&o, 3, "cut.pcap: truncated at byte");
    let report = read_report(&out);
    assert_eq!(report["status"], "input_error");
    assert!(report["error"].as_str().unwrap().contains("truncated"));
    let rogue: u64 = report["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["type"] == "ROGUE_MODBUS_MASTER")
        .map(|a| a["count"].as_u64().unwrap())
        .sum();
    assert_eq!(rogue, 12, "alerts before the cut are kept");
}

#[test]
fn garbage_limits_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("limits.json");
    for (text, needle) in [
        ("{\"40001\": {\"min\": 5", "invalid JSON"),
        (
            "{\"4x001\": {\"min\": 1, \"max\": 2}}",
            "is not a Modicon number",
        ),
        ("{\"40001\": {\"min\": 9, \"max\": 2}}", "greater than max"),
    ] {
        std::fs::write(&p, text).unwrap();
        let o = run(&[
            "--pcap",
            lab("normal_test.pcap").to_str().unwrap(),
            "--register-limits-file",
            p.to_str().unwrap(),
            "--output",
            dir.path().join("r.json").to_str().unwrap(),
        ]);
        assert_one_line_error(&o, 3, needle);
        assert!(stderr(&o).contains("limits.json"));
    }
}

#[test]
fn garbage_baseline_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("baseline.json");
    for (text, needle) in [
        ("[1, 2", "invalid JSON"),
        (
            "{\"schema\": \"modbus-detect-baseline\", \"version\": 99}",
            "version 99",
        ),
        ("{\"hello\": 1}", "not a modbus-detect baseline"),
    ] {
        std::fs::write(&p, text).unwrap();
        let o = run(&[
            "--pcap",
            lab("normal_test.pcap").to_str().unwrap(),
            "--baseline-file",
            p.to_str().unwrap(),
            "--output",
            dir.path().join("r.json").to_str().unwrap(),
        ]);
        assert_one_line_error(&o, 3, needle);
        assert!(stderr(&o).contains("baseline.json"));
    }
}

/// A baseline whose ML models were tampered with (or are missing) is
/// refused with one line naming the file and what is wrong: a model must
/// never make scoring panic or loop.
#[test]
fn bad_ml_models_in_a_baseline_file() {
    let dir = tempfile::tempdir().unwrap();
    let good: serde_json::Value = serde_json::from_slice(
        &std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/baseline.json")).unwrap(),
    )
    .unwrap();
    assert!(good["models"].is_object(), "the demo baseline has models");
    let p = dir.path().join("baseline.json");
    type Edit = fn(&mut serde_json::Value);
    let cases: [(Edit, &str); 5] = [
        (
            |b| b["models"]["iforest"]["trees"][0][0][2] = 99_999.into(),
            "iforest",
        ),
        (
            |b| b["models"]["ocsvm"]["alpha"][0] = (-1.0).into(),
            "ocsvm",
        ),
        (
            |b| b["models"]["features"][0] = "something_else".into(),
            "features",
        ),
        (|b| b["models"]["window_s"] = 0.into(), "window_s"),
        (
            |b| {
                b.as_object_mut().unwrap().remove("models");
            },
            "has no ML models",
        ),
    ];
    for (edit, needle) in cases {
        let mut b = good.clone();
        edit(&mut b);
        std::fs::write(&p, serde_json::to_vec(&b).unwrap()).unwrap();
        let o = run(&[
            "--pcap",
            lab("normal_test.pcap").to_str().unwrap(),
            "--baseline-file",
            p.to_str().unwrap(),
            "--ml",
            "--output",
            dir.path().join("r.json").to_str().unwrap(),
        ]);
        assert_one_line_error(&o, 3, needle);
        assert!(stderr(&o).contains("baseline.json"));
    }
    // --ml needs a baseline to judge with, and judges rather than learns.
    let pcap = lab("normal_test.pcap");
    let o = run(&["--pcap", pcap.to_str().unwrap(), "--ml"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let b = p.to_str().unwrap();
    let o = run(&[
        "--pcap",
        pcap.to_str().unwrap(),
        "--baseline-file",
        b,
        "--baseline-mode",
        "--ml",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = run(&[
        "--pcap",
        pcap.to_str().unwrap(),
        "--baseline-file",
        b,
        "--baseline-mode",
        "--ml-window",
        "0",
    ]);
    assert_one_line_error(&o, 2, "--ml-window");
}

#[test]
fn unwritable_output_fails_before_reading() {
    let o = run(&[
        "--pcap",
        lab("normal_test.pcap").to_str().unwrap(),
        "--output",
        "/nonexistent-dir/r.json",
    ]);
    assert_one_line_error(&o, 4, "/nonexistent-dir/r.json");
}

#[test]
fn usage_errors_exit_2() {
    let o = run(&["--pcap"]);
    assert_eq!(o.status.code(), Some(2));
    let o = run(&["--pcap", "x.pcap", "--authorized-masters", "not-an-ip"]);
    assert_eq!(o.status.code(), Some(2));
    let o = run(&[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--pcap"));
}

#[test]
fn fail_on_severity_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.json");
    let base = [
        "--pcap",
        lab("rogue_master.pcap")
            .to_str()
            .unwrap()
            .to_string()
            .leak(),
        "--authorized-masters",
        "192.168.50.20,192.168.50.30,192.168.50.40",
        "--output",
        out.to_str().unwrap().to_string().leak(),
        "--quiet",
    ];
    let with = |sev: &str| {
        let mut a = base.to_vec();
        a.extend(["--fail-on", sev]);
        run(&a).status.code()
    };
    assert_eq!(run(&base).status.code(), Some(0));
    assert_eq!(with("critical"), Some(1));
    let clean = run(&[
        "--pcap",
        lab("normal_test.pcap").to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--fail-on",
        "low",
        "--quiet",
    ]);
    assert_eq!(clean.status.code(), Some(0));
}

#[test]
fn eve_stream_has_one_valid_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let eve = dir.path().join("alerts.json");
    let o = run(&[
        "--pcap",
        lab("dos_flood.pcap").to_str().unwrap(),
        "--authorized-masters",
        "192.168.50.20,192.168.50.30,192.168.50.40",
        "--output",
        dir.path().join("r.json").to_str().unwrap(),
        "--eve",
        eve.to_str().unwrap(),
        "--quiet",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = std::fs::read_to_string(&eve).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("valid JSON line"))
        .collect();
    assert!(!lines.is_empty());
    // 1200 alerts in well under a second: rate limiting keeps a handful of lines.
    assert!(lines.len() < 20, "{} lines", lines.len());
    for l in &lines {
        assert_eq!(l["event_type"], "alert");
        for k in [
            "timestamp",
            "src_ip",
            "src_port",
            "dest_ip",
            "dest_port",
            "proto",
        ] {
            assert!(!l[k].is_null(), "{k}");
        }
        for k in ["signature", "signature_id", "severity", "category"] {
            assert!(!l["alert"][k].is_null(), "alert.{k}");
        }
    }
    let rogue_lines = lines
        .iter()
        .filter(|l| l["modbus_detect"]["type"] == "ROGUE_MODBUS_MASTER")
        .count();
    assert!(rogue_lines >= 1);
}

#[test]
fn sigint_during_replay_writes_a_complete_report() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("big.pcap");
    let cfg = modbus_synth::SynthConfig {
        frames: 1_500_000,
        attacks: true,
        ..Default::default()
    };
    let file = std::fs::File::create(&pcap).unwrap();
    modbus_synth::generate(&cfg, std::io::BufWriter::new(file)).unwrap();
    let out = dir.path().join("r.json");
    let eve = dir.path().join("eve.json");
    let mut child = bin()
        .args([
            "--pcap",
            pcap.to_str().unwrap(),
            "--threads",
            "1",
            "--quiet",
        ])
        .args([
            "--authorized-masters",
            "10.1.0.1",
            "--output",
            out.to_str().unwrap(),
        ])
        .args(["--eve", eve.to_str().unwrap()])
        .spawn()
        .unwrap();
    // Wait until the replay is under way (the EVE file exists), then interrupt.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !eve.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    std::thread::sleep(std::time::Duration::from_millis(50));
    let pid = child.id().to_string();
    let killed = Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    let report = read_report(&out);
    if report["status"] == "complete" {
        // The machine was fast enough to finish first: the signal came too late
        // to test anything; make the capture bigger if this ever happens.
        panic!("replay finished before the signal; status {status:?}");
    }
    assert_eq!(status.code(), Some(130));
    assert_eq!(report["status"], "interrupted");
    let frames = report["counters"]["frames"].as_u64().unwrap();
    assert!(frames > 0 && frames < 1_500_000, "{frames}");
    for line in std::fs::read_to_string(&eve).unwrap().lines() {
        serde_json::from_str::<serde_json::Value>(line).expect("complete EVE lines");
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "no temporary files left");
}

/// A report file, read through its schema first (a field the schema does
/// not know fails the test), then as JSON.
fn read_report(p: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read(p).unwrap();
    let typed: Result<modbus_detect::output::report::Report, _> = serde_json::from_slice(&text);
    if let Err(e) = typed {
        panic!("{}: does not match the report schema: {e}", p.display());
    }
    serde_json::from_slice(&text).unwrap()
}
