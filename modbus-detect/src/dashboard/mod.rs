//! The analyst's dashboard: one page built from a report, served
//! (`modbus-detect serve`, `--dashboard` while capturing) or written as
//! one self-contained file (`--html`), with its tables as CSV
//! (`--csv-dir`) and its charts as SVG (`--plots-dir`).
//!
//! Everything a view shows is computed here, in Rust, from the report:
//! the figures, the charts (SVG, [`charts`]), each alert's CSV row and
//! Wireshark filter, the communication map and the assistant's answers
//! ([`assistant`]). The page's script only lays them out, filters, sorts
//! and pages; it never builds markup from strings (text goes in through
//! `textContent`), so what came from the wire cannot become markup.

pub mod assistant;
pub mod charts;
pub mod eve_lines;
pub mod page;
pub mod query;
pub mod serve;
pub mod tables;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::Serialize;

use crate::knowledge::TypeInfo;
use crate::output::report::{AlertEntry, MlSection, Report, Status};
use charts::{severity_color, Item, Span, NORMAL_COLOR};

/// What the page shows, as JSON.
#[derive(Debug, Serialize)]
pub struct Dashboard<'a> {
    pub title: String,
    pub version: &'static str,
    /// Served while the run goes on: the page follows updates.
    pub live: bool,
    /// The report; without its alerts when they are not inline.
    pub report: &'a Report,
    /// Alert entries of the report.
    pub alert_entries: usize,
    /// The entries are in `report.alerts` (the self-contained file), or
    /// the page asks the server for one page at a time (`/api/alerts`).
    pub alerts_inline: bool,
    pub metrics: Vec<Metric>,
    pub charts: Charts,
    pub alerts_csv_header: String,
    /// One per `report.alerts` entry, in the same order (inline only).
    pub alert_rows: Vec<AlertRow>,
    pub types: Vec<TypeCard>,
    pub map: CommMap,
    pub assistant: assistant::Answers,
    /// The other tables' CSV, for the page's downloads.
    pub csv: CsvTexts,
}

/// `alert_types.csv`, `devices.csv` and `pairs.csv`, as `--csv-dir`
/// writes them.
#[derive(Debug, Serialize)]
pub struct CsvTexts {
    pub alert_types: String,
    pub devices: String,
    pub pairs: String,
}

/// One figure of the overview.
#[derive(Debug, Serialize)]
pub struct Metric {
    /// Stable name, for tests and for people who script the page.
    pub id: &'static str,
    pub label: &'static str,
    pub group: &'static str,
    pub value: serde_json::Value,
}

/// The overview charts, SVG.
#[derive(Debug, Serialize)]
pub struct Charts {
    pub traffic: String,
    pub ml: Option<String>,
    pub by_type: String,
    pub by_severity: String,
    pub timeline: String,
    pub talkers: String,
}

/// What the alert table needs beyond the entry itself.
#[derive(Debug, Serialize)]
pub struct AlertRow {
    /// The entry's line of `alerts.csv` (without its line break).
    pub csv: String,
    /// A Wireshark display filter for its flow and time span.
    pub filter: String,
}

/// One card per alert type raised.
#[derive(Debug, Serialize)]
pub struct TypeCard {
    #[serde(rename = "type")]
    pub kind: String,
    pub severity: String,
    pub events: u64,
    pub entries: usize,
    /// Its meaning, what to check and what else raises it (the report's
    /// `alert_types`, from `data/alert_types.toml`).
    pub info: Option<TypeInfo>,
}

/// Masters by slaves, with what went between them.
#[derive(Debug, Serialize)]
pub struct CommMap {
    pub masters: Vec<MapNode>,
    pub slaves: Vec<String>,
    pub cells: Vec<MapCell>,
}

#[derive(Debug, Serialize)]
pub struct MapNode {
    pub ip: String,
    /// Not on `--authorized-masters`, or raised ROGUE_MODBUS_MASTER.
    pub rogue: bool,
}

#[derive(Debug, Serialize)]
pub struct MapCell {
    pub master: usize,
    pub slave: usize,
    pub requests: u64,
    pub exceptions: u64,
    /// "3×488 6×11 ..." by count.
    pub function_codes: String,
    pub rtt_p50_ms: Option<f64>,
    /// Alert events between the two.
    pub alerts: u64,
    /// A pair the baseline detection used does not know.
    pub new_pair: bool,
}

impl AlertRow {
    pub fn of(a: &AlertEntry) -> AlertRow {
        let filter = wireshark_filter(a);
        AlertRow {
            csv: tables::alert_line_with(a, filter.clone()),
            filter,
        }
    }
}

