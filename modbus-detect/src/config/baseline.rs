//! The learned baseline of normal traffic, and its versioned JSON file.
//!
//! Learned per master-slave pair: the function code distribution and the
//! inter-request timing (Welford's running mean and variance); per register:
//! min/max/mean/std of the observed values; and the masters, slaves and unit
//! ids seen. The API mirrors the original tool's `record`,
//! `get_fc_distribution`, `get_timing_stats`, `get_register_stats`, `save`
//! and `load`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use crate::keyed::KeyedMap;
use serde::{Deserialize, Serialize};

use super::fc_counts::FcCounts;
use crate::files::{load_file, FileError, ParseError, UniqueKeys};
use crate::ml::models::Models;

/// The `schema` field of a baseline file.
pub const SCHEMA: &str = "modbus-detect-baseline";
/// The version this build reads and writes.
pub const VERSION: u32 = 1;

/// Running statistics (Welford), population standard deviation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub count: u64,
    pub mean: f64,
    /// Sum of squared deviations from the mean.
    pub m2: f64,
    pub min: f64,
    pub max: f64,
}

impl Stats {
    pub fn add(&mut self, x: f64) {
        if self.count == 0 {
            self.min = x;
            self.max = x;
        } else {
            self.min = self.min.min(x);
            self.max = self.max.max(x);
        }
        self.count += 1;
        let delta = x - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (x - self.mean);
    }

    /// Population standard deviation.
    pub fn std(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            (self.m2 / self.count as f64).sqrt()
        }
    }

    /// Combine two disjoint sets of samples (Chan et al.).
    pub fn merge(&mut self, o: &Stats) {
        if o.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *o;
            return;
        }
        let n = (self.count + o.count) as f64;
        let delta = o.mean - self.mean;
        self.m2 += o.m2 + delta * delta * self.count as f64 * o.count as f64 / n;
        self.mean += delta * o.count as f64 / n;
        self.count += o.count;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
    }
}

/// What is known of one master-slave pair.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PairProfile {
    /// Requests per function code.
    pub function_codes: FcCounts,
    /// Seconds between consecutive requests of the pair.
    pub timing: Stats,
    /// Capture time of the last request (learning only, not saved).
    last_request_ns: Option<u64>,
    /// Unit ids already noted for the slave through this pair (a cache,
    /// not saved): the slave's unit set is then not searched per request.
    units_noted: [u64; 4],
}

impl PairProfile {
    fn unit_noted(&self, unit: u8) -> bool {
        self.units_noted[usize::from(unit / 64)] & (1 << (unit % 64)) != 0
    }

    fn note_unit(&mut self, unit: u8) {
        self.units_noted[usize::from(unit / 64)] |= 1 << (unit % 64);
    }
}

/// A pair's place in one [`Baseline`]: stable for the baseline's life
/// (pairs are never removed), so a connection can remember it and reach its
/// pair's profile with no hashing ([`Baseline::record_pair`],
/// [`Baseline::pair_profile`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PairId(u32);

impl PairId {
    /// Position among the baseline's pairs (for tables indexed by pair).
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Register statistics key: slave, unit id, Modicon register number.
pub type RegisterKey = (IpAddr, u8, u32);

#[derive(Debug, Clone, Default)]
pub struct Baseline {
    /// Where each pair's profile is in `profiles`.
    pairs: KeyedMap<(IpAddr, IpAddr), PairId>,
    /// Profiles in the order their pairs were first seen.
    profiles: Vec<((IpAddr, IpAddr), PairProfile)>,
    registers: KeyedMap<RegisterKey, Stats>,
    units: KeyedMap<IpAddr, BTreeSet<u8>>,
    first_seen_ns: Option<u64>,
    last_seen_ns: Option<u64>,
    /// The ML models of a baseline file, or trained by `detect::learn::train`.
    models: Option<Arc<Models>>,
}

/// Equal when they hold the same pairs, registers, units and times, in
/// whatever order the pairs were first seen.
impl PartialEq for Baseline {
    fn eq(&self, other: &Self) -> bool {
        self.pairs.len() == other.pairs.len()
            && self.profiles.iter().all(|(k, p)| {
                other
                    .pairs
                    .get(k)
                    .and_then(|id| other.pair_profile(*id))
                    .is_some_and(|o| o == p)
            })
            && self.registers == other.registers
            && self.units == other.units
            && self.first_seen_ns == other.first_seen_ns
            && self.last_seen_ns == other.last_seen_ns
    }
}

impl Baseline {
    /// Learn one request from `master` to `slave`.
    pub fn record(&mut self, master: IpAddr, slave: IpAddr, unit: u8, fc: u8, ts_ns: u64) {
        let id = self.add_pair(master, slave);
        self.record_pair(id, unit, fc, ts_ns);
    }

