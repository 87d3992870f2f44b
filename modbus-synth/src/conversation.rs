//! A scripted TCP connection that keeps sequence and acknowledgement numbers
//! right in both directions, so tests can write Modbus exchanges without
//! thinking about TCP.

use std::io::{self, Write};
use std::net::Ipv4Addr;

use super::frames::{
    invalid, Segment, DEFAULT_TTL, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, TCP_URG,
};
use super::pcap_writer::PcapWriter;
use modbus_common::rng::Rng;

/// The registered Modbus/TCP port.
const MODBUS_PORT: u16 = 502;
/// Spacing of the frames that `handshake` and `fin` write after the first,
/// roughly one LAN round trip.
pub const HANDSHAKE_GAP_NS: u64 = 100_000;
/// Windows typical of a PC master and of a small PLC; fixed because nothing
/// downstream reasons about flow control.
const CLIENT_WINDOW: u16 = 64_240;
const SERVER_WINDOW: u16 = 8_192;

/// One side of the connection.
#[derive(Debug, Clone)]
struct Endpoint {
    ip: Ipv4Addr,
    port: u16,
    /// Sequence number of the next byte this side will send.
    next_seq: u32,
    ip_id: u16,
    window: u16,
    /// Time to live of this side's frames where they are captured.
    ttl: u8,
    /// Captured on this side's host with TX checksum offload.
    offloaded: bool,
}

/// A scripted TCP conversation between a master and a slave, for hand-written
/// test scenarios (and the unit of traffic in the bulk generator).
#[derive(Debug, Clone)]
pub struct Conversation {
    client: Endpoint,
    server: Endpoint,
    /// Reused frame buffer.
    frame: Vec<u8>,
    /// The urgent pointer of the next segment (see [`Conversation::urgent_at`]).
    urgent: u16,
}

impl Conversation {
    /// Connection from `master:master_port` to `slave:502`. Initial sequence
    /// numbers derive from the addresses, so a scenario is reproducible and
    /// two connections of one scenario do not share them.
    pub fn new(master: Ipv4Addr, master_port: u16, slave: Ipv4Addr) -> Self {
        // Hash the hosts, then mix in the port, so no two 4-tuples are
        // likely to share a seed.
        let hosts = (u64::from(u32::from(master)) << 32) | u64::from(u32::from(slave));
        let mut rng = Rng::new(Rng::new(hosts).next_u64() ^ u64::from(master_port));
        let (client_isn, server_isn) = (rng.next_u32(), rng.next_u32());
        // IP ids start anywhere; keeping the low 16 bits of a draw is intended.
        let (client_ip_id, server_ip_id) = (rng.next_u32() as u16, rng.next_u32() as u16);
        Conversation {
            client: Endpoint {
                ip: master,
                port: master_port,
                next_seq: client_isn,
                ip_id: client_ip_id,
                window: CLIENT_WINDOW,
                ttl: DEFAULT_TTL,
                offloaded: false,
            },
            server: Endpoint {
                ip: slave,
                port: MODBUS_PORT,
                next_seq: server_isn,
                ip_id: server_ip_id,
                window: SERVER_WINDOW,
                ttl: DEFAULT_TTL,
                offloaded: false,
            },
            frame: Vec::with_capacity(128),
            urgent: 0,
        }
    }

    /// Serve on another port than 502 (for port-configuration tests).
    pub fn with_server_port(mut self, port: u16) -> Self {
        self.server.port = port;
        self
    }

    /// Choose the initial sequence numbers, e.g. just below 2^32 to exercise
    /// wrap-around in reassembly.
    pub fn with_isn(mut self, client_isn: u32, server_isn: u32) -> Self {
        self.client.next_seq = client_isn;
        self.server.next_seq = server_isn;
        self
    }

    /// The time to live the master's (`from_server = false`) or the
    /// slave's frames have where they are captured (64 by default: no
    /// router between).
    pub fn set_ttl(&mut self, from_server: bool, ttl: u8) {
        self.side_mut(from_server).ttl = ttl;
    }

    /// The capture is taken on the master's (`from_server = false`) or
    /// the slave's host, whose NIC computes TCP checksums: its frames carry
    /// only the pseudo-header sum.
    pub fn offload_checksums(&mut self, from_server: bool) {
        self.side_mut(from_server).offloaded = true;
    }

    /// Sequence number the master (`from_server = false`) or the slave will
    /// use for its next byte.
    pub fn next_seq(&self, from_server: bool) -> u32 {
        self.side(from_server).next_seq
    }

    /// SYN, SYN-ACK, ACK at `ts_ns` and then [`HANDSHAKE_GAP_NS`] apart.
    pub fn handshake(&mut self, w: &mut PcapWriter<impl Write>, ts_ns: u64) -> io::Result<()> {
        self.segment(w, ts_ns, false, TCP_SYN, &[])?;
        self.segment(w, ts_ns + HANDSHAKE_GAP_NS, true, TCP_SYN | TCP_ACK, &[])?;
        self.segment(w, ts_ns + 2 * HANDSHAKE_GAP_NS, false, TCP_ACK, &[])
    }

