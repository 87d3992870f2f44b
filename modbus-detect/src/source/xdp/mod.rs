//! The live source. This file is the XDP program's loader: attach the
//! program (`modbus-ebpf`, embedded at build time) to an interface,
//! register AF_XDP sockets per RX queue, read its counters, detach.
//! [`socket`] sets up the AF_XDP socket of one RX queue, `rx` receives
//! from it, [`busy_poll`] keeps the receiving on the RX thread's core.
//!
//! The program sends every TCP frame with a Modbus port (either side; the
//! `--ports` set) to the AF_XDP socket of its RX queue and everything else
//! to the kernel stack. A Modbus frame on a queue with no socket goes to the
//! stack too, counted in `redirect_failed`.
//!
//! Set `MODBUS_XDP_LOG=debug` to have the program's debug log (malformed
//! frames, frames with no socket) printed on stderr; it is off by default,
//! and then costs nothing (the verifier drops the log calls).

pub mod busy_poll;
mod debug_log;
mod program;
mod rx;
pub mod socket;

use std::ffi::CString;
use std::fmt;
use std::os::fd::RawFd;

use aya::programs::xdp::{XdpLinkId, XdpMode as AyaMode};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use aya::Ebpf;

pub use modbus_common::{MAX_PORTS, MAX_QUEUES};
pub use program::LOG_ENV;
pub use socket::{SocketError, SocketStats, XskQueue};

/// How the program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    /// In the driver (XDP_FLAGS_DRV_MODE): fast, needs driver support.
    Native,
    /// Generic XDP (XDP_FLAGS_SKB_MODE): any interface, after the SKB is built.
    Skb,
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XdpMode::Native => "native",
            XdpMode::Skb => "SKB",
        })
    }
}

impl XdpMode {
    fn aya(self) -> AyaMode {
        match self {
            XdpMode::Native => AyaMode::Driver,
            XdpMode::Skb => AyaMode::Skb,
        }
    }
}

/// The program's counters, summed over CPUs. Every frame is counted in
/// `seen` and in exactly one of `redirected` and `passed`;
/// `redirect_failed` (Modbus frames whose RX queue had no AF_XDP socket) and
/// `malformed` (Ethernet, VLAN, IP or TCP header cut short or invalid) are
/// frames also counted in `passed`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct XdpCounters {
    pub seen: u64,
    pub redirected: u64,
    pub redirect_failed: u64,
    pub passed: u64,
    pub malformed: u64,
}

/// Why the XDP program could not be loaded, attached or used: one line,
/// naming the interface where there is one.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    #[error("live capture is not available: this build has no eBPF program (built with AYA_BUILD_SKIP=1); run `cargo xtask setup` and rebuild")]
    Unavailable,
    #[error("{iface}: no such interface")]
    NoSuchInterface { iface: String },
    #[error("{}loading the XDP program needs root or CAP_BPF+CAP_PERFMON+CAP_NET_ADMIN+CAP_NET_RAW: {detail}", at(.iface))]
    Permission {
        iface: Option<String>,
        detail: String,
    },
    /// The verifier (or the kernel) refused the program; `verifier_log` has
    /// the verifier's whole output, the message its last line.
    #[error("{}loading the XDP program failed: {detail}", at(.iface))]
    Load {
        iface: Option<String>,
        detail: String,
        verifier_log: String,
    },
    #[error("too many Modbus ports for the XDP program: {count} (at most {max})")]
    TooManyPorts { count: usize, max: usize },
    #[error("{iface}: attaching XDP in {mode} mode failed: {detail}")]
    Attach {
        iface: String,
        mode: XdpMode,
        detail: String,
    },
    #[error("{iface}: registering the AF_XDP socket of RX queue {queue} failed: {detail}")]
    Socket {
        iface: String,
        queue: u32,
        detail: String,
    },
    #[error("{}reading the XDP counters failed: {detail}", at(.iface))]
    Counters {
        iface: Option<String>,
        detail: String,
    },
    #[error("{iface}: detaching the XDP program failed: {detail}")]
    Detach { iface: String, detail: String },
    #[error("running the XDP program with BPF_PROG_TEST_RUN failed: {detail}")]
    TestRun { detail: String },
}

/// "eth0: " or nothing.
fn at(iface: &Option<String>) -> String {
    iface.as_ref().map(|i| format!("{i}: ")).unwrap_or_default()
}

