//! Differential test against Wireshark: every Modbus/TCP ADU our decoder finds in a
//! fixture capture is compared with tshark 4.0.17's decoding of the same capture
//! (`NAME.tshark.tsv` next to each capture), so that a decoder regression, or a
//! field mapped differently from what analysts see in Wireshark, fails the build.
//!
//! Two TSV formats exist and both are read by column name:
//! - `real/`: one row per frame; the values of the frame's ADUs are joined by `;`
//!   inside each column, and an ADU without a field leaves no gap, so optional
//!   fields can only be compared as the ordered list of values the frame carries.
//! - `lab/`: one row per ADU (`pdu_index`), so every field is compared ADU by ADU.
//!
//! Compared per ADU (frames matched by number, ADUs by order within the frame, as
//! tshark also reports a reassembled ADU on the frame that completed it): the
//! number of ADUs, endpoints, transaction id, protocol id, length, unit id,
//! function code, exception code, start address and quantity.
//!
//! Where tshark is wrong, deliberately differs from us, or shows a bug of ours not
//! yet fixed, the difference is listed in [`KNOWN_DIFFERENCES`] with its reason,
//! and the test asserts that exactly those differences occur: a new difference
//! fails, and so does one that went away.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use modbus_detect::config::DetectConfig;
use modbus_detect::inspect::decode_capture;
use modbus_detect::modbus::record::AduRecord;
use modbus_tests::fixture;

/// Who is at fault for a documented difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// tshark 4.0.17 decodes the bytes wrongly or misses data.
    TsharkWrong,
    /// Both readings are defensible; we chose differently on purpose.
    Deliberate,
    /// A bug on our side, reported and not yet fixed. The entry makes the fix
    /// visible: once fixed, the difference goes away and this test fails until
    /// the entry is removed.
    OurBug,
}

/// A difference between tshark and us that is understood, with the values on
/// both sides exactly as the mismatch messages render them, so that any change
/// on either side is noticed.
struct KnownDifference {
    capture: &'static str,
    frame: u64,
    field: &'static str,
    ours: &'static str,
    tshark: &'static str,
    kind: Kind,
    reason: &'static str,
}

/// Shorthand for the table below.
const fn known(
    capture: &'static str,
    frame: u64,
    field: &'static str,
    ours: &'static str,
    tshark: &'static str,
    kind: Kind,
    reason: &'static str,
) -> KnownDifference {
    KnownDifference {
        capture,
        frame,
        field,
        ours,
        tshark,
        kind,
        reason,
    }
}

const ITI: &str = "real/iti_mb2.pcap";
const FUZZ: &str = "real/zeek_fuzz-72.pcap";

/// `adus` values: the number of ADUs of a frame and their function codes.
const NONE: &str = "0 ADUs, function codes []";

/// Segments that arrive after a hole in the capture, delivered by us when the hole
/// is filled or given up (the peer's ACK passes it), by tshark at once.
/// Bytes that land in a hole the stream gave up earlier.
const GAP_FILL: &str =
    "This frame's bytes land in a hole given up earlier (its receiver may still \
    take them: they are the next bytes it waits for), so they are decoded on their own; tshark \
    takes them for a retransmission.";
const LATE: &str = "ADU behind a capture hole: tshark dissects the segment at once, we \
    buffer it (TCP order) and deliver it when the hole is given up on the frame whose \
    ACK passes it; same ADU, other frame.";

