//! The replay benchmark: a capture through the whole engine (memory-mapped
//! reader and dispatcher on the calling thread, 1..N shard threads), all
//! rules on, baseline loaded; and the same frames through one shard on one
//! thread with no pipeline, to show the per-core cost of the detection path.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use modbus_user::config::DetectConfig;
use modbus_user::dispatch::classify;
use modbus_user::engine::replay;
use modbus_user::shard::Shard;
use modbus_user::source::CaptureFile;
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

/// One replay through `threads` shards, exactly as `modbus-detect --pcap`
/// does it (the capture is opened and mapped afresh each time).
pub fn run_engine(cfg: &Arc<DetectConfig>, pcap: &Path, threads: usize) -> std::io::Result<Run> {
    let capture = CaptureFile::open(pcap).map_err(std::io::Error::other)?;
    let stop = AtomicBool::new(false);
    let out = replay(cfg.clone(), &capture, threads, None, &stop, None);
    if let Some(e) = out.input_error {
        return Err(std::io::Error::other(e));
    }
    let alerts = out
        .shards
        .iter()
        .map(|s| s.raised.iter().sum::<u64>())
        .sum();
    Ok(Run {
        frames: out.dispatch.frames,
        bytes: out.dispatch.bytes,
        seconds: out.elapsed.as_secs_f64(),
        alerts,
    })
}

/// Read, decode and detect on the calling thread only: no rings, no shard
/// threads. What one core does per frame.
pub fn run_inline(cfg: &Arc<DetectConfig>, pcap: &Path) -> std::io::Result<Run> {
    let capture = CaptureFile::open(pcap).map_err(std::io::Error::other)?;
    let started = Instant::now();
    let data = capture.data();
    let mut shard = Shard::new(cfg.clone(), 1);
    let (mut frames, mut bytes) = (0u64, 0u64);
    for (i, f) in capture.frames().enumerate() {
        let f = f.map_err(std::io::Error::other)?;
        frames += 1;
        bytes += u64::from(f.len);
        let frame = &data[f.off..f.off + f.len as usize];
        if let Ok((meta, _)) = classify(f.link, frame, cfg, 1) {
            shard.process(i as u64 + 1, f.ts_ns, &meta, frame);
        }
    }
    let result = shard.finish();
    Ok(Run {
        frames,
        bytes,
        seconds: started.elapsed().as_secs_f64(),
        alerts: result.raised.iter().sum(),
    })
}

/// Rows for `runs` repetitions of `run`.
pub fn measure(
    name: &str,
    runs: usize,
    mut run: impl FnMut() -> std::io::Result<Run>,
) -> std::io::Result<(Row, Value)> {
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        samples.push(run()?);
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
