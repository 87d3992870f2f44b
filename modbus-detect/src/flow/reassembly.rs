//! TCP reassembly of one direction of a connection into Modbus ADUs.
//!
//! Modbus/TCP has no ADU delimiter other than the MBAP length field, so the
//! byte stream must be rebuilt exactly: several ADUs per segment, ADUs split
//! over segments, retransmissions and overlaps (never counted twice),
//! out-of-order segments (buffered, bounded), and holes (capture loss: the
//! partial ADU is dropped, the gap counted, and the stream resynchronised on
//! the next plausible MBAP header). The common case, a segment that starts on
//! an ADU boundary and holds whole ADUs, is handed out without a copy.

use super::policy::{SegmentCopy, TargetPolicy};
use crate::config::Limits;
use crate::counters::Counters;
use crate::modbus::mbap::{frame, plausible_header, Framing, Mbap, MBAP_LEN};

/// What the consumer wants after an ADU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AduVerdict {
    /// Carry on with the next ADU.
    Continue,
    /// The ADU's length field proved wrong (its PDU did not fit it): the bytes
    /// after it cannot be trusted, so drop the rest of the segment and
    /// resynchronise on the next plausible header.
    Resync,
}

/// Receives what a stream produces.
pub trait AduSink {
    /// Where reassembly counts gaps, retransmissions and skipped bytes.
    fn counters(&mut self) -> &mut Counters;
    /// A complete ADU (MBAP header included) and the capture time of the
    /// segment that carried its first byte.
    fn adu(&mut self, adu: &[u8], ts_ns: u64) -> AduVerdict;
    /// A malformed MBAP header, or an ADU cut short by the end of the
    /// connection. At most one per segment.
    fn malformed(&mut self, reason: &'static str, ts_ns: u64);
    /// Bytes that start with an MBAP header the stream could not frame by
    /// (a bad header, or a length its PDU did not fit): a server that frames
    /// by function code may still execute what follows the header.
    fn salvage(&mut self, bytes: &[u8], ts_ns: u64);
    /// Two copies of the same stream bytes differ: whichever the receiver
    /// takes (its `policy`), someone is showing the sensor and the PLC
    /// different data, an evasion attempt.
    fn conflicting_copies(&mut self, policy: TargetPolicy, ts_ns: u64);
    /// This direction of the connection is not Modbus/TCP: it broke the
    /// framing before any ADU came through. Said once per stream; the
    /// framing errors that follow are not reported one by one.
    fn not_modbus(&mut self, ts_ns: u64);
}

/// Bytes a stream may skip looking for an ADU boundary, before its first
/// ADU, until it is taken for another protocol.
const UNFRAMED_LIMIT: u32 = 64;

/// An MBAP header and the function code: the least of every ADU, and what
/// it takes to judge its length.
const HEAD_LEN: usize = MBAP_LEN + 1;

/// A segment held until the hole before it is filled.
#[derive(Debug)]
struct OooSegment {
    seq: u32,
    ts_ns: u64,
    /// Order of arrival in its stream (the target policy may favour the
    /// first or the last copy).
    arrival: u64,
    data: Vec<u8>,
}

impl OooSegment {
    /// The segment as a policy compares it, its start relative to `origin`.
    fn copy(&self, origin: u32) -> SegmentCopy {
        SegmentCopy {
            start: seq_diff(self.seq, origin),
            len: self.data.len(),
            arrival: self.arrival,
        }
    }
}

/// `a` holds every byte `b` holds.
fn covers(a: &SegmentCopy, b: &SegmentCopy) -> bool {
    a.start <= b.start && a.start + a.len as i64 >= b.start + b.len as i64
}

/// Buffers allocated only when a stream needs them, so that an idle
/// connection costs a few bytes, not kilobytes.
#[derive(Debug, Default)]
struct Buffers {
    /// Bytes of an ADU whose end has not arrived yet.
    partial: Vec<u8>,
    partial_ts: u64,
    /// Out-of-order segments, sorted by sequence number; copies of the
    /// same bytes may overlap until the target policy picks one.
    ooo: Vec<OooSegment>,
    ooo_bytes: usize,
    /// Segments buffered so far (their order of arrival).
    arrivals: u64,
    /// The first holes given up that the peer has not acknowledged,
    /// `[start, end)`: bytes that come later into one of them (the receiver
    /// was still waiting for them) are decoded on their own instead of
    /// being taken for old data. The earliest are kept, not the latest:
    /// the receiver's next byte is the start of the earliest hole, and an
    /// attacker who makes more holes must not push it out.
    gaps: [Option<(u32, u32)>; GAPS_KEPT],
}

/// Holes given up that a stream remembers.
const GAPS_KEPT: usize = 4;

/// One direction of a TCP connection.
#[derive(Debug, Default)]
pub struct Stream {
    next_seq: u32,
    synced: bool,
    /// A SYN started it.
    syn_seen: bool,
    /// Looking for an ADU boundary (mid-stream pickup, after a gap or a bad header).
    resync: bool,
    closed: bool,
    /// The highest sequence number the peer has acknowledged, if seen.
    peer_ack: Option<u32>,
    /// The receive window the peer advertised with that acknowledgement
    /// (scaled), if seen: the receiver accepts nothing that starts at or
    /// beyond `peer_ack + window`.
    peer_window: Option<u32>,
    /// How the receiver resolves overlapping copies.
    policy: TargetPolicy,
    /// An ADU came through: the stream is Modbus.
    decoded: bool,
    /// Taken for another protocol (see [`AduSink::not_modbus`]).
    foreign: bool,
    /// Bytes skipped without an ADU boundary before the first ADU.
    unframed: u32,
    /// A hole was given up: bytes of this direction went unseen.
    lost: bool,
    bufs: Option<Box<Buffers>>,
}

/// Signed distance from `b` to `a` in sequence space.
fn seq_diff(a: u32, b: u32) -> i64 {
    i64::from(a.wrapping_sub(b) as i32)
}

impl Stream {
    /// A stream whose receiver resolves overlaps by `policy`.
    pub fn new(policy: TargetPolicy) -> Stream {
        Stream {
            policy,
            ..Stream::default()
        }
    }

