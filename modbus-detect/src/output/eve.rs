//! The alert stream: one JSON object per line, as alerts are raised, with
//! field names following Suricata's EVE alert records so that SIEM pipelines
//! built for Suricata ingest it unchanged. Identical alerts are rate-limited
//! per key (see `alert::AlertStore`); each line says how many were folded.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::alert::{Alert, Answer, EveEvent, Tx};
use crate::config::DetectConfig;
use crate::files::{open_stream, Shown};

use super::iso_time;
use super::publish::{Kind, Publisher};
use super::report::{common_fields, describe, details};
use crate::knowledge::knowledge;

pub struct EveWriter {
    path: PathBuf,
    /// The file; none when the lines are only published.
    out: Option<BufWriter<File>>,
    /// `--publish`: every line also goes to the streaming engine.
    publish: Option<Publisher>,
    cfg: Arc<DetectConfig>,
    origin: Origin,
    lines: u64,
    /// Set by SIGHUP: reopen the file before the next line (logrotate
    /// moved it away).
    reopen: Option<Arc<AtomicBool>>,
}

/// The alert stream could not be written (disk full, I/O error); names the file.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", Shown(path))]
pub struct EveError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl EveWriter {
    /// Open the stream file emptied first (see [`EveWriter::open`]).
    pub fn create(path: &Path, cfg: Arc<DetectConfig>) -> Result<Self, EveError> {
        EveWriter::open(path, cfg, true)
    }

    /// Open the stream file: appended to (as Suricata does, so that a
    /// restart or logrotate's `copytruncate` loses nothing), or emptied
    /// first (`truncate`); never through a link, never a device.
    pub fn open(path: &Path, cfg: Arc<DetectConfig>, truncate: bool) -> Result<Self, EveError> {
        let file = open_stream(path, truncate).map_err(|source| EveError {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(EveWriter {
            path: path.to_path_buf(),
            out: Some(BufWriter::new(file)),
            publish: None,
            cfg,
            origin: Origin::default(),
            lines: 0,
            reopen: None,
        })
    }

    /// Lines published only (`--publish` without `--eve`).
    pub fn publishing(publisher: Publisher, cfg: Arc<DetectConfig>) -> Self {
        EveWriter {
            path: PathBuf::from("--publish"),
            out: None,
            publish: Some(publisher),
            cfg,
            origin: Origin::default(),
            lines: 0,
            reopen: None,
        }
    }

    /// Also publish every line.
    pub fn with_publisher(mut self, publisher: Publisher) -> Self {
        self.publish = Some(publisher);
        self
    }

    /// Reopen the file (appending, by name again) whenever `flag` is set.
    pub fn with_reopen(mut self, flag: Arc<AtomicBool>) -> Self {
        self.reopen = Some(flag);
        self
    }

    /// If asked to: finish the current file and open the path again, so
    /// that lines after a rotation go to the new file and none is lost.
    fn reopen_if_asked(&mut self) -> std::io::Result<()> {
        if !self
            .reopen
            .as_ref()
            .is_some_and(|f| f.swap(false, Ordering::AcqRel))
        {
            return Ok(());
        }
        if let Some(out) = self.out.as_mut() {
            out.flush()?;
            let file = open_stream(&self.path, false)?;
            *out = BufWriter::new(file);
        }
        Ok(())
    }

    /// Name the sensor and the input in every line.
    pub fn with_origin(mut self, origin: Origin) -> Self {
        self.origin = origin;
        self
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
        let line = record(ev, &self.cfg, &self.origin);
        self.emit(&line, Kind::Alerts)
    }

    /// One line to the file and to the publisher.
    fn emit(&mut self, line: &Value, kind: Kind) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(line)?;
        if let Some(out) = self.out.as_mut() {
            out.write_all(&bytes)?;
            out.write_all(b"\n")?;
        }
        if let Some(p) = &self.publish {
            p.send(kind, bytes);
        }
        self.lines += 1;
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.out.as_mut() {
            Some(out) => out.flush(),
            None => Ok(()),
        }
    }

    /// Write lines and hand them to the kernel, so that a SIEM tailing the
    /// file sees alerts as they are raised.
    pub fn write_lines(&mut self, lines: &[EveEvent]) -> Result<(), EveError> {
        self.reopen_if_asked().map_err(|e| self.error(e))?;
        lines
            .iter()
            .try_for_each(|ev| self.write(ev))
            .and_then(|()| self.flush())
            .map_err(|e| self.error(e))
    }

    /// Write one line that is not an alert (a `stats` event) and hand it to
    /// the kernel.
    pub fn write_value(&mut self, line: &Value) -> Result<(), EveError> {
        self.reopen_if_asked().map_err(|e| self.error(e))?;
        self.emit(line, Kind::Stats)
            .and_then(|()| self.flush())
            .map_err(|e| self.error(e))
    }

    /// Flush and sync; returns the number of lines written.
    pub fn finish(mut self) -> Result<u64, EveError> {
        // Only a file has anything to sync (a pipe refuses fsync).
        let done = match self.out.as_mut() {
            Some(out) => {
                let file = out.get_ref().metadata().is_ok_and(|m| m.is_file());
                out.flush().and_then(|()| match file {
                    true => out.get_ref().sync_all(),
                    false => Ok(()),
                })
            }
            None => Ok(()),
        };
        match done {
            Ok(()) => Ok(self.lines),
            Err(e) => Err(self.error(e)),
        }
    }
}

/// Where the alert lines come from: the sensor, and the capture file or
/// interface, for the lines' `host`, `pcap_filename` and `in_iface`.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// `--sensor-name` (default: the host name).
    pub host: String,
    pub pcap_filename: Option<String>,
    pub in_iface: Option<String>,
}

