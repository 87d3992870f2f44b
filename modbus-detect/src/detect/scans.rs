//! Scans: one master probing a slave for what it has (Quickdraw's function
//! code and points-list scans, and their unit-id cousin behind gateways).
//!
//! Per master -> slave pair and window of capture time (`scan_window_ns`),
//! what the master asked for and what the slave refused:
//!
//! - FUNCTION_CODE_SCAN: `fc_scan_distinct` distinct function codes asked,
//!   more than any HMI's repertoire, or `fc_scan_refused` distinct codes
//!   answered "illegal function" (exception 1);
//! - ADDRESS_SCAN: `address_scan_distinct` distinct start addresses asked,
//!   far beyond a poll list, or `address_scan_refused` distinct addresses
//!   answered "illegal data address" (exception 2);
//! - UNIT_ID_SCAN: `unit_scan_distinct` distinct unit ids asked, or
//!   `unit_scan_refused` distinct units answered with a gateway exception
//!   (10 path unavailable, 11 target failed to respond).
//!
//! Each scan type raises once per pair and window. Distinct addresses are
//! counted in a 1024-bit sketch (exact far beyond the thresholds), so a
//! pair's state is a few hundred bytes whatever the master sends.

use std::net::IpAddr;

use super::{AlertSink, PairMap, RequestCtx, ResponseCtx, RULE_STATE_CAPACITY};
use crate::alert::{AlertKind, Detail, Severity};
use crate::config::baseline::PairId;
use crate::config::Thresholds;
use crate::modbus::pdu::Response;

/// A set of small numbers (function codes, unit ids) or of hashed
/// addresses, as bits, with the number of bits set (kept as they are set:
/// counting them per request cost 250 instructions on CPUs without a
/// population count instruction).
#[derive(Debug, Clone, Copy)]
struct Bits<const W: usize> {
    words: [u64; W],
    set: u32,
}

impl<const W: usize> Default for Bits<W> {
    fn default() -> Self {
        Bits {
            words: [0; W],
            set: 0,
        }
    }
}

impl<const W: usize> Bits<W> {
    /// Set bit `i`; whether it was clear (the set grew: only then can a
    /// threshold be newly crossed).
    fn insert(&mut self, i: usize) -> bool {
        let i = i % (64 * W);
        let Some(w) = self.words.get_mut(i / 64) else {
            return false;
        };
        let bit = 1 << (i % 64);
        let new = *w & bit == 0;
        *w |= bit;
        self.set += u32::from(new);
        new
    }

    fn len(&self) -> u32 {
        self.set
    }

    /// Distinct items inserted, estimated from the bits still clear
    /// (linear counting: exact while few collide, within a few percent up
    /// to several hundred items in 1024 bits).
    fn estimate(&self) -> u32 {
        let m = (64 * W) as f64;
        let zero = m - f64::from(self.len());
        if zero < 1.0 {
            return u32::MAX;
        }
        (m * (m / zero).ln()).round() as u32
    }
}

/// An address's bit in the 1024-bit sketch: MurmurHash3's 32-bit
/// finaliser spreads the regular addresses of a sweep (every 10th, every
/// 125th) over the bits as well as random ones (a multiplicative hash did
/// not: 100 addresses 10 apart took 87 bits).
fn address_bit(addr: u16) -> usize {
    let mut h = u32::from(addr);
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    (h >> 22) as usize
}

/// What a master asked of a slave in the current window. Every request
/// reads and writes it, so what only exception responses touch is boxed
/// apart: a probe is 240 bytes instead of 448 (memory per pair, and cache
/// lines per request).
#[derive(Debug, Default)]
struct Probe {
    window_start: u64,
    /// Scan types raised in this window (bit per [`Scan`]).
    raised: u8,
    fcs: Bits<4>,
    units: Bits<4>,
    addrs: Bits<16>,
    /// Made by the pair's first refusal, kept (cleared) across windows.
    refused: Option<Box<Refused>>,
}

const _: () = assert!(std::mem::size_of::<Probe>() <= 240);

/// What the slave refused in the window.
#[derive(Debug, Default)]
struct Refused {
    fcs: Bits<4>,
    units: Bits<4>,
    addrs: Bits<16>,
}

