//! Properties of reassembly and decoding that must hold for every input:
//!
//! - any segmentation of a TCP byte stream of valid ADUs, with any
//!   duplication and reordering within the out-of-order window, yields the
//!   same ADUs as the unsegmented stream: driving `Stream` directly, and
//!   through a capture (`modbus_synth::Conversation`) decoded by
//!   `inspect::decode_capture` (link, IP, TCP decoding, a shard);
//! - decode -> encode -> decode round-trips for well-formed request and
//!   response PDUs, framed in MBAP headers and carried by a segmented stream.
//!
//! Also the fuzz corpus seeding step (`seed_fuzz_corpora`, ignored by
//! default; `cargo xtask fuzz --seed` runs it): ADUs, TCP streams, frames and
//! files from the fixture captures, written under `modbus-detect/fuzz/corpus/`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use modbus_detect::config::{DetectConfig, Limits};
use modbus_detect::counters::Counters;
use modbus_detect::decode::{decode, tcp_flags, LinkType};
use modbus_detect::flow::reassembly::{AduSink, AduVerdict, Stream};
use modbus_detect::inspect::decode_capture;
use modbus_detect::modbus::mbap::{Mbap, MBAP_LEN};
use modbus_detect::modbus::pdu::{
    encode_request, encode_response, has_public_layout, parse_request, parse_response, Request,
    Response,
};
use modbus_detect::source::CaptureFile;
use modbus_synth::{Conversation, PcapWriter};
use modbus_tests::fixture;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

// ---------------------------------------------------------------------------
// Well-formed PDUs

/// Numbers and bytes to build one PDU from. The round trip of every PDU
/// built from them is checked here (through framing and a stream), not in
/// pdu.rs's unit tests: one generator for both.
type Parts = (u8, [u16; 4], u8, Vec<u8>);

fn parts() -> impl Strategy<Value = Parts> {
    let data = prop_oneof![
        3 => vec(any::<u8>(), 0..=16),
        1 => vec(any::<u8>(), 0..=240),
    ];
    (any::<u8>(), any::<[u16; 4]>(), any::<u8>(), data)
}

fn words(data: &[u8]) -> &[u8] {
    &data[..data.len() & !1]
}

fn word_count(data: &[u8]) -> u16 {
    (data.len() / 2) as u16
}

/// A well-formed request of kind `kind % 20`.
fn request_from((kind, [a, b, c, d], byte, data): &Parts) -> Request<'_> {
    let (a, b, c, d, byte) = (*a, *b, *c, *d, *byte);
    match kind % 20 {
        0 => Request::ReadCoils { addr: a, qty: b },
        1 => Request::ReadDiscreteInputs { addr: a, qty: b },
        2 => Request::ReadHoldingRegisters { addr: a, qty: b },
        3 => Request::ReadInputRegisters { addr: a, qty: b },
        4 => Request::WriteSingleCoil { addr: a, value: b },
        5 => Request::WriteSingleRegister { addr: a, value: b },
        6 => Request::ReadExceptionStatus,
        7 => Request::Diagnostics { sub: a, data },
        8 => Request::GetCommEventCounter,
        9 => Request::GetCommEventLog,
        10 => Request::WriteMultipleCoils {
            addr: a,
            qty: (data.len() * 8).saturating_sub(usize::from(byte % 8)) as u16,
            values: data,
        },
        11 => Request::WriteMultipleRegisters {
            addr: a,
            qty: word_count(data),
            values: words(data),
        },
        12 => Request::ReportServerId,
        13 if byte % 2 == 0 => Request::ReadFileRecord { data },
        13 => Request::WriteFileRecord { data },
        14 => Request::MaskWriteRegister {
            addr: a,
            and_mask: b,
            or_mask: c,
        },
        15 => Request::ReadWriteMultipleRegisters {
            read_addr: a,
            read_qty: b,
            write_addr: c,
            write_qty: word_count(data),
            values: words(data),
        },
        16 => Request::ReadFifoQueue { addr: d },
        17 => Request::EncapsulatedInterface { mei: byte, data },
        _ if has_public_layout(byte) || byte == 0 => Request::Other { fc: 90, data },
        _ => Request::Other { fc: byte, data },
    }
}