/// Function code names as Suricata writes them in `modbus.*.function_code`
/// (its Modbus parser's names), so that its users' queries match ours.
fn suricata_function(fc: u8) -> &'static str {
    match fc & 0x7F {
        1 => "RdCoils",
        2 => "RdDiscreteInputs",
        3 => "RdHoldRegs",
        4 => "RdInputRegs",
        5 => "WrSingleCoil",
        6 => "WrSingleReg",
        7 => "RdExcStatus",
        8 => "Diagnostic",
        9 => "Program484",
        10 => "Poll484",
        11 => "GetCommEventCtr",
        12 => "GetCommEventLog",
        13 => "ProgramController",
        14 => "PollController",
        15 => "WrMultCoils",
        16 => "WrMultRegs",
        17 => "ReportServerID",
        18 => "Program884",
        19 => "ResetCommLink",
        20 => "RdFileRec",
        21 => "WrFileRec",
        22 => "MaskWrReg",
        23 => "RdWrMultRegs",
        24 => "RdFIFOQueue",
        43 => "MEI",
        _ => "Unknown",
    }
}

/// Exception code names as Suricata writes them.
fn suricata_exception(code: u8) -> &'static str {
    match code {
        1 => "IllegalFunction",
        2 => "IllegalDataAddr",
        3 => "IllegalDataValue",
        4 => "ServerDeviceFail",
        5 => "Ack",
        6 => "ServerDeviceBusy",
        7 => "NegAck",
        8 => "MemParityErr",
        10 => "GatewayPathUnavailable",
        11 => "GatewayTargetFailToResp",
        _ => "Unknown",
    }
}

/// Suricata's `modbus` object for the message an alert was raised on:
/// `request` or `response` with its transaction id, unit id, function
/// code (name and raw), what a request reads and the address (and the
/// value, for a single write) it writes, a response's exception. Only the
/// fields Suricata's EVE schema allows: everything else of ours is under
/// `modbus_detect`.
fn modbus_object(a: &Alert, tx: &Tx) -> Value {
    let mut msg = message(tx.tid, a.unit, tx.fc, tx.exception);
    if tx.request {
        if let Some((address, quantity)) = tx.read {
            msg.insert(
                "read".into(),
                json!({"address": address, "quantity": quantity}),
            );
        }
        if let Some((address, value)) = tx.write {
            let mut w = Map::new();
            w.insert("address".into(), json!(address));
            if let Some(v) = value {
                w.insert("data".into(), json!(v));
            }
            msg.insert("write".into(), Value::Object(w));
        }
    }
    let side = if tx.request { "request" } else { "response" };
    let mut out = Map::new();
    out.insert(side.into(), Value::Object(msg));
    // A write's answer, once the PLC gave one.
    let exception = match a.write.map(|w| w.answer) {
        Some(Answer::Accepted) => Some(None),
        Some(Answer::Exception(code)) => Some(Some(code)),
        _ => None,
    };
    if let (true, Some(exception)) = (tx.request, exception) {
        let raw = if exception.is_some() {
            tx.fc | 0x80
        } else {
            tx.fc
        };
        let r = message(tx.tid, a.unit, raw, exception);
        out.insert("response".into(), Value::Object(r));
    }
    Value::Object(out)
}

/// The fields of a request or response in Suricata's `modbus` object.
fn message(tid: u16, unit: u8, raw: u8, exception: Option<u8>) -> Map<String, Value> {
    let mut msg = Map::new();
    msg.insert("transaction_id".into(), json!(tid));
    msg.insert("protocol_id".into(), json!(0));
    msg.insert("unit_id".into(), json!(unit));
    msg.insert("function_raw".into(), json!(raw));
    msg.insert("function_code".into(), json!(suricata_function(raw)));
    if let Some(code) = exception {
        msg.insert(
            "exception".into(),
            json!({"raw": code, "code": suricata_exception(code)}),
        );
    }
    msg
}

