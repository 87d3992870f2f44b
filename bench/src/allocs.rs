//! Allocations per million frames in steady state: the capture through one
//! shard on one thread, and through the whole engine (reader, rings, shard
//! threads). Counted by the [`crate::alloc::Counting`] global allocator of
//! `modbus-bench-alloc`, from the end of a warm-up (tables grown, buffers
//! sized) to the end of the capture, before the end-of-run flush.

use std::cell::Cell;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use modbus_detect::config::DetectConfig;
use modbus_detect::runtime::offline::replay;
use modbus_detect::runtime::Plan;
use modbus_detect::source::CaptureFile;
use serde_json::json;

use crate::alloc::{snapshot, Snapshot};
use crate::results::{self, Row};
use crate::scenario;
use crate::stats::Summary;

/// Allocations counted in a window of frames.
#[derive(Debug, Clone, Copy)]
struct Window {
    frames: u64,
    allocs: u64,
}

impl Window {
    fn per_million(&self) -> f64 {
        self.allocs as f64 * 1e6 / self.frames.max(1) as f64
    }
}

fn open(pcap: &Path) -> std::io::Result<CaptureFile> {
    CaptureFile::open(pcap).map_err(std::io::Error::other)
}

/// Byte offset of every frame, to turn the engine's progress (an offset)
/// into a frame count.
fn frame_offsets(capture: &CaptureFile) -> std::io::Result<Vec<usize>> {
    capture
        .frames()
        .map(|f| f.map(|f| f.off).map_err(std::io::Error::other))
        .collect()
}

/// Allocations between the warm-up and the end, through the runtime as
/// `plan` says ([`Plan::Inline`]: the shard path in one thread).
fn pipeline(
    cfg: &Arc<DetectConfig>,
    pcap: &Path,
    plan: Plan,
    offsets: &[usize],
    warmup: usize,
) -> std::io::Result<Window> {
    let capture = open(pcap)?;
    let from = offsets.get(warmup).copied().unwrap_or(usize::MAX);
    // The last progress call comes at most 4096 frames before the end.
    let to = offsets
        .get(offsets.len().saturating_sub(8192))
        .copied()
        .unwrap_or(usize::MAX);
    let first: Cell<Option<(Snapshot, usize)>> = Cell::new(None);
    let last: Cell<Option<(Snapshot, usize)>> = Cell::new(None);
    let progress = |off: u64| {
        let off = off as usize;
        if off >= from && first.get().is_none() {
            first.set(Some((snapshot(), off)));
        }
        if off >= to && last.get().is_none() {
            last.set(Some((snapshot(), off)));
        }
    };
    let stop = AtomicBool::new(false);
    let out = replay(cfg.clone(), &capture, plan, None, &stop, Some(&progress))?;
    drop(out);
    let (Some((a, a_off)), Some((b, b_off))) = (first.get(), last.get()) else {
        return Err(std::io::Error::other("capture too short for the window"));
    };
    let index = |off: usize| offsets.partition_point(|&o| o < off) as u64;
    Ok(Window {
        frames: index(b_off) - index(a_off),
        allocs: b.allocs - a.allocs,
    })
}

pub fn run(dir: &Path, pcap: &Path, runs: usize, warmup: f64) -> std::io::Result<()> {
    let capture = open(pcap)?;
    let offsets = frame_offsets(&capture)?;
    let cfg = Arc::new(scenario::all_rules(Some(scenario::learn_baseline(
        &capture,
    ))));
    drop(capture);
    let warm = (offsets.len() as f64 * warmup) as usize;
    let mut rows = Vec::new();
    let mut details = Vec::new();
    let mut add = |name: &str, windows: Vec<Window>| {
        let per_m: Vec<f64> = windows.iter().map(Window::per_million).collect();
        let mut row = Row::new("alloc", name);
        row.allocs_per_m = Summary::of(&per_m);
        row.note = format!(
            "after {warm} frames of warm-up; {} frames counted",
            windows.first().map_or(0, |w| w.frames)
        );
        eprintln!(
            "  {name:<50} {:>10.1} allocations per million frames ({:?})",
            row.allocs_per_m.as_ref().map_or(f64::NAN, |s| s.median),
            windows.iter().map(|w| w.allocs).collect::<Vec<_>>()
        );
        details.push(
            json!({"name": name, "allocs": windows.iter().map(|w| w.allocs).collect::<Vec<_>>(),
            "frames": windows.iter().map(|w| w.frames).collect::<Vec<_>>()}),
        );
        rows.push(row);
    };
    let shard: Vec<Window> = (0..runs.max(1))
        .map(|_| pipeline(&cfg, pcap, Plan::Inline, &offsets, warm))
        .collect::<Result<_, _>>()?;
    add("steady state, 1 thread (shard path)", shard);
    // The same with the ML models judging every pair's windows.
    let ml_cfg = Arc::new(DetectConfig {
        ml: true,
        ..DetectConfig::clone(&cfg)
    });
    let ml: Vec<Window> = (0..runs.max(1))
        .map(|_| pipeline(&ml_cfg, pcap, Plan::Inline, &offsets, warm))
        .collect::<Result<_, _>>()?;
    add("steady state, 1 thread (shard path), ML on", ml);
    for n in [1usize, 2] {
        let w: Vec<Window> = (0..runs.max(1))
            .map(|_| pipeline(&cfg, pcap, Plan::Threads(n), &offsets, warm))
            .collect::<Result<_, _>>()?;
        add(&format!("steady state, replay with {n} shard(s)"), w);
    }
    let path = results::write(
        dir,
        "alloc",
        &rows,
        json!({"pcap": pcap.display().to_string(), "warmup_frames": warm, "measurements": details}),
    )?;
    eprintln!("modbus-bench-alloc: wrote {}", path.display());
    Ok(())
}
