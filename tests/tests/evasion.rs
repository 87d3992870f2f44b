//! TCP evasion: captures crafted as an attacker would, each with what the
//! PLC's own TCP/IP stack (Linux) does with the same packets. Wherever the
//! PLC executes the unauthorized FC 6 write, the sensor must report it.
//!
//! These replay whole captures through the binary's code path (dispatcher,
//! shard, reassembly, rules): the stream engine's unit tests once called a
//! sequence-checked close the shard never used, so an off-sequence FIN was
//! said to be ignored while the shard honoured it.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use modbus_synth::{
    adu, read_registers_response, read_request, write_single_register, Conversation, TCP_ACK,
    TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN,
};
use modbus_tests::{run, write_capture, CaptureWriter, Run};

const MS: u64 = 1_000_000;
const T0: u64 = 1_700_000_000_000_000_000;
const HMI: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 20);
const ATTACKER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 66);
const PLC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 10);

/// `Conversation::segment_at`'s sender: the master (the attacker) or the PLC.
const FROM_MASTER: bool = false;
const FROM_PLC: bool = true;

/// What the attacker does between a normal read and the write.
type Evasion = dyn Fn(&mut Conversation, &mut CaptureWriter, u64) -> std::io::Result<()>;

/// The attacker's connection to the PLC: (handshake when `handshake`), one
/// read and its response, `evade`, then the write of 999 to holding
/// register 10 (split after its function code when `split`), answered.
fn capture(dir: &Path, handshake: bool, split: bool, evade: &Evasion) -> PathBuf {
    let path = dir.join("attack.pcap");
    write_capture(&path, |w| {
        let mut c = Conversation::new(ATTACKER, 40_000, PLC);
        if handshake {
            c.handshake(w, T0)?;
        }
        c.send(w, T0 + 10 * MS, true, &adu(1, 1, &read_request(3, 0, 2)))?;
        let resp = adu(1, 1, &read_registers_response(3, &[7, 8]));
        c.send(w, T0 + 11 * MS, false, &resp)?;
        evade(&mut c, w, T0 + 20 * MS)?;
        let write = adu(2, 1, &write_single_register(10, 999));
        if split {
            c.send(w, T0 + 30 * MS, true, &write[..8])?;
            evade(&mut c, w, T0 + 31 * MS)?;
            c.send(w, T0 + 32 * MS, true, &write[8..])?;
        } else {
            c.send(w, T0 + 30 * MS, true, &write)?;
        }
        c.send(w, T0 + 33 * MS, false, &write)
    });
    path
}

/// Replay `pcap` with only the HMI allowed to write.
fn replay(pcap: &Path) -> Run {
    let r = run(&[
        "--pcap",
        pcap.to_str().unwrap(),
        "--authorized-writers",
        &HMI.to_string(),
    ]);
    assert_eq!(r.exit, Ok(0));
    r
}

/// Alerts of type `kind` raised for traffic from `src` to the PLC.
fn alerts_from(r: &Run, kind: &str, src: Ipv4Addr) -> u64 {
    r.alert_counts()
        .into_iter()
        .filter(|((t, _, from, to), _)| {
            t == kind && *from == src.to_string() && *to == PLC.to_string()
        })
        .map(|(_, n)| n)
        .sum()
}

/// The attacker's unauthorized writes reported for `pcap`, and the
/// report's counters.
fn writes_reported(pcap: &Path) -> (u64, serde_json::Value) {
    let r = replay(pcap);
    let writes = alerts_from(&r, "UNAUTHORIZED_MODBUS_WRITE", ATTACKER);
    (writes, r.report()["counters"].clone())
}

fn check(name: &str, handshake: bool, split: bool, evade: &Evasion, counter: &str) {
    let dir = tempfile::tempdir().unwrap();
    let pcap = capture(dir.path(), handshake, split, evade);
    let (writes, c) = writes_reported(&pcap);
    assert_eq!(
        writes, 1,
        "{name}: the write the PLC executes is reported ({c})"
    );
    assert!(
        c[counter].as_u64().unwrap_or(0) >= 1,
        "{name}: the evasion is counted in {counter} ({c})"
    );
}

/// A forged segment: `flags` and `payload` from `sender` at `rel_seq` from
/// that side's next sequence number.
fn forged(sender: bool, rel_seq: i64, flags: u8, payload: Vec<u8>) -> Box<Evasion> {
    Box::new(move |c, w, ts| c.segment_at(w, ts, sender, rel_seq, flags, &payload))
}

