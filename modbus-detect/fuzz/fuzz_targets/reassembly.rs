//! TCP reassembly of one direction fed arbitrary segment sequences:
//! retransmissions, overlaps with conflicting bytes, holes, reordering,
//! ACKs past holes, FIN/RST on and off sequence, new SYNs, jumps across the
//! sequence space.
//!
//! Input: a limits byte, a 32-bit initial sequence number (LE; its low
//! byte also picks the receiver's overlap policy), then
//! operations. Each operation is an op byte and a signed 16-bit offset (LE)
//! from the cursor, the sequence number after the last segment sent:
//! - op & 7 in 0..=3: a segment at cursor + offset; a length byte and that
//!   many payload bytes follow; the cursor moves past it.
//! - 4: the peer acknowledges cursor + offset.
//! - 5: FIN/RST whose sequence number is cursor + offset (`close_at`).
//! - 6: `close` (op & 8) or `flush`.
//! - 7: a SYN at cursor + offset (op & 8), or a jump of the cursor by
//!   offset × 4096 bytes.
//!
//! Invariants: no panic; buffered bytes stay under the out-of-order limit
//! plus one partial ADU (its Vec's capacity: below twice the longest ADU,
//! a vendor code's of 6 + 1024 bytes); every ADU handed out is one the
//! framing accepts and exactly 6 + its length field long; and a stream sent in order without holes (every segment at offset
//! 0 after a SYN) yields exactly the ADUs of the unsegmented stream.

#![no_main]

use libfuzzer_sys::fuzz_target;
use modbus_detect::config::Limits;
use modbus_detect::counters::Counters;
use modbus_detect::flow::policy::TargetPolicy;
use modbus_detect::flow::reassembly::{AduSink, AduVerdict, Stream};
use modbus_detect::modbus::mbap::{frame, Framing, Mbap, MAX_VENDOR_LEN, MBAP_LEN};
use modbus_detect::modbus::pdu::{parse_request, parse_response};

/// Largest ADU: 6 bytes before the unit id plus the longest length field
/// accepted (a vendor function code's).
const MAX_ADU: usize = 6 + MAX_VENDOR_LEN as usize;

#[derive(Default)]
struct Sink {
    adus: Vec<Vec<u8>>,
    malformed: usize,
    /// 1: resync on a PDU that is no request, 2: no response, else never.
    verdicts: u8,
    c: Counters,
    /// Conflicting copies reported (each also counted in `overlap_conflicts`).
    conflicts: u64,
}

impl AduSink for Sink {
    fn salvage(&mut self, _bytes: &[u8], _ts: u64) {}

    fn counters(&mut self) -> &mut Counters {
        &mut self.c
    }

    fn adu(&mut self, adu: &[u8], _ts_ns: u64) -> AduVerdict {
        let h = Mbap::parse(adu).expect("an ADU has a whole MBAP header");
        assert!(
            matches!(frame(adu), Framing::Adu { len, .. } if len == adu.len()),
            "ADU the framing does not accept: {adu:02x?}"
        );
        assert_eq!(adu.len(), 6 + usize::from(h.len), "ADU length: {adu:02x?}");
        assert!(adu.len() > MBAP_LEN && adu.len() <= MAX_ADU);
        self.adus.push(adu.to_vec());
        let pdu = &adu[MBAP_LEN..];
        let bad = match self.verdicts {
            1 => parse_request(pdu).is_err(),
            2 => parse_response(pdu).is_err(),
            _ => false,
        };
        if bad {
            AduVerdict::Resync
        } else {
            AduVerdict::Continue
        }
    }

    fn conflicting_copies(&mut self, _policy: TargetPolicy, _ts_ns: u64) {
        self.conflicts += 1;
    }

    fn not_modbus(&mut self, _ts_ns: u64) {}

    fn malformed(&mut self, _reason: &'static str, _ts_ns: u64) {
        self.malformed += 1;
    }
}

fn limits(b: u8) -> Limits {
    Limits {
        max_ooo_bytes: [16 * 1024, 512, 64, 1][usize::from(b & 3)],
        max_ooo_segments: [16, 4, 1, 0][usize::from((b >> 2) & 3)],
        ack_confirms_loss: b & 0x10 == 0,
        ..Limits::default()
    }
}

