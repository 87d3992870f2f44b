//! The runtime: the same shards behind every source.
//!
//! A source only yields frames (a capture file's records, an AF_XDP
//! socket's descriptors); the runtime decides where they are processed.
//! [`dispatch::Dispatcher`] decodes each frame once, orients it, picks its
//! shard and hands it on — in batches over a lock-free ring to a shard
//! thread of a [`Pipeline`], or straight to a shard in the caller's thread
//! ([`inline`]). [`offline`] (capture files) and [`online`] (live AF_XDP
//! capture) differ only in where the frames come from and in what they do
//! when a shard falls behind (wait, or drop and count).
//!
//! Every run ends the same way, in one [`RunOutcome`].

pub mod dispatch;
pub mod inline;
pub mod offline;
pub mod online;

use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use crate::alert::EveEvent;
use crate::config::DetectConfig;
use crate::counters::Counters;
use crate::output::eve::{EveError, EveWriter};
use crate::shard::{Shard, ShardResult};
use crate::source::SourceError;
use dispatch::Batch;

/// Batches in flight per shard ring.
pub const RING_BATCHES: usize = 64;

/// How a run ended, whatever its source.
#[derive(Debug)]
pub struct RunOutcome {
    pub shards: Vec<ShardResult>,
    /// Frames read, and frames skipped before the shards.
    pub dispatch: Counters,
    /// The source failed part-way (a capture file that breaks off, an
    /// interface that disappears): everything before it was processed.
    pub input_error: Option<InputError>,
    /// Stopped by SIGINT/SIGTERM.
    pub interrupted: bool,
    /// EVE lines written, or why writing them failed.
    pub eve: Option<Result<u64, EveError>>,
    pub elapsed: Duration,
    /// Live capture only: the capture path's own figures.
    pub capture: Option<online::CaptureReport>,
}

impl RunOutcome {
    /// Alerts raised over all shards.
    pub fn alerts_raised(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.raised.iter().sum::<u64>())
            .sum()
    }
}

/// Why a source stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error(transparent)]
    Capture(#[from] SourceError),
    #[error(transparent)]
    Live(#[from] online::LiveError),
}

/// Where the shards run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// One shard in the thread that reads the frames: no rings, no wake-ups.
    Inline,
    /// This many shard threads, fed by the reading thread(s).
    Threads(usize),
}

impl Plan {
    /// `--threads N` when given (N shard threads), else what the cores can
    /// feed: the reading threads (`readers`) take a core each and the rest
    /// run shards; when no core is left for a shard, one shard runs inline
    /// in the reader. On a 2-core machine a replay is then the reader plus
    /// one shard: the earlier default of one shard per core (three busy
    /// threads on two cores) was slower than `--threads 1`.
    pub fn choose(threads: Option<usize>, readers: usize) -> Plan {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Plan::for_cores(threads, readers, cores)
    }

    /// [`Plan::choose`] on a machine with `cores` cores.
    fn for_cores(threads: Option<usize>, readers: usize, cores: usize) -> Plan {
        match threads {
            Some(n) => Plan::Threads(n.max(1)),
            None => match cores.saturating_sub(readers.max(1)) {
                0 => Plan::Inline,
                n => Plan::Threads(n),
            },
        }
    }

    /// Shards of the plan.
    pub fn shards(self) -> usize {
        match self {
            Plan::Inline => 1,
            Plan::Threads(n) => n.max(1),
        }
    }
}

/// Live progress of one shard, published after every batch (relaxed atomics:
/// for the stats line, not for the report).
#[derive(Debug, Default)]
pub struct ShardProgress {
    pub adus: AtomicU64,
    pub alerts: AtomicU64,
}

/// Shard threads and the EVE writer, running.
pub struct Pipeline {
    shards: Vec<JoinHandle<ShardResult>>,
    eve: Option<JoinHandle<Result<u64, EveError>>>,
    /// For lines that are not a shard's (stats); dropped before the writer
    /// is joined.
    eve_lines: Option<Sender<EveMsg>>,
    progress: Arc<Vec<ShardProgress>>,
    snapshots: Snapshots,
}

