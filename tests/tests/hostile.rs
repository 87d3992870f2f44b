//! Hostile traffic: captures crafted to exhaust every table the detector
//! keeps (connections, reassembly buffers, outstanding transactions,
//! aggregated alerts). Each table must stay within its bound, every loss
//! must be counted in the report, and real attacks mixed into the abuse
//! must still be detected.

use std::io::BufWriter;
use std::net::Ipv4Addr;
use std::path::Path;

use modbus_synth::{
    adu, read_registers_response, read_request, write_single_register, Conversation, PcapWriter,
    TCP_SYN,
};
use modbus_tests::run;
use serde_json::Value;

const SEC: u64 = 1_000_000_000;
const US: u64 = 1_000;
/// Capture start: 2023-11-14.
const T0: u64 = 1_700_000_000 * SEC;

const PLC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 10);
/// Authorized master and writer.
const HMI: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 20);
/// Authorized master, not a writer.
const OPERATOR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 30);
/// Not a master at all.
const ROGUE: Ipv4Addr = Ipv4Addr::new(10, 66, 6, 6);

type Writer = PcapWriter<BufWriter<std::fs::File>>;

fn writer(path: &Path) -> Writer {
    let f = std::fs::File::create(path).unwrap();
    PcapWriter::new(BufWriter::with_capacity(1 << 20, f)).unwrap()
}

fn close(w: Writer) {
    use std::io::Write;
    w.into_inner().unwrap().flush().unwrap();
}

fn u(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("{v} is not an unsigned integer"))
}

/// Short-lived clients: 10.0.1.1 - 10.0.1.250, all authorized masters.
fn short_client(j: u64) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 1, 1 + (j % 250) as u8)
}

fn masters_flag() -> String {
    let mut v = vec![HMI.to_string(), OPERATOR.to_string()];
    v.extend((0..250).map(|j| short_client(j).to_string()));
    v.join(",")
}

/// What a flood capture holds.
struct Flood {
    connections: u64,
    requests: u64,
    closed: u64,
}

/// A SYN flood from spoofed sources against the PLC, with a short
/// connection (handshake, one answered read, then FIN or abandoned) every
/// tenth step, two established connections that keep polling throughout,
/// an unauthorized write on one of them half-way, and a rogue master that
/// opens a new connection a third of the way in (5 answered reads).
///
/// `spoofed` SYNs over `spoofed / 5000` seconds of capture time (far below
/// the 600 s idle timeout: nothing expires, everything is evicted).
fn flood_capture(path: &Path, spoofed: u64) -> Flood {
    let mut w = writer(path);
    let step = SEC / 5000;
    let mut hmi = Conversation::new(HMI, 40001, PLC);
    let mut op = Conversation::new(OPERATOR, 40002, PLC);
    hmi.handshake(&mut w, T0).unwrap();
    op.handshake(&mut w, T0 + SEC / 1000).unwrap();
    let mut rogue = Conversation::new(ROGUE, 50000, PLC);
    let mut f = Flood {
        connections: 2,
        requests: 0,
        closed: 0,
    };
    let mut tid = 0u16;
    let rogue_start = spoofed / 3;
    for i in 0..spoofed {
        let t = T0 + SEC / 100 + i * step;
        // Spoofed SYN: a new source address and port every time.
        let src = Ipv4Addr::from(0xac10_0000u32.wrapping_add((i as u32).wrapping_mul(7919)));
        Conversation::new(src, 1024 + (i % 60_000) as u16, PLC)
            .segment(&mut w, t, false, TCP_SYN, &[])
            .unwrap();
        f.connections += 1;
        // The established connections poll every 100 steps; the answers
        // come 50 steps (50 new connections) later.
        if i % 100 == 0 {
            tid = tid.wrapping_add(1);
            for c in [&mut hmi, &mut op] {
                c.send(&mut w, t + US, true, &adu(tid, 1, &read_request(3, 0, 4)))
                    .unwrap();
                f.requests += 1;
            }
        }
        if i % 100 == 50 {
            for c in [&mut hmi, &mut op] {
                let resp = adu(tid, 1, &read_registers_response(3, &[1, 2, 3, 4]));
                c.send(&mut w, t + US, false, &resp).unwrap();
            }
        }
        if i == spoofed / 2 + 25 {
            // Mid-flood, on the operator's established connection: a write
            // it is not allowed to make (answered by the echo).
            let write = adu(9999, 1, &write_single_register(7, 1234));
            op.send(&mut w, t + 2 * US, true, &write).unwrap();
            op.send(&mut w, t + 3 * US, false, &write).unwrap();
            f.requests += 1;
        }
        if i == rogue_start {
            rogue.handshake(&mut w, t + 2 * US).unwrap();
            f.connections += 1;
        }
        if i > rogue_start && i <= rogue_start + 5 * 40 && (i - rogue_start).is_multiple_of(40) {
            // A request, then its answer 20 new connections later.
            let n = ((i - rogue_start) / 40) as u16;
            rogue
                .send(&mut w, t + 2 * US, true, &adu(n, 1, &read_request(3, 0, 1)))
                .unwrap();
            f.requests += 1;
        }
        if i > rogue_start + 20
            && i <= rogue_start + 20 + 5 * 40
            && (i - rogue_start - 20).is_multiple_of(40)
        {
            let n = ((i - rogue_start - 20) / 40) as u16;
            let resp = adu(n, 1, &read_registers_response(3, &[7]));
            rogue.send(&mut w, t + 2 * US, false, &resp).unwrap();
        }
        if i % 10 == 5 {
            // A short connection from a legitimate client.
            let j = i / 10;
            let mut c = Conversation::new(short_client(j), 10_000 + (j % 50_000) as u16, PLC);
            let t = t + 3 * US;
            c.handshake(&mut w, t).unwrap();
            c.send(
                &mut w,
                t + 400 * US,
                true,
                &adu(1, 1, &read_request(3, 0, 1)),
            )
            .unwrap();
            c.send(
                &mut w,
                t + 500 * US,
                false,
                &adu(1, 1, &read_registers_response(3, &[5])),
            )
            .unwrap();
            if j % 2 == 0 {
                c.fin(&mut w, t + 600 * US, false).unwrap();
                f.closed += 1;
            }
            f.connections += 1;
            f.requests += 1;
        }
    }
    close(w);
    f
}

