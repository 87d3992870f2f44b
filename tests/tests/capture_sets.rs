//! Several capture files as one capture (`--pcap` with several files or a
//! directory): a rotated set is read in the order of its files' first
//! packets, connections go on across files, and the result is the same as
//! for the one file the set was cut from, frame numbers included.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use modbus_tests::{detector_binary, fixture, read_json};
use serde_json::Value;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The records of a little-endian classic pcap file: (header, records).
fn records(bytes: &[u8]) -> (&[u8], Vec<&[u8]>) {
    assert_eq!(bytes[..4], [0xd4, 0xc3, 0xb2, 0xa1], "a little-endian pcap");
    let mut at = 24;
    let mut out = Vec::new();
    while at < bytes.len() {
        let caplen = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        out.push(&bytes[at..at + 16 + caplen]);
        at += 16 + caplen;
    }
    (&bytes[..24], out)
}

/// Cut `capture` into three files whose names sort against their time
/// order (`c.pcap` holds the first part, `a.pcap` the last); their paths,
/// in time order.
fn cut(capture: &Path, dir: &Path) -> Vec<PathBuf> {
    let bytes = std::fs::read(capture).unwrap();
    let (header, recs) = records(&bytes);
    let third = recs.len() / 3;
    let parts = [&recs[..third], &recs[third..2 * third], &recs[2 * third..]];
    ["c.pcap", "b.pcap", "a.pcap"]
        .iter()
        .zip(parts)
        .map(|(name, part)| {
            let path = dir.join(name);
            let mut out = header.to_vec();
            part.iter().for_each(|r| out.extend_from_slice(r));
            std::fs::write(&path, out).unwrap();
            path
        })
        .collect()
}

fn detect(inputs: &[&str], out: &Path, extra: &[&str]) -> Output {
    Command::new(detector_binary())
        .arg("--quiet")
        .arg("--pcap")
        .args(inputs)
        .args(["--output", s(out), "--authorized-writers", "192.168.50.20"])
        .args(extra)
        .output()
        .expect("the detector runs")
}

/// What must not depend on how the capture was cut.
fn detections(r: &Value) -> Value {
    serde_json::json!({
        "counters": r["counters"],
        "alerts": r["alerts"],
        "inventory": r["inventory"],
    })
}

