//! The sensor's health as an EVE `stats` event, written every
//! `--stats-interval` seconds during live capture: Suricata's shape where
//! Suricata has the figure (so SIEM dashboards for Suricata's stats show
//! it), everything of ours under `modbus_detect`.

use serde_json::{json, Value};

use crate::source::xdp::XdpCounters;

use super::iso_time;
use super::report::Summary;

/// What only the capture path knows at the moment of the event.
pub struct CaptureHealth<'a> {
    pub now_ns: u64,
    pub uptime_s: u64,
    pub host: &'a str,
    pub iface: &'a str,
    pub xdp: XdpCounters,
    /// Frames the sockets lost (kernel XDP_STATISTICS).
    pub socket_drops: u64,
    /// Frames dropped because a shard's ring was full.
    pub ring_full_drops: u64,
    /// `--publish`: the publisher's figures.
    pub publish: Option<crate::output::publish::Published>,
    /// `--config-from`: the central settings' figures.
    pub central: Option<crate::output::metrics::CentralFigures>,
}

/// One `stats` event.
pub fn stats_line(s: &Summary, h: &CaptureHealth<'_>) -> Value {
    let c = &s.counters;
    let alerts: u64 = s.raised.iter().sum();
    let mut line = json!({
        "timestamp": iso_time(h.now_ns).replace('Z', "+0000"),
        "event_type": "stats",
        "host": h.host,
        "in_iface": h.iface,
        "stats": {
            "uptime": h.uptime_s,
            "capture": {
                "kernel_packets": h.xdp.redirected,
                "kernel_drops": h.socket_drops + h.ring_full_drops,
                "errors": h.xdp.redirect_failed,
            },
            "decoder": {"pkts": c.frames, "bytes": c.bytes},
            "flow": {"total": c.flows},
            "tcp": {
                "reassembly_gap": c.reassembly_gaps,
                "invalid_checksum": c.checksum_errors,
                "overlap": c.retransmitted_segments,
                "overlap_diff_data": c.overlap_conflicts,
            },
            "detect": {"alert": alerts, "alerts_suppressed": s.eve_suppressed},
        },
        "modbus_detect": {
            "counters": c,
            "alerts_total": alerts,
            "alerts_dropped_table_full": s.alerts_dropped,
            "xdp": h.xdp,
            "socket_drops": h.socket_drops,
            "shard_ring_full_drops": h.ring_full_drops,
            "inventory_pairs_dropped": s.inventory.pairs_dropped,
            "rule_state_evicted": s.rule_state_evicted,
        },
    });
    if let (Some(c), Some(ours)) = (h.central, line.get_mut("modbus_detect")) {
        ours["central_config"] = json!(c);
    }
    if let (Some(p), Some(ours)) = (h.publish, line.get_mut("modbus_detect")) {
        ours["publish"] = json!(p);
    }
    line
}
