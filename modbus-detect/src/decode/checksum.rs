//! IPv4 header and TCP checksums (RFC 1071), as the receiver checks them.
//!
//! A receiver drops a segment whose checksum is wrong, so such a segment
//! must not become stream data for the sensor either: an attacker who
//! inserts bad-checksum copies would otherwise show the sensor bytes the
//! PLC never takes. Verified in the shard, on bytes it reads anyway for
//! reassembly; the sum runs over 64-bit words (a Modbus frame is a handful
//! of them).
//!
//! Frames a capturing host sent itself may carry what its NIC was to fill
//! in (TX checksum offload): a TCP checksum holding only the pseudo-header
//! sum, or zero. [`verify`] tells such an "offloaded" shape apart from a
//! plainly wrong one; the shard decides per connection side whether it
//! trusts the shape (see `shard`), so that an attacker cannot forge it.

use std::net::IpAddr;

use super::PacketMeta;

const IPPROTO_TCP: u64 = 6;

/// What a segment's checksums say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checksum {
    /// Both right (the IPv4 header's, where there is one, and the TCP one).
    Valid,
    /// Not right, but in the shape TX checksum offload leaves: the TCP
    /// field holds the pseudo-header sum or zero (and the IPv4 header's is
    /// right or zero).
    Offloaded,
    /// Wrong: the receiver drops the segment.
    Bad,
    /// The capture cut the segment short (snaplen): nothing to check with.
    Unverifiable,
}

/// Check the checksums of the segment `meta` was decoded from in `frame`.
pub fn verify(frame: &[u8], meta: &PacketMeta) -> Checksum {
    if meta.truncated {
        return Checksum::Unverifiable;
    }
    let (l3, l4) = (usize::from(meta.l3_off), usize::from(meta.l4_off));
    let end = usize::from(meta.payload_off) + usize::from(meta.payload_len);
    let Some(segment) = frame.get(l4..end) else {
        return Checksum::Unverifiable;
    };
    let ip_header = match (meta.src, frame.get(l3..l4)) {
        (IpAddr::V4(_), Some(h)) => Some(h),
        (IpAddr::V4(_), None) => return Checksum::Unverifiable,
        (IpAddr::V6(_), _) => None,
    };
    // An IPv4 header checksum of zero is what a NIC that computes it leaves.
    let ip_state = ip_header.map(|h| {
        if fold(sum(h, 0)) == 0xFFFF {
            Checksum::Valid
        } else if h.get(10..12) == Some(&[0, 0]) {
            Checksum::Offloaded
        } else {
            Checksum::Bad
        }
    });
    if ip_state == Some(Checksum::Bad) {
        return Checksum::Bad;
    }
    let pseudo = pseudo_header(meta.src, meta.dst, segment.len());
    let tcp_ok = fold(sum(segment, pseudo)) == 0xFFFF;
    let field = segment
        .get(16..18)
        .map_or(0, |f| u16::from_be_bytes([f[0], f[1]]));
    match (tcp_ok, ip_state) {
        (true, None | Some(Checksum::Valid)) => Checksum::Valid,
        (true, _) => Checksum::Offloaded,
        (false, _) if field == 0 || field == fold(pseudo) => Checksum::Offloaded,
        (false, _) => Checksum::Bad,
    }
}

/// The pseudo-header's sum (RFC 9293 3.1, RFC 8200 8.1): addresses,
/// protocol and TCP length. An address read as one big-endian number is
/// its words' sum modulo 0xFFFF (2^16 is 1 there), which is all a
/// one's-complement sum keeps.
fn pseudo_header(src: IpAddr, dst: IpAddr, tcp_len: usize) -> u64 {
    let addrs = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => u64::from(s.to_bits()) + u64::from(d.to_bits()),
        (s, d) => {
            let bits = |a: IpAddr| match a {
                IpAddr::V4(v4) => v4.to_ipv6_mapped().to_bits(),
                IpAddr::V6(v6) => v6.to_bits(),
            };
            let halves = |b: u128| add((b >> 64) as u64, b as u64);
            add(halves(bits(s)), halves(bits(d)))
        }
    };
    add(addrs, IPPROTO_TCP + tcp_len as u64)
}

