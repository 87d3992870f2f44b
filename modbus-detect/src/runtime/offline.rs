//! Replay: the frames of a capture, memory-mapped from a file or read from
//! standard input or a FIFO, through the shards.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::DetectConfig;
use crate::counters::Counters;
use crate::output::eve::EveWriter;
use crate::shard::ShardResult;
use crate::source::stream::Next;
use crate::source::{CaptureFile, CaptureSet, CaptureStream};

use super::dispatch::{Dispatcher, FrameStore, WhenFull};
use super::inline::Inline;
use super::{InputError, Pipeline, Plan, RunOutcome};

/// Called every few thousand frames with the byte offset reached.
pub type Progress<'a> = &'a dyn Fn(u64);

/// Where a replay's frames come from.
pub enum Capture<'a> {
    /// Mapped: frames are ranges of one shared buffer.
    File(&'a CaptureFile),
    /// Read as it comes: each frame is copied out of the read buffer.
    Stream(&'a mut CaptureStream),
    /// Several files, one after the other, as one capture; told of each
    /// file once it is read.
    Set(&'a CaptureSet, &'a dyn Fn(FileRead)),
}

/// One file of a set, read: its place in the set, the frames read from
/// it, and why it ended early.
pub struct FileRead<'a> {
    pub index: usize,
    pub frames: u64,
    pub error: Option<&'a crate::source::SourceError>,
}

impl<'a> From<&'a CaptureFile> for Capture<'a> {
    fn from(file: &'a CaptureFile) -> Self {
        Capture::File(file)
    }
}

impl<'a> From<&'a mut CaptureStream> for Capture<'a> {
    fn from(stream: &'a mut CaptureStream) -> Self {
        Capture::Stream(stream)
    }
}

/// How often the stop flag is looked at, in frames.
const STOP_CHECK_FRAMES: usize = 4096;
/// A stream that pauses hands its partial batches on after this long, so
/// the shards see a slow writer's frames (as live capture does).
const STREAM_FLUSH_AGE: Duration = Duration::from_millis(100);

/// Someone following a replay as it goes (the live dashboard): about
/// every `every`, the shards' results so far (whole: alerts and
/// inventory) and the frames read.
pub struct Watch<'a> {
    pub every: Duration,
    pub on_snapshot: &'a dyn Fn(Vec<ShardResult>, &Counters, Duration),
}

/// How long a snapshot may wait for a shard thread that is far behind.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(2);

/// Replay a capture as `plan` says. Stops early when `stop` is set
/// (SIGINT/SIGTERM) or the capture breaks off; what was read is processed.
pub fn replay<'c>(
    cfg: Arc<DetectConfig>,
    capture: impl Into<Capture<'c>>,
    plan: Plan,
    eve: Option<EveWriter>,
    stop: &AtomicBool,
    progress: Option<Progress<'_>>,
) -> std::io::Result<RunOutcome> {
    replay_watched(cfg, capture, plan, eve, stop, progress, None)
}

/// [`replay`], with someone following it.
pub fn replay_watched<'c>(
    cfg: Arc<DetectConfig>,
    capture: impl Into<Capture<'c>>,
    plan: Plan,
    eve: Option<EveWriter>,
    stop: &AtomicBool,
    progress: Option<Progress<'_>>,
    watch: Option<&Watch<'_>>,
) -> std::io::Result<RunOutcome> {
    let started = Instant::now();
    let capture = capture.into();
    let store = match &capture {
        Capture::File(file) => FrameStore::Shared(file.data().clone()),
        Capture::Stream(_) => FrameStore::Copied,
        Capture::Set(set, _) => match set.files.first() {
            Some(f) => FrameStore::Shared(f.data().clone()),
            None => FrameStore::Copied,
        },
    };
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
    let mut last = Instant::now();
    let mut tick = |d: &mut Dispatcher| {
        let Some(w) = watch else {
            return;
        };
        if last.elapsed() < w.every {
            return;
        }
        last = Instant::now();
        let shards = match &pipe {
            Some(p) => p.snapshot(SNAPSHOT_WAIT, true),
            None => d
                .inline_mut()
                .map(|i| i.shards_mut().iter().map(|s| s.snapshot()).collect()),
        };
        if let Some(shards) = shards {
            (w.on_snapshot)(shards, d.counters(), started.elapsed());
        }
    };
    let fed = match capture {
        Capture::File(file) => feed_file(file, &mut dispatcher, stop, progress, &mut tick),
        Capture::Stream(stream) => feed_stream(stream, &mut dispatcher, stop, progress, &mut tick),
        Capture::Set(set, on_file) => {
            feed_set(set, on_file, &mut dispatcher, stop, progress, &mut tick)
        }
    };
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
        input_error: fed.input_error,
        interrupted: fed.interrupted,
        eve,
        elapsed: started.elapsed(),
        capture: None,
    })
}

