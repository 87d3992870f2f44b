//! Spreading frames over shards: the one frame loop of every source.
//!
//! The shard key is the server (slave) address: every piece of state a rule
//! needs (per slave, per master-slave pair, per register) and both directions
//! of a connection then meet in one shard, with no locks and no cross-shard
//! lookups. Each frame is decoded once into a [`PacketMeta`] and oriented
//! once ([`flow::orient`]); batches of (timestamp, frame location, meta,
//! direction) travel over one lock-free single-producer single-consumer ring
//! per shard, or go straight to a shard in this thread ([`Dispatcher::inline`]).

use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::config::DetectConfig;
use crate::counters::Counters;
use crate::decode::{decode, LinkType, PacketMeta, SkipReason};
use crate::defrag::{self, Defragmenter};
use crate::flow::{self, Side};
use crate::source::FrameRef;

use super::inline::Inline;
use super::Feeder;

/// Frames per batch: large enough to amortise ring operations, small enough
/// to keep a shard's working set in cache.
pub const BATCH_FRAMES: usize = 256;

/// One frame of a batch: where it is in the batch's bytes and what it holds.
#[derive(Debug, Clone, Copy)]
pub struct BatchItem {
    /// 1-based position in the source (pcap frame number, or live frame count).
    pub frame_no: u64,
    pub ts_ns: u64,
    pub off: usize,
    pub len: u32,
    pub meta: PacketMeta,
    /// The segment's direction in its connection, decided by the dispatcher.
    pub side: Side,
}

/// Frames for one shard. `data` is shared, not copied: for a replay it is the
/// whole memory-mapped capture, for live capture a buffer of copied frames.
#[derive(Debug)]
pub struct Batch {
    pub data: Bytes,
    pub items: Vec<BatchItem>,
}

impl Batch {
    /// The bytes of one item's frame.
    pub fn frame(&self, item: &BatchItem) -> &[u8] {
        self.data
            .get(item.off..item.off + item.len as usize)
            .unwrap_or(&[])
    }
}

/// Shard of a server address (stable across runs and platforms).
pub fn shard_of(server: IpAddr, shards: usize) -> usize {
    // One shard: no hashing, and no division.
    if shards <= 1 {
        return 0;
    }
    let mut h = rustc_hash::FxHasher::default();
    server.hash(&mut h);
    (h.finish() % shards.max(1) as u64) as usize
}

/// A frame headed for a shard: decoded, oriented, its shard picked.
#[derive(Debug, Clone, Copy)]
pub struct Classified {
    pub meta: PacketMeta,
    pub side: Side,
    pub shard: usize,
}

/// Decode a frame, orient it and pick its shard; frames that are not TCP on
/// a Modbus port are skipped with the reason. Always inlined into the frame
/// loop, so that the decoded header is built in place rather than copied
/// out of a `Result` (that copy alone cost 40 instructions per frame).
#[inline(always)]
pub fn classify(
    link: LinkType,
    frame: &[u8],
    ports: &[u16],
    shards: usize,
) -> Result<Classified, SkipReason> {
    let meta = decode(link, frame)?;
    let side = flow::orient(&meta, ports).ok_or(SkipReason::NotModbusPort)?;
    Ok(Classified {
        meta,
        side,
        shard: shard_of(flow::server_of(&meta, side.dir), shards),
    })
}

/// Where a dispatcher's frames live.
pub enum FrameStore {
    /// Every frame is a range of this one buffer (a memory-mapped capture):
    /// batches refer to it, nothing is copied.
    Shared(Bytes),
    /// Frames are borrowed only for the call (an AF_XDP UMEM frame goes
    /// back to the kernel at once): batches get copies.
    Copied,
}

/// What a dispatcher does when a shard's ring is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Wait for room: a replay runs at the shards' speed and loses nothing.
    Wait,
    /// Drop the batch and count it: live capture must not stall the RX
    /// ring, where the kernel would drop frames uncounted by us.
    Drop,
}

/// Frames being gathered for one shard.
struct BatchBuilder {
    /// Copies of the frames ([`FrameStore::Copied`]; empty otherwise).
    copied: BytesMut,
    items: Vec<BatchItem>,
    /// When the first item came (live: a partial batch waits at most so long).
    since: Instant,
}

