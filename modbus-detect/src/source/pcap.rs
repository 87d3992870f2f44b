//! Memory-mapped pcap and pcapng files, walked frame by frame without copying.
//!
//! The file is mapped once and wrapped in [`Bytes`], so frames are handed out as
//! offsets ([`FrameRef`]) into that one buffer: the dispatcher can clone the
//! `Bytes` into every shard and nothing is copied or allocated per frame.
//!
//! `pcap-parser` parses the headers that carry real structure (the pcap file
//! header, pcapng section headers and interface descriptions with their
//! options). The per-frame records are read by hand, measured on 5 M frames of
//! Modbus traffic, memory-mapped and cached:
//! - classic pcap: 295 M frames/s by hand vs 291 M with `parse_pcap_frame`, a tie;
//!   reading the 16-byte header ourselves buys exact byte counts in the
//!   truncation error (header cut vs data cut).
//! - pcapng: 92 M frames/s by hand vs 37 M with `parse_block_le`, which also
//!   allocates an option `Vec` for every EPB that carries options.

use std::fmt::Write as _;
use std::fs::File;
use std::iter::FusedIterator;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use memmap2::Mmap;

use crate::files::Shown;
use pcap_parser::{
    parse_interfacedescriptionblock_be, parse_interfacedescriptionblock_le, parse_pcap_header,
    parse_sectionheaderblock, InterfaceDescriptionBlock, OptionCode, PcapHeader,
};

use crate::decode::LinkType;

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// pcapng block types (as numbers in the section's byte order).
const SHB_TYPE: u32 = 0x0A0D_0D0A;
const IDB_TYPE: u32 = 0x0000_0001;
const PB_TYPE: u32 = 0x0000_0002;
const SPB_TYPE: u32 = 0x0000_0003;
const EPB_TYPE: u32 = 0x0000_0006;
/// The section header's byte-order magic, as read in the section's byte order.
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;

/// Block type, total length ... trailing total length.
const BLOCK_MIN_LEN: usize = 12;
/// EPB and obsolete PB: interface, timestamp (2 words), captured and original length.
const PACKET_BLOCK_FIXED_LEN: usize = 20;
/// SPB: original length only.
const SIMPLE_PACKET_FIXED_LEN: usize = 4;
const PCAP_FILE_HEADER_LEN: usize = 24;

/// One frame inside the capture's bytes: `data[off .. off+len]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRef {
    /// Capture time, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// Offset of the first frame byte in [`CaptureFile::data`].
    pub off: usize,
    /// Captured length (never the original length).
    pub len: u32,
    pub link: LinkType,
    /// The capture kept the whole frame (its original length is no more
    /// than the captured one): an IP length past the end is then a lie,
    /// not a snaplen cut.
    pub whole: bool,
}

/// Why a capture file cannot be read (further). Every message is one line that
/// starts with the file's path.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The OS refused: open, stat or mmap.
    #[error("{}: {action}: {source}", Shown(path))]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: empty file", Shown(path))]
    Empty { path: PathBuf },
    /// Not a regular file: a directory, a device, a FIFO.
    #[error("{}: is {what}, not a capture file", Shown(path))]
    NotAFile { path: PathBuf, what: &'static str },
    /// The magic number is neither pcap nor pcapng; `start` is the first bytes in hex.
    #[error("{}: not a pcap or pcapng file (starts with {start})", Shown(path))]
    NotCapture { path: PathBuf, start: String },
    /// A header announces `need` bytes but only `left` remain.
    #[error(
        "{}: truncated at byte {at} ({what} {need} bytes, {left} left)",
        Shown(path)
    )]
    Truncated {
        path: PathBuf,
        at: usize,
        /// "record header says", "file header needs", ...
        what: &'static str,
        need: u64,
        left: usize,
    },
    /// A structure is inconsistent (lengths, unknown interface, bad option).
    #[error("{}: corrupt at byte {at}: {what}", Shown(path))]
    Corrupt {
        path: PathBuf,
        at: usize,
        what: String,
    },
}

/// An opened, memory-mapped capture file.
pub struct CaptureFile {
    path: PathBuf,
    data: Bytes,
    layout: Layout,
}

/// What `open` learnt from the file's first header.
#[derive(Debug, Clone, Copy)]
pub(super) enum Layout {
    Pcap(PcapLayout),
    PcapNg,
}

/// Everything a classic pcap record needs from the file header.
#[derive(Debug, Clone, Copy)]
pub(super) struct PcapLayout {
    big_endian: bool,
    /// 1000 for microsecond files, 1 for nanosecond files.
    frac_to_ns: u64,
    /// 16, or 24 for the "modified" (Kuznetsov) format.
    record_header_len: usize,
    link: LinkType,
}

impl CaptureFile {
    /// Map the file and check its magic and first header, so that a wrong file is
    /// reported before any work starts.
    pub fn open(path: &Path) -> Result<CaptureFile, SourceError> {
        let io_error = |action, source| SourceError::Io {
            path: path.to_path_buf(),
            action,
            source,
        };
        // Looked at before opening: opening a FIFO waits for a writer, and
        // a directory or a device would fail later with a misleading error.
        let meta = std::fs::metadata(path).map_err(|e| io_error("cannot open", e))?;
        if !meta.is_file() {
            return Err(SourceError::NotAFile {
                path: path.to_path_buf(),
                what: crate::files::kind(&meta),
            });
        }
        let file = File::open(path).map_err(|e| io_error("cannot open", e))?;
        let size = file
            .metadata()
            .map_err(|e| io_error("cannot stat", e))?
            .len();
        if size == 0 {
            return Err(SourceError::Empty {
                path: path.to_path_buf(),
            });
        }
        // SAFETY: the map is only read. Like every mmap reader we rely on nobody
        // truncating or rewriting the capture while it is being processed.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| io_error("cannot map", e))?;
        let data = Bytes::from_owner(mmap);
        let layout = detect_layout(path, &data)?;
        Ok(CaptureFile {
            path: path.to_path_buf(),
            data,
            layout,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The whole file; [`FrameRef`] offsets index into it.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// "pcap" or "pcapng".
    pub fn format(&self) -> &'static str {
        self.layout.name()
    }

    /// Iterate frames in file order. After an error item the iterator ends.
    pub fn frames(&self) -> Frames<'_> {
        Frames::new(&self.path, &self.data, self.layout)
    }
}

impl Layout {
    pub(super) fn name(self) -> &'static str {
        match self {
            Layout::Pcap(_) => "pcap",
            Layout::PcapNg => "pcapng",
        }
    }
}