/// Every accepted difference, one entry per (capture, frame, field).
const KNOWN_DIFFERENCES: &[KnownDifference] = &[
    known(
        ITI,
        1131,
        "adus",
        "4 ADUs, function codes [4, 4, 4, 4]",
        NONE,
        Kind::TsharkWrong,
        "Segment seq 139..199 overlaps frame 1014 (139..151) and carries 48 new bytes: \
         requests 22506-22509. tshark marks it a retransmission and never dissects it (nor \
         its later copies 1537, 2326, 2992), so these 4 requests are missing from its output.",
    ),
    known(
        ITI,
        3008,
        "adus",
        NONE,
        "4 ADUs, function codes [4, 4, 4, 4]",
        Kind::Deliberate,
        "Server segment 384..670 follows a hole (371..384, response 22505, not captured; \
         frame 2878 'previous segment not captured'). tshark dissects responses \
         22506-22509 here; we hold the segment until the hole is filled by frame 3674.",
    ),
    known(
        ITI,
        3674,
        "adus",
        "5 ADUs, function codes [4, 4, 4, 4, 4]",
        NONE,
        Kind::Deliberate,
        "Retransmission 371..670 fills the hole before frame 3008: we deliver responses \
         22505-22509 here (TCP order, as the client received them); tshark treats the \
         frame as a retransmission and never shows response 22505 at all.",
    ),
    known(
        ITI,
        13176,
        "adus",
        "2 ADUs, function codes [4, 2]",
        NONE,
        Kind::TsharkWrong,
        "Segment 5232..5501 repeats frame 13142 (5232..5471) and adds 30 new bytes: \
         responses 9824 and 9825. tshark marks it a retransmission and never dissects them.",
    ),
    known(
        FUZZ,
        5,
        "adus",
        NONE,
        "1 ADUs, function codes [32]",
        Kind::Deliberate,
        "Fuzzed frame 1 (server side) has SYN+FIN set: a SYN's data is not stream data and a \
         SYN does not close, so the server's direction starts at frame 1's sequence number; \
         this frame's data lies ahead of a hole and is delivered with frame 6, whose ACK gives \
         the hole up. tshark ignores TCP state and decodes exception response 0xA0 here.",
    ),
    known(
        FUZZ,
        11,
        "adus",
        NONE,
        "1 ADUs, function codes [37]",
        Kind::Deliberate,
        "Fuzzed frame 11 carries PSH without ACK: past the handshake a receiver drops a \
         segment without ACK (RFC 9293), so its bytes are no stream data; tshark decodes them.",
    ),
    known(
        FUZZ,
        16,
        "adus",
        NONE,
        "1 ADUs, function codes [43]",
        Kind::Deliberate,
        LATE,
    ),
    known(
        FUZZ,
        17,
        "adus",
        NONE,
        "1 ADUs, function codes [46]",
        Kind::Deliberate,
        LATE,
    ),
    known(
        FUZZ,
        18,
        "adus",
        NONE,
        "1 ADUs, function codes [47]",
        Kind::Deliberate,
        LATE,
    ),
    known(
        FUZZ,
        20,
        "adus",
        NONE,
        "1 ADUs, function codes [50]",
        Kind::Deliberate,
        "Fuzzed frame 20 claims an IP length of 35124 bytes in a 66-byte frame: a receiver \
         drops it (Linux `ip_rcv_core`), so its request is no stream data; tshark decodes it.",
    ),
    known(
        FUZZ,
        2,
        "adus",
        "1 ADUs, function codes [28]",
        NONE,
        Kind::Deliberate,
        "Fuzzed frame 1 (the server's SYN+FIN) claims an IP length of 58 bytes in a 60-byte \
         Ethernet frame (46 bytes of IP): a receiver drops it (Linux `ip_rcv_core`), so the \
         sensor does too (`ip_length_exceeds_frame`) and picks this direction up mid-stream \
         here; tshark takes frame 1 into its sequence analysis and does not decode this frame.",
    ),
    known(
        FUZZ,
        19,
        "adus",
        "1 ADUs, function codes [47]",
        NONE,
        Kind::Deliberate,
        GAP_FILL,
    ),
    known(
        FUZZ,
        21,
        "adus",
        "2 ADUs, function codes [43, 51]",
        NONE,
        Kind::Deliberate,
        "Frame 16's request, delivered when this server frame's ACK gives up the hole before \
         it, and this frame's own bytes, which land in a hole given up earlier (see frame 19).",
    ),
    known(
        FUZZ,
        23,
        "adus",
        "1 ADUs, function codes [53]",
        NONE,
        Kind::Deliberate,
        GAP_FILL,
    ),
    known(
        FUZZ,
        22,
        "adus",
        "3 ADUs, function codes [46, 47, 52]",
        "1 ADUs, function codes [52]",
        Kind::Deliberate,
        "Frames 17 and 18's requests, delivered in TCP order before this frame's own ADU when \
         this frame's ACK gives up the holes before them. Frame 20 claims an IP length of \
         35124 bytes in a 66-byte frame: a receiver drops it, and so does the sensor.",
    ),
    known(
        FUZZ,
        24,
        "adus",
        NONE,
        "1 ADUs, function codes [54]",
        Kind::Deliberate,
        LATE,
    ),
    known(
        FUZZ,
        25,
        "adus",
        "1 ADUs, function codes [54]",
        NONE,
        Kind::Deliberate,
        "Frame 24's request, delivered when this server frame's ACK gives up the hole before it.",
    ),
    known(
        FUZZ,
        28,
        "adus",
        NONE,
        "1 ADUs, function codes [71]",
        Kind::Deliberate,
        LATE,
    ),
    known(
        FUZZ,
        29,
        "adus",
        NONE,
        "1 ADUs, function codes [63]",
        Kind::Deliberate,
        LATE,
    ),
    known(
        FUZZ,
        31,
        "adus",
        NONE,
        "1 ADUs, function codes [65]",
        Kind::Deliberate,
        LATE,
    ),
    known(
        FUZZ,
        33,
        "adus",
        "3 ADUs, function codes [63, 65, 71]",
        "1 ADUs, function codes [71]",
        Kind::Deliberate,
        "Frames 29 and 31's requests, delivered in TCP order before this frame's own ADU \
         when this frame's ACK gives up the holes before them.",
    ),
    known(
        FUZZ,
        32,
        "adus",
        "1 ADUs, function codes [71]",
        NONE,
        Kind::Deliberate,
        "Frame 28's request (tid 37), delivered when this server frame's ACK gives up the \
         hole before it.",
    ),
];

