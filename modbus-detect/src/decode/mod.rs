//! Zero-copy decoding of link, network and transport headers.
//!
//! The dispatcher decodes every frame once into a [`PacketMeta`] (a small `Copy`
//! struct with no borrow), so that shards never parse headers again: they get the
//! metadata plus the frame bytes and slice the TCP payload out of it.

pub mod checksum;
mod ip;
mod link;
mod tcp;

pub use link::LinkType;

use std::net::IpAddr;

/// TCP flag bits as they appear in the TCP header.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
}

/// Everything the flow and Modbus layers need from one TCP segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketMeta {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    /// TCP flags byte (see [`tcp_flags`]).
    pub flags: u8,
    pub window: u16,
    /// Offset of the TCP payload inside the frame.
    pub payload_off: u16,
    /// Length of the TCP payload (IP total length minus headers, clamped to the
    /// captured bytes; Ethernet padding is never part of it).
    pub payload_len: u16,
    /// The IP total length claimed more bytes than the capture holds (snaplen).
    pub truncated: bool,
    /// SYN segments only: the window scale option (RFC 7323), if present.
    pub wscale: Option<u8>,
    /// The urgent pointer, when the URG flag is set (0 otherwise).
    pub urgent: u16,
    /// Offsets of the IP and TCP headers in the frame (for the checksums,
    /// verified by the shard where the segment's bytes are read anyway).
    pub l3_off: u16,
    pub l4_off: u16,
    /// IPv4 time to live or IPv6 hop limit, as the frame passed the sensor.
    pub ttl: u8,
    /// Put together from IP fragments: what the reassembly noted (bits of
    /// [`crate::defrag::note`]; 0 for an unfragmented packet).
    pub fragments: u8,
    /// Where the sender's link-layer (MAC) address is in the frame, for
    /// the asset inventory (read only for the frames it wants); 0 when the
    /// link layer has none (raw IP, loopback, a reassembled datagram).
    pub mac_off: u8,
}

impl PacketMeta {
    /// The sender's MAC address in `frame` (the frame this meta was
    /// decoded from); zeros when it has none.
    pub fn src_mac(&self, frame: &[u8]) -> [u8; 6] {
        let at = usize::from(self.mac_off);
        match frame.get(at..at + 6) {
            Some(m) if at > 0 => m.try_into().unwrap_or([0; 6]),
            _ => [0; 6],
        }
    }

    /// The TCP payload of `frame`, the same bytes this meta was decoded from.
    pub fn payload<'a>(&self, frame: &'a [u8]) -> &'a [u8] {
        let start = usize::from(self.payload_off);
        let end = start + usize::from(self.payload_len);
        frame.get(start..end).unwrap_or(&[])
    }
}

#[cfg(test)]
impl PacketMeta {
    /// A header from `src:sport` to `dst:dport` with `flags` and nothing
    /// else (no payload, no frame behind it): for tests of what reads the
    /// header only.
    pub(crate) fn bare(src: IpAddr, sport: u16, dst: IpAddr, dport: u16, flags: u8) -> PacketMeta {
        PacketMeta {
            src,
            dst,
            sport,
            dport,
            seq: 0,
            ack: 0,
            flags,
            window: 0,
            payload_off: 0,
            payload_len: 0,
            truncated: false,
            wscale: None,
            urgent: 0,
            l3_off: 0,
            l4_off: 0,
            ttl: 64,
            fragments: 0,
            mac_off: 0,
        }
    }
}

/// Why a frame did not yield a TCP segment. Every variant is a report counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SkipReason {
    /// Link type we do not decode (the pcap's link-layer header type).
    UnsupportedLinkType,
    /// Ethertype / protocol that is not IPv4 or IPv6 (ARP, LLDP, ...).
    NotIp,
    /// IP but not TCP (UDP, ICMP, ...).
    NotTcp,
    /// A non-first IP fragment, or a first fragment (MF set): counted, skipped.
    IpFragment,
    /// A header claims more bytes than the frame has, or is otherwise invalid.
    Truncated,
    /// TCP, but neither port is a Modbus port.
    NotModbusPort,
    /// The whole frame was captured, yet its IP length claims more bytes:
    /// the receiver drops such a packet (an insertion the PLC never sees).
    IpLengthExceedsFrame,
}

impl SkipReason {
    pub const ALL: [SkipReason; 7] = [
        SkipReason::UnsupportedLinkType,
        SkipReason::NotIp,
        SkipReason::NotTcp,
        SkipReason::IpFragment,
        SkipReason::Truncated,
        SkipReason::NotModbusPort,
        SkipReason::IpLengthExceedsFrame,
    ];

    /// Stable name used in the report's `skipped` counters.
    pub fn name(self) -> &'static str {
        match self {
            SkipReason::UnsupportedLinkType => "unsupported_link_type",
            SkipReason::NotIp => "not_ip",
            SkipReason::NotTcp => "not_tcp",
            SkipReason::IpFragment => "ip_fragment",
            SkipReason::Truncated => "truncated_header",
            SkipReason::NotModbusPort => "not_modbus_port",
            SkipReason::IpLengthExceedsFrame => "ip_length_exceeds_frame",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// IP versions the link layer can announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpVersion {
    V4,
    V6,
}

/// Where the IP header of a frame starts, and its version (for the
/// fragment path, which reads the IP header itself).
pub fn network_layer(link: LinkType, frame: &[u8]) -> Option<(usize, IpVersion)> {
    match link::decode_link(link, frame).ok()? {
        (off, link::ETHERTYPE_IPV4) => Some((off, IpVersion::V4)),
        (off, link::ETHERTYPE_IPV6) => Some((off, IpVersion::V6)),
        _ => None,
    }
}

/// Decode a frame of the given link type down to its TCP segment.
///
/// Port filtering is not done here (see `runtime::dispatch`): this only
/// parses headers. Inlined into the dispatcher, its one caller on the
/// frame path, so that the meta is built where it is used instead of being
/// copied out of a `Result` (33 instructions a frame, callgrind).
#[inline(always)]
pub fn decode(link: LinkType, frame: &[u8]) -> Result<PacketMeta, SkipReason> {
    let (l3_off, ethertype) = link::decode_link(link, frame)?;
    let ip = ip::decode_ip(frame, l3_off, ethertype)?;
    let mut meta = tcp::decode_tcp(frame, &ip)?;
    meta.mac_off = link::source_mac_offset(link, frame);
    Ok(meta)
}
