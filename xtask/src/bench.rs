//! `cargo xtask bench [--quick]`: the whole benchmark suite (`bench/`).
//!
//! Builds in release mode, writes the 2-million-frame synthetic capture to
//! `target/bench/` if it is not there, then runs the criterion
//! micro-benchmarks, the replay benchmark (1..N shards), the allocation
//! and memory benchmarks and, as root, the live benchmark; prints one
//! Markdown table and writes `target/bench/results.json` (and `.md`).
//! `--quick`: fewer runs and samples, for a first look (about 2 minutes).
//! The binaries are the profile-guided build that is shipped (`pgo.rs`);
//! `--no-pgo` measures the plain release build instead (the criterion
//! micro-benchmarks are always cargo's plain `bench` build).

use std::path::Path;
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};

use super::{build_release, pgo, root, setup, status};

/// Frames in the replay benchmark's capture.
const REPLAY_FRAMES: &str = "2000000";
/// Frames the live benchmark sends per measurement.
const LIVE_FRAMES: &str = "300000";

pub fn bench(args: &[String]) -> Result<ExitCode> {
    let (mut quick, mut no_pgo) = (false, false);
    for a in args {
        match a.as_str() {
            "--quick" => quick = true,
            "--no-pgo" => no_pgo = true,
            other => {
                bail!("bench: unknown argument {other:?} (usage: cargo xtask bench [--quick] [--no-pgo])")
            }
        }
    }
    setup::setup()?;
    // The binaries as they are shipped: profile-guided (see `pgo.rs`);
    // `--no-pgo` measures the plain release build.
    let packages = [
        "modbus-detect",
        "modbus-synth",
        "modbus-bench",
        "modbus-tests",
    ];
    let bins = [
        "modbus-detect",
        "modbus-synth",
        "modbus-bench",
        "modbus-bench-alloc",
        "modbus-lab",
    ];
    let bin = if no_pgo {
        build_release(&packages, &bins)?
    } else {
        pgo::build_release(&packages, &bins, &[])?
    };
    let dir = root().join("target/bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let replay_pcap = dir.join("synth-2m.pcap");
    let live_pcap = dir.join("synth-live.pcap");
    for (pcap, frames) in [(&replay_pcap, REPLAY_FRAMES), (&live_pcap, LIVE_FRAMES)] {
        if !pcap.exists() {
            eprintln!("xtask: writing {} ({frames} frames)", pcap.display());
            let mut gen = Command::new(bin.join("modbus-synth"));
            gen.args(["--frames", frames, "--out"]).arg(pcap);
            gen.stdout(std::process::Stdio::null());
            status(gen)?;
        }
    }
    // A table of this run only: no results (or criterion benchmarks) left
    // over from an earlier one.
    for part in ["replay", "alloc", "memory", "live", "results"] {
        let _ = std::fs::remove_file(dir.join(format!("{part}.json")));
    }
    let _ = std::fs::remove_dir_all(root().join("target/criterion"));

    let runs = |full: usize, q: usize| (if quick { q } else { full }).to_string();
    eprintln!("xtask: criterion micro-benchmarks");
    let mut micro = super::cargo();
    micro.args(["bench", "-p", "modbus-bench", "--bench", "micro", "--"]);
    if quick {
        micro.arg("--quick");
    }
    status(micro)?;

    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let shards: Vec<String> = (1..=cores.max(2)).map(|n| n.to_string()).collect();
    eprintln!("xtask: replay benchmark");
    run(
        &bin.join("modbus-bench"),
        &[
            "replay",
            "--pcap",
            &path(&replay_pcap),
            "--shards",
            &shards.join(","),
            "--runs",
            &runs(7, 3),
        ],
    )?;
    eprintln!("xtask: allocation benchmark");
    run(
        &bin.join("modbus-bench-alloc"),
        &[
            "alloc",
            "--pcap",
            &path(&replay_pcap),
            "--runs",
            &runs(3, 1),
        ],
    )?;
    eprintln!("xtask: memory benchmark");
    run(
        &bin.join("modbus-bench-alloc"),
        &["memory", "--connections", "1000000", "--runs", &runs(3, 1)],
    )?;
    if is_root() {
        eprintln!("xtask: live benchmark");
    } else {
        eprintln!("xtask: live benchmark skipped: it needs root (sudo cargo xtask bench)");
    }
    // Not root, it only records that it was skipped.
    run(
        &bin.join("modbus-bench"),
        &[
            "live",
            "--pcap",
            &path(&live_pcap),
            "--lab",
            &path(&bin.join("modbus-lab")),
            "--detector",
            &path(&bin.join("modbus-detect")),
            "--runs",
            &runs(3, 1),
            "--steps",
            &runs(6, 3),
        ],
    )?;
    run(&bin.join("modbus-bench"), &["report"])?;
    eprintln!(
        "xtask: results in {} and {}",
        dir.join("results.json").display(),
        dir.join("results.md").display()
    );
    Ok(ExitCode::SUCCESS)
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

fn run(program: &Path, args: &[&str]) -> Result<()> {
    let mut c = Command::new(program);
    c.args(args).current_dir(root());
    status(c)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
