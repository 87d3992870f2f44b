//! Zero-copy parsing and encoding of Modbus PDUs (function code + data), for every
//! public function code of the Modbus Application Protocol Specification V1.1b3.
//!
//! A PDU is the part of an ADU after the MBAP unit id. Parsing borrows from the input,
//! never allocates and never panics; it rejects only what makes a PDU's structure
//! ambiguous (too few bytes, byte counts that disagree with the bytes present, extra
//! bytes after a fixed-size PDU). Field values the specification merely forbids
//! (a read quantity of 0 or above 125, a coil value other than 0xFF00/0x0000, ...) are
//! parsed as they are: judging them is the detection rules' job.
//!
//! Function codes this module does not know (user-defined 65-72 and 100-110, vendor
//! codes such as 90) are kept raw as `Other`, so that they can be counted and reported.

/// Read Coils.
const FC_READ_COILS: u8 = 1;
/// Read Discrete Inputs.
const FC_READ_DISCRETE_INPUTS: u8 = 2;
/// Read Holding Registers.
const FC_READ_HOLDING: u8 = 3;
/// Read Input Registers.
const FC_READ_INPUT: u8 = 4;
/// Write Single Coil.
const FC_WRITE_COIL: u8 = 5;
/// Write Single Register.
const FC_WRITE_REGISTER: u8 = 6;
/// Read Exception Status (serial line only).
const FC_READ_EXCEPTION_STATUS: u8 = 7;
/// Diagnostics (serial line only), with a 2-byte sub-function.
const FC_DIAGNOSTICS: u8 = 8;
/// Get Comm Event Counter (serial line only).
const FC_COMM_EVENT_COUNTER: u8 = 11;
/// Get Comm Event Log (serial line only).
const FC_COMM_EVENT_LOG: u8 = 12;
/// Write Multiple Coils.
const FC_WRITE_COILS: u8 = 15;
/// Write Multiple Registers.
const FC_WRITE_REGISTERS: u8 = 16;
/// Report Server ID (serial line only).
const FC_REPORT_SERVER_ID: u8 = 17;
/// Read File Record.
const FC_READ_FILE_RECORD: u8 = 20;
/// Write File Record.
const FC_WRITE_FILE_RECORD: u8 = 21;
/// Mask Write Register.
const FC_MASK_WRITE: u8 = 22;
/// Read/Write Multiple Registers.
const FC_READ_WRITE_REGISTERS: u8 = 23;
/// Read FIFO Queue.
const FC_READ_FIFO: u8 = 24;
/// Encapsulated Interface Transport (MEI 13 CANopen, 14 Read Device Identification).
const FC_ENCAPSULATED: u8 = 43;

/// The bit a server sets in the function code of an exception response.
const EXCEPTION_BIT: u8 = 0x80;

/// The raw FC 5 value that switches a coil on (0x0000 switches it off).
const COIL_ON: u16 = 0xFF00;

/// The four data tables of the Modbus data model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// Read-write bits (FC 1, 5, 15).
    Coil,
    /// Read-only bits (FC 2).
    DiscreteInput,
    /// Read-only registers (FC 4).
    Input,
    /// Read-write registers (FC 3, 6, 16, 22, 23).
    Holding,
}