impl BatchBuilder {
    fn new() -> Self {
        BatchBuilder {
            copied: BytesMut::new(),
            items: Vec::with_capacity(BATCH_FRAMES),
            since: Instant::now(),
        }
    }

    #[inline]
    fn push(&mut self, item: BatchItem, frame: &[u8], store: &FrameStore) {
        if self.items.is_empty() && matches!(store, FrameStore::Copied) {
            self.since = Instant::now();
        }
        let item = match store {
            FrameStore::Shared(_) => item,
            FrameStore::Copied => {
                if self.copied.capacity() == 0 {
                    self.copied.reserve(BATCH_FRAMES * 128);
                }
                let off = self.copied.len();
                self.copied.extend_from_slice(frame);
                BatchItem { off, ..item }
            }
        };
        self.items.push(item);
    }

    /// The batch built so far; the next one reuses the buffers of `spare`
    /// (a batch the shard has finished with) when it has some: a copy
    /// buffer is ours again once the shard has dropped every view of it.
    fn take(&mut self, spare: Option<Batch>, store: &FrameStore) -> Batch {
        let (items, copied) = match spare {
            Some(b) => {
                let copied = match (store, b.data.try_into_mut()) {
                    (FrameStore::Copied, Ok(mut data)) => {
                        data.clear();
                        data
                    }
                    _ => BytesMut::new(),
                };
                (b.items, copied)
            }
            None => (Vec::with_capacity(BATCH_FRAMES), BytesMut::new()),
        };
        let items = std::mem::replace(&mut self.items, items);
        let data = match store {
            FrameStore::Shared(d) => d.clone(),
            FrameStore::Copied => std::mem::replace(&mut self.copied, copied).freeze(),
        };
        Batch { data, items }
    }
}

/// Where dispatched frames go.
enum Target {
    /// Batches to shard threads.
    Rings {
        feeder: Feeder,
        when_full: WhenFull,
        builders: Vec<BatchBuilder>,
    },
    /// Shards in this thread.
    Inline(Inline),
}

/// The frame loop's body, the same for every source: count the frame,
/// decode and orient it, pick its shard, hand it on.
///
/// `push_ref` is for a [`FrameStore::Shared`] dispatcher (frames are ranges
/// of its buffer), `push` for a [`FrameStore::Copied`] one.
pub struct Dispatcher {
    store: FrameStore,
    core: Core,
}

/// Everything of a dispatcher but its frame store, so that a frame borrowed
/// from the store and the state it updates can be borrowed together (a
/// `Bytes` clone per frame would cost an atomic increment).
struct Core {
    ports: Vec<u16>,
    shards: usize,
    /// IP fragments waiting for the rest of their datagram.
    defrag: Defragmenter,
    target: Target,
    counters: Counters,
    /// Frames dropped because a shard's ring was full, per shard.
    ring_full: Vec<u64>,
}

/// What a dispatcher leaves behind.
pub struct Dispatched {
    /// Frames read and frames skipped before the shards.
    pub counters: Counters,
    /// The shards, when they ran in this thread.
    pub inline: Option<Inline>,
}

impl Dispatcher {
    /// Feed the shard threads of a pipeline through `feeder`.
    pub fn to_rings(
        cfg: &DetectConfig,
        feeder: Feeder,
        store: FrameStore,
        when_full: WhenFull,
    ) -> Dispatcher {
        let shards = feeder.shards().max(1);
        Dispatcher {
            store,
            core: Core {
                ports: cfg.ports.clone(),
                shards,
                defrag: Defragmenter::new(cfg.target_policies.clone()),
                target: Target::Rings {
                    feeder,
                    when_full,
                    builders: (0..shards).map(|_| BatchBuilder::new()).collect(),
                },
                counters: Counters::default(),
                ring_full: vec![0; shards],
            },
        }
    }

