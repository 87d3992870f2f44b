//! A detector shard: owns the connections, transactions and rule state of the
//! slaves that hash to it, with no locks on the packet path.
//!
//! Per segment: connection lookup -> TCP reassembly -> ADUs -> request or
//! response (matched to its request) -> rules -> aggregated alerts. In
//! baseline mode the same ADUs feed the baseline instead of the rules.

use std::sync::Arc;

use crate::alert::{Aggregate, Alert, AlertKind, AlertStore, Detail, EveEvent, Severity};
use crate::config::{DetectConfig, Mode};
use crate::counters::Counters;
use crate::decode::{tcp_flags, PacketMeta};
use crate::detect::baseline::Baseline;
use crate::detect::limits::modicon_number;
use crate::detect::{AlertSink, Detectors, Endpoints, RequestCtx, ResponseCtx};
use crate::flow::reassembly::{AduSink, AduVerdict};
use crate::flow::{Dir, Flow, FlowKey, FlowTable, Removed};
use crate::inspect::{AduOrigin, AduRecord};
use crate::modbus::mbap::{Mbap, MBAP_LEN};
use crate::modbus::pdu::{parse_request, parse_response, read_values, Response};
use crate::modbus::transaction::{PendingRequest, PendingTable};

/// Requests kept in the inventory per shard; beyond, new pairs are counted only.
const INVENTORY_PAIRS: usize = 1 << 16;

/// What a shard hands to the merger at the end of a run.
#[derive(Debug)]
pub struct ShardResult {
    pub counters: Counters,
    pub aggregates: Vec<Aggregate>,
    pub raised: [u64; AlertKind::ALL.len()],
    pub raised_by_severity: [u64; Severity::ALL.len()],
    pub alerts_dropped: u64,
    pub eve_suppressed: u64,
    /// What was seen: pairs, function codes, units (and registers when learning).
    pub observed: Baseline,
    pub inventory_pairs_dropped: u64,
    pub rule_state_evicted: u64,
    pub first_ns: Option<u64>,
    pub last_ns: Option<u64>,
}

/// Alerts go into the store; lines for the EVE stream are buffered per batch.
struct Alerts {
    store: AlertStore,
    eve: Vec<EveEvent>,
}

impl AlertSink for Alerts {
    fn raise(&mut self, alert: Alert, count: u64) {
        if let Some(ev) = self.store.raise(alert, count) {
            self.eve.push(ev);
        }
    }
}

pub struct Shard {
    cfg: Arc<DetectConfig>,
    flows: FlowTable,
    detectors: Detectors,
    alerts: Alerts,
    observed: Baseline,
    inventory_pairs_dropped: u64,
    counters: Counters,
    first_ns: Option<u64>,
    last_ns: Option<u64>,
    /// Every ADU decoded, when inspecting (see `inspect`).
    tap: Option<Vec<AduRecord>>,
}

impl Shard {
    pub fn new(cfg: Arc<DetectConfig>, shards: usize) -> Self {
        let shards = shards.max(1);
        let limits = cfg.limits;
        Shard {
            flows: FlowTable::new(limits.max_flows / shards, limits.flow_idle_timeout_ns),
            detectors: Detectors::new(&cfg),
            alerts: Alerts {
                store: AlertStore::new(
                    (limits.max_alert_keys / shards).max(1),
                    limits.eve_interval_ns,
                ),
                eve: Vec::new(),
            },
            observed: Baseline::default(),
            inventory_pairs_dropped: 0,
            counters: Counters::default(),
            first_ns: None,
            last_ns: None,
            tap: None,
            cfg,
        }
    }

    /// Record every ADU from now on (for `inspect`; costs an allocation per ADU).
    pub fn enable_tap(&mut self) {
        self.tap = Some(Vec::new());
    }

    pub fn take_tap(&mut self) -> Vec<AduRecord> {
        self.tap.take().unwrap_or_default()
    }

