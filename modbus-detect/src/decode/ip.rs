//! Network layer: IPv4 and IPv6 down to the start and end of the TCP segment.
//!
//! The segment's end comes from the IP length fields, clamped to the captured
//! bytes, so that Ethernet padding never becomes TCP payload and a snaplen cut is
//! reported (`truncated`) instead of read past.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::link::{read_u16, read_u32, ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use super::SkipReason;

const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_DSTOPTS: u8 = 60;

const IPV4_MIN_HEADER_LEN: usize = 20;
/// IPv4 "more fragments" flag, in the flags/fragment-offset word.
const IPV4_MF: u16 = 0x2000;
const IPV4_FRAG_OFFSET_MASK: u16 = 0x1FFF;

const IPV6_HEADER_LEN: usize = 40;
const IPV6_FRAGMENT_HEADER_LEN: usize = 8;

/// Where the TCP segment lies in the frame, and between which addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct IpInfo {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Offset of the TCP header in the frame.
    pub l4_off: usize,
    /// End of the IP packet in the frame: at most the frame's length.
    pub l4_end: usize,
    /// The IP length claimed more bytes than were captured.
    pub truncated: bool,
    /// Offset of the IP header in the frame.
    pub l3_off: usize,
    /// Time to live (IPv4) or hop limit (IPv6).
    pub ttl: u8,
}

/// Decode the IP header at `l3_off`; `ethertype` says which version the link
/// layer announced.
pub(super) fn decode_ip(frame: &[u8], l3_off: usize, ethertype: u16) -> Result<IpInfo, SkipReason> {
    match ethertype {
        ETHERTYPE_IPV4 => decode_ipv4(frame, l3_off),
        ETHERTYPE_IPV6 => decode_ipv6(frame, l3_off),
        _ => Err(SkipReason::NotIp),
    }
}

/// The end of the IP packet: `l3_off + ip_len` clamped to the frame, and whether
/// it had to be clamped. An IP length of 0 is what captures of TCP segmentation
/// offload show (the NIC fills it in later), so it means "the captured bytes".
fn packet_end(frame: &[u8], l3_off: usize, ip_len: usize) -> (usize, bool) {
    if ip_len == 0 {
        return (frame.len(), false);
    }
    let claimed = l3_off.saturating_add(ip_len);
    if claimed > frame.len() {
        (frame.len(), true)
    } else {
        (claimed, false)
    }
}

fn decode_ipv4(frame: &[u8], l3_off: usize) -> Result<IpInfo, SkipReason> {
    let header = frame.get(l3_off..).ok_or(SkipReason::Truncated)?;
    let first = *header.first().ok_or(SkipReason::Truncated)?;
    let header_len = usize::from(first & 0x0F) * 4;
    if first >> 4 != 4 || header_len < IPV4_MIN_HEADER_LEN || header.len() < header_len {
        return Err(SkipReason::Truncated);
    }
    let total_len = usize::from(read_u16(header, 2).ok_or(SkipReason::Truncated)?);
    if total_len != 0 && total_len < header_len {
        return Err(SkipReason::Truncated);
    }
    let frag = read_u16(header, 6).ok_or(SkipReason::Truncated)?;
    if frag & IPV4_MF != 0 || frag & IPV4_FRAG_OFFSET_MASK != 0 {
        return Err(SkipReason::IpFragment);
    }
    if header.get(9) != Some(&IPPROTO_TCP) {
        return Err(SkipReason::NotTcp);
    }
    let src = read_u32(header, 12).ok_or(SkipReason::Truncated)?;
    let dst = read_u32(header, 16).ok_or(SkipReason::Truncated)?;
    let (l4_end, truncated) = packet_end(frame, l3_off, total_len);
    Ok(IpInfo {
        src: IpAddr::V4(Ipv4Addr::from(src)),
        dst: IpAddr::V4(Ipv4Addr::from(dst)),
        l4_off: l3_off + header_len,
        l4_end,
        truncated,
        l3_off,
        ttl: header.get(8).copied().ok_or(SkipReason::Truncated)?,
    })
}

fn read_ipv6_addr(buf: &[u8], at: usize) -> Option<IpAddr> {
    let bytes: [u8; 16] = buf.get(at..at + 16)?.try_into().ok()?;
    Some(IpAddr::V6(Ipv6Addr::from(bytes)))
}

