//! The attacks injected when [`SynthConfig::attacks`] is set (the public
//! description is in the `synth` module docs; keep the two in step).
//!
//! They are timed at 10 % (write), 20 % (rogue session) and 30 %
//! (malformed) of the capture's estimated length, so they happen amid
//! established traffic and, at the default rates, all fit in any capture of
//! 20 000 frames or more.

use std::net::Ipv4Addr;

use super::link::{Link, Role, World, NS_PER_MS, NS_PER_US};
use super::pdu::{put_adu, put_read_request};
use super::plan::AduKind;
use super::slaves::Op;
use super::traffic::{master_addr, SynthConfig};

pub const ROGUE_MASTER: Ipv4Addr = Ipv4Addr::new(10, 9, 9, 9);
pub const UNIT: u8 = 1;
pub const UNAUTHORIZED_WRITE: Op = Op::WriteSingle {
    addr: 42,
    value: 999,
};

/// Index of 10.2.0.1.
const TARGET_SLAVE: usize = 0;
const ROGUE_PORT: u16 = 51_000;
const MALFORMED_PORT: u16 = 51_001;
/// Below the ephemeral range the pollers use, so it cannot collide.
const FALLBACK_WRITER_PORT: u16 = 49_151;
const ROGUE_READS: u64 = 20;
const FLOOD_REQUESTS: u64 = 1_000;
const FLOOD_SPACING_NS: u64 = 100 * NS_PER_US;
const STEP_NS: u64 = 10 * NS_PER_MS;
/// A slave answers pipelined requests in order, at least this far apart.
const RESPONSE_SPACING_NS: u64 = 20 * NS_PER_US;
const MALFORMED_PROTOCOL: u16 = 7;
const READ_HOLDING: u8 = 3;

/// Frames the attacks add: per scripted connection a 3-frame handshake and
/// a 3-frame close, plus one frame per ADU.
const HANDSHAKE_AND_CLOSE: u64 = 6;
const ATTACK_FRAMES: u64 =
    HANDSHAKE_AND_CLOSE + 2 * (ROGUE_READS + 2 + FLOOD_REQUESTS) + HANDSHAKE_AND_CLOSE + 1 + 2;

/// Adds the attack links (and arms the unauthorized write on an existing
/// one); returns the master that sends the unauthorized write.
pub fn inject(cfg: &SynthConfig, world: &mut World, links: &mut Vec<Link>) -> Option<Ipv4Addr> {
    if cfg.slaves == 0 {
        return None;
    }
    let schedule = Schedule::estimate(cfg, links.len());
    let writer = plant_unauthorized_write(cfg, world, links, schedule.write);
    let rogue = rogue_session(world, schedule.rogue);
    links.push(rogue);
    let malformed = malformed_session(world, schedule.malformed);
    links.push(malformed);
    writer
}

/// When each attack starts.
struct Schedule {
    write: u64,
    rogue: u64,
    malformed: u64,
}

impl Schedule {
    /// Estimates the capture's length from the frame budget (about two
    /// frames per poll plus the handshakes) and spreads the attacks over its
    /// first third, so they happen amid established traffic, not at the start.
    fn estimate(cfg: &SynthConfig, pollers: usize) -> Self {
        let pollers = u64::try_from(pollers.max(1)).unwrap_or(u64::MAX);
        let overhead = ATTACK_FRAMES.saturating_add(pollers.saturating_mul(3));
        let normal_frames = u128::from(cfg.frames.saturating_sub(overhead));
        let interval_ns = u128::from(cfg.poll_interval_us) * u128::from(NS_PER_US);
        let span = normal_frames * interval_ns / (2 * u128::from(pollers));
        let at = |tenths: u128| {
            let offset = u64::try_from(span * tenths / 10).unwrap_or(u64::MAX);
            cfg.start_ts_ns.saturating_add(offset)
        };
        Schedule {
            write: at(1),
            rogue: at(2),
            malformed: at(3),
        }
    }
}

fn plant_unauthorized_write(
    cfg: &SynthConfig,
    world: &mut World,
    links: &mut Vec<Link>,
    at: u64,
) -> Option<Ipv4Addr> {
    let target = links
        .iter_mut()
        .find(|l| l.slave == TARGET_SLAVE && matches!(l.role, Role::Poller { writer: false, .. }));
    if let Some(link) = target {
        link.role = Role::Poller {
            writer: false,
            attack_write_at: Some(at),
        };
        return Some(link.master);
    }
    // Nobody suitable polls the target: the last master (never a writer,
    // since writers are the first half rounded down) connects just for it.
    let last = cfg.masters.checked_sub(1)?;
    let master = master_addr(last);
    let mut link = Link::new(
        world,
        master,
        FALLBACK_WRITER_PORT,
        TARGET_SLAVE,
        Role::Script,
    );
    let rtt = world.rtt();
    let t = link.plan.handshake(at, rtt) + STEP_NS;
    let answered = link.script_exchange(world, t, 0, UNAUTHORIZED_WRITE);
    link.plan.close(answered + STEP_NS, rtt / 2);
    links.push(link);
    Some(master)
}

fn rogue_session(world: &mut World, start: u64) -> Link {
    let mut link = Link::new(world, ROGUE_MASTER, ROGUE_PORT, TARGET_SLAVE, Role::Script);
    let rtt = world.rtt();
    let mut t = link.plan.handshake(start, rtt) + STEP_NS;
    for _ in 0..ROGUE_READS {
        let op = world.read_op(READ_HOLDING);
        t = link.script_exchange(world, t, 0, op) + STEP_NS;
    }
    for op in [Op::DeviceId, Op::Restart] {
        t = link.script_exchange(world, t, 0, op) + STEP_NS;
    }
    let mut answered = 0;
    for i in 0..FLOOD_REQUESTS {
        let op = world.read_op(READ_HOLDING);
        answered = link.script_exchange(
            world,
            t + i * FLOOD_SPACING_NS,
            answered + RESPONSE_SPACING_NS,
            op,
        );
    }
    link.plan.close(answered + STEP_NS, rtt / 2);
    // The flood's requests and responses overlap in time.
    link.plan.finish();
    link
}

fn malformed_session(world: &mut World, start: u64) -> Link {
    let mut link = Link::new(
        world,
        ROGUE_MASTER,
        MALFORMED_PORT,
        TARGET_SLAVE,
        Role::Script,
    );
    let rtt = world.rtt();
    let t = link.plan.handshake(start, rtt) + STEP_NS;
    let tid = link.next_tid();
    let start_byte = link.plan.bytes.len();
    put_adu(&mut link.plan.bytes, tid, MALFORMED_PROTOCOL, UNIT, |b| {
        put_read_request(b, READ_HOLDING, 0, 1)
    });
    let end = link.plan.bytes.len();
    link.plan
        .data(t, false, start_byte, &[(end, AduKind::AttackRequest)], None);
    link.plan.close(t + STEP_NS, rtt / 2);
    link
}
