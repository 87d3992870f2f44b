//! Spreading frames over shards.
//!
//! The shard key is the server (slave) address: every piece of state a rule
//! needs (per slave, per master-slave pair, per register) and both directions
//! of a connection then meet in one shard, with no locks and no cross-shard
//! lookups. The source decodes each frame once into a [`PacketMeta`]; batches
//! of (timestamp, frame location, meta) travel over one lock-free
//! single-producer single-consumer ring per shard.

use std::hash::{Hash, Hasher};
use std::net::IpAddr;

use bytes::Bytes;

use crate::config::DetectConfig;
use crate::decode::{decode, LinkType, PacketMeta, SkipReason};

/// Frames per batch: large enough to amortise ring operations, small enough
/// to keep a shard's working set in cache.
pub const BATCH_FRAMES: usize = 256;

/// One frame of a batch: where it is in the batch's bytes and what it holds.
#[derive(Debug, Clone, Copy)]
pub struct BatchItem {
    /// 1-based position in the source (pcap frame number, or live frame count).
    pub frame_no: u64,
    pub ts_ns: u64,
    pub off: usize,
    pub len: u32,
    pub meta: PacketMeta,
}

/// Frames for one shard. `data` is shared, not copied: for a replay it is the
/// whole memory-mapped capture, for live capture a buffer of copied frames.
#[derive(Debug)]
pub struct Batch {
    pub data: Bytes,
    pub items: Vec<BatchItem>,
}

impl Batch {
    pub fn new(data: Bytes) -> Self {
        Batch {
            data,
            items: Vec::with_capacity(BATCH_FRAMES),
        }
    }

    pub fn is_full(&self) -> bool {
        self.items.len() >= BATCH_FRAMES
    }

    /// The bytes of one item's frame.
    pub fn frame(&self, item: &BatchItem) -> &[u8] {
        self.data
            .get(item.off..item.off + item.len as usize)
            .unwrap_or(&[])
    }
}

/// Shard of a server address (stable across runs and platforms).
pub fn shard_of(server: IpAddr, shards: usize) -> usize {
    // One shard: no hashing, and no division.
    if shards <= 1 {
        return 0;
    }
    let mut h = rustc_hash::FxHasher::default();
    server.hash(&mut h);
    (h.finish() % shards.max(1) as u64) as usize
}

/// Whether `port` is one of `ports` (`DetectConfig::is_modbus_port`), with
/// the usual single port (502) a single comparison: `slice::contains` costs
/// some 30 instructions even on a one-element slice, and every frame asks
/// four times (here and in `shard::orient`), 6 % of the per-frame cost
/// before this (micro-benchmark `dispatch/port_check`).
#[inline]
pub fn is_modbus_port(ports: &[u16], port: u16) -> bool {
    match ports {
        [p] => *p == port,
        _ => ports.contains(&port),
    }
}

/// Decode a frame and pick its shard; frames that are not TCP on a Modbus
/// port are skipped with the reason. Inlined into the source loops, so that
/// the decoded header is built in place rather than copied out twice.
#[inline]
pub fn classify(
    link: LinkType,
    frame: &[u8],
    cfg: &DetectConfig,
    shards: usize,
) -> Result<(PacketMeta, usize), SkipReason> {
    let meta = decode(link, frame)?;
    let server = match (
        is_modbus_port(&cfg.ports, meta.sport),
        is_modbus_port(&cfg.ports, meta.dport),
    ) {
        (false, false) => return Err(SkipReason::NotModbusPort),
        (true, false) => meta.src,
        (false, true) => meta.dst,
        (true, true) => crate::shard::orient(&meta, cfg).0.server,
    };
    Ok((meta, shard_of(server, shards)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_is_stable_and_in_range() {
        let a = IpAddr::from([192, 168, 50, 10]);
        for n in 1..8 {
            assert!(shard_of(a, n) < n);
            assert_eq!(shard_of(a, n), shard_of(a, n));
        }
        assert_eq!(shard_of(a, 1), 0);
        let spread: std::collections::HashSet<_> = (0..=255u8)
            .map(|i| shard_of(IpAddr::from([10, 0, 0, i]), 4))
            .collect();
        assert_eq!(spread.len(), 4, "all shards used");
    }
}
