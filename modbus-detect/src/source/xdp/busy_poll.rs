//! Busy polling of the AF_XDP sockets (`--busy-poll`, on by default).
//!
//! Without it an RX thread sleeps in poll(2) as soon as its ring is empty,
//! and every batch the kernel then delivers has to wake it. Worse, the
//! device's NAPI poll — which runs our XDP program and copies each frame
//! into the UMEM — runs in softirq on whichever CPU raised it: on a veth
//! that is the sending CPU, on a NIC the CPU its interrupt lands on. Both
//! costs come out of the budget of the CPU that receives.
//!
//! Busy polling moves that work onto the RX thread:
//!
//! 1. The RX thread keeps looking at its ring for a while (`spin`) after it
//!    runs dry before it sleeps, so a steady stream never needs a wake-up.
//! 2. Preferred busy polling (Linux 5.11+): `SO_PREFER_BUSY_POLL`,
//!    `SO_BUSY_POLL` and `SO_BUSY_POLL_BUDGET` on the socket, and the
//!    interface's `napi_defer_hard_irqs` / `gro_flush_timeout` so that the
//!    kernel leaves the device's NAPI to the busy poller: each zero-length
//!    non-blocking `recvfrom` on an empty ring ([`drive_napi`]) runs one
//!    NAPI poll — XDP program and copy — in the RX thread's own context.
//!    When the thread sleeps, the `gro_flush_timeout` timer polls instead,
//!    so nothing waits for long.
//!
//! Measured with the live part of `cargo xtask bench` (veth, 2-core VM):
//! zero-loss rate 255-330 k frames/s without busy polling, 477-484 k with
//! the spin alone, 597-661 k with both, against an XDP_DROP ceiling of
//! about 590 k (XDP in softirq on the sending CPU) and 670 k frames/s
//! taken in by the interface with no program at all.
//!
//! Costs: while frames flow, the RX thread keeps its CPU busy; it sleeps
//! again after `spin` without a frame. The interface tuning is left in
//! place when capture ends (the capabilities to undo it are dropped at
//! start, see `sys::caps::drop_capabilities`); it is only made when both values
//! are 0, is printed, and is in the report (`capture.busy_poll`).

use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Microseconds the kernel may spend in one busy poll (`SO_BUSY_POLL`).
const SOCKET_BUSY_POLL_US: libc::c_int = 50;
/// Frames one busy poll may process (`SO_BUSY_POLL_BUDGET`).
const SOCKET_BUSY_POLL_BUDGET: libc::c_int = 64;
/// Interface tuning for preferred busy polling: NAPI polls that found
/// nothing before the device may interrupt again...
const NAPI_DEFER_HARD_IRQS: u64 = 2;
/// ...and how long the kernel waits for the busy poller before it polls
/// itself (ns). 200 µs measured best of 50 µs, 200 µs and 2 ms: shorter lets
/// softirq take the work back, longer makes the sleeping thread's frames wait.
const GRO_FLUSH_TIMEOUT_NS: u64 = 200_000;

/// What busy polling this capture uses, for the report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusyPollState {
    /// How long an RX thread keeps polling an empty ring before it sleeps
    /// (0: busy polling off).
    pub spin_us: u64,
    /// Preferred busy polling is set on every socket (the kernel runs the
    /// device's NAPI in the RX threads).
    pub kernel: bool,
    /// The interface's NAPI tuning as found and as left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<InterfaceTuning>,
    /// Why kernel busy polling is off or partial, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// The interface's NAPI settings before and after the sensor tuned them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfaceTuning {
    pub napi_defer_hard_irqs: [u64; 2],
    pub gro_flush_timeout_ns: [u64; 2],
    /// False when the values were already set (by the administrator) and
    /// are left as they are.
    pub changed: bool,
}

impl BusyPollState {
    pub fn spin(&self) -> Duration {
        Duration::from_micros(self.spin_us)
    }
}

/// Ask the kernel to prefer busy polling on an AF_XDP socket. Needs
/// CAP_NET_ADMIN (raising `SO_BUSY_POLL` above the system default).
pub fn set_socket_options(fd: RawFd) -> std::io::Result<()> {
    for (opt, val) in [
        (libc::SO_PREFER_BUSY_POLL, 1),
        (libc::SO_BUSY_POLL, SOCKET_BUSY_POLL_US),
        (libc::SO_BUSY_POLL_BUDGET, SOCKET_BUSY_POLL_BUDGET),
    ] {
        // SAFETY: an int option on a socket this process owns.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&val as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A sysfs file of the interface's NAPI tuning could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct TuneError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Let the busy poller own the interface's NAPI, where nobody tuned it yet.
pub fn tune_interface(iface: &str) -> Result<InterfaceTuning, TuneError> {
    let dir = Path::new("/sys/class/net").join(iface);
    let read = |name: &str| -> Result<u64, TuneError> {
        let path = dir.join(name);
        let text = std::fs::read_to_string(&path);
        text.and_then(|t| {
            t.trim()
                .parse()
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        })
        .map_err(|source| TuneError { path, source })
    };
    let (defer, timeout) = (read("napi_defer_hard_irqs")?, read("gro_flush_timeout")?);
    if defer != 0 || timeout != 0 {
        return Ok(InterfaceTuning {
            napi_defer_hard_irqs: [defer, defer],
            gro_flush_timeout_ns: [timeout, timeout],
            changed: false,
        });
    }
    for (name, value) in [
        ("napi_defer_hard_irqs", NAPI_DEFER_HARD_IRQS),
        ("gro_flush_timeout", GRO_FLUSH_TIMEOUT_NS),
    ] {
        let path = dir.join(name);
        if let Err(source) = std::fs::write(&path, value.to_string()) {
            return Err(TuneError { path, source });
        }
    }
    Ok(InterfaceTuning {
        napi_defer_hard_irqs: [defer, NAPI_DEFER_HARD_IRQS],
        gro_flush_timeout_ns: [timeout, GRO_FLUSH_TIMEOUT_NS],
        changed: true,
    })
}

/// One NAPI poll of the socket's device queue in this thread (a zero-length
/// non-blocking receive is how AF_XDP exposes it). Errors are ignored: at
/// worst the kernel's own softirq polls, as without busy polling.
pub fn drive_napi(fd: RawFd) {
    // SAFETY: a zero-length receive into no buffer on our own socket.
    unsafe {
        libc::recvfrom(
            fd,
            std::ptr::null_mut(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        );
    }
}
