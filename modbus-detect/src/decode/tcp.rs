//! Transport layer: the TCP header fields and where the payload lies.

use super::ip::IpInfo;
use super::link::{read_u16, read_u32};
use super::{PacketMeta, SkipReason};

const TCP_MIN_HEADER_LEN: usize = 20;

/// Build the [`PacketMeta`] of the TCP segment `frame[ip.l4_off..ip.l4_end]`.
///
/// Offsets are stored as `u16` to keep the meta small; a segment that ends past
/// byte 65535 of its frame (only possible with jumbo or offloaded frames) is
/// reported as `Truncated` rather than silently cut.
pub(super) fn decode_tcp(frame: &[u8], ip: &IpInfo) -> Result<PacketMeta, SkipReason> {
    let segment = frame
        .get(ip.l4_off..ip.l4_end)
        .ok_or(SkipReason::Truncated)?;
    if segment.len() < TCP_MIN_HEADER_LEN {
        return Err(SkipReason::Truncated);
    }
    let header_len = segment
        .get(12)
        .map(|b| usize::from(b >> 4) * 4)
        .ok_or(SkipReason::Truncated)?;
    if header_len < TCP_MIN_HEADER_LEN || header_len > segment.len() {
        return Err(SkipReason::Truncated);
    }
    if ip.l4_end > usize::from(u16::MAX) {
        return Err(SkipReason::Truncated);
    }
    let payload_off = ip.l4_off + header_len;
    let payload_len = ip.l4_end - payload_off;
    let field16 = |at| read_u16(segment, at).ok_or(SkipReason::Truncated);
    let field32 = |at| read_u32(segment, at).ok_or(SkipReason::Truncated);
    let flags = *segment.get(13).ok_or(SkipReason::Truncated)?;
    // Options are read on SYNs only (the window scale is announced there):
    // every other segment costs nothing more.
    let wscale = if flags & super::tcp_flags::SYN != 0 {
        segment
            .get(TCP_MIN_HEADER_LEN..header_len)
            .and_then(window_scale)
    } else {
        None
    };
    Ok(PacketMeta {
        src: ip.src,
        dst: ip.dst,
        sport: field16(0)?,
        dport: field16(2)?,
        seq: field32(4)?,
        ack: field32(8)?,
        flags,
        window: field16(14)?,
        urgent: if flags & super::tcp_flags::URG != 0 {
            field16(18)?
        } else {
            0
        },
        payload_off: u16::try_from(payload_off).map_err(|_| SkipReason::Truncated)?,
        payload_len: u16::try_from(payload_len).map_err(|_| SkipReason::Truncated)?,
        truncated: ip.truncated,
        wscale,
        l3_off: u16::try_from(ip.l3_off).map_err(|_| SkipReason::Truncated)?,
        l4_off: u16::try_from(ip.l4_off).map_err(|_| SkipReason::Truncated)?,
        ttl: ip.ttl,
        fragments: 0,
        mac_off: 0,
    })
}

/// The window scale option (kind 3, length 3) among TCP options, capped at
/// 14 as RFC 7323 says a receiver must; `None` when absent or the options
/// are malformed before it.
fn window_scale(mut options: &[u8]) -> Option<u8> {
    const END: u8 = 0;
    const NOP: u8 = 1;
    const WSCALE: u8 = 3;
    while let Some((&kind, rest)) = options.split_first() {
        match kind {
            END => return None,
            NOP => options = rest,
            _ => {
                let len = usize::from(*rest.first()?);
                if len < 2 {
                    return None;
                }
                let body = options.get(2..len)?;
                if kind == WSCALE {
                    return body.first().map(|&s| s.min(14));
                }
                options = options.get(len..)?;
            }
        }
    }
    None
}

/// Hand-built frames shared by the decode tests.
#[cfg(test)]
pub(super) mod frames {
    use std::net::{Ipv4Addr, Ipv6Addr};