impl<'a> Dashboard<'a> {
    /// Everything the page shows of `report`; `shown` is the report the
    /// page gets: `report` itself (alerts inline) or its [`head`].
    pub fn build(report: &Report, shown: &'a Report, live: bool) -> Dashboard<'a> {
        let inline = shown.alerts.len() == report.alerts.len();
        let rows = shown.alerts.iter().map(AlertRow::of).collect();
        Dashboard {
            title: format!("modbus-detect: {}", report.input.path),
            version: env!("CARGO_PKG_VERSION"),
            live,
            report: shown,
            alert_entries: report.alerts.len(),
            alerts_inline: inline,
            metrics: metrics(report),
            charts: charts(report),
            alerts_csv_header: tables::ALERT_COLUMNS.join(","),
            alert_rows: rows,
            types: type_cards(report),
            map: comm_map(report),
            assistant: assistant::answer(report),
            csv: csv_texts(report),
        }
    }
}

fn csv_texts(r: &Report) -> CsvTexts {
    let text =
        |b: std::io::Result<Vec<u8>>| String::from_utf8(b.unwrap_or_default()).unwrap_or_default();
    CsvTexts {
        alert_types: text(tables::types_csv(r)),
        devices: text(crate::output::inventory::devices_csv(&r.inventory.devices)),
        pairs: text(crate::output::inventory::pairs_csv(&r.inventory.pairs)),
    }
}

fn status_name(s: Status) -> &'static str {
    match s {
        Status::Complete => "complete",
        Status::Interrupted => "interrupted",
        Status::InputError => "input error",
        Status::Running => "running",
    }
}

fn metrics(r: &Report) -> Vec<Metric> {
    let c = &r.counters;
    let n = |v: u64| serde_json::Value::from(v);
    let mut m = vec![
        ("status", "Run", "run", status_name(r.status).into()),
        (
            "capture_span",
            "Capture time",
            "run",
            match (&r.start_time, &r.end_time) {
                (Some(a), Some(b)) => format!("{a} – {b}").into(),
                _ => "no Modbus traffic".into(),
            },
        ),
        ("frames", "Frames", "traffic", n(c.counters.frames)),
        (
            "modbus_adus",
            "Modbus ADUs",
            "traffic",
            n(c.counters.modbus_adus),
        ),
        ("requests", "Requests", "traffic", n(c.counters.requests)),
        ("responses", "Responses", "traffic", n(c.counters.responses)),
        (
            "exceptions",
            "Exceptions",
            "traffic",
            n(c.counters.exceptions),
        ),
        (
            "devices",
            "Devices",
            "traffic",
            n(r.inventory.devices.len() as u64),
        ),
        ("connections", "Connections", "traffic", n(c.counters.flows)),
        ("alerts_total", "Alert events", "alerts", n(c.alerts_total)),
    ];
    for (sev, v) in &c.alerts_by_severity {
        let id: &'static str = match sev.as_str() {
            "CRITICAL" => "alerts_critical",
            "HIGH" => "alerts_high",
            "MEDIUM" => "alerts_medium",
            _ => "alerts_low",
        };
        let label: &'static str = match sev.as_str() {
            "CRITICAL" => "Critical",
            "HIGH" => "High",
            "MEDIUM" => "Medium",
            _ => "Low",
        };
        m.push((id, label, "alerts", n(*v)));
    }
    let skipped: u64 = c.skipped.values().sum();
    m.extend([
        (
            "skipped_frames",
            "Frames skipped before the shards",
            "losses",
            n(skipped),
        ),
        (
            "reassembly_gaps",
            "Holes in TCP streams",
            "losses",
            n(c.counters.reassembly_gaps),
        ),
        (
            "malformed_adus",
            "Malformed ADUs",
            "losses",
            n(c.counters.malformed_adus),
        ),
        (
            "checksum_errors",
            "Checksum errors",
            "losses",
            n(c.counters.checksum_errors),
        ),
        (
            "flows_evicted",
            "Connections evicted (table full)",
            "losses",
            n(c.counters.flows_evicted),
        ),
        (
            "alerts_dropped_table_full",
            "Alert entries dropped (table full)",
            "losses",
            n(c.alerts_dropped_table_full),
        ),
        (
            "eve_lines_suppressed",
            "Alert lines folded (rate limit)",
            "losses",
            n(c.eve_lines_suppressed),
        ),
    ]);
    if let Some(cap) = &r.capture {
        let ring: u64 = cap.shards.iter().map(|s| s.ring_full_drops).sum();
        let socket: u64 = cap
            .queues
            .iter()
            .map(|q| q.rx_dropped + q.rx_ring_full + q.fill_ring_empty + q.rx_invalid_descs)
            .sum();
        m.extend([
            (
                "xdp_redirect_failed",
                "XDP redirects failed",
                "losses",
                n(cap.xdp.redirect_failed),
            ),
            ("socket_drops", "Socket drops", "losses", n(socket)),
            ("shard_ring_full", "Shard rings full", "losses", n(ring)),
        ]);
    }
    m.into_iter()
        .map(|(id, label, group, value)| Metric {
            id,
            label,
            group,
            value,
        })
        .collect()
}

