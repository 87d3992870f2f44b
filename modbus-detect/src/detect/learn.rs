//! Baseline mode (`--baseline-mode`): what a shard learns from the ADUs
//! instead of running the rules — the values each register takes (from
//! writes and read responses) and each master-slave pair's windows of
//! traffic, the training samples of the ML models. The inventory (pairs,
//! function codes, units, timing) is learnt by the shard as in detection.
//!
//! [`train`] turns the samples of every shard into the baseline's models.

use std::net::IpAddr;

use crate::config::baseline::Baseline;
use crate::config::limits::modicon_number;
use crate::ml::features::Features;
use crate::ml::models::Models;
use crate::modbus::pdu::read_values;

use super::ml::window::Closed;
use super::ml::PairWindows;
use super::{RequestCtx, ResponseCtx};

/// A window of normal traffic, for training.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub master: IpAddr,
    pub slave: IpAddr,
    pub start_ns: u64,
    pub features: Features,
}

/// What one shard learnt.
#[derive(Debug, Default)]
pub struct Learned {
    /// Register values (the baseline's `registers`).
    pub registers: Baseline,
    /// Training windows for the ML models.
    pub samples: Vec<Sample>,
    /// Register values of registers left out (the bound was reached).
    pub registers_dropped: u64,
    /// Training windows left out (the bound was reached).
    pub windows_dropped: u64,
}

/// How much one shard learns at most: a capture built to make the baseline
/// huge (writes to every coil of every unit id) meets these, and what is
/// left out is counted.
#[derive(Debug, Clone, Copy)]
pub struct LearnBounds {
    pub registers: usize,
    pub windows: usize,
}

/// A shard's learners.
#[derive(Debug)]
pub struct Learners {
    learned: Learned,
    windows: PairWindows,
    bounds: LearnBounds,
}

/// Keep a closed window as a training sample, within the bound.
fn keep(learned: &mut Learned, cap: usize, master: IpAddr, slave: IpAddr, c: &Closed) {
    if learned.samples.len() < cap {
        learned.samples.push(sample(master, slave, c));
    } else {
        learned.windows_dropped += 1;
    }
}

impl Learners {
    /// Learn windows of `window_ns` (`--ml-window`), within `bounds`.
    pub fn new(window_ns: u64, bounds: LearnBounds) -> Learners {
        Learners {
            learned: Learned::default(),
            windows: PairWindows::new(window_ns),
            bounds,
        }
    }

    fn register(&mut self, slave: IpAddr, unit: u8, reg: u32, value: u16) {
        let cap = self.bounds.registers;
        let learned = &mut self.learned;
        let kept = learned
            .registers
            .record_register(cap, slave, unit, reg, f64::from(value));
        if !kept {
            learned.registers_dropped += 1;
        }
    }

    pub fn on_request(&mut self, ctx: &RequestCtx<'_>) {
        for (table, addr, value) in ctx.req.written_values() {
            self.register(ctx.ep.slave, ctx.unit, modicon_number(table, addr), value);
        }
        let (learned, cap) = (&mut self.learned, self.bounds.windows);
        self.windows
            .on_request(ctx, |ep, c| keep(learned, cap, ep.master, ep.slave, c));
    }

    pub fn on_response(&mut self, ctx: &ResponseCtx<'_>) {
        self.windows.on_response(ctx);
        if let Some(read) = ctx.request.and_then(|r| r.read_request()) {
            for (table, addr, value) in read_values(&read, ctx.resp) {
                self.register(ctx.ep.slave, ctx.unit, modicon_number(table, addr), value);
            }
        }
    }

    #[inline]
    pub fn on_tick(&mut self, now_ns: u64) {
        let (learned, cap) = (&mut self.learned, self.bounds.windows);
        self.windows
            .tick(now_ns, |ep, c| keep(learned, cap, ep.master, ep.slave, c));
    }

    /// End of input: the windows still open are samples too.
    pub fn finish(mut self) -> Learned {
        let (learned, cap) = (&mut self.learned, self.bounds.windows);
        self.windows
            .finish(|ep, c| keep(learned, cap, ep.master, ep.slave, c));
        self.learned
    }
}

fn sample(master: IpAddr, slave: IpAddr, c: &Closed) -> Sample {
    Sample {
        master,
        slave,
        start_ns: c.start_ns,
        features: c.features,
    }
}

/// Train the ML models of `baseline` on the windows every shard collected,
/// in a fixed order (so that any number of shards gives the same models);
/// `false` when there are too few windows ([`crate::ml::models::MIN_WINDOWS`]).
pub fn train(baseline: &mut Baseline, samples: &mut [Sample], window_s: f64) -> bool {
    samples.sort_by(|a, b| {
        (a.master, a.slave, a.start_ns)
            .cmp(&(b.master, b.slave, b.start_ns))
            .then(
                a.features
                    .iter()
                    .map(|x| x.to_bits())
                    .cmp(b.features.iter().map(|x| x.to_bits())),
            )
    });
    let features: Vec<Features> = samples.iter().map(|s| s.features).collect();
    baseline.set_models(Models::train(&features, window_s));
    baseline.models().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testutil::{ep, req};
    use crate::modbus::pdu::Request;

    const S: u64 = 1_000_000_000;
    const BOUNDS: LearnBounds = LearnBounds {
        registers: 1 << 20,
        windows: 1 << 20,
    };

    #[test]
    fn a_quiet_pairs_window_closes_when_the_shard_clock_passes_its_end() {
        let mut pairs = Baseline::default();
        let (a, b) = (ep(2, 1), ep(3, 1));
        let ida = pairs.add_pair(a.master, a.slave);
        let idb = pairs.add_pair(b.master, b.slave);
        let read = Request::ReadHoldingRegisters { addr: 0, qty: 4 };
        let mut l = Learners::new(5 * S, BOUNDS);
        for i in 0..10 {
            let ts = i * S / 10;
            l.on_request(&RequestCtx {
                pair: Some(ida),
                ..req(ts, a, &read)
            });
            l.on_tick(ts);
        }
        // Pair a falls silent; pair b's traffic moves the clock on.
        for t in [3 * S, 4 * S, 5 * S, 6 * S] {
            l.on_request(&RequestCtx {
                pair: Some(idb),
                ..req(t, b, &read)
            });
            l.on_tick(t);
        }
        assert_eq!(l.learned.samples.len(), 1, "a's window closed by the sweep");
        assert_eq!(l.learned.samples[0].master, a.master);
        assert!((l.learned.samples[0].features[0] - 10f64.ln_1p()).abs() < 1e-12);
        // b's window (3 s .. 8 s) is still open; the end of input closes it.
        let learned = l.finish();
        assert_eq!(learned.samples.len(), 2);
        assert_eq!(learned.samples[1].master, b.master);
    }

    #[test]
    fn written_values_are_learnt_and_a_pair_left_out_has_no_window() {
        let mut l = Learners::new(5 * S, BOUNDS);
        let write = Request::WriteSingleRegister { addr: 9, value: 42 };
        l.on_request(&req(0, ep(2, 1), &write));
        let learned = l.finish();
        assert!(learned.samples.is_empty(), "no inventory entry, no window");
        let slave = ep(2, 1).slave;
        let stats = learned.registers.get_register_stats(slave, 1, 40010);
        assert_eq!(stats.map(|s| (s.count, s.mean)), Some((1, 42.0)));
    }
}