/// At most this many mismatches are printed per capture.
const PRINT_LIMIT: usize = 20;

/// The numeric fields compared, named as tshark names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Field {
    TransId,
    ProtId,
    Len,
    UnitId,
    FuncCode,
    ExceptionCode,
    ReferenceNum,
    WordCnt,
    BitCnt,
}

impl Field {
    const ALL: [Field; 9] = [
        Field::TransId,
        Field::ProtId,
        Field::Len,
        Field::UnitId,
        Field::FuncCode,
        Field::ExceptionCode,
        Field::ReferenceNum,
        Field::WordCnt,
        Field::BitCnt,
    ];

    /// The tshark column of the field.
    fn column(self) -> &'static str {
        match self {
            Field::TransId => "mbtcp.trans_id",
            Field::ProtId => "mbtcp.prot_id",
            Field::Len => "mbtcp.len",
            Field::UnitId => "mbtcp.unit_id",
            Field::FuncCode => "modbus.func_code",
            Field::ExceptionCode => "modbus.exception_code",
            Field::ReferenceNum => "modbus.reference_num",
            Field::WordCnt => "modbus.word_cnt",
            Field::BitCnt => "modbus.bit_cnt",
        }
    }

    /// Our value of the field for one ADU, mapped to what tshark reports:
    /// `func_code` without the exception bit (tshark masks it and reports the
    /// exception code separately), and the quantity as `word_cnt` for register
    /// function codes and `bit_cnt` for coil and discrete input function codes
    /// (1, 2, 15), as tshark does.
    fn ours(self, a: &AduRecord) -> Option<u32> {
        let fc = a.function_code & 0x7f;
        match self {
            Field::TransId => Some(a.tid.into()),
            Field::ProtId => Some(a.protocol_id.into()),
            Field::Len => Some(a.length.into()),
            Field::UnitId => Some(a.unit.into()),
            Field::FuncCode => Some(fc.into()),
            Field::ExceptionCode => a.exception_code.map(u32::from),
            Field::ReferenceNum => a.reference.map(u32::from),
            Field::WordCnt => a.quantity.filter(|_| !is_bit_fc(fc)).map(u32::from),
            Field::BitCnt => a.quantity.filter(|_| is_bit_fc(fc)).map(u32::from),
        }
    }
}

/// Function codes whose quantity tshark reports as `modbus.bit_cnt`.
fn is_bit_fc(fc: u8) -> bool {
    matches!(fc, 1 | 2 | 15)
}

/// One field of one frame as tshark reports it.
#[derive(Debug)]
enum Column {
    /// One entry per ADU of the frame (lab format).
    PerAdu(Vec<Option<u32>>),
    /// The values of the ADUs that have the field, in ADU order (real format).
    Packed(Vec<u32>),
}

/// The Modbus/TCP ADUs tshark found in one frame.
#[derive(Debug)]
struct TsharkFrame {
    /// Source and destination as `addr:port > addr:port`.
    endpoints: String,
    adus: usize,
    fields: BTreeMap<Field, Column>,
}

/// A TSV file: the header's column positions and the data rows.
struct Tsv {
    columns: BTreeMap<String, usize>,
    rows: Vec<Vec<String>>,
}