impl Resume {
    /// The first record: after the file header of a classic pcap file.
    pub(super) fn start(layout: Layout) -> Resume {
        let pos = match layout {
            Layout::Pcap(_) => PCAP_FILE_HEADER_LEN,
            Layout::PcapNg => 0,
        };
        Resume {
            pos,
            section: Section::default(),
        }
    }
}

/// Recognise the format from the magic and validate the first header.
pub(super) fn detect_layout(path: &Path, data: &[u8]) -> Result<Layout, SourceError> {
    if data.len() < 4 {
        return Err(SourceError::NotCapture {
            path: path.to_path_buf(),
            start: hex_prefix(data),
        });
    }
    if data.starts_with(&SHB_TYPE.to_le_bytes()) {
        // The first section header is checked again by `Frames`; parsing it here
        // reports a broken file at open time.
        Frames::new(path, data, Layout::PcapNg).read_block()?;
        return Ok(Layout::PcapNg);
    }
    match parse_pcap_header(data) {
        Ok((_, header)) => Ok(Layout::Pcap(pcap_layout(&header))),
        Err(e) if e.is_incomplete() => Err(SourceError::Truncated {
            path: path.to_path_buf(),
            at: 0,
            what: "pcap file header needs",
            need: PCAP_FILE_HEADER_LEN as u64,
            left: data.len(),
        }),
        Err(_) => Err(SourceError::NotCapture {
            path: path.to_path_buf(),
            start: hex_prefix(data),
        }),
    }
}

fn pcap_layout(header: &PcapHeader) -> PcapLayout {
    PcapLayout {
        big_endian: header.is_bigendian(),
        frac_to_ns: if header.is_nanosecond_precision() {
            1
        } else {
            1000
        },
        record_header_len: if header.is_modified_format() { 24 } else { 16 },
        // The upper 16 bits carry FCS information, not the link type.
        link: LinkType::from_dlt(header.network.0 as u32 & 0xFFFF),
    }
}

