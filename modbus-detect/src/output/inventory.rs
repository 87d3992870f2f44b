//! The asset inventory as users read it: devices (put together from their
//! pairs) and master -> slave pairs, in the report's `inventory` section,
//! in `--inventory` files (JSON, and CSV beside it), and compared between
//! two runs by `modbus-detect diff-inventory`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::baseline::{self, Baseline};
use crate::files::{atomic_write, load_file, FileError, ParseError};
use crate::inventory::ranges::Ranges;
use crate::inventory::InventoryResult;
use crate::inventory::{Mac, PairAssets, TABLES};
use crate::modbus::device_id::{object_name, server_id_text};
use crate::modbus::function_name;

use super::iso_time;

/// The `schema` field of an `--inventory` file.
pub const SCHEMA: &str = "modbus-detect-inventory";
/// The version this build writes.
pub const VERSION: u32 = 1;

/// `inventory`: who talked to whom, and what each device is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventorySection {
    pub masters: Vec<IpAddr>,
    pub slaves: Vec<IpAddr>,
    /// Unit ids seen per slave.
    pub unit_ids: BTreeMap<String, Vec<u8>>,
    pub devices: Vec<Device>,
    pub pairs: Vec<InventoryPair>,
    /// Requests of pairs left out because the inventory was full.
    pub pairs_dropped: u64,
    /// Identification objects left out (per-pair or memory bound reached).
    pub identification_dropped: u64,
    /// Frames from a MAC address beyond the 4 kept per side of a pair.
    pub macs_dropped: u64,
}

/// One device: every address that sent or answered Modbus requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    pub ip: IpAddr,
    /// Link-layer addresses its frames came from (a router's when it is
    /// not on the sensor's segment).
    pub macs: Vec<String>,
    /// `master`, `slave`, or both.
    pub roles: Vec<String>,
    /// Unit ids addressed on it (as a slave).
    pub unit_ids: Vec<u8>,
    pub first_seen: Option<String>,
    pub last_seen: Option<String>,
    /// Requests it sent, per function code (as a master).
    pub function_codes_used: BTreeMap<String, u64>,
    /// Requests it received, per function code (as a slave).
    pub function_codes_served: BTreeMap<String, u64>,
    /// 0-based addresses masters read from it (answered with data), per
    /// table, as ranges `first-last` (or one address).
    pub reads: BTreeMap<String, Vec<String>>,
    /// 0-based addresses masters sent writes for, accepted or not, per table.
    pub writes: BTreeMap<String, Vec<String>>,
    /// What it said about itself (FC 43/14, FC 17), when asked.
    pub identification: Option<DeviceIdentification>,
}

/// A device's own description of itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceIdentification {
    pub vendor_name: Option<String>,
    pub product_code: Option<String>,
    /// Major/minor revision.
    pub revision: Option<String>,
    pub product_name: Option<String>,
    pub model_name: Option<String>,
    /// Every Read Device Identification object, by name (`object_0x80`
    /// for private ones).
    pub objects: BTreeMap<String, String>,
    /// Report Server ID data (FC 17), hex.
    pub server_id_hex: Option<String>,
    /// The same as text (vendors often put their product name there).
    pub server_id_text: Option<String>,
}

/// One master -> slave pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryPair {
    pub master: IpAddr,
    pub slave: IpAddr,
    pub requests: u64,
    /// Requests per function code (keys are decimal function codes).
    pub function_codes: BTreeMap<String, u64>,
    pub responses: u64,
    pub exceptions: u64,
    pub unit_ids: Vec<u8>,
    pub first_seen: Option<String>,
    pub last_seen: Option<String>,
    /// Round-trip times of answered requests (quantiles within 1/16).
    pub rtt_ms: Option<RttSummary>,
    pub reads: BTreeMap<String, Vec<String>>,
    pub writes: BTreeMap<String, Vec<String>>,
    /// Address ranges were merged to stay within 16 per table: they cover
    /// every address accessed, and some never accessed.
    pub ranges_coarsened: bool,
    pub master_macs: Vec<String>,
    pub slave_macs: Vec<String>,
    /// With a learned baseline (detection): whether the baseline knows
    /// this pair; `false` is a pair that is new since it was learned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_baseline: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RttSummary {
    pub samples: u64,
    pub mean: f64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// An `--inventory` file: the section, with what it is and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryFile {
    pub schema: String,
    pub version: u32,
    /// The capture file or interface it was taken from.
    pub input: String,
    /// Whether the run was still going when this was written.
    pub complete: bool,
    #[serde(flatten)]
    pub inventory: InventorySection,
}

