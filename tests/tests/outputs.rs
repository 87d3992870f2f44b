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

/// [`detect`], killed and failed if it has not ended within `secs`.
fn detect_within(args: &[&str], secs: u64) -> Output {
    let mut child = Command::new(detector_binary())
        .arg("--quiet")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the detector runs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?} still running after {secs} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().expect("its output")
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
        // A directory is a capture set: this one holds no capture.
        (dir.path().to_path_buf(), "no capture file to read"),
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

/// A settings file is the flags it names; the example shipped in
/// `contrib/` is one; the command line wins over it.
#[test]
fn a_settings_file_configures_the_run() {
    let contrib = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/modbus-detect.toml");
    let args = modbus_detect::cli::parse_with_config(
        ["modbus-detect", "--config", s(&contrib)]
            .map(Into::into)
            .to_vec(),
    )
    .expect("the shipped example is valid");
    assert_eq!(args.interface.as_deref(), Some("eth1"));
    assert_eq!(args.sensor_name.as_deref(), Some("plant-a-cell-3"));
    // A replay configured by a file: the rule it turns on raises.
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r.json");
    let cfg = dir.path().join("sensor.toml");
    std::fs::write(
        &cfg,
        format!(
            "pcap = {:?}\noutput = {:?}\nauthorized-masters = [\"192.168.50.20\"]\nquiet = true\n",
            fixture("lab/rogue_master.pcap").display().to_string(),
            report.display().to_string()
        ),
    )
    .unwrap();
    let o = Command::new(detector_binary())
        .args(["--config", s(&cfg)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert!(r["counters"]["alerts_by_type"]["ROGUE_MODBUS_MASTER"].as_u64() > Some(0));
    // The command line wins: all masters authorized, no rogue.
    let o = Command::new(detector_binary())
        .args([
            "--config",
            s(&cfg),
            "--authorized-masters",
            "192.168.50.20,192.168.50.30,192.168.50.40,192.168.50.66",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["counters"]["alerts_by_type"]["ROGUE_MODBUS_MASTER"], 0);
    // A mistyped setting: one line naming the file, exit 3.
    std::fs::write(&cfg, "authorised-masters = [\"10.0.0.1\"]\n").unwrap();
    let o = Command::new(detector_binary())
        .args(["--config", s(&cfg)])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3));
    let e = one_error_line(&o);
    assert!(
        e.contains("sensor.toml: unknown setting \"authorised-masters\""),
        "{e}"
    );
}

/// The rules' thresholds come from data/thresholds.toml, a settings
/// file's `[thresholds]` table changes them, `--threshold` on the command
/// line wins key by key, and the report shows the values used.
#[test]
fn thresholds_are_set_by_file_and_flag() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r.json");
    let cfg = dir.path().join("sensor.toml");
    std::fs::write(
        &cfg,
        format!(
            "pcap = {:?}\noutput = {:?}\n\n[thresholds]\nflood_min_run = 100000\nflood_max_outstanding = 100000\n",
            fixture("lab/dos_flood.pcap").display().to_string(),
            report.display().to_string()
        ),
    )
    .unwrap();
    let floods = |extra: &[&str]| -> (u64, serde_json::Value) {
        let mut args = vec!["--config", s(&cfg)];
        args.extend_from_slice(extra);
        let o = detect(&args);
        assert!(o.status.success(), "{}", err(&o));
        let r: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        let n = r["counters"]["alerts_by_type"]["MODBUS_FLOOD"]
            .as_u64()
            .unwrap();
        (n, r["settings"]["thresholds"].clone())
    };
    // The defaults raise the flood: the file's thresholds silence it.
    let defaults = detect(&[
        "--pcap",
        s(&fixture("lab/dos_flood.pcap")),
        "--output",
        s(&report),
    ]);
    assert!(defaults.status.success(), "{}", err(&defaults));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert!(r["counters"]["alerts_by_type"]["MODBUS_FLOOD"].as_u64() > Some(0));
    assert_eq!(r["settings"]["thresholds"]["flood_min_run"], 20);
    let (n, t) = floods(&[]);
    assert_eq!(n, 0, "the file's thresholds were not applied: {t}");
    assert_eq!(t["flood_min_run"], 100000);
    // One key back on the command line: the run rule raises again, the
    // file's other key still holds.
    let (n, t) = floods(&["--threshold", "flood_min_run=20"]);
    assert!(n > 0, "{t}");
    assert_eq!(
        (&t["flood_min_run"], &t["flood_max_outstanding"]),
        (&20.into(), &100000.into())
    );
    // A wrong name or value: one line naming it, exit 2, no report.
    for (bad, says) in [
        ("flood_min_rn=3", "unknown threshold \"flood_min_rn\""),
        (
            "flood_min_run=0",
            "threshold flood_min_run: 0 is not from 1",
        ),
        ("scan_window_s=fast", "--threshold \"scan_window_s=fast\""),
    ] {
        let _ = std::fs::remove_file(&report);
        let o = detect(&["--config", s(&cfg), "--threshold", bad]);
        assert_eq!(o.status.code(), Some(2), "{bad}");
        let e = one_error_line(&o);
        assert!(e.contains(says), "{bad}: {e}");
        assert!(!report.exists());
    }
}

