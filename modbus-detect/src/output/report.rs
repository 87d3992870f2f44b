//! The JSON report: what was read, what was found, sorted by severity.
//!
//! Field names are an interface: users' scripts and SIEM parsers depend on
//! them. Add fields; never rename or remove one.

use serde_json::{json, Map, Value};

use crate::alert::{sort_for_report, Aggregate, Alert, AlertKind, Detail, FloodReason, Severity};
use crate::config::baseline::Baseline;
use crate::config::DetectConfig;
use crate::counters::Counters;
use crate::detect::learn::Sample;
use crate::detect::ml::MlStats;
use crate::modbus::{exception_name, function_name};
use crate::shard::ShardResult;

use super::{epoch_secs, iso_time};

/// Everything the shards found, merged in a deterministic order.
#[derive(Debug, Default)]
pub struct Summary {
    pub counters: Counters,
    pub alerts: Vec<Aggregate>,
    pub raised: [u64; AlertKind::ALL.len()],
    pub raised_by_severity: [u64; Severity::ALL.len()],
    pub alerts_dropped: u64,
    pub eve_suppressed: u64,
    pub rule_state_evicted: u64,
    pub inventory_pairs_dropped: u64,
    pub observed: Baseline,
    pub first_ns: Option<u64>,
    pub last_ns: Option<u64>,
    pub ml: MlStats,
    /// Baseline mode: every shard's ML training windows.
    pub ml_samples: Vec<Sample>,
}

