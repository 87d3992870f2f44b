//! The pcap/pcapng reader on arbitrary files: `CaptureFile::open`, every
//! frame of `frames()`, then `inspect::decode_capture` (the reader, the
//! decoders and one shard with every rule on, recording each ADU).
//!
//! Invariants: no panic; every frame lies inside the file; the iterator
//! ends (after at most one error, which ends it) and makes progress (a
//! frame costs at least 12 bytes of file); `decode_capture` reads the same
//! frames and the same error.

#![no_main]

use std::io::Write;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use modbus_detect::inspect::decode_capture;
use modbus_detect::source::CaptureFile;
use modbus_detect_fuzz::full_config;

fuzz_target!(|data: &[u8]| {
    let mut file = tempfile::NamedTempFile::new().expect("a temporary file");
    file.write_all(data).expect("writing the temporary file");
    file.flush().expect("flushing the temporary file");
    let path = file.path();
    let Ok(capture) = CaptureFile::open(path) else {
        return;
    };
    let size = capture.data().len();
    assert_eq!(size, data.len());
    assert!(matches!(capture.format(), "pcap" | "pcapng"));
    let mut frames = 0u64;
    let mut error = None;
    for frame in capture.frames() {
        match frame {
            Ok(f) => {
                assert!(error.is_none(), "a frame after an error");
                let end = f.off.checked_add(f.len as usize).expect("frame end");
                assert!(end <= size, "frame {}..{end} past the end ({size})", f.off);
                frames += 1;
                assert!(
                    frames as usize <= size / 12,
                    "{frames} frames in {size} bytes"
                );
            }
            Err(e) => {
                assert!(error.is_none(), "two errors");
                let msg = e.to_string();
                assert!(!msg.contains('\n'), "one-line error: {msg}");
                error = Some(msg);
            }
        }
    }
    let inspection = decode_capture(path, Arc::new(full_config())).expect("it opened before");
    assert_eq!(inspection.error.map(|e| e.to_string()), error);
    assert_eq!(inspection.result.counters.frames, frames);
    for adu in &inspection.adus {
        assert!(adu.frame >= 1 && adu.frame <= frames);
        serde_json::to_string(adu).expect("an ADU record serialises");
    }
});