    /// The receiver took the byte at `seq` out of band (TCP urgent data):
    /// it takes the sequence number but is not stream data. Only when
    /// `seq` is the next expected byte (the urgent byte of an in-order
    /// segment, the sender's usual case); false otherwise.
    pub fn skip_urgent_byte(&mut self, seq: u32) -> bool {
        if !self.synced || self.closed || seq != self.next_seq {
            return false;
        }
        self.next_seq = self.next_seq.wrapping_add(1);
        true
    }

    /// Whether bytes of this direction went unseen: a hole given up, or
    /// the peer acknowledging (`peer_ack`) bytes the sensor never saw.
    pub fn lost_bytes(&self, peer_ack: Option<u32>) -> bool {
        self.lost || (self.synced && peer_ack.is_some_and(|a| seq_diff(a, self.next_seq) > 0))
    }

    /// Whether a SYN started this direction (as opposed to a mid-stream
    /// pickup on data).
    pub fn started_by_syn(&self) -> bool {
        self.syn_seen
    }

    /// A SYN or data started this direction and no FIN or RST ended it.
    pub fn is_established(&self) -> bool {
        self.synced && !self.closed
    }

    /// True once FIN or RST ended this direction.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Heap bytes held by this stream (for memory accounting).
    pub fn buffered_bytes(&self) -> usize {
        self.bufs
            .as_ref()
            .map_or(0, |b| b.partial.capacity() + b.ooo_bytes)
    }

    /// A SYN starts the stream at `seq + 1`. On a stream already going, as
    /// the receiver does (RFC 5961 4.2: a challenge ACK, no reset), it
    /// changes nothing: a forged SYN with another initial sequence number
    /// must not move the stream away from the bytes the receiver takes.
    /// A stream that ended (FIN/RST) starts again: the 4-tuple is reused.
    pub fn on_syn(&mut self, seq: u32, counters: &mut Counters) {
        if self.synced && !self.closed {
            if seq.wrapping_add(1) != self.next_seq {
                counters.ignored_syn += 1;
            }
            return;
        }
        self.next_seq = seq.wrapping_add(1);
        self.synced = true;
        self.syn_seen = true;
        self.resync = false;
        self.closed = false;
        self.bufs = None;
    }

    /// The peer acknowledged `ack`, advertising `window` bytes more (scaled;
    /// `None` where the scale is unknown): bytes below `ack` were received
    /// by the peer, so a hole below it is capture loss, not reordering.
    /// Stop waiting.
    pub fn on_peer_ack(
        &mut self,
        ack: u32,
        window: Option<u32>,
        limits: &Limits,
        sink: &mut impl AduSink,
    ) {
        self.peer_ack = Some(ack);
        self.peer_window = window;
        if let Some(b) = self.bufs.as_mut() {
            // The peer has every byte below `ack`: holes there were capture
            // loss, and nothing will fill them.
            for gap in &mut b.gaps {
                if gap.is_some_and(|(_, end)| seq_diff(ack, end) >= 0) {
                    *gap = None;
                }
            }
        }
        if !limits.ack_confirms_loss {
            return;
        }
        let waiting = self.bufs.as_ref().is_some_and(|b| !b.ooo.is_empty());
        if waiting && self.synced && seq_diff(ack, self.next_seq) > 0 {
            self.flush_gap(sink);
        }
    }

    /// Feed one segment's payload.
    pub fn on_segment(
        &mut self,
        seq: u32,
        payload: &[u8],
        ts_ns: u64,
        limits: &Limits,
        sink: &mut impl AduSink,
    ) {
        if payload.is_empty() || self.closed {
            return;
        }
        if !self.synced {
            // Mid-stream pickup: no handshake seen, find an ADU boundary.
            self.next_seq = seq;
            self.synced = true;
            self.resync = true;
        }
        let mut data = payload;
        let rel = seq_diff(seq, self.next_seq);
        if rel > 0 && self.beyond_window(seq, limits) {
            // The receiver drops it: it is no stream data, and the stream
            // must not move to it (a segment far ahead would otherwise make
            // the bytes the receiver does take look like old ones).
            sink.counters().out_of_window_segments += 1;
            return;
        }
        if rel < 0 {
            let old = usize::try_from(-rel).unwrap_or(usize::MAX);
            sink.counters().retransmitted_segments += 1;
            if self
                .bufs
                .as_ref()
                .is_some_and(|b| b.gaps.iter().any(Option::is_some))
            {
                self.fill_gaps(seq, &data[..old.min(data.len())], ts_ns, sink);
            }
            if old >= data.len() {
                return;
            }
            data = &data[old..];
        } else if rel > 0 {
            // The peer already has the missing bytes (they will never
            // come), or the buffer is full: either way the holes before this
            // segment are given up.
            let acked_past_hole =
                limits.ack_confirms_loss && self.peer_ack.is_some_and(|a| seq_diff(a, seq) >= 0);
            if !acked_past_hole && self.buffer_out_of_order(seq, data, ts_ns, limits, sink) {
                return;
            }
            match self.give_up_holes_before(seq, data, sink) {
                Some(rest) => data = rest,
                None => return,
            }
        }
        if self.overlaps_buffered(data) {
            // In-order bytes that segments held out of order also cover:
            // the policy decides which copy the receiver takes.
            self.queue_in_order(data, ts_ns, sink);
            self.drain_out_of_order(sink);
            return;
        }
        self.deliver(data, ts_ns, sink);
        // Only a stream that ever buffered anything can have segments
        // waiting: the common case skips the call.
        if self.bufs.is_some() {
            self.drain_out_of_order(sink);
        }
    }

