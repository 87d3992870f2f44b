//! Request/response matching per connection.
//!
//! A response carries no register addresses: they come from its request,
//! found by (transaction id, unit id, function code). The table is bounded
//! (pipelining masters, or an attacker who never reads responses, cannot make
//! it grow) and entries age out, each loss counted. Suricata leaked exactly
//! such unanswered transactions (CVE-2024-38534).

use std::collections::VecDeque;

use crate::counters::Counters;
use crate::modbus::pdu::Request;

/// What a response needs from its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingRequest {
    pub ts_ns: u64,
    pub tid: u16,
    pub unit: u8,
    pub fc: u8,
    /// Start address and quantity of what the request reads (FC 23: the read part).
    pub read: Option<(u16, u16)>,
    /// What the response must echo: FC 5/6 address and value, FC 15/16
    /// address and quantity.
    pub echo: Option<(u16, u16)>,
}

impl PendingRequest {
    pub fn new(ts_ns: u64, tid: u16, unit: u8, req: &Request<'_>) -> Self {
        let read = req.read_range();
        let echo = match *req {
            Request::WriteSingleCoil { addr, value }
            | Request::WriteSingleRegister { addr, value } => Some((addr, value)),
            Request::WriteMultipleCoils { addr, qty, .. }
            | Request::WriteMultipleRegisters { addr, qty, .. } => Some((addr, qty)),
            _ => None,
        };
        PendingRequest {
            ts_ns,
            tid,
            unit,
            fc: req.function_code(),
            read,
            echo,
        }
    }

    /// The read part of the request, rebuilt as a request for `read_values`.
    pub fn read_request(&self) -> Option<Request<'static>> {
        let (addr, qty) = self.read?;
        Some(match self.fc {
            1 => Request::ReadCoils { addr, qty },
            2 => Request::ReadDiscreteInputs { addr, qty },
            3 => Request::ReadHoldingRegisters { addr, qty },
            4 => Request::ReadInputRegisters { addr, qty },
            23 => Request::ReadWriteMultipleRegisters {
                read_addr: addr,
                read_qty: qty,
                write_addr: 0,
                write_qty: 0,
                values: &[],
            },
            _ => return None,
        })
    }
}

/// A response seen before its request: with several RX queues, the two
/// directions of a connection can reach the shard through different queues,
/// and the response may overtake its request by a few microseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EarlyResponse {
    pub ts_ns: u64,
    pub tid: u16,
    pub unit: u8,
    pub fc: u8,
    /// MBAP header fields needed to handle it later.
    pub proto: u16,
    pub len: u16,
    pub pdu: Vec<u8>,
}

/// Responses held per connection at most, waiting for their request.
pub const MAX_EARLY_RESPONSES: usize = 8;

/// Outstanding requests of one connection, oldest first, and responses that
/// arrived before their request.
///
/// The oldest outstanding request is kept inline and everything else (more
/// requests in flight, held responses) in a box allocated on first need: a
/// master with one request at a time, the usual case, never touches the
/// heap, and an idle connection holds 32 bytes here instead of two `Vec`s
/// (48 bytes) and the 4-entry buffer the first request left behind (96
/// bytes). See `modbus-bench-alloc memory` and the `pending` micro-benchmark.
#[derive(Debug, Default)]
pub struct PendingTable {
    head: Option<PendingRequest>,
    spill: Option<Box<Spill>>,
}

/// The rarely used part of a [`PendingTable`].
#[derive(Debug, Default)]
struct Spill {
    /// Outstanding requests after `head`, oldest first (a deque: the oldest
    /// leaves first, without shifting the rest).
    rest: VecDeque<PendingRequest>,
    early: Vec<EarlyResponse>,
}

impl PendingTable {
    pub fn len(&self) -> usize {
        usize::from(self.head.is_some()) + self.spill.as_ref().map_or(0, |s| s.rest.len())
    }

    pub fn is_empty(&self) -> bool {
        self.head.is_none()
    }