/// Copies of the shards' state asked for while they run: a request is a
/// new number in `asked`; each shard answers it between two batches (or
/// within a millisecond when idle) with its copy, tagged with the number.
struct Snapshots {
    asked: Arc<AtomicU64>,
    /// Whether the request is for everything (else the counters only).
    whole: Arc<AtomicBool>,
    answers: Receiver<(u64, ShardResult)>,
}

/// A shard's side of [`Snapshots`].
struct SnapshotDuty {
    asked: Arc<AtomicU64>,
    whole: Arc<AtomicBool>,
    answered: u64,
    answers: Sender<(u64, ShardResult)>,
}

impl SnapshotDuty {
    /// Answer a request not answered yet (a relaxed load per batch when
    /// there is none).
    fn serve(&mut self, shard: &Shard) {
        let asked = self.asked.load(Ordering::Acquire);
        if asked != self.answered {
            self.answered = asked;
            let part = if self.whole.load(Ordering::Acquire) {
                shard.snapshot()
            } else {
                shard.counters_snapshot()
            };
            let _ = self.answers.send((asked, part));
        }
    }
}

/// One source thread's way into the shards: a lock-free SPSC ring to each
/// shard, so several sources (one per RX queue) never contend.
pub struct Feeder {
    rings: Vec<rtrb::Producer<Batch>>,
    /// Batches each shard has finished with (items emptied, data kept),
    /// coming back for reuse.
    returns: Vec<rtrb::Consumer<Batch>>,
    wakes: Vec<Arc<Wake>>,
}

/// How a source wakes a shard asleep on empty rings.
///
/// An idle shard parks instead of yielding and sleeping in 50 µs steps: it
/// takes no CPU from the reader when there are more threads than cores,
/// and it is back at work as soon as a batch comes, not up to 50 µs later.
#[derive(Default)]
struct Wake {
    sleeping: AtomicBool,
    thread: OnceLock<std::thread::Thread>,
}

impl Wake {
    /// After a push: unpark the shard if it went to sleep.
    fn notify(&self) {
        // Pairs with the fence in `run_shard`: either the shard sees the
        // batch when it looks again, or this sees it asleep.
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) {
            if let Some(t) = self.thread.get() {
                t.unpark();
            }
        }
    }
}

impl Drop for Feeder {
    /// The shards learn that the input ended without waiting for a timeout.
    fn drop(&mut self) {
        // Drop the rings first, so that the shards see them abandoned.
        self.rings.clear();
        for w in &self.wakes {
            if let Some(t) = w.thread.get() {
                t.unpark();
            }
        }
    }
}

impl Feeder {
    pub fn shards(&self) -> usize {
        self.rings.len()
    }

    /// Batches waiting in each shard's ring, out of [`RING_BATCHES`]: a
    /// shard that falls behind shows here before its ring overflows.
    pub fn depths(&self) -> impl Iterator<Item = usize> + '_ {
        self.rings
            .iter()
            .map(|p| p.buffer().capacity().saturating_sub(p.slots()))
    }

    /// A batch `shard` has finished with (its items emptied, its data
    /// still attached), if one has come back: its buffers serve the next
    /// batch, so that a steady stream allocates nothing (fresh item buffers
    /// are 22 KB per 256 frames; criterion `engine/batch_buffers`,
    /// `modbus-bench-alloc alloc`).
    pub fn spare(&mut self, shard: usize) -> Option<Batch> {
        self.returns.get_mut(shard).and_then(|r| r.pop().ok())
    }

    /// Hand a batch to a shard, waiting while its ring is full (replay: never
    /// drop, the source simply runs at the shards' speed).
    pub fn send(&mut self, shard: usize, batch: Batch) {
        let mut batch = batch;
        let mut backoff = Backoff::default();
        loop {
            match self.try_send(shard, batch) {
                Ok(()) => return,
                Err(b) => {
                    batch = b;
                    backoff.wait();
                }
            }
        }
    }

    /// Hand a batch to a shard if its ring has room (live capture: a full
    /// ring means the shard is behind; the caller counts the drop).
    pub fn try_send(&mut self, shard: usize, batch: Batch) -> Result<(), Batch> {
        let Some(ring) = self.rings.get_mut(shard) else {
            return Err(batch);
        };
        ring.push(batch).map_err(|rtrb::PushError::Full(b)| b)?;
        if let Some(w) = self.wakes.get(shard) {
            w.notify();
        }
        Ok(())
    }
}

