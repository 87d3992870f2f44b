//! Memory per tracked connection and per master-slave pair, and the RSS of
//! a shard holding 1 million idle connections.
//!
//! Each measurement is a child process (`modbus-bench-alloc memory-probe`),
//! so that the RSS figure is not blurred by what earlier measurements freed.
//! A probe builds one shard with every rule on (masters, writers, limits, a
//! baseline that knows every pair), opens `connections` connections spread
//! evenly over `pairs` master-slave pairs (handshake, one FC 3 read and its
//! response, the ACK: then silence, well within the idle timeout), and
//! reports the heap bytes still allocated (counting allocator) and the RSS
//! growth.

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use modbus_detect::config::baseline::Baseline;
use modbus_detect::config::limits::RegisterLimits;
use modbus_detect::config::DetectConfig;
use modbus_detect::shard::Shard;
use serde_json::{json, Value};

use crate::alloc::{rss_bytes, snapshot};
use crate::frames::{decode_all, feed, idle_connection, master, record, slave};
use crate::results::{self, Row};
use crate::scenario::LIMITS_JSON;
use crate::stats::Summary;

/// Slaves per master in a probe: pairs are (master i / SLAVES, slave i % SLAVES).
const SLAVES: u32 = 50;

fn pair(i: u32) -> (IpAddr, IpAddr) {
    (
        IpAddr::V4(master(i / SLAVES)),
        IpAddr::V4(slave(i % SLAVES)),
    )
}

fn probe_config(pairs: u32) -> DetectConfig {
    let mut baseline = Baseline::default();
    let mut masters = Vec::new();
    for p in 0..pairs {
        let (m, s) = pair(p);
        baseline.record(m, s, 1, 3, 0);
        masters.push(m);
    }
    DetectConfig {
        authorized_masters: Some(masters.iter().copied().collect()),
        authorized_writers: Some(masters.into_iter().collect()),
        limits_file: Some(Arc::new(
            RegisterLimits::parse(LIMITS_JSON).expect("valid limits"),
        )),
        baseline: Some(Arc::new(baseline)),
        ..DetectConfig::default()
    }
}

/// What one probe measured.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    pub heap_bytes: u64,
    pub rss_bytes: u64,
    pub rss_total: u64,
    pub tracked: u64,
}

/// In this process: a shard with `connections` idle connections over `pairs` pairs.
pub fn probe(connections: u32, pairs: u32) -> std::io::Result<Probe> {
    let pairs = pairs.clamp(1, connections.max(1));
    let cfg = Arc::new(probe_config(pairs));
    let mut shard = Shard::new(cfg.clone(), 1);
    let (heap0, rss0) = (snapshot().live_bytes, rss_bytes().unwrap_or(0));
    let start_ns = 1_767_225_600 * 1_000_000_000u64;
    let mut frame_no = 0;
    let mut opened = 0u64;
    for c in 0..connections {
        let (m, s) = pair(c % pairs);
        let (IpAddr::V4(m), IpAddr::V4(s)) = (m, s) else {
            unreachable!("probe addresses are IPv4")
        };
        // Distinct client ports per pair: 1024 + the connection's rank.
        let port = 1024 + (c / pairs) as u16;
        let ts = start_ns + u64::from(c) * 50_000;
        let frames = record(|w| idle_connection(w, m, port, s, ts))?;
        feed(&mut shard, &decode_all(&frames, &cfg), &mut frame_no, 0);
        shard.drain_eve().for_each(drop);
        opened += 1;
    }
    let (heap1, rss1) = (snapshot().live_bytes, rss_bytes().unwrap_or(0));
    let result = Probe {
        heap_bytes: heap1.saturating_sub(heap0) as u64,
        rss_bytes: rss1.saturating_sub(rss0),
        rss_total: rss1,
        tracked: opened,
    };
    let finished = shard.finish();
    if finished.counters.flows != opened || finished.counters.flows_evicted != 0 {
        return Err(std::io::Error::other(format!(
            "probe: {} flows tracked, {} evicted, {opened} opened",
            finished.counters.flows, finished.counters.flows_evicted
        )));
    }
    Ok(result)
}