/// Whether this build embeds the eBPF program (false when built with
/// `AYA_BUILD_SKIP=1`, or where bpf-linker was missing).
pub fn available() -> bool {
    !program::object().is_empty()
}

/// The XDP program attached to an interface. Dropping it detaches it (and
/// closing the process does too: the attachment is a BPF link).
pub struct XdpProgram {
    ebpf: Ebpf,
    iface: String,
    ifindex: u32,
    mode: XdpMode,
    link: Option<XdpLinkId>,
    _log: Option<debug_log::LogPump>,
}

impl fmt::Debug for XdpProgram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XdpProgram")
            .field("iface", &self.iface)
            .field("ifindex", &self.ifindex)
            .field("mode", &self.mode)
            .field("attached", &self.link.is_some())
            .finish()
    }
}

fn xdp_mut(ebpf: &mut Ebpf) -> &mut Xdp {
    ebpf.program_mut(modbus_common::PROGRAM_NAME)
        .and_then(|p| <&mut Xdp>::try_from(p).ok())
        .expect("load() checked the program")
}

fn xdp_ref(ebpf: &Ebpf) -> &Xdp {
    ebpf.program(modbus_common::PROGRAM_NAME)
        .and_then(|p| <&Xdp>::try_from(p).ok())
        .expect("load() checked the program")
}

/// The interface's index, or NoSuchInterface.
fn ifindex(iface: &str) -> Result<u32, XdpError> {
    let missing = || XdpError::NoSuchInterface {
        iface: iface.to_string(),
    };
    let name = CString::new(iface).map_err(|_| missing())?;
    // SAFETY: a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(missing());
    }
    Ok(index)
}

/// Start the debug log pump if a level was asked for.
fn start_log(ebpf: &Ebpf, level: u8) -> Option<debug_log::LogPump> {
    if level == 0 {
        return None;
    }
    let id = xdp_ref(ebpf).info().ok()?.id();
    debug_log::LogPump::start(id)
}

impl XdpProgram {
    /// Load the embedded program, set the port map, attach to `iface`.
    /// mode None: native, falling back to SKB mode with a warning on stderr;
    /// Some(m): only that mode.
    pub fn attach(
        iface: &str,
        ports: &[u16],
        mode: Option<XdpMode>,
    ) -> Result<XdpProgram, XdpError> {
        let index = ifindex(iface)?;
        let level = program::log_level();
        let mut ebpf = program::load(ports, Some(iface), level)?;
        let try_mode = |ebpf: &mut Ebpf, m: XdpMode| {
            xdp_mut(ebpf)
                .attach_to_if_index(index, m.aya())
                .map_err(|e| {
                    let errno = program::errno(&e);
                    (errno, explain(errno, program::describe(&e)))
                })
        };
        let attach_error = |m: XdpMode, errno: Option<i32>, detail: String| {
            if errno.is_some_and(|n| n == libc::EPERM || n == libc::EACCES) {
                XdpError::Permission {
                    iface: Some(iface.to_string()),
                    detail,
                }
            } else {
                XdpError::Attach {
                    iface: iface.to_string(),
                    mode: m,
                    detail,
                }
            }
        };
        let (link, mode) = match mode {
            Some(m) => match try_mode(&mut ebpf, m) {
                Ok(link) => (link, m),
                Err((errno, detail)) => return Err(attach_error(m, errno, detail)),
            },
            None => match try_mode(&mut ebpf, XdpMode::Native) {
                Ok(link) => (link, XdpMode::Native),
                // No permission, or a program already there: SKB mode
                // would fail the same way.
                Err((errno, detail))
                    if errno.is_some_and(|n| {
                        [libc::EPERM, libc::EACCES, libc::EBUSY, libc::EEXIST].contains(&n)
                    }) =>
                {
                    return Err(attach_error(XdpMode::Native, errno, detail));
                }
                Err((_, native)) => {
                    eprintln!(
                        "warning: {iface}: native XDP unavailable ({native}); falling back to SKB (generic) mode, which is slower"
                    );
                    match try_mode(&mut ebpf, XdpMode::Skb) {
                        Ok(link) => (link, XdpMode::Skb),
                        Err((errno, detail)) => {
                            return Err(attach_error(
                                XdpMode::Skb,
                                errno,
                                format!("{detail} (native mode: {native})"),
                            ))
                        }
                    }
                }
            },
        };
        let log = start_log(&ebpf, level);
        Ok(XdpProgram {
            ebpf,
            iface: iface.to_string(),
            ifindex: index,
            mode,
            link: Some(link),
            _log: log,
        })
    }

