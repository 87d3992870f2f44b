//! The register limits file: safe ranges and change rates per register.
//!
//! Format (the original tool's): `{"40001": {"name": "Reactor Temperature
//! Setpoint", "min": 50, "max": 200, "unit": "C", "max_rate": 5}}`. Keys are
//! Modicon numbers: 0xxxx coils, 1xxxx discrete inputs, 3xxxx input
//! registers, 4xxxx holding registers, first entity 1 ("40001" is holding
//! register 0); 6-digit forms (400001 .. 465536) too.

use std::path::Path;

use rustc_hash::FxHashMap;
use serde::Deserialize;

use crate::files::{load_file, FileError, ParseError, UniqueKeys, MAX_TEXT_LEN};
use crate::modbus::pdu::Table;

/// One limited register.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisterLimit {
    pub table: Table,
    pub addr: u16,
    /// Modicon number as used in alerts (40001).
    pub modicon: u32,
    pub name: String,
    pub unit: String,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Largest allowed change, in units per second.
    pub max_rate: Option<f64>,
}

impl RegisterLimit {
    pub fn in_range(&self, value: f64) -> bool {
        self.min.is_none_or(|m| value >= m) && self.max.is_none_or(|m| value <= m)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimit {
    #[serde(default)]
    name: String,
    min: Option<f64>,
    max: Option<f64>,
    #[serde(default)]
    unit: String,
    max_rate: Option<f64>,
    #[serde(default)]
    description: Option<String>,
}

/// All limits, indexed by (table, protocol address).
#[derive(Debug, Clone, Default)]
pub struct RegisterLimits {
    entries: Vec<RegisterLimit>,
    index: FxHashMap<(Table, u16), u32>,
    /// Per table (see [`table_slot`]), the limited addresses in ascending
    /// order with their entry index. A read of 100 registers of which two
    /// are limited costs two binary searches and two checks instead of 100
    /// hash lookups (the register rules were the largest cost per response:
    /// see the `limits_within` micro-benchmark).
    by_table: [Vec<(u16, u32)>; 4],
}

impl RegisterLimits {
    pub fn load(path: &Path) -> Result<Self, FileError> {
        load_file(path, Self::parse)
    }

    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let UniqueKeys(raw) =
            serde_json::from_str::<UniqueKeys<RawLimit>>(text).map_err(ParseError::Json)?;
        let mut limits = RegisterLimits::default();
        for (key, r) in raw {
            let (table, addr) = parse_modicon(&key).ok_or_else(|| {
                ParseError::Content(format!(
                    "register key {key:?} is not a Modicon number (5 or 6 digits starting with 0, 1, 3 or 4, like 40001 or 400001)"
                ))
            })?;
            if let (Some(min), Some(max)) = (r.min, r.max) {
                if min > max {
                    return Err(ParseError::Content(format!(
                        "register {key}: min {min} is greater than max {max}"
                    )));
                }
            }
            if r.max_rate.is_some_and(|m| m.is_nan() || m <= 0.0) {
                return Err(ParseError::Content(format!(
                    "register {key}: max_rate must be a positive number"
                )));
            }
            for (what, text) in [
                ("name", Some(&r.name)),
                ("unit", Some(&r.unit)),
                ("description", r.description.as_ref()),
            ] {
                if text.is_some_and(|t| t.len() > MAX_TEXT_LEN) {
                    return Err(ParseError::Content(format!(
                        "register {key}: {what} longer than {MAX_TEXT_LEN} bytes"
                    )));
                }
            }
            let entry = RegisterLimit {
                table,
                addr,
                modicon: modicon_number(table, addr),
                name: r.name,
                unit: r.unit,
                min: r.min,
                max: r.max,
                max_rate: r.max_rate,
            };
            if limits.index.contains_key(&(table, addr)) {
                return Err(ParseError::Content(format!(
                    "register {key} is listed twice (as {} and {key})",
                    entry.modicon
                )));
            }
            let idx = limits.entries.len() as u32;
            limits.index.insert((table, addr), idx);
            let sorted = &mut limits.by_table[table_slot(table)];
            let at = sorted.partition_point(|&(a, _)| a < addr);
            sorted.insert(at, (addr, idx));
            limits.entries.push(entry);
        }
        Ok(limits)
    }

    /// The limits of the registers `start, start + 1, ..., start + len - 1`
    /// of `table` (wrapping past 65535, as the addresses of a PDU's values
    /// do), in that order: each with its position in the range (address
    /// minus `start`), its index and the limit.
    pub fn within(&self, table: Table, start: u16, len: u16) -> Within<'_> {
        let sorted = &self.by_table[table_slot(table)];
        let end = u32::from(start) + u32::from(len);
        let slice = |lo: u32, hi: u32| -> &[(u16, u32)] {
            // Most PDUs touch no limited register: two comparisons say so.
            let (Some(&(first, _)), Some(&(last, _))) = (sorted.first(), sorted.last()) else {
                return &[];
            };
            if hi <= u32::from(first) || lo > u32::from(last) {
                return &[];
            }
            let a = sorted.partition_point(|&(x, _)| u32::from(x) < lo);
            let b = sorted.partition_point(|&(x, _)| u32::from(x) < hi);
            &sorted[a..b.max(a)]
        };
        // Up to the end of the address space, then what wrapped around.
        let first = slice(u32::from(start), end.min(1 << 16));
        let wrapped = if end > 1 << 16 {
            slice(0, end - (1 << 16))
        } else {
            &[]
        };
        Within {
            parts: [first, wrapped],
            start,
            entries: &self.entries,
        }
    }