    /// EVE lines raised since the last call.
    pub fn drain_eve(&mut self) -> impl Iterator<Item = EveEvent> + '_ {
        self.alerts.eve.drain(..)
    }

    /// Process one TCP segment on a Modbus port (`frame_no` is 1-based).
    pub fn process(&mut self, frame_no: u64, ts_ns: u64, meta: &PacketMeta, frame: &[u8]) {
        self.counters.modbus_frames += 1;
        self.counters.truncated_frames += u64::from(meta.truncated);
        self.first_ns = Some(self.first_ns.map_or(ts_ns, |t| t.min(ts_ns)));
        self.last_ns = Some(self.last_ns.map_or(ts_ns, |t| t.max(ts_ns)));
        let (key, dir) = orient(meta, &self.cfg);
        let payload = meta.payload(frame);
        let idx = match self.flows.find(&key) {
            Some(i) => i,
            None => {
                if payload.is_empty() && meta.flags & tcp_flags::SYN == 0 {
                    // A lone ACK/FIN/RST of an untracked connection carries nothing.
                    return;
                }
                self.counters.flows += 1;
                let Shard {
                    flows, counters, ..
                } = self;
                flows.insert(Flow::new(key, ts_ns), |gone, why| {
                    count_removed(counters, &gone, why)
                })
            }
        };
        let Shard {
            cfg,
            flows,
            detectors,
            alerts,
            observed,
            inventory_pairs_dropped,
            counters,
            tap,
            ..
        } = self;
        let Some(flow) = flows.get_mut(idx) else {
            return;
        };
        flow.last_ns = ts_ns;
        let Flow {
            streams, pending, ..
        } = flow;
        let (this, other) = match dir {
            Dir::ToServer => {
                let [a, b] = streams;
                (a, b)
            }
            Dir::ToClient => {
                let [a, b] = streams;
                (b, a)
            }
        };
        let mut sink = ModbusSink {
            cfg,
            dir,
            key: &key,
            pending,
            detectors,
            alerts,
            observed,
            inventory_pairs_dropped,
            counters,
            tap: tap.as_mut().map(|t| {
                (
                    t,
                    AduOrigin {
                        frame: frame_no,
                        ts_ns,
                        src: meta.src,
                        src_port: meta.sport,
                        dst: meta.dst,
                        dst_port: meta.dport,
                    },
                )
            }),
        };
        if meta.flags & tcp_flags::SYN != 0 {
            this.on_syn(meta.seq);
        }
        if meta.flags & tcp_flags::ACK != 0 {
            other.on_peer_ack(meta.ack, &mut sink);
        }
        this.on_segment(meta.seq, payload, ts_ns, &cfg.limits, &mut sink);
        let rst = meta.flags & tcp_flags::RST != 0;
        if meta.flags & tcp_flags::FIN != 0 || rst {
            this.close(&mut sink);
        }
        if rst {
            other.close(&mut sink);
        }
        let closed = this.is_closed() && other.is_closed();
        if closed {
            if let Some(gone) = self.flows.remove(idx) {
                self.counters.flows_closed += 1;
                let mut gone = gone;
                self.counters.transactions_expired += gone.pending.clear() as u64;
            }
        }
        let Shard {
            flows, counters, ..
        } = self;
        flows.sweep(ts_ns, 2, |gone, why| count_removed(counters, &gone, why));
    }

    /// End of the run: close what is left and hand over the results.
    pub fn finish(mut self) -> ShardResult {
        for mut flow in self.flows.drain() {
            self.counters.transactions_expired += flow.pending.clear() as u64;
        }
        let store = self.alerts.store;
        ShardResult {
            counters: self.counters,
            raised: store.raised,
            raised_by_severity: store.raised_by_severity,
            alerts_dropped: store.dropped,
            eve_suppressed: store.eve_suppressed,
            aggregates: store.into_aggregates(),
            observed: self.observed,
            inventory_pairs_dropped: self.inventory_pairs_dropped,
            rule_state_evicted: self.detectors.state_evicted(),
            first_ns: self.first_ns,
            last_ns: self.last_ns,
        }
    }
}