/// A decoded request PDU. Slices borrow from the parsed bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request<'a> {
    /// FC 1.
    ReadCoils { addr: u16, qty: u16 },
    /// FC 2.
    ReadDiscreteInputs { addr: u16, qty: u16 },
    /// FC 3.
    ReadHoldingRegisters { addr: u16, qty: u16 },
    /// FC 4.
    ReadInputRegisters { addr: u16, qty: u16 },
    /// FC 5; `value` is raw (0xFF00 on, 0x0000 off, anything else is illegal).
    WriteSingleCoil { addr: u16, value: u16 },
    /// FC 6.
    WriteSingleRegister { addr: u16, value: u16 },
    /// FC 7.
    ReadExceptionStatus,
    /// FC 8; `data` is whatever follows the sub-function code.
    Diagnostics { sub: u16, data: &'a [u8] },
    /// FC 11.
    GetCommEventCounter,
    /// FC 12.
    GetCommEventLog,
    /// FC 15; `values` are the packed coil bits after the byte count, LSB first.
    WriteMultipleCoils {
        addr: u16,
        qty: u16,
        values: &'a [u8],
    },
    /// FC 16; `values` are `qty` big-endian registers after the byte count.
    WriteMultipleRegisters {
        addr: u16,
        qty: u16,
        values: &'a [u8],
    },
    /// FC 17.
    ReportServerId,
    /// FC 20; `data` is the sub-requests after the byte count.
    ReadFileRecord { data: &'a [u8] },
    /// FC 21; `data` is the records after the byte count.
    WriteFileRecord { data: &'a [u8] },
    /// FC 22.
    MaskWriteRegister {
        addr: u16,
        and_mask: u16,
        or_mask: u16,
    },
    /// FC 23; `values` are `write_qty` big-endian registers after the byte count.
    ReadWriteMultipleRegisters {
        read_addr: u16,
        read_qty: u16,
        write_addr: u16,
        write_qty: u16,
        values: &'a [u8],
    },
    /// FC 24; `addr` is the FIFO pointer address.
    ReadFifoQueue { addr: u16 },
    /// FC 43; `data` is whatever follows the MEI type.
    EncapsulatedInterface { mei: u8, data: &'a [u8] },
    /// Any other function code, with the bytes after it.
    Other { fc: u8, data: &'a [u8] },
}

/// A decoded response PDU. Slices borrow from the parsed bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response<'a> {
    /// FC 1, 2; `data` is the packed bits after the byte count, LSB first.
    ReadBits { fc: u8, data: &'a [u8] },
    /// FC 3, 4, 23; `data` is the big-endian registers after the byte count.
    ReadRegisters { fc: u8, data: &'a [u8] },
    /// FC 5, 6: the request echoed.
    WriteSingle { fc: u8, addr: u16, value: u16 },
    /// FC 15, 16.
    WriteMultiple { fc: u8, addr: u16, qty: u16 },
    /// FC 7.
    ReadExceptionStatus { status: u8 },
    /// FC 8; `data` is whatever follows the sub-function code.
    Diagnostics { sub: u16, data: &'a [u8] },
    /// FC 11.
    GetCommEventCounter { status: u16, count: u16 },
    /// FC 12; `data` is status, event count, message count and events, after the byte count.
    GetCommEventLog { data: &'a [u8] },
    /// FC 17; `data` is server id, run indicator and device data, after the byte count.
    ReportServerId { data: &'a [u8] },
    /// FC 20; `data` is the sub-responses after the byte count.
    ReadFileRecord { data: &'a [u8] },
    /// FC 21; `data` is the records after the byte count.
    WriteFileRecord { data: &'a [u8] },
    /// FC 22: the request echoed.
    MaskWriteRegister {
        addr: u16,
        and_mask: u16,
        or_mask: u16,
    },
    /// FC 24; `data` is the FIFO count and values, after the 2-byte byte count.
    ReadFifoQueue { data: &'a [u8] },
    /// FC 43; `data` is whatever follows the MEI type.
    EncapsulatedInterface { mei: u8, data: &'a [u8] },
    /// Function code 0x80 + `fc`, with an exception code.
    Exception { fc: u8, code: u8 },
    /// Any other function code below 0x80, with the bytes after it.
    Other { fc: u8, data: &'a [u8] },
}

/// Why a PDU could not be parsed. `fc` is the function code byte as on the wire;
/// lengths count the whole PDU, function code included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PduError {
    #[error("empty PDU")]
    Empty,
    #[error("FC {fc}: {have} bytes, needs at least {need}")]
    TooShort { fc: u8, need: usize, have: usize },
    /// `actual` is the count implied by the bytes present, by the quantity field
    /// (FC 15, 16, 23 writes), or for an odd register byte count the bytes of whole registers.
    #[error("FC {fc}: byte count {declared}, but {actual} bytes")]
    ByteCountMismatch {
        fc: u8,
        declared: usize,
        actual: usize,
    },
    #[error("FC {fc}: {extra} bytes after a fixed-size PDU")]
    TrailingBytes { fc: u8, extra: usize },
}

impl PduError {
    /// A short fixed text for reports and counters, without the numbers.
    pub fn describe(&self) -> &'static str {
        match self {
            PduError::Empty => "empty PDU",
            PduError::TooShort { .. } => "PDU shorter than its function code needs",
            PduError::ByteCountMismatch { .. } => "byte count disagrees with the data",
            PduError::TrailingBytes { .. } => "extra bytes after a fixed-size PDU",
        }
    }
}

/// Parses a request PDU (the bytes after the MBAP unit id).
/// The length of the request PDU at the start of `bytes` as its function
/// code's shape says (for the writes and reads whose shape fixes it),
/// ignoring any MBAP length: how a server that frames requests by function
/// code reads them. `None` for other function codes, or when the bytes run
/// out before the shape's end.
pub fn request_len_by_shape(bytes: &[u8]) -> Option<usize> {
    let fc = *bytes.first()?;
    let len = match fc {
        FC_READ_COILS..=FC_READ_INPUT | FC_WRITE_COIL | FC_WRITE_REGISTER => 5,
        FC_WRITE_COILS | FC_WRITE_REGISTERS => 6 + usize::from(*bytes.get(5)?),
        FC_MASK_WRITE => 7,
        FC_READ_WRITE_REGISTERS => 10 + usize::from(*bytes.get(9)?),
        _ => return None,
    };
    (len <= bytes.len()).then_some(len)
}

/// Whether the specification lays out `fc`'s PDUs (and bounds them to 253
/// bytes): every function code [`parse_request`] decodes structurally
/// rather than keeping raw as `Other`.
pub fn has_public_layout(fc: u8) -> bool {
    matches!(
        fc,
        FC_READ_COILS..=FC_DIAGNOSTICS
            | FC_COMM_EVENT_COUNTER
            | FC_COMM_EVENT_LOG
            | FC_WRITE_COILS..=FC_REPORT_SERVER_ID
            | FC_READ_FILE_RECORD..=FC_READ_FIFO
            | FC_ENCAPSULATED
    )
}

pub fn parse_request(pdu: &[u8]) -> Result<Request<'_>, PduError> {
    let (&fc, body) = pdu.split_first().ok_or(PduError::Empty)?;
    Ok(match fc {
        FC_READ_COILS..=FC_READ_INPUT => read_request(fc, body)?,
        FC_WRITE_COIL => {
            let (addr, value) = two_words(exact(fc, body)?);
            Request::WriteSingleCoil { addr, value }
        }
        FC_WRITE_REGISTER => {
            let (addr, value) = two_words(exact(fc, body)?);
            Request::WriteSingleRegister { addr, value }
        }
        FC_READ_EXCEPTION_STATUS => exact::<0>(fc, body).map(|_| Request::ReadExceptionStatus)?,
        FC_DIAGNOSTICS => {
            let (sub, data) = diagnostics(fc, body)?;
            Request::Diagnostics { sub, data }
        }
        FC_COMM_EVENT_COUNTER => exact::<0>(fc, body).map(|_| Request::GetCommEventCounter)?,
        FC_COMM_EVENT_LOG => exact::<0>(fc, body).map(|_| Request::GetCommEventLog)?,
        FC_WRITE_COILS | FC_WRITE_REGISTERS => write_multiple_request(fc, body)?,
        FC_REPORT_SERVER_ID => exact::<0>(fc, body).map(|_| Request::ReportServerId)?,
        FC_READ_FILE_RECORD => Request::ReadFileRecord {
            data: counted_u8(fc, body)?,
        },
        FC_WRITE_FILE_RECORD => Request::WriteFileRecord {
            data: counted_u8(fc, body)?,
        },
        FC_MASK_WRITE => {
            let (addr, and_mask, or_mask) = mask_write(fc, body)?;
            Request::MaskWriteRegister {
                addr,
                and_mask,
                or_mask,
            }
        }
        FC_READ_WRITE_REGISTERS => read_write_request(fc, body)?,
        FC_READ_FIFO => Request::ReadFifoQueue {
            addr: u16::from_be_bytes(exact(fc, body)?),
        },
        FC_ENCAPSULATED => {
            let (mei, data) = encapsulated(fc, body)?;
            Request::EncapsulatedInterface { mei, data }
        }
        _ => Request::Other { fc, data: body },
    })
}

/// Parses a response PDU (the bytes after the MBAP unit id).
pub fn parse_response(pdu: &[u8]) -> Result<Response<'_>, PduError> {
    let (&fc, body) = pdu.split_first().ok_or(PduError::Empty)?;
    Ok(match fc {
        FC_READ_COILS | FC_READ_DISCRETE_INPUTS => Response::ReadBits {
            fc,
            data: counted_u8(fc, body)?,
        },
        FC_READ_HOLDING | FC_READ_INPUT | FC_READ_WRITE_REGISTERS => Response::ReadRegisters {
            fc,
            data: registers(fc, body)?,
        },
        FC_WRITE_COIL | FC_WRITE_REGISTER => {
            let (addr, value) = two_words(exact(fc, body)?);
            Response::WriteSingle { fc, addr, value }
        }
        FC_WRITE_COILS | FC_WRITE_REGISTERS => {
            let (addr, qty) = two_words(exact(fc, body)?);
            Response::WriteMultiple { fc, addr, qty }
        }
        FC_READ_EXCEPTION_STATUS => {
            let [status] = exact(fc, body)?;
            Response::ReadExceptionStatus { status }
        }
        FC_DIAGNOSTICS => {
            let (sub, data) = diagnostics(fc, body)?;
            Response::Diagnostics { sub, data }
        }
        FC_COMM_EVENT_COUNTER => {
            let (status, count) = two_words(exact(fc, body)?);
            Response::GetCommEventCounter { status, count }
        }
        FC_COMM_EVENT_LOG => Response::GetCommEventLog {
            data: counted_u8(fc, body)?,
        },
        FC_REPORT_SERVER_ID => Response::ReportServerId {
            data: counted_u8(fc, body)?,
        },
        FC_READ_FILE_RECORD => Response::ReadFileRecord {
            data: counted_u8(fc, body)?,
        },
        FC_WRITE_FILE_RECORD => Response::WriteFileRecord {
            data: counted_u8(fc, body)?,
        },
        FC_MASK_WRITE => {
            let (addr, and_mask, or_mask) = mask_write(fc, body)?;
            Response::MaskWriteRegister {
                addr,
                and_mask,
                or_mask,
            }
        }
        FC_READ_FIFO => Response::ReadFifoQueue {
            data: counted_u16(fc, body)?,
        },
        FC_ENCAPSULATED => {
            let (mei, data) = encapsulated(fc, body)?;
            Response::EncapsulatedInterface { mei, data }
        }
        // The exception code, and whatever a device puts after it: some
        // answer `81 06 00` (a 3-byte exception PDU, its MBAP length
        // counting the extra byte). The bytes are no part of the answer,
        // and the ADU is what it is; the shard counts the deviation.
        _ if fc & EXCEPTION_BIT != 0 => Response::Exception {
            fc: fc & !EXCEPTION_BIT,
            code: *body.first().ok_or(PduError::TooShort {
                fc,
                need: 2,
                have: 1,
            })?,
        },
        _ => Response::Other { fc, data: body },
    })
}

/// The body of a fixed-size PDU, or TooShort / TrailingBytes.
fn exact<const N: usize>(fc: u8, body: &[u8]) -> Result<[u8; N], PduError> {
    <[u8; N]>::try_from(body).map_err(|_| {
        if body.len() < N {
            too_short(fc, N, body)
        } else {
            PduError::TrailingBytes {
                fc,
                extra: body.len() - N,
            }
        }
    })
}

/// The fixed part of a variable-size PDU and the bytes after it, or TooShort.
fn head<const N: usize>(fc: u8, body: &[u8]) -> Result<(&[u8; N], &[u8]), PduError> {
    body.split_first_chunk()
        .ok_or_else(|| too_short(fc, N, body))
}

/// TooShort for a body of fewer than `n` bytes (counts include the function code).
fn too_short(fc: u8, n: usize, body: &[u8]) -> PduError {
    PduError::TooShort {
        fc,
        need: n + 1,
        have: body.len() + 1,
    }
}

/// `data` if it is exactly `declared` bytes long, else ByteCountMismatch.
fn check_count(fc: u8, declared: usize, data: &[u8]) -> Result<&[u8], PduError> {
    check_implied(fc, declared, data.len()).map(|()| data)
}

/// ByteCountMismatch unless the declared byte count equals what something else implies.
fn check_implied(fc: u8, declared: usize, actual: usize) -> Result<(), PduError> {
    if declared == actual {
        Ok(())
    } else {
        Err(PduError::ByteCountMismatch {
            fc,
            declared,
            actual,
        })
    }
}

/// The data after a 1-byte byte count that must match it.
fn counted_u8(fc: u8, body: &[u8]) -> Result<&[u8], PduError> {
    let ([count], data) = head(fc, body)?;
    check_count(fc, usize::from(*count), data)
}

/// The data after a 2-byte byte count that must match it (FC 24 responses).
fn counted_u16(fc: u8, body: &[u8]) -> Result<&[u8], PduError> {
    let (count, data) = head(fc, body)?;
    check_count(fc, usize::from(u16::from_be_bytes(*count)), data)
}

/// Register data after a byte count, which must also be even.
fn registers(fc: u8, body: &[u8]) -> Result<&[u8], PduError> {
    let data = counted_u8(fc, body)?;
    check_implied(fc, data.len(), data.len() & !1)?;
    Ok(data)
}

/// Two big-endian words, the body of most fixed-size PDUs.
fn two_words([a0, a1, b0, b1]: [u8; 4]) -> (u16, u16) {
    (u16::from_be_bytes([a0, a1]), u16::from_be_bytes([b0, b1]))
}

/// FC 1-4 requests: start address and quantity.
fn read_request(fc: u8, body: &[u8]) -> Result<Request<'_>, PduError> {
    let (addr, qty) = two_words(exact(fc, body)?);
    Ok(match fc {
        FC_READ_COILS => Request::ReadCoils { addr, qty },
        FC_READ_DISCRETE_INPUTS => Request::ReadDiscreteInputs { addr, qty },
        FC_READ_HOLDING => Request::ReadHoldingRegisters { addr, qty },
        _ => Request::ReadInputRegisters { addr, qty },
    })
}

/// FC 15 / 16 requests: address, quantity, byte count, values. The byte count must
/// match both the values present and the quantity, so that `written_values` agrees
/// with what a server would write.
fn write_multiple_request(fc: u8, body: &[u8]) -> Result<Request<'_>, PduError> {
    let (&[a0, a1, q0, q1, count], values) = head(fc, body)?;
    let (addr, qty) = two_words([a0, a1, q0, q1]);
    let values = check_count(fc, usize::from(count), values)?;
    if fc == FC_WRITE_COILS {
        check_implied(fc, values.len(), usize::from(qty).div_ceil(8))?;
        Ok(Request::WriteMultipleCoils { addr, qty, values })
    } else {
        check_implied(fc, values.len(), 2 * usize::from(qty))?;
        Ok(Request::WriteMultipleRegisters { addr, qty, values })
    }
}

/// FC 23 request: read address and quantity, write address, quantity, byte count, values.
fn read_write_request(fc: u8, body: &[u8]) -> Result<Request<'_>, PduError> {
    let (&[r0, r1, rq0, rq1, w0, w1, wq0, wq1, count], values) = head(fc, body)?;
    let (read_addr, read_qty) = two_words([r0, r1, rq0, rq1]);
    let (write_addr, write_qty) = two_words([w0, w1, wq0, wq1]);
    let values = check_count(fc, usize::from(count), values)?;
    check_implied(fc, values.len(), 2 * usize::from(write_qty))?;
    Ok(Request::ReadWriteMultipleRegisters {
        read_addr,
        read_qty,
        write_addr,
        write_qty,
        values,
    })
}

/// FC 8: sub-function code and the data after it.
fn diagnostics(fc: u8, body: &[u8]) -> Result<(u16, &[u8]), PduError> {
    let (sub, data) = head(fc, body)?;
    Ok((u16::from_be_bytes(*sub), data))
}

/// FC 22: address, AND mask, OR mask.
fn mask_write(fc: u8, body: &[u8]) -> Result<(u16, u16, u16), PduError> {
    let [a0, a1, n0, n1, o0, o1] = exact(fc, body)?;
    let (addr, and_mask) = two_words([a0, a1, n0, n1]);
    Ok((addr, and_mask, u16::from_be_bytes([o0, o1])))
}

/// FC 43: MEI type and the data after it.
fn encapsulated(fc: u8, body: &[u8]) -> Result<(u8, &[u8]), PduError> {
    let ([mei], data) = head(fc, body)?;
    Ok((*mei, data))
}

impl<'a> Request<'a> {
    /// The function code on the wire.
    pub fn function_code(&self) -> u8 {
        match self {
            Request::ReadCoils { .. } => FC_READ_COILS,
            Request::ReadDiscreteInputs { .. } => FC_READ_DISCRETE_INPUTS,
            Request::ReadHoldingRegisters { .. } => FC_READ_HOLDING,
            Request::ReadInputRegisters { .. } => FC_READ_INPUT,
            Request::WriteSingleCoil { .. } => FC_WRITE_COIL,
            Request::WriteSingleRegister { .. } => FC_WRITE_REGISTER,
            Request::ReadExceptionStatus => FC_READ_EXCEPTION_STATUS,
            Request::Diagnostics { .. } => FC_DIAGNOSTICS,
            Request::GetCommEventCounter => FC_COMM_EVENT_COUNTER,
            Request::GetCommEventLog => FC_COMM_EVENT_LOG,
            Request::WriteMultipleCoils { .. } => FC_WRITE_COILS,
            Request::WriteMultipleRegisters { .. } => FC_WRITE_REGISTERS,
            Request::ReportServerId => FC_REPORT_SERVER_ID,
            Request::ReadFileRecord { .. } => FC_READ_FILE_RECORD,
            Request::WriteFileRecord { .. } => FC_WRITE_FILE_RECORD,
            Request::MaskWriteRegister { .. } => FC_MASK_WRITE,
            Request::ReadWriteMultipleRegisters { .. } => FC_READ_WRITE_REGISTERS,
            Request::ReadFifoQueue { .. } => FC_READ_FIFO,
            Request::EncapsulatedInterface { .. } => FC_ENCAPSULATED,
            Request::Other { fc, .. } => *fc,
        }
    }

    /// Whether the request changes coils or registers: FC 5, 6, 15, 16, 22, 23.
    /// FC 21 (Write File Record) is not counted: it writes extended file memory,
    /// not the coil and register tables that write authorisation guards.
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Request::WriteSingleCoil { .. }
                | Request::WriteSingleRegister { .. }
                | Request::WriteMultipleCoils { .. }
                | Request::WriteMultipleRegisters { .. }
                | Request::MaskWriteRegister { .. }
                | Request::ReadWriteMultipleRegisters { .. }
        )
    }

    /// Start address and quantity of what the request reads (FC 23: its
    /// read part).
    pub fn read_range(&self) -> Option<(u16, u16)> {
        match *self {
            Request::ReadCoils { addr, qty }
            | Request::ReadDiscreteInputs { addr, qty }
            | Request::ReadHoldingRegisters { addr, qty }
            | Request::ReadInputRegisters { addr, qty } => Some((addr, qty)),
            Request::ReadWriteMultipleRegisters {
                read_addr,
                read_qty,
                ..
            } => Some((read_addr, read_qty)),
            _ => None,
        }
    }

    /// (start address, quantity) as Wireshark reports them, so that decoded traffic
    /// can be compared with tshark's: `modbus.reference_num` with `modbus.bit_cnt`
    /// (FC 1, 2, 15) or `modbus.word_cnt` (FC 3, 4, 16). `None` for every other code.
    ///
    /// Checked against tshark 4.0 on the fixture captures (`shared/fixtures/*/*.tshark.tsv`):
    /// - FC 5, 6, 22, 24: tshark reports `reference_num` (for FC 24 the FIFO pointer
    ///   address) but no count, so there is no pair to return; the address is the
    ///   variant's `addr`.
    /// - FC 23: tshark leaves `reference_num` and `word_cnt` empty and reports
    ///   `read_reference_num` / `read_word_cnt` and `write_reference_num` /
    ///   `write_word_cnt` instead (lab/new_function_code frame 788). Compare those with
    ///   the variant's `read_addr`/`read_qty` and `write_addr`/`write_qty`.
    pub fn reference(&self) -> Option<(u16, u16)> {
        match *self {
            Request::ReadCoils { addr, qty }
            | Request::ReadDiscreteInputs { addr, qty }
            | Request::ReadHoldingRegisters { addr, qty }
            | Request::ReadInputRegisters { addr, qty }
            | Request::WriteMultipleCoils { addr, qty, .. }
            | Request::WriteMultipleRegisters { addr, qty, .. } => Some((addr, qty)),
            _ => None,
        }
    }

    /// Register and coil values this request writes, as (table, address, value).
    ///
    /// FC 5 gives a coil value of 0 or 1, and nothing for an illegal raw value (a server
    /// answers exception 3 and writes nothing); FC 15 one bit per coil; FC 6, 16 and the
    /// write part of FC 23 holding registers. FC 22 gives nothing: its result depends on
    /// the register's current value. Addresses past 0xFFFF wrap (a server rejects such
    /// requests; the detection rules see the wrapped address).
    pub fn written_values(&self) -> WrittenValues<'a> {
        match *self {
            Request::WriteSingleCoil { addr, value } => match value {
                COIL_ON => TableValues::one(Table::Coil, addr, 1),
                0 => TableValues::one(Table::Coil, addr, 0),
                _ => TableValues::empty(),
            },
            Request::WriteSingleRegister { addr, value } => {
                TableValues::one(Table::Holding, addr, value)
            }
            Request::WriteMultipleCoils { addr, qty, values } => {
                TableValues::bits(Table::Coil, addr, values, qty)
            }
            Request::WriteMultipleRegisters { addr, qty, values } => {
                TableValues::words(Table::Holding, addr, values, qty)
            }
            Request::ReadWriteMultipleRegisters {
                write_addr,
                write_qty,
                values,
                ..
            } => TableValues::words(Table::Holding, write_addr, values, write_qty),
            _ => TableValues::empty(),
        }
    }
}

impl Response<'_> {
    /// An exception's code.
    pub fn exception_code(&self) -> Option<u8> {
        match *self {
            Response::Exception { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The function code byte as sent: 0x80 set on an exception.
    pub fn wire_code(&self) -> u8 {
        let fc = self.function_code();
        if self.exception_code().is_some() {
            fc | EXCEPTION_BIT
        } else {
            fc
        }
    }

    /// The function code on the wire, without the 0x80 bit for exceptions, so that a
    /// response and its request compare equal.
    pub fn function_code(&self) -> u8 {
        match self {
            Response::ReadBits { fc, .. }
            | Response::ReadRegisters { fc, .. }
            | Response::WriteSingle { fc, .. }
            | Response::WriteMultiple { fc, .. }
            | Response::Exception { fc, .. }
            | Response::Other { fc, .. } => *fc,
            Response::ReadExceptionStatus { .. } => FC_READ_EXCEPTION_STATUS,
            Response::Diagnostics { .. } => FC_DIAGNOSTICS,
            Response::GetCommEventCounter { .. } => FC_COMM_EVENT_COUNTER,
            Response::GetCommEventLog { .. } => FC_COMM_EVENT_LOG,
            Response::ReportServerId { .. } => FC_REPORT_SERVER_ID,
            Response::ReadFileRecord { .. } => FC_READ_FILE_RECORD,
            Response::WriteFileRecord { .. } => FC_WRITE_FILE_RECORD,
            Response::MaskWriteRegister { .. } => FC_MASK_WRITE,
            Response::ReadFifoQueue { .. } => FC_READ_FIFO,
            Response::EncapsulatedInterface { .. } => FC_ENCAPSULATED,
        }
    }
}

/// Values a read response returns, given the matched request: FC 1 -> coils,
/// 2 -> discrete inputs, 3 and 23 -> holding registers, 4 -> input registers, from the
/// request's start address (FC 23: the read part). At most the request's quantity is
/// returned, since padding bits (and any surplus) have no address the master asked for.
/// Nothing if the response is an exception or of another function code.
pub fn read_values<'a>(req: &Request<'_>, resp: &Response<'a>) -> ReadValues<'a> {
    match (*req, *resp) {
        (Request::ReadCoils { addr, qty }, Response::ReadBits { fc: 1, data }) => {
            TableValues::bits(Table::Coil, addr, data, qty)
        }
        (Request::ReadDiscreteInputs { addr, qty }, Response::ReadBits { fc: 2, data }) => {
            TableValues::bits(Table::DiscreteInput, addr, data, qty)
        }
        (Request::ReadHoldingRegisters { addr, qty }, Response::ReadRegisters { fc: 3, data }) => {
            TableValues::words(Table::Holding, addr, data, qty)
        }
        (Request::ReadInputRegisters { addr, qty }, Response::ReadRegisters { fc: 4, data }) => {
            TableValues::words(Table::Input, addr, data, qty)
        }
        (
            Request::ReadWriteMultipleRegisters {
                read_addr,
                read_qty,
                ..
            },
            Response::ReadRegisters { fc: 23, data },
        ) => TableValues::words(Table::Holding, read_addr, data, read_qty),
        _ => TableValues::empty(),
    }
}

/// The iterator [`Request::written_values`] returns.
pub type WrittenValues<'a> = TableValues<'a>;
/// The iterator [`read_values`] returns.
pub type ReadValues<'a> = TableValues<'a>;

/// A non-allocating iterator of (table, address, value) over consecutive addresses
/// of one table, decoding values from the PDU bytes as it goes.
#[derive(Debug, Clone)]
pub struct TableValues<'a> {
    table: Table,
    start: u16,
    source: Source<'a>,
    next: u16,
    len: u16,
}

/// Where a [`TableValues`] takes its values from.
#[derive(Debug, Clone, Copy)]
enum Source<'a> {
    /// One value, already decoded.
    One(u16),
    /// Packed bits, LSB of the first byte first.
    Bits(&'a [u8]),
    /// Big-endian registers.
    Words(&'a [u8]),
}

impl<'a> TableValues<'a> {
    fn empty() -> Self {
        TableValues::new(Table::Coil, 0, Source::One(0), 0)
    }

    fn one(table: Table, addr: u16, value: u16) -> Self {
        TableValues::new(table, addr, Source::One(value), 1)
    }

    /// At most `qty` bits, fewer if `bytes` holds fewer.
    fn bits(table: Table, addr: u16, bytes: &'a [u8], qty: u16) -> Self {
        let len = qty.min(saturating_u16(bytes.len().saturating_mul(8)));
        TableValues::new(table, addr, Source::Bits(bytes), len)
    }

    /// At most `qty` registers, fewer if `bytes` holds fewer.
    fn words(table: Table, addr: u16, bytes: &'a [u8], qty: u16) -> Self {
        let len = qty.min(saturating_u16(bytes.len() / 2));
        TableValues::new(table, addr, Source::Words(bytes), len)
    }

    fn new(table: Table, start: u16, source: Source<'a>, len: u16) -> Self {
        TableValues {
            table,
            start,
            source,
            next: 0,
            len,
        }
    }

    /// The table, the first address and the number of values: the iterator
    /// yields addresses `start, start + 1, ...` (wrapping past 65535), `len`
    /// of them.
    pub fn span(&self) -> (Table, u16, u16) {
        (self.table, self.start, self.len)
    }

    /// The value at position `i` of [`TableValues::span`] (address
    /// `start + i`), without iterating: rules interested in a few addresses
    /// of a long read pick them out instead of visiting every value.
    pub fn value_at(&self, i: u16) -> Option<u16> {
        if i >= self.len {
            return None;
        }
        self.value(i)
    }

    /// The value at position `i`, `None` past the end of the bytes.
    fn value(&self, i: u16) -> Option<u16> {
        let i = usize::from(i);
        match self.source {
            Source::One(v) => Some(v),
            Source::Bits(b) => b.get(i / 8).map(|byte| u16::from((byte >> (i % 8)) & 1)),
            Source::Words(w) => {
                let pair = w.get(2 * i..)?.first_chunk()?;
                Some(u16::from_be_bytes(*pair))
            }
        }
    }
}

fn saturating_u16(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

impl Iterator for TableValues<'_> {
    type Item = (Table, u16, u16);

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.len {
            return None;
        }
        let i = self.next;
        self.next += 1;
        let value = self.value(i)?;
        Some((self.table, self.start.wrapping_add(i), value))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::from(self.len - self.next);
        (n, Some(n))
    }
}

impl ExactSizeIterator for TableValues<'_> {}

/// Appends the PDU of `req` to `out`. Byte counts are written from the slice lengths
/// (truncated to the field's width); quantities are written as given, so a request
/// whose quantity disagrees with its values encodes to a PDU that does not parse back.
pub fn encode_request(req: &Request<'_>, out: &mut Vec<u8>) {
    out.push(req.function_code());
    match *req {
        Request::ReadCoils { addr, qty }
        | Request::ReadDiscreteInputs { addr, qty }
        | Request::ReadHoldingRegisters { addr, qty }
        | Request::ReadInputRegisters { addr, qty } => put_words(out, &[addr, qty]),
        Request::WriteSingleCoil { addr, value } | Request::WriteSingleRegister { addr, value } => {
            put_words(out, &[addr, value])
        }
        Request::ReadExceptionStatus
        | Request::GetCommEventCounter
        | Request::GetCommEventLog
        | Request::ReportServerId => {}
        Request::Diagnostics { sub, data } => {
            put_words(out, &[sub]);
            out.extend_from_slice(data);
        }
        Request::WriteMultipleCoils { addr, qty, values }
        | Request::WriteMultipleRegisters { addr, qty, values } => {
            put_words(out, &[addr, qty]);
            put_counted_u8(out, values);
        }
        Request::ReadFileRecord { data } | Request::WriteFileRecord { data } => {
            put_counted_u8(out, data)
        }
        Request::MaskWriteRegister {
            addr,
            and_mask,
            or_mask,
        } => put_words(out, &[addr, and_mask, or_mask]),
        Request::ReadWriteMultipleRegisters {
            read_addr,
            read_qty,
            write_addr,
            write_qty,
            values,
        } => {
            put_words(out, &[read_addr, read_qty, write_addr, write_qty]);
            put_counted_u8(out, values);
        }
        Request::ReadFifoQueue { addr } => put_words(out, &[addr]),
        Request::EncapsulatedInterface { mei, data } => {
            out.push(mei);
            out.extend_from_slice(data);
        }
        Request::Other { data, .. } => out.extend_from_slice(data),
    }
}

/// Appends the PDU of `resp` to `out`; exceptions get the 0x80 bit. Byte counts are
/// written from the slice lengths (truncated to the field's width).
pub fn encode_response(resp: &Response<'_>, out: &mut Vec<u8>) {
    out.push(match *resp {
        Response::Exception { fc, .. } => fc | EXCEPTION_BIT,
        _ => resp.function_code(),
    });
    match *resp {
        Response::ReadBits { data, .. }
        | Response::ReadRegisters { data, .. }
        | Response::GetCommEventLog { data }
        | Response::ReportServerId { data }
        | Response::ReadFileRecord { data }
        | Response::WriteFileRecord { data } => put_counted_u8(out, data),
        Response::WriteSingle {
            addr, value: word, ..
        }
        | Response::WriteMultiple {
            addr, qty: word, ..
        } => put_words(out, &[addr, word]),
        Response::ReadExceptionStatus { status: byte } | Response::Exception { code: byte, .. } => {
            out.push(byte)
        }
        Response::Diagnostics { sub, data } => {
            put_words(out, &[sub]);
            out.extend_from_slice(data);
        }
        Response::GetCommEventCounter { status, count } => put_words(out, &[status, count]),
        Response::MaskWriteRegister {
            addr,
            and_mask,
            or_mask,
        } => put_words(out, &[addr, and_mask, or_mask]),
        Response::ReadFifoQueue { data } => {
            put_words(out, &[data.len() as u16]);
            out.extend_from_slice(data);
        }
        Response::EncapsulatedInterface { mei, data } => {
            out.push(mei);
            out.extend_from_slice(data);
        }
        Response::Other { data, .. } => out.extend_from_slice(data),
    }
}

fn put_words(out: &mut Vec<u8>, words: &[u16]) {
    for w in words {
        out.extend_from_slice(&w.to_be_bytes());
    }
}

/// A 1-byte byte count, then the data.
fn put_counted_u8(out: &mut Vec<u8>, data: &[u8]) {
    out.push(data.len() as u8);
    out.extend_from_slice(data);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    /// Bytes from a hex string (PDUs copied from the fixture captures).
    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn req(s: &str) -> Result<Request<'static>, PduError> {
        parse_request(hex(s).leak())
    }

    fn resp(s: &str) -> Result<Response<'static>, PduError> {
        parse_response(hex(s).leak())
    }

    fn encoded_request(r: &Request<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        encode_request(r, &mut out);
        out
    }

    fn encoded_response(r: &Response<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        encode_response(r, &mut out);
        out
    }

    /// Checks that `r` parsed from `s` encodes back to `s`.
    fn request_round_trips(s: &str) -> Request<'static> {
        let r = req(s).unwrap();
        assert_eq!(encoded_request(&r), hex(s), "{r:?}");
        r
    }

    fn response_round_trips(s: &str) -> Response<'static> {
        let r = resp(s).unwrap();
        assert_eq!(encoded_response(&r), hex(s), "{r:?}");
        r
    }

    // Unless noted, PDUs come from real/icsnpp_modbus_example.pcap, and the tshark
    // fields quoted are from its .tshark.tsv.

    #[test]
    fn fc1_read_coils() {
        // frame 4: reference_num 1, bit_cnt 1
        let r = request_round_trips("0100010001");
        assert_eq!(r, Request::ReadCoils { addr: 1, qty: 1 });
        assert_eq!(r.reference(), Some((1, 1)));
        assert!(!r.is_write());
        let p = response_round_trips("0101e9"); // frame 10, answering qty 8
        assert_eq!(
            p,
            Response::ReadBits {
                fc: 1,
                data: &[0xe9]
            }
        );
        let read = Request::ReadCoils { addr: 1, qty: 8 };
        let bits: Vec<_> = read_values(&read, &p).map(|(_, _, v)| v).collect();
        assert_eq!(bits, [1, 0, 0, 1, 0, 1, 1, 1]);
    }

    #[test]
    fn fc2_read_discrete_inputs() {
        let r = request_round_trips("0200010008");
        assert_eq!(r, Request::ReadDiscreteInputs { addr: 1, qty: 8 });
        let p = response_round_trips("02012c");
        assert_eq!(
            p,
            Response::ReadBits {
                fc: 2,
                data: &[0x2c]
            }
        );
        let v: Vec<_> = read_values(&r, &p).collect();
        assert_eq!(v.len(), 8);
        assert_eq!(v[2], (Table::DiscreteInput, 3, 1));
    }

    #[test]
    fn fc3_read_holding_registers() {
        let r = request_round_trips("0300010008");
        assert_eq!(r, Request::ReadHoldingRegisters { addr: 1, qty: 8 });
        assert_eq!(r.reference(), Some((1, 8)));
        let p = response_round_trips("031000aa00aa00bb00ccef84e3eb9f8be4c1");
        assert_eq!(p.function_code(), 3);
        let v: Vec<_> = read_values(&r, &p).collect();
        assert_eq!(v.len(), 8);
        assert_eq!(v[0], (Table::Holding, 1, 0xaa));
        assert_eq!(v[7], (Table::Holding, 8, 0xe4c1));
    }

    #[test]
    fn fc4_read_input_registers() {
        let r = request_round_trips("0400010001");
        assert_eq!(r, Request::ReadInputRegisters { addr: 1, qty: 1 });
        let p = response_round_trips("04028e2b");
        assert_eq!(
            read_values(&r, &p).collect::<Vec<_>>(),
            [(Table::Input, 1, 0x8e2b)]
        );
    }

    #[test]
    fn fc5_write_single_coil() {
        // frame 36: reference_num 1, no count
        let r = request_round_trips("050001ff00");
        assert_eq!(
            r,
            Request::WriteSingleCoil {
                addr: 1,
                value: 0xff00
            }
        );
        assert!(r.is_write());
        assert_eq!(r.reference(), None, "tshark: reference_num 1, no count");
        assert_eq!(
            r.written_values().collect::<Vec<_>>(),
            [(Table::Coil, 1, 1)]
        );
        let off = Request::WriteSingleCoil { addr: 9, value: 0 };
        assert_eq!(
            off.written_values().collect::<Vec<_>>(),
            [(Table::Coil, 9, 0)]
        );
        let illegal = req("0500011234").unwrap();
        assert_eq!(illegal.written_values().count(), 0);
        let p = response_round_trips("050001ff00");
        assert_eq!(
            p,
            Response::WriteSingle {
                fc: 5,
                addr: 1,
                value: 0xff00
            }
        );
    }

    #[test]
    fn fc6_write_single_register() {
        let r = request_round_trips("060001abcd");
        assert!(r.is_write());
        assert_eq!(
            r.written_values().collect::<Vec<_>>(),
            [(Table::Holding, 1, 0xabcd)]
        );
        let p = response_round_trips("060001abcd");
        assert_eq!(
            p,
            Response::WriteSingle {
                fc: 6,
                addr: 1,
                value: 0xabcd
            }
        );
    }

    #[test]
    fn fc7_read_exception_status() {
        let r = request_round_trips("07");
        assert_eq!(r, Request::ReadExceptionStatus);
        assert_eq!(r.reference(), None);
        assert_eq!(
            response_round_trips("0700"),
            Response::ReadExceptionStatus { status: 0 }
        );
    }

    #[test]
    fn fc8_diagnostics() {
        // frame 48: diagnostic_code 2, data 0000
        let r = request_round_trips("0800020000");
        assert_eq!(
            r,
            Request::Diagnostics {
                sub: 2,
                data: &[0, 0]
            }
        );
        assert_eq!(r.reference(), None);
        // lab/device_enumeration.pcap frame 1730: return query data, echoed
        let p = response_round_trips("0800005aa5");
        assert_eq!(
            p,
            Response::Diagnostics {
                sub: 0,
                data: &[0x5a, 0xa5]
            }
        );
        assert_eq!(
            request_round_trips("080001"),
            Request::Diagnostics { sub: 1, data: &[] }
        );
    }

    #[test]
    fn fc11_get_comm_event_counter() {
        // spec V1.1b3 6.9: status 0xFFFF (busy), count 0x0108
        assert_eq!(request_round_trips("0b"), Request::GetCommEventCounter);
        assert_eq!(
            response_round_trips("0bffff0108"),
            Response::GetCommEventCounter {
                status: 0xffff,
                count: 0x108
            }
        );
    }

    #[test]
    fn fc12_get_comm_event_log() {
        // spec V1.1b3 6.10
        assert_eq!(request_round_trips("0c"), Request::GetCommEventLog);
        let p = response_round_trips("0c080000010801212000");
        assert_eq!(
            p,
            Response::GetCommEventLog {
                data: &[0, 0, 1, 8, 1, 0x21, 0x20, 0]
            }
        );
    }

    #[test]
    fn fc15_write_multiple_coils() {
        // frame 52: reference_num 1, bit_cnt 4, data 09
        let r = request_round_trips(concat!("0f0001000401", "09"));
        assert_eq!(
            r,
            Request::WriteMultipleCoils {
                addr: 1,
                qty: 4,
                values: &[9]
            }
        );
        assert!(r.is_write());
        assert_eq!(r.reference(), Some((1, 4)));
        assert_eq!(
            r.written_values().collect::<Vec<_>>(),
            [
                (Table::Coil, 1, 1),
                (Table::Coil, 2, 0),
                (Table::Coil, 3, 0),
                (Table::Coil, 4, 1)
            ]
        );
        assert_eq!(
            response_round_trips("0f00010004"),
            Response::WriteMultiple {
                fc: 15,
                addr: 1,
                qty: 4
            }
        );
    }

    #[test]
    fn fc16_write_multiple_registers() {
        // frame 56: reference_num 1, word_cnt 4, regnum16 1;2;3;4, regval 170;187;204;221
        let r = request_round_trips(concat!("1000010004", "0800aa00bb00cc00dd"));
        assert!(r.is_write());
        assert_eq!(r.reference(), Some((1, 4)));
        assert_eq!(
            r.written_values().collect::<Vec<_>>(),
            [
                (Table::Holding, 1, 170),
                (Table::Holding, 2, 187),
                (Table::Holding, 3, 204),
                (Table::Holding, 4, 221)
            ]
        );
        assert_eq!(r.written_values().len(), 4);
        assert_eq!(
            response_round_trips("1000010004"),
            Response::WriteMultiple {
                fc: 16,
                addr: 1,
                qty: 4
            }
        );
    }

    #[test]
    fn fc17_report_server_id() {
        assert_eq!(request_round_trips("11"), Request::ReportServerId);
        // real/quickdraw_modbus_test_data_part1.pcap frame 41
        let p = response_round_trips(concat!("111200ff57696e67706174", "68204c696d69746564"));
        let Response::ReportServerId { data } = p else {
            panic!("{p:?}")
        };
        assert_eq!(&data[2..], b"Wingpath Limited");
        // frame 62: 50-byte server id ending with run indicator 0xFF
        let p = response_round_trips(concat!(
            "1132",
            "5a65656b204d6f6462757320546573742d50726f746f636f6c20",
            "50617273696e672069732066756e212d312e322e332e36ff",
        ));
        assert_eq!(p.function_code(), 17);
    }

    #[test]
    fn fc20_read_file_record() {
        // frame 64: an empty byte count
        assert_eq!(
            request_round_trips("1400"),
            Request::ReadFileRecord { data: &[] }
        );
        assert_eq!(
            response_round_trips("1400"),
            Response::ReadFileRecord { data: &[] }
        );
        // spec V1.1b3 6.14: two sub-requests, two sub-responses
        let r = request_round_trips("140e0600040001000206000300090002");
        assert_eq!(r.function_code(), 20);
        assert!(!r.is_write());
        let p = response_round_trips("140c05060dfe0020050633cd0040");
        assert_eq!(p.function_code(), 20);
    }

    #[test]
    fn fc21_write_file_record() {
        assert_eq!(
            request_round_trips("1500"),
            Request::WriteFileRecord { data: &[] }
        );
        // spec V1.1b3 6.15, echoed
        let s = "150d0600040007000306af04be100d";
        let Request::WriteFileRecord { data } = request_round_trips(s) else {
            panic!()
        };
        assert_eq!(data.len(), 13);
        assert_eq!(response_round_trips(s), Response::WriteFileRecord { data });
        assert!(!request_round_trips(s).is_write());
    }

    #[test]
    fn fc22_mask_write_register() {
        // lab/new_function_code.pcap frame 1038: reference_num 51, and_mask 255, or_mask 4608,
        // and no word_cnt
        let r = request_round_trips("16003300ff1200");
        assert_eq!(
            r,
            Request::MaskWriteRegister {
                addr: 51,
                and_mask: 255,
                or_mask: 4608
            }
        );
        assert!(r.is_write());
        assert_eq!(r.reference(), None);
        assert_eq!(r.written_values().count(), 0);
        assert_eq!(
            response_round_trips("16003300ff1200"),
            Response::MaskWriteRegister {
                addr: 51,
                and_mask: 255,
                or_mask: 4608
            }
        );
    }

    #[test]
    fn fc23_read_write_multiple_registers() {
        // lab/new_function_code.pcap frame 788: read_reference_num 50, read_word_cnt 2,
        // write_reference_num 50, write_word_cnt 2 (reference_num and word_cnt empty)
        let r = request_round_trips(concat!("170032000200320002", "0401ec011c"));
        assert!(r.is_write());
        assert_eq!(r.reference(), None);
        assert_eq!(
            r.written_values().collect::<Vec<_>>(),
            [(Table::Holding, 50, 0x01ec), (Table::Holding, 51, 0x011c)]
        );
        // frame 789
        let p = response_round_trips("170401ec011c");
        assert_eq!(
            p,
            Response::ReadRegisters {
                fc: 23,
                data: &[1, 0xec, 1, 0x1c]
            }
        );
        assert_eq!(
            read_values(&r, &p).collect::<Vec<_>>(),
            [(Table::Holding, 50, 0x01ec), (Table::Holding, 51, 0x011c)]
        );
        // icsnpp frame 84 / 86: read 4 at 1, write 3 at 2
        let r = request_round_trips(concat!("170001000400020003", "0600aa00bb00cc"));
        assert_eq!(r.written_values().len(), 3);
        let p = response_round_trips("170800aa00aa00bb00cc");
        assert_eq!(read_values(&r, &p).len(), 4);
    }

    #[test]
    fn fc24_read_fifo_queue() {
        // frame 88: reference_num 0; frame 90: byte count 2, FIFO count 0
        let r = request_round_trips("180000");
        assert_eq!(r, Request::ReadFifoQueue { addr: 0 });
        assert_eq!(r.reference(), None);
        assert_eq!(
            response_round_trips("1800020000"),
            Response::ReadFifoQueue { data: &[0, 0] }
        );
        // spec V1.1b3 6.18: two values
        assert_eq!(
            response_round_trips("180006000201b81284"),
            Response::ReadFifoQueue {
                data: &[0, 2, 1, 0xb8, 0x12, 0x84]
            }
        );
    }

    #[test]
    fn fc43_encapsulated_interface() {
        // frame 92: MEI 14 (read device identification), basic, object 0
        let r = request_round_trips("2b0e0100");
        assert_eq!(
            r,
            Request::EncapsulatedInterface {
                mei: 14,
                data: &[1, 0]
            }
        );
        assert_eq!(r.reference(), None);
        // lab/device_enumeration.pcap frame 514
        let p = response_round_trips(concat!(
            "2b0e0183000003000f41434d45204175746f6d6174696f6e0107504c432d504c43",
            "020f70796d6f6462757320332e31362e31",
        ));
        assert!(matches!(p, Response::EncapsulatedInterface { mei: 14, .. }));
        // MEI 13, CANopen general reference
        assert_eq!(
            request_round_trips("2b0d0102"),
            Request::EncapsulatedInterface {
                mei: 13,
                data: &[1, 2]
            }
        );
        assert_eq!(
            request_round_trips("2b0e"),
            Request::EncapsulatedInterface { mei: 14, data: &[] }
        );
    }

    #[test]
    fn exceptions() {
        // lab/device_enumeration.pcap frame 100: illegal data address for FC 3
        let p = response_round_trips("8302");
        assert_eq!(p, Response::Exception { fc: 3, code: 2 });
        assert_eq!(p.function_code(), 3);
        // real/quickdraw frame 9, real/zeek_fuzz-72 frame 5, lab/malformed_mbap frame 985
        assert_eq!(
            response_round_trips("880b"),
            Response::Exception { fc: 8, code: 11 }
        );
        assert_eq!(
            response_round_trips("a001"),
            Response::Exception { fc: 32, code: 1 }
        );
        assert_eq!(
            response_round_trips("8001"),
            Response::Exception { fc: 0, code: 1 }
        );
        let read = Request::ReadHoldingRegisters { addr: 0, qty: 1 };
        assert_eq!(read_values(&read, &p).count(), 0);
        // In a request the 0x80 bit is just another unknown code.
        assert_eq!(
            request_round_trips("8302"),
            Request::Other {
                fc: 0x83,
                data: &[2]
            }
        );
    }

    #[test]
    fn other_codes_are_kept_raw() {
        // real/zeek_fuzz-72.pcap frame 3, real/quickdraw frame 111, a vendor code 90
        let r = request_round_trips("1d00000000");
        assert_eq!(
            r,
            Request::Other {
                fc: 29,
                data: &[0; 4]
            }
        );
        assert!(!r.is_write());
        assert_eq!(r.reference(), None);
        assert_eq!(r.written_values().count(), 0);
        assert_eq!(
            response_round_trips("2a0e0401010123"),
            Response::Other {
                fc: 42,
                data: &[0x0e, 4, 1, 1, 1, 0x23]
            }
        );
        assert_eq!(
            request_round_trips("5a"),
            Request::Other { fc: 90, data: &[] }
        );
        assert_eq!(request_round_trips("5a").function_code(), 90);
        assert_eq!(
            response_round_trips("00ff"),
            Response::Other {
                fc: 0,
                data: &[0xff]
            }
        );
    }

    /// `reference()` against tshark 4.0's `reference_num` and `bit_cnt`/`word_cnt`
    /// columns for requests in the fixture TSVs (None where tshark has no count).
    #[test]
    fn reference_agrees_with_tshark() {
        let rows: [(&str, Option<(u16, u16)>); 12] = [
            ("0100010008", Some((1, 8))),        // icsnpp frame 8
            ("020063001e", Some((99, 30))),      // iti_mb2: reference_num 99, bit_cnt 30
            ("0300000010", Some((0, 16))),       // lab frame 7: reference_num 0, word_cnt 16
            ("0408ab0016", Some((2219, 22))),    // iti_mb2
            ("050001ff00", None),                // reference_num 1 only
            ("060001abcd", None),                // reference_num 1 only
            ("0f0009000a02ff03", Some((9, 10))), // iti_mb2: bit_cnt 10
            (concat!("1000010004", "0800aa00bb00cc00dd"), Some((1, 4))),
            ("16003300ff1200", None), // reference_num 51 only
            (concat!("170032000200320002", "0401ec011c"), None), // read_/write_ fields only
            ("180000", None),         // reference_num 0 only
            ("0800020000", None),     // diagnostic_code only
        ];
        for (pdu, tshark) in rows {
            assert_eq!(req(pdu).unwrap().reference(), tshark, "{pdu}");
        }
    }

    #[test]
    fn empty_pdu() {
        assert_eq!(parse_request(&[]), Err(PduError::Empty));
        assert_eq!(parse_response(&[]), Err(PduError::Empty));
    }

    #[test]
    fn too_short() {
        let e = |fc, need, have| PduError::TooShort { fc, need, have };
        assert_eq!(req("030001").err(), Some(e(3, 5, 3)));
        assert_eq!(req("05").err(), Some(e(5, 5, 1)));
        assert_eq!(req("08ff").err(), Some(e(8, 3, 2)));
        assert_eq!(req("0f000100").err(), Some(e(15, 6, 4)));
        assert_eq!(req("1000010002").err(), Some(e(16, 6, 5)));
        assert_eq!(req("14").err(), Some(e(20, 2, 1)));
        assert_eq!(req("160001ffff").err(), Some(e(22, 7, 5)));
        assert_eq!(req("1700010001000200").err(), Some(e(23, 10, 8)));
        assert_eq!(req("18").err(), Some(e(24, 3, 1)));
        assert_eq!(req("2b").err(), Some(e(43, 2, 1)));
        assert_eq!(resp("01").err(), Some(e(1, 2, 1)));
        assert_eq!(resp("03").err(), Some(e(3, 2, 1)));
        assert_eq!(resp("0600").err(), Some(e(6, 5, 2)));
        assert_eq!(resp("07").err(), Some(e(7, 2, 1)));
        assert_eq!(resp("0bffff").err(), Some(e(11, 5, 3)));
        assert_eq!(resp("0f000100").err(), Some(e(15, 5, 4)));
        assert_eq!(resp("1800").err(), Some(e(24, 3, 2)));
        assert_eq!(resp("83").err(), Some(e(0x83, 2, 1)));
    }

    #[test]
    fn trailing_bytes() {
        let e = |fc, extra| PduError::TrailingBytes { fc, extra };
        assert_eq!(req("030000000100").err(), Some(e(3, 1)));
        assert_eq!(req("0700").err(), Some(e(7, 1)));
        assert_eq!(req("0b0000").err(), Some(e(11, 2)));
        assert_eq!(req("0c00").err(), Some(e(12, 1)));
        assert_eq!(req("1100").err(), Some(e(17, 1)));
        assert_eq!(req("16000100ff0000ab").err(), Some(e(22, 1)));
        assert_eq!(req("18000000").err(), Some(e(24, 1)));
        assert_eq!(resp("050001ff0000").err(), Some(e(5, 1)));
        assert_eq!(resp("070000").err(), Some(e(7, 1)));
        assert_eq!(resp("0b00000000ff").err(), Some(e(11, 1)));
        assert_eq!(resp("100001000400").err(), Some(e(16, 1)));
        // A longer exception PDU is a vendor's habit (`81 06 00`), decoded
        // as the exception it is.
        assert_eq!(
            resp("8302ff").ok(),
            Some(Response::Exception { fc: 3, code: 2 })
        );
        assert_eq!(
            resp("8106").ok(),
            Some(Response::Exception { fc: 1, code: 6 })
        );
    }

    #[test]
    fn byte_count_mismatch() {
        let e = |fc, declared, actual| PduError::ByteCountMismatch {
            fc,
            declared,
            actual,
        };
        // count against the bytes present, both ways
        assert_eq!(req("0f000100040209").err(), Some(e(15, 2, 1)));
        assert_eq!(req("0f00010004010900").err(), Some(e(15, 1, 2)));
        assert_eq!(req("1000010001020001ff").err(), Some(e(16, 2, 3)));
        assert_eq!(req("14030000").err(), Some(e(20, 3, 2)));
        assert_eq!(req("15ff").err(), Some(e(21, 255, 0)));
        assert_eq!(req("1700000001000000010300ff").err(), Some(e(23, 3, 2)));
        assert_eq!(resp("0102ff").err(), Some(e(1, 2, 1)));
        assert_eq!(resp("030400aa").err(), Some(e(3, 4, 2)));
        assert_eq!(resp("0c0100ff").err(), Some(e(12, 1, 2)));
        assert_eq!(resp("1100"), Ok(Response::ReportServerId { data: &[] }));
        assert_eq!(resp("1101").err(), Some(e(17, 1, 0)));
        assert_eq!(resp("14020000ff").err(), Some(e(20, 2, 3)));
        assert_eq!(resp("1501").err(), Some(e(21, 1, 0)));
        assert_eq!(resp("1800030000").err(), Some(e(24, 3, 2)));
        // count against the quantity field
        assert_eq!(req("0f0001000901ff").err(), Some(e(15, 1, 2)));
        assert_eq!(req("0f0001000002ffff").err(), Some(e(15, 2, 0)));
        assert_eq!(req("10000100020200ff").err(), Some(e(16, 2, 4)));
        assert_eq!(req("1700000001000000020200ff").err(), Some(e(23, 2, 4)));
        // an odd register byte count, even when it matches the bytes present
        assert_eq!(resp("030300aabb").err(), Some(e(3, 3, 2)));
        assert_eq!(resp("170100").err(), Some(e(23, 1, 0)));
    }

    #[test]
    fn out_of_range_quantities_are_not_errors() {
        assert_eq!(
            req("0300000000"),
            Ok(Request::ReadHoldingRegisters { addr: 0, qty: 0 })
        );
        assert_eq!(
            req("030000ffff"),
            Ok(Request::ReadHoldingRegisters {
                addr: 0,
                qty: 0xffff
            })
        );
        assert_eq!(
            req("0f0000000000"),
            Ok(Request::WriteMultipleCoils {
                addr: 0,
                qty: 0,
                values: &[]
            })
        );
        assert_eq!(
            resp("0300"),
            Ok(Response::ReadRegisters { fc: 3, data: &[] })
        );
    }

    #[test]
    fn errors_describe_themselves() {
        let errors = [
            PduError::Empty,
            PduError::TooShort {
                fc: 3,
                need: 5,
                have: 2,
            },
            PduError::ByteCountMismatch {
                fc: 16,
                declared: 4,
                actual: 2,
            },
            PduError::TrailingBytes { fc: 6, extra: 1 },
        ];
        let texts: Vec<_> = errors.iter().map(PduError::describe).collect();
        assert_eq!(
            texts,
            [
                "empty PDU",
                "PDU shorter than its function code needs",
                "byte count disagrees with the data",
                "extra bytes after a fixed-size PDU"
            ]
        );
        assert_eq!(errors[1].to_string(), "FC 3: 2 bytes, needs at least 5");
    }

    #[test]
    fn read_values_stop_at_the_request_quantity() {
        // 10 coils asked, 2 bytes returned: the 6 padding bits have no address.
        let r = Request::ReadCoils { addr: 100, qty: 10 };
        let p = Response::ReadBits {
            fc: 1,
            data: &[0xff, 0xff],
        };
        let v: Vec<_> = read_values(&r, &p).collect();
        assert_eq!(v.len(), 10);
        assert_eq!(v[9], (Table::Coil, 109, 1));
        // A short response yields only the values present.
        let r = Request::ReadHoldingRegisters { addr: 0, qty: 3 };
        let p = Response::ReadRegisters {
            fc: 3,
            data: &[0, 1],
        };
        assert_eq!(
            read_values(&r, &p).collect::<Vec<_>>(),
            [(Table::Holding, 0, 1)]
        );
        // A surplus register is not attributed to an address nobody asked for.
        let r = Request::ReadHoldingRegisters { addr: 0, qty: 1 };
        let p = Response::ReadRegisters {
            fc: 3,
            data: &[0, 1, 0, 2],
        };
        assert_eq!(read_values(&r, &p).count(), 1);
    }

    #[test]
    fn read_values_need_matching_function_codes() {
        let data = &[0, 1];
        let holding = Request::ReadHoldingRegisters { addr: 0, qty: 1 };
        let input = Request::ReadInputRegisters { addr: 0, qty: 1 };
        let as_fc = |fc| Response::ReadRegisters { fc, data };
        assert_eq!(read_values(&holding, &as_fc(4)).count(), 0);
        assert_eq!(read_values(&input, &as_fc(3)).count(), 0);
        assert_eq!(read_values(&input, &as_fc(4)).count(), 1);
        let write = Request::WriteSingleRegister { addr: 0, value: 1 };
        assert_eq!(read_values(&write, &as_fc(3)).count(), 0);
        // The FC 23 read part, as the transaction table rebuilds it (no write part).
        let rw = Request::ReadWriteMultipleRegisters {
            read_addr: 7,
            read_qty: 1,
            write_addr: 0,
            write_qty: 0,
            values: &[],
        };
        assert_eq!(
            read_values(&rw, &as_fc(23)).collect::<Vec<_>>(),
            [(Table::Holding, 7, 1)]
        );
    }

    #[test]
    fn addresses_wrap_instead_of_overflowing() {
        let r = req("10ffff000204000a000b").unwrap();
        assert_eq!(
            r.written_values().collect::<Vec<_>>(),
            [(Table::Holding, 0xffff, 10), (Table::Holding, 0, 11)]
        );
    }

    #[test]
    fn written_values_of_inconsistent_hand_made_requests_do_not_panic() {
        let r = Request::WriteMultipleCoils {
            addr: 0,
            qty: 100,
            values: &[1],
        };
        assert_eq!(r.written_values().len(), 8);
        let r = Request::WriteMultipleRegisters {
            addr: 0,
            qty: 3,
            values: &[0, 1, 2],
        };
        assert_eq!(r.written_values().count(), 1);
    }

    #[test]
    fn reads_and_other_codes_write_nothing() {
        for s in [
            "0300000001",
            "0100000001",
            "07",
            "0800000000",
            "180000",
            "2b0e0100",
        ] {
            let r = req(s).unwrap();
            assert!(!r.is_write(), "{s}");
            assert_eq!(r.written_values().count(), 0, "{s}");
        }
    }

    /// Function codes this module parses structurally, in requests and responses.
    fn is_known(fc: u8) -> bool {
        matches!(fc, 1..=8 | 11 | 12 | 15..=17 | 20..=24 | 43)
    }

    #[test]
    fn public_layout_is_what_parses_structurally() {
        for fc in 0..=u8::MAX {
            assert_eq!(has_public_layout(fc), is_known(fc), "fc {fc}");
            let other = matches!(parse_request(&[fc]), Ok(Request::Other { .. }));
            assert_eq!(has_public_layout(fc), !other, "fc {fc}");
        }
    }

    /// Arbitrary bytes, half of them behind a known function code so that the
    /// structural checks, not only `Other`, see garbage.
    fn pdu_bytes() -> impl Strategy<Value = Vec<u8>> {
        let known = (1u8..=43).prop_filter("known", |&fc| is_known(fc));
        let fc = prop_oneof![known, any::<u8>()];
        (fc, vec(any::<u8>(), 0..40)).prop_map(|(fc, mut body)| {
            body.insert(0, fc);
            body
        })
    }

    proptest! {
        #[test]
        fn parse_request_never_panics(pdu in pdu_bytes()) {
            if let Ok(r) = parse_request(&pdu) {
                prop_assert_eq!(Some(&r.function_code()), pdu.first());
                let _ = (r.is_write(), r.reference());
                let n = r.written_values().len();
                prop_assert_eq!(r.written_values().count(), n);
                prop_assert_eq!(encoded_request(&r), pdu);
            }
        }

        #[test]
        fn parse_response_never_panics(pdu in pdu_bytes()) {
            if let Ok(p) = parse_response(&pdu) {
                prop_assert_eq!(Some(p.function_code()), pdu.first().map(|fc| fc & 0x7f));
                // An exception decodes from its first two bytes; whatever
                // follows is a vendor's extra (see `parse_response`).
                let whole = match p {
                    Response::Exception { .. } => &pdu[..2],
                    _ => &pdu[..],
                };
                prop_assert_eq!(encoded_response(&p), whole);
            }
        }

        #[test]
        fn read_values_never_panic(req_pdu in pdu_bytes(), resp_pdu in pdu_bytes()) {
            if let (Ok(r), Ok(p)) = (parse_request(&req_pdu), parse_response(&resp_pdu)) {
                let n = read_values(&r, &p).len();
                prop_assert_eq!(read_values(&r, &p).count(), n);
            }
        }

        #[test]
        fn written_registers_match_the_quantity(addr: u16, regs in vec(any::<u16>(), 0..=123)) {
            let mut pdu = vec![16];
            pdu.extend_from_slice(&addr.to_be_bytes());
            pdu.extend_from_slice(&(regs.len() as u16).to_be_bytes());
            pdu.push((regs.len() * 2) as u8);
            for r in &regs {
                pdu.extend_from_slice(&r.to_be_bytes());
            }
            let req = parse_request(&pdu).unwrap();
            let written: Vec<_> = req.written_values().collect();
            let expected: Vec<_> = regs
                .iter()
                .enumerate()
                .map(|(i, &v)| (Table::Holding, addr.wrapping_add(i as u16), v))
                .collect();
            prop_assert_eq!(written, expected);
        }
    }
}
