//! A capture read as it comes: standard input (`--pcap -`) or a FIFO, as
//! in `tcpdump -i eth1 -U -w - | modbus-detect --pcap -`.
//!
//! The records are parsed by the same code as a mapped file
//! ([`super::pcap::Frames`]), one buffer at a time: a record split between
//! two reads waits for its rest, and the buffer never holds more than the
//! largest record a capture may have ([`MAX_RECORD`]), so a header that
//! announces gigabytes is an error, not an allocation. Waiting for data
//! never blocks for long: the caller gets [`Next::Idle`] every
//! [`IDLE_WAIT`] to look at its stop flag and hand on partial batches.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::pcap::{detect_layout, Frames, Layout, Resume};
use super::{FrameRef, SourceError};

/// A pcapng block or pcap record larger than this is refused: snap
/// lengths stop at 256 KiB, and the largest blocks (name resolution,
/// custom blocks) are far below it.
pub const MAX_RECORD: usize = 16 << 20;
/// The buffer's first size; it grows (up to a record's size) only for a
/// record that does not fit.
const FIRST_BUFFER: usize = 1 << 20;
/// How long one wait for data lasts before the caller gets control back.
pub const IDLE_WAIT: Duration = Duration::from_millis(100);

/// What the stream gave.
#[derive(Debug)]
pub enum Next {
    /// A frame; its bytes are [`CaptureStream::frame`] until the next call.
    Frame(FrameRef),
    /// No data for [`IDLE_WAIT`] (or a signal came): nothing to do yet.
    Idle,
    /// The writer closed its end after a whole last record.
    End,
}

/// Standard input or a FIFO, read as a capture.
pub struct CaptureStream {
    /// As shown in messages and the report: `-` is "standard input".
    path: PathBuf,
    input: File,
    buf: Vec<u8>,
    /// Bytes of `buf` filled.
    end: usize,
    /// Offset of `buf[0]` in the stream (for error messages).
    base: usize,
    eof: bool,
    /// Known once the first header has arrived.
    layout: Option<Layout>,
    at: Resume,
}

