//! REGISTER_VALUE_OUT_OF_RANGE and REGISTER_VALUE_EXCESSIVE_RATE.
//!
//! Values come from writes (FC 5, 6, 15, 16, 23) and from read responses
//! (FC 1-4, 23), per slave and unit id, for the registers of the limits file.
//!
//! - A write outside [min, max] always alerts: it is an action by a master.
//!   A value read back alerts when the register *enters* the out-of-range
//!   state, not on every poll of a register that stays there.
//! - A written value's rate is |change| / time between consecutive
//!   distinct values: the time since the previous value was first
//!   observed. A set point ramped slowly by writes, polled in between, is
//!   measured between its writes, not between a write and the poll just
//!   before it.
//! - A value read back is a measurement, and measurements are noisy: two
//!   masters reading a register 19 ms apart may see it differ by a few
//!   units, which over 19 ms is a huge "rate". Read-back values are judged
//!   against a reference read at least `rate_time_base_ns` (1 s) earlier:
//!   the change over at least a second, so noise stays noise and a real
//!   fast change still shows.

use std::net::IpAddr;
use std::sync::Arc;

use super::{AlertSink, BoundedMap, RequestCtx, ResponseCtx, RULE_STATE_CAPACITY};
use crate::alert::{Alert, AlertKind, Detail, Severity};
use crate::config::limits::{RegisterLimit, RegisterLimits};
use crate::modbus::pdu::{read_values, TableValues};

/// Last known value of one limited register.
#[derive(Debug, Clone, Copy)]
struct RegState {
    value: u16,
    /// When this value was first observed.
    since_ns: u64,
    out_of_range: bool,
    /// The read-back value later read-backs are judged against, and when
    /// it was read.
    read_ref: Option<(u16, u64)>,
}

pub struct RegisterRules {
    limits: Option<Arc<RegisterLimits>>,
    /// Shortest interval a read-back rate is measured over.
    time_base_ns: u64,
    state: BoundedMap<(IpAddr, u8, u32), RegState>,
}

/// One observed value of a limited register.
struct Observation<'l> {
    slave: IpAddr,
    unit: u8,
    limit_idx: u32,
    limit: &'l RegisterLimit,
    value: u16,
    ts_ns: u64,
    from_response: bool,
}

impl RegisterRules {
    pub fn new(limits: Option<Arc<RegisterLimits>>, time_base_ns: u64) -> Self {
        RegisterRules {
            limits,
            time_base_ns,
            state: BoundedMap::new(RULE_STATE_CAPACITY),
        }
    }

    pub fn evicted(&self) -> u64 {
        self.state.evicted
    }

