//! MODBUS_FLOOD: requests to a slave faster than any poller sends them.
//!
//! Two signs: a sustained run of requests from one master to one slave, each
//! closer than `flood_interval_ns` to the previous one (the ML pipeline's
//! "DoS ATTACK (High Volume)": back-to-back requests < 5 ms apart); and more
//! than `flood_max_outstanding` unanswered requests on one connection. The
//! count is the number of flood requests, the first ones of the run included.

use super::{AlertSink, PairMap, RequestCtx, RULE_STATE_CAPACITY};
use crate::alert::{AlertKind, Detail, FloodReason, Severity};
use crate::config::Thresholds;

#[derive(Debug, Clone, Copy)]
struct Run {
    last_ns: u64,
    /// Requests in the current run of short intervals (the first included).
    len: u32,
}

pub struct Flood {
    thresholds: Thresholds,
    pairs: PairMap<Run>,
}

impl Flood {
    pub fn new(thresholds: Thresholds) -> Self {
        Flood {
            thresholds,
            pairs: PairMap::new(RULE_STATE_CAPACITY),
        }
    }

    pub fn evicted(&self) -> u64 {
        self.pairs.evicted()
    }

    /// New thresholds (new settings); the state stays.
    pub fn set_thresholds(&mut self, thresholds: Thresholds) {
        self.thresholds = thresholds;
    }

    pub fn on_request(&mut self, ctx: &RequestCtx<'_>, out: &mut impl AlertSink) {
        // Borrowed, not copied per request: the thresholds are 19 fields.
        let Flood {
            thresholds: t,
            pairs,
        } = self;
        let run = pairs.get_or_insert_with(ctx.pair, (ctx.ep.master, ctx.ep.slave), || Run {
            last_ns: ctx.ts_ns,
            len: 0,
        });
        // A clock that stepped back (merged captures, a clock step) gives
        // no interval: the run starts again rather than counting a 0.
        let interval = ctx.ts_ns.checked_sub(run.last_ns);
        let interval_ns = interval.unwrap_or(0);
        run.len = match interval {
            Some(i) if run.len > 0 && i < t.flood_interval_ns => run.len.saturating_add(1),
            _ => 1,
        };
        run.last_ns = ctx.ts_ns;
        let min_run = t.flood_min_run.max(2);
        if run.len >= min_run {
            let mut alert = ctx.alert(AlertKind::Flood, Severity::High);
            alert.detail = Detail::Flood {
                reason: FloodReason::BackToBack,
                run: run.len,
                interval_ns,
            };
            let count = if run.len == min_run {
                u64::from(min_run)
            } else {
                1
            };
            out.raise(alert, count);
        }
        if ctx.outstanding > t.flood_max_outstanding as usize {
            let mut alert = ctx.alert(AlertKind::Flood, Severity::High);
            alert.detail = Detail::Flood {
                reason: FloodReason::Outstanding,
                run: ctx.outstanding as u32,
                interval_ns,
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

    fn feed(times: &[u64], outstanding: usize) -> Collected {
        let mut f = Flood::new(Thresholds::default());
        let mut out = Collected::default();
        let r = Request::ReadHoldingRegisters { addr: 0, qty: 1 };
        for t in times {
            let mut ctx = req(*t, ep(66, 10), &r);
            ctx.outstanding = outstanding;
            f.on_request(&ctx, &mut out);
        }
        out
    }

    #[test]
    fn back_to_back_flood_counts_every_request() {
        // A normal poll, a pause, then 600 requests 85 us apart.
        let mut times = vec![0, 200 * MS];
        times.extend((0..600).map(|i| 400 * MS + i * 85_000));
        assert_eq!(feed(&times, 1).count(AlertKind::Flood), 600);
    }

    #[test]
    fn fast_but_not_sustained_is_no_flood() {
        // 25 requests 5-10 ms apart (a polling burst), then normal polls.
        let mut t = 0;
        let mut times: Vec<u64> = (0..25)
            .map(|i| {
                t += (5 + i % 6) * MS;
                t
            })
            .collect();
        times.extend((1..100).map(|i| 10_000 * MS + i * 44 * MS));
        assert_eq!(feed(&times, 1).count(AlertKind::Flood), 0);
        // 19 back-to-back requests are below the run threshold.
        let times: Vec<u64> = (0..19).map(|i| i * MS).collect();
        assert_eq!(feed(&times, 1).count(AlertKind::Flood), 0);
    }

    #[test]
    fn too_many_outstanding_requests() {
        let out = feed(&[0, 100 * MS], 33);
        assert_eq!(out.count(AlertKind::Flood), 2);
        assert!(matches!(
            out.0[0].0.detail,
            Detail::Flood {
                reason: FloodReason::Outstanding,
                ..
            }
        ));
    }
}