impl InventoryFile {
    /// The file of `inventory`, taken from `input`; `complete` once the
    /// run has ended.
    pub fn new(input: String, complete: bool, inventory: InventorySection) -> Self {
        InventoryFile {
            schema: SCHEMA.into(),
            version: VERSION,
            input,
            complete,
            inventory,
        }
    }
}

fn mac_text(m: &Mac) -> String {
    let mut s = String::with_capacity(17);
    for (i, b) in m.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn time(ns: u64) -> Option<String> {
    (ns != 0).then(|| iso_time(ns))
}

/// Ranges per table name, tables with none left out.
fn ranges_by_table(r: &[Ranges; 4]) -> BTreeMap<String, Vec<String>> {
    TABLES
        .iter()
        .zip(r)
        .filter(|(_, r)| !r.is_empty())
        .map(|((_, name), r)| (name.to_string(), r.texts()))
        .collect()
}

/// Milliseconds to the microsecond (what the histogram resolves).
fn ms(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn fc_counts(m: &BTreeMap<u8, u64>) -> BTreeMap<String, u64> {
    m.iter().map(|(fc, n)| (fc.to_string(), *n)).collect()
}

/// The section for a run's (or a baseline's) inventory.
pub fn section(inv: &InventoryResult) -> InventorySection {
    build(
        &inv.observed,
        &inv.assets,
        inv.pairs_dropped,
        inv.identification_dropped,
    )
}

/// A baseline file's pairs, units and function codes as an inventory (no
/// assets: a baseline keeps none).
pub fn from_baseline(b: &Baseline) -> InventorySection {
    build(b, &BTreeMap::new(), 0, 0)
}

/// What a device accumulates over its pairs.
#[derive(Default)]
struct DeviceAcc {
    macs: BTreeSet<Mac>,
    master: bool,
    slave: bool,
    units: BTreeSet<u8>,
    first: u64,
    last: u64,
    used: BTreeMap<u8, u64>,
    served: BTreeMap<u8, u64>,
    reads: [Ranges; 4],
    writes: [Ranges; 4],
    objects: BTreeMap<u8, String>,
    server_id: Option<Vec<u8>>,
}

impl DeviceAcc {
    fn seen(&mut self, a: &PairAssets) {
        if a.first_ns != 0 && (self.first == 0 || a.first_ns < self.first) {
            self.first = a.first_ns;
        }
        self.last = self.last.max(a.last_ns);
    }
}

fn build(
    observed: &Baseline,
    assets: &BTreeMap<(IpAddr, IpAddr), PairAssets>,
    pairs_dropped: u64,
    identification_dropped: u64,
) -> InventorySection {
    let file = observed.to_file("");
    let none = PairAssets::default();
    let mut devices: BTreeMap<IpAddr, DeviceAcc> = BTreeMap::new();
    let mut pairs = Vec::with_capacity(file.pairs.len());
    for p in &file.pairs {
        let a = assets.get(&(p.master, p.slave)).unwrap_or(&none);
        let fcs: BTreeMap<u8, u64> = p
            .function_codes
            .0
            .iter()
            .filter_map(|(k, n)| Some((k.parse().ok()?, *n)))
            .collect();
        let master = devices.entry(p.master).or_default();
        master.master = true;
        master.macs.extend(a.master_macs.iter().copied());
        master.seen(a);
        for (fc, n) in &fcs {
            *master.used.entry(*fc).or_default() += n;
        }
        let slave = devices.entry(p.slave).or_default();
        slave.slave = true;
        slave.macs.extend(a.slave_macs.iter().copied());
        slave.seen(a);
        slave.units.extend(a.units());
        for (fc, n) in &fcs {
            *slave.served.entry(*fc).or_default() += n;
        }
        if let Some(acc) = &a.access {
            for (d, s) in slave.reads.iter_mut().zip(&acc.reads) {
                d.merge(s);
            }
            for (d, s) in slave.writes.iter_mut().zip(&acc.writes) {
                d.merge(s);
            }
        }
        if let Some(i) = &a.identification {
            for (id, v) in &i.objects {
                slave.objects.insert(*id, v.clone());
            }
            if i.server_id.is_some() {
                slave.server_id.clone_from(&i.server_id);
            }
        }
        let empty: [Ranges; 4] = Default::default();
        let (reads, writes) = a
            .access
            .as_ref()
            .map_or((&empty, &empty), |x| (&x.reads, &x.writes));
        pairs.push(InventoryPair {
            master: p.master,
            slave: p.slave,
            requests: fcs.values().sum(),
            function_codes: fc_counts(&fcs),
            responses: a.responses,
            exceptions: a.exceptions,
            unit_ids: a.units().collect(),
            first_seen: time(a.first_ns),
            last_seen: time(a.last_ns),
            rtt_ms: (a.rtt.count() > 0).then(|| RttSummary {
                samples: a.rtt.count(),
                mean: ms(a.rtt.mean_ms().unwrap_or(0.0)),
                p50: ms(a.rtt.quantile_ms(0.5).unwrap_or(0.0)),
                p99: ms(a.rtt.quantile_ms(0.99).unwrap_or(0.0)),
                max: ms(a.rtt.max_ms().unwrap_or(0.0)),
            }),
            reads: ranges_by_table(reads),
            writes: ranges_by_table(writes),
            ranges_coarsened: reads.iter().chain(writes.iter()).any(Ranges::coarsened),
            master_macs: a.master_macs.iter().map(mac_text).collect(),
            slave_macs: a.slave_macs.iter().map(mac_text).collect(),
            in_baseline: None,
        });
    }
    // A baseline's units are per slave, not per pair.
    for (slave, units) in &file.unit_ids.0 {
        if let Some(d) = slave
            .parse()
            .ok()
            .and_then(|ip: IpAddr| devices.get_mut(&ip))
        {
            d.units.extend(units.iter().copied());
        }
    }
    let devices = devices
        .into_iter()
        .map(|(ip, d)| Device {
            ip,
            macs: d.macs.iter().map(mac_text).collect(),
            roles: [(d.master, "master"), (d.slave, "slave")]
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, r)| r.to_string())
                .collect(),
            unit_ids: d.units.into_iter().collect(),
            first_seen: time(d.first),
            last_seen: time(d.last),
            function_codes_used: fc_counts(&d.used),
            function_codes_served: fc_counts(&d.served),
            reads: ranges_by_table(&d.reads),
            writes: ranges_by_table(&d.writes),
            identification: identification(&d.objects, d.server_id.as_deref()),
        })
        .collect();
    InventorySection {
        masters: file.masters,
        slaves: file.slaves,
        unit_ids: file.unit_ids.0,
        devices,
        pairs,
        pairs_dropped,
        identification_dropped,
        macs_dropped: assets.values().map(|a| a.macs_dropped).sum(),
    }
}

