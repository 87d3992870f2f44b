//! Whole-capture tests. Captures are parsed back by hand here, with code
//! that shares nothing with the encoder, so an encoding slip cannot cancel
//! itself out.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::*;

// ---- a minimal independent pcap / Ethernet / IPv4 / TCP / MBAP parser ----

struct Record {
    ts_ns: u64,
    frame: Vec<u8>,
}

#[derive(Debug, Clone)]
struct Seg {
    ts_ns: u64,
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: Vec<u8>,
}

type FourTuple = (Ipv4Addr, u16, Ipv4Addr, u16);

impl Seg {
    fn key(&self) -> FourTuple {
        (self.src, self.sport, self.dst, self.dport)
    }

    fn reverse_key(&self) -> FourTuple {
        (self.dst, self.dport, self.src, self.sport)
    }

    /// Sequence space the segment occupies: payload plus SYN and FIN.
    fn seq_len(&self) -> u32 {
        self.payload.len() as u32
            + u32::from(self.flags & TCP_SYN != 0)
            + u32::from(self.flags & TCP_FIN != 0)
    }
}

fn le16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

fn be16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes(b[off..off + 4].try_into().unwrap())
}

/// One's complement sum over 16-bit words; a correct header sums to 0xFFFF.
fn ones_sum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        for (i, &b) in part.iter().enumerate() {
            sum += if i % 2 == 0 {
                u32::from(b) << 8
            } else {
                u32::from(b)
            };
        }
    }
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    sum as u16
}

fn parse_pcap(bytes: &[u8]) -> Vec<Record> {
    assert!(bytes.len() >= 24, "no global header");
    assert_eq!(le32(bytes, 0), 0xa1b2_c3d4, "magic");
    assert_eq!((le16(bytes, 4), le16(bytes, 6)), (2, 4), "version");
    assert_eq!(le32(bytes, 8), 0, "thiszone");
    assert_eq!(le32(bytes, 12), 0, "sigfigs");
    assert_eq!(le32(bytes, 16), 65_535, "snaplen");
    assert_eq!(le32(bytes, 20), 1, "LINKTYPE_ETHERNET");
    let mut records = Vec::new();
    let mut off = 24;
    while off < bytes.len() {
        assert!(off + 16 <= bytes.len(), "truncated record header");
        let (secs, usecs) = (le32(bytes, off), le32(bytes, off + 4));
        let (incl, orig) = (
            le32(bytes, off + 8) as usize,
            le32(bytes, off + 12) as usize,
        );
        assert!(usecs < 1_000_000);
        assert_eq!(incl, orig, "nothing is cut at snaplen 65535");
        let frame = bytes[off + 16..off + 16 + incl].to_vec();
        records.push(Record {
            ts_ns: u64::from(secs) * 1_000_000_000 + u64::from(usecs) * 1_000,
            frame,
        });
        off += 16 + incl;
    }
    assert_eq!(off, bytes.len());
    records
}

/// Decodes and validates every header, checksums included.
fn parse_tcp(rec: &Record) -> Seg {
    let f = &rec.frame;
    assert!(f.len() >= 60, "below the Ethernet minimum");
    assert_eq!(be16(f, 12), 0x0800, "IPv4 ethertype");
    let ip = &f[14..];
    assert_eq!(ip[0], 0x45, "IPv4 without options");
    let total = usize::from(be16(ip, 2));
    assert!(14 + total <= f.len());
    if 14 + total < f.len() {
        assert_eq!(f.len(), 60, "only minimum-size padding");
        assert!(f[14 + total..].iter().all(|&b| b == 0));
    }
    assert_eq!(be16(ip, 6), 0x4000, "DF, no fragmentation");
    assert_eq!(ip[9], 6, "TCP");
    assert_eq!(ones_sum(&[&ip[..20]]), 0xFFFF, "IP checksum");
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    assert_eq!(
        &f[0..6],
        &[2, 0, ip[16], ip[17], ip[18], ip[19]],
        "stable dst MAC"
    );
    let tcp = &ip[20..total];
    assert_eq!(tcp[12] >> 4, 5, "TCP without options");
    let len = (tcp.len() as u16).to_be_bytes();
    let pseudo = [0, 6, len[0], len[1]];
    assert_eq!(
        ones_sum(&[&ip[12..20], &pseudo, tcp]),
        0xFFFF,
        "TCP checksum"
    );
    Seg {
        ts_ns: rec.ts_ns,
        src,
        sport: be16(tcp, 0),
        dst,
        dport: be16(tcp, 2),
        seq: be32(tcp, 4),
        ack: be32(tcp, 8),
        flags: tcp[13],
        payload: tcp[20..].to_vec(),
    }
}