/// Allow lists take networks too, on the command line and from a file
/// (one entry a line, `#` comments); the report lists them as given.
#[test]
fn allow_lists_take_ranges_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let rogue = fixture("lab/rogue_master.pcap").display().to_string();
    let report = dir.path().join("r.json");
    let rogue_of = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["--pcap", &rogue, "--output", s(&report)];
        args.extend_from_slice(extra);
        let o = detect(&args);
        assert!(o.status.success(), "{}", err(&o));
        let r: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        r
    };
    // The lab's masters are .20, .30, .40; the rogue is .66.
    let r = rogue_of(&["--authorized-masters", "192.168.50.0/26"]);
    assert!(r["counters"]["alerts_by_type"]["ROGUE_MODBUS_MASTER"].as_u64() > Some(0));
    assert!(r["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["type"] != "ROGUE_MODBUS_MASTER" || a["src_ip"] == "192.168.50.66"));
    assert_eq!(
        r["settings"]["authorized_masters"],
        serde_json::json!(["192.168.50.0/26"])
    );
    let r = rogue_of(&["--authorized-masters", "192.168.50.0/24"]);
    assert_eq!(r["counters"]["alerts_by_type"]["ROGUE_MODBUS_MASTER"], 0);
    let list = dir.path().join("masters.txt");
    std::fs::write(
        &list,
        "# control room\n192.168.50.20\n192.168.50.30 # historian\n\n192.168.50.40\n",
    )
    .unwrap();
    let r = rogue_of(&["--authorized-masters-file", s(&list)]);
    let rogue_alerts: Vec<&serde_json::Value> = r["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["type"] == "ROGUE_MODBUS_MASTER")
        .collect();
    assert!(
        !rogue_alerts.is_empty() && rogue_alerts.iter().all(|a| a["src_ip"] == "192.168.50.66")
    );
    // A bad line: one error line naming the file and the line, exit 3.
    std::fs::write(&list, "192.168.50.20\n192.168.50.300\n").unwrap();
    let o = detect(&[
        "--pcap",
        &rogue,
        "--output",
        s(&report),
        "--authorized-masters-file",
        s(&list),
    ]);
    assert_eq!(o.status.code(), Some(3));
    let e = one_error_line(&o);
    assert!(
        e.contains("masters.txt: line 2: \"192.168.50.300\" is not an address"),
        "{e}"
    );
}

/// `--dump-adus` runs beside detection: the report, the alerts and
/// `--fail-on` as without it, and the dump holds every ADU detection saw.
#[test]
fn dumping_adus_never_turns_detection_off() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r.json");
    let dump = dir.path().join("adus.jsonl");
    let rogue = fixture("lab/rogue_master.pcap").display().to_string();
    let o = detect(&[
        "--pcap",
        &rogue,
        "--output",
        s(&report),
        "--dump-adus",
        s(&dump),
        "--authorized-masters",
        "192.168.50.20,192.168.50.30,192.168.50.40",
        "--fail-on",
        "critical",
    ]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "--fail-on saw the rogue master: {}",
        err(&o)
    );
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert!(r["counters"]["alerts_by_type"]["ROGUE_MODBUS_MASTER"].as_u64() > Some(0));
    let lines = std::fs::read_to_string(&dump).unwrap().lines().count() as u64;
    assert_eq!(lines, r["counters"]["modbus_adus"].as_u64().unwrap());
}

/// A settings file that is a FIFO or a device is refused at once: opening
/// a FIFO would wait for a writer that never comes, a device never ends.
#[test]
fn settings_files_that_are_not_files_never_hang() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("limits.json");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(3) on a path of our own temporary directory.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let report = dir.path().join("r.json");
    for (flag, path) in [
        ("--register-limits-file", fifo.to_str().unwrap()),
        ("--baseline-file", "/dev/zero"),
        ("--authorized-masters-file", fifo.to_str().unwrap()),
    ] {
        let o = detect_within(
            &["--pcap", &capture(), "--output", s(&report), flag, path],
            10,
        );
        assert_eq!(o.status.code(), Some(3), "{flag}");
        let e = one_error_line(&o);
        assert!(
            e.contains("is a FIFO")
                || e.contains("is a character device")
                || e.contains("not an address list"),
            "{e}"
        );
    }
}

