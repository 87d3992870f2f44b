//! modbus-detect: a line-rate Modbus/TCP anomaly detector.
//!
//! The packet's path, and the module that owns each step:
//! `source` (pcap file | AF_XDP) -> `dispatch` (shard key, SPSC rings) ->
//! `shard` (`decode` -> `flow` reassembly -> `modbus` ADUs and transactions ->
//! `detect` rules -> `alert` aggregation) -> `output` (report, EVE lines).

pub mod alert;
pub mod app;
pub mod cli;
pub mod config;
pub mod counters;
pub mod decode;
pub mod detect;
pub mod files;
pub mod flow;
pub mod inspect;
pub mod ml;
pub mod modbus;
pub mod output;
pub mod runtime;
pub mod shard;
pub mod source;
pub mod sys;
