//! The sensor runs as root: its outputs must never be a way to destroy a
//! file. Temporary files have unpredictable names and are created with
//! O_EXCL; the alert stream never follows a link and never writes a
//! device; an output that is an input (under any name) is refused before
//! anything is opened for writing; the alert stream is appended to (as
//! Suricata's) unless asked otherwise; input errors name the real problem;
//! file names reach the terminal escaped.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Output};

use modbus_tests::{detector_binary, fixture};

fn detect(args: &[&str]) -> Output {
    Command::new(detector_binary())
        .arg("--quiet")
        .args(args)
        .output()
        .expect("the detector runs")
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// One error line, starting as every error line does.
fn one_error_line(o: &Output) -> String {
    let e = err(o);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.starts_with("modbus-detect: error: "), "{e}");
    e
}

fn capture() -> String {
    fixture("lab/normal_test.pcap").display().to_string()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_link_planted_where_the_temporary_file_was_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let report = dir.path().join("report.json");
    // The name the report's temporary file had (`.NAME.PID.tmp`), planted
    // as a link to the victim, for the in-process run of this test.
    let planted = dir
        .path()
        .join(format!(".report.json.{}.tmp", std::process::id()));
    symlink(&victim, &planted).unwrap();
    let r = modbus_tests::run(&["--pcap", &capture(), "--output", s(&report)]);
    assert_eq!(r.exit, Ok(0));
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(std::fs::symlink_metadata(&planted)
        .unwrap()
        .file_type()
        .is_symlink());
    // A link at the output's own path is replaced, not followed.
    let linked = dir.path().join("linked.json");
    symlink(&victim, &linked).unwrap();
    let r = modbus_tests::run(&["--pcap", &capture(), "--output", s(&linked)]);
    assert_eq!(r.exit, Ok(0));
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(std::fs::symlink_metadata(&linked).unwrap().is_file());
}

#[test]
fn the_alert_stream_never_follows_a_link_nor_writes_a_device() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let eve = dir.path().join("eve.json");
    symlink(&victim, &eve).unwrap();
    let report = dir.path().join("r.json");
    let pcap = capture();
    for truncate in [false, true] {
        let mut args = vec!["--pcap", &pcap, "--output", s(&report), "--eve", s(&eve)];
        if truncate {
            args.push("--eve-truncate");
        }
        let o = detect(&args);
        assert_eq!(o.status.code(), Some(4));
        let e = one_error_line(&o);
        assert!(e.contains("is a symbolic link"), "{e}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    }
    let started = std::time::Instant::now();
    let o = detect(&[
        "--pcap",
        &pcap,
        "--output",
        s(&report),
        "--eve",
        "/dev/full",
    ]);
    assert_eq!(o.status.code(), Some(4));
    assert!(one_error_line(&o).contains("/dev/full: cannot write: is a character device"));
    assert!(started.elapsed().as_secs() < 10);
    let o = detect(&["--pcap", &pcap, "--output", "/dev/null"]);
    assert_eq!(o.status.code(), Some(4));
    assert!(
        one_error_line(&o).contains("is a character device (outputs only replace regular files)")
    );
}

#[test]
fn an_output_that_is_an_input_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("evidence.pcap");
    std::fs::copy(capture(), &pcap).unwrap();
    let before = std::fs::read(&pcap).unwrap();
    let hard = dir.path().join("hard.json");
    std::fs::hard_link(&pcap, &hard).unwrap();
    let soft = dir.path().join("soft.json");
    symlink(&pcap, &soft).unwrap();
    let report = dir.path().join("r.json");
    for (flag, out) in [
        ("--eve", &pcap),
        ("--eve", &hard),
        ("--output", &soft),
        ("--output", &pcap),
        ("--dump-adus", &hard),
        ("--inventory", &soft),
    ] {
        let mut args = vec!["--pcap", s(&pcap), flag, s(out)];
        if flag != "--output" {
            args.extend(["--output", s(&report)]);
        }
        let o = detect(&args);
        assert_eq!(o.status.code(), Some(4), "{flag} {}", out.display());
        let e = one_error_line(&o);
        assert!(e.contains("is the input"), "{e}");
        assert_eq!(
            std::fs::read(&pcap).unwrap(),
            before,
            "{flag} left the capture intact"
        );
    }
    // The baseline being compared with, written as a report.
    let baseline = modbus_tests::fixture("../../modbus-detect/demo/baseline.json");
    let o = detect(&[
        "--pcap",
        &capture(),
        "--baseline-file",
        s(&baseline),
        "--output",
        s(&baseline),
    ]);
    assert_eq!(o.status.code(), Some(4));
    assert!(one_error_line(&o).contains("is the input"));
}

#[test]
fn alert_lines_are_appended_unless_asked_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let eve = dir.path().join("eve.json");
    let report = dir.path().join("r.json");
    let rogue = fixture("lab/rogue_master.pcap").display().to_string();
    let args = [
        "--pcap",
        &rogue,
        "--output",
        s(&report),
        "--eve",
        s(&eve),
        "--authorized-masters",
        "192.168.50.20",
    ];
    let lines = || std::fs::read_to_string(&eve).unwrap().lines().count();
    assert!(detect(&args).status.success());
    let once = lines();
    assert!(once > 0);
    assert!(detect(&args).status.success());
    assert_eq!(lines(), 2 * once, "appended, as Suricata does");
    let mut truncate = args.to_vec();
    truncate.push("--eve-truncate");
    assert!(detect(&truncate).status.success());
    assert_eq!(lines(), once);
}

#[test]
fn input_errors_name_the_real_problem_and_escape_names() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r.json");
    for (input, problem) in [
        (
            dir.path().to_path_buf(),
            "is a directory, not a capture file",
        ),
        (
            Path::new("/dev/null").to_path_buf(),
            "is a character device, not a capture file",
        ),
    ] {
        let o = detect(&["--pcap", s(&input), "--output", s(&report)]);
        assert_eq!(o.status.code(), Some(3));
        let e = one_error_line(&o);
        assert!(e.contains(problem), "{e}");
    }
    // A name made to rewrite the analyst's terminal.
    let evil = dir.path().join("x\u{1b}[2J\u{7}.pcap");
    let o = detect(&["--pcap", s(&evil), "--output", s(&report)]);
    assert_eq!(o.status.code(), Some(3));
    let e = one_error_line(&o);
    assert!(
        !e.contains('\u{1b}') && !e.contains('\u{7}'),
        "raw control characters: {e:?}"
    );
    assert!(e.contains("x\\u{1b}[2J\\u{7}.pcap"), "{e}");
}
