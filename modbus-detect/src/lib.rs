//! modbus-detect: a line-rate Modbus/TCP anomaly detector.
//!
//! # The packet's path
//!
//! ```text
//! source (pcap/pcapng file | AF_XDP socket per RX queue)      only yields frames
//!   -> runtime::dispatch   decode L2/L3/L4 once (IP fragments: defrag), orient once (flow key, direction),
//!                          shard = hash(server address), per-shard batches
//!                          into lock-free SPSC rings (or a shard in this thread)
//!   -> shard               connection table -> what the receiver admits (checksums, TTL)
//!                          -> TCP reassembly per direction (target policies)
//!                          -> Modbus ADUs (MBAP + PDU views) -> transactions
//!                          -> detect::Analysis: the rules and the ML judge
//!                             (on_request / on_response / on_tick), or, in
//!                             baseline mode, the learners instead
//!                          -> alerts, aggregated per key, EVE lines as raised
//!   -> output              one typed report (merged in a fixed order), EVE lines
//! ```
//!
//! Everything after the source is the same code for a replay and for live
//! capture: `runtime::offline` and `runtime::online` differ only in where
//! frames come from and in what they do when a shard falls behind (wait,
//! or drop and count). Every piece of state a rule needs is keyed by the
//! slave, so it lives in the slave's shard: shards share nothing.
//!
//! # Where things live
//!
//! | module | what |
//! |---|---|
//! | `app`, `cli` | flags -> one [`config::DetectConfig`], the run, exit codes |
//! | `source` | capture files (`pcap.rs`), the XDP program's loader and AF_XDP sockets (`xdp/`) |
//! | `runtime` | the dispatcher (the one frame loop), shard threads and rings, replay, live capture, inline shards; one `RunOutcome` |
//! | `decode` | Ethernet, VLAN, SLL/SLL2, IPv4/IPv6, TCP header views (zero-copy), checksums |
//! | `defrag` | IPv4/IPv6 fragment reassembly, bounded, before the dispatcher orients a packet |
//! | `flow` | orientation, the bounded connection table, what a receiver admits, target policies, reassembly |
//! | `shard`, `roles` | the per-shard pipeline from segment to alert; client and server where both ports are Modbus ports |
//! | `modbus` | MBAP and PDU views per function code, transactions, ADU records |
//! | `detect` | one file per rule family, the ML detector (`ml/`), the learners of baseline mode (`learn.rs`) |
//! | `ml` | the algorithms only (Isolation Forest, One-Class SVM, scaling, model files); imports nothing of the engine |
//! | `config` | the settings, the register limits file and the baseline file |
//! | `alert` | alert types, severities, aggregation |
//! | `output` | the typed report and the EVE alert stream |
//! | `files` | settings files read with errors naming the file; atomic writes |
//! | `keyed` | randomly keyed hashing for every table keyed by wire data |
//! | `knowledge` | per alert type: signature, ATT&CK for ICS techniques, analyst text (`data/alert_types.toml`) |
//! | `sys` | capabilities, sysfs and /proc helpers, CPU pinning |
//! | `inspect` | every decoded ADU of a capture (`--dump-adus`, the tshark comparison) |
//!
//! Beside this crate: `modbus-ebpf` (the XDP program), `modbus-common`
//! (what the program and its loader share; the seeded generator),
//! `modbus-synth` (the capture generator, used by tests and benchmarks
//! only), `tests`, `bench`, `xtask`.

pub mod alert;
pub mod app;
pub mod census;
pub mod cli;
pub mod config;
pub mod console;
pub mod counters;
pub mod dashboard;
pub mod decode;
pub mod defrag;
pub mod detect;
pub mod eval;
pub mod files;
pub mod flow;
pub mod inspect;
pub mod inventory;
pub mod keyed;
pub mod knowledge;
pub mod ml;
pub mod modbus;
pub mod original;
pub mod output;
pub mod roles;
pub mod runtime;
pub mod shard;
pub mod source;
pub mod sys;