/// "0x" and the first (up to) four bytes, for the not-a-capture message.
fn hex_prefix(data: &[u8]) -> String {
    data.iter().take(4).fold(String::from("0x"), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A `u32` at `at` in the given byte order, or `None` past the end.
fn read_u32(buf: &[u8], at: usize, big_endian: bool) -> Option<u32> {
    let bytes: [u8; 4] = buf.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(if big_endian {
        u32::from_be_bytes(bytes)
    } else {
        u32::from_le_bytes(bytes)
    })
}

/// Iterator over the frames of a [`CaptureFile`].
pub struct Frames<'a> {
    path: &'a Path,
    data: &'a [u8],
    /// Offset of the next record or block.
    pos: usize,
    layout: Layout,
    /// pcapng only: the current section's byte order and interfaces.
    section: Section,
    done: bool,
    /// Where `data` starts in the whole capture, for error offsets: a
    /// stream is parsed one buffer at a time.
    base: usize,
}

/// Where a [`Frames`] over one buffer of a stream stopped, to go on in
/// the next: the offset of the next record in that buffer and the
/// section state.
#[derive(Default)]
pub(super) struct Resume {
    pub pos: usize,
    section: Section,
}

/// The pcapng state that applies to the blocks after a section header.
#[derive(Default)]
struct Section {
    big_endian: bool,
    /// Indexed by interface id, in order of description.
    interfaces: Vec<Interface>,
}

#[derive(Debug, Clone, Copy)]
struct Interface {
    link: LinkType,
    clock: Clock,
    snaplen: u32,
}

impl Iterator for Frames<'_> {
    type Item = Result<FrameRef, SourceError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_record() {
            Ok(Some(frame)) => Some(Ok(frame)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

impl FusedIterator for Frames<'_> {}

impl<'a> Frames<'a> {
    fn new(path: &'a Path, data: &'a [u8], layout: Layout) -> Frames<'a> {
        Frames::resume(path, data, layout, Resume::start(layout), 0)
    }

    /// Go on in `data` (a stream's buffer, which starts at byte `base` of
    /// the capture) where an earlier buffer stopped.
    pub(super) fn resume(
        path: &'a Path,
        data: &'a [u8],
        layout: Layout,
        at: Resume,
        base: usize,
    ) -> Frames<'a> {
        Frames {
            path,
            data,
            pos: at.pos,
            layout,
            section: at.section,
            done: false,
            base,
        }
    }

    /// The next frame, `None` at the end of the buffer: unlike the
    /// iterator, a stream may go on after either.
    #[inline]
    pub(super) fn next_record(&mut self) -> Result<Option<FrameRef>, SourceError> {
        match self.layout {
            Layout::Pcap(layout) => self.next_pcap(layout),
            Layout::PcapNg => self.next_ng(),
        }
    }

    /// Where to go on in the next buffer.
    pub(super) fn suspend(self) -> Resume {
        Resume {
            pos: self.pos,
            section: self.section,
        }
    }

    fn truncated(&self, what: &'static str, need: u64, left: usize) -> SourceError {
        SourceError::Truncated {
            path: self.path.to_path_buf(),
            at: self.base + self.pos,
            what,
            need,
            left,
        }
    }

    fn corrupt(&self, what: String) -> SourceError {
        SourceError::Corrupt {
            path: self.path.to_path_buf(),
            at: self.base + self.pos,
            what,
        }
    }

    fn rest(&self) -> &'a [u8] {
        self.data.get(self.pos..).unwrap_or_default()
    }

    /// One classic pcap record: 16-byte header (ts_sec, ts_frac, caplen, origlen)
    /// then `caplen` bytes.
    #[inline]
    fn next_pcap(&mut self, layout: PcapLayout) -> Result<Option<FrameRef>, SourceError> {
        let rest = self.rest();
        if rest.is_empty() {
            return Ok(None);
        }
        let header_len = layout.record_header_len;
        let Some((header, body)) = rest.split_at_checked(header_len) else {
            return Err(self.truncated("record header needs", header_len as u64, rest.len()));
        };
        // Every record header starts with the four fields (16 bytes; the
        // modified format's is longer): read from one fixed-size array,
        // with no bounds to check per field.
        let Some(fields) = header.first_chunk::<16>() else {
            return Err(self.truncated("record header needs", 16, header.len()));
        };
        let mut words = [0u32; 4];
        for (w, b) in words.iter_mut().zip(fields.as_chunks::<4>().0) {
            *w = u32::from_le_bytes(*b);
        }
        if layout.big_endian {
            words = words.map(u32::swap_bytes);
        }
        let [ts_sec, ts_frac, caplen, origlen] = words;
        if caplen as usize > body.len() {
            return Err(self.truncated("record header says", caplen.into(), body.len()));
        }
        let frame = FrameRef {
            ts_ns: u64::from(ts_sec) * NANOS_PER_SEC + u64::from(ts_frac) * layout.frac_to_ns,
            off: self.pos + header_len,
            len: caplen,
            link: layout.link,
            whole: origlen <= caplen,
        };
        self.pos += header_len + caplen as usize;
        Ok(Some(frame))
    }

    /// Blocks until the next packet block; other block types only update state.
    fn next_ng(&mut self) -> Result<Option<FrameRef>, SourceError> {
        while !self.rest().is_empty() {
            if let Some(frame) = self.read_block()? {
                return Ok(Some(frame));
            }
        }
        Ok(None)
    }

    /// Read the block at `pos` and advance past it; a packet block gives a frame.
    fn read_block(&mut self) -> Result<Option<FrameRef>, SourceError> {
        let (block_type, block) = self.split_block()?;
        let body_off = self.pos + 8;
        let body = block
            .get(8..block.len().saturating_sub(4))
            .unwrap_or_default();
        let frame = match block_type {
            SHB_TYPE => self.start_section(block).map(|()| None),
            IDB_TYPE => self.add_interface(block).map(|()| None),
            EPB_TYPE => self
                .packet_block(body, body_off, PacketHeader::Enhanced)
                .map(Some),
            PB_TYPE => self
                .packet_block(body, body_off, PacketHeader::Obsolete)
                .map(Some),
            SPB_TYPE => self.simple_packet_block(body, body_off).map(Some),
            _ => Ok(None),
        }?;
        self.pos += block.len();
        Ok(frame)
    }

    /// Check the generic block framing at `pos`: type, total length (at least 12,
    /// a multiple of 4, present in the file) and the repeated trailing length.
    /// A section header sets the byte order first, since it decides how its own
    /// length reads.
    fn split_block(&mut self) -> Result<(u32, &'a [u8]), SourceError> {
        let rest = self.rest();
        if rest.len() < BLOCK_MIN_LEN {
            return Err(self.truncated("block header needs", BLOCK_MIN_LEN as u64, rest.len()));
        }
        if rest.starts_with(&SHB_TYPE.to_le_bytes()) {
            self.set_byte_order(rest)?;
        }
        let big_endian = self.section.big_endian;
        let word = |at| read_u32(rest, at, big_endian).unwrap_or_default();
        let (block_type, total) = (word(0), word(4));
        let len = total as usize;
        if len < BLOCK_MIN_LEN || !len.is_multiple_of(4) {
            return Err(self.corrupt(format!("invalid block length {total}")));
        }
        if len > rest.len() {
            return Err(self.truncated("block header says", total.into(), rest.len()));
        }
        let trailer = word(len - 4);
        if trailer != total {
            return Err(self.corrupt(format!(
                "block length {total} does not match trailing length {trailer}"
            )));
        }
        Ok((block_type, rest.get(..len).unwrap_or_default()))
    }

    /// The byte-order magic follows the block type and length.
    fn set_byte_order(&mut self, block: &[u8]) -> Result<(), SourceError> {
        let magic = read_u32(block, 8, false).unwrap_or_default();
        let big_endian = if magic == BYTE_ORDER_MAGIC {
            false
        } else if magic == BYTE_ORDER_MAGIC.swap_bytes() {
            true
        } else {
            return Err(self.corrupt(format!("unknown byte-order magic {magic:#010x}")));
        };
        self.section.big_endian = big_endian;
        Ok(())
    }

    /// A new section forgets the interfaces of the previous one.
    fn start_section(&mut self, block: &[u8]) -> Result<(), SourceError> {
        let header = match parse_sectionheaderblock(block) {
            Ok((_, header)) => header,
            Err(e) => return Err(self.corrupt(format!("invalid section header block: {e}"))),
        };
        if header.major_version != 1 {
            return Err(self.corrupt(format!(
                "unsupported pcapng version {}.{}",
                header.major_version, header.minor_version
            )));
        }
        self.section.interfaces.clear();
        Ok(())
    }

    fn add_interface(&mut self, block: &[u8]) -> Result<(), SourceError> {
        let big_endian = self.section.big_endian;
        let parsed = if big_endian {
            parse_interfacedescriptionblock_be(block)
        } else {
            parse_interfacedescriptionblock_le(block)
        };
        let idb = match parsed {
            Ok((_, idb)) => idb,
            Err(e) => return Err(self.corrupt(format!("invalid interface description: {e}"))),
        };
        let Some(clock) = Clock::new(idb.if_tsresol, ts_offset(&idb, big_endian)) else {
            return Err(self.corrupt(format!("invalid if_tsresol {:#04x}", idb.if_tsresol)));
        };
        let interface = Interface {
            link: LinkType::from_dlt(idb.linktype.0 as u32),
            clock,
            snaplen: idb.snaplen,
        };
        self.section.interfaces.push(interface);
        Ok(())
    }

    fn interface(&self, id: u32) -> Result<Interface, SourceError> {
        let count = self.section.interfaces.len();
        match self.section.interfaces.get(id as usize) {
            Some(interface) => Ok(*interface),
            None => Err(self.corrupt(format!(
                "packet on interface {id}, but the section describes {count} interface(s)"
            ))),
        }
    }

    /// EPB and obsolete PB: same fixed part except how the interface id is stored.
    fn packet_block(
        &mut self,
        body: &[u8],
        body_off: usize,
        kind: PacketHeader,
    ) -> Result<FrameRef, SourceError> {
        let big_endian = self.section.big_endian;
        let word = |at| read_u32(body, at, big_endian).unwrap_or_default();
        if body.len() < PACKET_BLOCK_FIXED_LEN {
            return Err(self.corrupt(format!("{} too short", kind.name())));
        }
        let id = match kind {
            PacketHeader::Enhanced => word(0),
            // u16 interface id, then u16 drop count.
            PacketHeader::Obsolete if big_endian => word(0) >> 16,
            PacketHeader::Obsolete => word(0) & 0xFFFF,
        };
        let interface = self.interface(id)?;
        let ticks = (u64::from(word(4)) << 32) | u64::from(word(8));
        let (caplen, origlen) = (word(12), word(16));
        let room = body.len() - PACKET_BLOCK_FIXED_LEN;
        if caplen as usize > room {
            return Err(self.corrupt(format!(
                "{} captured length {caplen} exceeds its {room} data bytes",
                kind.name()
            )));
        }
        Ok(FrameRef {
            ts_ns: interface.clock.to_ns(ticks),
            off: body_off + PACKET_BLOCK_FIXED_LEN,
            len: caplen,
            link: interface.link,
            whole: origlen <= caplen,
        })
    }

    /// SPB: no timestamp, interface 0; the captured length is the original length
    /// cut to the snaplen and to the data present (which includes padding).
    fn simple_packet_block(
        &mut self,
        body: &[u8],
        body_off: usize,
    ) -> Result<FrameRef, SourceError> {
        let big_endian = self.section.big_endian;
        let interface = self.interface(0)?;
        let origlen = read_u32(body, 0, big_endian).unwrap_or_default();
        let room = body.len().saturating_sub(SIMPLE_PACKET_FIXED_LEN);
        let mut caplen = origlen.min(u32::try_from(room).unwrap_or(u32::MAX));
        if interface.snaplen != 0 {
            caplen = caplen.min(interface.snaplen);
        }
        Ok(FrameRef {
            ts_ns: 0,
            off: body_off + SIMPLE_PACKET_FIXED_LEN,
            len: caplen,
            link: interface.link,
            whole: origlen <= caplen,
        })
    }
}