impl Tsv {
    fn read(path: &Path) -> Tsv {
        let text =
            std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut lines = text.lines();
        let header = lines.next().expect("a header row");
        let columns = header
            .split('\t')
            .enumerate()
            .map(|(i, name)| (name.to_string(), i))
            .collect();
        let rows = lines
            .filter(|l| !l.is_empty())
            .map(|l| l.split('\t').map(str::to_string).collect())
            .collect();
        Tsv { columns, rows }
    }

    /// The cell of `column` in `row`; a missing column is a broken fixture.
    fn cell<'a>(&self, row: &'a [String], column: &str) -> &'a str {
        let i = *self
            .columns
            .get(column)
            .unwrap_or_else(|| panic!("no column {column}"));
        row.get(i).map(String::as_str).unwrap_or("")
    }

    /// The first non-empty cell of the columns (IPv4 or IPv6 address).
    fn first_cell<'a>(&self, row: &'a [String], columns: &[&str]) -> &'a str {
        columns
            .iter()
            .filter(|c| self.columns.contains_key(**c))
            .map(|c| self.cell(row, c))
            .find(|v| !v.is_empty())
            .unwrap_or("")
    }

    fn endpoints(&self, row: &[String]) -> String {
        let src = self.first_cell(row, &["ip.src", "ipv6.src"]);
        let dst = self.first_cell(row, &["ip.dst", "ipv6.dst"]);
        let sport = self.cell(row, "tcp.srcport");
        let dport = self.cell(row, "tcp.dstport");
        endpoints(src, sport, dst, dport)
    }

    fn frame_number(&self, row: &[String]) -> u64 {
        let v = self.cell(row, "frame.number");
        v.parse()
            .unwrap_or_else(|_| panic!("bad frame number {v:?}"))
    }
}

fn endpoints(
    src: impl fmt::Display,
    sport: impl fmt::Display,
    dst: impl fmt::Display,
    dport: impl fmt::Display,
) -> String {
    format!("{src}:{sport} > {dst}:{dport}")
}

/// A tshark number; tshark prints every compared field in decimal.
fn number(v: &str) -> u32 {
    v.parse()
        .unwrap_or_else(|_| panic!("not a decimal number: {v:?}"))
}

/// A cell of the lab format: empty, or one value (none of the compared fields
/// is multi-valued within one ADU).
fn optional_number(v: &str) -> Option<u32> {
    (!v.is_empty()).then(|| number(v))
}

/// tshark's frames, by frame number, from either TSV format.
fn read_tshark(path: &Path) -> BTreeMap<u64, TsharkFrame> {
    let tsv = Tsv::read(path);
    if tsv.columns.contains_key("pdu_index") {
        per_adu_frames(&tsv)
    } else {
        per_frame_frames(&tsv)
    }
}

/// Lab format: consecutive rows of one frame are its ADUs in order (`pdu_index`
/// 0, 1, ...).
fn per_adu_frames(tsv: &Tsv) -> BTreeMap<u64, TsharkFrame> {
    let mut frames: BTreeMap<u64, TsharkFrame> = BTreeMap::new();
    for row in &tsv.rows {
        let frame = tsv.frame_number(row);
        let f = frames.entry(frame).or_insert_with(|| TsharkFrame {
            endpoints: tsv.endpoints(row),
            adus: 0,
            fields: Field::ALL
                .iter()
                .map(|&k| (k, Column::PerAdu(Vec::new())))
                .collect(),
        });
        let index: usize = number(tsv.cell(row, "pdu_index")) as usize;
        assert_eq!(index, f.adus, "frame {frame}: pdu_index out of order");
        f.adus += 1;
        for (k, col) in f.fields.iter_mut() {
            if let Column::PerAdu(v) = col {
                v.push(optional_number(tsv.cell(row, k.column())));
            }
        }
    }
    frames
}

/// Real format: one row per frame, values of several ADUs joined by `;`. The
/// transaction id is present in every ADU, so it gives the number of ADUs.
fn per_frame_frames(tsv: &Tsv) -> BTreeMap<u64, TsharkFrame> {
    let split =
        |v: &str| -> Vec<u32> { v.split(';').filter(|s| !s.is_empty()).map(number).collect() };
    let mut frames = BTreeMap::new();
    for row in &tsv.rows {
        let frame = tsv.frame_number(row);
        let adus = split(tsv.cell(row, Field::TransId.column())).len();
        let fields = Field::ALL
            .iter()
            .map(|&k| (k, Column::Packed(split(tsv.cell(row, k.column())))))
            .collect();
        let f = TsharkFrame {
            endpoints: tsv.endpoints(row),
            adus,
            fields,
        };
        assert!(frames.insert(frame, f).is_none(), "frame {frame} twice");
    }
    frames
}