/// Run a probe in a child process.
fn child(connections: u32, pairs: u32) -> std::io::Result<Probe> {
    let exe = std::env::current_exe()?;
    let out = Command::new(exe)
        .args(["memory-probe", "--connections"])
        .arg(connections.to_string())
        .arg("--pairs")
        .arg(pairs.to_string())
        .output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "memory probe failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(std::io::Error::other)?;
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    Ok(Probe {
        heap_bytes: n("heap_bytes"),
        rss_bytes: n("rss_bytes"),
        rss_total: n("rss_total"),
        tracked: n("tracked"),
    })
}

/// The probe's result as the line `memory-probe` prints.
pub fn probe_json(p: &Probe) -> Value {
    json!({"heap_bytes": p.heap_bytes, "rss_bytes": p.rss_bytes, "rss_total": p.rss_total, "tracked": p.tracked})
}

pub fn run(dir: &Path, connections: u32, runs: usize) -> std::io::Result<()> {
    let runs = runs.max(1);
    let many = |n: u32, pairs: u32| -> std::io::Result<Vec<Probe>> {
        (0..runs).map(|_| child(n, pairs)).collect()
    };
    // Per connection: the difference between N and 2N connections over the
    // same 100 pairs (the pairs' cost cancels out).
    let n0 = 100_000;
    let a = many(n0, 100)?;
    let b = many(2 * n0, 100)?;
    let per_conn: Vec<f64> = a
        .iter()
        .zip(&b)
        .map(|(a, b)| (b.heap_bytes as f64 - a.heap_bytes as f64) / f64::from(n0))
        .collect();
    // Per pair: 50,000 pairs of one connection each, minus the connections.
    let p0 = 50_000;
    let c = many(p0, p0)?;
    let conn = Summary::of(&per_conn).map_or(0.0, |s| s.median);
    let per_pair: Vec<f64> = c
        .iter()
        .map(|c| c.heap_bytes as f64 / f64::from(p0) - conn)
        .collect();
    // The target: 1 M idle connections (over 1,000 pairs).
    let big = many(connections, 1000)?;
    let heap_big: Vec<f64> = big
        .iter()
        .map(|p| p.heap_bytes as f64 / f64::from(connections))
        .collect();
    let rss_big: Vec<f64> = big
        .iter()
        .map(|p| p.rss_bytes as f64 / f64::from(connections))
        .collect();
    let rss_total: Vec<f64> = big.iter().map(|p| p.rss_total as f64).collect();
    let m = |x: u32| format!("{:.0}k", f64::from(x) / 1e3);
    let mut rows = Vec::new();
    let mut row = |name: String, v: &[f64], note: &str| {
        let mut r = Row::new("memory", name);
        r.memory_bytes = Summary::of(v);
        r.note = note.to_string();
        eprintln!(
            "  {:<50} {:>12.1} bytes",
            r.name,
            r.memory_bytes.as_ref().map_or(f64::NAN, |s| s.median)
        );
        rows.push(r);
    };
    row(
        "heap per tracked connection".into(),
        &per_conn,
        &format!("{} vs {} idle connections over 100 pairs", m(2 * n0), m(n0)),
    );
    row(
        "heap per master-slave pair".into(),
        &per_pair,
        &format!("{} pairs of one connection, minus the connection", m(p0)),
    );
    row(
        format!("heap per idle connection, {} connections", m(connections)),
        &heap_big,
        "over 1,000 pairs; target <= 256",
    );
    row(
        format!("RSS per idle connection, {} connections", m(connections)),
        &rss_big,
        "RSS growth / connections; target <= 256",
    );
    row(
        format!("RSS of the process, {} connections", m(connections)),
        &rss_total,
        "whole process",
    );
    let all = |v: &[Probe]| v.iter().map(probe_json).collect::<Vec<_>>();
    let path = results::write(
        dir,
        "memory",
        &rows,
        json!({"connections": connections, "per_conn_n": [all(&a), all(&b)],
               "per_pair": all(&c), "big": all(&big)}),
    )?;
    eprintln!("modbus-bench-alloc: wrote {}", path.display());
    Ok(())
}
