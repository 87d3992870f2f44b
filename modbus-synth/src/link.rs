//! One simulated connection ([`Link`]) and the state all links share
//! ([`World`]): randomness, slave registers and scratch buffers.

use std::net::Ipv4Addr;

use super::attacks;
use super::conversation::Conversation;
use super::plan::{AduKind, Plan, Split};
use super::slaves::{
    put_request, Bank, Dest, Op, MAX_ADDR, MAX_READ_QTY, MAX_VALUE, MAX_WRITE_QTY, UNITS,
};
use super::traffic::{slave_addr, SynthConfig};
use modbus_common::rng::Rng;

pub const NS_PER_US: u64 = 1_000;
pub const NS_PER_MS: u64 = 1_000_000;

/// Rates, in parts per 10 000 (see [`Rng::chance`]).
const WRITE_PER_10K: u64 = 200;
const EXCEPTION_PER_10K: u64 = 50;
const COALESCE_PER_10K: u64 = 2_000;
const SPLIT_PER_10K: u64 = 500;
/// One connection in 16 starts its sequence numbers just below 2^32, so
/// long captures exercise wrap-around in reassembly.
const NEAR_WRAP_ISN_PER_10K: u64 = 625;
const NEAR_WRAP_WINDOW: u64 = 100_000;

/// State shared by all links.
#[derive(Debug)]
pub struct World {
    pub rng: Rng,
    bank: Bank,
    pub poll_interval_ns: u64,
    adus_per_segment: u8,
    split_adus: bool,
    /// The current burst's responses, built alongside its requests.
    resp: Vec<u8>,
    /// End offset in `resp` and kind of each response.
    resp_ends: Vec<(usize, AduKind)>,
    /// End offset in the plan's bytes and kind of each request.
    req_ends: Vec<(usize, AduKind)>,
    /// Registers of the FC 16 being built.
    values: Vec<u16>,
}

impl World {
    pub fn new(cfg: &SynthConfig) -> Self {
        let mut rng = Rng::new(cfg.seed);
        let bank = Bank::new(usize::from(cfg.slaves), &mut rng);
        World {
            rng,
            bank,
            poll_interval_ns: cfg.poll_interval_us.saturating_mul(NS_PER_US),
            adus_per_segment: cfg.adus_per_segment,
            split_adus: cfg.split_adus,
            resp: Vec::new(),
            resp_ends: Vec::new(),
            req_ends: Vec::new(),
            values: Vec::new(),
        }
    }

    /// Appends the request ADU for `op` to `req` and the slave's response
    /// to `self.resp`; returns the response's kind.
    fn exchange(&mut self, req: &mut Vec<u8>, to: Dest, op: Op) -> AduKind {
        self.values.clear();
        if let Op::WriteMultiple { .. } = op {
            let qty = self.rng.range_u16(1, MAX_WRITE_QTY);
            let rng = &mut self.rng;
            self.values
                .extend((0..qty).map(|_| rng.range_u16(0, MAX_VALUE)));
        }
        put_request(req, to, op, &self.values);
        self.bank
            .respond(&mut self.rng, &mut self.resp, to, op, &self.values)
    }

    /// A successful read of random registers with function code `fc`.
    pub fn read_op(&mut self, fc: u8) -> Op {
        let addr = self.rng.range_u16(0, MAX_ADDR);
        let qty = self.rng.range_u16(1, MAX_READ_QTY);
        Op::Read {
            fc,
            addr,
            qty,
            fail: false,
        }
    }

    /// A normal master's next request: a read (rarely failing), or for
    /// writers sometimes a write.
    fn poll_op(&mut self, writer: bool) -> Op {
        if writer && self.rng.chance(WRITE_PER_10K) {
            let addr = self.rng.range_u16(0, MAX_ADDR);
            return if self.rng.chance(5_000) {
                Op::WriteSingle {
                    addr,
                    value: self.rng.range_u16(0, MAX_VALUE),
                }
            } else {
                Op::WriteMultiple { addr }
            };
        }
        let fc = if self.rng.chance(5_000) { 3 } else { 4 };
        match self.read_op(fc) {
            Op::Read { fc, addr, qty, .. } => Op::Read {
                fc,
                addr,
                qty,
                fail: self.rng.chance(EXCEPTION_PER_10K),
            },
            other => other,
        }
    }

