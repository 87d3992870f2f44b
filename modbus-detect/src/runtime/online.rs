//! Live capture: the XDP program sends Modbus frames into one AF_XDP socket
//! per RX queue; one thread per queue hands each frame to a [`Dispatcher`]
//! that copies it into a per-shard batch for the same shards a replay uses.
//!
//! A shard that falls behind fills its ring and the RX thread drops and
//! counts its frames, per shard: the RX ring must never wait for a shard,
//! or the kernel would drop frames where we could not count them.
//!
//! Faults: the interface going down is waited out (the XDP program and the
//! sockets stay in place and capture resumes when it comes back up; the
//! outage is counted and reported); the interface disappearing (or being
//! replaced by another of the same name) ends the capture with a clear
//! error, the report still written.
//!
//! Privileges: once the program is attached and the sockets are bound,
//! every capability is dropped ([`caps::drop_capabilities`]) before any
//! other thread starts, so RX threads, shards and the EVE writer never hold
//! one.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::DetectConfig;
use crate::counters::Counters;
use crate::decode::LinkType;
use crate::output::eve::EveWriter;
use crate::output::report::QueueStats;
use crate::source::xdp::busy_poll::BusyPollState;
use crate::source::xdp::socket::enable_busy_poll;
use crate::source::xdp::{SocketError, XdpCounters, XdpError, XdpMode, XdpProgram, XskQueue};
use crate::sys::caps::{self, DropError, Privileges};
use crate::sys::netdev::{self, LinkState, NetdevError};

use super::dispatch::{Dispatcher, FrameStore, WhenFull};
use super::{pin_current_thread, Pipeline, Plan, RunOutcome};
use crate::shard::ShardResult;

/// A partly filled batch waits at most this long before it goes to its shard.
const FLUSH_AFTER: Duration = Duration::from_millis(2);
/// How often the socket's XDP_STATISTICS are read.
const SOCKET_STATS_EVERY: Duration = Duration::from_millis(100);

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
    /// zero: no busy polling (see `source::xdp::busy_poll`).
    pub busy_poll: Duration,
    pub quiet: bool,
}

/// What the capture hands out while it runs, every `every`: the run as it
/// is then (the caller writes the reports, inventory files and stats the
/// user asked for); a line `on_snapshot` returns goes to the EVE stream.
pub struct Periodic<'a> {
    pub every: Duration,
    /// Asked at each tick: whether a snapshot is due, and whether it must
    /// be whole (`Some(true)`: a report or inventory file) or its counters
    /// will do (`Some(false)`: stats, metrics).
    pub due: &'a dyn Fn() -> Option<bool>,
    pub on_snapshot: &'a dyn Fn(LiveSnapshot) -> Option<serde_json::Value>,
}

/// The run as it is at one moment of a live capture.
pub struct LiveSnapshot {
    pub shards: Vec<ShardResult>,
    /// What the RX threads counted so far (frames and bytes; the reasons
    /// frames were skipped come with the final report only).
    pub dispatch: Counters,
    pub elapsed: Duration,
    pub xdp: XdpCounters,
    /// Frames lost before the shards so far: the sockets' drops (kernel
    /// XDP_STATISTICS: no room in the RX ring or none in the fill ring,
    /// invalid descriptors) and frames dropped because a shard's ring was
    /// full.
    pub socket_drops: u64,
    /// Frames dropped because the shard's ring was full, per shard.
    pub ring_full_by_shard: Vec<u64>,
    /// Batches waiting for each shard, over all RX queues' rings.
    pub ring_depth_by_shard: Vec<u64>,
}

/// How long a periodic copy may wait for a shard: one far behind (or
/// stuck) skips a period rather than holding up the capture's main thread.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(2);

