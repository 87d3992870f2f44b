//! What a shard does with decoded ADUs: detection (the rules, and the ML
//! judge with `--ml`) or, in baseline mode, learning ([`learn`]). The
//! choice is made once, when the shard is built ([`Analysis`]).
//!
//! A rule is a small struct with `on_request` / `on_response` over borrowed,
//! already-decoded data: it never parses bytes, never allocates per packet,
//! and keeps its state in bounded maps. All state a rule needs is keyed by
//! the slave, so it lives in the slave's shard.

pub mod access;
pub mod baseline_rules;
pub mod enumeration;
pub mod exceptions;
pub mod flood;
pub mod learn;
pub mod ml;
pub mod program;
pub mod protocol;
pub mod registers;
pub mod scans;

use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;

use crate::alert::{Alert, AlertKind, Answer, Detail, Severity, Tx, WriteCtx, WRITE_VALUES};
use crate::config::baseline::PairId;
use crate::config::{DetectConfig, Mode};
use crate::keyed::KeyedMap;
use crate::modbus::pdu::{Request, Response, Table};
use crate::modbus::transaction::PendingRequest;

/// Who talks to whom on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoints {
    pub master: IpAddr,
    pub master_port: u16,
    pub slave: IpAddr,
    pub slave_port: u16,
}

impl Endpoints {
    /// An alert about something the master sent (src = master).
    pub fn from_master(&self, kind: AlertKind, severity: Severity, ts_ns: u64) -> Alert {
        Alert {
            kind,
            severity,
            ts_ns,
            src: self.master,
            src_port: self.master_port,
            dst: self.slave,
            dst_port: self.slave_port,
            unit: 0,
            function_code: 0,
            register: None,
            value: None,
            detail: Detail::None,
            tx: None,
            stamp: None,
            write: None,
        }
    }

    /// An alert about something the slave sent (src = slave).
    pub fn from_slave(&self, kind: AlertKind, severity: Severity, ts_ns: u64) -> Alert {
        Alert {
            src: self.slave,
            src_port: self.slave_port,
            dst: self.master,
            dst_port: self.master_port,
            ..self.from_master(kind, severity, ts_ns)
        }
    }
}

/// What the rules work out about a connection's master-slave pair from
/// read-only data (the configuration, the loaded baseline): the same for
/// every request of the connection, so the shard asks once per connection
/// ([`Detectors::pair_facts`]) and hands the answer with each request. It
/// saved four hash lookups per request (criterion `rules/pair_facts`). A
/// fact left `None` is worked out on the spot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PairFacts {
    pub access: Option<access::AccessFacts>,
    /// The pair's place in the loaded baseline (`Some(None)`: not in it).
    pub baseline: Option<Option<PairId>>,
}

/// A decoded request, as rules see it.
#[derive(Debug, Clone, Copy)]
pub struct RequestCtx<'a> {
    pub ts_ns: u64,
    pub ep: Endpoints,
    pub unit: u8,
    pub tid: u16,
    pub req: &'a Request<'a>,
    /// Requests outstanding on this connection, this one included.
    pub outstanding: usize,
    /// What is known of the pair (all `None`: rules look it up themselves).
    pub facts: PairFacts,
    /// The pair in the shard's inventory (`None`: left out, it was full).
    pub pair: Option<PairId>,
}

impl RequestCtx<'_> {
    pub fn alert(&self, kind: AlertKind, severity: Severity) -> Alert {
        Alert {
            unit: self.unit,
            function_code: self.req.function_code(),
            tx: Some(request_tx(self.tid, self.req)),
            write: write_ctx(self.req),
            ..self.ep.from_master(kind, severity, self.ts_ns)
        }
    }
}

