//! Classic libpcap file writer.
//!
//! The classic format (not pcapng) is what the detector's file source and
//! every tool (tcpdump, tshark, tcpreplay) read, and it is simple enough to
//! write by hand without a dependency.

use std::io::{self, Write};

use super::frames::invalid;

/// Microsecond-resolution magic, written little-endian.
const MAGIC_MICROS: u32 = 0xa1b2_c3d4;
const VERSION_MAJOR: u16 = 2;
const VERSION_MINOR: u16 = 4;
const SNAPLEN: u32 = 65_535;
const LINKTYPE_ETHERNET: u32 = 1;
const NANOS_PER_SEC: u64 = 1_000_000_000;
const NANOS_PER_MICRO: u64 = 1_000;

/// Writes a classic little-endian pcap (microsecond timestamps, Ethernet).
///
/// It does not buffer: wrap a file in a `BufWriter` for anything large.
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    out: W,
    frames: u64,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the 24-byte global header.
    pub fn new(mut out: W) -> io::Result<Self> {
        let mut hdr = [0u8; 24];
        hdr[0..4].copy_from_slice(&MAGIC_MICROS.to_le_bytes());
        hdr[4..6].copy_from_slice(&VERSION_MAJOR.to_le_bytes());
        hdr[6..8].copy_from_slice(&VERSION_MINOR.to_le_bytes());
        // thiszone and sigfigs stay 0, as every modern writer leaves them.
        hdr[16..20].copy_from_slice(&SNAPLEN.to_le_bytes());
        hdr[20..24].copy_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        out.write_all(&hdr)?;
        Ok(PcapWriter { out, frames: 0 })
    }

    /// Writes one record. Timestamps are truncated to microseconds; frames
    /// longer than the snaplen are cut to it (with the original length kept),
    /// as a capturing tool would.
    pub fn write_frame(&mut self, ts_ns: u64, frame: &[u8]) -> io::Result<()> {
        let secs = u32::try_from(ts_ns / NANOS_PER_SEC)
            .map_err(|_| invalid("timestamp beyond the pcap 32-bit seconds range"))?;
        let micros = u32::try_from(ts_ns % NANOS_PER_SEC / NANOS_PER_MICRO)
            .map_err(|_| invalid("microseconds out of range"))?;
        let orig_len =
            u32::try_from(frame.len()).map_err(|_| invalid("frame longer than 4 GiB"))?;
        let incl_len = orig_len.min(SNAPLEN);
        let mut hdr = [0u8; 16];
        hdr[0..4].copy_from_slice(&secs.to_le_bytes());
        hdr[4..8].copy_from_slice(&micros.to_le_bytes());
        hdr[8..12].copy_from_slice(&incl_len.to_le_bytes());
        hdr[12..16].copy_from_slice(&orig_len.to_le_bytes());
        self.out.write_all(&hdr)?;
        // incl_len <= frame.len(), so the slice is in bounds.
        self.out.write_all(&frame[..incl_len as usize])?;
        self.frames += 1;
        Ok(())
    }

    /// Records written so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Flushes and hands back the underlying writer.
    pub fn into_inner(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
    }

    #[test]
    fn global_header_is_classic_little_endian_ethernet() {
        let out = PcapWriter::new(Vec::new()).unwrap().into_inner().unwrap();
        assert_eq!(out.len(), 24);
        assert_eq!(&out[0..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        assert_eq!(u16::from_le_bytes([out[4], out[5]]), 2);
        assert_eq!(u16::from_le_bytes([out[6], out[7]]), 4);
        assert_eq!(u32_at(&out, 8), 0);
        assert_eq!(u32_at(&out, 12), 0);
        assert_eq!(u32_at(&out, 16), 65_535);
        assert_eq!(u32_at(&out, 20), 1);
    }

    #[test]
    fn record_header_splits_nanoseconds_into_seconds_and_micros() {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        w.write_frame(1_767_225_600_123_456_789, &[1, 2, 3])
            .unwrap();
        assert_eq!(w.frames(), 1);
        let out = w.into_inner().unwrap();
        let rec = &out[24..];
        assert_eq!(u32_at(rec, 0), 1_767_225_600);
        assert_eq!(u32_at(rec, 4), 123_456);
        assert_eq!(u32_at(rec, 8), 3);
        assert_eq!(u32_at(rec, 12), 3);
        assert_eq!(&rec[16..], &[1, 2, 3]);
    }

    #[test]
    fn oversized_frames_are_cut_to_snaplen() {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        w.write_frame(0, &vec![0u8; 70_000]).unwrap();
        let out = w.into_inner().unwrap();
        assert_eq!(u32_at(&out, 24 + 8), 65_535);
        assert_eq!(u32_at(&out, 24 + 12), 70_000);
        assert_eq!(out.len(), 24 + 16 + 65_535);
    }

    #[test]
    fn timestamps_past_2106_are_an_error_not_a_wrap() {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        let err = w.write_frame(u64::MAX, &[0]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
