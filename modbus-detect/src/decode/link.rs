//! Link layer: find where the IP header starts and which IP version it claims.
//!
//! Every supported link type reduces to "an offset and an ethertype" so that the
//! IP decoder never needs to know what carried the packet.

use super::SkipReason;

/// Ethertype of IPv4, also used as the normalised "IPv4 follows" tag.
pub(super) const ETHERTYPE_IPV4: u16 = 0x0800;
/// Ethertype of IPv6, also used as the normalised "IPv6 follows" tag.
pub(super) const ETHERTYPE_IPV6: u16 = 0x86DD;

/// 802.1Q, 802.1ad (QinQ outer tag) or the pre-standard 0x9100 QinQ tag?
/// A `matches!` compiles to two compares; `[..].contains` was an outlined
/// call, 36 instructions per frame (callgrind, 2 M-frame replay).
#[inline(always)]
fn is_vlan_tpid(ethertype: u16) -> bool {
    matches!(ethertype, 0x8100 | 0x88A8 | 0x9100)
}

const ETHERNET_HEADER_LEN: usize = 14;
/// Linux "cooked" capture v1: the protocol is the last field of a 16-byte header.
const SLL_HEADER_LEN: usize = 16;
const SLL_PROTOCOL_OFF: usize = 14;
/// Linux "cooked" capture v2: the protocol is the first field of a 20-byte header.
const SLL2_HEADER_LEN: usize = 20;
const SLL2_PROTOCOL_OFF: usize = 0;
/// BSD loopback: a 4-byte address family in the capturing host's byte order.
const NULL_HEADER_LEN: usize = 4;

/// `AF_INET` is 2 on every OS that writes DLT_NULL captures.
const AF_INET: u32 = 2;
/// `AF_INET6` differs per OS: Linux 10, NetBSD/OpenBSD 24, FreeBSD 28, Darwin 30.
const AF_INET6: [u32; 4] = [10, 24, 28, 30];

/// The link-layer header type of a capture (interface), from its pcap LINKTYPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkType {
    /// Ethernet II, optionally with up to two VLAN tags.
    Ethernet,
    /// Linux cooked capture v1 (`any` device).
    LinuxSll,
    /// Linux cooked capture v2.
    LinuxSll2,
    /// Raw IP: the version nibble says IPv4 or IPv6.
    RawIp,
    /// Raw IPv4 only.
    Ipv4,
    /// Raw IPv6 only.
    Ipv6,
    /// BSD loopback (4-byte address family header).
    Null,
    /// Anything else, with its LINKTYPE value for the report.
    Unsupported(u32),
}

impl LinkType {
    /// Map a pcap LINKTYPE (or the DLT value some writers store instead) to a link type.
    pub fn from_dlt(dlt: u32) -> LinkType {
        match dlt {
            1 => LinkType::Ethernet,
            113 => LinkType::LinuxSll,
            276 => LinkType::LinuxSll2,
            // 101 is LINKTYPE_RAW; 12 and 14 are the DLT_RAW values BSDs wrote into old files.
            101 | 12 | 14 => LinkType::RawIp,
            228 => LinkType::Ipv4,
            229 => LinkType::Ipv6,
            // 108 (LINKTYPE_LOOP) is DLT_NULL in network byte order; `decode_null`
            // accepts either byte order, so both share one decoder.
            0 | 108 => LinkType::Null,
            other => LinkType::Unsupported(other),
        }
    }
}

/// Big-endian u16 at `at`, or `None` if the buffer is too short.
pub(super) fn read_u16(buf: &[u8], at: usize) -> Option<u16> {
    let bytes = buf.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes(bytes.try_into().ok()?))
}

/// Big-endian u32 at `at`, or `None` if the buffer is too short.
pub(super) fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    let bytes = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

/// Strip the link header: returns the offset of the IP header and its ethertype
/// ([`ETHERTYPE_IPV4`] or [`ETHERTYPE_IPV6`]).
pub(super) fn decode_link(link: LinkType, frame: &[u8]) -> Result<(usize, u16), SkipReason> {
    match link {
        LinkType::Ethernet => decode_ethertype_at(frame, 12, ETHERNET_HEADER_LEN),
        LinkType::LinuxSll => decode_ethertype_at(frame, SLL_PROTOCOL_OFF, SLL_HEADER_LEN),
        LinkType::LinuxSll2 => decode_ethertype_at(frame, SLL2_PROTOCOL_OFF, SLL2_HEADER_LEN),
        LinkType::RawIp => decode_raw(frame),
        LinkType::Ipv4 => Ok((0, ETHERTYPE_IPV4)),
        LinkType::Ipv6 => Ok((0, ETHERTYPE_IPV6)),
        LinkType::Null => decode_null(frame),
        LinkType::Unsupported(_) => Err(SkipReason::UnsupportedLinkType),
    }
}

