//! `cargo xtask`: the project's tasks, so that a fresh clone needs nothing
//! but cargo. xtask itself depends on nothing of the project (only std and
//! anyhow), so that it builds before `setup` has installed what the project
//! needs; every task runs `setup` first.
//!
//! - `cargo xtask setup`: install the eBPF toolchain and Debian packages.
//! - `cargo xtask run [ARGS]`: build in release and run `modbus-detect ARGS`;
//!   without ARGS, replay the bundled demo capture with its settings files.
//! - `cargo xtask demo --live`: a virtual plant in network namespaces,
//!   mirrored to the live sensor.
//! - `cargo xtask package`: the Debian package,
//!   `target/debian/modbus-detect_<version>_<arch>.deb` (see `package.rs`),
//!   its binary built with profile-guided optimisation (see `pgo.rs`).
//! - `cargo xtask test`: every test (the package's too: it is built first),
//!   formatting and lints, then every fuzz target for 60 s
//!   (`MODBUS_FUZZ_SECONDS` to change, 0 to skip).
//! - `cargo xtask gen-pcap --frames N --out FILE [...]`: a deterministic
//!   synthetic Modbus/TCP capture.
//! - `cargo xtask eval-ml`: the README's evaluation tables (see `eval.rs`).
//! - `cargo xtask fuzz [--time S] [--target T]... [--seed]`: the cargo-fuzz
//!   targets (see `fuzz.rs`).

mod bench;
mod eval;
mod fuzz;
mod package;
mod pgo;
mod setup;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match dispatch(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(args: &[String]) -> Result<ExitCode> {
    let (cmd, rest) = args
        .split_first()
        .map_or(("help", &[][..]), |(c, r)| (c.as_str(), r));
    match cmd {
        "setup" => setup::setup().map(|()| ExitCode::SUCCESS),
        "run" => run(rest),
        "demo" => demo(rest),
        "package" => package::package(rest),
        "test" => test(rest),
        "gen-pcap" => gen_pcap(rest),
        "fuzz" => fuzz::fuzz(rest),
        "bench" => bench::bench(rest),
        "eval-ml" => eval::eval_ml(rest),
        "help" | "--help" | "-h" => {
            println!("{}", USAGE);
            Ok(ExitCode::SUCCESS)
        }
        other => bail!("unknown task {other:?}\n{USAGE}"),
    }
}

const USAGE: &str = "usage: cargo xtask <task>
  setup             install what building and live capture need (idempotent)
  run [ARGS]        build (release) and run modbus-detect ARGS; no ARGS: replay the demo;
                    --iface IF [ARGS]: the live sensor on IF
  demo --live       a virtual plant in network namespaces, mirrored to the live sensor
  package           build the Debian package target/debian/modbus-detect_<version>_<arch>.deb
                    (its binary profile-guided: trained on synthetic captures and the demo)
  test              run every test, cargo fmt --check and clippy -D warnings, then each
                    fuzz target for 60 s (MODBUS_FUZZ_SECONDS=S to change, 0 to skip);
                    builds the Debian package first, which a test installs (root)
  gen-pcap --frames N --out FILE [--seed S] [--attacks] [--adus-per-segment N] [--split-adus]
                    write a deterministic synthetic Modbus/TCP capture
  fuzz [--time S] [--target T]... [--seed]
                    run the cargo-fuzz targets (modbus-detect/fuzz), S seconds each (default 60);
                    --seed: rewrite their seed corpora from the fixture captures
  eval-ml           the evaluation tables of the README: the original per-ADU models, our
                    window models and the rules on the lab captures and on synthetic ones
  bench [--quick] [--no-pgo]
                    every benchmark (micro, replay, allocations, memory; live as root):
                    one Markdown table, JSON in target/bench/; the binaries profile-guided
                    as packaged (--no-pgo: the plain release build)";

/// The workspace root (xtask lives one level below it).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

/// Run a command, failing with its name if it fails.
fn status(mut cmd: Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let st = cmd
        .status()
        .with_context(|| format!("cannot start {shown}"))?;
    if !st.success() {
        bail!("{shown} failed ({st})");
    }
    Ok(())
}

fn run(args: &[String]) -> Result<ExitCode> {
    setup::setup()?;
    let bin = build_release(&["modbus-detect"], &["modbus-detect"])?.join("modbus-detect");
    let demo = args.is_empty();
    let args: Vec<String> = if demo { demo_args()? } else { args.to_vec() };
    if demo {
        eprintln!("xtask: replaying the bundled demo capture (modbus-detect/demo/)");
    }
    let st = Command::new(&bin)
        .args(&args)
        .status()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    if demo && st.success() {
        let out = root().join("target/demo");
        eprintln!(
            "xtask: demo report: {}\nxtask: demo alert stream (EVE JSON lines): {}",
            out.join("modbus_anomaly_report.json").display(),
            out.join("alerts.eve.json").display()
        );
    }
    Ok(ExitCode::from(st.code().unwrap_or(1).clamp(0, 255) as u8))
}

/// `cargo build --release` of the given packages' binaries; returns the
/// directory they are in.
fn build_release(packages: &[&str], bins: &[&str]) -> Result<PathBuf> {
    status(release_build(packages, bins))?;
    Ok(root().join("target/release"))
}

/// The command `build_release` runs, for a caller that sets its
/// environment (the package needs `MODBUS_XDP_REQUIRE=1`).
fn release_build(packages: &[&str], bins: &[&str]) -> Command {
    let mut build = cargo();
    build.args(["build", "--release"]);
    for p in packages {
        build.args(["-p", p]);
    }
    for b in bins {
        build.args(["--bin", b]);
    }
    build
}

/// `cargo xtask demo --live`: build the virtual plant and watch it live.
fn demo(args: &[String]) -> Result<ExitCode> {
    if args.first().map(String::as_str) != Some("--live") {
        bail!("usage: cargo xtask demo --live [SECONDS]  (for the replay demo: cargo xtask run)");
    }
    setup::setup()?;
    let dir = build_release(
        &["modbus-detect", "modbus-tests"],
        &["modbus-detect", "modbus-lab"],
    )?;
    let seconds = args.get(1).map_or("20", String::as_str);
    let st = Command::new(dir.join("modbus-lab"))
        .args(["demo", "--detector"])
        .arg(dir.join("modbus-detect"))
        .args(["--seconds", seconds, "--out"])
        .arg(root().join("target/demo-live"))
        .status()
        .context("cannot start modbus-lab demo")?;
    Ok(ExitCode::from(st.code().unwrap_or(1).clamp(0, 255) as u8))
}

/// The demo: lab captures of every attack scenario, with the lab's masters,
/// writers, limits and a baseline learned from its normal traffic.
fn demo_args() -> Result<Vec<String>> {
    let demo = root().join("modbus-detect/demo");
    let out = root().join("target/demo");
    let _ = std::fs::create_dir_all(&out);
    let file = demo.join("demo.args");
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read the demo's arguments {}", file.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            l.replace("{demo}", &demo.display().to_string())
                .replace("{out}", &out.display().to_string())
        })
        .collect())
}

