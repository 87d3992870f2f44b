//! The MBAP header and PDU decoder on arbitrary bytes.
//!
//! The input is read three ways: as a request PDU and as a response PDU (the
//! raw bytes), and as ADUs: a first ADU (its MBAP length field says where it
//! ends) and, after it, a second one, as a transaction's request and
//! response. Whatever parses must encode back to the very bytes it came
//! from and parse again to the same value; `read_values` and
//! `written_values` must agree with their own lengths and stay within the
//! request's quantity.

#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use libfuzzer_sys::fuzz_target;
use modbus_detect::modbus::mbap::{frame, plausible_header, Framing, Mbap, MBAP_LEN};
use modbus_detect::modbus::pdu::{
    encode_request, encode_response, parse_request, parse_response, read_values, Request, Response,
    Table,
};
use modbus_detect::modbus::record::{AduOrigin, AduRecord};
use modbus_detect::modbus::{exception_name, function_name};

fn origin() -> AduOrigin {
    AduOrigin {
        frame: 1,
        frame_len: 64,
        ts_ns: 0,
        src: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        src_port: 40_000,
        dst: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
        dst_port: 502,
    }
}

/// A parsed request: round trip, accessors, written values.
fn check_request(pdu: &[u8], req: &Request<'_>) {
    let mut out = Vec::new();
    encode_request(req, &mut out);
    assert_eq!(out, pdu, "request {req:?} does not encode to its bytes");
    assert_eq!(parse_request(&out).as_ref(), Ok(req), "request re-parse");
    assert_eq!(Some(&req.function_code()), pdu.first());
    let _ = function_name(req.function_code());
    let _ = (req.is_write(), req.reference());
    let written = req.written_values();
    let n = written.len();
    let mut count = 0usize;
    let mut last: Option<(Table, u16)> = None;
    for (table, addr, _value) in written {
        if let Some((t, a)) = last {
            assert_eq!(t, table, "one table per request");
            assert_eq!(a.wrapping_add(1), addr, "consecutive addresses");
        }
        last = Some((table, addr));
        count += 1;
    }
    assert_eq!(count, n, "written_values yields exactly its len");
    if !req.is_write() {
        assert_eq!(n, 0, "only writes write: {req:?}");
    }
}

/// A parsed response: round trip and accessors.
fn check_response(pdu: &[u8], resp: &Response<'_>) {
    let mut out = Vec::new();
    encode_response(resp, &mut out);
    // An exception decodes from its first two bytes; a vendor's stray
    // bytes after the code are not part of it (see `parse_response`).
    let whole = match resp {
        Response::Exception { .. } => pdu.get(..2).unwrap_or(pdu),
        _ => pdu,
    };
    assert_eq!(out, whole, "response {resp:?} does not encode to its bytes");
    assert_eq!(parse_response(&out).as_ref(), Ok(resp), "response re-parse");
    let fc = resp.function_code();
    assert_eq!(Some(fc), pdu.first().map(|b| b & 0x7f));
    let _ = function_name(fc);
    if let Response::Exception { code, .. } = resp {
        let _ = exception_name(*code);
    }
}

/// `read_values` of a request and a response: consecutive addresses from the
/// request's start, never more than its quantity.
fn check_read_values(req: &Request<'_>, resp: &Response<'_>) {
    let values = read_values(req, resp);
    let n = values.len();
    let qty = match *req {
        Request::ReadCoils { qty, .. }
        | Request::ReadDiscreteInputs { qty, .. }
        | Request::ReadHoldingRegisters { qty, .. }
        | Request::ReadInputRegisters { qty, .. } => usize::from(qty),
        Request::ReadWriteMultipleRegisters { read_qty, .. } => usize::from(read_qty),
        _ => 0,
    };
    assert!(n <= qty, "{n} values for a quantity of {qty}");
    let start = req.reference().map_or(0, |(a, _)| a);
    let start = match *req {
        Request::ReadWriteMultipleRegisters { read_addr, .. } => read_addr,
        _ => start,
    };
    let mut count = 0usize;
    for (i, (_table, addr, value)) in values.enumerate() {
        assert_eq!(addr, start.wrapping_add(i as u16));
        if matches!(resp, Response::ReadBits { .. }) {
            assert!(value <= 1, "a bit is 0 or 1");
        }
        count += 1;
    }
    assert_eq!(count, n, "read_values yields exactly its len");
}

/// One ADU at the start of `b`: header checks, then its PDU both ways.
/// Returns the header and the PDU (cut at the length field, or at the end
/// of the input when it is shorter).
fn adu(b: &[u8]) -> Option<(Mbap, &[u8])> {
    let h = Mbap::parse(b)?;
    assert!(b.len() >= MBAP_LEN);
    assert_eq!(h.adu_len(), 6 + usize::from(h.len));
    let _ = h.check().map_err(|p| p.describe());
    if plausible_header(b) {
        assert!(
            matches!(frame(b), Framing::Adu { .. }),
            "a plausible header frames an ADU"
        );
        assert!(b[MBAP_LEN] & 0x7f != 0);
    }
    let end = h.adu_len().clamp(MBAP_LEN, b.len());
    Some((h, &b[MBAP_LEN..end]))
}

fuzz_target!(|data: &[u8]| {
    // The raw bytes as PDUs.
    if let Ok(req) = parse_request(data) {
        check_request(data, &req);
    }
    if let Ok(resp) = parse_response(data) {
        check_response(data, &resp);
    }

    // The bytes as a request ADU and, after it, its response ADU.
    let Some((h1, pdu1)) = adu(data) else {
        return;
    };
    let o = origin();
    let req = parse_request(pdu1);
    match &req {
        Ok(r) => {
            check_request(pdu1, r);
            let rec = AduRecord::request(&o, &h1, r);
            assert!(rec.is_request);
            assert_eq!(rec.function_code, r.function_code());
        }
        Err(e) => {
            let _ = AduRecord::undecodable(&o, &h1, pdu1, true, e.describe());
        }
    }
    let rest = data.get(h1.adu_len()..).unwrap_or_default();
    let Some((h2, pdu2)) = adu(rest) else {
        return;
    };
    match parse_response(pdu2) {
        Ok(p) => {
            check_response(pdu2, &p);
            let rec = AduRecord::response(&o, &h2, &p);
            assert!(!rec.is_request);
            if let Ok(r) = &req {
                check_read_values(r, &p);
            }
        }
        Err(e) => {
            let _ = AduRecord::undecodable(&o, &h2, pdu2, false, e.describe());
        }
    }
});
