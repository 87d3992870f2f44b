//! The bulk generator: masters polling slaves over long-lived connections.
//!
//! Every connection is a [`Link`]: a `Conversation` (TCP state) plus a
//! `Plan` of segments to write. A min-heap keyed by (next segment time,
//! link index) picks which link writes next, so frames from all connections
//! interleave in timestamp order and ties break the same way on every run.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, BufWriter, Write};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::attacks;
use super::link::{Link, Role, World, NS_PER_MS, NS_PER_US};
use super::pcap_writer::PcapWriter;
use super::plan::Tally;

/// 2026-01-01T00:00:00Z.
const DEFAULT_START_NS: u64 = 1_767_225_600 * 1_000_000_000;
/// Large enough that the writer does one syscall per megabyte.
const OUT_BUFFER_BYTES: usize = 1 << 20;

const FIRST_EPHEMERAL_PORT: u16 = 49_152;
const EPHEMERAL_PORTS: u64 = 16_384;

/// Bulk generator settings. Missing fields in JSON take the defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SynthConfig {
    pub seed: u64,
    /// Exactly this many frames are written (fewer only if no traffic is
    /// left, e.g. with no masters).
    pub frames: u64,
    /// Masters are 10.1.0.1, 10.1.0.2, ...
    pub masters: u16,
    /// Slaves are 10.2.0.1, 10.2.0.2, ..., each answering unit ids 1..=3.
    pub slaves: u16,
    /// TCP connections per polled master-slave pair.
    pub conns_per_pair: u8,
    /// Master i polls slaves (i * slaves_per_master + j) mod slaves, j in
    /// 0..slaves_per_master: an even load, and only some pairs talk.
    pub slaves_per_master: u16,
    /// Mean per-connection interval between polls (jittered +-25 %).
    pub poll_interval_us: u64,
    /// Above 1, one poll in five pipelines 2..=N request ADUs in one segment.
    pub adus_per_segment: u8,
    /// When set, one segment in twenty is split in two.
    pub split_adus: bool,
    /// Inject the scripted attacks against 10.2.0.1 unit 1 (listed in the
    /// `synth` module docs): 1024 attack requests in all.
    pub attacks: bool,
    pub start_ts_ns: u64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            seed: 0x5EED,
            frames: 100_000,
            masters: 50,
            slaves: 20,
            conns_per_pair: 2,
            slaves_per_master: 3,
            poll_interval_us: 100_000,
            adus_per_segment: 1,
            split_adus: false,
            attacks: false,
            start_ts_ns: DEFAULT_START_NS,
        }
    }
}

/// What a generated capture contains, for tests to assert against.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SynthSummary {
    pub frames: u64,
    /// Complete request ADUs written, attack ones included.
    pub requests: u64,
    /// Complete response ADUs written, exceptions included.
    pub responses: u64,
    pub exceptions: u64,
    /// Connections whose SYN was written.
    pub connections: u64,
    /// Every polling master, in address order.
    pub authorized_masters: Vec<Ipv4Addr>,
    /// The masters that issue FC 6 / FC 16 writes (the first half).
    pub authorized_writers: Vec<Ipv4Addr>,
    /// Complete attack request ADUs written (1024 when all fit).
    pub attack_requests: u64,
    /// The non-writer master that sends the unauthorized write, if attacks
    /// are on (an addition to the brief: tests need it to assert the alert).
    pub unauthorized_writer: Option<Ipv4Addr>,
    /// Frames (1-based) holding the last byte of an attack request: the
    /// ground truth of `modbus-synth --labels` and the evaluation.
    #[serde(skip)]
    pub attack_frames: Vec<u64>,
}

impl SynthSummary {
    fn add(&mut self, tally: &Tally) {
        self.connections += tally.connections;
        self.requests += tally.requests;
        self.responses += tally.responses;
        self.exceptions += tally.exceptions;
        self.attack_requests += tally.attack_requests;
    }
}

/// Writes a capture for `cfg` to `out` (buffered internally) and describes it.
/// The same config always yields byte-identical output.
pub fn generate<W: Write>(cfg: &SynthConfig, out: W) -> io::Result<SynthSummary> {
    let mut writer = PcapWriter::new(BufWriter::with_capacity(OUT_BUFFER_BYTES, out))?;
    let mut sim = Sim::new(cfg);
    sim.run(&mut writer, cfg.frames)?;
    sim.summary.frames = writer.frames();
    writer.into_inner()?;
    Ok(sim.summary)
}

