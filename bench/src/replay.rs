//! The replay benchmark: a capture through the whole engine (memory-mapped
//! reader and dispatcher on the calling thread, 1..N shard threads, or the
//! default plan), all
//! rules on, baseline loaded; and the same frames through one shard on one
//! thread with no pipeline, to show the per-core cost of the detection path.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use modbus_detect::config::DetectConfig;
use modbus_detect::runtime::offline::replay;
use modbus_detect::runtime::Plan;
use modbus_detect::source::CaptureFile;
use serde_json::{json, Value};

use crate::results::Row;
use crate::stats::Summary;

/// What one run measured.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    pub frames: u64,
    pub bytes: u64,
    pub seconds: f64,
    /// Alerts raised: the same every run, or the benchmark is broken.
    pub alerts: u64,
}

/// One replay as `plan` says (`None`: what `modbus-detect --pcap` chooses
/// without `--threads`), through the very runtime of `modbus-detect --pcap`
/// (the capture is opened and mapped afresh each time).
/// [`Plan::Inline`] is what one core does per frame: read, decode and
/// detect on the calling thread, no rings, no shard threads.
pub fn run_engine(
    cfg: &Arc<DetectConfig>,
    pcap: &Path,
    plan: Option<Plan>,
) -> std::io::Result<Run> {
    let capture = CaptureFile::open(pcap).map_err(std::io::Error::other)?;
    let stop = AtomicBool::new(false);
    let plan = plan.unwrap_or_else(|| Plan::choose(None, 1));
    let out = replay(cfg.clone(), &capture, plan, None, &stop, None)?;
    if let Some(e) = out.input_error {
        return Err(std::io::Error::other(e));
    }
    Ok(Run {
        frames: out.dispatch.frames,
        bytes: out.dispatch.bytes,
        seconds: out.elapsed.as_secs_f64(),
        alerts: out.alerts_raised(),
    })
}

/// How a child replay runs: `inline`, `default` or a number of shard threads.
pub fn plan_arg(plan: Option<Plan>) -> String {
    match plan {
        None => "default".into(),
        Some(Plan::Inline) => "inline".into(),
        Some(Plan::Threads(n)) => n.to_string(),
    }
}

/// The plan a `plan_arg` names.
pub fn parse_plan(s: &str) -> Result<Option<Plan>, String> {
    match s {
        "default" => Ok(None),
        "inline" => Ok(Some(Plan::Inline)),
        n => n
            .parse()
            .map(|n| Some(Plan::Threads(n)))
            .map_err(|_| format!("--plan: inline, default or a number, not {n:?}")),
    }
}

impl Run {
    pub fn to_json(&self) -> Value {
        json!({"frames": self.frames, "bytes": self.bytes, "seconds": self.seconds, "alerts": self.alerts})
    }

    pub fn from_json(v: &Value) -> Option<Run> {
        Some(Run {
            frames: v.get("frames")?.as_u64()?,
            bytes: v.get("bytes")?.as_u64()?,
            seconds: v.get("seconds")?.as_f64()?,
            alerts: v.get("alerts")?.as_u64()?,
        })
    }
}

/// One run in a child process (`modbus-bench replay-once`): each run gets
/// a fresh process, so that the median covers where the scheduler happens
/// to place the threads (on this VM, two shards with the reader run at
/// either about 8 or about 14 M frames/s, the same in every run of one
/// process).
pub fn run_child(
    pcap: &Path,
    baseline: &Path,
    plan: Option<Plan>,
    ml: bool,
) -> std::io::Result<Run> {
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.arg("replay-once")
        .arg("--pcap")
        .arg(pcap)
        .arg("--baseline")
        .arg(baseline);
    cmd.arg("--plan").arg(plan_arg(plan));
    if ml {
        cmd.arg("--ml");
    }
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "replay-once failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(std::io::Error::other)?;
    Run::from_json(&v).ok_or_else(|| std::io::Error::other("replay-once: bad output"))
}

/// The row of a set of runs of one configuration.
pub fn summarise(name: &str, samples: &[Run]) -> std::io::Result<(Row, Value)> {
    if samples.is_empty() {
        return Err(std::io::Error::other(format!("{name}: no runs")));
    }
    let alerts: Vec<u64> = samples.iter().map(|r| r.alerts).collect();
    if alerts.windows(2).any(|w| w[0] != w[1]) {
        return Err(std::io::Error::other(format!(
            "{name}: alert counts differ between runs: {alerts:?}"
        )));
    }
    let fps: Vec<f64> = samples
        .iter()
        .map(|r| r.frames as f64 / r.seconds)
        .collect();
    let gbps: Vec<f64> = samples
        .iter()
        .map(|r| r.bytes as f64 * 8.0 / r.seconds / 1e9)
        .collect();
    let mut row = Row::new("replay", name);
    row.frames_per_s = Summary::of(&fps);
    row.gbit_per_s = Summary::of(&gbps);
    row.ns_per_frame = row.frames_per_s.as_ref().map(|s| s.map(|f| 1e9 / f));
    let first = samples[0];
    let details = json!({
        "name": name,
        "frames": first.frames,
        "bytes": first.bytes,
        "alerts": first.alerts,
        "seconds": samples.iter().map(|r| r.seconds).collect::<Vec<_>>(),
    });
    Ok((row, details))
}