/// Flow-table exhaustion: 250,000 spoofed SYNs and 25,000 short
/// connections through a table of 1,000. The table never holds more than
/// its bound, every eviction is counted, the established connections keep
/// their state (every response matched), and both attacks are detected.
#[test]
fn flow_table_exhaustion_keeps_the_bound_and_the_detections() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("flood.pcap");
    let f = flood_capture(&pcap, 250_000);
    let r = run(&[
        "--pcap",
        pcap.to_str().unwrap(),
        "--authorized-masters",
        &masters_flag(),
        "--authorized-writers",
        &HMI.to_string(),
        "--max-flows",
        "1000",
        "--threads",
        "2",
    ]);
    assert_eq!(r.exit, Ok(0));
    let rep = r.report();
    let c = &rep["counters"];
    assert_eq!(u(&c["flows"]), f.connections, "{c}");
    // The bound held: each of the 2 shards tracks at most 500.
    let peak = u(&c["flows_peak"]);
    assert!(peak <= 1000, "flows_peak {peak}");
    assert!(peak >= 500, "the PLC's shard filled up: flows_peak {peak}");
    // Every connection left the table by FIN, eviction, or the end of the
    // capture (at most 1000 were still there); nothing went idle.
    assert_eq!(u(&c["flows_closed"]), f.closed);
    assert_eq!(u(&c["flows_expired"]), 0);
    let evicted = u(&c["flows_evicted"]);
    let left = f.connections - f.closed;
    assert!(
        evicted <= left && evicted + 1000 >= left,
        "flows_evicted {evicted}, {left} connections not closed"
    );
    // The established connections survived the flood: every request
    // decoded, every response matched to its request.
    assert_eq!(u(&c["requests"]), f.requests);
    assert_eq!(u(&c["responses"]), f.requests);
    assert_eq!(u(&c["matched_responses"]), f.requests);
    assert_eq!(u(&c["unmatched_responses"]), 0);
    assert_eq!(u(&c["reassembly_gaps"]), 0);
    assert_eq!(u(&c["resync_bytes_skipped"]), 0);
    // Both attacks were seen, exactly.
    let by_type = &c["alerts_by_type"];
    assert_eq!(u(&by_type["UNAUTHORIZED_MODBUS_WRITE"]), 1, "{by_type}");
    assert_eq!(u(&by_type["ROGUE_MODBUS_MASTER"]), 5, "{by_type}");
    assert_eq!(u(&c["alerts_total"]), 6, "{by_type}");
    let counts = r.alert_counts();
    let key = |t: &str, src: Ipv4Addr| {
        (
            t.to_string(),
            "CRITICAL".to_string(),
            src.to_string(),
            PLC.to_string(),
        )
    };
    assert_eq!(
        counts.get(&key("UNAUTHORIZED_MODBUS_WRITE", OPERATOR)),
        Some(&1)
    );
    assert_eq!(counts.get(&key("ROGUE_MODBUS_MASTER", ROGUE)), Some(&5));
}

/// Run the detector (its arguments name the report with `--output`) and
/// return its exit code and peak resident memory in KiB, as its report
/// says (`VmHWM`: `ru_maxrss` of a spawned child also holds what this
/// test process had resident when it spawned it, so it measured the
/// tests running beside, not the detector).
fn run_measured(args: &[&str]) -> (Option<i32>, u64) {
    let report = args
        .iter()
        .position(|a| *a == "--output")
        .and_then(|i| args.get(i + 1))
        .expect("a measured run names its report");
    let status = std::process::Command::new(modbus_tests::detector_binary())
        .args(args)
        .stdin(std::process::Stdio::null())
        .status()
        .expect("start modbus-detect");
    let rep: Value = modbus_tests::read_report_json(Path::new(report));
    let peak = rep["peak_memory_kib"]
        .as_u64()
        .expect("the report gives the peak memory");
    (status.code(), peak)
}

