//! The whole engine on arbitrary frames: link/IP/TCP decoding, dispatch to
//! shards, flow table, reassembly, transactions, every rule, alert
//! aggregation, the EVE records and the report.
//!
//! Input (see `modbus_detect_fuzz`): a flags byte choosing the configuration
//! (every rule on with the lab's masters, writers, limits and baseline, or
//! none; small tables; learning; 1 to 3 shards; ...), a link-type byte, then
//! length-prefixed frames with a time delta each. Frames go through the
//! runtime's `Dispatcher` into inline shards (a replay minus the threads);
//! the shards' results are merged and the report built.
//!
//! Invariants: no panic; every frame is counted once (read, then either
//! skipped with a reason or handed to a shard; an IP fragment is skipped
//! as one and its datagram, once whole, handed on); the report is valid JSON
//! whose counters agree with the shards'; with untouched tables (no
//! eviction), the number of shards changes nothing in the report.

#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use modbus_detect::config::DetectConfig;
use modbus_detect::decode::LinkType;
use modbus_detect::output::eve;
use modbus_detect::output::report::{build, Report, RunInfo, Status, Summary};
use modbus_detect::runtime::dispatch::{classify, Dispatcher, FrameStore};
use modbus_detect::runtime::inline::Inline;
use modbus_detect_fuzz::{link_type, records, EngineFlags, START_NS};
use serde_json::Value;

/// Run the frames through `shards` shards; the report and the EVE lines.
fn run(cfg: &Arc<DetectConfig>, link: LinkType, frames: &[u8], shards: usize) -> (Value, usize) {
    let inline = Inline::new(cfg, shards, None).keeping_lines();
    let mut dispatcher = Dispatcher::inline(cfg, inline, FrameStore::Copied);
    let mut eve_lines = 0usize;
    let mut processed = 0u64;
    for (ts, frame) in records(frames) {
        if let Ok(c) = classify(link, frame, &cfg.ports, shards) {
            assert!(c.shard < shards, "shard {} of {shards}", c.shard);
            assert!(
                usize::from(c.meta.payload_off) + usize::from(c.meta.payload_len) <= frame.len(),
                "payload inside the frame"
            );
            // A whole frame (as `push` takes every frame here) whose IP
            // length runs past its end is dropped, as its receiver would.
            processed += u64::from(!c.meta.truncated);
        }
        dispatcher.push(ts, link, frame);
    }
    let done = dispatcher.finish();
    let dispatch = done.counters;
    let Some(mut inline) = done.inline else {
        panic!("an inline dispatcher hands its shards back");
    };
    for s in inline.shards_mut() {
        s.flush();
    }
    let origin = eve::Origin {
        host: "fuzz".into(),
        pcap_filename: Some("fuzz.pcap".into()),
        in_iface: None,
    };
    for ev in inline.take_lines() {
        let line = eve::record(&ev, cfg, &origin);
        assert!(line.is_object());
        if let Some(id) = line.get("flow_id") {
            assert!(id.as_u64().is_some_and(|id| id < 1 << 53), "{line}");
        }
        assert!(line["alert"]["signature"].is_string(), "{line}");
        serde_json::to_string(&line).expect("an EVE line serialises");
        eve_lines += 1;
    }
    let (results, _) = inline.finish();
    let modbus_frames: u64 = results.iter().map(|r| r.counters.modbus_frames).sum();
    // Besides the frames, datagrams put together from IP fragments reach
    // the shards (those on a Modbus port).
    assert!(
        (processed..=processed + dispatch.ip_datagrams_reassembled).contains(&modbus_frames),
        "every dispatched frame reached its shard: {modbus_frames} of {processed} frames and {} datagrams",
        dispatch.ip_datagrams_reassembled
    );
    let summary = Summary::merge(&dispatch, results);
    assert_eq!(summary.counters.frames, dispatch.frames);
    let raised: u64 = summary.raised.iter().sum();
    let by_severity: u64 = summary.raised_by_severity.iter().sum();
    assert_eq!(raised, by_severity, "alerts by type and by severity agree");
    let aggregated: u64 = summary.alerts.iter().map(|a| a.count).sum();
    assert!(
        aggregated <= raised,
        "{aggregated} aggregated of {raised} raised"
    );
    assert!(summary.alerts.len() <= cfg.limits.max_alert_keys.max(shards));
    let info = RunInfo {
        input_kind: "pcap",
        input: "fuzz".into(),
        format: "pcap".into(),
        threads: shards,
        status: Status::Complete,
        error: None,
        elapsed_s: 0.0,
        limits_file: None,
        baseline_file: None,
        eve_file: None,
        eve_lines: eve_lines as u64,
        capture: None,
        files: Vec::new(),
        publish: None,
    };
    let report = build(&summary, &info, cfg);
    let text = serde_json::to_string(&report).expect("the report serialises");
    let back: Value = serde_json::from_str(&text).expect("the report is valid JSON");
    assert_eq!(back["counters"]["frames"], dispatch.frames);
    // Read back through the schema and written again: the same JSON (the
    // typed counters keep skipped frames by name only, so compare the JSON).
    let typed: Report = serde_json::from_str(&text).expect("the report reads back as a Report");
    let again = serde_json::to_value(&typed).expect("the report serialises");
    assert!(again == back, "the report round-trips through its schema");
    (back, eve_lines)
}

/// The parts of a report that must not depend on the number of shards.
fn comparable(mut r: Value) -> Value {
    if let Some(s) = r.get_mut("settings").and_then(Value::as_object_mut) {
        s.remove("threads");
    }
    // The sum of each shard's peak: an upper bound, documented as such.
    if let Some(c) = r.get_mut("counters").and_then(Value::as_object_mut) {
        c.remove("flows_peak");
    }
    // The process's memory, which grows from run to run.
    if let Some(o) = r.as_object_mut() {
        o.remove("peak_memory_kib");
    }
    r
}

fuzz_target!(|data: &[u8]| {
    let Some((&[flags, link], frames)) = data.split_first_chunk::<2>() else {
        return;
    };
    let flags = EngineFlags(flags);
    let cfg = Arc::new(flags.config());
    let link = link_type(link);
    let shards = flags.shards();
    let (report, _) = run(&cfg, link, frames, shards);
    // The same capture gives the same report for any --threads (README),
    // as long as no table fills up (their capacities are split over shards)
    // and no connection idles out (each shard sweeps its own table only
    // when it gets frames).
    let span = records(frames).last().map_or(0, |(ts, _)| ts - START_NS);
    if shards > 1 && !flags.tight() && span <= cfg.limits.flow_idle_timeout_ns {
        let (one, _) = run(&cfg, link, frames, 1);
        assert_eq!(
            comparable(report),
            comparable(one),
            "{shards} shards and 1 shard disagree"
        );
    }
});
