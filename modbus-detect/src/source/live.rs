//! Live capture: the XDP program sends Modbus frames into one AF_XDP socket
//! per RX queue; one thread per queue copies them out of the UMEM into
//! per-shard batches and hands them to the same shards the replay uses.
//!
//! Frames are copied (a Modbus frame is ~60-300 bytes, a memcpy of a cache
//! line or four) and their UMEM frames go straight back to the fill ring, so
//! the kernel never waits for a shard; a shard that falls behind fills its
//! ring and the RX thread counts the frames it had to drop, per shard.
//!
//! Faults: the interface going down is waited out (the XDP program and the
//! sockets stay in place and capture resumes when it comes back up; the
//! outage is counted and reported); the interface disappearing (or being
//! replaced by another of the same name) ends the capture with a clear
//! error, the report still written.
//!
//! Privileges: once the program is attached and the sockets are bound,
//! every capability is dropped (see [`drop_capabilities`]) before any
//! other thread starts, so RX threads, shards and the EVE writer never hold
//! one.

use std::io::Write;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use serde::Serialize;
use xsk_rs::config::{
    BindFlags, FrameSize, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig,
};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

use crate::config::DetectConfig;
use crate::counters::Counters;
use crate::decode::LinkType;
use crate::dispatch::{classify, Batch, BatchItem, BATCH_FRAMES};
use crate::engine::{pin_current_thread, Feeder, Pipeline};
use crate::output::eve::EveWriter;
use crate::shard::ShardResult;
use crate::source::busy_poll::{self, BusyPollState};
use crate::source::xdp::{XdpCounters, XdpMode, XdpProgram};

/// UMEM frames per queue (power of two; 4096 x 2 KiB = 8 MiB).
const UMEM_FRAMES: u32 = 4096;
/// Descriptors taken from the RX ring per poll.
const RX_BATCH: usize = 256;
/// A partly filled batch waits at most this long before it goes to its shard.
const FLUSH_AFTER: Duration = Duration::from_millis(2);

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    pub iface: String,
    /// RX queues to capture on; `None`: all of them.
    pub queues: Option<Vec<u32>>,
    /// XDP attach mode; `None`: native, falling back to SKB mode.
    pub mode: Option<XdpMode>,
    /// Stop after this long; `None`: until SIGINT/SIGTERM.
    pub duration: Option<Duration>,
    /// Attach even where this host itself serves Modbus on the interface.
    pub force: bool,
    /// CPUs to pin to: RX threads first, then shards.
    pub cpus: Option<Vec<usize>>,
    pub stats_interval: Duration,
    /// How long an RX thread keeps polling an empty ring before it sleeps;
    /// zero: no busy polling (see [`busy_poll`]).
    pub busy_poll: Duration,
    pub quiet: bool,
}

/// Live capture could not start or went wrong; one line naming the interface.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LiveError(pub String);

/// Per-queue counters, shared between its RX thread and the stats line.
#[derive(Debug, Default)]
struct QueueCounters {
    frames: AtomicU64,
    bytes: AtomicU64,
    /// Frames dropped because a shard's ring was full.
    ring_full_drops: AtomicU64,
    /// The same, per shard.
    ring_full_by_shard: Vec<AtomicU64>,
    /// From the socket's XDP_STATISTICS.
    rx_dropped: AtomicU64,
    rx_ring_full: AtomicU64,
    fill_ring_empty: AtomicU64,
    rx_invalid: AtomicU64,
}

/// Per-queue figures for the report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct QueueStats {
    pub queue: u32,
    /// "zero-copy" or "copy".
    pub bind: &'static str,
    pub frames: u64,
    pub bytes: u64,
    pub shard_ring_full_drops: u64,
    /// `shard_ring_full_drops` by shard (index = shard).
    pub shard_ring_full_drops_by_shard: Vec<u64>,
    pub rx_dropped: u64,
    pub rx_ring_full: u64,
    pub fill_ring_empty: u64,
    pub rx_invalid_descs: u64,
}

/// How a live run ended.
pub struct LiveOutcome {
    pub shards: Vec<ShardResult>,
    pub dispatch: Counters,
    pub xdp: XdpCounters,
    pub mode: XdpMode,
    pub queues: Vec<QueueStats>,
    pub interrupted: bool,
    /// The interface failed mid-capture (disappeared, a socket error).
    pub error: Option<String>,
    pub eve: Option<Result<u64, String>>,
    pub elapsed: Duration,
    /// Frames dropped because a shard's ring was full, per shard (all queues).
    pub shard_ring_full_drops: Vec<u64>,
    /// Times the interface went down (and capture waited for it).
    pub link_down_events: u64,
    /// Seconds the interface was down in all.
    pub link_down_seconds: f64,
    /// What the process kept after setup.
    pub privileges: Privileges,
    pub busy_poll: BusyPollState,
}