/// A well-formed response of kind `kind % 16`.
fn response_from((kind, [a, b, c, _], byte, data): &Parts) -> Response<'_> {
    let (a, b, c, byte) = (*a, *b, *c, *byte);
    let pick = |codes: &[u8]| codes[usize::from(byte) % codes.len()];
    match kind % 16 {
        0 => Response::ReadBits {
            fc: pick(&[1, 2]),
            data,
        },
        1 => Response::ReadRegisters {
            fc: pick(&[3, 4, 23]),
            data: words(data),
        },
        2 => Response::WriteSingle {
            fc: pick(&[5, 6]),
            addr: a,
            value: b,
        },
        3 => Response::WriteMultiple {
            fc: pick(&[15, 16]),
            addr: a,
            qty: b,
        },
        4 => Response::ReadExceptionStatus { status: byte },
        5 => Response::Diagnostics { sub: a, data },
        6 => Response::GetCommEventCounter {
            status: a,
            count: b,
        },
        7 => Response::GetCommEventLog { data },
        8 => Response::ReportServerId { data },
        9 if byte % 2 == 0 => Response::ReadFileRecord { data },
        9 => Response::WriteFileRecord { data },
        10 => Response::MaskWriteRegister {
            addr: a,
            and_mask: b,
            or_mask: c,
        },
        11 => Response::ReadFifoQueue { data },
        12 => Response::EncapsulatedInterface { mei: byte, data },
        13 => Response::Exception {
            fc: byte & 0x7f,
            code: a as u8,
        },
        _ if has_public_layout(byte & 0x7f) || byte & 0x7f == 0 => Response::Other { fc: 90, data },
        _ => Response::Other {
            fc: byte & 0x7f,
            data,
        },
    }
}

fn request_pdu(p: &Parts) -> Vec<u8> {
    let mut out = Vec::new();
    encode_request(&request_from(p), &mut out);
    out
}

fn response_pdu(p: &Parts) -> Vec<u8> {
    let mut out = Vec::new();
    encode_response(&response_from(p), &mut out);
    out
}

/// An ADU: MBAP header (protocol 0, length = unit id + PDU) and the PDU.
fn frame_adu(tid: u16, unit: u8, pdu: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(MBAP_LEN + pdu.len());
    v.extend_from_slice(&tid.to_be_bytes());
    v.extend_from_slice(&[0, 0]);
    v.extend_from_slice(&(pdu.len() as u16 + 1).to_be_bytes());
    v.push(unit);
    v.extend_from_slice(pdu);
    v
}

/// One ADU of a stream: transaction id, unit and PDU parts.
type AduParts = (u16, u8, Parts);

fn adu_parts() -> impl Strategy<Value = AduParts> {
    (any::<u16>(), any::<u8>(), parts())
}

// ---------------------------------------------------------------------------
// Segmenting, duplicating and reordering a stream

/// How to cut a stream into segments and in what order to send them.
#[derive(Debug, Clone)]
struct Plan {
    /// Cut positions (as fractions of the stream, via `Index`).
    cuts: Vec<Index>,
    /// Sort keys: segments are shuffled within groups of [`GROUP`].
    keys: Vec<u32>,
    /// Per group, perhaps one more copy of a byte range that ends at the
    /// group's end: (start, length) as fractions, and its sort key.
    dups: Vec<Option<(Index, Index, u32)>>,
}

/// Segments per reordering group, and the largest segment: with at most one
/// duplicate per group, what waits out of order stays within the default
/// window (16 segments, 16 KiB).
const GROUP: usize = 6;
const MSS: usize = 1460;

fn plan() -> impl Strategy<Value = Plan> {
    (
        vec(any::<Index>(), 0..64),
        vec(any::<u32>(), 64..=64),
        vec(
            proptest::option::weighted(0.3, any::<(Index, Index, u32)>()),
            32..=32,
        ),
    )
        .prop_map(|(cuts, keys, dups)| Plan { cuts, keys, dups })
}

/// Stream offsets and lengths of the segments to send, in sending order.
fn segments(len: usize, plan: &Plan) -> Vec<(usize, usize)> {
    let mut cuts: BTreeSet<usize> = plan.cuts.iter().map(|i| i.index(len.max(1))).collect();
    cuts.insert(0);
    cuts.insert(len);
    let cuts: Vec<usize> = cuts.into_iter().collect();
    let mut segs = Vec::new();
    for w in cuts.windows(2) {
        let mut at = w[0];
        while at < w[1] {
            let n = (w[1] - at).min(MSS);
            segs.push((at, n));
            at += n;
        }
    }
    let mut out = Vec::with_capacity(segs.len() * 2);
    for (g, group) in segs.chunks(GROUP).enumerate() {
        let mut keyed: Vec<(u32, (usize, usize))> = group
            .iter()
            .enumerate()
            .map(|(i, s)| (plan.keys[(g * GROUP + i) % plan.keys.len()], *s))
            .collect();
        if let Some(Some((start, n, key))) = plan.dups.get(g % plan.dups.len()) {
            // A copy of bytes already sent or of this group, never beyond it.
            let end = group.last().map_or(0, |(o, n)| o + n);
            let from = start.index(end.max(1)).min(end);
            let n = n.index(MSS) + 1;
            let from = from.max(end.saturating_sub(n));
            if from < end {
                keyed.push((*key, (from, end - from)));
            }
        }
        keyed.sort_by_key(|(k, _)| *k);
        out.extend(keyed.into_iter().map(|(_, s)| s));
    }
    out
}

