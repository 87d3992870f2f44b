//! Counters of everything the pipeline sees, skips, evicts or drops.
//!
//! Each shard and the dispatcher own a [`Counters`]; they are summed at the end
//! of a run for the report, so counting costs an add on a private cache line.

use serde::{Deserialize, Serialize};

use crate::decode::SkipReason;

/// Totals reported under `counters` in the report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Frames read from the source.
    pub frames: u64,
    /// Bytes of those frames.
    pub bytes: u64,
    /// Frames that reached a shard (TCP on a Modbus port).
    pub modbus_frames: u64,
    /// Frames skipped before the shards, by reason (see [`SkipReason`]).
    #[serde(skip)]
    pub skipped: [u64; SkipReason::ALL.len()],
    /// Modbus ADUs decoded (requests + responses + undecodable PDUs).
    pub modbus_adus: u64,
    pub requests: u64,
    pub responses: u64,
    /// Exception responses (FC | 0x80).
    pub exceptions: u64,
    /// Responses matched to their request.
    pub matched_responses: u64,
    /// Responses with no outstanding request (mid-stream pickup, lost request).
    pub unmatched_responses: u64,
    /// Requests forgotten unanswered after the transaction timeout.
    pub transactions_expired: u64,
    /// Requests evicted because a connection had too many outstanding.
    pub transactions_evicted: u64,
    /// ADUs with an invalid MBAP header or a PDU inconsistent with its length.
    pub malformed_adus: u64,
    /// Requests decoded by their function code's shape behind such a header
    /// (what a server that frames by function code executes), and checked
    /// by the rules as any request.
    pub salvaged_requests: u64,
    /// TCP connections tracked.
    pub flows: u64,
    /// Connections whose state was evicted because the table was full.
    pub flows_evicted: u64,
    /// Connections freed after the idle timeout.
    pub flows_expired: u64,
    /// Connections closed by FIN or RST.
    pub flows_closed: u64,
    /// Most connections tracked at once: the sum of each shard's peak, so an
    /// upper bound of the concurrent total; never above `--max-flows`.
    pub flows_peak: u64,
    /// Holes in a TCP byte stream (capture loss or an out-of-order window overflow).
    pub reassembly_gaps: u64,
    /// Stream bytes thrown away while resynchronising on an MBAP header.
    pub resync_bytes_skipped: u64,
    /// Segments (or their parts) seen before: retransmissions and overlaps.
    pub retransmitted_segments: u64,
    /// Overlapping data that differs from the data seen first (an evasion trick).
    pub overlap_conflicts: u64,
    /// Segments that arrived ahead of a hole and were buffered.
    pub out_of_order_segments: u64,
    /// Frames whose IP length claims more bytes than were captured.
    pub truncated_frames: u64,
    /// Frames with a capture time earlier than one their shard had already
    /// seen (merged captures, clock steps): interval rules (flood, timing,
    /// change rates) take no interval across such a step.
    pub timestamps_backwards: u64,
    /// FIN/RST segments off the expected sequence number (forged or stale),
    /// which therefore did not end the connection.
    pub ignored_fin_rst: u64,
    /// SYNs on an established stream with another initial sequence number
    /// (forged, or a stale duplicate), which therefore did not reset it.
    pub ignored_syn: u64,
    /// Connections whose two ports are both Modbus ports, their client and
    /// server told apart by the handshake ...
    pub roles_by_handshake: u64,
    /// ... or, with no handshake seen, by the traffic (request or response
    /// shape, else the first to speak is the client).
    pub roles_by_content: u64,
    /// Late bytes that filled a hole given up earlier (the receiver was still
    /// waiting for them), decoded on their own.
    pub gap_fills: u64,
    /// Urgent bytes (TCP URG) the receiver takes out of band, and so out of
    /// the Modbus stream.
    pub urgent_bytes: u64,
    /// Segments without the ACK flag (nor SYN or RST), which a receiver
    /// drops: their bytes are not stream data.
    pub segments_without_ack: u64,
    /// Segments starting beyond the receiver's window (or, when it is
    /// unknown, beyond the reordering window), which the receiver drops:
    /// not stream data, and the stream does not move to them.
    pub out_of_window_segments: u64,
    /// Segments with a wrong IPv4 header or TCP checksum, which the
    /// receiver drops: not stream data.
    pub checksum_errors: u64,
    /// Segments taken with a checksum in the shape TX offload leaves, from
    /// a side whose first checksum had that shape (the capture was taken on
    /// the sending host).
    pub checksum_offloaded: u64,
    /// Segments whose checksum could not be checked (cut by the snaplen).
    pub checksum_unverified: u64,
    /// Segments whose time to live runs out before the receiver, as far as
    /// the receiver's own packets show its distance: not stream data.
    pub ttl_expired_segments: u64,
    /// Exception responses with bytes after the exception code (some
    /// devices send `81 06 00`): decoded as exceptions, the deviation
    /// counted here rather than raised.
    pub exceptions_with_trailing_bytes: u64,
    /// ADUs longer than the specification's 260 bytes (length field above
    /// 254) for a vendor or user-defined function code: decoded as what they
    /// are, some PLCs send them.
    pub oversized_adus: u64,
    /// Alerts on write requests raised without waiting for the PLC's
    /// answer (the shard's hold of them was full): their answer is
    /// "unknown".
    pub write_alerts_not_held: u64,
    /// Stream directions on a Modbus port that broke the framing before
    /// any ADU: another protocol (NON_MODBUS_TRAFFIC).
    pub non_modbus_streams: u64,
    /// IP fragments taken for reassembly ...
    pub ip_fragments: u64,
    /// ... datagrams they completed ...
    pub ip_datagrams_reassembled: u64,
    /// ... of which with overlapping fragments of different bytes ...
    pub fragment_overlaps: u64,
    /// ... datagrams not completed within the reassembly time ...
    pub fragments_timed_out: u64,
    /// ... pushed out by the bounds on datagrams and bytes held ...
    pub fragments_evicted: u64,
    /// ... and fragments the receiver rejects (too long, misaligned, a
    /// last fragment that contradicts another).
    pub fragments_invalid: u64,
}