/// RST with a sequence number in the window but not the next byte: Linux
/// answers with a challenge ACK and keeps the connection (RFC 5961 3.2).
/// The write is split around it: a sensor that honours the RST loses the
/// half it holds and cannot frame the rest.
#[test]
fn an_rst_off_sequence_does_not_end_the_connection() {
    for (side, sender) in [("master", FROM_MASTER), ("PLC", FROM_PLC)] {
        let rst = forged(sender, 100, TCP_RST | TCP_ACK, vec![]);
        let name = format!("RST from the {side}'s side, in window");
        check(&name, true, true, &*rst, "ignored_fin_rst");
    }
}

/// FIN ahead of the next byte: Linux queues it out of order and takes the
/// bytes before it; the write arrives in sequence and is executed.
#[test]
fn a_fin_off_sequence_does_not_end_the_stream() {
    let fin = forged(FROM_MASTER, 500, TCP_FIN | TCP_ACK, vec![]);
    check("FIN ahead", true, false, &*fin, "ignored_fin_rst");
    check(
        "FIN ahead, mid-stream",
        false,
        false,
        &*fin,
        "ignored_fin_rst",
    );
}

/// A SYN with another initial sequence number on an established
/// connection: Linux sends a challenge ACK and changes nothing (RFC 5961
/// 4.2); the write at the real sequence number is executed.
#[test]
fn a_second_syn_does_not_reset_the_stream() {
    let ahead = forged(FROM_MASTER, 1000, TCP_SYN, vec![]);
    check("SYN with ISN ahead", true, false, &*ahead, "ignored_syn");
    let behind = forged(FROM_MASTER, -5000, TCP_SYN, vec![]);
    check(
        "SYN with ISN behind, mid-stream",
        false,
        false,
        &*behind,
        "ignored_syn",
    );
    // Data on the SYN is no stream data either (no TCP Fast Open): an MBAP
    // header announcing 200 bytes, taken in, would swallow the write.
    let header = vec![0, 9, 0, 0, 0, 200, 1];
    let carrying = forged(FROM_MASTER, 0, TCP_SYN, header);
    check(
        "SYN carrying a header",
        true,
        false,
        &*carrying,
        "ignored_syn",
    );
}

/// Data far beyond the receive window: Linux drops it (and sends a
/// duplicate ACK); it must not move the stream, or the write at the real
/// sequence number would look like a retransmission.
#[test]
fn data_outside_the_window_does_not_move_the_stream() {
    let junk = || vec![0x41u8; 40];
    let far = forged(FROM_MASTER, 2 << 20, TCP_PSH | TCP_ACK, junk());
    check(
        "2 MiB ahead, window known",
        true,
        false,
        &*far,
        "out_of_window_segments",
    );
    check(
        "2 MiB ahead, mid-stream",
        false,
        false,
        &*far,
        "out_of_window_segments",
    );
    // Beyond the advertised window (64 KiB: no window scaling in the
    // handshake) but inside the old fixed 1 MiB reordering window.
    let beyond = forged(FROM_MASTER, 200_000, TCP_PSH | TCP_ACK, junk());
    check(
        "200 kB ahead, window 64 KiB",
        true,
        false,
        &*beyond,
        "out_of_window_segments",
    );
}

/// Junk ahead of the next byte, more segments than the sensor holds out of
/// order: Linux keeps them all queued (its buffer is far larger) and takes
/// the write when it arrives at the next byte. The sensor gives the hole
/// up when its buffer is full; the write that then fills the hole is
/// decoded on its own instead of being taken for old data.
#[test]
fn a_full_out_of_order_buffer_does_not_hide_the_hole_filled_later() {
    let junk: Box<Evasion> = Box::new(|c, w, ts| {
        for k in 0..20i64 {
            let flags = TCP_PSH | TCP_ACK;
            c.segment_at(
                w,
                ts + k as u64,
                FROM_MASTER,
                12 * (2 * k + 1),
                flags,
                &[0xEE; 12],
            )?;
        }
        Ok(())
    });
    check("20 segments ahead", true, false, &*junk, "gap_fills");
}