fn segments(pcap: &[u8]) -> Vec<Seg> {
    parse_pcap(pcap).iter().map(parse_tcp).collect()
}

/// Per direction, each segment starts where the previous one ended (SYN
/// and FIN count one), only SYNs open a direction, and every ACK
/// acknowledges exactly what the peer has sent.
fn assert_seq_continuity(segs: &[Seg]) {
    let mut next: BTreeMap<FourTuple, u32> = BTreeMap::new();
    for (i, s) in segs.iter().enumerate() {
        match next.get(&s.key()) {
            Some(&n) => assert_eq!(s.seq, n, "segment {i} seq"),
            None => assert!(
                s.flags & TCP_SYN != 0,
                "segment {i} opens a direction without SYN"
            ),
        }
        if s.flags & TCP_ACK != 0 {
            assert_eq!(Some(&s.ack), next.get(&s.reverse_key()), "segment {i} ack");
        }
        next.insert(s.key(), s.seq.wrapping_add(s.seq_len()));
    }
}

#[derive(Debug, Clone)]
struct Adu {
    tid: u16,
    proto: u16,
    unit: u8,
    pdu: Vec<u8>,
    /// Indices (in the capture) of the segments holding its first and last byte.
    first_seg: usize,
    last_seg: usize,
    /// Capture time of its last byte.
    ts_ns: u64,
}

/// One direction's payload bytes, and where each segment's bytes end.
#[derive(Default)]
struct Stream {
    bytes: Vec<u8>,
    /// (end offset in `bytes`, segment index in the capture)
    seg_ends: Vec<(usize, usize)>,
}

impl Stream {
    /// Capture index of the segment that carried byte `off`.
    fn segment_at(&self, off: usize) -> usize {
        self.seg_ends[self.seg_ends.partition_point(|&(end, _)| end <= off)].1
    }
}

/// Reassembles each direction (in order, which continuity guarantees) and
/// cuts it into complete ADUs; a trailing partial ADU is dropped.
fn adus_by_direction(segs: &[Seg]) -> BTreeMap<FourTuple, Vec<Adu>> {
    let mut streams: BTreeMap<FourTuple, Stream> = BTreeMap::new();
    for (i, s) in segs
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.payload.is_empty())
    {
        let stream = streams.entry(s.key()).or_default();
        stream.bytes.extend_from_slice(&s.payload);
        stream.seg_ends.push((stream.bytes.len(), i));
    }
    streams
        .into_iter()
        .map(|(key, stream)| {
            let bytes = &stream.bytes;
            let mut adus = Vec::new();
            let mut off = 0;
            while off + 7 <= bytes.len() {
                let len = usize::from(be16(bytes, off + 4));
                assert!(len >= 2, "MBAP length {len}");
                let end = off + 6 + len;
                if end > bytes.len() {
                    break;
                }
                let (first_seg, last_seg) = (stream.segment_at(off), stream.segment_at(end - 1));
                adus.push(Adu {
                    tid: be16(bytes, off),
                    proto: be16(bytes, off + 2),
                    unit: bytes[off + 6],
                    pdu: bytes[off + 7..end].to_vec(),
                    first_seg,
                    last_seg,
                    ts_ns: segs[last_seg].ts_ns,
                });
                off = end;
            }
            (key, adus)
        })
        .collect()
}

fn capture(cfg: &SynthConfig) -> (Vec<u8>, SynthSummary) {
    let mut out = Vec::new();
    let summary = generate(cfg, &mut out).expect("generation to memory succeeds");
    (out, summary)
}

fn small(frames: u64) -> SynthConfig {
    SynthConfig {
        frames,
        masters: 6,
        slaves: 4,
        slaves_per_master: 2,
        poll_interval_us: 20_000,
        ..SynthConfig::default()
    }
}