/// The ADUs of an in-order byte stream, up to the first bad header; and
/// whether it stopped there (later ADUs then depend on resynchronisation).
fn reference(mut stream: &[u8]) -> (Vec<Vec<u8>>, bool) {
    let mut adus = Vec::new();
    loop {
        let len = match frame(stream) {
            Framing::Adu { len, .. } => len,
            Framing::Short => break,
            Framing::Bad(..) => return (adus, true),
        };
        let Some((adu, rest)) = stream.split_at_checked(len) else {
            break;
        };
        adus.push(adu.to_vec());
        stream = rest;
    }
    (adus, false)
}

fuzz_target!(|data: &[u8]| {
    let Some((&[lim, i0, i1, i2, i3], mut ops)) = data.split_first_chunk::<5>() else {
        return;
    };
    let limits = limits(lim);
    let isn = u32::from_le_bytes([i0, i1, i2, i3]);
    let mut sink = Sink {
        verdicts: lim >> 6,
        ..Sink::default()
    };
    // The receiver's overlap policy from the low bits of the ISN.
    let policy = TargetPolicy::NAMES[usize::from(i0) % TargetPolicy::NAMES.len()]
        .parse::<TargetPolicy>()
        .expect("a policy's own name parses");
    let mut s = Stream::new(policy);
    let mut cursor = isn;
    let syn_first = lim & 0x20 != 0;
    if syn_first {
        s.on_syn(isn, sink.counters());
        cursor = isn.wrapping_add(1);
    }
    // Only segments in order since the SYN: compared with the reference.
    let mut in_order = syn_first;
    let mut sent = Vec::new();
    let mut ts = 0u64;
    let bound = limits.max_ooo_bytes + 2 * MAX_ADU;
    while let Some((&[op, d0, d1], rest)) = ops.split_first_chunk::<3>() {
        ops = rest;
        ts += 1_000;
        let off = i16::from_le_bytes([d0, d1]);
        let at = cursor.wrapping_add(off as i32 as u32);
        match op & 7 {
            0..=3 => {
                let Some((&len, rest)) = ops.split_first() else {
                    break;
                };
                let len = usize::from(len).min(rest.len());
                let (payload, rest) = rest.split_at(len);
                ops = rest;
                in_order &= off == 0;
                sent.extend_from_slice(payload);
                s.on_segment(at, payload, ts, &limits, &mut sink);
                cursor = at.wrapping_add(len as u32);
            }
            4 => {
                in_order = false;
                // With bit 3, a window advertisement too (scaled by up to 2^15).
                let window = (op & 8 != 0).then(|| u32::from(d0) << (d1 & 15));
                s.on_peer_ack(at, window, &limits, &mut sink);
            }
            5 if op & 8 != 0 => {
                in_order = false;
                if s.accepts_rst(at, &mut sink) {
                    s.close(&mut sink);
                }
            }
            5 => {
                in_order = false;
                s.close_at(at, &mut sink);
            }
            6 if op & 8 != 0 => {
                in_order = false;
                s.close(&mut sink);
            }
            6 => {
                in_order = false;
                s.flush(&mut sink);
            }
            _ if op & 8 != 0 => {
                in_order = false;
                s.on_syn(at, sink.counters());
                cursor = at.wrapping_add(1);
            }
            _ => {
                in_order = false;
                cursor = cursor.wrapping_add((i32::from(off) * 4096) as u32);
            }
        }
        assert!(
            s.buffered_bytes() <= bound,
            "{} bytes buffered, limit {}",
            s.buffered_bytes(),
            bound
        );
    }
    if in_order && sink.verdicts == 0 {
        let (want, stopped) = reference(&sent);
        if stopped {
            assert!(
                sink.adus.starts_with(&want),
                "in-order stream: got {:02x?}, want a prefix {:02x?}",
                sink.adus,
                want
            );
        } else {
            assert_eq!(sink.adus, want, "in-order stream");
            assert_eq!(sink.malformed, 0);
        }
    }
    s.flush(&mut sink);
    s.close(&mut sink);
    assert_eq!(s.buffered_bytes(), 0, "nothing held after close");
    assert_eq!(
        sink.conflicts, sink.c.overlap_conflicts,
        "every conflict counted is reported"
    );
});