fn count_removed(counters: &mut Counters, gone: &Flow, why: Removed) {
    match why {
        Removed::Evicted => counters.flows_evicted += 1,
        Removed::Expired => counters.flows_expired += 1,
    }
    counters.transactions_expired += gone.pending.len() as u64;
}

/// Which side is the server: the one on a Modbus port (the destination when
/// both are, so that both directions of a 502<->502 connection agree on the
/// lower address as the server).
pub fn orient(meta: &PacketMeta, cfg: &DetectConfig) -> (FlowKey, Dir) {
    let dst_is_server = match (
        cfg.is_modbus_port(meta.sport),
        cfg.is_modbus_port(meta.dport),
    ) {
        (true, false) => false,
        (false, true) => true,
        _ => (meta.dst, meta.dport) <= (meta.src, meta.sport),
    };
    if dst_is_server {
        (
            FlowKey {
                client: meta.src,
                server: meta.dst,
                client_port: meta.sport,
                server_port: meta.dport,
            },
            Dir::ToServer,
        )
    } else {
        (
            FlowKey {
                client: meta.dst,
                server: meta.src,
                client_port: meta.dport,
                server_port: meta.sport,
            },
            Dir::ToClient,
        )
    }
}

/// Turns the ADUs of one stream into requests/responses and rule calls.
struct ModbusSink<'a> {
    cfg: &'a DetectConfig,
    dir: Dir,
    key: &'a FlowKey,
    pending: &'a mut PendingTable,
    detectors: &'a mut Detectors,
    alerts: &'a mut Alerts,
    observed: &'a mut Baseline,
    inventory_pairs_dropped: &'a mut u64,
    counters: &'a mut Counters,
    tap: Option<(&'a mut Vec<AduRecord>, AduOrigin)>,
}