    /// Process every frame in this thread, on `inline`'s shards.
    pub fn inline(cfg: &DetectConfig, inline: Inline, store: FrameStore) -> Dispatcher {
        let shards = inline.shards();
        Dispatcher {
            store,
            core: Core {
                ports: cfg.ports.clone(),
                shards,
                defrag: Defragmenter::new(cfg.target_policies.clone()),
                target: Target::Inline(inline),
                counters: Counters::default(),
                ring_full: vec![0; shards],
            },
        }
    }

    /// A frame of the shared buffer (a capture file's record).
    #[inline]
    pub fn push_ref(&mut self, frame: &FrameRef) {
        let data: &[u8] = match &self.store {
            FrameStore::Shared(d) => d,
            FrameStore::Copied => &[],
        };
        let bytes = data
            .get(frame.off..frame.off + frame.len as usize)
            .unwrap_or(&[]);
        self.core.push(
            &self.store,
            frame.ts_ns,
            frame.link,
            bytes,
            frame.off,
            frame.whole,
        );
    }

    /// A record of a stream's buffer, borrowed for this call (copied).
    #[inline]
    pub fn push_record(&mut self, frame: &FrameRef, bytes: &[u8]) {
        let (ts, link, whole) = (frame.ts_ns, frame.link, frame.whole);
        self.core.push(&self.store, ts, link, bytes, 0, whole);
    }

    /// A whole frame borrowed for this call (copied if it is batched).
    #[inline]
    pub fn push(&mut self, ts_ns: u64, link: LinkType, bytes: &[u8]) {
        self.core.push(&self.store, ts_ns, link, bytes, 0, true);
    }

    /// Send partial batches older than `age` (live capture: a quiet link
    /// must not hold frames back; a replay never needs it). Inline, the
    /// shards' alert lines are handed on now, and the next frame starts a
    /// batch (new settings are taken there).
    pub fn flush_older_than(&mut self, age: Duration) {
        let Core {
            target, ring_full, ..
        } = &mut self.core;
        let (feeder, when_full, builders) = match target {
            Target::Rings {
                feeder,
                when_full,
                builders,
            } => (feeder, when_full, builders),
            Target::Inline(inline) => {
                inline.publish();
                return;
            }
        };
        for (shard, b) in builders.iter_mut().enumerate() {
            if !b.items.is_empty() && b.since.elapsed() >= age {
                let batch = b.take(feeder.spare(shard), &self.store);
                send(feeder, *when_full, ring_full, shard, batch);
            }
        }
    }

    /// Go on with frames of another buffer (the next file of a capture
    /// set): the partial batches, which point into the old one, are handed
    /// on first.
    pub fn set_store(&mut self, store: FrameStore) {
        self.flush_older_than(Duration::ZERO);
        self.store = store;
    }

    /// The shards, when they run in this thread.
    pub fn inline_mut(&mut self) -> Option<&mut Inline> {
        match &mut self.core.target {
            Target::Inline(inline) => Some(inline),
            Target::Rings { .. } => None,
        }
    }

    /// Frames read and skipped so far.
    pub fn counters(&self) -> &Counters {
        &self.core.counters
    }

    /// Batches waiting in each shard's ring (none when the shards run
    /// in this thread).
    pub fn ring_depths(&self) -> Vec<usize> {
        match &self.core.target {
            Target::Rings { feeder, .. } => feeder.depths().collect(),
            Target::Inline(_) => Vec::new(),
        }
    }

    /// Frames dropped so far because a shard's ring was full, per shard.
    pub fn ring_full(&self) -> &[u64] {
        &self.core.ring_full
    }

    /// End of input: hand over the last partial batches (waiting for room:
    /// the shards are still draining) and let the shards know.
    pub fn finish(self) -> Dispatched {
        let Dispatcher { store, core } = self;
        let inline = match core.target {
            Target::Inline(inline) => Some(inline),
            Target::Rings {
                mut feeder,
                mut builders,
                ..
            } => {
                for (shard, b) in builders.iter_mut().enumerate() {
                    if !b.items.is_empty() {
                        let batch = b.take(None, &store);
                        feeder.send(shard, batch);
                    }
                }
                // Dropping the feeder tells the shards the input ended.
                None
            }
        };
        Dispatched {
            counters: core.counters,
            inline,
        }
    }
}

