//! ADU-level view of a capture: every Modbus ADU the decoder finds, with the
//! frame that completed it. Used by `modbus-detect --dump-adus` (analysts
//! comparing with Wireshark) and by the differential test against tshark.

use std::path::Path;
use std::sync::Arc;

use crate::config::DetectConfig;
use crate::modbus::record::AduRecord;
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

/// Decode a capture on one shard in this thread, recording every ADU.
pub fn decode_capture(path: &Path, cfg: Arc<DetectConfig>) -> Result<Inspection, SourceError> {
    let capture = CaptureFile::open(path)?;
    let mut inline = Inline::new(&cfg, 1, None);
    for shard in inline.shards_mut() {
        shard.enable_tap();
    }
    let store = FrameStore::Shared(capture.data().clone());
    let mut dispatcher = Dispatcher::inline(&cfg, inline, store);
    let mut error = None;
    for frame in capture.frames() {
        match frame {
            Ok(f) => dispatcher.push_ref(&f),
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    let done = dispatcher.finish();
    let mut adus = Vec::new();
    let mut results = Vec::new();
    if let Some(mut inline) = done.inline {
        for shard in inline.shards_mut() {
            shard.flush();
            adus.extend(shard.take_tap());
        }
        results = inline.finish().0;
    }
    crate::modbus::record::link_responses(&mut adus);
    let mut result = results.pop().unwrap_or_default();
    result.counters.merge(&done.counters);
    Ok(Inspection {
        adus,
        result,
        error,
    })
}