/// Peak RSS of the detector on a flood capture (150,000 spoofed SYNs and
/// 15,000 short connections; `MODBUS_FLOOD_CONNECTIONS` for another count)
/// with the default `--max-flows` (every connection tracked) and with 1000:
/// the bound is what limits memory. The capture is memory-mapped, so both figures
/// include the pages of the file that were read; their difference is the
/// connection state.
#[test]
fn flow_state_memory_is_bounded_by_max_flows() {
    let spoofed: u64 = std::env::var("MODBUS_FLOOD_CONNECTIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(150_000);
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("flood.pcap");
    let f = flood_capture(&pcap, spoofed);
    let size_kib = std::fs::metadata(&pcap).unwrap().len() / 1024;
    let masters = masters_flag();
    let measure = |max_flows: &str, threads: &str| {
        let out = dir.path().join(format!("r-{max_flows}-{threads}.json"));
        let (code, rss) = run_measured(&[
            "--pcap",
            pcap.to_str().unwrap(),
            "--authorized-masters",
            &masters,
            "--authorized-writers",
            &HMI.to_string(),
            "--max-flows",
            max_flows,
            "--threads",
            threads,
            "--output",
            out.to_str().unwrap(),
            "--quiet",
        ]);
        assert_eq!(code, Some(0));
        let rep: Value = modbus_tests::read_report_json(&out);
        let c = &rep["counters"];
        eprintln!(
            "{} connections, capture {size_kib} KiB, --max-flows {max_flows} --threads {threads}: peak RSS {rss} KiB, flows_peak {}, flows_evicted {}",
            f.connections, c["flows_peak"], c["flows_evicted"]
        );
        assert_eq!(u(&c["alerts_total"]), 6);
        (rss, u(&c["flows_peak"]))
    };
    let (big, big_peak) = measure("1048576", "1");
    let (small, small_peak) = measure("1000", "1");
    assert!(big_peak >= f.connections.min(1 << 20) - f.closed);
    assert_eq!(small_peak, 1000);
    // Tracking every connection costs well over 100 bytes each; with the
    // bound, the state is a few hundred KiB: what remains is the
    // capture's pages and the program itself.
    let per_flow = (big.saturating_sub(small) * 1024) / big_peak;
    eprintln!("about {per_flow} bytes of resident memory per tracked connection");
    assert!(per_flow >= 100, "big {big} KiB, small {small} KiB");
    assert!(
        small < size_kib + 64 * 1024,
        "with --max-flows 1000: {small} KiB for a {size_kib} KiB capture"
    );
}

/// Replay a capture written by `build` (OPERATOR and HMI are masters, only
/// HMI may write) through one shard.
fn scenario(build: impl FnOnce(&mut Writer)) -> modbus_tests::Run {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("hostile.pcap");
    let mut w = writer(&pcap);
    build(&mut w);
    close(w);
    let r = run(&[
        "--pcap",
        pcap.to_str().unwrap(),
        "--authorized-masters",
        &format!("{HMI},{OPERATOR}"),
        "--authorized-writers",
        &HMI.to_string(),
        "--threads",
        "1",
    ]);
    assert_eq!(r.exit, Ok(0));
    r
}

/// UNAUTHORIZED_MODBUS_WRITE alerts in a run.
fn unauthorized_writes(r: &modbus_tests::Run) -> u64 {
    u(&r.report()["counters"]["alerts_by_type"]["UNAUTHORIZED_MODBUS_WRITE"])
}

const MS: u64 = 1_000_000;

/// Endless out-of-order data: 20,000 segments, each ahead of a hole that
/// is not filled. The out-of-order buffer stays bounded (at most 16
/// segments), each hole given up is counted, the segments beyond the
/// PLC's window (8 KiB: the rest) are dropped as its stack drops them,
/// and the write that finally fills the first hole (the PLC's next byte,
/// so the PLC executes it) is decoded.
#[test]
fn endless_out_of_order_segments_are_bounded_and_counted() {
    const N: i64 = 20_000;
    let r = scenario(|w| {
        let mut c = Conversation::new(OPERATOR, 41000, PLC);
        c.handshake(w, T0).unwrap();
        for k in 0..N {
            let t = T0 + SEC + k as u64 * 100 * US;
            c.send_at(w, t, true, 12 * (2 * k + 1), &[0u8; 12]).unwrap();
        }
        let write = adu(1, 1, &write_single_register(7, 1234));
        c.send_at(w, T0 + 10 * SEC, true, 0, &write).unwrap();
    });
    let c = &r.report()["counters"];
    let ooo = u(&c["out_of_order_segments"]);
    let gaps = u(&c["reassembly_gaps"]);
    let beyond = u(&c["out_of_window_segments"]);
    // 8192 / 24 = 341 segments fit in the window.
    assert!((16..=341).contains(&ooo), "{c}");
    assert!(gaps >= ooo / 16, "{c}");
    assert_eq!(beyond, N as u64 - 341, "{c}");
    assert_eq!(u(&c["malformed_adus"]), 0, "{c}");
    assert_eq!(u(&c["gap_fills"]), 1, "{c}");
    assert_eq!(u(&c["requests"]), 1, "{c}");
    assert_eq!(unauthorized_writes(&r), 1, "{c}");
}

/// Huge gaps: 10,000 segments each a quarter of the sequence space after
/// the previous one. In sequence space half of them land far ahead of the
/// stream's next byte (beyond the window: dropped, as the PLC's stack
/// drops them, without moving the stream) and half behind it or on it:
/// the first on it is taken (12 bytes that frame no ADU, skipped), the
/// rest are old data. Decoding goes on right after: the write is seen.
#[test]
fn huge_sequence_gaps_are_counted_not_buffered() {
    const N: i64 = 10_000;
    let quarter: i64 = 1 << 30;
    let r = scenario(|w| {
        let mut c = Conversation::new(OPERATOR, 41001, PLC);
        c.handshake(w, T0).unwrap();
        for k in 1..=N {
            let t = T0 + SEC + k as u64 * 100 * US;
            let rel = (k * quarter) % (1i64 << 32);
            c.send_at(w, t, true, rel, &[0u8; 12]).unwrap();
        }
        let write = adu(1, 1, &write_single_register(7, 1234));
        let rel = (N * quarter + 12) % (1i64 << 32);
        c.send_at(w, T0 + 10 * SEC, true, rel, &write).unwrap();
    });
    let c = &r.report()["counters"];
    assert_eq!(u(&c["out_of_window_segments"]), N as u64 / 2 - 1, "{c}");
    assert_eq!(u(&c["retransmitted_segments"]), N as u64 / 2, "{c}");
    assert_eq!(u(&c["resync_bytes_skipped"]), 12, "{c}");
    assert_eq!(u(&c["reassembly_gaps"]), 0, "{c}");
    assert_eq!(u(&c["out_of_order_segments"]), 0, "{c}");
    assert_eq!(u(&c["requests"]), 1, "{c}");
    assert_eq!(unauthorized_writes(&r), 1, "{c}");
}

/// Overlapping segments with different data, the classic IDS evasion: a
/// hole, then two copies of the segment after it, a harmless read and a
/// write of the same length. Every conflict is counted in
/// `overlap_conflicts`; the first copy is the one inspected (and the hole,
/// once filled, goes on from it).
#[test]
fn conflicting_overlaps_are_counted() {
    const K: u64 = 1_000;
    let r = scenario(|w| {
        let mut c = Conversation::new(OPERATOR, 41002, PLC);
        c.handshake(w, T0).unwrap();
        for k in 0..K {
            let t = T0 + SEC + k * 20 * MS;
            let tid = (2 * k) as u16;
            let read = adu(tid + 1, 1, &read_request(3, 0, 1));
            let write = adu(tid + 1, 1, &write_single_register(0, 666));
            assert_eq!(read.len(), write.len());
            c.send_at(w, t, true, 12, &read).unwrap();
            c.send_at(w, t + US, true, 12, &write).unwrap();
            // Fill the hole: both reads are delivered, then answered.
            c.send(w, t + 2 * US, true, &adu(tid, 1, &read_request(3, 0, 1)))
                .unwrap();
            c.send(w, t + 3 * US, true, &read).unwrap();
            for id in [tid, tid + 1] {
                let resp = adu(id, 1, &read_registers_response(3, &[1]));
                c.send(w, t + 4 * US, false, &resp).unwrap();
            }
        }
    });
    let c = &r.report()["counters"];
    assert_eq!(u(&c["overlap_conflicts"]), K, "{c}");
    assert_eq!(u(&c["requests"]), 2 * K, "{c}");
    assert_eq!(u(&c["matched_responses"]), 2 * K, "{c}");
    assert_eq!(u(&c["out_of_order_segments"]), K, "{c}");
    assert_eq!(u(&c["reassembly_gaps"]), 0, "{c}");
    // Each conflict is itself a finding, and the only one: the read the
    // PLC takes (Linux: of two copies at one byte, the first) is no write.
    assert_eq!(u(&c["alerts_by_type"]["EVASION_ATTEMPT"]), K, "{c}");
    assert_eq!(u(&c["alerts_total"]), K, "{c}");
}

/// Zero-window tricks: a write dribbled one byte per segment, each byte
/// sent 50 times over (window probes and their retransmissions), and an
/// FC 16 write of 123 registers (259 bytes, the largest ADU) one byte at a
/// time. Each is decoded exactly once; every repeat is counted.
#[test]
fn zero_window_probes_and_slow_drip_are_decoded_once() {
    const REPEAT: u64 = 50;
    let big = adu(
        2,
        1,
        &modbus_synth::write_multiple_registers_request(0, &[7; 123]),
    );
    assert_eq!(big.len(), 259);
    let r = scenario(|w| {
        let mut c = Conversation::new(OPERATOR, 41003, PLC);
        c.handshake(w, T0).unwrap();
        let mut t = T0 + SEC;
        let write = adu(1, 1, &write_single_register(7, 1234));
        for &b in &write {
            for _ in 1..REPEAT {
                c.send_at(w, t, true, 0, &[b]).unwrap();
                t += MS;
            }
            c.send(w, t, true, &[b]).unwrap();
            t += MS;
        }
        c.send(w, t, false, &write).unwrap();
        for &b in &big {
            t += MS;
            c.send(w, t, true, &[b]).unwrap();
        }
        c.send(w, t + MS, false, &adu(2, 1, &[16, 0, 0, 0, 123]))
            .unwrap();
    });
    let c = &r.report()["counters"];
    assert_eq!(u(&c["requests"]), 2, "{c}");
    assert_eq!(u(&c["matched_responses"]), 2, "{c}");
    assert_eq!(
        u(&c["retransmitted_segments"]),
        12 * (REPEAT - 1),
        "every repeated probe counted: {c}"
    );
    assert_eq!(u(&c["reassembly_gaps"]), 0, "{c}");
    assert_eq!(u(&c["malformed_adus"]), 0, "{c}");
    assert_eq!(unauthorized_writes(&r), 2, "{c}");
}

/// Reassembly-buffer overflow must not make the sensor skip data the
/// server will receive. Two holes, 16 segments buffered behind them (a
/// write among those after the second hole), then one more segment: the
/// buffer is full, so the sensor gives up the holes. It must give up each
/// hole in turn and inspect every buffered segment; if it jumps straight
/// to the newest segment, the write is discarded unseen, and the hole
/// fillers that follow are ignored as retransmissions, while the server
/// gets every byte and executes the write.
#[test]
fn buffer_overflow_does_not_discard_buffered_segments() {
    let r = scenario(|w| {
        let mut c = Conversation::new(OPERATOR, 41004, PLC);
        c.handshake(w, T0).unwrap();
        let t = T0 + SEC;
        let read = |tid: u16| adu(tid, 1, &read_request(3, 0, 1));
        // Holes at ADU 0 and ADU 8; ADUs 1-7 and 9-18 arrive, ADU 16 is
        // the write. The 17th segment (ADU 18) finds the buffer full.
        for k in (1..=18).filter(|&k| k != 8) {
            let a = if k == 16 {
                adu(k, 1, &write_single_register(7, 1234))
            } else {
                read(k)
            };
            c.send_at(w, t + u64::from(k) * MS, true, 12 * i64::from(k), &a)
                .unwrap();
        }
        // The holes are filled at last.
        c.send_at(w, t + 20 * MS, true, 0, &read(0)).unwrap();
        c.send_at(w, t + 21 * MS, true, 12 * 8, &read(8)).unwrap();
    });
    let c = &r.report()["counters"];
    assert_eq!(unauthorized_writes(&r), 1, "{c}");
}

/// An in-order segment that overlaps a buffered out-of-order one with
/// different bytes is a conflict too: which copy the server keeps depends
/// on its TCP stack, so the report must say that they differed.
#[test]
fn in_order_segment_conflicting_with_a_buffered_one_is_counted() {
    let r = scenario(|w| {
        let mut c = Conversation::new(OPERATOR, 41005, PLC);
        c.handshake(w, T0).unwrap();
        let t = T0 + SEC;
        let read = |tid: u16| adu(tid, 1, &read_request(3, 0, 1));
        // ADU 1 arrives ahead of a hole: a harmless read.
        c.send_at(w, t, true, 12, &read(1)).unwrap();
        // Then one segment with ADU 0 and, over ADU 1's bytes, a write.
        let mut both = read(0);
        both.extend(adu(1, 1, &write_single_register(7, 1234)));
        c.send(w, t + MS, true, &both).unwrap();
    });
    let c = &r.report()["counters"];
    assert_eq!(u(&c["overlap_conflicts"]), 1, "{c}");
}

/// Counts what a stream hands out.
#[derive(Default)]
struct Tally {
    c: modbus_detect::counters::Counters,
    adus: u64,
    malformed: u64,
}

impl modbus_detect::flow::reassembly::AduSink for Tally {
    fn salvage(&mut self, _bytes: &[u8], _ts: u64) {}

    fn counters(&mut self) -> &mut modbus_detect::counters::Counters {
        &mut self.c
    }
    fn adu(&mut self, _adu: &[u8], _ts_ns: u64) -> modbus_detect::flow::reassembly::AduVerdict {
        self.adus += 1;
        modbus_detect::flow::reassembly::AduVerdict::Continue
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

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One direction of a connection under 100,000 hostile segments of every
/// kind at once (out of order within and beyond the window, huge jumps,
/// overlaps with other bytes, retransmissions, one-byte probes, ADUs split
/// anywhere, ACKs of data never seen): the bytes it holds never exceed the
/// out-of-order limit plus one partial ADU, and every kind of abuse shows
/// in its counters.
#[test]
fn stream_buffers_stay_bounded_under_any_segment_sequence() {
    use modbus_detect::config::Limits;
    use modbus_detect::flow::reassembly::Stream;
    let limits = Limits::default();
    // Out-of-order bytes, plus a partial ADU (at most 260 bytes) in a
    // vector that may have doubled its capacity once.
    let bound = limits.max_ooo_bytes + 2 * 260;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut s = Stream::default();
    let mut sink = Tally::default();
    let isn = 0xffff_f000u32;
    s.on_syn(isn, &mut sink.c);
    // Where the attacker's stream is: the next byte it would send.
    let mut cursor = isn.wrapping_add(1);
    let mut stream_bytes: Vec<u8> = Vec::new();
    let mut last_ahead: Option<(u32, usize)> = None;
    let mut peak = 0;
    for i in 0..100_000u64 {
        let ts = T0 + i * US;
        while stream_bytes.len() < 4096 {
            for tid in 0..64u16 {
                stream_bytes.extend(adu(tid, 1, &read_request(3, tid, 1 + tid % 100)));
            }
        }
        let len = 1 + rng.below(1460) as usize;
        let mut payload: Vec<u8> = stream_bytes.drain(..len).collect();
        let advance = |cursor: &mut u32, at: u32, n: usize| {
            *cursor = at.wrapping_add(n as u32);
            at
        };
        let seq = match rng.below(10) {
            // In order.
            0..=2 => {
                let at = cursor;
                advance(&mut cursor, at, payload.len())
            }
            // After a hole the attacker never fills, inside the window.
            3 | 4 => {
                let at = cursor.wrapping_add(1 + rng.below(2048) as u32);
                last_ahead = Some((at, payload.len()));
                advance(&mut cursor, at, payload.len())
            }
            // Far ahead: a huge gap.
            5 => {
                let at = cursor.wrapping_add(rng.below(1 << 31) as u32);
                advance(&mut cursor, at, payload.len())
            }
            // Behind: retransmission or overlap, with other bytes.
            6 => {
                payload.iter_mut().for_each(|b| *b ^= rng.next() as u8);
                cursor.wrapping_sub(rng.below(4096) as u32)
            }
            // Zero-window probe: one byte at the cursor, sent again later.
            7 => {
                let b = payload[0];
                stream_bytes.splice(0..0, payload.drain(..));
                payload.push(b);
                cursor
            }
            // Another copy of the last segment sent ahead of a hole, with
            // other bytes.
            8 => match last_ahead {
                Some((at, n)) => {
                    payload = (0..n).map(|_| rng.next() as u8).collect();
                    at
                }
                None => continue,
            },
            // An ACK for data nobody sent, to confirm holes as loss.
            _ => {
                let ack = cursor.wrapping_add(rng.below(1 << 20) as u32);
                s.on_peer_ack(ack, None, &limits, &mut sink);
                continue;
            }
        };
        s.on_segment(seq, &payload, ts, &limits, &mut sink);
        let held = s.buffered_bytes();
        peak = peak.max(held);
        assert!(
            held <= bound,
            "segment {i}: {held} bytes held (bound {bound})"
        );
    }
    s.flush(&mut sink);
    let c = &sink.c;
    eprintln!(
        "peak {peak} bytes held; {} ADUs, {} malformed, {c:?}",
        sink.adus, sink.malformed
    );
    assert!(sink.adus > 100_000, "decoding went on: {} ADUs", sink.adus);
    // Ahead of a hole: held (inside the window) or dropped as the
    // receiver drops it (beyond it: after a "huge gap" the attacker's
    // cursor is far from the stream's).
    assert!(
        c.out_of_order_segments + c.out_of_window_segments > 10_000,
        "{c:?}"
    );
    assert!(c.reassembly_gaps > 10_000, "{c:?}");
    assert!(c.retransmitted_segments > 10_000, "{c:?}");
    assert!(c.overlap_conflicts > 10, "{c:?}");
    assert!(c.gap_fills > 100, "{c:?}");
    assert!(c.resync_bytes_skipped > 0, "{c:?}");
}

/// Requests that are never answered (what leaked in Suricata,
/// CVE-2024-38534), on one connection: at most 64 are remembered, the
/// oldest giving way (`transactions_evicted`); after 30 s unanswered they
/// age out (`transactions_expired`); a late request is still matched to its
/// response. More than 32 outstanding is itself a flood, raised for each
/// such request.
#[test]
fn unanswered_requests_on_one_connection_are_bounded_and_age_out() {
    const N: u64 = 50_000;
    let r = scenario(|w| {
        let mut c = Conversation::new(HMI, 42000, PLC);
        c.handshake(w, T0).unwrap();
        for k in 0..N {
            let t = T0 + SEC + k * 10 * MS;
            c.send(w, t, true, &adu(k as u16, 1, &read_request(3, 0, 1)))
                .unwrap();
        }
        // 40 s later: the 64 remembered requests have timed out.
        let t = T0 + SEC + N * 10 * MS + 40 * SEC;
        c.send(w, t, true, &adu(7, 1, &read_request(3, 0, 1)))
            .unwrap();
        let resp = adu(7, 1, &read_registers_response(3, &[1]));
        c.send(w, t + MS, false, &resp).unwrap();
    });
    let c = &r.report()["counters"];
    assert_eq!(u(&c["requests"]), N + 1, "{c}");
    assert_eq!(u(&c["transactions_evicted"]), N - 64, "{c}");
    assert_eq!(u(&c["transactions_expired"]), 64, "{c}");
    assert_eq!(u(&c["matched_responses"]), 1, "{c}");
    assert_eq!(u(&c["unmatched_responses"]), 0, "{c}");
    assert_eq!(
        u(&c["alerts_by_type"]["MODBUS_FLOOD"]),
        N - 32,
        "one flood alert per request with more than 32 outstanding: {c}"
    );
    assert_eq!(u(&c["alerts_total"]), N - 32, "{c}");
}

/// Unanswered requests over 2,000 connections through a table of 1,000:
/// each connection remembers at most 64, and when a connection leaves the
/// table (evicted, or at the end) its outstanding requests are counted as
/// expired. The totals are exact.
#[test]
fn unanswered_requests_across_connections_are_bounded_and_counted() {
    const CONNS: u64 = 2_000;
    const PER: u64 = 80;
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("pending.pcap");
    let mut w = writer(&pcap);
    for j in 0..CONNS {
        let t0 = T0 + j * PER * MS;
        let mut c = Conversation::new(short_client(j), 20_000 + j as u16, PLC);
        c.handshake(&mut w, t0).unwrap();
        for k in 0..PER {
            let t = t0 + MS + k * MS;
            c.send(&mut w, t, true, &adu(k as u16, 1, &read_request(3, 0, 1)))
                .unwrap();
        }
    }
    close(w);
    let r = run(&[
        "--pcap",
        pcap.to_str().unwrap(),
        "--authorized-masters",
        &masters_flag(),
        "--max-flows",
        "1000",
        "--threads",
        "1",
    ]);
    assert_eq!(r.exit, Ok(0));
    let c = &r.report()["counters"];
    assert_eq!(u(&c["requests"]), CONNS * PER, "{c}");
    assert_eq!(u(&c["transactions_evicted"]), CONNS * (PER - 64), "{c}");
    assert_eq!(u(&c["transactions_expired"]), CONNS * 64, "{c}");
    assert_eq!(u(&c["flows_evicted"]), CONNS - 1000, "{c}");
    assert_eq!(u(&c["flows_peak"]), 1000, "{c}");
    // Each connection: 80 requests 1 ms apart (a back-to-back flood of 80)
    // and 48 requests with more than 32 outstanding.
    assert_eq!(
        u(&c["alerts_by_type"]["MODBUS_FLOOD"]),
        CONNS * (PER + PER - 32),
        "{c}"
    );
}

/// What an alert storm holds.
struct Storm {
    requests: u64,
    /// More than 32 outstanding: one MODBUS_FLOOD per such request.
    outstanding_floods: u64,
    /// Distinct (source, unit) pairs: the aggregation keys per alert type.
    keys: u64,
}

/// `sources` rogue masters (10.200.0.0/16), one connection each, take
/// turns sending `per_source` unanswered reads to the PLC, cycling through
/// `units` unit ids: 2 us apart overall, so each master's requests are 10 ms
/// apart (no back-to-back flood) but pile up unanswered.
fn storm_capture(path: &Path, sources: u32, per_source: u64, units: u64) -> Storm {
    let mut w = writer(path);
    let mut conns: Vec<Conversation> = (0..sources)
        .map(|s| Conversation::new(Ipv4Addr::from(0x0ac8_0000 + s), 30_000, PLC))
        .collect();
    for (i, c) in conns.iter_mut().enumerate() {
        c.handshake(&mut w, T0 + i as u64 * US).unwrap();
    }
    let mut t = T0 + SEC;
    for k in 0..per_source {
        let unit = 1 + (k % units) as u8;
        let a = adu(k as u16, unit, &read_request(3, 0, 1));
        for c in conns.iter_mut() {
            c.send(&mut w, t, true, &a).unwrap();
            t += 2 * US;
        }
    }
    close(w);
    Storm {
        requests: u64::from(sources) * per_source,
        outstanding_floods: u64::from(sources) * per_source.saturating_sub(32),
        keys: u64::from(sources) * units.min(per_source),
    }
}

/// An alert storm: 1,000,000 requests from 5,000 rogue masters (1,840,000
/// alerts under 250,000 distinct keys) through an alert table of 1,000
/// entries. The report holds 1,000 entries and says how many alerts did not
/// fit; the counts by type are exact; the EVE stream has the first line of
/// each stored key and then at most one per key per second of capture
/// time, every folded alert counted.
#[test]
fn alert_storm_leaves_a_bounded_report_with_exact_counts() {
    use modbus_detect::config::DetectConfig;
    use modbus_detect::output::eve::EveWriter;
    use modbus_detect::output::report::{self, RunInfo, Status, Summary};
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("storm.pcap");
    let storm = storm_capture(&pcap, 5_000, 200, 25);
    let mut cfg = DetectConfig {
        authorized_masters: Some([HMI.into()].into_iter().collect()),
        ..DetectConfig::default()
    };
    cfg.limits.max_alert_keys = 1_000;
    let cfg = Arc::new(cfg);
    let eve_path = dir.path().join("eve.json");
    let eve = EveWriter::create(&eve_path, cfg.clone()).unwrap();
    let capture = modbus_detect::source::CaptureFile::open(&pcap).unwrap();
    let stop = AtomicBool::new(false);
    let out = modbus_detect::runtime::offline::replay(
        cfg.clone(),
        &capture,
        modbus_detect::runtime::Plan::Threads(1),
        Some(eve),
        &stop,
        None,
    )
    .unwrap();
    assert!(out.input_error.is_none());
    let eve_lines = *out.eve.as_ref().unwrap().as_ref().unwrap();
    let summary = Summary::merge(&out.dispatch, out.shards);
    let info = RunInfo {
        input_kind: "pcap",
        input: pcap.display().to_string(),
        format: "pcap".into(),
        threads: 1,
        status: Status::Complete,
        error: None,
        elapsed_s: 0.0,
        limits_file: None,
        baseline_file: None,
        eve_file: Some(eve_path.display().to_string()),
        eve_lines,
        capture: None,
        files: Vec::new(),
        publish: None,
    };
    let rep = report::build(&summary, &info, &cfg);
    let bytes = serde_json::to_vec_pretty(&rep).unwrap();
    let c = &rep.counters;
    let alerts = &rep.alerts;
    eprintln!(
        "storm: {} alerts, report {} bytes ({} entries), {eve_lines} EVE lines",
        c.alerts_total,
        bytes.len(),
        alerts.len()
    );
    // Exact counts, whatever fitted in the table.
    let total = storm.requests + storm.outstanding_floods;
    assert_eq!(c.alerts_by_type["ROGUE_MODBUS_MASTER"], storm.requests);
    assert_eq!(c.alerts_by_type["MODBUS_FLOOD"], storm.outstanding_floods);
    assert_eq!(c.alerts_total, total);
    assert_eq!(c.alerts_by_severity["CRITICAL"], storm.requests);
    // Bounded: 1,000 entries, the rest counted as dropped.
    assert_eq!(alerts.len(), 1_000);
    assert_eq!(c.alert_entries, 1_000);
    let stored: u64 = alerts.iter().map(|a| a.count).sum();
    let dropped = c.alerts_dropped_table_full;
    assert_eq!(stored + dropped, total);
    assert!(2 * storm.keys > 1_000);
    for a in alerts {
        let size = serde_json::to_vec_pretty(a).unwrap().len();
        assert!(size < 2048, "an entry of {size} bytes: {a:?}");
    }
    // The rest of the report is small; the inventory (5,000 pairs, 5,001
    // devices) grows with the pairs only, which it bounds.
    let inventory = serde_json::to_vec_pretty(&rep.inventory).unwrap().len();
    let pairs = rep.inventory.pairs.len() + rep.inventory.devices.len();
    eprintln!("storm: inventory {inventory} bytes for {pairs} pairs and devices");
    assert!(
        bytes.len() - inventory < 4 << 20,
        "report of {} bytes",
        bytes.len()
    );
    assert!(inventory < pairs * 800, "inventory of {inventory} bytes");
    // EVE: every alert is a line, folded into a later line, or dropped
    // with its key.
    let suppressed = c.eve_lines_suppressed;
    assert_eq!(eve_lines + suppressed + dropped, total);
    let text = std::fs::read_to_string(&eve_path).unwrap();
    assert!(text.ends_with('\n'));
    let mut per_key: std::collections::HashMap<String, u64> = Default::default();
    let mut folded = 0;
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).expect("every EVE line is JSON");
        folded += u(&v["modbus_detect"]["suppressed_since_last_line"]);
        let key = format!(
            "{} {} {}",
            v["alert"]["signature_id"], v["src_ip"], v["modbus"]["unit_id"]
        );
        *per_key.entry(key).or_default() += 1;
    }
    assert_eq!(text.lines().count() as u64, eve_lines);
    assert_eq!(per_key.len(), 1_000, "a first line for each stored key");
    // The storm lasts 3 s of capture time: the first line, then at most
    // one per second.
    assert!(per_key.values().all(|&n| n <= 4), "rate limited per key");
    assert!(folded <= suppressed && folded > 0);
}

/// The same storm through the binary with the default limits: the report
/// holds the default 100,000 entries at most (its size is printed), the
/// counts by type are exact, and the EVE stream is rate-limited.
///
/// A measurement (17 s with the debug binary, mostly writing a 33 MB
/// report and an 88 MB EVE stream): `cargo test -p modbus-tests --test
/// hostile -- --ignored --nocapture`, with
/// `MODBUS_DETECT_BIN=target/release/modbus-detect` for release figures.
#[test]
#[ignore = "measurement: run with --ignored --nocapture"]
fn alert_storm_with_default_limits_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("storm.pcap");
    let storm = storm_capture(&pcap, 5_000, 200, 25);
    let report = dir.path().join("storm.json");
    let eve = dir.path().join("storm-eve.json");
    let (code, rss) = run_measured(&[
        "--pcap",
        pcap.to_str().unwrap(),
        "--authorized-masters",
        &HMI.to_string(),
        "--output",
        report.to_str().unwrap(),
        "--eve",
        eve.to_str().unwrap(),
        "--quiet",
    ]);
    assert_eq!(code, Some(0));
    let size = std::fs::metadata(&report).unwrap().len();
    let eve_size = std::fs::metadata(&eve).unwrap().len();
    let rep: Value = modbus_tests::read_report_json(&report);
    let c = &rep["counters"];
    eprintln!(
        "storm with default limits: {} alerts in {} entries, {} dropped with their key; report {size} bytes, EVE {eve_size} bytes ({} lines suppressed), peak RSS {rss} KiB",
        c["alerts_total"], c["alert_entries"], c["alerts_dropped_table_full"], c["eve_lines_suppressed"]
    );
    assert_eq!(
        u(&c["alerts_total"]),
        storm.requests + storm.outstanding_floods
    );
    assert_eq!(
        u(&c["alerts_by_type"]["ROGUE_MODBUS_MASTER"]),
        storm.requests
    );
    let entries = u(&c["alert_entries"]);
    assert!(entries <= 100_000 && 2 * storm.keys > 100_000, "{entries}");
    assert!(u(&c["alerts_dropped_table_full"]) > 0);
    // 100,000 entries of at most 2 KiB each, and the rest of the report.
    assert!(size < 100_000 * 2048 + (4 << 20), "{size} bytes");
}

