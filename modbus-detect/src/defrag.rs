//! IP fragment reassembly, between decoding and dispatching.
//!
//! A Modbus write split into IP fragments is executed by the PLC once its
//! stack has put the datagram together; skipping fragments would blind the
//! sensor to it. Fragments are rare in Modbus traffic (an ADU is at most
//! 260 bytes, far below any link's MTU), so this path is cold: the frame
//! loop only comes here for frames the decoder found to be fragments.
//!
//! Hostile input: every datagram in flight, its bytes and the datagrams of
//! one source are bounded (the oldest is evicted, counted); a datagram not
//! completed within the reassembly time (30 s, as Linux's
//! `ipfrag_time`) is dropped, counted. Overlapping fragments are resolved
//! as the destination's stack does (`--target-policy`): Linux discards the
//! whole datagram (since 4.19 for IPv4, RFC 5722 for IPv6), the others
//! take a copy per byte. Overlaps with different bytes, and fragments
//! smaller than any real link would make, are noted on the reassembled
//! packet for the shard to raise an EVASION_ATTEMPT.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::counters::Counters;
use crate::decode::checksum::header_checksum;
use crate::decode::{IpVersion, LinkType};
use crate::flow::policy::{SegmentCopy, TargetPolicies, TargetPolicy};
use crate::keyed::KeyedMap;

/// Datagrams being reassembled at once.
pub const MAX_DATAGRAMS: usize = 1024;
/// Of them, from one source address.
pub const MAX_DATAGRAMS_PER_SOURCE: usize = 64;
/// Fragment bytes held at once.
pub const MAX_HELD_BYTES: usize = 4 << 20;
/// How long a datagram may take to complete (Linux `ipfrag_time`).
pub const REASSEMBLY_TIMEOUT_NS: u64 = 30_000_000_000;
/// A fragment other than the last carrying fewer data bytes than this is
/// "tiny": the smallest MTU IPv4 allows (576) leaves 548 for data in every
/// fragment but the last (IPv6: 1280), so only a crafted one is smaller.
pub const TINY_FRAGMENT: usize = 548;

/// What the reassembled packet carries for the shard (bits of
/// `PacketMeta::fragments`).
pub mod note {
    /// The packet was put together from fragments.
    pub const REASSEMBLED: u8 = 1;
    /// A fragment other than the last was tiny.
    pub const TINY: u8 = 2;
    /// Fragments overlapped with different bytes.
    pub const OVERLAP: u8 = 4;
    /// The receiver discards the datagram (its policy on overlaps): not
    /// stream data, only the evidence of the attempt.
    pub const DISCARDED: u8 = 8;
}

const IPPROTO_FRAGMENT: u8 = 44;
const IPV4_MF: u16 = 0x2000;
const IPV4_OFFSET_MASK: u16 = 0x1FFF;
const IPV6_HEADER_LEN: usize = 40;
/// Largest IP datagram (the IPv4 total length and IPv6 payload length are
/// 16-bit).
const MAX_DATAGRAM: usize = 65_535;

/// One fragment as the decoder found it.
#[derive(Debug, Clone, Copy)]
pub struct Fragment<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IPv4 identification (16 bits) or IPv6 fragment identification.
    pub id: u32,
    /// Upper-layer protocol.
    pub protocol: u8,
    /// Offset of its data in the datagram's payload, bytes.
    pub offset: usize,
    pub more: bool,
    pub data: &'a [u8],
    /// IPv4: the header of this fragment (options included), to rebuild
    /// the datagram's header from the first fragment's.
    pub ipv4_header: Option<&'a [u8]>,
    pub ttl: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    src: IpAddr,
    dst: IpAddr,
    id: u32,
    protocol: u8,
}

#[derive(Debug)]
struct Piece {
    offset: usize,
    data: Vec<u8>,
    arrival: u64,
}

#[derive(Debug)]
struct Datagram {
    /// The first fragment's IPv4 header (IPv6: rebuilt from the key).
    header: Option<Vec<u8>>,
    ttl: u8,
    pieces: Vec<Piece>,
    /// Payload length, once the last fragment came.
    total: Option<usize>,
    held: usize,
    notes: u8,
    /// Fragments overlapped other than as exact duplicates.
    overlapped: bool,
    arrivals: u64,
}

