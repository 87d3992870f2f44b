//! The rules' thresholds: their reviewed defaults in `data/thresholds.toml`
//! (data, not code), a site's changes from its settings file or the
//! command line, and the nanosecond form the rules compare against.
//!
//! The file form ([`ThresholdValues`]: durations with their unit in the
//! key) is what a person writes and what the report shows; [`Thresholds`]
//! is what a shard holds. Every key is checked: an unknown one, a wrong
//! type or a value out of range is a one-line error naming the key.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

const DEFAULTS: &str = include_str!("../../data/thresholds.toml");

/// The thresholds as written in `data/thresholds.toml`, a settings file's
/// `[thresholds]` table and the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdValues {
    pub exception_burst_count: u32,
    pub exception_burst_window_s: f64,
    pub timing_sigma: f64,
    pub timing_min_samples: u32,
    pub timing_min_std_ms: f64,
    pub flood_interval_ms: f64,
    pub flood_min_run: u32,
    pub flood_max_outstanding: u32,
    pub busy_count: u32,
    pub busy_window_s: f64,
    pub rate_time_base_s: f64,
    pub scan_window_s: f64,
    pub fc_scan_distinct: u32,
    pub fc_scan_refused: u32,
    pub address_scan_distinct: u32,
    pub address_scan_refused: u32,
    pub unit_scan_distinct: u32,
    pub unit_scan_refused: u32,
}

/// Thresholds of the rules, in the units the rules compare.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// EXCEPTION_BURST: this many exception responses ...
    pub exception_burst_count: usize,
    /// ... within this window, from one slave.
    pub exception_burst_window_ns: u64,
    /// TIMING_ANOMALY: deviation from the baseline mean, in standard deviations.
    pub timing_sigma: f64,
    /// TIMING_ANOMALY needs at least this many baseline intervals for a pair.
    pub timing_min_samples: u64,
    /// TIMING_ANOMALY: lower bound for the baseline standard deviation, so that a
    /// pair polled by a perfectly regular master does not alert on capture jitter.
    pub timing_min_std_ns: u64,
    /// MODBUS_FLOOD: consecutive requests of a master to a slave closer than this ...
    pub flood_interval_ns: u64,
    /// ... this many times in a row.
    pub flood_min_run: u32,
    /// MODBUS_FLOOD: outstanding requests on one connection above this.
    pub flood_max_outstanding: u32,
    /// SLAVE_BUSY_ACK_DELAY: this many exceptions 5 or 6 from one slave ...
    pub busy_count: usize,
    /// ... within this window.
    pub busy_window_ns: u64,
    /// REGISTER_VALUE_EXCESSIVE_RATE: a value read back is judged over at
    /// least this long (noise between two close reads is no rate).
    pub rate_time_base_ns: u64,
    /// FUNCTION_CODE_SCAN, ADDRESS_SCAN, UNIT_ID_SCAN: what one master asks
    /// of one slave is counted over windows of this length ...
    pub scan_window_ns: u64,
    /// ... a scan is this many distinct function codes asked ...
    pub fc_scan_distinct: u32,
    /// ... or answered "illegal function" ...
    pub fc_scan_refused: u32,
    /// ... this many distinct start addresses asked ...
    pub address_scan_distinct: u32,
    /// ... or answered "illegal data address" ...
    pub address_scan_refused: u32,
    /// ... this many distinct unit ids asked ...
    pub unit_scan_distinct: u32,
    /// ... or answered with a gateway exception (10, 11).
    pub unit_scan_refused: u32,
}

/// Windows and intervals are at most a day: longer ones would hold rule
/// state for longer than a flow lives, and a day in nanoseconds leaves
/// room to add without overflow.
const MAX_DURATION_S: f64 = 86_400.0;
/// Counts a rule keeps per key are bounded by the rule's own state; a
/// threshold above this could never be reached.
const MAX_COUNT: u32 = 1_000_000;

