//! Files the sensor reads and writes: settings files (limits, baseline)
//! read with errors that name the file, and outputs written atomically.

use std::fmt::{self, Write as _};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// A limits or baseline file that cannot be used; one line naming the file.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: String,
        source: serde_json::Error,
    },
    #[error("{path}: {problem}")]
    Content { path: String, problem: String },
}

/// Read a settings file and parse it, naming the file in any error.
pub fn load_file<T>(
    path: &Path,
    parse: impl FnOnce(&str) -> Result<T, ParseError>,
) -> Result<T, FileError> {
    let shown = Shown(path).to_string();
    // Looked at before opening: opening a FIFO would wait for a writer
    // (a hang no signal-free exit explains), a device would never end.
    let meta = std::fs::metadata(path).map_err(|source| FileError::Read {
        path: shown.clone(),
        source,
    })?;
    if !meta.is_file() {
        return Err(FileError::Content {
            path: shown,
            problem: format!("is {}, not a settings file", kind(&meta)),
        });
    }
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
        path: shown.clone(),
        source,
    })?;
    parse(&text).map_err(|e| match e {
        ParseError::Json(source) => FileError::Json {
            path: shown,
            source,
        },
        ParseError::Content(problem) => FileError::Content {
            path: shown,
            problem,
        },
    })
}

/// A JSON object read into a map, refusing a key given twice: serde (and
/// most JSON readers) silently keep the last, so a file with a register
/// listed twice would lose one of its limits, perhaps the stricter.
#[derive(Debug)]
pub struct UniqueKeys<V>(pub std::collections::BTreeMap<String, V>);

impl<'de, V: serde::Deserialize<'de>> serde::Deserialize<'de> for UniqueKeys<V> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<V>(std::marker::PhantomData<V>);
        impl<'de, V: serde::Deserialize<'de>> serde::de::Visitor<'de> for Visit<V> {
            type Value = UniqueKeys<V>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object with each key once")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = std::collections::BTreeMap::new();
                while let Some((k, v)) = map.next_entry::<String, V>()? {
                    if out.contains_key(&k) {
                        return Err(serde::de::Error::custom(format!("key {k:?} appears twice")));
                    }
                    out.insert(k, v);
                }
                Ok(UniqueKeys(out))
            }
        }
        d.deserialize_map(Visit(std::marker::PhantomData))
    }
}

impl<V> FromIterator<(String, V)> for UniqueKeys<V> {
    fn from_iter<I: IntoIterator<Item = (String, V)>>(iter: I) -> Self {
        UniqueKeys(iter.into_iter().collect())
    }
}

impl<V> IntoIterator for UniqueKeys<V> {
    type Item = (String, V);
    type IntoIter = std::collections::btree_map::IntoIter<String, V>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<V: serde::Serialize> serde::Serialize for UniqueKeys<V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// Longest name, unit or description a settings file may give (bytes).
pub const MAX_TEXT_LEN: usize = 256;

/// Why a settings file's text did not parse (without the file name).
#[derive(Debug)]
pub enum ParseError {
    Json(serde_json::Error),
    Content(String),
}

/// One line: JSON errors name their line and column.
impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Json(e) => write!(f, "{e}"),
            ParseError::Content(s) => f.write_str(s),
        }
    }
}

/// A path as it may be shown on a terminal: control characters escaped,
/// since a file name can carry an escape sequence that rewrites the screen
/// of whoever reads the error.
pub struct Shown<'a>(pub &'a Path);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.to_string_lossy().chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

/// What a file that is not a regular file is, for error lines.
pub fn kind(m: &std::fs::Metadata) -> &'static str {
    let t = m.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}

/// An output may replace a regular file, or a link (the link itself,
/// never what it points to); anything else at its path (a device, a
/// directory, a FIFO) is a mistake or a trap, and is refused.
fn replaceable(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_file() || m.file_type().is_symlink() => Ok(()),
        Ok(m) => Err(io::Error::other(format!(
            "is {} (outputs only replace regular files)",
            kind(&m)
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// A new temporary file beside `path`: an unpredictable name, created
/// with `O_EXCL` (so never through a link planted under a guessed name).
fn temp_file(path: &Path) -> io::Result<tempfile::NamedTempFile> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
}

/// `-` names standard output (`--output`, `--eve`, `--dump-adus`).
pub fn is_stdout(path: &Path) -> bool {
    path == Path::new("-")
}

/// Write a file so that readers see the old content or the new, never half:
/// a temporary file in the same directory, fsynced, then renamed over.
/// `-` writes to standard output.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    atomic_write_with(path, |w| w.write_all(bytes))
}

/// [`atomic_write`] of what `write` writes, for an output too large to
/// hold in memory: nothing replaces `path` unless `write` succeeds.
pub fn atomic_write_with<T>(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<T>,
) -> io::Result<T> {
    if is_stdout(path) {
        let mut out = io::stdout().lock();
        let t = write(&mut out)?;
        out.flush()?;
        return Ok(t);
    }
    replaceable(path)?;
    let mut tmp = temp_file(path)?;
    let t = write(&mut tmp)?;
    tmp.as_file().sync_all()?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(t)
}

/// Fail early, before a long capture, if `path` cannot be written.
pub fn check_writable(path: &Path) -> io::Result<()> {
    if is_stdout(path) {
        return Ok(());
    }
    replaceable(path)?;
    temp_file(path).map(drop)
}

/// Open a stream output (the alert lines): appended to, or emptied first
/// (`truncate`); never through a symbolic link, never a device; a FIFO is
/// taken only when someone reads it (no open that blocks forever).
pub fn open_stream(path: &Path, truncate: bool) -> io::Result<File> {
    if is_stdout(path) {
        use std::os::fd::AsFd;
        return io::stdout().as_fd().try_clone_to_owned().map(File::from);
    }
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if !(m.is_file() || m.file_type().is_fifo()) {
            return Err(io::Error::other(format!(
                "is {} (alert lines go to a regular file or a FIFO)",
                kind(&m)
            )));
        }
    }
    let mut o = std::fs::OpenOptions::new();
    if truncate {
        o.write(true).truncate(true);
    } else {
        o.append(true);
    }
    let file = o
        .create(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => {
                io::Error::other("is a symbolic link (outputs never follow links)")
            }
            Some(libc::ENXIO) => io::Error::other("is a FIFO nobody reads"),
            _ => e,
        })?;
    let m = file.metadata()?;
    if !(m.is_file() || m.file_type().is_fifo()) {
        return Err(io::Error::other(format!(
            "is {} (alert lines go to a regular file or a FIFO)",
            kind(&m)
        )));
    }
    // Blocking writes from here: a slow reader of a FIFO must not lose lines.
    // SAFETY: fcntl on a descriptor this function owns.
    let fd = file.as_raw_fd();
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file)
}

/// The device and inode of an existing file (following links): what tells
/// that an output is an input, under whatever name.
pub fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.json");
        atomic_write(&p, b"one").unwrap();
        atomic_write(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let bad = dir.path().join("missing-dir").join("r.json");
        assert!(atomic_write(&bad, b"x").is_err());
        assert!(check_writable(&bad).is_err());
        assert!(check_writable(&p).is_ok());
    }
}
