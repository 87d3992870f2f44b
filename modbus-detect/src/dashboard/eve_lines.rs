//! The alert lines of an EVE file beside a served report (`serve --eve
//! F`): read once and kept as text, within bounds, and handed to the page
//! a page at a time. Lines of other event types (stats) are counted, not
//! kept; a line that is not JSON is counted too.

use std::io::{BufRead, Read};
use std::path::Path;

use crate::files::{kind, FileError, Shown};

/// Alert lines kept at most; the rest are counted (`not_loaded`).
pub const MAX_LINES: usize = 1_000_000;
/// Bytes of alert lines kept at most.
pub const MAX_BYTES: usize = 512 << 20;
/// A line longer than this is no EVE line (counted as not JSON).
const MAX_LINE: usize = 1 << 20;

/// The alert lines of one file, and what was not kept.
#[derive(Debug, Default)]
pub struct EveLines {
    pub path: String,
    lines: Vec<String>,
    /// Alert lines beyond the bounds.
    pub not_loaded: u64,
    /// Lines of other event types (stats).
    pub other_events: u64,
    /// Lines that are not a JSON object.
    pub not_json: u64,
}

impl EveLines {
    pub fn load(path: &Path) -> Result<EveLines, FileError> {
        let shown = Shown(path).to_string();
        let read = |source| FileError::Read {
            path: shown.clone(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read)?;
        if !meta.is_file() {
            return Err(FileError::Content {
                path: shown,
                problem: format!("is {}, not an EVE file", kind(&meta)),
            });
        }
        let file = std::fs::File::open(path).map_err(read)?;
        let mut out = EveLines {
            path: path.display().to_string(),
            ..EveLines::default()
        };
        let mut bytes = 0usize;
        let mut reader = std::io::BufReader::new(file);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = (&mut reader)
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut buf)
                .map_err(read)?;
            if n == 0 {
                break;
            }
            if buf.last() != Some(&b'\n') && n > MAX_LINE {
                // The rest of an overlong line, skipped.
                out.not_json += 1;
                let mut rest = Vec::new();
                reader.read_until(b'\n', &mut rest).map_err(read)?;
                continue;
            }
            let text = String::from_utf8_lossy(&buf);
            let line = text.trim_end();
            if line.is_empty() {
                continue;
            }
            match serde_json::from_str::<serde_json::Value>(line) {
                Ok(v) if v["event_type"] == "alert" => {
                    if out.lines.len() >= MAX_LINES || bytes + line.len() > MAX_BYTES {
                        out.not_loaded += 1;
                    } else {
                        bytes += line.len();
                        out.lines.push(line.to_string());
                    }
                }
                Ok(v) if v.is_object() => out.other_events += 1,
                _ => out.not_json += 1,
            }
        }
        Ok(out)
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Lines `offset..offset + limit`, parsed again for the page.
    pub fn page(&self, offset: usize, limit: usize) -> Vec<serde_json::Value> {
        self.lines
            .iter()
            .skip(offset)
            .take(limit)
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_lines_are_kept_the_rest_counted() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("eve.json");
        std::fs::write(
            &p,
            "{\"event_type\":\"alert\",\"n\":1}\n{\"event_type\":\"stats\"}\nnot json\n\n{\"event_type\":\"alert\",\"n\":2}",
        )
        .unwrap();
        let e = EveLines::load(&p).unwrap();
        assert_eq!((e.len(), e.other_events, e.not_json), (2, 1, 1));
        assert_eq!(e.page(1, 10)[0]["n"], 2);
        assert!(EveLines::load(dir.path())
            .unwrap_err()
            .to_string()
            .contains("is a directory"));
    }
}
