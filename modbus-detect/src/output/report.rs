//! The JSON report: what was read, what was found, sorted by severity.
//!
//! [`Report`] is its schema. Field names are an interface: users' scripts
//! and SIEM parsers depend on them. Add fields; never rename or remove one.

use std::net::IpAddr;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use super::inventory::InventorySection;
use crate::alert::{
    sort_for_report, Aggregate, Alert, AlertKind, Answer, Detail, Evasion, FloodReason, Severity,
};
use crate::config::{DetectConfig, Mode, ThresholdValues};
use crate::counters::Counters;
use crate::detect::protocol::ReservedReason;
use crate::flow::policy::TargetPolicy;
use crate::knowledge::{knowledge, TypeInfo};
use crate::modbus::{exception_name, function_name};
use crate::shard::ShardResult;
use crate::source::xdp::busy_poll::BusyPollState;
use crate::source::xdp::XdpCounters;
use crate::sys::caps::Privileges;

use super::{epoch_secs, iso_time};

/// Everything the shards found, merged in a deterministic order: the
/// shards' own results, added up (see [`ShardResult::merge`]).
pub type Summary = ShardResult;

impl ShardResult {
    /// Merge the dispatcher's counters and every shard's results; the
    /// alerts sorted for the report.
    pub fn merge(dispatch: &Counters, shards: Vec<ShardResult>) -> Summary {
        let mut s = Summary {
            counters: dispatch.clone(),
            ..Summary::default()
        };
        for r in shards {
            s.counters.merge(&r.counters);
            s.alerts.extend(r.alerts);
            for (a, b) in s.raised.iter_mut().zip(r.raised) {
                *a += b;
            }
            for (a, b) in s.raised_by_severity.iter_mut().zip(r.raised_by_severity) {
                *a += b;
            }
            s.alerts_dropped += r.alerts_dropped;
            s.eve_suppressed += r.eve_suppressed;
            s.rule_state_evicted += r.rule_state_evicted;
            s.ml.merge(&r.ml);
            s.ml_samples.extend(r.ml_samples);
            s.learned_registers_dropped += r.learned_registers_dropped;
            s.learned_windows_dropped += r.learned_windows_dropped;
            s.inventory.merge(r.inventory);
            for t in [r.first_ns, r.last_ns].into_iter().flatten() {
                s.first_ns = Some(s.first_ns.map_or(t, |f| f.min(t)));
                s.last_ns = Some(s.last_ns.map_or(t, |l| l.max(t)));
            }
        }
        sort_for_report(&mut s.alerts);
        s
    }

    /// Alerts raised at or above `severity`.
    pub fn raised_at_or_above(&self, severity: Severity) -> u64 {
        Severity::ALL
            .iter()
            .filter(|s| **s >= severity)
            .map(|s| self.raised_by_severity[*s as usize])
            .sum()
    }
}

/// How the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Complete,
    Interrupted,
    InputError,
    /// A report written while live capture goes on (`--report-interval`).
    Running,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Complete => "complete",
            Status::Interrupted => "interrupted",
            Status::InputError => "input_error",
            Status::Running => "running",
        }
    }
}

/// Facts about the run that the shards do not know.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// "pcap" or "interface".
    pub input_kind: &'static str,
    pub input: String,
    /// "pcap", "pcapng", "af_xdp".
    pub format: String,
    pub threads: usize,
    pub status: Status,
    pub error: Option<String>,
    pub elapsed_s: f64,
    pub limits_file: Option<String>,
    pub baseline_file: Option<String>,
    pub eve_file: Option<String>,
    /// Lines written to the EVE stream (alerts and stats events).
    pub eve_lines: u64,
    /// Live capture: XDP mode, XDP counters, per-queue socket statistics.
    pub capture: Option<CaptureSection>,
    /// A capture set's files.
    pub files: Vec<InputFile>,
    /// `--publish`: the publisher's figures at the end.
    pub publish: Option<crate::output::publish::Published>,
}