impl ThresholdValues {
    /// The defaults of this build.
    pub fn defaults() -> &'static ThresholdValues {
        static PARSED: OnceLock<ThresholdValues> = OnceLock::new();
        // The file is part of the build and held to this by the tests below.
        PARSED.get_or_init(|| {
            toml::from_str(DEFAULTS).expect("data/thresholds.toml is a complete threshold file")
        })
    }

    /// The defaults with `changes` (a `[thresholds]` table, or the
    /// `--threshold` settings as one) applied; a later key wins.
    pub fn with_changes(changes: &toml::Table) -> Result<ThresholdValues, String> {
        Self::defaults().changed(changes)
    }

    /// These values with `changes` applied (central settings over the
    /// local ones).
    pub fn changed(&self, changes: &toml::Table) -> Result<ThresholdValues, String> {
        let mut table = toml::Table::try_from(self).map_err(|e| e.to_string())?;
        for (key, value) in changes {
            use toml::Value::{Float, Integer};
            let fits = match (table.get(key), value) {
                (None, _) => {
                    return Err(format!(
                        "unknown threshold {key:?} (see data/thresholds.toml)"
                    ))
                }
                (Some(Integer(_)), Integer(_)) | (Some(Float(_)), Integer(_) | Float(_)) => true,
                _ => false,
            };
            if !fits {
                let what = match table.get(key) {
                    Some(Integer(_)) => "a whole number",
                    _ => "a number",
                };
                return Err(format!("threshold {key}: {value} is not {what}"));
            }
            table.insert(key.clone(), value.clone());
        }
        let values: ThresholdValues = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| e.message().trim().to_string())?;
        values.thresholds()?;
        Ok(values)
    }

    /// `NAME=VALUE` settings (`--threshold`) as one table; a later one wins.
    pub fn parse_settings(settings: &[String]) -> Result<toml::Table, String> {
        let mut table = toml::Table::new();
        for s in settings {
            let Some((key, value)) = s.split_once('=') else {
                return Err(format!("--threshold {s:?}: NAME=VALUE expected"));
            };
            let key = key.trim();
            let parsed: toml::Table = format!("v = {}", value.trim())
                .parse()
                .map_err(|_| format!("--threshold {s:?}: the value is not a number"))?;
            let Some(v) = parsed.get("v") else {
                return Err(format!("--threshold {s:?}: no value"));
            };
            table.insert(key.to_string(), v.clone());
        }
        Ok(table)
    }

    /// The values in the units the rules compare, each checked.
    pub fn thresholds(&self) -> Result<Thresholds, String> {
        Ok(Thresholds {
            exception_burst_count: count("exception_burst_count", self.exception_burst_count)?
                as usize,
            exception_burst_window_ns: nanos(
                "exception_burst_window_s",
                self.exception_burst_window_s,
                1e9,
            )?,
            timing_sigma: positive("timing_sigma", self.timing_sigma, 1_000.0)?,
            timing_min_samples: count("timing_min_samples", self.timing_min_samples)?.into(),
            timing_min_std_ns: nanos("timing_min_std_ms", self.timing_min_std_ms, 1e6)?,
            flood_interval_ns: nanos("flood_interval_ms", self.flood_interval_ms, 1e6)?,
            flood_min_run: count("flood_min_run", self.flood_min_run)?,
            flood_max_outstanding: count("flood_max_outstanding", self.flood_max_outstanding)?,
            busy_count: count("busy_count", self.busy_count)? as usize,
            busy_window_ns: nanos("busy_window_s", self.busy_window_s, 1e9)?,
            rate_time_base_ns: nanos("rate_time_base_s", self.rate_time_base_s, 1e9)?,
            scan_window_ns: nanos("scan_window_s", self.scan_window_s, 1e9)?,
            fc_scan_distinct: count("fc_scan_distinct", self.fc_scan_distinct)?,
            fc_scan_refused: count("fc_scan_refused", self.fc_scan_refused)?,
            address_scan_distinct: count("address_scan_distinct", self.address_scan_distinct)?,
            address_scan_refused: count("address_scan_refused", self.address_scan_refused)?,
            unit_scan_distinct: count("unit_scan_distinct", self.unit_scan_distinct)?,
            unit_scan_refused: count("unit_scan_refused", self.unit_scan_refused)?,
        })
    }
}

