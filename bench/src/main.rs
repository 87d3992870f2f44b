//! `modbus-bench`: the replay and live benchmarks, and the report.
//!
//! ```text
//! modbus-bench replay --pcap F [--shards 1,2] [--runs 5]   (and valgrind's callgrind)
//! modbus-bench live --pcap F --lab BIN --detector BIN [--runs 3] [--steps 5]   (root)
//! modbus-bench report [--criterion DIR]
//! modbus-bench afpacket-reader --iface IF      (used by `live`)
//! ```
//!
//! Each writes its rows to `target/bench/<name>.json` (or `--out DIR`);
//! `report` prints them as one Markdown table and gathers them in
//! `target/bench/results.json`. `cargo xtask bench` runs them all.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use modbus_bench::results::{self, Row};
use modbus_bench::{replay, scenario};
use modbus_detect::config::baseline::Baseline;
use modbus_detect::runtime::Plan;
use modbus_detect::source::CaptureFile;
use serde_json::json;

#[derive(Debug, Parser)]
#[command(name = "modbus-bench")]
struct Args {
    /// Where result files go (default: target/bench of the workspace).
    #[arg(long, global = true)]
    out: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Replay a capture through 1..N shards, all rules on, baseline loaded.
    Replay {
        #[arg(long)]
        pcap: PathBuf,
        /// Shard counts to measure (comma separated).
        #[arg(long, value_delimiter = ',', default_values_t = [1usize, 2])]
        shards: Vec<usize>,
        /// Runs per figure (the median is reported, with min and max).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Load this baseline instead of learning one from the capture.
        #[arg(long)]
        baseline: Option<PathBuf>,
        /// Only the single-thread shard path, `--runs` times (for profilers).
        #[arg(long)]
        profile: bool,
        /// With `--profile`: the ML models judging windows.
        #[arg(long, requires = "profile")]
        ml: bool,
    },
    /// The live benchmark (root): no program, XDP drop, modbus-detect and an
    /// AF_PACKET reader on the sensor interface of the test topology.
    Live {
        /// Frames to send per measurement (a synthetic Modbus capture).
        #[arg(long)]
        pcap: PathBuf,
        /// `modbus-lab` (the sender).
        #[arg(long)]
        lab: PathBuf,
        /// `modbus-detect`.
        #[arg(long)]
        detector: PathBuf,
        /// Runs of the full-speed measurements.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Steps of each zero-loss search.
        #[arg(long, default_value_t = 5)]
        steps: usize,
    },
    /// Print the table of every result file; write results.json and .md.
    Report {
        /// Criterion's output directory (default: target/criterion).
        #[arg(long)]
        criterion: Option<PathBuf>,
    },
    /// (internal) One replay run; prints its figures as JSON.
    ReplayOnce {
        #[arg(long)]
        pcap: PathBuf,
        #[arg(long)]
        baseline: PathBuf,
        /// `inline` (the single-thread shard path), `default` (what
        /// modbus-detect chooses) or a number of shard threads.
        #[arg(long, default_value = "default")]
        plan: String,
        /// Judge windows with the baseline's ML models.
        #[arg(long)]
        ml: bool,
    },
    /// (internal) One step of the original ML pipeline; its figures as JSON.
    OriginalOnce {
        #[arg(long)]
        step: String,
        #[arg(long)]
        pcap: PathBuf,
        #[arg(long)]
        dir: PathBuf,
    },
    /// (internal) An AF_PACKET TPACKET_V3 reader, until SIGTERM.
    AfpacketReader {
        #[arg(long)]
        iface: String,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let dir = args.out.clone().unwrap_or_else(results::bench_dir);
    let result = match args.cmd {
        Cmd::Replay {
            pcap,
            shards,
            runs,
            baseline,
            profile,
            ml,
        } => replay_bench(&dir, &pcap, &shards, runs, baseline.as_deref(), profile, ml),
        Cmd::Live {
            pcap,
            lab,
            detector,
            runs,
            steps,
        } => live_bench(&dir, pcap, lab, detector, runs, steps),
        Cmd::Report { criterion } => {
            let criterion = criterion.unwrap_or_else(|| dir.join("../criterion"));
            modbus_bench::report::run(&dir, &criterion).map(|md| println!("{md}"))
        }
        Cmd::AfpacketReader { iface } => modbus_bench::afpacket::run(&iface),
        Cmd::OriginalOnce { step, pcap, dir } => {
            modbus_bench::original::run_step(&step, &pcap, &dir).map(|v| println!("{v}"))
        }
        Cmd::ReplayOnce {
            pcap,
            baseline,
            plan,
            ml,
        } => replay_once(&pcap, &baseline, &plan, ml),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("modbus-bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn replay_bench(
    dir: &std::path::Path,
    pcap: &std::path::Path,
    shards: &[usize],
    runs: usize,
    baseline: Option<&std::path::Path>,
    profile: bool,
    ml: bool,
) -> std::io::Result<()> {
    let learned = match baseline {
        Some(p) => Baseline::load(p).map_err(std::io::Error::other)?,
        None => {
            let capture = CaptureFile::open(pcap).map_err(std::io::Error::other)?;
            scenario::learn_baseline(&capture)
        }
    };
    eprintln!(
        "modbus-bench: baseline: {} pairs, {} requests, ML models trained on {} windows",
        learned.pair_count(),
        learned.request_count(),
        learned.models().map_or(0, |m| m.training_windows)
    );
    if learned.models().is_none() {
        return Err(std::io::Error::other(
            "the baseline has no ML models: the ML-on figures cannot be measured",
        ));
    }
    // `ml` comes only with `profile`: the children are told by `--ml`.
    let mut rules = scenario::all_rules(Some(learned));
    rules.ml = ml;
    let cfg = Arc::new(rules);
    if profile {
        for _ in 0..runs {
            let r = replay::run_engine(&cfg, pcap, Some(Plan::Inline))?;
            eprintln!(
                "modbus-bench: {} frames in {:.3} s: {:.2} M frames/s, {} alerts",
                r.frames,
                r.seconds,
                r.frames as f64 / r.seconds / 1e6,
                r.alerts
            );
        }
        return Ok(());
    }
    // The children load the same baseline from a file.
    std::fs::create_dir_all(dir)?;
    let saved = dir.join("replay-baseline.json");
    if let Some(b) = cfg.baseline.as_deref() {
        b.save(&saved, &pcap.display().to_string())?;
    }
    // Warm the page cache once, unmeasured.
    replay::run_child(pcap, &saved, Some(Plan::Threads(1)), false)?;
    // Configurations interleaved run by run, so that a slow spell of the
    // machine does not land on one of them only.
    let default = Plan::choose(None, 1);
    let mut configs: Vec<(String, Option<Plan>, bool)> = Vec::new();
    for ml in [false, true] {
        let tag = if ml { "ML on" } else { "ML off" };
        configs.push((
            format!("1 thread, no pipeline (read+decode+detect), {tag}"),
            Some(Plan::Inline),
            ml,
        ));
        configs.push((
            format!("replay, default plan (no --threads), {tag}"),
            None,
            ml,
        ));
        for &n in shards {
            configs.push((
                format!(
                    "replay, {n} shard{} + reader thread, {tag}",
                    if n == 1 { "" } else { "s" }
                ),
                Some(Plan::Threads(n)),
                ml,
            ));
        }
    }
    let mut samples: Vec<Vec<replay::Run>> = vec![Vec::new(); configs.len()];
    for _ in 0..runs.max(1) {
        for (i, (_, plan, ml)) in configs.iter().enumerate() {
            samples[i].push(replay::run_child(pcap, &saved, *plan, *ml)?);
        }
    }
    let mut rows: Vec<Row> = Vec::new();
    let mut details = Vec::new();
    for ((name, plan, ml), runs) in configs.iter().zip(&samples) {
        let (mut row, d) = replay::summarise(name, runs)?;
        let what = if *ml {
            "all rules on, baseline loaded, ML models judging 5 s windows"
        } else {
            "all rules on, baseline loaded, ML off"
        };
        row.note = match plan {
            Some(Plan::Inline) => {
                format!("one core: the shard path without rings or threads; {what}")
            }
            None => format!("on this machine: {default:?}; {what}"),
            Some(_) => what.into(),
        };
        show(&row);
        rows.push(row);
        details.push(d);
    }
    eprintln!("modbus-bench: instructions per frame, one thread, under callgrind");
    for row in modbus_bench::instructions::rows(pcap, &saved, dir)? {
        show(&row);
        rows.push(row);
    }
    eprintln!("modbus-bench: the original per-ADU pipeline, step by step");
    for row in modbus_bench::original::bench(pcap, dir, runs.min(3))? {
        show(&row);
        rows.push(row);
    }
    let path = results::write(
        dir,
        "replay",
        &rows,
        json!({"pcap": pcap.display().to_string(), "runs": runs, "measurements": details}),
    )?;
    eprintln!("modbus-bench: wrote {}", path.display());
    Ok(())
}

fn live_bench(
    dir: &std::path::Path,
    pcap: PathBuf,
    lab: PathBuf,
    detector: PathBuf,
    runs: usize,
    steps: usize,
) -> std::io::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        let mut row = Row::new("live", "live: skipped");
        row.note = "needs root (network namespaces, XDP): run `sudo cargo xtask bench`".into();
        eprintln!("modbus-bench: live benchmark skipped: not root");
        results::write(dir, "live", &[row], json!({"skipped": "not root"}))?;
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    // The XDP drop program, compiled here from bench/xdp_drop.c.
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("xdp_drop.c");
    let xdp_obj = dir.join("xdp_drop.o");
    let st = std::process::Command::new("clang")
        .args(["-O2", "-g", "-target", "bpf", "-c"])
        .arg(&src)
        .arg("-o")
        .arg(&xdp_obj)
        .status()?;
    if !st.success() {
        return Err(std::io::Error::other(format!(
            "clang could not build {}",
            src.display()
        )));
    }
    // Every rule on, as in the replay benchmark: a baseline learned from
    // the very traffic sent, limits, masters and writers.
    let capture = CaptureFile::open(&pcap).map_err(std::io::Error::other)?;
    let learned = scenario::learn_baseline(&capture);
    let frames = capture.frames().count() as u64;
    drop(capture);
    let baseline = dir.join("live-baseline.json");
    learned.save(&baseline, &pcap.display().to_string())?;
    let limits = dir.join("live-limits.json");
    std::fs::write(&limits, scenario::LIMITS_JSON)?;
    let (masters, writers) = scenario::masters_and_writers();
    let list = |v: Vec<std::net::IpAddr>| {
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let rules = vec![
        "--authorized-masters".into(),
        list(masters),
        "--authorized-writers".into(),
        list(writers),
        "--register-limits-file".into(),
        limits.display().to_string(),
        "--baseline-file".into(),
        baseline.display().to_string(),
    ];
    let abs = |p: PathBuf| std::fs::canonicalize(&p).unwrap_or(p);
    let setup = modbus_bench::live::Setup {
        lab: abs(lab),
        detector: abs(detector),
        bench: std::env::current_exe()?,
        pcap: abs(pcap.clone()),
        frames,
        xdp_obj,
        rules,
        work: dir.to_path_buf(),
        runs,
        steps,
    };
    let (rows, log) = modbus_bench::live::run(&setup)?;
    for r in &rows {
        show(r);
    }
    let path = results::write(dir, "live", &rows, log)?;
    eprintln!("modbus-bench: wrote {}", path.display());
    Ok(())
}

fn replay_once(
    pcap: &std::path::Path,
    baseline: &std::path::Path,
    plan: &str,
    ml: bool,
) -> std::io::Result<()> {
    let plan = replay::parse_plan(plan).map_err(std::io::Error::other)?;
    let learned = Baseline::load(baseline).map_err(std::io::Error::other)?;
    let mut cfg = scenario::all_rules(Some(learned));
    cfg.ml = ml;
    let cfg = Arc::new(cfg);
    let run = replay::run_engine(&cfg, pcap, plan)?;
    println!("{}", run.to_json());
    Ok(())
}

fn show(row: &Row) {
    if let (Some(f), Some(g)) = (&row.frames_per_s, &row.gbit_per_s) {
        eprintln!(
            "  {:<50} {:>6.2} M frames/s (min {:.2}, max {:.2}), {:.2} Gbit/s",
            row.name,
            f.median / 1e6,
            f.min / 1e6,
            f.max / 1e6,
            g.median
        );
    } else if let Some(n) = &row.instructions_per_frame {
        eprintln!(
            "  {:<50} {:>6.0} instructions per frame",
            row.name, n.median
        );
    } else if let (Some(f), Some(m)) = (&row.frames_per_s, &row.memory_bytes) {
        eprintln!(
            "  {:<50} {:>6.3} M/s (min {:.3}, max {:.3}), peak {:.0} MiB",
            row.name,
            f.median / 1e6,
            f.min / 1e6,
            f.max / 1e6,
            m.median / (1 << 20) as f64
        );
    }
}
