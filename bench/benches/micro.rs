//! Criterion micro-benchmarks: the decoder, MBAP/PDU parsing, reassembly,
//! dispatch, the flow table, every rule family through a shard with
//! hand-built traffic, and, for each hot-path optimisation, the old way
//! next to the new one (`.../before` and `.../after`).
//!
//! `cargo bench -p modbus-bench --bench micro [-- --quick]`; results in
//! `target/criterion/`, gathered by `modbus-bench report`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use modbus_bench::frames::{decode_all, feed, record, Decoded, Frame};
use modbus_bench::scenario::{self, LIMITS_JSON};
use modbus_detect::config::baseline::Baseline;
use modbus_detect::config::limits::RegisterLimits;
use modbus_detect::config::{DetectConfig, Limits};
use modbus_detect::counters::Counters;
use modbus_detect::decode::{decode, LinkType};
use modbus_detect::detect::{AlertSink, Detectors, Endpoints, RequestCtx};
use modbus_detect::flow::is_modbus_port;
use modbus_detect::flow::reassembly::{AduSink, AduVerdict, Stream};
use modbus_detect::flow::{Flow, FlowKey, FlowTable};
use modbus_detect::modbus::mbap::Mbap;
use modbus_detect::modbus::pdu::{parse_request, parse_response, Request, Table};
use modbus_detect::modbus::transaction::{PendingRequest, PendingTable};
use modbus_detect::runtime::dispatch::{classify, shard_of, BatchItem, BATCH_FRAMES};
use modbus_detect::shard::Shard;
use modbus_synth::{
    adu, diagnostics, exception, read_device_id_request, read_registers_response, read_request,
    write_multiple_registers_request, write_multiple_registers_response, Conversation,
};
use rustc_hash::FxHashMap;

const MS: u64 = 1_000_000;
const T0: u64 = 1_767_225_600 * 1_000_000_000;

fn master() -> Ipv4Addr {
    Ipv4Addr::new(10, 1, 0, 1)
}

fn non_writer() -> Ipv4Addr {
    Ipv4Addr::new(10, 1, 0, 40)
}

fn slave() -> Ipv4Addr {
    Ipv4Addr::new(10, 2, 0, 1)
}

fn rogue() -> Ipv4Addr {
    Ipv4Addr::new(10, 9, 9, 9)
}

/// A baseline that knows master 1 -> slave 1: FC 3 every ~100 ms.
fn baseline() -> Baseline {
    let mut b = Baseline::default();
    let (m, s) = (IpAddr::V4(master()), IpAddr::V4(slave()));
    let mut t = T0;
    for i in 0..200u64 {
        b.record(m, s, 1, 3, t);
        t += 100 * MS + (i % 5) * MS;
    }
    b
}

/// Every rule on, the bench baseline loaded.
fn config() -> Arc<DetectConfig> {
    Arc::new(scenario::all_rules(Some(baseline())))
}

/// `n` exchanges on one connection: `exchange(i)` gives the request PDU,
/// the response PDU (if any) and the gap before the next request.
fn conversation(
    cfg: &DetectConfig,
    from: Ipv4Addr,
    n: u16,
    exchange: impl Fn(u16) -> (Vec<u8>, Option<Vec<u8>>, u64),
) -> Vec<Decoded> {
    let frames: Vec<Frame> = record(|w| {
        let mut c = Conversation::new(from, 40_000, slave());
        c.handshake(w, T0)?;
        let mut t = T0 + MS;
        for i in 0..n {
            let (req, resp, gap) = exchange(i);
            c.send(w, t, true, &adu(i, 1, &req))?;
            if let Some(r) = resp {
                c.send(w, t + MS / 2, false, &adu(i, 1, &r))?;
            }
            t += gap;
        }
        Ok(())
    })
    .expect("in-memory capture");
    decode_all(&frames, cfg)
}

fn values(n: u16, base: u16) -> Vec<u16> {
    (0..n).map(|i| base + i).collect()
}

/// Normal polling: FC 3 reads of 10 registers, answered, 100 ms apart.
fn normal(cfg: &DetectConfig) -> Vec<Decoded> {
    conversation(cfg, master(), 500, |i| {
        (
            read_request(3, 100, 10),
            Some(read_registers_response(3, &values(10, i % 50))),
            100 * MS,
        )
    })
}

