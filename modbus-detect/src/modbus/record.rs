//! One decoded ADU as a record: what `--dump-adus` writes and what the
//! differential test compares with tshark's decoding, field by field.
//! Field names follow CISA ICSNPP's `modbus_detailed` log where it has the
//! field (`source_h`, `tid`, `unit`, `func`, `request_response`,
//! `address`, `quantity`, `values`), so that users of both can join them.

use std::net::IpAddr;

use serde::Serialize;

use super::mbap::Mbap;
use super::pdu::{Request, Response};

/// One decoded ADU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AduRecord {
    /// 1-based frame number of the segment that completed the ADU.
    pub frame: u64,
    /// That frame's captured length.
    pub frame_len: u32,
    pub ts_ns: u64,
    #[serde(rename = "source_h")]
    pub src: IpAddr,
    #[serde(rename = "source_p")]
    pub src_port: u16,
    #[serde(rename = "destination_h")]
    pub dst: IpAddr,
    #[serde(rename = "destination_p")]
    pub dst_port: u16,
    /// From the connection's client (a request).
    #[serde(rename = "is_orig")]
    pub is_request: bool,
    /// `REQUEST` or `RESPONSE`.
    pub request_response: &'static str,
    pub tid: u16,
    pub protocol_id: u16,
    pub length: u16,
    pub unit: u8,
    /// The function code byte as sent (0x80 set on exceptions).
    pub function_code: u8,
    /// Zeek's name of it (`READ_HOLDING_REGISTERS`, `..._EXCEPTION`).
    pub func: String,
    /// The specification's name (`Read Holding Registers`).
    pub function_name: &'static str,
    pub exception_code: Option<u8>,
    /// Start address as on the wire (Wireshark's `modbus.reference_num`).
    #[serde(rename = "reference_num")]
    pub reference: Option<u16>,
    /// Quantity as on the wire (Wireshark's `modbus.word_cnt` /
    /// `modbus.bit_cnt`).
    #[serde(rename = "count")]
    pub quantity: Option<u16>,
    /// Start address and quantity as ICSNPP logs them: a read response's
    /// are its request's.
    pub address: Option<u16>,
    #[serde(rename = "quantity")]
    pub icsnpp_quantity: Option<u16>,
    /// Registers (or coils, 0 and 1) a request writes or a response reads.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<u16>,
    /// FC 23's two parts; FC 22's masks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_start_address: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_quantity: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_start_address: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub and_mask: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub or_mask: Option<u16>,
    /// FC 43/14 objects a response carries.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<DeviceObject>,
    /// A response's request, by its frame.
    pub request_frame: Option<u64>,
    pub sub_function: Option<u16>,
    pub mei: Option<u8>,
    /// Why the PDU did not decode, if it did not.
    pub error: Option<&'static str>,
}

/// A Read Device Identification object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceObject {
    pub id: u8,
    pub name: Option<&'static str>,
    pub value: String,
}

/// Zeek's name of a function code (its Modbus analyzer's, which ICSNPP
/// logs): `unknown-N` for codes it has none for.
fn zeek_function(fc: u8) -> String {
    let name = match fc & 0x7F {
        1 => "READ_COILS",
        2 => "READ_DISCRETE_INPUTS",
        3 => "READ_HOLDING_REGISTERS",
        4 => "READ_INPUT_REGISTERS",
        5 => "WRITE_SINGLE_COIL",
        6 => "WRITE_SINGLE_REGISTER",
        7 => "READ_EXCEPTION_STATUS",
        8 => "DIAGNOSTICS",
        11 => "GET_COMM_EVENT_COUNTER",
        12 => "GET_COMM_EVENT_LOG",
        15 => "WRITE_MULTIPLE_COILS",
        16 => "WRITE_MULTIPLE_REGISTERS",
        17 => "REPORT_SLAVE_ID",
        20 => "READ_FILE_RECORD",
        21 => "WRITE_FILE_RECORD",
        22 => "MASK_WRITE_REGISTER",
        23 => "READ_WRITE_MULTIPLE_REGISTERS",
        24 => "READ_FIFO_QUEUE",
        43 => "ENCAP_INTERFACE_TRANSPORT",
        _ => return format!("unknown-{fc}"),
    };
    if fc & 0x80 != 0 {
        format!("{name}_EXCEPTION")
    } else {
        name.to_string()
    }
}

/// Requests waiting for their response in a [`Linker`]; beyond, the
/// waiting ones are forgotten (counted), so that a capture of requests
/// never answered cannot grow the dump's memory without end.
pub const MAX_UNANSWERED: usize = 1 << 20;

/// The connection, transaction id and unit a response answers.
type TxKey = (IpAddr, u16, IpAddr, u16, u16, u8);

/// Links each response to its request as the records come (same
/// connection, transaction id and unit, the latest request before it):
/// its frame, and a read's address and quantity (a read response carries
/// neither); bit values beyond the quantity are padding and are cut.
#[derive(Default)]
pub struct Linker {
    requests: std::collections::HashMap<TxKey, (u64, Option<u16>, Option<u16>)>,
    /// Requests forgotten unanswered because [`MAX_UNANSWERED`] were waiting.
    pub forgotten: u64,
}

