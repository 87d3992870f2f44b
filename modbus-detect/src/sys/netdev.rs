//! What the kernel says about network interfaces: RX queues, link state,
//! addresses, and whether this host serves Modbus on one (sysfs, /proc,
//! getifaddrs).

use std::net::IpAddr;
use std::path::Path;

/// An interface the kernel does not have, or could not tell about; names it.
#[derive(Debug, thiserror::Error)]
pub enum NetdevError {
    #[error("{iface}: no such interface")]
    NoSuchInterface { iface: String },
    #[error("{iface}: {what}: {source}")]
    Io {
        iface: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// What the interface is doing, from sysfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    Up,
    /// Administratively down, or no carrier (a veth whose peer is down).
    Down,
    /// Deleted, or replaced by another interface of the same name.
    Gone,
}

pub fn link_state(iface: &str, ifindex: u32) -> LinkState {
    let dir = Path::new("/sys/class/net").join(iface);
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).map(|s| s.trim().to_string());
    match read("ifindex").map(|s| s.parse::<u32>()) {
        Ok(Ok(i)) if i == ifindex => {}
        _ => return LinkState::Gone,
    }
    // "unknown": drivers that do not report it (tun, some virtual ones).
    match read("operstate").as_deref() {
        Ok("up") | Ok("unknown") => LinkState::Up,
        Ok(_) => LinkState::Down,
        Err(_) => LinkState::Gone,
    }
}

/// Number of RX queues, from sysfs; a clear error if the interface is missing.
pub fn rx_queue_count(iface: &str) -> Result<u32, NetdevError> {
    let dir = Path::new("/sys/class/net").join(iface);
    if iface.is_empty() || iface.contains('/') || !dir.exists() {
        return Err(NetdevError::NoSuchInterface {
            iface: iface.to_string(),
        });
    }
    let n = std::fs::read_dir(dir.join("queues"))
        .map_err(|source| NetdevError::Io {
            iface: iface.to_string(),
            what: "cannot list RX queues",
            source,
        })?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count();
    Ok((n as u32).max(1))
}

/// Does this host serve Modbus on an address of `iface`? Then XDP redirect
/// would steal its sessions' frames: the sensor belongs on a mirror port.
pub fn serves_modbus(iface: &str, ports: &[u16]) -> Result<Option<String>, NetdevError> {
    let addrs = interface_addresses(iface)?;
    if addrs.is_empty() {
        return Ok(None);
    }
    for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for (ip, port) in listening(&text, v6) {
            if ports.contains(&port) && (ip.is_unspecified() || addrs.contains(&ip)) {
                return Ok(Some(format!(
                    "it has address {} and this host listens on {ip}:{port}",
                    addrs[0]
                )));
            }
        }
    }
    Ok(None)
}

/// Listening sockets of a /proc/net/tcp{,6} table.
fn listening(text: &str, v6: bool) -> Vec<(IpAddr, u16)> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut cols = line.split_whitespace();
            let local = cols.nth(1)?;
            let state = cols.nth(1)?;
            if state != "0A" {
                return None;
            }
            let (ip, port) = local.split_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            Some((parse_proc_ip(ip, v6)?, port))
        })
        .collect()
}

/// /proc/net/tcp writes addresses as host-order 32-bit words in hex.
fn parse_proc_ip(hex: &str, v6: bool) -> Option<IpAddr> {
    let words: Option<Vec<u32>> = (0..hex.len() / 8)
        .map(|i| u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok())
        .collect();
    let bytes: Vec<u8> = words?.iter().flat_map(|w| w.to_ne_bytes()).collect();
    if v6 {
        let b: [u8; 16] = bytes.try_into().ok()?;
        Some(IpAddr::from(b))
    } else {
        let b: [u8; 4] = bytes.try_into().ok()?;
        Some(IpAddr::from(b))
    }
}

/// The addresses configured on `iface` (getifaddrs).
fn interface_addresses(iface: &str) -> Result<Vec<IpAddr>, NetdevError> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(NetdevError::Io {
            iface: iface.to_string(),
            what: "cannot list interface addresses",
            source: std::io::Error::last_os_error(),
        });
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
        if name.to_bytes() != iface.as_bytes() {
            continue;
        }
        // SAFETY: ifa_addr points to a sockaddr of the family it states.
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        if family == libc::AF_INET {
            // SAFETY: family AF_INET means a sockaddr_in.
            let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
            out.push(IpAddr::from(
                u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
            ));
        } else if family == libc::AF_INET6 {
            // SAFETY: family AF_INET6 means a sockaddr_in6.
            let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
            out.push(IpAddr::from(sin6.sin6_addr.s6_addr));
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_listeners() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:01F6 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0\n   1: 0A00000A:C350 0A000014:01F6 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 100 0 0 10 0\n";
        assert_eq!(
            listening(v4, false),
            vec![(IpAddr::from([127, 0, 0, 1]), 502)]
        );
        let v6 = "  sl  local_address                         remote_address                        st\n   0: 00000000000000000000000000000000:01F6 00000000000000000000000000000000:0000 0A 0\n";
        assert_eq!(listening(v6, true), vec![("::".parse().unwrap(), 502)]);
    }

    #[test]
    fn missing_interface_is_a_one_line_error() {
        let e = rx_queue_count("mbd-no-such-if0").unwrap_err().to_string();
        assert_eq!(e, "mbd-no-such-if0: no such interface");
        assert!(rx_queue_count("../etc").is_err());
    }

    #[test]
    fn link_state_follows_sysfs() {
        let lo: u32 = std::fs::read_to_string("/sys/class/net/lo/ifindex")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(link_state("lo", lo), LinkState::Up);
        assert_eq!(link_state("lo", lo + 1000), LinkState::Gone, "replaced");
        assert_eq!(link_state("mbd-no-such-if0", lo), LinkState::Gone);
    }

    #[test]
    fn loopback_addresses_are_listed() {
        let a = interface_addresses("lo").unwrap();
        assert!(a.contains(&IpAddr::from([127, 0, 0, 1])), "{a:?}");
    }
}