/// Through a fresh shard per iteration (setup not timed), per frame.
fn through_shard(c: &mut Criterion, name: &str, cfg: &Arc<DetectConfig>, frames: &[Decoded]) {
    let mut g = c.benchmark_group("rules");
    g.throughput(Throughput::Elements(frames.len() as u64));
    g.bench_function(name, |b| {
        b.iter_batched(
            || Shard::new(cfg.clone(), 1),
            |mut shard| {
                let mut n = 0;
                feed(&mut shard, frames, &mut n, 0);
                shard.drain_eve().for_each(drop);
                shard
            },
            BatchSize::SmallInput,
        );
    });
    g.finish();
}

fn rules(c: &mut Criterion) {
    let cfg = config();
    through_shard(c, "normal_polling_all_rules", &cfg, &normal(&cfg));
    // Access: a rogue master reading, an authorized non-writer writing.
    let mut rogue_frames = conversation(&cfg, rogue(), 250, |_| {
        (
            read_request(3, 100, 2),
            Some(read_registers_response(3, &[1, 2])),
            100 * MS,
        )
    });
    rogue_frames.extend(conversation(&cfg, non_writer(), 250, |i| {
        (
            write_multiple_registers_request(200, &[i]),
            Some(write_multiple_registers_response(200, 1)),
            100 * MS,
        )
    }));
    through_shard(
        c,
        "access_rogue_and_unauthorized_write",
        &cfg,
        &rogue_frames,
    );
    let enumeration = conversation(&cfg, master(), 500, |i| {
        let req = if i % 2 == 0 {
            read_device_id_request(1, 0)
        } else {
            diagnostics(0, &[0x12, 0x34])
        };
        (req, None, 100 * MS)
    });
    through_shard(c, "enumeration", &cfg, &enumeration);
    // Limited registers 40001 and 40010 written out of range and fast,
    // read back.
    let registers = conversation(&cfg, master(), 500, |i| {
        if i % 2 == 0 {
            (
                write_multiple_registers_request(0, &values(10, 950 - (i % 7) * 100)),
                Some(write_multiple_registers_response(0, 10)),
                50 * MS,
            )
        } else {
            (
                read_request(3, 0, 20),
                Some(read_registers_response(3, &values(20, i))),
                50 * MS,
            )
        }
    });
    through_shard(c, "registers_range_and_rate", &cfg, &registers);
    // Baseline: FC 4 is new for the pair; every tenth interval is 3 s.
    let baseline_rules = conversation(&cfg, master(), 500, |i| {
        let gap = if i % 10 == 9 { 3_000 * MS } else { 100 * MS };
        (
            read_request(4, 0, 5),
            Some(read_registers_response(4, &values(5, 0))),
            gap,
        )
    });
    through_shard(c, "baseline_new_fc_and_timing", &cfg, &baseline_rules);
    let exceptions = conversation(&cfg, master(), 500, |_| {
        (read_request(3, 100, 2), Some(exception(3, 2)), 100 * MS)
    });
    through_shard(c, "exception_burst", &cfg, &exceptions);
    let flood = conversation(&cfg, master(), 500, |_| {
        (
            read_request(3, 100, 2),
            Some(read_registers_response(3, &[1, 2])),
            MS,
        )
    });
    through_shard(c, "flood", &cfg, &flood);
    let malformed = conversation(&cfg, master(), 500, |i| {
        // A PDU that does not fit the function code's format.
        let req = if i % 2 == 0 {
            vec![3, 0]
        } else {
            read_request(3, 100, 2)
        };
        (req, None, 100 * MS)
    });
    through_shard(c, "malformed_pdu", &cfg, &malformed);
}

fn frame_of(cfg: &DetectConfig) -> Decoded {
    normal(cfg).into_iter().nth(3).expect("a request frame")
}

fn decoder(c: &mut Criterion) {
    let cfg = config();
    let f = frame_of(&cfg);
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("ethernet_ipv4_tcp", |b| {
        b.iter(|| decode(LinkType::Ethernet, black_box(&f.bytes)))
    });
    g.finish();

    let req = adu(7, 1, &read_request(3, 100, 10));
    let resp = adu(7, 1, &read_registers_response(3, &values(20, 0)));
    let write = adu(7, 1, &write_multiple_registers_request(0, &values(20, 0)));
    let mut g = c.benchmark_group("mbap_pdu");
    g.throughput(Throughput::Elements(1));
    g.bench_function("mbap_parse_check", |b| {
        b.iter(|| Mbap::parse(black_box(&req)).map(|m| m.check()))
    });
    g.bench_function("parse_read_request", |b| {
        b.iter(|| parse_request(black_box(&req[7..])).is_ok())
    });
    g.bench_function("parse_read_response_20", |b| {
        b.iter(|| parse_response(black_box(&resp[7..])).is_ok())
    });
    g.bench_function("parse_write_multiple_20", |b| {
        b.iter(|| parse_request(black_box(&write[7..])).is_ok())
    });
    g.finish();
}

