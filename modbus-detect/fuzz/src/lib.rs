//! What the fuzz targets share: the detector configurations they run with
//! and the framing of the `engine` and `reassembly` inputs.
//!
//! Input formats (the seeding step, `seed_fuzz_corpora` in
//! `tests/tests/properties.rs`, writes the same):
//!
//! - `engine`: one flags byte (see [`EngineFlags`]), one link-type byte
//!   (see [`link_type`]), then records of `len: u16 LE`, `delta: u16 LE`
//!   (see [`delta_ns`]) and `len` frame bytes; a short last record takes
//!   what is left.
//! - `reassembly`: one limits byte, a 32-bit initial sequence number (LE),
//!   then operations: one op byte (see `fuzz_targets/reassembly.rs`), a
//!   32-bit sequence offset (LE) relative to the initial sequence number,
//!   and for segments a length byte and that many payload bytes.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, OnceLock};

use modbus_detect::config::addrs::AddrSet;
use modbus_detect::config::baseline::Baseline;
use modbus_detect::config::limits::RegisterLimits;
use modbus_detect::config::{DetectConfig, Limits, Mode};
use modbus_detect::decode::LinkType;

/// The lab's register limits file (every capture of tests/fixtures/lab).
pub const LAB_LIMITS: &str = include_str!("../../../tests/fixtures/lab/register_limits.json");
/// The baseline learned from tests/fixtures/lab/normal_baseline.pcap (the demo's).
pub const LAB_BASELINE: &str = include_str!("../../demo/baseline.json");

/// Capture time of the first frame of an `engine` input (2023-11-14).
pub const START_NS: u64 = 1_700_000_000_000_000_000;

/// The lab's masters (HMI, historian, engineering workstation) and its only writer.
pub const LAB_MASTERS: [[u8; 4]; 3] = [[192, 168, 50, 20], [192, 168, 50, 30], [192, 168, 50, 40]];
pub const LAB_WRITERS: [[u8; 4]; 1] = [[192, 168, 50, 20]];

fn lab_limits() -> Arc<RegisterLimits> {
    static L: OnceLock<Arc<RegisterLimits>> = OnceLock::new();
    L.get_or_init(|| Arc::new(RegisterLimits::parse(LAB_LIMITS).expect("the lab limits parse")))
        .clone()
}

fn lab_baseline() -> Arc<Baseline> {
    static B: OnceLock<Arc<Baseline>> = OnceLock::new();
    B.get_or_init(|| Arc::new(Baseline::parse(LAB_BASELINE).expect("the lab baseline parses")))
        .clone()
}

fn ips(list: &[[u8; 4]]) -> AddrSet {
    list.iter()
        .map(|a| IpAddr::V4(Ipv4Addr::from(*a)))
        .collect()
}

/// Every rule on: the lab's masters, writers, limits and baseline.
pub fn full_config() -> DetectConfig {
    DetectConfig {
        authorized_masters: Some(ips(&LAB_MASTERS)),
        authorized_writers: Some(ips(&LAB_WRITERS)),
        limits_file: Some(lab_limits()),
        baseline: Some(lab_baseline()),
        ..DetectConfig::default()
    }
}

/// Every table small, so that eviction and expiry paths run on short inputs.
pub fn tight_limits() -> Limits {
    Limits {
        max_flows: 8,
        flow_idle_timeout_ns: 5_000_000_000,
        max_ooo_bytes: 512,
        max_ooo_segments: 4,
        max_pending_per_flow: 4,
        transaction_timeout_ns: 1_000_000_000,
        max_alert_keys: 16,
        max_learned_registers: 32,
        max_learned_windows: 8,
        max_learned_pairs: 8,
        eve_interval_ns: 100_000_000,
        early_response_hold_ns: 0,
        ack_confirms_loss: true,
    }
}

/// The first byte of an `engine` input.
#[derive(Debug, Clone, Copy)]
pub struct EngineFlags(pub u8);

impl EngineFlags {
    /// Small tables ([`tight_limits`]).
    pub fn tight(self) -> bool {
        self.0 & 0x01 != 0
    }
    /// Holes are not given up on the peer's ACK (multi-queue live capture).
    pub fn no_ack_loss(self) -> bool {
        self.0 & 0x02 != 0
    }
    /// Responses may wait 50 ms for their request (multi-queue live capture).
    pub fn early_hold(self) -> bool {
        self.0 & 0x04 != 0
    }
    /// Learn a baseline instead of detecting.
    pub fn learn(self) -> bool {
        self.0 & 0x08 != 0
    }
    /// Shards: 1, 2 or 3.
    pub fn shards(self) -> usize {
        usize::from((self.0 >> 4) & 0x03) % 3 + 1
    }
    /// Port 5020 is a Modbus port too (connections between two Modbus ports).
    pub fn extra_port(self) -> bool {
        self.0 & 0x40 != 0
    }
    /// No masters, writers, limits or baseline: the rules that need them are off.
    pub fn bare(self) -> bool {
        self.0 & 0x80 != 0
    }

    pub fn config(self) -> DetectConfig {
        let mut cfg = if self.bare() {
            DetectConfig::default()
        } else {
            full_config()
        };
        if self.tight() {
            cfg.limits = tight_limits();
        }
        cfg.limits.ack_confirms_loss = !self.no_ack_loss();
        if self.early_hold() {
            cfg.limits.early_response_hold_ns = 50_000_000;
        }
        if self.learn() {
            cfg.mode = Mode::Learn;
        }
        if self.extra_port() {
            cfg.ports.push(5020);
        }
        cfg
    }
}

/// The link type an `engine` input's second byte selects (0: Ethernet).
pub fn link_type(b: u8) -> LinkType {
    match b % 8 {
        1 => LinkType::LinuxSll,
        2 => LinkType::LinuxSll2,
        3 => LinkType::RawIp,
        4 => LinkType::Ipv4,
        5 => LinkType::Ipv6,
        6 => LinkType::Null,
        7 => LinkType::Unsupported(u32::from(b)),
        _ => LinkType::Ethernet,
    }
}

/// Time since the previous frame: the high bit set counts whole seconds
/// (idle and transaction timeouts), clear it counts 10 µs steps (floods).
pub fn delta_ns(d: u16) -> u64 {
    if d & 0x8000 != 0 {
        u64::from(d & 0x7fff) * 1_000_000_000
    } else {
        u64::from(d) * 10_000
    }
}

/// The records of an `engine` input after its two header bytes.
pub fn records(mut data: &[u8]) -> impl Iterator<Item = (u64, &[u8])> {
    let mut ts = START_NS;
    std::iter::from_fn(move || {
        let (&[l0, l1, d0, d1], rest) = data.split_first_chunk::<4>()?;
        let len = usize::from(u16::from_le_bytes([l0, l1])).min(rest.len());
        let (frame, rest) = rest.split_at(len);
        data = rest;
        ts += delta_ns(u16::from_le_bytes([d0, d1]));
        Some((ts, frame))
    })
}
