//! Protocol anomalies of single requests and responses.
//!
//! - RESERVED_FUNCTION_CODE: a request with function code 0 or 128 and
//!   above (an exception code as a request), a code the specification
//!   reserves for legacy products or leaves unassigned (Modbus Application
//!   Protocol v1.1b3, 5.1), an FC 8 sub-function it reserves, or an FC 43
//!   MEI type other than 13 and 14 (Snort 144:3, Suricata
//!   `invalid_function_code`). User-defined codes (65-72, 100-110) are the
//!   vendors' own, and the codes of known vendor protocols (Schneider UMAS
//!   90, Modicon 125/126) are PLC_PROGRAM_OPERATION's: neither is an
//!   anomaly here.
//! - INVALID_PDU_LENGTH (here the quantities; byte counts that do not
//!   fit their PDU are found by the parser, see `shard`): a quantity of 0
//!   or above the protocol's maxima (2000 coils or inputs, 125 registers
//!   read, 1968 coils or 123 registers written; FC 23: 125 read, 121
//!   written), and a read response whose byte count is not what its
//!   request asked for (Snort 144:1, Suricata `invalid_length`).
//! - SLAVE_BUSY_ACK_DELAY: a slave answering again and again with
//!   exception 5 (acknowledge: "working on it") or 6 (server busy), the
//!   Quickdraw signature of a device kept busy or stalling its master.

use std::collections::VecDeque;
use std::net::IpAddr;

use super::{AlertSink, BoundedMap, RequestCtx, ResponseCtx, RULE_STATE_CAPACITY};
use crate::alert::{AlertKind, Detail, Severity};
use crate::config::Thresholds;
use crate::modbus::pdu::{Request, Response};

/// Function codes the specification assigns a public meaning, user-defined
/// ranges, and the vendor protocols another rule decodes.
fn function_code_is_known(fc: u8) -> bool {
    matches!(
        fc,
        1..=8 | 11 | 12 | 15..=17 | 20..=24 | 43 | 65..=72 | 100..=110 | 90 | 125 | 126
    )
}

/// FC 8 sub-functions the specification defines (6.8).
fn diagnostic_is_defined(sub: u16) -> bool {
    matches!(sub, 0..=4 | 10..=18 | 20)
}

/// Exception 5 (acknowledge) and 6 (server device busy).
const ACKNOWLEDGE: u8 = 5;
const BUSY: u8 = 6;

pub struct ProtocolRules {
    thresholds: Thresholds,
    /// Per slave: capture times of its latest busy/acknowledge exceptions.
    busy: BoundedMap<IpAddr, VecDeque<u64>>,
}

impl ProtocolRules {
    pub fn new(thresholds: Thresholds) -> Self {
        ProtocolRules {
            thresholds,
            busy: BoundedMap::new(RULE_STATE_CAPACITY),
        }
    }

    pub fn evicted(&self) -> u64 {
        self.busy.evicted
    }

    /// New thresholds (new settings); the state stays.
    pub fn set_thresholds(&mut self, thresholds: Thresholds) {
        self.thresholds = thresholds;
    }

    pub fn on_request(&self, ctx: &RequestCtx<'_>, out: &mut impl AlertSink) {
        if let Some(reason) = quantity_problem(ctx.req) {
            let mut alert = ctx.alert(AlertKind::InvalidPduLength, Severity::Medium);
            alert.detail = Detail::Malformed { reason };
            out.raise(alert, 1);
        }
        let reason = match *ctx.req {
            Request::Diagnostics { sub, .. } if !diagnostic_is_defined(sub) => {
                ReservedReason::Diagnostic(sub)
            }
            Request::EncapsulatedInterface { mei, .. } if !matches!(mei, 13 | 14) => {
                ReservedReason::Mei(mei)
            }
            Request::Other { fc, .. } if !function_code_is_known(fc) => ReservedReason::Code,
            _ => return,
        };
        let mut alert = ctx.alert(AlertKind::ReservedFunctionCode, Severity::Medium);
        alert.detail = Detail::Reserved { reason };
        out.raise(alert, 1);
    }