    /// Whether a segment starting at `seq` (ahead of the next expected byte)
    /// lies beyond what the receiver accepts: past the right edge of the
    /// window it advertised, or, where no window was seen (one direction
    /// of the traffic only), past the reordering window. A peer's ACK at or
    /// past `seq` proves the bytes before it were received: always taken.
    fn beyond_window(&self, seq: u32, limits: &Limits) -> bool {
        if self.peer_ack.is_some_and(|a| seq_diff(a, seq) >= 0) {
            return false;
        }
        match (self.peer_ack, self.peer_window) {
            (Some(ack), Some(window)) => seq_diff(seq, ack.wrapping_add(window)) >= 0,
            _ => {
                let reorder = i64::try_from(limits.max_ooo_bytes.max(1) * 64).unwrap_or(i64::MAX);
                seq_diff(seq, self.next_seq) > reorder
            }
        }
    }

    /// An RST whose sequence number is `seq`: it ends the connection only
    /// at exactly the next expected byte, as the receiver checks it (RFC
    /// 5961 3.2; one in the window but elsewhere only draws a challenge
    /// ACK). On a stream whose next byte is unknown (no handshake and no
    /// data seen in this direction) it cannot be checked and is not
    /// honoured: the flow then ends when it idles out. Counted when
    /// ignored.
    pub fn accepts_rst(&self, seq: u32, sink: &mut impl AduSink) -> bool {
        let ok = self.synced && seq == self.next_seq;
        if !ok {
            sink.counters().ignored_fin_rst += 1;
        }
        ok
    }

    /// The connection's state is being let go (idle, evicted, end of input):
    /// deliver what waits behind holes, skipping them (each counted).
    pub fn flush(&mut self, sink: &mut impl AduSink) {
        while self.bufs.as_ref().is_some_and(|b| !b.ooo.is_empty()) {
            self.flush_gap(sink);
        }
    }

    /// A FIN whose sequence number is `seq_end` (after its payload). Only
    /// one at the expected sequence number ends the stream, as for a real
    /// receiver (RFC 9293): a forged FIN off sequence must not blind the
    /// sensor to the rest of the connection. On a stream whose next byte is
    /// unknown it cannot be checked and is not honoured (the flow ends
    /// when it idles out). Counted when ignored.
    pub fn close_at(&mut self, seq_end: u32, sink: &mut impl AduSink) -> bool {
        if !self.synced || seq_end != self.next_seq {
            sink.counters().ignored_fin_rst += 1;
            return false;
        }
        self.close(sink);
        true
    }

    /// FIN or RST: whatever partial ADU is left will never complete.
    pub fn close(&mut self, sink: &mut impl AduSink) {
        if self.closed {
            return;
        }
        self.closed = true;
        let Some(bufs) = self.bufs.take() else {
            return;
        };
        if !bufs.ooo.is_empty() {
            sink.counters().reassembly_gaps += 1;
        }
        if !bufs.partial.is_empty() {
            let reason = if bufs.partial.len() < MBAP_LEN + 1 {
                "fewer than 8 bytes: no complete MBAP header and function code before the connection closed"
            } else {
                "length field larger than the bytes that follow: ADU cut short by the end of the connection"
            };
            sink.malformed(reason, bufs.partial_ts);
            // A length longer than its PDU: a server that frames by
            // function code did not wait for the rest.
            sink.salvage(&bufs.partial, bufs.partial_ts);
        }
    }

    /// Keep a segment that arrived ahead of a hole. False when the buffer is
    /// full (or the segment is too far ahead) and the hole must be given up.
    fn buffer_out_of_order(
        &mut self,
        seq: u32,
        data: &[u8],
        ts_ns: u64,
        limits: &Limits,
        sink: &mut impl AduSink,
    ) -> bool {
        let ahead = seq_diff(seq, self.next_seq);
        let window = i64::try_from(limits.max_ooo_bytes.max(1) * 64).unwrap_or(i64::MAX);
        if ahead > window {
            return false;
        }
        let origin = self.next_seq;
        let policy = self.policy;
        let bufs = self.bufs.get_or_insert_with(Box::default);
        if bufs.ooo.len() >= limits.max_ooo_segments
            || bufs.ooo_bytes + data.len() > limits.max_ooo_bytes
        {
            return false;
        }
        let new = SegmentCopy {
            start: seq_diff(seq, origin),
            len: data.len(),
            arrival: bufs.arrivals,
        };
        let conflict = bufs
            .ooo
            .iter()
            .any(|seg| overlap_conflicts(seg.seq, &seg.data, seq, data));
        // A copy that holds every byte of this one and that the receiver
        // prefers: this one is never read (a retransmission, or a losing
        // copy). Counted either way; a conflict is also an alert.
        let beaten = bufs.ooo.iter().any(|seg| {
            let old = seg.copy(origin);
            covers(&old, &new) && policy.prefers(&old, &new)
        });
        if conflict {
            sink.counters().overlap_conflicts += 1;
            sink.conflicting_copies(policy, ts_ns);
        }
        if beaten {
            sink.counters().retransmitted_segments += 1;
            return true;
        }
        // Copies this one holds entirely and wins over are never read again.
        let before = bufs.ooo.len();
        bufs.ooo.retain(|seg| {
            let old = seg.copy(origin);
            !(covers(&new, &old) && policy.prefers(&new, &old))
        });
        if bufs.ooo.len() != before {
            bufs.ooo_bytes = bufs.ooo.iter().map(|seg| seg.data.len()).sum();
        }
        insert_sorted(bufs, seq, ts_ns, data.to_vec());
        sink.counters().out_of_order_segments += 1;
        true
    }