/// One bound AF_XDP socket and everything that must live as long as it.
struct XskQueue {
    queue: u32,
    bind: &'static str,
    umem: Umem,
    rx: RxQueue,
    fill: FillQueue,
    // Kept so the socket stays bound until the thread ends.
    _tx: TxQueue,
    _comp: CompQueue,
    frames: Vec<FrameDesc>,
    /// How its RX thread waits for frames (set once busy polling is known).
    poll: RxPolling,
}

/// Capture on `opts.iface` until the duration ends or `stop` is set.
///
/// `ready` runs once setup is done, with no capability in effect, before
/// capture starts: the caller checks there what must still work without
/// privileges (that its outputs can be written); an error stops the run.
/// See [`drop_capabilities`].
pub fn run_live(
    cfg: Arc<DetectConfig>,
    opts: &LiveOptions,
    shards: usize,
    eve: Option<EveWriter>,
    stop: &AtomicBool,
    ready: &dyn Fn() -> Result<(), String>,
) -> Result<LiveOutcome, LiveError> {
    let iface = &opts.iface;
    if !crate::source::xdp::available() {
        return Err(LiveError(
            "live capture is not available: this build has no eBPF program (built with AYA_BUILD_SKIP=1); run `cargo xtask setup` and rebuild".into(),
        ));
    }
    let all = rx_queue_count(iface)?;
    let queues = match &opts.queues {
        Some(q) => {
            if let Some(bad) = q.iter().find(|&&n| n >= all) {
                return Err(LiveError(format!(
                    "{iface}: has {all} RX queues, there is no queue {bad}"
                )));
            }
            q.clone()
        }
        None => (0..all).collect(),
    };
    if !opts.force {
        if let Some(why) = serves_modbus(iface, &cfg.ports)? {
            return Err(LiveError(format!(
                "{iface}: refusing to capture: {why}; XDP would take those frames from the local stack. Capture on a dedicated mirror/SPAN interface, or pass --force"
            )));
        }
    }
    let mut program =
        XdpProgram::attach(iface, &cfg.ports, opts.mode).map_err(|e| LiveError(e.to_string()))?;
    let mode = program.mode();
    let mut sockets = Vec::with_capacity(queues.len());
    for &q in &queues {
        let xsk = bind_queue(iface, q, mode)?;
        program
            .register_socket(q, xsk.rx.fd().as_raw_fd())
            .map_err(|e| LiveError(e.to_string()))?;
        sockets.push(xsk);
    }
    let busy = enable_busy_poll(iface, &sockets, opts.busy_poll);
    if !opts.quiet {
        if let Some(w) = &busy.warning {
            let _ = writeln!(std::io::stderr(), "modbus-detect: warning: {w}");
        }
        if let Some(t) = busy.interface.as_ref().filter(|t| t.changed) {
            let _ = writeln!(
                std::io::stderr(),
                "modbus-detect: {iface}: set napi_defer_hard_irqs {} -> {} and gro_flush_timeout {} -> {} ns for busy polling (left in place after capture)",
                t.napi_defer_hard_irqs[0],
                t.napi_defer_hard_irqs[1],
                t.gro_flush_timeout_ns[0],
                t.gro_flush_timeout_ns[1],
            );
        }
    }
    // Everything that needs a privilege is done: drop them all before any
    // other thread exists (capabilities are per thread).
    let privileges = drop_capabilities(ready).map_err(|e| match e {
        DropError::Check(e) => LiveError(e),
        DropError::Caps(e) => LiveError(format!(
            "{iface}: cannot drop capabilities after setup: {e}"
        )),
    })?;
    let cpus = opts.cpus.clone().unwrap_or_default();
    let shard_cpus: Vec<usize> = cpus.iter().skip(queues.len()).copied().collect();
    let (pipe, feeders) =
        Pipeline::start_pinned(cfg.clone(), shards, queues.len(), eve, &shard_cpus);
    let started = Instant::now();
    let halt = Arc::new(AtomicBool::new(false));
    let failure: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let shards = shards.max(1);
    let counters: Arc<Vec<QueueCounters>> = Arc::new(
        queues
            .iter()
            .map(|_| QueueCounters {
                ring_full_by_shard: (0..shards).map(|_| AtomicU64::new(0)).collect(),
                ..QueueCounters::default()
            })
            .collect(),
    );
    let binds: Vec<(u32, &'static str)> = sockets.iter().map(|s| (s.queue, s.bind)).collect();
    let mut handles = Vec::with_capacity(sockets.len());
    for (i, (mut xsk, feeder)) in sockets.into_iter().zip(feeders).enumerate() {
        let (cfg, halt, failure, counters) =
            (cfg.clone(), halt.clone(), failure.clone(), counters.clone());
        let cpu = cpus.get(i).copied();
        xsk.poll = RxPolling {
            spin: busy.spin(),
            kernel: busy.kernel,
        };
        let name = format!("rx-{iface}-{}", xsk.queue);
        let thread_iface = iface.clone();
        let handle = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                if let Some(c) = cpu {
                    pin_current_thread(c);
                }
                rx_loop(
                    xsk,
                    feeder,
                    &cfg,
                    &halt,
                    &counters[i],
                    &thread_iface,
                    &failure,
                )
            })
            .map_err(|e| LiveError(format!("{iface}: cannot start an RX thread: {e}")))?;
        handles.push(handle);
    }
    if !opts.quiet {
        let modes = binds.iter().map(|(_, b)| *b).collect::<Vec<_>>().join(", ");
        let _ = writeln!(
            std::io::stderr(),
            "modbus-detect: capturing on {iface}: XDP {} mode, {} RX queue(s) ({modes}), {shards} shard(s)",
            match mode {
                XdpMode::Native => "native",
                XdpMode::Skb => "skb",
            },
            queues.len(),
        );
    }
    let mut interrupted = false;
    let mut last_stats = Instant::now();
    let mut last_frames = 0u64;
    let mut link = LinkWatch::default();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        if stop.load(Ordering::Relaxed) {
            interrupted = true;
            break;
        }
        if failure.lock().map(|f| f.is_some()).unwrap_or(true) {
            break;
        }
        if opts.duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        match link_state(iface, program.ifindex()) {
            LinkState::Gone => {
                set_failure(
                    &failure,
                    format!("{iface}: the interface disappeared during capture"),
                );
                break;
            }
            LinkState::Down => {
                if link.went_down() && !opts.quiet {
                    let _ = writeln!(
                        std::io::stderr(),
                        "live {iface}: link down; waiting for it to come back up (XDP program and sockets stay in place)"
                    );
                }
            }
            LinkState::Up => {
                if let Some(after) = link.came_up() {
                    if !opts.quiet {
                        let _ = writeln!(
                            std::io::stderr(),
                            "live {iface}: link up again after {:.1} s; capture resumes",
                            after.as_secs_f64()
                        );
                    }
                }
            }
        }
        if !opts.quiet && last_stats.elapsed() >= opts.stats_interval {
            let secs = last_stats.elapsed().as_secs_f64();
            last_frames = stats_line(iface, &program, &pipe, &counters, last_frames, secs);
            last_stats = Instant::now();
        }
    }
    halt.store(true, Ordering::Relaxed);
    let mut dispatch = Counters::default();
    for h in handles {
        match h.join() {
            Ok(c) => dispatch.merge(&c),
            Err(_) => set_failure(&failure, format!("{iface}: an RX thread panicked")),
        }
    }
    let xdp = program.counters().unwrap_or_default();
    // Detach before the (possibly long) final drain: the interface is
    // normal again as soon as capture ends.
    let _ = program.detach();
    let result = pipe.finish();
    let queues = binds
        .iter()
        .zip(counters.iter())
        .map(|(&(queue, bind), c)| QueueStats {
            queue,
            bind,
            frames: c.frames.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            shard_ring_full_drops: c.ring_full_drops.load(Ordering::Relaxed),
            shard_ring_full_drops_by_shard: c
                .ring_full_by_shard
                .iter()
                .map(|n| n.load(Ordering::Relaxed))
                .collect(),
            rx_dropped: c.rx_dropped.load(Ordering::Relaxed),
            rx_ring_full: c.rx_ring_full.load(Ordering::Relaxed),
            fill_ring_empty: c.fill_ring_empty.load(Ordering::Relaxed),
            rx_invalid_descs: c.rx_invalid.load(Ordering::Relaxed),
        })
        .collect::<Vec<QueueStats>>();
    let shard_ring_full_drops = (0..shards)
        .map(|s| {
            queues
                .iter()
                .map(|q| q.shard_ring_full_drops_by_shard[s])
                .sum()
        })
        .collect();
    let error = failure.lock().ok().and_then(|f| f.clone());
    let (link_down_events, link_down) = link.finish();
    Ok(LiveOutcome {
        shards: result.shards,
        dispatch,
        xdp,
        mode,
        queues,
        interrupted,
        error,
        eve: result.eve,
        elapsed: started.elapsed(),
        shard_ring_full_drops,
        link_down_events,
        link_down_seconds: link_down.as_secs_f64(),
        privileges,
        busy_poll: busy,
    })
}