    /// Where the pair's profile is, if the pair is known.
    pub fn pair_id(&self, master: IpAddr, slave: IpAddr) -> Option<PairId> {
        self.pairs.get(&(master, slave)).copied()
    }

    /// Where the pair's profile is, adding an empty one if the pair is new.
    pub fn add_pair(&mut self, master: IpAddr, slave: IpAddr) -> PairId {
        let next = PairId(self.profiles.len() as u32);
        let id = *self.pairs.entry((master, slave)).or_insert(next);
        if id == next {
            self.profiles
                .push(((master, slave), PairProfile::default()));
        }
        id
    }

    /// The pairs, in the order of their ids.
    pub fn pair_keys(&self) -> impl Iterator<Item = (IpAddr, IpAddr)> + '_ {
        self.profiles.iter().map(|(k, _)| *k)
    }

    /// The profile of a pair found with [`Baseline::pair_id`].
    pub fn pair_profile(&self, id: PairId) -> Option<&PairProfile> {
        self.profiles.get(id.0 as usize).map(|(_, p)| p)
    }

    /// [`Baseline::record`] for a pair already found: what the shard does
    /// per request, with the pair's id remembered by the connection.
    pub fn record_pair(&mut self, id: PairId, unit: u8, fc: u8, ts_ns: u64) {
        self.count_pair(id, unit, fc, ts_ns, true);
    }

    /// The inventory of a detection run: [`Baseline::record_pair`] without
    /// the inter-request timing, which only a learned baseline keeps (the
    /// report's inventory lists pairs, function codes and units; the
    /// running mean costs a division per request).
    pub fn count_pair(&mut self, id: PairId, unit: u8, fc: u8, ts_ns: u64, timing: bool) {
        self.first_seen_ns = Some(self.first_seen_ns.map_or(ts_ns, |t| t.min(ts_ns)));
        self.last_seen_ns = Some(self.last_seen_ns.map_or(ts_ns, |t| t.max(ts_ns)));
        let Some(((_, slave), pair)) = self.profiles.get_mut(id.0 as usize) else {
            return;
        };
        if !pair.unit_noted(unit) {
            self.units.entry(*slave).or_default().insert(unit);
            pair.note_unit(unit);
        }
        pair.function_codes.add(fc, 1);
        if !timing {
            return;
        }
        // A clock that stepped back gives no interval to learn.
        if let Some(gap) = pair
            .last_request_ns
            .and_then(|last| ts_ns.checked_sub(last))
        {
            pair.timing.add(gap as f64 / 1e9);
        }
        pair.last_request_ns = Some(ts_ns);
    }

    fn pair(&self, master: IpAddr, slave: IpAddr) -> Option<&PairProfile> {
        self.pair_profile(self.pair_id(master, slave)?)
    }

