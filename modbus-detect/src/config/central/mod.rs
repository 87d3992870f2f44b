//! Central settings (`--config-from nats`): a sensor's allow lists,
//! register limits, baseline and thresholds, kept in a JetStream key-value
//! bucket under `<sensor>.<item>`, each item in the format of its file.
//!
//! What the bucket holds wins over the local settings item by item; an
//! item deleted there falls back to the local one. A value that does not
//! parse is refused whole (the item keeps what it had), logged and counted:
//! a typo at the SOC must not switch a rule off at every site.

pub mod nats;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::addrs::{parse_list, AddrSet};
use super::baseline::Baseline;
use super::limits::RegisterLimits;
use super::{DetectConfig, ThresholdValues, Thresholds};

/// What a sensor takes from the bucket, by key suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Item {
    AuthorizedMasters,
    AuthorizedWriters,
    RegisterLimits,
    Baseline,
    Thresholds,
}

impl Item {
    pub const ALL: [Item; 5] = [
        Item::AuthorizedMasters,
        Item::AuthorizedWriters,
        Item::RegisterLimits,
        Item::Baseline,
        Item::Thresholds,
    ];

    /// The key suffix, the same as the flag that gives it locally.
    pub fn name(self) -> &'static str {
        match self {
            Item::AuthorizedMasters => "authorized-masters",
            Item::AuthorizedWriters => "authorized-writers",
            Item::RegisterLimits => "register-limits",
            Item::Baseline => "baseline",
            Item::Thresholds => "thresholds",
        }
    }

    pub fn from_name(name: &str) -> Option<Item> {
        Item::ALL.into_iter().find(|i| i.name() == name)
    }
}

/// The key of `item` for `sensor`: `<sensor>.<item>`, the sensor's name
/// with what a key may not hold (`[-_=/A-Za-z0-9]` may) made `_`.
pub fn key(sensor: &str, item: Item) -> String {
    format!("{}.{}", key_token(sensor), item.name())
}

/// A sensor's name as a key token.
pub fn key_token(sensor: &str) -> String {
    sensor
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '=' | '/' => c,
            _ => '_',
        })
        .collect()
}

/// A parsed item.
#[derive(Debug, Clone)]
pub enum Value {
    Addrs(AddrSet),
    Limits(Arc<RegisterLimits>),
    Baseline(Arc<Baseline>),
    Thresholds(Thresholds),
}

/// The most an item may hold once decompressed (a hostile value cannot
/// make the sensor allocate more).
pub const MAX_ITEM_BYTES: u64 = 64 << 20;

/// Values larger than this are stored gzipped by `config put` (a baseline
/// with its models shrinks about sixfold, under the servers' 1 MB message
/// limit for networks of a few hundred pairs).
pub const GZIP_FROM: usize = 64 << 10;

/// A value as stored: gzipped (it starts with gzip's magic bytes) or not.
pub fn stored(value: Vec<u8>) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    if value.len() < GZIP_FROM {
        return Ok(value);
    }
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&value)?;
    z.finish()
}