/// Turn on busy polling for every socket (see [`busy_poll`]). Kernel busy
/// polling needs CAP_NET_ADMIN and a recent kernel; without it the RX
/// threads still spin, with a warning.
fn enable_busy_poll(iface: &str, sockets: &[XskQueue], spin: Duration) -> BusyPollState {
    let mut state = BusyPollState {
        spin_us: spin.as_micros() as u64,
        ..BusyPollState::default()
    };
    if spin.is_zero() {
        return state;
    }
    if let Err(e) = sockets
        .iter()
        .try_for_each(|s| busy_poll::set_socket_options(s.rx.fd().as_raw_fd()))
    {
        state.warning = Some(format!(
            "{iface}: no preferred busy polling on the AF_XDP sockets ({e}); the RX threads poll their rings only"
        ));
        return state;
    }
    state.kernel = true;
    match busy_poll::tune_interface(iface) {
        Ok(t) => state.interface = Some(t),
        Err(e) => {
            state.warning = Some(format!(
                "{iface}: cannot tune the interface for busy polling ({e}); the kernel's softirq keeps part of the work"
            ));
        }
    }
    state
}

/// What the interface is doing, from sysfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkState {
    Up,
    /// Administratively down, or no carrier (a veth whose peer is down).
    Down,
    /// Deleted, or replaced by another interface of the same name.
    Gone,
}

