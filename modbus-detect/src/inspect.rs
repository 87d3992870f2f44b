//! ADU-level view of a capture: every Modbus ADU the decoder finds, with the
//! frame that completed it. Used by `modbus-detect --dump-adus` (analysts
//! comparing with Wireshark) and by the differential test against tshark.

use std::io;
use std::path::Path;
use std::sync::Arc;

use crate::alert::EveEvent;
use crate::config::DetectConfig;
use crate::modbus::record::{AduRecord, Linker};
use crate::runtime::dispatch::{Dispatcher, FrameStore};
use crate::runtime::inline::Inline;
use crate::shard::ShardResult;
use crate::source::{CaptureFile, SourceError};

/// Result of [`decode_capture`].
pub struct Inspection {
    pub adus: Vec<AduRecord>,
    pub result: ShardResult,
    /// The capture ended in an error after these ADUs.
    pub error: Option<SourceError>,
}

/// What [`decode_capture_with`] leaves besides the records it handed on.
pub struct Decoded {
    pub result: ShardResult,
    /// The capture ended in an error after the records handed on.
    pub error: Option<SourceError>,
    /// Requests whose response could not be linked: more than
    /// [`crate::modbus::record::MAX_UNANSWERED`] were waiting at once.
    pub forgotten_requests: u64,
}

/// The records are handed on every this many frames (and at the end), so
/// that no more than these frames' ADUs are held.
const HAND_ON_FRAMES: usize = 4096;

/// Decode a capture on one shard in this thread, recording every ADU.
pub fn decode_capture(path: &Path, cfg: Arc<DetectConfig>) -> Result<Inspection, SourceError> {
    let capture = CaptureFile::open(path)?;
    let mut adus = Vec::new();
    let decoded = decode_capture_with(&capture, cfg, &mut |r| {
        adus.push(r);
        Ok(())
    });
    // Pushing to a Vec does not fail.
    let Ok(decoded) = decoded else {
        return Ok(Inspection {
            adus,
            result: ShardResult::default(),
            error: None,
        });
    };
    Ok(Inspection {
        adus,
        result: decoded.result,
        error: decoded.error,
    })
}

/// Decode a capture on one shard in this thread and hand every ADU, linked
/// to its request, to `sink` as it is decoded: memory stays bounded
/// however large the capture. Stops at the first error of `sink`.
pub fn decode_capture_with(
    capture: &CaptureFile,
    cfg: Arc<DetectConfig>,
    sink: &mut dyn FnMut(AduRecord) -> io::Result<()>,
) -> io::Result<Decoded> {
    trace_capture(capture, cfg, sink, None)
}

/// [`decode_capture_with`] over the files of a set, one after the other,
/// their frames numbered on as the detection numbers them (the second
/// file's first frame follows the first file's last). Each file is decoded
/// on its own: an ADU cut by a file boundary, or a response whose request
/// is in the file before, is what a capture starting there would give.
/// Returns the requests left unlinked.
pub fn decode_files_with(
    files: &[CaptureFile],
    cfg: Arc<DetectConfig>,
    sink: &mut dyn FnMut(AduRecord) -> io::Result<()>,
) -> io::Result<u64> {
    let mut before = 0;
    let mut forgotten = 0;
    for file in files {
        let decoded = decode_capture_with(file, cfg.clone(), &mut |mut r| {
            r.frame += before;
            r.request_frame = r.request_frame.map(|f| f + before);
            sink(r)
        })?;
        before += decoded.result.counters.frames;
        forgotten += decoded.forgotten_requests;
    }
    Ok(forgotten)
}

/// [`decode_capture_with`], also keeping every alert line the shard raises
/// in `alerts` (with `eve_interval_ns` 0 in `cfg`: one per event; the
/// evaluation, which holds them all).
pub fn trace_capture(
    capture: &CaptureFile,
    cfg: Arc<DetectConfig>,
    sink: &mut dyn FnMut(AduRecord) -> io::Result<()>,
    mut alerts: Option<&mut Vec<EveEvent>>,
) -> io::Result<Decoded> {
    let mut inline = Inline::new(&cfg, 1, None);
    if alerts.is_some() {
        inline = inline.keeping_lines();
    }
    for shard in inline.shards_mut() {
        shard.enable_tap();
    }
    let store = FrameStore::Shared(capture.data().clone());
    let mut dispatcher = Dispatcher::inline(&cfg, inline, store);
    let mut linker = Linker::default();
    let mut error = None;
    for (i, frame) in capture.frames().enumerate() {
        match frame {
            Ok(f) => dispatcher.push_ref(&f),
            Err(e) => {
                error = Some(e);
                break;
            }
        }
        if i % HAND_ON_FRAMES == HAND_ON_FRAMES - 1 {
            if let Some(inline) = dispatcher.inline_mut() {
                hand_on(inline, &mut linker, sink, false)?;
                if let Some(a) = alerts.as_deref_mut() {
                    a.extend(inline.take_lines());
                }
            }
        }
    }
    let done = dispatcher.finish();
    let mut result = ShardResult::default();
    if let Some(mut inline) = done.inline {
        hand_on(&mut inline, &mut linker, sink, true)?;
        if let Some(a) = alerts {
            a.extend(inline.take_lines());
        }
        result = inline.finish().0.pop().unwrap_or_default();
    }
    result.counters.merge(&done.counters);
    Ok(Decoded {
        result,
        error,
        forgotten_requests: linker.forgotten,
    })
}

/// The shards' records so far, linked, to `sink`; at the `end`, after the
/// shards have flushed what they still hold.
fn hand_on(
    inline: &mut Inline,
    linker: &mut Linker,
    sink: &mut dyn FnMut(AduRecord) -> io::Result<()>,
    end: bool,
) -> io::Result<()> {
    for shard in inline.shards_mut() {
        if end {
            shard.flush();
        }
        for mut r in shard.drain_tap() {
            linker.link(&mut r);
            sink(r)?;
        }
    }
    Ok(())
}
