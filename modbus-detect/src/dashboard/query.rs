//! The alert table's filters and order, applied by the server to a report
//! of any size (the page asks for one page of rows at a time), and by the
//! page's script to the entries a self-contained file carries: the same
//! rules, written down here and in `assets/dashboard.js` (`matches`,
//! `sortKey`), held together by the browser test that filters both.

use std::cmp::Ordering;

use crate::output::report::AlertEntry;

/// What the analyst asked for: `severity`, `type`, `device` (part of the
/// source or destination address), `from`/`to` (a prefix of an ISO time:
/// alerts whose span meets it), `sort` and `dir`, and a page.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AlertQuery {
    pub severity: Option<String>,
    pub kind: Option<String>,
    pub device: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub sort: Option<String>,
    pub descending: bool,
    pub offset: usize,
    pub limit: usize,
}

/// Rows one request may ask for.
pub const MAX_LIMIT: usize = 1000;

impl AlertQuery {
    /// From a URL query (`severity=HIGH&type=...&offset=100&limit=100`);
    /// unknown keys are ignored, empty values mean "any".
    pub fn parse(query: &str) -> AlertQuery {
        let mut q = AlertQuery {
            limit: 100,
            ..AlertQuery::default()
        };
        for (k, v) in query.split('&').filter_map(|kv| kv.split_once('=')) {
            let v = super::serve::percent_decode(v);
            let text = (!v.is_empty()).then(|| v.clone());
            match k {
                "severity" => q.severity = text,
                "type" => q.kind = text,
                "device" => q.device = text.map(|t| t.trim().to_string()),
                "from" => q.from = text.map(|t| t.trim().to_string()),
                "to" => q.to = text.map(|t| t.trim().to_string()),
                "sort" => q.sort = text,
                "dir" => q.descending = v == "desc",
                "offset" => q.offset = v.parse().unwrap_or(0),
                "limit" => q.limit = v.parse().unwrap_or(100).min(MAX_LIMIT),
                _ => {}
            }
        }
        q
    }

    fn matches(&self, a: &AlertEntry) -> bool {
        let c = &a.common;
        let prefix = |s: &str, n: usize| s.get(..n.min(s.len())).unwrap_or(s).to_string();
        self.severity.as_ref().is_none_or(|s| c.severity == *s)
            && self.kind.as_ref().is_none_or(|k| c.kind == *k)
            && self.device.as_ref().is_none_or(|d| {
                c.src_ip.to_string().contains(d.as_str())
                    || c.dst_ip.to_string().contains(d.as_str())
            })
            && self
                .from
                .as_ref()
                .is_none_or(|f| prefix(&a.last_seen, f.len()) >= *f)
            && self
                .to
                .as_ref()
                .is_none_or(|t| prefix(&a.first_seen, t.len()) <= *t)
    }

    /// The indexes of the matching entries, in the order asked for (ties
    /// in the report's order).
    pub fn select(&self, alerts: &[AlertEntry]) -> Vec<usize> {
        let mut rows: Vec<usize> = (0..alerts.len())
            .filter(|&i| self.matches(&alerts[i]))
            .collect();
        if let Some(key) = &self.sort {
            rows.sort_by(|&x, &y| {
                let o = compare(&alerts[x], &alerts[y], key);
                let o = if self.descending { o.reverse() } else { o };
                o.then(x.cmp(&y))
            });
        }
        rows
    }
}

fn severity_rank(s: &str) -> usize {
    ["CRITICAL", "HIGH", "MEDIUM", "LOW"]
        .iter()
        .position(|x| *x == s)
        .unwrap_or(4)
}

fn compare(a: &AlertEntry, b: &AlertEntry, key: &str) -> Ordering {
    match key {
        "severity" => severity_rank(&a.common.severity).cmp(&severity_rank(&b.common.severity)),
        "type" => a.common.kind.cmp(&b.common.kind),
        "src_ip" => a
            .common
            .src_ip
            .to_string()
            .cmp(&b.common.src_ip.to_string()),
        "dst_ip" => a
            .common
            .dst_ip
            .to_string()
            .cmp(&b.common.dst_ip.to_string()),
        "count" => a.count.cmp(&b.count),
        "first_seen_epoch" => a.first_seen_epoch.total_cmp(&b.first_seen_epoch),
        "last_seen_epoch" => a.last_seen_epoch.total_cmp(&b.last_seen_epoch),
        _ => Ordering::Equal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_parses_and_bounds_its_page() {
        let q = AlertQuery::parse("severity=HIGH&type=&device=10.0.0.1&from=2026-11-23T10%3A42&sort=count&dir=desc&offset=200&limit=999999");
        assert_eq!(q.severity.as_deref(), Some("HIGH"));
        assert_eq!(q.kind, None);
        assert_eq!(q.from.as_deref(), Some("2026-11-23T10:42"));
        assert!(q.descending);
        assert_eq!((q.offset, q.limit), (200, MAX_LIMIT));
    }
}
