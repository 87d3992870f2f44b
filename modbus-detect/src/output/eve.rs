//! The alert stream: one JSON object per line, as alerts are raised, with
//! field names following Suricata's EVE alert records so that SIEM pipelines
//! built for Suricata ingest it unchanged. Identical alerts are rate-limited
//! per key (see `alert::AlertStore`); each line says how many were folded.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};

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

impl EveWriter {
    /// Create (truncate) the stream file.
    pub fn create(path: &Path, cfg: Arc<DetectConfig>) -> std::io::Result<Self> {
        Ok(EveWriter {
            path: path.to_path_buf(),
            out: BufWriter::new(File::create(path)?),
            cfg,
            lines: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write(&mut self, ev: &EveEvent) -> std::io::Result<()> {
        let line = record(ev, &self.cfg);
        serde_json::to_writer(&mut self.out, &line)?;
        self.out.write_all(b"\n")?;
        self.lines += 1;
        Ok(())
    }

    /// Hand what was written to the kernel.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }

    /// Flush and sync; returns the number of lines written.
    pub fn finish(mut self) -> std::io::Result<u64> {
        self.out.flush()?;
        self.out.get_ref().sync_all()?;
        Ok(self.lines)
    }
}

/// One EVE alert record.
pub fn record(ev: &EveEvent, cfg: &DetectConfig) -> Value {
    let a = &ev.alert;
    let description = describe(a, cfg);
    let mut modbus = details(a, cfg);
    modbus.insert("unit_id".into(), json!(a.unit));
    modbus.insert("function_code".into(), json!(a.function_code));
    let mut detect = common_fields(a, a.severity);
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