impl Probe {
    /// A new window from `ts_ns`: nothing asked, nothing refused.
    fn restart(&mut self, ts_ns: u64) {
        let refused = self.refused.take().map(|mut r| {
            *r = Refused::default();
            r
        });
        *self = Probe {
            window_start: ts_ns,
            refused,
            ..Probe::default()
        };
    }

    /// The refusals, boxed on the pair's first refusal of a kind a scan
    /// counts.
    fn refused(&mut self) -> &mut Refused {
        self.refused.get_or_insert_with(Box::default)
    }
}

/// What a request or response tells of its pair.
trait PairOf {
    fn pair(&self) -> (Option<PairId>, (IpAddr, IpAddr), u64);
}

impl PairOf for RequestCtx<'_> {
    fn pair(&self) -> (Option<PairId>, (IpAddr, IpAddr), u64) {
        (self.pair, (self.ep.master, self.ep.slave), self.ts_ns)
    }
}

impl PairOf for ResponseCtx<'_> {
    fn pair(&self) -> (Option<PairId>, (IpAddr, IpAddr), u64) {
        (self.pair, (self.ep.master, self.ep.slave), self.ts_ns)
    }
}

/// The pair's probe, its window restarted when it ran out.
fn probe<'a>(probes: &'a mut PairMap<Probe>, window: u64, ctx: &impl PairOf) -> &'a mut Probe {
    let (pair, addrs, ts_ns) = ctx.pair();
    let p = probes.get_or_insert_with(pair, addrs, || Probe {
        window_start: ts_ns,
        ..Probe::default()
    });
    if ts_ns.saturating_sub(p.window_start) > window || ts_ns < p.window_start {
        p.restart(ts_ns);
    }
    p
}

/// The three scans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    FunctionCode,
    Address,
    UnitId,
}

impl Scan {
    fn kind(self) -> AlertKind {
        match self {
            Scan::FunctionCode => AlertKind::FunctionCodeScan,
            Scan::Address => AlertKind::AddressScan,
            Scan::UnitId => AlertKind::UnitIdScan,
        }
    }
}

/// Exception codes.
const ILLEGAL_FUNCTION: u8 = 1;
const ILLEGAL_DATA_ADDRESS: u8 = 2;
const GATEWAY_PATH_UNAVAILABLE: u8 = 10;
const GATEWAY_TARGET_FAILED: u8 = 11;

pub struct Scans {
    thresholds: Thresholds,
    probes: PairMap<Probe>,
}

impl Scans {
    pub fn new(thresholds: Thresholds) -> Self {
        Scans {
            thresholds,
            probes: PairMap::new(RULE_STATE_CAPACITY),
        }
    }

    pub fn evicted(&self) -> u64 {
        self.probes.evicted()
    }

    /// New thresholds (new settings); the state stays.
    pub fn set_thresholds(&mut self, thresholds: Thresholds) {
        self.thresholds = thresholds;
    }

    pub fn on_request(&mut self, ctx: &RequestCtx<'_>, out: &mut impl AlertSink) {
        // Borrowed, not copied per request: the thresholds are 19 fields.
        let Scans {
            thresholds: t,
            probes,
        } = self;
        let p = probe(probes, t.scan_window_ns, ctx);
        // A poll asks what it asked before: no set grows, nothing to judge.
        let grew = [
            p.fcs.insert(usize::from(ctx.req.function_code())),
            ctx.req
                .reference()
                .is_some_and(|(addr, _)| p.addrs.insert(address_bit(addr))),
            p.units.insert(usize::from(ctx.unit)),
        ];
        if grew == [false; 3] {
            return;
        }
        let found = [
            (Scan::FunctionCode, grew[0], t.fc_scan_distinct),
            (Scan::Address, grew[1], t.address_scan_distinct),
            (Scan::UnitId, grew[2], t.unit_scan_distinct),
        ];
        for (scan, grew, threshold) in found {
            if !grew || p.raised & (1 << scan as u8) != 0 {
                continue;
            }
            let n = match scan {
                Scan::FunctionCode => p.fcs.len(),
                Scan::Address => p.addrs.estimate(),
                Scan::UnitId => p.units.len(),
            };
            if n >= threshold {
                p.raised |= 1 << scan as u8;
                let mut alert = ctx.alert(scan.kind(), Severity::High);
                // Many function codes and units: none of them is the alert's.
                (alert.unit, alert.function_code, alert.tx) = (0, 0, None);
                alert.detail = Detail::Scan {
                    distinct: n,
                    refused: false,
                };
                out.raise(alert, 1);
            }
        }
    }

