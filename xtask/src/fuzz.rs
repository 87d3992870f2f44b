//! `cargo xtask fuzz [--time S] [--target T]... [--seed]`: the cargo-fuzz
//! targets of `modbus-detect/fuzz`, each for S seconds (default 60).
//!
//! - Installs cargo-fuzz if missing (`cargo install cargo-fuzz --locked`);
//!   the targets need the nightly toolchain (`setup` installs it).
//! - The committed corpus (`modbus-detect/fuzz/corpus/<target>`, seeds) is
//!   read, never written: what libFuzzer finds goes to
//!   `target/fuzz-corpus/<target>`, and the full log to
//!   `target/fuzz-logs/<target>.log`.
//! - A crash, a timeout (an input that takes more than `TIMEOUT_S`) or an
//!   out-of-memory fails the task with the input's path under
//!   `modbus-detect/fuzz/artifacts/<target>/`, after every target has run.
//! - `--seed` (re)writes the committed corpora from the fixture captures
//!   (`seed_fuzz_corpora` in tests/tests/properties.rs) and stops.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::{root, setup, status};

/// Every target, in the order they run.
pub const TARGETS: &[&str] = &[
    "mbap_pdu",
    "reassembly",
    "engine",
    "capture_file",
    "limits_baseline",
];

/// Seconds per target when none are given.
pub const DEFAULT_SECONDS: u64 = 60;

/// An input taking longer than this is a finding (a hang), not slowness.
const TIMEOUT_S: u64 = 25;

fn fuzz_dir() -> PathBuf {
    root().join("modbus-detect/fuzz")
}

/// `cargo +nightly ...` through rustup's proxy, without the variables the
/// outer (stable) cargo set for xtask, so that nightly is really used.
fn nightly_cargo() -> Command {
    let mut c = Command::new("cargo");
    c.arg("+nightly").current_dir(root());
    for v in [
        "CARGO",
        "RUSTC",
        "RUSTDOC",
        "RUSTUP_TOOLCHAIN",
        "RUSTC_WRAPPER",
    ] {
        c.env_remove(v);
    }
    // The fuzz targets need no XDP program: skip the eBPF build.
    c.env("AYA_BUILD_SKIP", "1");
    c
}

pub fn fuzz(args: &[String]) -> Result<ExitCode> {
    let mut seconds = DEFAULT_SECONDS;
    let mut targets: Vec<String> = Vec::new();
    let mut seed = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--time" => {
                let v = it.next().context("--time needs a number of seconds")?;
                seconds = v
                    .parse()
                    .with_context(|| format!("--time {v:?}: not a number of seconds"))?;
            }
            "--target" => {
                let t = it.next().context("--target needs a target name")?;
                if !TARGETS.contains(&t.as_str()) {
                    bail!("unknown fuzz target {t:?} (targets: {})", TARGETS.join(", "));
                }
                targets.push(t.clone());
            }
            "--seed" => seed = true,
            other => bail!(
                "cargo xtask fuzz: unknown argument {other:?}\nusage: cargo xtask fuzz [--time S] [--target T]... [--seed]"
            ),
        }
    }
    setup::setup()?;
    if seed {
        return seed_corpora().map(|()| ExitCode::SUCCESS);
    }
    if targets.is_empty() {
        targets = TARGETS.iter().map(|t| t.to_string()).collect();
    }
    let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
    run_targets(&targets, seconds)?;
    Ok(ExitCode::SUCCESS)
}

/// Write the seed corpora from the fixtures (an ignored test of modbus-tests).
fn seed_corpora() -> Result<()> {
    let mut c = crate::cargo();
    c.args([
        "test",
        "-p",
        "modbus-tests",
        "--test",
        "properties",
        "--",
        "--ignored",
        "--exact",
        "seed_fuzz_corpora",
        "--nocapture",
    ]);
    status(c)
}

/// cargo-fuzz, installed if missing.
fn ensure_cargo_fuzz() -> Result<()> {
    let found = nightly_cargo()
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return Ok(());
    }
    eprintln!("xtask fuzz: installing cargo-fuzz (cargo install cargo-fuzz --locked)");
    let mut c = Command::new("cargo");
    for v in [
        "CARGO",
        "RUSTC",
        "RUSTDOC",
        "RUSTUP_TOOLCHAIN",
        "RUSTC_WRAPPER",
    ] {
        c.env_remove(v);
    }
    c.args(["install", "cargo-fuzz", "--locked"]);
    status(c)
}

/// What one target's run came to.
struct Outcome {
    target: String,
    seconds: f64,
    executions: Option<u64>,
    exec_per_sec: Option<u64>,
    new_units: Option<u64>,
    coverage: Option<String>,
    /// The input libFuzzer saved, and why, if it found something.
    finding: Option<(String, String)>,
    log: PathBuf,
}