/// Counts ADUs, nothing else.
#[derive(Default)]
struct CountSink {
    adus: u64,
    c: Counters,
}

impl AduSink for CountSink {
    fn salvage(&mut self, _bytes: &[u8], _ts: u64) {}

    fn counters(&mut self) -> &mut Counters {
        &mut self.c
    }
    fn adu(&mut self, adu: &[u8], _ts_ns: u64) -> AduVerdict {
        self.adus += adu.len() as u64;
        AduVerdict::Continue
    }
    fn malformed(&mut self, _reason: &'static str, _ts_ns: u64) {}
    fn conflicting_copies(
        &mut self,
        _policy: modbus_detect::flow::policy::TargetPolicy,
        _ts_ns: u64,
    ) {
    }

    fn not_modbus(&mut self, _ts_ns: u64) {}
}

fn reassembly(c: &mut Criterion) {
    let one = adu(1, 1, &read_request(3, 100, 10));
    let stream: Vec<u8> = (0..1000).flat_map(|_| one.clone()).collect();
    let limits = Limits::default();
    let mut g = c.benchmark_group("reassembly");
    let run = |segments: &[(u32, &[u8])]| {
        let mut s = Stream::default();
        let mut sink = CountSink::default();
        s.on_syn(0, &mut sink.c);
        for (seq, data) in segments {
            s.on_segment(*seq, data, 0, &limits, &mut sink);
        }
        sink.adus
    };
    let cuts = |size: usize| -> Vec<(u32, &[u8])> {
        stream
            .chunks(size)
            .enumerate()
            .map(|(i, c)| (1 + (i * size) as u32, c))
            .collect()
    };
    for (name, size) in [
        ("one_adu_per_segment", one.len()),
        ("four_adus_per_segment", 4 * one.len()),
        ("adus_split_over_segments", 7),
    ] {
        let segs = cuts(size);
        g.throughput(Throughput::Elements(segs.len() as u64));
        g.bench_function(name, |b| b.iter(|| run(black_box(&segs))));
    }
    // Pairs of segments swapped: every other one waits for its predecessor.
    let mut swapped = cuts(one.len());
    for pair in swapped.chunks_mut(2) {
        pair.reverse();
    }
    g.throughput(Throughput::Elements(swapped.len() as u64));
    g.bench_function("out_of_order_pairs", |b| {
        b.iter(|| run(black_box(&swapped)))
    });
    g.finish();
}

fn dispatch(c: &mut Criterion) {
    let cfg = config();
    let f = frame_of(&cfg);
    let mut g = c.benchmark_group("dispatch");
    g.throughput(Throughput::Elements(1));
    g.bench_function("classify_1_shard", |b| {
        b.iter(|| classify(LinkType::Ethernet, black_box(&f.bytes), &cfg.ports, 1).is_ok())
    });
    g.bench_function("classify_4_shards", |b| {
        b.iter(|| classify(LinkType::Ethernet, black_box(&f.bytes), &cfg.ports, 4).is_ok())
    });
    let addr = IpAddr::V4(slave());
    g.bench_function("shard_of_4", |b| b.iter(|| shard_of(black_box(addr), 4)));
    // The port test, twice per frame: `slice::contains` before,
    // the one-port fast path after.
    let ports = vec![502u16];
    g.bench_function("port_check/before", |b| {
        b.iter(|| {
            let p = black_box(&ports);
            [40000u16, 502].iter().filter(|x| p.contains(x)).count()
        })
    });
    g.bench_function("port_check/after", |b| {
        b.iter(|| {
            let p = black_box(&ports);
            [40000u16, 502]
                .iter()
                .filter(|x| is_modbus_port(p, **x))
                .count()
        })
    });
    g.finish();
}

fn key(i: u32) -> FlowKey {
    FlowKey {
        client: IpAddr::V4(Ipv4Addr::from(0x0a01_0000 + i / 1000)),
        server: IpAddr::V4(slave()),
        client_port: 1024 + (i % 1000) as u16,
        server_port: 502,
    }
}

fn flow_table(c: &mut Criterion) {
    // What the shard does per frame: find the connection, then use its
    // state. Before: a `HashMap<FlowKey, u32>` into the slab; after: the
    // flat index (keys compared in the slab, which is read next anyway).
    let mut g = c.benchmark_group("flow_table");
    for n in [300u32, 100_000] {
        let mut table = FlowTable::new(1 << 20, u64::MAX);
        let mut map: FxHashMap<FlowKey, u32> = FxHashMap::default();
        let mut slab: Vec<Flow> = Vec::new();
        for i in 0..n {
            table.insert(Flow::new(key(i), u64::from(i)));
            map.insert(key(i), slab.len() as u32);
            slab.push(Flow::new(key(i), u64::from(i)));
        }
        let probes: Vec<FlowKey> = (0..1000).map(|i| key((i * 7919) % n)).collect();
        g.throughput(Throughput::Elements(probes.len() as u64));
        g.bench_function(format!("lookup_{n}/before_hashmap"), |b| {
            b.iter(|| {
                probes
                    .iter()
                    .filter_map(|k| map.get(k))
                    .map(|&i| slab[i as usize].last_ns)
                    .sum::<u64>()
            })
        });
        g.bench_function(format!("lookup_{n}/after_flat_index"), |b| {
            b.iter(|| {
                let mut sum = 0;
                for k in &probes {
                    if let Some(i) = table.find(k) {
                        sum += table.get_mut(i).map_or(0, |f| f.last_ns);
                    }
                }
                sum
            })
        });
    }
    g.finish();
}

/// The old pending table: one `Vec`, `remove(0)` for the oldest.
#[derive(Default)]
struct VecPending(Vec<PendingRequest>);

impl VecPending {
    fn insert(&mut self, req: PendingRequest, max: usize, timeout: u64) {
        self.0
            .retain(|p| req.ts_ns.saturating_sub(p.ts_ns) <= timeout);
        if self.0.len() >= max {
            self.0.remove(0);
        }
        self.0.push(req);
    }
    fn take(&mut self, tid: u16, unit: u8, fc: u8) -> Option<PendingRequest> {
        let pos = self
            .0
            .iter()
            .position(|p| p.tid == tid && p.unit == unit && p.fc == fc)?;
        Some(self.0.remove(pos))
    }
}

struct NullSink;

impl AlertSink for NullSink {
    fn raise(&mut self, alert: modbus_detect::alert::Alert, count: u64) {
        black_box((alert, count));
    }
}

fn optimisations(c: &mut Criterion) {
    // Register rules: a 20-register read touching two limited registers.
    let limits = RegisterLimits::parse(LIMITS_JSON).expect("valid");
    let mut g = c.benchmark_group("limits_within");
    g.throughput(Throughput::Elements(1));
    g.bench_function("read_20/before_lookup_each", |b| {
        b.iter(|| {
            (0..20u16)
                .filter(|a| limits.lookup(Table::Holding, black_box(*a)).is_some())
                .count()
        })
    });
    g.bench_function("read_20/after_within", |b| {
        b.iter(|| limits.within(Table::Holding, black_box(0), 20).count())
    });
    g.finish();

    // Pending requests: one in flight (the usual master), and 8 pipelined.
    let req = Request::ReadHoldingRegisters { addr: 0, qty: 10 };
    let mut g = c.benchmark_group("pending");
    g.throughput(Throughput::Elements(1000));
    for depth in [1u16, 8] {
        g.bench_function(format!("depth_{depth}/before_vec"), |b| {
            b.iter(|| {
                let mut t = VecPending::default();
                for i in 0..1000u16 {
                    t.insert(PendingRequest::new(u64::from(i), i, 1, &req), 64, u64::MAX);
                    if i + 1 >= depth {
                        black_box(t.take(i + 1 - depth, 1, 3));
                    }
                }
            })
        });
        g.bench_function(format!("depth_{depth}/after_inline_head"), |b| {
            b.iter(|| {
                let mut t = PendingTable::default();
                let mut c = Counters::default();
                for i in 0..1000u16 {
                    t.insert(
                        PendingRequest::new(u64::from(i), i, 1, &req),
                        64,
                        u64::MAX,
                        &mut c,
                    );
                    if i + 1 >= depth {
                        black_box(t.take(i + 1 - depth, 1, 3));
                    }
                }
            })
        });
    }
    g.finish();

    // Per-connection pair facts: the rules of one request, looking up the
    // access lists and the baseline (before) or handed the facts (after).
    let cfg = config();
    let mut detectors = Detectors::new(&cfg);
    let ep = Endpoints {
        master: IpAddr::V4(master()),
        master_port: 40000,
        slave: IpAddr::V4(slave()),
        slave_port: 502,
    };
    let facts = detectors.pair_facts(&ep);
    let mut g = c.benchmark_group("rules_pair_facts");
    g.throughput(Throughput::Elements(1));
    let mut ts = T0;
    for (name, f) in [
        ("before_lookups", Default::default()),
        ("after_cached", facts),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                ts += 100 * MS;
                let ctx = RequestCtx {
                    ts_ns: ts,
                    ep,
                    unit: 1,
                    tid: 1,
                    req: &req,
                    outstanding: 1,
                    facts: f,
                    pair: None,
                };
                detectors.on_request(black_box(&ctx), &mut NullSink);
            })
        });
    }
    g.finish();

    // The inventory: per request, hash the pair and the slave (before) or
    // count under the pair's remembered id (after).
    let mut g = c.benchmark_group("inventory");
    g.throughput(Throughput::Elements(1));
    let (m, s) = (IpAddr::V4(master()), IpAddr::V4(slave()));
    let mut b1 = Baseline::default();
    for i in 0..150u32 {
        b1.record(IpAddr::V4(Ipv4Addr::from(0x0a01_0000 + i)), s, 1, 3, T0);
    }
    let mut b2 = b1.clone();
    let id = b2.add_pair(m, s);
    g.bench_function("before_record", |b| {
        b.iter(|| b1.record(black_box(m), s, 1, 3, T0))
    });
    g.bench_function("after_count_pair", |b| {
        b.iter(|| b2.count_pair(black_box(id), 1, 3, T0, false))
    });
    g.finish();

    // Batch buffers: a fresh 256-item buffer per batch, or a recycled one.
    let cfgd = config();
    let item = BatchItem {
        frame_no: 1,
        ts_ns: T0,
        off: 0,
        len: 60,
        meta: frame_of(&cfgd).meta,
        side: frame_of(&cfgd).side,
    };
    let mut g = c.benchmark_group("engine_batch_buffers");
    g.throughput(Throughput::Elements(BATCH_FRAMES as u64));
    g.bench_function("before_fresh_vec", |b| {
        b.iter(|| {
            let mut v: Vec<BatchItem> = Vec::with_capacity(BATCH_FRAMES);
            v.extend(std::iter::repeat_n(item, BATCH_FRAMES));
            black_box(v)
        })
    });
    let mut spare: Vec<BatchItem> = Vec::with_capacity(BATCH_FRAMES);
    g.bench_function("after_recycled", |b| {
        b.iter(|| {
            spare.clear();
            spare.extend(std::iter::repeat_n(item, BATCH_FRAMES));
            black_box(spare.len())
        })
    });
    g.finish();
}