fn test(args: &[String]) -> Result<ExitCode> {
    setup::setup()?;
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    status(fmt).context("formatting: run `cargo fmt --all`")?;
    let mut fmt_ebpf = cargo();
    fmt_ebpf.args([
        "fmt",
        "--manifest-path",
        "modbus-ebpf/Cargo.toml",
        "--",
        "--check",
    ]);
    status(fmt_ebpf).context("formatting of modbus-ebpf")?;
    let mut fmt_fuzz = cargo();
    fmt_fuzz.args([
        "fmt",
        "--manifest-path",
        "modbus-detect/fuzz/Cargo.toml",
        "--",
        "--check",
    ]);
    status(fmt_fuzz).context("formatting of modbus-detect/fuzz")?;
    let mut clippy = cargo();
    clippy.env("MODBUS_XDP_REQUIRE", "1").args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    status(clippy)?;
    // The package, which tests/tests/package.rs installs: built from this
    // tree, so that the test fails on a stale one.
    let deb = package::build().context("building the Debian package")?;
    eprintln!("xtask: Debian package for the tests: {}", deb.display());
    // The XDP program must be built in: the live tests must fail, not pass
    // vacuously, if the eBPF toolchain is missing.
    let mut t = cargo();
    t.env("MODBUS_XDP_REQUIRE", "1")
        .args(["test", "--workspace"])
        .args(args);
    let (passed, failed) = run_counting_tests(t)?;
    // Then every fuzz target for a bounded time, so that a regression that
    // the seeds or a minute of mutation reach is found.
    let seconds = std::env::var("MODBUS_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(fuzz::DEFAULT_SECONDS);
    if seconds > 0 {
        fuzz::run_targets(fuzz::TARGETS, seconds)?;
    }
    // One closing line for the whole run (cargo's last line is a doc-test
    // binary's "0 passed", which says nothing about the run).
    println!("tests: {passed} passed, {failed} failed");
    Ok(ExitCode::SUCCESS)
}

/// Run `cargo test`, echoing its output, and add up its "test result"
/// lines; fails like `status` when cargo test fails.
fn run_counting_tests(mut cmd: Command) -> Result<(u64, u64)> {
    use std::io::{BufRead, BufReader};
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {shown}"))?;
    let (mut passed, mut failed) = (0u64, 0u64);
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let line = line.context("reading cargo test's output")?;
            println!("{line}");
            if let Some(rest) = line.strip_prefix("test result: ") {
                passed += count_before(rest, " passed");
                failed += count_before(rest, " failed");
            }
        }
    }
    let st = child
        .wait()
        .with_context(|| format!("waiting for {shown}"))?;
    if !st.success() {
        println!("tests: {passed} passed, {failed} failed");
        bail!("{shown} failed ({st})");
    }
    Ok((passed, failed))
}

/// The number just before `what` in "ok. 12 passed; 0 failed; ...".
fn count_before(text: &str, what: &str) -> u64 {
    text.find(what)
        .and_then(|end| text[..end].rsplit([' ', '.']).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn gen_pcap(args: &[String]) -> Result<ExitCode> {
    setup::setup()?;
    let bin = build_release(&["modbus-synth"], &["modbus-synth"])?.join("modbus-synth");
    let st = Command::new(&bin)
        .args(args)
        .status()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    Ok(ExitCode::from(st.code().unwrap_or(1).clamp(0, 255) as u8))
}