fn identification(
    objects: &BTreeMap<u8, String>,
    server_id: Option<&[u8]>,
) -> Option<DeviceIdentification> {
    if objects.is_empty() && server_id.is_none() {
        return None;
    }
    let get = |id: u8| objects.get(&id).cloned();
    Some(DeviceIdentification {
        vendor_name: get(0),
        product_code: get(1),
        revision: get(2),
        product_name: get(4),
        model_name: get(5),
        objects: objects
            .iter()
            .map(|(id, v)| {
                let name =
                    object_name(*id).map_or_else(|| format!("object_{id:#04x}"), str::to_string);
                (name, v.clone())
            })
            .collect(),
        server_id_hex: server_id.map(|b| b.iter().map(|x| format!("{x:02x}")).collect()),
        server_id_text: server_id.map(server_id_text),
    })
}

/// Write `--inventory F`: F as JSON, `F` with `.devices.csv` and
/// `.pairs.csv` in place of its extension as CSV. Each file atomically.
pub fn write_files(path: &Path, file: &InventoryFile) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(file).map_err(std::io::Error::other)?;
    atomic_write(path, &json)?;
    atomic_write(
        &csv_path(path, "devices"),
        &devices_csv(&file.inventory.devices)?,
    )?;
    atomic_write(&csv_path(path, "pairs"), &pairs_csv(&file.inventory.pairs)?)
}

/// `inv.json` -> `inv.devices.csv`.
pub fn csv_path(path: &Path, table: &str) -> std::path::PathBuf {
    path.with_extension(format!("{table}.csv"))
}