/// Per alert type: the most severe severity its entries were raised with
/// ("LOW" when none says), and its report entries. One pass over the
/// entries: a live page is published every second, with up to 100,000.
fn type_summary(r: &Report) -> BTreeMap<&str, (&'static str, usize)> {
    const ORDER: [&str; 4] = ["CRITICAL", "HIGH", "MEDIUM", "LOW"];
    let mut by_type: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for a in &r.alerts {
        let e = by_type
            .entry(a.common.kind.as_str())
            .or_insert((ORDER.len() - 1, 0));
        if let Some(i) = ORDER.iter().position(|s| *s == a.common.severity) {
            e.0 = e.0.min(i);
        }
        e.1 += 1;
    }
    by_type
        .into_iter()
        .map(|(k, (i, n))| (k, (ORDER[i], n)))
        .collect()
}

fn charts(r: &Report) -> Charts {
    let c = &r.counters;
    // Alert events per type raised, in the report's order, coloured by the
    // type's worst severity.
    let types = type_summary(r);
    let raised: Vec<Item> = c
        .alerts_by_type
        .iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| Item {
            label: k.clone(),
            value: *v,
            color: severity_color(types.get(k.as_str()).map_or("LOW", |t| t.0)),
        })
        .collect();
    let flagged: u64 = raised.iter().map(|i| i.value).sum();
    let normal = Item {
        label: "ADUs raising no alert".into(),
        value: c.counters.modbus_adus.saturating_sub(flagged),
        color: NORMAL_COLOR,
    };
    let traffic: Vec<Item> = std::iter::once(normal)
        .chain(raised.iter().cloned())
        .collect();
    let ml = match &r.ml {
        MlSection::Judged(j) => Some((j.windows_judged, j.anomalous_windows)),
        _ => None,
    };
    let ml = ml.map(|(judged, anomalous)| {
        charts::donut(
            "ML windows: normal vs anomalous",
            &[
                Item {
                    label: "normal windows".into(),
                    value: judged.saturating_sub(anomalous),
                    color: NORMAL_COLOR,
                },
                Item {
                    label: "ML_ANOMALY windows".into(),
                    value: anomalous,
                    color: severity_color("HIGH"),
                },
            ],
        )
    });
    let mut by_type = raised;
    by_type.sort_by(|a, b| b.value.cmp(&a.value).then(a.label.cmp(&b.label)));
    let by_severity: Vec<Item> = c
        .alerts_by_severity
        .iter()
        .map(|(k, v)| Item {
            label: k.clone(),
            value: *v,
            color: severity_color(k),
        })
        .collect();
    let lanes: Vec<String> = by_type.iter().map(|i| i.label.clone()).collect();
    let spans: Vec<Span> = r
        .alerts
        .iter()
        .filter_map(|a| {
            Some(Span {
                lane: lanes.iter().position(|l| *l == a.common.kind)?,
                first: a.first_seen_epoch,
                last: a.last_seen_epoch,
                count: a.count,
                color: severity_color(&a.common.severity),
            })
        })
        .collect();
    let mut talkers: BTreeMap<IpAddr, u64> = BTreeMap::new();
    for p in &r.inventory.pairs {
        *talkers.entry(p.master).or_default() += p.requests;
    }
    let mut talkers: Vec<(IpAddr, u64)> = talkers.into_iter().collect();
    talkers.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let rogue = rogue_masters(r);
    let talkers: Vec<Item> = talkers
        .into_iter()
        .take(10)
        .map(|(ip, v)| Item {
            label: ip.to_string(),
            value: v,
            color: if rogue.contains(&ip) {
                severity_color("CRITICAL")
            } else {
                NORMAL_COLOR
            },
        })
        .collect();
    Charts {
        traffic: charts::donut("Modbus ADUs: normal vs alert events, by type", &traffic),
        ml,
        by_type: charts::bars("Alert events by type", &by_type),
        by_severity: charts::bars("Alert events by severity", &by_severity),
        timeline: charts::timeline("Alerts over capture time, by type", &lanes, &spans),
        talkers: charts::bars("Top talkers: requests sent, by master", &talkers),
    }
}

