//! Scans a slave refuses, through the whole engine, where a pair's scan
//! state is found by its id in the shard's inventory: ADDRESS_SCAN when the
//! slave answers "illegal data address" for `address_scan_refused` (10)
//! distinct addresses within one scan window (60 s), and nothing when the
//! refusals fall in two windows (a new window forgets the last one's).

use modbus_synth::{adu, read_request};
use modbus_tests::{run, write_connection, MS};

/// ADDRESS_SCAN alerts for one connection whose every request (FC 3, each
/// at another address) is refused with exception 2, sent `times` (ns)
/// after the handshake.
fn address_scans(times: &[u64]) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("refusals.pcap");
    write_connection(&path, |c, w, t0| {
        for (tid, dt) in (1u16..).zip(times) {
            let t = t0 + dt;
            c.send(w, t, true, &adu(tid, 1, &read_request(3, tid * 1000, 1)))?;
            c.send(w, t + MS, false, &adu(tid, 1, &[0x83, 2]))?;
        }
        Ok(())
    });
    let r = run(&["--pcap", path.to_str().unwrap()]);
    assert_eq!(r.exit, Ok(0));
    r.report()["counters"]["alerts_by_type"]["ADDRESS_SCAN"]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn refused_addresses_are_a_scan_only_within_one_window() {
    let one_window: Vec<u64> = (0..10).map(|i| i * 10 * MS).collect();
    assert_eq!(address_scans(&one_window), 1);
    // Nine, then nine more 61 s later: never ten in one window.
    let two_windows: Vec<u64> = (0..18)
        .map(|i| i * 10 * MS + if i >= 9 { 61_000 * MS } else { 0 })
        .collect();
    assert_eq!(address_scans(&two_windows), 0);
}