/// An attacker whose address is lower than the PLC's, sourcing from port
/// 502: both ports are Modbus ports, and ordering by address would make
/// the attacker the server and its requests responses. The roles come
/// from the handshake, else from the traffic; with only the attacker's
/// side mirrored the write is still seen.
#[test]
fn sourcing_from_port_502_does_not_swap_the_roles() {
    let low = Ipv4Addr::new(10, 0, 0, 5);
    let write = adu(2, 1, &write_single_register(10, 999));
    let read = adu(1, 1, &read_request(3, 0, 2));
    let resp = adu(1, 1, &read_registers_response(3, &[7, 8]));
    for (name, handshake, one_way, counter) in [
        ("with the handshake", true, false, "roles_by_handshake"),
        ("mid-stream", false, false, "roles_by_content"),
        ("one-way mirror", false, true, "roles_by_content"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p502.pcap");
        write_capture(&path, |w| {
            let mut c = Conversation::new(low, 502, PLC);
            if handshake {
                c.handshake(w, T0)?;
            }
            c.send(w, T0 + 10 * MS, true, &read)?;
            if !one_way {
                c.send(w, T0 + 11 * MS, false, &resp)?;
            }
            c.send(w, T0 + 30 * MS, true, &write)?;
            if !one_way {
                c.send(w, T0 + 31 * MS, false, &write)?;
            }
            Ok(())
        });
        let r = replay(&path);
        let writes = alerts_from(&r, "UNAUTHORIZED_MODBUS_WRITE", low);
        let counters = &r.report()["counters"];
        assert_eq!(
            writes, 1,
            "{name}: the write, blamed on the attacker: {counters}"
        );
        assert_eq!(counters[counter], 1, "{name}: {counters}");
        assert_eq!(counters["requests"], 2, "{name}: {counters}");
    }
}

/// A write behind a header the MBAP rules reject: a server that frames
/// requests by function code (as some widely used libraries do) executes
/// it anyway. The framing alert stays, and the write is reported.
#[test]
fn a_framing_downgrade_does_not_hide_a_write() {
    let write = adu(2, 1, &write_single_register(10, 999));
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut w = write.clone();
        f(&mut w);
        w
    };
    let cases: [(&str, Vec<u8>, bool); 4] = [
        ("protocol id 7", with(&|w| w[3] = 7), false),
        ("length 2", with(&|w| w[5] = 2), false),
        (
            "one trailing byte",
            with(&|w| {
                w[5] += 1;
                w.push(0);
            }),
            false,
        ),
        // Longer than the PDU, and the connection then ends: the server
        // did not wait for bytes that never came.
        ("length 40, then FIN", with(&|w| w[5] = 40), true),
    ];
    for (name, bytes, close) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("framing.pcap");
        write_capture(&path, |w| {
            let mut c = Conversation::new(ATTACKER, 40_000, PLC);
            c.handshake(w, T0)?;
            c.send(w, T0 + 10 * MS, true, &bytes)?;
            if close {
                c.fin(w, T0 + 20 * MS, false)?;
            }
            Ok(())
        });
        let r = replay(&path);
        let of = |t: &str| alerts_from(&r, t, ATTACKER);
        let c = &r.report()["counters"];
        assert_eq!(of("UNAUTHORIZED_MODBUS_WRITE"), 1, "{name}: {c}");
        assert!(
            of("MALFORMED_MBAP_HEADER") >= 1,
            "{name}: the framing alert stays: {c}"
        );
        assert_eq!(c["salvaged_requests"], 1, "{name}: {c}");
    }
}

/// Junk at exactly the next byte but without the ACK flag: the PLC drops
/// it (a segment past the handshake must carry ACK), so its bytes must not
/// shift the stream under the write that follows at the same sequence
/// number.
#[test]
fn a_segment_without_ack_is_not_stream_data() {
    // An MBAP header announcing 200 bytes: taken as stream data, it would
    // swallow the write into an ADU that never completes.
    let header = vec![0, 9, 0, 0, 0, 200, 1];
    let junk = forged(FROM_MASTER, 0, TCP_PSH, header);
    let counter = "segments_without_ack";
    check("a header without ACK", true, false, &*junk, counter);
    check(
        "a header without ACK, mid-stream",
        false,
        false,
        &*junk,
        counter,
    );
}