fn link_state(iface: &str, ifindex: u32) -> LinkState {
    let dir = std::path::Path::new("/sys/class/net").join(iface);
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

/// Link outages during a capture.
#[derive(Debug, Default)]
struct LinkWatch {
    down_since: Option<Instant>,
    events: u64,
    total: Duration,
}

impl LinkWatch {
    /// The link is down; true when it just went down.
    fn went_down(&mut self) -> bool {
        if self.down_since.is_some() {
            return false;
        }
        self.down_since = Some(Instant::now());
        self.events += 1;
        true
    }

    /// The link is up; how long it was down, when it just came back.
    fn came_up(&mut self) -> Option<Duration> {
        let since = self.down_since.take()?;
        let d = since.elapsed();
        self.total += d;
        Some(d)
    }

    /// Outages and their total length (one still going counts until now).
    fn finish(mut self) -> (u64, Duration) {
        self.came_up();
        (self.events, self.total)
    }
}

fn set_failure(failure: &Mutex<Option<String>>, msg: String) {
    if let Ok(mut f) = failure.lock() {
        f.get_or_insert(msg);
    }
}

/// One stats line on stderr; returns the frame total for the next rate.
fn stats_line(
    iface: &str,
    program: &XdpProgram,
    pipe: &Pipeline,
    counters: &[QueueCounters],
    last_frames: u64,
    secs: f64,
) -> u64 {
    let sum = |f: fn(&QueueCounters) -> &AtomicU64| -> u64 {
        counters.iter().map(|c| f(c).load(Ordering::Relaxed)).sum()
    };
    let frames = sum(|c| &c.frames);
    let (adus, alerts) = pipe.progress();
    let xdp = program.counters().unwrap_or_default();
    let ring_full = sum(|c| &c.ring_full_drops);
    // Which shards are behind, when any is.
    let by_shard = if ring_full == 0 {
        String::new()
    } else {
        let shards = counters.first().map_or(0, |c| c.ring_full_by_shard.len());
        let per: Vec<String> = (0..shards)
            .map(|s| {
                let n: u64 = counters
                    .iter()
                    .map(|c| c.ring_full_by_shard[s].load(Ordering::Relaxed))
                    .sum();
                format!("{s}:{n}")
            })
            .collect();
        format!(" (by shard {})", per.join(" "))
    };
    let _ = writeln!(
        std::io::stderr(),
        "live {iface}: {:.0} frames/s, {frames} frames, {adus} ADUs, {alerts} alerts; drops: xdp-redirect {} rx-ring {} fill-empty {} shard-ring {ring_full}{by_shard}",
        frames.saturating_sub(last_frames) as f64 / secs.max(1e-3),
        xdp.redirect_failed,
        sum(|c| &c.rx_dropped) + sum(|c| &c.rx_ring_full),
        sum(|c| &c.fill_ring_empty),
    );
    frames
}

/// Create the UMEM and socket of one queue, zero-copy where the driver can.
fn bind_queue(iface: &str, queue: u32, mode: XdpMode) -> Result<XskQueue, LiveError> {
    let err = |what: &str, e: &dyn std::fmt::Display| {
        LiveError(format!("{iface}: queue {queue}: {what}: {e}"))
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
                return Ok(XskQueue {
                    queue,
                    bind,
                    umem,
                    rx,
                    fill,
                    _tx: tx,
                    _comp: comp,
                    frames,
                    poll: RxPolling {
                        spin: Duration::ZERO,
                        kernel: false,
                    },
                });
            }
            Ok((_, _, None)) => return Err(err("AF_XDP socket", &"no fill/completion ring")),
            Err(e) => last = e.to_string(),
        }
    }
    Err(LiveError(format!(
        "{iface}: queue {queue}: cannot bind an AF_XDP socket: {last} (needs CAP_NET_RAW)"
    )))
}

/// Frames for one shard, copied out of the UMEM.
struct BatchBuilder {
    data: BytesMut,
    items: Vec<BatchItem>,
    since: Instant,
}

impl BatchBuilder {
    fn new() -> Self {
        BatchBuilder {
            data: BytesMut::with_capacity(BATCH_FRAMES * 128),
            items: Vec::with_capacity(BATCH_FRAMES),
            since: Instant::now(),
        }
    }

    fn push(&mut self, item: BatchItem, frame: &[u8]) {
        if self.items.is_empty() {
            self.since = Instant::now();
        }
        let off = self.data.len();
        self.data.extend_from_slice(frame);
        self.items.push(BatchItem { off, ..item });
    }