fn to_server(key: &FourTuple) -> bool {
    key.3 == 502
}

// ---- bulk generator ----

#[test]
fn same_config_same_bytes_other_seed_other_bytes() {
    let cfg = SynthConfig {
        adus_per_segment: 3,
        split_adus: true,
        attacks: true,
        ..small(6_000)
    };
    let (a, sa) = capture(&cfg);
    let (b, sb) = capture(&cfg);
    assert_eq!(a, b);
    assert_eq!(sa, sb);
    let (c, _) = capture(&SynthConfig {
        seed: cfg.seed + 1,
        ..cfg
    });
    assert_eq!(a.len() > 24, c.len() > 24);
    assert_ne!(a, c);
}

#[test]
fn frame_budget_is_exact() {
    for frames in [0, 1, 2, 3, 4, 57, 2_345] {
        let (bytes, summary) = capture(&small(frames));
        assert_eq!(parse_pcap(&bytes).len() as u64, frames);
        assert_eq!(summary.frames, frames);
    }
}

#[test]
fn records_are_ordered_and_well_formed() {
    let cfg = SynthConfig {
        adus_per_segment: 4,
        split_adus: true,
        ..small(20_000)
    };
    let (bytes, summary) = capture(&cfg);
    let records = parse_pcap(&bytes);
    assert_eq!(records.len(), 20_000);
    assert!(records[0].ts_ns >= cfg.start_ts_ns);
    assert!(
        records.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns),
        "timestamps never go back"
    );
    let segs: Vec<Seg> = records.iter().map(parse_tcp).collect();
    assert_seq_continuity(&segs);
    let conns = segs.iter().filter(|s| s.flags == TCP_SYN).count() as u64;
    assert_eq!(conns, summary.connections);
    assert_eq!(
        conns,
        6 * 2 * 2,
        "masters x slaves_per_master x conns_per_pair"
    );
}

#[test]
fn sequence_numbers_wrap_cleanly() {
    // Enough connections that some start just below 2^32, and traffic enough to cross.
    let cfg = SynthConfig {
        masters: 40,
        poll_interval_us: 1_000,
        ..small(60_000)
    };
    let (bytes, _) = capture(&cfg);
    let segs = segments(&bytes);
    assert_seq_continuity(&segs);
    let mut first_seq: BTreeMap<FourTuple, u32> = BTreeMap::new();
    let wrapped = segs
        .iter()
        .any(|s| *first_seq.entry(s.key()).or_insert(s.seq) > s.seq);
    assert!(wrapped, "no direction crossed 2^32");
}

#[test]
fn modbus_content_matches_summary_and_is_plausible() {
    let cfg = SynthConfig {
        adus_per_segment: 4,
        split_adus: true,
        ..small(30_000)
    };
    let (bytes, summary) = capture(&cfg);
    let segs = segments(&bytes);
    let dirs = adus_by_direction(&segs);
    let (mut requests, mut responses, mut exceptions) = (0, 0, 0);
    let (mut coalesced, mut spanning) = (false, false);
    for (key, adus) in dirs.iter().filter(|(k, _)| to_server(k)) {
        let answers = dirs
            .get(&(key.2, key.3, key.0, key.1))
            .map_or(&[][..], Vec::as_slice);
        requests += adus.len() as u64;
        responses += answers.len() as u64;
        assert!(answers.len() <= adus.len());
        for w in adus.windows(2) {
            coalesced |= w[0].first_seg == w[1].first_seg;
        }
        for (req, resp) in adus.iter().zip(answers) {
            spanning |= req.first_seg != req.last_seg || resp.first_seg != resp.last_seg;
            assert_eq!((req.proto, resp.proto), (0, 0));
            assert_eq!((req.tid, req.unit), (resp.tid, resp.unit), "FIFO answers");
            assert!((1..=3).contains(&req.unit));
            let delay = resp.ts_ns - req.ts_ns;
            assert!(
                (199_000..=4_000_000).contains(&delay),
                "response delay {delay} ns"
            );
            let fc = req.pdu[0];
            if resp.pdu[0] == fc | 0x80 {
                exceptions += 1;
                assert_eq!(resp.pdu, vec![fc | 0x80, 2]);
                continue;
            }
            assert_eq!(resp.pdu[0], fc);
            match fc {
                3 | 4 => {
                    let qty = be16(&req.pdu, 3);
                    assert!(be16(&req.pdu, 1) <= 99 && (1..=20).contains(&qty));
                    assert_eq!(usize::from(resp.pdu[1]), 2 * usize::from(qty));
                    assert_eq!(resp.pdu.len(), 2 + 2 * usize::from(qty));
                    assert!((0..usize::from(qty)).all(|i| be16(&resp.pdu, 2 + 2 * i) <= 1000));
                }
                6 | 16 => {
                    assert!(
                        summary.authorized_writers.contains(&key.0),
                        "write from {}",
                        key.0
                    );
                    assert_eq!(resp.pdu[..5], req.pdu[..5], "echo / address+quantity");
                }
                other => panic!("unexpected function code {other}"),
            }
        }
    }
    assert_eq!(
        (requests, responses, exceptions),
        (summary.requests, summary.responses, summary.exceptions)
    );
    assert!(
        coalesced && spanning,
        "coalescing and splitting both happen"
    );
    assert_eq!(summary.attack_requests, 0);
    assert!(exceptions > 0);
    // About 2 % of the writers' requests are writes: some, and not many.
    let writes = dirs
        .values()
        .flatten()
        .filter(|a| matches!(a.pdu[0], 6 | 16))
        .count() as u64;
    assert!(
        writes > 0 && writes * 20 < summary.requests,
        "{writes} writes"
    );
}