/// Memory under reassembly abuse, a measurement: `conns` connections each
/// holding a full out-of-order buffer (16 segments of 1,000 bytes behind a
/// hole) in the request direction, with the default `--max-flows` and with
/// 1,000. Prints the peak RSS of both runs; the difference is the buffered
/// state (the capture's own pages are in both).
#[test]
#[ignore = "measurement: run with --ignored --nocapture"]
fn reassembly_abuse_memory_figures() {
    let conns: u64 = std::env::var("MODBUS_OOO_CONNECTIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("ooo.pcap");
    let mut w = writer(&pcap);
    for j in 0..conns {
        let t = T0 + j * MS;
        let src = Ipv4Addr::from(0x0a01_0000 + j as u32);
        let mut c = Conversation::new(src, 40000, PLC);
        c.handshake(&mut w, t).unwrap();
        for k in 0..16i64 {
            c.send_at(&mut w, t + US, true, 1 + k * 1000, &[0u8; 1000])
                .unwrap();
        }
    }
    close(w);
    let size_kib = std::fs::metadata(&pcap).unwrap().len() / 1024;
    for max_flows in ["1048576", "1000"] {
        let out = dir.path().join("r.json");
        let (code, rss) = run_measured(&[
            "--pcap",
            pcap.to_str().unwrap(),
            "--max-flows",
            max_flows,
            "--threads",
            "1",
            "--output",
            out.to_str().unwrap(),
            "--quiet",
        ]);
        assert_eq!(code, Some(0));
        let rep: Value = modbus_tests::read_report_json(&out);
        eprintln!(
            "{conns} connections x 16 KB out of order, capture {size_kib} KiB, --max-flows {max_flows}: peak RSS {rss} KiB, out_of_order_segments {}",
            rep["counters"]["out_of_order_segments"]
        );
    }
}

/// Baseline learning is bounded like detection: a capture of FC 15 writes
/// of 1,968 coils each, to 200 unit ids (393,600 distinct coils in a few
/// hundred kilobytes), learns at most `max_learned_registers` registers
/// (here 50,000) and counts every value of the rest. With the default
/// bound (1,048,576 registers over all shards) the register table holds
/// at most about 100 MiB (a key, Welford statistics and the hash table's
/// share: some 90 bytes each).
#[test]
fn baseline_learning_is_bounded_and_counted() {
    use modbus_detect::config::{DetectConfig, Mode};
    use modbus_detect::output::report::Summary;
    use modbus_detect::runtime::{offline::replay, Plan};
    use modbus_synth::write_multiple_coils_request;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    const UNITS: u8 = 200;
    const COILS: usize = 1968;
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("coils.pcap");
    let mut w = writer(&pcap);
    let mut c = Conversation::new(HMI, 41002, PLC);
    c.handshake(&mut w, T0).unwrap();
    let bits = vec![true; COILS];
    for unit in 1..=UNITS {
        let t = T0 + u64::from(unit) * MS;
        let pdu = write_multiple_coils_request(0, &bits);
        c.send(&mut w, t, true, &adu(u16::from(unit), unit, &pdu))
            .unwrap();
    }
    close(w);
    let mut cfg = DetectConfig {
        mode: Mode::Learn,
        ..DetectConfig::default()
    };
    cfg.limits.max_learned_registers = 50_000;
    let capture = modbus_detect::source::CaptureFile::open(&pcap).unwrap();
    let out = replay(
        Arc::new(cfg),
        &capture,
        Plan::Inline,
        None,
        &AtomicBool::new(false),
        None,
    )
    .unwrap();
    let summary = Summary::merge(&out.dispatch, out.shards);
    let learned = summary.inventory.observed.to_file("coils").registers.len();
    let total = usize::from(UNITS) * COILS;
    assert_eq!(learned, 50_000);
    assert_eq!(summary.learned_registers_dropped, (total - 50_000) as u64);
    assert_eq!(summary.counters.requests, u64::from(UNITS));
}

/// A capture whose clock steps back an hour half-way (two captures merged,
/// or a clock step on the capturing host): the interval rules (flood,
/// timing against the learned baseline, change rates of the limited
/// registers) take no interval across the step, so the step raises
/// nothing the same traffic without it does not; the frames that went
/// back are counted.
#[test]
fn timestamps_that_go_backwards_raise_nothing_and_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (baseline, _) = modbus_tests::learn_lab_baseline(dir.path(), &[]);
    let original = modbus_tests::fixture("lab/normal_test.pcap");
    let mut bytes = std::fs::read(&original).unwrap();
    assert_eq!(&bytes[..4], &[0xd4, 0xc3, 0xb2, 0xa1], "little-endian pcap");
    // Records: 16-byte header (seconds, sub-seconds, caplen, len), then data.
    let mut offsets = Vec::new();
    let mut off = 24;
    while off + 16 <= bytes.len() {
        offsets.push(off);
        let caplen = u32::from_le_bytes(bytes[off + 8..off + 12].try_into().unwrap()) as usize;
        off += 16 + caplen;
    }
    for &at in &offsets[offsets.len() / 2..] {
        let secs = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        bytes[at..at + 4].copy_from_slice(&(secs - 3600).to_le_bytes());
    }
    let stepped = dir.path().join("stepped.pcap");
    std::fs::write(&stepped, &bytes).unwrap();
    let limits = modbus_tests::fixture("lab/register_limits.json");
    let alerts = |pcap: &Path| {
        let r = run(&[
            "--pcap",
            pcap.to_str().unwrap(),
            "--baseline-file",
            &baseline,
            "--register-limits-file",
            limits.to_str().unwrap(),
        ]);
        assert_eq!(r.exit, Ok(0));
        (
            r.alert_counts(),
            r.report()["counters"]["timestamps_backwards"].clone(),
        )
    };
    let (want, none) = alerts(&original);
    let (got, back) = alerts(&stepped);
    // Without the fix: 2 TIMING_ANOMALY and 3 REGISTER_VALUE_EXCESSIVE_RATE
    // on the step alone.
    assert_eq!(got, want, "the step raises nothing more");
    assert_eq!(u(&none), 0);
    assert!(u(&back) >= 1, "the step is counted");
}

