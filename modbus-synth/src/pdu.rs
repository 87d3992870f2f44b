//! MBAP framing and PDU builders for the common function codes.
//!
//! Each public builder returns a fresh `Vec` for test readability; the bulk
//! generator uses the `put_*` twins, which append to a reused buffer so that
//! millions of ADUs cost no allocation.

/// MBAP header length up to and including the length field; the length
/// field counts everything after it (unit id + PDU).
const MBAP_PREFIX_LEN: usize = 6;

/// Build an ADU: MBAP (tid, protocol 0, length = 1 + pdu.len(), unit) + PDU.
///
/// The length field saturates at 65535 for absurdly long PDUs.
pub fn adu(tid: u16, unit: u8, pdu: &[u8]) -> Vec<u8> {
    collect(|b| put_adu(b, tid, 0, unit, |b| b.extend_from_slice(pdu)))
}

/// Appends an ADU with the given protocol id (0 for Modbus; anything else
/// makes the malformed MBAP the attack scenario needs), letting `pdu` write
/// the PDU straight into `buf`, then patches the length field.
pub fn put_adu(
    buf: &mut Vec<u8>,
    tid: u16,
    protocol: u16,
    unit: u8,
    pdu: impl FnOnce(&mut Vec<u8>),
) {
    let start = buf.len();
    put_u16(buf, tid);
    put_u16(buf, protocol);
    put_u16(buf, 0);
    buf.push(unit);
    pdu(buf);
    let len = u16::try_from(buf.len() - start - MBAP_PREFIX_LEN).unwrap_or(u16::MAX);
    buf[start + 4..start + 6].copy_from_slice(&len.to_be_bytes());
}

/// Read request (FC 1, 2, 3 or 4): address and quantity.
pub fn read_request(fc: u8, addr: u16, qty: u16) -> Vec<u8> {
    collect(|b| put_read_request(b, fc, addr, qty))
}

pub fn put_read_request(buf: &mut Vec<u8>, fc: u8, addr: u16, qty: u16) {
    buf.push(fc);
    put_u16(buf, addr);
    put_u16(buf, qty);
}

/// Register read response (FC 3 or 4): byte count then the values.
pub fn read_registers_response(fc: u8, values: &[u16]) -> Vec<u8> {
    collect(|b| put_read_registers_response(b, fc, values))
}

pub fn put_read_registers_response(buf: &mut Vec<u8>, fc: u8, values: &[u16]) {
    buf.push(fc);
    buf.push(count_u8(values.len() * 2));
    for &v in values {
        put_u16(buf, v);
    }
}

/// Bit read response (FC 1 or 2): byte count then the bits, packed LSB first.
pub fn read_bits_response(fc: u8, bits: &[bool]) -> Vec<u8> {
    collect(|b| {
        b.push(fc);
        b.push(count_u8(bits.len().div_ceil(8)));
        put_bits(b, bits);
    })
}

/// FC 6; the response is an echo of the request, so this builds both.
pub fn write_single_register(addr: u16, value: u16) -> Vec<u8> {
    collect(|b| put_write_single_register(b, addr, value))
}

pub fn put_write_single_register(buf: &mut Vec<u8>, addr: u16, value: u16) {
    buf.push(6);
    put_u16(buf, addr);
    put_u16(buf, value);
}

/// FC 5 (request and echo response): ON is 0xFF00, OFF is 0x0000.
pub fn write_single_coil(addr: u16, on: bool) -> Vec<u8> {
    collect(|b| {
        b.push(5);
        put_u16(b, addr);
        put_u16(b, if on { 0xFF00 } else { 0x0000 });
    })
}

/// FC 16 request: address, quantity, byte count, values.
pub fn write_multiple_registers_request(addr: u16, values: &[u16]) -> Vec<u8> {
    collect(|b| put_write_multiple_registers_request(b, addr, values))
}