/// `-` is standard output for the report, the alert lines and the ADU
/// dump: the same bytes the file would get (the report but its timings);
/// only one of them at a time, since their lines would mix.
#[test]
fn dash_is_standard_output() {
    let dir = tempfile::tempdir().unwrap();
    let capture = fixture("lab/unauthorized_write.pcap");
    let base = [
        "--pcap",
        s(&capture),
        "--authorized-writers",
        "192.168.50.20",
    ];
    let file = |name: &str| dir.path().join(name);
    let (r, e, d) = (file("r.json"), file("e.json"), file("d.json"));
    let mut a = base.to_vec();
    a.extend(["--output", s(&r), "--eve", s(&e), "--dump-adus", s(&d)]);
    let o = detect(&a);
    assert!(o.status.success(), "{}", err(&o));
    let read = |p: &Path| std::fs::read(p).unwrap();
    let (report, eve, dump) = (read(&r), read(&e), read(&d));
    let other = file("other.json");
    let stdout_of = |flag: &str| -> Vec<u8> {
        let mut a = base.to_vec();
        a.extend([flag, "-"]);
        if flag != "--output" {
            a.extend(["--output", s(&other)]);
        }
        let o = detect(&a);
        assert!(o.status.success(), "{flag}: {}", err(&o));
        o.stdout
    };
    let timings = |v: &mut serde_json::Value| {
        for k in ["processing_seconds", "peak_memory_kib"] {
            v[k] = serde_json::Value::Null;
        }
        // The file run wrote alert lines too.
        v["settings"]["eve_file"] = serde_json::Value::Null;
        v["counters"]["eve_lines_written"] = serde_json::Value::Null;
    };
    let mut want: serde_json::Value = serde_json::from_slice(&report).unwrap();
    let mut got: serde_json::Value = serde_json::from_slice(&stdout_of("--output")).unwrap();
    timings(&mut want);
    timings(&mut got);
    assert!(got == want, "the report on standard output differs:\n{got}");
    // The alert lines: the same events (each line's own fields equal but
    // for the file name the lines carry none of).
    let lines = |b: &[u8]| -> Vec<serde_json::Value> {
        String::from_utf8_lossy(b)
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object a line"))
            .collect()
    };
    let (want, got) = (lines(&eve), lines(&stdout_of("--eve")));
    assert!(!want.is_empty());
    assert_eq!(got, want, "the alert lines on standard output");
    assert_eq!(
        stdout_of("--dump-adus"),
        dump,
        "the ADU dump on standard output"
    );
    // Two outputs on standard output: refused before anything is read.
    let mut a = base.to_vec();
    a.extend(["--output", "-", "--eve", "-"]);
    let o = detect(&a);
    assert_eq!(o.status.code(), Some(2));
    assert!(one_error_line(&o).contains("only one output can be standard output"));
    assert!(o.stdout.is_empty());
}