/// Reassembles the fragments of one dispatcher's frames.
pub struct Defragmenter {
    policies: TargetPolicies,
    datagrams: KeyedMap<Key, Datagram>,
    per_source: KeyedMap<IpAddr, usize>,
    /// Datagrams by age, for the timeout and eviction.
    order: VecDeque<(u64, Key)>,
    held: usize,
}

impl Defragmenter {
    pub fn new(policies: TargetPolicies) -> Self {
        Defragmenter {
            policies,
            datagrams: KeyedMap::default(),
            per_source: KeyedMap::default(),
            order: VecDeque::new(),
            held: 0,
        }
    }

    /// Take one fragment; returns the reassembled IP packet (IPv4 or IPv6,
    /// no link header) and its notes when it completes a datagram.
    pub fn push(
        &mut self,
        ts_ns: u64,
        frag: &Fragment,
        counters: &mut Counters,
    ) -> Option<(Vec<u8>, u8)> {
        counters.ip_fragments += 1;
        self.expire(ts_ns, counters);
        let key = Key {
            src: frag.src,
            dst: frag.dst,
            id: frag.id,
            protocol: frag.protocol,
        };
        let end = frag.offset + frag.data.len();
        if end > MAX_DATAGRAM || (frag.more && !frag.data.len().is_multiple_of(8)) {
            // The receiver rejects it (too long, or a non-last fragment not
            // a multiple of 8 bytes).
            counters.fragments_invalid += 1;
            return None;
        }
        if !self.datagrams.contains_key(&key) {
            self.make_room(frag.src, frag.data.len(), counters);
            self.datagrams.insert(
                key,
                Datagram {
                    header: None,
                    ttl: frag.ttl,
                    pieces: Vec::new(),
                    total: None,
                    held: 0,
                    notes: note::REASSEMBLED,
                    overlapped: false,
                    arrivals: 0,
                },
            );
            *self.per_source.entry(frag.src).or_insert(0) += 1;
            self.order.push_back((ts_ns, key));
        } else if self.held + frag.data.len() > MAX_HELD_BYTES {
            self.make_room(frag.src, frag.data.len(), counters);
        }
        let policy = self.policies.of(frag.dst);
        let d = self.datagrams.get_mut(&key)?;
        if frag.more && frag.data.len() < TINY_FRAGMENT {
            d.notes |= note::TINY;
        }
        if !frag.more {
            match d.total {
                Some(t) if t != end => {
                    counters.fragments_invalid += 1;
                    return None;
                }
                _ => d.total = Some(end),
            }
        }
        if frag.offset == 0 {
            d.header = frag.ipv4_header.map(<[u8]>::to_vec);
            d.ttl = frag.ttl;
        }
        let added = add_piece(d, frag.offset, frag.data);
        self.held += added;
        d.held += added;
        let complete = d.total.is_some_and(|t| covered(&d.pieces, t));
        if !complete {
            return None;
        }
        let d = self.remove(&key)?;
        counters.ip_datagrams_reassembled += 1;
        if d.notes & note::OVERLAP != 0 {
            counters.fragment_overlaps += 1;
        }
        let notes = if d.overlapped && policy == TargetPolicy::Linux {
            d.notes | note::DISCARDED
        } else {
            d.notes
        };
        build_packet(&key, &d, policy).map(|p| (p, notes))
    }

    /// Drop datagrams older than the reassembly time.
    fn expire(&mut self, now_ns: u64, counters: &mut Counters) {
        while let Some(&(t, key)) = self.order.front() {
            if now_ns.saturating_sub(t) < REASSEMBLY_TIMEOUT_NS {
                return;
            }
            self.order.pop_front();
            if self.remove(&key).is_some() {
                counters.fragments_timed_out += 1;
            }
        }
    }