impl Counters {
    pub fn skip(&mut self, reason: SkipReason) {
        self.skipped[reason.index()] += 1;
    }

    /// Add another set of counters into this one.
    pub fn merge(&mut self, o: &Counters) {
        self.frames += o.frames;
        self.bytes += o.bytes;
        self.modbus_frames += o.modbus_frames;
        for (a, b) in self.skipped.iter_mut().zip(o.skipped.iter()) {
            *a += b;
        }
        self.modbus_adus += o.modbus_adus;
        self.requests += o.requests;
        self.responses += o.responses;
        self.exceptions += o.exceptions;
        self.matched_responses += o.matched_responses;
        self.unmatched_responses += o.unmatched_responses;
        self.transactions_expired += o.transactions_expired;
        self.transactions_evicted += o.transactions_evicted;
        self.malformed_adus += o.malformed_adus;
        self.flows += o.flows;
        self.flows_evicted += o.flows_evicted;
        self.flows_expired += o.flows_expired;
        self.flows_closed += o.flows_closed;
        self.flows_peak += o.flows_peak;
        self.reassembly_gaps += o.reassembly_gaps;
        self.resync_bytes_skipped += o.resync_bytes_skipped;
        self.retransmitted_segments += o.retransmitted_segments;
        self.overlap_conflicts += o.overlap_conflicts;
        self.out_of_order_segments += o.out_of_order_segments;
        self.truncated_frames += o.truncated_frames;
        self.ignored_fin_rst += o.ignored_fin_rst;
        self.ignored_syn += o.ignored_syn;
        self.gap_fills += o.gap_fills;
        self.urgent_bytes += o.urgent_bytes;
        self.timestamps_backwards += o.timestamps_backwards;
        self.segments_without_ack += o.segments_without_ack;
        self.salvaged_requests += o.salvaged_requests;
        self.roles_by_handshake += o.roles_by_handshake;
        self.roles_by_content += o.roles_by_content;
        self.out_of_window_segments += o.out_of_window_segments;
        self.checksum_errors += o.checksum_errors;
        self.checksum_offloaded += o.checksum_offloaded;
        self.checksum_unverified += o.checksum_unverified;
        self.ttl_expired_segments += o.ttl_expired_segments;
        self.exceptions_with_trailing_bytes += o.exceptions_with_trailing_bytes;
        self.oversized_adus += o.oversized_adus;
        self.write_alerts_not_held += o.write_alerts_not_held;
        self.non_modbus_streams += o.non_modbus_streams;
        self.ip_fragments += o.ip_fragments;
        self.ip_datagrams_reassembled += o.ip_datagrams_reassembled;
        self.fragment_overlaps += o.fragment_overlaps;
        self.fragments_timed_out += o.fragments_timed_out;
        self.fragments_evicted += o.fragments_evicted;
        self.fragments_invalid += o.fragments_invalid;
    }

    /// Skip counters by name, for the report.
    pub fn skipped_by_name(&self) -> Vec<(&'static str, u64)> {
        SkipReason::ALL
            .iter()
            .map(|r| (r.name(), self.skipped[r.index()]))
            .collect()
    }
}