    /// One value of a register (slave, unit id, Modicon number); a register
    /// not yet known is left out once `cap` registers are (false then).
    pub fn record_register(
        &mut self,
        cap: usize,
        slave: IpAddr,
        unit: u8,
        register: u32,
        value: f64,
    ) -> bool {
        let key = (slave, unit, register);
        if let Some(stats) = self.registers.get_mut(&key) {
            stats.add(value);
            return true;
        }
        if self.registers.len() >= cap {
            return false;
        }
        self.registers.entry(key).or_default().add(value);
        true
    }

    /// Requests per function code of a pair; `None` if the pair was never seen.
    pub fn get_fc_distribution(&self, master: IpAddr, slave: IpAddr) -> Option<BTreeMap<u8, u64>> {
        self.pair(master, slave).map(|p| p.function_codes.to_map())
    }

    /// Inter-request timing of a pair, in seconds.
    pub fn get_timing_stats(&self, master: IpAddr, slave: IpAddr) -> Option<&Stats> {
        self.pair(master, slave).map(|p| &p.timing)
    }

    pub fn get_register_stats(&self, slave: IpAddr, unit: u8, register: u32) -> Option<&Stats> {
        self.registers.get(&(slave, unit, register))
    }

    pub fn masters(&self) -> BTreeSet<IpAddr> {
        self.pairs.keys().map(|(m, _)| *m).collect()
    }

    pub fn slaves(&self) -> BTreeSet<IpAddr> {
        self.pairs.keys().map(|(_, s)| *s).collect()
    }

    pub fn pair_count(&self) -> usize {
        self.pairs.len()
    }

    pub fn request_count(&self) -> u64 {
        self.profiles
            .iter()
            .map(|(_, p)| p.function_codes.total())
            .sum()
    }

    /// Fold in what another shard learned (its slaves are disjoint from ours,
    /// but merging is exact either way).
    pub fn merge(&mut self, other: Baseline) {
        for ((m, s), p) in other.profiles {
            let id = self.add_pair(m, s);
            let Some((_, mine)) = self.profiles.get_mut(id.0 as usize) else {
                continue;
            };
            for (fc, n) in p.function_codes.to_map() {
                mine.function_codes.add(fc, n);
            }
            mine.timing.merge(&p.timing);
            for (a, b) in mine.units_noted.iter_mut().zip(p.units_noted) {
                *a |= b;
            }
        }
        for (k, s) in other.registers {
            self.registers.entry(k).or_default().merge(&s);
        }
        for (slave, units) in other.units {
            self.units.entry(slave).or_default().extend(units);
        }
        for t in [other.first_seen_ns, other.last_seen_ns]
            .into_iter()
            .flatten()
        {
            self.first_seen_ns = Some(self.first_seen_ns.map_or(t, |f| f.min(t)));
            self.last_seen_ns = Some(self.last_seen_ns.map_or(t, |l| l.max(t)));
        }
    }

    /// Give the baseline its ML models (trained on windows of the traffic
    /// it was learned from, see `detect::learn`).
    pub fn set_models(&mut self, models: Option<Models>) {
        self.models = models.map(Arc::new);
    }

    /// The ML models, if the baseline has them.
    pub fn models(&self) -> Option<&Arc<Models>> {
        self.models.as_ref()
    }

    pub fn to_file(&self, source: &str) -> BaselineFile {
        let mut pairs: Vec<PairEntry> = self
            .profiles
            .iter()
            .map(|((m, s), p)| PairEntry {
                master: *m,
                slave: *s,
                function_codes: p
                    .function_codes
                    .to_map()
                    .iter()
                    .map(|(fc, n)| (fc.to_string(), *n))
                    .collect(),
                timing: TimingEntry::from(&p.timing),
            })
            .collect();
        pairs.sort_by_key(|p| (p.master, p.slave));
        let mut registers: Vec<RegisterEntry> = self
            .registers
            .iter()
            .map(|((slave, unit, register), s)| RegisterEntry {
                slave: *slave,
                unit: *unit,
                register: *register,
                count: s.count,
                min: s.min,
                max: s.max,
                mean: s.mean,
                std: s.std(),
                m2: s.m2,
            })
            .collect();
        registers.sort_by_key(|r| (r.slave, r.unit, r.register));
        BaselineFile {
            schema: SCHEMA.to_string(),
            version: VERSION,
            created_by: format!("modbus-detect {}", env!("CARGO_PKG_VERSION")),
            source: source.to_string(),
            first_seen: self.first_seen_ns.map(|t| t as f64 / 1e9),
            last_seen: self.last_seen_ns.map(|t| t as f64 / 1e9),
            masters: self.masters().into_iter().collect(),
            slaves: self.slaves().into_iter().collect(),
            unit_ids: self
                .units
                .iter()
                .map(|(s, u)| (s.to_string(), u.iter().copied().collect()))
                .collect(),
            pairs,
            registers,
            models: self.models.as_deref().cloned(),
        }
    }