    pub const IPV4_SRC: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 20);
    pub const IPV4_DST: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 10);
    pub const IPV6_SRC: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x20);
    pub const IPV6_DST: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x10);
    pub const SPORT: u16 = 40_000;
    pub const DPORT: u16 = 502;
    pub const SEQ: u32 = 0x0102_0304;
    pub const ACK: u32 = 0xA0B0_C0D0;
    pub const FLAGS: u8 = 0x18;
    pub const WINDOW: u16 = 29_200;

    /// A TCP header with `options` (a multiple of 4 bytes), then `payload`.
    pub fn tcp_segment(options: &[u8], payload: &[u8]) -> Vec<u8> {
        let data_offset = u8::try_from((20 + options.len()) / 4).unwrap();
        let mut segment = Vec::new();
        segment.extend_from_slice(&SPORT.to_be_bytes());
        segment.extend_from_slice(&DPORT.to_be_bytes());
        segment.extend_from_slice(&SEQ.to_be_bytes());
        segment.extend_from_slice(&ACK.to_be_bytes());
        segment.extend_from_slice(&[data_offset << 4, FLAGS]);
        segment.extend_from_slice(&WINDOW.to_be_bytes());
        segment.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
        segment.extend_from_slice(options);
        segment.extend_from_slice(payload);
        segment
    }

    /// IPv4 header with `options` (a multiple of 4 bytes) around `l4`, protocol TCP.
    pub fn ipv4_packet(options: &[u8], l4: &[u8]) -> Vec<u8> {
        let header_len = 20 + options.len();
        let total = u16::try_from(header_len + l4.len()).unwrap();
        let mut packet = vec![0x40 | u8::try_from(header_len / 4).unwrap(), 0];
        packet.extend_from_slice(&total.to_be_bytes());
        packet.extend_from_slice(&[0x12, 0x34, 0x40, 0x00, 64, 6, 0, 0]);
        packet.extend_from_slice(&IPV4_SRC.octets());
        packet.extend_from_slice(&IPV4_DST.octets());
        packet.extend_from_slice(options);
        packet.extend_from_slice(l4);
        packet
    }

    /// IPv4 + a 20-byte TCP header + `payload`.
    pub fn ipv4_tcp(ip_options: &[u8], payload: &[u8]) -> Vec<u8> {
        ipv4_packet(ip_options, &tcp_segment(&[], payload))
    }

    /// An IPv6 extension header of type `kind` whose length field is `len_field`;
    /// the first byte (next header) is filled in by [`ipv6_tcp`].
    pub fn ext_header(kind: u8, len_field: u8) -> (u8, Vec<u8>) {
        let len = match kind {
            44 => 8,
            51 => (usize::from(len_field) + 2) * 4,
            _ => (usize::from(len_field) + 1) * 8,
        };
        let mut header = vec![0u8; len];
        if kind != 44 {
            header[1] = len_field;
        }
        (kind, header)
    }

    /// IPv6 with the extension headers `ext` (in order) + 20-byte TCP + `payload`.
    pub fn ipv6_tcp(ext: &[(u8, Vec<u8>)], payload: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        let kinds: Vec<u8> = ext.iter().map(|(kind, _)| *kind).chain([6]).collect();
        for (i, (_, header)) in ext.iter().enumerate() {
            body.push(kinds[i + 1]);
            body.extend_from_slice(&header[1..]);
        }
        body.extend_from_slice(&tcp_segment(&[], payload));
        let mut packet = vec![0x60, 0, 0, 0];
        packet.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        packet.extend_from_slice(&[kinds[0], 64]);
        packet.extend_from_slice(&IPV6_SRC.octets());
        packet.extend_from_slice(&IPV6_DST.octets());
        packet.extend_from_slice(&body);
        packet
    }

    /// Ethernet II with the given VLAN tag protocol ids, outermost first.
    pub fn ethernet(ethertype: u16, vlan_tpids: &[u16], l3: &[u8]) -> Vec<u8> {
        let mut frame = vec![0x02, 0, 0x5e, 0x50, 0, 0x10, 0x02, 0, 0x5e, 0x50, 0, 0x20];
        for (i, tpid) in vlan_tpids.iter().enumerate() {
            frame.extend_from_slice(&tpid.to_be_bytes());
            frame.extend_from_slice(&(100 + u16::try_from(i).unwrap()).to_be_bytes());
        }
        frame.extend_from_slice(&ethertype.to_be_bytes());
        frame.extend_from_slice(l3);
        frame
    }

    /// Linux cooked v1: packet type, ARPHRD, address length, 8 address bytes, protocol.
    pub fn sll(protocol: u16, l3: &[u8]) -> Vec<u8> {
        let mut frame = vec![0, 0, 0, 1, 0, 6, 2, 0, 0x5e, 0x50, 0, 0x20, 0, 0];
        frame.extend_from_slice(&protocol.to_be_bytes());
        frame.extend_from_slice(l3);
        frame
    }

    /// Linux cooked v2: protocol, reserved, ifindex, ARPHRD, type, addr len, 8 bytes.
    pub fn sll2(protocol: u16, l3: &[u8]) -> Vec<u8> {
        let mut frame = protocol.to_be_bytes().to_vec();
        frame.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 1, 0, 6]);
        frame.extend_from_slice(&[2, 0, 0x5e, 0x50, 0, 0x20, 0, 0]);
        frame.extend_from_slice(l3);
        frame
    }

    /// BSD loopback: the 4 address-family bytes as the capturing host wrote them.
    pub fn null_loopback(family: [u8; 4], l3: &[u8]) -> Vec<u8> {
        let mut frame = family.to_vec();
        frame.extend_from_slice(l3);
        frame
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::super::link::{ETHERTYPE_IPV4, ETHERTYPE_IPV6};
    use super::super::{decode, LinkType};
    use super::frames::*;
    use super::*;

    /// The meta of the test frames: IP header at `l3`, TCP header at `l4`.
    fn expected(src: IpAddr, dst: IpAddr, at: [u16; 4]) -> PacketMeta {
        let [l3_off, l4_off, payload_off, payload_len] = at;
        PacketMeta {
            src,
            dst,
            sport: SPORT,
            dport: DPORT,
            seq: SEQ,
            ack: ACK,
            flags: FLAGS,
            window: WINDOW,
            payload_off,
            payload_len,
            truncated: false,
            wscale: None,
            urgent: 0,
            l3_off,
            l4_off,
            ttl: 64,
            fragments: 0,
            mac_off: 6,
        }
    }

    /// The sender's address in every test frame with a link layer.
    const SRC_MAC: [u8; 6] = [0x02, 0, 0x5e, 0x50, 0, 0x20];

    /// The meta of a frame without a link-layer address (raw IP, loopback).
    fn no_mac(meta: PacketMeta) -> PacketMeta {
        PacketMeta { mac_off: 0, ..meta }
    }

    /// `[l3_off, l4_off, payload_off, payload_len]`
    fn v4_meta(at: [u16; 4]) -> PacketMeta {
        expected(IPV4_SRC.into(), IPV4_DST.into(), at)
    }

    fn v6_meta(at: [u16; 4]) -> PacketMeta {
        expected(IPV6_SRC.into(), IPV6_DST.into(), at)
    }

    #[test]
    fn window_scale_is_read_from_syn_options() {
        // MSS, NOP, window scale 7, SACK permitted, timestamps.
        let opts = [
            2, 4, 5, 0xb4, 1, 3, 3, 7, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0,
        ];
        assert_eq!(window_scale(&opts), Some(7));
        assert_eq!(window_scale(&[1, 1, 3, 3, 20]), Some(14), "capped at 14");
        assert_eq!(window_scale(&[2, 4, 5, 0xb4]), None, "absent");
        assert_eq!(window_scale(&[0, 3, 3, 7]), None, "after the end option");
        assert_eq!(window_scale(&[2, 0, 3, 3, 7]), None, "malformed length");
        assert_eq!(window_scale(&[3, 3]), None, "cut short");
    }

    #[test]
    fn ethernet_ipv4_tcp() {
        let frame = ethernet(ETHERTYPE_IPV4, &[], &ipv4_tcp(&[], b"\x00\x01modbus"));
        let meta = decode(LinkType::Ethernet, &frame).unwrap();
        assert_eq!(meta, v4_meta([14, 34, 54, 8]));
        assert_eq!(meta.src_mac(&frame), SRC_MAC);
        assert_eq!(meta.payload(&frame), b"\x00\x01modbus");
    }

    #[test]
    fn ipv4_options_and_tcp_options() {
        let segment = tcp_segment(&[2, 4, 5, 0xb4, 1, 1, 4, 2], b"abc");
        let frame = ethernet(ETHERTYPE_IPV4, &[], &ipv4_packet(&[1, 1, 1, 0], &segment));
        let meta = decode(LinkType::Ethernet, &frame).unwrap();
        assert_eq!(meta, v4_meta([14, 38, 14 + 24 + 28, 3]));
        assert_eq!(meta.payload(&frame), b"abc");
    }

    #[test]
    fn vlan_tagged() {
        let l3 = ipv4_tcp(&[], b"abc");
        let one = ethernet(ETHERTYPE_IPV4, &[0x8100], &l3);
        assert_eq!(
            decode(LinkType::Ethernet, &one),
            Ok(v4_meta([18, 38, 58, 3]))
        );
        let two = ethernet(ETHERTYPE_IPV4, &[0x88A8, 0x8100], &l3);
        assert_eq!(
            decode(LinkType::Ethernet, &two),
            Ok(v4_meta([22, 42, 62, 3]))
        );
    }

    #[test]
    fn ipv6_with_extension_headers() {
        let plain = ethernet(ETHERTYPE_IPV6, &[], &ipv6_tcp(&[], b"abc"));
        assert_eq!(
            decode(LinkType::Ethernet, &plain),
            Ok(v6_meta([14, 54, 74, 3]))
        );
        let ext = [ext_header(0, 0), ext_header(60, 1)];
        let frame = ethernet(ETHERTYPE_IPV6, &[], &ipv6_tcp(&ext, b"abc"));
        let meta = decode(LinkType::Ethernet, &frame).unwrap();
        assert_eq!(meta, v6_meta([14, 78, 74 + 8 + 16, 3]));
        assert_eq!(meta.payload(&frame), b"abc");
    }

    #[test]
    fn ipv6_fragment_is_skipped() {
        let (kind, mut header) = ext_header(44, 0);
        header[3] = 1; // M flag
        let frame = ethernet(ETHERTYPE_IPV6, &[], &ipv6_tcp(&[(kind, header)], b"abc"));
        assert_eq!(
            decode(LinkType::Ethernet, &frame),
            Err(SkipReason::IpFragment)
        );
    }

    #[test]
    fn ipv4_fragments_are_skipped() {
        for (byte6, byte7) in [(0x20, 0x00), (0x00, 0xb9)] {
            let mut frame = ethernet(ETHERTYPE_IPV4, &[], &ipv4_tcp(&[], b"abc"));
            frame[14 + 6] = byte6;
            frame[14 + 7] = byte7;
            assert_eq!(
                decode(LinkType::Ethernet, &frame),
                Err(SkipReason::IpFragment)
            );
        }
    }

    #[test]
    fn cooked_raw_and_loopback_links() {
        let v4 = ipv4_tcp(&[], b"abc");
        let v6 = ipv6_tcp(&[], b"abc");
        let cases = [
            (
                LinkType::LinuxSll,
                sll(ETHERTYPE_IPV4, &v4),
                v4_meta([16, 36, 56, 3]),
            ),
            (
                LinkType::LinuxSll2,
                sll2(ETHERTYPE_IPV6, &v6),
                PacketMeta {
                    mac_off: 12,
                    ..v6_meta([20, 60, 80, 3])
                },
            ),
            (LinkType::RawIp, v4.clone(), no_mac(v4_meta([0, 20, 40, 3]))),
            (LinkType::RawIp, v6.clone(), no_mac(v6_meta([0, 40, 60, 3]))),
            (LinkType::Ipv4, v4.clone(), no_mac(v4_meta([0, 20, 40, 3]))),
            (LinkType::Ipv6, v6.clone(), no_mac(v6_meta([0, 40, 60, 3]))),
            (
                LinkType::Null,
                null_loopback(2u32.to_le_bytes(), &v4),
                no_mac(v4_meta([4, 24, 44, 3])),
            ),
            (
                LinkType::Null,
                null_loopback(30u32.to_be_bytes(), &v6),
                no_mac(v6_meta([4, 44, 64, 3])),
            ),
        ];
        for (link, frame, meta) in cases {
            assert_eq!(decode(link, &frame), Ok(meta), "{link:?}");
            let mac = if meta.mac_off == 0 { [0; 6] } else { SRC_MAC };
            assert_eq!(meta.src_mac(&frame), mac, "{link:?}");
        }
    }

    #[test]
    fn ethernet_padding_is_not_payload() {
        let exact = ethernet(ETHERTYPE_IPV4, &[], &ipv4_tcp(&[], b"abcdef"));
        assert_eq!(exact.len(), 60);
        assert_eq!(
            decode(LinkType::Ethernet, &exact),
            Ok(v4_meta([14, 34, 54, 6]))
        );
        for payload in [&b""[..], b"ab"] {
            let mut padded = ethernet(ETHERTYPE_IPV4, &[], &ipv4_tcp(&[], payload));
            padded.resize(60, 0xAA);
            let meta = decode(LinkType::Ethernet, &padded).unwrap();
            assert_eq!(meta.payload(&padded), payload);
            assert!(!meta.truncated);
        }
    }

    #[test]
    fn ethernet_padding_after_six_byte_payload() {
        // 14 + 20 + 20 + 6 = 60 bytes exactly; add the 4-byte FCS some captures keep.
        let mut frame = ethernet(ETHERTYPE_IPV4, &[], &ipv4_tcp(&[], b"abcdef"));
        frame.extend_from_slice(&[0xDE, 0xAD, 0xBE, 0xEF]);
        let meta = decode(LinkType::Ethernet, &frame).unwrap();
        assert_eq!(meta.payload(&frame), b"abcdef");
    }

    #[test]
    fn snaplen_cut_is_reported_truncated() {
        let frame = ethernet(ETHERTYPE_IPV4, &[], &ipv4_tcp(&[], b"abcdef"));
        let meta = decode(LinkType::Ethernet, &frame[..57]).unwrap();
        assert_eq!((meta.payload_len, meta.truncated), (3, true));
    }

    #[test]
    fn arp_is_not_ip_and_udp_is_not_tcp() {
        let arp = ethernet(0x0806, &[], &[0u8; 28]);
        assert_eq!(decode(LinkType::Ethernet, &arp), Err(SkipReason::NotIp));
        let mut udp = ethernet(ETHERTYPE_IPV4, &[], &ipv4_tcp(&[], b"abc"));
        udp[14 + 9] = 17;
        assert_eq!(decode(LinkType::Ethernet, &udp), Err(SkipReason::NotTcp));
    }

    #[test]
    fn bad_data_offset_is_truncated() {
        for data_offset in [0u8, 4, 15] {
            let mut frame = ethernet(ETHERTYPE_IPV4, &[], &ipv4_tcp(&[], b"abc"));
            frame[14 + 20 + 12] = data_offset << 4;
            assert_eq!(
                decode(LinkType::Ethernet, &frame),
                Err(SkipReason::Truncated)
            );
        }
    }

    #[test]
    fn segment_ending_past_u16_offsets_is_truncated() {
        let payload = vec![0u8; 65_535 - 20 - 20];
        let mut frame = ethernet(ETHERTYPE_IPV4, &[], &ipv4_tcp(&[], &payload));
        assert!(frame.len() > usize::from(u16::MAX));
        assert_eq!(
            decode(LinkType::Ethernet, &frame),
            Err(SkipReason::Truncated)
        );
        // The same packet without the link header fits.
        frame.drain(..14);
        assert_eq!(decode(LinkType::RawIp, &frame).unwrap().payload_len, 65_495);
    }

    /// Cutting a frame anywhere must give `Truncated` inside the headers, and
    /// `Ok` (flagged truncated) once the TCP header is complete.
    #[test]
    fn every_cut_is_truncated_or_ok() {
        let frames = [
            (
                LinkType::Ethernet,
                ethernet(
                    ETHERTYPE_IPV4,
                    &[0x8100],
                    &ipv4_tcp(&[1, 1, 1, 0], b"abcdef"),
                ),
            ),
            (
                LinkType::Ethernet,
                ethernet(
                    ETHERTYPE_IPV6,
                    &[],
                    &ipv6_tcp(&[ext_header(0, 0), ext_header(44, 0)], b"abcdef"),
                ),
            ),
            (
                LinkType::LinuxSll,
                sll(ETHERTYPE_IPV4, &ipv4_tcp(&[], b"abcdef")),
            ),
            (
                LinkType::LinuxSll2,
                sll2(ETHERTYPE_IPV6, &ipv6_tcp(&[], b"abcdef")),
            ),
            (
                LinkType::Null,
                null_loopback(2u32.to_le_bytes(), &ipv4_tcp(&[], b"abcdef")),
            ),
        ];
        for (link, frame) in frames {
            let full = decode(link, &frame).unwrap();
            let headers_end = usize::from(full.payload_off);
            for cut in 0..frame.len() {
                match decode(link, &frame[..cut]) {
                    Err(SkipReason::Truncated) => assert!(cut < headers_end, "{link:?} {cut}"),
                    Ok(meta) => {
                        assert!(cut >= headers_end && meta.truncated, "{link:?} {cut}");
                        assert_eq!(
                            usize::from(meta.payload_off) + usize::from(meta.payload_len),
                            cut
                        );
                    }
                    other => panic!("{link:?} cut at {cut}: {other:?}"),
                }
            }
        }
    }

    /// Tiny xorshift so the fuzz loop needs no extra crate and is reproducible.
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn random_bytes_never_panic() {
        let links = [
            LinkType::Ethernet,
            LinkType::LinuxSll,
            LinkType::LinuxSll2,
            LinkType::RawIp,
            LinkType::Ipv4,
            LinkType::Ipv6,
            LinkType::Null,
        ];
        let templates = [
            ethernet(
                ETHERTYPE_IPV4,
                &[0x8100],
                &ipv4_tcp(&[1, 1, 1, 0], b"abcdef"),
            ),
            ethernet(
                ETHERTYPE_IPV6,
                &[],
                &ipv6_tcp(&[ext_header(0, 0), ext_header(51, 1)], b"ab"),
            ),
        ];
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut buf = [0u8; 160];
        for round in 0..200_000 {
            let len = (xorshift(&mut state) % 160) as usize;
            // Half the rounds mutate a valid frame so the deeper layers get exercised.
            let template = &templates[round % 2];
            for (i, byte) in buf.iter_mut().enumerate() {
                *byte = template.get(i).copied().unwrap_or(0);
            }
            let flips = if round % 4 < 2 { 160 } else { 3 };
            for _ in 0..flips {
                let r = xorshift(&mut state);
                buf[(r % 160) as usize] = (r >> 8) as u8;
            }
            let link = links[(xorshift(&mut state) % links.len() as u64) as usize];
            if let Ok(meta) = decode(link, &buf[..len]) {
                let end = usize::from(meta.payload_off) + usize::from(meta.payload_len);
                assert!(end <= len);
            }
        }
    }
}