#[test]
fn register_values_change_slowly() {
    let (bytes, _) = capture(&small(20_000));
    let segs = segments(&bytes);
    let dirs = adus_by_direction(&segs);
    // Every observation of a register, in capture order, across all masters.
    type Register = (Ipv4Addr, u8, u8, u16);
    let mut seen: Vec<(u64, Register, u16)> = Vec::new();
    for (key, reqs) in dirs.iter().filter(|(k, _)| to_server(k)) {
        let answers = &dirs[&(key.2, key.3, key.0, key.1)];
        for (req, resp) in reqs
            .iter()
            .zip(answers)
            .filter(|(r, a)| matches!(r.pdu[0], 3 | 4) && a.pdu[0] < 0x80)
        {
            for i in 0..be16(&req.pdu, 3) {
                let value = be16(&resp.pdu, 2 + 2 * usize::from(i));
                seen.push((
                    resp.ts_ns,
                    (key.2, req.unit, req.pdu[0], be16(&req.pdu, 1) + i),
                    value,
                ));
            }
        }
    }
    seen.sort_by_key(|&(ts, reg, _)| (ts, reg));
    let mut last = BTreeMap::new();
    let (mut steps, mut big) = (0u64, 0u64);
    for (_, reg, value) in seen {
        if let Some(prev) = last.insert(reg, value) {
            steps += 1;
            big += u64::from(prev.abs_diff(value) > 50);
        }
    }
    // Only writes (rare, holding registers only) may jump.
    assert!(
        steps > 10_000 && big * 100 < steps,
        "{big} jumps in {steps}"
    );
}