/// A write request as its alerts' [`WriteCtx`] (its answer to come).
fn write_ctx(req: &Request<'_>) -> Option<WriteCtx> {
    if !req.is_write() {
        return None;
    }
    let mut w = WriteCtx {
        table: Table::Holding,
        start: 0,
        count: 1,
        values: [0; WRITE_VALUES],
        shown: 0,
        answer: Answer::Pending,
        response_frame: 0,
    };
    if let Request::MaskWriteRegister { addr, .. } = *req {
        // The result depends on the register's value: no value to show.
        w.start = addr;
        return Some(w);
    }
    let values = req.written_values();
    (w.table, w.start, w.count) = values.span();
    for (slot, (_, _, v)) in w.values.iter_mut().zip(values) {
        *slot = v;
        w.shown += 1;
    }
    Some(w)
}

/// A request as its alerts' [`Tx`].
fn request_tx(tid: u16, req: &Request<'_>) -> Tx {
    let write = match *req {
        Request::WriteSingleCoil { addr, value } | Request::WriteSingleRegister { addr, value } => {
            Some((addr, Some(value)))
        }
        Request::WriteMultipleCoils { addr, .. }
        | Request::WriteMultipleRegisters { addr, .. }
        | Request::MaskWriteRegister { addr, .. } => Some((addr, None)),
        Request::ReadWriteMultipleRegisters { write_addr, .. } => Some((write_addr, None)),
        _ => None,
    };
    Tx {
        tid,
        request: true,
        fc: req.function_code(),
        read: req.read_range(),
        write,
        exception: None,
    }
}

/// A decoded response, with its request when it was seen.
#[derive(Debug, Clone, Copy)]
pub struct ResponseCtx<'a> {
    pub ts_ns: u64,
    pub ep: Endpoints,
    pub unit: u8,
    pub tid: u16,
    pub resp: &'a Response<'a>,
    pub request: Option<&'a PendingRequest>,
    /// The pair in the shard's inventory (`None`: left out, it was full).
    pub pair: Option<PairId>,
}

impl ResponseCtx<'_> {
    pub fn alert(&self, kind: AlertKind, severity: Severity) -> Alert {
        Alert {
            unit: self.unit,
            function_code: self.resp.function_code(),
            tx: Some(response_tx(
                self.tid,
                self.resp,
                self.request.and_then(|r| r.read),
            )),
            ..self.ep.from_slave(kind, severity, self.ts_ns)
        }
    }
}

/// A response as its alerts' [`Tx`], with what its request read.
pub fn response_tx(tid: u16, resp: &Response<'_>, read: Option<(u16, u16)>) -> Tx {
    Tx {
        tid,
        request: false,
        fc: resp.wire_code(),
        read,
        write: None,
        exception: resp.exception_code(),
    }
}

/// Where rules put their alerts; `count` folds several events into one raise.
pub trait AlertSink {
    fn raise(&mut self, alert: Alert, count: u64);
}

/// A hash map with a hard size bound: when full, an arbitrary entry makes
/// room and the eviction is counted. Rule state keyed by attacker-chosen
/// addresses must never grow without bound.
#[derive(Debug)]
pub struct BoundedMap<K, V> {
    map: KeyedMap<K, V>,
    capacity: usize,
    pub evicted: u64,
}

impl<K: Hash + Eq + Copy, V> BoundedMap<K, V> {
    pub fn new(capacity: usize) -> Self {
        BoundedMap {
            map: KeyedMap::default(),
            capacity: capacity.max(1),
            evicted: 0,
        }
    }

    pub fn get(&self, k: &K) -> Option<&V> {
        self.map.get(k)
    }

