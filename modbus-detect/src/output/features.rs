//! The original ML pipeline's per-packet features (`adu_features.csv` in
//! `--csv-dir`), one row per Modbus ADU rather than per packet (a packet
//! may carry several ADUs, and an ADU may span packets: its row is the
//! frame that completed it). The original's columns come first with its
//! names; ours follow.

use std::io::Write;
use std::net::IpAddr;

use crate::modbus::record::AduRecord;
use crate::output::inventory::csv_writer;

/// Columns of `adu_features.csv` (documented in the README; stable).
pub const COLUMNS: [&str; 13] = [
    "delta_time",
    "packet_length",
    "src_ip_int",
    "src_ip_str",
    "function_code",
    "frame",
    "time",
    "src_port",
    "dst_ip_str",
    "dst_port",
    "unit_id",
    "is_request",
    "transaction_id",
];

/// The last column of `modbus-detect ml features`' files, which hold the
/// rows of many captures: the file each row comes from.
pub const CAPTURE_COLUMN: &str = "capture";

/// Writes the rows as the ADUs come, keeping the previous one's time.
pub struct FeatureWriter<W: Write> {
    out: W,
    last_ns: Option<u64>,
    rows: u64,
    /// With the `capture` column: the current capture's name.
    capture: Option<String>,
}

/// An address as the original's `int(ipaddress.ip_address(s))`.
fn as_int(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => u32::from(v4).to_string(),
        IpAddr::V6(v6) => u128::from(v6).to_string(),
    }
}

impl<W: Write> FeatureWriter<W> {
    pub fn new(out: W) -> std::io::Result<Self> {
        Self::start(out, None)
    }

    /// Rows of several captures, each named in a last `capture` column
    /// ([`FeatureWriter::next_capture`]).
    pub fn with_captures(out: W) -> std::io::Result<Self> {
        Self::start(out, Some(String::new()))
    }

    fn start(mut out: W, capture: Option<String>) -> std::io::Result<Self> {
        out.write_all(COLUMNS.join(",").as_bytes())?;
        if capture.is_some() {
            out.write_all(b",")?;
            out.write_all(CAPTURE_COLUMN.as_bytes())?;
        }
        out.write_all(b"\r\n")?;
        Ok(FeatureWriter {
            out,
            last_ns: None,
            rows: 0,
            capture,
        })
    }

    /// The rows that follow come from the capture `name`: its first row's
    /// `delta_time` is 0, as the original computed it per capture.
    pub fn next_capture(&mut self, name: &str) {
        self.last_ns = None;
        if let Some(c) = &mut self.capture {
            name.clone_into(c);
        }
    }

    /// One ADU's row: `delta_time` is the seconds since the previous
    /// ADU's frame (0 for the first, and for ADUs of the same frame);
    /// `function_code` is the byte as sent (0x80 set on exceptions), as
    /// the original read it from the payload.
    pub fn row(&mut self, r: &AduRecord) -> std::io::Result<()> {
        let delta = crate::original::delta_time(&mut self.last_ns, r.ts_ns);
        let mut w = csv_writer();
        for field in [
            format!("{delta:.6}"),
            r.frame_len.to_string(),
            as_int(r.src),
            r.src.to_string(),
            r.function_code.to_string(),
            r.frame.to_string(),
            format!("{:.6}", r.ts_ns as f64 / 1e9),
            r.src_port.to_string(),
            r.dst.to_string(),
            r.dst_port.to_string(),
            r.unit.to_string(),
            u8::from(r.is_request).to_string(),
            r.tid.to_string(),
        ] {
            w.write_field(field)?;
        }
        if let Some(c) = &self.capture {
            w.write_field(c)?;
        }
        w.write_record(None::<&[u8]>)?;
        let line = w.into_inner().map_err(|e| e.into_error())?;
        self.out.write_all(&line)?;
        self.rows += 1;
        Ok(())
    }

    pub fn finish(mut self) -> std::io::Result<u64> {
        self.out.flush()?;
        Ok(self.rows)
    }
}