/// Back to the file's units, for the report: it shows what the rules used.
impl From<&Thresholds> for ThresholdValues {
    fn from(t: &Thresholds) -> Self {
        let s = |ns: u64| ns as f64 / 1e9;
        let ms = |ns: u64| ns as f64 / 1e6;
        let n = |c: usize| u32::try_from(c).unwrap_or(u32::MAX);
        ThresholdValues {
            exception_burst_count: n(t.exception_burst_count),
            exception_burst_window_s: s(t.exception_burst_window_ns),
            timing_sigma: t.timing_sigma,
            timing_min_samples: u32::try_from(t.timing_min_samples).unwrap_or(u32::MAX),
            timing_min_std_ms: ms(t.timing_min_std_ns),
            flood_interval_ms: ms(t.flood_interval_ns),
            flood_min_run: t.flood_min_run,
            flood_max_outstanding: t.flood_max_outstanding,
            busy_count: n(t.busy_count),
            busy_window_s: s(t.busy_window_ns),
            rate_time_base_s: s(t.rate_time_base_ns),
            scan_window_s: s(t.scan_window_ns),
            fc_scan_distinct: t.fc_scan_distinct,
            fc_scan_refused: t.fc_scan_refused,
            address_scan_distinct: t.address_scan_distinct,
            address_scan_refused: t.address_scan_refused,
            unit_scan_distinct: t.unit_scan_distinct,
            unit_scan_refused: t.unit_scan_refused,
        }
    }
}

impl Default for Thresholds {
    fn default() -> Self {
        ThresholdValues::defaults()
            .thresholds()
            .expect("data/thresholds.toml holds valid thresholds")
    }
}

fn count(key: &str, n: u32) -> Result<u32, String> {
    if (1..=MAX_COUNT).contains(&n) {
        Ok(n)
    } else {
        Err(format!("threshold {key}: {n} is not from 1 to {MAX_COUNT}"))
    }
}

fn positive(key: &str, x: f64, max: f64) -> Result<f64, String> {
    if x.is_finite() && x > 0.0 && x <= max {
        Ok(x)
    } else {
        Err(format!(
            "threshold {key}: {x} is not above 0 and at most {max}"
        ))
    }
}

/// A duration in the key's unit (`per_unit` nanoseconds each) as nanoseconds.
fn nanos(key: &str, x: f64, per_unit: f64) -> Result<u64, String> {
    let max = MAX_DURATION_S * 1e9 / per_unit;
    let ns = positive(key, x, max)? * per_unit;
    if ns < 1.0 {
        return Err(format!("threshold {key}: {x} is below a nanosecond"));
    }
    Ok(ns.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_file_is_complete_and_valid() {
        let t: ThresholdValues = toml::from_str(DEFAULTS).expect("complete");
        let ns = t.thresholds().expect("valid");
        // Spot checks against the original tool's values.
        assert_eq!(ns.flood_interval_ns, 5_000_000);
        assert_eq!(ns.exception_burst_window_ns, 60_000_000_000);
        assert_eq!(ns.timing_min_std_ns, 100_000);
        assert_eq!(
            ThresholdValues::from(&ns),
            t,
            "the report shows the file's values"
        );
    }

    #[test]
    fn changes_apply_and_are_checked() {
        let changes = ThresholdValues::parse_settings(&[
            "flood_min_run=30".into(),
            "scan_window_s = 0.5".into(),
            "flood_min_run=40".into(),
        ])
        .expect("parsed");
        let t = ThresholdValues::with_changes(&changes).expect("valid");
        assert_eq!((t.flood_min_run, t.scan_window_s), (40, 0.5));
        assert_eq!(t.thresholds().expect("valid").scan_window_ns, 500_000_000);
        assert_eq!(t.busy_count, ThresholdValues::defaults().busy_count);

        let err = |s: &str| {
            let c = ThresholdValues::parse_settings(&[s.to_string()])?;
            ThresholdValues::with_changes(&c).map(|_| ())
        };
        assert!(err("flood_min_runs=3")
            .unwrap_err()
            .contains("unknown threshold"));
        assert!(err("flood_min_run=0")
            .unwrap_err()
            .contains("flood_min_run"));
        assert!(err("flood_min_run=2.5")
            .unwrap_err()
            .contains("whole number"));
        assert!(err("busy_count=\"x\"").unwrap_err().contains("busy_count"));
        assert!(err("scan_window_s=-1")
            .unwrap_err()
            .contains("scan_window_s"));
        assert!(err("scan_window_s=1e12")
            .unwrap_err()
            .contains("scan_window_s"));
        assert!(err("timing_sigma=nan")
            .unwrap_err()
            .contains("timing_sigma"));
        assert!(err("flood_min_run").unwrap_err().contains("NAME=VALUE"));
        assert!(err("flood_min_run=abc").is_err());
    }
}