/// The `index`-th master (0-based): 10.1.0.1, 10.1.0.2, ...
pub fn master_addr(index: u16) -> Ipv4Addr {
    host_addr(Ipv4Addr::new(10, 1, 0, 0), index)
}

/// The `index`-th slave (0-based): 10.2.0.1, 10.2.0.2, ...
pub fn slave_addr(index: u16) -> Ipv4Addr {
    host_addr(Ipv4Addr::new(10, 2, 0, 0), index)
}

/// The `index`-th host (0-based) after `net`: .1, .2, ... carrying into the
/// third octet past 255, so any u16 count stays inside its /16.
fn host_addr(net: Ipv4Addr, index: u16) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net) + u32::from(index) + 1)
}

/// The whole simulation: links, the event queue and the running summary.
struct Sim {
    world: World,
    links: Vec<Link>,
    queue: BinaryHeap<Reverse<(u64, usize)>>,
    summary: SynthSummary,
}

impl Sim {
    fn new(cfg: &SynthConfig) -> Self {
        let mut world = World::new(cfg);
        let mut links = Vec::new();
        for m in 0..cfg.masters {
            add_master_links(cfg, &mut world, &mut links, m);
        }
        let masters: Vec<Ipv4Addr> = (0..cfg.masters).map(master_addr).collect();
        let mut summary = SynthSummary {
            authorized_writers: masters[..usize::from(writer_count(cfg))].to_vec(),
            authorized_masters: masters,
            ..SynthSummary::default()
        };
        if cfg.attacks {
            summary.unauthorized_writer = attacks::inject(cfg, &mut world, &mut links);
        }
        let queue = links
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.next_event().map(|ts| Reverse((ts, i))))
            .collect();
        Sim {
            world,
            links,
            queue,
            summary,
        }
    }

    /// Writes segments in time order until `frames` are out or no link has
    /// anything left to say.
    fn run<W: Write>(&mut self, w: &mut PcapWriter<W>, frames: u64) -> io::Result<()> {
        while w.frames() < frames {
            let Some(Reverse((now, idx))) = self.queue.pop() else {
                break;
            };
            let link = &mut self.links[idx];
            if link.plan.peek_ts().is_none() {
                link.plan_poll(&mut self.world, now);
            }
            if let Some(seg) = link.plan.pop() {
                link.conv.segment(
                    w,
                    seg.ts,
                    seg.from_server,
                    seg.flags,
                    link.plan.payload(&seg),
                )?;
                self.summary.add(&seg.tally);
                if seg.tally.attack_requests > 0 {
                    self.summary.attack_frames.push(w.frames());
                }
            }
            if let Some(next) = link.next_event() {
                self.queue.push(Reverse((next, idx)));
            }
        }
        Ok(())
    }
}

/// The first half of the masters (rounded down) may write.
fn writer_count(cfg: &SynthConfig) -> u16 {
    cfg.masters / 2
}

/// Creates master `m`'s polling connections, each starting with a handshake
/// at a random point of the first poll interval so polls spread out.
fn add_master_links(cfg: &SynthConfig, world: &mut World, links: &mut Vec<Link>, m: u16) {
    if cfg.slaves == 0 {
        return;
    }
    let writer = m < writer_count(cfg);
    let ip = master_addr(m);
    let mut port_idx = world.rng.below(EPHEMERAL_PORTS);
    let pairs = cfg.slaves_per_master.min(cfg.slaves);
    for j in 0..pairs {
        let slave = (usize::from(m) * usize::from(cfg.slaves_per_master) + usize::from(j))
            % usize::from(cfg.slaves);
        for _ in 0..cfg.conns_per_pair {
            let port =
                FIRST_EPHEMERAL_PORT + u16::try_from(port_idx % EPHEMERAL_PORTS).unwrap_or(0);
            port_idx += 1;
            let mut link = Link::new(
                world,
                ip,
                port,
                slave,
                Role::Poller {
                    writer,
                    attack_write_at: None,
                },
            );
            let t0 = cfg.start_ts_ns + world.rng.below(world.poll_interval_ns);
            let rtt = world.rtt();
            let established = link.plan.handshake(t0, rtt);
            link.next_poll_ns = established + world.rng.range(100 * NS_PER_US, 2 * NS_PER_MS);
            links.push(link);
        }
    }
}