impl Summary {
    /// Merge the dispatcher's counters and every shard's results.
    pub fn merge(dispatch: &Counters, shards: Vec<ShardResult>) -> Summary {
        let mut s = Summary {
            counters: dispatch.clone(),
            ..Summary::default()
        };
        for r in shards {
            s.counters.merge(&r.counters);
            s.alerts.extend(r.aggregates);
            for (a, b) in s.raised.iter_mut().zip(r.raised) {
                *a += b;
            }
            for (a, b) in s.raised_by_severity.iter_mut().zip(r.raised_by_severity) {
                *a += b;
            }
            s.alerts_dropped += r.alerts_dropped;
            s.eve_suppressed += r.eve_suppressed;
            s.rule_state_evicted += r.rule_state_evicted;
            s.inventory_pairs_dropped += r.inventory_pairs_dropped;
            s.ml.merge(&r.ml);
            s.ml_samples.extend(r.ml_samples);
            s.observed.merge(r.observed);
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Complete,
    Interrupted,
    InputError,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Complete => "complete",
            Status::Interrupted => "interrupted",
            Status::InputError => "input_error",
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
    /// Live capture: XDP mode, XDP counters, per-queue socket statistics.
    pub capture: Option<Value>,
}

/// The report as a JSON value (keys in the order written here).
pub fn build(summary: &Summary, info: &RunInfo, cfg: &DetectConfig) -> Value {
    let c = &summary.counters;
    let mut counters = serde_json::to_value(c).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut counters {
        m.insert(
            "skipped".into(),
            summary
                .counters
                .skipped_by_name()
                .into_iter()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect::<Map<_, _>>()
                .into(),
        );
        m.insert(
            "alerts_total".into(),
            json!(summary.raised.iter().sum::<u64>()),
        );
        m.insert(
            "alerts_by_type".into(),
            AlertKind::ALL
                .iter()
                .map(|k| (k.name().to_string(), json!(summary.raised[*k as usize])))
                .collect::<Map<_, _>>()
                .into(),
        );
        m.insert(
            "alerts_by_severity".into(),
            Severity::ALL
                .iter()
                .map(|s| {
                    (
                        s.name().to_string(),
                        json!(summary.raised_by_severity[*s as usize]),
                    )
                })
                .collect::<Map<_, _>>()
                .into(),
        );
        m.insert("alert_entries".into(), json!(summary.alerts.len()));
        m.insert(
            "alerts_dropped_table_full".into(),
            json!(summary.alerts_dropped),
        );
        m.insert("eve_lines_suppressed".into(), json!(summary.eve_suppressed));
        m.insert(
            "rule_state_evicted".into(),
            json!(summary.rule_state_evicted),
        );
        m.insert(
            "inventory_pairs_dropped".into(),
            json!(summary.inventory_pairs_dropped),
        );
    }
    let time = |t: Option<u64>| t.map(iso_time);
    let epoch = |t: Option<u64>| t.map(epoch_secs);
    json!({
        "tool": "modbus-detect",
        "version": env!("CARGO_PKG_VERSION"),
        "status": info.status.name(),
        "error": info.error,
        "input": {
            "kind": info.input_kind,
            "path": info.input,
            "format": info.format,
        },
        "mode": match cfg.mode {
            crate::config::Mode::Detect => "detect",
            crate::config::Mode::Learn => "baseline",
        },
        "start_time": time(summary.first_ns),
        "end_time": time(summary.last_ns),
        "start_epoch": epoch(summary.first_ns),
        "end_epoch": epoch(summary.last_ns),
        "processing_seconds": info.elapsed_s,
        "settings": settings(info, cfg),
        "capture": info.capture,
        "counters": counters,
        "ml": ml_section(summary, cfg),
        "inventory": inventory(&summary.observed),
        "alerts": summary.alerts.iter().map(|a| alert_entry(a, cfg)).collect::<Vec<_>>(),
    })
}

/// What the ML models did: in baseline mode, what they were trained on; in
/// detection, how many windows they judged and found unlike the baseline.
fn ml_section(summary: &Summary, cfg: &DetectConfig) -> Value {
    match cfg.mode {
        crate::config::Mode::Learn => {
            let models = summary.observed.models();
            json!({
                "window_s": cfg.ml_window_ns as f64 / 1e9,
                "windows_learned": summary.ml_samples.len(),
                "models_trained": models.is_some(),
                "min_windows": crate::ml::models::MIN_WINDOWS,
                "iforest_threshold": models.map(|m| m.iforest_threshold),
                "ocsvm_threshold": models.map(|m| m.ocsvm_threshold),
            })
        }
        crate::config::Mode::Detect => {
            let models = cfg
                .baseline
                .as_ref()
                .and_then(|b| b.models())
                .filter(|_| cfg.ml);
            match models {
                None => json!({"enabled": false}),
                Some(m) => json!({
                    "enabled": true,
                    "window_s": m.window_s,
                    "training_windows": m.training_windows,
                    "windows_judged": summary.ml.windows,
                    "anomalous_windows": summary.ml.anomalous,
                    "iforest_threshold": m.iforest_threshold,
                    "ocsvm_threshold": m.ocsvm_threshold,
                }),
            }
        }
    }
}

fn settings(info: &RunInfo, cfg: &DetectConfig) -> Value {
    let list = |s: &Option<rustc_hash::FxHashSet<std::net::IpAddr>>| {
        s.as_ref().map(|s| {
            let mut v: Vec<_> = s.iter().map(|ip| ip.to_string()).collect();
            v.sort();
            v
        })
    };
    let t = cfg.thresholds;
    json!({
        "ports": cfg.ports,
        "threads": info.threads,
        "authorized_masters": list(&cfg.authorized_masters),
        "authorized_writers": list(&cfg.authorized_writers),
        "register_limits_file": info.limits_file,
        "baseline_file": info.baseline_file,
        "eve_file": info.eve_file,
        "thresholds": {
            "exception_burst_count": t.exception_burst_count,
            "exception_burst_window_s": t.exception_burst_window_ns as f64 / 1e9,
            "timing_sigma": t.timing_sigma,
            "timing_min_baseline_samples": t.timing_min_samples,
            "flood_interval_ms": t.flood_interval_ns as f64 / 1e6,
            "flood_min_run": t.flood_min_run,
            "flood_max_outstanding": t.flood_max_outstanding,
        },
        "limits": {
            "max_flows": cfg.limits.max_flows,
            "flow_idle_timeout_s": cfg.limits.flow_idle_timeout_ns as f64 / 1e9,
            "max_pending_per_flow": cfg.limits.max_pending_per_flow,
            "max_alert_entries": cfg.limits.max_alert_keys,
        },
    })
}

fn inventory(observed: &Baseline) -> Value {
    let file = observed.to_file("");
    let pairs: Vec<Value> = file
        .pairs
        .iter()
        .map(|p| {
            json!({
                "master": p.master,
                "slave": p.slave,
                "requests": p.function_codes.values().sum::<u64>(),
                "function_codes": p.function_codes,
            })
        })
        .collect();
    json!({
        "masters": file.masters,
        "slaves": file.slaves,
        "unit_ids": file.unit_ids,
        "pairs": pairs,
    })
}

/// One report entry for an aggregated alert.
pub fn alert_entry(agg: &Aggregate, cfg: &DetectConfig) -> Value {
    let a = &agg.first;
    let mut m = common_fields(a, agg.severity);
    m.insert("count".into(), json!(agg.count));
    m.insert("first_seen".into(), json!(iso_time(a.ts_ns)));
    m.insert("last_seen".into(), json!(iso_time(agg.last.ts_ns)));
    m.insert("first_seen_epoch".into(), json!(epoch_secs(a.ts_ns)));
    m.insert("last_seen_epoch".into(), json!(epoch_secs(agg.last.ts_ns)));
    m.insert("description".into(), json!(describe(a, cfg)));
    m.extend(details(a, cfg));
    if agg.count > 1 {
        if let Some(v) = agg.last.value {
            m.insert("last_value".into(), json!(v));
        }
    }
    Value::Object(m)
}

/// Fields every alert record has (report and EVE).
pub fn common_fields(a: &Alert, severity: Severity) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("type".into(), json!(a.kind.name()));
    m.insert("severity".into(), json!(severity.name()));
    m.insert("rule_id".into(), json!(a.kind.rule_id()));
    m.insert("src_ip".into(), json!(a.src));
    m.insert("src_port".into(), json!(a.src_port));
    m.insert("dst_ip".into(), json!(a.dst));
    m.insert("dst_port".into(), json!(a.dst_port));
    m.insert("unit_id".into(), json!(a.unit));
    m.insert("function_code".into(), json!(a.function_code));
    m.insert(
        "function_name".into(),
        json!(function_name(a.function_code)),
    );
    m
}

/// The type's details: register, value, limits, statistics.
pub fn details(a: &Alert, cfg: &DetectConfig) -> Map<String, Value> {
    let mut m = Map::new();
    if let Some(r) = a.register {
        m.insert("register".into(), json!(r));
    }
    if let Some(v) = a.value {
        m.insert("value".into(), json!(v));
    }
    let limit = |idx: u32| cfg.limits_file.as_ref().and_then(|l| l.get(idx));
    match a.detail {
        Detail::None => {}
        Detail::Enumeration { sub_function, mei } => {
            m.insert("sub_function".into(), json!(sub_function));
            m.insert("mei_type".into(), json!(mei));
        }
        Detail::Range {
            limit: idx,
            min,
            max,
            from_response,
        } => {
            if let Some(l) = limit(idx) {
                m.insert("register_name".into(), json!(l.name));
                m.insert("register_unit".into(), json!(l.unit));
            }
            m.insert(
                "limits".into(),
                json!({"min": finite(min), "max": finite(max)}),
            );
            m.insert(
                "observed_in".into(),
                json!(if from_response {
                    "read_response"
                } else {
                    "write_request"
                }),
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
                m.insert("register_name".into(), json!(l.name));
                m.insert("register_unit".into(), json!(l.unit));
            }
            m.insert("previous_value".into(), json!(previous));
            m.insert("interval_s".into(), json!(interval_ns as f64 / 1e9));
            m.insert("rate_per_s".into(), json!(finite(rate)));
            m.insert("max_rate".into(), json!(max_rate));
        }
        Detail::Timing {
            interval_ns,
            mean_s,
            std_s,
            sigmas,
        } => {
            m.insert("interval_s".into(), json!(interval_ns as f64 / 1e9));
            m.insert("baseline_mean_s".into(), json!(mean_s));
            m.insert("baseline_std_s".into(), json!(std_s));
            m.insert("sigmas".into(), json!(sigmas));
        }
        Detail::Exception { code, in_window } => {
            m.insert("exception_code".into(), json!(code));
            m.insert("exception_name".into(), json!(exception_name(code)));
            m.insert("threshold".into(), json!(in_window));
            m.insert(
                "window_s".into(),
                json!(cfg.thresholds.exception_burst_window_ns as f64 / 1e9),
            );
        }
        Detail::Malformed { reason } => {
            m.insert("reason".into(), json!(reason));
        }
        Detail::Flood {
            reason,
            run,
            interval_ns,
        } => {
            let (name, what) = match reason {
                FloodReason::BackToBack => ("back_to_back", "consecutive_requests"),
                FloodReason::Outstanding => ("outstanding", "outstanding_requests"),
            };
            m.insert("reason".into(), json!(name));
            m.insert(what.into(), json!(run));
            m.insert("interval_ms".into(), json!(interval_ns as f64 / 1e6));
        }
        Detail::NewFunctionCode { pair_in_baseline } => {
            m.insert("pair_in_baseline".into(), json!(pair_in_baseline));
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
        } => {
            m.insert("window_start".into(), json!(iso_time(window_start_ns)));
            m.insert("window_requests".into(), json!(requests));
            m.insert("iforest_score".into(), json!(finite(iforest_score)));
            m.insert("iforest_threshold".into(), json!(finite(iforest_threshold)));
            m.insert("ocsvm_decision".into(), json!(finite(ocsvm_decision)));
            m.insert("ocsvm_threshold".into(), json!(finite(ocsvm_threshold)));
            m.insert("most_unusual_feature".into(), json!(feature_name(feature)));
            m.insert("feature_z".into(), json!(finite(z)));
        }
    }
    m
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
        Detail::Exception { code, in_window } => format!(
            "slave {} unit {} answered with {in_window} or more exceptions within {} s (latest: code {code} {})",
            a.src,
            a.unit,
            cfg.thresholds.exception_burst_window_ns / 1_000_000_000,
            exception_name(code)
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
                "{} -> {}: {requests} requests in the window from {} unlike the baseline's traffic ({}); most unusual: {} ({z:+.1} sigma)",
                a.src,
                a.dst,
                iso_time(window_start_ns),
                models.join(", "),
                feature_name(feature),
            )
        }
        Detail::None => format!("{} from {} to {} ({fc})", a.kind.name(), a.src, a.dst),
    }
}