/// An urgent byte inside the write's MBAP header: Linux (without
/// SO_OOBINLINE) takes the byte before the urgent pointer out of band, so
/// the PLC reads the write as if it were not there; read in band, it would
/// break the header.
#[test]
fn an_urgent_byte_is_not_stream_data() {
    let write = adu(2, 1, &write_single_register(10, 999));
    let mut with_urgent = write[..2].to_vec();
    with_urgent.push(0xEE);
    with_urgent.extend_from_slice(&write[2..]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("urgent.pcap");
    write_capture(&path, |w| {
        let mut c = Conversation::new(ATTACKER, 40_000, PLC);
        c.handshake(w, T0)?;
        c.send(w, T0 + 10 * MS, true, &adu(1, 1, &read_request(3, 0, 2)))?;
        // The urgent pointer points past the urgent byte (RFC 6093).
        c.urgent_at(w, T0 + 30 * MS, true, &with_urgent, 3)
    });
    let (writes, c) = writes_reported(&path);
    assert_eq!(writes, 1, "{c}");
    assert_eq!(c["urgent_bytes"], 1, "{c}");
    assert_eq!(c["malformed_adus"], 0, "{c}");
}

/// What a real end of connection looks like still ends it: FIN in
/// sequence from both sides, and an RST at exactly the next byte.
#[test]
fn in_sequence_fin_and_exact_rst_still_close() {
    let dir = tempfile::tempdir().unwrap();
    let nothing: &Evasion = &|_, _, _| Ok(());
    let pcap = capture(dir.path(), true, false, nothing);
    // Append an orderly close: a second capture with it.
    let path = dir.path().join("closed.pcap");
    write_capture(&path, |w| {
        let mut c = Conversation::new(ATTACKER, 40_000, PLC);
        c.handshake(w, T0)?;
        let write = adu(2, 1, &write_single_register(10, 999));
        c.send(w, T0 + 30 * MS, true, &write)?;
        c.fin(w, T0 + 40 * MS, true)?;
        let mut c2 = Conversation::new(ATTACKER, 40_001, PLC);
        c2.handshake(w, T0 + 50 * MS)?;
        c2.rst(w, T0 + 60 * MS, true)
    });
    let (writes, c) = writes_reported(&path);
    assert_eq!(writes, 1);
    assert_eq!(c["flows_closed"], 2, "{c}");
    assert_eq!(c["ignored_fin_rst"], 0, "{c}");
    let (_, c) = writes_reported(&pcap);
    assert_eq!(c["ignored_syn"], 0, "no evasion, nothing ignored: {c}");
    assert_eq!(c["out_of_window_segments"], 0, "{c}");
}

/// A copy of the write's bytes that the PLC drops (see the callers), sent
/// just before the write at the same sequence number: a harmless read of
/// the same length. Taken as stream data, it makes the real write look
/// like a retransmission of old bytes, and the write goes unreported.
fn dropped_copy(mangle: fn(&mut Vec<u8>)) -> Box<Evasion> {
    let decoy = adu(2, 1, &read_request(3, 10, 1));
    Box::new(move |c, w, ts| c.mangled_at(w, ts, FROM_MASTER, 0, TCP_PSH | TCP_ACK, &decoy, mangle))
}

/// Offsets in the synthetic frames (Ethernet, 20-byte IPv4, TCP).
const IP: usize = 14;
const TCP: usize = IP + 20;

/// A wrong TCP checksum, a wrong IPv4 header checksum, an IP total length
/// longer than the (whole) frame: Linux drops each such packet (`tcp_v4_rcv`
/// checksum check, `ip_rcv_core`), the decoy never reaches the PLC and the
/// write after it is executed.
#[test]
fn copies_the_receiver_drops_are_not_stream_data() {
    let tcp_checksum: fn(&mut Vec<u8>) = |f| f[TCP + 16] ^= 0x5A;
    let ip_checksum: fn(&mut Vec<u8>) = |f| f[IP + 10] ^= 0x5A;
    let ip_length: fn(&mut Vec<u8>) = |f| {
        // Four bytes more than the frame holds, with the header checksum
        // fixed up by the same amount so that only the length is wrong.
        f[IP + 3] += 4;
        let sum = u16::from_be_bytes([f[IP + 10], f[IP + 11]]);
        let mut s = u32::from(sum) + 0xFFFF - 4;
        s = (s & 0xFFFF) + (s >> 16);
        f[IP + 10..IP + 12].copy_from_slice(&(s as u16).to_be_bytes());
    };
    for (name, mangle, counter) in [
        ("bad TCP checksum", tcp_checksum, "checksum_errors"),
        ("bad IP checksum", ip_checksum, "checksum_errors"),
        ("IP length past the frame", ip_length, "checksum_errors"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let pcap = capture(dir.path(), true, false, &*dropped_copy(mangle));
        let r = replay(&pcap);
        let writes = alerts_from(&r, "UNAUTHORIZED_MODBUS_WRITE", ATTACKER);
        let report = r.report();
        assert_eq!(writes, 1, "{name}: {}", report["counters"]);
        let skipped = report["counters"]["skipped"]["ip_length_exceeds_frame"]
            .as_u64()
            .unwrap_or(0);
        let counted = report["counters"][counter].as_u64().unwrap_or(0) + skipped;
        assert_eq!(counted, 1, "{name}: {}", report);
    }
}

/// A capture taken on the master itself with TX checksum offload: every
/// frame it sent carries only the pseudo-header sum. Those are not dropped
/// (the NIC filled the sums in on the wire) but counted. An offload-shaped
/// copy forged on a side whose checksums are right is a wrong checksum.
#[test]
fn offloaded_checksums_are_counted_not_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("offloaded.pcap");
    write_capture(&path, |w| {
        let mut c = Conversation::new(ATTACKER, 40_000, PLC);
        c.offload_checksums(FROM_MASTER);
        c.handshake(w, T0)?;
        c.send(w, T0 + 10 * MS, true, &adu(1, 1, &read_request(3, 0, 2)))?;
        let write = adu(2, 1, &write_single_register(10, 999));
        c.send(w, T0 + 30 * MS, true, &write)?;
        c.send(w, T0 + 31 * MS, false, &write)
    });
    let (writes, c) = writes_reported(&path);
    assert_eq!(writes, 1, "{c}");
    // SYN, ACK, two requests and the ACK of the response.
    assert_eq!(c["checksum_offloaded"], 4, "{c}");
    assert_eq!(c["checksum_errors"], 0, "{c}");

    let zero_sum: fn(&mut Vec<u8>) = |f| f[TCP + 16..TCP + 18].fill(0);
    check(
        "zero checksum forged",
        true,
        false,
        &*dropped_copy(zero_sum),
        "checksum_errors",
    );
}

/// A copy whose time to live runs out between the sensor and the PLC:
/// the PLC's frames arrive with 62 (two routers away: Linux starts at 64),
/// the decoy with 2, which the second router drops.
#[test]
fn a_copy_that_expires_before_the_plc_is_not_stream_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ttl.pcap");
    let decoy = adu(2, 1, &read_request(3, 10, 1));
    write_capture(&path, |w| {
        let mut c = Conversation::new(ATTACKER, 40_000, PLC);
        c.set_ttl(FROM_PLC, 62);
        c.set_ttl(FROM_MASTER, 120);
        c.handshake(w, T0)?;
        c.send(w, T0 + 10 * MS, true, &adu(1, 1, &read_request(3, 0, 2)))?;
        c.send(
            w,
            T0 + 11 * MS,
            false,
            &adu(1, 1, &read_registers_response(3, &[7, 8])),
        )?;
        c.set_ttl(FROM_MASTER, 2);
        c.segment_at(w, T0 + 20 * MS, FROM_MASTER, 0, TCP_PSH | TCP_ACK, &decoy)?;
        c.set_ttl(FROM_MASTER, 120);
        let write = adu(2, 1, &write_single_register(10, 999));
        c.send(w, T0 + 30 * MS, true, &write)?;
        c.send(w, T0 + 31 * MS, false, &write)
    });
    let (writes, c) = writes_reported(&path);
    assert_eq!(writes, 1, "{c}");
    assert_eq!(c["ttl_expired_segments"], 1, "{c}");
}

