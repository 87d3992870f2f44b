//! The MBAP header that starts every Modbus/TCP ADU.
//!
//! Parsing is zero-copy and never fails on content: [`Mbap::parse`] only needs
//! seven bytes, and [`Mbap::check`] says separately what is wrong with a header,
//! so that the caller can both report a malformed header and still use its
//! length to skip the ADU.

use crate::modbus::pdu::has_public_layout;

/// Bytes in an MBAP header: transaction id (2), protocol id (2), length (2), unit id (1).
pub const MBAP_LEN: usize = 7;

/// Smallest valid length field: the unit id plus a function code.
const MIN_LEN: u16 = 2;

/// Largest valid length field: the unit id plus the largest PDU (253 bytes,
/// inherited from the 256-byte serial line ADU).
const MAX_LEN: u16 = 254;

/// Largest length field accepted for a function code the specification
/// gives no layout (user-defined 65-72 and 100-110, vendor codes such as
/// Schneider's UMAS 90): some PLCs send such ADUs above the 260-byte limit.
/// Four times the standard limit, well above every vendor extension we
/// know of, and small enough that a forged length cannot make the stream
/// hold much while it waits for the ADU's end.
pub const MAX_VENDOR_LEN: u16 = 1024;

/// What the bytes at the start of a stream say about the ADU there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Too few bytes to tell: fewer than a header, or a header whose
    /// length is only valid for some function codes and no function code yet.
    Short,
    /// An ADU of `len` bytes (maybe not all of them there yet); `oversized`
    /// when its length field is above 254, accepted for a vendor code.
    Adu { len: usize, oversized: bool },
    /// A header no device frames ADUs with: its length cannot be trusted.
    Bad(Mbap, MbapProblem),
}

/// Frame the ADU at the start of `b`: inline for a header the
/// specification allows, the rest out of line.
#[inline(always)]
pub fn frame(b: &[u8]) -> Framing {
    let Some(header) = Mbap::parse(b) else {
        return Framing::Short;
    };
    match header.check() {
        Ok(()) => Framing::Adu {
            len: header.adu_len(),
            oversized: false,
        },
        Err(problem) => frame_unusual(b, header, problem),
    }
}

/// A header [`Mbap::check`] rejects: an oversized vendor ADU, or bad.
#[cold]
fn frame_unusual(b: &[u8], header: Mbap, problem: MbapProblem) -> Framing {
    match problem {
        MbapProblem::LengthTooLong(len) if len <= MAX_VENDOR_LEN => match b.get(MBAP_LEN) {
            None => Framing::Short,
            Some(&fc) if !has_public_layout(fc & 0x7F) && fc & 0x7F != 0 => Framing::Adu {
                len: header.adu_len(),
                oversized: true,
            },
            Some(_) => Framing::Bad(header, problem),
        },
        _ => Framing::Bad(header, problem),
    }
}

/// A decoded MBAP header (all fields big-endian on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mbap {
    /// Transaction id, echoed by the server so responses can be matched.
    pub tid: u16,
    /// Protocol id, 0 for Modbus.
    pub proto: u16,
    /// Bytes that follow the length field: the unit id plus the PDU.
    pub len: u16,
    /// Unit id (the serial slave address behind a gateway).
    pub unit: u8,
}

impl Mbap {
    /// The header at the start of `b`, or `None` if `b` has fewer than [`MBAP_LEN`] bytes.
    /// Any field values are accepted; use [`Mbap::check`] to validate them.
    pub fn parse(b: &[u8]) -> Option<Mbap> {
        let &[t0, t1, p0, p1, l0, l1, unit, ..] = b else {
            return None;
        };
        Some(Mbap {
            tid: u16::from_be_bytes([t0, t1]),
            proto: u16::from_be_bytes([p0, p1]),
            len: u16::from_be_bytes([l0, l1]),
            unit,
        })
    }

    /// Length of the whole ADU: the six bytes before the unit id plus `len`
    /// (which counts the unit id). Valid even for a header that fails `check`.
    pub fn adu_len(&self) -> usize {
        MBAP_LEN - 1 + usize::from(self.len)
    }