impl Linker {
    pub fn link(&mut self, r: &mut AduRecord) {
        r.address = r.reference;
        r.icsnpp_quantity = r.quantity;
        if r.is_request {
            let key = (r.src, r.src_port, r.dst, r.dst_port, r.tid, r.unit);
            let read = r.read_start_address.map(|a| (Some(a), r.read_quantity));
            let (addr, qty) = read.unwrap_or((r.reference, r.quantity));
            if self.requests.len() >= MAX_UNANSWERED && !self.requests.contains_key(&key) {
                self.forgotten += self.requests.len() as u64;
                self.requests.clear();
            }
            self.requests.insert(key, (r.frame, addr, qty));
            return;
        }
        let key = (r.dst, r.dst_port, r.src, r.src_port, r.tid, r.unit);
        if let Some((frame, addr, qty)) = self.requests.remove(&key) {
            r.request_frame = Some(frame);
            if r.reference.is_none() && matches!(r.function_code, 1..=4 | 23) {
                r.address = addr;
                r.icsnpp_quantity = qty;
                if let (Some(q), 1 | 2) = (qty, r.function_code) {
                    r.values.truncate(usize::from(q));
                }
            }
        }
    }
}

/// Endpoints and direction of an ADU, filled by the shard that decoded it.
#[derive(Debug, Clone, Copy)]
pub struct AduOrigin {
    pub frame: u64,
    pub frame_len: u32,
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
            frame_len: o.frame_len,
            ts_ns: o.ts_ns,
            src: o.src,
            src_port: o.src_port,
            dst: o.dst,
            dst_port: o.dst_port,
            is_request,
            request_response: if is_request { "REQUEST" } else { "RESPONSE" },
            tid: mbap.tid,
            protocol_id: mbap.proto,
            length: mbap.len,
            unit: mbap.unit,
            function_code: fc,
            func: zeek_function(fc),
            function_name: super::function_name(fc),
            exception_code: None,
            reference: None,
            quantity: None,
            address: None,
            icsnpp_quantity: None,
            values: Vec::new(),
            read_start_address: None,
            read_quantity: None,
            write_start_address: None,
            and_mask: None,
            or_mask: None,
            objects: Vec::new(),
            request_frame: None,
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
        r.values = req.written_values().map(|(_, _, v)| v).collect();
        match *req {
            Request::MaskWriteRegister {
                addr,
                and_mask,
                or_mask,
            } => {
                r.reference = Some(addr);
                r.and_mask = Some(and_mask);
                r.or_mask = Some(or_mask);
            }
            Request::ReadWriteMultipleRegisters {
                read_addr,
                read_qty,
                write_addr,
                ..
            } => {
                r.read_start_address = Some(read_addr);
                r.read_quantity = Some(read_qty);
                r.write_start_address = Some(write_addr);
            }
            Request::WriteSingleCoil { addr, .. }
            | Request::WriteSingleRegister { addr, .. }
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
            Response::EncapsulatedInterface { mei, data } => {
                r.mei = Some(mei);
                if mei == super::device_id::MEI_READ_DEVICE_ID {
                    r.objects = super::device_id::objects(data)
                        .map(|(id, v)| DeviceObject {
                            id,
                            name: super::device_id::object_name(id),
                            value: super::device_id::text(v, 255),
                        })
                        .collect();
                }
            }
            Response::ReadRegisters { data, .. } => {
                r.values = data
                    .chunks_exact(2)
                    .map(|w| u16::from_be_bytes([w[0], w[1]]))
                    .collect();
            }
            Response::ReadBits { data, .. } => {
                r.values = data
                    .iter()
                    .flat_map(|b| (0..8).map(move |i| u16::from((b >> i) & 1)))
                    .collect();
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn record(port: u16, tid: u16, is_request: bool) -> AduRecord {
        let (client, server) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let (src, dst, src_port, dst_port) = match is_request {
            true => (client, server, port, 502),
            false => (server, client, 502, port),
        };
        let o = AduOrigin {
            frame: u64::from(tid),
            frame_len: 66,
            ts_ns: 0,
            src,
            src_port,
            dst,
            dst_port,
        };
        let mbap = Mbap {
            tid,
            proto: 0,
            len: 6,
            unit: 1,
        };
        AduRecord::base(&o, &mbap, 3, is_request)
    }

    /// Requests never answered cannot grow the linker without end: at the
    /// bound the waiting ones are forgotten and counted, and linking goes
    /// on for the requests after.
    #[test]
    fn unanswered_requests_are_bounded_and_counted() {
        let mut linker = Linker::default();
        let per_port = 1usize << 16;
        for i in 0..MAX_UNANSWERED {
            let (port, tid) = ((i / per_port) as u16 + 1024, (i % per_port) as u16);
            linker.link(&mut record(port, tid, true));
        }
        assert_eq!(
            (linker.requests.len(), linker.forgotten),
            (MAX_UNANSWERED, 0)
        );
        linker.link(&mut record(9, 7, true));
        assert_eq!(linker.forgotten, MAX_UNANSWERED as u64);
        assert!(linker.requests.len() <= 1);
        let mut answer = record(9, 7, false);
        linker.link(&mut answer);
        assert_eq!(answer.request_frame, Some(7));
        let mut forgotten = record(1024, 5, false);
        linker.link(&mut forgotten);
        assert_eq!(forgotten.request_frame, None);
    }
}