/// Replay `pcap` with only the HMI allowed to write, and `extra` flags.
fn replay_with(pcap: &Path, extra: &[&str]) -> Run {
    let mut args = vec![
        "--pcap",
        pcap.to_str().unwrap(),
        "--authorized-writers",
        "10.0.0.20",
    ];
    args.extend_from_slice(extra);
    let r = run(&args);
    assert_eq!(r.exit, Ok(0));
    r
}

/// Two copies of the bytes after a hole: first a harmless read, then the
/// write followed by a read, starting at the same byte but longer. Linux
/// (`tcp_data_queue_ofo`) replaces the queued copy with the longer one and
/// executes the write; a first-copy or BSD stack keeps the read. Then the
/// hole is filled. Whatever copy the policy takes, the conflict is an
/// EVASION_ATTEMPT.
#[test]
fn overlapping_copies_are_resolved_as_the_target_stack_does() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("overlap.pcap");
    write_capture(&path, |w| {
        let mut c = Conversation::new(ATTACKER, 40_000, PLC);
        c.handshake(w, T0)?;
        let first = adu(1, 1, &read_request(3, 0, 2));
        let decoy = adu(2, 1, &read_request(3, 10, 1));
        let mut longer = adu(2, 1, &write_single_register(10, 999));
        longer.extend_from_slice(&adu(3, 1, &read_request(3, 0, 2)));
        c.send_at(w, T0 + 10 * MS, true, 12, &decoy)?;
        c.send_at(w, T0 + 11 * MS, true, 12, &longer)?;
        c.send(w, T0 + 12 * MS, true, &first)?;
        c.send(w, T0 + 13 * MS, true, &longer)
    });
    for (policy, writes) in [
        (None, 1),
        (Some("linux"), 1),
        (Some("first"), 0),
        (Some("bsd"), 0),
        (Some("windows"), 0),
        (Some("last"), 1),
        (Some("10.0.0.0/24=first"), 0),
        (Some("10.0.0.20=first"), 1),
    ] {
        let extra: Vec<&str> = policy
            .iter()
            .flat_map(|p| ["--target-policy", *p])
            .collect();
        let r = replay_with(&path, &extra);
        let c = &r.report()["counters"];
        let reported = alerts_from(&r, "UNAUTHORIZED_MODBUS_WRITE", ATTACKER);
        assert_eq!(reported, writes, "{policy:?}: {c}");
        assert!(
            alerts_from(&r, "EVASION_ATTEMPT", ATTACKER) >= 1,
            "{policy:?}: the conflict is a finding: {c}"
        );
    }
}