#[test]
fn attacks_are_all_present_and_counted() {
    let cfg = SynthConfig {
        frames: 20_000,
        attacks: true,
        ..SynthConfig::default()
    };
    let (bytes, summary) = capture(&cfg);
    assert_eq!(summary.attack_requests, 1024);
    let segs = segments(&bytes);
    assert_seq_continuity(&segs);
    let target = Ipv4Addr::new(10, 2, 0, 1);
    let dirs = adus_by_direction(&segs);
    let rogue: Vec<&Adu> = dirs
        .iter()
        .filter(|(k, _)| k.0 == ROGUE_MASTER)
        .flat_map(|(_, a)| a)
        .collect();
    assert!(dirs
        .keys()
        .filter(|k| k.0 == ROGUE_MASTER)
        .all(|k| k.2 == target));
    assert_eq!(rogue.len(), 1024 - 1);
    assert!(rogue.iter().all(|a| a.unit == 1));
    let count = |pred: &dyn Fn(&Adu) -> bool| rogue.iter().filter(|a| pred(a)).count();
    assert_eq!(count(&|a| a.proto == 7), 1);
    assert_eq!(count(&|a| a.proto == 0 && a.pdu[0] == 3), 1020);
    assert_eq!(count(&|a| a.pdu == read_device_id_request(1, 0)), 1);
    assert_eq!(count(&|a| a.pdu == diagnostics(1, &[0, 0])), 1);
    // The flood: 1000 requests 100 us apart on one connection.
    let flood: Vec<u64> = rogue
        .iter()
        .rev()
        .filter(|a| a.proto == 0)
        .take(1000)
        .map(|a| a.ts_ns)
        .collect();
    assert!(flood.windows(2).all(|w| w[0] - w[1] == 100_000));

    let writer = summary
        .unauthorized_writer
        .expect("a non-writer polls 10.2.0.1");
    assert!(summary.authorized_masters.contains(&writer));
    assert!(!summary.authorized_writers.contains(&writer));
    let writes: Vec<&Adu> = dirs
        .iter()
        .filter(|(k, _)| k.0 == writer && k.2 == target)
        .flat_map(|(_, a)| a)
        .filter(|a| a.pdu[0] == 6)
        .collect();
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].unit, 1);
    let bad_writes = dirs
        .iter()
        .filter(|(k, _)| to_server(k) && k.0 != writer && k.0 != ROGUE_MASTER)
        .flat_map(|(k, a)| a.iter().map(move |a| (k.0, a)))
        .filter(|(src, a)| matches!(a.pdu[0], 6 | 16) && !summary.authorized_writers.contains(src))
        .count();
    assert_eq!(bad_writes, 0);
}

#[test]
fn unauthorized_write_falls_back_to_its_own_connection() {
    // Master 1 (the only non-writer) polls slave 1 only, never 10.2.0.1.
    let cfg = SynthConfig {
        masters: 2,
        slaves: 20,
        slaves_per_master: 1,
        attacks: true,
        ..small(8_000)
    };
    let (bytes, summary) = capture(&cfg);
    assert_eq!(
        summary.unauthorized_writer,
        Some(Ipv4Addr::new(10, 1, 0, 2))
    );
    assert_eq!(summary.attack_requests, 1024);
    let segs = segments(&bytes);
    let dirs = adus_by_direction(&segs);
    let key = (
        Ipv4Addr::new(10, 1, 0, 2),
        49_151,
        Ipv4Addr::new(10, 2, 0, 1),
        502,
    );
    assert_eq!(dirs[&key].len(), 1);
    assert_eq!(dirs[&key][0].pdu[0], 6);
}

#[test]
fn degenerate_configs_terminate() {
    for cfg in [
        SynthConfig {
            masters: 0,
            ..small(100)
        },
        SynthConfig {
            slaves: 0,
            attacks: true,
            ..small(100)
        },
        SynthConfig {
            conns_per_pair: 0,
            ..small(100)
        },
    ] {
        let (bytes, summary) = capture(&cfg);
        assert_eq!(parse_pcap(&bytes).len() as u64, summary.frames);
        assert_eq!(summary.frames, 0);
    }
    let attacks_only = SynthConfig {
        masters: 0,
        attacks: true,
        ..small(100_000)
    };
    let (_, summary) = capture(&attacks_only);
    assert_eq!(
        (summary.attack_requests, summary.unauthorized_writer),
        (1023, None)
    );
}