/// Build every target once, then run each for `seconds`; fail after all of
/// them ran if any found something.
pub fn run_targets(targets: &[&str], seconds: u64) -> Result<()> {
    ensure_cargo_fuzz()?;
    let fuzz_dir = fuzz_dir();
    let started = Instant::now();
    let mut build = nightly_cargo();
    build.args(["fuzz", "build", "--fuzz-dir"]).arg(&fuzz_dir);
    status(build).context("building the fuzz targets")?;
    eprintln!(
        "xtask fuzz: fuzz targets built in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let mut outcomes = Vec::new();
    for t in targets {
        outcomes.push(run_target(&fuzz_dir, t, seconds)?);
    }
    eprintln!("xtask fuzz: results ({seconds} s per target):");
    let show = |n: Option<u64>| n.map_or("?".to_string(), |n| n.to_string());
    for o in &outcomes {
        eprintln!(
            "  {:<16} {:>6.0} s  {:>11} executions  {:>7} exec/s  {:>5} new corpus units  {}  findings: {}",
            o.target,
            o.seconds,
            show(o.executions),
            show(o.exec_per_sec),
            show(o.new_units),
            o.coverage.as_deref().unwrap_or("cov: ?"),
            match &o.finding {
                None => "none".to_string(),
                Some((what, path)) => format!("{what}: {path}"),
            }
        );
    }
    let found: Vec<&Outcome> = outcomes.iter().filter(|o| o.finding.is_some()).collect();
    if !found.is_empty() {
        let list: Vec<String> = found
            .iter()
            .map(|o| {
                let (what, path) = o.finding.as_ref().expect("filtered on findings");
                format!(
                    "{}: {what}, input {path} (log {}; reproduce: cargo +nightly fuzz run --fuzz-dir modbus-detect/fuzz {} {path})",
                    o.target,
                    o.log.display(),
                    o.target
                )
            })
            .collect();
        bail!("fuzzing found problems:\n  {}", list.join("\n  "));
    }
    Ok(())
}

fn run_target(fuzz_dir: &Path, target: &str, seconds: u64) -> Result<Outcome> {
    let scratch = root().join("target/fuzz-corpus").join(target);
    let logs = root().join("target/fuzz-logs");
    for d in [&scratch, &logs] {
        std::fs::create_dir_all(d).with_context(|| format!("mkdir {}", d.display()))?;
    }
    let log_path = logs.join(format!("{target}.log"));
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    eprintln!(
        "xtask fuzz: {target}: fuzzing for {seconds} s (log: {})",
        log_path.display()
    );
    let mut c = nightly_cargo();
    c.args(["fuzz", "run", "--fuzz-dir"])
        .arg(fuzz_dir)
        .arg(target)
        // New inputs go to the first folder; the committed seeds are only read.
        .arg(&scratch)
        .arg(fuzz_dir.join("corpus").join(target))
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={TIMEOUT_S}"))
        .arg("-print_final_stats=1")
        .stdout(log.try_clone()?)
        .stderr(log);
    let started = Instant::now();
    let st = c
        .status()
        .with_context(|| format!("cannot start cargo fuzz run {target}"))?;
    let elapsed = started.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    let mut o = parse_log(target, &text, log_path);
    o.seconds = elapsed;
    if !st.success() && o.finding.is_none() {
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        o.finding = Some((
            format!("cargo fuzz run failed ({st}) without saving an input"),
            tail.join("\n    "),
        ));
    }
    Ok(o)
}

/// The figures libFuzzer printed: final stats, last status line, and the
/// input it saved on a crash, timeout or out-of-memory.
fn parse_log(target: &str, text: &str, log: PathBuf) -> Outcome {
    let stat = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
    };
    // "#1117259\tDONE   cov: 997 ft: 1496 corp: 224/4172b ..."
    let status_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with('#') && l.contains("cov:"))
        .collect();
    let last = status_lines.last();
    let executions = stat("stat::number_of_executed_units:")
        .or_else(|| last.and_then(|l| l[1..].split_whitespace().next()?.parse().ok()));
    let coverage = last.and_then(|l| {
        let at = l.find("cov:")?;
        let end = l
            .find(" lim:")
            .or_else(|| l.find(" exec/s:"))
            .unwrap_or(l.len());
        Some(l[at..end].trim().to_string())
    });
    let saved = text.lines().find_map(|l| {
        let at = l.find("Test unit written to ")?;
        Some(l[at + "Test unit written to ".len()..].trim().to_string())
    });
    let why = text
        .lines()
        .find(|l| {
            l.contains("panicked at")
                || l.contains("ERROR: libFuzzer")
                || l.contains("ERROR: AddressSanitizer")
                || l.contains("ALARM: working on the last Unit")
        })
        .map(|l| l.trim().to_string())
        .unwrap_or_else(|| "crash".to_string());
    Outcome {
        target: target.to_string(),
        seconds: 0.0,
        executions,
        exec_per_sec: stat("stat::average_exec_per_sec:"),
        new_units: stat("stat::new_units_added:"),
        coverage,
        finding: saved.map(|p| (why, p)),
        log,
    }
}
