//! Several capture files read as one capture: the files given and the
//! files of the directories given (a rotated set from `tcpdump -G` or
//! `-C`), in the order of their first packet's time. Frames are numbered
//! across the set in that order, as `mergecap -a` of the files in that
//! order numbers them.
//!
//! A file that is not a capture, or whose first record is broken, is an
//! error naming it; with `skip_bad` it is left out and listed, with why,
//! so that nothing is dropped unseen.

use std::path::{Path, PathBuf};

use super::{CaptureFile, SourceError};

/// A file of the set that was left out, and why.
#[derive(Debug)]
pub struct Skipped {
    pub path: PathBuf,
    pub error: SourceError,
}

/// The set, in replay order.
pub struct CaptureSet {
    pub files: Vec<CaptureFile>,
    pub skipped: Vec<Skipped>,
}

/// Why a set cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SetError {
    #[error(transparent)]
    File(#[from] SourceError),
    #[error("{}: cannot list: {source}", crate::files::Shown(path))]
    List {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: no capture file to read", crate::files::Shown(path))]
    Empty { path: PathBuf },
}

/// The files of `path`: itself, or a directory's regular files (not its
/// hidden ones, not its subdirectories), by name.
pub(crate) fn expand(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), SetError> {
    if !std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let list = |source| SetError::List {
        path: path.to_path_buf(),
        source,
    };
    let mut names: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(list)?
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file() || t.is_symlink()))
        .map(|e| e.path())
        .collect();
    names.sort();
    out.extend(names);
    Ok(())
}

impl CaptureSet {
    /// Open every file of `paths`, in the order of their first packet.
    pub fn open(paths: &[PathBuf], skip_bad: bool) -> Result<CaptureSet, SetError> {
        let mut all = Vec::new();
        for p in paths {
            expand(p, &mut all)?;
        }
        let mut files = Vec::new();
        let mut skipped = Vec::new();
        for path in all {
            // A file whose first record is broken cannot be placed in time.
            let opened = CaptureFile::open(&path).and_then(|f| {
                let first = match f.frames().next() {
                    Some(Ok(frame)) => frame.ts_ns,
                    Some(Err(e)) => return Err(e),
                    None => u64::MAX,
                };
                Ok((first, f))
            });
            match opened {
                Ok(f) => files.push(f),
                Err(error) if skip_bad => skipped.push(Skipped { path, error }),
                Err(e) => return Err(e.into()),
            }
        }
        if files.is_empty() {
            return Err(SetError::Empty {
                path: paths.first().cloned().unwrap_or_default(),
            });
        }
        files.sort_by(|(a, fa), (b, fb)| a.cmp(b).then(fa.path().cmp(fb.path())));
        Ok(CaptureSet {
            files: files.into_iter().map(|(_, f)| f).collect(),
            skipped,
        })
    }
}