    fn due(&self) -> bool {
        self.items.len() >= BATCH_FRAMES
            || (!self.items.is_empty() && self.since.elapsed() >= FLUSH_AFTER)
    }

    /// The batch built so far; the next one reuses the buffers of `spare`
    /// (a batch the shard has finished with) when it has some: its copy
    /// buffer is ours again once the shard has dropped every view of it.
    fn take(&mut self, spare: Option<Batch>) -> Batch {
        let next = match spare {
            Some(b) => BatchBuilder {
                data: match b.data.try_into_mut() {
                    Ok(mut data) => {
                        data.clear();
                        data
                    }
                    Err(_) => BytesMut::with_capacity(BATCH_FRAMES * 128),
                },
                items: b.items,
                since: Instant::now(),
            },
            None => BatchBuilder::new(),
        };
        let full = std::mem::replace(self, next);
        Batch {
            data: full.data.freeze(),
            items: full.items,
        }
    }
}

/// How an RX thread waits for frames.
#[derive(Debug, Clone, Copy)]
struct RxPolling {
    /// Keep polling an empty ring this long before sleeping in poll(2).
    spin: Duration,
    /// Each look at an empty ring runs the device's NAPI in this thread.
    kernel: bool,
}

/// Longest sleep in poll(2), so that a halt is seen soon.
const POLL_TIMEOUT_MS: i32 = 10;
/// How often the socket's XDP_STATISTICS are read.
const SOCKET_STATS_EVERY: Duration = Duration::from_millis(100);

/// The RX thread of one queue. Returns its dispatch counters.
fn rx_loop(
    mut q: XskQueue,
    mut feeder: Feeder,
    cfg: &DetectConfig,
    halt: &AtomicBool,
    stats: &QueueCounters,
    iface: &str,
    failure: &Mutex<Option<String>>,
) -> Counters {
    let shards = feeder.shards();
    let mut batches: Vec<BatchBuilder> = (0..shards).map(|_| BatchBuilder::new()).collect();
    let mut descs = q.frames.clone();
    descs.truncate(RX_BATCH);
    let mut counters = Counters::default();
    let mut frame_no = 0u64;
    let fd = q.rx.fd().as_raw_fd();
    let poll = q.poll;
    let mut last_frame = Instant::now();
    let mut last_stats = Instant::now();
    while !halt.load(Ordering::Relaxed) {
        // SAFETY: the descriptors belong to this queue's UMEM.
        let mut got = unsafe { q.rx.consume(&mut descs) };
        if got == 0 {
            if last_frame.elapsed() < poll.spin {
                if poll.kernel {
                    busy_poll::drive_napi(fd);
                } else {
                    std::hint::spin_loop();
                }
            } else {
                // SAFETY: as above.
                got = match unsafe { q.rx.poll_and_consume(&mut descs, POLL_TIMEOUT_MS) } {
                    Ok(n) => n,
                    Err(e) => {
                        set_failure(
                            failure,
                            format!("{iface}: queue {}: receive failed: {e}", q.queue),
                        );
                        break;
                    }
                };
            }
        }
        let ts_ns = if got > 0 {
            last_frame = Instant::now();
            now_ns()
        } else {
            0
        };
        for d in &descs[..got] {
            // SAFETY: `d` was just consumed from this UMEM's RX ring.
            let data = unsafe { q.umem.data(d) };
            let frame = data.contents();
            frame_no += 1;
            counters.frames += 1;
            counters.bytes += frame.len() as u64;
            match classify(LinkType::Ethernet, frame, cfg, shards) {
                Ok((meta, shard)) => {
                    let item = BatchItem {
                        frame_no,
                        ts_ns,
                        off: 0,
                        len: frame.len() as u32,
                        meta,
                    };
                    batches[shard].push(item, frame);
                }
                Err(reason) => counters.skip(reason),
            }
        }
        if got > 0 {
            // SAFETY: these frames came from this UMEM and are no longer read.
            let back = unsafe { q.fill.produce_and_wakeup(&descs[..got], q.rx.fd_mut(), 0) };
            if let Err(e) = back {
                set_failure(
                    failure,
                    format!("{iface}: queue {}: fill ring: {e}", q.queue),
                );
                break;
            }
        }
        for (shard, b) in batches.iter_mut().enumerate() {
            if b.due() {
                let batch = b.take(feeder.spare(shard));
                let n = batch.items.len() as u64;
                if feeder.try_send(shard, batch).is_err() {
                    stats.ring_full_drops.fetch_add(n, Ordering::Relaxed);
                    if let Some(c) = stats.ring_full_by_shard.get(shard) {
                        c.fetch_add(n, Ordering::Relaxed);
                    }
                }
            }
        }
        stats.frames.store(counters.frames, Ordering::Relaxed);
        stats.bytes.store(counters.bytes, Ordering::Relaxed);
        if last_stats.elapsed() >= SOCKET_STATS_EVERY {
            socket_stats(&q, stats);
            last_stats = Instant::now();
        }
    }
    // Shards are still draining: the last partial batches wait for room.
    for (shard, b) in batches.iter_mut().enumerate() {
        if !b.items.is_empty() {
            feeder.send(shard, b.take(None));
        }
    }
    socket_stats(&q, stats);
    stats.frames.store(counters.frames, Ordering::Relaxed);
    stats.bytes.store(counters.bytes, Ordering::Relaxed);
    counters
}