impl CaptureStream {
    /// Standard input when `path` is `-`, else the FIFO at `path`, opened
    /// without waiting for a writer (the first reads wait, a signal ends
    /// them).
    pub fn open(path: &Path) -> Result<CaptureStream, SourceError> {
        let io_error = |action, source| SourceError::Io {
            path: path.to_path_buf(),
            action,
            source,
        };
        let (shown, input) = if path == Path::new("-") {
            let fd = std::io::stdin()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| io_error("cannot read", e))?;
            (PathBuf::from("standard input"), File::from(fd))
        } else {
            // O_NONBLOCK: opening a FIFO for reading otherwise waits for a
            // writer, where no signal flag is looked at.
            let f = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(path)
                .map_err(|e| io_error("cannot open", e))?;
            set_blocking(&f).map_err(|e| io_error("cannot open", e))?;
            (path.to_path_buf(), f)
        };
        Ok(CaptureStream {
            path: shown,
            input,
            buf: vec![0; FIRST_BUFFER],
            end: 0,
            base: 0,
            eof: false,
            layout: None,
            at: Resume::default(),
        })
    }

    /// "standard input" or the FIFO's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// "pcap" or "pcapng", once the first header has come.
    pub fn format(&self) -> &'static str {
        self.layout.map_or("unknown", Layout::name)
    }

    /// Bytes read so far.
    pub fn position(&self) -> u64 {
        (self.base + self.end) as u64
    }

    /// The bytes of the frame [`read_next`](Self::read_next) just gave.
    pub fn frame(&self, f: &FrameRef) -> &[u8] {
        self.buf
            .get(f.off..f.off + f.len as usize)
            .unwrap_or_default()
    }

    /// The next frame, or why there is none yet.
    pub fn read_next(&mut self) -> Result<Next, SourceError> {
        loop {
            let layout = match self.layout {
                Some(l) => l,
                None => match self.header()? {
                    Some(l) => l,
                    None => match self.fill()? {
                        true => continue,
                        false => return Ok(Next::Idle),
                    },
                },
            };
            let at = std::mem::take(&mut self.at);
            let data = self.buf.get(..self.end).unwrap_or_default();
            let mut frames = Frames::resume(&self.path, data, layout, at, self.base);
            let record = frames.next_record();
            self.at = frames.suspend();
            match record {
                Ok(Some(f)) => return Ok(Next::Frame(f)),
                Ok(None) if self.eof => return Ok(Next::End),
                Ok(None) => {}
                Err(SourceError::Truncated { need, .. }) if !self.eof => {
                    self.check_size(need)?;
                }
                Err(e) => return Err(e),
            }
            if !self.fill()? {
                return Ok(Next::Idle);
            }
        }
    }

    /// The layout from the first header, `None` while it is incomplete.
    fn header(&mut self) -> Result<Option<Layout>, SourceError> {
        let data = self.buf.get(..self.end).unwrap_or_default();
        if self.eof && data.is_empty() {
            return Err(SourceError::Empty {
                path: self.path.clone(),
            });
        }
        if data.len() < 4 && !self.eof {
            return Ok(None);
        }
        match detect_layout(&self.path, data) {
            Ok(layout) => {
                self.layout = Some(layout);
                self.at = Resume::start(layout);
                Ok(Some(layout))
            }
            Err(SourceError::Truncated { need, .. }) if !self.eof => {
                self.check_size(need)?;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// A record that announces more than a stream may buffer.
    fn check_size(&self, need: u64) -> Result<(), SourceError> {
        if need > MAX_RECORD as u64 {
            return Err(SourceError::Corrupt {
                path: self.path.clone(),
                at: self.base + self.at.pos,
                what: format!(
                    "a record of {need} bytes, more than the {} MiB a stream is buffered for",
                    MAX_RECORD >> 20
                ),
            });
        }
        Ok(())
    }

    /// Wait up to [`IDLE_WAIT`] for more bytes after the unparsed rest;
    /// `false` when none came (yet).
    fn fill(&mut self) -> Result<bool, SourceError> {
        let io_error = |source| SourceError::Io {
            path: self.path.clone(),
            action: "cannot read",
            source,
        };
        // The parsed records go; the rest moves to the front.
        let done = self.at.pos.min(self.end);
        self.buf.copy_within(done..self.end, 0);
        self.base += done;
        self.end -= done;
        self.at.pos = 0;
        if self.end == self.buf.len() {
            // One record larger than the buffer (bounded by check_size).
            let grown = (self.buf.len() * 2).min(MAX_RECORD + FIRST_BUFFER);
            if grown == self.buf.len() {
                return Err(SourceError::Corrupt {
                    path: self.path.clone(),
                    at: self.base,
                    what: "no record ends within the stream's buffer".into(),
                });
            }
            self.buf.resize(grown, 0);
        }
        if !readable(&self.input, IDLE_WAIT).map_err(io_error)? {
            return Ok(false);
        }
        let room = self.buf.get_mut(self.end..).unwrap_or_default();
        match self.input.read(room) {
            Ok(0) => self.eof = true,
            Ok(n) => self.end += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(io_error(e)),
        }
        Ok(true)
    }
}

/// Wait until `f` has data or its writer is gone; `false` after `wait` or
/// when a signal came.
fn readable(f: &File, wait: Duration) -> std::io::Result<bool> {
    let mut fds = libc::pollfd {
        fd: f.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(wait.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd, for the duration of the call.
    let n = unsafe { libc::poll(&mut fds, 1, ms) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return match e.kind() {
            std::io::ErrorKind::Interrupted => Ok(false),
            _ => Err(e),
        };
    }
    Ok(n > 0)
}

/// Clear `O_NONBLOCK` once the FIFO is open: `readable` decides when to read.
fn set_blocking(f: &File) -> std::io::Result<()> {
    let fd = f.as_raw_fd();
    // SAFETY: fcntl on a descriptor this File owns.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