/// One difference between tshark and us.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Mismatch {
    frame: u64,
    field: String,
    ours: String,
    tshark: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "frame {} {}: ours {} tshark {}",
            self.frame, self.field, self.ours, self.tshark
        )
    }
}

fn list<T: fmt::Debug>(v: &[T]) -> String {
    format!("{v:?}")
}

fn option(v: Option<u32>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// The number of ADUs of a frame and their function codes, for a frame where
/// tshark and we disagree on the ADUs (no field by field comparison then).
fn summary(adus: usize, fc: Option<&Column>) -> String {
    let codes: Vec<u32> = match fc {
        Some(Column::PerAdu(v)) => v.iter().flatten().copied().collect(),
        Some(Column::Packed(v)) => v.clone(),
        None => Vec::new(),
    };
    format!("{adus} ADUs, function codes {codes:?}")
}

/// Compares one frame's ADUs, matched by their order within the frame; returns
/// the mismatches. When the two sides disagree on the number of ADUs, that one
/// mismatch is reported, since pairing the ADUs up would be guesswork.
fn compare_frame(frame: u64, ours: &[&AduRecord], theirs: &TsharkFrame) -> Vec<Mismatch> {
    let mut out = Vec::new();
    let mut push = |field: String, ours: String, tshark: String| {
        if ours != tshark {
            out.push(Mismatch {
                frame,
                field,
                ours,
                tshark,
            });
        }
    };
    if ours.len() != theirs.adus {
        let fcs: Vec<Option<u32>> = ours.iter().map(|a| Field::FuncCode.ours(a)).collect();
        let o = summary(ours.len(), Some(&Column::PerAdu(fcs)));
        let t = summary(theirs.adus, theirs.fields.get(&Field::FuncCode));
        push("adus".into(), o, t);
        return out;
    }
    for (i, a) in ours.iter().enumerate() {
        let e = endpoints(a.src, a.src_port, a.dst, a.dst_port);
        push(format!("adu {i} endpoints"), e, theirs.endpoints.clone());
    }
    for (field, col) in &theirs.fields {
        for (name, o, t) in compare_field(*field, ours, col) {
            push(name, o, t);
        }
    }
    out
}

/// One field over a frame's ADUs, as (what, ours, tshark) to compare: ADU by
/// ADU where tshark's output allows it, else as the frame's list of values.
fn compare_field(field: Field, ours: &[&AduRecord], col: &Column) -> Vec<(String, String, String)> {
    let values: Vec<Option<u32>> = ours.iter().map(|a| field.ours(a)).collect();
    match col {
        Column::PerAdu(t) => (0..values.len().max(t.len()))
            .map(|i| {
                let o = values.get(i).copied().flatten();
                let t = t.get(i).copied().flatten();
                (format!("adu {i} {}", field.column()), option(o), option(t))
            })
            .collect(),
        Column::Packed(t) => {
            let o: Vec<u32> = values.into_iter().flatten().collect();
            vec![(field.column().to_string(), list(&o), list(t))]
        }
    }
}

/// What comparing one capture gave.
struct Outcome {
    /// Our ADUs in frames where tshark agrees on every field.
    matched: usize,
    ours: usize,
    tshark: usize,
    mismatches: Vec<Mismatch>,
}

/// Our ADUs of a capture, in decoding order; a capture that does not read to
/// its end fails, so that no frame is skipped silently.
fn decode(capture: &Path) -> Vec<AduRecord> {
    // zeek_modbusSmall's addresses were anonymised without fixing the TCP
    // checksums (tshark: every one wrong): replayed as users replay such
    // a capture, with --checksums ignore.
    let rewritten = capture.ends_with("zeek_modbusSmall.pcap");
    let cfg = Arc::new(DetectConfig {
        verify_checksums: !rewritten,
        ..DetectConfig::default()
    });
    let inspection =
        decode_capture(capture, cfg).unwrap_or_else(|e| panic!("{}: {e}", capture.display()));
    assert!(
        inspection.error.is_none(),
        "{}: the capture ended in an error: {:?}",
        capture.display(),
        inspection.error
    );
    inspection.adus
}

/// Compares a whole capture, frame by frame over the frames either side has.
fn compare_capture(capture: &Path, tsv: &Path) -> Outcome {
    let adus = decode(capture);
    let mut ours: BTreeMap<u64, Vec<&AduRecord>> = BTreeMap::new();
    for a in &adus {
        ours.entry(a.frame).or_default().push(a);
    }
    let theirs = read_tshark(tsv);
    let none = TsharkFrame {
        endpoints: "-".into(),
        adus: 0,
        fields: BTreeMap::new(),
    };
    let mut frames: Vec<u64> = ours.keys().chain(theirs.keys()).copied().collect();
    frames.sort_unstable();
    frames.dedup();
    let mut out = Outcome {
        matched: 0,
        ours: adus.len(),
        tshark: theirs.values().map(|f| f.adus).sum(),
        mismatches: Vec::new(),
    };
    for frame in frames {
        let o = ours.get(&frame).map(Vec::as_slice).unwrap_or(&[]);
        let m = compare_frame(frame, o, theirs.get(&frame).unwrap_or(&none));
        if m.is_empty() {
            out.matched += o.len();
        }
        out.mismatches.extend(m);
    }
    out
}

/// Every capture of `real/` and `lab/` with its TSV; a capture without a TSV fails.
fn captures() -> Vec<(String, PathBuf, PathBuf)> {
    let mut out = Vec::new();
    for dir in ["real", "lab"] {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(fixture(dir))
            .expect("fixture directory")
            .map(|e| e.expect("directory entry").path())
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("pcap" | "pcapng")
                )
            })
            .collect();
        entries.sort();
        for pcap in entries {
            let file = pcap.file_name().unwrap().to_string_lossy().to_string();
            // `x.pcap` -> `x.tshark.tsv`, `x.pcapng` -> `x.pcapng.tshark.tsv`
            let tsv_name = match file.strip_suffix(".pcap") {
                Some(stem) => format!("{stem}.tshark.tsv"),
                None => format!("{file}.tshark.tsv"),
            };
            let tsv = pcap.with_file_name(tsv_name);
            assert!(tsv.exists(), "{} has no tshark TSV", pcap.display());
            out.push((format!("{dir}/{file}"), pcap, tsv));
        }
    }
    out
}