/// Masters the run found rogue: not on the allow list (when there is one)
/// or named by a ROGUE_MODBUS_MASTER alert.
fn rogue_masters(r: &Report) -> BTreeSet<IpAddr> {
    let mut rogue: BTreeSet<IpAddr> = r
        .alerts
        .iter()
        .filter(|a| a.common.kind == "ROGUE_MODBUS_MASTER")
        .map(|a| a.common.src_ip)
        .collect();
    if let Some(allowed) = &r.settings.authorized_masters {
        let allowed: Vec<crate::config::addrs::IpNet> =
            allowed.iter().filter_map(|s| s.parse().ok()).collect();
        rogue.extend(
            r.inventory
                .masters
                .iter()
                .filter(|m| !allowed.iter().any(|n| n.contains(**m))),
        );
    }
    rogue
}

fn type_cards(r: &Report) -> Vec<TypeCard> {
    let types = type_summary(r);
    r.counters
        .alerts_by_type
        .iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| {
            let (severity, entries) = types.get(k.as_str()).copied().unwrap_or(("LOW", 0));
            TypeCard {
                kind: k.clone(),
                severity: severity.to_string(),
                events: *v,
                entries,
                info: r.alert_types.get(k).cloned(),
            }
        })
        .collect()
}

fn comm_map(r: &Report) -> CommMap {
    let rogue = rogue_masters(r);
    let masters: Vec<IpAddr> = r.inventory.masters.clone();
    let slaves: Vec<IpAddr> = r.inventory.slaves.clone();
    let mut alerts: BTreeMap<(IpAddr, IpAddr), u64> = BTreeMap::new();
    for a in &r.alerts {
        *alerts
            .entry((a.common.src_ip, a.common.dst_ip))
            .or_default() += a.count;
    }
    let cells = r
        .inventory
        .pairs
        .iter()
        .filter_map(|p| {
            let mut fcs: Vec<(&String, &u64)> = p.function_codes.iter().collect();
            fcs.sort_by(|a, b| b.1.cmp(a.1));
            Some(MapCell {
                master: masters.iter().position(|m| *m == p.master)?,
                slave: slaves.iter().position(|s| *s == p.slave)?,
                requests: p.requests,
                exceptions: p.exceptions,
                function_codes: fcs
                    .iter()
                    .map(|(fc, n)| format!("{fc}×{n}"))
                    .collect::<Vec<_>>()
                    .join(" "),
                rtt_p50_ms: p.rtt_ms.as_ref().map(|r| r.p50),
                alerts: alerts.get(&(p.master, p.slave)).copied().unwrap_or(0),
                new_pair: p.in_baseline == Some(false),
            })
        })
        .collect();
    CommMap {
        masters: masters
            .iter()
            .map(|m| MapNode {
                ip: m.to_string(),
                rogue: rogue.contains(m),
            })
            .collect(),
        slaves: slaves.iter().map(IpAddr::to_string).collect(),
        cells,
    }
}

/// A Wireshark display filter for an alert's connection and time span
/// (and its request and response frames, when the report has them).
pub fn wireshark_filter(a: &AlertEntry) -> String {
    let c = &a.common;
    let ip = |addr: &IpAddr| match addr {
        IpAddr::V4(_) => "ip.addr",
        IpAddr::V6(_) => "ipv6.addr",
    };
    let mut f = format!(
        "{} == {} && {} == {} && tcp.port == {} && tcp.port == {} && frame.time_epoch >= {:.6} && frame.time_epoch <= {:.6}",
        ip(&c.src_ip),
        c.src_ip,
        ip(&c.dst_ip),
        c.dst_ip,
        c.src_port,
        c.dst_port,
        a.first_seen_epoch,
        a.last_seen_epoch + 1e-6,
    );
    if let Some(w) = &a.details.write {
        let frames: Vec<String> = [w.request_frame, w.response_frame]
            .into_iter()
            .flatten()
            .map(|n| n.to_string())
            .collect();
        if !frames.is_empty() {
            f = format!("({f}) || frame.number in {{{}}}", frames.join(" "));
        }
    }
    f
}

/// The dashboard JSON of a report with its alerts inline (what `--html`
/// embeds).
pub fn json(report: &Report, live: bool) -> String {
    // A report always serializes; an empty object would show it did not.
    serde_json::to_string(&Dashboard::build(report, report, live)).unwrap_or_else(|_| "{}".into())
}