/// The two packet blocks with a 20-byte fixed part.
#[derive(Clone, Copy)]
enum PacketHeader {
    Enhanced,
    Obsolete,
}

impl PacketHeader {
    fn name(self) -> &'static str {
        match self {
            PacketHeader::Enhanced => "enhanced packet block",
            PacketHeader::Obsolete => "packet block",
        }
    }
}

/// `if_tsoffset` (seconds added to every timestamp) in the section's byte order.
/// pcap-parser's own `if_tsoffset` always reads little-endian.
fn ts_offset(idb: &InterfaceDescriptionBlock<'_>, big_endian: bool) -> i64 {
    idb.options
        .iter()
        .find(|opt| opt.code == OptionCode::IfTsoffset)
        .and_then(|opt| opt.value().get(..8)?.try_into().ok())
        .map_or(0, |bytes: [u8; 8]| {
            if big_endian {
                i64::from_be_bytes(bytes)
            } else {
                i64::from_le_bytes(bytes)
            }
        })
}

/// Converts an interface's timestamp ticks to nanoseconds since the epoch.
#[derive(Debug, Clone, Copy)]
struct Clock {
    scale: Scale,
    offset_s: i64,
}

/// Precomputed so that the common resolutions cost one multiply or divide.
#[derive(Debug, Clone, Copy)]
enum Scale {
    /// Units of 10^-k s with k <= 9 (and 2^-k with k <= 9): ns = ticks * factor.
    Mul(u64),
    /// Finer than nanoseconds by a power of ten: ns = ticks / divisor.
    Div(u64),
    /// Any other resolution (e.g. 2^-20 s), in units per second.
    Ratio(u64),
}

impl Clock {
    /// `if_tsresol`: bit 7 clear means 10^-v seconds, set means 2^-(v & 0x7f).
    /// (pcap-parser 0.17's `ts_resolution` rejects every power-of-two value.)
    fn new(tsresol: u8, offset_s: i64) -> Option<Clock> {
        let exponent = u32::from(tsresol & 0x7F);
        let units_per_sec = if tsresol & 0x80 == 0 {
            10u64.checked_pow(exponent)?
        } else {
            1u64.checked_shl(exponent)?
        };
        let scale = if NANOS_PER_SEC.is_multiple_of(units_per_sec) {
            Scale::Mul(NANOS_PER_SEC / units_per_sec)
        } else if units_per_sec.is_multiple_of(NANOS_PER_SEC) {
            Scale::Div(units_per_sec / NANOS_PER_SEC)
        } else {
            Scale::Ratio(units_per_sec)
        };
        Some(Clock { scale, offset_s })
    }

    #[inline]
    fn to_ns(self, ticks: u64) -> u64 {
        let ns = match self.scale {
            Scale::Mul(factor) => ticks.saturating_mul(factor),
            Scale::Div(divisor) => ticks / divisor,
            Scale::Ratio(units) => {
                let ns = u128::from(ticks) * u128::from(NANOS_PER_SEC) / u128::from(units);
                u64::try_from(ns).unwrap_or(u64::MAX)
            }
        };
        if self.offset_s == 0 {
            return ns;
        }
        let shifted = i128::from(ns) + i128::from(self.offset_s) * i128::from(NANOS_PER_SEC);
        u64::try_from(shifted.max(0)).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ETHERNET: u32 = 1;
    const RAW: u32 = 101;

    fn put16(buf: &mut Vec<u8>, v: u16, big_endian: bool) {
        buf.extend_from_slice(&if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        });
    }

