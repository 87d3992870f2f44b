//! A shard's ML state: one open window per master-slave pair, and what
//! becomes of a window when it closes — a training sample in baseline
//! mode, a judgement (and maybe an `ML_ANOMALY` alert) with `--ml`.
//!
//! Pairs are found by the inventory's [`PairId`], which the connection
//! already remembers, so a request costs no lookup here; a pair the
//! inventory left out (its bound is full) has no window either, and is
//! counted there (`inventory_pairs_dropped`).

use std::net::IpAddr;
use std::sync::Arc;

use crate::alert::{AlertKind, Detail, Severity};
use crate::detect::baseline::PairId;
use crate::detect::{AlertSink, Endpoints};
use crate::modbus::pdu::Request;

use super::models::Models;
use super::window::{Closed, Features, Window};

/// A window of normal traffic, for training.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub master: IpAddr,
    pub slave: IpAddr,
    pub start_ns: u64,
    pub features: Features,
}

/// Windows judged by one shard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MlStats {
    pub windows: u64,
    pub anomalous: u64,
}

impl MlStats {
    pub fn merge(&mut self, o: &MlStats) {
        self.windows += o.windows;
        self.anomalous += o.anomalous;
    }
}

/// What to do with closed windows.
#[derive(Debug)]
enum Use {
    /// Neither learning nor `--ml`: no window is kept at all.
    Off,
    Learn(Vec<Sample>),
    Judge(Arc<Models>),
}

#[derive(Debug, Clone)]
struct Slot {
    window: Window,
    /// The connection of the pair's last request (the alert's endpoints).
    ep: Endpoints,
}

/// How often (in shard time) windows past their end are looked for.
const SWEEP_EVERY_NS: u64 = 1_000_000_000;

#[derive(Debug)]
pub struct Monitor {
    window_ns: u64,
    slots: Vec<Option<Slot>>,
    /// Shard time of the next sweep for windows past their end.
    next_sweep_ns: u64,
    /// Windows a sweep closed (kept for its capacity: no allocation per sweep).
    swept: Vec<(Endpoints, Closed)>,
    what: Use,
    pub stats: MlStats,
}

impl Monitor {
    /// Off: no state, no work per request.
    pub fn off() -> Monitor {
        Monitor {
            window_ns: 0,
            slots: Vec::new(),
            next_sweep_ns: 0,
            swept: Vec::new(),
            what: Use::Off,
            stats: MlStats::default(),
        }
    }

    /// Collect training windows of `window_ns`.
    pub fn learning(window_ns: u64) -> Monitor {
        Monitor {
            window_ns: window_ns.max(1),
            what: Use::Learn(Vec::new()),
            ..Monitor::off()
        }
    }

    /// Judge windows with `models` (over the window length they learned).
    pub fn judging(models: Arc<Models>) -> Monitor {
        Monitor {
            window_ns: models.window_ns().max(1),
            what: Use::Judge(models),
            ..Monitor::off()
        }
    }

    #[inline]
    pub fn is_on(&self) -> bool {
        !matches!(self.what, Use::Off)
    }

    /// A request of pair `id` on the connection `ep`.
    pub fn on_request(
        &mut self,
        id: PairId,
        ep: &Endpoints,
        ts_ns: u64,
        unit: u8,
        req: &Request<'_>,
        out: &mut impl AlertSink,
    ) {
        if !self.is_on() {
            return;
        }
        let i = id.index();
        if self.slots.len() <= i {
            self.slots.resize(i + 1, None);
        }
        let Some(entry) = self.slots.get_mut(i) else {
            return;
        };
        let slot = entry.get_or_insert_with(|| Slot {
            window: Window::default(),
            ep: *ep,
        });
        let closed = slot.window.on_request(self.window_ns, ts_ns, unit, req);
        let done = closed.map(|c| (c, slot.ep));
        slot.ep = *ep;
        if let Some((c, ep)) = done {
            self.window_closed(&ep, &c, out);
        }
    }

    /// The shard's clock reads `now_ns`: about once a second, close the
    /// windows of pairs that went quiet past their end, so that a burst
    /// followed by silence is judged when its window ends, not when the pair
    /// speaks again (live capture) or the input ends.
    #[inline]
    pub fn tick(&mut self, now_ns: u64, out: &mut impl AlertSink) {
        if now_ns < self.next_sweep_ns || !self.is_on() {
            return;
        }
        self.next_sweep_ns = now_ns.saturating_add(SWEEP_EVERY_NS);
        self.sweep(now_ns, out);
    }

    #[cold]
    fn sweep(&mut self, now_ns: u64, out: &mut impl AlertSink) {
        let window_ns = self.window_ns;
        let mut swept = std::mem::take(&mut self.swept);
        for slot in self.slots.iter_mut().flatten() {
            if slot.window.due(window_ns, now_ns) {
                if let Some(c) = slot.window.close(window_ns) {
                    swept.push((slot.ep, c));
                }
                slot.window = Window::default();
            }
        }
        for (ep, c) in swept.drain(..) {
            self.window_closed(&ep, &c, out);
        }
        self.swept = swept;
    }