impl KnownDifference {
    fn mismatch(&self) -> Mismatch {
        Mismatch {
            frame: self.frame,
            field: self.field.to_string(),
            ours: self.ours.to_string(),
            tshark: self.tshark.to_string(),
        }
    }
}

/// The failure text of one capture: mismatches not in [`KNOWN_DIFFERENCES`], and
/// entries of it that did not occur (with their reason, to judge the change).
fn unexpected(capture: &str, found: &[Mismatch]) -> Option<String> {
    let known: Vec<&KnownDifference> = KNOWN_DIFFERENCES
        .iter()
        .filter(|k| k.capture == capture)
        .collect();
    let new: Vec<&Mismatch> = found
        .iter()
        .filter(|m| !known.iter().any(|k| k.mismatch() == **m))
        .collect();
    let gone: Vec<&&KnownDifference> = known
        .iter()
        .filter(|k| !found.contains(&k.mismatch()))
        .collect();
    if new.is_empty() && gone.is_empty() {
        return None;
    }
    let mut s = format!(
        "{capture}: {} mismatches with tshark not in KNOWN_DIFFERENCES, \
         {} known differences did not occur\n",
        new.len(),
        gone.len()
    );
    for m in new.iter().take(PRINT_LIMIT) {
        s += &format!("  {capture} {m}\n");
    }
    for k in gone.iter().take(PRINT_LIMIT) {
        s += &format!(
            "  {capture} no longer differs: {} ({:?}: {})\n",
            k.mismatch(),
            k.kind,
            k.reason
        );
    }
    Some(s)
}

/// The table itself must be sound: each entry names a capture that exists, says
/// why, and appears once.
fn check_table(captures: &[(String, PathBuf, PathBuf)]) {
    for (i, k) in KNOWN_DIFFERENCES.iter().enumerate() {
        assert!(
            captures.iter().any(|(name, ..)| name == k.capture),
            "KNOWN_DIFFERENCES names a missing capture {}",
            k.capture
        );
        assert!(
            !k.reason.trim().is_empty(),
            "{} frame {}: no reason",
            k.capture,
            k.frame
        );
        let dup = KNOWN_DIFFERENCES[..i]
            .iter()
            .any(|o| o.capture == k.capture && o.mismatch() == k.mismatch());
        assert!(!dup, "{} frame {} listed twice", k.capture, k.frame);
    }
}

