//! What is counted: one unit per Modbus transaction (a request and its
//! response, or either alone), so that a model judging ADUs, one judging
//! windows and rules raising alerts are measured on the same things. A
//! unit is flagged by a model when it flags either of its ADUs (per-ADU
//! models), a window of its pair holding its request (window models), or
//! an alert raised on either of its frames (rules). A frame that is
//! labelled an attack or carries an alert but holds no decodable ADU (a
//! malformed header) is a unit of its own.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use crate::alert::{AlertKind, Detail, EveEvent};
use crate::ml::models::{iforest_flags, ocsvm_flags};
use crate::modbus::record::AduRecord;

use super::labels::Labels;

/// The methods compared, in table order.
pub const METHODS: [&str; 6] = [
    "original Isolation Forest (per ADU)",
    "original One-Class SVM (per ADU)",
    "our Isolation Forest (per window)",
    "our One-Class SVM (per window)",
    "rules",
    "rules + our models",
];
pub const ORIGINAL_IF: usize = 0;
pub const ORIGINAL_OCSVM: usize = 1;
pub const WINDOW_IF: usize = 2;
pub const WINDOW_OCSVM: usize = 3;
pub const RULES: usize = 4;
pub const RULES_MODELS: usize = 5;

#[derive(Debug, Clone)]
struct Unit {
    master: IpAddr,
    slave: IpAddr,
    request: Option<u64>,
    response: Option<u64>,
    ts_ns: u64,
    exception: bool,
    flags: [bool; METHODS.len()],
}

impl Unit {
    fn frames(&self) -> Vec<u64> {
        self.request.into_iter().chain(self.response).collect()
    }

    fn flag(&mut self, m: usize) {
        self.flags[m] = true;
        if matches!(m, WINDOW_IF | WINDOW_OCSVM | RULES) {
            self.flags[RULES_MODELS] = true;
        }
    }
}

/// A request's connection, transaction id, unit id and frame.
type TxKey = (IpAddr, u16, IpAddr, u16, u16, u8, u64);

/// One capture's units.
#[derive(Debug, Default)]
pub struct Units {
    units: Vec<Unit>,
    open: HashMap<TxKey, usize>,
}

/// Confusion counts of one method.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub tp: u64,
    pub fp: u64,
    pub fn_: u64,
    pub tn: u64,
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        self.tp += o.tp;
        self.fp += o.fp;
        self.fn_ += o.fn_;
        self.tn += o.tn;
    }

    pub fn precision(&self) -> f64 {
        ratio(self.tp, self.tp + self.fp)
    }

    pub fn recall(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_)
    }

    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r > 0.0 {
            2.0 * p * r / (p + r)
        } else {
            0.0
        }
    }
}

/// 0 when nothing was counted (no flag raised: precision is then
/// undefined, and 0 says "found nothing").
fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

impl Units {
    /// One decoded ADU, with the per-ADU models' verdicts on it.
    pub fn add_record(&mut self, r: &AduRecord, original: [bool; 2]) {
        let i = if r.is_request {
            let i = self.units.len();
            self.units.push(Unit {
                master: r.src,
                slave: r.dst,
                request: Some(r.frame),
                response: None,
                ts_ns: r.ts_ns,
                exception: false,
                flags: Default::default(),
            });
            let key = (r.src, r.src_port, r.dst, r.dst_port, r.tid, r.unit, r.frame);
            self.open.insert(key, i);
            i
        } else {
            let key = r
                .request_frame
                .map(|f| (r.dst, r.dst_port, r.src, r.src_port, r.tid, r.unit, f));
            match key.and_then(|k| self.open.remove(&k)) {
                Some(i) => i,
                None => {
                    self.units.push(Unit {
                        master: r.dst,
                        slave: r.src,
                        request: None,
                        response: None,
                        ts_ns: r.ts_ns,
                        exception: false,
                        flags: Default::default(),
                    });
                    self.units.len() - 1
                }
            }
        };
        let Some(u) = self.units.get_mut(i) else {
            return;
        };
        if !r.is_request {
            u.response = Some(r.frame);
            u.exception = r.exception_code.is_some();
        }
        for (m, flagged) in [ORIGINAL_IF, ORIGINAL_OCSVM].into_iter().zip(original) {
            if flagged {
                u.flag(m);
            }
        }
    }

