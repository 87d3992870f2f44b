//! The dashboard's tables as CSV (`--csv-dir`, and the page's downloads):
//! UTF-8, a header row, RFC 4180 quoting and CRLF line ends, one file per
//! table, column names stable and documented in the README. Text that
//! came from the wire is kept from running as a spreadsheet formula.

use std::path::{Path, PathBuf};

use crate::files::atomic_write;
use crate::output::inventory::{cell, csv_writer, devices_csv, pairs_csv};
use crate::output::report::{AlertEntry, Report};

/// Columns of `alerts.csv`, one row per alert entry of the report.
pub const ALERT_COLUMNS: [&str; 25] = [
    "type",
    "severity",
    "rule_id",
    "signature",
    "src_ip",
    "src_port",
    "dst_ip",
    "dst_port",
    "unit_id",
    "function_code",
    "function_name",
    "count",
    "first_seen",
    "last_seen",
    "description",
    "register",
    "register_name",
    "value",
    "write_table",
    "write_address",
    "write_values",
    "write_answer",
    "mitre_techniques",
    "wireshark_filter",
    "threat_label",
];

/// Columns of `alert_types.csv`, one row per alert type raised.
pub const TYPE_COLUMNS: [&str; 7] = [
    "type",
    "severity",
    "events",
    "entries",
    "signature",
    "mitre_techniques",
    "meaning",
];

/// An entry's fields in `ALERT_COLUMNS` order, with its Wireshark filter
/// (computed once by the caller that also shows it).
fn alert_record(a: &AlertEntry, filter: String) -> Vec<String> {
    let c = &a.common;
    let opt = |v: Option<String>| v.unwrap_or_default();
    let w = a.details.write.as_ref();
    vec![
        c.kind.clone(),
        c.severity.clone(),
        c.rule_id.clone(),
        c.signature.clone(),
        c.src_ip.to_string(),
        c.src_port.to_string(),
        c.dst_ip.to_string(),
        c.dst_port.to_string(),
        opt(c.unit_id.map(|u| u.to_string())),
        opt(c.function_code.map(|f| f.to_string())),
        opt(c.function_name.clone()),
        a.count.to_string(),
        a.first_seen.clone(),
        a.last_seen.clone(),
        cell(&a.description),
        opt(a.details.register.map(|r| r.to_string())),
        cell(a.details.register_name.as_deref().unwrap_or("")),
        opt(a.details.value.map(|v| v.to_string())),
        opt(w.map(|w| w.table.clone())),
        opt(w.map(|w| w.address.to_string())),
        opt(w.map(|w| {
            w.values
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        })),
        opt(w.map(|w| w.answer.clone())),
        c.mitre_techniques.join(" "),
        filter,
        opt(a.details.threat_label.clone()),
    ]
}

/// One entry's row of `alerts.csv`, without its line end: the page joins
/// the rows the analyst filtered, so its download is this file's subset.
pub fn alert_line(a: &AlertEntry) -> String {
    alert_line_with(a, super::wireshark_filter(a))
}

/// [`alert_line`] with the entry's Wireshark filter already made.
pub fn alert_line_with(a: &AlertEntry, filter: String) -> String {
    let mut w = csv_writer();
    // Writing to memory does not fail; an empty row would show it did.
    let _ = w.write_record(alert_record(a, filter));
    let bytes = w.into_inner().unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    text.strip_suffix("\r\n").unwrap_or(&text).to_string()
}

/// `alerts.csv`: the header and every entry's line.
pub fn alerts_csv(r: &Report) -> Vec<u8> {
    let mut out = ALERT_COLUMNS.join(",");
    out.push_str("\r\n");
    for a in &r.alerts {
        out.push_str(&alert_line(a));
        out.push_str("\r\n");
    }
    out.into_bytes()
}

/// `alert_types.csv`: the per-type breakdown.
pub fn types_csv(r: &Report) -> std::io::Result<Vec<u8>> {
    let mut w = csv_writer();
    w.write_record(TYPE_COLUMNS)?;
    for card in super::type_cards(r) {
        let (signature, techniques, meaning) = match &card.info {
            Some(i) => (
                i.signature.clone(),
                i.techniques
                    .iter()
                    .map(|t| t.id.clone())
                    .collect::<Vec<_>>()
                    .join(" "),
                i.meaning.clone(),
            ),
            None => Default::default(),
        };
        w.write_record([
            card.kind,
            card.severity,
            card.events.to_string(),
            card.entries.to_string(),
            signature,
            techniques,
            meaning,
        ])?;
    }
    w.into_inner().map_err(|e| e.into_error())
}

/// Columns of `ml_alerts.csv`: the ML_ANOMALY entries with what the
/// models said of the entry's first anomalous window.
pub const ML_COLUMNS: [&str; 16] = [
    "src_ip",
    "dst_ip",
    "severity",
    "anomalous_windows",
    "first_seen",
    "last_seen",
    "threat_label",
    "window_start",
    "window_requests",
    "iforest_score",
    "iforest_threshold",
    "ocsvm_decision",
    "ocsvm_threshold",
    "most_unusual_feature",
    "feature_z",
    "description",
];

/// `ml_alerts.csv`, when the run raised ML_ANOMALY.
pub fn ml_csv(r: &Report) -> std::io::Result<Option<Vec<u8>>> {
    let ml: Vec<&AlertEntry> = r
        .alerts
        .iter()
        .filter(|a| a.common.kind == "ML_ANOMALY")
        .collect();
    if ml.is_empty() {
        return Ok(None);
    }
    let num = |v: Option<Option<f64>>| v.flatten().map(|x| x.to_string()).unwrap_or_default();
    let mut w = csv_writer();
    w.write_record(ML_COLUMNS)?;
    for a in ml {
        let d = &a.details;
        w.write_record([
            a.common.src_ip.to_string(),
            a.common.dst_ip.to_string(),
            a.common.severity.clone(),
            a.count.to_string(),
            a.first_seen.clone(),
            a.last_seen.clone(),
            d.threat_label.clone().unwrap_or_default(),
            d.window_start.clone().unwrap_or_default(),
            d.window_requests.map(|n| n.to_string()).unwrap_or_default(),
            num(d.iforest_score),
            num(d.iforest_threshold),
            num(d.ocsvm_decision),
            num(d.ocsvm_threshold),
            d.most_unusual_feature.clone().unwrap_or_default(),
            num(d.feature_z),
            cell(&a.description),
        ])?;
    }
    w.into_inner().map(Some).map_err(|e| e.into_error())
}

/// The files `--csv-dir` writes, with their content.
pub fn files(r: &Report) -> std::io::Result<Vec<(&'static str, Vec<u8>)>> {
    let mut files = vec![
        ("alerts.csv", alerts_csv(r)),
        ("alert_types.csv", types_csv(r)?),
        ("devices.csv", devices_csv(&r.inventory.devices)?),
        ("pairs.csv", pairs_csv(&r.inventory.pairs)?),
    ];
    if let Some(ml) = ml_csv(r)? {
        files.push(("ml_alerts.csv", ml));
    }
    Ok(files)
}

/// Write every table into `dir` (created if missing), each atomically.
pub fn write_dir(dir: &Path, r: &Report) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    files(r)?
        .into_iter()
        .map(|(name, bytes)| {
            let path = dir.join(name);
            atomic_write(&path, &bytes).map(|()| path)
        })
        .collect()
}
