//! Publishing the sensor's events to a streaming engine (`--publish`):
//! every alert line, every stats event and inventory snapshots, each to a
//! subject of its own (`modbus.<sensor>.alerts`, `.stats`, `.inventory`),
//! with an id per event so that the
//! engine keeps each once however often it is sent.
//!
//! The packet path never waits on the network: events are handed to a
//! bounded queue (full: dropped and counted), and one thread sends them,
//! waiting for the engine's acknowledgement of each. While the engine is
//! unreachable, events go to a bounded on-disk [`spool::Spool`] and are
//! sent in order once it is back; at the end of a run what is still
//! spooled stays on disk for the next run. The engine is behind [`Sink`]:
//! NATS JetStream today ([`nats`]), another later.

pub mod nats;
pub mod spool;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use spool::Spool;

/// What an event is (its subject's last token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Alerts,
    Stats,
    /// The asset inventory (`--inventory`'s JSON): at the end of a run,
    /// and every `--inventory-interval` during live capture.
    Inventory,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Alerts => "alerts",
            Kind::Stats => "stats",
            Kind::Inventory => "inventory",
        }
    }

    fn byte(self) -> u8 {
        match self {
            Kind::Alerts => 1,
            Kind::Stats => 2,
            Kind::Inventory => 3,
        }
    }

    fn from_byte(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Alerts),
            2 => Some(Kind::Stats),
            3 => Some(Kind::Inventory),
            _ => None,
        }
    }
}

/// One event to publish: its kind, its id (unique per sensor and run) and
/// its bytes (one JSON line, without the line end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: Kind,
    pub id: String,
    pub payload: Vec<u8>,
}

/// Where events go: sends a batch in order and returns once the engine
/// has acknowledged every one, or fails (nothing is then known to be
/// kept: the batch is sent again, and the ids make that harmless).
pub trait Sink: Send {
    fn send(&mut self, sensor: &str, batch: &[Event]) -> Result<(), String>;
}

/// The publisher's figures (report, stats lines, metrics).
#[derive(Debug, Default)]
pub struct Figures {
    /// Acknowledged by the engine.
    pub acked: AtomicU64,
    /// Dropped because the queue to the publishing thread was full.
    pub queue_full: AtomicU64,
    /// Written to the spool (the engine was unreachable or behind).
    pub spooled: AtomicU64,
    /// Dropped from a full spool, oldest first.
    pub spool_dropped: AtomicU64,
    /// Failed sends (each retried later from the spool).
    pub send_failures: AtomicU64,
    /// Waiting in the spool now.
    pub spool_waiting: AtomicU64,
    /// Bytes of spooled records a crash cut short (found on start).
    pub spool_corrupt_bytes: AtomicU64,
}

/// The figures as numbers, for the report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Published {
    pub acked: u64,
    pub queue_full_drops: u64,
    pub spooled: u64,
    pub spool_dropped: u64,
    pub send_failures: u64,
    pub spool_waiting: u64,
    #[serde(default)]
    pub spool_corrupt_bytes: u64,
}

impl Figures {
    pub fn snapshot(&self) -> Published {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Published {
            acked: g(&self.acked),
            queue_full_drops: g(&self.queue_full),
            spooled: g(&self.spooled),
            spool_dropped: g(&self.spool_dropped),
            send_failures: g(&self.send_failures),
            spool_waiting: g(&self.spool_waiting),
            spool_corrupt_bytes: g(&self.spool_corrupt_bytes),
        }
    }
}

/// Events the queue to the publishing thread holds at most, and their
/// bytes at most (an inventory snapshot can be large).
pub const QUEUE: usize = 1 << 16;
pub const QUEUE_BYTES: u64 = 64 << 20;
/// Events sent per batch (one acknowledgement wait for all).
const BATCH: usize = 256;
/// After a failed send, wait this long before trying again.
const RETRY: Duration = Duration::from_millis(500);

enum Msg {
    Event(Event),
    /// End of the run: send what can be sent within the time, then stop.
    Finish(Duration),
}

/// The packet path's handle: cheap to clone, never blocks.
#[derive(Clone)]
pub struct Publisher {
    tx: Sender<Msg>,
    sensor: Arc<str>,
    /// The run's id prefix and the next event number.
    run: Arc<str>,
    seq: Arc<AtomicU64>,
    /// Bytes of the events in the queue.
    queued: Arc<AtomicU64>,
    pub figures: Arc<Figures>,
}

/// The publishing thread, to wait for at the end.
pub struct Worker {
    handle: std::thread::JoinHandle<()>,
    tx: Sender<Msg>,
    pub figures: Arc<Figures>,
}

