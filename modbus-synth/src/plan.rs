//! Per-connection schedules of segments not yet written.
//!
//! Frames of all connections must reach the file in timestamp order, yet a
//! poll's request and its response are decided together. So a connection
//! plans a burst (payload bytes plus timestamped segments) up front, and the
//! generator's event queue writes one planned segment at a time, interleaved
//! with the other connections' segments.

use super::frames::{TCP_ACK, TCP_FIN, TCP_PSH, TCP_SYN};

/// What an ADU is, for the summary's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AduKind {
    Request,
    AttackRequest,
    Response,
    Exception,
}

/// Counters a segment contributes to the summary once it is written; an
/// ADU counts with the segment holding its last byte, so a capture cut short
/// by the frame budget never counts an ADU it does not fully contain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub connections: u64,
    pub requests: u64,
    pub responses: u64,
    pub exceptions: u64,
    pub attack_requests: u64,
}

impl Tally {
    fn count(&mut self, kind: AduKind) {
        match kind {
            AduKind::Request => self.requests += 1,
            AduKind::AttackRequest => {
                self.requests += 1;
                self.attack_requests += 1;
            }
            AduKind::Response => self.responses += 1,
            AduKind::Exception => {
                self.responses += 1;
                self.exceptions += 1;
            }
        }
    }
}

/// One segment waiting to be written.
#[derive(Debug, Clone, Copy)]
pub struct Planned {
    pub ts: u64,
    pub from_server: bool,
    pub flags: u8,
    /// Payload range in [`Plan::bytes`].
    pub start: usize,
    pub end: usize,
    pub tally: Tally,
}

/// Cut a payload into two segments `at` bytes in, the second `delay_ns`
/// later, as a stack does when the application writes an ADU in two calls.
#[derive(Debug, Clone, Copy)]
pub struct Split {
    pub at: usize,
    pub delay_ns: u64,
}

/// A connection's pending segments and the bytes they carry.
#[derive(Debug, Default)]
pub struct Plan {
    segs: Vec<Planned>,
    pub bytes: Vec<u8>,
    cursor: usize,
}

impl Plan {
    pub fn peek_ts(&self) -> Option<u64> {
        self.segs.get(self.cursor).map(|s| s.ts)
    }

    pub fn pop(&mut self) -> Option<Planned> {
        let seg = self.segs.get(self.cursor).copied()?;
        self.cursor += 1;
        Some(seg)
    }

    pub fn payload(&self, seg: &Planned) -> &[u8] {
        &self.bytes[seg.start..seg.end]
    }

    /// Drops everything, keeping the allocations for the next burst.
    pub fn reset(&mut self) {
        self.segs.clear();
        self.bytes.clear();
        self.cursor = 0;
    }

    /// Puts the pending segments in time order. The sort is stable, so
    /// segments planned for the same instant keep their planning order.
    pub fn finish(&mut self) {
        self.segs[self.cursor..].sort_by_key(|s| s.ts);
    }

    /// SYN, SYN-ACK half a round trip later, ACK a round trip later; returns
    /// the time of the ACK.
    pub fn handshake(&mut self, ts: u64, rtt_ns: u64) -> u64 {
        self.control(ts, false, TCP_SYN);
        self.control(ts + rtt_ns / 2, true, TCP_SYN | TCP_ACK);
        self.control(ts + rtt_ns, false, TCP_ACK);
        ts + rtt_ns
    }

    /// FIN/ACK from the master, the slave's FIN/ACK, the master's last ACK.
    pub fn close(&mut self, ts: u64, gap_ns: u64) {
        self.control(ts, false, TCP_FIN | TCP_ACK);
        self.control(ts + gap_ns, true, TCP_FIN | TCP_ACK);
        self.control(ts + 2 * gap_ns, false, TCP_ACK);
    }

    fn control(&mut self, ts: u64, from_server: bool, flags: u8) {
        let at = self.bytes.len();
        let tally = Tally {
            connections: u64::from(flags == TCP_SYN),
            ..Tally::default()
        };
        self.segs.push(Planned {
            ts,
            from_server,
            flags,
            start: at,
            end: at,
            tally,
        });
    }

    /// Turns `bytes[start..]` into one data segment at `ts`, or two if
    /// `split` says so. `adus` lists the end offset (in `bytes`) and kind of
    /// each ADU in that payload. Returns when the last byte is sent.
    pub fn data(
        &mut self,
        ts: u64,
        from_server: bool,
        start: usize,
        adus: &[(usize, AduKind)],
        split: Option<Split>,
    ) -> u64 {
        let end = self.bytes.len();
        match split {
            Some(Split { at, delay_ns }) if at > 0 && start + at < end => {
                let cut = start + at;
                self.push_data(ts, from_server, start, cut, adus);
                self.push_data(ts + delay_ns, from_server, cut, end, adus);
                ts + delay_ns
            }
            _ => {
                self.push_data(ts, from_server, start, end, adus);
                ts
            }
        }
    }

    fn push_data(
        &mut self,
        ts: u64,
        from_server: bool,
        start: usize,
        end: usize,
        adus: &[(usize, AduKind)],
    ) {
        let mut tally = Tally::default();
        adus.iter()
            .filter(|(adu_end, _)| *adu_end > start && *adu_end <= end)
            .for_each(|&(_, kind)| tally.count(kind));
        self.segs.push(Planned {
            ts,
            from_server,
            flags: TCP_PSH | TCP_ACK,
            start,
            end,
            tally,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_counts_each_adu_where_it_ends() {
        let mut plan = Plan::default();
        plan.bytes.extend_from_slice(&[0u8; 30]);
        let adus = [
            (10, AduKind::Request),
            (20, AduKind::AttackRequest),
            (30, AduKind::Request),
        ];
        let last = plan.data(
            100,
            false,
            0,
            &adus,
            Some(Split {
                at: 15,
                delay_ns: 5,
            }),
        );
        assert_eq!(last, 105);
        let a = plan.pop().unwrap();
        let b = plan.pop().unwrap();
        assert!(plan.pop().is_none());
        assert_eq!((a.start, a.end, a.tally.requests), (0, 15, 1));
        assert_eq!(
            (b.start, b.end, b.tally.requests, b.tally.attack_requests),
            (15, 30, 2, 1)
        );
    }

    #[test]
    fn finish_orders_by_time_stably() {
        let mut plan = Plan::default();
        plan.control(30, false, TCP_ACK);
        plan.control(10, false, TCP_SYN);
        plan.control(10, true, TCP_ACK);
        plan.finish();
        let order: Vec<_> = std::iter::from_fn(|| plan.pop())
            .map(|s| (s.ts, s.from_server))
            .collect();
        assert_eq!(order, vec![(10, false), (10, true), (30, false)]);
    }

    #[test]
    fn only_syn_counts_as_a_connection() {
        let mut plan = Plan::default();
        plan.handshake(0, 100);
        let total = std::iter::from_fn(|| plan.pop())
            .map(|s| s.tally.connections)
            .sum::<u64>();
        assert_eq!(total, 1);
    }
}