#[derive(Default)]
struct Collect {
    adus: Vec<Vec<u8>>,
    malformed: usize,
    c: Counters,
}

impl AduSink for Collect {
    fn salvage(&mut self, _bytes: &[u8], _ts: u64) {}

    fn counters(&mut self) -> &mut Counters {
        &mut self.c
    }
    fn adu(&mut self, adu: &[u8], _ts_ns: u64) -> AduVerdict {
        self.adus.push(adu.to_vec());
        AduVerdict::Continue
    }
    fn malformed(&mut self, _reason: &'static str, _ts_ns: u64) {
        self.malformed += 1;
    }
    fn conflicting_copies(
        &mut self,
        _policy: modbus_detect::flow::policy::TargetPolicy,
        _ts_ns: u64,
    ) {
    }

    fn not_modbus(&mut self, _ts_ns: u64) {}
}

/// Feed `segs` (offsets into `stream`) to a stream that starts at `isn`.
fn reassemble(isn: u32, stream: &[u8], segs: &[(usize, usize)]) -> Collect {
    let limits = Limits::default();
    let mut s = Stream::default();
    let mut sink = Collect::default();
    s.on_syn(isn, &mut Default::default());
    for (i, &(off, n)) in segs.iter().enumerate() {
        let seq = isn.wrapping_add(1).wrapping_add(off as u32);
        s.on_segment(seq, &stream[off..off + n], i as u64, &limits, &mut sink);
    }
    s.flush(&mut sink);
    sink
}

fn concat(adus: &[Vec<u8>]) -> Vec<u8> {
    adus.iter().flatten().copied().collect()
}

// ---------------------------------------------------------------------------
// The properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Any segmentation, duplication and reordering within the window gives
    /// the ADUs of the unsegmented stream, with no gap and nothing malformed.
    #[test]
    fn segmentation_and_reordering_keep_the_adus(
        adus in vec(adu_parts(), 1..40),
        requests in any::<bool>(),
        isn in any::<u32>(),
        plan in plan(),
    ) {
        let adus: Vec<Vec<u8>> = adus
            .iter()
            .map(|(tid, unit, p)| {
                let pdu = if requests { request_pdu(p) } else { response_pdu(p) };
                frame_adu(*tid, *unit, &pdu)
            })
            .collect();
        let stream = concat(&adus);
        let whole = reassemble(isn, &stream, &[(0, stream.len())]);
        prop_assert_eq!(&whole.adus, &adus, "the unsegmented stream");
        let segs = segments(stream.len(), &plan);
        let got = reassemble(isn, &stream, &segs);
        prop_assert_eq!(&got.adus, &whole.adus, "segments {:?}", segs);
        prop_assert_eq!(got.malformed, 0);
        prop_assert_eq!(got.c.reassembly_gaps, 0);
        prop_assert_eq!(got.c.overlap_conflicts, 0);
        prop_assert_eq!(got.c.resync_bytes_skipped, 0);
    }

    /// Decode -> encode -> decode through MBAP framing and a segmented stream:
    /// every ADU comes out with its header, its PDU parses to the value it
    /// was encoded from, and encodes back to the same bytes.
    #[test]
    fn pdus_round_trip_through_framing_and_the_stream(
        reqs in vec(adu_parts(), 1..24),
        resps in vec(adu_parts(), 1..24),
        isn in any::<u32>(),
        plan in plan(),
    ) {
        let req_adus: Vec<Vec<u8>> =
            reqs.iter().map(|(t, u, p)| frame_adu(*t, *u, &request_pdu(p))).collect();
        let resp_adus: Vec<Vec<u8>> =
            resps.iter().map(|(t, u, p)| frame_adu(*t, *u, &response_pdu(p))).collect();
        for (adus, is_request) in [(&req_adus, true), (&resp_adus, false)] {
            let stream = concat(adus);
            let got = reassemble(isn, &stream, &segments(stream.len(), &plan));
            prop_assert_eq!(got.adus.len(), adus.len());
            let originals = if is_request { &reqs } else { &resps };
            for (adu, (tid, unit, p)) in got.adus.iter().zip(originals) {
                let h = Mbap::parse(adu).expect("an ADU has a header");
                prop_assert_eq!(h.check(), Ok(()));
                prop_assert_eq!((h.tid, h.unit, h.adu_len()), (*tid, *unit, adu.len()));
                let pdu = &adu[MBAP_LEN..];
                let mut again = Vec::new();
                if is_request {
                    let parsed = parse_request(pdu);
                    prop_assert_eq!(parsed, Ok(request_from(p)));
                    encode_request(&parsed.unwrap(), &mut again);
                    prop_assert_eq!(&again[..], pdu);
                    prop_assert_eq!(parse_request(&again), parsed);
                } else {
                    let parsed = parse_response(pdu);
                    prop_assert_eq!(parsed, Ok(response_from(p)));
                    encode_response(&parsed.unwrap(), &mut again);
                    prop_assert_eq!(&again[..], pdu);
                    prop_assert_eq!(parse_response(&again), parsed);
                }
            }
        }
    }
}

