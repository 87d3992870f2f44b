//! `modbus-bench-alloc`: the benchmarks that need a counting global
//! allocator.
//!
//! ```text
//! modbus-bench-alloc alloc --pcap F [--runs 3]    allocations per million frames, steady state
//! modbus-bench-alloc memory [--connections N]     bytes per connection and per pair, RSS
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use modbus_bench::alloc::Counting;
use modbus_bench::results;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[derive(Debug, Parser)]
#[command(name = "modbus-bench-alloc")]
struct Args {
    /// Where result files go (default: target/bench of the workspace).
    #[arg(long, global = true)]
    out: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Allocations per million frames after warm-up, shard path and pipeline.
    Alloc {
        #[arg(long)]
        pcap: PathBuf,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Frames of warm-up, not counted (a fraction of the capture).
        #[arg(long, default_value_t = 0.25)]
        warmup: f64,
    },
    /// Bytes per tracked connection and per master-slave pair; RSS with
    /// `--connections` idle connections.
    Memory {
        #[arg(long, default_value_t = 1_000_000)]
        connections: u32,
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// (internal) One memory measurement in this process; prints JSON.
    MemoryProbe {
        #[arg(long)]
        connections: u32,
        #[arg(long)]
        pairs: u32,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let dir = args.out.clone().unwrap_or_else(results::bench_dir);
    let result = match args.cmd {
        Cmd::Alloc { pcap, runs, warmup } => {
            modbus_bench::allocs::run(&dir, &pcap, runs, warmup.clamp(0.0, 0.9))
        }
        Cmd::Memory { connections, runs } => modbus_bench::memory::run(&dir, connections, runs),
        Cmd::MemoryProbe { connections, pairs } => modbus_bench::memory::probe(connections, pairs)
            .map(|p| println!("{}", modbus_bench::memory::probe_json(&p))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("modbus-bench-alloc: error: {e}");
            ExitCode::FAILURE
        }
    }
}
