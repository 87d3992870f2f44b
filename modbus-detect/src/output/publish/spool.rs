//! The publisher's on-disk spool: events the engine could not take yet,
//! kept in order across outages and restarts, in bounded space.
//!
//! Segment files (`<n>.seg`, at most [`SEGMENT_BYTES`] each) of records
//! `[u32 length][u8 kind][u16 id length][id][payload]`, little-endian; a
//! `cursor` file says how far the oldest segment was sent. Beyond
//! `max_bytes` the oldest segment goes, its unsent records counted as
//! dropped: the oldest events are lost first, and never silently. A record
//! cut short by a crash ends its segment (counted as `corrupt_bytes`).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::{Event, Kind};

/// A segment is closed at this size and a new one started.
pub const SEGMENT_BYTES: u64 = 4 << 20;
/// An event larger than this is refused (the report, not a line, is big).
pub const MAX_RECORD: usize = 8 << 20;

#[derive(Debug)]
struct Segment {
    n: u64,
    bytes: u64,
    records: u64,
}

/// The spool of one publisher.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segments: VecDeque<Segment>,
    /// Appending to the newest segment.
    out: Option<File>,
    /// Sent so far of the oldest segment: bytes and records.
    read_offset: u64,
    read_records: u64,
    /// Records dropped because the spool was full, and bytes of records
    /// cut short by a crash.
    pub dropped: u64,
    pub corrupt_bytes: u64,
}

fn seg_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:012}.seg"))
}

/// Reads one record at the reader's position; `None` at a clean end.
fn read_record(r: &mut impl Read) -> io::Result<Option<(Event, u64)>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if !(3..=MAX_RECORD).contains(&len) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bad record length",
        ));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    let kind = Kind::from_byte(body[0])
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad record kind"))?;
    let id_len = usize::from(u16::from_le_bytes([body[1], body[2]]));
    let id = body
        .get(3..3 + id_len)
        .and_then(|b| std::str::from_utf8(b).ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad record id"))?
        .to_string();
    let payload = body.get(3 + id_len..).unwrap_or_default().to_vec();
    Ok(Some((Event { kind, id, payload }, 4 + len as u64)))
}