    pub fn on_response(&mut self, ctx: &ResponseCtx<'_>, out: &mut impl AlertSink) {
        if let Some(reason) = read_count_problem(ctx) {
            let mut alert = ctx.alert(AlertKind::InvalidPduLength, Severity::Medium);
            alert.detail = Detail::Malformed { reason };
            out.raise(alert, 1);
        }
        if let Some(reason) = echo_problem(ctx) {
            let mut alert = ctx.alert(AlertKind::ResponseMismatch, Severity::Medium);
            alert.detail = Detail::Malformed { reason };
            out.raise(alert, 1);
        }
        let Response::Exception { code, .. } = *ctx.resp else {
            return;
        };
        if !matches!(code, 1..=6 | 8 | 10 | 11) {
            let mut alert = ctx.alert(AlertKind::ResponseMismatch, Severity::Medium);
            alert.detail = Detail::Malformed {
                reason: "exception code the specification does not define",
            };
            out.raise(alert, 1);
        }
        if !matches!(code, ACKNOWLEDGE | BUSY) {
            return;
        }
        let n = self.thresholds.busy_count.max(1);
        let window = self.thresholds.busy_window_ns;
        let recent = self.busy.get_or_insert_with(ctx.ep.slave, VecDeque::new);
        if recent.len() == n {
            recent.pop_front();
        }
        recent.push_back(ctx.ts_ns);
        let span = ctx
            .ts_ns
            .saturating_sub(recent.front().copied().unwrap_or(ctx.ts_ns));
        if recent.len() == n && span <= window {
            let mut alert = ctx.alert(AlertKind::SlaveBusyAckDelay, Severity::Medium);
            alert.detail = Detail::Exception {
                code,
                in_window: n as u32,
            };
            out.raise(alert, 1);
        }
    }
}