fn decode_ipv6(frame: &[u8], l3_off: usize) -> Result<IpInfo, SkipReason> {
    let header = frame
        .get(l3_off..l3_off.saturating_add(IPV6_HEADER_LEN))
        .ok_or(SkipReason::Truncated)?;
    if header.first().map(|b| b >> 4) != Some(6) {
        return Err(SkipReason::Truncated);
    }
    let payload_len = usize::from(read_u16(header, 4).ok_or(SkipReason::Truncated)?);
    let next_header = *header.get(6).ok_or(SkipReason::Truncated)?;
    let ttl = *header.get(7).ok_or(SkipReason::Truncated)?;
    let src = read_ipv6_addr(header, 8).ok_or(SkipReason::Truncated)?;
    let dst = read_ipv6_addr(header, 24).ok_or(SkipReason::Truncated)?;
    let (l4_end, truncated) = match payload_len {
        0 => packet_end(frame, l3_off, 0),
        len => packet_end(frame, l3_off, IPV6_HEADER_LEN + len),
    };
    let l4_off = skip_extension_headers(frame, l3_off + IPV6_HEADER_LEN, l4_end, next_header)?;
    Ok(IpInfo {
        src,
        dst,
        l4_off,
        l4_end,
        truncated,
        l3_off,
        ttl,
    })
}

/// Walk the IPv6 extension-header chain that starts at `off` with header type
/// `next`; returns the offset of the TCP header. Headers must end by `end`.
/// As long a chain as the packet holds is walked (each header is at least 8
/// bytes, so the packet's length bounds the loop): a receiver walks it all,
/// and a long chain must not hide the segment from the sensor.
fn skip_extension_headers(
    frame: &[u8],
    mut off: usize,
    end: usize,
    mut next: u8,
) -> Result<usize, SkipReason> {
    let packet = frame.get(..end).ok_or(SkipReason::Truncated)?;
    loop {
        let header_len = match next {
            IPPROTO_TCP => return Ok(off),
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                // Length in 8-octet units, not counting the first 8 octets.
                (usize::from(*packet.get(off + 1).ok_or(SkipReason::Truncated)?) + 1) * 8
            }
            IPPROTO_AH => {
                // Length in 4-octet units, minus 2 (RFC 4302).
                (usize::from(*packet.get(off + 1).ok_or(SkipReason::Truncated)?) + 2) * 4
            }
            IPPROTO_FRAGMENT => {
                check_atomic_fragment(packet, off)?;
                IPV6_FRAGMENT_HEADER_LEN
            }
            // UDP, ICMPv6, ESP, "no next header" (59), ...
            _ => return Err(SkipReason::NotTcp),
        };
        next = *packet.get(off).ok_or(SkipReason::Truncated)?;
        off += header_len;
        if off > packet.len() {
            return Err(SkipReason::Truncated);
        }
    }
}