    /// Whether in-order bytes (at the next expected byte) overlap segments
    /// held out of order.
    fn overlaps_buffered(&self, data: &[u8]) -> bool {
        let Some(first) = self.first_buffered() else {
            return false;
        };
        seq_diff(first, self.next_seq) < data.len() as i64
    }

    /// In-order bytes that overlap held segments join them as one more
    /// copy (whatever the buffer's bounds: they are the stream's next
    /// bytes), so that the policy picks among all copies.
    fn queue_in_order(&mut self, data: &[u8], ts_ns: u64, sink: &mut impl AduSink) {
        let (seq, policy) = (self.next_seq, self.policy);
        let Some(bufs) = self.bufs.as_mut() else {
            return;
        };
        if bufs
            .ooo
            .iter()
            .any(|seg| overlap_conflicts(seg.seq, &seg.data, seq, data))
        {
            sink.counters().overlap_conflicts += 1;
            sink.conflicting_copies(policy, ts_ns);
        }
        insert_sorted(bufs, seq, ts_ns, data.to_vec());
    }

    /// Give up every hole before `seq`, delivering what was buffered between
    /// them (the receiver got those bytes: throwing them away would hide
    /// what they carry), then skip to `seq`. Returns the part of `data`
    /// (starting at `seq`) still new, if any.
    fn give_up_holes_before<'d>(
        &mut self,
        seq: u32,
        data: &'d [u8],
        sink: &mut impl AduSink,
    ) -> Option<&'d [u8]> {
        while self.first_buffered().is_some_and(|s| seq_diff(s, seq) < 0) {
            self.flush_gap(sink);
        }
        let rel = seq_diff(seq, self.next_seq);
        if rel > 0 {
            self.skip_to(seq, sink);
            return Some(data);
        }
        let old = usize::try_from(-rel).unwrap_or(usize::MAX);
        data.get(old..).filter(|rest| !rest.is_empty())
    }

    /// Sequence number of the first buffered out-of-order segment.
    fn first_buffered(&self) -> Option<u32> {
        self.bufs
            .as_ref()
            .and_then(|b| b.ooo.first())
            .map(|s| s.seq)
    }

    /// Give up on the hole before the first buffered segment and go on from it.
    fn flush_gap(&mut self, sink: &mut impl AduSink) {
        if let Some(seq) = self.first_buffered() {
            if seq_diff(seq, self.next_seq) > 0 {
                self.skip_to(seq, sink);
            }
            self.drain_out_of_order(sink);
        }
    }

    /// Jump over a hole: the partial ADU before it is lost. The hole is
    /// remembered (see `Buffers::gaps`): the receiver may still get its
    /// bytes, and the sensor then decodes them.
    fn skip_to(&mut self, seq: u32, sink: &mut impl AduSink) {
        sink.counters().reassembly_gaps += 1;
        self.lost = true;
        let start = self.next_seq;
        let b = self.bufs.get_or_insert_with(Box::default);
        sink.counters().resync_bytes_skipped += b.partial.len() as u64;
        b.partial.clear();
        if let Some(free) = b.gaps.iter_mut().find(|g| g.is_none()) {
            *free = Some((start, seq));
        }
        self.next_seq = seq;
        self.resync = true;
    }

    /// Old data (`seq`.., before the next expected byte) that falls into a
    /// hole given up earlier: the receiver, still waiting for those bytes,
    /// takes them now. Decode the ADUs they hold on their own (framed from
    /// the first plausible header; an ADU cut by the hole's edge is lost)
    /// and forget that part of the hole.
    fn fill_gaps(&mut self, seq: u32, data: &[u8], ts_ns: u64, sink: &mut impl AduSink) {
        let Some(b) = self.bufs.as_mut() else {
            return;
        };
        let end = seq.wrapping_add(data.len() as u32);
        let mut found: [Option<(usize, usize)>; GAPS_KEPT] = [None; GAPS_KEPT];
        for (slot, gap) in found.iter_mut().zip(b.gaps.iter_mut()) {
            let Some((g_start, g_end)) = *gap else {
                continue;
            };
            // The overlap of [seq, end) and [g_start, g_end).
            let from = if seq_diff(seq, g_start) > 0 {
                seq
            } else {
                g_start
            };
            let to = if seq_diff(end, g_end) < 0 { end } else { g_end };
            if seq_diff(to, from) <= 0 {
                continue;
            }
            let lo = usize::try_from(seq_diff(from, seq)).unwrap_or(0);
            let hi = usize::try_from(seq_diff(to, seq)).unwrap_or(0);
            *slot = Some((lo, hi));
            // What is left of the hole on either side stays remembered
            // (only the larger part: a hole is one range).
            let before = seq_diff(from, g_start);
            let after = seq_diff(g_end, to);
            *gap = match (before > 0, after > 0) {
                (false, false) => None,
                (true, false) => Some((g_start, from)),
                (false, true) => Some((to, g_end)),
                (true, true) if before >= after => Some((g_start, from)),
                (true, true) => Some((to, g_end)),
            };
        }
        for (lo, hi) in found.into_iter().flatten() {
            if let Some(bytes) = data.get(lo..hi) {
                sink.counters().gap_fills += 1;
                decode_isolated(bytes, ts_ns, sink);
            }
        }
    }

    /// Deliver what held segments hold from the next expected byte on,
    /// each byte from the copy the receiver's policy takes.
    fn drain_out_of_order(&mut self, sink: &mut impl AduSink) {
        loop {
            let origin = self.next_seq;
            let policy = self.policy;
            let Some(bufs) = self.bufs.as_mut() else {
                return;
            };
            // Copies wholly behind the stream are old.
            let before = bufs.ooo.len();
            bufs.ooo.retain(|seg| {
                let c = seg.copy(origin);
                c.start + c.len as i64 > 0
            });
            if bufs.ooo.len() != before {
                sink.counters().retransmitted_segments += (before - bufs.ooo.len()) as u64;
                bufs.ooo_bytes = bufs.ooo.iter().map(|seg| seg.data.len()).sum();
            }
            // Sorted by start: the copies holding the next byte come first.
            let holding = bufs
                .ooo
                .iter()
                .take_while(|seg| seq_diff(seg.seq, origin) <= 0);
            let Some((w, winner)) = holding
                .enumerate()
                .map(|(i, seg)| (i, seg.copy(origin)))
                .reduce(|best, c| {
                    if policy.prefers(&c.1, &best.1) {
                        c
                    } else {
                        best
                    }
                })
            else {
                return;
            };
            // The winner's bytes run until a copy the receiver prefers starts.
            let end = winner.start + winner.len as i64;
            let upto = bufs
                .ooo
                .iter()
                .map(|seg| seg.copy(origin))
                .filter(|c| c.start > 0 && c.start < end && policy.prefers(c, &winner))
                .map(|c| c.start)
                .min()
                .unwrap_or(end);
            let from = usize::try_from(-winner.start).unwrap_or(0);
            let to = usize::try_from(upto - winner.start).unwrap_or(0);
            if upto == end {
                let seg = bufs.ooo.remove(w);
                bufs.ooo_bytes -= seg.data.len();
                self.deliver(seg.data.get(from..).unwrap_or(&[]), seg.ts_ns, sink);
            } else {
                let seg = &bufs.ooo[w];
                let (part, ts) = (seg.data.get(from..to).unwrap_or(&[]).to_vec(), seg.ts_ns);
                self.deliver(&part, ts, sink);
            }
        }
    }

    /// In-order bytes: cut them into ADUs.
    fn deliver(&mut self, mut data: &[u8], ts_ns: u64, sink: &mut impl AduSink) {
        self.next_seq = self.next_seq.wrapping_add(data.len() as u32);
        if self.resync {
            match find_boundary(data) {
                Some(skip) => {
                    sink.counters().resync_bytes_skipped += skip as u64;
                    data = &data[skip..];
                    self.resync = false;
                }
                None => {
                    sink.counters().resync_bytes_skipped += data.len() as u64;
                    if !self.decoded {
                        self.unframed = self.unframed.saturating_add(data.len() as u32);
                        if self.unframed >= UNFRAMED_LIMIT {
                            self.not_modbus(ts_ns, sink);
                        }
                    }
                    return;
                }
            }
        }
        if self.has_partial() {
            match self.complete_partial(data, sink) {
                Some(rest) => data = rest,
                None => return,
            }
        }
        loop {
            let len = match frame(data) {
                Framing::Short => break,
                Framing::Bad(header, problem) => {
                    let foreign = foreign_header(&header);
                    self.bad_header(problem.describe(), foreign, data.len(), ts_ns, sink);
                    sink.salvage(data, ts_ns);
                    return;
                }
                Framing::Adu { len, .. } if data.len() < len => break,
                Framing::Adu { len, oversized } => {
                    sink.counters().oversized_adus += u64::from(oversized);
                    len
                }
            };
            let (adu, rest) = data.split_at(len);
            self.decoded = true;
            if sink.adu(adu, ts_ns) == AduVerdict::Resync {
                sink.salvage(data, ts_ns);
                // Bytes after an ADU whose length proved wrong cannot be
                // trusted; when it ended the segment, the next one starts
                // afresh.
                sink.counters().resync_bytes_skipped += rest.len() as u64;
                self.resync = !rest.is_empty();
                return;
            }
            data = rest;
        }
        if !data.is_empty() {
            let bufs = self.bufs.get_or_insert_with(Box::default);
            bufs.partial.extend_from_slice(data);
            bufs.partial_ts = ts_ns;
        }
    }

    fn has_partial(&self) -> bool {
        self.bufs.as_ref().is_some_and(|b| !b.partial.is_empty())
    }

    /// Add bytes to a partial ADU. Returns the bytes left after it completed,
    /// or `None` when everything was consumed (still partial, or resync).
    fn complete_partial<'d>(
        &mut self,
        data: &'d [u8],
        sink: &mut impl AduSink,
    ) -> Option<&'d [u8]> {
        let bufs = self.bufs.as_mut()?;
        let mut data = data;
        // The header and the function code (every ADU has both): an
        // oversized length is only valid for some function codes.
        if bufs.partial.len() < HEAD_LEN {
            let take = (HEAD_LEN - bufs.partial.len()).min(data.len());
            bufs.partial.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        let (len, oversized) = match frame(&bufs.partial) {
            Framing::Short => return None,
            Framing::Adu { len, oversized } => (len, oversized),
            Framing::Bad(header, problem) => {
                let ts = bufs.partial_ts;
                let held = std::mem::take(&mut bufs.partial);
                let foreign = foreign_header(&header);
                self.bad_header(
                    problem.describe(),
                    foreign,
                    held.len() + data.len(),
                    ts,
                    sink,
                );
                let mut bytes = held;
                bytes.extend_from_slice(data);
                sink.salvage(&bytes, ts);
                return None;
            }
        };
        let need = len.saturating_sub(bufs.partial.len());
        let take = need.min(data.len());
        bufs.partial.extend_from_slice(&data[..take]);
        data = &data[take..];
        if take < need {
            return None;
        }
        sink.counters().oversized_adus += u64::from(oversized);
        self.decoded = true;
        let verdict = sink.adu(&bufs.partial, bufs.partial_ts);
        if verdict == AduVerdict::Resync {
            sink.salvage(&bufs.partial, bufs.partial_ts);
        }
        bufs.partial.clear();
        if verdict == AduVerdict::Resync {
            sink.counters().resync_bytes_skipped += data.len() as u64;
            self.resync = !data.is_empty();
            return None;
        }
        Some(data)
    }

    /// An invalid MBAP header: its length cannot be trusted, so the rest of
    /// the segment is dropped and the stream resynchronises. A header that
    /// is no MBAP header at all (`foreign`) before any ADU came through
    /// means the stream is another protocol.
    fn bad_header(
        &mut self,
        reason: &'static str,
        foreign: bool,
        dropped: usize,
        ts_ns: u64,
        sink: &mut impl AduSink,
    ) {
        if foreign && !self.decoded {
            self.not_modbus(ts_ns, sink);
        } else {
            sink.malformed(reason, ts_ns);
        }
        sink.counters().resync_bytes_skipped += dropped as u64;
        self.resync = true;
    }

    /// The stream is another protocol than Modbus/TCP: said once.
    fn not_modbus(&mut self, ts_ns: u64, sink: &mut impl AduSink) {
        if !self.foreign {
            self.foreign = true;
            sink.counters().non_modbus_streams += 1;
            sink.not_modbus(ts_ns);
        }
    }
}