/// In-order bytes that overlap a copy held out of order: Linux takes the
/// in-order bytes (they are delivered at once; the queued copy is trimmed
/// when the queue is drained), a first-copy stack the held ones.
#[test]
fn in_order_bytes_over_a_held_copy_follow_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in-order.pcap");
    write_capture(&path, |w| {
        let mut c = Conversation::new(ATTACKER, 40_000, PLC);
        c.handshake(w, T0)?;
        let decoy = adu(2, 1, &read_request(3, 10, 1));
        let mut both = adu(1, 1, &read_request(3, 0, 2));
        both.extend_from_slice(&adu(2, 1, &write_single_register(10, 999)));
        c.send_at(w, T0 + 10 * MS, true, 12, &decoy)?;
        c.send(w, T0 + 11 * MS, true, &both)
    });
    for (policy, writes) in [("linux", 1), ("first", 0), ("last", 1)] {
        let r = replay_with(&path, &["--target-policy", policy]);
        let c = &r.report()["counters"];
        let reported = alerts_from(&r, "UNAUTHORIZED_MODBUS_WRITE", ATTACKER);
        assert_eq!(reported, writes, "{policy}: {c}");
        assert_eq!(
            alerts_from(&r, "EVASION_ATTEMPT", ATTACKER),
            1,
            "{policy}: {c}"
        );
        assert_eq!(c["requests"], 2, "{policy}: {c}");
    }
}

/// A policy that is not one, or a range that is not one, is refused with
/// a message that names it.
#[test]
fn an_unknown_target_policy_is_refused() {
    use clap::Parser;
    for bad in ["solaris", "10.0.0.0/40=linux"] {
        let args = ["modbus-detect", "--pcap", "x.pcap", "--target-policy", bad];
        let err = modbus_detect::cli::Args::try_parse_from(args)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains(bad.split('=').next().unwrap_or(bad)) || err.contains("prefix"),
            "{bad}: {err}"
        );
        assert!(err.contains("--target-policy"), "{bad}: {err}");
    }
}