/// Copy the kernel's XDP_STATISTICS of a socket into its counters.
fn socket_stats(q: &XskQueue, stats: &QueueCounters) {
    if let Ok(s) = q.rx.fd().xdp_statistics() {
        stats.rx_dropped.store(s.rx_dropped(), Ordering::Relaxed);
        stats
            .rx_ring_full
            .store(s.rx_ring_full(), Ordering::Relaxed);
        stats
            .fill_ring_empty
            .store(s.rx_fill_ring_empty_descs(), Ordering::Relaxed);
        stats
            .rx_invalid
            .store(s.rx_invalid_descs(), Ordering::Relaxed);
    }
}

/// Receive time, ns since the epoch.
fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Number of RX queues, from sysfs; a clear error if the interface is missing.
pub fn rx_queue_count(iface: &str) -> Result<u32, LiveError> {
    let dir = std::path::Path::new("/sys/class/net").join(iface);
    if iface.is_empty() || iface.contains('/') || !dir.exists() {
        return Err(LiveError(format!("{iface}: no such interface")));
    }
    let n = std::fs::read_dir(dir.join("queues"))
        .map_err(|e| LiveError(format!("{iface}: cannot list RX queues: {e}")))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count();
    Ok((n as u32).max(1))
}

/// Does this host serve Modbus on an address of `iface`? Then XDP redirect
/// would steal its sessions' frames: the sensor belongs on a mirror port.
fn serves_modbus(iface: &str, ports: &[u16]) -> Result<Option<String>, LiveError> {
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
fn interface_addresses(iface: &str) -> Result<Vec<IpAddr>, LiveError> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(LiveError(format!(
            "{iface}: cannot list interface addresses: {}",
            std::io::Error::last_os_error()
        )));
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

/// What the live sensor holds once setup is done (report `capture.privileges`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Privileges {
    /// Capabilities still held (names): none, normally. CAP_NET_ADMIN on
    /// kernels before 5.9 (no BPF link for XDP: detaching needs netlink);
    /// CAP_DAC_OVERRIDE when the outputs cannot be written without it.
    pub kept: Vec<&'static str>,
    /// The effective set after the drop, as `CapEff` in /proc/PID/status.
    pub effective: String,
    /// The permitted set after the drop (`CapPrm`).
    pub permitted: String,
    /// Whether the bounding set could be emptied too (needs CAP_SETPCAP,
    /// which a root process has and a systemd unit with a minimal
    /// capability set does not: there the unit's bounding set applies).
    pub bounding_set_cleared: bool,
    /// PR_SET_NO_NEW_PRIVS: nothing executed later can gain privileges.
    pub no_new_privs: bool,
}

/// `capget`/`capset` (linux/capability.h, version 3: two 32-bit words).
mod caps {
    pub const DAC_OVERRIDE: u32 = 1;
    pub const SETPCAP: u32 = 8;
    pub const NET_ADMIN: u32 = 12;
    const VERSION_3: u32 = 0x2008_0522;

    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }

    #[repr(C)]
    #[derive(Debug, Clone, Copy, Default)]
    pub struct Data {
        pub effective: u32,
        pub permitted: u32,
        pub inheritable: u32,
    }

    /// The calling thread's sets (word 0: capabilities 0-31, word 1: 32-63).
    pub fn get() -> std::io::Result<[Data; 2]> {
        let mut h = Header {
            version: VERSION_3,
            pid: 0,
        };
        let mut d = [Data::default(); 2];
        // SAFETY: a version-3 header and the two data words it asks for.
        let r = unsafe { libc::syscall(libc::SYS_capget, &mut h, d.as_mut_ptr()) };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(d)
    }

    /// Set the calling thread's sets (lowering never needs a privilege).
    pub fn set(d: &[Data; 2]) -> std::io::Result<()> {
        let mut h = Header {
            version: VERSION_3,
            pid: 0,
        };
        // SAFETY: a version-3 header and two data words, read by the kernel.
        let r = unsafe { libc::syscall(libc::SYS_capset, &mut h, d.as_ptr()) };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn has(d: &[Data; 2], cap: u32, f: fn(&Data) -> u32) -> bool {
        let word = &d[(cap / 32) as usize];
        f(word) & (1 << (cap % 32)) != 0
    }

    pub fn mask64(d: &[Data; 2], f: fn(&Data) -> u32) -> u64 {
        u64::from(f(&d[0])) | (u64::from(f(&d[1])) << 32)
    }
}