impl ModbusSink<'_> {
    fn endpoints(&self) -> Endpoints {
        Endpoints {
            master: self.key.client,
            master_port: self.key.client_port,
            slave: self.key.server,
            slave_port: self.key.server_port,
        }
    }

    fn learning(&self) -> bool {
        self.cfg.mode == Mode::Learn
    }

    /// Record a request in the inventory (bounded in pairs).
    fn note_request(&mut self, ep: &Endpoints, unit: u8, fc: u8, ts_ns: u64) {
        let known = self
            .observed
            .get_fc_distribution(ep.master, ep.slave)
            .is_some();
        if known || self.observed.pair_count() < INVENTORY_PAIRS || self.learning() {
            self.observed.record(ep.master, ep.slave, unit, fc, ts_ns);
        } else {
            *self.inventory_pairs_dropped += 1;
        }
    }

    fn on_request(&mut self, mbap: &Mbap, pdu: &[u8], ts_ns: u64) -> AduVerdict {
        let req = match parse_request(pdu) {
            Ok(r) => r,
            Err(e) => {
                if let Some((tap, o)) = &mut self.tap {
                    tap.push(AduRecord::undecodable(o, mbap, pdu, true, e.describe()));
                }
                self.malformed_pdu(mbap, pdu, e.describe(), ts_ns);
                return AduVerdict::Resync;
            }
        };
        if let Some((tap, o)) = &mut self.tap {
            tap.push(AduRecord::request(o, mbap, &req));
        }
        self.counters.requests += 1;
        let ep = self.endpoints();
        let fc = req.function_code();
        self.note_request(&ep, mbap.unit, fc, ts_ns);
        let limits = self.cfg.limits;
        self.pending.insert(
            PendingRequest::new(ts_ns, mbap.tid, mbap.unit, &req),
            limits.max_pending_per_flow,
            limits.transaction_timeout_ns,
            self.counters,
        );
        if self.learning() {
            for (table, addr, value) in req.written_values() {
                let reg = modicon_number(table, addr);
                self.observed
                    .record_register(ep.slave, mbap.unit, reg, f64::from(value));
            }
            return AduVerdict::Continue;
        }
        let ctx = RequestCtx {
            ts_ns,
            ep,
            unit: mbap.unit,
            tid: mbap.tid,
            req: &req,
            outstanding: self.pending.len(),
        };
        self.detectors.on_request(&ctx, self.alerts);
        AduVerdict::Continue
    }

    fn on_response(&mut self, mbap: &Mbap, pdu: &[u8], ts_ns: u64) -> AduVerdict {
        let resp = match parse_response(pdu) {
            Ok(r) => r,
            Err(e) => {
                if let Some((tap, o)) = &mut self.tap {
                    tap.push(AduRecord::undecodable(o, mbap, pdu, false, e.describe()));
                }
                self.malformed_pdu(mbap, pdu, e.describe(), ts_ns);
                return AduVerdict::Resync;
            }
        };
        if let Some((tap, o)) = &mut self.tap {
            tap.push(AduRecord::response(o, mbap, &resp));
        }
        self.counters.responses += 1;
        if matches!(resp, Response::Exception { .. }) {
            self.counters.exceptions += 1;
        }
        let request = self.pending.take(mbap.tid, mbap.unit, resp.function_code());
        if request.is_some() {
            self.counters.matched_responses += 1;
        } else {
            self.counters.unmatched_responses += 1;
        }
        let ep = self.endpoints();
        if self.learning() {
            if let Some(read) = request.and_then(|r| r.read_request()) {
                for (table, addr, value) in read_values(&read, &resp) {
                    let reg = modicon_number(table, addr);
                    self.observed
                        .record_register(ep.slave, mbap.unit, reg, f64::from(value));
                }
            }
            return AduVerdict::Continue;
        }
        let ctx = ResponseCtx {
            ts_ns,
            ep,
            unit: mbap.unit,
            tid: mbap.tid,
            resp: &resp,
            request: request.as_ref(),
        };
        self.detectors.on_response(&ctx, self.alerts);
        AduVerdict::Continue
    }

    /// A PDU that does not fit its MBAP length: the length field is wrong.
    fn malformed_pdu(&mut self, mbap: &Mbap, pdu: &[u8], reason: &'static str, ts_ns: u64) {
        let mut alert = self.malformed_alert(reason, ts_ns);
        alert.unit = mbap.unit;
        alert.function_code = pdu.first().copied().unwrap_or(0);
        self.raise_malformed(alert);
    }

    fn malformed_alert(&self, reason: &'static str, ts_ns: u64) -> Alert {
        let ep = self.endpoints();
        let mut alert = match self.dir {
            Dir::ToServer => ep.from_master(AlertKind::MalformedMbap, Severity::Medium, ts_ns),
            Dir::ToClient => ep.from_slave(AlertKind::MalformedMbap, Severity::Medium, ts_ns),
        };
        alert.detail = Detail::Malformed { reason };
        alert
    }

    fn raise_malformed(&mut self, alert: Alert) {
        self.counters.malformed_adus += 1;
        if !self.learning() {
            self.alerts.raise(alert, 1);
        }
    }
}

impl AduSink for ModbusSink<'_> {
    fn counters(&mut self) -> &mut Counters {
        self.counters
    }

    fn adu(&mut self, adu: &[u8], ts_ns: u64) -> AduVerdict {
        let Some(mbap) = Mbap::parse(adu) else {
            return AduVerdict::Resync;
        };
        self.counters.modbus_adus += 1;
        let pdu = adu.get(MBAP_LEN..).unwrap_or(&[]);
        match self.dir {
            Dir::ToServer => self.on_request(&mbap, pdu, ts_ns),
            Dir::ToClient => self.on_response(&mbap, pdu, ts_ns),
        }
    }

    fn malformed(&mut self, reason: &'static str, ts_ns: u64) {
        let alert = self.malformed_alert(reason, ts_ns);
        self.raise_malformed(alert);
    }
}
