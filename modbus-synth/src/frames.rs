//! Ethernet II + IPv4 + TCP encoding.
//!
//! Deliberately written from the RFCs rather than shared with the project's
//! decoder: if both sides came from one definition, a misreading of the wire
//! format would be baked into both and the integration tests could not see it.

use std::io;
use std::net::Ipv4Addr;

/// TCP flag bits, for [`crate::Conversation::segment`].
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_URG: u8 = 0x20;
pub const TCP_ACK: u8 = 0x10;

const IPV4_HDR_LEN: usize = 20;
const TCP_HDR_LEN: usize = 20;
const ETHERTYPE_IPV4: u16 = 0x0800;
const IPPROTO_TCP: u8 = 6;
/// The time to live a Linux host sends with.
pub const DEFAULT_TTL: u8 = 64;
/// "Don't fragment", as every modern stack sets it.
const IP_FLAG_DF: u16 = 0x4000;
/// A NIC pads shorter frames on the wire, and captures taken on a SPAN port
/// keep that padding; emitting it checks that decoders trust the IP total
/// length rather than the frame length.
const MIN_ETH_FRAME: usize = 60;

/// Largest TCP payload one option-less IPv4 packet can carry.
pub const MAX_TCP_PAYLOAD: usize = u16::MAX as usize - IPV4_HDR_LEN - TCP_HDR_LEN;

/// One TCP segment to encode, with everything the headers need.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'a> {
    pub src: Ipv4Addr,
    pub src_port: u16,
    pub dst: Ipv4Addr,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub ip_id: u16,
    /// The urgent pointer (meaningful with URG in `flags`).
    pub urgent: u16,
    /// Time to live as the frame passes the capture point.
    pub ttl: u8,
    /// Captured on the sender with TX checksum offload: the TCP checksum
    /// holds only the pseudo-header sum, for the NIC to finish.
    pub offloaded: bool,
    pub payload: &'a [u8],
}

impl Segment<'_> {
    /// Encodes the whole Ethernet frame into `buf` (cleared first), so callers
    /// can reuse one buffer for millions of frames.
    pub fn encode_into(&self, buf: &mut Vec<u8>) -> io::Result<()> {
        let ip_total = u16::try_from(IPV4_HDR_LEN + TCP_HDR_LEN + self.payload.len())
            .map_err(|_| invalid("TCP payload too large for one IPv4 packet"))?;
        buf.clear();
        self.put_ethernet(buf);
        self.put_ipv4(buf, ip_total);
        self.put_tcp(buf);
        if buf.len() < MIN_ETH_FRAME {
            buf.resize(MIN_ETH_FRAME, 0);
        }
        Ok(())
    }

    fn put_ethernet(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&mac_for(self.dst));
        buf.extend_from_slice(&mac_for(self.src));
        buf.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    }

    fn put_ipv4(&self, buf: &mut Vec<u8>, total_len: u16) {
        let start = buf.len();
        buf.extend_from_slice(&[0x45, 0x00]); // version 4, IHL 5 words; DSCP/ECN 0
        buf.extend_from_slice(&total_len.to_be_bytes());
        buf.extend_from_slice(&self.ip_id.to_be_bytes());
        buf.extend_from_slice(&IP_FLAG_DF.to_be_bytes());
        buf.extend_from_slice(&[self.ttl, IPPROTO_TCP, 0, 0]); // checksum patched below
        buf.extend_from_slice(&self.src.octets());
        buf.extend_from_slice(&self.dst.octets());
        let sum = fold_checksum(sum_words(0, &buf[start..]));
        buf[start + 10..start + 12].copy_from_slice(&sum.to_be_bytes());
    }

    fn put_tcp(&self, buf: &mut Vec<u8>) {
        let start = buf.len();
        buf.extend_from_slice(&self.src_port.to_be_bytes());
        buf.extend_from_slice(&self.dst_port.to_be_bytes());
        buf.extend_from_slice(&self.seq.to_be_bytes());
        buf.extend_from_slice(&self.ack.to_be_bytes());
        buf.extend_from_slice(&[0x50, self.flags]); // data offset 5 words, no options
        buf.extend_from_slice(&self.window.to_be_bytes());
        buf.extend_from_slice(&[0, 0]); // checksum, patched below
        buf.extend_from_slice(&self.urgent.to_be_bytes());
        buf.extend_from_slice(self.payload);
        let pseudo = self.pseudo_header_sum(buf.len() - start);
        let sum = if self.offloaded {
            !fold_checksum(pseudo)
        } else {
            fold_checksum(sum_words(pseudo, &buf[start..]))
        };
        buf[start + 16..start + 18].copy_from_slice(&sum.to_be_bytes());
    }

    /// RFC 793 pseudo-header: addresses, protocol and TCP length.
    fn pseudo_header_sum(&self, tcp_len: usize) -> u64 {
        let sum = sum_words(0, &self.src.octets());
        let sum = sum_words(sum, &self.dst.octets());
        // tcp_len is bounded by encode_into's IPv4 length check.
        sum + u64::from(IPPROTO_TCP) + tcp_len as u64
    }
}