    /// The alerts of the capture's detection pass (one line per event).
    pub fn add_alerts(&mut self, alerts: &[EveEvent]) {
        let mut by_frame: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
        for (i, u) in self.units.iter().enumerate() {
            for f in u.frames() {
                by_frame.entry(f).or_default().push(i);
            }
        }
        for ev in alerts {
            let a = &ev.alert;
            if let Detail::Ml {
                iforest_score,
                iforest_threshold,
                ocsvm_decision,
                ocsvm_threshold,
                window_start_ns,
                ..
            } = a.detail
            {
                let methods = [
                    (WINDOW_IF, iforest_flags(iforest_score, iforest_threshold)),
                    (WINDOW_OCSVM, ocsvm_flags(ocsvm_decision, ocsvm_threshold)),
                ];
                for u in self.units.iter_mut().filter(|u| {
                    u.master == a.src
                        && u.slave == a.dst
                        && u.request.is_some()
                        && (window_start_ns..=a.ts_ns).contains(&u.ts_ns)
                }) {
                    for (m, flagged) in methods {
                        if flagged {
                            u.flag(m);
                        }
                    }
                }
                continue;
            }
            let (master, slave) = match a.stamp {
                Some(s) if !s.to_server => (a.dst, a.src),
                _ => (a.src, a.dst),
            };
            if ev.events > 1 {
                // A rule that recognises an attack after several events
                // (a flood's run, a burst of exceptions) raises them at
                // once: they are the latest such transactions.
                let burst = a.kind == AlertKind::ExceptionBurst;
                let mut left = ev.events;
                for u in self.units.iter_mut().rev() {
                    if left == 0 {
                        break;
                    }
                    let its = if burst {
                        u.slave == slave && u.exception
                    } else {
                        u.master == master && u.slave == slave && u.request.is_some()
                    };
                    if its && u.ts_ns <= a.ts_ns {
                        u.flag(RULES);
                        left -= 1;
                    }
                }
            }
            let Some(frame) = a.stamp.map(|s| s.frame) else {
                continue;
            };
            match by_frame.get(&frame) {
                Some(units) => {
                    for &i in units {
                        if let Some(u) = self.units.get_mut(i) {
                            u.flag(RULES);
                        }
                    }
                }
                None => {
                    let mut u = Unit {
                        master,
                        slave,
                        request: Some(frame),
                        response: None,
                        ts_ns: a.ts_ns,
                        exception: false,
                        flags: Default::default(),
                    };
                    u.flag(RULES);
                    by_frame.insert(frame, vec![self.units.len()]);
                    self.units.push(u);
                }
            }
        }
    }

    /// Confusion counts of every method against `labels`, and how many
    /// units were attacks (normal units with a tolerated alert's frame are
    /// left out: flagging them is neither required nor wrong).
    pub fn score(&self, labels: &Labels) -> ([Counts; METHODS.len()], u64) {
        let mut counts = [Counts::default(); METHODS.len()];
        let mut attacks = 0;
        for u in &self.units {
            let frames = u.frames();
            let attack = labels.attack(&frames, u.master, u.slave, u.request);
            if !attack && labels.tolerated(&frames) {
                continue;
            }
            attacks += u64::from(attack);
            for (c, &flagged) in counts.iter_mut().zip(&u.flags) {
                match (attack, flagged) {
                    (true, true) => c.tp += 1,
                    (true, false) => c.fn_ += 1,
                    (false, true) => c.fp += 1,
                    (false, false) => c.tn += 1,
                }
            }
        }
        // Attack frames in no unit (nobody decoded or flagged them) are
        // missed by every method.
        let covered: std::collections::BTreeSet<u64> =
            self.units.iter().flat_map(Unit::frames).collect();
        for f in &labels.attack_frames {
            if !covered.contains(f) {
                attacks += 1;
                for c in &mut counts {
                    c.fn_ += 1;
                }
            }
        }
        (counts, attacks)
    }
}