    /// Write the baseline atomically (temp file + rename).
    pub fn save(&self, path: &Path, source: &str) -> std::io::Result<()> {
        let json =
            serde_json::to_vec_pretty(&self.to_file(source)).map_err(std::io::Error::other)?;
        crate::files::atomic_write(path, &json)
    }

    pub fn load(path: &Path) -> Result<Baseline, FileError> {
        load_file(path, Self::parse)
    }

    pub fn parse(text: &str) -> Result<Baseline, ParseError> {
        let head: FileHead = serde_json::from_str(text).map_err(ParseError::Json)?;
        if head.schema.as_deref() != Some(SCHEMA) {
            return Err(ParseError::Content(format!(
                "not a modbus-detect baseline (schema is {:?}, expected {SCHEMA:?})",
                head.schema.unwrap_or_default()
            )));
        }
        if head.version != Some(VERSION) {
            return Err(ParseError::Content(format!(
                "baseline schema version {} is not supported (this build reads version {VERSION})",
                head.version
                    .map_or("missing".to_string(), |v| v.to_string())
            )));
        }
        let file: BaselineFile = serde_json::from_str(text).map_err(ParseError::Json)?;
        // Detection holds the baseline in memory: no more than learning
        // itself may produce (`Limits`' learning bounds).
        let bounds = super::Limits::default();
        if file.pairs.len() > bounds.max_learned_pairs
            || file.registers.len() > bounds.max_learned_registers
        {
            return Err(ParseError::Content(format!(
                "{} pairs and {} registers: a baseline holds at most {} and {}",
                file.pairs.len(),
                file.registers.len(),
                bounds.max_learned_pairs,
                bounds.max_learned_registers
            )));
        }
        let mut b = Baseline {
            first_seen_ns: file.first_seen.map(|s| (s * 1e9) as u64),
            last_seen_ns: file.last_seen.map(|s| (s * 1e9) as u64),
            ..Baseline::default()
        };
        for p in file.pairs {
            let mut function_codes = FcCounts::default();
            for (fc, n) in p.function_codes {
                let fc: u8 = fc.parse().map_err(|_| {
                    ParseError::Content(format!(
                        "pair {} -> {}: function code {fc:?} is not a number from 0 to 255",
                        p.master, p.slave
                    ))
                })?;
                // "3" and "03": one code listed twice.
                if function_codes.contains(fc) {
                    return Err(ParseError::Content(format!(
                        "pair {} -> {}: function code {fc} is listed twice",
                        p.master, p.slave
                    )));
                }
                function_codes.add(fc, n);
            }
            // A pair listed twice: which entry should hold? Refused.
            if b.pair_id(p.master, p.slave).is_some() {
                return Err(ParseError::Content(format!(
                    "pair {} -> {} is listed twice",
                    p.master, p.slave
                )));
            }
            let id = b.add_pair(p.master, p.slave);
            if let Some((_, profile)) = b.profiles.get_mut(id.0 as usize) {
                *profile = PairProfile {
                    function_codes,
                    timing: p.timing.into(),
                    ..PairProfile::default()
                };
            }
        }
        for r in file.registers {
            let key = (r.slave, r.unit, r.register);
            if b.registers.contains_key(&key) {
                return Err(ParseError::Content(format!(
                    "register {} of {} unit {} is listed twice",
                    r.register, r.slave, r.unit
                )));
            }
            b.registers.insert(
                key,
                Stats {
                    count: r.count,
                    mean: r.mean,
                    m2: r.m2,
                    min: r.min,
                    max: r.max,
                },
            );
        }
        for (slave, units) in file.unit_ids {
            let slave: IpAddr = slave.parse().map_err(|_| {
                ParseError::Content(format!("unit_ids: {slave:?} is not an IP address"))
            })?;
            b.units.insert(slave, units.into_iter().collect());
        }
        if let Some(m) = file.models {
            m.validate()
                .map_err(|e| ParseError::Content(e.to_string()))?;
            b.models = Some(Arc::new(m));
        }
        Ok(b)
    }
}

