//! Address ranges in settings: `10.0.0.20` (one host) or `10.0.1.0/24`
//! (a network), IPv4 or IPv6, for the allow lists (`--authorized-masters`,
//! `--authorized-writers`, their files) and `--target-policy`.

use std::net::IpAddr;
use std::path::Path;
use std::str::FromStr;

use rustc_hash::FxHashSet;

/// An address and a prefix length (the whole address for one host).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IpNet {
    fn width(addr: IpAddr) -> u8 {
        if addr.is_ipv4() {
            32
        } else {
            128
        }
    }

    /// Whether `host` is in the range.
    pub fn contains(&self, host: IpAddr) -> bool {
        let masked = |bits: u128, width: u32| {
            let keep = u32::from(self.prefix).min(width);
            if keep == 0 {
                0
            } else {
                bits >> (width - keep)
            }
        };
        match (self.addr, host) {
            (IpAddr::V4(n), IpAddr::V4(h)) => {
                masked(u32::from(n).into(), 32) == masked(u32::from(h).into(), 32)
            }
            (IpAddr::V6(n), IpAddr::V6(h)) => masked(n.into(), 128) == masked(h.into(), 128),
            _ => false,
        }
    }

    pub fn is_host(&self) -> bool {
        self.prefix == Self::width(self.addr)
    }
}

impl FromStr for IpNet {
    type Err = String;

    /// `ADDR` or `ADDR/PREFIX`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an address or address/prefix"))?;
        let max = Self::width(addr);
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0 to {max}"))?,
        };
        Ok(IpNet { addr, prefix })
    }
}

impl std::fmt::Display for IpNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_host() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

/// Ranges at most in one allow list (its networks are searched in turn;
/// hosts are hashed).
pub const MAX_NETWORKS: usize = 1024;

/// An allow list: hosts, found by hashing, and networks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddrSet {
    hosts: FxHashSet<IpAddr>,
    nets: Vec<IpNet>,
}

impl AddrSet {
    pub fn new(items: impl IntoIterator<Item = IpNet>) -> Result<Self, String> {
        let mut set = AddrSet::default();
        for n in items {
            if n.is_host() {
                set.hosts.insert(n.addr);
            } else {
                set.nets.push(n);
            }
        }
        if set.nets.len() > MAX_NETWORKS {
            return Err(format!(
                "{} networks in an allow list, at most {MAX_NETWORKS}",
                set.nets.len()
            ));
        }
        Ok(set)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.hosts.contains(&ip) || self.nets.iter().any(|n| n.contains(ip))
    }

    /// Every entry, as given (hosts sorted, then networks).
    pub fn entries(&self) -> Vec<String> {
        let mut hosts: Vec<&IpAddr> = self.hosts.iter().collect();
        hosts.sort();
        hosts
            .into_iter()
            .map(ToString::to_string)
            .chain(self.nets.iter().map(ToString::to_string))
            .collect()
    }
}

/// A list of single hosts (no networks, so no bound to break).
impl FromIterator<IpAddr> for AddrSet {
    fn from_iter<I: IntoIterator<Item = IpAddr>>(iter: I) -> Self {
        AddrSet {
            hosts: iter.into_iter().collect(),
            nets: Vec::new(),
        }
    }
}

/// An allow-list file: one address or range per line; `#` starts a
/// comment; blank lines are skipped. Errors name the line.
pub fn parse_list(text: &str) -> Result<Vec<IpNet>, String> {
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let entry = line.split('#').next().unwrap_or("").trim();
            (!entry.is_empty()).then(|| entry.parse().map_err(|e| format!("line {}: {e}", i + 1)))
        })
        .collect()
}

/// [`parse_list`] of a file, bounded in size; errors name the file.
pub fn load_list(path: &Path) -> Result<Vec<IpNet>, String> {
    let shown = crate::files::Shown(path);
    let meta = std::fs::metadata(path).map_err(|e| format!("{shown}: cannot read: {e}"))?;
    if !meta.is_file() || meta.len() > 16 << 20 {
        return Err(format!(
            "{shown}: not an address list (a regular file of at most 16 MiB)"
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: cannot read: {e}"))?;
    parse_list(&text).map_err(|e| format!("{shown}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_networks_of_both_families() {
        let set = AddrSet::new(
            ["10.0.0.20", "192.168.50.0/24", "2001:db8::/32", "::1"]
                .iter()
                .map(|s| s.parse().unwrap()),
        )
        .unwrap();
        for yes in [
            "10.0.0.20",
            "192.168.50.1",
            "192.168.50.255",
            "2001:db8::5",
            "::1",
        ] {
            assert!(set.contains(yes.parse().unwrap()), "{yes}");
        }
        for no in ["10.0.0.21", "192.168.51.1", "2001:db9::1", "::2", "0.0.0.0"] {
            assert!(!set.contains(no.parse().unwrap()), "{no}");
        }
        assert_eq!(
            set.entries(),
            ["10.0.0.20", "::1", "192.168.50.0/24", "2001:db8::/32"]
        );
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert!(!all.contains("::1".parse().unwrap()));
    }

    #[test]
    fn bad_entries_say_what_is_wrong() {
        assert!("10.0.0.0/33"
            .parse::<IpNet>()
            .unwrap_err()
            .contains("prefix length must be 0 to 32"));
        assert!("10.0.0/8"
            .parse::<IpNet>()
            .unwrap_err()
            .contains("not an address"));
        let list = parse_list("# masters\n10.0.0.20  # the HMI\n\n192.168.1.0/24\nnope\n");
        assert_eq!(
            list.unwrap_err(),
            "line 5: \"nope\" is not an address or address/prefix"
        );
        assert_eq!(parse_list("10.0.0.1\n# x\n").unwrap().len(), 1);
    }
}