    /// Evict the oldest datagrams until one more from `src` with `bytes`
    /// fits every bound.
    fn make_room(&mut self, src: IpAddr, bytes: usize, counters: &mut Counters) {
        let full = |me: &Self| {
            me.datagrams.len() >= MAX_DATAGRAMS
                || me.held + bytes > MAX_HELD_BYTES
                || me.per_source.get(&src).copied().unwrap_or(0) >= MAX_DATAGRAMS_PER_SOURCE
        };
        while full(self) {
            let victim =
                if self.per_source.get(&src).copied().unwrap_or(0) >= MAX_DATAGRAMS_PER_SOURCE {
                    // The source's own oldest: one source must not push out
                    // the others' datagrams.
                    self.order.iter().position(|(_, k)| k.src == src)
                } else {
                    (!self.order.is_empty()).then_some(0)
                };
            let Some(at) = victim else {
                return;
            };
            let Some((_, key)) = self.order.remove(at) else {
                return;
            };
            if self.remove(&key).is_some() {
                counters.fragments_evicted += 1;
            }
        }
    }

    fn remove(&mut self, key: &Key) -> Option<Datagram> {
        let d = self.datagrams.remove(key)?;
        self.held -= d.held;
        if let Some(n) = self.per_source.get_mut(&key.src) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&key.src);
            }
        }
        Some(d)
    }
}

/// Add a fragment's bytes; returns the bytes now held for it. A fragment
/// that covers exactly the bytes of one held is a duplicate (Linux drops
/// it, `IPFRAG_DUP`, keeping the first: its policy prefers the first of
/// two equal copies); any other overlap is noted (Linux discards the
/// datagram). Either is an evasion attempt when the bytes differ; a
/// partial overlap is one even when they agree (no stack sends one).
fn add_piece(d: &mut Datagram, offset: usize, data: &[u8]) -> usize {
    let end = offset + data.len();
    for p in &d.pieces {
        let (lo, hi) = (offset.max(p.offset), end.min(p.offset + p.data.len()));
        if lo >= hi {
            continue;
        }
        if data[lo - offset..hi - offset] != p.data[lo - p.offset..hi - p.offset] {
            d.notes |= note::OVERLAP;
        }
        if p.offset != offset || p.data.len() != data.len() {
            d.overlapped = true;
            d.notes |= note::OVERLAP;
        }
    }
    d.pieces.push(Piece {
        offset,
        data: data.to_vec(),
        arrival: d.arrivals,
    });
    d.arrivals += 1;
    data.len()
}

/// Every byte of `0..total` is held.
fn covered(pieces: &[Piece], total: usize) -> bool {
    let mut spans: Vec<(usize, usize)> = pieces
        .iter()
        .map(|p| (p.offset, p.offset + p.data.len()))
        .collect();
    spans.sort_unstable();
    let mut reach = 0;
    for (lo, hi) in spans {
        if lo > reach {
            return false;
        }
        reach = reach.max(hi);
    }
    reach >= total
}

/// The datagram's payload, each byte from the copy the policy prefers.
fn payload(d: &Datagram, total: usize, policy: TargetPolicy) -> Vec<u8> {
    let mut out = vec![0u8; total];
    let mut owner: Vec<Option<SegmentCopy>> = vec![None; total];
    for p in &d.pieces {
        let copy = SegmentCopy {
            start: p.offset as i64,
            len: p.data.len(),
            arrival: p.arrival,
        };
        for (i, &b) in p.data.iter().enumerate() {
            let at = p.offset + i;
            let (Some(slot), Some(who)) = (out.get_mut(at), owner.get_mut(at)) else {
                continue;
            };
            if who.as_ref().is_none_or(|w| policy.prefers(&copy, w)) {
                *slot = b;
                *who = Some(copy);
            }
        }
    }
    out
}

/// The reassembled packet: the first fragment's IPv4 header (options
/// kept) with the length, fragment bits and checksum redone, or a plain
/// IPv6 header; then the payload.
fn build_packet(key: &Key, d: &Datagram, policy: TargetPolicy) -> Option<Vec<u8>> {
    let total = d.total?;
    let body = payload(d, total, policy);
    match (key.src, key.dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) => {
            let mut header = d.header.clone()?;
            let len = u16::try_from(header.len() + body.len()).ok()?;
            header.get_mut(2..4)?.copy_from_slice(&len.to_be_bytes());
            let flags = u16::from_be_bytes([*header.get(6)?, *header.get(7)?]);
            let cleared = flags & !(IPV4_MF | IPV4_OFFSET_MASK);
            header
                .get_mut(6..8)?
                .copy_from_slice(&cleared.to_be_bytes());
            header.get_mut(10..12)?.fill(0);
            let sum = header_checksum(&header);
            header.get_mut(10..12)?.copy_from_slice(&sum.to_be_bytes());
            header.extend_from_slice(&body);
            Some(header)
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            let len = u16::try_from(body.len()).ok()?;
            let mut p = Vec::with_capacity(IPV6_HEADER_LEN + body.len());
            p.extend_from_slice(&[0x60, 0, 0, 0]);
            p.extend_from_slice(&len.to_be_bytes());
            p.extend_from_slice(&[key.protocol, d.ttl]);
            p.extend_from_slice(&src.octets());
            p.extend_from_slice(&dst.octets());
            p.extend_from_slice(&body);
            Some(p)
        }
        _ => None,
    }
}