/// Live capture could not start, or failed part-way; one line naming the
/// interface.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error(transparent)]
    Netdev(#[from] NetdevError),
    #[error("{iface}: has {all} RX queues, there is no queue {queue}")]
    NoQueue { iface: String, all: u32, queue: u32 },
    #[error("{iface}: refusing to capture: {why}; XDP would take those frames from the local stack. Capture on a dedicated mirror/SPAN interface, or pass --force")]
    ServesModbus { iface: String, why: String },
    #[error(transparent)]
    Xdp(#[from] XdpError),
    #[error(transparent)]
    Socket(#[from] SocketError),
    #[error("{iface}: cannot drop capabilities after setup: {call}: {source}")]
    Capabilities {
        iface: String,
        call: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{iface}: cannot start a thread: {source}")]
    Thread {
        iface: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{iface}: queue {queue}: receive failed: {source}")]
    Receive {
        iface: String,
        queue: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("{iface}: the interface disappeared during capture")]
    Gone { iface: String },
    #[error("{iface}: an RX thread panicked")]
    RxPanic { iface: String },
}

/// Why [`run_live`] did not run: the capture itself, or the caller's check
/// once privileges were dropped.
#[derive(Debug, thiserror::Error)]
pub enum StartError<E: std::error::Error + 'static> {
    #[error(transparent)]
    Live(#[from] LiveError),
    #[error("{0} (after dropping privileges)")]
    Check(E),
}

/// Per-queue counters, shared between its RX thread and the stats line.
#[derive(Debug, Default)]
struct QueueCounters {
    frames: AtomicU64,
    bytes: AtomicU64,
    /// Frames dropped because a shard's ring was full, per shard.
    ring_full_by_shard: Vec<AtomicU64>,
    /// Batches waiting in this queue's ring to each shard.
    ring_depth_by_shard: Vec<AtomicU64>,
    /// From the socket's XDP_STATISTICS.
    rx_dropped: AtomicU64,
    rx_ring_full: AtomicU64,
    fill_ring_empty: AtomicU64,
    rx_invalid: AtomicU64,
}

impl QueueCounters {
    fn ring_full(&self) -> u64 {
        self.ring_full_by_shard
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .sum()
    }

    /// Publish what the RX thread counted (relaxed: for the stats line).
    fn store(&self, d: &Dispatcher) {
        let c = d.counters();
        self.frames.store(c.frames, Ordering::Relaxed);
        self.bytes.store(c.bytes, Ordering::Relaxed);
        for (a, n) in self.ring_full_by_shard.iter().zip(d.ring_full()) {
            a.store(*n, Ordering::Relaxed);
        }
    }

    /// How full the rings to the shards are (every [`SOCKET_STATS_EVERY`],
    /// not per receive: it reads the shards' side of each ring).
    fn store_depths(&self, d: &Dispatcher) {
        for (a, n) in self.ring_depth_by_shard.iter().zip(d.ring_depths()) {
            a.store(n as u64, Ordering::Relaxed);
        }
    }

    /// Copy the kernel's XDP_STATISTICS of the socket.
    fn store_socket(&self, q: &XskQueue) {
        if let Some(s) = q.stats() {
            self.rx_dropped.store(s.rx_dropped, Ordering::Relaxed);
            self.rx_ring_full.store(s.rx_ring_full, Ordering::Relaxed);
            self.fill_ring_empty
                .store(s.fill_ring_empty, Ordering::Relaxed);
            self.rx_invalid.store(s.rx_invalid_descs, Ordering::Relaxed);
        }
    }
}

/// What only live capture has to say about a run (report `capture`).
#[derive(Debug, Clone)]
pub struct CaptureReport {
    pub mode: XdpMode,
    pub xdp: XdpCounters,
    pub queues: Vec<QueueStats>,
    /// Frames dropped because a shard's ring was full, per shard (all queues).
    pub shard_ring_full_drops: Vec<u64>,
    /// Times the interface went down (and capture waited for it).
    pub link_down_events: u64,
    /// Seconds the interface was down in all.
    pub link_down_seconds: f64,
    /// Periodic inventory files skipped (a shard did not answer in time).
    pub inventory_snapshots_missed: u64,
    /// What the process kept after setup.
    pub privileges: Privileges,
    pub busy_poll: BusyPollState,
}

/// The shard threads live capture starts by default: one core per RX queue,
/// the rest for shards ([`Plan::choose`]), at least one (an RX thread never
/// runs a shard itself).
pub fn default_shards(iface: &str, queues: Option<&[u32]>) -> Result<usize, LiveError> {
    let rx = match queues {
        Some(q) => q.len(),
        None => netdev::rx_queue_count(iface)? as usize,
    };
    Ok(Plan::choose(None, rx).shards())
}

/// Capture on `opts.iface` until the duration ends or `stop` is set, with
/// `shards` shard threads.
///
/// `ready` runs once setup is done, with no capability in effect, before
/// capture starts: the caller checks there what must still work without
/// privileges (that its outputs can be written); an error stops the run.
pub fn run_live<E: std::error::Error + 'static>(
    cfg: Arc<DetectConfig>,
    opts: &LiveOptions,
    shards: usize,
    eve: Option<EveWriter>,
    stop: &AtomicBool,
    ready: &dyn Fn() -> Result<(), E>,
    periodic: Option<&Periodic<'_>>,
) -> Result<RunOutcome, StartError<E>> {
    let iface = &opts.iface;
    if !crate::source::xdp::available() {
        return Err(LiveError::Xdp(XdpError::Unavailable).into());
    }
    let all = netdev::rx_queue_count(iface).map_err(LiveError::from)?;
    let queues = match &opts.queues {
        Some(q) => {
            if let Some(&bad) = q.iter().find(|&&n| n >= all) {
                return Err(LiveError::NoQueue {
                    iface: iface.clone(),
                    all,
                    queue: bad,
                }
                .into());
            }
            q.clone()
        }
        None => (0..all).collect(),
    };
    if !opts.force {
        if let Some(why) = netdev::serves_modbus(iface, &cfg.ports).map_err(LiveError::from)? {
            return Err(LiveError::ServesModbus {
                iface: iface.clone(),
                why,
            }
            .into());
        }
    }
    let mut program = XdpProgram::attach(iface, &cfg.ports, opts.mode).map_err(LiveError::from)?;
    let mode = program.mode();
    let mut sockets = Vec::with_capacity(queues.len());
    for &q in &queues {
        let xsk = XskQueue::bind(iface, q, mode).map_err(LiveError::from)?;
        program
            .register_socket(q, xsk.fd())
            .map_err(LiveError::from)?;
        sockets.push(xsk);
    }
    let busy = enable_busy_poll(iface, &mut sockets, opts.busy_poll);
    if !opts.quiet {
        say_busy_poll(iface, &busy);
    }
    // Everything that needs a privilege is done: drop them all before any
    // other thread exists (capabilities are per thread).
    let privileges = caps::drop_capabilities(ready).map_err(|e| match e {
        DropError::Check(e) => StartError::Check(e),
        DropError::Caps { call, source } => StartError::Live(LiveError::Capabilities {
            iface: iface.clone(),
            call,
            source,
        }),
    })?;
    let thread_err = |source| LiveError::Thread {
        iface: iface.clone(),
        source,
    };
    let cpus = opts.cpus.clone().unwrap_or_default();
    let shard_cpus: Vec<usize> = cpus.iter().skip(queues.len()).copied().collect();
    let (pipe, feeders) =
        Pipeline::start(cfg.clone(), shards, queues.len(), eve, &shard_cpus).map_err(thread_err)?;
    let started = Instant::now();
    let halt = Arc::new(AtomicBool::new(false));
    let failure: Arc<Mutex<Option<LiveError>>> = Arc::new(Mutex::new(None));
    let shards = shards.max(1);
    let counters: Arc<Vec<QueueCounters>> = Arc::new(
        queues
            .iter()
            .map(|_| QueueCounters {
                ring_full_by_shard: (0..shards).map(|_| AtomicU64::new(0)).collect(),
                ring_depth_by_shard: (0..shards).map(|_| AtomicU64::new(0)).collect(),
                ..QueueCounters::default()
            })
            .collect(),
    );
    let binds: Vec<(u32, &'static str)> =
        sockets.iter().map(|s| (s.queue(), s.bind_mode())).collect();
    let mut handles = Vec::with_capacity(sockets.len());
    for (i, (xsk, feeder)) in sockets.into_iter().zip(feeders).enumerate() {
        let dispatcher = Dispatcher::to_rings(&cfg, feeder, FrameStore::Copied, WhenFull::Drop);
        let (halt, failure, counters) = (halt.clone(), failure.clone(), counters.clone());
        let cpu = cpus.get(i).copied();
        let thread_iface = iface.clone();
        let handle = std::thread::Builder::new()
            .name(format!("rx-{iface}-{}", xsk.queue()))
            .spawn(move || {
                if let Some(c) = cpu {
                    pin_current_thread(c);
                }
                let rx = RxThread {
                    iface: &thread_iface,
                    halt: &halt,
                    stats: &counters[i],
                    failure: &failure,
                };
                rx.run(xsk, dispatcher)
            })
            .map_err(thread_err)?;
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
    let watch = Watch {
        iface,
        opts,
        program: &program,
        pipe: &pipe,
        counters: &counters,
        failure: &failure,
        periodic,
        snapshots_missed: std::cell::Cell::new(0),
    };
    let (interrupted, link) = watch.run(stop, started);
    let inventory_snapshots_missed = watch.snapshots_missed.get();
    halt.store(true, Ordering::Relaxed);
    let mut dispatch = Counters::default();
    for h in handles {
        match h.join() {
            Ok(c) => dispatch.merge(&c),
            Err(_) => set_failure(
                &failure,
                LiveError::RxPanic {
                    iface: iface.clone(),
                },
            ),
        }
    }
    let xdp = program.counters().unwrap_or_default();
    // Detach before the (possibly long) final drain: the interface is
    // normal again as soon as capture ends.
    let _ = program.detach();
    let result = pipe.finish();
    let queues: Vec<QueueStats> = binds
        .iter()
        .zip(counters.iter())
        .map(|(&(queue, bind), c)| QueueStats {
            queue,
            bind: bind.to_string(),
            frames: c.frames.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            shard_ring_full_drops: c.ring_full(),
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
        .collect();
    let shard_ring_full_drops = (0..shards)
        .map(|s| {
            queues
                .iter()
                .map(|q| q.shard_ring_full_drops_by_shard[s])
                .sum()
        })
        .collect();
    let error = failure.lock().ok().and_then(|mut f| f.take());
    let (link_down_events, link_down) = link.finish();
    Ok(RunOutcome {
        shards: result.shards,
        dispatch,
        input_error: error.map(Into::into),
        interrupted,
        eve: result.eve,
        elapsed: started.elapsed(),
        capture: Some(CaptureReport {
            mode,
            xdp,
            queues,
            shard_ring_full_drops,
            link_down_events,
            link_down_seconds: link_down.as_secs_f64(),
            inventory_snapshots_missed,
            privileges,
            busy_poll: busy,
        }),
    })
}

fn say_busy_poll(iface: &str, busy: &BusyPollState) {
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

/// The first failure of the capture is the one reported.
fn set_failure(failure: &Mutex<Option<LiveError>>, e: LiveError) {
    if let Ok(mut f) = failure.lock() {
        f.get_or_insert(e);
    }
}

/// One RX queue's thread.
struct RxThread<'a> {
    iface: &'a str,
    halt: &'a AtomicBool,
    stats: &'a QueueCounters,
    failure: &'a Mutex<Option<LiveError>>,
}

impl RxThread<'_> {
    /// Receive until halted; returns the dispatch counters.
    fn run(&self, mut q: XskQueue, mut d: Dispatcher) -> Counters {
        let mut last_frame = Instant::now();
        let mut last_stats = Instant::now();
        while !self.halt.load(Ordering::Relaxed) {
            let got = q.receive(&mut last_frame, |ts_ns, frame| {
                d.push(ts_ns, LinkType::Ethernet, frame)
            });
            if let Err(source) = got {
                set_failure(
                    self.failure,
                    LiveError::Receive {
                        iface: self.iface.to_string(),
                        queue: q.queue(),
                        source,
                    },
                );
                break;
            }
            d.flush_older_than(FLUSH_AFTER);
            self.stats.store(&d);
            if last_stats.elapsed() >= SOCKET_STATS_EVERY {
                self.stats.store_socket(&q);
                self.stats.store_depths(&d);
                last_stats = Instant::now();
            }
        }
        self.stats.store_socket(&q);
        self.stats.store(&d);
        // Shards are still draining: the last partial batches wait for room.
        d.finish().counters
    }
}

/// The capture's main thread while the RX threads run: signals, duration,
/// failures, the link, the stats line.
struct Watch<'a> {
    iface: &'a str,
    opts: &'a LiveOptions,
    program: &'a XdpProgram,
    pipe: &'a Pipeline,
    counters: &'a [QueueCounters],
    failure: &'a Mutex<Option<LiveError>>,
    periodic: Option<&'a Periodic<'a>>,
    /// Periodic copies skipped because a shard did not answer in time.
    snapshots_missed: std::cell::Cell<u64>,
}

impl Watch<'_> {
    /// Until the capture ends; whether a signal ended it, and the outages.
    fn run(&self, stop: &AtomicBool, started: Instant) -> (bool, LinkWatch) {
        let (iface, opts) = (self.iface, self.opts);
        let mut last_stats = Instant::now();
        let mut last_frames = 0u64;
        let mut last_periodic = Instant::now();
        let mut link = LinkWatch::default();
        loop {
            if let Some(p) = self.periodic {
                let due = (last_periodic.elapsed() >= p.every)
                    .then(|| (p.due)())
                    .flatten();
                if let Some(whole) = due {
                    last_periodic = Instant::now();
                    match self.pipe.snapshot(SNAPSHOT_WAIT, whole) {
                        Some(shards) => {
                            if let Some(line) = (p.on_snapshot)(self.live_snapshot(shards, started))
                            {
                                self.pipe.send_line(line);
                            }
                        }
                        None => {
                            self.snapshots_missed.set(self.snapshots_missed.get() + 1);
                            let _ = writeln!(
                                std::io::stderr(),
                                "live {iface}: a shard did not hand over its inventory within {} s; this period's inventory file is skipped",
                                SNAPSHOT_WAIT.as_secs()
                            );
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
            if stop.load(Ordering::Relaxed) {
                return (true, link);
            }
            if self.failure.lock().map(|f| f.is_some()).unwrap_or(true) {
                return (false, link);
            }
            if opts.duration.is_some_and(|d| started.elapsed() >= d) {
                return (false, link);
            }
            match netdev::link_state(iface, self.program.ifindex()) {
                LinkState::Gone => {
                    set_failure(
                        self.failure,
                        LiveError::Gone {
                            iface: iface.to_string(),
                        },
                    );
                    return (false, link);
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
                last_frames = self.stats_line(last_frames, secs);
                last_stats = Instant::now();
            }
        }
    }

    /// What the shards handed over, with the capture path's own counts.
    fn live_snapshot(&self, shards: Vec<ShardResult>, started: Instant) -> LiveSnapshot {
        let sum = |f: fn(&QueueCounters) -> &AtomicU64| -> u64 {
            self.counters
                .iter()
                .map(|c| f(c).load(Ordering::Relaxed))
                .sum()
        };
        LiveSnapshot {
            shards,
            dispatch: Counters {
                frames: sum(|c| &c.frames),
                bytes: sum(|c| &c.bytes),
                ..Counters::default()
            },
            elapsed: started.elapsed(),
            xdp: self.program.counters().unwrap_or_default(),
            socket_drops: sum(|c| &c.rx_dropped)
                + sum(|c| &c.rx_ring_full)
                + sum(|c| &c.fill_ring_empty)
                + sum(|c| &c.rx_invalid),
            ring_full_by_shard: self.by_shard(|c| &c.ring_full_by_shard),
            ring_depth_by_shard: self.by_shard(|c| &c.ring_depth_by_shard),
        }
    }

    /// A per-shard figure summed over the RX queues.
    fn by_shard(&self, f: fn(&QueueCounters) -> &Vec<AtomicU64>) -> Vec<u64> {
        let shards = self.counters.first().map_or(0, |c| f(c).len());
        (0..shards)
            .map(|s| {
                self.counters
                    .iter()
                    .filter_map(|c| f(c).get(s))
                    .map(|n| n.load(Ordering::Relaxed))
                    .sum()
            })
            .collect()
    }

    /// One stats line on stderr; returns the frame total for the next rate.
    fn stats_line(&self, last_frames: u64, secs: f64) -> u64 {
        let counters = self.counters;
        let sum = |f: fn(&QueueCounters) -> &AtomicU64| -> u64 {
            counters.iter().map(|c| f(c).load(Ordering::Relaxed)).sum()
        };
        let frames = sum(|c| &c.frames);
        let (adus, alerts) = self.pipe.progress();
        let xdp = self.program.counters().unwrap_or_default();
        let ring_full: u64 = counters.iter().map(QueueCounters::ring_full).sum();
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
            "live {}: {:.0} frames/s, {frames} frames, {adus} ADUs, {alerts} alerts; drops: xdp-redirect {} rx-ring {} fill-empty {} shard-ring {ring_full}{by_shard}",
            self.iface,
            frames.saturating_sub(last_frames) as f64 / secs.max(1e-3),
            xdp.redirect_failed,
            sum(|c| &c.rx_dropped) + sum(|c| &c.rx_ring_full),
            sum(|c| &c.fill_ring_empty),
        );
        frames
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