/// A stored value's bytes: gunzipped, at most [`MAX_ITEM_BYTES`].
fn unstored(bytes: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, String> {
    use std::io::Read;
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(bytes.into());
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .take(MAX_ITEM_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("gzip: {e}"))?;
    if out.len() as u64 > MAX_ITEM_BYTES {
        return Err(format!(
            "more than {} MiB once gunzipped",
            MAX_ITEM_BYTES >> 20
        ));
    }
    Ok(out.into())
}

/// Parse `bytes` (as stored: plain or gzipped) as `item`, as the sensor
/// with settings `local` would use it. The error is one line (no key: the
/// caller names it).
pub fn parse(item: Item, bytes: &[u8], local: &DetectConfig) -> Result<(Value, String), String> {
    let bytes = unstored(bytes)?;
    let text = std::str::from_utf8(&bytes).map_err(|e| format!("not UTF-8 text: {e}"))?;
    Ok(match item {
        Item::AuthorizedMasters | Item::AuthorizedWriters => {
            let set = AddrSet::new(parse_list(text)?)?;
            let n = set.entries().len();
            (Value::Addrs(set), counted(n, "entry", "entries"))
        }
        Item::RegisterLimits => {
            let limits = RegisterLimits::parse(text).map_err(|e| e.to_string())?;
            let n = limits.len();
            (
                Value::Limits(Arc::new(limits)),
                counted(n, "register", "registers"),
            )
        }
        Item::Baseline => {
            let b = Baseline::parse(text).map_err(|e| e.to_string())?;
            if local.ml && b.models().is_none() {
                return Err("the baseline has no ML models, and this sensor runs with --ml".into());
            }
            let n = b.pair_count();
            (Value::Baseline(Arc::new(b)), counted(n, "pair", "pairs"))
        }
        Item::Thresholds => {
            let changes: toml::Table = text
                .parse()
                .map_err(|e: toml::de::Error| e.message().trim().to_string())?;
            let shown = changes
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ");
            let t = ThresholdValues::from(&local.thresholds)
                .changed(&changes)?
                .thresholds()?;
            (Value::Thresholds(t), shown)
        }
    })
}

/// `n` things, in words.
fn counted(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// One change seen in the bucket, as the report and the log give it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeRecord {
    /// When the sensor took it (RFC 3339, UTC).
    pub time: String,
    pub key: String,
    pub revision: u64,
    /// "put", "delete", or "gone" (no longer in the bucket at all).
    pub operation: String,
    /// "applied" or "rejected".
    pub outcome: String,
    /// What was applied ("3 entries", "back to the local setting"), or
    /// why it was refused.
    pub detail: String,
}

/// Changes kept in the report; older ones are counted in `changes_not_kept`.
pub const CHANGES_KEPT: usize = 256;

/// The report's `central_config` section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CentralReport {
    pub servers: String,
    pub bucket: String,
    /// The sensor's keys: this and an item's name.
    pub key_prefix: String,
    /// The bucket was read once at least (else the local settings ran).
    pub loaded: bool,
    /// Each item taken from the bucket now, with its revision.
    pub items: BTreeMap<String, u64>,
    pub applied: u64,
    pub rejected: u64,
    /// The last [`CHANGES_KEPT`] changes, oldest first.
    pub changes: Vec<ChangeRecord>,
    pub changes_not_kept: u64,
}

impl CentralReport {
    fn record(&mut self, r: ChangeRecord) {
        if r.outcome == "applied" {
            self.applied += 1;
        } else {
            self.rejected += 1;
        }
        if self.changes.len() >= CHANGES_KEPT {
            self.changes.remove(0);
            self.changes_not_kept += 1;
        }
        self.changes.push(r);
    }
}

/// The bucket's items as the sensor holds them, over its local settings.
pub struct Central {
    local: DetectConfig,
    held: BTreeMap<Item, (u64, Value)>,
    /// The newest revision seen per item, put or delete: an older one
    /// (seen again after a reconnection) changes nothing.
    seen: BTreeMap<Item, u64>,
}

/// What [`Central::change`] made of a change.
#[derive(Debug)]
pub enum Outcome {
    /// The settings changed: install [`Central::effective`].
    Applied(ChangeRecord),
    /// Refused; the settings stay.
    Rejected(ChangeRecord),
    /// Seen before (an older revision): nothing to say.
    Stale,
}

impl Central {
    pub fn new(local: DetectConfig) -> Self {
        Central {
            local: DetectConfig {
                updates: None,
                ..local
            },
            held: BTreeMap::new(),
            seen: BTreeMap::new(),
        }
    }