    /// A response of pair `id`.
    pub fn on_response(&mut self, id: PairId, exception: bool) {
        if let Some(Some(slot)) = self.slots.get_mut(id.index()) {
            slot.window.on_response(exception);
        }
    }

    /// End of input: close every open window.
    pub fn finish(&mut self, out: &mut impl AlertSink) {
        let slots = std::mem::take(&mut self.slots);
        for slot in slots.into_iter().flatten() {
            if let Some(c) = slot.window.close(self.window_ns) {
                self.window_closed(&slot.ep, &c, out);
            }
        }
    }

    /// The training windows collected (baseline mode).
    pub fn take_samples(&mut self) -> Vec<Sample> {
        match &mut self.what {
            Use::Learn(samples) => std::mem::take(samples),
            _ => Vec::new(),
        }
    }

    fn window_closed(&mut self, ep: &Endpoints, c: &Closed, out: &mut impl AlertSink) {
        match &mut self.what {
            Use::Off => {}
            Use::Learn(samples) => samples.push(Sample {
                master: ep.master,
                slave: ep.slave,
                start_ns: c.start_ns,
                features: c.features,
            }),
            Use::Judge(models) => {
                let j = models.judge(&c.features);
                self.stats.windows += 1;
                if !j.anomalous() {
                    return;
                }
                self.stats.anomalous += 1;
                let severity = if j.iforest_flags && j.ocsvm_flags {
                    Severity::High
                } else {
                    Severity::Medium
                };
                let mut alert = ep.from_master(AlertKind::MlAnomaly, severity, c.end_ns);
                alert.detail = Detail::Ml {
                    iforest_score: j.iforest_score,
                    iforest_threshold: models.iforest_threshold,
                    ocsvm_decision: j.ocsvm_decision,
                    ocsvm_threshold: models.ocsvm_threshold,
                    feature: j.feature as u8,
                    z: j.z,
                    window_start_ns: c.start_ns,
                    requests: c.requests,
                };
                out.raise(alert, 1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Alert;
    use crate::detect::baseline::Baseline;

    const S: u64 = 1_000_000_000;

    struct Sink(Vec<Alert>);

    impl AlertSink for Sink {
        fn raise(&mut self, alert: Alert, _count: u64) {
            self.0.push(alert);
        }
    }

    fn ep(master: [u8; 4]) -> Endpoints {
        Endpoints {
            master: IpAddr::from(master),
            master_port: 40000,
            slave: IpAddr::from([10, 0, 0, 1]),
            slave_port: 502,
        }
    }

    #[test]
    fn a_quiet_pairs_window_closes_when_the_shard_clock_passes_its_end() {
        let mut pairs = Baseline::default();
        let (a, b) = (ep([10, 0, 0, 2]), ep([10, 0, 0, 3]));
        let ida = pairs.add_pair(a.master, a.slave);
        let idb = pairs.add_pair(b.master, b.slave);
        let req = Request::ReadHoldingRegisters { addr: 0, qty: 4 };
        let mut m = Monitor::learning(5 * S);
        let mut out = Sink(Vec::new());
        for i in 0..10 {
            m.on_request(ida, &a, i * S / 10, 1, &req, &mut out);
            m.tick(i * S / 10, &mut out);
        }
        // Pair a falls silent; pair b's traffic moves the clock on.
        for t in [3 * S, 4 * S, 5 * S, 6 * S] {
            m.on_request(idb, &b, t, 1, &req, &mut out);
            m.tick(t, &mut out);
        }
        let samples = m.take_samples();
        assert_eq!(samples.len(), 1, "a's window closed by the sweep");
        assert_eq!(samples[0].master, a.master);
        assert!((samples[0].features[0] - 10f64.ln_1p()).abs() < 1e-12);
        // b's window (3 s .. 8 s) is still open; the end of input closes it.
        m.finish(&mut out);
        let samples = m.take_samples();
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0].master, b.master);
        assert!(out.0.is_empty(), "learning raises nothing");
    }

    #[test]
    fn an_off_monitor_keeps_nothing() {
        let mut pairs = Baseline::default();
        let a = ep([10, 0, 0, 2]);
        let id = pairs.add_pair(a.master, a.slave);
        let req = Request::ReadHoldingRegisters { addr: 0, qty: 4 };
        let mut m = Monitor::off();
        let mut out = Sink(Vec::new());
        assert!(!m.is_on());
        m.on_request(id, &a, 0, 1, &req, &mut out);
        m.tick(100 * S, &mut out);
        m.finish(&mut out);
        assert!(m.take_samples().is_empty());
        assert_eq!(m.stats, MlStats::default());
        assert!(out.0.is_empty());
        assert!(m.slots.is_empty(), "no window kept");
    }
}
