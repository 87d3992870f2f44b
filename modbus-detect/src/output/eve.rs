//! The alert stream: one JSON object per line, as alerts are raised, with
//! field names following Suricata's EVE alert records so that SIEM pipelines
//! built for Suricata ingest it unchanged. Identical alerts are rate-limited
//! per key (see `alert::AlertStore`); each line says how many were folded.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::alert::EveEvent;
use crate::config::DetectConfig;

use super::iso_time;
use super::report::{common_fields, describe, details};

pub struct EveWriter {
    path: PathBuf,
    out: BufWriter<File>,
    cfg: Arc<DetectConfig>,
    lines: u64,
}

/// The alert stream could not be written (disk full, I/O error); names the file.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct EveError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl EveWriter {
    /// Create (truncate) the stream file.
    pub fn create(path: &Path, cfg: Arc<DetectConfig>) -> Result<Self, EveError> {
        let file = File::create(path).map_err(|source| EveError {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(EveWriter {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
            cfg,
            lines: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn error(&self, source: std::io::Error) -> EveError {
        EveError {
            path: self.path.clone(),
            source,
        }
    }

    fn write(&mut self, ev: &EveEvent) -> std::io::Result<()> {
        let line = record(ev, &self.cfg);
        serde_json::to_writer(&mut self.out, &line)?;
        self.out.write_all(b"\n")?;
        self.lines += 1;
        Ok(())
    }

    /// Write lines and hand them to the kernel, so that a SIEM tailing the
    /// file sees alerts as they are raised.
    pub fn write_lines(&mut self, lines: &[EveEvent]) -> Result<(), EveError> {
        lines
            .iter()
            .try_for_each(|ev| self.write(ev))
            .and_then(|()| self.out.flush())
            .map_err(|e| self.error(e))
    }

    /// Flush and sync; returns the number of lines written.
    pub fn finish(mut self) -> Result<u64, EveError> {
        let done = self
            .out
            .flush()
            .and_then(|()| self.out.get_ref().sync_all());
        match done {
            Ok(()) => Ok(self.lines),
            Err(e) => Err(self.error(e)),
        }
    }
}

/// One EVE alert record.
pub fn record(ev: &EveEvent, cfg: &DetectConfig) -> Value {
    let a = &ev.alert;
    let description = describe(a, cfg);
    let mut modbus = object(&details(a, cfg));
    modbus.insert("unit_id".into(), json!(a.unit));
    modbus.insert("function_code".into(), json!(a.function_code));
    let mut detect = object(&common_fields(a, a.severity));
    detect.insert("count".into(), json!(ev.count));
    detect.insert("suppressed_since_last_line".into(), json!(ev.suppressed));
    detect.insert("description".into(), json!(description));
    json!({
        "timestamp": iso_time(a.ts_ns).replace('Z', "+0000"),
        "event_type": "alert",
        "src_ip": a.src,
        "src_port": a.src_port,
        "dest_ip": a.dst,
        "dest_port": a.dst_port,
        "proto": "TCP",
        "app_proto": "modbus",
        "alert": {
            "action": "allowed",
            "gid": 1,
            "signature_id": a.kind.signature_id(),
            "rev": 1,
            "signature": format!("{}: {}", a.kind.name(), description),
            "category": a.kind.category(),
            "severity": a.severity.eve_level(),
        },
        "modbus": modbus,
        "modbus_detect": detect,
    })
}

/// A record of the report as a JSON object, to build an EVE object from.
fn object(v: &impl serde::Serialize) -> Map<String, Value> {
    match serde_json::to_value(v) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}