/// The ML models: what one window costs to judge (both models, against a
/// forest of 100 trees and an SVM trained on 1,000 windows), and what a
/// request costs the window it lands in.
fn ml(c: &mut Criterion) {
    use modbus_detect::detect::ml::window::Window;
    use modbus_detect::ml::features::Features;
    use modbus_detect::ml::models::Models;
    // Windows of steady polling, a little jitter in every feature.
    let windows: Vec<Features> = (0..1000u32)
        .map(|i| {
            let j = |k: u32| 1.0 + f64::from((i * 7919 + k * 104_729) % 101) / 1000.0;
            [
                50f64.ln_1p() * j(1),
                100f64.ln_1p() * j(2),
                0.05 * j(3),
                0.02 * j(4),
                0.01 * j(5),
                2.0 * j(6),
                2f64.ln_1p() * j(7),
                0.001 * j(8),
                16f64.ln_1p() * j(9),
                1f64.ln_1p() * j(10),
            ]
        })
        .collect();
    let models = Models::train(&windows, 5.0).expect("enough windows");
    let mut g = c.benchmark_group("ml");
    g.throughput(Throughput::Elements(1));
    g.bench_function("judge_window", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % windows.len();
            models.judge(black_box(&windows[i]))
        })
    });
    // What detection pays per window: the verdict, which stops each model
    // as soon as a normal window is certainly inside.
    g.bench_function("verdict_of_normal_window", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % windows.len();
            models.anomaly(black_box(&windows[i]))
        })
    });
    let req = Request::ReadHoldingRegisters { addr: 0, qty: 16 };
    g.bench_function("request_into_window", |b| {
        let mut w = Window::default();
        let mut ts = 0u64;
        b.iter(|| {
            ts += 100_000_000;
            w.on_request(5_000_000_000, black_box(ts), 1, black_box(&req))
        })
    });
    g.finish();
}

fn config_criterion() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
        .without_plots()
}

criterion_group! {
    name = benches;
    config = config_criterion();
    targets = decoder, reassembly, dispatch, flow_table, rules, ml, optimisations
}
criterion_main!(benches);