#[test]
fn a_set_gives_what_its_one_file_gives() {
    let dir = tempfile::tempdir().unwrap();
    let set = dir.path().join("set");
    std::fs::create_dir(&set).unwrap();
    let capture = fixture("lab/unauthorized_write.pcap");
    let parts = cut(&capture, &set);
    let whole = dir.path().join("whole.json");
    assert!(detect(&[s(&capture)], &whole, &[]).status.success());
    let whole = read_json(&whole);
    assert!(whole["counters"]["alerts_by_type"]["UNAUTHORIZED_MODBUS_WRITE"].as_u64() > Some(0));
    let out = dir.path().join("set.json");
    let by_name: Vec<&str> = parts.iter().rev().map(|p| s(p)).collect();
    for (inputs, threads) in [(vec![s(&set)], "1"), (by_name, "1"), (vec![s(&set)], "2")] {
        let o = detect(&inputs, &out, &["--threads", threads]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let r = read_json(&out);
        assert_eq!(
            detections(&r),
            detections(&whole),
            "{inputs:?}, {threads} thread(s)"
        );
        // The files in time order (not name order), numbered across.
        let files = r["input"]["files"].as_array().unwrap();
        let names: Vec<&str> = files.iter().map(|f| f["path"].as_str().unwrap()).collect();
        assert_eq!(names, parts.iter().map(|p| s(p)).collect::<Vec<_>>());
        let mut next = 1;
        for f in files {
            assert_eq!(f["first_frame"], next, "{f}");
            assert_eq!(f["skipped"], false);
            next += f["frames"].as_u64().unwrap();
        }
        assert_eq!(next - 1, whole["counters"]["frames"].as_u64().unwrap());
    }
}

/// `--dump-adus` and `adu_features.csv` of a set: its files' ADUs in time
/// order, numbered across as detection numbers them; what the whole
/// capture gives, but where a file boundary cuts a connection.
#[test]
fn a_set_s_adus_are_its_files_numbered_across() {
    let dir = tempfile::tempdir().unwrap();
    let set = dir.path().join("set");
    std::fs::create_dir(&set).unwrap();
    let capture = fixture("lab/exception_burst.pcap");
    cut(&capture, &set);
    let run = |input: &Path, name: &str| {
        let dump = dir.path().join(format!("{name}.jsonl"));
        let csv = dir.path().join(format!("{name}-csv"));
        let o = detect(
            &[s(input)],
            &dir.path().join(format!("{name}.json")),
            &["--dump-adus", s(&dump), "--csv-dir", s(&csv)],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let lines: Vec<Value> = std::fs::read_to_string(&dump)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let features = std::fs::read_to_string(csv.join("adu_features.csv")).unwrap();
        (lines, features)
    };
    let (whole, whole_csv) = run(&capture, "whole");
    let (parts, parts_csv) = run(&set, "set");
    assert!(whole.len() > 1000);
    // Every ADU of the set is the whole capture's, at the same frame.
    let key = |v: &Value| {
        (
            v["frame"].as_u64().unwrap(),
            v["tid"].as_u64(),
            v["is_orig"].as_bool(),
        )
    };
    let whole_keys: std::collections::BTreeMap<_, &Value> =
        whole.iter().map(|v| (key(v), v)).collect();
    let mut unlinked = 0;
    for p in &parts {
        let w = whole_keys
            .get(&key(p))
            .unwrap_or_else(|| panic!("not in the whole capture: {p}"));
        let mut p = p.clone();
        if p["request_frame"].is_null() && !w["request_frame"].is_null() {
            // Its request is in the file before.
            unlinked += 1;
            p["request_frame"] = w["request_frame"].clone();
        }
        assert_eq!(&p, *w);
    }
    // At most what the two boundaries cut.
    assert!(
        whole.len() - parts.len() <= 4,
        "{} of {}",
        parts.len(),
        whole.len()
    );
    assert!(unlinked <= 4, "{unlinked}");
    // The features: the same rows, as many as the dump's.
    assert_eq!(parts_csv.lines().count(), parts.len() + 1);
    let whole_rows: std::collections::BTreeSet<&str> = whole_csv.lines().collect();
    let differ = parts_csv
        .lines()
        .filter(|l| !whole_rows.contains(l))
        .count();
    assert!(differ <= 8, "{differ} rows differ");
}

#[test]
fn a_bad_file_in_a_set_is_named_or_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let set = dir.path().join("set");
    std::fs::create_dir(&set).unwrap();
    let capture = fixture("lab/unauthorized_write.pcap");
    cut(&capture, &set);
    std::fs::write(set.join("notes.txt"), "rotated hourly\n").unwrap();
    let out = dir.path().join("r.json");
    let o = detect(&[s(&set)], &out, &[]);
    assert_eq!(o.status.code(), Some(3));
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("notes.txt: not a pcap or pcapng file"), "{e}");
    assert!(!out.exists());
    // Left out, listed, and the rest as without it.
    let o = detect(&[s(&set)], &out, &["--skip-bad-files"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = read_json(&out);
    let whole = dir.path().join("whole.json");
    assert!(detect(&[s(&capture)], &whole, &[]).status.success());
    assert_eq!(detections(&r), detections(&read_json(&whole)));
    let skipped: Vec<&Value> = r["input"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["skipped"] == true)
        .collect();
    assert_eq!(skipped.len(), 1);
    assert!(skipped[0]["path"].as_str().unwrap().ends_with("notes.txt"));
    assert!(skipped[0]["error"].as_str().unwrap().contains("not a pcap"));
    // A stream cannot be part of a set.
    let o = detect(&[s(&set), "-"], &out, &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot be part of a capture set"));
}

/// `census`: per file of a directory its frames, those that are TCP on a
/// Modbus port (the original's count, as tshark counts `tcp.port == 502`),
/// its first frames, and the totals; a file that is no capture is listed
/// with why.
#[test]
fn census_counts_modbus_frames_per_file_and_in_total() {
    let dir = tempfile::tempdir().unwrap();
    let set = dir.path().join("set");
    std::fs::create_dir(&set).unwrap();
    let capture = fixture("lab/unauthorized_write.pcap");
    cut(&capture, &set);
    std::fs::write(set.join("notes.txt"), "rotated hourly\n").unwrap();
    let json = dir.path().join("census.json");
    let o = Command::new(detector_binary())
        .args(["census", s(&set), "--preview", "2", "--json", s(&json)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let files: Vec<Value> = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let names: Vec<&str> = files
        .iter()
        .map(|f| {
            Path::new(f["path"].as_str().unwrap())
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
        })
        .collect();
    assert_eq!(names, ["a.pcap", "b.pcap", "c.pcap", "notes.txt"]);
    let tshark = modbus_tests::tshark_fields(&capture, "tcp.port == 502", &["frame.number"], ',');
    let want = (tshark.len() - 1) as u64;
    let sum: u64 = files
        .iter()
        .map(|f| f["modbus_tcp_frames"].as_u64().unwrap())
        .sum();
    assert_eq!(sum, want);
    for f in &files[..3] {
        assert_eq!(f["preview"].as_array().unwrap().len(), 2, "{f}");
        assert!(f["error"].is_null());
    }
    assert!(files[3]["error"]
        .as_str()
        .unwrap()
        .contains("not a pcap or pcapng file"));
    let text = String::from_utf8_lossy(&o.stdout);
    let total = text
        .lines()
        .find(|l| l.contains("total of 4 file(s), 1 unreadable"))
        .unwrap();
    assert!(
        total.split_whitespace().nth(1) == Some(want.to_string().as_str()),
        "{total}"
    );
}