/// The report file. This type is the schema: the JSON written, the tests
/// and anything else that reads a report use it, and
/// `tests/tests/report_schema.rs` pins its field names against checked-in
/// reports, so that a rename fails CI. Add fields; never rename or remove
/// one: users' scripts and SIEM parsers depend on them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// "modbus-detect".
    pub tool: String,
    pub version: String,
    pub status: Status,
    /// Why the input stopped early (`status` "input_error").
    pub error: Option<String>,
    pub input: InputSection,
    pub mode: ModeName,
    /// Capture times of the first and last Modbus frames.
    pub start_time: Option<String>,
    pub end_time: Option<String>,
    pub start_epoch: Option<f64>,
    pub end_epoch: Option<f64>,
    pub processing_seconds: f64,
    /// The process's peak resident memory so far (Linux `VmHWM`), KiB:
    /// the figure the memory bounds are about.
    pub peak_memory_kib: Option<u64>,
    pub settings: Settings,
    /// Live capture only.
    pub capture: Option<CaptureSection>,
    pub counters: CounterSection,
    pub ml: MlSection,
    pub inventory: InventorySection,
    /// Aggregated alerts, most severe first (see `alert::sort_for_report`).
    pub alerts: Vec<AlertEntry>,
    /// For each alert type raised: what it means, what to check, its
    /// ATT&CK for ICS techniques (`data/alert_types.toml`).
    pub alert_types: IndexMap<String, TypeInfo>,
    /// `--publish`: events the streaming engine acknowledged, those that
    /// wait in the spool, those dropped (queue full, spool full).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<crate::output::publish::Published>,
    /// `--config-from`: where the central settings come from, the items
    /// taken now, and each change seen (applied or refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub central_config: Option<crate::config::central::CentralReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSection {
    /// "pcap" or "interface".
    pub kind: String,
    pub path: String,
    pub format: String,
    /// A capture set: its files in replay order (frames are numbered
    /// across the set, as `mergecap -a` of them in this order numbers
    /// them), and the files left out with `--skip-bad-files`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<InputFile>,
}

/// One file of a capture set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputFile {
    pub path: String,
    /// "pcap" or "pcapng"; empty for a file left out.
    pub format: String,
    /// Its first frame's number in the set (0 when none was read).
    pub first_frame: u64,
    pub frames: u64,
    /// Left out (`--skip-bad-files`), or read: why it was not read whole.
    pub skipped: bool,
    pub error: Option<String>,
}

/// What the run did with the traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModeName {
    Detect,
    Baseline,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub ports: Vec<u16>,
    /// Shards.
    pub threads: usize,
    pub authorized_masters: Option<Vec<String>>,
    pub authorized_writers: Option<Vec<String>>,
    pub register_limits_file: Option<String>,
    pub baseline_file: Option<String>,
    pub eve_file: Option<String>,
    /// The values the rules used (data/thresholds.toml and the changes).
    pub thresholds: ThresholdValues,
    pub limits: LimitSettings,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    pub max_flows: usize,
    pub flow_idle_timeout_s: f64,
    pub max_pending_per_flow: usize,
    pub max_alert_entries: usize,
}

/// Live capture: what the capture path did (`capture`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureSection {
    /// "native" or "skb".
    pub xdp_mode: String,
    pub xdp: XdpCounters,
    pub queues: Vec<QueueStats>,
    pub shards: Vec<ShardDrops>,
    pub link_down_events: u64,
    pub link_down_seconds: f64,
    /// Periodic `--inventory` files skipped (a shard did not answer in time).
    pub inventory_snapshots_missed: u64,
    pub privileges: Privileges,
    pub busy_poll: BusyPollState,
}

/// Per-queue figures for the report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueStats {
    pub queue: u32,
    /// "zero-copy" or "copy".
    pub bind: String,
    pub frames: u64,
    pub bytes: u64,
    pub shard_ring_full_drops: u64,
    /// `shard_ring_full_drops` by shard (index = shard).
    pub shard_ring_full_drops_by_shard: Vec<u64>,
    pub rx_dropped: u64,
    pub rx_ring_full: u64,
    pub fill_ring_empty: u64,
    pub rx_invalid_descs: u64,
}

/// Frames dropped because one shard's ring was full (all queues).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardDrops {
    pub shard: usize,
    pub ring_full_drops: u64,
}