    /// Send raw TCP payload bytes from the master (`to_server = true`) or
    /// from the slave as one PSH/ACK segment, advancing seq; the peer's ACK is
    /// piggybacked (an empty payload yields a bare ACK).
    pub fn send(
        &mut self,
        w: &mut PcapWriter<impl Write>,
        ts_ns: u64,
        to_server: bool,
        payload: &[u8],
    ) -> io::Result<()> {
        self.segment(w, ts_ns, !to_server, data_flags(payload), payload)
    }

    /// Like [`Conversation::send`], but at `rel_seq` bytes from the next
    /// expected sequence number (negative: retransmission/overlap; positive:
    /// gap/out-of-order) and without advancing the stream, for reassembly
    /// tests. A later `send` still continues from the unchanged position.
    pub fn send_at(
        &mut self,
        w: &mut PcapWriter<impl Write>,
        ts_ns: u64,
        to_server: bool,
        rel_seq: i64,
        payload: &[u8],
    ) -> io::Result<()> {
        let from_server = !to_server;
        // Sequence space is modulo 2^32, so truncating the offset is exact.
        let seq = self.side(from_server).next_seq.wrapping_add(rel_seq as u32);
        self.emit(w, ts_ns, from_server, seq, data_flags(payload), payload)
    }

    /// Any segment (flags, payload) at `rel_seq` from the sender's next
    /// sequence number, without advancing the stream: forged or stale
    /// segments for evasion tests (an RST or FIN off sequence, a SYN with
    /// another initial sequence number, data far outside the window).
    pub fn segment_at(
        &mut self,
        w: &mut PcapWriter<impl Write>,
        ts_ns: u64,
        from_server: bool,
        rel_seq: i64,
        flags: u8,
        payload: &[u8],
    ) -> io::Result<()> {
        // Sequence space is modulo 2^32, so truncating the offset is exact.
        let seq = self.side(from_server).next_seq.wrapping_add(rel_seq as u32);
        self.emit(w, ts_ns, from_server, seq, flags, payload)
    }

    /// Like [`Conversation::segment_at`], with the encoded frame changed
    /// by `mangle` before it is written (a wrong checksum or length).
    #[allow(clippy::too_many_arguments)]
    pub fn mangled_at(
        &mut self,
        w: &mut PcapWriter<impl Write>,
        ts_ns: u64,
        from_server: bool,
        rel_seq: i64,
        flags: u8,
        payload: &[u8],
        mangle: impl FnOnce(&mut Vec<u8>),
    ) -> io::Result<()> {
        // Sequence space is modulo 2^32, so truncating the offset is exact.
        let seq = self.side(from_server).next_seq.wrapping_add(rel_seq as u32);
        self.encode(from_server, seq, flags, payload)?;
        mangle(&mut self.frame);
        w.write_frame(ts_ns, &self.frame)
    }

    /// Data from the master (`to_server`) or the slave in IPv4 fragments,
    /// advancing the stream like [`Conversation::send`]. Each piece is
    /// (offset, bytes) in the IP payload (TCP header and data): its own
    /// bytes, or the payload's at `offset` when `None` (overlapping pieces
    /// with other bytes, for evasion tests). Offsets are multiples of 8; a
    /// piece is the last fragment when it reaches the payload's end.
    pub fn fragmented(
        &mut self,
        w: &mut PcapWriter<impl Write>,
        ts_ns: u64,
        to_server: bool,
        payload: &[u8],
        pieces: &[(usize, Option<&[u8]>, usize)],
    ) -> io::Result<()> {
        const ETH: usize = 14;
        const IP: usize = 20;
        let from_server = !to_server;
        let seq = self.side(from_server).next_seq;
        self.encode(from_server, seq, TCP_PSH | TCP_ACK, payload)?;
        let whole = self.frame.clone();
        let total = usize::from(u16::from_be_bytes([whole[ETH + 2], whole[ETH + 3]])) - IP;
        let ip_payload = &whole[ETH + IP..ETH + IP + total];
        for (i, &(offset, bytes, len)) in pieces.iter().enumerate() {
            let data = match bytes {
                Some(b) => b,
                None => ip_payload
                    .get(offset..offset + len)
                    .ok_or_else(|| invalid("fragment past the payload"))?,
            };
            let more = offset + data.len() < total;
            let mut f = whole[..ETH + IP].to_vec();
            let ip_len =
                u16::try_from(IP + data.len()).map_err(|_| invalid("fragment too long"))?;
            f[ETH + 2..ETH + 4].copy_from_slice(&ip_len.to_be_bytes());
            let frag = u16::try_from(offset / 8).map_err(|_| invalid("offset too large"))?
                | if more { 0x2000 } else { 0 };
            f[ETH + 6..ETH + 8].copy_from_slice(&frag.to_be_bytes());
            f[ETH + 10..ETH + 12].fill(0);
            let sum = crate::frames::ipv4_header_checksum(&f[ETH..ETH + IP]);
            f[ETH + 10..ETH + 12].copy_from_slice(&sum.to_be_bytes());
            f.extend_from_slice(data);
            if f.len() < 60 {
                f.resize(60, 0);
            }
            w.write_frame(ts_ns + i as u64 * 1_000, &f)?;
        }
        let sender = self.side_mut(from_server);
        sender.next_seq = sender.next_seq.wrapping_add(payload.len() as u32);
        Ok(())
    }

