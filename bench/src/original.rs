//! The original ML pipeline's batch steps (`modbus-detect ml features`,
//! `train`, `score`) on the replay benchmark's capture: how fast each goes
//! and the peak resident memory of a process doing it, each run a fresh
//! process (`original-once`), as the user runs them.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use modbus_detect::config::DetectConfig;
use modbus_detect::original::command::{load_models, score, train, write_features};
use modbus_detect::original::label::Allowed;
use serde_json::{json, Value};

use crate::results::Row;
use crate::stats::Summary;

/// The steps, in the order each needs the one before.
pub const STEPS: [&str; 3] = ["features", "train", "score"];

/// One step in this process; its figures as JSON: seconds, elements (frames
/// for `features`, ADUs for the others), peak resident memory (for
/// `features` that includes the capture's pages, mapped and read).
pub fn run_step(step: &str, pcap: &Path, dir: &Path) -> std::io::Result<Value> {
    let err = |e: modbus_detect::original::command::StepError| std::io::Error::other(e.to_string());
    let features = dir.join("normal_features.csv");
    let models = dir.join("original_models.json");
    let t = Instant::now();
    let elements = match step {
        "features" => {
            let cfg = Arc::new(DetectConfig::default());
            write_features(&[pcap.to_path_buf()], &features, &cfg, false).map_err(err)?;
            let seconds = t.elapsed().as_secs_f64();
            // Counted after the clock, in the mapping the step read anyway.
            let frames = modbus_detect::source::CaptureFile::open(pcap)
                .map_err(std::io::Error::other)?
                .frames()
                .count();
            return Ok(json!({"seconds": seconds, "elements": frames, "peak_kib": peak_kib()}));
        }
        "train" => train(&features, &models).map_err(err)?.training_rows,
        "score" => {
            let m = load_models(&models).map_err(err)?;
            let found = score(&m, &features, dir, &Allowed::default()).map_err(err)?;
            found[0].scored
        }
        other => return Err(std::io::Error::other(format!("no step {other}"))),
    };
    let seconds = t.elapsed().as_secs_f64();
    Ok(json!({"seconds": seconds, "elements": elements, "peak_kib": peak_kib()}))
}

/// `VmHWM` of this process.
fn peak_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?.to_string();
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// `runs` runs of every step, each a child process; one row per step.
pub fn bench(pcap: &Path, dir: &Path, runs: usize) -> std::io::Result<Vec<Row>> {
    let work = dir.join("original");
    std::fs::create_dir_all(&work)?;
    let mut samples: Vec<Vec<Value>> = vec![Vec::new(); STEPS.len()];
    for _ in 0..runs.max(1) {
        for (i, step) in STEPS.iter().enumerate() {
            let out = std::process::Command::new(std::env::current_exe()?)
                .args(["original-once", "--step", step, "--pcap"])
                .arg(pcap)
                .arg("--dir")
                .arg(&work)
                .output()?;
            if !out.status.success() {
                return Err(std::io::Error::other(format!(
                    "original-once {step} failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            samples[i].push(serde_json::from_slice(&out.stdout).map_err(std::io::Error::other)?);
        }
    }
    let rows = STEPS
        .iter()
        .zip(&samples)
        .map(|(step, runs)| {
            let f = |k: &str| -> Vec<f64> { runs.iter().filter_map(|r| r[k].as_f64()).collect() };
            let rate: Vec<f64> = f("elements")
                .iter()
                .zip(f("seconds"))
                .map(|(n, s)| n / s)
                .collect();
            let what = if *step == "features" { "frames" } else { "ADUs" };
            let mut row = Row::new("replay", format!("original per-ADU pipeline: ml {step} ({what}/s)"));
            row.frames_per_s = Summary::of(&rate);
            row.memory_bytes = Summary::of(&f("peak_kib").iter().map(|k| k * 1024.0).collect::<Vec<_>>());
            row.note = format!(
                "one process per run, one thread; {what} per second in the frames column, peak RSS in the memory column"
            );
            row
        })
        .collect();
    Ok(rows)
}
