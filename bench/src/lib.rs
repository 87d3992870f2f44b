//! The benchmark suite of modbus-detect (see `cargo xtask bench`).
//!
//! - `benches/micro.rs`: criterion micro-benchmarks (decoder, MBAP/PDU,
//!   reassembly, flow table, dispatch, every rule family through a shard,
//!   and the before/after pairs of each hot-path optimisation);
//! - `modbus-bench replay`: the replay of a capture through 1..N shards,
//!   and the instructions per frame of one thread, counted by callgrind;
//! - `modbus-bench-alloc alloc|memory`: allocations per million frames in
//!   steady state, and bytes per connection / pair, RSS with 1 M idle
//!   connections (a counting global allocator, hence a binary of its own);
//! - `modbus-bench live` (root): frames/s a sensor interface receives with
//!   no program, an XDP drop program, modbus-detect, and an AF_PACKET
//!   TPACKET_V3 reader;
//! - `modbus-bench report`: one Markdown table and one JSON file from the
//!   results of the others.
//!
//! This library holds what they share: the detection scenario (all rules
//! on, baseline loaded), hand-built frames, statistics and result files.

pub mod afpacket;
pub mod alloc;
pub mod allocs;
pub mod frames;
pub mod instructions;
pub mod live;
pub mod memory;
pub mod original;
pub mod replay;
pub mod report;
pub mod results;
pub mod scenario;
pub mod stats;
