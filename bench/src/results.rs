//! Result files: every benchmark binary writes `target/bench/<name>.json`,
//! a list of rows; `modbus-bench report` reads them back (with criterion's
//! own files) and prints the table.

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::stats::Summary;

/// One line of the table: a figure per column, each a median with min and max.
#[derive(Debug, Clone, Default)]
pub struct Row {
    /// "replay", "instructions", "micro", "alloc", "memory", "live".
    pub group: String,
    pub name: String,
    pub frames_per_s: Option<Summary>,
    pub gbit_per_s: Option<Summary>,
    pub ns_per_frame: Option<Summary>,
    /// Allocations per million frames.
    pub allocs_per_m: Option<Summary>,
    /// Bytes (what is measured is in `name`).
    pub memory_bytes: Option<Summary>,
    /// Instructions per frame, counted (not timed): the same on any machine.
    pub instructions_per_frame: Option<Summary>,
    pub note: String,
}

impl Row {
    pub fn new(group: &str, name: impl Into<String>) -> Row {
        Row {
            group: group.to_string(),
            name: name.into(),
            ..Row::default()
        }
    }

    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("group".into(), json!(self.group));
        m.insert("name".into(), json!(self.name));
        for (k, v) in self.figures() {
            if let Some(s) = v {
                m.insert(k.into(), s.to_json());
            }
        }
        if !self.note.is_empty() {
            m.insert("note".into(), json!(self.note));
        }
        Value::Object(m)
    }

    pub fn from_json(v: &Value) -> Option<Row> {
        let s = |k: &str| v.get(k).and_then(Summary::from_json);
        Some(Row {
            group: v.get("group")?.as_str()?.to_string(),
            name: v.get("name")?.as_str()?.to_string(),
            frames_per_s: s("frames_per_s"),
            gbit_per_s: s("gbit_per_s"),
            ns_per_frame: s("ns_per_frame"),
            allocs_per_m: s("allocs_per_m_frames"),
            memory_bytes: s("memory_bytes"),
            instructions_per_frame: s("instructions_per_frame"),
            note: v
                .get("note")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        })
    }

    fn figures(&self) -> [(&'static str, &Option<Summary>); 6] {
        [
            ("frames_per_s", &self.frames_per_s),
            ("gbit_per_s", &self.gbit_per_s),
            ("ns_per_frame", &self.ns_per_frame),
            ("allocs_per_m_frames", &self.allocs_per_m),
            ("memory_bytes", &self.memory_bytes),
            ("instructions_per_frame", &self.instructions_per_frame),
        ]
    }
}

/// `target/bench` of this workspace (or `$MODBUS_BENCH_DIR`).
pub fn bench_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("MODBUS_BENCH_DIR") {
        return PathBuf::from(d);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .join("target/bench")
}

/// Write `<dir>/<name>.json`: the rows and whatever else the benchmark
/// wants to keep (`extra`, e.g. raw samples and settings).
pub fn write(dir: &Path, name: &str, rows: &[Row], extra: Value) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{name}.json"));
    let doc = json!({
        "benchmark": name,
        "rows": rows.iter().map(Row::to_json).collect::<Vec<_>>(),
        "details": extra,
    });
    let text = serde_json::to_vec_pretty(&doc).map_err(std::io::Error::other)?;
    std::fs::write(&path, text)?;
    Ok(path)
}

/// The rows of `<dir>/<name>.json`, if it exists and parses.
pub fn read(dir: &Path, name: &str) -> Option<(Vec<Row>, Value)> {
    let text = std::fs::read(dir.join(format!("{name}.json"))).ok()?;
    let doc: Value = serde_json::from_slice(&text).ok()?;
    let rows = doc
        .get("rows")?
        .as_array()?
        .iter()
        .filter_map(Row::from_json)
        .collect();
    Some((rows, doc.get("details").cloned().unwrap_or(Value::Null)))
}