    /// Request ADUs in the next poll's first segment.
    fn batch_size(&mut self) -> u64 {
        let max = u64::from(self.adus_per_segment);
        if max > 1 && self.rng.chance(COALESCE_PER_10K) {
            self.rng.range(2, max)
        } else {
            1
        }
    }

    /// Whether (and where) to cut a payload of `len` bytes in two.
    fn maybe_split(&mut self, len: usize) -> Option<Split> {
        if !self.split_adus || len < 2 || !self.rng.chance(SPLIT_PER_10K) {
            return None;
        }
        let at = usize::try_from(self.rng.range(1, len as u64 - 1)).unwrap_or(1);
        Some(Split {
            at,
            delay_ns: self.rng.range(20 * NS_PER_US, 200 * NS_PER_US),
        })
    }

    /// How long a slave takes to answer.
    fn response_delay(&mut self) -> u64 {
        self.rng.range(200 * NS_PER_US, 2 * NS_PER_MS)
    }

    /// A LAN round trip, for handshakes.
    pub fn rtt(&mut self) -> u64 {
        self.rng.range(50 * NS_PER_US, 300 * NS_PER_US)
    }

    fn jittered_interval(&mut self) -> u64 {
        let permille = self.rng.range(750, 1_250);
        let ns = u128::from(self.poll_interval_ns) * u128::from(permille) / 1_000;
        u64::try_from(ns).unwrap_or(u64::MAX)
    }

    /// Initial sequence numbers: uniform, or sometimes just below the wrap.
    fn isn(&mut self) -> u32 {
        if self.rng.chance(NEAR_WRAP_ISN_PER_10K) {
            u32::MAX - u32::try_from(self.rng.below(NEAR_WRAP_WINDOW)).unwrap_or(0)
        } else {
            self.rng.next_u32()
        }
    }
}

/// What a link does once its plan runs dry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Polls forever; `attack_write_at` turns the first poll at or after that
    /// time into the unauthorized write.
    Poller {
        writer: bool,
        attack_write_at: Option<u64>,
    },
    /// Plays its prepared plan once, then falls silent.
    Script,
}

/// One simulated TCP connection.
#[derive(Debug)]
pub struct Link {
    pub master: Ipv4Addr,
    pub conv: Conversation,
    /// Index of the slave (for its registers).
    pub slave: usize,
    pub role: Role,
    pub plan: Plan,
    /// When a poller plans its next poll, once its plan is empty.
    pub next_poll_ns: u64,
    tid: u16,
}

impl Link {
    pub fn new(world: &mut World, master: Ipv4Addr, port: u16, slave: usize, role: Role) -> Self {
        let slave_ip = slave_addr(u16::try_from(slave).unwrap_or(u16::MAX));
        let conv = Conversation::new(master, port, slave_ip).with_isn(world.isn(), world.isn());
        let tid = u16::try_from(world.rng.below(1 << 16)).unwrap_or(0);
        Link {
            master,
            conv,
            slave,
            role,
            plan: Plan::default(),
            next_poll_ns: 0,
            tid,
        }
    }

    /// Masters number their transactions sequentially per connection.
    pub fn next_tid(&mut self) -> u16 {
        self.tid = self.tid.wrapping_add(1);
        self.tid
    }

    /// When this link next has a segment to write, if ever.
    pub fn next_event(&self) -> Option<u64> {
        match (self.plan.peek_ts(), self.role) {
            (Some(ts), _) => Some(ts),
            (None, Role::Poller { .. }) => Some(self.next_poll_ns),
            (None, Role::Script) => None,
        }
    }

