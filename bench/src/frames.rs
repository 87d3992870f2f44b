//! Hand-built traffic for the micro-benchmarks and the memory benchmark:
//! scripted [`Conversation`]s recorded into an in-memory pcap and read back
//! as frames, then fed to a [`Shard`] exactly as the dispatcher would.

use std::io;
use std::net::Ipv4Addr;

use modbus_detect::config::DetectConfig;
use modbus_detect::decode::{LinkType, PacketMeta};
use modbus_detect::flow::Side;
use modbus_detect::runtime::dispatch::classify;
use modbus_detect::shard::Shard;
use modbus_synth::{Conversation, PcapWriter};

/// One captured frame.
#[derive(Debug, Clone)]
pub struct Frame {
    pub ts_ns: u64,
    pub bytes: Vec<u8>,
}

/// A frame decoded once, ready for `Shard::process` (what a batch carries).
#[derive(Debug, Clone)]
pub struct Decoded {
    pub ts_ns: u64,
    pub meta: PacketMeta,
    pub side: Side,
    pub bytes: Vec<u8>,
}

/// Run `script` against a fresh in-memory pcap writer and return its frames.
pub fn record(
    script: impl FnOnce(&mut PcapWriter<Vec<u8>>) -> io::Result<()>,
) -> io::Result<Vec<Frame>> {
    let mut w = PcapWriter::new(Vec::new())?;
    script(&mut w)?;
    Ok(pcap_frames(&w.into_inner()?))
}

/// The frames of a classic little-endian microsecond pcap (what
/// [`PcapWriter`] writes).
pub fn pcap_frames(pcap: &[u8]) -> Vec<Frame> {
    let mut out = Vec::new();
    let mut off = 24;
    while let Some(h) = pcap.get(off..off + 16) {
        let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let ts_ns = u64::from(word(0)) * 1_000_000_000 + u64::from(word(4)) * 1_000;
        let len = word(8) as usize;
        let Some(bytes) = pcap.get(off + 16..off + 16 + len) else {
            break;
        };
        out.push(Frame {
            ts_ns,
            bytes: bytes.to_vec(),
        });
        off += 16 + len;
    }
    out
}

/// Decode frames once (Ethernet), keeping those on a Modbus port.
pub fn decode_all(frames: &[Frame], cfg: &DetectConfig) -> Vec<Decoded> {
    frames
        .iter()
        .filter_map(|f| {
            let c = classify(LinkType::Ethernet, &f.bytes, &cfg.ports, 1).ok()?;
            Some(Decoded {
                ts_ns: f.ts_ns,
                meta: c.meta,
                side: c.side,
                bytes: f.bytes.clone(),
            })
        })
        .collect()
}

/// Feed decoded frames to a shard, shifting their timestamps by `shift_ns`
/// (so that a recording can be replayed again and again, forward in time).
pub fn feed(shard: &mut Shard, frames: &[Decoded], frame_no: &mut u64, shift_ns: u64) {
    for f in frames {
        *frame_no += 1;
        shard.process(*frame_no, f.ts_ns + shift_ns, &f.meta, f.side, &f.bytes);
    }
}

/// 10.1.x.y for master `i` (0-based), as the synthetic generator numbers them
/// beyond 255.
pub fn master(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a01_0000 + i + 1)
}

/// 10.2.x.y for slave `i` (0-based).
pub fn slave(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a02_0000 + i + 1)
}

/// A new connection that carried one request and its response and then went
/// quiet: handshake, FC 3 read, response (four frames after the handshake's
/// three), starting at `ts_ns`.
pub fn idle_connection(
    w: &mut PcapWriter<Vec<u8>>,
    master: Ipv4Addr,
    port: u16,
    slave: Ipv4Addr,
    ts_ns: u64,
) -> io::Result<()> {
    use modbus_synth::{adu, read_registers_response, read_request};
    let mut c = Conversation::new(master, port, slave);
    c.handshake(w, ts_ns)?;
    c.send(w, ts_ns + 300_000, true, &adu(1, 1, &read_request(3, 0, 2)))?;
    c.send(
        w,
        ts_ns + 800_000,
        false,
        &adu(1, 1, &read_registers_response(3, &[7, 8])),
    )?;
    c.send(w, ts_ns + 900_000, true, &[])
}
