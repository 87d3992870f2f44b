//! A capture read as a stream: `--pcap -` (standard input) and a FIFO
//! given as `--pcap`, as `tcpdump -w - | modbus-detect --pcap -` and a
//! capture tool writing into a named pipe use them. The stream must give
//! exactly what the file gives, however the writer cuts its writes; a
//! slow writer's alerts must come out while it is still writing; a signal
//! must end a run that waits for a writer; a hostile header must not make
//! the sensor buffer gigabytes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use modbus_tests::{detector_binary, fixture, pcap_prefix, read_json};
use serde_json::Value;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The parts of a report that must not depend on how the capture was read.
fn detections(report: &Value) -> Value {
    serde_json::json!({
        "counters": report["counters"],
        "alerts": report["alerts"],
        "inventory": report["inventory"],
        "format": report["input"]["format"],
    })
}

fn report_of_file(capture: &Path, out: &Path, extra: &[&str]) -> Value {
    let o = Command::new(detector_binary())
        .args(["--quiet", "--pcap", s(capture), "--output", s(out)])
        .args(extra)
        .output()
        .expect("the detector runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    read_json(out)
}

fn mkfifo(path: &Path) {
    let st = Command::new("mkfifo").arg(path).status().expect("mkfifo");
    assert!(st.success(), "mkfifo {}", path.display());
}

/// Kills the detector if a test fails before it ends.
struct Running(Option<Child>);

impl Running {
    fn wait_within(mut self, secs: u64) -> Output {
        let mut child = self.0.take().expect("started");
        let until = Instant::now() + Duration::from_secs(secs);
        while child.try_wait().expect("wait").is_none() {
            if Instant::now() > until {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the detector did not end within {secs} s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().expect("output")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start(args: &[&str]) -> Running {
    start_with(args, false)
}

/// [`start`], on one core when `one_core` (the shard then runs inline).
fn start_with(args: &[&str], one_core: bool) -> Running {
    let mut c = Command::new(detector_binary());
    if one_core {
        modbus_tests::on_one_core(&mut c);
    }
    let child = c
        .arg("--quiet")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the detector starts");
    Running(Some(child))
}

#[test]
fn standard_input_gives_what_the_file_gives() {
    let dir = tempfile::tempdir().unwrap();
    for (name, extra) in [
        ("lab/dos_flood.pcap", &[][..]),
        ("lab/normal_test.pcapng", &[][..]),
        (
            "lab/unauthorized_write.pcap",
            &["--authorized-writers", "192.168.50.20", "--threads", "2"][..],
        ),
    ] {
        let capture = fixture(name);
        let want = report_of_file(&capture, &dir.path().join("file.json"), extra);
        let out = dir.path().join("stdin.json");
        let mut child = Command::new(detector_binary())
            .args(["--quiet", "--pcap", "-", "--output", s(&out)])
            .args(extra)
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let bytes = std::fs::read(&capture).unwrap();
        child.stdin.take().unwrap().write_all(&bytes).unwrap();
        let o = child.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let got = read_json(&out);
        assert!(
            want["counters"]["frames"].as_u64() > Some(0),
            "{name}: no frames"
        );
        assert_eq!(detections(&got), detections(&want), "{name}");
        assert_eq!(got["input"]["path"], "-");
    }
}

/// A FIFO written in pieces of every size (a record cut anywhere: in its
/// header, in its data, between blocks), with pauses.
#[test]
fn a_fifo_cut_anywhere_gives_what_the_file_gives() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["lab/exception_burst.pcap", "lab/normal_test.pcapng"] {
        let capture = fixture(name);
        let want = report_of_file(&capture, &dir.path().join("file.json"), &[]);
        let fifo = dir.path().join(format!("{}.fifo", name.replace('/', "_")));
        mkfifo(&fifo);
        let out = dir.path().join("fifo.json");
        let run = start(&["--pcap", s(&fifo), "--output", s(&out)]);
        let bytes = std::fs::read(&capture).unwrap();
        let mut w = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        let sizes = [1usize, 3, 16, 17, 100, 1500, 4096, 65_536];
        let (mut at, mut i) = (0, 0);
        while at < bytes.len() {
            let n = sizes[i % sizes.len()].min(bytes.len() - at);
            w.write_all(&bytes[at..at + n]).unwrap();
            w.flush().unwrap();
            at += n;
            i += 1;
            if i % 500 == 0 {
                // Longer than the reader's wait: it must go on after.
                std::thread::sleep(Duration::from_millis(150));
            }
        }
        drop(w);
        let o = run.wait_within(60);
        assert!(
            o.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(detections(&read_json(&out)), detections(&want), "{name}");
    }
}

/// Alerts of a slow writer come out while it writes: the stream is
/// processed as it comes, not read whole first.
#[test]
fn a_paused_writer_s_alerts_come_out_before_it_ends() {
    // One shard in the reading thread (one core), and shard threads fed
    // in batches (a partial batch must not wait for the next frames).
    for threads in ["inline", "1", "2"] {
        paused_writer(threads);
    }
}

/// `threads`: a shard count, or "inline" (no --threads, on one core).
fn paused_writer(threads: &str) {
    let plan = threads;
    let inline = threads == "inline";
    let threads = if inline { "1" } else { threads };
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("capture.fifo");
    mkfifo(&fifo);
    let eve = dir.path().join("alerts.json");
    let out = dir.path().join("r.json");
    let mut args = vec![
        "--pcap",
        s(&fifo),
        "--output",
        s(&out),
        "--eve",
        s(&eve),
        "--authorized-writers",
        "192.168.50.20",
    ];
    if !inline {
        args.extend(["--threads", threads]);
    }
    let run = start_with(&args, inline);
    let bytes = std::fs::read(fixture("lab/unauthorized_write.pcap")).unwrap();
    let mut w = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    // Up to the answer of the first unauthorized write (its alert waits
    // for the answer), and not a frame more; the writer keeps its end
    // open: the run cannot end, and the alert line must appear anyway.
    w.write_all(pcap_prefix(&bytes, first_write_answer_frame(threads)))
        .unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    let lines = loop {
        let text = std::fs::read_to_string(&eve).unwrap_or_default();
        let lines = text
            .lines()
            .filter(|l| l.contains("UNAUTHORIZED_MODBUS_WRITE"))
            .count();
        if lines > 0 || Instant::now() > until {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(lines > 0, "{plan}: no alert line while the writer is open");
    assert!(!out.exists(), "the run ended before its writer");
    drop(w);
    let o = run.wait_within(30);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = read_json(&out);
    assert!(r["counters"]["alerts_by_type"]["UNAUTHORIZED_MODBUS_WRITE"].as_u64() > Some(0));
}

/// The frame number of the answer to the first unauthorized write of the
/// lab capture, from a replay of the file.
fn first_write_answer_frame(threads: &str) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let eve = dir.path().join("alerts.json");
    report_of_file(
        &fixture("lab/unauthorized_write.pcap"),
        &dir.path().join("r.json"),
        &[
            "--eve",
            s(&eve),
            "--authorized-writers",
            "192.168.50.20",
            "--threads",
            threads,
        ],
    );
    let text = std::fs::read_to_string(&eve).unwrap();
    let line: Value = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .find(|l: &Value| l["modbus_detect"]["type"] == "UNAUTHORIZED_MODBUS_WRITE")
        .expect("the lab capture raises UNAUTHORIZED_MODBUS_WRITE");
    let frame = line["modbus_detect"]["write"]["response_frame"]
        .as_u64()
        .expect("the write was answered");
    usize::try_from(frame).unwrap()
}

/// No writer ever comes: SIGTERM ends the run at once, with its report.
#[test]
fn sigterm_ends_a_run_waiting_for_a_writer() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("never.fifo");
    mkfifo(&fifo);
    let out = dir.path().join("r.json");
    let run = start(&["--pcap", s(&fifo), "--output", s(&out)]);
    std::thread::sleep(Duration::from_millis(500));
    let pid = run.0.as_ref().expect("started").id();
    let sent = Instant::now();
    let st = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let o = run.wait_within(5);
    assert!(
        sent.elapsed() < Duration::from_secs(1),
        "{:?}",
        sent.elapsed()
    );
    assert_eq!(o.status.code(), Some(130));
    let r = read_json(&out);
    assert_eq!(r["status"], "interrupted");
}

/// A stream that breaks off, or whose header announces more than any
/// record can hold: one line naming the input and the byte, what came
/// before it processed and reported, exit 3, and nothing buffered.
#[test]
fn a_broken_stream_is_one_line_and_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.json");
    let whole = std::fs::read(fixture("lab/unauthorized_write.pcap")).unwrap();
    let huge = {
        // A valid file header, then a record header announcing 256 MiB.
        let mut b = whole[..24].to_vec();
        b.extend_from_slice(&[0; 8]);
        b.extend_from_slice(&(256u32 << 20).to_le_bytes());
        b.extend_from_slice(&(256u32 << 20).to_le_bytes());
        b.extend_from_slice(&[0; 64]);
        b
    };
    let cut = whole.len() - 10;
    let cases: [(&[u8], &str); 4] = [
        (&whole[..cut], "standard input: truncated at byte"),
        (
            &huge,
            "standard input: corrupt at byte 24: a record of 268435456 bytes",
        ),
        (b"", "standard input: empty"),
        (
            b"GET / HTTP/1.1\r\n",
            "standard input: not a pcap or pcapng file",
        ),
    ];
    for (input, says) in cases {
        let _ = std::fs::remove_file(&out);
        let mut child = Command::new(detector_binary())
            .args([
                "--quiet",
                "--pcap",
                "-",
                "--output",
                s(&out),
                "--authorized-writers",
                "192.168.50.20",
            ])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        // The detector may stop reading at the bad header: a closed pipe
        // is then expected.
        let _ = stdin.write_all(input);
        drop(stdin);
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(3), "{says}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(says), "{err}");
        if input.len() == cut {
            // Everything before the cut was processed and reported.
            let r = read_json(&out);
            assert_eq!(r["status"], "input_error");
            assert!(
                r["counters"]["alerts_by_type"]["UNAUTHORIZED_MODBUS_WRITE"].as_u64() > Some(0)
            );
        }
    }
}

/// `--dump-adus` reads the capture twice (a file or a set can be): refused
/// for a stream, before anything is read or written.
#[test]
fn dump_adus_needs_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let dump: PathBuf = dir.path().join("adus.json");
    let o = Command::new(detector_binary())
        .args(["--quiet", "--pcap", "-", "--dump-adus", s(&dump)])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--dump-adus needs capture files"));
    assert!(!dump.exists());
}