/// What the pipeline produced.
pub struct PipelineResult {
    pub shards: Vec<ShardResult>,
    /// EVE lines written, or why writing them failed.
    pub eve: Option<Result<u64, EveError>>,
}

impl Pipeline {
    /// Start `shards` shard threads fed by `sources` feeders, pinning shard
    /// `i` to `cpus[i]` where given.
    pub fn start(
        cfg: Arc<DetectConfig>,
        shards: usize,
        sources: usize,
        eve: Option<EveWriter>,
        cpus: &[usize],
    ) -> std::io::Result<(Pipeline, Vec<Feeder>)> {
        let shards = shards.max(1);
        let (eve_out, eve_handle) = match eve {
            Some(w) => {
                let (tx, rx) = crossbeam_channel::bounded::<EveMsg>(1024);
                // Written line buffers go back to the shards for reuse.
                let (spare_tx, spare) = crossbeam_channel::bounded::<Vec<EveEvent>>(1024);
                let handle = std::thread::Builder::new()
                    .name("eve".into())
                    .spawn(move || write_eve(w, rx, spare_tx))?;
                (Some(EveOut { tx, spare }), Some(handle))
            }
            None => (None, None),
        };
        let mut feeders: Vec<Feeder> = (0..sources.max(1))
            .map(|_| Feeder {
                rings: Vec::with_capacity(shards),
                returns: Vec::with_capacity(shards),
                wakes: Vec::with_capacity(shards),
            })
            .collect();
        let progress: Arc<Vec<ShardProgress>> =
            Arc::new((0..shards).map(|_| ShardProgress::default()).collect());
        let asked = Arc::new(AtomicU64::new(0));
        let whole = Arc::new(AtomicBool::new(false));
        let (answers_tx, answers) = crossbeam_channel::unbounded();
        let mut handles = Vec::with_capacity(shards);
        for i in 0..shards {
            let mut consumers = Vec::with_capacity(feeders.len());
            let wake = Arc::new(Wake::default());
            for f in &mut feeders {
                f.wakes.push(wake.clone());
                let (tx, rx) = rtrb::RingBuffer::new(RING_BATCHES);
                // Room for every batch in flight, so a return never fails.
                let (back_tx, back_rx) = rtrb::RingBuffer::new(RING_BATCHES + 2);
                f.rings.push(tx);
                f.returns.push(back_rx);
                consumers.push((rx, back_tx));
            }
            let shard = Shard::new(cfg.clone(), shards);
            let eve_tx = eve_out.clone();
            let progress = progress.clone();
            let cpu = cpus.get(i).copied();
            let duty = SnapshotDuty {
                asked: asked.clone(),
                whole: whole.clone(),
                answered: 0,
                answers: answers_tx.clone(),
            };
            let handle = std::thread::Builder::new()
                .name(format!("shard-{i}"))
                .spawn(move || {
                    if let Some(c) = cpu {
                        pin_current_thread(c);
                    }
                    let _ = wake.thread.set(std::thread::current());
                    run_shard(shard, consumers, eve_tx, &progress[i], &wake, duty)
                })?;
            handles.push(handle);
        }
        Ok((
            Pipeline {
                shards: handles,
                eve: eve_handle,
                eve_lines: eve_out.as_ref().map(|o| o.tx.clone()),
                progress,
                snapshots: Snapshots {
                    asked,
                    whole,
                    answers,
                },
            },
            feeders,
        ))
    }