/// How feeding the frames ended.
#[derive(Default)]
struct Fed {
    input_error: Option<InputError>,
    interrupted: bool,
}

impl Fed {
    const INTERRUPTED: Fed = Fed {
        input_error: None,
        interrupted: true,
    };

    fn failed(e: crate::source::SourceError) -> Fed {
        Fed {
            input_error: Some(InputError::Capture(e)),
            interrupted: false,
        }
    }
}

/// Called at each look at the stop flag, with the dispatcher.
type Tick<'a> = &'a mut dyn FnMut(&mut Dispatcher);

fn feed_file(
    capture: &CaptureFile,
    dispatcher: &mut Dispatcher,
    stop: &AtomicBool,
    progress: Option<Progress<'_>>,
    tick: Tick<'_>,
) -> Fed {
    for (i, frame) in capture.frames().enumerate() {
        if i % STOP_CHECK_FRAMES == 0 {
            if stop.load(Ordering::Relaxed) {
                return Fed::INTERRUPTED;
            }
            tick(dispatcher);
            if let (Some(p), Ok(f)) = (progress, &frame) {
                p(f.off as u64);
            }
        }
        match frame {
            Ok(f) => dispatcher.push_ref(&f),
            Err(e) => return Fed::failed(e),
        }
    }
    Fed::default()
}

/// The files of a set one after the other, through one dispatcher: a
/// connection that goes on in the next file goes on in the shards. A file
/// that breaks off ends the set there (its error is the run's), as one
/// file that breaks off ends its replay.
fn feed_set(
    set: &CaptureSet,
    on_file: &dyn Fn(FileRead),
    dispatcher: &mut Dispatcher,
    stop: &AtomicBool,
    progress: Option<Progress<'_>>,
    tick: Tick<'_>,
) -> Fed {
    for (index, file) in set.files.iter().enumerate() {
        if index > 0 {
            dispatcher.set_store(FrameStore::Shared(file.data().clone()));
        }
        let before = dispatcher.counters().frames;
        let fed = feed_file(file, dispatcher, stop, progress, tick);
        let error = match &fed.input_error {
            Some(InputError::Capture(e)) => Some(e),
            _ => None,
        };
        on_file(FileRead {
            index,
            frames: dispatcher.counters().frames - before,
            error,
        });
        if fed.interrupted || fed.input_error.is_some() {
            return fed;
        }
    }
    Fed::default()
}

fn feed_stream(
    stream: &mut CaptureStream,
    dispatcher: &mut Dispatcher,
    stop: &AtomicBool,
    progress: Option<Progress<'_>>,
    tick: Tick<'_>,
) -> Fed {
    let mut frames = 0usize;
    loop {
        let next = stream.read_next();
        let check = match &next {
            Ok(Next::Frame(_)) => {
                frames += 1;
                frames.is_multiple_of(STOP_CHECK_FRAMES)
            }
            _ => true,
        };
        if check {
            if stop.load(Ordering::Relaxed) {
                return Fed::INTERRUPTED;
            }
            tick(dispatcher);
            if let Some(p) = progress {
                p(stream.position());
            }
        }
        match next {
            Ok(Next::Frame(f)) => dispatcher.push_record(&f, stream.frame(&f)),
            Ok(Next::Idle) => dispatcher.flush_older_than(STREAM_FLUSH_AGE),
            Ok(Next::End) => return Fed::default(),
            Err(e) => return Fed::failed(e),
        }
    }
}