/// `counters`: everything counted, with the alert totals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CounterSection {
    #[serde(flatten)]
    pub counters: Counters,
    /// Frames skipped before the shards, by reason.
    pub skipped: IndexMap<String, u64>,
    pub alerts_total: u64,
    pub alerts_by_type: IndexMap<String, u64>,
    pub alerts_by_severity: IndexMap<String, u64>,
    /// Entries in `alerts`.
    pub alert_entries: usize,
    pub alerts_dropped_table_full: u64,
    pub eve_lines_suppressed: u64,
    /// Lines written to the EVE stream, alerts and stats events, over
    /// every file it was reopened as (SIGHUP).
    pub eve_lines_written: u64,
    pub rule_state_evicted: u64,
    pub inventory_pairs_dropped: u64,
    /// Baseline mode: values of registers left out (the learning bound of
    /// `max_learned_registers` was reached) ...
    pub learned_registers_dropped: u64,
    /// ... and training windows left out (`max_learned_windows`).
    pub learned_windows_dropped: u64,
}

/// `ml`: what the ML models were trained on, or what they judged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MlSection {
    Learned(MlLearned),
    Judged(MlJudged),
    Off(MlOff),
}

/// Baseline mode: the training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlLearned {
    pub window_s: f64,
    pub windows_learned: usize,
    pub models_trained: bool,
    pub min_windows: usize,
    pub iforest_threshold: Option<f64>,
    pub ocsvm_threshold: Option<f64>,
}

/// Detection with `--ml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlJudged {
    /// Always true.
    pub enabled: bool,
    pub window_s: f64,
    pub training_windows: usize,
    pub windows_judged: u64,
    pub anomalous_windows: u64,
    pub iforest_threshold: f64,
    pub ocsvm_threshold: f64,
}

/// Detection without `--ml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlOff {
    /// Always false.
    pub enabled: bool,
}

/// The fields every alert record has (report entries and EVE lines).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertCommon {
    /// The alert type (`ROGUE_MODBUS_MASTER`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    pub severity: String,
    pub rule_id: String,
    pub src_ip: IpAddr,
    pub src_port: u16,
    pub dst_ip: IpAddr,
    pub dst_port: u16,
    /// The unit id and function code of the message it was raised on;
    /// `null` for alerts about many messages or none (0 is a real unit id).
    pub unit_id: Option<u8>,
    pub function_code: Option<u8>,
    pub function_name: Option<String>,
    /// The rule's fixed message (SIEMs group by it).
    pub signature: String,
    /// ATT&CK for ICS technique ids (see the report's `alert_types`).
    pub mitre_techniques: Vec<String>,
}

/// One aggregated alert of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertEntry {
    #[serde(flatten)]
    pub common: AlertCommon,
    /// Events folded into this entry.
    pub count: u64,
    pub first_seen: String,
    pub last_seen: String,
    pub first_seen_epoch: f64,
    pub last_seen_epoch: f64,
    pub description: String,
    #[serde(flatten)]
    pub details: AlertDetails,
    /// The value of the last event, when the entry folds several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_value: Option<i64>,
}

/// An alert type's details: register, value, limits, statistics. A field
/// an alert type does not have is absent; one it has but could not fill
/// (a value that is not a finite number, a sub-function that was not
/// there) is `null`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertDetails {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub register: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "nullable")]
    pub sub_function: Option<Option<u16>>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "nullable")]
    pub mei_type: Option<Option<u8>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub register_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub register_unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<RangeLimits>,
    /// "write_request" or "read_response".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_in: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_value: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "nullable")]
    pub rate_per_s: Option<Option<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_mean_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_std_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sigmas: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception_code: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// PLC_PROGRAM_OPERATION: the operation, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// EVASION_ATTEMPT: the policy of the receiver's stack that chose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_requests: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outstanding_requests: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pair_in_baseline: Option<bool>,
    /// ML_ANOMALY: the original pipeline's threat label of the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threat_label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_requests: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "nullable")]
    pub iforest_score: Option<Option<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "nullable")]
    pub iforest_threshold: Option<Option<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "nullable")]
    pub ocsvm_decision: Option<Option<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "nullable")]
    pub ocsvm_threshold: Option<Option<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub most_unusual_feature: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "nullable")]
    pub feature_z: Option<Option<f64>>,
    /// Raised on a write: what it wrote and what the PLC answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write: Option<WriteDetail>,
}