/// The first bytes of another protocol rather than a broken MBAP header:
/// both the protocol id (not 0) and the length (more than any ADU holds)
/// are wrong. HTTP, TLS, RPC and scanners' probes all look like this; a
/// Modbus stack's framing mistakes get one of the two wrong, not both.
fn foreign_header(header: &Mbap) -> bool {
    header.proto != 0 && usize::from(header.len) > MAX_MBAP_LEN
}

/// The largest MBAP length field a specification-abiding ADU has.
const MAX_MBAP_LEN: usize = 254;

/// Add a held segment after those starting at or before it.
fn insert_sorted(bufs: &mut Buffers, seq: u32, ts_ns: u64, data: Vec<u8>) {
    let pos = bufs
        .ooo
        .iter()
        .position(|s| seq_diff(s.seq, seq) > 0)
        .unwrap_or(bufs.ooo.len());
    bufs.ooo_bytes += data.len();
    bufs.ooo.insert(
        pos,
        OooSegment {
            seq,
            ts_ns,
            arrival: bufs.arrivals,
            data,
        },
    );
    bufs.arrivals += 1;
}

/// ADUs in bytes cut out of their stream (a hole filled late): framed from
/// the first plausible header to the last whole ADU; the rest is counted
/// as skipped.
fn decode_isolated(mut data: &[u8], ts_ns: u64, sink: &mut impl AduSink) {
    let Some(skip) = find_boundary(data) else {
        sink.counters().resync_bytes_skipped += data.len() as u64;
        return;
    };
    sink.counters().resync_bytes_skipped += skip as u64;
    data = &data[skip..];
    while let Framing::Adu { len, oversized } = frame(data) {
        if data.len() < len {
            break;
        }
        sink.counters().oversized_adus += u64::from(oversized);
        let (adu, rest) = data.split_at(len);
        if sink.adu(adu, ts_ns) == AduVerdict::Resync {
            break;
        }
        data = rest;
    }
    sink.counters().resync_bytes_skipped += data.len() as u64;
}