/// A quantity of 0 or above its function code's maximum (Modbus
/// Application Protocol v1.1b3, 6.1-6.17).
fn quantity_problem(req: &Request<'_>) -> Option<&'static str> {
    let (qty, max) = match *req {
        Request::ReadCoils { qty, .. } | Request::ReadDiscreteInputs { qty, .. } => (qty, 2000),
        Request::ReadHoldingRegisters { qty, .. } | Request::ReadInputRegisters { qty, .. } => {
            (qty, 125)
        }
        Request::WriteMultipleCoils { qty, .. } => (qty, 1968),
        Request::WriteMultipleRegisters { qty, .. } => (qty, 123),
        Request::ReadWriteMultipleRegisters {
            read_qty,
            write_qty,
            ..
        } => {
            if write_qty == 0 || write_qty > 121 {
                return Some("FC 23 write quantity outside 1 to 121");
            }
            (read_qty, 125)
        }
        _ => return None,
    };
    match qty {
        0 => Some("quantity 0"),
        q if q > max => Some("quantity above the protocol's maximum for the function code"),
        _ => None,
    }
}

/// A write response that does not echo its request (FC 5/6 address and
/// value, FC 15/16 address and quantity). Read responses echo nothing
/// (Suricata's value_mismatch flagged every FC 3/4 read response: not
/// here).
fn echo_problem(ctx: &ResponseCtx<'_>) -> Option<&'static str> {
    let (addr, second) = ctx.request?.echo?;
    match *ctx.resp {
        Response::WriteSingle { addr: a, value, .. } if (a, value) != (addr, second) => {
            Some("write response does not echo the request's address and value")
        }
        Response::WriteMultiple { addr: a, qty, .. } if (a, qty) != (addr, second) => {
            Some("write response does not echo the request's address and quantity")
        }
        _ => None,
    }
}

/// A read response whose byte count is not what its request asked for.
fn read_count_problem(ctx: &ResponseCtx<'_>) -> Option<&'static str> {
    let (_, qty) = ctx.request?.read?;
    let (got, want) = match *ctx.resp {
        Response::ReadBits { data, .. } => (data.len(), usize::from(qty).div_ceil(8)),
        Response::ReadRegisters { data, .. } => (data.len(), 2 * usize::from(qty)),
        _ => return None,
    };
    (got != want).then_some("read response byte count does not match the request's quantity")
}

/// Why a request's function code is an anomaly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservedReason {
    /// Function code 0, 128 or above, reserved or unassigned.
    Code,
    /// An FC 8 sub-function the specification reserves.
    Diagnostic(u16),
    /// An FC 43 MEI type other than 13 (CANopen) and 14 (device id).
    Mei(u8),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testutil::*;
    use crate::modbus::transaction::PendingRequest;

    fn reserved(r: Request<'_>) -> u64 {
        let mut out = Collected::default();
        ProtocolRules::new(Thresholds::default()).on_request(&req(0, ep(1, 2), &r), &mut out);
        out.count(AlertKind::ReservedFunctionCode)
    }

    #[test]
    fn reserved_and_unassigned_codes() {
        for fc in [
            0u8, 9, 10, 13, 14, 18, 41, 42, 44, 64, 91, 99, 124, 127, 128, 200,
        ] {
            assert_eq!(reserved(Request::Other { fc, data: &[] }), 1, "FC {fc}");
        }
        for fc in [65u8, 72, 90, 100, 110, 125, 126] {
            assert_eq!(reserved(Request::Other { fc, data: &[] }), 0, "FC {fc}");
        }
        assert_eq!(reserved(Request::ReadCoils { addr: 0, qty: 1 }), 0);
        for (sub, n) in [
            (0u16, 0),
            (4, 0),
            (10, 0),
            (20, 0),
            (5, 1),
            (9, 1),
            (19, 1),
            (21, 1),
        ] {
            assert_eq!(
                reserved(Request::Diagnostics { sub, data: &[0, 0] }),
                n,
                "FC 8 sub-function {sub}"
            );
        }
        for (mei, n) in [(13u8, 0), (14, 0), (0, 1), (15, 1)] {
            assert_eq!(
                reserved(Request::EncapsulatedInterface { mei, data: &[] }),
                n,
                "MEI {mei}"
            );
        }
    }

    fn busy(times_ms: &[u64], code: u8) -> u64 {
        let mut rules = ProtocolRules::new(Thresholds::default());
        let mut out = Collected::default();
        for &t in times_ms {
            let r = Response::Exception { fc: 3, code };
            rules.on_response(&resp(t * 1_000_000, ep(1, 2), &r, None), &mut out);
        }
        out.count(AlertKind::SlaveBusyAckDelay)
    }

    #[test]
    fn repeated_busy_or_acknowledge_on_both_sides_of_the_threshold() {
        let n = Thresholds::default().busy_count as u64;
        let window_ms = Thresholds::default().busy_window_ns / 1_000_000;
        let quick: Vec<u64> = (0..n).collect();
        assert_eq!(busy(&quick, BUSY), 1, "{n} in the window");
        assert_eq!(busy(&quick, ACKNOWLEDGE), 1);
        assert_eq!(busy(&quick[1..], BUSY), 0, "one fewer");
        let spread: Vec<u64> = (0..n).map(|i| i * window_ms).collect();
        assert_eq!(busy(&spread, BUSY), 0, "spread beyond the window");
        assert_eq!(busy(&quick, 2), 0, "other exception codes are not busy");
    }

    fn invalid(r: Request<'_>) -> u64 {
        let mut out = Collected::default();
        ProtocolRules::new(Thresholds::default()).on_request(&req(0, ep(1, 2), &r), &mut out);
        out.count(AlertKind::InvalidPduLength)
    }

    #[test]
    fn quantities_on_both_sides_of_the_protocol_maxima() {
        let hr = |qty| Request::ReadHoldingRegisters { addr: 0, qty };
        let coils = |qty| Request::ReadCoils { addr: 0, qty };
        assert_eq!(invalid(hr(125)), 0);
        assert_eq!(invalid(hr(126)), 1);
        assert_eq!(invalid(hr(1)), 0);
        assert_eq!(invalid(hr(0)), 1);
        assert_eq!(invalid(coils(2000)), 0);
        assert_eq!(invalid(coils(2001)), 1);
        let regs = [0u8; 246];
        let write = |qty| Request::WriteMultipleRegisters {
            addr: 0,
            qty,
            values: &regs,
        };
        assert_eq!(invalid(write(123)), 0);
        assert_eq!(invalid(write(124)), 1);
        let rw = |read_qty, write_qty| Request::ReadWriteMultipleRegisters {
            read_addr: 0,
            read_qty,
            write_addr: 0,
            write_qty,
            values: &regs,
        };
        assert_eq!(invalid(rw(125, 121)), 0);
        assert_eq!(invalid(rw(125, 122)), 1);
        assert_eq!(invalid(rw(126, 1)), 1);
    }

    #[test]
    fn a_read_response_must_hold_what_was_asked() {
        let answer = |qty: u16, bytes: usize, coils: bool| {
            let mut rules = ProtocolRules::new(Thresholds::default());
            let mut out = Collected::default();
            let asked = if coils {
                Request::ReadCoils { addr: 0, qty }
            } else {
                Request::ReadHoldingRegisters { addr: 0, qty }
            };
            let pending = PendingRequest::new(0, 1, 1, &asked);
            let data = vec![0u8; bytes];
            let r = if coils {
                Response::ReadBits { fc: 1, data: &data }
            } else {
                Response::ReadRegisters { fc: 3, data: &data }
            };
            rules.on_response(&resp(0, ep(1, 2), &r, Some(&pending)), &mut out);
            out.count(AlertKind::InvalidPduLength)
        };
        assert_eq!(answer(10, 20, false), 0);
        assert_eq!(answer(10, 18, false), 1);
        assert_eq!(answer(10, 22, false), 1);
        assert_eq!(answer(9, 2, true), 0, "9 coils in 2 bytes");
        assert_eq!(answer(9, 1, true), 1);
    }
}
