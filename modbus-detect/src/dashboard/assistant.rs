//! The assistant's answers to an analyst's first questions, built from the
//! report alone and the same every time (no language model, no network),
//! in the sentences of `data/assistant.toml`.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::output::report::{Report, Status};

const DATA: &str = include_str!("../../data/assistant.toml");

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Texts {
    what_happened: WhatHappened,
    check_first: CheckFirst,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WhatHappened {
    quiet: String,
    headline: String,
    entry: String,
    losses: String,
    interrupted: String,
    input_error: String,
    running: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckFirst {
    item: String,
    none: String,
}

fn texts() -> &'static Texts {
    static T: OnceLock<Texts> = OnceLock::new();
    // Part of the build, held to this by the tests below.
    T.get_or_init(|| toml::from_str(DATA).expect("data/assistant.toml is complete"))
}

/// The answers, as paragraphs of plain text.
#[derive(Debug, Serialize)]
pub struct Answers {
    /// "What happened?": the incident, most severe first.
    pub what_happened: Vec<String>,
    /// "What should I check first?": one item per alert type, most
    /// severe and most frequent first.
    pub check_first: Vec<String>,
}

/// `template` with each `{name}` replaced by its value.
fn fill(template: &str, values: &[(&str, String)]) -> String {
    values.iter().fold(template.to_string(), |t, (k, v)| {
        t.replace(&format!("{{{k}}}"), v)
    })
}

fn list(set: &BTreeSet<String>) -> String {
    const SHOWN: usize = 4;
    let mut v: Vec<&str> = set.iter().map(String::as_str).take(SHOWN).collect();
    let more = set.len().saturating_sub(SHOWN);
    let more = (more > 0).then(|| format!("{more} more"));
    v.extend(more.as_deref());
    v.join(", ")
}

pub fn answer(r: &Report) -> Answers {
    let t = texts();
    let c = &r.counters;
    let when = |s: &Option<String>| s.clone().unwrap_or_else(|| "?".into());
    let mut what = Vec::new();
    match r.status {
        Status::Interrupted => what.push(t.what_happened.interrupted.clone()),
        Status::InputError => what.push(fill(
            &t.what_happened.input_error,
            &[("error", r.error.clone().unwrap_or_default())],
        )),
        Status::Running => what.push(t.what_happened.running.clone()),
        Status::Complete => {}
    }
    let raised: Vec<(&String, &u64)> = c.alerts_by_type.iter().filter(|(_, v)| **v > 0).collect();
    if r.alerts.is_empty() {
        what.push(fill(
            &t.what_happened.quiet,
            &[
                ("adus", c.counters.modbus_adus.to_string()),
                ("masters", r.inventory.masters.len().to_string()),
                ("slaves", r.inventory.slaves.len().to_string()),
                ("start", when(&r.start_time)),
                ("end", when(&r.end_time)),
                ("input", r.input.path.clone()),
            ],
        ));
    } else {
        what.push(fill(
            &t.what_happened.headline,
            &[
                ("events", c.alerts_total.to_string()),
                ("types", raised.len().to_string()),
                ("entries", r.alerts.len().to_string()),
                ("start", when(&r.start_time)),
                ("end", when(&r.end_time)),
                ("input", r.input.path.clone()),
            ],
        ));
        for story in per_type(r) {
            what.push(fill(
                &t.what_happened.entry,
                &[
                    ("first_seen", story.first_seen.clone()),
                    ("last_seen", story.last_seen.clone()),
                    ("severity", story.severity.into()),
                    ("signature", story.signature.clone()),
                    ("events", story.events.to_string()),
                    ("sources", list(&story.sources)),
                    ("targets", list(&story.targets)),
                    ("description", story.example.clone()),
                ],
            ));
        }
    }
    let losses: Vec<String> = [
        ("frames skipped", c.skipped.values().sum::<u64>()),
        ("holes in TCP streams", c.counters.reassembly_gaps),
        ("connections evicted", c.counters.flows_evicted),
        ("alert entries dropped", c.alerts_dropped_table_full),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(what, n)| format!("{n} {what}"))
    .collect();
    if !losses.is_empty() {
        what.push(fill(
            &t.what_happened.losses,
            &[("losses", losses.join(", "))],
        ));
    }
    Answers {
        what_happened: what,
        check_first: check_first(r, &raised),
    }
}

/// What the alerts of one type add up to.
struct TypeStory {
    kind: String,
    rank: usize,
    severity: &'static str,
    signature: String,
    events: u64,
    first_epoch: f64,
    first_seen: String,
    last_epoch: f64,
    last_seen: String,
    sources: BTreeSet<String>,
    targets: BTreeSet<String>,
    /// The description of the type's first alert.
    example: String,
}

/// The alert types raised, most severe first, then by first event.
fn per_type(r: &Report) -> Vec<TypeStory> {
    let mut stories: Vec<TypeStory> = Vec::new();
    for a in &r.alerts {
        let c = &a.common;
        let i = match stories.iter().position(|s| s.kind == c.kind) {
            Some(i) => i,
            None => {
                stories.push(TypeStory {
                    kind: c.kind.clone(),
                    rank: 4,
                    severity: "LOW",
                    signature: c.signature.clone(),
                    events: 0,
                    first_epoch: f64::INFINITY,
                    first_seen: a.first_seen.clone(),
                    last_epoch: f64::NEG_INFINITY,
                    last_seen: a.last_seen.clone(),
                    sources: BTreeSet::new(),
                    targets: BTreeSet::new(),
                    example: a.description.clone(),
                });
                stories.len() - 1
            }
        };
        let s = &mut stories[i];
        let rank = severity_rank(&c.severity);
        if rank < s.rank {
            s.rank = rank;
            s.severity = SEVERITIES.get(rank).copied().unwrap_or("LOW");
        }
        s.events += a.count;
        if a.first_seen_epoch < s.first_epoch {
            s.first_epoch = a.first_seen_epoch;
            s.first_seen = a.first_seen.clone();
            s.example = a.description.clone();
        }
        if a.last_seen_epoch > s.last_epoch {
            s.last_epoch = a.last_seen_epoch;
            s.last_seen = a.last_seen.clone();
        }
        s.sources.insert(c.src_ip.to_string());
        s.targets.insert(c.dst_ip.to_string());
    }
    stories.sort_by(|a, b| {
        a.rank
            .cmp(&b.rank)
            .then(a.first_epoch.total_cmp(&b.first_epoch))
    });
    stories
}

const SEVERITIES: [&str; 4] = ["CRITICAL", "HIGH", "MEDIUM", "LOW"];

fn severity_rank(s: &str) -> usize {
    ["CRITICAL", "HIGH", "MEDIUM", "LOW"]
        .iter()
        .position(|x| *x == s)
        .unwrap_or(4)
}

fn check_first(r: &Report, raised: &[(&String, &u64)]) -> Vec<String> {
    let t = texts();
    if raised.is_empty() {
        return vec![t.check_first.none.clone()];
    }
    let mut stories = per_type(r);
    // Most severe first, then the most frequent.
    stories.sort_by(|a, b| a.rank.cmp(&b.rank).then(b.events.cmp(&a.events)));
    stories
        .iter()
        .map(|s| {
            let check = r
                .alert_types
                .get(&s.kind)
                .and_then(|i| i.check.first().cloned())
                .unwrap_or_default();
            let events = raised
                .iter()
                .find(|(k, _)| **k == s.kind)
                .map_or(s.events, |(_, n)| **n);
            fill(
                &t.check_first.item,
                &[
                    ("type", s.kind.clone()),
                    ("severity", s.severity.into()),
                    ("events", events.to_string()),
                    ("sources", list(&s.sources)),
                    ("targets", list(&s.targets)),
                    ("check", check),
                ],
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_file_is_complete_and_every_placeholder_is_known() {
        let t: Texts = toml::from_str(DATA).expect("complete");
        let known = [
            "adus",
            "masters",
            "slaves",
            "start",
            "end",
            "input",
            "events",
            "types",
            "entries",
            "first_seen",
            "last_seen",
            "severity",
            "signature",
            "description",
            "count",
            "more",
            "losses",
            "error",
            "type",
            "sources",
            "targets",
            "check",
        ];
        let all = [
            &t.what_happened.quiet,
            &t.what_happened.headline,
            &t.what_happened.entry,
            &t.what_happened.losses,
            &t.what_happened.input_error,
            &t.check_first.item,
        ];
        for text in all {
            let mut rest = text.as_str();
            while let Some(i) = rest.find('{') {
                let end = rest[i..].find('}').expect("closed") + i;
                let name = &rest[i + 1..end];
                assert!(known.contains(&name), "{{{name}}} in {text:?}");
                rest = &rest[end..];
            }
        }
    }
}