/// The dashboard JSON the server hands out: everything but the alert
/// entries, which the page asks for a page at a time, so that a report of
/// any size opens at once.
pub fn served_json(report: &Report, live: bool) -> String {
    let head = head(report);
    serde_json::to_string(&Dashboard::build(report, &head, live)).unwrap_or_else(|_| "{}".into())
}

/// The report without its alert entries. Every field is named, so that a
/// field added to the report cannot be left out unnoticed.
pub fn head(r: &Report) -> Report {
    Report {
        tool: r.tool.clone(),
        version: r.version.clone(),
        status: r.status,
        error: r.error.clone(),
        input: r.input.clone(),
        mode: r.mode,
        start_time: r.start_time.clone(),
        end_time: r.end_time.clone(),
        start_epoch: r.start_epoch,
        end_epoch: r.end_epoch,
        processing_seconds: r.processing_seconds,
        peak_memory_kib: r.peak_memory_kib,
        settings: r.settings.clone(),
        capture: r.capture.clone(),
        counters: r.counters.clone(),
        ml: r.ml.clone(),
        inventory: r.inventory.clone(),
        alerts: Vec::new(),
        alert_types: r.alert_types.clone(),
        publish: r.publish,
        central_config: r.central_config.clone(),
    }
}

/// The chart files `--plots-dir` writes.
pub fn plot_files(report: &Report) -> Vec<(&'static str, String)> {
    let c = charts(report);
    let mut files = vec![
        ("traffic.svg", c.traffic),
        ("alerts_by_type.svg", c.by_type),
        ("alerts_by_severity.svg", c.by_severity),
        ("timeline.svg", c.timeline),
        ("top_talkers.svg", c.talkers),
    ];
    if let Some(ml) = c.ml {
        files.push(("ml_windows.svg", ml));
    }
    files
}

/// `--html`, `--csv-dir` and `--plots-dir` of a finished run; the path
/// that could not be written and why.
pub fn write_files(
    report: &Report,
    html: Option<&std::path::Path>,
    csv_dir: Option<&std::path::Path>,
    plots_dir: Option<&std::path::Path>,
) -> Result<(), (std::path::PathBuf, std::io::Error)> {
    use crate::files::atomic_write;
    if let Some(path) = html {
        let page = page::standalone(&json(report, false));
        atomic_write(path, page.as_bytes()).map_err(|e| (path.to_path_buf(), e))?;
    }
    if let Some(dir) = csv_dir {
        tables::write_dir(dir, report).map_err(|e| (dir.to_path_buf(), e))?;
    }
    if let Some(dir) = plots_dir {
        std::fs::create_dir_all(dir).map_err(|e| (dir.to_path_buf(), e))?;
        for (name, svg) in plot_files(report) {
            let path = dir.join(name);
            atomic_write(&path, svg.as_bytes()).map_err(|e| (path.clone(), e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One pass gives each type's worst severity and entry count, as
    /// counting type by type did.
    #[test]
    fn type_summary_is_each_type_s_worst_severity_and_entries() {
        let mut r: Report =
            serde_json::from_str(include_str!("../../../tests/fixtures/report/replay.json"))
                .unwrap();
        assert!(r.alerts.len() > 3);
        // Make one type's severities differ, and one unknown.
        r.alerts[0].common.severity = "LOW".into();
        let kind = r.alerts[0].common.kind.clone();
        let mut twin = r.alerts[0].clone();
        twin.common.severity = "CRITICAL".into();
        r.alerts.push(twin);
        let mut odd = r.alerts[0].clone();
        odd.common.kind = "SOMETHING_NEW".into();
        odd.common.severity = "SEVERE".into();
        r.alerts.push(odd);
        let summary = type_summary(&r);
        assert_eq!(summary[kind.as_str()].0, "CRITICAL");
        assert_eq!(summary["SOMETHING_NEW"], ("LOW", 1));
        for (k, (severity, entries)) in &summary {
            let of_k: Vec<&AlertEntry> = r.alerts.iter().filter(|a| a.common.kind == *k).collect();
            assert_eq!(*entries, of_k.len(), "{k}");
            let rank = |s: &str| {
                ["CRITICAL", "HIGH", "MEDIUM", "LOW"]
                    .iter()
                    .position(|x| *x == s)
            };
            let worst = of_k
                .iter()
                .filter_map(|a| rank(&a.common.severity))
                .min()
                .unwrap_or(3);
            assert_eq!(rank(severity), Some(worst), "{k}");
        }
        let row = AlertRow::of(&r.alerts[1]);
        assert_eq!(row.csv, tables::alert_line(&r.alerts[1]));
        assert!(row.csv.contains(&row.filter.replace('"', "\"\"")));
    }
}