    /// New register limits (new settings). The state is indexed by limit:
    /// new limits start it afresh (a write's rate is then measured from
    /// the next one).
    pub fn set_limits(&mut self, limits: Option<Arc<RegisterLimits>>, time_base_ns: u64) {
        let same = match (&self.limits, &limits) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (a, b) => a.is_none() && b.is_none(),
        };
        if !same {
            self.state = BoundedMap::new(RULE_STATE_CAPACITY);
        }
        self.limits = limits;
        self.time_base_ns = time_base_ns;
    }

    pub fn on_request(&mut self, ctx: &RequestCtx<'_>, out: &mut impl AlertSink) {
        if self.limits.is_none() || !ctx.req.is_write() {
            return;
        }
        self.observe_all(
            ctx.req.written_values(),
            ctx.ep.slave,
            ctx.unit,
            false,
            || ctx.alert(AlertKind::RegisterOutOfRange, Severity::Critical),
            out,
        );
    }

    pub fn on_response(&mut self, ctx: &ResponseCtx<'_>, out: &mut impl AlertSink) {
        if self.limits.is_none() {
            return;
        }
        let Some(read) = ctx.request.and_then(|p| p.read_request()) else {
            return;
        };
        self.observe_all(
            read_values(&read, ctx.resp),
            ctx.ep.slave,
            ctx.unit,
            true,
            || ctx.alert(AlertKind::RegisterOutOfRange, Severity::Critical),
            out,
        );
    }

    /// Observe the values of the limited registers among `values`, in
    /// address order. Only the limited addresses are visited
    /// ([`RegisterLimits::within`]), not every value; and the limits are
    /// borrowed, not `Arc`-cloned, per PDU. Most PDUs touch no limited
    /// register: their alert template (`base`) is never built.
    fn observe_all(
        &mut self,
        values: TableValues<'_>,
        slave: IpAddr,
        unit: u8,
        from_response: bool,
        base: impl FnOnce() -> Alert,
        out: &mut impl AlertSink,
    ) {
        let RegisterRules {
            limits,
            time_base_ns,
            state,
        } = self;
        let Some(limits) = limits else {
            return;
        };
        let (table, start, len) = values.span();
        let mut limited = limits.within(table, start, len).peekable();
        if limited.peek().is_none() {
            return;
        }
        let base = base();
        for (pos, limit_idx, limit) in limited {
            let Some(value) = values.value_at(pos) else {
                continue;
            };
            let obs = Observation {
                slave,
                unit,
                limit_idx,
                limit,
                value,
                ts_ns: base.ts_ns,
                from_response,
            };
            observe(state, &obs, *time_base_ns, &base, out);
        }
    }
}

