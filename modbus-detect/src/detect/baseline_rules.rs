//! NEW_FUNCTION_CODE and TIMING_ANOMALY: departures from the learned baseline.
//!
//! Both are on only when a baseline is loaded. TIMING_ANOMALY compares the
//! interval between consecutive requests of a master-slave pair (over all its
//! connections) with the pair's baseline mean, in population standard
//! deviations; it needs `timing_min_samples` baseline intervals, because a
//! mean and deviation from a handful of samples flag normal jitter.

use std::sync::Arc;

use super::{AlertSink, Endpoints, PairMap, RequestCtx, RULE_STATE_CAPACITY};
use crate::alert::{AlertKind, Detail, Severity};
use crate::config::baseline::{Baseline, PairId};
use crate::config::Thresholds;

pub struct BaselineRules {
    baseline: Option<Arc<Baseline>>,
    thresholds: Thresholds,
    /// Capture time of the last request per (master, slave).
    last_request: PairMap<u64>,
}

impl BaselineRules {
    pub fn new(baseline: Option<Arc<Baseline>>, thresholds: Thresholds) -> Self {
        BaselineRules {
            baseline,
            thresholds,
            last_request: PairMap::new(RULE_STATE_CAPACITY),
        }
    }

    pub fn evicted(&self) -> u64 {
        self.last_request.evicted()
    }

    /// A new baseline and thresholds (new settings); the last request
    /// times stay (they are the traffic's, not the baseline's).
    pub fn set(&mut self, baseline: Option<Arc<Baseline>>, thresholds: Thresholds) {
        self.baseline = baseline;
        self.thresholds = thresholds;
    }

    /// The pair's place in the baseline (`None`: not in it, or no baseline).
    pub fn pair_id(&self, ep: &Endpoints) -> Option<PairId> {
        self.baseline.as_ref()?.pair_id(ep.master, ep.slave)
    }

    pub fn on_request(&mut self, ctx: &RequestCtx<'_>, out: &mut impl AlertSink) {
        // Borrowed, not Arc-cloned per request (an atomic increment and
        // decrement each time).
        let BaselineRules {
            baseline,
            thresholds,
            last_request,
        } = self;
        let Some(baseline) = baseline.as_deref() else {
            return;
        };
        let (master, slave) = (ctx.ep.master, ctx.ep.slave);
        let fc = ctx.req.function_code();
        let pair = ctx
            .facts
            .baseline
            .unwrap_or_else(|| baseline.pair_id(master, slave));
        let profile = pair.and_then(|id| baseline.pair_profile(id));
        let known = profile.map(|p| &p.function_codes);
        if !known.is_some_and(|fcs| fcs.contains(fc)) {
            let mut alert = ctx.alert(AlertKind::NewFunctionCode, Severity::High);
            alert.detail = Detail::NewFunctionCode {
                pair_in_baseline: known.is_some(),
            };
            out.raise(alert, 1);
        }
        let mut first = false;
        let last = last_request.get_or_insert_with(ctx.pair, (master, slave), || {
            first = true;
            ctx.ts_ns
        });
        let interval = ctx.ts_ns.checked_sub(*last);
        *last = ctx.ts_ns;
        // The first request of a pair, or a clock that stepped back: no
        // interval to judge (a step back is no 0 s interval).
        let Some(interval_ns) = interval.filter(|_| !first) else {
            return;
        };
        let Some(stats) = profile.map(|p| &p.timing) else {
            return;
        };
        if stats.count < thresholds.timing_min_samples {
            return;
        }
        let std = stats.std().max(thresholds.timing_min_std_ns as f64 / 1e9);
        let interval_s = interval_ns as f64 / 1e9;
        let sigmas = (interval_s - stats.mean).abs() / std;
        if sigmas > thresholds.timing_sigma {
            let mut alert = ctx.alert(AlertKind::TimingAnomaly, Severity::Medium);
            alert.detail = Detail::Timing {
                interval_ns,
                mean_s: stats.mean,
                std_s: stats.std(),
                sigmas,
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

    const MS: u64 = 1_000_000;

    /// Baseline: master .20 polls slave .10 with FC 3 every 44 +- 8 ms.
    fn learned(samples: u64) -> Arc<Baseline> {
        let mut b = Baseline::default();
        let e = ep(20, 10);
        let mut t = 0;
        for i in 0..=samples {
            b.record(e.master, e.slave, 1, 3, t);
            t += 44 * MS + (i % 3) * 8 * MS - 8 * MS;
        }
        Arc::new(b)
    }

    fn run(
        rules: &mut BaselineRules,
        times: &[u64],
        r: &Request<'_>,
        e: crate::detect::Endpoints,
    ) -> Collected {
        let mut out = Collected::default();
        for t in times {
            rules.on_request(&req(*t, e, r), &mut out);
        }
        out
    }

    #[test]
    fn new_function_code_for_known_and_unknown_pairs() {
        let mut r = BaselineRules::new(Some(learned(100)), Thresholds::default());
        let read = Request::ReadHoldingRegisters { addr: 0, qty: 1 };
        let write = Request::WriteSingleRegister { addr: 0, value: 1 };
        assert_eq!(
            run(&mut r, &[0], &read, ep(20, 10)).count(AlertKind::NewFunctionCode),
            0
        );
        let out = run(&mut r, &[44 * MS], &write, ep(20, 10));
        assert_eq!(out.count(AlertKind::NewFunctionCode), 1);
        assert_eq!(
            out.0[0].0.detail,
            Detail::NewFunctionCode {
                pair_in_baseline: true
            }
        );
        let out = run(&mut r, &[0], &read, ep(66, 10));
        assert_eq!(
            out.0[0].0.detail,
            Detail::NewFunctionCode {
                pair_in_baseline: false
            }
        );
    }

    #[test]
    fn timing_outside_three_sigma() {
        let mut r = BaselineRules::new(Some(learned(100)), Thresholds::default());
        let read = Request::ReadHoldingRegisters { addr: 0, qty: 1 };
        // Normal polls, then a 3 s gap, then 5 ms polls.
        let mut times: Vec<u64> = (0..10).map(|i| i * 44 * MS).collect();
        let gap_end = times[9] + 3000 * MS;
        times.push(gap_end);
        times.extend((1..=5).map(|i| gap_end + i * 5 * MS));
        let out = run(&mut r, &times, &read, ep(20, 10));
        assert_eq!(out.count(AlertKind::TimingAnomaly), 6);
        assert_eq!(out.0[0].0.severity, Severity::Medium);
    }

    #[test]
    fn timing_needs_enough_baseline_samples() {
        let few = Thresholds::default().timing_min_samples - 1;
        let mut r = BaselineRules::new(Some(learned(few)), Thresholds::default());
        let read = Request::ReadHoldingRegisters { addr: 0, qty: 1 };
        let out = run(&mut r, &[0, 5000 * MS], &read, ep(20, 10));
        assert_eq!(out.count(AlertKind::TimingAnomaly), 0);
    }

    #[test]
    fn off_without_a_baseline() {
        let mut r = BaselineRules::new(None, Thresholds::default());
        let w = Request::WriteSingleRegister { addr: 0, value: 1 };
        assert!(run(&mut r, &[0, 1, 5_000 * MS], &w, ep(66, 10))
            .0
            .is_empty());
    }
}
