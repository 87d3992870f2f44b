//! The ML detector (`--ml`): each master-slave pair's traffic cut into
//! windows ([`window`]), each closed window judged by the baseline's models
//! (`ml::models`), `ML_ANOMALY` raised for a window they find unlike the
//! baseline's. In baseline mode the same windows are training samples
//! (`detect::learn`).
//!
//! Pairs are found by the inventory's `PairId`, which the connection
//! already remembers, so a request costs no lookup here; a pair the
//! inventory left out (its bound is full) has no window either, and is
//! counted there (`inventory_pairs_dropped`).

pub mod window;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use crate::config::addrs::AddrSet;

use crate::alert::{AlertKind, Detail, Severity};
use crate::ml::models::Models;

use super::{AlertSink, Endpoints, RequestCtx, ResponseCtx};
use window::{Closed, Window};

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

#[derive(Debug, Clone)]
struct Slot {
    window: Window,
    /// The connection of the pair's last request (the alert's endpoints).
    ep: Endpoints,
}

/// How often (in shard time) windows past their end are looked for.
const SWEEP_EVERY_NS: u64 = 1_000_000_000;

/// One open window per master-slave pair of a shard, indexed by the inventory's `PairId`.
#[derive(Debug)]
pub struct PairWindows {
    window_ns: u64,
    slots: Vec<Option<Slot>>,
    /// Shard time of the next sweep for windows past their end.
    next_sweep_ns: u64,
    /// Windows a sweep closed (kept for its capacity: no allocation per sweep).
    swept: Vec<(Endpoints, Closed)>,
}

impl PairWindows {
    pub fn new(window_ns: u64) -> PairWindows {
        PairWindows {
            window_ns: window_ns.max(1),
            slots: Vec::new(),
            next_sweep_ns: 0,
            swept: Vec::new(),
        }
    }

    /// A request of the context's pair; `closed` gets the window it closes.
    pub fn on_request(&mut self, ctx: &RequestCtx<'_>, closed: impl FnOnce(&Endpoints, &Closed)) {
        let Some(id) = ctx.pair else {
            return;
        };
        let i = id.index();
        if self.slots.len() <= i {
            self.slots.resize(i + 1, None);
        }
        let Some(entry) = self.slots.get_mut(i) else {
            return;
        };
        let slot = entry.get_or_insert_with(|| Slot {
            window: Window::default(),
            ep: ctx.ep,
        });
        if let Some(c) = slot
            .window
            .on_request(self.window_ns, ctx.ts_ns, ctx.unit, ctx.req)
        {
            closed(&slot.ep, &c);
        }
        slot.ep = ctx.ep;
    }

    /// A response of the context's pair.
    pub fn on_response(&mut self, ctx: &ResponseCtx<'_>) {
        let Some(id) = ctx.pair else {
            return;
        };
        if let Some(Some(slot)) = self.slots.get_mut(id.index()) {
            let exception = matches!(ctx.resp, crate::modbus::pdu::Response::Exception { .. });
            slot.window.on_response(exception);
        }
    }

    /// The shard's clock reads `now_ns`: about once a second, close the
    /// windows of pairs that went quiet past their end, so that a burst
    /// followed by silence is judged when its window ends, not when the pair
    /// speaks again (live capture) or the input ends.
    #[inline]
    pub fn tick(&mut self, now_ns: u64, closed: impl FnMut(&Endpoints, &Closed)) {
        if self.sweep_due(now_ns) {
            self.next_sweep_ns = now_ns.saturating_add(SWEEP_EVERY_NS);
            self.sweep(now_ns, closed);
        }
    }

    /// Is it time to look for windows past their end? (Every frame asks:
    /// the answer is nearly always no, and costs one comparison.)
    #[inline]
    pub fn sweep_due(&self, now_ns: u64) -> bool {
        now_ns >= self.next_sweep_ns
    }

    #[cold]
    fn sweep(&mut self, now_ns: u64, mut closed: impl FnMut(&Endpoints, &Closed)) {
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
            closed(&ep, &c);
        }
        self.swept = swept;
    }

    /// End of input: close every open window.
    pub fn finish(&mut self, mut closed: impl FnMut(&Endpoints, &Closed)) {
        let slots = std::mem::take(&mut self.slots);
        for slot in slots.into_iter().flatten() {
            if let Some(c) = slot.window.close(self.window_ns) {
                closed(&slot.ep, &c);
            }
        }
    }
}

/// The original pipeline's threat labels for an anomalous window, first
/// match wins, with one of ours where it says more: writes in the window,
/// a master unknown to the baseline or the allow list, requests closer
/// than 5 ms, diagnostics (ours), or none of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreatLabel {
    StopCommand,
    ForeignIp,
    Dos,
    Reconnaissance,
    Unknown,
}

/// The original's DoS label: a gap under 5 ms between two requests.
const DOS_GAP_NS: u64 = 5_000_000;

