//! What each alert type means: its fixed signature, its MITRE ATT&CK for
//! ICS techniques and the analyst's text (meaning, likely causes, what to
//! check, false positives), from `data/alert_types.toml`
//! (data, not code: reviewed and translated there). Built into the binary
//! and read once; the tests below hold it to the alert types of this build.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::alert::AlertKind;

const DATA: &str = include_str!("../data/alert_types.toml");

/// An ATT&CK for ICS technique, with the tactic it serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Technique {
    pub id: String,
    pub name: String,
    pub tactic_id: String,
    pub tactic: String,
}

/// An ATT&CK tactic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tactic {
    pub id: String,
    pub name: String,
}

/// Everything known about one alert type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeInfo {
    /// A fixed message per rule (SIEMs group by it).
    pub signature: String,
    pub techniques: Vec<Technique>,
    /// Tactics: those of the techniques, and any the type names alone.
    pub tactics: Vec<Tactic>,
    /// What the alert means.
    pub meaning: String,
    /// Likely causes, most likely first.
    // Absent from reports written before it was added: they still read
    // (`serve --report`).
    #[serde(default)]
    pub causes: Vec<String>,
    /// What to check first.
    pub check: Vec<String>,
    /// What else raises it.
    pub false_positives: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTechnique {
    name: String,
    tactic: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawType {
    signature: String,
    techniques: Vec<String>,
    #[serde(default)]
    tactics: Vec<String>,
    meaning: String,
    causes: Vec<String>,
    check: Vec<String>,
    false_positives: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    techniques: BTreeMap<String, RawTechnique>,
    tactics: BTreeMap<String, String>,
    types: BTreeMap<String, RawType>,
}

/// The knowledge of every alert type of this build, indexed by
/// [`AlertKind`] (`AlertKind::ALL` order).
#[derive(Debug)]
pub struct Knowledge(Vec<TypeInfo>);

impl Knowledge {
    /// Parse and check the data file's text: every alert type present and
    /// no other, every technique and tactic defined.
    pub fn parse(text: &str) -> Result<Knowledge, String> {
        let raw: RawFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let tactic = |id: &str| {
            raw.tactics
                .get(id)
                .map(|name| Tactic {
                    id: id.to_string(),
                    name: name.clone(),
                })
                .ok_or_else(|| format!("tactic {id} is not defined"))
        };
        if let Some(unknown) = raw
            .types
            .keys()
            .find(|k| !AlertKind::ALL.iter().any(|a| a.name() == k.as_str()))
        {
            return Err(format!("{unknown} is no alert type of this build"));
        }
        let mut out = Vec::with_capacity(AlertKind::ALL.len());
        for kind in AlertKind::ALL {
            let t = raw
                .types
                .get(kind.name())
                .ok_or_else(|| format!("{} has no entry", kind.name()))?;
            let mut techniques = Vec::new();
            let mut tactics: Vec<Tactic> = Vec::new();
            for id in &t.techniques {
                let tech = raw
                    .techniques
                    .get(id)
                    .ok_or_else(|| format!("{}: technique {id} is not defined", kind.name()))?;
                let ta = tactic(&tech.tactic)?;
                techniques.push(Technique {
                    id: id.clone(),
                    name: tech.name.clone(),
                    tactic_id: ta.id.clone(),
                    tactic: ta.name.clone(),
                });
                if !tactics.contains(&ta) {
                    tactics.push(ta);
                }
            }
            for id in &t.tactics {
                let ta = tactic(id)?;
                if !tactics.contains(&ta) {
                    tactics.push(ta);
                }
            }
            if tactics.is_empty()
                || t.signature.is_empty()
                || t.meaning.is_empty()
                || t.causes.is_empty()
            {
                return Err(format!(
                    "{} needs a signature, a meaning, at least one cause and a technique or tactic",
                    kind.name()
                ));
            }
            out.push(TypeInfo {
                signature: t.signature.clone(),
                techniques,
                tactics,
                meaning: t.meaning.clone(),
                causes: t.causes.clone(),
                check: t.check.clone(),
                false_positives: t.false_positives.clone(),
            });
        }
        Ok(Knowledge(out))
    }

    pub fn of(&self, kind: AlertKind) -> &TypeInfo {
        // `parse` made one entry per kind, in `AlertKind::ALL` order.
        &self.0[kind as usize]
    }
}

/// The built-in knowledge.
pub fn knowledge() -> &'static Knowledge {
    static K: OnceLock<Knowledge> = OnceLock::new();
    K.get_or_init(|| {
        Knowledge::parse(DATA)
            .unwrap_or_else(|e| panic!("data/alert_types.toml is checked by its tests: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_alert_type_has_its_knowledge() {
        let k = Knowledge::parse(DATA).expect("the data file is valid");
        for kind in AlertKind::ALL {
            let t = k.of(kind);
            assert!(!t.signature.is_empty() && !t.tactics.is_empty(), "{kind:?}");
            assert!(
                t.signature.starts_with("MODBUS "),
                "{kind:?}: {}",
                t.signature
            );
            assert!(!t.check.is_empty(), "{kind:?}");
            assert!(t.causes.len() >= 2, "{kind:?}: {} causes", t.causes.len());
        }
        assert_eq!(
            k.of(AlertKind::UnauthorizedWrite).techniques[0].name,
            "Unauthorized Command Message"
        );
        assert_eq!(
            k.of(AlertKind::UnauthorizedWrite).tactics[0].name,
            "Impair Process Control"
        );
    }

    #[test]
    fn a_broken_file_says_what_is_wrong() {
        let missing = DATA.replace("[types.MODBUS_FLOOD]", "[types.MODBUS_FLOODX]");
        assert!(Knowledge::parse(&missing)
            .unwrap_err()
            .contains("MODBUS_FLOODX is no alert type"));
        let unknown = DATA.replace("techniques = [\"T0814\"]", "techniques = [\"T9999\"]");
        assert!(Knowledge::parse(&unknown).unwrap_err().contains("T9999"));
        let mut table: toml::Table = DATA.parse().expect("the data file is TOML");
        table["types"]["MODBUS_FLOOD"]["causes"] = toml::Value::Array(Vec::new());
        let err = Knowledge::parse(&table.to_string()).unwrap_err();
        assert!(
            err.contains("MODBUS_FLOOD") && err.contains("cause"),
            "{err}"
        );
    }
}