/// The write in IP fragments (class 4): `pieces` as for
/// `Conversation::fragmented`; the PLC answers the write.
fn fragmented_write(dir: &Path, pieces: &[(usize, Option<&[u8]>, usize)]) -> PathBuf {
    let path = dir.join("fragments.pcap");
    write_capture(&path, |w| {
        let mut c = Conversation::new(ATTACKER, 40_000, PLC);
        c.handshake(w, T0)?;
        let write = adu(2, 1, &write_single_register(10, 999));
        c.fragmented(w, T0 + 10 * MS, true, &write, pieces)?;
        c.send(w, T0 + 20 * MS, false, &write)
    });
    path
}

/// A write cut into 16-byte IP fragments: Linux reassembles and executes
/// it; so fragments smaller than any link makes are an evasion attempt.
#[test]
fn a_write_in_tiny_fragments_is_reassembled_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    // 20 bytes of TCP header and 12 of ADU.
    let path = fragmented_write(dir.path(), &[(16, None, 16), (0, None, 16)]);
    let r = replay(&path);
    let c = &r.report()["counters"];
    assert_eq!(
        alerts_from(&r, "UNAUTHORIZED_MODBUS_WRITE", ATTACKER),
        1,
        "{c}"
    );
    assert_eq!(alerts_from(&r, "EVASION_ATTEMPT", ATTACKER), 1, "{c}");
    assert_eq!(c["ip_fragments"], 2, "{c}");
    assert_eq!(c["ip_datagrams_reassembled"], 1, "{c}");
    assert_eq!(c["checksum_errors"], 0, "the datagram is whole: {c}");
    let alert = r.report()["alerts"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["type"] == "EVASION_ATTEMPT"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(alert["reason"], "tiny_ip_fragments", "{alert}");
}

/// IP fragments with two versions of the write's bytes. An exact
/// duplicate range: Linux drops the later copy (`IPFRAG_DUP`) and executes
/// the write, as a first-copy stack does; a last-copy stack takes the
/// decoy (whose TCP checksum then fails). A partial overlap: Linux
/// discards the whole datagram. Each is an evasion attempt.
#[test]
fn overlapping_fragments_follow_the_target_policy() {
    let dir = tempfile::tempdir().unwrap();
    let decoy = [0xEEu8; 16];
    let duplicate = fragmented_write(
        dir.path(),
        &[(16, None, 16), (16, Some(&decoy), 16), (0, None, 16)],
    );
    for (policy, writes) in [("linux", 1), ("first", 1), ("last", 0)] {
        let r = replay_with(&duplicate, &["--target-policy", policy]);
        let c = &r.report()["counters"];
        let reported = alerts_from(&r, "UNAUTHORIZED_MODBUS_WRITE", ATTACKER);
        assert_eq!(reported, writes, "{policy}: {c}");
        assert!(
            alerts_from(&r, "EVASION_ATTEMPT", ATTACKER) >= 1,
            "{policy}: {c}"
        );
        assert_eq!(c["fragment_overlaps"], 1, "{policy}: {c}");
    }
    let partial = dir.path().join("partial.pcap");
    std::fs::rename(
        fragmented_write(
            dir.path(),
            &[(8, Some(&decoy), 16), (0, None, 16), (16, None, 16)],
        ),
        &partial,
    )
    .unwrap();
    let r = replay(&partial);
    let c = &r.report()["counters"];
    assert_eq!(
        alerts_from(&r, "UNAUTHORIZED_MODBUS_WRITE", ATTACKER),
        0,
        "{c}"
    );
    assert!(alerts_from(&r, "EVASION_ATTEMPT", ATTACKER) >= 1, "{c}");
    assert_eq!(c["ip_datagrams_reassembled"], 1, "{c}");
}

/// Fragments that never complete their datagram are held no longer than
/// the reassembly time, and counted.
#[test]
fn an_incomplete_datagram_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("incomplete.pcap");
    write_capture(&path, |w| {
        let mut c = Conversation::new(ATTACKER, 40_000, PLC);
        c.handshake(w, T0)?;
        let write = adu(2, 1, &write_single_register(10, 999));
        c.fragmented(w, T0 + MS, true, &write, &[(0, None, 16)])?;
        // 31 s later, another datagram's fragment: the first has expired.
        c.fragmented(w, T0 + 31_000 * MS, true, &write, &[(0, None, 16)])
    });
    let r = replay(&path);
    let c = &r.report()["counters"];
    assert_eq!(c["fragments_timed_out"], 1, "{c}");
    assert_eq!(c["ip_datagrams_reassembled"], 0, "{c}");
}