    fn put32(buf: &mut Vec<u8>, v: u32, big_endian: bool) {
        buf.extend_from_slice(&if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        });
    }

    fn pad4(buf: &mut Vec<u8>) {
        while !buf.len().is_multiple_of(4) {
            buf.push(0);
        }
    }

    /// A classic pcap file: `magic` is written in the file's byte order.
    fn pcap_file(
        magic: u32,
        big_endian: bool,
        link: u32,
        records: &[(u32, u32, &[u8])],
    ) -> Vec<u8> {
        let mut buf = Vec::new();
        put32(&mut buf, magic, big_endian);
        put16(&mut buf, 2, big_endian);
        put16(&mut buf, 4, big_endian);
        put32(&mut buf, 0, big_endian);
        put32(&mut buf, 0, big_endian);
        put32(&mut buf, 65_535, big_endian);
        put32(&mut buf, link, big_endian);
        for (sec, frac, data) in records {
            put32(&mut buf, *sec, big_endian);
            put32(&mut buf, *frac, big_endian);
            put32(&mut buf, data.len() as u32, big_endian);
            put32(&mut buf, data.len() as u32 + 100, big_endian);
            buf.extend_from_slice(data);
        }
        buf
    }

    /// Builds pcapng blocks in one byte order (a new `shb` may switch it).
    struct Ng {
        buf: Vec<u8>,
        be: bool,
    }

    impl Ng {
        fn new(be: bool) -> Ng {
            let mut ng = Ng {
                buf: Vec::new(),
                be,
            };
            ng.shb(be);
            ng
        }

        fn block(&mut self, block_type: u32, body: &[u8]) -> &mut Ng {
            let mut body = body.to_vec();
            pad4(&mut body);
            let total = 12 + body.len() as u32;
            put32(&mut self.buf, block_type, self.be);
            put32(&mut self.buf, total, self.be);
            self.buf.extend_from_slice(&body);
            put32(&mut self.buf, total, self.be);
            self
        }

        fn shb(&mut self, be: bool) -> &mut Ng {
            self.be = be;
            let mut body = Vec::new();
            put32(&mut body, BYTE_ORDER_MAGIC, be);
            put16(&mut body, 1, be);
            put16(&mut body, 0, be);
            body.extend_from_slice(&[0xFF; 8]);
            self.block(SHB_TYPE, &body)
        }

        fn options(&self, body: &mut Vec<u8>, options: &[(u16, &[u8])]) {
            for (code, value) in options {
                put16(body, *code, self.be);
                put16(body, value.len() as u16, self.be);
                body.extend_from_slice(value);
                pad4(body);
            }
            if !options.is_empty() {
                body.extend_from_slice(&[0; 4]);
            }
        }

        fn idb(&mut self, link: u16, snaplen: u32, options: &[(u16, &[u8])]) -> &mut Ng {
            let mut body = Vec::new();
            put16(&mut body, link, self.be);
            put16(&mut body, 0, self.be);
            put32(&mut body, snaplen, self.be);
            self.options(&mut body, options);
            self.block(IDB_TYPE, &body)
        }

        fn epb(
            &mut self,
            if_id: u32,
            ticks: u64,
            data: &[u8],
            options: &[(u16, &[u8])],
        ) -> &mut Ng {
            let mut body = Vec::new();
            put32(&mut body, if_id, self.be);
            put32(&mut body, (ticks >> 32) as u32, self.be);
            put32(&mut body, ticks as u32, self.be);
            put32(&mut body, data.len() as u32, self.be);
            put32(&mut body, data.len() as u32, self.be);
            body.extend_from_slice(data);
            pad4(&mut body);
            self.options(&mut body, options);
            self.block(EPB_TYPE, &body)
        }

        fn pb(&mut self, if_id: u16, ticks: u64, data: &[u8]) -> &mut Ng {
            let mut body = Vec::new();
            put16(&mut body, if_id, self.be);
            put16(&mut body, 7, self.be); // drops
            put32(&mut body, (ticks >> 32) as u32, self.be);
            put32(&mut body, ticks as u32, self.be);
            put32(&mut body, data.len() as u32, self.be);
            put32(&mut body, data.len() as u32, self.be);
            body.extend_from_slice(data);
            self.block(PB_TYPE, &body)
        }

        fn spb(&mut self, origlen: u32, data: &[u8]) -> &mut Ng {
            let mut body = Vec::new();
            put32(&mut body, origlen, self.be);
            body.extend_from_slice(data);
            self.block(SPB_TYPE, &body)
        }

        fn bytes(&self) -> Vec<u8> {
            self.buf.clone()
        }
    }

    /// Write `bytes` to a temporary file and open it; the dir must outlive the map.
    fn open(name: &str, bytes: &[u8]) -> (tempfile::TempDir, Result<CaptureFile, SourceError>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let capture = CaptureFile::open(&path);
        (dir, capture)
    }

    /// All frames (and the error, if any) with their bytes.
    fn read_all(capture: &CaptureFile) -> (Vec<(FrameRef, Vec<u8>)>, Option<SourceError>) {
        let mut frames = Vec::new();
        let mut iter = capture.frames();
        for item in iter.by_ref() {
            match item {
                Ok(frame) => {
                    let bytes = capture.data()[frame.off..frame.off + frame.len as usize].to_vec();
                    frames.push((frame, bytes));
                }
                Err(e) => {
                    assert!(iter.next().is_none(), "iterator must end after an error");
                    return (frames, Some(e));
                }
            }
        }
        (frames, None)
    }

    fn message(err: &SourceError, dir: &tempfile::TempDir, name: &str) -> String {
        let text = err.to_string();
        assert!(!text.contains('\n'), "one line: {text}");
        let prefix = format!("{}: ", dir.path().join(name).display());
        text.strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("{text:?} does not start with the path"))
            .to_string()
    }

    const RECORDS: [(u32, u32, &[u8]); 3] = [
        (1_700_000_000, 1, b"first frame"),
        (1_700_000_001, 999_999, b"second"),
        (1_700_000_002, 0, b""),
    ];

    fn check_records(capture: &CaptureFile, frac_to_ns: u64, link: LinkType) {
        let (frames, err) = read_all(capture);
        assert!(err.is_none());
        assert_eq!(frames.len(), RECORDS.len());
        for ((frame, bytes), (sec, frac, data)) in frames.iter().zip(RECORDS) {
            assert_eq!(
                frame.ts_ns,
                u64::from(sec) * NANOS_PER_SEC + u64::from(frac) * frac_to_ns
            );
            assert_eq!(bytes, data);
            assert_eq!(frame.len as usize, data.len());
            assert_eq!(frame.link, link);
        }
        assert_eq!(frames[0].0.off, 24 + 16);
    }

    #[test]
    fn pcap_little_and_big_endian_microseconds() {
        for big_endian in [false, true] {
            let bytes = pcap_file(0xA1B2_C3D4, big_endian, ETHERNET, &RECORDS);
            let (_dir, capture) = open("us.pcap", &bytes);
            let capture = capture.unwrap();
            assert_eq!(capture.format(), "pcap");
            assert_eq!(capture.data().len(), bytes.len());
            check_records(&capture, 1000, LinkType::Ethernet);
        }
    }

    #[test]
    fn pcap_nanoseconds_both_byte_orders() {
        for big_endian in [false, true] {
            let bytes = pcap_file(0xA1B2_3C4D, big_endian, RAW, &RECORDS);
            let (_dir, capture) = open("ns.pcap", &bytes);
            check_records(&capture.unwrap(), 1, LinkType::RawIp);
        }
    }

    #[test]
    fn pcap_modified_format_has_24_byte_records() {
        let mut bytes = pcap_file(0xA1B2_CD34, false, ETHERNET, &[]);
        put32(&mut bytes, 10, false);
        put32(&mut bytes, 20, false);
        put32(&mut bytes, 3, false);
        put32(&mut bytes, 3, false);
        bytes.extend_from_slice(&[0; 8]); // ifindex, protocol, pkt_type, padding
        bytes.extend_from_slice(b"abc");
        let (_dir, capture) = open("modified.pcap", &bytes);
        let (frames, err) = read_all(&capture.unwrap());
        assert!(err.is_none());
        assert_eq!(frames.len(), 1);
        assert_eq!((frames[0].0.off, frames[0].1.as_slice()), (48, &b"abc"[..]));
        assert_eq!(frames[0].0.ts_ns, 10 * NANOS_PER_SEC + 20_000);
    }

    #[test]
    fn pcap_link_type_ignores_fcs_bits() {
        let bytes = pcap_file(0xA1B2_C3D4, false, 0x1400_0000 | ETHERNET, &RECORDS);
        let (_dir, capture) = open("fcs.pcap", &bytes);
        check_records(&capture.unwrap(), 1000, LinkType::Ethernet);
    }

    #[test]
    fn pcap_header_only_has_no_frames() {
        let bytes = pcap_file(0xA1B2_C3D4, false, ETHERNET, &[]);
        let (_dir, capture) = open("header.pcap", &bytes);
        let (frames, err) = read_all(&capture.unwrap());
        assert!(frames.is_empty() && err.is_none());
    }

    #[test]
    fn pcap_cut_mid_record_yields_earlier_frames_then_error() {
        let bytes = pcap_file(0xA1B2_C3D4, false, ETHERNET, &RECORDS);
        // Cut inside the second record's data: 6 bytes announced, 2 present.
        let second = 24 + 16 + RECORDS[0].2.len();
        let (dir, capture) = open("cut.pcap", &bytes[..second + 16 + 2]);
        let (frames, err) = read_all(&capture.unwrap());
        assert_eq!(frames.len(), 1);
        let text = message(&err.unwrap(), &dir, "cut.pcap");
        assert_eq!(
            text,
            format!("truncated at byte {second} (record header says 6 bytes, 2 left)")
        );
        // Cut inside the second record's header.
        let (dir, capture) = open("cut.pcap", &bytes[..second + 5]);
        let (frames, err) = read_all(&capture.unwrap());
        assert_eq!(frames.len(), 1);
        let text = message(&err.unwrap(), &dir, "cut.pcap");
        assert_eq!(
            text,
            format!("truncated at byte {second} (record header needs 16 bytes, 5 left)")
        );
    }

    #[test]
    fn pcap_short_file_header_is_truncated() {
        let bytes = pcap_file(0xA1B2_C3D4, true, ETHERNET, &[]);
        let (dir, capture) = open("short.pcap", &bytes[..10]);
        let text = message(&capture.err().unwrap(), &dir, "short.pcap");
        assert_eq!(
            text,
            "truncated at byte 0 (pcap file header needs 24 bytes, 10 left)"
        );
    }

    #[test]
    fn wrong_magic_is_rejected_with_its_bytes() {
        let (dir, capture) = open("text.pcap", b"\x12\x34\x56\x78 and more");
        let err = capture.err().unwrap();
        assert!(matches!(err, SourceError::NotCapture { .. }));
        let text = message(&err, &dir, "text.pcap");
        assert_eq!(text, "not a pcap or pcapng file (starts with 0x12345678)");
        let (dir, capture) = open("tiny.pcap", b"\x0a\x0d");
        let text = message(&capture.err().unwrap(), &dir, "tiny.pcap");
        assert_eq!(text, "not a pcap or pcapng file (starts with 0x0a0d)");
    }

    #[test]
    fn empty_file_is_an_error() {
        let (dir, capture) = open("empty.pcap", b"");
        let err = capture.err().unwrap();
        assert!(matches!(err, SourceError::Empty { .. }));
        assert_eq!(message(&err, &dir, "empty.pcap"), "empty file");
    }

    #[test]
    fn missing_file_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let err = CaptureFile::open(&dir.path().join("missing.pcap"))
            .err()
            .unwrap();
        let text = message(&err, &dir, "missing.pcap");
        assert!(text.starts_with("cannot open: "), "{text}");
    }

    #[test]
    fn pcapng_two_interfaces_with_own_link_and_resolution() {
        let mut ng = Ng::new(false);
        ng.idb(ETHERNET as u16, 0, &[(2, b"eth0")])
            .idb(RAW as u16, 0, &[(9, &[9])])
            .epb(0, 1_700_000_000_123_456, b"ethernet frame", &[])
            .epb(1, 1_700_000_000_123_456_789, b"raw", &[(2, &[0, 0, 0, 1])])
            .block(5, &[0; 8]) // interface statistics: skipped
            .block(0x0BAD, b"custom!") // custom block: skipped
            .epb(0, 1, b"e", &[]);
        let (_dir, capture) = open("two.pcapng", &ng.bytes());
        let capture = capture.unwrap();
        assert_eq!(capture.format(), "pcapng");
        let (frames, err) = read_all(&capture);
        assert!(err.is_none());
        let got: Vec<_> = frames
            .iter()
            .map(|(f, b)| (f.ts_ns, f.link, b.as_slice()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    1_700_000_000_123_456_000,
                    LinkType::Ethernet,
                    &b"ethernet frame"[..]
                ),
                (1_700_000_000_123_456_789, LinkType::RawIp, b"raw"),
                (1_000, LinkType::Ethernet, b"e"),
            ]
        );
    }

    #[test]
    fn pcapng_big_endian_section() {
        let mut ng = Ng::new(true);
        ng.idb(ETHERNET as u16, 0, &[(9, &[9]), (14, &2i64.to_be_bytes())])
            .epb(0, 5, b"be frame", &[])
            .pb(0, 7_000, b"pb");
        let (_dir, capture) = open("be.pcapng", &ng.bytes());
        let (frames, err) = read_all(&capture.unwrap());
        assert!(err.is_none());
        let got: Vec<_> = frames
            .iter()
            .map(|(f, b)| (f.ts_ns, b.as_slice()))
            .collect();
        assert_eq!(
            got,
            [
                (2 * NANOS_PER_SEC + 5, &b"be frame"[..]),
                (2 * NANOS_PER_SEC + 7_000, b"pb")
            ]
        );
    }

    #[test]
    fn pcapng_timestamp_resolutions_and_offset() {
        // (if_tsresol, ticks, expected ns)
        let cases: [(u8, u64, u64); 6] = [
            (6, 1_500_000, 1_500_000_000),
            (0x80 | 10, 1536, 1_500_000_000),       // 2^-10 s
            (0x80 | 20, 3 << 19, 1_500_000_000),    // 2^-20 s: not a multiple of 1 ns
            (12, 1_500_000_000_000, 1_500_000_000), // picoseconds
            (0, 3, 3_000_000_000),                  // seconds
            (0x80 | 63, u64::MAX, 1_999_999_999),   // 2^-63 s
        ];
        for (tsresol, ticks, expected) in cases {
            let mut ng = Ng::new(false);
            ng.idb(ETHERNET as u16, 0, &[(9, &[tsresol])])
                .epb(0, ticks, b"x", &[]);
            let (_dir, capture) = open("res.pcapng", &ng.bytes());
            let (frames, _) = read_all(&capture.unwrap());
            assert_eq!(frames[0].0.ts_ns, expected, "tsresol {tsresol:#x}");
        }
        let mut ng = Ng::new(false);
        ng.idb(ETHERNET as u16, 0, &[(14, &(-10i64).to_le_bytes())])
            .epb(0, 11_000_000, b"x", &[])
            .epb(0, 9_000_000, b"y", &[]);
        let (_dir, capture) = open("offset.pcapng", &ng.bytes());
        let (frames, _) = read_all(&capture.unwrap());
        let ts: Vec<_> = frames.iter().map(|(f, _)| f.ts_ns).collect();
        assert_eq!(ts, [NANOS_PER_SEC, 0]);
    }

    #[test]
    fn pcapng_invalid_resolution_is_corrupt() {
        let mut ng = Ng::new(false);
        ng.idb(ETHERNET as u16, 0, &[(9, &[20])]);
        let (dir, capture) = open("res.pcapng", &ng.bytes());
        let (_, err) = read_all(&capture.unwrap());
        let text = message(&err.unwrap(), &dir, "res.pcapng");
        assert_eq!(text, "corrupt at byte 28: invalid if_tsresol 0x14");
    }

    #[test]
    fn pcapng_simple_packet_blocks() {
        let mut ng = Ng::new(false);
        ng.idb(RAW as u16, 4, &[])
            .spb(3, b"abc")
            .spb(10, b"0123456789");
        let (_dir, capture) = open("spb.pcapng", &ng.bytes());
        let (frames, err) = read_all(&capture.unwrap());
        assert!(err.is_none());
        let got: Vec<_> = frames
            .iter()
            .map(|(f, b)| (f.ts_ns, f.link, b.as_slice()))
            .collect();
        // Padding is not data; the 4-byte snaplen cuts the second one.
        assert_eq!(
            got,
            [
                (0, LinkType::RawIp, &b"abc"[..]),
                (0, LinkType::RawIp, b"0123")
            ]
        );
    }

    #[test]
    fn pcapng_unknown_interface_is_corrupt() {
        let mut ng = Ng::new(false);
        ng.idb(ETHERNET as u16, 0, &[])
            .epb(0, 1, b"ok", &[])
            .epb(3, 1, b"bad", &[]);
        let (dir, capture) = open("if.pcapng", &ng.bytes());
        let (frames, err) = read_all(&capture.unwrap());
        assert_eq!(frames.len(), 1);
        let text = message(&err.unwrap(), &dir, "if.pcapng");
        assert_eq!(
            text,
            "corrupt at byte 84: packet on interface 3, but the section describes 1 interface(s)"
        );
    }

    #[test]
    fn pcapng_simple_packet_without_interface_is_corrupt() {
        let mut ng = Ng::new(false);
        ng.spb(3, b"abc");
        let (_dir, capture) = open("spb.pcapng", &ng.bytes());
        let (_, err) = read_all(&capture.unwrap());
        assert!(matches!(err, Some(SourceError::Corrupt { at: 28, .. })));
    }

    #[test]
    fn pcapng_new_section_resets_interfaces_and_byte_order() {
        let mut ng = Ng::new(false);
        ng.idb(ETHERNET as u16, 0, &[])
            .idb(RAW as u16, 0, &[])
            .epb(1, 1, b"one", &[])
            .shb(true)
            .idb(RAW as u16, 0, &[(9, &[9])])
            .epb(0, 2, b"two", &[])
            .epb(1, 3, b"three", &[]);
        let (_dir, capture) = open("sections.pcapng", &ng.bytes());
        let (frames, err) = read_all(&capture.unwrap());
        let got: Vec<_> = frames
            .iter()
            .map(|(f, b)| (f.ts_ns, b.as_slice()))
            .collect();
        assert_eq!(got, [(1_000, &b"one"[..]), (2, b"two")]);
        assert!(matches!(err, Some(SourceError::Corrupt { .. })));
    }

    #[test]
    fn pcapng_cut_block_yields_earlier_frames_then_truncated() {
        let mut ng = Ng::new(false);
        ng.idb(ETHERNET as u16, 0, &[]).epb(0, 1, b"complete", &[]);
        let cut_at = ng.buf.len();
        ng.epb(0, 2, b"cut short", &[]);
        let bytes = ng.bytes();
        let (dir, capture) = open("cut.pcapng", &bytes[..bytes.len() - 6]);
        let (frames, err) = read_all(&capture.unwrap());
        assert_eq!(frames.len(), 1);
        let text = message(&err.unwrap(), &dir, "cut.pcapng");
        assert_eq!(
            text,
            format!("truncated at byte {cut_at} (block header says 44 bytes, 38 left)")
        );
    }

    #[test]
    fn pcapng_inconsistent_block_lengths_are_corrupt() {
        let mut ng = Ng::new(false);
        ng.idb(ETHERNET as u16, 0, &[]).epb(0, 1, b"abcd", &[]);
        let epb_at = 28 + 20;
        let mut mismatch = ng.bytes();
        let last = mismatch.len() - 4;
        mismatch[last] ^= 4;
        let mut odd = ng.bytes();
        odd[epb_at + 4] = 37;
        let mut epb_caplen = ng.bytes();
        epb_caplen[epb_at + 20] = 9;
        for (name, bytes, what) in [
            (
                "mismatch",
                mismatch,
                "block length 36 does not match trailing length 32",
            ),
            ("odd", odd, "invalid block length 37"),
            (
                "caplen",
                epb_caplen,
                "enhanced packet block captured length 9 exceeds its 4 data bytes",
            ),
        ] {
            let (dir, capture) = open(name, &bytes);
            let (frames, err) = read_all(&capture.unwrap());
            assert!(frames.is_empty());
            assert_eq!(
                message(&err.unwrap(), &dir, name),
                format!("corrupt at byte {epb_at}: {what}")
            );
        }
    }

    #[test]
    fn pcapng_bad_first_section_fails_at_open() {
        let mut bad_bom = Ng::new(false).bytes();
        bad_bom[8] = 0x11;
        let (dir, capture) = open("bom.pcapng", &bad_bom);
        let text = message(&capture.err().unwrap(), &dir, "bom.pcapng");
        assert_eq!(
            text,
            "corrupt at byte 0: unknown byte-order magic 0x1a2b3c11"
        );
        let mut version = Ng::new(false).bytes();
        version[12] = 2;
        let (dir, capture) = open("version.pcapng", &version);
        let text = message(&capture.err().unwrap(), &dir, "version.pcapng");
        assert_eq!(text, "corrupt at byte 0: unsupported pcapng version 2.0");
        let (_dir, capture) = open("short.pcapng", &Ng::new(false).bytes()[..20]);
        assert!(matches!(
            capture.err(),
            Some(SourceError::Truncated { at: 0, .. })
        ));
    }

    /// Tiny xorshift: reproducible, no extra crate.
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    /// Every prefix and random corruptions of valid files: no panic, frames stay
    /// inside the data, at most one error and it is last.
    #[test]
    fn cut_and_mangled_files_never_panic() {
        let mut ng = Ng::new(false);
        ng.idb(
            ETHERNET as u16,
            0,
            &[(9, &[9]), (14, &[1, 0, 0, 0, 0, 0, 0, 0])],
        )
        .epb(0, 1, b"abcdef", &[(1, b"comment")])
        .spb(4, b"spb!")
        .pb(0, 2, b"pb")
        .shb(true)
        .idb(RAW as u16, 0, &[(9, &[0x80 | 20])])
        .epb(0, 3, b"xyz", &[]);
        let files = [
            ng.bytes(),
            pcap_file(0xA1B2_C3D4, true, ETHERNET, &RECORDS),
            pcap_file(0xA1B2_CD34, false, ETHERNET, &RECORDS),
        ];
        let path = Path::new("fuzz");
        let check = |bytes: &[u8]| {
            let Ok(layout) = detect_layout(path, bytes) else {
                return;
            };
            let mut frames = Frames::new(path, bytes, layout);
            while let Some(item) = frames.next() {
                match item {
                    Ok(frame) => assert!(frame.off + frame.len as usize <= bytes.len()),
                    Err(_) => assert!(frames.next().is_none()),
                }
            }
        };
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        for file in &files {
            for cut in 0..=file.len() {
                check(&file[..cut]);
            }
            for _ in 0..20_000 {
                let mut mangled = file.clone();
                for _ in 0..1 + xorshift(&mut state) % 4 {
                    let r = xorshift(&mut state);
                    let at = (r % mangled.len() as u64) as usize;
                    mangled[at] = (r >> 32) as u8;
                }
                check(&mangled);
            }
        }
    }
}