/// The fragment a frame the decoder skipped as one carries (a cold path).
pub fn fragment(link: LinkType, frame: &[u8]) -> Option<Fragment<'_>> {
    match crate::decode::network_layer(link, frame)? {
        (l3_off, IpVersion::V4) => ipv4_fragment(frame, l3_off),
        (l3_off, IpVersion::V6) => ipv6_fragment(frame, l3_off),
    }
}

/// The fragment in an IPv4 packet at `l3_off`, if it is one.
fn ipv4_fragment(frame: &[u8], l3_off: usize) -> Option<Fragment<'_>> {
    let header = frame.get(l3_off..)?;
    let hl = usize::from(header.first()? & 0x0F) * 4;
    let total = usize::from(u16::from_be_bytes([*header.get(2)?, *header.get(3)?]));
    if hl < 20 || total < hl || total > header.len() || header_checksum(header.get(..hl)?) != 0 {
        // A bad header checksum or a length past the frame: dropped by
        // the receiver.
        return None;
    }
    let frag = u16::from_be_bytes([*header.get(6)?, *header.get(7)?]);
    let src: [u8; 4] = header.get(12..16)?.try_into().ok()?;
    let dst: [u8; 4] = header.get(16..20)?.try_into().ok()?;
    Some(Fragment {
        src: IpAddr::V4(Ipv4Addr::from(src)),
        dst: IpAddr::V4(Ipv4Addr::from(dst)),
        id: u32::from(u16::from_be_bytes([*header.get(4)?, *header.get(5)?])),
        protocol: *header.get(9)?,
        offset: usize::from(frag & IPV4_OFFSET_MASK) * 8,
        more: frag & IPV4_MF != 0,
        data: header.get(hl..total)?,
        ipv4_header: header.get(..hl),
        ttl: *header.get(8)?,
    })
}

/// The fragment in an IPv6 packet at `l3_off`: its fragment header found
/// along the extension-header chain (bounded by the packet's length).
fn ipv6_fragment(frame: &[u8], l3_off: usize) -> Option<Fragment<'_>> {
    let packet = frame.get(l3_off..)?;
    let payload_len = usize::from(u16::from_be_bytes([*packet.get(4)?, *packet.get(5)?]));
    let packet = packet.get(..IPV6_HEADER_LEN + payload_len)?;
    let src: [u8; 16] = packet.get(8..24)?.try_into().ok()?;
    let dst: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
    let mut next = *packet.get(6)?;
    let mut off = IPV6_HEADER_LEN;
    // Every extension header is at least 8 bytes: the chain ends within
    // the packet's length.
    while next != IPPROTO_FRAGMENT {
        let len = match next {
            0 | 43 | 60 => (usize::from(*packet.get(off + 1)?) + 1) * 8,
            51 => (usize::from(*packet.get(off + 1)?) + 2) * 4,
            _ => return None,
        };
        next = *packet.get(off)?;
        off += len;
    }
    let fh = packet.get(off..off + 8)?;
    let offset_and_m = u16::from_be_bytes([fh[2], fh[3]]);
    Some(Fragment {
        src: IpAddr::V6(Ipv6Addr::from(src)),
        dst: IpAddr::V6(Ipv6Addr::from(dst)),
        id: u32::from_be_bytes([fh[4], fh[5], fh[6], fh[7]]),
        protocol: fh[0],
        offset: usize::from(offset_and_m >> 3) * 8,
        more: offset_and_m & 1 != 0,
        data: packet.get(off + 8..)?,
        ipv4_header: None,
        ttl: *packet.get(7)?,
    })
}