impl ThreatLabel {
    /// The label's text (the original's own for its four).
    pub fn name(self) -> &'static str {
        match self {
            ThreatLabel::StopCommand => "CRITICAL: UNAUTHORIZED STOP COMMAND",
            ThreatLabel::ForeignIp => "FOREIGN IP ACCESS",
            ThreatLabel::Dos => "DoS ATTACK (High Volume)",
            ThreatLabel::Reconnaissance => "RECONNAISSANCE (Diagnostics)",
            ThreatLabel::Unknown => "Unknown Anomaly (Statistical Deviation)",
        }
    }

    pub fn of(c: &Closed, master_known: bool) -> ThreatLabel {
        if c.writes > 0 {
            ThreatLabel::StopCommand
        } else if !master_known {
            ThreatLabel::ForeignIp
        } else if c.min_gap_ns.is_some_and(|g| g < DOS_GAP_NS) {
            ThreatLabel::Dos
        } else if c.diagnostics > 0 {
            ThreatLabel::Reconnaissance
        } else {
            ThreatLabel::Unknown
        }
    }
}

/// The masters a label counts as known: on the allow list when there is
/// one, and in the baseline the models were learned with.
#[derive(Debug, Default)]
pub struct KnownMasters {
    pub allowed: Option<AddrSet>,
    pub baseline: BTreeSet<IpAddr>,
}

impl KnownMasters {
    /// The masters the settings know: the allow list's and the baseline's.
    pub fn of(cfg: &crate::config::DetectConfig) -> KnownMasters {
        KnownMasters {
            allowed: cfg.authorized_masters.clone(),
            baseline: cfg
                .baseline
                .as_ref()
                .map(|b| b.masters())
                .unwrap_or_default(),
        }
    }

    fn knows(&self, master: IpAddr) -> bool {
        self.allowed.as_ref().is_none_or(|a| a.contains(master)) && self.baseline.contains(&master)
    }
}

/// Judges every closed window with the baseline's models.
#[derive(Debug)]
pub struct MlJudge {
    windows: PairWindows,
    models: Arc<Models>,
    known: KnownMasters,
    pub stats: MlStats,
}

impl MlJudge {
    /// Judge windows with `models` (over the window length they learned).
    pub fn new(models: Arc<Models>, known: KnownMasters) -> MlJudge {
        MlJudge {
            windows: PairWindows::new(models.window_ns()),
            models,
            known,
            stats: MlStats::default(),
        }
    }

    /// Whether these are the models it judges with.
    pub fn judges_with(&self, models: &Arc<Models>) -> bool {
        Arc::ptr_eq(&self.models, models)
    }

    /// Masters it takes as known from now on (a new allow list).
    pub fn set_known(&mut self, known: KnownMasters) {
        self.known = known;
    }

    pub fn on_request(&mut self, ctx: &RequestCtx<'_>, out: &mut impl AlertSink) {
        let (models, known, stats) = (&self.models, &self.known, &mut self.stats);
        self.windows
            .on_request(ctx, |ep, c| judge(models, known, stats, ep, c, out));
    }

    pub fn on_response(&mut self, ctx: &ResponseCtx<'_>) {
        self.windows.on_response(ctx);
    }

    #[inline]
    pub fn on_tick(&mut self, now_ns: u64, out: &mut impl AlertSink) {
        if !self.windows.sweep_due(now_ns) {
            return;
        }
        let (models, known, stats) = (&self.models, &self.known, &mut self.stats);
        self.windows
            .tick(now_ns, |ep, c| judge(models, known, stats, ep, c, out));
    }

    /// End of input: judge the windows still open.
    pub fn finish(&mut self, out: &mut impl AlertSink) {
        let (models, known, stats) = (&self.models, &self.known, &mut self.stats);
        self.windows
            .finish(|ep, c| judge(models, known, stats, ep, c, out));
    }
}

/// Judge one closed window; raise `ML_ANOMALY` when a model flags it (HIGH
/// when both do).
fn judge(
    models: &Models,
    known: &KnownMasters,
    stats: &mut MlStats,
    ep: &Endpoints,
    c: &Closed,
    out: &mut impl AlertSink,
) {
    stats.windows += 1;
    let Some(j) = models.anomaly(&c.features) else {
        return;
    };
    stats.anomalous += 1;
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
        label: ThreatLabel::of(c, known.knows(ep.master)),
    };
    out.raise(alert, 1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed(writes: u32, diagnostics: u32, min_gap_ns: Option<u64>) -> Closed {
        Closed {
            start_ns: 0,
            end_ns: 0,
            requests: 10,
            features: [0.0; crate::ml::features::DIMS],
            writes,
            diagnostics,
            min_gap_ns,
        }
    }

    /// The original's order: writes, foreign master, DoS; then ours.
    #[test]
    fn threat_labels_first_match_wins() {
        let fast = Some(1_000_000);
        assert_eq!(
            ThreatLabel::of(&closed(1, 1, fast), false),
            ThreatLabel::StopCommand
        );
        assert_eq!(
            ThreatLabel::of(&closed(0, 1, fast), false),
            ThreatLabel::ForeignIp
        );
        assert_eq!(ThreatLabel::of(&closed(0, 1, fast), true), ThreatLabel::Dos);
        assert_eq!(
            ThreatLabel::of(&closed(0, 0, Some(5_000_000)), true),
            ThreatLabel::Unknown
        );
        assert_eq!(
            ThreatLabel::of(&closed(0, 2, None), true),
            ThreatLabel::Reconnaissance
        );
        let known = KnownMasters {
            allowed: None,
            baseline: [IpAddr::from([10, 0, 0, 1])].into(),
        };
        assert!(known.knows(IpAddr::from([10, 0, 0, 1])));
        assert!(!known.knows(IpAddr::from([10, 0, 0, 2])));
    }
}