/// Check one value against its limit and its previous value.
fn observe(
    states: &mut BoundedMap<(IpAddr, u8, u32), RegState>,
    o: &Observation<'_>,
    time_base_ns: u64,
    base: &Alert,
    out: &mut impl AlertSink,
) {
    let value = f64::from(o.value);
    let in_range = o.limit.in_range(value);
    // One lookup: the slot, created with this value if the register is new.
    let mut new = false;
    let slot = states.get_or_insert_with((o.slave, o.unit, o.limit_idx), || {
        new = true;
        RegState {
            value: o.value,
            since_ns: o.ts_ns,
            out_of_range: !in_range,
            read_ref: None,
        }
    });
    let state = (!new).then_some(*slot);
    // Built only for an alert (most observations raise none).
    let alert = || Alert {
        register: Some(o.limit.modicon),
        value: Some(i64::from(o.value)),
        ..*base
    };
    let entering = state.is_none_or(|s| !s.out_of_range);
    if !in_range && (!o.from_response || entering) {
        out.raise(
            Alert {
                detail: Detail::Range {
                    limit: o.limit_idx,
                    min: o.limit.min.unwrap_or(f64::NEG_INFINITY),
                    max: o.limit.max.unwrap_or(f64::INFINITY),
                    from_response: o.from_response,
                },
                ..alert()
            },
            1,
        );
    }
    // The value and time a rate is measured from: for a write, the
    // previous distinct value; for a read-back, the reference read at
    // least the time base earlier (none yet: the reference is set).
    let from = if o.from_response {
        match slot.read_ref {
            Some((v, t)) if o.ts_ns.saturating_sub(t) >= time_base_ns => {
                slot.read_ref = Some((o.value, o.ts_ns));
                Some((v, t))
            }
            Some(_) => None,
            None => {
                slot.read_ref = Some((o.value, o.ts_ns));
                None
            }
        }
    } else {
        // What is written is what later read-backs start from: reading
        // it back is no change of its own.
        slot.read_ref = Some((o.value, o.ts_ns));
        state.map(|s| (s.value, s.since_ns))
    };
    if let (Some((prev_value, prev_ns)), Some(max_rate)) = (from, o.limit.max_rate) {
        // A clock that stepped back gives no rate (it would be infinite).
        if prev_value != o.value && o.ts_ns >= prev_ns {
            let interval_ns = o.ts_ns - prev_ns;
            let change = (value - f64::from(prev_value)).abs();
            let rate = if interval_ns == 0 {
                f64::INFINITY
            } else {
                change / (interval_ns as f64 / 1e9)
            };
            if rate > max_rate {
                out.raise(
                    Alert {
                        kind: AlertKind::RegisterExcessiveRate,
                        severity: Severity::High,
                        detail: Detail::Rate {
                            limit: o.limit_idx,
                            previous: i64::from(prev_value),
                            interval_ns,
                            rate,
                            max_rate,
                        },
                        ..alert()
                    },
                    1,
                );
            }
        }
    }
    if slot.value != o.value {
        slot.value = o.value;
        slot.since_ns = o.ts_ns;
    }
    slot.out_of_range = !in_range;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testutil::*;
    use crate::modbus::pdu::{Request, Response};
    use crate::modbus::transaction::PendingRequest;

    const SEC: u64 = 1_000_000_000;

    fn rules() -> RegisterRules {
        let l = RegisterLimits::parse(
            r#"{"40001": {"name": "Temp", "min": 50, "max": 200, "max_rate": 5},
                "40021": {"name": "Level", "min": 10, "max": 90}}"#,
        )
        .unwrap();
        RegisterRules::new(
            Some(Arc::new(l)),
            crate::config::Thresholds::default().rate_time_base_ns,
        )
    }

    fn write(r: &mut RegisterRules, out: &mut Collected, ts: u64, addr: u16, value: u16) {
        let w = Request::WriteSingleRegister { addr, value };
        r.on_request(&req(ts, ep(20, 10), &w), out);
    }

    fn read_back(r: &mut RegisterRules, out: &mut Collected, ts: u64, addr: u16, value: u16) {
        let p = PendingRequest::new(0, 1, 1, &Request::ReadHoldingRegisters { addr, qty: 1 });
        let data = value.to_be_bytes();
        let resp = Response::ReadRegisters { fc: 3, data: &data };
        r.on_response(&resp_ctx(ts, &resp, &p), out);
    }

    fn resp_ctx<'a>(ts: u64, r: &'a Response<'a>, p: &'a PendingRequest) -> ResponseCtx<'a> {
        resp(ts, ep(20, 10), r, Some(p))
    }

    #[test]
    fn every_out_of_range_write_alerts() {
        let (mut r, mut out) = (rules(), Collected::default());
        for (i, v) in [17u16, 9, 8, 95].iter().enumerate() {
            write(&mut r, &mut out, i as u64 * 100 * SEC, 20, *v);
        }
        assert_eq!(out.count(AlertKind::RegisterOutOfRange), 3);
        let a = out.0[0].0;
        assert_eq!(a.register, Some(40021));
        assert_eq!(a.value, Some(9));
        assert_eq!(a.severity, Severity::Critical);
    }

    #[test]
    fn read_back_alerts_only_when_entering_out_of_range() {
        let (mut r, mut out) = (rules(), Collected::default());
        read_back(&mut r, &mut out, 0, 20, 50);
        for i in 1..10 {
            read_back(&mut r, &mut out, i * SEC, 20, 5);
        }
        assert_eq!(out.count(AlertKind::RegisterOutOfRange), 1);
        assert_eq!(
            out.0[0].0.src,
            ep(20, 10).slave,
            "raised by the slave's response"
        );
        read_back(&mut r, &mut out, 20 * SEC, 20, 50);
        read_back(&mut r, &mut out, 21 * SEC, 20, 3);
        assert_eq!(out.count(AlertKind::RegisterOutOfRange), 2);
    }

    #[test]
    fn written_out_of_range_value_read_back_is_not_a_second_alert() {
        let (mut r, mut out) = (rules(), Collected::default());
        write(&mut r, &mut out, 0, 20, 5);
        read_back(&mut r, &mut out, SEC, 20, 5);
        assert_eq!(out.count(AlertKind::RegisterOutOfRange), 1);
    }

    #[test]
    fn rate_between_distinct_values() {
        let (mut r, mut out) = (rules(), Collected::default());
        // 150 -> 95 in 1.029 s: 53.4 units/s > 5.
        write(&mut r, &mut out, 8 * SEC, 0, 150);
        read_back(&mut r, &mut out, 8 * SEC + SEC / 2, 0, 150);
        write(&mut r, &mut out, 9 * SEC + 29_000_000, 0, 95);
        assert_eq!(out.count(AlertKind::RegisterExcessiveRate), 1);
        let a = out.0.last().unwrap().0;
        match a.detail {
            Detail::Rate { previous, rate, .. } => {
                assert_eq!(previous, 150);
                assert!((rate - 55.0 / 1.029).abs() < 0.01, "{rate}");
            }
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn slow_ramp_polled_in_between_does_not_alert() {
        let (mut r, mut out) = (rules(), Collected::default());
        let mut v = 100u16;
        for s in 0..20u64 {
            write(&mut r, &mut out, s * SEC, 0, v);
            for p in 1..20 {
                read_back(&mut r, &mut out, s * SEC + p * 50_000_000, 0, v);
            }
            v += 4;
        }
        assert_eq!(out.0.len(), 0, "{:?}", out.0);
    }

    #[test]
    fn unlimited_registers_and_no_limits_file_are_ignored() {
        let mut out = Collected::default();
        let mut r = rules();
        write(&mut r, &mut out, 0, 5, 60000);
        let mut none = RegisterRules::new(None, SEC);
        write(&mut none, &mut out, 0, 0, 60000);
        assert!(out.0.is_empty());
    }

    /// Two masters polling a noisy measurement 19 ms apart: a few units
    /// of difference over 19 ms is no rate (it was 157 units/s, and an
    /// alert, when every pair of distinct read-backs was judged). A real
    /// change of the same register is still caught, over the time base.
    #[test]
    fn noisy_read_backs_are_judged_over_the_time_base() {
        let (mut r, mut out) = (rules(), Collected::default());
        let mut t = 0;
        for i in 0..200u64 {
            // 100 +- 3 units, read every 19 ms by one master or the other.
            let noise = [100u16, 103, 98, 101][(i % 4) as usize];
            read_back(&mut r, &mut out, t, 0, noise);
            t += 19_000_000;
        }
        assert_eq!(out.count(AlertKind::RegisterExcessiveRate), 0, "noise");
        // Now the value jumps by 90 and stays: over a second, 90 units/s.
        for _ in 0..100u64 {
            read_back(&mut r, &mut out, t, 0, 190);
            t += 19_000_000;
        }
        assert_eq!(out.count(AlertKind::RegisterExcessiveRate), 1, "the jump");
        // A slow drift within max_rate (5/s): 1 unit every 0.5 s.
        let (mut r, mut out) = (rules(), Collected::default());
        for i in 0..40u64 {
            read_back(&mut r, &mut out, i * SEC / 2, 0, 100 + i as u16);
        }
        assert_eq!(out.count(AlertKind::RegisterExcessiveRate), 0, "drift");
    }

    /// A write's change is judged once, write to write: reading the
    /// written value back later is no second change.
    #[test]
    fn reading_back_a_write_is_no_change_of_its_own() {
        let (mut r, mut out) = (rules(), Collected::default());
        // 100 (since 0 s) -> 140 at 10 s: 4 units/s, within 5. The 140
        // read back at 10.6 s starts from the write, not from the 100 read
        // at 9.5 s (40 units in 1.1 s).
        read_back(&mut r, &mut out, 0, 0, 100);
        read_back(&mut r, &mut out, 9 * SEC + SEC / 2, 0, 100);
        write(&mut r, &mut out, 10 * SEC, 0, 140);
        read_back(&mut r, &mut out, 10 * SEC + 6 * SEC / 10, 0, 140);
        assert_eq!(out.count(AlertKind::RegisterExcessiveRate), 0);
        // 140 -> 100 in 1 s: 40 units/s, from the write.
        write(&mut r, &mut out, 13 * SEC, 0, 100);
        assert_eq!(out.count(AlertKind::RegisterExcessiveRate), 1);
    }
}