/// The (tid, unit, function code byte, length field) of the ADUs.
fn summary(adus: &[Vec<u8>]) -> Vec<(u16, u8, u8, u16)> {
    adus.iter()
        .map(|a| {
            let h = Mbap::parse(a).expect("header");
            (h.tid, h.unit, a[MBAP_LEN], h.len)
        })
        .collect()
}

proptest! {
    // Each case writes and decodes a capture file (~1 ms).
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The same through a capture: requests and responses of one connection,
    /// each direction segmented, duplicated and reordered on its own, the
    /// two interleaved, written as Ethernet frames and decoded by
    /// `decode_capture` (link, IP and TCP decoding, flow table, shard).
    #[test]
    fn a_capture_of_a_reordered_connection_decodes_to_the_same_adus(
        reqs in vec(adu_parts(), 1..30),
        resps in vec(adu_parts(), 1..30),
        isns in any::<(u32, u32)>(),
        plans in (plan(), plan()),
        interleave in vec(any::<bool>(), 256),
    ) {
        let req_adus: Vec<Vec<u8>> =
            reqs.iter().map(|(t, u, p)| frame_adu(*t, *u, &request_pdu(p))).collect();
        let resp_adus: Vec<Vec<u8>> =
            resps.iter().map(|(t, u, p)| frame_adu(*t, *u, &response_pdu(p))).collect();
        let (to_server, to_client) = (concat(&req_adus), concat(&resp_adus));
        let mut q_req = segments(to_server.len(), &plans.0).into_iter().peekable();
        let mut q_resp = segments(to_client.len(), &plans.1).into_iter().peekable();

        let mut w = PcapWriter::new(Vec::new()).unwrap();
        let mut conv = Conversation::new(
            Ipv4Addr::new(10, 1, 0, 1),
            40_001,
            Ipv4Addr::new(10, 2, 0, 1),
        )
        .with_isn(isns.0, isns.1);
        let mut ts = 1_700_000_000_000_000_000u64;
        conv.handshake(&mut w, ts).unwrap();
        // send_at never advances the conversation: offsets are from the
        // first data byte of each direction.
        let mut i = 0;
        while q_req.peek().is_some() || q_resp.peek().is_some() {
            ts += 1_000_000;
            let pick_req = q_resp.peek().is_none()
                || (q_req.peek().is_some() && interleave[i % interleave.len()]);
            i += 1;
            let (q, bytes, is_req) = if pick_req {
                (&mut q_req, &to_server, true)
            } else {
                (&mut q_resp, &to_client, false)
            };
            let (off, n) = q.next().unwrap();
            conv.send_at(&mut w, ts, is_req, off as i64, &bytes[off..off + n]).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reordered.pcap");
        std::fs::write(&path, w.into_inner().unwrap()).unwrap();
        let inspection = decode_capture(&path, Arc::new(DetectConfig::default())).unwrap();
        prop_assert!(inspection.error.is_none());
        let got = |is_request: bool| -> Vec<(u16, u8, u8, u16)> {
            inspection
                .adus
                .iter()
                .filter(|a| a.is_request == is_request)
                .map(|a| (a.tid, a.unit, a.function_code, a.length))
                .collect()
        };
        prop_assert_eq!(got(true), summary(&req_adus), "requests");
        prop_assert_eq!(got(false), summary(&resp_adus), "responses");
        prop_assert!(inspection.adus.iter().all(|a| a.error.is_none()));
        let c = &inspection.result.counters;
        prop_assert_eq!(c.reassembly_gaps, 0);
        prop_assert_eq!(c.malformed_adus, 0);
        prop_assert_eq!(c.overlap_conflicts, 0);
        prop_assert_eq!(c.requests, req_adus.len() as u64);
        prop_assert_eq!(c.responses, resp_adus.len() as u64);
    }
}

// ---------------------------------------------------------------------------
// Fuzz corpus seeding

/// Where the corpora go: `$MODBUS_FUZZ_CORPUS`, or the repository's.
fn corpus_root() -> PathBuf {
    std::env::var_os("MODBUS_FUZZ_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let tests = Path::new(env!("CARGO_MANIFEST_DIR"));
            tests
                .parent()
                .unwrap_or(tests)
                .join("modbus-detect/fuzz/corpus")
        })
}