    /// After `head` was taken: the next oldest takes its place.
    fn promote(&mut self) {
        if self.head.is_none() {
            self.head = self.spill.as_mut().and_then(|s| s.rest.pop_front());
        }
    }

    /// Remember a request; forgets requests older than `timeout_ns` and, when
    /// `max` are outstanding, the oldest one.
    pub fn insert(
        &mut self,
        req: PendingRequest,
        max: usize,
        timeout_ns: u64,
        counters: &mut Counters,
    ) {
        let fresh = |p: &PendingRequest| req.ts_ns.saturating_sub(p.ts_ns) <= timeout_ns;
        let before = self.len();
        if let Some(s) = self.spill.as_mut() {
            s.rest.retain(fresh);
        }
        if self.head.as_ref().is_some_and(|h| !fresh(h)) {
            self.head = None;
            self.promote();
        }
        counters.transactions_expired += (before - self.len()) as u64;
        if self.len() >= max.max(1) {
            self.head = None;
            self.promote();
            counters.transactions_evicted += 1;
        }
        if self.head.is_none() {
            self.head = Some(req);
        } else {
            self.spill
                .get_or_insert_with(Box::default)
                .rest
                .push_back(req);
        }
    }

    /// The oldest outstanding request that `(tid, unit, fc)` answers.
    pub fn take(&mut self, tid: u16, unit: u8, fc: u8) -> Option<PendingRequest> {
        let answers = |p: &PendingRequest| p.tid == tid && p.unit == unit && p.fc == fc;
        if self.head.as_ref().is_some_and(answers) {
            let found = self.head.take();
            self.promote();
            return found;
        }
        let rest = &mut self.spill.as_mut()?.rest;
        let pos = rest.iter().position(answers)?;
        rest.remove(pos)
    }

    /// The function code of an outstanding request with this transaction
    /// and unit id, if any (a response that matched none may answer it
    /// with another function code).
    pub fn function_code_of(&self, tid: u16, unit: u8) -> Option<u8> {
        let of = |p: &PendingRequest| (p.tid == tid && p.unit == unit).then_some(p.fc);
        self.head
            .as_ref()
            .and_then(of)
            .or_else(|| self.spill.as_ref()?.rest.iter().find_map(of))
    }

    /// Hold a response until its request shows up. Returns the oldest held
    /// response when the hold list was full (to be handled as unmatched).
    pub fn hold_early(&mut self, resp: EarlyResponse) -> Option<EarlyResponse> {
        let early = &mut self.spill.get_or_insert_with(Box::default).early;
        let evicted = (early.len() >= MAX_EARLY_RESPONSES).then(|| early.remove(0));
        early.push(resp);
        evicted
    }

    /// The held response that answers `(tid, unit, fc)`, if any.
    pub fn take_early(&mut self, tid: u16, unit: u8, fc: u8) -> Option<EarlyResponse> {
        let early = &mut self.spill.as_mut()?.early;
        let pos = early
            .iter()
            .position(|e| e.tid == tid && e.unit == unit && e.fc == fc)?;
        Some(early.remove(pos))
    }

    /// Whether any response is held (checked per response before
    /// [`PendingTable::expired_early`], which builds a `Vec`).
    #[inline]
    pub fn has_early(&self) -> bool {
        self.spill.as_ref().is_some_and(|s| !s.early.is_empty())
    }

    /// Held responses older than `hold_ns` at `now`: their request is not coming.
    pub fn expired_early(&mut self, now: u64, hold_ns: u64) -> Vec<EarlyResponse> {
        let Some(s) = self.spill.as_mut() else {
            return Vec::new();
        };
        if s.early.is_empty() {
            return Vec::new();
        }
        let (old, keep) = std::mem::take(&mut s.early)
            .into_iter()
            .partition(|e| now.saturating_sub(e.ts_ns) >= hold_ns);
        s.early = keep;
        old
    }

