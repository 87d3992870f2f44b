//! `modbus-detect census`: the original pipeline's first look at captures,
//! before any detection: for each file (a directory's files too), its
//! first frames, its frames, those that are TCP on a Modbus port, those of
//! them that carry payload, and its time span; and the totals. A file that
//! cannot be read is listed with why, not fatal: the census is how one
//! finds it.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::output::iso_time;
use crate::runtime::dispatch::classify;
use crate::source::set::{expand, SetError};
use crate::source::CaptureFile;

/// One file's census.
#[derive(Debug, Serialize)]
pub struct FileCensus {
    pub path: String,
    pub format: Option<&'static str>,
    pub frames: u64,
    /// TCP to or from a Modbus port (the original's "Modbus/TCP packets").
    pub modbus_tcp_frames: u64,
    /// Of those, with TCP payload.
    pub modbus_payload_frames: u64,
    pub first_packet: Option<String>,
    pub last_packet: Option<String>,
    /// Why it could not be read (whole).
    pub error: Option<String>,
    /// Its first frames, one line each.
    pub preview: Vec<String>,
}

/// The census of every file of `paths`, in name order.
pub fn census(
    paths: &[PathBuf],
    ports: &[u16],
    preview: usize,
) -> Result<Vec<FileCensus>, SetError> {
    let mut files = Vec::new();
    for p in paths {
        expand(p, &mut files)?;
    }
    Ok(files.iter().map(|f| one(f, ports, preview)).collect())
}

fn one(path: &Path, ports: &[u16], preview: usize) -> FileCensus {
    let mut c = FileCensus {
        path: path.display().to_string(),
        format: None,
        frames: 0,
        modbus_tcp_frames: 0,
        modbus_payload_frames: 0,
        first_packet: None,
        last_packet: None,
        error: None,
        preview: Vec::new(),
    };
    let file = match CaptureFile::open(path) {
        Ok(f) => f,
        Err(e) => {
            c.error = Some(e.to_string());
            return c;
        }
    };
    c.format = Some(file.format());
    let (mut first, mut last) = (None, None);
    for frame in file.frames() {
        let f = match frame {
            Ok(f) => f,
            Err(e) => {
                c.error = Some(e.to_string());
                break;
            }
        };
        c.frames += 1;
        first.get_or_insert(f.ts_ns);
        last = Some(f.ts_ns);
        let bytes = file
            .data()
            .get(f.off..f.off + f.len as usize)
            .unwrap_or_default();
        let classified = classify(f.link, bytes, ports, 1);
        if let Ok(k) = &classified {
            c.modbus_tcp_frames += 1;
            c.modbus_payload_frames += u64::from(k.meta.payload_len > 0);
        }
        if c.preview.len() < preview {
            let what = match &classified {
                Ok(k) => format!(
                    "{}:{} -> {}:{} TCP, {} bytes of payload",
                    k.meta.src, k.meta.sport, k.meta.dst, k.meta.dport, k.meta.payload_len
                ),
                Err(reason) => format!("not Modbus/TCP ({})", reason.name()),
            };
            c.preview.push(format!(
                "#{} {} {} bytes: {what}",
                c.frames,
                iso_time(f.ts_ns),
                f.len
            ));
        }
    }
    c.first_packet = first.map(iso_time);
    c.last_packet = last.map(iso_time);
    c
}

/// The census as a table, the previews under it, and the totals.
pub fn print(out: &mut impl Write, files: &[FileCensus]) -> std::io::Result<()> {
    let shown = |s: &str| crate::files::Shown(Path::new(s)).to_string();
    writeln!(
        out,
        "{:>10} {:>12} {:>12}  {:<28} {:<28} file",
        "frames", "modbus/tcp", "with data", "first packet", "last packet"
    )?;
    for f in files {
        writeln!(
            out,
            "{:>10} {:>12} {:>12}  {:<28} {:<28} {}{}",
            f.frames,
            f.modbus_tcp_frames,
            f.modbus_payload_frames,
            f.first_packet.as_deref().unwrap_or("-"),
            f.last_packet.as_deref().unwrap_or("-"),
            shown(&f.path),
            f.error
                .as_ref()
                .map(|e| format!("  ({})", shown(e)))
                .unwrap_or_default()
        )?;
    }
    let sum = |g: fn(&FileCensus) -> u64| files.iter().map(g).sum::<u64>();
    writeln!(
        out,
        "{:>10} {:>12} {:>12}  total of {} file(s), {} unreadable",
        sum(|f| f.frames),
        sum(|f| f.modbus_tcp_frames),
        sum(|f| f.modbus_payload_frames),
        files.len(),
        files.iter().filter(|f| f.error.is_some()).count()
    )?;
    for f in files.iter().filter(|f| !f.preview.is_empty()) {
        writeln!(out, "\n{}:", shown(&f.path))?;
        for line in &f.preview {
            writeln!(out, "  {}", shown(line))?;
        }
    }
    Ok(())
}