/// Files of one target's corpus, named by content (FNV-1a) so that seeding
/// again rewrites the same files.
struct Corpus {
    dir: PathBuf,
    written: usize,
    bytes: usize,
}

impl Corpus {
    fn new(target: &str) -> Corpus {
        let dir = corpus_root().join(target);
        std::fs::create_dir_all(&dir).unwrap();
        Corpus {
            dir,
            written: 0,
            bytes: 0,
        }
    }

    fn add(&mut self, data: &[u8]) {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in data {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        let path = self.dir.join(format!("seed-{h:016x}"));
        if !path.exists() {
            std::fs::write(&path, data).unwrap();
            self.written += 1;
            self.bytes += data.len();
        }
    }
}

/// A TCP segment on a Modbus port, as the capture has it.
struct Seg {
    ts_ns: u64,
    link: LinkType,
    frame: Vec<u8>,
    src: (IpAddr, u16),
    dst: (IpAddr, u16),
    seq: u32,
    ack: u32,
    flags: u8,
    payload: Vec<u8>,
}

fn tcp_segments(path: &Path) -> Vec<Seg> {
    let capture = CaptureFile::open(path).unwrap();
    let data = capture.data();
    let mut out = Vec::new();
    for frame in capture.frames() {
        let Ok(f) = frame else { break };
        let bytes = &data[f.off..f.off + f.len as usize];
        let Ok(meta) = decode(f.link, bytes) else {
            continue;
        };
        if meta.sport != 502 && meta.dport != 502 {
            continue;
        }
        out.push(Seg {
            ts_ns: f.ts_ns,
            link: f.link,
            frame: bytes.to_vec(),
            src: (meta.src, meta.sport),
            dst: (meta.dst, meta.dport),
            seq: meta.seq,
            ack: meta.ack,
            flags: meta.flags,
            payload: meta.payload(bytes).to_vec(),
        });
    }
    out
}

type DirKey = ((IpAddr, u16), (IpAddr, u16));

/// The ADUs of every direction of every connection, reassembled as the
/// shards do: (to the server?, tid, ADU), in stream order per direction.
fn capture_adus(segs: &[Seg]) -> BTreeMap<DirKey, Vec<Vec<u8>>> {
    let limits = Limits::default();
    let mut streams: BTreeMap<DirKey, (Stream, Collect)> = BTreeMap::new();
    for s in segs {
        let (stream, sink) = streams.entry((s.src, s.dst)).or_default();
        if s.flags & tcp_flags::SYN != 0 {
            stream.on_syn(s.seq, &mut Default::default());
        }
        stream.on_segment(s.seq, &s.payload, s.ts_ns, &limits, sink);
    }
    streams
        .into_iter()
        .map(|(k, (mut stream, mut sink))| {
            stream.flush(&mut sink);
            (k, sink.adus)
        })
        .collect()
}

/// `mbap_pdu`: a request ADU followed by its response ADU (by transaction
/// id), or a lone ADU; at most two per shape (function codes and lengths).
fn seed_mbap_pdu(
    corpus: &mut Corpus,
    adus: &BTreeMap<DirKey, Vec<Vec<u8>>>,
    shapes: &mut BTreeMap<Vec<u8>, usize>,
) {
    let mut keep = |corpus: &mut Corpus, bytes: Vec<u8>, shape: Vec<u8>| {
        let n = shapes.entry(shape).or_default();
        if *n < 2 {
            *n += 1;
            corpus.add(&bytes);
        }
    };
    for ((client, server), reqs) in adus.iter().filter(|((_, d), _)| d.1 == 502) {
        let resps = adus.get(&(*server, *client)).cloned().unwrap_or_default();
        let by_tid: BTreeMap<[u8; 2], &Vec<u8>> = resps.iter().map(|r| ([r[0], r[1]], r)).collect();
        for req in reqs {
            let shape_of = |a: &[u8]| vec![a.get(MBAP_LEN).copied().unwrap_or(0), a.len() as u8];
            match by_tid.get(&[req[0], req[1]]) {
                Some(resp) => {
                    let mut shape = shape_of(req);
                    shape.extend(shape_of(resp));
                    keep(corpus, [req.as_slice(), resp.as_slice()].concat(), shape);
                }
                None => keep(corpus, req.clone(), shape_of(req)),
            }
        }
    }
}

/// `reassembly`: the segments of one direction (and the peer's ACKs) as
/// operations relative to the cursor (see `fuzz_targets/reassembly.rs`).
fn reassembly_ops(segs: &[Seg], key: DirKey, max_ops: usize) -> Option<Vec<u8>> {
    let mine: Vec<&Seg> = segs
        .iter()
        .filter(|s| (s.src, s.dst) == key || (s.dst, s.src) == key)
        .collect();
    let first = mine.iter().find(|s| (s.src, s.dst) == key)?;
    let syn = first.flags & tcp_flags::SYN != 0;
    let isn = first.seq;
    let mut out = vec![if syn { 0x20 } else { 0x00 }];
    out.extend_from_slice(&isn.to_le_bytes());
    let mut cursor = if syn { isn.wrapping_add(1) } else { isn };
    let mut ops = 0;
    let rel = |cursor: u32, x: u32| i16::try_from(x.wrapping_sub(cursor) as i32).ok();
    for s in mine {
        if ops >= max_ops {
            break;
        }
        if (s.src, s.dst) == key {
            for (i, chunk) in s.payload.chunks(255).enumerate() {
                let seq = s.seq.wrapping_add((i * 255) as u32);
                let off = rel(cursor, seq)?;
                out.push(0);
                out.extend_from_slice(&off.to_le_bytes());
                out.push(chunk.len() as u8);
                out.extend_from_slice(chunk);
                cursor = seq.wrapping_add(chunk.len() as u32);
                ops += 1;
            }
            if s.flags & (tcp_flags::FIN | tcp_flags::RST) != 0 {
                out.push(5);
                out.extend_from_slice(&0i16.to_le_bytes());
                ops += 1;
            }
        } else if s.flags & tcp_flags::ACK != 0 {
            if let Some(off) = rel(cursor, s.ack) {
                out.push(4);
                out.extend_from_slice(&off.to_le_bytes());
                ops += 1;
            }
        }
    }
    (ops > 0).then_some(out)
}

/// `engine`: frames as length-prefixed records with time deltas (see
/// `modbus-detect/fuzz/src/lib.rs`), behind a flags byte and a link byte.
fn engine_input(flags: u8, segs: &[Seg]) -> Vec<u8> {
    let link = match segs.first().map(|s| s.link) {
        Some(LinkType::LinuxSll) => 1,
        Some(LinkType::LinuxSll2) => 2,
        Some(LinkType::RawIp) => 3,
        _ => 0,
    };
    let mut out = vec![flags, link];
    let mut prev = segs.first().map_or(0, |s| s.ts_ns);
    for s in segs {
        let dt = s.ts_ns.saturating_sub(prev);
        prev = s.ts_ns;
        let delta: u16 = if dt < 0x8000 * 10_000 {
            (dt / 10_000) as u16
        } else {
            0x8000 | (dt / 1_000_000_000).min(0x7fff) as u16
        };
        out.extend_from_slice(&(s.frame.len() as u16).to_le_bytes());
        out.extend_from_slice(&delta.to_le_bytes());
        out.extend_from_slice(&s.frame);
    }
    out
}

/// A classic pcap cut after `records` records.
fn pcap_prefix(data: &[u8], records: usize) -> Vec<u8> {
    let mut at = 24;
    for _ in 0..records {
        let Some(h) = data.get(at..at + 16) else {
            break;
        };
        let caplen = u32::from_le_bytes(h[8..12].try_into().unwrap()) as usize;
        if at + 16 + caplen > data.len() {
            break;
        }
        at += 16 + caplen;
    }
    data[..at].to_vec()
}

/// The same little-endian classic pcap in big-endian byte order.
fn pcap_big_endian(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    let swap32 = |b: &mut [u8]| b.reverse();
    swap32(&mut out[0..4]);
    out[4..6].reverse();
    out[6..8].reverse();
    for r in [8, 12, 16, 20] {
        swap32(&mut out[r..r + 4]);
    }
    let mut at = 24;
    while at + 16 <= out.len() {
        let caplen = u32::from_le_bytes(data[at + 8..at + 12].try_into().unwrap()) as usize;
        for r in [0, 4, 8, 12] {
            swap32(&mut out[at + r..at + r + 4]);
        }
        at += 16 + caplen;
    }
    out
}

/// A little-endian pcapng cut after the blocks that fit in `max` bytes.
fn pcapng_prefix(data: &[u8], max: usize) -> Vec<u8> {
    let mut at = 0;
    while let Some(len) = data.get(at + 4..at + 8) {
        let len = u32::from_le_bytes(len.try_into().unwrap()) as usize;
        if len < 12 || at + len > data.len() || at + len > max {
            break;
        }
        at += len;
    }
    data[..at].to_vec()
}

fn captures(dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(fixture(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap"))
        .collect();
    v.sort();
    v
}

/// Seed every fuzz target's corpus from the fixture captures and files.
#[test]
#[ignore = "writes the fuzz corpora under modbus-detect/fuzz/corpus: cargo xtask fuzz --seed"]
fn seed_fuzz_corpora() {
    let mut mbap = Corpus::new("mbap_pdu");
    let mut reasm = Corpus::new("reassembly");
    let mut engine = Corpus::new("engine");
    let mut files = Corpus::new("capture_file");
    let mut texts = Corpus::new("limits_baseline");
    let mut shapes = BTreeMap::new();

    let all: Vec<PathBuf> = captures("real")
        .into_iter()
        .chain(captures("lab"))
        .collect();
    for path in &all {
        let segs = tcp_segments(path);
        let adus = capture_adus(&segs);
        seed_mbap_pdu(&mut mbap, &adus, &mut shapes);

        // Both directions of the first two connections, and of one in the middle.
        let mut conns: Vec<DirKey> = Vec::new();
        for s in &segs {
            let key = if s.dst.1 == 502 {
                (s.src, s.dst)
            } else {
                (s.dst, s.src)
            };
            if !conns.contains(&key) {
                conns.push(key);
            }
        }
        let picks: BTreeSet<usize> = [0, 1, conns.len() / 2].into_iter().collect();
        for &i in &picks {
            let Some(&(c, s)) = conns.get(i) else {
                continue;
            };
            for key in [(c, s), (s, c)] {
                if let Some(ops) = reassembly_ops(&segs, key, 48) {
                    reasm.add(&ops);
                }
            }
        }

        // Windows of 48 frames: the start, then three more spread over the capture.
        let n = segs.len();
        let starts: BTreeSet<usize> = [0, n / 4, n / 2, 3 * n / 4]
            .into_iter()
            .map(|s| s.min(n.saturating_sub(1)))
            .collect();
        for (k, &start) in starts.iter().enumerate() {
            let window = &segs[start..(start + 48).min(n)];
            // Mostly every rule and one shard; some with 3 shards or learning.
            let flags = [0x00, 0x20, 0x08, 0x01][k % 4];
            engine.add(&engine_input(flags, window));
        }
    }

    // The small real captures whole; the start of a lab capture in each byte
    // order and with nanosecond timestamps; the start of the pcapng one.
    for path in captures("real") {
        let data = std::fs::read(&path).unwrap();
        if data.len() <= 16 * 1024 {
            files.add(&data);
        }
    }
    let lab = std::fs::read(fixture("lab/unauthorized_write.pcap")).unwrap();
    let small = pcap_prefix(&lab, 24);
    files.add(&small);
    files.add(&pcap_big_endian(&small));
    let mut nanos = small.clone();
    nanos[0..4].copy_from_slice(&0xa1b2_3c4du32.to_le_bytes());
    files.add(&nanos);
    let ng = std::fs::read(fixture("lab/normal_test.pcapng")).unwrap();
    files.add(&pcapng_prefix(&ng, 6 * 1024));

    // The lab's limits file, hand-made variants, and a baseline learned
    // from the lab's normal traffic.
    texts.add(&std::fs::read(fixture("lab/register_limits.json")).unwrap());
    texts.add(
        br#"{"00001": {"name": "Pump", "min": 0, "max": 1}, "10010": {}, "30001": {"max_rate": 0.5}, "465536": {"min": -5, "max": 70000, "unit": "x", "description": "top"}}"#,
    );
    texts.add(br#"{"400001": {"min": 1}, "40001": {"max": 2}}"#);
    let run = modbus_tests::run(&[
        "--pcap",
        fixture("lab/normal_baseline.pcap").to_str().unwrap(),
        "--baseline-mode",
        "--baseline-file",
        "{dir}/baseline.json",
    ]);
    assert_eq!(run.exit, Ok(0), "learning the baseline");
    let learned = std::fs::read(run.dir.path().join("baseline.json")).unwrap();
    let mut learned: serde_json::Value = serde_json::from_slice(&learned).unwrap();
    // Not this machine's path.
    learned["source"] = "tests/fixtures/lab/normal_baseline.pcap".into();
    texts.add(&serde_json::to_vec_pretty(&learned).unwrap());

    for c in [&mbap, &reasm, &engine, &files, &texts] {
        let total = std::fs::read_dir(&c.dir).unwrap().count();
        eprintln!(
            "{}: {} new seed files ({} bytes), {total} files in all",
            c.dir.display(),
            c.written,
            c.bytes
        );
    }
}

// ---------------------------------------------------------------------------
// Against a model of the Linux receiver

/// What Linux's receive path (`tcp_data_queue`, `tcp_data_queue_ofo`,
/// `tcp_ofo_queue`) delivers to the application, written from the kernel's
/// rules rather than from the sensor's: in-order data is delivered at
/// once; a segment ahead is dropped if a queued one that starts at or
/// before it covers it, replaces a queued one that starts at the same
/// byte if longer, else is queued (partial overlaps kept), and removes
/// queued ones it covers entirely; the queue is drained in order, each
/// segment from the next expected byte. Offsets from the stream's start.
struct LinuxReceiver {
    rcv_nxt: usize,
    /// (start, bytes), sorted by start; none covers another.
    ofo: Vec<(usize, Vec<u8>)>,
    delivered: Vec<u8>,
}

impl LinuxReceiver {
    fn segment(&mut self, start: usize, data: &[u8]) {
        let end = start + data.len();
        if end <= self.rcv_nxt {
            return;
        }
        if start <= self.rcv_nxt {
            self.delivered
                .extend_from_slice(&data[self.rcv_nxt - start..]);
            self.rcv_nxt = end;
            self.drain();
            return;
        }
        let pred = self.ofo.iter().rposition(|(s, _)| *s <= start);
        let mut at = pred.map_or(0, |p| p + 1);
        if let Some(p) = pred {
            let (ps, pd) = &self.ofo[p];
            let pend = ps + pd.len();
            if start < pend {
                if end <= pend {
                    return; // all the bits are present
                }
                if start == *ps {
                    self.ofo.remove(p); // replaced by the longer one
                    at = p;
                }
            }
        }
        self.ofo.insert(at, (start, data.to_vec()));
        // Remove the queued segments it covers.
        while let Some((ns, nd)) = self.ofo.get(at + 1) {
            if end <= *ns || end < ns + nd.len() {
                break;
            }
            self.ofo.remove(at + 1);
        }
    }

    fn drain(&mut self) {
        while let Some((s, _)) = self.ofo.first() {
            if *s > self.rcv_nxt {
                return;
            }
            let (s, d) = self.ofo.remove(0);
            if s + d.len() > self.rcv_nxt {
                self.delivered.extend_from_slice(&d[self.rcv_nxt - s..]);
                self.rcv_nxt = s + d.len();
            }
        }
    }
}

/// Two versions of one stream: the same MBAP headers (so any mix of their
/// bytes frames alike), different PDU bytes.
fn two_versions(lens: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for (i, &n) in lens.iter().enumerate() {
        let pdu_len = usize::from(n % 40) + 2;
        let header = |out: &mut Vec<u8>| {
            out.extend_from_slice(&(i as u16).to_be_bytes());
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&((pdu_len + 1) as u16).to_be_bytes());
            out.push(1);
        };
        header(&mut a);
        header(&mut b);
        a.extend((0..pdu_len).map(|k| (k as u8).wrapping_mul(3)));
        b.extend((0..pdu_len).map(|k| (k as u8).wrapping_mul(3) ^ 0xA5));
    }
    (a, b)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// For random segmentations of a stream, random copies of its bytes
    /// taken from a second version (same framing, other contents), in a
    /// random order: the ADUs the sensor reports under the Linux policy
    /// are the ADUs a Linux receiver delivers.
    #[test]
    fn overlapping_copies_give_what_linux_delivers(
        lens in vec(any::<u8>(), 1..8),
        cuts in vec(1usize..48, 1..24),
        decoys in vec((any::<Index>(), 1usize..64), 0..6),
        order in vec(any::<Index>(), 32),
        isn in any::<u32>(),
    ) {
        let (real, other) = two_versions(&lens);
        // The real stream, cut into segments that cover it all.
        let mut segs: Vec<(usize, Vec<u8>)> = Vec::new();
        let mut off = 0;
        for n in cuts.iter().cycle() {
            if off >= real.len() {
                break;
            }
            let end = (off + n).min(real.len());
            segs.push((off, real[off..end].to_vec()));
            off = end;
        }
        for (at, n) in &decoys {
            let start = at.index(real.len());
            let end = (start + n).min(real.len());
            segs.push((start, other[start..end].to_vec()));
        }
        // A random order (a random swap per position).
        for (i, j) in order.iter().enumerate() {
            let len = segs.len();
            segs.swap(i % len, j.index(len));
        }
        let mut model = LinuxReceiver { rcv_nxt: 0, ofo: Vec::new(), delivered: Vec::new() };
        let limits = Limits {
            max_ooo_segments: 1024,
            max_ooo_bytes: 1 << 20,
            ..Limits::default()
        };
        let mut s = Stream::default();
        let mut sink = Collect::default();
        s.on_syn(isn, &mut Default::default());
        for (i, (start, data)) in segs.iter().enumerate() {
            model.segment(*start, data);
            let seq = isn.wrapping_add(1).wrapping_add(*start as u32);
            s.on_segment(seq, data, i as u64, &limits, &mut sink);
        }
        s.flush(&mut sink);
        prop_assert_eq!(model.delivered.len(), real.len(), "every byte delivered");
        prop_assert_eq!(concat(&sink.adus), model.delivered);
        prop_assert_eq!(sink.malformed, 0);
    }
}
