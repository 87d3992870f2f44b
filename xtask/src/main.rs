//! `cargo xtask`: the project's tasks, so that a fresh clone needs nothing
//! but cargo.
//!
//! - `cargo xtask run [ARGS]`: build in release and run `modbus-detect ARGS`;
//!   without ARGS, replay the bundled demo capture with its settings files.
//! - `cargo xtask test`: every test, formatting and lints.
//! - `cargo xtask gen-pcap --frames N --out FILE [--seed S] [--attacks]`:
//!   write a deterministic synthetic Modbus/TCP capture.

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
        "run" => run(rest),
        "test" => test(rest),
        "gen-pcap" => gen_pcap(rest),
        "help" | "--help" | "-h" => {
            println!("{}", USAGE);
            Ok(ExitCode::SUCCESS)
        }
        other => bail!("unknown task {other:?}\n{USAGE}"),
    }
}

const USAGE: &str = "usage: cargo xtask <task>
  run [ARGS]        build (release) and run modbus-detect ARGS; no ARGS: replay the demo
  test              run every test, cargo fmt --check and clippy -D warnings
  gen-pcap --frames N --out FILE [--seed S] [--attacks]
                    write a deterministic synthetic Modbus/TCP capture";

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
    let mut build = cargo();
    build.args([
        "build",
        "--release",
        "-p",
        "modbus-user",
        "--bin",
        "modbus-detect",
    ]);
    status(build)?;
    let bin = root().join("target/release/modbus-detect");
    let demo = args.is_empty();
    let args: Vec<String> = if demo { demo_args() } else { args.to_vec() };
    if demo {
        eprintln!("xtask: replaying the bundled demo capture (modbus-user/demo/)");
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

/// The demo: lab captures of every attack scenario, with the lab's masters,
/// writers, limits and a baseline learned from its normal traffic.
fn demo_args() -> Vec<String> {
    let demo = root().join("modbus-user/demo");
    let out = root().join("target/demo");
    let _ = std::fs::create_dir_all(&out);
    let p = |p: PathBuf| p.display().to_string();
    vec![
        "--pcap".into(),
        p(demo.join("demo.pcap")),
        "--authorized-masters".into(),
        "192.168.50.20,192.168.50.30,192.168.50.40".into(),
        "--authorized-writers".into(),
        "192.168.50.20".into(),
        "--register-limits-file".into(),
        p(demo.join("register_limits.json")),
        "--baseline-file".into(),
        p(demo.join("baseline.json")),
        "--output".into(),
        p(out.join("modbus_anomaly_report.json")),
        "--eve".into(),
        p(out.join("alerts.eve.json")),
    ]
}

fn test(args: &[String]) -> Result<ExitCode> {
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    status(fmt).context("formatting: run `cargo fmt --all`")?;
    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    status(clippy)?;
    let mut t = cargo();
    t.args(["test", "--workspace"]).args(args);
    status(t)?;
    Ok(ExitCode::SUCCESS)
}

fn gen_pcap(args: &[String]) -> Result<ExitCode> {
    let mut cfg = modbus_user::synth::SynthConfig::default();
    let mut out: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--frames" => cfg.frames = value()?.parse().context("--frames")?,
            "--seed" => cfg.seed = value()?.parse().context("--seed")?,
            "--out" => out = Some(PathBuf::from(value()?)),
            "--attacks" => cfg.attacks = true,
            other => bail!("gen-pcap: unknown flag {other:?}\n{USAGE}"),
        }
    }
    let out = out.context("gen-pcap needs --out FILE")?;
    let file = std::fs::File::create(&out).with_context(|| format!("{}", out.display()))?;
    let summary = modbus_user::synth::generate(&cfg, std::io::BufWriter::new(file))
        .with_context(|| format!("writing {}", out.display()))?;
    eprintln!(
        "xtask: wrote {} ({} frames, {} requests, {} responses, {} connections, {} attack requests)",
        out.display(),
        summary.frames,
        summary.requests,
        summary.responses,
        summary.connections,
        summary.attack_requests
    );
    Ok(ExitCode::SUCCESS)
}