    pub fn mode(&self) -> XdpMode {
        self.mode
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Put an AF_XDP socket's fd into the XskMap at `queue`.
    pub fn register_socket(&mut self, queue: u32, fd: RawFd) -> Result<(), XdpError> {
        program::set_socket(&mut self.ebpf, &self.iface, queue, fd)
    }

    /// The per-CPU counters summed.
    pub fn counters(&self) -> Result<XdpCounters, XdpError> {
        program::counters(&self.ebpf, Some(&self.iface))
    }

    /// Detach now (also done on drop); idempotent.
    pub fn detach(&mut self) -> Result<(), XdpError> {
        let Some(link) = self.link.take() else {
            return Ok(());
        };
        xdp_mut(&mut self.ebpf)
            .detach(link)
            .map_err(|e| XdpError::Detach {
                iface: self.iface.clone(),
                detail: program::describe(&e),
            })
    }
}

impl Drop for XdpProgram {
    fn drop(&mut self) {
        if let Err(e) = self.detach() {
            eprintln!("warning: {e}");
        }
    }
}

/// A hint for the attach errors people meet.
fn explain(errno: Option<i32>, detail: String) -> String {
    match errno {
        Some(libc::EBUSY) | Some(libc::EEXIST) => {
            format!("{detail} (another XDP program is attached; see `ip link show`)")
        }
        Some(libc::EOPNOTSUPP) => format!("{detail} (the driver has no native XDP support)"),
        _ => detail,
    }
}

/// The program loaded but not attached, for BPF_PROG_TEST_RUN: tests and
/// benchmarks of the parser. Its maps are its own.
pub struct XdpTestProgram {
    ebpf: Ebpf,
}

impl XdpTestProgram {
    /// Load the embedded program (the verifier runs) with `ports` as the
    /// Modbus port set; the XskMap is empty.
    pub fn load(ports: &[u16]) -> Result<XdpTestProgram, XdpError> {
        Ok(XdpTestProgram {
            ebpf: program::load(ports, None, 0)?,
        })
    }

    /// Put an AF_XDP socket into the XskMap at `queue` (it need not be bound).
    pub fn register_socket(&mut self, queue: u32, fd: RawFd) -> Result<(), XdpError> {
        program::set_socket(&mut self.ebpf, "test-run", queue, fd)
    }

    /// Run the program once on `frame` (received on RX queue 0) and return
    /// its XDP action.
    ///
    /// The kernel refuses test data shorter than an Ethernet header; a
    /// shorter frame is given as that many bytes of linear data (all the
    /// program can read: `data_end - data` is the frame's length) followed
    /// by zero padding up to 14 bytes, which the kernel puts in a fragment.
    pub fn run(&self, frame: &[u8]) -> Result<u32, XdpError> {
        const ETH_HLEN: usize = 14;
        let mut data = frame.to_vec();
        let ctx: Vec<u8>;
        let mut opts = TestRunOptions::default();
        if frame.len() < ETH_HLEN {
            data.resize(ETH_HLEN, 0);
            // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
            // rx_queue_index, egress_ifindex (offsets into data_in).
            ctx = [0, frame.len() as u32, 0, 0, 0, 0]
                .iter()
                .flat_map(|v: &u32| v.to_ne_bytes())
                .collect();
            opts.ctx_in = Some(&ctx);
        }
        opts.data_in = Some(&data);
        let result = xdp_ref(&self.ebpf)
            .test_run(opts)
            .map_err(|e| XdpError::TestRun {
                detail: program::describe(&e),
            })?;
        Ok(result.return_value)
    }

    /// The per-CPU counters summed.
    pub fn counters(&self) -> Result<XdpCounters, XdpError> {
        program::counters(&self.ebpf, None)
    }
}

/// Run the program once on `frame` with BPF_PROG_TEST_RUN (for tests):
/// returns the XDP action (XDP_PASS=2, XDP_REDIRECT=4, ...). Loads the
/// program without attaching it.
///
/// The XskMap of this fresh program is empty, so a Modbus frame comes back
/// as XDP_PASS (its redirect fails and the program passes it on, counted in
/// `redirect_failed`): use [`XdpTestProgram`] with a registered AF_XDP socket
/// to see XDP_REDIRECT, and its counters to tell the two apart.
pub fn test_run(frame: &[u8], ports: &[u16]) -> Result<u32, XdpError> {
    XdpTestProgram::load(ports)?.run(frame)
}
