//! Files the sensor reads and writes: settings files (limits, baseline)
//! read with errors that name the file, and outputs written atomically.

use std::io::Write;
use std::path::{Path, PathBuf};

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
    let shown = path.display().to_string();
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

/// Write a file so that readers see the old content or the new, never half:
/// a temporary file in the same directory, fsynced, then renamed over.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Fail early, before a long capture, if `path` cannot be written.
pub fn check_writable(path: &Path) -> std::io::Result<()> {
    let tmp = temp_path(path);
    std::fs::File::create(&tmp)?;
    std::fs::remove_file(&tmp)
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