/// A fragment header is only harmless when it is an "atomic fragment" (RFC 6946):
/// offset 0 and no more fragments, i.e. the whole packet.
fn check_atomic_fragment(packet: &[u8], off: usize) -> Result<(), SkipReason> {
    if packet.len() < off + IPV6_FRAGMENT_HEADER_LEN {
        return Err(SkipReason::Truncated);
    }
    let offset_and_m = read_u16(packet, off + 2).ok_or(SkipReason::Truncated)?;
    if offset_and_m >> 3 != 0 || offset_and_m & 1 != 0 {
        return Err(SkipReason::IpFragment);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tcp::frames::{ext_header, ipv4_tcp, ipv6_tcp, IPV4_SRC, IPV6_SRC};
    use super::*;

    #[test]
    fn ipv4_plain() {
        let packet = ipv4_tcp(&[], b"abc");
        let ip = decode_ip(&packet, 0, ETHERTYPE_IPV4).unwrap();
        assert_eq!(ip.src, IpAddr::V4(IPV4_SRC));
        assert_eq!((ip.l4_off, ip.l4_end, ip.truncated), (20, 43, false));
    }

    #[test]
    fn ipv4_options_are_skipped() {
        let packet = ipv4_tcp(&[0x94, 0x04, 0, 0, 1, 1, 1, 0], b"abc");
        let ip = decode_ip(&packet, 0, ETHERTYPE_IPV4).unwrap();
        assert_eq!((ip.l4_off, ip.l4_end), (28, 51));
    }

    #[test]
    fn ipv4_ethernet_padding_is_not_payload() {
        let mut frame = ipv4_tcp(&[], b"abcdef");
        frame.resize(frame.len() + 10, 0);
        let ip = decode_ip(&frame, 0, ETHERTYPE_IPV4).unwrap();
        assert_eq!((ip.l4_end, ip.truncated), (46, false));
    }

    #[test]
    fn ipv4_snaplen_cut_is_flagged() {
        let packet = ipv4_tcp(&[], b"abcdef");
        let ip = decode_ip(&packet[..44], 0, ETHERTYPE_IPV4).unwrap();
        assert_eq!((ip.l4_end, ip.truncated), (44, true));
    }

    #[test]
    fn ipv4_zero_total_length_uses_captured_bytes() {
        let mut packet = ipv4_tcp(&[], b"abcdef");
        packet[2..4].copy_from_slice(&[0, 0]);
        let ip = decode_ip(&packet, 0, ETHERTYPE_IPV4).unwrap();
        assert_eq!((ip.l4_end, ip.truncated), (46, false));
    }

    #[test]
    fn ipv4_fragments() {
        for flags_and_offset in [0x2000u16, 0x0001, 0x2010, 0x1FFF] {
            let mut packet = ipv4_tcp(&[], b"abc");
            packet[6..8].copy_from_slice(&flags_and_offset.to_be_bytes());
            assert_eq!(
                decode_ip(&packet, 0, ETHERTYPE_IPV4),
                Err(SkipReason::IpFragment),
                "{flags_and_offset:#06x}"
            );
        }
        // Don't Fragment alone is not a fragment.
        let mut packet = ipv4_tcp(&[], b"abc");
        packet[6..8].copy_from_slice(&0x4000u16.to_be_bytes());
        assert!(decode_ip(&packet, 0, ETHERTYPE_IPV4).is_ok());
    }

    #[test]
    fn ipv4_invalid_headers() {
        let good = ipv4_tcp(&[], b"abc");
        let mut v6_nibble = good.clone();
        v6_nibble[0] = 0x65;
        let mut short_ihl = good.clone();
        short_ihl[0] = 0x44;
        let mut short_total = good.clone();
        short_total[2..4].copy_from_slice(&19u16.to_be_bytes());
        for packet in [v6_nibble, short_ihl, short_total] {
            assert_eq!(
                decode_ip(&packet, 0, ETHERTYPE_IPV4),
                Err(SkipReason::Truncated)
            );
        }
    }

    #[test]
    fn ipv4_udp_is_not_tcp() {
        let mut packet = ipv4_tcp(&[], b"abc");
        packet[9] = 17;
        assert_eq!(
            decode_ip(&packet, 0, ETHERTYPE_IPV4),
            Err(SkipReason::NotTcp)
        );
    }

    #[test]
    fn ipv6_plain() {
        let packet = ipv6_tcp(&[], b"abc");
        let ip = decode_ip(&packet, 0, ETHERTYPE_IPV6).unwrap();
        assert_eq!(ip.src, IpAddr::V6(IPV6_SRC));
        assert_eq!((ip.l4_off, ip.l4_end, ip.truncated), (40, 63, false));
    }

    #[test]
    fn ipv6_hop_by_hop_and_destination_options() {
        let hbh = ext_header(IPPROTO_HOPOPTS, 0);
        let dst = ext_header(IPPROTO_DSTOPTS, 1);
        let routing = ext_header(IPPROTO_ROUTING, 0);
        let packet = ipv6_tcp(&[hbh, routing, dst], b"abc");
        let ip = decode_ip(&packet, 0, ETHERTYPE_IPV6).unwrap();
        assert_eq!((ip.l4_off, ip.l4_end), (40 + 8 + 8 + 16, 95));
    }

    #[test]
    fn ipv6_authentication_header_length() {
        // AH with a 96-bit ICV: payload length field 4 -> (4 + 2) * 4 = 24 bytes.
        let ah = ext_header(IPPROTO_AH, 4);
        assert_eq!(ah.1.len(), 24);
        let packet = ipv6_tcp(&[ah], b"");
        let ip = decode_ip(&packet, 0, ETHERTYPE_IPV6).unwrap();
        assert_eq!(ip.l4_off, 64);
    }

    #[test]
    fn ipv6_fragment_header() {
        let atomic = ext_header(IPPROTO_FRAGMENT, 0);
        let packet = ipv6_tcp(std::slice::from_ref(&atomic), b"abc");
        assert_eq!(decode_ip(&packet, 0, ETHERTYPE_IPV6).unwrap().l4_off, 48);
        for offset_and_m in [0x0001u16, 0x0008, 0x0009] {
            let mut fragment = atomic.clone();
            fragment.1[2..4].copy_from_slice(&offset_and_m.to_be_bytes());
            let packet = ipv6_tcp(&[fragment], b"abc");
            assert_eq!(
                decode_ip(&packet, 0, ETHERTYPE_IPV6),
                Err(SkipReason::IpFragment),
                "{offset_and_m:#06x}"
            );
        }
    }

    #[test]
    fn ipv6_not_tcp() {
        for next in [17u8, 58, 59, 50] {
            let mut packet = ipv6_tcp(&[], b"abc");
            packet[6] = next;
            assert_eq!(
                decode_ip(&packet, 0, ETHERTYPE_IPV6),
                Err(SkipReason::NotTcp)
            );
        }
    }

    #[test]
    fn an_ipv6_extension_chain_is_walked_to_the_end() {
        for n in [9usize, 100, 1000] {
            let many: Vec<_> = (0..n).map(|_| ext_header(IPPROTO_DSTOPTS, 0)).collect();
            let packet = ipv6_tcp(&many, b"");
            let ip = decode_ip(&packet, 0, ETHERTYPE_IPV6).unwrap();
            assert_eq!(ip.l4_off, 40 + 8 * n);
            assert_eq!(
                decode_ip(&packet[..40 + 8 * n - 1], 0, ETHERTYPE_IPV6),
                Err(SkipReason::Truncated),
                "the chain cut before the TCP header"
            );
        }
    }

    #[test]
    fn ipv6_extension_header_past_payload_length_is_truncated() {
        let mut packet = ipv6_tcp(&[ext_header(IPPROTO_HOPOPTS, 2)], b"");
        // Payload length 8 while the hop-by-hop header claims 24 bytes.
        packet[4..6].copy_from_slice(&8u16.to_be_bytes());
        assert_eq!(
            decode_ip(&packet, 0, ETHERTYPE_IPV6),
            Err(SkipReason::Truncated)
        );
    }

    #[test]
    fn ipv6_padding_and_snaplen() {
        let mut padded = ipv6_tcp(&[], b"abc");
        padded.extend_from_slice(&[0; 7]);
        assert_eq!(decode_ip(&padded, 0, ETHERTYPE_IPV6).unwrap().l4_end, 63);
        let cut = ipv6_tcp(&[], b"abc");
        let ip = decode_ip(&cut[..61], 0, ETHERTYPE_IPV6).unwrap();
        assert_eq!((ip.l4_end, ip.truncated), (61, true));
    }

    #[test]
    fn version_mismatch_with_ethertype_is_truncated() {
        let v6 = ipv6_tcp(&[], b"");
        assert_eq!(
            decode_ip(&v6, 0, ETHERTYPE_IPV4),
            Err(SkipReason::Truncated)
        );
        let v4 = ipv4_tcp(&[], &[0; 40]);
        assert_eq!(
            decode_ip(&v4, 0, ETHERTYPE_IPV6),
            Err(SkipReason::Truncated)
        );
    }

    #[test]
    fn every_cut_of_an_ip_header_is_truncated() {
        let v4 = ipv4_tcp(&[1, 1, 1, 0], b"");
        for cut in 0..24 {
            assert_eq!(
                decode_ip(&v4[..cut], 0, ETHERTYPE_IPV4),
                Err(SkipReason::Truncated)
            );
        }
        let v6 = ipv6_tcp(&[ext_header(IPPROTO_HOPOPTS, 0)], b"");
        for cut in 0..48 {
            assert_eq!(
                decode_ip(&v6[..cut], 0, ETHERTYPE_IPV6),
                Err(SkipReason::Truncated)
            );
        }
    }
}
