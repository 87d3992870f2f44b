//! Setting up the AF_XDP socket of one RX queue: its UMEM, its rings, the
//! bind (zero-copy where the driver can), busy polling, and the kernel's
//! statistics of the socket.

use std::os::fd::AsRawFd;
use std::time::Duration;

use xsk_rs::config::{
    BindFlags, FrameSize, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig,
};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

use super::busy_poll::{self, BusyPollState};
use super::XdpMode;

/// UMEM frames per queue (power of two; 4096 x 2 KiB = 8 MiB).
const UMEM_FRAMES: u32 = 4096;

/// An AF_XDP socket could not be set up; names the interface and queue.
#[derive(Debug, thiserror::Error)]
#[error("{iface}: queue {queue}: {what}: {detail}")]
pub struct SocketError {
    pub iface: String,
    pub queue: u32,
    pub what: &'static str,
    pub detail: String,
}

/// One bound AF_XDP socket and everything that must live as long as it.
pub struct XskQueue {
    pub(super) queue: u32,
    pub(super) bind: &'static str,
    pub(super) umem: Umem,
    pub(super) rx: RxQueue,
    pub(super) fill: FillQueue,
    // Kept so the socket stays bound until the thread ends.
    _tx: TxQueue,
    _comp: CompQueue,
    /// Descriptors the RX ring is read into.
    pub(super) descs: Vec<FrameDesc>,
    /// How receiving waits for frames (see [`XskQueue::set_polling`]).
    pub(super) poll: super::rx::RxPolling,
}

/// The kernel's XDP_STATISTICS of a socket.
#[derive(Debug, Clone, Copy, Default)]
pub struct SocketStats {
    pub rx_dropped: u64,
    pub rx_ring_full: u64,
    pub fill_ring_empty: u64,
    pub rx_invalid_descs: u64,
}

impl XskQueue {
    /// Create the UMEM and socket of one queue, zero-copy where the driver can.
    pub fn bind(iface: &str, queue: u32, mode: XdpMode) -> Result<XskQueue, SocketError> {
        let err = |what: &'static str, e: &dyn std::fmt::Display| SocketError {
            iface: iface.to_string(),
            queue,
            what,
            detail: e.to_string(),
        };
        let size = |n: u32| QueueSize::new(n).map_err(|e| err("ring size", &e));
        let umem_cfg = UmemConfig::builder()
            .frame_size(FrameSize::new(2048).map_err(|e| err("frame size", &e))?)
            .fill_queue_size(size(UMEM_FRAMES)?)
            .comp_queue_size(size(64)?)
            .build()
            .map_err(|e| err("UMEM config", &e))?;
        let name: Interface = iface.parse().map_err(|e| err("interface name", &e))?;
        // A virtual interface (veth, bridge, macvlan: no device behind it in
        // sysfs) never has zero-copy AF_XDP. Not trying spares a second UMEM:
        // the kernel releases a UMEM whose bind failed asynchronously, so
        // without CAP_IPC_LOCK the retry could find RLIMIT_MEMLOCK still full.
        let has_device = std::path::Path::new("/sys/class/net")
            .join(iface)
            .join("device")
            .exists();
        let attempts: &[(BindFlags, &'static str)] = match mode {
            // Zero-copy needs driver support, which SKB mode never has.
            XdpMode::Native if has_device => &[
                (BindFlags::XDP_ZEROCOPY, "zero-copy"),
                (BindFlags::XDP_COPY, "copy"),
            ],
            XdpMode::Native | XdpMode::Skb => &[(BindFlags::XDP_COPY, "copy")],
        };
        let mut last = String::new();
        for (flags, bind) in attempts {
            let (umem, frames) = Umem::new(
                umem_cfg,
                UMEM_FRAMES.try_into().map_err(|e| err("UMEM", &e))?,
                false,
            )
            .map_err(|e| {
                err(
                    "cannot create the UMEM",
                    &format!("{e} (needs CAP_NET_RAW, and CAP_IPC_LOCK or an RLIMIT_MEMLOCK of 8 MiB more per queue)"),
                )
            })?;
            let sock_cfg = SocketConfig::builder()
                .rx_queue_size(size(UMEM_FRAMES)?)
                .tx_queue_size(size(64)?)
                .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
                .bind_flags(*flags | BindFlags::XDP_USE_NEED_WAKEUP)
                .build();
            // SAFETY: the UMEM is not shared: one UMEM per socket.
            match unsafe { Socket::new(sock_cfg, &umem, &name, queue) } {
                Ok((tx, rx, Some((mut fill, comp)))) => {
                    // SAFETY: every frame of this UMEM is handed to the kernel once.
                    let given = unsafe { fill.produce(&frames) };
                    if given != frames.len() {
                        return Err(err("fill ring", &"could not take every UMEM frame"));
                    }
                    let mut descs = frames;
                    descs.truncate(super::rx::RX_BATCH);
                    return Ok(XskQueue {
                        queue,
                        bind,
                        umem,
                        rx,
                        fill,
                        _tx: tx,
                        _comp: comp,
                        descs,
                        poll: super::rx::RxPolling::default(),
                    });
                }
                Ok((_, _, None)) => return Err(err("AF_XDP socket", &"no fill/completion ring")),
                Err(e) => last = e.to_string(),
            }
        }
        Err(err(
            "cannot bind an AF_XDP socket",
            &format!("{last} (needs CAP_NET_RAW)"),
        ))
    }