impl Spool {
    /// Open (or create) the spool in `dir`, finding what an earlier run
    /// left there.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Spool> {
        std::fs::create_dir_all(dir)?;
        let mut numbers: Vec<u64> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".seg")?.parse().ok()
            })
            .collect();
        numbers.sort_unstable();
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes: max_bytes.max(SEGMENT_BYTES),
            segments: VecDeque::new(),
            out: None,
            read_offset: 0,
            read_records: 0,
            dropped: 0,
            corrupt_bytes: 0,
        };
        for n in numbers {
            let path = seg_path(dir, n);
            let file = File::open(&path)?;
            let size = file.metadata()?.len();
            let mut r = BufReader::new(file);
            let (mut bytes, mut records) = (0, 0);
            loop {
                match read_record(&mut r) {
                    Ok(Some((_, len))) => {
                        bytes += len;
                        records += 1;
                    }
                    Ok(None) => break,
                    Err(_) => break,
                }
            }
            if bytes < size {
                // Cut short (a crash mid-write): keep what is whole.
                spool.corrupt_bytes += size - bytes;
                OpenOptions::new().write(true).open(&path)?.set_len(bytes)?;
            }
            spool.segments.push_back(Segment { n, bytes, records });
        }
        if let Ok(text) = std::fs::read_to_string(dir.join("cursor")) {
            let mut it = text.split_whitespace().map(|t| t.parse::<u64>().ok());
            if let (Some(Some(n)), Some(Some(off)), Some(Some(recs))) =
                (it.next(), it.next(), it.next())
            {
                if spool
                    .segments
                    .front()
                    .is_some_and(|s| s.n == n && off <= s.bytes)
                {
                    spool.read_offset = off;
                    spool.read_records = recs;
                }
            }
        }
        Ok(spool)
    }

    /// Events waiting.
    pub fn len(&self) -> u64 {
        self.segments.iter().map(|s| s.records).sum::<u64>() - self.read_records
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// Append an event (after every other).
    pub fn push(&mut self, ev: &Event) -> io::Result<()> {
        let id = ev.id.as_bytes();
        let len = 3 + id.len().min(usize::from(u16::MAX)) + ev.payload.len();
        if len > MAX_RECORD {
            self.dropped += 1;
            return Ok(());
        }
        let need_new = self
            .segments
            .back()
            .is_none_or(|s| s.bytes + 4 + len as u64 > SEGMENT_BYTES && s.records > 0)
            || self.out.is_none();
        if need_new {
            let n = self.segments.back().map_or(1, |s| s.n + 1);
            let file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(seg_path(&self.dir, n))?;
            self.out = Some(file);
            self.segments.push_back(Segment {
                n,
                bytes: 0,
                records: 0,
            });
        }
        let mut rec = Vec::with_capacity(4 + len);
        rec.extend_from_slice(&(len as u32).to_le_bytes());
        rec.push(ev.kind.byte());
        rec.extend_from_slice(&(id.len().min(usize::from(u16::MAX)) as u16).to_le_bytes());
        rec.extend_from_slice(&id[..id.len().min(usize::from(u16::MAX))]);
        rec.extend_from_slice(&ev.payload);
        if let (Some(out), Some(seg)) = (self.out.as_mut(), self.segments.back_mut()) {
            out.write_all(&rec)?;
            seg.bytes += rec.len() as u64;
            seg.records += 1;
        }
        while self.bytes() > self.max_bytes && self.segments.len() > 1 {
            if let Some(old) = self.segments.pop_front() {
                self.dropped += old.records - self.read_records;
                self.read_offset = 0;
                self.read_records = 0;
                std::fs::remove_file(seg_path(&self.dir, old.n))?;
                self.save_cursor()?;
            }
        }
        Ok(())
    }

    /// Up to `max` of the oldest events, without taking them out.
    pub fn peek(&self, max: usize) -> io::Result<Vec<Event>> {
        let mut out = Vec::new();
        let mut offset = self.read_offset;
        for seg in &self.segments {
            if out.len() >= max {
                break;
            }
            let mut f = File::open(seg_path(&self.dir, seg.n))?;
            f.seek(SeekFrom::Start(offset))?;
            let mut r = BufReader::new(f.take(seg.bytes - offset));
            while out.len() < max {
                match read_record(&mut r) {
                    Ok(Some((ev, _))) => out.push(ev),
                    Ok(None) => break,
                    // The oldest record itself: the caller skips its segment.
                    Err(e) if out.is_empty() => return Err(e),
                    // What reads before it goes first.
                    Err(_) => return Ok(out),
                }
            }
            offset = 0;
        }
        Ok(out)
    }

    /// The oldest record cannot be read back (the file changed under the
    /// spool, or the disk fails): nothing after it in its segment can be
    /// trusted, so the segment goes, its unsent records counted as dropped.
    pub fn skip_unreadable(&mut self) -> io::Result<()> {
        let Some(bad) = self.segments.pop_front() else {
            return Ok(());
        };
        self.dropped += bad.records - self.read_records;
        self.read_offset = 0;
        self.read_records = 0;
        if self.segments.is_empty() {
            self.out = None;
        }
        std::fs::remove_file(seg_path(&self.dir, bad.n))?;
        self.save_cursor()
    }

    /// The oldest `n` events were sent: take them out.
    pub fn commit(&mut self, mut n: u64) -> io::Result<()> {
        while n > 0 {
            let Some(front) = self.segments.front() else {
                break;
            };
            let left = front.records - self.read_records;
            if n < left {
                // Advance inside the segment: measure the records' bytes.
                let mut f = File::open(seg_path(&self.dir, front.n))?;
                f.seek(SeekFrom::Start(self.read_offset))?;
                let mut r = BufReader::new(f);
                for _ in 0..n {
                    if let Some((_, len)) = read_record(&mut r)? {
                        self.read_offset += len;
                        self.read_records += 1;
                    }
                }
                break;
            }
            n -= left;
            let done = self.segments.pop_front().map(|s| s.n);
            if self.segments.is_empty() {
                self.out = None;
            }
            self.read_offset = 0;
            self.read_records = 0;
            if let Some(d) = done {
                std::fs::remove_file(seg_path(&self.dir, d))?;
            }
        }
        self.save_cursor()
    }

    fn save_cursor(&self) -> io::Result<()> {
        let n = self.segments.front().map_or(0, |s| s.n);
        let text = format!("{n} {} {}\n", self.read_offset, self.read_records);
        crate::files::atomic_write(&self.dir.join("cursor"), text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(i: u64, size: usize) -> Event {
        Event {
            kind: Kind::Alerts,
            id: format!("s:1:{i}"),
            payload: vec![b'x'; size],
        }
    }

    #[test]
    fn a_record_that_cannot_be_read_back_drops_its_segment_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 64 << 20).unwrap();
        for i in 0..3000 {
            s.push(&ev(i, 3000)).unwrap();
        }
        let first = s.segments[0].records;
        // Bit rot in the 11th record of the first segment, while open.
        let path = seg_path(dir.path(), s.segments[0].n);
        let mut bytes = std::fs::read(&path).unwrap();
        let rec = 4 + 3 + "s:1:0".len() + 3000;
        bytes[10 * rec + 4] = 0xee;
        std::fs::write(&path, bytes).unwrap();
        // The ten before it still go out.
        let ok = s.peek(256).unwrap();
        assert_eq!(ok.len(), 10);
        s.commit(10).unwrap();
        assert!(s.peek(256).is_err());
        s.skip_unreadable().unwrap();
        assert_eq!(s.dropped, first - 10);
        assert_eq!(s.len(), 3000 - first);
        let next = s.peek(1).unwrap();
        assert_eq!(next[0].id, format!("s:1:{first}"));
    }

    #[test]
    fn events_come_back_in_order_across_segments_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 64 << 20).unwrap();
        for i in 0..3000 {
            s.push(&ev(i, 3000)).unwrap();
        }
        assert!(s.segments.len() > 2, "several segments");
        assert_eq!(s.len(), 3000);
        let first = s.peek(10).unwrap();
        assert_eq!(first[0].id, "s:1:0");
        s.commit(1500).unwrap();
        drop(s);
        let mut s = Spool::open(dir.path(), 64 << 20).unwrap();
        assert_eq!(s.len(), 1500, "the cursor survived");
        let next = s.peek(2).unwrap();
        assert_eq!(next[0].id, "s:1:1500");
        assert_eq!(next[1].id, "s:1:1501");
        s.commit(1500).unwrap();
        assert!(s.is_empty());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "only the cursor"
        );
    }

    #[test]
    fn a_full_spool_drops_the_oldest_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), SEGMENT_BYTES * 2).unwrap();
        let n = 10_000;
        for i in 0..n {
            s.push(&ev(i, 2000)).unwrap();
        }
        assert!(s.bytes() <= SEGMENT_BYTES * 2);
        assert_eq!(s.len() + s.dropped, n);
        assert!(s.dropped > 0);
        // What is left is the newest, in order.
        let left = s.peek(usize::MAX).unwrap();
        assert_eq!(left.last().unwrap().id, format!("s:1:{}", n - 1));
        assert_eq!(left[0].id, format!("s:1:{}", s.dropped));
    }

    #[test]
    fn a_record_cut_by_a_crash_is_dropped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 64 << 20).unwrap();
        for i in 0..5 {
            s.push(&ev(i, 100)).unwrap();
        }
        drop(s);
        let seg = seg_path(dir.path(), 1);
        let len = std::fs::metadata(&seg).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len - 10)
            .unwrap();
        let s = Spool::open(dir.path(), 64 << 20).unwrap();
        assert_eq!(s.len(), 4);
        assert!(s.corrupt_bytes > 0);
        assert_eq!(s.peek(10).unwrap().len(), 4);
    }
}
