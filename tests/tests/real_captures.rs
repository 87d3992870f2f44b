//! What every real capture (`fixtures/real/`, from public projects) raises,
//! written down after reading its traffic with tshark, and what the
//! captures of ordinary traffic must not raise.
//!
//! Ordinary traffic: `iti_mb2.pcap` (a master polling and writing coils of
//! one slave, ADUs split across segments) and `zeek_modbusSmall.pcap`
//! (reads and writes of coils, its addresses anonymised: replayed with
//! `--checksums ignore`), and the lab's normal captures. They raise none of
//! the protocol-anomaly, scan or program-operation types.

use std::collections::BTreeMap;

use modbus_tests::{fixture, run};

/// Alert counts by type of a replay of `capture` (every rule on that
/// needs no list or file).
fn raised(capture: &str, extra: &[&str]) -> BTreeMap<String, u64> {
    let path = fixture(capture);
    let mut args = vec!["--pcap", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    let r = run(&args);
    assert_eq!(r.exit, Ok(0), "{capture}");
    r.report()["counters"]["alerts_by_type"]
        .as_object()
        .expect("alerts by type")
        .iter()
        .filter_map(|(k, v)| v.as_u64().filter(|n| *n > 0).map(|n| (k.clone(), n)))
        .collect()
}

/// The types issue 14 adds: ordinary traffic raises none of them.
const NEW_TYPES: [&str; 10] = [
    "PLC_PROGRAM_OPERATION",
    "RESERVED_FUNCTION_CODE",
    "SLAVE_BUSY_ACK_DELAY",
    "FUNCTION_CODE_SCAN",
    "ADDRESS_SCAN",
    "UNIT_ID_SCAN",
    "NON_MODBUS_TRAFFIC",
    "INVALID_PDU_LENGTH",
    "UNSOLICITED_RESPONSE",
    "RESPONSE_MISMATCH",
];

fn expect(capture: &str, extra: &[&str], want: &[(&str, u64)]) {
    let got = raised(capture, extra);
    let want: BTreeMap<String, u64> = want.iter().map(|(k, n)| (k.to_string(), *n)).collect();
    assert_eq!(got, want, "{capture}");
}

/// Digital Bond's Quickdraw test data, part 1 (tshark): 10.0.0.57 sends
/// FC 8 restart communications (sub-function 1) and force listen-only (4)
/// three times each, clear counters (10), FC 17 and FC 43/14 twice each;
/// slave 10.0.0.8 answers ten requests with exceptions 5 and 6 (each with
/// a stray third byte: `81 05 00`); one ADU of 10.0.0.57 has an MBAP length
/// above 254, one of 10.0.0.8 a protocol id other than 0. The connection
/// from port 2585 opens with 451 bytes of a repeated pattern under an MBAP
/// length of 34,820 and goes on with a protocol id of 16 (Quickdraw's
/// illegal-packet-size and non-Modbus tests): NON_MODBUS_TRAFFIC. No slave answers
/// "illegal function" or "illegal data address" and no master asks for ten
/// function codes or a hundred addresses: Quickdraw's scan signatures (on
/// exceptions 1 and 2) have nothing to match in part 1, and nor do ours.
#[test]
fn quickdraw_part1() {
    expect(
        "real/quickdraw_modbus_test_data_part1.pcap",
        &[],
        &[
            ("PLC_PROGRAM_OPERATION", 6),
            ("DEVICE_ENUMERATION", 6),
            ("EXCEPTION_BURST", 10),
            ("SLAVE_BUSY_ACK_DELAY", 8),
            ("MALFORMED_MBAP_HEADER", 2),
            ("NON_MODBUS_TRAFFIC", 1),
        ],
    );
}

/// CISA ICSNPP's example: a test client on 127.0.0.1 trying 17 function
/// codes within seconds (a function-code scan by its shape), among them FC
/// 43 device identification and FC 8 echo requests (DEVICE_ENUMERATION),
/// back to back faster than 5 ms (MODBUS_FLOOD).
#[test]
fn icsnpp_example() {
    expect(
        "real/icsnpp_modbus_example.pcap",
        &[],
        &[
            ("DEVICE_ENUMERATION", 4),
            ("MODBUS_FLOOD", 23),
            ("FUNCTION_CODE_SCAN", 1),
        ],
    );
}

/// Zeek's fuzzed capture: processed to the end, its garbage raising
/// protocol anomalies (codes no specification assigns among them).
#[test]
fn zeek_fuzzed() {
    let got = raised("real/zeek_fuzz-72.pcap", &[]);
    assert!(
        got.get("RESERVED_FUNCTION_CODE").is_some_and(|n| *n > 0),
        "{got:?}"
    );
    assert!(
        got.get("MALFORMED_MBAP_HEADER").is_some_and(|n| *n > 0),
        "{got:?}"
    );
}

/// Zeek's capture of scanners on port 502: besides one Modbus connection
/// (10.0.0.9, ordinary reads and writes), six connections from the
/// Internet open with DCE/RPC, ONC RPC, TLS, HTTP, an "MGLNDD" probe and
/// RDP (tshark: no Modbus in them). Each is one NON_MODBUS_TRAFFIC; the
/// server's answers (MBAP-shaped, echoing the probe's protocol id) are
/// counted, not raised.
#[test]
fn zeek_non_modbus_on_502() {
    expect(
        "real/zeek_modbus-and-non-modbus-p502.pcap",
        &[],
        &[("NON_MODBUS_TRAFFIC", 6)],
    );
}

#[test]
fn ordinary_traffic_raises_none_of_the_new_types() {
    for (capture, extra) in [
        ("real/iti_mb2.pcap", &[][..]),
        ("real/zeek_modbusSmall.pcap", &["--checksums", "ignore"][..]),
        ("lab/normal_baseline.pcap", &[][..]),
        ("lab/normal_test.pcap", &[][..]),
    ] {
        let got = raised(capture, extra);
        for t in NEW_TYPES {
            assert!(!got.contains_key(t), "{capture}: {got:?}");
        }
    }
    // Nothing at all in the two real ones.
    assert_eq!(raised("real/iti_mb2.pcap", &[]), BTreeMap::new());
}
