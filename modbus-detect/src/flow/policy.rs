//! Target-based reassembly: when two copies of the same stream bytes
//! differ, the receiver's TCP/IP stack decides which it takes, and stacks
//! decide differently (Novak & Sturges, "Target-Based TCP Stream
//! Reassembly", 2007). The sensor must take the copy the PLC takes, so
//! each receiving host gets the policy of its stack (`--target-policy`).

use std::net::IpAddr;
use std::str::FromStr;

use crate::config::addrs::IpNet;

/// How a receiver resolves overlapping copies it holds out of order
/// (bytes it has already delivered to the application never change: every
/// stack drops later copies of them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TargetPolicy {
    /// Linux (`tcp_data_queue_ofo`): the copy that starts earlier wins; of
    /// two starting at the same byte the longer one (a longer segment
    /// replaces a queued one), else the one that came first.
    #[default]
    Linux,
    /// BSD: the copy that came first wins, unless the later one starts
    /// before it.
    Bsd,
    /// Windows: as BSD for overlapping data a receiver holds out of order
    /// (both favour the original unless the new copy starts before it).
    Windows,
    /// The copy that came first wins.
    First,
    /// The copy that came last wins.
    Last,
}

/// One copy of some stream bytes, as a policy compares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentCopy {
    /// First byte, relative to a common origin (sequence space unwrapped).
    pub start: i64,
    pub len: usize,
    /// Order of arrival: smaller came first.
    pub arrival: u64,
}

impl TargetPolicy {
    pub const NAMES: [&'static str; 5] = ["linux", "bsd", "windows", "first", "last"];

    pub fn name(self) -> &'static str {
        match self {
            TargetPolicy::Linux => "linux",
            TargetPolicy::Bsd => "bsd",
            TargetPolicy::Windows => "windows",
            TargetPolicy::First => "first",
            TargetPolicy::Last => "last",
        }
    }

    /// Whether the receiver takes `a`'s bytes where `a` and `b` overlap.
    pub fn prefers(self, a: &SegmentCopy, b: &SegmentCopy) -> bool {
        let first = a.arrival < b.arrival;
        match self {
            TargetPolicy::Linux => {
                a.start < b.start
                    || (a.start == b.start && (a.len > b.len || (a.len == b.len && first)))
            }
            TargetPolicy::Bsd | TargetPolicy::Windows => {
                a.start < b.start || (a.start == b.start && first)
            }
            TargetPolicy::First => first,
            TargetPolicy::Last => !first,
        }
    }
}

impl FromStr for TargetPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "linux" => Ok(TargetPolicy::Linux),
            "bsd" => Ok(TargetPolicy::Bsd),
            "windows" => Ok(TargetPolicy::Windows),
            "first" => Ok(TargetPolicy::First),
            "last" => Ok(TargetPolicy::Last),
            _ => Err(format!(
                "unknown target policy {s:?} (one of {})",
                TargetPolicy::NAMES.join(", ")
            )),
        }
    }
}

/// Address ranges beyond this many are refused: each new connection scans
/// them.
pub const MAX_POLICY_RANGES: usize = 1024;

/// One `--target-policy` value: a policy for every host, or for a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyRule {
    /// `None`: every host (the default policy).
    pub range: Option<(IpAddr, u8)>,
    pub policy: TargetPolicy,
}

impl FromStr for PolicyRule {
    type Err = String;

    /// `POLICY` or `ADDR[/PREFIX]=POLICY`.
    fn from_str(s: &str) -> Result<Self, String> {
        let Some((net, policy)) = s.split_once('=') else {
            return Ok(PolicyRule {
                range: None,
                policy: s.parse()?,
            });
        };
        let IpNet { addr, prefix } = net.parse()?;
        Ok(PolicyRule {
            range: Some((addr, prefix)),
            policy: policy.parse()?,
        })
    }
}

