//! Modbus/TCP: MBAP header, PDUs of every public function code, the
//! request/response transaction table, and ADU records (`--dump-adus`).

pub mod device_id;
pub mod mbap;
pub mod pdu;
pub mod record;
pub mod transaction;

/// Name of a function code as in the Modbus specification.
pub fn function_name(fc: u8) -> &'static str {
    match fc & 0x7f {
        1 => "Read Coils",
        2 => "Read Discrete Inputs",
        3 => "Read Holding Registers",
        4 => "Read Input Registers",
        5 => "Write Single Coil",
        6 => "Write Single Register",
        7 => "Read Exception Status",
        8 => "Diagnostics",
        11 => "Get Comm Event Counter",
        12 => "Get Comm Event Log",
        15 => "Write Multiple Coils",
        16 => "Write Multiple Registers",
        17 => "Report Server ID",
        20 => "Read File Record",
        21 => "Write File Record",
        22 => "Mask Write Register",
        23 => "Read/Write Multiple Registers",
        24 => "Read FIFO Queue",
        43 => "Encapsulated Interface Transport",
        65..=72 | 100..=110 => "User-Defined",
        _ => "Unknown",
    }
}

/// Name of an exception code.
pub fn exception_name(code: u8) -> &'static str {
    match code {
        1 => "Illegal Function",
        2 => "Illegal Data Address",
        3 => "Illegal Data Value",
        4 => "Server Device Failure",
        5 => "Acknowledge",
        6 => "Server Device Busy",
        8 => "Memory Parity Error",
        10 => "Gateway Path Unavailable",
        11 => "Gateway Target Device Failed to Respond",
        _ => "Unknown Exception",
    }
}