/// An alert's write: the table, the addresses, the first values, and the
/// PLC's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteDetail {
    /// `coils` or `holding_registers`.
    pub table: String,
    /// 0-based start address, and how many registers or coils.
    pub address: u16,
    pub count: u16,
    /// The first values written (at most 8; coils as 0 or 1; none for a
    /// mask write, whose result depends on the register).
    pub values: Vec<u16>,
    /// `accepted` (a normal response), `exception`, `none` (no response
    /// within the transaction timeout or before the connection ended),
    /// `unknown` (not waited for: the hold was full).
    pub answer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception_code: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception_name: Option<String>,
    /// Frame numbers of the request and of the response (replay: as
    /// Wireshark numbers them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_frame: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_frame: Option<u64>,
}

fn write_detail(a: &Alert) -> Option<WriteDetail> {
    let w = a.write?;
    let code = match w.answer {
        Answer::Exception(c) => Some(c),
        _ => None,
    };
    Some(WriteDetail {
        table: crate::inventory::TABLES
            .iter()
            .find(|(t, _)| *t == w.table)
            .map_or("holding_registers", |(_, n)| n)
            .to_string(),
        address: w.start,
        count: w.count,
        values: w.values[..usize::from(w.shown)].to_vec(),
        answer: w.answer.name().into(),
        exception_code: code,
        exception_name: code.map(|c| exception_name(c).to_string()),
        request_frame: a.stamp.map(|s| s.frame),
        response_frame: (w.response_frame > 0).then_some(w.response_frame),
    })
}