/// One's-complement addition with the carry wrapped around.
#[inline(always)]
fn add(a: u64, b: u64) -> u64 {
    let (s, carry) = a.overflowing_add(b);
    s + u64::from(carry)
}

/// One's-complement sum of `bytes` as big-endian 16-bit words, onto `acc`
/// (an odd last byte padded with zero). The sum does not depend on byte
/// order (RFC 1071 2.B): words are added as the machine reads them, eight
/// bytes at a time with the carry wrapped around, and the folded 16-bit
/// result is put in network order once, instead of swapping every word.
#[inline]
fn sum(bytes: &[u8], acc: u64) -> u64 {
    let mut native = 0u64;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        if let Ok(w) = <[u8; 8]>::try_from(w) {
            native = add(native, u64::from_ne_bytes(w));
        }
    }
    let mut rest = words.remainder();
    if let Some((w, more)) = rest.split_first_chunk::<4>() {
        native = add(native, u64::from(u32::from_ne_bytes(*w)));
        rest = more;
    }
    if let Some((w, more)) = rest.split_first_chunk::<2>() {
        native = add(native, u64::from(u16::from_ne_bytes(*w)));
        rest = more;
    }
    if let [last] = rest {
        native = add(native, u64::from(u16::from_ne_bytes([*last, 0])));
    }
    // Byte-swapped, the native sum is the network-order one modulo 0xFFFF
    // (a byte's weight is 1 or 2^8 there, by the parity of its place).
    add(acc, native.to_be())
}

/// The checksum a header (its checksum field zero) must carry: what a
/// sender writes, for a packet the sensor rebuilds (IP reassembly).
pub fn header_checksum(header: &[u8]) -> u16 {
    !fold(sum(header, 0))
}

/// Fold a 64-bit one's-complement sum to 16 bits: the same value modulo
/// 0xFFFF, zero only for zero. Four steps without a loop: 33 bits after
/// the first, 18 after the second, at most 0x10002 after the third.
#[inline]
fn fold(acc: u64) -> u16 {
    let a = (acc & 0xFFFF_FFFF) + (acc >> 32);
    let a = (a & 0xFFFF) + (a >> 16);
    let a = (a & 0xFFFF) + (a >> 16);
    let a = (a & 0xFFFF) + (a >> 16);
    a as u16
}

#[cfg(test)]
mod tests {
    use super::super::tcp::frames::{ipv4_tcp, ipv6_tcp};
    use super::super::{decode, LinkType};
    use super::*;

    /// The checksum a correct sender writes: the complement of the sum with
    /// the field zero, computed here the slow way, 16 bits at a time.
    fn reference(words: &[u8], pseudo: &[u8]) -> u16 {
        let mut s: u32 = 0;
        for chunk in pseudo.chunks(2).chain(words.chunks(2)) {
            let w = u32::from(chunk[0]) << 8 | u32::from(*chunk.get(1).unwrap_or(&0));
            s += w;
        }
        while s >> 16 != 0 {
            s = (s & 0xFFFF) + (s >> 16);
        }
        !(s as u16)
    }