/// Stable, locally administered MAC for an address, so every host keeps one
/// MAC for the whole capture like a real device would.
fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = ip.octets();
    [0x02, 0x00, a, b, c, d]
}

/// Adds `data` as big-endian 16-bit words (odd tail padded with zero) to `sum`.
fn sum_words(mut sum: u64, data: &[u8]) -> u64 {
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

/// Internet checksum: fold carries back in, then take the one's complement.
fn fold_checksum(mut sum: u64) -> u16 {
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    // The loop leaves at most 16 significant bits.
    !u16::try_from(sum).unwrap_or(u16::MAX)
}

/// The checksum an IPv4 header (its checksum field zero) must carry.
pub fn ipv4_header_checksum(header: &[u8]) -> u16 {
    fold_checksum(sum_words(0, header))
}

pub fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(payload: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        Segment {
            src: Ipv4Addr::new(10, 1, 0, 1),
            src_port: 50000,
            dst: Ipv4Addr::new(10, 2, 0, 1),
            dst_port: 502,
            seq: 0x0102_0304,
            ack: 0x0A0B_0C0D,
            flags: TCP_PSH | TCP_ACK,
            window: 64240,
            ip_id: 7,
            urgent: 0,
            ttl: DEFAULT_TTL,
            offloaded: false,
            payload,
        }
        .encode_into(&mut buf)
        .expect("encodes");
        buf
    }

    #[test]
    fn headers_are_laid_out_per_rfc() {
        let payload = [0xAAu8; 12];
        let f = sample(&payload);
        assert_eq!(f.len(), 14 + 20 + 20 + 12);
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        assert_eq!(&f[0..6], &[2, 0, 10, 2, 0, 1]);
        assert_eq!(f[14], 0x45);
        assert_eq!(u16::from_be_bytes([f[16], f[17]]), 52);
        assert_eq!(f[23], 6);
        assert_eq!(&f[26..30], &[10, 1, 0, 1]);
        assert_eq!(u16::from_be_bytes([f[34], f[35]]), 50000);
        assert_eq!(u16::from_be_bytes([f[36], f[37]]), 502);
        assert_eq!(
            u32::from_be_bytes([f[38], f[39], f[40], f[41]]),
            0x0102_0304
        );
        assert_eq!(f[46], 0x50);
        assert_eq!(f[47], TCP_PSH | TCP_ACK);
        assert_eq!(&f[54..], &payload);
    }

    #[test]
    fn checksums_verify_to_zero() {
        for len in [0usize, 1, 2, 7, 12, 300] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 37) as u8).collect();
            let f = sample(&payload);
            assert_eq!(fold_checksum(sum_words(0, &f[14..34])), 0, "ip, len {len}");
            let tcp_len = 20 + len;
            let pseudo = sum_words(sum_words(0, &f[26..30]), &f[30..34]) + 6 + tcp_len as u64;
            let tcp = &f[34..34 + tcp_len];
            assert_eq!(fold_checksum(sum_words(pseudo, tcp)), 0, "tcp, len {len}");
        }
    }

    #[test]
    fn short_frames_are_padded_to_ethernet_minimum() {
        let f = sample(&[]);
        assert_eq!(f.len(), 60);
        assert_eq!(u16::from_be_bytes([f[16], f[17]]), 40);
        assert!(f[54..].iter().all(|&b| b == 0));
    }

    #[test]
    fn oversized_payload_is_rejected() {
        let payload = vec![0u8; MAX_TCP_PAYLOAD + 1];
        let mut buf = Vec::new();
        let seg = Segment {
            src: Ipv4Addr::LOCALHOST,
            src_port: 1,
            dst: Ipv4Addr::LOCALHOST,
            dst_port: 2,
            seq: 0,
            ack: 0,
            flags: 0,
            window: 0,
            ip_id: 0,
            urgent: 0,
            ttl: DEFAULT_TTL,
            offloaded: false,
            payload: &payload,
        };
        assert!(seg.encode_into(&mut buf).is_err());
        let ok = Segment {
            payload: &payload[..MAX_TCP_PAYLOAD],
            ..seg
        };
        assert!(ok.encode_into(&mut buf).is_ok());
    }
}