    /// The RX queue this socket is bound to.
    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// "zero-copy" or "copy".
    pub fn bind_mode(&self) -> &'static str {
        self.bind
    }

    /// The socket's descriptor (to register it with the XDP program).
    pub fn fd(&self) -> std::os::fd::RawFd {
        self.rx.fd().as_raw_fd()
    }

    /// How receiving waits on an empty ring: keep polling it for `spin`
    /// before sleeping; with `kernel`, each look runs the device's NAPI in
    /// this thread (see [`busy_poll`]).
    pub fn set_polling(&mut self, spin: Duration, kernel: bool) {
        self.poll = super::rx::RxPolling { spin, kernel };
    }

    /// The kernel's statistics of this socket, if it gives them.
    pub fn stats(&self) -> Option<SocketStats> {
        let s = self.rx.fd().xdp_statistics().ok()?;
        Some(SocketStats {
            rx_dropped: s.rx_dropped(),
            rx_ring_full: s.rx_ring_full(),
            fill_ring_empty: s.rx_fill_ring_empty_descs(),
            rx_invalid_descs: s.rx_invalid_descs(),
        })
    }
}

/// Turn on busy polling for every socket (see [`busy_poll`]). Kernel busy
/// polling needs CAP_NET_ADMIN and a recent kernel; without it the RX
/// threads still spin, with a warning.
pub fn enable_busy_poll(iface: &str, sockets: &mut [XskQueue], spin: Duration) -> BusyPollState {
    let mut state = BusyPollState {
        spin_us: spin.as_micros() as u64,
        ..BusyPollState::default()
    };
    if !spin.is_zero() {
        match sockets
            .iter()
            .try_for_each(|s| busy_poll::set_socket_options(s.fd()))
        {
            Err(e) => {
                state.warning = Some(format!(
                    "{iface}: no preferred busy polling on the AF_XDP sockets ({e}); the RX threads poll their rings only"
                ));
            }
            Ok(()) => {
                state.kernel = true;
                match busy_poll::tune_interface(iface) {
                    Ok(t) => state.interface = Some(t),
                    Err(e) => {
                        state.warning = Some(format!(
                            "{iface}: cannot tune the interface for busy polling ({e}); the kernel's softirq keeps part of the work"
                        ));
                    }
                }
            }
        }
    }
    for s in sockets.iter_mut() {
        s.set_polling(state.spin(), state.kernel);
    }
    state
}