    /// Forget everything (connection gone); returns how many were unanswered.
    pub fn clear(&mut self) -> usize {
        let n = self.len();
        self.head = None;
        if let Some(s) = self.spill.as_mut() {
            s.rest.clear();
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(ts_ns: u64, tid: u16) -> PendingRequest {
        PendingRequest {
            ts_ns,
            tid,
            unit: 1,
            fc: 3,
            read: Some((0, 10)),
            echo: None,
        }
    }

    #[test]
    fn matches_by_tid_unit_and_fc() {
        let mut t = PendingTable::default();
        let mut c = Counters::default();
        t.insert(req(0, 1), 8, 1_000, &mut c);
        t.insert(req(1, 2), 8, 1_000, &mut c);
        assert!(t.take(2, 1, 4).is_none(), "wrong function code");
        assert!(t.take(2, 9, 3).is_none(), "wrong unit");
        assert_eq!(t.take(2, 1, 3).map(|p| p.ts_ns), Some(1));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn bounded_and_ageing() {
        let mut t = PendingTable::default();
        let mut c = Counters::default();
        for i in 0..100u16 {
            t.insert(req(u64::from(i), i), 8, 1_000, &mut c);
            assert!(t.len() <= 8);
        }
        assert_eq!(c.transactions_evicted, 92);
        t.insert(req(10_000, 500), 8, 1_000, &mut c);
        assert_eq!(t.len(), 1);
        assert_eq!(c.transactions_expired, 8);
    }

    #[test]
    fn oldest_first_across_the_inline_head_and_the_rest() {
        let mut t = PendingTable::default();
        let mut c = Counters::default();
        for tid in 1..=4 {
            t.insert(req(u64::from(tid), tid), 3, 1_000, &mut c);
        }
        // 1 was evicted as the oldest; 2 is now the head.
        assert_eq!(c.transactions_evicted, 1);
        assert_eq!(t.len(), 3);
        assert!(t.take(1, 1, 3).is_none());
        assert_eq!(t.take(3, 1, 3).map(|p| p.tid), Some(3));
        assert_eq!(t.take(2, 1, 3).map(|p| p.tid), Some(2));
        assert_eq!(t.len(), 1);
        // Same tid twice: the oldest answers first.
        t.insert(req(10, 4), 8, 1_000, &mut c);
        assert_eq!(t.take(4, 1, 3).map(|p| p.ts_ns), Some(4));
        assert_eq!(t.take(4, 1, 3).map(|p| p.ts_ns), Some(10));
        assert!(t.is_empty());
        // Expiry removes old entries wherever they are and keeps the order.
        t.insert(req(0, 1), 8, 100, &mut c);
        t.insert(req(150, 2), 8, 100, &mut c);
        t.insert(req(160, 3), 8, 100, &mut c);
        t.insert(req(200, 4), 8, 100, &mut c);
        assert_eq!(c.transactions_expired, 1);
        assert_eq!(t.len(), 3);
        assert_eq!(t.clear(), 3);
        assert!(t.is_empty());
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn early_responses_wait_for_their_request_and_age_out() {
        let mut t = PendingTable::default();
        let early = |ts_ns, tid| EarlyResponse {
            ts_ns,
            tid,
            unit: 1,
            fc: 3,
            proto: 0,
            len: 5,
            pdu: vec![3, 2, 0, 1],
        };
        assert!(t.hold_early(early(0, 7)).is_none());
        assert!(t.hold_early(early(10, 8)).is_none());
        assert!(t.take_early(7, 1, 4).is_none(), "other function code");
        assert_eq!(t.take_early(7, 1, 3).map(|e| e.tid), Some(7));
        assert!(t.expired_early(50, 100).is_empty());
        assert_eq!(t.expired_early(200, 100).len(), 1);
        for i in 0..MAX_EARLY_RESPONSES as u16 {
            assert!(t.hold_early(early(0, i)).is_none());
        }
        assert_eq!(t.hold_early(early(0, 99)).map(|e| e.tid), Some(0));
    }

    #[test]
    fn read_request_is_rebuilt() {
        let p = PendingRequest::new(0, 1, 1, &Request::ReadInputRegisters { addr: 7, qty: 2 });
        assert_eq!(
            p.read_request(),
            Some(Request::ReadInputRegisters { addr: 7, qty: 2 })
        );
    }
}