    /// The limit of a register and its index (stable for the run).
    pub fn lookup(&self, table: Table, addr: u16) -> Option<(u32, &RegisterLimit)> {
        let idx = *self.index.get(&(table, addr))?;
        Some((idx, self.entries.get(idx as usize)?))
    }

    pub fn get(&self, idx: u32) -> Option<&RegisterLimit> {
        self.entries.get(idx as usize)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The iterator [`RegisterLimits::within`] returns: (position in the
/// range, index, limit). A plain two-slice walk: `chain` and `filter_map`
/// cost twice as much per PDU.
#[derive(Debug, Clone)]
pub struct Within<'a> {
    parts: [&'a [(u16, u32)]; 2],
    start: u16,
    entries: &'a [RegisterLimit],
}

impl<'a> Iterator for Within<'a> {
    type Item = (u16, u32, &'a RegisterLimit);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((&(addr, idx), rest)) = self.parts[0].split_first() {
                self.parts[0] = rest;
                if let Some(limit) = self.entries.get(idx as usize) {
                    return Some((addr.wrapping_sub(self.start), idx, limit));
                }
                continue;
            }
            if self.parts[1].is_empty() {
                return None;
            }
            self.parts[0] = std::mem::take(&mut self.parts[1]);
        }
    }
}

/// Index of a table in per-table arrays.
fn table_slot(table: Table) -> usize {
    match table {
        Table::Coil => 0,
        Table::DiscreteInput => 1,
        Table::Input => 2,
        Table::Holding => 3,
    }
}

fn table_digit(table: Table) -> u32 {
    match table {
        Table::Coil => 0,
        Table::DiscreteInput => 1,
        Table::Input => 3,
        Table::Holding => 4,
    }
}

/// Modicon number of a register: 5 digits where the address allows (40001),
/// 6 digits above (465536).
pub fn modicon_number(table: Table, addr: u16) -> u32 {
    let n = u32::from(addr) + 1;
    if n <= 9999 {
        table_digit(table) * 10_000 + n
    } else {
        table_digit(table) * 100_000 + n
    }
}

/// Parse "40001" / "400001" into (table, protocol address).
pub fn parse_modicon(key: &str) -> Option<(Table, u16)> {
    let key = key.trim();
    if !(key.len() == 5 || key.len() == 6) || !key.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let table = match key.as_bytes()[0] {
        b'0' => Table::Coil,
        b'1' => Table::DiscreteInput,
        b'3' => Table::Input,
        b'4' => Table::Holding,
        _ => return None,
    };
    let n: u32 = key[1..].parse().ok()?;
    let max = if key.len() == 5 { 9999 } else { 65536 };
    if n == 0 || n > max {
        return None;
    }
    Some((table, u16::try_from(n - 1).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modicon_keys() {
        assert_eq!(parse_modicon("40001"), Some((Table::Holding, 0)));
        assert_eq!(parse_modicon("40021"), Some((Table::Holding, 20)));
        assert_eq!(parse_modicon("400001"), Some((Table::Holding, 0)));
        assert_eq!(parse_modicon("465536"), Some((Table::Holding, 65535)));
        assert_eq!(parse_modicon("00001"), Some((Table::Coil, 0)));
        assert_eq!(parse_modicon("10005"), Some((Table::DiscreteInput, 4)));
        assert_eq!(parse_modicon("30010"), Some((Table::Input, 9)));
        for bad in ["40000", "50001", "4001", "4000001", "4x001", "", "465537"] {
            assert_eq!(parse_modicon(bad), None, "{bad}");
        }
        assert_eq!(modicon_number(Table::Holding, 0), 40001);
        assert_eq!(modicon_number(Table::Holding, 65535), 465536);
    }

    #[test]
    fn parses_the_original_format() {
        let l = RegisterLimits::parse(
            r#"{"40001": {"name": "Reactor Temperature Setpoint", "min": 50, "max": 200, "unit": "C", "max_rate": 5}}"#,
        )
        .unwrap();
        let (_, lim) = l.lookup(Table::Holding, 0).unwrap();
        assert_eq!(lim.name, "Reactor Temperature Setpoint");
        assert!(lim.in_range(50.0) && lim.in_range(200.0));
        assert!(!lim.in_range(49.0) && !lim.in_range(201.0));
        assert_eq!(lim.max_rate, Some(5.0));
        assert!(l.lookup(Table::Input, 0).is_none());
    }

    #[test]
    fn within_lists_limited_registers_in_address_order_with_wrap() {
        let l = RegisterLimits::parse(
            r#"{"40001": {"max": 1}, "40003": {"max": 1}, "465536": {"max": 1},
                "465535": {"max": 1}, "30003": {"max": 1}}"#,
        )
        .unwrap();
        let got = |t, start, len| -> Vec<(u16, u32)> {
            l.within(t, start, len)
                .map(|(pos, _, lim)| (pos, lim.modicon))
                .collect()
        };
        assert_eq!(got(Table::Holding, 0, 10), vec![(0, 40001), (2, 40003)]);
        assert_eq!(got(Table::Holding, 1, 2), vec![(1, 40003)]);
        assert_eq!(got(Table::Holding, 3, 100), vec![]);
        assert_eq!(got(Table::Input, 0, 3), vec![(2, 30003)]);
        assert_eq!(got(Table::Holding, 0, 0), vec![]);
        // 65534, 65535, then 0, 1, 2 after the wrap.
        assert_eq!(
            got(Table::Holding, 65534, 5),
            vec![(0, 465535), (1, 465536), (2, 40001), (4, 40003)]
        );
        // Every position agrees with a lookup of its address.
        for start in [0u16, 1, 2, 65530, 65535] {
            for len in [0u16, 1, 3, 7, 200] {
                let want: Vec<u16> = (0..len)
                    .filter(|i| l.lookup(Table::Holding, start.wrapping_add(*i)).is_some())
                    .collect();
                let have: Vec<u16> = got(Table::Holding, start, len)
                    .iter()
                    .map(|p| p.0)
                    .collect();
                assert_eq!(have, want, "start {start} len {len}");
            }
        }
    }

    #[test]
    fn rejects_bad_content() {
        let e = |t| match RegisterLimits::parse(t) {
            Err(ParseError::Content(s)) => s,
            other => panic!("{other:?}"),
        };
        assert!(e(r#"{"abc": {"min": 1, "max": 2}}"#).contains("\"abc\""));
        assert!(e(r#"{"40001": {"min": 5, "max": 2}}"#).contains("greater than max"));
        assert!(e(r#"{"40001": {"min": 1}, "400001": {"max": 2}}"#).contains("twice"));
        assert!(matches!(
            RegisterLimits::parse("{not json"),
            Err(ParseError::Json(_))
        ));
        assert!(matches!(
            RegisterLimits::parse(r#"{"40001": {"min": "low"}}"#),
            Err(ParseError::Json(_))
        ));
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("limits.json");
        std::fs::write(&p, "[1, 2").unwrap();
        let msg = RegisterLimits::load(&p).unwrap_err().to_string();
        assert!(msg.starts_with(&p.display().to_string()), "{msg}");
        assert!(!msg.contains('\n'));
        let missing = dir.path().join("nope.json");
        let msg = RegisterLimits::load(&missing).unwrap_err().to_string();
        assert!(
            msg.contains("nope.json") && msg.contains("cannot read"),
            "{msg}"
        );
    }

    /// A register given twice is refused (the stricter of two limits must
    /// never be lost silently), and so are names and units too long to be
    /// names.
    #[test]
    fn keys_given_twice_and_long_texts_are_refused() {
        let err = |t: &str| match RegisterLimits::parse(t) {
            Err(ParseError::Content(s)) => s,
            Err(ParseError::Json(e)) => e.to_string(),
            Ok(_) => panic!("accepted {t}"),
        };
        let twice = r#"{"40001": {"min": 0, "max": 100}, "40001": {"min": 0, "max": 1000}}"#;
        assert!(
            err(twice).contains("\"40001\" appears twice"),
            "{}",
            err(twice)
        );
        let long = format!(
            r#"{{"40001": {{"name": "{}", "max": 1}}}}"#,
            "x".repeat(300)
        );
        assert!(err(&long).contains("name longer than"), "{}", err(&long));
        let ok = format!(
            r#"{{"40001": {{"name": "{}", "max": 1}}}}"#,
            "x".repeat(256)
        );
        assert!(RegisterLimits::parse(&ok).is_ok());
    }
}
