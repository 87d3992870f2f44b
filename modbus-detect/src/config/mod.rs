//! The detector's settings, built from the command line (see `cli`) or by tests.
//!
//! Everything a shard needs is in [`DetectConfig`], shared read-only by all
//! shards through an `Arc`: no locks, no per-packet lookups outside the shard.

use std::sync::Arc;

use addrs::AddrSet;

pub mod addrs;
pub mod baseline;
pub mod central;
pub mod fc_counts;
pub mod limits;
pub mod live;
pub mod thresholds;

pub use thresholds::{ThresholdValues, Thresholds};

use crate::flow::policy::TargetPolicies;
use baseline::Baseline;
use limits::RegisterLimits;

/// Capacities of every table a shard keeps; each eviction is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Tracked TCP connections, over all shards (each shard gets its share).
    pub max_flows: usize,
    /// Idle time after which a connection's state is freed.
    pub flow_idle_timeout_ns: u64,
    /// Bytes of out-of-order data buffered per connection direction.
    pub max_ooo_bytes: usize,
    /// Out-of-order segments buffered per connection direction.
    pub max_ooo_segments: usize,
    /// Outstanding requests remembered per connection.
    pub max_pending_per_flow: usize,
    /// Time after which an unanswered request is forgotten.
    pub transaction_timeout_ns: u64,
    /// Distinct aggregated alerts kept in the report (over all shards).
    pub max_alert_keys: usize,
    /// Baseline mode: registers learnt (slave, unit, register), over all
    /// shards; beyond, new registers are counted, not learnt.
    pub max_learned_registers: usize,
    /// Baseline mode: ML training windows kept, over all shards.
    pub max_learned_windows: usize,
    /// Baseline mode: master-slave pairs learnt, over all shards.
    pub max_learned_pairs: usize,
    /// Per-key minimum capture-time interval between two EVE lines.
    pub eve_interval_ns: u64,
    /// How long a response may wait for a request that has not been seen
    /// yet (0: not at all). Live capture on several RX queues sets it: the
    /// two directions of a connection may arrive through different queues.
    pub early_response_hold_ns: u64,
    /// Treat a hole that the peer has acknowledged as capture loss at once.
    /// Right for one capture point; live capture on several RX queues turns
    /// it off, since an ACK may overtake the data it acknowledges there.
    pub ack_confirms_loss: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_flows: 1 << 20,
            flow_idle_timeout_ns: 600_000_000_000,
            max_ooo_bytes: 16 * 1024,
            max_ooo_segments: 16,
            max_pending_per_flow: 64,
            transaction_timeout_ns: 30_000_000_000,
            max_alert_keys: 100_000,
            max_learned_registers: 1 << 20,
            max_learned_windows: 1 << 20,
            max_learned_pairs: 1 << 20,
            eve_interval_ns: 1_000_000_000,
            early_response_hold_ns: 0,
            ack_confirms_loss: true,
        }
    }
}

/// What to do with the traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Run the rules and raise alerts.
    Detect,
    /// Learn a baseline, raise nothing.
    Learn,
}

/// Settings shared by every shard.
#[derive(Debug, Clone)]
pub struct DetectConfig {
    pub mode: Mode,
    /// TCP ports that carry Modbus/TCP.
    pub ports: Vec<u16>,
    /// ROGUE_MODBUS_MASTER is on only when this is `Some`.
    pub authorized_masters: Option<AddrSet>,
    /// UNAUTHORIZED_MODBUS_WRITE is on only when this is `Some`.
    pub authorized_writers: Option<AddrSet>,
    pub limits_file: Option<Arc<RegisterLimits>>,
    /// NEW_FUNCTION_CODE and TIMING_ANOMALY are on only with a baseline.
    pub baseline: Option<Arc<Baseline>>,
    pub thresholds: Thresholds,
    pub limits: Limits,
    /// Judge windows of traffic with the baseline's ML models (`--ml`).
    pub ml: bool,
    /// Window length the ML features are learned over (baseline mode).
    pub ml_window_ns: u64,
    /// How each host's TCP/IP stack resolves overlapping copies.
    pub target_policies: TargetPolicies,
    /// Drop segments with wrong checksums, as their receiver does
    /// (`--checksums verify`, the default); off only for captures whose
    /// addresses were rewritten without fixing the checksums.
    pub verify_checksums: bool,
    /// Where newer settings come from while running (`--config-from
    /// nats`): shards built with this follow it. The settings installed
    /// there carry `None`, so that the cell does not hold itself.
    pub updates: Option<Arc<live::LiveConfig>>,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            mode: Mode::Detect,
            ports: vec![502],
            authorized_masters: None,
            authorized_writers: None,
            limits_file: None,
            baseline: None,
            thresholds: Thresholds::default(),
            limits: Limits::default(),
            ml: false,
            ml_window_ns: 5_000_000_000,
            target_policies: TargetPolicies::default(),
            verify_checksums: true,
            updates: None,
        }
    }
}