    pub fn get_or_insert_with(&mut self, k: K, make: impl FnOnce() -> V) -> &mut V {
        // Below capacity (always, but under attack) one lookup, not two.
        if self.map.len() >= self.capacity && !self.map.contains_key(&k) {
            if let Some(victim) = self.map.keys().next().copied() {
                self.map.remove(&victim);
                self.evicted += 1;
            }
        }
        self.map.entry(k).or_insert_with(make)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Rule state per master-slave pair. Pairs the shard's inventory holds are
/// found by their id there (dense, bounded by the inventory: no hashing per
/// request, where a keyed lookup of two addresses cost 3-6 % of a frame);
/// pairs the full inventory left out go to a [`BoundedMap`] by address.
#[derive(Debug)]
pub struct PairMap<V> {
    by_id: Vec<Option<V>>,
    others: BoundedMap<(IpAddr, IpAddr), V>,
}

impl<V> PairMap<V> {
    pub fn new(capacity: usize) -> Self {
        PairMap {
            by_id: Vec::new(),
            others: BoundedMap::new(capacity),
        }
    }

    /// Pairs left out of the inventory whose state made room for others.
    pub fn evicted(&self) -> u64 {
        self.others.evicted
    }

    /// The state of pair `pair` (its inventory id, if it has one), made by
    /// `make` on the pair's first use.
    #[inline]
    pub fn get_or_insert_with(
        &mut self,
        pair: Option<PairId>,
        (master, slave): (IpAddr, IpAddr),
        make: impl FnOnce() -> V,
    ) -> &mut V {
        let Some(i) = pair.map(PairId::index) else {
            return self.others.get_or_insert_with((master, slave), make);
        };
        if self.by_id.len() <= i {
            self.by_id.resize_with(i + 1, || None);
        }
        self.by_id[i].get_or_insert_with(make)
    }
}

/// Entries each per-shard rule table may hold.
pub const RULE_STATE_CAPACITY: usize = 1 << 18;

/// Every rule of a shard, and the ML judge with `--ml`.
pub struct Detectors {
    access: access::AccessRules,
    enumeration: enumeration::Enumeration,
    program: program::ProgramOperations,
    protocol: protocol::ProtocolRules,
    scans: scans::Scans,
    registers: registers::RegisterRules,
    baseline: baseline_rules::BaselineRules,
    exceptions: exceptions::ExceptionBurst,
    flood: flood::Flood,
    ml: Option<ml::MlJudge>,
}

impl Detectors {
    pub fn new(cfg: &Arc<DetectConfig>) -> Self {
        let models = cfg.baseline.as_ref().and_then(|b| b.models());
        Detectors {
            access: access::AccessRules::new(cfg.clone()),
            enumeration: enumeration::Enumeration,
            program: program::ProgramOperations,
            protocol: protocol::ProtocolRules::new(cfg.thresholds),
            scans: scans::Scans::new(cfg.thresholds),
            registers: registers::RegisterRules::new(
                cfg.limits_file.clone(),
                cfg.thresholds.rate_time_base_ns,
            ),
            baseline: baseline_rules::BaselineRules::new(cfg.baseline.clone(), cfg.thresholds),
            exceptions: exceptions::ExceptionBurst::new(cfg.thresholds),
            flood: flood::Flood::new(cfg.thresholds),
            ml: models
                .filter(|_| cfg.ml)
                .map(|m| ml::MlJudge::new(m.clone(), ml::KnownMasters::of(cfg))),
        }
    }

    /// New settings (see [`crate::shard::Shard::catch_up`]): every rule
    /// keeps its state, except the register rules when the limits changed
    /// (their state is indexed by limit). ML windows still open are judged
    /// by the models they were opened under, then a new judge starts.
    pub fn reconfigure(&mut self, cfg: &Arc<DetectConfig>, out: &mut impl AlertSink) {
        let t = cfg.thresholds;
        self.access = access::AccessRules::new(cfg.clone());
        self.protocol.set_thresholds(t);
        self.scans.set_thresholds(t);
        self.registers
            .set_limits(cfg.limits_file.clone(), t.rate_time_base_ns);
        self.baseline.set(cfg.baseline.clone(), t);
        self.exceptions.set_thresholds(t);
        self.flood.set_thresholds(t);
        let models = cfg.baseline.as_ref().and_then(|b| b.models());
        let same_models = match (&self.ml, models) {
            (Some(judge), Some(m)) => judge.judges_with(m),
            _ => false,
        };
        let known = || ml::KnownMasters::of(cfg);
        match (&mut self.ml, models.filter(|_| cfg.ml)) {
            (Some(judge), Some(_)) if same_models => judge.set_known(known()),
            (judge, models) => {
                let mut stats = ml::MlStats::default();
                if let Some(old) = judge {
                    old.finish(out);
                    stats = old.stats;
                }
                *judge = models.map(|m| {
                    let mut new = ml::MlJudge::new(m.clone(), known());
                    new.stats = stats;
                    new
                });
            }
        }
    }

    /// Everything the rules can work out once per connection.
    pub fn pair_facts(&self, ep: &Endpoints) -> PairFacts {
        PairFacts {
            access: Some(self.access.facts(ep.master)),
            baseline: Some(self.baseline.pair_id(ep)),
        }
    }

    pub fn on_request(&mut self, ctx: &RequestCtx<'_>, out: &mut impl AlertSink) {
        // The request may close its pair's window: that window is judged
        // before the request's own alerts are raised.
        if let Some(ml) = &mut self.ml {
            ml.on_request(ctx, out);
        }
        self.access.on_request(ctx, out);
        self.enumeration.on_request(ctx, out);
        self.program.on_request(ctx, out);
        self.protocol.on_request(ctx, out);
        self.scans.on_request(ctx, out);
        self.registers.on_request(ctx, out);
        self.baseline.on_request(ctx, out);
        self.flood.on_request(ctx, out);
    }

    pub fn on_response(&mut self, ctx: &ResponseCtx<'_>, out: &mut impl AlertSink) {
        if let Some(ml) = &mut self.ml {
            ml.on_response(ctx);
        }
        self.registers.on_response(ctx, out);
        self.exceptions.on_response(ctx, out);
        self.protocol.on_response(ctx, out);
        self.scans.on_response(ctx, out);
    }

    /// Entries evicted from the rules' bounded state tables.
    pub fn state_evicted(&self) -> u64 {
        self.registers.evicted()
            + self.baseline.evicted()
            + self.exceptions.evicted()
            + self.flood.evicted()
            + self.protocol.evicted()
            + self.scans.evicted()
    }
}

/// What a shard does with its ADUs, chosen once when it is built.
pub enum Analysis {
    /// Raise alerts.
    Detect(Box<Detectors>),
    /// Learn a baseline; raise nothing.
    Learn(Box<learn::Learners>),
}

/// What an [`Analysis`] leaves at the end of a run.
#[derive(Debug, Default)]
pub struct Analysed {
    pub ml: ml::MlStats,
    pub rule_state_evicted: u64,
    /// Baseline mode: what was learnt.
    pub learned: learn::Learned,
}

impl Analysis {
    /// For one of `shards` shards (the learning bounds are split over them).
    pub fn new(cfg: &Arc<DetectConfig>, shards: usize) -> Analysis {
        let shards = shards.max(1);
        match cfg.mode {
            Mode::Detect => Analysis::Detect(Box::new(Detectors::new(cfg))),
            Mode::Learn => {
                let bounds = learn::LearnBounds {
                    registers: (cfg.limits.max_learned_registers / shards).max(1),
                    windows: (cfg.limits.max_learned_windows / shards).max(1),
                };
                Analysis::Learn(Box::new(learn::Learners::new(cfg.ml_window_ns, bounds)))
            }
        }
    }

    /// What the rules work out once per connection (nothing when learning).
    pub fn pair_facts(&self, ep: &Endpoints) -> PairFacts {
        match self {
            Analysis::Detect(d) => d.pair_facts(ep),
            Analysis::Learn(_) => PairFacts::default(),
        }
    }

    #[inline]
    pub fn on_request(&mut self, ctx: &RequestCtx<'_>, out: &mut impl AlertSink) {
        match self {
            Analysis::Detect(d) => d.on_request(ctx, out),
            Analysis::Learn(l) => l.on_request(ctx),
        }
    }

    #[inline]
    pub fn on_response(&mut self, ctx: &ResponseCtx<'_>, out: &mut impl AlertSink) {
        match self {
            Analysis::Detect(d) => d.on_response(ctx, out),
            Analysis::Learn(l) => l.on_response(ctx),
        }
    }

    /// An ADU whose MBAP header or PDU is malformed: an alert when detecting.
    pub fn on_malformed(&mut self, alert: Alert, out: &mut impl AlertSink) {
        if let Analysis::Detect(_) = self {
            out.raise(alert, 1);
        }
    }

    /// The shard's clock reads `now_ns` (every frame).
    #[inline]
    pub fn on_tick(&mut self, now_ns: u64, out: &mut impl AlertSink) {
        match self {
            Analysis::Detect(d) => {
                if let Some(ml) = &mut d.ml {
                    ml.on_tick(now_ns, out);
                }
            }
            Analysis::Learn(l) => l.on_tick(now_ns),
        }
    }

    /// End of input: close what is still open (the last ML windows). Alerts
    /// go to `out`; a second call finds nothing left.
    pub fn flush(&mut self, out: &mut impl AlertSink) {
        if let Analysis::Detect(d) = self {
            if let Some(ml) = &mut d.ml {
                ml.finish(out);
            }
        }
    }

    /// New settings; nothing changes while learning.
    pub fn reconfigure(&mut self, cfg: &Arc<DetectConfig>, out: &mut impl AlertSink) {
        if let Analysis::Detect(d) = self {
            d.reconfigure(cfg, out);
        }
    }

    /// What the rules hold now, without ending anything (periodic
    /// reports while live; learning is reported at the end only).
    pub fn snapshot(&self) -> Analysed {
        match self {
            Analysis::Detect(d) => Analysed {
                ml: d.ml.as_ref().map(|m| m.stats).unwrap_or_default(),
                rule_state_evicted: d.state_evicted(),
                learned: learn::Learned::default(),
            },
            Analysis::Learn(_) => Analysed::default(),
        }
    }

    /// End of the run (after [`Analysis::flush`]).
    pub fn finish(self) -> Analysed {
        match self {
            Analysis::Detect(d) => Analysed {
                ml: d.ml.as_ref().map(|m| m.stats).unwrap_or_default(),
                rule_state_evicted: d.state_evicted(),
                learned: learn::Learned::default(),
            },
            Analysis::Learn(l) => Analysed {
                learned: l.finish(),
                ..Analysed::default()
            },
        }
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Hand-built contexts for rule unit tests.
    use super::*;

    #[derive(Default)]
    pub struct Collected(pub Vec<(Alert, u64)>);

    impl AlertSink for Collected {
        fn raise(&mut self, alert: Alert, count: u64) {
            self.0.push((alert, count));
        }
    }

    impl Collected {
        pub fn count(&self, kind: AlertKind) -> u64 {
            self.0
                .iter()
                .filter(|(a, _)| a.kind == kind)
                .map(|(_, n)| n)
                .sum()
        }
    }

    pub fn ep(master: u8, slave: u8) -> Endpoints {
        Endpoints {
            master: IpAddr::from([10, 0, 0, master]),
            master_port: 40000,
            slave: IpAddr::from([10, 0, 0, slave]),
            slave_port: 502,
        }
    }

    pub fn req<'a>(ts_ns: u64, ep: Endpoints, req: &'a Request<'a>) -> RequestCtx<'a> {
        RequestCtx {
            ts_ns,
            ep,
            unit: 1,
            tid: 1,
            req,
            outstanding: 1,
            facts: PairFacts::default(),
            pair: None,
        }
    }

    pub fn resp<'a>(
        ts_ns: u64,
        ep: Endpoints,
        resp: &'a Response<'a>,
        request: Option<&'a PendingRequest>,
    ) -> ResponseCtx<'a> {
        ResponseCtx {
            ts_ns,
            ep,
            unit: 1,
            tid: 1,
            resp,
            request,
            pair: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;
    use crate::config::addrs::AddrSet;
    use crate::config::Thresholds;
    use crate::modbus::pdu::Request;

    fn masters(last: &[u8]) -> DetectConfig {
        DetectConfig {
            authorized_masters: Some(
                last.iter()
                    .map(|x| IpAddr::from([10, 0, 0, *x]))
                    .collect::<AddrSet>(),
            ),
            ..DetectConfig::default()
        }
    }

    /// Requests of master 10.0.0.2 to 10.0.0.10, 1 ms apart from `t0`.
    fn requests(d: &mut Detectors, t0: u64, n: u64, out: &mut Collected) {
        let r = Request::ReadHoldingRegisters { addr: 0, qty: 1 };
        for i in 0..n {
            let ctx = req(t0 + i * 1_000_000, ep(2, 10), &r);
            d.on_request(&ctx, out);
        }
    }

    #[test]
    fn new_settings_change_verdicts_and_keep_the_rules_state() {
        let mut d = Detectors::new(&Arc::new(masters(&[1])));
        let mut before = Collected::default();
        // 15 back-to-back requests: a rogue master, not yet a flood (20).
        requests(&mut d, 0, 15, &mut before);
        assert_eq!(before.count(AlertKind::RogueMaster), 15);
        assert_eq!(before.count(AlertKind::Flood), 0);

        let mut after = Collected::default();
        d.reconfigure(&Arc::new(masters(&[1, 2])), &mut after);
        requests(&mut d, 15_000_000, 10, &mut after);
        assert_eq!(after.count(AlertKind::RogueMaster), 0, "now authorized");
        // The run went on across the change: the flood is seen.
        assert!(after.count(AlertKind::Flood) > 0, "flood state kept");

        // Rules built afresh would miss it: the test can tell the two apart.
        let mut fresh = Detectors::new(&Arc::new(masters(&[1, 2])));
        let mut missed = Collected::default();
        requests(&mut fresh, 15_000_000, 10, &mut missed);
        assert_eq!(missed.count(AlertKind::Flood), 0);

        // And back: the allow list is taken away again.
        let mut again = Collected::default();
        d.reconfigure(&Arc::new(masters(&[1])), &mut again);
        requests(&mut d, 30_000_000, 1, &mut again);
        assert_eq!(again.count(AlertKind::RogueMaster), 1);
    }

    #[test]
    fn new_thresholds_apply_to_the_next_request() {
        let mut d = Detectors::new(&Arc::new(DetectConfig::default()));
        let mut out = Collected::default();
        requests(&mut d, 0, 10, &mut out);
        assert_eq!(out.count(AlertKind::Flood), 0);
        let cfg = DetectConfig {
            thresholds: Thresholds {
                flood_min_run: 5,
                ..Thresholds::default()
            },
            ..DetectConfig::default()
        };
        d.reconfigure(&Arc::new(cfg), &mut out);
        requests(&mut d, 10_000_000, 1, &mut out);
        assert!(out.count(AlertKind::Flood) > 0);
    }

    /// A pair's state is made once, by its inventory id or by its
    /// addresses, and only the by-address side is bounded and evicts.
    #[test]
    fn pair_state_by_inventory_id_or_by_address() {
        let (e, f, g) = (ep(1, 10), ep(2, 10), ep(3, 10));
        let mut inventory = crate::config::baseline::Baseline::default();
        for x in [e, f, g] {
            inventory.record(x.master, x.slave, 1, 3, 0);
        }
        let id = |x: Endpoints| inventory.pair_id(x.master, x.slave);
        let addrs = |x: Endpoints| (x.master, x.slave);
        let mut m: PairMap<u32> = PairMap::new(2);
        // The third pair first: the ids before it stay unmade.
        *m.get_or_insert_with(id(g), addrs(g), || 3) += 30;
        assert_eq!(*m.get_or_insert_with(id(g), addrs(g), || 0), 33);
        assert_eq!(*m.get_or_insert_with(id(e), addrs(e), || 1), 1);
        // The same addresses without an id are another entry.
        assert_eq!(*m.get_or_insert_with(None, addrs(e), || 7), 7);
        assert_eq!(*m.get_or_insert_with(None, addrs(e), || 0), 7);
        assert_eq!(*m.get_or_insert_with(id(e), addrs(e), || 0), 1);
        assert_eq!(m.evicted(), 0);
        for x in [f, g] {
            m.get_or_insert_with(None, addrs(x), || 0);
        }
        assert_eq!(m.evicted(), 1, "three pairs by address, room for two");
        assert_eq!(*m.get_or_insert_with(id(f), addrs(f), || 2), 2);
        assert_eq!(m.evicted(), 1, "pairs by id take no room");
    }
}