    /// Whether the header is one a conforming device could send.
    pub fn check(&self) -> Result<(), MbapProblem> {
        if self.proto != 0 {
            Err(MbapProblem::ProtocolId(self.proto))
        } else if self.len < MIN_LEN {
            Err(MbapProblem::LengthTooShort(self.len))
        } else if self.len > MAX_LEN {
            Err(MbapProblem::LengthTooLong(self.len))
        } else {
            Ok(())
        }
    }
}

/// What [`Mbap::check`] found wrong with a header (the offending field value is kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MbapProblem {
    #[error("protocol id is {0}, not 0")]
    ProtocolId(u16),
    #[error("length field {0} is below 2 (unit id + function code)")]
    LengthTooShort(u16),
    #[error("length field {0} is above 254 (unit id + 253-byte PDU)")]
    LengthTooLong(u16),
}

impl MbapProblem {
    /// A short fixed text for reports and counters, without the field value.
    pub fn describe(&self) -> &'static str {
        match self {
            MbapProblem::ProtocolId(_) => "protocol id is not 0",
            MbapProblem::LengthTooShort(_) => "length field below 2",
            MbapProblem::LengthTooLong(_) => "length field above 254",
        }
    }
}

/// Heuristic used to resynchronise a byte stream after a gap or at mid-stream pickup:
/// true if `b` starts with a header that [`frame`]s an ADU and whose first PDU
/// byte is a plausible function code (1..=127, or an exception 0x81..=0xFF whose low
/// 7 bits are 1..=127). Needs at least `MBAP_LEN + 1` bytes.
///
/// Only 0x00 and 0x80 are rejected as function codes: user-defined and vendor codes are
/// legitimate traffic, and the protocol id and length checks already reject most
/// misaligned offsets.
pub fn plausible_header(b: &[u8]) -> bool {
    let Some(&fc) = b.get(MBAP_LEN) else {
        return false;
    };
    matches!(frame(b), Framing::Adu { .. }) && fc & 0x7F != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(proto: u16, len: u16) -> Mbap {
        Mbap {
            tid: 1,
            proto,
            len,
            unit: 1,
        }
    }

    #[test]
    fn parses_a_real_header() {
        // tid 0x00d1, proto 0, len 15, unit 1 (lab/new_function_code.pcap frame 788, FC 23).
        let b = [0x00, 0xd1, 0x00, 0x00, 0x00, 0x0f, 0x01, 0x17, 0x00];
        let h = Mbap::parse(&b).unwrap();
        assert_eq!(
            h,
            Mbap {
                tid: 0xd1,
                proto: 0,
                len: 15,
                unit: 1
            }
        );
        assert_eq!(h.adu_len(), 21);
        assert_eq!(h.check(), Ok(()));
    }

    fn with_fc(len: u16, fc: u8) -> Vec<u8> {
        let mut b = vec![0, 1, 0, 0];
        b.extend_from_slice(&len.to_be_bytes());
        b.extend_from_slice(&[1, fc]);
        b
    }

    #[test]
    fn frames_oversized_adus_of_vendor_codes_only() {
        let adu = |len: u16| Framing::Adu {
            len: 6 + usize::from(len),
            oversized: len > 254,
        };
        assert_eq!(frame(&with_fc(254, 3)), adu(254));
        for fc in [90, 100, 65, 0x80 | 90] {
            assert_eq!(frame(&with_fc(255, fc)), adu(255), "fc {fc}");
            assert_eq!(frame(&with_fc(1024, fc)), adu(1024), "fc {fc}");
        }
        // The function code decides: not there yet, one cannot tell.
        assert_eq!(frame(&with_fc(600, 100)[..7]), Framing::Short);
        assert_eq!(frame(&with_fc(6, 3)[..7]), adu(6));
        for (len, fc) in [
            (255, 3),
            (600, 43),
            (600, 0x83),
            (1025, 100),
            (600, 0),
            (600, 0x80),
        ] {
            let b = with_fc(len, fc);
            let h = Mbap::parse(&b).unwrap();
            assert_eq!(
                frame(&b),
                Framing::Bad(h, MbapProblem::LengthTooLong(len)),
                "len {len} fc {fc}"
            );
        }
        let mut b = with_fc(600, 100);
        b[3] = 1;
        assert!(matches!(
            frame(&b),
            Framing::Bad(_, MbapProblem::ProtocolId(1))
        ));
    }

    #[test]
    fn needs_seven_bytes() {
        assert_eq!(Mbap::parse(&[0; 6]), None);
        assert_eq!(Mbap::parse(&[]), None);
        assert!(Mbap::parse(&[0; 7]).is_some());
    }

    #[test]
    fn check_reports_each_problem() {
        assert_eq!(header(1, 6).check(), Err(MbapProblem::ProtocolId(1)));
        assert_eq!(header(0, 1).check(), Err(MbapProblem::LengthTooShort(1)));
        assert_eq!(header(0, 0).check(), Err(MbapProblem::LengthTooShort(0)));
        assert_eq!(header(0, 255).check(), Err(MbapProblem::LengthTooLong(255)));
        assert_eq!(header(0, 2).check(), Ok(()));
        assert_eq!(header(0, 254).check(), Ok(()));
        // The protocol id is reported first when both are wrong.
        assert_eq!(header(7, 0).check(), Err(MbapProblem::ProtocolId(7)));
    }

    #[test]
    fn problems_describe_themselves() {
        assert_eq!(
            MbapProblem::ProtocolId(3).describe(),
            "protocol id is not 0"
        );
        assert_eq!(
            MbapProblem::LengthTooShort(1).describe(),
            "length field below 2"
        );
        assert_eq!(
            MbapProblem::LengthTooLong(300).describe(),
            "length field above 254"
        );
        assert_eq!(
            MbapProblem::ProtocolId(3).to_string(),
            "protocol id is 3, not 0"
        );
    }

    #[test]
    fn adu_len_of_a_bad_header_still_skips_it() {
        assert_eq!(header(0, 0).adu_len(), 6);
        assert_eq!(header(0, u16::MAX).adu_len(), 6 + 65535);
    }

    #[test]
    fn plausible_header_accepts_requests_and_exceptions() {
        let mut b = [0x00, 0x01, 0x00, 0x00, 0x00, 0x06, 0x01, 0x03, 0, 0, 0, 1];
        assert!(plausible_header(&b));
        b[7] = 0x83; // exception to FC 3
        assert!(plausible_header(&b));
        b[7] = 90; // vendor code
        assert!(plausible_header(&b));
        b[7] = 0xFF;
        assert!(plausible_header(&b));
    }

    #[test]
    fn plausible_header_rejects_bad_headers_and_codes() {
        let good = [0x00, 0x01, 0x00, 0x00, 0x00, 0x06, 0x01, 0x03];
        assert!(plausible_header(&good));
        assert!(!plausible_header(&good[..7]), "no function code byte");
        for fc in [0x00, 0x80] {
            let mut b = good;
            b[7] = fc;
            assert!(!plausible_header(&b), "fc {fc:#x}");
        }
        let mut b = good;
        b[3] = 1; // protocol id 1
        assert!(!plausible_header(&b));
        let mut b = good;
        b[5] = 1; // length 1
        assert!(!plausible_header(&b));
        let mut b = good;
        b[4] = 1; // length 262
        assert!(!plausible_header(&b));
    }

    proptest! {
        #[test]
        fn parse_and_plausible_never_panic(b in proptest::collection::vec(any::<u8>(), 0..16)) {
            let parsed = Mbap::parse(&b);
            prop_assert_eq!(parsed.is_some(), b.len() >= MBAP_LEN);
            if let Some(h) = parsed {
                let _ = h.check().map_err(|p| p.describe());
                prop_assert_eq!(h.adu_len(), 6 + usize::from(h.len));
            }
            if plausible_header(&b) {
                prop_assert!(parsed.is_some_and(|h| h.check().is_ok()));
            }
        }

        #[test]
        fn parse_reads_fields_big_endian(tid: u16, proto: u16, len: u16, unit: u8) {
            let mut b = Vec::new();
            b.extend_from_slice(&tid.to_be_bytes());
            b.extend_from_slice(&proto.to_be_bytes());
            b.extend_from_slice(&len.to_be_bytes());
            b.push(unit);
            prop_assert_eq!(Mbap::parse(&b), Some(Mbap { tid, proto, len, unit }));
        }
    }
}