    /// Plans one scripted exchange on unit [`attacks::UNIT`]: the request
    /// at `ts` and its response after a normal delay but not before
    /// `not_before`, each in its own segment; returns the response's time.
    pub fn script_exchange(&mut self, world: &mut World, ts: u64, not_before: u64, op: Op) -> u64 {
        world.resp.clear();
        let to = Dest {
            slave: self.slave,
            unit: attacks::UNIT,
            tid: self.next_tid(),
        };
        let start = self.plan.bytes.len();
        let resp_kind = world.exchange(&mut self.plan.bytes, to, op);
        let req_end = self.plan.bytes.len();
        self.plan
            .data(ts, false, start, &[(req_end, AduKind::AttackRequest)], None);
        let resp_ts = (ts + world.response_delay()).max(not_before);
        self.plan.bytes.extend_from_slice(&world.resp);
        let resp_end = self.plan.bytes.len();
        self.plan
            .data(resp_ts, true, req_end, &[(resp_end, resp_kind)], None)
    }

    /// Plans the next poll at `now`: a request segment (possibly pipelining
    /// several ADUs, possibly split), then each response in turn.
    pub fn plan_poll(&mut self, world: &mut World, now: u64) {
        let Role::Poller {
            writer,
            attack_write_at,
        } = self.role
        else {
            return;
        };
        let attack_due = attack_write_at.is_some_and(|at| now >= at);
        if attack_due {
            self.role = Role::Poller {
                writer,
                attack_write_at: None,
            };
        }
        self.plan.reset();
        let sent = self.plan_requests(world, now, writer, attack_due);
        let first_answer = sent + world.response_delay();
        let last = self.plan_responses(world, first_answer);
        self.plan.finish();
        self.next_poll_ns = (now + world.jittered_interval()).max(last + NS_PER_US);
    }

    /// Builds the poll's request ADUs (the first one the unauthorized write
    /// if `attack_due`) into one payload and their responses into
    /// `world.resp`; returns when the last request byte is sent.
    fn plan_requests(
        &mut self,
        world: &mut World,
        now: u64,
        writer: bool,
        attack_due: bool,
    ) -> u64 {
        world.resp.clear();
        world.resp_ends.clear();
        world.req_ends.clear();
        for i in 0..world.batch_size() {
            let (unit, op, kind) = if attack_due && i == 0 {
                (
                    attacks::UNIT,
                    attacks::UNAUTHORIZED_WRITE,
                    AduKind::AttackRequest,
                )
            } else {
                let unit = u8::try_from(world.rng.range(1, u64::from(UNITS))).unwrap_or(1);
                (unit, world.poll_op(writer), AduKind::Request)
            };
            let to = Dest {
                slave: self.slave,
                unit,
                tid: self.next_tid(),
            };
            let resp_kind = world.exchange(&mut self.plan.bytes, to, op);
            world.req_ends.push((self.plan.bytes.len(), kind));
            world.resp_ends.push((world.resp.len(), resp_kind));
        }
        let split = world.maybe_split(self.plan.bytes.len());
        self.plan.data(now, false, 0, &world.req_ends, split)
    }

    /// Sends the poll's responses one per segment, in order, starting at
    /// `ts`; returns when the last one is sent.
    fn plan_responses(&mut self, world: &mut World, mut ts: u64) -> u64 {
        let ends = std::mem::take(&mut world.resp_ends);
        let mut from = 0;
        let mut last = ts;
        for &(end, kind) in &ends {
            let start = self.plan.bytes.len();
            self.plan.bytes.extend_from_slice(&world.resp[from..end]);
            let split = world.maybe_split(end - from);
            let adu_end = self.plan.bytes.len();
            last = self.plan.data(ts, true, start, &[(adu_end, kind)], split);
            ts = last + world.rng.range(50 * NS_PER_US, 300 * NS_PER_US);
            from = end;
        }
        world.resp_ends = ends;
        last
    }
}