impl Core {
    /// `whole`: the source kept every byte of the frame (see
    /// [`FrameRef::whole`]).
    #[inline(always)]
    fn push(
        &mut self,
        store: &FrameStore,
        ts_ns: u64,
        link: LinkType,
        bytes: &[u8],
        off: usize,
        whole: bool,
    ) {
        self.counters.frames += 1;
        self.counters.bytes += bytes.len() as u64;
        let frame_no = self.counters.frames;
        let c = match classify(link, bytes, &self.ports, self.shards) {
            // A whole frame shorter than its IP length: the receiver drops
            // it (Linux `ip_rcv_core`), so the sensor does too.
            Ok(c) if c.meta.truncated && whole => Err(SkipReason::IpLengthExceedsFrame),
            other => other,
        };
        let c = match c {
            Ok(c) => c,
            Err(SkipReason::IpFragment) => {
                self.fragment(store, frame_no, ts_ns, link, bytes);
                return;
            }
            Err(reason) => {
                self.counters.skip(reason);
                return;
            }
        };
        self.dispatch(store, frame_no, ts_ns, c, bytes, off);
    }

    /// An IP fragment: kept until its datagram is whole, which is then
    /// dispatched as one packet (in a batch of its own: it is in no
    /// source buffer). Rare, so kept out of the frame loop.
    #[cold]
    #[inline(never)]
    fn fragment(
        &mut self,
        store: &FrameStore,
        frame_no: u64,
        ts_ns: u64,
        link: LinkType,
        bytes: &[u8],
    ) {
        self.counters.skip(SkipReason::IpFragment);
        let Some(frag) = defrag::fragment(link, bytes) else {
            self.counters.fragments_invalid += 1;
            return;
        };
        let Some((packet, notes)) = self.defrag.push(ts_ns, &frag, &mut self.counters) else {
            return;
        };
        let mut c = match classify(LinkType::RawIp, &packet, &self.ports, self.shards) {
            Ok(c) => c,
            Err(reason) => {
                self.counters.skip(reason);
                return;
            }
        };
        c.meta.fragments = notes;
        if let Target::Rings {
            feeder,
            when_full,
            builders,
        } = &mut self.target
        {
            // What the shard has batched comes first.
            if let Some(b) = builders.get_mut(c.shard).filter(|b| !b.items.is_empty()) {
                let batch = b.take(feeder.spare(c.shard), store);
                send(feeder, *when_full, &mut self.ring_full, c.shard, batch);
            }
            let item = BatchItem {
                frame_no,
                ts_ns,
                off: 0,
                len: packet.len() as u32,
                meta: c.meta,
                side: c.side,
            };
            let batch = Batch {
                data: Bytes::from(packet),
                items: vec![item],
            };
            send(feeder, *when_full, &mut self.ring_full, c.shard, batch);
            return;
        }
        self.dispatch(store, frame_no, ts_ns, c, &packet, 0);
    }

    /// Hand a classified frame to its shard.
    #[inline(always)]
    fn dispatch(
        &mut self,
        store: &FrameStore,
        frame_no: u64,
        ts_ns: u64,
        c: Classified,
        bytes: &[u8],
        off: usize,
    ) {
        match &mut self.target {
            Target::Inline(inline) => {
                inline.process(c.shard, frame_no, ts_ns, &c.meta, c.side, bytes)
            }
            Target::Rings {
                feeder,
                when_full,
                builders,
            } => {
                let Some(b) = builders.get_mut(c.shard) else {
                    return;
                };
                let item = BatchItem {
                    frame_no,
                    ts_ns,
                    off,
                    len: bytes.len() as u32,
                    meta: c.meta,
                    side: c.side,
                };
                b.push(item, bytes, store);
                if b.items.len() >= BATCH_FRAMES {
                    let batch = b.take(feeder.spare(c.shard), store);
                    send(feeder, *when_full, &mut self.ring_full, c.shard, batch);
                }
            }
        }
    }
}

