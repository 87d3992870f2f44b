//! Helpers for the integration tests: fixture paths and running the detector
//! in-process exactly as the `modbus-detect` binary does.

pub mod netns;

use std::path::PathBuf;

use clap::Parser;
use modbus_detect::output::report::Report;
use serde_json::Value;

/// What [`write_capture`] hands its closure.
pub type CaptureWriter = modbus_synth::PcapWriter<std::io::BufWriter<std::fs::File>>;

/// Write a capture at `path` through a closure that drives conversations.
pub fn write_capture(
    path: &std::path::Path,
    build: impl FnOnce(&mut CaptureWriter) -> std::io::Result<()>,
) {
    use std::io::Write;
    let file = std::fs::File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut w = modbus_synth::PcapWriter::new(std::io::BufWriter::new(file))
        .expect("the pcap header is written");
    build(&mut w).expect("the capture is written");
    w.into_inner()
        .and_then(|mut b| b.flush())
        .expect("the capture is flushed");
}

/// Ask `check` every `every` until it gives a value, for `timeout` at
/// most: then the test fails with what `check` said last. For what a
/// process under test does in its own time (a server that starts, a file
/// written every interval), instead of a sleep that is too short on a
/// loaded machine.
pub fn eventually<T>(
    timeout: std::time::Duration,
    every: std::time::Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match check() {
            Ok(v) => return v,
            Err(why) if std::time::Instant::now() >= deadline => {
                panic!("still not so after {timeout:?}: {why}")
            }
            Err(_) => std::thread::sleep(every),
        }
    }
}

/// For [`eventually`]'s checks: `Ok` when `ok`, else what is seen instead.
pub fn holds(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(what())
    }
}

/// A millisecond, in the nanoseconds of capture timestamps.
pub const MS: u64 = 1_000_000;

/// Write a capture of one connection, from the HMI 10.0.0.20:40000 to the
/// PLC 10.0.0.10:502: its handshake (frames 1-3) in the first
/// millisecond of Nov 2023, then what `talk` sends (from frame 4). `talk`
/// gets the connection, the writer and a time 10 ms after the handshake.
pub fn write_connection(
    path: &std::path::Path,
    talk: impl FnOnce(&mut modbus_synth::Conversation, &mut CaptureWriter, u64) -> std::io::Result<()>,
) {
    const T0: u64 = 1_700_000_000_000_000_000;
    write_capture(path, |w| {
        let mut c = modbus_synth::Conversation::new(
            std::net::Ipv4Addr::new(10, 0, 0, 20),
            40_000,
            std::net::Ipv4Addr::new(10, 0, 0, 10),
        );
        c.handshake(w, T0)?;
        talk(&mut c, w, T0 + 10 * MS)
    });
}

/// tshark's fields of the frames of `capture` that match `filter`: a
/// header row (the field names), then one row per frame, the values a
/// field has several times in a frame joined by `aggregator`. tshark is
/// installed by `cargo xtask setup`; its absence fails the test.
pub fn tshark_fields(
    capture: &std::path::Path,
    filter: &str,
    fields: &[&str],
    aggregator: char,
) -> Vec<Vec<String>> {
    let mut cmd = std::process::Command::new("tshark");
    cmd.args(["-n", "-r"])
        .arg(capture)
        .args(["-Y", filter, "-T", "fields", "-E", "header=y"])
        .args(["-E", "occurrence=a", "-E"])
        .arg(format!("aggregator={aggregator}"));
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd
        .output()
        .expect("tshark runs (cargo xtask setup installs it)");
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

/// `tests/fixtures/<rel>`.
pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(rel)
}

/// The result of one in-process run.
pub struct Run {
    pub exit: Result<u8, String>,
    /// The report as written, read through its schema.
    pub typed: Option<Report>,
    /// The same report as JSON, for tests that look at it field by field.
    pub report: Option<Value>,
    pub dir: tempfile::TempDir,
}

impl Run {
    pub fn report(&self) -> &Value {
        self.report.as_ref().expect("the run wrote a report")
    }

    pub fn typed(&self) -> &Report {
        self.typed.as_ref().expect("the run wrote a report")
    }

    /// Sum of alert counts per (type, severity, src, dst).
    pub fn alert_counts(
        &self,
    ) -> std::collections::BTreeMap<(String, String, String, String), u64> {
        let mut m = std::collections::BTreeMap::new();
        for a in &self.typed().alerts {
            let c = &a.common;
            let key = (
                c.kind.clone(),
                c.severity.clone(),
                c.src_ip.to_string(),
                c.dst_ip.to_string(),
            );
            *m.entry(key).or_insert(0) += a.count;
        }
        m
    }
}

/// A report file read through its schema ([`Report`]): a field the schema
/// does not know, or one it needs that is missing, fails the test.
pub fn read_report(p: &std::path::Path) -> Report {
    let text = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    parse_report(&text, p)
}

/// [`read_report`], as JSON for tests that look at it field by field.
pub fn read_report_json(p: &std::path::Path) -> Value {
    let _ = read_report(p);
    read_json(p)
}

