//! The register limits and baseline loaders on arbitrary UTF-8.
//!
//! Invariants: no panic; accepted limits are consistent (each entry found
//! again by its table and address, Modicon numbers that parse back to the
//! same register, min <= max, positive rates); an accepted baseline can be
//! written again (`to_file`, serialised) and its statistics read.

#![no_main]

use libfuzzer_sys::fuzz_target;
use modbus_detect::config::baseline::Baseline;
use modbus_detect::config::limits::{modicon_number, parse_modicon, RegisterLimits};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(limits) = RegisterLimits::parse(text) {
        for i in 0..limits.len() {
            let l = limits.get(i as u32).expect("every index up to len");
            let (idx, found) = limits.lookup(l.table, l.addr).expect("indexed");
            assert_eq!(idx as usize, i);
            assert_eq!(found, l);
            assert_eq!(l.modicon, modicon_number(l.table, l.addr));
            // Five digits up to entity 9999, six beyond (coils start with 0).
            let key = if u32::from(l.addr) < 9999 {
                format!("{:05}", l.modicon)
            } else {
                format!("{:06}", l.modicon)
            };
            assert_eq!(
                parse_modicon(&key),
                Some((l.table, l.addr)),
                "Modicon number {} reads back",
                l.modicon
            );
            if let (Some(min), Some(max)) = (l.min, l.max) {
                assert!(min <= max);
                assert!(l.in_range(min) && l.in_range(max));
            }
            assert!(l.max_rate.is_none_or(|r| r > 0.0));
        }
    }
    if let Ok(b) = Baseline::parse(text) {
        let masters = b.masters();
        let slaves = b.slaves();
        for m in &masters {
            for s in &slaves {
                if let Some(t) = b.get_timing_stats(*m, *s) {
                    let _ = t.std();
                }
                let _ = b.get_fc_distribution(*m, *s);
            }
        }
        let _ = (b.pair_count(), b.request_count());
        let file = b.to_file("fuzz");
        serde_json::to_string(&file).expect("a loaded baseline serialises");
        let mut merged = Baseline::default();
        merged.merge(b);
        let _ = merged.to_file("fuzz");
    }
});