/// Where the sender's MAC address is: Ethernet's source, or a cooked
/// capture's link-layer address when it is 6 bytes long; 0 when there is
/// none. Only called for frames whose link header was decoded whole.
#[inline(always)]
pub(super) fn source_mac_offset(link: LinkType, frame: &[u8]) -> u8 {
    match link {
        LinkType::Ethernet => 6,
        // SLL: address length at 4..6, address at 6..14.
        LinkType::LinuxSll if read_u16(frame, 4) == Some(6) => 6,
        // SLL2: address length at 11, address at 12..20.
        LinkType::LinuxSll2 if frame.get(11) == Some(&6) => 12,
        _ => 0,
    }
}

/// Headers that carry an ethertype (Ethernet, SLL, SLL2): read it at `type_off`,
/// then skip VLAN tags that follow the fixed header of `header_len` bytes.
fn decode_ethertype_at(
    frame: &[u8],
    type_off: usize,
    header_len: usize,
) -> Result<(usize, u16), SkipReason> {
    if frame.len() < header_len {
        return Err(SkipReason::Truncated);
    }
    let ethertype = read_u16(frame, type_off).ok_or(SkipReason::Truncated)?;
    let (off, ethertype) = skip_vlan_tags(frame, header_len, ethertype)?;
    match ethertype {
        ETHERTYPE_IPV4 | ETHERTYPE_IPV6 => Ok((off, ethertype)),
        _ => Err(SkipReason::NotIp),
    }
}

/// Each tag is 4 bytes: TCI (2) then the next ethertype (2). As many tags
/// as the frame holds are skipped (the frame's length bounds the loop): a
/// stack of tags must not hide the packet from the sensor while a switch
/// still delivers it.
fn skip_vlan_tags(
    frame: &[u8],
    mut off: usize,
    mut ethertype: u16,
) -> Result<(usize, u16), SkipReason> {
    while is_vlan_tpid(ethertype) {
        ethertype = read_u16(frame, off + 2).ok_or(SkipReason::Truncated)?;
        off += 4;
    }
    Ok((off, ethertype))
}

/// Raw IP: the first nibble is the IP version.
fn decode_raw(frame: &[u8]) -> Result<(usize, u16), SkipReason> {
    let first = frame.first().ok_or(SkipReason::Truncated)?;
    match first >> 4 {
        4 => Ok((0, ETHERTYPE_IPV4)),
        6 => Ok((0, ETHERTYPE_IPV6)),
        _ => Err(SkipReason::NotIp),
    }
}