/// How many table entries there are of one kind.
fn count(kind: Kind) -> usize {
    KNOWN_DIFFERENCES.iter().filter(|k| k.kind == kind).count()
}

#[test]
fn every_adu_matches_tshark() {
    let captures = captures();
    assert!(!captures.is_empty(), "no fixture captures found");
    check_table(&captures);
    let mut failures = String::new();
    let mut total = 0;
    for (name, pcap, tsv) in &captures {
        let o = compare_capture(pcap, tsv);
        eprintln!(
            "{name}: {} ADUs match tshark (ours {}, tshark {}, {} mismatches)",
            o.matched,
            o.ours,
            o.tshark,
            o.mismatches.len()
        );
        total += o.matched;
        if let Some(f) = unexpected(name, &o.mismatches) {
            failures += &f;
        }
    }
    eprintln!(
        "total: {total} ADUs match tshark in {} captures; documented differences: \
         {} tshark wrong, {} deliberate, {} our bugs",
        captures.len(),
        count(Kind::TsharkWrong),
        count(Kind::Deliberate),
        count(Kind::OurBug)
    );
    assert!(failures.is_empty(), "{failures}");
}

/// Vendor ADUs above the specification's 260 bytes (length field above 254,
/// as some PLCs send for their own function codes), one of them split over
/// two segments, with ordinary reads around them: we decode each as one ADU
/// and lose none of the reads after them, as tshark does. The capture is
/// written here and tshark (installed by `cargo xtask setup`) decodes it.
#[test]
fn oversized_vendor_adus_match_tshark() {
    use modbus_synth::{adu, read_request};
    use modbus_tests::MS;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let pcap = dir.path().join("vendor.pcap");
    let tsv = dir.path().join("vendor.tshark.tsv");
    let big_request = adu(1, 1, &[&[100u8][..], &[0x5a; 600]].concat());
    let big_response = adu(1, 1, &[&[100u8][..], &[0xa5; 900]].concat());
    modbus_tests::write_connection(&pcap, |c, w, t| {
        c.send(w, t, true, &adu(7, 1, &read_request(3, 0, 2)))?;
        c.send(w, t + MS, false, &adu(7, 1, &[3, 4, 0, 1, 0, 2]))?;
        c.send(w, t + 10 * MS, true, &big_request[..300])?;
        c.send(w, t + 11 * MS, true, &big_request[300..])?;
        let mut reply = big_response.clone();
        reply.extend(adu(2, 1, &[0x80 | 100, 1]));
        c.send(w, t + 12 * MS, false, &reply)?;
        c.send(w, t + 20 * MS, true, &adu(8, 1, &read_request(3, 0, 2)))?;
        c.send(w, t + 21 * MS, false, &adu(8, 1, &[3, 4, 0, 3, 0, 4]))
    });
    let fields = [
        "frame.number",
        "frame.time_epoch",
        "ip.src",
        "ipv6.src",
        "tcp.srcport",
        "ip.dst",
        "ipv6.dst",
        "tcp.dstport",
        "mbtcp.trans_id",
        "mbtcp.prot_id",
        "mbtcp.len",
        "mbtcp.unit_id",
        "modbus.func_code",
        "modbus.exception_code",
        "modbus.reference_num",
        "modbus.word_cnt",
        "modbus.bit_cnt",
        "modbus.diagnostic_code",
        "modbus.mei",
        "modbus.regnum16",
        "modbus.regval_uint16",
        "modbus.data",
    ];
    let rows = modbus_tests::tshark_fields(&pcap, "mbtcp", &fields, ';');
    let text: String = rows.iter().map(|r| r.join("\t") + "\n").collect();
    std::fs::write(&tsv, &text).expect("the TSV is written");
    let o = compare_capture(&pcap, &tsv);
    assert_eq!(o.ours, 7, "our ADUs");
    assert_eq!(o.tshark, 7, "tshark's ADUs:\n{text}");
    assert!(o.mismatches.is_empty(), "{:?}", o.mismatches);
}