pub fn put_write_multiple_registers_request(buf: &mut Vec<u8>, addr: u16, values: &[u16]) {
    buf.push(16);
    put_u16(buf, addr);
    put_u16(buf, count_u16(values.len()));
    buf.push(count_u8(values.len() * 2));
    for &v in values {
        put_u16(buf, v);
    }
}

/// FC 16 response: address and quantity written.
pub fn write_multiple_registers_response(addr: u16, qty: u16) -> Vec<u8> {
    collect(|b| put_write_multiple_registers_response(b, addr, qty))
}

pub fn put_write_multiple_registers_response(buf: &mut Vec<u8>, addr: u16, qty: u16) {
    buf.push(16);
    put_u16(buf, addr);
    put_u16(buf, qty);
}

/// FC 15 request: address, quantity, byte count, bits packed LSB first.
pub fn write_multiple_coils_request(addr: u16, bits: &[bool]) -> Vec<u8> {
    collect(|b| {
        b.push(15);
        put_u16(b, addr);
        put_u16(b, count_u16(bits.len()));
        b.push(count_u8(bits.len().div_ceil(8)));
        put_bits(b, bits);
    })
}

/// Exception response: the function code with its high bit set, then the code.
pub fn exception(fc: u8, code: u8) -> Vec<u8> {
    collect(|b| put_exception(b, fc, code))
}

pub fn put_exception(buf: &mut Vec<u8>, fc: u8, code: u8) {
    buf.push(fc | 0x80);
    buf.push(code);
}

/// FC 8 (request, and the echo response of most sub-functions): sub-function
/// then its data (usually one big-endian word, e.g. `[0x00, 0x00]` or
/// `[0xFF, 0x00]` for sub-function 1, Restart Communications Option).
pub fn diagnostics(sub: u16, data: &[u8]) -> Vec<u8> {
    collect(|b| put_diagnostics(b, sub, data))
}

pub fn put_diagnostics(buf: &mut Vec<u8>, sub: u16, data: &[u8]) {
    buf.push(8);
    put_u16(buf, sub);
    buf.extend_from_slice(data);
}

/// FC 17 request (no data).
pub fn report_server_id_request() -> Vec<u8> {
    vec![17]
}

/// FC 43 / MEI 14 Read Device Identification request.
pub fn read_device_id_request(read_code: u8, object_id: u8) -> Vec<u8> {
    collect(|b| put_read_device_id_request(b, read_code, object_id))
}

pub fn put_read_device_id_request(buf: &mut Vec<u8>, read_code: u8, object_id: u8) {
    buf.extend_from_slice(&[43, 14, read_code, object_id]);
}

/// FC 43 / MEI 14 response carrying `objects` as (id, value) pairs, in one
/// part (more-follows 0), conformity level 0x01 (basic, stream access).
pub fn read_device_id_response(read_code: u8, objects: &[(u8, &[u8])]) -> Vec<u8> {
    collect(|b| put_read_device_id_response(b, read_code, objects))
}

pub fn put_read_device_id_response(buf: &mut Vec<u8>, read_code: u8, objects: &[(u8, &[u8])]) {
    buf.extend_from_slice(&[43, 14, read_code, 0x01, 0x00, 0x00]);
    buf.push(count_u8(objects.len()));
    for (id, value) in objects {
        buf.push(*id);
        buf.push(count_u8(value.len()));
        buf.extend_from_slice(value);
    }
}

/// FC 22 request: address, AND mask, OR mask.
pub fn mask_write_request(addr: u16, and_mask: u16, or_mask: u16) -> Vec<u8> {
    collect(|b| {
        b.push(22);
        put_u16(b, addr);
        put_u16(b, and_mask);
        put_u16(b, or_mask);
    })
}

/// FC 23 request: read range, then write range with byte count and values.
pub fn read_write_multiple_request(
    read_addr: u16,
    read_qty: u16,
    write_addr: u16,
    values: &[u16],
) -> Vec<u8> {
    collect(|b| {
        b.push(23);
        put_u16(b, read_addr);
        put_u16(b, read_qty);
        put_u16(b, write_addr);
        put_u16(b, count_u16(values.len()));
        b.push(count_u8(values.len() * 2));
        for &v in values {
            put_u16(b, v);
        }
    })
}