/// Two segments cover some of the same sequence numbers with different bytes.
fn overlap_conflicts(a_seq: u32, a: &[u8], b_seq: u32, b: &[u8]) -> bool {
    let off = seq_diff(b_seq, a_seq);
    let (first, second, off) = if off >= 0 { (a, b, off) } else { (b, a, -off) };
    let Ok(off) = usize::try_from(off) else {
        return false;
    };
    if off >= first.len() {
        return false;
    }
    let n = (first.len() - off).min(second.len());
    first[off..off + n] != second[..n]
}

/// Where the next ADU starts in bytes of unknown alignment: the first offset
/// with a plausible MBAP header whose ADU either ends the data, is followed by
/// another plausible header, or (at offset 0 only) continues past the data.
fn find_boundary(data: &[u8]) -> Option<usize> {
    (0..data.len()).find(|&i| {
        let rest = &data[i..];
        if !plausible_header(rest) {
            return false;
        }
        let Some(h) = Mbap::parse(rest) else {
            return false;
        };
        let len = h.adu_len();
        match rest.len().cmp(&len) {
            std::cmp::Ordering::Equal => true,
            // A whole ADU then too few bytes to judge: a partial next ADU
            // at the start of a segment is the common case.
            std::cmp::Ordering::Greater => {
                plausible_header(&rest[len..]) || (i == 0 && rest.len() - len <= MBAP_LEN)
            }
            std::cmp::Ordering::Less => i == 0,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collect {
        adus: Vec<Vec<u8>>,
        malformed: Vec<&'static str>,
        resync_on_fc: Option<u8>,
        c: Counters,
        conflicts: Vec<TargetPolicy>,
    }

    impl AduSink for Collect {
        fn counters(&mut self) -> &mut Counters {
            &mut self.c
        }
        fn adu(&mut self, adu: &[u8], _ts: u64) -> AduVerdict {
            self.adus.push(adu.to_vec());
            if self.resync_on_fc.is_some() && adu.get(7).copied() == self.resync_on_fc {
                return AduVerdict::Resync;
            }
            AduVerdict::Continue
        }
        fn salvage(&mut self, _bytes: &[u8], _ts: u64) {}

        fn malformed(&mut self, reason: &'static str, _ts: u64) {
            self.malformed.push(reason);
        }

        fn conflicting_copies(&mut self, policy: TargetPolicy, _ts: u64) {
            self.conflicts.push(policy);
        }

        fn not_modbus(&mut self, _ts: u64) {
            self.malformed.push("not Modbus");
        }
    }

    fn adu(tid: u16, pdu: &[u8]) -> Vec<u8> {
        let mut v = tid.to_be_bytes().to_vec();
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(&(pdu.len() as u16 + 1).to_be_bytes());
        v.push(1);
        v.extend_from_slice(pdu);
        v
    }

    fn read_req(tid: u16) -> Vec<u8> {
        adu(tid, &[3, 0, 0, 0, 10])
    }

    struct Harness {
        s: Stream,
        sink: Collect,
        limits: Limits,
    }

    impl Harness {
        fn new(isn: u32) -> Self {
            let mut s = Stream::default();
            s.on_syn(isn, &mut Counters::default());
            Harness {
                s,
                sink: Collect::default(),
                limits: Limits::default(),
            }
        }
        fn seg(&mut self, seq: u32, data: &[u8]) {
            self.s
                .on_segment(seq, data, 0, &self.limits, &mut self.sink);
        }
    }

    #[test]
    fn several_adus_in_one_segment() {
        let mut h = Harness::new(99);
        let mut seg = read_req(1);
        seg.extend(read_req(2));
        seg.extend(read_req(3));
        h.seg(100, &seg);
        assert_eq!(h.sink.adus.len(), 3);
        assert_eq!(h.sink.adus[2], read_req(3));
    }

    #[test]
    fn adu_split_over_three_segments() {
        let mut h = Harness::new(0);
        let a = read_req(7);
        h.seg(1, &a[..3]);
        h.seg(4, &a[3..9]);
        assert!(h.sink.adus.is_empty());
        h.seg(10, &a[9..]);
        assert_eq!(h.sink.adus, vec![a]);
    }

    /// A vendor ADU above the specification's 260 bytes (FC 100, 600 bytes
    /// of data) is one ADU, whatever the segment boundaries; the request
    /// after it is not lost to a resynchronisation.
    #[test]
    fn oversized_vendor_adu_is_framed_at_any_split() {
        let big = adu(1, &[&[100u8][..], &[0x5a; 600]].concat());
        let mut stream = big.clone();
        stream.extend(read_req(2));
        for cut in [0, 3, 7, 8, 200, big.len() - 1, big.len()] {
            let mut h = Harness::new(0);
            if cut > 0 {
                h.seg(1, &stream[..cut]);
            }
            h.seg(1 + cut as u32, &stream[cut..]);
            assert_eq!(h.sink.adus, vec![big.clone(), read_req(2)], "cut {cut}");
            assert_eq!(h.sink.c.oversized_adus, 1, "cut {cut}");
            assert!(h.sink.malformed.is_empty(), "cut {cut}");
        }
    }

    /// The same length for a function code whose layout the specification
    /// bounds, or above the vendor limit, is a header to resynchronise past.
    #[test]
    fn oversized_standard_or_huge_adu_is_malformed() {
        for (fc, n) in [(3u8, 600usize), (100, 1100)] {
            let mut h = Harness::new(0);
            let mut stream = adu(1, &[&[fc][..], &vec![0u8; n]].concat());
            stream.extend(read_req(2));
            h.seg(1, &stream);
            assert!(h.sink.adus.is_empty(), "fc {fc}");
            assert_eq!(h.sink.malformed, vec!["length field above 254"], "fc {fc}");
            assert_eq!(h.sink.c.oversized_adus, 0);
        }
    }

    #[test]
    fn retransmission_is_not_counted_twice() {
        let mut h = Harness::new(0);
        let a = read_req(1);
        h.seg(1, &a);
        h.seg(1, &a);
        assert_eq!(h.sink.adus.len(), 1);
        assert_eq!(h.sink.c.retransmitted_segments, 1);
    }

    #[test]
    fn overlapping_segment_delivers_only_new_bytes() {
        let mut h = Harness::new(0);
        let a = read_req(1);
        let b = read_req(2);
        h.seg(1, &a[..5]);
        let mut overlap = a[2..].to_vec();
        overlap.extend(&b);
        h.seg(3, &overlap);
        assert_eq!(h.sink.adus, vec![a, b]);
    }

    #[test]
    fn out_of_order_segments_are_reordered() {
        let mut h = Harness::new(0);
        let a = read_req(1);
        let b = read_req(2);
        let c = read_req(3);
        h.seg(1 + 24, &c);
        h.seg(1 + 12, &b);
        assert!(h.sink.adus.is_empty());
        h.seg(1, &a);
        assert_eq!(h.sink.adus, vec![a, b, c]);
        assert_eq!(h.sink.c.reassembly_gaps, 0);
        assert_eq!(h.sink.c.out_of_order_segments, 2);
    }

    #[test]
    fn gap_confirmed_by_peer_ack_resyncs_on_next_adu() {
        let mut h = Harness::new(0);
        let a = read_req(1);
        let b = read_req(2);
        // The first 5 bytes of `a` arrive, the rest is lost in the capture.
        h.seg(1, &a[..5]);
        h.s.on_peer_ack(1 + 12, None, &Limits::default(), &mut h.sink);
        h.seg(13, &b);
        assert_eq!(h.sink.adus, vec![b]);
        assert_eq!(h.sink.c.reassembly_gaps, 1);
        assert!(h.sink.malformed.is_empty());
    }

    #[test]
    fn ack_past_several_holes_keeps_the_data_between_them() {
        let mut h = Harness::new(0);
        let r = |t| read_req(t);
        // Requests at 1, 25 and 49; those at 13 and 37 are lost.
        h.seg(1, &r(1));
        h.seg(25, &r(3));
        h.seg(49, &r(5));
        h.s.on_peer_ack(61, None, &Limits::default(), &mut h.sink);
        h.seg(61, &r(6));
        let tids: Vec<u8> = h.sink.adus.iter().map(|a| a[1]).collect();
        assert_eq!(tids, vec![1, 3, 5, 6]);
        assert_eq!(h.sink.c.reassembly_gaps, 2);
    }

    #[test]
    fn bad_adu_ending_the_segment_does_not_lose_the_next_one() {
        let mut h = Harness::new(0);
        h.sink.resync_on_fc = Some(0x81);
        let mut bad = adu(1, &[0x81, 6, 0]);
        bad[5] = 4;
        h.seg(1, &bad);
        let good = adu(2, &[42, 14, 4, 1]);
        let mut seg = good.clone();
        seg.extend([1, 1, 35]);
        h.seg(1 + bad.len() as u32, &seg);
        assert_eq!(h.sink.adus.last(), Some(&good));
    }

    #[test]
    fn off_sequence_fin_is_ignored() {
        let mut h = Harness::new(0);
        h.seg(1, &read_req(1));
        assert!(!h.s.close_at(5000, &mut h.sink));
        assert!(!h.s.is_closed());
        h.seg(13, &read_req(2));
        assert_eq!(h.sink.adus.len(), 2);
        assert!(h.s.close_at(25, &mut h.sink));
        assert!(h.s.is_closed());
        assert_eq!(h.sink.c.ignored_fin_rst, 1);
    }

    #[test]
    fn gap_when_out_of_order_buffer_overflows() {
        let mut h = Harness::new(0);
        h.limits.max_ooo_segments = 2;
        let r = |t| read_req(t);
        // Segment 0 is lost; 1, 2 buffered; 3 overflows the buffer.
        h.seg(13, &r(1));
        h.seg(25, &r(2));
        h.seg(37, &r(3));
        assert_eq!(h.sink.adus, vec![r(1), r(2), r(3)]);
        assert_eq!(h.sink.c.reassembly_gaps, 1);
    }

    #[test]
    fn bounded_out_of_order_bytes() {
        let mut h = Harness::new(0);
        h.limits.max_ooo_bytes = 100;
        for i in 0..1000u32 {
            h.seg(1000 + i * 12, &read_req(i as u16));
            assert!(h.s.buffered_bytes() <= 100 + 64);
        }
    }

    #[test]
    fn mid_stream_pickup_finds_the_boundary() {
        let mut s = Stream::default();
        let mut sink = Collect::default();
        let a = read_req(1);
        let b = read_req(2);
        // Tail of a previous ADU, then two whole ones.
        let mut seg = vec![0x12, 0x34, 0x56];
        seg.extend(&a);
        seg.extend(&b);
        s.on_segment(5000, &seg, 0, &Limits::default(), &mut sink);
        assert_eq!(sink.adus, vec![a, b]);
        assert_eq!(sink.c.resync_bytes_skipped, 3);
    }

    #[test]
    fn bad_protocol_id_is_malformed_once_per_segment() {
        let mut h = Harness::new(0);
        let mut bad = read_req(1);
        bad[3] = 2;
        h.seg(1, &bad);
        assert_eq!(h.sink.malformed.len(), 1);
        assert!(h.sink.adus.is_empty());
        // The stream recovers on the next good ADU.
        h.seg(13, &read_req(2));
        assert_eq!(h.sink.adus, vec![read_req(2)]);
    }

    #[test]
    fn truncated_adu_at_close_is_malformed() {
        let mut h = Harness::new(0);
        let mut long = read_req(1);
        long[5] = 30;
        h.seg(1, &long);
        assert!(h.sink.malformed.is_empty());
        h.s.close(&mut h.sink);
        assert_eq!(h.sink.malformed.len(), 1);
    }

    #[test]
    fn short_segment_at_close_is_malformed() {
        let mut h = Harness::new(0);
        h.seg(1, &[0xb1, 0x3d, 0, 0]);
        h.s.close(&mut h.sink);
        assert_eq!(h.sink.malformed.len(), 1);
        assert!(h.sink.malformed[0].starts_with("fewer than 8 bytes"));
    }

    #[test]
    fn resync_verdict_drops_rest_of_segment() {
        let mut h = Harness::new(0);
        h.sink.resync_on_fc = Some(3);
        let mut seg = adu(1, &[3]);
        seg.extend([0, 8, 0, 5]);
        h.seg(1, &seg);
        assert_eq!(h.sink.adus.len(), 1);
        h.s.close(&mut h.sink);
        assert!(h.sink.malformed.is_empty(), "leftover bytes were dropped");
    }

    #[test]
    fn conflicting_overlap_is_counted() {
        let mut h = Harness::new(0);
        h.seg(13, &read_req(1));
        let mut other = read_req(1);
        other[11] = 99;
        h.seg(13, &other);
        assert_eq!(h.sink.c.overlap_conflicts, 1);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut h = Harness::new(u32::MAX - 5);
        let a = read_req(1);
        let b = read_req(2);
        h.seg(u32::MAX - 4, &a);
        h.seg((u32::MAX - 4).wrapping_add(12), &b);
        assert_eq!(h.sink.adus, vec![a, b]);
    }
}