    /// ADUs decoded and alerts raised so far, over all shards.
    pub fn progress(&self) -> (u64, u64) {
        self.progress.iter().fold((0, 0), |(a, b), p| {
            (
                a + p.adus.load(Ordering::Relaxed),
                b + p.alerts.load(Ordering::Relaxed),
            )
        })
    }

    /// Write a line that is no alert (a `stats` event) to the EVE stream,
    /// if there is one.
    pub fn send_line(&self, line: serde_json::Value) {
        if let Some(tx) = &self.eve_lines {
            let _ = tx.send(EveMsg::Line(line));
        }
    }

    /// Every shard's results as they are now (`whole`: with the alert
    /// table and the inventory, else the counters only); `None` when a
    /// shard did not answer within `timeout` (it is far behind, or gone).
    pub fn snapshot(&self, timeout: Duration, whole: bool) -> Option<Vec<ShardResult>> {
        // Published before the request that reads it.
        self.snapshots.whole.store(whole, Ordering::Release);
        let n = self.snapshots.asked.fetch_add(1, Ordering::AcqRel) + 1;
        for h in &self.shards {
            h.thread().unpark();
        }
        let deadline = std::time::Instant::now() + timeout;
        let mut parts = Vec::with_capacity(self.shards.len());
        while parts.len() < self.shards.len() {
            let (tag, part) = self.snapshots.answers.recv_deadline(deadline).ok()?;
            // An answer to an earlier request that timed out: stale.
            if tag == n {
                parts.push(part);
            }
        }
        Some(parts)
    }

    /// Wait for the shards to drain their rings and stop. Every [`Feeder`]
    /// must have been dropped (that is how shards know the input ended).
    /// A shard thread that panicked is a bug: its panic goes on here.
    pub fn finish(mut self) -> PipelineResult {
        // The writer ends when every sender is gone: this one first.
        self.eve_lines = None;
        let shards = self
            .shards
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect();
        let eve = self
            .eve
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        PipelineResult { shards, eve }
    }
}

/// Pin the calling thread to one CPU (best effort: a CPU that does not
/// exist leaves the thread where it is, with a warning).
pub fn pin_current_thread(cpu: usize) {
    if let Err(e) = crate::sys::pin_current_thread(cpu) {
        eprintln!("modbus-detect: warning: cannot pin a thread to CPU {cpu}: {e}");
    }
}

/// Spin, then yield, then sleep: cheap when data is flowing, idle when not.
#[derive(Default)]
struct Backoff(u32);