/// A CSV writer as RFC 4180 has it: CRLF line ends, fields quoted when
/// they hold a comma, a quote or a line break.
pub(crate) fn csv_writer() -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new())
}

/// A cell a spreadsheet must not run as a formula: text from the wire
/// (identification strings) could start with `=`, `+`, `-` or `@`.
pub(crate) fn cell(s: &str) -> String {
    match s.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{s}"),
        _ => s.to_string(),
    }
}

fn ranges_text(r: &BTreeMap<String, Vec<String>>, table: &str) -> String {
    r.get(table).map(|v| v.join(" ")).unwrap_or_default()
}

fn join<T: ToString>(v: &[T]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

fn fcs_text(m: &BTreeMap<String, u64>) -> String {
    m.iter()
        .map(|(fc, n)| format!("{fc}:{n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Column names of `devices.csv` (documented in the README; stable).
pub const DEVICE_COLUMNS: [&str; 20] = [
    "ip",
    "macs",
    "roles",
    "unit_ids",
    "first_seen",
    "last_seen",
    "function_codes_used",
    "function_codes_served",
    "coils_read",
    "discrete_inputs_read",
    "input_registers_read",
    "holding_registers_read",
    "coils_written",
    "holding_registers_written",
    "vendor_name",
    "product_code",
    "revision",
    "product_name",
    "model_name",
    "server_id_hex",
];

pub(crate) fn devices_csv(devices: &[Device]) -> std::io::Result<Vec<u8>> {
    let mut w = csv_writer();
    w.write_record(DEVICE_COLUMNS)?;
    for d in devices {
        let id = d.identification.clone().unwrap_or_default();
        let opt = |s: &Option<String>| cell(s.as_deref().unwrap_or(""));
        w.write_record([
            d.ip.to_string(),
            join(&d.macs),
            join(&d.roles),
            join(&d.unit_ids),
            d.first_seen.clone().unwrap_or_default(),
            d.last_seen.clone().unwrap_or_default(),
            fcs_text(&d.function_codes_used),
            fcs_text(&d.function_codes_served),
            ranges_text(&d.reads, "coils"),
            ranges_text(&d.reads, "discrete_inputs"),
            ranges_text(&d.reads, "input_registers"),
            ranges_text(&d.reads, "holding_registers"),
            ranges_text(&d.writes, "coils"),
            ranges_text(&d.writes, "holding_registers"),
            opt(&id.vendor_name),
            opt(&id.product_code),
            opt(&id.revision),
            opt(&id.product_name),
            opt(&id.model_name),
            id.server_id_hex.unwrap_or_default(),
        ])?;
    }
    w.into_inner().map_err(|e| e.into_error())
}

/// Column names of `pairs.csv` (documented in the README; stable).
pub const PAIR_COLUMNS: [&str; 21] = [
    "master",
    "slave",
    "requests",
    "responses",
    "exceptions",
    "function_codes",
    "unit_ids",
    "first_seen",
    "last_seen",
    "rtt_samples",
    "rtt_mean_ms",
    "rtt_p50_ms",
    "rtt_p99_ms",
    "rtt_max_ms",
    "coils_read",
    "discrete_inputs_read",
    "input_registers_read",
    "holding_registers_read",
    "coils_written",
    "holding_registers_written",
    "ranges_coarsened",
];

pub(crate) fn pairs_csv(pairs: &[InventoryPair]) -> std::io::Result<Vec<u8>> {
    let mut w = csv_writer();
    w.write_record(PAIR_COLUMNS)?;
    for p in pairs {
        let rtt = |f: fn(&RttSummary) -> f64| {
            p.rtt_ms
                .as_ref()
                .map(|r| format!("{:.3}", f(r)))
                .unwrap_or_default()
        };
        w.write_record([
            p.master.to_string(),
            p.slave.to_string(),
            p.requests.to_string(),
            p.responses.to_string(),
            p.exceptions.to_string(),
            fcs_text(&p.function_codes),
            join(&p.unit_ids),
            p.first_seen.clone().unwrap_or_default(),
            p.last_seen.clone().unwrap_or_default(),
            p.rtt_ms
                .as_ref()
                .map(|r| r.samples.to_string())
                .unwrap_or_default(),
            rtt(|r| r.mean),
            rtt(|r| r.p50),
            rtt(|r| r.p99),
            rtt(|r| r.max),
            ranges_text(&p.reads, "coils"),
            ranges_text(&p.reads, "discrete_inputs"),
            ranges_text(&p.reads, "input_registers"),
            ranges_text(&p.reads, "holding_registers"),
            ranges_text(&p.writes, "coils"),
            ranges_text(&p.writes, "holding_registers"),
            p.ranges_coarsened.to_string(),
        ])?;
    }
    w.into_inner().map_err(|e| e.into_error())
}

/// Read an inventory to compare: an `--inventory` file, a report (its
/// `inventory` section) or a baseline file.
pub fn load(path: &Path) -> Result<InventorySection, FileError> {
    load_file(path, parse)
}

fn parse(text: &str) -> Result<InventorySection, ParseError> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(ParseError::Json)?;
    match value.get("schema").and_then(serde_json::Value::as_str) {
        Some(SCHEMA) => serde_json::from_value::<InventoryFile>(value)
            .map(|f| f.inventory)
            .map_err(ParseError::Json),
        Some(baseline::SCHEMA) => Baseline::parse(text).map(|b| from_baseline(&b)),
        _ => match value.get("inventory") {
            Some(inv) => serde_json::from_value(inv.clone()).map_err(ParseError::Json),
            None => Err(ParseError::Content(
                "neither an inventory file, a report nor a baseline file".into(),
            )),
        },
    }
}

/// What changed from inventory `a` (the reference: a baseline's, or an
/// earlier run's) to `b`: one line per difference, new things first.
pub fn diff(a: &InventorySection, b: &InventorySection) -> Vec<String> {
    let mut out = Vec::new();
    let devs = |s: &InventorySection| -> BTreeMap<IpAddr, Device> {
        s.devices.iter().map(|d| (d.ip, d.clone())).collect()
    };
    let (da, db) = (devs(a), devs(b));
    for (ip, d) in &db {
        let Some(old) = da.get(ip) else {
            out.push(format!("new device {ip} ({})", d.roles.join(", ")));
            continue;
        };
        for r in d.roles.iter().filter(|r| !old.roles.contains(r)) {
            out.push(format!("new role {ip}: {r}"));
        }
        for u in d.unit_ids.iter().filter(|u| !old.unit_ids.contains(u)) {
            out.push(format!("new unit id {ip}: {u}"));
        }
        for m in d.macs.iter().filter(|m| !old.macs.contains(m)) {
            if !old.macs.is_empty() {
                out.push(format!(
                    "new MAC {ip}: {m} (before: {})",
                    old.macs.join(", ")
                ));
            }
        }
        if let (Some(x), Some(y)) = (&old.identification, &d.identification) {
            for (k, v) in &y.objects {
                match x.objects.get(k) {
                    Some(w) if w != v => {
                        out.push(format!("changed identification {ip} {k}: {w:?} -> {v:?}"))
                    }
                    _ => {}
                }
            }
            if x.server_id_hex.is_some() && x.server_id_hex != y.server_id_hex {
                out.push(format!(
                    "changed identification {ip} server_id: {} -> {}",
                    x.server_id_hex.as_deref().unwrap_or(""),
                    y.server_id_hex.as_deref().unwrap_or("")
                ));
            }
        }
    }
    let pairs = |s: &InventorySection| -> BTreeMap<(IpAddr, IpAddr), BTreeMap<String, u64>> {
        s.pairs
            .iter()
            .map(|p| ((p.master, p.slave), p.function_codes.clone()))
            .collect()
    };
    let (pa, pb) = (pairs(a), pairs(b));
    for ((m, s), fcs) in &pb {
        match pa.get(&(*m, *s)) {
            None => out.push(format!(
                "new pair {m} -> {s} (function codes {})",
                fc_list(fcs)
            )),
            Some(old) => {
                for fc in fcs.keys().filter(|fc| !old.contains_key(*fc)) {
                    let name = fc.parse().map_or("", function_name);
                    out.push(format!("new function code {m} -> {s}: {fc} ({name})"));
                }
            }
        }
    }
    for ip in da.keys().filter(|ip| !db.contains_key(ip)) {
        out.push(format!("gone device {ip}"));
    }
    for (m, s) in pa.keys().filter(|k| !pb.contains_key(k)) {
        out.push(format!("gone pair {m} -> {s}"));
    }
    out
}

fn fc_list(fcs: &BTreeMap<String, u64>) -> String {
    fcs.keys().cloned().collect::<Vec<_>>().join(", ")
}