    pub fn on_response(&mut self, ctx: &ResponseCtx<'_>, out: &mut impl AlertSink) {
        let Response::Exception { fc, code } = *ctx.resp else {
            return;
        };
        let read = ctx.request.and_then(|r| r.read);
        let Scans {
            thresholds: t,
            probes,
        } = self;
        let p = probe(probes, t.scan_window_ns, ctx);
        let (scan, n, threshold) = match code {
            ILLEGAL_FUNCTION => {
                let r = p.refused();
                r.fcs.insert(usize::from(fc));
                (Scan::FunctionCode, r.fcs.len(), t.fc_scan_refused)
            }
            ILLEGAL_DATA_ADDRESS => {
                let Some((addr, _)) = read else {
                    return;
                };
                let r = p.refused();
                r.addrs.insert(address_bit(addr));
                (Scan::Address, r.addrs.estimate(), t.address_scan_refused)
            }
            GATEWAY_PATH_UNAVAILABLE | GATEWAY_TARGET_FAILED => {
                let r = p.refused();
                r.units.insert(usize::from(ctx.unit));
                (Scan::UnitId, r.units.len(), t.unit_scan_refused)
            }
            _ => return,
        };
        if n >= threshold && p.raised & (1 << scan as u8) == 0 {
            p.raised |= 1 << scan as u8;
            // The scan is the master's: raised from it, to the slave.
            let mut alert = ctx.ep.from_master(scan.kind(), Severity::High, ctx.ts_ns);
            alert.detail = Detail::Scan {
                distinct: n,
                refused: true,
            };
            out.raise(alert, 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testutil::*;
    use crate::modbus::pdu::Request;
    use crate::modbus::transaction::PendingRequest;

    const MS: u64 = 1_000_000;

    fn requests(reqs: &[(Request<'_>, u8)], spacing_ms: u64) -> Collected {
        let mut s = Scans::new(Thresholds::default());
        let mut out = Collected::default();
        for (i, (r, unit)) in reqs.iter().enumerate() {
            let mut ctx = req(i as u64 * spacing_ms * MS, ep(1, 2), r);
            ctx.unit = *unit;
            s.on_request(&ctx, &mut out);
        }
        out
    }

    #[test]
    fn function_code_scan_on_both_sides_of_the_threshold() {
        let n = Thresholds::default().fc_scan_distinct as u8;
        let codes: Vec<Request<'_>> = (1..=n)
            .map(|fc| Request::Other {
                fc: 100 + fc,
                data: &[],
            })
            .collect();
        let all: Vec<_> = codes.iter().map(|r| (*r, 1)).collect();
        assert_eq!(requests(&all, 100).count(AlertKind::FunctionCodeScan), 1);
        assert_eq!(
            requests(&all[1..], 100).count(AlertKind::FunctionCodeScan),
            0
        );
        // The same codes spread over more than the window: no scan.
        let window_ms = Thresholds::default().scan_window_ns / MS;
        assert_eq!(
            requests(&all, window_ms / 2).count(AlertKind::FunctionCodeScan),
            0
        );
    }

    /// Distinct addresses are estimated (linear counting, a few percent
    /// near the threshold), so the two sides are a quarter of the
    /// threshold away from it.
    #[test]
    fn address_sweep_and_polling() {
        let n = Thresholds::default().address_scan_distinct as u16;
        for step in [1u16, 10, 125] {
            let sweep = |count: u16| -> Vec<_> {
                (0..count)
                    .map(|i| {
                        let r = Request::ReadHoldingRegisters {
                            addr: i * step,
                            qty: 10,
                        };
                        (r, 1)
                    })
                    .collect()
            };
            let above = sweep(n + n / 4);
            assert_eq!(
                requests(&above, 1).count(AlertKind::AddressScan),
                1,
                "step {step}"
            );
            let below = sweep(n - n / 4);
            assert_eq!(
                requests(&below, 1).count(AlertKind::AddressScan),
                0,
                "step {step}"
            );
        }
        // A poll list of 20 blocks read again and again is no sweep.
        let poll: Vec<_> = (0..2000u16)
            .map(|i| {
                (
                    Request::ReadHoldingRegisters {
                        addr: (i % 20) * 100,
                        qty: 10,
                    },
                    1,
                )
            })
            .collect();
        assert_eq!(requests(&poll, 1).count(AlertKind::AddressScan), 0);
    }

    #[test]
    fn unit_id_scan() {
        let n = Thresholds::default().unit_scan_distinct as u8;
        let r = Request::ReadHoldingRegisters { addr: 0, qty: 1 };
        let units: Vec<_> = (0..n).map(|u| (r, u)).collect();
        assert_eq!(requests(&units, 10).count(AlertKind::UnitIdScan), 1);
        assert_eq!(requests(&units[1..], 10).count(AlertKind::UnitIdScan), 0);
    }

    #[test]
    fn refusals_count_distinct_probes() {
        let t = Thresholds::default();
        let mut s = Scans::new(t);
        let mut out = Collected::default();
        // Illegal function for distinct codes.
        for fc in 0..t.fc_scan_refused as u8 {
            let r = Response::Exception {
                fc: 40 + fc,
                code: ILLEGAL_FUNCTION,
            };
            s.on_response(&resp(u64::from(fc) * MS, ep(1, 2), &r, None), &mut out);
        }
        assert_eq!(out.count(AlertKind::FunctionCodeScan), 1);
        // Illegal data address for distinct addresses, one fewer than needed.
        for i in 0..(t.address_scan_refused - 1) as u16 {
            let pending = PendingRequest::new(
                0,
                1,
                1,
                &Request::ReadCoils {
                    addr: i * 100,
                    qty: 1,
                },
            );
            let r = Response::Exception {
                fc: 1,
                code: ILLEGAL_DATA_ADDRESS,
            };
            s.on_response(&resp(MS, ep(1, 2), &r, Some(&pending)), &mut out);
        }
        assert_eq!(out.count(AlertKind::AddressScan), 0);
        let pending = PendingRequest::new(
            0,
            1,
            1,
            &Request::ReadCoils {
                addr: 60_000,
                qty: 1,
            },
        );
        let r = Response::Exception {
            fc: 1,
            code: ILLEGAL_DATA_ADDRESS,
        };
        s.on_response(&resp(MS, ep(1, 2), &r, Some(&pending)), &mut out);
        assert_eq!(out.count(AlertKind::AddressScan), 1);
    }

    /// A new window forgets the last one's refusals (their box is kept and
    /// cleared): refusals split over two windows raise nothing.
    #[test]
    fn refusals_of_a_past_window_do_not_count() {
        let t = Thresholds::default();
        let n = t.fc_scan_refused as u8;
        let mut s = Scans::new(t);
        let mut out = Collected::default();
        let mut refuse = |fc: u8, ts: u64, out: &mut Collected| {
            let r = Response::Exception {
                fc,
                code: ILLEGAL_FUNCTION,
            };
            s.on_response(&resp(ts, ep(1, 2), &r, None), out);
        };
        let later = t.scan_window_ns + 10 * MS;
        for fc in 0..n - 1 {
            refuse(40 + fc, u64::from(fc) * MS, &mut out);
        }
        refuse(40 + n - 1, later, &mut out);
        for fc in 0..n - 2 {
            refuse(40 + fc, later + u64::from(fc) * MS, &mut out);
        }
        assert_eq!(out.count(AlertKind::FunctionCodeScan), 0);
        refuse(40 + n - 2, later + 100 * MS, &mut out);
        assert_eq!(out.count(AlertKind::FunctionCodeScan), 1);
    }
}