impl Backoff {
    fn wait(&mut self) {
        self.0 += 1;
        if self.0 < 64 {
            std::hint::spin_loop();
        } else if self.0 < 256 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}

/// What the EVE writer is sent: a shard's alert lines, or another event
/// (a `stats` line of the capture's main thread).
enum EveMsg {
    Alerts(Vec<EveEvent>),
    Line(serde_json::Value),
}

/// A shard's way to the EVE writer: lines out, emptied buffers back.
#[derive(Clone)]
struct EveOut {
    tx: Sender<EveMsg>,
    spare: Receiver<Vec<EveEvent>>,
}

fn run_shard(
    mut shard: Shard,
    mut rings: Vec<(rtrb::Consumer<Batch>, rtrb::Producer<Batch>)>,
    eve: Option<EveOut>,
    progress: &ShardProgress,
    wake: &Wake,
    mut snapshots: SnapshotDuty,
) -> ShardResult {
    let mut idle = 0u32;
    let delay = shard_delay();
    loop {
        let mut got = false;
        for (ring, back) in &mut rings {
            // A few batches per ring per turn keeps the sources fair.
            for _ in 0..4 {
                let Ok(mut batch) = ring.pop() else {
                    break;
                };
                got = true;
                shard.catch_up();
                for item in &batch.items {
                    shard.process(
                        item.frame_no,
                        item.ts_ns,
                        &item.meta,
                        item.side,
                        batch.frame(item),
                    );
                }
                batch.items.clear();
                // Full only if the source stopped taking them back: then drop.
                let _ = back.push(batch);
                publish(&mut shard, &eve, progress);
                if let Some(d) = delay {
                    std::thread::sleep(d);
                }
            }
        }
        snapshots.serve(&shard);
        if got {
            idle = 0;
            continue;
        }
        // Abandoned rings may still hold batches pushed just before their
        // producer went away: only stop once every ring is abandoned AND empty.
        if rings.iter().all(|(r, _)| r.is_abandoned() && r.is_empty()) {
            break;
        }
        // A short spin (a batch is usually about to come), then sleep until
        // a source pushes one (the timeout is only a safety net).
        idle += 1;
        if idle < 64 {
            std::hint::spin_loop();
            continue;
        }
        wake.sleeping.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if rings.iter().all(|(r, _)| r.is_empty()) {
            std::thread::park_timeout(Duration::from_millis(1));
        }
        wake.sleeping.store(false, Ordering::Relaxed);
    }
    // End of input: what the flows still held, and the last ML windows,
    // may raise alerts; their EVE lines go out like any others.
    shard.flush();
    publish(&mut shard, &eve, progress);
    shard.finish()
}

/// Test hook: `MODBUS_DETECT_SHARD_DELAY_US=N` makes every shard sleep N
/// microseconds after each batch, so that a test can overload the shards
/// and see the live path count ring-full drops. Not for production use.
pub const SHARD_DELAY_ENV: &str = "MODBUS_DETECT_SHARD_DELAY_US";

fn shard_delay() -> Option<Duration> {
    let us: u64 = std::env::var(SHARD_DELAY_ENV).ok()?.trim().parse().ok()?;
    (us > 0).then(|| Duration::from_micros(us))
}

/// Send the batch's EVE lines to the writer (in a buffer it has handed
/// back, if any; with no writer they are just dropped, not collected) and
/// publish progress.
fn publish(shard: &mut Shard, eve: &Option<EveOut>, progress: &ShardProgress) {
    let mut lines = shard.drain_eve().peekable();
    if let (Some(out), Some(_)) = (eve, lines.peek()) {
        let mut buf = out.spare.try_recv().unwrap_or_default();
        buf.extend(lines);
        // The writer only goes away after an I/O error it reports itself.
        let _ = out.tx.send(EveMsg::Alerts(buf));
    } else {
        lines.for_each(drop);
    }
    let (adus, alerts) = shard.progress();
    progress.adus.store(adus, Ordering::Relaxed);
    progress.alerts.store(alerts, Ordering::Relaxed);
}

fn write_eve(
    mut w: EveWriter,
    rx: Receiver<EveMsg>,
    spare: Sender<Vec<EveEvent>>,
) -> Result<u64, EveError> {
    let mut failed = None;
    for msg in rx {
        match msg {
            EveMsg::Alerts(mut lines) => {
                if failed.is_none() {
                    // A SIEM tailing the file sees alerts as they are
                    // raised, not when a buffer fills.
                    failed = w.write_lines(&lines).err();
                }
                lines.clear();
                let _ = spare.try_send(lines);
            }
            EveMsg::Line(line) => {
                if failed.is_none() {
                    failed = w.write_value(&line).err();
                }
            }
        }
    }
    match failed {
        Some(e) => Err(e),
        None => w.finish(),
    }
}

#[cfg(test)]
mod tests {
    use super::Plan;

    #[test]
    fn the_default_plan_leaves_a_core_to_each_reader() {
        assert_eq!(
            Plan::for_cores(None, 1, 1),
            Plan::Inline,
            "one core: inline"
        );
        assert_eq!(Plan::for_cores(None, 1, 2), Plan::Threads(1));
        assert_eq!(Plan::for_cores(None, 1, 8), Plan::Threads(7));
        assert_eq!(
            Plan::for_cores(None, 4, 2),
            Plan::Inline,
            "more readers than cores"
        );
        assert_eq!(
            Plan::for_cores(Some(3), 1, 1),
            Plan::Threads(3),
            "--threads wins"
        );
        assert_eq!(Plan::for_cores(Some(0), 1, 2), Plan::Threads(1));
        assert_eq!(Plan::Inline.shards(), 1);
    }
}
