//! Replay: the frames of a capture file, memory-mapped, through the shards.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::config::DetectConfig;
use crate::output::eve::EveWriter;
use crate::source::CaptureFile;

use super::dispatch::{Dispatcher, FrameStore, WhenFull};
use super::inline::Inline;
use super::{InputError, Pipeline, Plan, RunOutcome};

/// Called every few thousand frames with the byte offset reached.
pub type Progress<'a> = &'a dyn Fn(u64);

/// Replay a capture file as `plan` says. Stops early when `stop` is set
/// (SIGINT/SIGTERM) or the file breaks off; what was read is processed.
pub fn replay(
    cfg: Arc<DetectConfig>,
    capture: &CaptureFile,
    plan: Plan,
    eve: Option<EveWriter>,
    stop: &AtomicBool,
    progress: Option<Progress<'_>>,
) -> std::io::Result<RunOutcome> {
    let started = Instant::now();
    let store = FrameStore::Shared(capture.data().clone());
    let (pipe, mut dispatcher) = match plan {
        Plan::Inline => (
            None,
            Dispatcher::inline(&cfg, Inline::new(&cfg, 1, eve), store),
        ),
        Plan::Threads(n) => {
            let (pipe, mut feeders) = Pipeline::start(cfg.clone(), n, 1, eve, &[])?;
            let feeder = feeders
                .pop()
                .ok_or_else(|| std::io::Error::other("the pipeline has no feeder"))?;
            let d = Dispatcher::to_rings(&cfg, feeder, store, WhenFull::Wait);
            (Some(pipe), d)
        }
    };
    let mut input_error = None;
    let mut interrupted = false;
    for (i, frame) in capture.frames().enumerate() {
        if i % 4096 == 0 {
            if stop.load(Ordering::Relaxed) {
                interrupted = true;
                break;
            }
            if let (Some(p), Ok(f)) = (progress, &frame) {
                p(f.off as u64);
            }
        }
        match frame {
            Ok(f) => dispatcher.push_ref(&f),
            Err(e) => {
                input_error = Some(InputError::Capture(e));
                break;
            }
        }
    }
    let done = dispatcher.finish();
    let (shards, eve) = match (pipe, done.inline) {
        (Some(pipe), _) => {
            let r = pipe.finish();
            (r.shards, r.eve)
        }
        (None, Some(inline)) => inline.finish(),
        (None, None) => (Vec::new(), None),
    };
    Ok(RunOutcome {
        shards,
        dispatch: done.counters,
        input_error,
        interrupted,
        eve,
        elapsed: started.elapsed(),
        capture: None,
    })
}
