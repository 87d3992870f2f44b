//! `modbus-lab inject`: send the frames of a pcap file out of an interface
//! with an AF_PACKET socket, as fast as possible or at a given rate. The live
//! tests use it for what the mirror cannot carry (802.1Q/802.1ad-tagged
//! frames: the kernel strips tags on the way) and to load the sensor.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use super::LabError;

/// Frames handed to the kernel per sendmmsg call.
const BURST: usize = 64;

/// What to send and how.
pub struct InjectArgs<'a> {
    pub iface: &'a str,
    pub pcap: &'a Path,
    /// Send the capture this many times.
    pub loops: u64,
    /// Frames per second (0: as fast as the socket takes them).
    pub pps: u64,
    /// Insert these VLAN tags (TPID, VID), outermost first, after the MACs.
    pub vlans: &'a [(u16, u16)],
}

pub fn run(a: &InjectArgs<'_>) -> Result<serde_json::Value, LabError> {
    let frames = read_pcap(a.pcap)?;
    let frames: Vec<Vec<u8>> = frames.into_iter().map(|f| tag(&f, a.vlans)).collect();
    let sock = Socket::open(a.iface)?;
    let started = Instant::now();
    let mut sent = 0u64;
    let total = frames.len() as u64 * a.loops;
    'outer: for _ in 0..a.loops {
        for chunk in frames.chunks(BURST) {
            if a.pps > 0 {
                // Pace per burst: never ahead of the requested rate.
                let due = Duration::from_secs_f64(sent as f64 / a.pps as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            sent += sock.send_burst(chunk)? as u64;
            if sent >= total {
                break 'outer;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(json!({"frames": sent, "seconds": secs, "pps": sent as f64 / secs.max(1e-9)}))
}

/// The frames of a classic little-endian pcap (what tcpdump and our
/// generator write).
fn read_pcap(path: &Path) -> Result<Vec<Vec<u8>>, LabError> {
    let b = std::fs::read(path).map_err(|e| LabError(format!("{}: {e}", path.display())))?;
    if b.get(..4) != Some(&[0xd4, 0xc3, 0xb2, 0xa1])
        && b.get(..4) != Some(&[0x4d, 0x3c, 0xb2, 0xa1])
    {
        return Err(LabError(format!(
            "{}: not a little-endian pcap file",
            path.display()
        )));
    }
    let mut out = Vec::new();
    let mut off = 24;
    while let Some(hdr) = b.get(off..off + 16) {
        let incl = u32::from_le_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]) as usize;
        let Some(frame) = b.get(off + 16..off + 16 + incl) else {
            return Err(LabError(format!(
                "{}: truncated at byte {off}",
                path.display()
            )));
        };
        out.push(frame.to_vec());
        off += 16 + incl;
    }
    Ok(out)
}

/// The frame with VLAN tags inserted after the two MAC addresses.
fn tag(frame: &[u8], vlans: &[(u16, u16)]) -> Vec<u8> {
    if frame.len() < 12 || vlans.is_empty() {
        return frame.to_vec();
    }
    let mut out = frame[..12].to_vec();
    for (tpid, vid) in vlans {
        out.extend_from_slice(&tpid.to_be_bytes());
        out.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
    }
    out.extend_from_slice(&frame[12..]);
    out
}

/// An AF_PACKET raw socket bound to one interface.
struct Socket {
    fd: i32,
    ifindex: i32,
}

impl Socket {
    fn open(iface: &str) -> Result<Socket, LabError> {
        let err = |what: &str| {
            LabError(format!(
                "{iface}: {what}: {}",
                std::io::Error::last_os_error()
            ))
        };
        let name =
            std::ffi::CString::new(iface).map_err(|_| LabError(format!("{iface:?}: bad name")))?;
        // SAFETY: if_nametoindex reads a NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) } as i32;
        if ifindex == 0 {
            return Err(err("no such interface"));
        }
        let proto = (libc::ETH_P_ALL as u16).to_be() as i32;
        // SAFETY: plain socket(2) call.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto) };
        if fd < 0 {
            return Err(err("AF_PACKET socket (needs root)"));
        }
        Ok(Socket { fd, ifindex })
    }

    /// Send up to `frames.len()` frames with one sendmmsg; returns how many went.
    fn send_burst(&self, frames: &[Vec<u8>]) -> Result<usize, LabError> {
        // SAFETY: sockaddr_ll is plain data.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = self.ifindex;
        addr.sll_halen = 6;
        let mut iovs: Vec<libc::iovec> = frames
            .iter()
            .map(|f| libc::iovec {
                iov_base: f.as_ptr() as *mut libc::c_void,
                iov_len: f.len(),
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .map(|iov| {
                // SAFETY: msghdr is plain data; the pointers stay valid for the call.
                let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
                h.msg_name = &mut addr as *mut _ as *mut libc::c_void;
                h.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                h.msg_iov = iov;
                h.msg_iovlen = 1;
                libc::mmsghdr {
                    msg_hdr: h,
                    msg_len: 0,
                }
            })
            .collect();
        let mut done = 0;
        while done < msgs.len() {
            // SAFETY: msgs, iovs, addr and the frames outlive the call.
            let n = unsafe {
                libc::sendmmsg(
                    self.fd,
                    msgs[done..].as_mut_ptr(),
                    (msgs.len() - done) as u32,
                    0,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::ENOBUFS) || e.raw_os_error() == Some(libc::EAGAIN)
                {
                    std::thread::yield_now();
                    continue;
                }
                return Err(LabError(format!("sendmmsg: {e}")));
            }
            done += n as usize;
        }
        Ok(done)
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        // SAFETY: the fd is ours and closed once.
        unsafe { libc::close(self.fd) };
    }
}
