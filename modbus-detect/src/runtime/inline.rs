//! Shards in the caller's thread: no rings, no threads, no wake-ups.
//!
//! For a replay on a machine with one core (the reader and a shard thread
//! would share it), for `--dump-adus` and the tshark comparison (one shard
//! that records every ADU), and for benchmarks and fuzzing, which want the
//! engine's frame path with nothing else around it.

use std::sync::Arc;

use crate::alert::EveEvent;
use crate::config::DetectConfig;
use crate::decode::PacketMeta;
use crate::flow::Side;
use crate::output::eve::{EveError, EveWriter};
use crate::shard::{Shard, ShardResult};

use super::dispatch::BATCH_FRAMES;

/// What becomes of the EVE lines of inline shards.
enum Lines {
    /// Dropped (no `--eve`).
    Dropped,
    /// Written, every [`BATCH_FRAMES`] frames as a shard thread does after
    /// each batch; the first error stops the writing and is kept. `buf` is
    /// reused, so that writing allocates nothing per batch.
    Written {
        /// Boxed: the writer is large and touched once per batch, and the
        /// dispatcher holds this enum beside its hot fields.
        writer: Box<EveWriter>,
        failed: Option<EveError>,
        buf: Vec<EveEvent>,
    },
    /// Kept for the caller ([`Inline::take_lines`]).
    Kept(Vec<EveEvent>),
}

/// Shards run by the thread that reads the frames.
pub struct Inline {
    shards: Vec<Shard>,
    lines: Lines,
    /// Frames since the lines were last collected.
    since_publish: usize,
}

impl Inline {
    /// `shards` shards (as `--threads` would split the tables), their EVE
    /// lines written to `eve` or dropped.
    pub fn new(cfg: &Arc<DetectConfig>, shards: usize, eve: Option<EveWriter>) -> Inline {
        let shards = shards.max(1);
        Inline {
            shards: (0..shards)
                .map(|_| Shard::new(cfg.clone(), shards))
                .collect(),
            lines: match eve {
                Some(writer) => Lines::Written {
                    writer: Box::new(writer),
                    failed: None,
                    buf: Vec::new(),
                },
                None => Lines::Dropped,
            },
            since_publish: 0,
        }
    }

    /// Keep the EVE lines for [`Inline::take_lines`] instead (tests, fuzzing).
    pub fn keeping_lines(mut self) -> Inline {
        self.lines = Lines::Kept(Vec::new());
        self
    }

    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// The shards themselves (to record ADUs, to look at their state).
    pub fn shards_mut(&mut self) -> &mut [Shard] {
        &mut self.shards
    }

    /// One segment for shard `shard`.
    #[inline]
    pub fn process(
        &mut self,
        shard: usize,
        frame_no: u64,
        ts_ns: u64,
        meta: &PacketMeta,
        side: Side,
        frame: &[u8],
    ) {
        if self.since_publish == 0 {
            // The first frame of a batch: new settings, if any, from here.
            self.shards.iter_mut().for_each(Shard::catch_up);
        }
        // One shard (the usual case): no bounds check to speak of.
        let s = match self.shards.as_mut_slice() {
            [only] => only,
            all => match all.get_mut(shard) {
                Some(s) => s,
                None => return,
            },
        };
        s.process(frame_no, ts_ns, meta, side, frame);
        self.since_publish += 1;
        if self.since_publish >= BATCH_FRAMES {
            self.publish();
        }
    }

    /// Collect the shards' EVE lines now.
    pub fn publish(&mut self) {
        self.since_publish = 0;
        for s in &mut self.shards {
            let lines = s.drain_eve();
            match &mut self.lines {
                Lines::Dropped => lines.for_each(drop),
                Lines::Kept(kept) => kept.extend(lines),
                Lines::Written {
                    writer,
                    failed,
                    buf,
                } => {
                    buf.clear();
                    buf.extend(lines);
                    if failed.is_none() && !buf.is_empty() {
                        *failed = writer.write_lines(buf).err();
                    }
                }
            }
        }
    }

    /// The EVE lines kept so far (see [`Inline::keeping_lines`]).
    pub fn take_lines(&mut self) -> Vec<EveEvent> {
        self.publish();
        match &mut self.lines {
            Lines::Kept(kept) => std::mem::take(kept),
            _ => Vec::new(),
        }
    }

    /// End of input: every shard delivers what it still holds; the results,
    /// and the EVE lines written (or why not) when there was a writer.
    pub fn finish(mut self) -> (Vec<ShardResult>, Option<Result<u64, EveError>>) {
        for s in &mut self.shards {
            s.flush();
        }
        self.publish();
        let results = self.shards.into_iter().map(Shard::finish).collect();
        let eve = match self.lines {
            Lines::Written {
                writer,
                failed: None,
                ..
            } => Some(writer.finish()),
            Lines::Written {
                failed: Some(e), ..
            } => Some(Err(e)),
            Lines::Dropped | Lines::Kept(_) => None,
        };
        (results, eve)
    }
}