    /// Fill in both checksums of an IPv4 packet the slow way.
    fn seal_v4(p: &mut [u8]) {
        p[10..12].fill(0);
        let ip = reference(&p[..20], &[]);
        p[10..12].copy_from_slice(&ip.to_be_bytes());
        let tcp_len = (p.len() - 20) as u16;
        let mut pseudo = p[12..20].to_vec();
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&tcp_len.to_be_bytes());
        p[36..38].fill(0);
        let tcp = reference(&p[20..], &pseudo);
        p[36..38].copy_from_slice(&tcp.to_be_bytes());
    }

    fn check(packet: &[u8], link: LinkType) -> Checksum {
        let meta = decode(link, packet).unwrap();
        verify(packet, &meta)
    }

    #[test]
    fn correct_checksums_are_valid_for_every_payload_length() {
        for len in 0..40 {
            let payload: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let mut p = ipv4_tcp(&[], &payload);
            seal_v4(&mut p);
            assert_eq!(check(&p, LinkType::Ipv4), Checksum::Valid, "len {len}");
            // Any flipped bit in the TCP segment or the IP header is caught.
            for at in [5usize, 13, 24, 37, p.len() - 1] {
                let mut bad = p.clone();
                bad[at] ^= 0x40;
                assert_eq!(
                    check(&bad, LinkType::Ipv4),
                    Checksum::Bad,
                    "len {len} at {at}"
                );
            }
        }
    }

    #[test]
    fn offload_shapes_are_told_apart_from_wrong_sums() {
        let mut p = ipv4_tcp(&[], b"\x00\x01\x00\x00\x00\x06\x01\x06\x00\x01\x00\x07");
        seal_v4(&mut p);
        // The pseudo-header sum alone, as Linux leaves it for the NIC.
        let mut pseudo = p[12..20].to_vec();
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&((p.len() - 20) as u16).to_be_bytes());
        let partial = !reference(&[], &pseudo);
        let mut offloaded = p.clone();
        offloaded[36..38].copy_from_slice(&partial.to_be_bytes());
        assert_eq!(check(&offloaded, LinkType::Ipv4), Checksum::Offloaded);
        let mut zero = p.clone();
        zero[36..38].fill(0);
        assert_eq!(check(&zero, LinkType::Ipv4), Checksum::Offloaded);
        let mut ip_zero = p.clone();
        ip_zero[10..12].fill(0);
        assert_eq!(check(&ip_zero, LinkType::Ipv4), Checksum::Offloaded);
        let mut wrong = p.clone();
        wrong[36..38].copy_from_slice(&partial.wrapping_add(1).to_be_bytes());
        assert_eq!(check(&wrong, LinkType::Ipv4), Checksum::Bad);
    }

    #[test]
    fn ipv6_uses_its_pseudo_header() {
        let mut p = ipv6_tcp(&[], b"abcde");
        let tcp_len = (p.len() - 40) as u32;
        let mut pseudo = p[8..40].to_vec();
        pseudo.extend_from_slice(&tcp_len.to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 6]);
        p[56..58].fill(0);
        let sum = reference(&p[40..], &pseudo);
        p[56..58].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(check(&p, LinkType::Ipv6), Checksum::Valid);
        p[60] ^= 1;
        assert_eq!(check(&p, LinkType::Ipv6), Checksum::Bad);
    }

    /// The word-at-a-time sum is the slow 16-bit one modulo 0xFFFF, for
    /// every length and every alignment of the slice, with carries.
    #[test]
    fn the_fast_sum_is_the_sixteen_bit_sum() {
        let bytes: Vec<u8> = (0..90u32)
            .map(|i| {
                if i % 5 == 0 {
                    0xFF
                } else {
                    (i * 151 + 7) as u8
                }
            })
            .collect();
        let ones = vec![0xFFu8; 90];
        for data in [&bytes, &ones] {
            for start in 0..8 {
                for len in 0..=(data.len() - start) {
                    let slice = &data[start..start + len];
                    let want = !reference(slice, &[]);
                    let got = fold(sum(slice, 0));
                    assert_eq!(
                        u32::from(got) % 0xFFFF,
                        u32::from(want) % 0xFFFF,
                        "start {start} len {len}"
                    );
                }
            }
        }
    }

    #[test]
    fn folding_keeps_the_value_modulo_ffff_and_zero_only_for_zero() {
        let edges = [
            0u64,
            1,
            0xFFFF,
            0x1_0000,
            0x1_FFFE,
            0xFFFF_FFFF,
            0x1_0000_FFFF,
            0xFFFF_FFFF_FFFF,
            u64::MAX - 1,
            u64::MAX,
        ];
        let spread = (0..4096u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        for x in edges.into_iter().chain(spread) {
            let f = fold(x);
            assert_eq!(u64::from(f) % 0xFFFF, x % 0xFFFF, "{x:#x}");
            assert_eq!(f == 0, x == 0, "{x:#x}");
        }
    }

    #[test]
    fn a_snaplen_cut_is_unverifiable() {
        let mut p = ipv4_tcp(&[], b"abcdefgh");
        seal_v4(&mut p);
        assert_eq!(check(&p[..44], LinkType::Ipv4), Checksum::Unverifiable);
    }
}