/// Hand a full batch to its shard, as the dispatcher's policy says.
fn send(
    feeder: &mut Feeder,
    when_full: WhenFull,
    ring_full: &mut [u64],
    shard: usize,
    batch: Batch,
) {
    match when_full {
        WhenFull::Wait => feeder.send(shard, batch),
        WhenFull::Drop => {
            let n = batch.items.len() as u64;
            if feeder.try_send(shard, batch).is_err() {
                if let Some(c) = ring_full.get_mut(shard) {
                    *c += n;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_is_stable_and_in_range() {
        let a = IpAddr::from([192, 168, 50, 10]);
        for n in 1..8 {
            assert!(shard_of(a, n) < n);
            assert_eq!(shard_of(a, n), shard_of(a, n));
        }
        assert_eq!(shard_of(a, 1), 0);
        // A subnet of PLCs spreads evenly, for any shard count.
        for n in [2usize, 3, 4, 7] {
            for net in [[10, 0, 0], [10, 0, 1], [192, 168, 50]] {
                let mut per_shard = vec![0usize; n];
                for i in 0..=255u8 {
                    per_shard[shard_of(IpAddr::from([net[0], net[1], net[2], i]), n)] += 1;
                }
                let fair = 256 / n;
                assert!(
                    per_shard.iter().all(|&k| k > fair / 2 && k < fair * 3 / 2),
                    "{net:?}/24 over {n} shards: {per_shard:?}"
                );
            }
        }
    }

    fn item(len: usize) -> BatchItem {
        let ip = IpAddr::from([10, 0, 0, 1]);
        BatchItem {
            frame_no: 1,
            ts_ns: 0,
            off: 0,
            len: len as u32,
            meta: PacketMeta::bare(ip, 1024, ip, 502, 0),
            side: Side {
                dir: crate::flow::Dir::ToServer,
                provisional: false,
            },
        }
    }

    fn pushed(b: &mut BatchBuilder, frame: &[u8]) {
        b.push(item(frame.len()), frame, &FrameStore::Copied);
    }

    #[test]
    fn a_returned_batch_lends_its_buffers_to_a_later_one() {
        let store = FrameStore::Copied;
        let mut b = BatchBuilder::new();
        pushed(&mut b, &[1, 2, 3]);
        let mut first = b.take(None, &store);
        assert_eq!(first.frame(&first.items[0]), &[1, 2, 3]);
        let (data, items) = (first.data.as_ptr(), first.items.as_ptr());
        // The shard is done with it: items emptied, handed back.
        first.items.clear();
        pushed(&mut b, &[4, 5]);
        let second = b.take(Some(first), &store);
        assert_eq!(second.frame(&second.items[0]), &[4, 5]);
        pushed(&mut b, &[6]);
        let third = b.take(None, &store);
        assert_eq!(third.data.as_ptr(), data, "copy buffer reused");
        assert_eq!(third.items.as_ptr(), items, "item buffer reused");
        assert_eq!(third.items.len(), 1);
        assert_eq!(third.frame(&third.items[0]), &[6]);
    }

    #[test]
    fn a_buffer_still_viewed_is_not_reused() {
        let store = FrameStore::Copied;
        let mut b = BatchBuilder::new();
        pushed(&mut b, &[1, 2, 3]);
        let mut first = b.take(None, &store);
        let view = first.data.clone();
        first.items.clear();
        let _ = b.take(Some(first), &store);
        pushed(&mut b, &[9, 9, 9]);
        let next = b.take(None, &store);
        assert_ne!(next.data.as_ptr(), view.as_ptr());
        assert_eq!(&view[..], &[1, 2, 3], "the old frames are untouched");
    }

    #[test]
    fn shared_frames_are_referred_to_not_copied() {
        let data = Bytes::from_static(&[0, 1, 2, 3, 4, 5, 6, 7]);
        let store = FrameStore::Shared(data.clone());
        let mut b = BatchBuilder::new();
        b.push(BatchItem { off: 2, ..item(3) }, &data[2..5], &store);
        let batch = b.take(None, &store);
        assert_eq!(batch.data.as_ptr(), data.as_ptr());
        assert_eq!(batch.frame(&batch.items[0]), &[2, 3, 4]);
    }
}