/// A register's safe range (`null`: no bound on that side).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeLimits {
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// A field that may be absent (outer `None`) or `null` (`Some(None)`).
mod nullable {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer, T: Serialize>(
        v: &Option<Option<T>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(inner) => inner.serialize(s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(d).map(Some)
    }
}

/// The report of a run.
pub fn build(summary: &Summary, info: &RunInfo, cfg: &DetectConfig) -> Report {
    // The settings in force now (central settings may have changed them).
    let central_config = cfg.updates.as_ref().map(|u| u.central());
    let now = cfg.updates.as_ref().map(|u| u.current());
    let cfg = now.as_deref().unwrap_or(cfg);
    let c = &summary.counters;
    let counters = CounterSection {
        counters: c.clone(),
        skipped: c
            .skipped_by_name()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        alerts_total: summary.raised.iter().sum(),
        alerts_by_type: AlertKind::ALL
            .iter()
            .map(|k| (k.name().to_string(), summary.raised[*k as usize]))
            .collect(),
        alerts_by_severity: Severity::ALL
            .iter()
            .map(|s| {
                (
                    s.name().to_string(),
                    summary.raised_by_severity[*s as usize],
                )
            })
            .collect(),
        alert_entries: summary.alerts.len(),
        alerts_dropped_table_full: summary.alerts_dropped,
        eve_lines_suppressed: summary.eve_suppressed,
        eve_lines_written: info.eve_lines,
        rule_state_evicted: summary.rule_state_evicted,
        inventory_pairs_dropped: summary.inventory.pairs_dropped,
        learned_registers_dropped: summary.learned_registers_dropped,
        learned_windows_dropped: summary.learned_windows_dropped,
    };
    Report {
        tool: "modbus-detect".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        status: info.status,
        error: info.error.clone(),
        input: InputSection {
            kind: info.input_kind.into(),
            path: info.input.clone(),
            format: info.format.clone(),
            files: info.files.clone(),
        },
        mode: match cfg.mode {
            Mode::Detect => ModeName::Detect,
            Mode::Learn => ModeName::Baseline,
        },
        start_time: summary.first_ns.map(iso_time),
        end_time: summary.last_ns.map(iso_time),
        start_epoch: summary.first_ns.map(epoch_secs),
        end_epoch: summary.last_ns.map(epoch_secs),
        processing_seconds: info.elapsed_s,
        peak_memory_kib: peak_memory_kib(),
        settings: settings(info, cfg),
        capture: info.capture.clone(),
        counters,
        ml: ml_section(summary, cfg),
        inventory: inventory_section(summary, cfg),
        alerts: summary.alerts.iter().map(|a| alert_entry(a, cfg)).collect(),
        alert_types: AlertKind::ALL
            .iter()
            .filter(|k| summary.raised[**k as usize] > 0)
            .map(|k| (k.name().to_string(), knowledge().of(*k).clone()))
            .collect(),
        publish: info.publish,
        central_config,
    }
}

/// What the ML models did: in baseline mode, what they were trained on; in
/// detection, how many windows they judged and found unlike the baseline.
fn ml_section(summary: &Summary, cfg: &DetectConfig) -> MlSection {
    match cfg.mode {
        Mode::Learn => {
            let models = summary.inventory.observed.models();
            MlSection::Learned(MlLearned {
                window_s: cfg.ml_window_ns as f64 / 1e9,
                windows_learned: summary.ml_samples.len(),
                models_trained: models.is_some(),
                min_windows: crate::ml::models::MIN_WINDOWS,
                iforest_threshold: models.map(|m| m.iforest_threshold),
                ocsvm_threshold: models.map(|m| m.ocsvm_threshold),
            })
        }
        Mode::Detect => {
            let models = cfg
                .baseline
                .as_ref()
                .and_then(|b| b.models())
                .filter(|_| cfg.ml);
            match models {
                None => MlSection::Off(MlOff { enabled: false }),
                Some(m) => MlSection::Judged(MlJudged {
                    enabled: true,
                    window_s: m.window_s,
                    training_windows: m.training_windows,
                    windows_judged: summary.ml.windows,
                    anomalous_windows: summary.ml.anomalous,
                    iforest_threshold: m.iforest_threshold,
                    ocsvm_threshold: m.ocsvm_threshold,
                }),
            }
        }
    }
}

/// The inventory, its pairs marked against the baseline detection used.
fn inventory_section(summary: &Summary, cfg: &DetectConfig) -> super::inventory::InventorySection {
    let mut inv = super::inventory::section(&summary.inventory);
    if let (Mode::Detect, Some(b)) = (cfg.mode, &cfg.baseline) {
        for p in &mut inv.pairs {
            p.in_baseline = Some(b.pair_id(p.master, p.slave).is_some());
        }
    }
    inv
}

fn settings(info: &RunInfo, cfg: &DetectConfig) -> Settings {
    let list = |s: &Option<crate::config::addrs::AddrSet>| s.as_ref().map(|s| s.entries());
    Settings {
        ports: cfg.ports.clone(),
        threads: info.threads,
        authorized_masters: list(&cfg.authorized_masters),
        authorized_writers: list(&cfg.authorized_writers),
        register_limits_file: info.limits_file.clone(),
        baseline_file: info.baseline_file.clone(),
        eve_file: info.eve_file.clone(),
        thresholds: ThresholdValues::from(&cfg.thresholds),
        limits: LimitSettings {
            max_flows: cfg.limits.max_flows,
            flow_idle_timeout_s: cfg.limits.flow_idle_timeout_ns as f64 / 1e9,
            max_pending_per_flow: cfg.limits.max_pending_per_flow,
            max_alert_entries: cfg.limits.max_alert_keys,
        },
    }
}

/// One report entry for an aggregated alert.
pub fn alert_entry(agg: &Aggregate, cfg: &DetectConfig) -> AlertEntry {
    let a = &agg.first;
    AlertEntry {
        common: common_fields(a, agg.severity),
        count: agg.count,
        first_seen: iso_time(a.ts_ns),
        last_seen: iso_time(agg.last.ts_ns),
        first_seen_epoch: epoch_secs(a.ts_ns),
        last_seen_epoch: epoch_secs(agg.last.ts_ns),
        description: describe(a, cfg),
        details: details(a, cfg),
        last_value: agg.last.value.filter(|_| agg.count > 1),
    }
}

/// Fields every alert record has (report and EVE).
pub fn common_fields(a: &Alert, severity: Severity) -> AlertCommon {
    AlertCommon {
        kind: a.kind.name().into(),
        severity: severity.name().into(),
        rule_id: a.kind.rule_id().into(),
        src_ip: a.src,
        src_port: a.src_port,
        dst_ip: a.dst,
        dst_port: a.dst_port,
        unit_id: a.tx.map(|_| a.unit),
        function_code: a.tx.map(|_| a.function_code),
        function_name: a.tx.map(|_| function_name(a.function_code).into()),
        signature: knowledge().of(a.kind).signature.clone(),
        mitre_techniques: knowledge()
            .of(a.kind)
            .techniques
            .iter()
            .map(|t| t.id.clone())
            .collect(),
    }
}

/// The type's details: register, value, limits, statistics.
pub fn details(a: &Alert, cfg: &DetectConfig) -> AlertDetails {
    let mut d = AlertDetails {
        register: a.register,
        value: a.value,
        write: write_detail(a),
        ..AlertDetails::default()
    };
    let limit = |idx: u32| cfg.limits_file.as_ref().and_then(|l| l.get(idx));
    match a.detail {
        Detail::None => {}
        Detail::Enumeration { sub_function, mei } => {
            d.sub_function = Some(sub_function);
            d.mei_type = Some(mei);
        }
        Detail::Range {
            limit: idx,
            min,
            max,
            from_response,
        } => {
            if let Some(l) = limit(idx) {
                d.register_name = Some(l.name.clone());
                d.register_unit = Some(l.unit.clone());
            }
            d.limits = Some(RangeLimits {
                min: finite(min),
                max: finite(max),
            });
            d.observed_in = Some(
                if from_response {
                    "read_response"
                } else {
                    "write_request"
                }
                .into(),
            );
        }
        Detail::Rate {
            limit: idx,
            previous,
            interval_ns,
            rate,
            max_rate,
        } => {
            if let Some(l) = limit(idx) {
                d.register_name = Some(l.name.clone());
                d.register_unit = Some(l.unit.clone());
            }
            d.previous_value = Some(previous);
            d.interval_s = Some(interval_ns as f64 / 1e9);
            d.rate_per_s = Some(finite(rate));
            d.max_rate = Some(max_rate);
        }
        Detail::Timing {
            interval_ns,
            mean_s,
            std_s,
            sigmas,
        } => {
            d.interval_s = Some(interval_ns as f64 / 1e9);
            d.baseline_mean_s = Some(mean_s);
            d.baseline_std_s = Some(std_s);
            d.sigmas = Some(sigmas);
        }
        Detail::Exception { code, in_window } => {
            d.exception_code = Some(code);
            d.exception_name = Some(exception_name(code).into());
            d.threshold = Some(in_window);
            let window = if a.kind == AlertKind::SlaveBusyAckDelay {
                cfg.thresholds.busy_window_ns
            } else {
                cfg.thresholds.exception_burst_window_ns
            };
            d.window_s = Some(window as f64 / 1e9);
        }
        Detail::Malformed { reason } => d.reason = Some(reason.into()),
        Detail::Evasion { technique, policy } => {
            d.reason = Some(technique.name().into());
            d.target_policy = Some(policy.name().into());
        }
        Detail::Program { op } => d.operation = Some(op.name().into()),
        Detail::Scan { distinct, refused } => {
            d.threshold = Some(distinct);
            d.reason = Some(if refused { "refused" } else { "asked" }.into());
            d.window_s = Some(cfg.thresholds.scan_window_ns as f64 / 1e9);
        }
        Detail::Reserved { reason } => match reason {
            ReservedReason::Code => d.reason = Some("reserved_function_code".into()),
            ReservedReason::Diagnostic(sub) => {
                d.reason = Some("reserved_diagnostic_sub_function".into());
                d.sub_function = Some(Some(sub));
            }
            ReservedReason::Mei(mei) => {
                d.reason = Some("reserved_mei_type".into());
                d.mei_type = Some(Some(mei));
            }
        },
        Detail::Flood {
            reason,
            run,
            interval_ns,
        } => {
            match reason {
                FloodReason::BackToBack => {
                    d.reason = Some("back_to_back".into());
                    d.consecutive_requests = Some(run);
                }
                FloodReason::Outstanding => {
                    d.reason = Some("outstanding".into());
                    d.outstanding_requests = Some(run);
                }
            }
            d.interval_ms = Some(interval_ns as f64 / 1e6);
        }
        Detail::NewFunctionCode { pair_in_baseline } => {
            d.pair_in_baseline = Some(pair_in_baseline);
        }
        Detail::Ml {
            iforest_score,
            iforest_threshold,
            ocsvm_decision,
            ocsvm_threshold,
            feature,
            z,
            window_start_ns,
            requests,
            label,
        } => {
            d.threat_label = Some(label.name().into());
            d.window_start = Some(iso_time(window_start_ns));
            d.window_requests = Some(requests);
            d.iforest_score = Some(finite(iforest_score));
            d.iforest_threshold = Some(finite(iforest_threshold));
            d.ocsvm_decision = Some(finite(ocsvm_decision));
            d.ocsvm_threshold = Some(finite(ocsvm_threshold));
            d.most_unusual_feature = Some(feature_name(feature).into());
            d.feature_z = Some(finite(z));
        }
    }
    d
}

/// `VmHWM` of `/proc/self/status`: the peak resident set of this
/// process's own memory (unlike `ru_maxrss`, which keeps what the parent
/// had when it was spawned).
fn peak_memory_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn feature_name(i: u8) -> &'static str {
    crate::ml::features::FEATURE_NAMES
        .get(usize::from(i))
        .copied()
        .unwrap_or("unknown")
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// A sentence an operator can act on.
pub fn describe(a: &Alert, cfg: &DetectConfig) -> String {
    let fc = format!("FC {} {}", a.function_code, function_name(a.function_code));
    let reg_name = |idx: u32| {
        cfg.limits_file
            .as_ref()
            .and_then(|l| l.get(idx))
            .map(|l| format!(" ({})", l.name))
            .unwrap_or_default()
    };
    match a.detail {
        _ if a.kind == AlertKind::RogueMaster => format!(
            "{} is not an authorized master but sent {fc} to slave {} unit {}",
            a.src, a.dst, a.unit
        ),
        _ if a.kind == AlertKind::UnauthorizedWrite => format!(
            "{} is not an authorized writer but sent a write ({fc}) to slave {} unit {}",
            a.src, a.dst, a.unit
        ),
        Detail::Range {
            limit,
            min,
            max,
            from_response,
        } => format!(
            "register {}{} {} value {} outside its safe range [{}, {}]",
            a.register.unwrap_or(0),
            reg_name(limit),
            if from_response { "read back with" } else { "written with" },
            a.value.unwrap_or(0),
            min,
            max
        ),
        Detail::Rate {
            limit,
            previous,
            interval_ns,
            rate,
            max_rate,
        } => format!(
            "register {}{} changed from {previous} to {} in {:.3} s ({rate:.2}/s, limit {max_rate}/s)",
            a.register.unwrap_or(0),
            reg_name(limit),
            a.value.unwrap_or(0),
            interval_ns as f64 / 1e9
        ),
        Detail::Enumeration { sub_function, mei } => {
            let what = match (sub_function, mei) {
                (Some(1), _) => ", sub-function 1 Restart Communications".to_string(),
                (Some(4), _) => ", sub-function 4 Force Listen Only Mode".to_string(),
                (Some(10), _) => ", sub-function 10 Clear Counters".to_string(),
                (Some(s), _) => format!(", sub-function {s}"),
                (_, Some(14)) => ", MEI 14 Read Device Identification".to_string(),
                (_, Some(m)) => format!(", MEI {m}"),
                _ => String::new(),
            };
            format!(
                "{} sent a diagnostic/identification request ({fc}{what}) to slave {} unit {}",
                a.src, a.dst, a.unit
            )
        }
        Detail::NewFunctionCode { pair_in_baseline } => {
            if pair_in_baseline {
                format!(
                    "{} used {fc} on slave {}, never seen for this pair in the baseline",
                    a.src, a.dst
                )
            } else {
                format!(
                    "{} sent {fc} to slave {}: this master-slave pair is not in the baseline",
                    a.src, a.dst
                )
            }
        }
        Detail::Timing {
            interval_ns,
            mean_s,
            std_s,
            sigmas,
        } => format!(
            "{} -> {}: {:.6} s between requests, baseline {mean_s:.6} s +- {std_s:.6} s ({sigmas:.1} sigma)",
            a.src,
            a.dst,
            interval_ns as f64 / 1e9
        ),
        Detail::Exception { code, in_window } if a.kind == AlertKind::SlaveBusyAckDelay => format!(
            "slave {} unit {} answered {in_window} or more requests within {} s with exception {code} {} (latest to {})",
            a.src,
            a.unit,
            cfg.thresholds.busy_window_ns / 1_000_000_000,
            exception_name(code),
            a.dst
        ),
        Detail::Exception { code, in_window } => format!(
            "slave {} unit {} answered with {in_window} or more exceptions within {} s (latest: code {code} {})",
            a.src,
            a.unit,
            cfg.thresholds.exception_burst_window_ns / 1_000_000_000,
            exception_name(code)
        ),
        Detail::Malformed { reason }
            if matches!(
                a.kind,
                AlertKind::UnsolicitedResponse | AlertKind::ResponseMismatch
            ) =>
        {
            format!(
                "slave {} unit {} answered {} with {fc}: {reason}",
                a.src, a.unit, a.dst
            )
        }
        Detail::Malformed { reason } if a.kind == AlertKind::InvalidPduLength => format!(
            "{} -> {} unit {}: {fc} with a byte count or quantity that does not fit it: {reason}",
            a.src, a.dst, a.unit
        ),
        Detail::Malformed { reason } => format!(
            "invalid Modbus/TCP framing from {} to {}: {reason}",
            a.src, a.dst
        ),
        Detail::Flood {
            reason: FloodReason::BackToBack,
            run,
            ..
        } => format!(
            "{} flooded slave {}: {run} consecutive requests less than {} ms apart",
            a.src,
            a.dst,
            cfg.thresholds.flood_interval_ns as f64 / 1e6
        ),
        Detail::Flood {
            reason: FloodReason::Outstanding,
            run,
            ..
        } => format!(
            "{} has {run} unanswered requests outstanding on one connection to {}",
            a.src, a.dst
        ),
        Detail::Ml {
            iforest_score,
            iforest_threshold,
            ocsvm_decision,
            ocsvm_threshold,
            feature,
            z,
            window_start_ns,
            requests,
            label,
        } => {
            let mut models = Vec::new();
            if crate::ml::models::iforest_flags(iforest_score, iforest_threshold) {
                models.push(format!(
                    "Isolation Forest score {iforest_score:.3} > {iforest_threshold:.3}"
                ));
            }
            if crate::ml::models::ocsvm_flags(ocsvm_decision, ocsvm_threshold) {
                models.push(format!(
                    "One-Class SVM decision {ocsvm_decision:.3} < {ocsvm_threshold:.3}"
                ));
            }
            format!(
                "{} -> {}: {requests} requests in the window from {} unlike the baseline's traffic ({}); most unusual: {} ({z:+.1} sigma); threat label: {}",
                a.src,
                a.dst,
                iso_time(window_start_ns),
                models.join(", "),
                feature_name(feature),
                label.name(),
            )
        }
        Detail::Evasion {
            technique: Evasion::ConflictingCopies,
            policy,
        } => format!(
            "{} sent {} two different versions of the same TCP bytes; the sensor decoded the one a {} stack takes (--target-policy)",
            a.src,
            a.dst,
            policy.name()
        ),
        Detail::Evasion {
            technique: Evasion::OverlappingFragments,
            policy,
        } => format!(
            "{} sent {} IP fragments that overlap with different bytes; {}",
            a.src,
            a.dst,
            if policy == TargetPolicy::Linux {
                "a linux stack discards such a datagram, and so did the sensor".to_string()
            } else {
                format!("the sensor took the bytes a {} stack takes (--target-policy)", policy.name())
            }
        ),
        Detail::Evasion {
            technique: Evasion::TinyFragments,
            ..
        } => format!(
            "{} sent {} a datagram cut into IP fragments smaller than any link needs ({} bytes): fragmentation used to split what a sensor inspects",
            a.src,
            a.dst,
            crate::defrag::TINY_FRAGMENT
        ),
        Detail::Reserved { reason } => {
            let what = match reason {
                ReservedReason::Code => format!("function code {}, reserved or unassigned", a.function_code),
                ReservedReason::Diagnostic(sub) => format!("FC 8 sub-function {sub}, reserved"),
                ReservedReason::Mei(mei) => format!("FC 43 MEI type {mei}, reserved"),
            };
            format!("{} sent {} unit {} a request with {what}", a.src, a.dst, a.unit)
        }
        Detail::Scan { distinct, refused } => {
            let what = match a.kind {
                AlertKind::FunctionCodeScan => "function codes",
                AlertKind::AddressScan => "start addresses",
                _ => "unit ids",
            };
            format!(
                "{} {} {distinct} distinct {what} of slave {} within {} s: a scan",
                a.src,
                if refused { "was refused" } else { "asked for" },
                a.dst,
                cfg.thresholds.scan_window_ns / 1_000_000_000
            )
        }
        Detail::Program { op } => format!(
            "{} sent {} unit {} a PLC program or operating-mode operation: {}",
            a.src,
            a.dst,
            a.unit,
            op.name()
        ),
        Detail::None if a.kind == AlertKind::NonModbusTraffic => format!(
            "{} -> {}: the connection on a Modbus port carried another protocol (its framing broke before any Modbus message)",
            a.src, a.dst
        ),
        Detail::None => format!("{} from {} to {} ({fc})", a.kind.name(), a.src, a.dst),
    }
}