/// ATT&CK for ICS in the keys ET rules use (`mitre_*` arrays), which
/// Elastic's Suricata integration maps to `threat.technique.*` and
/// `threat.tactic.*`.
fn metadata(a: &Alert) -> Value {
    let k = knowledge().of(a.kind);
    let mut m = Map::new();
    // Empty lists are left out (a type may map to a tactic alone).
    let mut put = |key: &str, values: Vec<&str>| {
        if !values.is_empty() {
            m.insert(key.into(), json!(values));
        }
    };
    put(
        "mitre_technique_id",
        k.techniques.iter().map(|t| t.id.as_str()).collect(),
    );
    put(
        "mitre_technique_name",
        k.techniques.iter().map(|t| t.name.as_str()).collect(),
    );
    put(
        "mitre_tactic_id",
        k.tactics.iter().map(|t| t.id.as_str()).collect(),
    );
    put(
        "mitre_tactic_name",
        k.tactics.iter().map(|t| t.name.as_str()).collect(),
    );
    put("signature_severity", vec![a.severity.name()]);
    put("affected_product", vec!["Modbus_TCP"]);
    Value::Object(m)
}

/// A TCP connection's Community ID (v1, seed 0): the same value Zeek,
/// Suricata and Elastic give the connection, whatever its direction.
pub fn community_id(src: IpAddr, src_port: u16, dst: IpAddr, dst_port: u16) -> String {
    communityid::Flow::new(communityid::Protocol::TCP, src, src_port, dst, dst_port)
        .community_id_v1(0)
        .base64()
}

/// One EVE alert record: Suricata's fields where Suricata has them (and as
/// its schema types them), everything of ours under `modbus_detect`.
pub fn record(ev: &EveEvent, cfg: &DetectConfig, origin: &Origin) -> Value {
    let a = &ev.alert;
    let description = describe(a, cfg);
    let mut line = Map::new();
    line.insert(
        "timestamp".into(),
        json!(iso_time(a.ts_ns).replace('Z', "+0000")),
    );
    if let Some(s) = a.stamp {
        line.insert("flow_id".into(), json!(s.flow_id));
        if origin.pcap_filename.is_some() {
            line.insert("pcap_cnt".into(), json!(s.frame));
        }
    }
    if let Some(f) = &origin.pcap_filename {
        line.insert("pcap_filename".into(), json!(f));
    }
    if let Some(i) = &origin.in_iface {
        line.insert("in_iface".into(), json!(i));
    }
    line.insert("event_type".into(), json!("alert"));
    line.insert("src_ip".into(), json!(a.src));
    line.insert("src_port".into(), json!(a.src_port));
    line.insert("dest_ip".into(), json!(a.dst));
    line.insert("dest_port".into(), json!(a.dst_port));
    line.insert("proto".into(), json!("TCP"));
    line.insert(
        "community_id".into(),
        json!(community_id(a.src, a.src_port, a.dst, a.dst_port)),
    );
    if let Some(s) = a.stamp {
        let direction = if s.to_server {
            "to_server"
        } else {
            "to_client"
        };
        line.insert("direction".into(), json!(direction));
    }
    line.insert("app_proto".into(), json!("modbus"));
    line.insert("host".into(), json!(origin.host));
    line.insert(
        "alert".into(),
        json!({
            "action": "allowed",
            "gid": 1,
            "signature_id": a.kind.signature_id(),
            "rev": 1,
            "signature": knowledge().of(a.kind).signature,
            "category": a.kind.category(),
            "severity": a.severity.eve_level(),
            "metadata": metadata(a),
        }),
    );
    if let Some(tx) = &a.tx {
        line.insert("modbus".into(), modbus_object(a, tx));
    }
    let mut detect = object(&common_fields(a, a.severity));
    detect.extend(object(&details(a, cfg)));
    detect.insert("description".into(), json!(description));
    detect.insert("count".into(), json!(ev.count));
    detect.insert("events".into(), json!(ev.events));
    detect.insert("suppressed_since_last_line".into(), json!(ev.suppressed));
    if let Some(s) = a.stamp {
        detect.insert("frame".into(), json!(s.frame));
    }
    line.insert("modbus_detect".into(), Value::Object(detect));
    Value::Object(line)
}

/// A record of the report as a JSON object, to build an EVE object from.
fn object(v: &impl serde::Serialize) -> Map<String, Value> {
    match serde_json::to_value(v) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}