/// The policy of each receiving host: the most specific range that holds
/// it, else the default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetPolicies {
    pub default: TargetPolicy,
    /// Longest prefix first.
    ranges: Vec<(IpAddr, u8, TargetPolicy)>,
}

impl TargetPolicies {
    /// From `--target-policy` values; the last default given wins, as for
    /// any repeated option.
    pub fn new(rules: &[PolicyRule]) -> Result<Self, String> {
        let mut out = TargetPolicies::default();
        for rule in rules {
            match rule.range {
                None => out.default = rule.policy,
                Some((addr, prefix)) => out.ranges.push((addr, prefix, rule.policy)),
            }
        }
        if out.ranges.len() > MAX_POLICY_RANGES {
            return Err(format!(
                "{} address ranges for --target-policy, at most {MAX_POLICY_RANGES}",
                out.ranges.len()
            ));
        }
        // Stable: of two equal ranges the one given last comes first.
        out.ranges.reverse();
        out.ranges
            .sort_by_key(|&(_, prefix, _)| std::cmp::Reverse(prefix));
        Ok(out)
    }

    /// The policy of the stack at `host`.
    pub fn of(&self, host: IpAddr) -> TargetPolicy {
        self.ranges
            .iter()
            .find(|&&(addr, prefix, _)| IpNet { addr, prefix }.contains(host))
            .map_or(self.default, |&(_, _, p)| p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(start: i64, len: usize, arrival: u64) -> SegmentCopy {
        SegmentCopy {
            start,
            len,
            arrival,
        }
    }

    #[test]
    fn linux_prefers_the_earlier_start_then_the_longer_copy() {
        let p = TargetPolicy::Linux;
        let (old, new) = (copy(10, 5, 0), copy(8, 4, 1));
        assert!(p.prefers(&new, &old), "starts earlier");
        let longer = copy(10, 8, 1);
        assert!(p.prefers(&longer, &old), "same start, longer: replaces");
        let same = copy(10, 5, 1);
        assert!(p.prefers(&old, &same), "same start and length: the first");
        assert!(p.prefers(&old, &copy(12, 9, 1)), "starts later");
    }

    #[test]
    fn the_other_policies() {
        let (old, new_before, new_same_longer) = (copy(10, 5, 0), copy(8, 4, 1), copy(10, 8, 1));
        for p in [TargetPolicy::Bsd, TargetPolicy::Windows] {
            assert!(p.prefers(&new_before, &old));
            assert!(p.prefers(&old, &new_same_longer));
        }
        assert!(TargetPolicy::First.prefers(&old, &new_before));
        assert!(TargetPolicy::Last.prefers(&new_same_longer, &old));
    }

    #[test]
    fn rules_parse_and_the_most_specific_range_wins() {
        let rules: Vec<PolicyRule> = [
            "windows",
            "10.0.0.0/8=bsd",
            "10.1.0.0/16=first",
            "fd00::/8=last",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let p = TargetPolicies::new(&rules).unwrap();
        assert_eq!(p.of("10.1.2.3".parse().unwrap()), TargetPolicy::First);
        assert_eq!(p.of("10.2.2.3".parse().unwrap()), TargetPolicy::Bsd);
        assert_eq!(p.of("192.168.0.1".parse().unwrap()), TargetPolicy::Windows);
        assert_eq!(p.of("fd12::1".parse().unwrap()), TargetPolicy::Last);
        assert_eq!(p.of("2001:db8::1".parse().unwrap()), TargetPolicy::Windows);
        assert_eq!(
            TargetPolicies::default().of("10.0.0.1".parse().unwrap()),
            TargetPolicy::Linux
        );
        for bad in [
            "solaris",
            "10.0.0.0/33=linux",
            "10.0.0=linux",
            "10.0.0.0/8=nope",
        ] {
            assert!(bad.parse::<PolicyRule>().is_err(), "{bad}");
        }
        let host: PolicyRule = "10.0.0.5=first".parse().unwrap();
        assert_eq!(host.range, Some(("10.0.0.5".parse().unwrap(), 32)));
    }
}
