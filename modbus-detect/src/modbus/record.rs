//! One decoded ADU as a record: what `--dump-adus` writes and what the
//! differential test compares with tshark's decoding, field by field.

use std::net::IpAddr;

use serde::Serialize;

use super::mbap::Mbap;
use super::pdu::{Request, Response};

/// One decoded ADU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AduRecord {
    /// 1-based frame number of the segment that completed the ADU.
    pub frame: u64,
    pub ts_ns: u64,
    pub src: IpAddr,
    pub src_port: u16,
    pub dst: IpAddr,
    pub dst_port: u16,
    pub is_request: bool,
    pub tid: u16,
    pub protocol_id: u16,
    pub length: u16,
    pub unit: u8,
    /// The function code byte as sent (0x80 set on exceptions).
    pub function_code: u8,
    pub exception_code: Option<u8>,
    /// Start address, as Wireshark's `modbus.reference_num`.
    pub reference: Option<u16>,
    /// Quantity, as Wireshark's `modbus.word_cnt` / `modbus.bit_cnt`.
    pub quantity: Option<u16>,
    pub sub_function: Option<u16>,
    pub mei: Option<u8>,
    /// Why the PDU did not decode, if it did not.
    pub error: Option<&'static str>,
}

/// Endpoints and direction of an ADU, filled by the shard that decoded it.
#[derive(Debug, Clone, Copy)]
pub struct AduOrigin {
    pub frame: u64,
    pub ts_ns: u64,
    pub src: IpAddr,
    pub src_port: u16,
    pub dst: IpAddr,
    pub dst_port: u16,
}

impl AduRecord {
    fn base(o: &AduOrigin, mbap: &Mbap, fc: u8, is_request: bool) -> Self {
        AduRecord {
            frame: o.frame,
            ts_ns: o.ts_ns,
            src: o.src,
            src_port: o.src_port,
            dst: o.dst,
            dst_port: o.dst_port,
            is_request,
            tid: mbap.tid,
            protocol_id: mbap.proto,
            length: mbap.len,
            unit: mbap.unit,
            function_code: fc,
            exception_code: None,
            reference: None,
            quantity: None,
            sub_function: None,
            mei: None,
            error: None,
        }
    }

    pub fn request(o: &AduOrigin, mbap: &Mbap, req: &Request<'_>) -> Self {
        let mut r = Self::base(o, mbap, req.function_code(), true);
        if let Some((addr, qty)) = req.reference() {
            r.reference = Some(addr);
            r.quantity = Some(qty);
        }
        match *req {
            Request::WriteSingleCoil { addr, .. }
            | Request::WriteSingleRegister { addr, .. }
            | Request::MaskWriteRegister { addr, .. }
            | Request::ReadFifoQueue { addr } => r.reference = Some(addr),
            Request::Diagnostics { sub, .. } => r.sub_function = Some(sub),
            Request::EncapsulatedInterface { mei, .. } => r.mei = Some(mei),
            _ => {}
        }
        r
    }

    pub fn response(o: &AduOrigin, mbap: &Mbap, resp: &Response<'_>) -> Self {
        let fc = resp.function_code();
        let mut r = Self::base(o, mbap, fc, false);
        match *resp {
            Response::Exception { code, .. } => {
                r.function_code = fc | 0x80;
                r.exception_code = Some(code);
            }
            Response::WriteSingle { addr, .. } | Response::MaskWriteRegister { addr, .. } => {
                r.reference = Some(addr)
            }
            Response::WriteMultiple { addr, qty, .. } => {
                r.reference = Some(addr);
                r.quantity = Some(qty);
            }
            Response::Diagnostics { sub, .. } => r.sub_function = Some(sub),
            Response::EncapsulatedInterface { mei, .. } => r.mei = Some(mei),
            // Wireshark's word_cnt of a FIFO response is the FIFO count.
            Response::ReadFifoQueue { data } => {
                r.quantity = data.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]))
            }
            _ => {}
        }
        r
    }

    pub fn undecodable(
        o: &AduOrigin,
        mbap: &Mbap,
        pdu: &[u8],
        is_request: bool,
        error: &'static str,
    ) -> Self {
        let mut r = Self::base(o, mbap, pdu.first().copied().unwrap_or(0), is_request);
        r.error = Some(error);
        r
    }
}