    /// Data with the URG flag and urgent pointer `urgent` from the master
    /// (`to_server`) or the slave, advancing the stream by the whole
    /// payload (the urgent byte takes a sequence number too).
    pub fn urgent_at(
        &mut self,
        w: &mut PcapWriter<impl Write>,
        ts_ns: u64,
        to_server: bool,
        payload: &[u8],
        urgent: u16,
    ) -> io::Result<()> {
        self.urgent = urgent;
        self.segment(w, ts_ns, !to_server, TCP_URG | TCP_PSH | TCP_ACK, payload)
    }

    /// Orderly close started by the given side: FIN/ACK, the peer's FIN/ACK,
    /// and the final ACK, [`HANDSHAKE_GAP_NS`] apart.
    pub fn fin(
        &mut self,
        w: &mut PcapWriter<impl Write>,
        ts_ns: u64,
        from_server: bool,
    ) -> io::Result<()> {
        self.segment(w, ts_ns, from_server, TCP_FIN | TCP_ACK, &[])?;
        self.segment(
            w,
            ts_ns + HANDSHAKE_GAP_NS,
            !from_server,
            TCP_FIN | TCP_ACK,
            &[],
        )?;
        self.segment(w, ts_ns + 2 * HANDSHAKE_GAP_NS, from_server, TCP_ACK, &[])
    }

    /// Abort from the given side: one RST/ACK.
    pub fn rst(
        &mut self,
        w: &mut PcapWriter<impl Write>,
        ts_ns: u64,
        from_server: bool,
    ) -> io::Result<()> {
        self.segment(w, ts_ns, from_server, TCP_RST | TCP_ACK, &[])
    }

    /// The general form behind the helpers above: one segment with explicit
    /// flags at the sender's next sequence number, acknowledging everything
    /// the peer sent if ACK is set. SYN and FIN consume one sequence number.
    pub fn segment(
        &mut self,
        w: &mut PcapWriter<impl Write>,
        ts_ns: u64,
        from_server: bool,
        flags: u8,
        payload: &[u8],
    ) -> io::Result<()> {
        let seq = self.side(from_server).next_seq;
        self.emit(w, ts_ns, from_server, seq, flags, payload)?;
        let consumed = payload.len() + usize::from(flags & (TCP_SYN | TCP_FIN) != 0);
        let sender = self.side_mut(from_server);
        // Sequence space is modulo 2^32; payloads are far below that.
        sender.next_seq = sender.next_seq.wrapping_add(consumed as u32);
        Ok(())
    }

    fn emit(
        &mut self,
        w: &mut PcapWriter<impl Write>,
        ts_ns: u64,
        from_server: bool,
        seq: u32,
        flags: u8,
        payload: &[u8],
    ) -> io::Result<()> {
        self.encode(from_server, seq, flags, payload)?;
        w.write_frame(ts_ns, &self.frame)
    }

    /// Encode one segment into the frame buffer.
    fn encode(&mut self, from_server: bool, seq: u32, flags: u8, payload: &[u8]) -> io::Result<()> {
        let (src, dst) = if from_server {
            (&mut self.server, &self.client)
        } else {
            (&mut self.client, &self.server)
        };
        let ack = if flags & TCP_ACK != 0 {
            dst.next_seq
        } else {
            0
        };
        let segment = Segment {
            src: src.ip,
            src_port: src.port,
            dst: dst.ip,
            dst_port: dst.port,
            seq,
            ack,
            flags,
            window: src.window,
            ip_id: src.ip_id,
            urgent: std::mem::take(&mut self.urgent),
            ttl: src.ttl,
            offloaded: src.offloaded,
            payload,
        };
        src.ip_id = src.ip_id.wrapping_add(1);
        segment.encode_into(&mut self.frame)
    }

    fn side(&self, server: bool) -> &Endpoint {
        if server {
            &self.server
        } else {
            &self.client
        }
    }

    fn side_mut(&mut self, server: bool) -> &mut Endpoint {
        if server {
            &mut self.server
        } else {
            &mut self.client
        }
    }
}

fn data_flags(payload: &[u8]) -> u8 {
    if payload.is_empty() {
        TCP_ACK
    } else {
        TCP_PSH | TCP_ACK
    }
}