/// The inventory's bound on master-slave pairs holds over all shards: it
/// does not grow with --threads. 70,000 masters (one request each) spread
/// over 256 slaves (so over the shards), replayed with 1 and with 4 shard
/// threads: at most 65,536 pairs are kept either way, and the requests of
/// the rest are counted.
#[test]
fn the_inventory_bound_does_not_grow_with_threads() {
    const MASTERS: u32 = 70_000;
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("many-masters.pcap");
    let mut w = writer(&pcap);
    for i in 0..MASTERS {
        let master = Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 16, 0, 0)) + i);
        let slave = Ipv4Addr::new(10, 0, 1, (i % 256) as u8);
        let mut c = Conversation::new(master, 40_000, slave);
        c.send(
            &mut w,
            T0 + u64::from(i) * US,
            true,
            &adu(1, 1, &read_request(3, 0, 1)),
        )
        .unwrap();
    }
    close(w);
    for threads in ["1", "4"] {
        let r = run(&["--pcap", pcap.to_str().unwrap(), "--threads", threads]);
        assert_eq!(r.exit, Ok(0));
        let rep = r.report();
        let kept = rep["inventory"]["pairs"].as_array().map_or(0, Vec::len) as u64;
        let dropped = u(&rep["counters"]["inventory_pairs_dropped"]);
        eprintln!("--threads {threads}: {kept} pairs kept, {dropped} dropped");
        assert!(kept <= 1 << 16, "--threads {threads}: {kept} pairs kept");
        assert_eq!(kept + dropped, u64::from(MASTERS), "--threads {threads}");
    }
}