/// BSD loopback: the family was written in the capturing host's byte order, which
/// the file does not record, so accept the value read either way round.
fn decode_null(frame: &[u8]) -> Result<(usize, u16), SkipReason> {
    let be = read_u32(frame, 0).ok_or(SkipReason::Truncated)?;
    let le = be.swap_bytes();
    let family_is = |af: u32| be == af || le == af;
    if family_is(AF_INET) {
        Ok((NULL_HEADER_LEN, ETHERTYPE_IPV4))
    } else if AF_INET6.into_iter().any(family_is) {
        Ok((NULL_HEADER_LEN, ETHERTYPE_IPV6))
    } else {
        Err(SkipReason::NotIp)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tcp::frames::{ethernet, ipv4_tcp, ipv6_tcp, null_loopback, sll, sll2};
    use super::*;

    #[test]
    fn from_dlt_maps_known_values() {
        assert_eq!(LinkType::from_dlt(1), LinkType::Ethernet);
        assert_eq!(LinkType::from_dlt(113), LinkType::LinuxSll);
        assert_eq!(LinkType::from_dlt(276), LinkType::LinuxSll2);
        assert_eq!(LinkType::from_dlt(101), LinkType::RawIp);
        assert_eq!(LinkType::from_dlt(12), LinkType::RawIp);
        assert_eq!(LinkType::from_dlt(14), LinkType::RawIp);
        assert_eq!(LinkType::from_dlt(228), LinkType::Ipv4);
        assert_eq!(LinkType::from_dlt(229), LinkType::Ipv6);
        assert_eq!(LinkType::from_dlt(0), LinkType::Null);
        assert_eq!(LinkType::from_dlt(108), LinkType::Null);
        assert_eq!(LinkType::from_dlt(105), LinkType::Unsupported(105));
    }

    #[test]
    fn ethernet_ipv4_and_ipv6() {
        let v4 = ethernet(ETHERTYPE_IPV4, &[], &ipv4_tcp(&[], b"x"));
        assert_eq!(
            decode_link(LinkType::Ethernet, &v4),
            Ok((14, ETHERTYPE_IPV4))
        );
        let v6 = ethernet(ETHERTYPE_IPV6, &[], &ipv6_tcp(&[], b"x"));
        assert_eq!(
            decode_link(LinkType::Ethernet, &v6),
            Ok((14, ETHERTYPE_IPV6))
        );
    }

    #[test]
    fn vlan_tags_are_skipped() {
        let l3 = ipv4_tcp(&[], b"x");
        let one = ethernet(ETHERTYPE_IPV4, &[0x8100], &l3);
        assert_eq!(
            decode_link(LinkType::Ethernet, &one),
            Ok((18, ETHERTYPE_IPV4))
        );
        let two = ethernet(ETHERTYPE_IPV4, &[0x88A8, 0x8100], &l3);
        assert_eq!(
            decode_link(LinkType::Ethernet, &two),
            Ok((22, ETHERTYPE_IPV4))
        );
        let old_qinq = ethernet(ETHERTYPE_IPV4, &[0x9100, 0x8100], &l3);
        assert_eq!(
            decode_link(LinkType::Ethernet, &old_qinq),
            Ok((22, ETHERTYPE_IPV4))
        );
    }

    #[test]
    fn any_number_of_vlan_tags_is_skipped() {
        for n in [3usize, 8, 100] {
            let tags = vec![0x8100; n];
            let frame = ethernet(ETHERTYPE_IPV4, &tags, &ipv4_tcp(&[], b""));
            assert_eq!(
                decode_link(LinkType::Ethernet, &frame),
                Ok((14 + 4 * n, ETHERTYPE_IPV4))
            );
            // Cut inside the tags: truncated, not misread.
            let cut = &frame[..14 + 4 * n - 3];
            assert_eq!(
                decode_link(LinkType::Ethernet, cut),
                Err(SkipReason::Truncated)
            );
        }
    }

    #[test]
    fn arp_and_llc_are_not_ip() {
        let arp = ethernet(0x0806, &[], &[0u8; 28]);
        assert_eq!(
            decode_link(LinkType::Ethernet, &arp),
            Err(SkipReason::NotIp)
        );
        let llc = ethernet(0x0026, &[], &[0u8; 46]);
        assert_eq!(
            decode_link(LinkType::Ethernet, &llc),
            Err(SkipReason::NotIp)
        );
    }

    #[test]
    fn cooked_captures() {
        let l3 = ipv4_tcp(&[], b"x");
        assert_eq!(
            decode_link(LinkType::LinuxSll, &sll(ETHERTYPE_IPV4, &l3)),
            Ok((16, ETHERTYPE_IPV4))
        );
        assert_eq!(
            decode_link(LinkType::LinuxSll2, &sll2(ETHERTYPE_IPV4, &l3)),
            Ok((20, ETHERTYPE_IPV4))
        );
        assert_eq!(
            decode_link(LinkType::LinuxSll, &sll(0x0004, &l3)),
            Err(SkipReason::NotIp)
        );
    }

    #[test]
    fn raw_ip_uses_version_nibble() {
        let v4 = ipv4_tcp(&[], b"x");
        let v6 = ipv6_tcp(&[], b"x");
        assert_eq!(decode_link(LinkType::RawIp, &v4), Ok((0, ETHERTYPE_IPV4)));
        assert_eq!(decode_link(LinkType::RawIp, &v6), Ok((0, ETHERTYPE_IPV6)));
        assert_eq!(
            decode_link(LinkType::RawIp, &[0x50]),
            Err(SkipReason::NotIp)
        );
        assert_eq!(
            decode_link(LinkType::RawIp, &[]),
            Err(SkipReason::Truncated)
        );
        assert_eq!(decode_link(LinkType::Ipv4, &v4), Ok((0, ETHERTYPE_IPV4)));
        assert_eq!(decode_link(LinkType::Ipv6, &v6), Ok((0, ETHERTYPE_IPV6)));
    }

    #[test]
    fn null_loopback_either_byte_order() {
        let l3 = ipv4_tcp(&[], b"x");
        for family in [2u32.to_le_bytes(), 2u32.to_be_bytes()] {
            let frame = null_loopback(family, &l3);
            assert_eq!(decode_link(LinkType::Null, &frame), Ok((4, ETHERTYPE_IPV4)));
        }
        for af in AF_INET6 {
            let frame = null_loopback(af.to_le_bytes(), &ipv6_tcp(&[], b""));
            assert_eq!(decode_link(LinkType::Null, &frame), Ok((4, ETHERTYPE_IPV6)));
        }
        let ipx = null_loopback(23u32.to_le_bytes(), &l3);
        assert_eq!(decode_link(LinkType::Null, &ipx), Err(SkipReason::NotIp));
    }

    #[test]
    fn unsupported_link_type() {
        assert_eq!(
            decode_link(LinkType::Unsupported(147), &[0u8; 64]),
            Err(SkipReason::UnsupportedLinkType)
        );
    }

    #[test]
    fn every_cut_of_a_link_header_is_truncated() {
        let l3 = ipv4_tcp(&[], b"");
        let cases = [
            (
                LinkType::Ethernet,
                ethernet(ETHERTYPE_IPV4, &[0x88A8, 0x8100], &l3),
                22,
            ),
            (LinkType::LinuxSll, sll(ETHERTYPE_IPV4, &l3), 16),
            (LinkType::LinuxSll2, sll2(ETHERTYPE_IPV4, &l3), 20),
            (LinkType::Null, null_loopback(2u32.to_le_bytes(), &l3), 4),
        ];
        for (link, frame, header_len) in cases {
            for cut in 0..header_len {
                assert_eq!(
                    decode_link(link, &frame[..cut]),
                    Err(SkipReason::Truncated),
                    "{link:?} cut at {cut}"
                );
            }
        }
    }
}