#[derive(Deserialize)]
struct FileHead {
    schema: Option<String>,
    version: Option<u32>,
}

/// The baseline file as written (version 1).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineFile {
    pub schema: String,
    pub version: u32,
    pub created_by: String,
    /// What it was learned from (the capture or interface).
    pub source: String,
    pub first_seen: Option<f64>,
    pub last_seen: Option<f64>,
    pub masters: Vec<IpAddr>,
    pub slaves: Vec<IpAddr>,
    pub unit_ids: UniqueKeys<Vec<u8>>,
    pub pairs: Vec<PairEntry>,
    pub registers: Vec<RegisterEntry>,
    /// ML models trained on the windows of this traffic (`--ml`); absent
    /// when there were too few windows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Models>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairEntry {
    pub master: IpAddr,
    pub slave: IpAddr,
    /// Requests per function code (keys are decimal function codes).
    pub function_codes: UniqueKeys<u64>,
    pub timing: TimingEntry,
}

/// Inter-request intervals in seconds.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimingEntry {
    pub count: u64,
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub max: f64,
    pub m2: f64,
}

impl From<&Stats> for TimingEntry {
    fn from(s: &Stats) -> Self {
        TimingEntry {
            count: s.count,
            mean: s.mean,
            std: s.std(),
            min: s.min,
            max: s.max,
            m2: s.m2,
        }
    }
}