fn collect(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut buf = Vec::with_capacity(16);
    f(&mut buf);
    buf
}

fn put_u16(buf: &mut Vec<u8>, v: u16) {
    buf.extend_from_slice(&v.to_be_bytes());
}

fn put_bits(buf: &mut Vec<u8>, bits: &[bool]) {
    for chunk in bits.chunks(8) {
        let byte = chunk
            .iter()
            .enumerate()
            .fold(0u8, |acc, (i, &on)| acc | (u8::from(on) << i));
        buf.push(byte);
    }
}

/// Byte counts and quantities saturate rather than wrap: a builder asked for
/// an impossible size should produce an obviously inconsistent PDU, not one
/// that silently looks valid.
fn count_u8(n: usize) -> u8 {
    u8::try_from(n).unwrap_or(u8::MAX)
}

fn count_u16(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adu_frames_pdu_with_mbap() {
        let a = adu(0x1234, 7, &[3, 0, 1, 0, 2]);
        assert_eq!(a, vec![0x12, 0x34, 0, 0, 0, 6, 7, 3, 0, 1, 0, 2]);
        assert_eq!(adu(0, 1, &[]), vec![0, 0, 0, 0, 0, 1, 1]);
    }

    #[test]
    fn put_adu_sets_protocol_and_patches_length() {
        let mut buf = vec![0xEE];
        put_adu(&mut buf, 1, 7, 1, |b| put_read_request(b, 3, 0, 1));
        assert_eq!(buf, vec![0xEE, 0, 1, 0, 7, 0, 6, 1, 3, 0, 0, 0, 1]);
    }

    #[test]
    fn read_builders() {
        assert_eq!(read_request(3, 0x0102, 10), vec![3, 1, 2, 0, 10]);
        assert_eq!(
            read_registers_response(4, &[1, 0x0203]),
            vec![4, 4, 0, 1, 2, 3]
        );
        let bits = [true, false, true, false, false, false, false, false, true];
        assert_eq!(
            read_bits_response(1, &bits),
            vec![1, 2, 0b0000_0101, 0b0000_0001]
        );
    }

    #[test]
    fn write_builders() {
        assert_eq!(write_single_register(5, 0x0102), vec![6, 0, 5, 1, 2]);
        assert_eq!(write_single_coil(1, true), vec![5, 0, 1, 0xFF, 0]);
        assert_eq!(write_single_coil(1, false), vec![5, 0, 1, 0, 0]);
        assert_eq!(
            write_multiple_registers_request(2, &[1, 2]),
            vec![16, 0, 2, 0, 2, 4, 0, 1, 0, 2]
        );
        assert_eq!(
            write_multiple_registers_response(2, 2),
            vec![16, 0, 2, 0, 2]
        );
        assert_eq!(
            write_multiple_coils_request(0, &[true, true, false]),
            vec![15, 0, 0, 0, 3, 1, 0b011]
        );
        assert_eq!(
            mask_write_request(4, 0xF2, 0x25),
            vec![22, 0, 4, 0, 0xF2, 0, 0x25]
        );
        assert_eq!(
            read_write_multiple_request(3, 6, 14, &[0xFF]),
            vec![23, 0, 3, 0, 6, 0, 14, 0, 1, 2, 0, 0xFF]
        );
    }

    #[test]
    fn other_builders() {
        assert_eq!(exception(3, 2), vec![0x83, 2]);
        assert_eq!(diagnostics(1, &[0xFF, 0]), vec![8, 0, 1, 0xFF, 0]);
        assert_eq!(report_server_id_request(), vec![17]);
        assert_eq!(read_device_id_request(1, 0), vec![43, 14, 1, 0]);
        assert_eq!(
            read_device_id_response(1, &[(0, b"AB"), (1, b"C")]),
            vec![43, 14, 1, 1, 0, 0, 2, 0, 2, b'A', b'B', 1, 1, b'C']
        );
    }
}