impl Publisher {
    /// Start the publishing thread sending through `sink`, spooling in
    /// `spool`.
    pub fn start(sensor: &str, sink: Box<dyn Sink>, spool: Spool) -> (Publisher, Worker) {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        let figures = Arc::new(Figures::default());
        figures
            .spool_corrupt_bytes
            .store(spool.corrupt_bytes, Ordering::Relaxed);
        figures.spool_waiting.store(spool.len(), Ordering::Relaxed);
        let run = format!(
            "{sensor}:{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        let sensor: Arc<str> = sensor.into();
        let f = figures.clone();
        let name = sensor.clone();
        let queued = Arc::new(AtomicU64::new(0));
        let taken = queued.clone();
        let handle = std::thread::Builder::new()
            .name("publish".into())
            .spawn(move || work(&name, sink, spool, &rx, &taken, &f))
            .expect("the publishing thread starts");
        let p = Publisher {
            tx: tx.clone(),
            sensor,
            run: run.into(),
            seq: Arc::new(AtomicU64::new(0)),
            queued,
            figures: figures.clone(),
        };
        (
            p,
            Worker {
                handle,
                tx,
                figures,
            },
        )
    }

    pub fn sensor(&self) -> &str {
        &self.sensor
    }

    /// Hand one event on; a full queue (in events or bytes) drops it,
    /// counted.
    pub fn send(&self, kind: Kind, payload: Vec<u8>) {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let len = payload.len() as u64;
        if self.queued.fetch_add(len, Ordering::Relaxed) + len > QUEUE_BYTES {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            self.figures.queue_full.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let ev = Event {
            kind,
            id: format!("{}:{n}", self.run),
            payload,
        };
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.tx.try_send(Msg::Event(ev))
        {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            self.figures.queue_full.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Worker {
    /// Send what is queued and spooled, for at most `wait`; what is left
    /// stays in the spool for the next run. The figures at the end.
    pub fn finish(self, wait: Duration) -> Published {
        // Blocking: the queue may be full, and the thread is draining it.
        let _ = self.tx.send(Msg::Finish(wait));
        let _ = self.handle.join();
        self.figures.snapshot()
    }
}

/// The publishing thread: queue to spool when the engine is away or the
/// spool is not empty (order), spool to engine as it acknowledges.
fn work(
    sensor: &str,
    mut sink: Box<dyn Sink>,
    mut spool: Spool,
    rx: &Receiver<Msg>,
    queued: &AtomicU64,
    f: &Figures,
) {
    let mut deadline: Option<Instant> = None;
    let mut batch: Vec<Event> = Vec::with_capacity(BATCH);
    let mut retry_at: Option<Instant> = None;
    // Events the spool could not take (a disk error): lost, counted.
    let mut unspooled = 0u64;
    let sync = |spool: &Spool, f: &Figures, unspooled: u64| {
        f.spool_waiting.store(spool.len(), Ordering::Relaxed);
        f.spool_dropped
            .store(spool.dropped + unspooled, Ordering::Relaxed);
    };
    let to_spool = |spool: &mut Spool, ev: &Event, unspooled: &mut u64| match spool.push(ev) {
        Ok(()) => {
            f.spooled.fetch_add(1, Ordering::Relaxed);
        }
        Err(_) => *unspooled += 1,
    };
    loop {
        // Take what the queue holds (waiting a little when idle).
        let first = if batch.is_empty() && spool.is_empty() && deadline.is_none() {
            rx.recv_timeout(Duration::from_millis(100)).ok()
        } else {
            rx.try_recv().ok()
        };
        let mut msg = first;
        while let Some(m) = msg.take() {
            match m {
                Msg::Event(ev) => {
                    queued.fetch_sub(ev.payload.len() as u64, Ordering::Relaxed);
                    batch.push(ev);
                }
                Msg::Finish(wait) => deadline = Some(Instant::now() + wait),
            }
            if batch.len() >= BATCH {
                break;
            }
            msg = rx.try_recv().ok();
        }
        let waiting = retry_at.is_some_and(|t| Instant::now() < t);
        // In order: while anything is spooled, new events join the spool.
        if !spool.is_empty() || waiting {
            for ev in batch.drain(..) {
                to_spool(&mut spool, &ev, &mut unspooled);
            }
        }
        if !waiting {
            if !spool.is_empty() {
                match spool.peek(BATCH) {
                    Ok(old) => match sink.send(sensor, &old) {
                        Ok(()) => {
                            f.acked.fetch_add(old.len() as u64, Ordering::Relaxed);
                            let _ = spool.commit(old.len() as u64);
                            retry_at = None;
                        }
                        Err(_) => {
                            f.send_failures.fetch_add(1, Ordering::Relaxed);
                            retry_at = Some(Instant::now() + RETRY);
                        }
                    },
                    Err(_) => {
                        // The oldest record cannot be read back: its
                        // segment goes, counted as dropped (out of the
                        // spool even if its file cannot be removed).
                        let _ = spool.skip_unreadable();
                    }
                }
            } else if !batch.is_empty() {
                match sink.send(sensor, &batch) {
                    Ok(()) => {
                        f.acked.fetch_add(batch.len() as u64, Ordering::Relaxed);
                        batch.clear();
                    }
                    Err(_) => {
                        f.send_failures.fetch_add(1, Ordering::Relaxed);
                        retry_at = Some(Instant::now() + RETRY);
                        for ev in batch.drain(..) {
                            to_spool(&mut spool, &ev, &mut unspooled);
                        }
                    }
                }
            }
        }
        sync(&spool, f, unspooled);
        if let Some(d) = deadline {
            let drained = spool.is_empty() && batch.is_empty() && rx.is_empty();
            if drained || Instant::now() >= d {
                // What could not be sent stays on disk for the next run.
                let queued: Vec<Event> = rx
                    .try_iter()
                    .filter_map(|m| match m {
                        Msg::Event(e) => Some(e),
                        Msg::Finish(_) => None,
                    })
                    .collect();
                for ev in batch.drain(..).chain(queued) {
                    to_spool(&mut spool, &ev, &mut unspooled);
                }
                sync(&spool, f, unspooled);
                return;
            }
        }
        if waiting {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An engine that takes everything, or nothing.
    struct Fake {
        up: bool,
        got: Arc<std::sync::Mutex<Vec<String>>>,
    }

    impl Sink for Fake {
        fn send(&mut self, _sensor: &str, batch: &[Event]) -> Result<(), String> {
            if !self.up {
                return Err("down".into());
            }
            let mut got = self.got.lock().map_err(|_| "poisoned")?;
            got.extend(batch.iter().map(|e| e.id.clone()));
            Ok(())
        }
    }

    #[test]
    fn an_event_beyond_the_queue_s_bytes_is_dropped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let got = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = Fake {
            up: true,
            got: got.clone(),
        };
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        let (p, w) = Publisher::start("s", Box::new(sink), spool);
        p.send(Kind::Inventory, vec![0; QUEUE_BYTES as usize + 1]);
        for _ in 0..10 {
            p.send(Kind::Alerts, b"{}".to_vec());
        }
        drop(p);
        let f = w.finish(Duration::from_secs(5));
        assert_eq!(f.queue_full_drops, 1);
        assert_eq!(f.acked, 10);
        let got = got.lock().unwrap();
        // In order, numbered after the dropped one.
        assert_eq!(got.first().map(|id| id.ends_with(":1")), Some(true));
        assert_eq!(got.last().map(|id| id.ends_with(":10")), Some(true));
    }

    /// A spooled record that cannot be read back when its turn comes
    /// (the file was changed under the spool) costs its segment, counted
    /// as dropped; the publisher goes on with the next segments instead
    /// of trying the bad one until the run ends.
    #[test]
    fn an_unreadable_spool_segment_is_dropped_counted_and_the_rest_sent() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 64 << 20).unwrap();
        // One event per segment: each is over half a segment.
        let big = vec![b'x'; (spool::SEGMENT_BYTES as usize * 3) / 4];
        for n in 0..3 {
            let ev = Event {
                kind: Kind::Alerts,
                id: format!("old:{n}"),
                payload: big.clone(),
            };
            spool.push(&ev).unwrap();
        }
        let mut segments: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect();
        segments.sort();
        assert_eq!(segments.len(), 3);
        // The oldest record's length, overwritten with one no record has.
        let mut bytes = std::fs::read(&segments[0]).unwrap();
        bytes[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        std::fs::write(&segments[0], bytes).unwrap();

        let got = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = Fake {
            up: true,
            got: got.clone(),
        };
        let (p, w) = Publisher::start("s", Box::new(sink), spool);
        p.send(Kind::Alerts, b"{}".to_vec());
        drop(p);
        let f = w.finish(Duration::from_secs(5));
        assert_eq!((f.acked, f.spool_dropped, f.spool_waiting), (3, 1, 0));
        let got = got.lock().unwrap();
        assert_eq!(got[..2], ["old:1", "old:2"]);
        assert!(got[2].ends_with(":0"), "{got:?}");
        assert!(!segments[0].exists());
    }

    #[test]
    fn while_the_engine_is_down_events_wait_in_the_spool() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Fake {
            up: false,
            got: Arc::default(),
        };
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        let (p, w) = Publisher::start("s", Box::new(sink), spool);
        for _ in 0..100 {
            p.send(Kind::Alerts, b"{}".to_vec());
        }
        drop(p);
        let f = w.finish(Duration::from_millis(300));
        assert_eq!((f.acked, f.spool_waiting, f.spool_dropped), (0, 100, 0));
        assert!(f.send_failures > 0);
        assert_eq!(Spool::open(dir.path(), 1 << 20).unwrap().len(), 100);
    }
}
