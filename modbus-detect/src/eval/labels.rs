//! Ground truth for the evaluation, in two documented forms:
//!
//! - a lab set's `manifest.json`: per capture, the frames of its expected
//!   alerts and of the attack requests its generators logged; an expected
//!   alert listed without frames (a flood) makes every request of its
//!   source to its destination within its frame range an attack; normal
//!   transactions in frames of tolerated alerts are left out of the
//!   scoring (flagging them is neither required nor false);
//! - a per-frame CSV, as published labelled Modbus datasets use: `frame;label`
//!   (a header line is skipped, `,` works too), label `1`/`attack`/`anomaly`
//!   or `0`/`normal`; frames not listed are normal.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::files::Shown;

/// Labels of one capture.
#[derive(Debug, Default, Clone)]
pub struct Labels {
    pub attack_frames: BTreeSet<u64>,
    pub tolerated_frames: BTreeSet<u64>,
    /// Requests from `.0` to `.1` in frames `.2..=.3` are attacks.
    pub attack_ranges: Vec<(IpAddr, IpAddr, u64, u64)>,
}

impl Labels {
    /// Is a transaction (its frames, its master and slave) an attack?
    pub fn attack(
        &self,
        frames: &[u64],
        master: IpAddr,
        slave: IpAddr,
        request: Option<u64>,
    ) -> bool {
        frames.iter().any(|f| self.attack_frames.contains(f))
            || request.is_some_and(|f| {
                self.attack_ranges
                    .iter()
                    .any(|&(s, d, a, b)| s == master && d == slave && (a..=b).contains(&f))
            })
    }

    pub fn tolerated(&self, frames: &[u64]) -> bool {
        frames.iter().any(|f| self.tolerated_frames.contains(f))
    }

    pub fn has_attacks(&self) -> bool {
        !self.attack_frames.is_empty() || !self.attack_ranges.is_empty()
    }
}

/// A labels file that cannot be used: one line naming it.
#[derive(Debug, thiserror::Error)]
#[error("{}: {problem}", Shown(path))]
pub struct LabelError {
    pub path: PathBuf,
    pub problem: String,
}

fn frames_of(v: &Value) -> impl Iterator<Item = u64> + '_ {
    v.as_array().into_iter().flatten().filter_map(Value::as_u64)
}

/// The labels of one capture entry of a manifest.
pub fn from_manifest_entry(entry: &Value) -> Labels {
    let mut l = Labels::default();
    for a in entry["expected_alerts"].as_array().into_iter().flatten() {
        if a.get("frames").is_some() {
            l.attack_frames.extend(frames_of(&a["frames"]));
            continue;
        }
        let ends: Vec<u64> = frames_of(&a["frame_range"]).collect();
        let ips = (
            a["src_ip"].as_str().and_then(|s| s.parse().ok()),
            a["dst_ip"].as_str().and_then(|s| s.parse().ok()),
        );
        if let ([first, last], (Some(s), Some(d))) = (ends.as_slice(), ips) {
            l.attack_ranges.push((s, d, *first, *last));
        }
    }
    for t in entry["tolerated_alerts"].as_array().into_iter().flatten() {
        l.tolerated_frames.extend(frames_of(&t["frames"]));
    }
    for r in entry["attack_requests_sent"]["listed"]
        .as_array()
        .into_iter()
        .flatten()
    {
        l.attack_frames.extend(r["frame"].as_u64());
    }
    l
}

/// A per-frame labels file.
pub fn from_frame_csv(path: &Path) -> Result<Labels, LabelError> {
    let bad = |problem: String| LabelError {
        path: path.into(),
        problem,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let mut l = Labels::default();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((frame, label)) = line.split_once([';', ',']) else {
            return Err(bad(format!("line {}: not frame;label", i + 1)));
        };
        let Ok(frame) = frame.trim().parse::<u64>() else {
            if i == 0 {
                continue; // a header
            }
            return Err(bad(format!(
                "line {}: {frame:?} is not a frame number",
                i + 1
            )));
        };
        match label.trim().to_ascii_lowercase().as_str() {
            "1" | "attack" | "anomaly" => {
                l.attack_frames.insert(frame);
            }
            "0" | "normal" => {}
            other => {
                return Err(bad(format!(
                    "line {}: label {other:?} is not 0/1, normal/attack",
                    i + 1
                )))
            }
        }
    }
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_csv_takes_a_header_both_separators_and_names_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.csv");
        std::fs::write(&p, "frame;label\n1;0\n2;1\n3,attack\n4;normal\n").unwrap();
        let l = from_frame_csv(&p).unwrap();
        assert_eq!(l.attack_frames, [2, 3].into());
        std::fs::write(&p, "1;0\n2;maybe\n").unwrap();
        assert_eq!(
            from_frame_csv(&p).unwrap_err().to_string(),
            format!(
                "{}: line 2: label \"maybe\" is not 0/1, normal/attack",
                p.display()
            )
        );
        std::fs::write(&p, "1;0\nx;1\n").unwrap();
        assert!(from_frame_csv(&p)
            .unwrap_err()
            .to_string()
            .contains("line 2"));
    }

    #[test]
    fn a_manifest_entry_gives_frames_ranges_and_tolerated_frames() {
        let entry: Value = serde_json::from_str(
            r#"{"expected_alerts": [
                {"frames": [5, 7], "frame_range": [5, 7], "src_ip": "10.0.0.1", "dst_ip": "10.0.0.2"},
                {"frame_range": [100, 200], "src_ip": "10.0.0.9", "dst_ip": "10.0.0.2"}],
               "tolerated_alerts": [{"frames": [9]}],
               "attack_requests_sent": {"listed": [{"frame": 11}]}}"#,
        )
        .unwrap();
        let l = from_manifest_entry(&entry);
        assert_eq!(l.attack_frames, [5, 7, 11].into());
        assert_eq!(l.tolerated_frames, [9].into());
        let (a, b, c) = (
            IpAddr::from([10, 0, 0, 9]),
            IpAddr::from([10, 0, 0, 2]),
            IpAddr::from([10, 0, 0, 1]),
        );
        assert!(l.attack(&[150], a, b, Some(150)));
        assert!(!l.attack(&[150], c, b, Some(150)), "another master");
        assert!(!l.attack(&[201], a, b, Some(201)));
        assert!(l.attack(&[6, 7], c, b, Some(6)), "its response's frame");
    }
}