#[test]
fn config_round_trips_and_defaults_fill_gaps() {
    let cfg = SynthConfig {
        seed: 9,
        attacks: true,
        ..SynthConfig::default()
    };
    let json = serde_json::to_string(&cfg).unwrap();
    assert_eq!(serde_json::from_str::<SynthConfig>(&json).unwrap(), cfg);
    let partial: SynthConfig = serde_json::from_str(r#"{"frames": 10}"#).unwrap();
    assert_eq!(
        partial,
        SynthConfig {
            frames: 10,
            ..SynthConfig::default()
        }
    );
    assert_eq!(cfg.start_ts_ns, 1_767_225_600_000_000_000);
}

// ---- hand-written conversations ----

fn conversation_capture(
    script: impl FnOnce(&mut Conversation, &mut PcapWriter<Vec<u8>>),
) -> Vec<Seg> {
    let mut w = PcapWriter::new(Vec::new()).unwrap();
    let mut conv = Conversation::new(
        Ipv4Addr::new(10, 1, 0, 1),
        50_000,
        Ipv4Addr::new(10, 2, 0, 1),
    );
    script(&mut conv, &mut w);
    segments(&w.into_inner().unwrap())
}

#[test]
fn conversation_keeps_tcp_consistent() {
    let req = adu(1, 1, &read_request(3, 0, 2));
    let resp = adu(1, 1, &read_registers_response(3, &[7, 8]));
    let segs = conversation_capture(|c, w| {
        c.handshake(w, 1_000_000).unwrap();
        c.send(w, 2_000_000, true, &req).unwrap();
        c.send(w, 3_000_000, false, &resp).unwrap();
        c.fin(w, 4_000_000, false).unwrap();
    });
    assert_seq_continuity(&segs);
    let flags: Vec<u8> = segs.iter().map(|s| s.flags).collect();
    let (syn, ack, data, fin) = (TCP_SYN, TCP_ACK, TCP_PSH | TCP_ACK, TCP_FIN | TCP_ACK);
    assert_eq!(flags, vec![syn, syn | ack, ack, data, data, fin, fin, ack]);
    assert_eq!(segs[3].payload, req);
    assert_eq!(segs[4].payload, resp);
    assert_eq!((segs[3].sport, segs[3].dport), (50_000, 502));
    assert_eq!(segs[1].ts_ns - segs[0].ts_ns, HANDSHAKE_GAP_NS);
}

#[test]
fn send_at_places_bytes_at_the_requested_offset() {
    let segs = conversation_capture(|c, w| {
        c.handshake(w, 0).unwrap();
        let base = c.next_seq(false);
        c.send(w, 1_000_000, true, b"abcdef").unwrap();
        for rel in [-6i64, -3, 0, 10] {
            c.send_at(w, 2_000_000, true, rel, b"xyz").unwrap();
        }
        assert_eq!(
            c.next_seq(false),
            base.wrapping_add(6),
            "send_at does not advance"
        );
        c.send(w, 3_000_000, true, b"gh").unwrap();
    });
    let base = segs[3].seq;
    let rel: Vec<i64> = segs[4..8]
        .iter()
        .map(|s| i64::from(s.seq.wrapping_sub(base.wrapping_add(6)) as i32))
        .collect();
    assert_eq!(rel, vec![-6, -3, 0, 10]);
    assert_eq!(segs[8].seq, base.wrapping_add(6));
    assert!(segs[4..8]
        .iter()
        .all(|s| s.payload == b"xyz" && s.flags == TCP_PSH | TCP_ACK));
}

#[test]
fn conversation_options_and_abort() {
    let mut w = PcapWriter::new(Vec::new()).unwrap();
    let mut conv = Conversation::new(
        Ipv4Addr::new(10, 1, 0, 1),
        40_000,
        Ipv4Addr::new(10, 2, 0, 1),
    )
    .with_server_port(5020)
    .with_isn(u32::MAX - 2, 5);
    conv.handshake(&mut w, 0).unwrap();
    conv.send(&mut w, 1_000, true, &[0xAA; 10]).unwrap();
    conv.send(&mut w, 2_000, false, &[]).unwrap();
    conv.rst(&mut w, 3_000, true).unwrap();
    let segs = segments(&w.into_inner().unwrap());
    assert_seq_continuity(&segs);
    assert_eq!((segs[0].seq, segs[0].dport), (u32::MAX - 2, 5020));
    assert_eq!(segs[3].seq, u32::MAX - 1);
    assert_eq!(segs[4].ack, 8, "wrapped past zero");
    assert_eq!(segs[4].flags, TCP_ACK, "an empty send is a bare ACK");
    assert_eq!(
        (segs[5].flags, segs[5].sport, segs[5].seq),
        (TCP_RST | TCP_ACK, 5020, 6)
    );
}

#[test]
fn conversations_differ_by_address() {
    let isn = |port| {
        let c = Conversation::new(Ipv4Addr::new(10, 1, 0, 1), port, Ipv4Addr::new(10, 2, 0, 1));
        (c.next_seq(false), c.next_seq(true))
    };
    assert_eq!(isn(1), isn(1));
    assert_ne!(isn(1), isn(2));
}