/// Whether detaching the XDP program later needs CAP_NET_ADMIN: only where
/// the kernel has no BPF links for XDP (before 5.9) and aya attached it
/// through netlink; with a link, closing its descriptor detaches.
fn detach_needs_net_admin() -> bool {
    // SAFETY: an all-zero utsname is valid; uname fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: a valid, writable utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return true;
    }
    // SAFETY: uname NUL-terminates the release.
    let release = unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) };
    let mut parts = release
        .to_str()
        .unwrap_or("")
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    match (parts.next(), parts.next()) {
        (Some(major), Some(minor)) => (major, minor) < (5, 9),
        _ => true,
    }
}

/// Why the capabilities could not be dropped.
#[derive(Debug)]
pub enum DropError {
    /// The caller's check failed, even with the capabilities it could keep.
    Check(String),
    /// capget/capset failed.
    Caps(String),
}

/// Drop every capability of the calling thread once the XDP program is
/// attached and the AF_XDP sockets are bound: nothing after needs one
/// (receiving, the fill ring, XDP_STATISTICS and the program's counters all
/// go through descriptors already open; detaching closes the BPF link).
///
/// `check` runs with no capability in effect and says whether what the
/// process must still do works (writing its outputs). If it fails and the
/// process has CAP_DAC_OVERRIDE (root writing into a directory it does not
/// own), that one is kept, with a warning, when it makes `check` pass.
///
/// Also sets no-new-privs, clears the ambient set and, where it can (with
/// CAP_SETPCAP), the bounding set. Call it before starting other threads:
/// capabilities are per thread, and threads started later inherit the
/// emptied sets.
pub fn drop_capabilities(check: &dyn Fn() -> Result<(), String>) -> Result<Privileges, DropError> {
    let caps_err = |what: &str, e: std::io::Error| DropError::Caps(format!("{what}: {e}"));
    let before = caps::get().map_err(|e| caps_err("capget", e))?;
    let mut keep: Vec<(u32, &'static str)> = Vec::new();
    if detach_needs_net_admin() {
        keep.push((caps::NET_ADMIN, "CAP_NET_ADMIN"));
    }
    // SAFETY: prctl with integer arguments only.
    let no_new_privs = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } == 0;
    // Ambient capabilities would survive an exec; there is none to do, but
    // leave nothing behind. (EINVAL before Linux 4.3: nothing to clear.)
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    // The bounding set only limits what an exec could gain: empty it whole
    // (what is kept below stays in the permitted set).
    let mut bounding_set_cleared = false;
    if caps::has(&before, caps::SETPCAP, |d| d.effective) {
        let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or(63);
        bounding_set_cleared = (0..=last).all(|c| {
            // SAFETY: prctl with integer arguments only.
            unsafe { libc::prctl(libc::PR_CAPBSET_DROP, c as libc::c_ulong, 0, 0, 0) == 0 }
        });
    }
    let with = |keep: &[(u32, &'static str)]| {
        let mut d = [caps::Data::default(); 2];
        for &(cap, _) in keep {
            let bit = 1u32 << (cap % 32);
            let (b, a) = (&before[(cap / 32) as usize], &mut d[(cap / 32) as usize]);
            a.effective |= b.permitted & bit;
            a.permitted |= b.permitted & bit;
        }
        d
    };
    // Nothing in effect while checking (the permitted set still holds all).
    let mut lowered = before;
    lowered.iter_mut().for_each(|d| d.effective = 0);
    caps::set(&lowered).map_err(|e| caps_err("capset", e))?;
    if let Err(e) = check() {
        if !caps::has(&before, caps::DAC_OVERRIDE, |d| d.permitted) {
            return Err(DropError::Check(e));
        }
        keep.push((caps::DAC_OVERRIDE, "CAP_DAC_OVERRIDE"));
        let mut trial = with(&keep);
        for (t, b) in trial.iter_mut().zip(before.iter()) {
            t.permitted = b.permitted;
        }
        caps::set(&trial).map_err(|e| caps_err("capset", e))?;
        check().map_err(DropError::Check)?;
        // SAFETY: geteuid cannot fail.
        let uid = unsafe { libc::geteuid() };
        let _ = writeln!(
            std::io::stderr(),
            "modbus-detect: warning: keeping CAP_DAC_OVERRIDE: uid {uid} cannot write the outputs without it ({e}); give their directory to the sensor's user to run with no capability at all"
        );
    }
    caps::set(&with(&keep)).map_err(|e| caps_err("capset", e))?;
    let now = caps::get().map_err(|e| caps_err("capget", e))?;
    Ok(Privileges {
        kept: keep
            .iter()
            .filter(|(c, _)| caps::has(&now, *c, |d| d.effective))
            .map(|(_, n)| *n)
            .collect(),
        effective: format!("{:016x}", caps::mask64(&now, |d| d.effective)),
        permitted: format!("{:016x}", caps::mask64(&now, |d| d.permitted)),
        bounding_set_cleared,
        no_new_privs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item() -> BatchItem {
        let ip = IpAddr::from([10, 0, 0, 1]);
        BatchItem {
            frame_no: 1,
            ts_ns: 0,
            off: 0,
            len: 0,
            meta: crate::decode::PacketMeta {
                src: ip,
                dst: ip,
                sport: 1024,
                dport: 502,
                seq: 0,
                ack: 0,
                flags: 0,
                window: 0,
                payload_off: 0,
                payload_len: 0,
                truncated: false,
            },
        }
    }

    fn pushed(b: &mut BatchBuilder, frame: &[u8]) {
        b.push(
            BatchItem {
                len: frame.len() as u32,
                ..item()
            },
            frame,
        );
    }

    #[test]
    fn a_returned_batch_lends_its_buffers_to_a_later_one() {
        let mut b = BatchBuilder::new();
        pushed(&mut b, &[1, 2, 3]);
        let mut first = b.take(None);
        let (data, items) = (first.data.as_ptr(), first.items.as_ptr());
        // The shard is done with it: items emptied, handed back.
        first.items.clear();
        pushed(&mut b, &[4, 5]);
        let second = b.take(Some(first));
        assert_eq!(second.frame(&second.items[0]), &[4, 5]);
        pushed(&mut b, &[6]);
        let third = b.take(None);
        assert_eq!(third.data.as_ptr(), data, "copy buffer reused");
        assert_eq!(third.items.as_ptr(), items, "item buffer reused");
        assert_eq!(third.items.len(), 1);
        assert_eq!(third.frame(&third.items[0]), &[6]);
    }

    #[test]
    fn a_buffer_still_viewed_is_not_reused() {
        let mut b = BatchBuilder::new();
        pushed(&mut b, &[1, 2, 3]);
        let mut first = b.take(None);
        let view = first.data.clone();
        first.items.clear();
        let _ = b.take(Some(first));
        pushed(&mut b, &[9, 9, 9]);
        let next = b.take(None);
        assert_ne!(next.data.as_ptr(), view.as_ptr());
        assert_eq!(&view[..], &[1, 2, 3], "the old frames are untouched");
    }

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
    fn link_outages_are_counted_and_timed() {
        let mut w = LinkWatch::default();
        assert!(w.came_up().is_none(), "up all along");
        assert!(w.went_down());
        assert!(!w.went_down(), "still the same outage");
        std::thread::sleep(Duration::from_millis(20));
        assert!(w.came_up().unwrap() >= Duration::from_millis(20));
        assert!(w.went_down());
        let (events, total) = w.finish();
        assert_eq!(events, 2);
        assert!(total >= Duration::from_millis(20));
    }

    /// Capabilities are per thread: this runs the drop in a thread of its
    /// own, which leaves the test process as it was.
    #[test]
    fn capabilities_are_dropped_and_dac_override_kept_only_when_needed() {
        let in_thread = |check: fn() -> Result<(), String>| {
            std::thread::spawn(move || {
                let r = drop_capabilities(&check);
                (r, caps::get().unwrap())
            })
            .join()
            .unwrap()
        };
        // SAFETY: geteuid cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        let (r, now) = in_thread(|| Ok(()));
        let p = r.unwrap_or_else(|e| panic!("{e:?}"));
        // Nothing left, but CAP_NET_ADMIN where detaching needs netlink.
        let kept: u64 = if root && detach_needs_net_admin() {
            1 << caps::NET_ADMIN
        } else {
            0
        };
        assert!(p.no_new_privs);
        assert_eq!(caps::mask64(&now, |d| d.effective), kept);
        assert_eq!(caps::mask64(&now, |d| d.permitted), kept);
        assert_eq!(caps::mask64(&now, |d| d.inheritable), 0);
        assert_eq!(p.effective, format!("{kept:016x}"));
        assert_eq!(p.kept.len(), kept.count_ones() as usize, "{p:?}");
        assert_eq!(p.bounding_set_cleared, root);
        // Outputs writable only with CAP_DAC_OVERRIDE: kept, with it alone.
        fn needs_dac() -> Result<(), String> {
            let d = caps::get().map_err(|e| e.to_string())?;
            if caps::has(&d, caps::DAC_OVERRIDE, |d| d.effective) {
                Ok(())
            } else {
                Err("permission denied".into())
            }
        }
        let (r, now) = in_thread(needs_dac);
        if root {
            let p = r.unwrap_or_else(|e| panic!("{e:?}"));
            assert_eq!(p.kept.last(), Some(&"CAP_DAC_OVERRIDE"));
            let with_dac = kept | 1 << caps::DAC_OVERRIDE;
            assert_eq!(caps::mask64(&now, |d| d.effective), with_dac);
            assert_eq!(caps::mask64(&now, |d| d.permitted), with_dac);
        } else {
            assert!(matches!(r, Err(DropError::Check(_))), "{r:?}");
        }
    }

    #[test]
    fn loopback_addresses_are_listed() {
        let a = interface_addresses("lo").unwrap();
        assert!(a.contains(&IpAddr::from([127, 0, 0, 1])), "{a:?}");
    }
}
