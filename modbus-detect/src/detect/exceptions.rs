//! EXCEPTION_BURST: many exception responses from one slave in a short time
//! (an attacker probing addresses or function codes, or a failing device).
//!
//! A burst is `exception_burst_count` exceptions within the window. The alert
//! counts every exception that falls in such a window, exactly once: the
//! first N when the burst is recognised, then each further one while the
//! window still holds N.

use std::collections::VecDeque;
use std::net::IpAddr;

use super::{AlertSink, BoundedMap, ResponseCtx, RULE_STATE_CAPACITY};
use crate::alert::{AlertKind, Detail, Severity};
use crate::config::Thresholds;
use crate::modbus::pdu::Response;

#[derive(Debug, Default)]
struct SlaveExceptions {
    /// (capture time, sequence number) of the last N exceptions.
    recent: VecDeque<(u64, u64)>,
    next_seq: u64,
    /// Sequence number of the last exception already counted in an alert.
    counted: Option<u64>,
}

pub struct ExceptionBurst {
    thresholds: Thresholds,
    slaves: BoundedMap<(IpAddr, u8), SlaveExceptions>,
}

impl ExceptionBurst {
    pub fn new(thresholds: Thresholds) -> Self {
        ExceptionBurst {
            thresholds,
            slaves: BoundedMap::new(RULE_STATE_CAPACITY),
        }
    }

    pub fn evicted(&self) -> u64 {
        self.slaves.evicted
    }

    /// New thresholds (new settings); the state stays.
    pub fn set_thresholds(&mut self, thresholds: Thresholds) {
        self.thresholds = thresholds;
    }

    pub fn on_response(&mut self, ctx: &ResponseCtx<'_>, out: &mut impl AlertSink) {
        let Response::Exception { code, .. } = *ctx.resp else {
            return;
        };
        let n = self.thresholds.exception_burst_count.max(1);
        let window = self.thresholds.exception_burst_window_ns;
        let s = self
            .slaves
            .get_or_insert_with((ctx.ep.slave, ctx.unit), SlaveExceptions::default);
        let seq = s.next_seq;
        s.next_seq += 1;
        if s.recent.len() == n {
            s.recent.pop_front();
        }
        s.recent.push_back((ctx.ts_ns, seq));
        let Some(&(oldest, _)) = s.recent.front() else {
            return;
        };
        if s.recent.len() < n || ctx.ts_ns.saturating_sub(oldest) > window {
            return;
        }
        let fresh = s
            .recent
            .iter()
            .filter(|(_, q)| s.counted.is_none_or(|c| *q > c))
            .count() as u64;
        s.counted = Some(seq);
        let mut alert = ctx.alert(AlertKind::ExceptionBurst, Severity::High);
        alert.detail = Detail::Exception {
            code,
            in_window: n as u32,
        };
        out.raise(alert, fresh);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testutil::*;

    const SEC: u64 = 1_000_000_000;

    fn feed(times: &[u64]) -> Collected {
        let mut r = ExceptionBurst::new(Thresholds::default());
        let mut out = Collected::default();
        let e = Response::Exception { fc: 3, code: 2 };
        for t in times {
            r.on_response(&resp(*t, ep(20, 10), &e, None), &mut out);
        }
        out
    }

    #[test]
    fn nine_exceptions_are_not_a_burst() {
        let times: Vec<u64> = (0..9).map(|i| i * SEC).collect();
        assert!(feed(&times).0.is_empty());
    }

    #[test]
    fn every_exception_in_a_burst_is_counted_once() {
        let times: Vec<u64> = (0..69).map(|i| i * SEC / 4).collect();
        let out = feed(&times);
        assert_eq!(out.count(AlertKind::ExceptionBurst), 69);
        let a = out.0[0].0;
        assert_eq!(a.src, ep(20, 10).slave, "the slave is the source");
        assert_eq!(a.severity, Severity::High);
    }

    #[test]
    fn sparse_exceptions_never_burst() {
        let times: Vec<u64> = (0..100).map(|i| i * 7 * SEC).collect();
        assert!(feed(&times).0.is_empty());
    }

    #[test]
    fn two_bursts_do_not_double_count() {
        let mut times: Vec<u64> = (0..12).map(|i| i * SEC).collect();
        times.extend((0..10).map(|i| 1000 * SEC + i * SEC));
        assert_eq!(feed(&times).count(AlertKind::ExceptionBurst), 22);
    }
}