    /// A put (`Some(value)`) or delete (`None`) of `item` at `revision`.
    pub fn change(
        &mut self,
        key: &str,
        item: Item,
        revision: u64,
        value: Option<&[u8]>,
        time: String,
    ) -> Outcome {
        if self.seen.get(&item).is_some_and(|&r| r >= revision) {
            return Outcome::Stale;
        }
        self.seen.insert(item, revision);
        let record = |outcome: &str, detail: String| ChangeRecord {
            time: time.clone(),
            key: key.to_string(),
            revision,
            operation: if value.is_some() { "put" } else { "delete" }.into(),
            outcome: outcome.into(),
            detail,
        };
        match value {
            // Nothing held (a key deleted before the sensor started).
            None if !self.held.contains_key(&item) => Outcome::Stale,
            None => {
                self.held.remove(&item);
                Outcome::Applied(record("applied", "back to the local setting".into()))
            }
            Some(bytes) => match parse(item, bytes, &self.local) {
                Ok((v, shown)) => {
                    self.held.insert(item, (revision, v));
                    Outcome::Applied(record("applied", shown))
                }
                Err(problem) => Outcome::Rejected(record("rejected", problem)),
            },
        }
    }

    /// `item` is not in the bucket at all any more (its history is gone,
    /// the bucket was made again): what was held goes, back to the local
    /// setting.
    pub fn gone(&mut self, key: &str, item: Item, time: String) -> Outcome {
        self.seen.remove(&item);
        let Some((revision, _)) = self.held.remove(&item) else {
            return Outcome::Stale;
        };
        Outcome::Applied(ChangeRecord {
            time,
            key: key.to_string(),
            revision,
            operation: "gone".into(),
            outcome: "applied".into(),
            detail: "no longer in the bucket: back to the local setting".into(),
        })
    }

    /// The bucket's newest revision is `last`. Older than one already seen,
    /// the bucket was made again and its revisions started over: what was
    /// seen no longer says what is stale.
    pub fn bucket_at(&mut self, last: u64) {
        if self.seen.values().any(|&r| r > last) {
            self.seen.clear();
        }
    }

    /// The local settings with every item held applied.
    pub fn effective(&self) -> DetectConfig {
        let mut c = self.local.clone();
        for (item, (_, value)) in &self.held {
            match (item, value) {
                (Item::AuthorizedMasters, Value::Addrs(a)) => {
                    c.authorized_masters = Some(a.clone())
                }
                (Item::AuthorizedWriters, Value::Addrs(a)) => {
                    c.authorized_writers = Some(a.clone())
                }
                (_, Value::Limits(l)) => c.limits_file = Some(l.clone()),
                (_, Value::Baseline(b)) => c.baseline = Some(b.clone()),
                (_, Value::Thresholds(t)) => c.thresholds = *t,
                // `parse` makes each item's own kind of value.
                (_, Value::Addrs(_)) => {}
            }
        }
        c
    }

    /// Each item held, with its revision (the report's `items`).
    pub fn items(&self) -> BTreeMap<String, u64> {
        self.held
            .iter()
            .map(|(i, (rev, _))| (i.name().to_string(), *rev))
            .collect()
    }