impl From<TimingEntry> for Stats {
    fn from(t: TimingEntry) -> Self {
        Stats {
            count: t.count,
            mean: t.mean,
            m2: t.m2,
            min: t.min,
            max: t.max,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterEntry {
    pub slave: IpAddr,
    pub unit: u8,
    pub register: u32,
    pub count: u64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    pub std: f64,
    pub m2: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn welford_matches_two_pass() {
        let xs = [0.04, 0.05, 0.03, 0.06, 0.044, 0.041];
        let mut s = Stats::default();
        xs.iter().for_each(|x| s.add(*x));
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!((s.mean - mean).abs() < 1e-12);
        assert!((s.std() - var.sqrt()).abs() < 1e-12);
        let (a, b) = xs.split_at(2);
        let (mut sa, mut sb) = (Stats::default(), Stats::default());
        a.iter().for_each(|x| sa.add(*x));
        b.iter().for_each(|x| sb.add(*x));
        sa.merge(&sb);
        assert!((sa.mean - mean).abs() < 1e-12 && (sa.std() - s.std()).abs() < 1e-12);
    }

    #[test]
    fn records_pairs_timing_and_registers() {
        let mut b = Baseline::default();
        for i in 0..5u64 {
            b.record(ip(1), ip(2), 1, 3, i * 100_000_000);
        }
        b.record(ip(1), ip(2), 1, 6, 500_000_000);
        b.record_register(usize::MAX, ip(2), 1, 40001, 100.0);
        let fcs = b.get_fc_distribution(ip(1), ip(2)).unwrap();
        assert_eq!(fcs.get(&3), Some(&5));
        assert_eq!(fcs.get(&6), Some(&1));
        let t = b.get_timing_stats(ip(1), ip(2)).unwrap();
        assert_eq!(t.count, 5);
        assert!((t.mean - 0.1).abs() < 1e-9);
        assert!(b.get_fc_distribution(ip(2), ip(1)).is_none());
        assert_eq!(b.get_register_stats(ip(2), 1, 40001).unwrap().count, 1);
    }

    #[test]
    fn save_and_load_round_trip() {
        let mut b = Baseline::default();
        for i in 0..50u64 {
            b.record(ip(1), ip(2), 1, 3, i * 44_000_000 + (i % 3) * 1_000_000);
            b.record_register(usize::MAX, ip(2), 1, 40001, i as f64);
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.json");
        b.save(&p, "test").unwrap();
        let l = Baseline::load(&p).unwrap();
        let (t0, t1) = (
            b.get_timing_stats(ip(1), ip(2)).unwrap(),
            l.get_timing_stats(ip(1), ip(2)).unwrap(),
        );
        assert_eq!(t0.count, t1.count);
        assert!((t0.std() - t1.std()).abs() < 1e-12);
        assert_eq!(
            b.get_fc_distribution(ip(1), ip(2)),
            l.get_fc_distribution(ip(1), ip(2))
        );
        assert_eq!(l.masters(), b.masters());
    }

    #[test]
    fn rejects_other_versions_and_broken_json() {
        let err = |t: &str| match Baseline::parse(t) {
            Err(crate::files::ParseError::Content(s)) => s,
            Err(crate::files::ParseError::Json(e)) => format!("json: {e}"),
            Ok(_) => panic!("accepted {t}"),
        };
        assert!(err(r#"{"schema": "modbus-detect-baseline", "version": 2}"#).contains("version 2"));
        assert!(err(r#"{"version": 1}"#).contains("not a modbus-detect baseline"));
        assert!(err("{").starts_with("json"));
        assert!(
            err(r#"{"schema": "modbus-detect-baseline", "version": 1, "pairs": 5}"#)
                .starts_with("json")
        );
    }

    /// A baseline file with a key, a pair or a register given twice is
    /// refused: which of two entries holds cannot be guessed, and a
    /// silently dropped one could be the stricter.
    #[test]
    fn entries_given_twice_are_refused() {
        let mut b = Baseline::default();
        for i in 0..40u64 {
            b.record(ip(1), ip(2), 1, 3, i * 44_000_000);
            b.record_register(usize::MAX, ip(2), 1, 40001, i as f64);
        }
        let text = serde_json::to_string(&b.to_file("test")).unwrap();
        assert!(Baseline::parse(&text).is_ok());
        let err = |t: &str| match Baseline::parse(t) {
            Err(crate::files::ParseError::Content(s)) => s,
            Err(crate::files::ParseError::Json(e)) => e.to_string(),
            Ok(_) => panic!("accepted {t}"),
        };
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let pair = v["pairs"][0].to_string();
        let twice = text.replacen(&pair, &format!("{pair},{pair}"), 1);
        assert!(err(&twice).contains("listed twice"), "{}", err(&twice));
        let reg = v["registers"][0].to_string();
        let twice = text.replacen(&reg, &format!("{reg},{reg}"), 1);
        assert!(err(&twice).contains("listed twice"), "{}", err(&twice));
        let fcs = r#""function_codes":{"3":40}"#;
        assert!(text.contains(fcs), "{text}");
        let twice = text.replacen(fcs, r#""function_codes":{"3":40,"3":1}"#, 1);
        assert!(err(&twice).contains("appears twice"), "{}", err(&twice));
        let spelt_twice = text.replacen(fcs, r#""function_codes":{"3":40,"03":1}"#, 1);
        assert!(
            err(&spelt_twice).contains("function code 3 is listed twice"),
            "{}",
            err(&spelt_twice)
        );
    }
}
