//! Responses that do not fit their requests, through the whole engine:
//! UNSOLICITED_RESPONSE (only on a connection seen from its start: a
//! capture that began later may have missed the request) and
//! RESPONSE_MISMATCH (another function code, a write echo that differs,
//! an exception code no specification defines).

use std::net::Ipv4Addr;

use modbus_synth::{adu, read_request, write_single_register, Conversation};
use modbus_tests::{run, write_capture};

const MS: u64 = 1_000_000;
const T0: u64 = 1_700_000_000_000_000_000;
const HMI: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 20);
const PLC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 10);

/// A request and its response, either side optional.
type Exchange = (Option<Vec<u8>>, Option<Vec<u8>>);

/// Alerts of `kind` for a capture of one connection: `handshake`, then
/// each exchange.
fn raised(kind: &str, handshake: bool, exchanges: &[Exchange]) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.pcap");
    write_capture(&path, |w| {
        let mut c = Conversation::new(HMI, 40_000, PLC);
        if handshake {
            c.handshake(w, T0)?;
        }
        let mut t = T0 + 10 * MS;
        for (req, resp) in exchanges {
            if let Some(q) = req {
                c.send(w, t, true, q)?;
            }
            if let Some(r) = resp {
                c.send(w, t + MS, false, r)?;
            }
            t += 10 * MS;
        }
        Ok(())
    });
    let r = run(&["--pcap", path.to_str().unwrap()]);
    assert_eq!(r.exit, Ok(0));
    r.report()["counters"]["alerts_by_type"][kind]
        .as_u64()
        .unwrap_or(0)
}

fn read_response(tid: u16, fc: u8) -> Vec<u8> {
    adu(tid, 1, &[fc, 2, 0, 7])
}

#[test]
fn a_response_without_request_is_unsolicited_only_when_the_start_was_seen() {
    let ok = (
        Some(adu(1, 1, &read_request(3, 0, 1))),
        Some(read_response(1, 3)),
    );
    let stray = (None, Some(read_response(9, 3)));
    let kind = "UNSOLICITED_RESPONSE";
    assert_eq!(raised(kind, true, &[ok.clone(), stray.clone()]), 1);
    assert_eq!(raised(kind, true, &[ok.clone(), ok.clone()]), 0);
    // Mid-stream: the request may be before the capture began.
    assert_eq!(raised(kind, false, &[ok, stray]), 0);
}

#[test]
fn responses_that_do_not_match_their_requests() {
    let kind = "RESPONSE_MISMATCH";
    let read = adu(5, 1, &read_request(3, 0, 1));
    // Answered with FC 4 instead of 3.
    assert_eq!(
        raised(
            kind,
            true,
            &[(Some(read.clone()), Some(read_response(5, 4)))]
        ),
        1
    );
    assert_eq!(
        raised(
            kind,
            true,
            &[(Some(read.clone()), Some(read_response(5, 3)))]
        ),
        0
    );
    // A write echoed with another value.
    let write = adu(6, 1, &write_single_register(10, 999));
    let wrong_echo = adu(6, 1, &write_single_register(10, 998));
    assert_eq!(
        raised(kind, true, &[(Some(write.clone()), Some(wrong_echo))]),
        1
    );
    assert_eq!(raised(kind, true, &[(Some(write.clone()), Some(write))]), 0);
    // Exception 9 is defined nowhere; 2 is "illegal data address".
    assert_eq!(
        raised(
            kind,
            true,
            &[(Some(read.clone()), Some(adu(5, 1, &[0x83, 9])))]
        ),
        1
    );
    assert_eq!(
        raised(kind, true, &[(Some(read), Some(adu(5, 1, &[0x83, 2])))]),
        0
    );
}