fn parse_report(text: &[u8], p: &std::path::Path) -> Report {
    serde_json::from_slice(text)
        .unwrap_or_else(|e| panic!("{}: does not match the report schema: {e}", p.display()))
}

/// Run `modbus-detect ARGS --output <tmp>/report.json` in this process.
/// `{dir}` in an argument is replaced by the run's temporary directory.
pub fn run(args: &[&str]) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().display().to_string();
    let report = dir.path().join("report.json");
    let mut argv: Vec<String> = vec!["modbus-detect".into(), "--quiet".into()];
    argv.extend(args.iter().map(|a| a.replace("{dir}", &d)));
    if !args.contains(&"--output") {
        argv.push("--output".into());
        argv.push(report.display().to_string());
    }
    let parsed = modbus_detect::cli::Args::try_parse_from(&argv).expect("valid arguments");
    let exit = modbus_detect::app::run(&parsed).map_err(|e| e.to_string());
    let out = parsed.output.clone();
    let text = std::fs::read(&out).ok();
    let typed = text.as_deref().map(|b| parse_report(b, &out));
    let report = text.map(|b| serde_json::from_slice(&b).expect("the report is valid JSON"));
    Run {
        exit,
        typed,
        report,
        dir,
    }
}

/// Learn a baseline from the lab's normal traffic with `--baseline-mode`
/// (and `extra` flags) into `dir/baseline.json`: its path, and the run.
pub fn learn_lab_baseline(dir: &std::path::Path, extra: &[&str]) -> (String, Run) {
    let path = dir.join("baseline.json").display().to_string();
    let pcap = fixture("lab/normal_baseline.pcap");
    let mut args = vec![
        "--pcap",
        pcap.to_str().expect("a UTF-8 fixture path"),
        "--baseline-mode",
        "--baseline-file",
        &path,
    ];
    args.extend_from_slice(extra);
    let r = run(&args);
    assert_eq!(r.exit, Ok(0), "learning the lab baseline");
    (path, r)
}

/// The `modbus-detect` binary of this build, for end-to-end tests that run
/// it in a network namespace. `cargo test --workspace` builds it next to the
/// test binaries (the `modbus-detect` package has integration tests, which
/// need it); `MODBUS_DETECT_BIN` overrides.
pub fn detector_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("MODBUS_DETECT_BIN") {
        return PathBuf::from(p);
    }
    built_binary("modbus-detect")
}

/// The lab's Modbus stacks (`modbus-lab`: PLC, HMI, attacks), this
/// package's own binary, which cargo builds for its integration tests.
pub fn lab_binary() -> PathBuf {
    built_binary("modbus-lab")
}

/// A binary of the workspace next to the running test binary.
fn built_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join(name))
        .expect("target directory layout");
    assert!(
        bin.exists(),
        "{} is missing: run the tests with `cargo xtask test` or `cargo test --workspace`, or set MODBUS_DETECT_BIN",
        bin.display()
    );
    bin
}

/// Fail (never skip) a test that needs root: CI runs as root, and a skipped
/// live test would hide a capture path that was never exercised.
pub fn require_root(why: &str) {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "{why}; CI runs them as root");
}

/// A JSON file the test expects to exist and be valid, or a panic naming it.
pub fn read_json(p: &std::path::Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap_or_else(|e| panic!("{}: not valid JSON: {e}", p.display()))
}

/// The file header and the first `frames` records of a little-endian
/// classic pcap file (a capture written to a FIFO in parts).
pub fn pcap_prefix(bytes: &[u8], frames: usize) -> &[u8] {
    assert_eq!(bytes[..4], [0xd4, 0xc3, 0xb2, 0xa1], "a little-endian pcap");
    let mut at = 24;
    for _ in 0..frames {
        let caplen = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().expect("4 bytes"));
        at += 16 + caplen as usize;
    }
    &bytes[..at]
}

/// A child process killed when the test ends, also on failure.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run the child on CPU 0 alone: it sees one core and runs its shard
/// inline, in the reading thread (`Plan::Inline`), as on a one-core sensor.
pub fn on_one_core(c: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec only async-signal-safe calls are made
    // (sched_setaffinity on a set built on the stack).
    unsafe {
        c.pre_exec(|| {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(0, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A loopback port nobody listens on (now).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

#[cfg(test)]
mod tests {
    use super::eventually;
    use std::time::Duration;

    #[test]
    fn eventually_asks_again_until_the_check_holds() {
        let mut asked = 0;
        let got = eventually(Duration::from_secs(5), Duration::from_millis(1), || {
            asked += 1;
            if asked == 3 {
                Ok(asked)
            } else {
                Err(format!("asked {asked} times"))
            }
        });
        assert_eq!(got, 3);
    }

    #[test]
    #[should_panic(expected = "still not so after 20ms: asked")]
    fn eventually_fails_with_what_the_check_said_last() {
        let mut asked = 0;
        eventually(Duration::from_millis(20), Duration::from_millis(1), || {
            asked += 1;
            Err::<(), _>(format!("asked {asked} times"))
        });
    }
}