    /// Record an outcome in `report`; returns the line to log, if any.
    pub fn note(&self, report: &mut CentralReport, outcome: Outcome) -> Option<String> {
        let r = match outcome {
            Outcome::Applied(r) | Outcome::Rejected(r) => r,
            Outcome::Stale => return None,
        };
        let line = format!(
            "central settings: {} revision {} ({}): {}: {}",
            r.key, r.revision, r.operation, r.outcome, r.detail
        );
        report.record(r);
        report.items = self.items();
        Some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    fn put(c: &mut Central, item: Item, rev: u64, text: &str) -> Outcome {
        c.change("s.x", item, rev, Some(text.as_bytes()), "t".into())
    }

    #[test]
    fn items_win_over_local_settings_and_deleting_goes_back() {
        let local = DetectConfig {
            authorized_masters: Some([ip("10.0.0.1")].into_iter().collect()),
            ..DetectConfig::default()
        };
        let mut c = Central::new(local);
        assert!(matches!(
            put(
                &mut c,
                Item::AuthorizedMasters,
                3,
                "10.0.0.2\n192.168.50.0/24 # hmi\n"
            ),
            Outcome::Applied(_)
        ));
        let m = c.effective().authorized_masters.expect("a list");
        assert!(m.contains(ip("192.168.50.9")) && !m.contains(ip("10.0.0.1")));
        // An older revision seen again changes nothing.
        assert!(matches!(
            put(&mut c, Item::AuthorizedMasters, 2, "10.0.0.1"),
            Outcome::Stale
        ));
        let deleted = c.change("s.x", Item::AuthorizedMasters, 4, None, "t".into());
        assert!(matches!(deleted, Outcome::Applied(_)));
        let m = c.effective().authorized_masters.expect("the local list");
        assert!(m.contains(ip("10.0.0.1")) && !m.contains(ip("10.0.0.2")));
    }

    #[test]
    fn an_item_gone_from_the_bucket_goes_back_to_the_local_setting() {
        let local = DetectConfig {
            authorized_masters: Some([ip("10.0.0.1")].into_iter().collect()),
            ..DetectConfig::default()
        };
        let mut c = Central::new(local);
        put(&mut c, Item::AuthorizedMasters, 3, "10.0.0.2");
        match c.gone("s.x", Item::AuthorizedMasters, "t".into()) {
            Outcome::Applied(r) => assert_eq!((r.revision, r.operation.as_str()), (3, "gone")),
            other => panic!("{other:?}"),
        }
        let m = c.effective().authorized_masters.expect("the local list");
        assert!(m.contains(ip("10.0.0.1")) && !m.contains(ip("10.0.0.2")));
        assert!(matches!(
            c.gone("s.x", Item::AuthorizedMasters, "t".into()),
            Outcome::Stale
        ));
        // The bucket made again: its revisions start over, and count.
        put(&mut c, Item::Thresholds, 9, "flood_min_run = 30");
        c.bucket_at(2);
        assert!(matches!(
            put(&mut c, Item::AuthorizedMasters, 1, "10.0.0.3"),
            Outcome::Applied(_)
        ));
        assert!(matches!(
            put(&mut c, Item::Thresholds, 2, "flood_min_run = 40"),
            Outcome::Applied(_)
        ));
        assert_eq!(c.effective().thresholds.flood_min_run, 40);
        // A bucket that only grew changes nothing.
        c.bucket_at(5);
        assert!(matches!(
            put(&mut c, Item::Thresholds, 2, "flood_min_run = 50"),
            Outcome::Stale
        ));
    }

    #[test]
    fn a_bad_value_is_refused_and_the_item_keeps_what_it_had() {
        let mut c = Central::new(DetectConfig::default());
        assert!(matches!(
            put(&mut c, Item::Thresholds, 1, "flood_min_run = 30"),
            Outcome::Applied(_)
        ));
        for (rev, bad) in [
            (2, "flood_min_run = 2.5"),
            (3, "no_such_threshold = 1"),
            (4, "flood_min_run = 0"),
            (5, "= ="),
        ] {
            match put(&mut c, Item::Thresholds, rev, bad) {
                Outcome::Rejected(r) => assert!(!r.detail.contains('\n'), "{}", r.detail),
                other => panic!("{bad}: {other:?}"),
            }
            assert_eq!(c.effective().thresholds.flood_min_run, 30);
        }
        match put(&mut c, Item::AuthorizedWriters, 6, "10.0.0.300") {
            Outcome::Rejected(r) => assert!(r.detail.starts_with("line 1"), "{}", r.detail),
            other => panic!("{other:?}"),
        }
        assert!(c.effective().authorized_writers.is_none());
        match c.change("k", Item::Baseline, 7, Some(&[0xff, 0xfe]), "t".into()) {
            Outcome::Rejected(r) => assert!(r.detail.contains("UTF-8"), "{}", r.detail),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_report_keeps_the_last_changes_and_counts_the_rest() {
        let mut c = Central::new(DetectConfig::default());
        let mut report = CentralReport::default();
        for rev in 1..=(CHANGES_KEPT as u64 + 10) {
            let o = put(&mut c, Item::AuthorizedMasters, rev, "10.0.0.1");
            let line = c.note(&mut report, o).expect("a line");
            assert!(line.contains(&format!("revision {rev} ")), "{line}");
        }
        assert_eq!(report.changes.len(), CHANGES_KEPT);
        assert_eq!(report.changes_not_kept, 10);
        assert_eq!(report.applied, CHANGES_KEPT as u64 + 10);
        assert_eq!(report.changes[0].revision, 11);
        assert_eq!(report.items["authorized-masters"], CHANGES_KEPT as u64 + 10);
    }

    #[test]
    fn a_baseline_item_and_a_sensor_that_needs_its_models() {
        let mut b = Baseline::default();
        for i in 0..20u64 {
            b.record(ip("10.0.0.1"), ip("10.0.0.2"), 1, 3, i * 100_000_000);
        }
        let text = serde_json::to_string(&b.to_file("test")).expect("JSON");
        let mut c = Central::new(DetectConfig::default());
        match put(&mut c, Item::Baseline, 1, &text) {
            Outcome::Applied(r) => assert_eq!(r.detail, "1 pair"),
            other => panic!("{other:?}"),
        }
        let held = c.effective().baseline.expect("the bucket's baseline");
        assert!(held.pair_id(ip("10.0.0.1"), ip("10.0.0.2")).is_some());
        // A sensor judging with ML refuses a baseline without models.
        let mut ml = Central::new(DetectConfig {
            ml: true,
            ..DetectConfig::default()
        });
        match put(&mut ml, Item::Baseline, 1, &text) {
            Outcome::Rejected(r) => assert!(r.detail.contains("no ML models"), "{}", r.detail),
            other => panic!("{other:?}"),
        }
        assert!(ml.effective().baseline.is_none());
    }

    #[test]
    fn register_limits_item() {
        let mut c = Central::new(DetectConfig::default());
        let limits = r#"{"40001": {"name": "Setpoint", "min": 50, "max": 200, "max_rate": 5}}"#;
        match put(&mut c, Item::RegisterLimits, 1, limits) {
            Outcome::Applied(r) => assert_eq!(r.detail, "1 register"),
            other => panic!("{other:?}"),
        }
        assert_eq!(c.effective().limits_file.expect("limits").len(), 1);
        let bad = r#"{"40001": {"name": "Setpoint", "min": 300, "max": 200}}"#;
        assert!(matches!(
            put(&mut c, Item::RegisterLimits, 2, bad),
            Outcome::Rejected(_)
        ));
        assert_eq!(c.effective().limits_file.expect("kept").len(), 1);
    }

    #[test]
    fn large_values_are_stored_gzipped_and_bounded_when_read() {
        let list: String = (0..10_000)
            .map(|i| format!("10.{}.{}.1\n", i / 250, i % 250))
            .collect();
        let z = stored(list.clone().into_bytes()).expect("gzip");
        assert!(z.starts_with(&[0x1f, 0x8b]) && z.len() < list.len() / 4);
        let mut c = Central::new(DetectConfig::default());
        match c.change("k", Item::AuthorizedMasters, 1, Some(&z), "t".into()) {
            Outcome::Applied(r) => assert_eq!(r.detail, "10000 entries"),
            other => panic!("{other:?}"),
        }
        // Small values stay as they are.
        assert_eq!(stored(b"10.0.0.1".to_vec()).expect("kept"), b"10.0.0.1");
        // A gzip bomb is refused at the bound, not inflated.
        let bomb = {
            use std::io::Write;
            let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            let zeros = vec![b'#'; 1 << 20];
            for _ in 0..(MAX_ITEM_BYTES >> 20) + 1 {
                z.write_all(&zeros).expect("gzip");
            }
            z.finish().expect("gzip")
        };
        match c.change("k", Item::AuthorizedMasters, 2, Some(&bomb), "t".into()) {
            Outcome::Rejected(r) => assert!(r.detail.contains("64 MiB"), "{}", r.detail),
            other => panic!("{other:?}"),
        }
        match c.change(
            "k",
            Item::AuthorizedMasters,
            3,
            Some(&[0x1f, 0x8b, 0, 1]),
            "t".into(),
        ) {
            Outcome::Rejected(r) => assert!(r.detail.starts_with("gzip"), "{}", r.detail),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn keys_are_made_of_what_a_key_may_hold() {
        assert_eq!(key("plc cell.4*", Item::Baseline), "plc_cell_4_.baseline");
        for i in Item::ALL {
            assert_eq!(Item::from_name(i.name()), Some(i));
        }
    }
}
