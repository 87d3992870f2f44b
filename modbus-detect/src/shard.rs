//! A detector shard: owns the connections, transactions and rule state of the
//! slaves that hash to it, with no locks on the packet path.
//!
//! Per segment: connection lookup -> TCP reassembly -> ADUs -> request or
//! response (matched to its request) -> rules -> aggregated alerts. In
//! baseline mode the same ADUs feed the baseline instead of the rules.

use std::sync::Arc;

use crate::alert::{
    Aggregate, Alert, AlertKind, AlertStore, Answer, Detail, Evasion, EveEvent, Severity, Stamp, Tx,
};
use crate::config::baseline::PairId;
use crate::config::live::LiveConfig;
use crate::config::{DetectConfig, Limits, Mode};
use crate::counters::Counters;
use crate::decode::{tcp_flags, PacketMeta};
use crate::defrag::note;
use crate::detect::learn::Sample;
use crate::detect::ml::MlStats;
use crate::detect::{response_tx, AlertSink, Analysis, Endpoints, RequestCtx, ResponseCtx};
use crate::flow::policy::TargetPolicy;
use crate::flow::reassembly::{AduSink, AduVerdict};
use crate::flow::{Dir, Flow, FlowKey, FlowTable, PairCache, Side};
use crate::inventory::{Inventory, InventoryResult};
use crate::modbus::mbap::{Mbap, MBAP_LEN};
use crate::modbus::pdu::{
    parse_request, parse_response, request_len_by_shape, PduError, Request, Response,
};
use crate::modbus::record::{AduOrigin, AduRecord};
use crate::modbus::transaction::{EarlyResponse, PendingRequest, PendingTable};
use crate::roles;

/// Master-slave pairs kept in the inventory (over all shards); beyond, the
/// requests of new pairs are counted only.
const INVENTORY_PAIRS: usize = 1 << 16;

/// What a shard hands to the merger at the end of a run (or in a
/// snapshot); merged, what the run found (`output::report::Summary`).
#[derive(Debug, Default)]
pub struct ShardResult {
    pub counters: Counters,
    /// One per alert key, in the shard's order (the merge sorts them).
    pub alerts: Vec<Aggregate>,
    pub raised: [u64; AlertKind::ALL.len()],
    pub raised_by_severity: [u64; Severity::ALL.len()],
    pub alerts_dropped: u64,
    pub eve_suppressed: u64,
    /// What was seen: pairs, function codes, units, assets (and registers
    /// when learning).
    pub inventory: InventoryResult,
    pub rule_state_evicted: u64,
    pub first_ns: Option<u64>,
    pub last_ns: Option<u64>,
    pub ml: MlStats,
    /// Baseline mode: the ML training windows.
    pub ml_samples: Vec<Sample>,
    /// Baseline mode: register values and training windows left out (the
    /// learning bounds were reached).
    pub learned_registers_dropped: u64,
    pub learned_windows_dropped: u64,
}

/// Alerts go into the store; lines for the EVE stream are buffered per batch.
struct Alerts {
    store: AlertStore,
    eve: Vec<EveEvent>,
    /// The connection and frame being worked on, if any: alerts raised now
    /// are stamped with them (those of a clock tick or the end of input
    /// belong to no frame).
    here: Option<Here>,
    /// Alerts raised on write requests, waiting for the PLC's answer,
    /// oldest first (at most [`MAX_HELD`]).
    held: std::collections::VecDeque<Held>,
    /// Write alerts raised without waiting for the answer: the hold was
    /// full.
    not_held: u64,
}

/// Write alerts a shard holds for their answer at most; beyond, they are
/// raised at once with the answer unknown, and counted.
const MAX_HELD: usize = 4096;

/// An alert raised on a write request, until its answer.
#[derive(Debug, Clone, Copy)]
struct Held {
    alert: Alert,
    count: u64,
    flow_id: u64,
    tid: u16,
    unit: u8,
}

/// See [`Alerts::here`].
#[derive(Debug, Clone, Copy)]
struct Here {
    flow_id: u64,
    key: FlowKey,
    frame: u64,
}

impl Alerts {
    /// From now on, alerts belong to `flow`, at `frame`.
    fn at(&mut self, flow_id: u64, key: &FlowKey, frame: u64) {
        self.here = Some(Here {
            flow_id,
            key: *key,
            frame,
        });
    }
}

impl AlertSink for Alerts {
    fn raise(&mut self, mut alert: Alert, count: u64) {
        self.stamp(&mut alert);
        let waits = alert.write.is_some_and(|w| w.answer == Answer::Pending);
        if let (true, Some(s), Some(tx)) = (waits, alert.stamp, alert.tx) {
            if self.held.len() < MAX_HELD {
                self.held.push_back(Held {
                    alert,
                    count,
                    flow_id: s.flow_id,
                    tid: tx.tid,
                    unit: alert.unit,
                });
                return;
            }
            self.not_held += 1;
        }
        self.store_alert(alert, count);
    }
}

impl Alerts {
    /// Into the store (and an EVE line, if its key's rate lets one out).
    fn store_alert(&mut self, alert: Alert, count: u64) {
        if let Some(ev) = self.store.raise(alert, count) {
            self.eve.push(ev);
        }
    }

    /// The PLC answered request `tid` (unit `unit`) of connection
    /// `flow_id`: its held write alerts go out with the answer.
    fn answer(&mut self, flow_id: u64, tid: u16, unit: u8, answer: Answer, frame: u64) {
        if self.held.is_empty() {
            return;
        }
        let mut i = 0;
        while i < self.held.len() {
            let h = self.held[i];
            if (h.flow_id, h.tid, h.unit) == (flow_id, tid, unit) {
                self.held.remove(i);
                self.release(h, answer, frame);
            } else {
                i += 1;
            }
        }
    }

    /// Held alerts older than `timeout` at `now` get no answer.
    #[inline]
    fn expire(&mut self, now: u64, timeout: u64) {
        // Looked at in place: this runs for every frame.
        while self
            .held
            .front()
            .is_some_and(|h| now.saturating_sub(h.alert.ts_ns) > timeout)
        {
            if let Some(h) = self.held.pop_front() {
                self.release(h, Answer::None, 0);
            }
        }
    }

    /// The connection ended (or `None`: the input did): what it held
    /// gets no answer.
    fn release_flow(&mut self, flow_id: Option<u64>) {
        let (gone, kept): (Vec<Held>, Vec<Held>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|h| flow_id.is_none_or(|f| f == h.flow_id));
        self.held = kept.into();
        for h in gone {
            self.release(h, Answer::None, 0);
        }
    }

    fn release(&mut self, mut h: Held, answer: Answer, frame: u64) {
        if let Some(w) = &mut h.alert.write {
            w.answer = answer;
            w.response_frame = frame;
        }
        self.store_alert(h.alert, h.count);
    }

    fn stamp(&mut self, alert: &mut Alert) {
        // Only an alert about this connection gets its stamp: one about
        // the pair's traffic over several connections (an ML window that
        // this request closed) belongs to none of them.
        if let Some(h) = self.here {
            let (k, a) = (&h.key, &*alert);
            let to_server = (a.src, a.src_port, a.dst, a.dst_port)
                == (k.client, k.client_port, k.server, k.server_port);
            let to_client = (a.dst, a.dst_port, a.src, a.src_port)
                == (k.client, k.client_port, k.server, k.server_port);
            if to_server || to_client {
                alert.stamp = Some(Stamp {
                    flow_id: h.flow_id,
                    frame: h.frame,
                    to_server,
                });
            }
        }
    }
}

/// Why a flow's state is let go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retire {
    Closed,
    Evicted,
    Expired,
    EndOfInput,
}

/// Everything of a shard but its connection table, so that a flow (borrowed
/// from the table) and the state its ADUs update can be borrowed together.
struct State {
    cfg: Arc<DetectConfig>,
    analysis: Analysis,
    alerts: Alerts,
    inventory: Inventory,
    counters: Counters,
    first_ns: Option<u64>,
    last_ns: Option<u64>,
    /// The frame being processed, and its captured length (for the ADU tap).
    frame_no: u64,
    frame_len: u32,
    /// Every ADU decoded, when inspecting (see `inspect`).
    tap: Option<Vec<AduRecord>>,
    /// A request decoded by its shape behind a bad header is being checked:
    /// it is no ADU as framed, so the tap (`--dump-adus`, the tshark
    /// comparison) does not list it; `salvaged_requests` counts it.
    salvaging: bool,
}

impl State {
    /// What IP reassembly noted on a segment (see [`crate::defrag::note`]):
    /// an evasion attempt to report. True when the receiver discards the
    /// datagram, so the segment is no stream data.
    #[cold]
    fn fragment_findings(
        &mut self,
        flow: &mut Flow,
        dir: Dir,
        meta: &PacketMeta,
        ts_ns: u64,
    ) -> bool {
        let receiver = match dir {
            Dir::ToServer => flow.key.server,
            Dir::ToClient => flow.key.client,
        };
        let policy = self.cfg.target_policies.of(receiver);
        let Flow {
            key,
            id,
            pending,
            pair,
            ..
        } = flow;
        self.alerts.at(*id, key, self.frame_no);
        let mut sink = self.sink(key, pending, pair, dir);
        if meta.fragments & note::OVERLAP != 0 {
            sink.evasion(Evasion::OverlappingFragments, policy, ts_ns);
        }
        if meta.fragments & note::TINY != 0 {
            sink.evasion(Evasion::TinyFragments, policy, ts_ns);
        }
        meta.fragments & note::DISCARDED != 0
    }

    /// A sink for the ADUs of one direction of `key`.
    fn sink<'a>(
        &'a mut self,
        key: &'a FlowKey,
        pending: &'a mut PendingTable,
        pair: &'a mut PairCache,
        dir: Dir,
    ) -> ModbusSink<'a> {
        ModbusSink {
            st: self,
            dir,
            key,
            pending,
            pair,
        }
    }
}

pub struct Shard {
    /// Newer settings, and the version of them this shard runs with.
    updates: Option<(Arc<LiveConfig>, u64)>,
    flows: FlowTable,
    /// `cfg.limits`, kept apart from `st` so that a segment can borrow it
    /// while the state is borrowed mutably (copying the struct per segment
    /// cost 2 % of a frame).
    limits: Limits,
    st: State,
}

impl Shard {
    pub fn new(cfg: Arc<DetectConfig>, shards: usize) -> Self {
        let shards = shards.max(1);
        let limits = cfg.limits;
        Shard {
            updates: cfg.updates.clone().map(|u| (u, 0)),
            flows: FlowTable::new(limits.max_flows / shards, limits.flow_idle_timeout_ns),
            limits,
            st: State {
                analysis: Analysis::new(&cfg, shards),
                alerts: Alerts {
                    store: AlertStore::new(
                        (limits.max_alert_keys / shards).max(1),
                        limits.eve_interval_ns,
                    ),
                    eve: Vec::new(),
                    here: None,
                    held: std::collections::VecDeque::new(),
                    not_held: 0,
                },
                inventory: {
                    let learning = cfg.mode == Mode::Learn;
                    // Split over the shards, so that the bound does not
                    // grow with --threads.
                    let pairs = if learning {
                        cfg.limits.max_learned_pairs
                    } else {
                        INVENTORY_PAIRS
                    };
                    Inventory::new(learning, pairs / shards.max(1), shards)
                },
                counters: Counters::default(),
                first_ns: None,
                last_ns: None,
                frame_no: 0,
                frame_len: 0,
                tap: None,
                salvaging: false,
                cfg,
            },
        }
    }

    /// Take the newest settings, if they changed since the last call
    /// (between batches: a frame is judged by one set of settings).
    #[inline]
    pub fn catch_up(&mut self) {
        let Some((updates, seen)) = &self.updates else {
            return;
        };
        if let Some((version, cfg)) = updates.newer_than(*seen) {
            self.updates = Some((updates.clone(), version));
            self.reconfigure(cfg);
        }
    }

    /// Run with `cfg` from now on. Only what `--config-from nats` changes
    /// is taken (allow lists, register limits, baseline, thresholds): the
    /// tables' sizes, ports and modes stay as the shard was built. The
    /// rules keep their state; what each connection cached from the old
    /// settings (its master's verdict, its baseline pair) is worked out
    /// again on its next request.
    #[cold]
    fn reconfigure(&mut self, cfg: Arc<DetectConfig>) {
        let st = &mut self.st;
        let cfg = Arc::new(DetectConfig {
            authorized_masters: cfg.authorized_masters.clone(),
            authorized_writers: cfg.authorized_writers.clone(),
            limits_file: cfg.limits_file.clone(),
            baseline: cfg.baseline.clone(),
            thresholds: cfg.thresholds,
            ..(*st.cfg).clone()
        });
        st.alerts.here = None;
        st.analysis.reconfigure(&cfg, &mut st.alerts);
        st.cfg = cfg;
        for flow in self.flows.flows_mut() {
            flow.pair.facts = None;
        }
    }

    /// Record every ADU from now on (for `inspect`; costs an allocation per ADU).
    pub fn enable_tap(&mut self) {
        self.st.tap = Some(Vec::new());
    }

    /// The ADUs recorded since the last call (the tap stays on).
    pub fn drain_tap(&mut self) -> Vec<AduRecord> {
        self.st.tap.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// The counters only, as they are now (stats events and metrics: no
    /// copy of the alert table or the inventory).
    pub fn counters_snapshot(&self) -> ShardResult {
        let st = &self.st;
        let store = &st.alerts.store;
        ShardResult {
            counters: st.counters.clone(),
            raised: store.raised,
            raised_by_severity: store.raised_by_severity,
            alerts_dropped: store.dropped,
            eve_suppressed: store.eve_suppressed,
            first_ns: st.first_ns,
            last_ns: st.last_ns,
            ..ShardResult::default()
        }
    }

    /// Everything a report needs, as it is now, without ending the run
    /// (periodic reports, inventory files and stats while live).
    pub fn snapshot(&self) -> ShardResult {
        let analysed = self.st.analysis.snapshot();
        ShardResult {
            alerts: self.st.alerts.store.aggregates(),
            inventory: self.st.inventory.snapshot(),
            rule_state_evicted: analysed.rule_state_evicted,
            ml: analysed.ml,
            ..self.counters_snapshot()
        }
    }

    /// ADUs decoded and alerts raised so far (for live stats).
    pub fn progress(&self) -> (u64, u64) {
        let alerts = self.st.alerts.store.raised.iter().sum();
        (self.st.counters.modbus_adus, alerts)
    }

    /// EVE lines raised since the last call.
    pub fn drain_eve(&mut self) -> impl Iterator<Item = EveEvent> + '_ {
        self.st.alerts.eve.drain(..)
    }

    /// Process one TCP segment on a Modbus port (`frame_no` is 1-based),
    /// on the `side` of its connection the dispatcher found (see
    /// [`crate::flow::orient`]).
    pub fn process(
        &mut self,
        frame_no: u64,
        ts_ns: u64,
        meta: &PacketMeta,
        side: Side,
        frame: &[u8],
    ) {
        let st = &mut self.st;
        st.frame_no = frame_no;
        st.frame_len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        st.counters.modbus_frames += 1;
        st.counters.truncated_frames += u64::from(meta.truncated);
        st.first_ns = Some(st.first_ns.map_or(ts_ns, |t| t.min(ts_ns)));
        // Frames earlier than one the shard already saw: merged captures or
        // a clock step. Interval rules skip intervals across such a step.
        st.counters.timestamps_backwards += u64::from(st.last_ns.is_some_and(|t| ts_ns < t));
        st.last_ns = Some(st.last_ns.map_or(ts_ns, |t| t.max(ts_ns)));
        st.alerts.here = None;
        st.alerts
            .expire(ts_ns, st.cfg.limits.transaction_timeout_ns);
        st.analysis.on_tick(ts_ns, &mut st.alerts);
        let payload = meta.payload(frame);
        let (mut key, mut dir) = (FlowKey::of(meta, side.dir), side.dir);
        let mut found = self.flows.find(&key);
        if side.provisional && found.is_none() {
            // Both ports are Modbus ports: the connection may be tracked
            // with the roles the other way round, or be new.
            (key, dir, found) = self.provisional_roles(key, dir, meta, payload);
        }
        let idx = match found {
            Some(i) => i,
            None => {
                if payload.is_empty() && meta.flags & tcp_flags::SYN == 0 {
                    // A lone ACK/FIN/RST of an untracked connection carries nothing.
                    return;
                }
                let st = &mut self.st;
                st.counters.flows += 1;
                let policies = &st.cfg.target_policies;
                let flow = Flow::new(key, ts_ns)
                    .with_policies(policies.of(key.server), policies.of(key.client));
                let (idx, victim) = self.flows.insert(flow);
                if let Some(v) = victim {
                    self.retire(v, Retire::Evicted);
                }
                let tracked = self.flows.len() as u64;
                self.st.counters.flows_peak = self.st.counters.flows_peak.max(tracked);
                idx
            }
        };
        self.segment(idx, dir, ts_ns, meta, frame);
        for _ in 0..2 {
            if let Some(idle) = self.flows.sweep(ts_ns) {
                self.retire(idle, Retire::Expired);
            }
        }
    }

    /// The key and direction of a segment whose two ports are both Modbus
    /// ports (see `roles`): the connection tracked with the roles the other
    /// way round, if it is; else, for a new one, the roles its first
    /// segment shows. Rare, so kept out of the per-frame path.
    #[cold]
    #[inline(never)]
    fn provisional_roles(
        &mut self,
        key: FlowKey,
        dir: Dir,
        meta: &PacketMeta,
        payload: &[u8],
    ) -> (FlowKey, Dir, Option<usize>) {
        let swapped = key.swapped();
        if let Some(i) = self.flows.find(&swapped) {
            return (swapped, dir.reverse(), Some(i));
        }
        let Some((client, how)) = roles::sender_is_client(meta, payload) else {
            return (key, dir, None);
        };
        let c = &mut self.st.counters;
        match how {
            roles::Decided::Handshake => c.roles_by_handshake += 1,
            roles::Decided::Content => c.roles_by_content += 1,
        }
        if roles::swap_needed(dir, client) {
            (swapped, dir.reverse(), None)
        } else {
            (key, dir, None)
        }
    }

    /// Feed a segment to its flow's streams, if its receiver takes it.
    fn segment(&mut self, idx: usize, dir: Dir, ts_ns: u64, meta: &PacketMeta, frame: &[u8]) {
        let Some(flow) = self.flows.get_mut(idx) else {
            return;
        };
        flow.last_ns = ts_ns;
        if meta.fragments != 0 && self.st.fragment_findings(flow, dir, meta, ts_ns) {
            return;
        }
        let verify = self.st.cfg.verify_checksums;
        if !flow
            .admission
            .admits(dir, meta, frame, verify, &mut self.st.counters)
        {
            return;
        }
        let payload = meta.payload(frame);
        let (syn, rst, fin) = (
            meta.flags & tcp_flags::SYN != 0,
            meta.flags & tcp_flags::RST != 0,
            meta.flags & tcp_flags::FIN != 0,
        );
        if syn && !flow.streams[dir as usize].is_established() {
            // A SYN that (re)starts its direction announces its scale; one
            // on an established stream changes nothing (see `on_syn`).
            flow.wscale[dir as usize] = meta.wscale;
        }
        let ack = meta.flags & tcp_flags::ACK != 0;
        let window = if ack {
            flow.advertised_window(dir, meta.window, syn)
        } else {
            None
        };
        let Flow {
            key,
            id,
            streams,
            pending,
            pair,
            ..
        } = flow;
        let [to_server, to_client] = streams;
        let (this, other) = match dir {
            Dir::ToServer => (to_server, to_client),
            Dir::ToClient => (to_client, to_server),
        };
        let st = &mut self.st;
        st.alerts.at(*id, key, st.frame_no);
        let limits = &self.limits;
        if syn {
            this.on_syn(meta.seq, &mut st.counters);
            pair.from_start |= dir == Dir::ToServer && !ack;
        }
        if ack {
            other.on_peer_ack(
                meta.ack,
                window,
                limits,
                &mut st.sink(key, pending, pair, dir.reverse()),
            );
        }
        // Requests lost to the capture (a hole given up, or bytes the
        // server acknowledges that the sensor never saw): a response to
        // one is no proof of an unsolicited answer.
        let lost = match dir {
            Dir::ToServer => this.lost_bytes(None),
            Dir::ToClient => other.lost_bytes(ack.then_some(meta.ack)),
        };
        if lost {
            pair.from_start = false;
        }
        if rst {
            // The receiver checks an RST before anything else and takes no
            // data from it.
            if this.accepts_rst(meta.seq, &mut st.sink(key, pending, pair, dir)) {
                this.close(&mut st.sink(key, pending, pair, dir));
                other.close(&mut st.sink(key, pending, pair, dir.reverse()));
            }
        } else if !ack && !syn {
            // Past the handshake every segment carries ACK; the receiver
            // drops one that does not (RFC 9293 3.10.7.4), so its bytes
            // are no stream data: an insertion the PLC never sees.
            st.counters.segments_without_ack += 1;
        } else if !syn {
            // Data on a SYN is not delivered without TCP Fast Open, which
            // no Modbus server uses.
            // Urgent data: the receiver (Linux, without SO_OOBINLINE) takes
            // the byte before the urgent pointer out of band, so the bytes
            // around it are adjacent in its stream.
            let urgent = usize::from(meta.urgent);
            if meta.flags & tcp_flags::URG != 0 && (1..=payload.len()).contains(&urgent) {
                let (before, rest) = payload.split_at(urgent - 1);
                let sink = &mut st.sink(key, pending, pair, dir);
                this.on_segment(meta.seq, before, ts_ns, limits, sink);
                let at = meta.seq.wrapping_add(before.len() as u32);
                if this.skip_urgent_byte(at) {
                    sink.counters().urgent_bytes += 1;
                    this.on_segment(at.wrapping_add(1), &rest[1..], ts_ns, limits, sink);
                } else {
                    this.on_segment(at, rest, ts_ns, limits, sink);
                }
            } else {
                this.on_segment(
                    meta.seq,
                    payload,
                    ts_ns,
                    limits,
                    &mut st.sink(key, pending, pair, dir),
                );
            }
            if fin {
                let end = meta.seq.wrapping_add(payload.len() as u32);
                this.close_at(end, &mut st.sink(key, pending, pair, dir));
            }
        }
        if let Some(Some(id)) = pair.inventory {
            // Every admitted frame, bare ACKs too: a slave that never
            // answers still shows its hardware address.
            let mac = meta.src_mac(frame);
            let last = &mut pair.macs[dir as usize];
            if *last != mac {
                *last = mac;
                st.inventory.note_mac(id, dir == Dir::ToServer, mac);
            }
        }
        if this.is_closed() && other.is_closed() {
            if let Some(gone) = self.flows.remove(idx) {
                self.retire(gone, Retire::Closed);
            }
        }
    }

    /// A flow leaves the table: data still held behind a hole is delivered
    /// (better late than lost), then the loss is counted.
    fn retire(&mut self, mut flow: Flow, why: Retire) {
        let st = &mut self.st;
        let Flow {
            key,
            id,
            streams,
            pending,
            pair,
            ..
        } = &mut flow;
        st.alerts.at(*id, key, st.frame_no);
        for (stream, dir) in streams.iter_mut().zip([Dir::ToServer, Dir::ToClient]) {
            stream.flush(&mut st.sink(key, pending, pair, dir));
        }
        st.sink(key, pending, pair, Dir::ToClient)
            .release_early(u64::MAX);
        st.alerts.release_flow(Some(*id));
        let c = &mut st.counters;
        match why {
            Retire::Closed => c.flows_closed += 1,
            Retire::Evicted => c.flows_evicted += 1,
            Retire::Expired => c.flows_expired += 1,
            Retire::EndOfInput => {}
        }
        c.transactions_expired += pending.clear() as u64;
    }

    /// End of input: deliver what every flow still holds and let them go,
    /// and close the open ML windows. Alerts it raises are in
    /// [`Shard::drain_eve`] as usual; a second call finds nothing left.
    pub fn flush(&mut self) {
        let flows: Vec<Flow> = self.flows.drain().collect();
        for flow in flows {
            self.retire(flow, Retire::EndOfInput);
        }
        let st = &mut self.st;
        st.alerts.here = None;
        st.alerts.release_flow(None);
        st.analysis.flush(&mut st.alerts);
    }

    /// End of the run: flush what is left and hand over the results.
    pub fn finish(mut self) -> ShardResult {
        self.flush();
        let mut st = self.st;
        let analysed = st.analysis.finish();
        st.inventory
            .observed_mut()
            .merge(analysed.learned.registers);
        st.counters.write_alerts_not_held = st.alerts.not_held;
        let store = st.alerts.store;
        ShardResult {
            counters: st.counters,
            raised: store.raised,
            raised_by_severity: store.raised_by_severity,
            alerts_dropped: store.dropped,
            eve_suppressed: store.eve_suppressed,
            alerts: store.into_aggregates(),
            inventory: st.inventory.finish(),
            rule_state_evicted: analysed.rule_state_evicted,
            first_ns: st.first_ns,
            last_ns: st.last_ns,
            ml: analysed.ml,
            ml_samples: analysed.learned.samples,
            learned_registers_dropped: analysed.learned.registers_dropped,
            learned_windows_dropped: analysed.learned.windows_dropped,
        }
    }
}

/// Turns the ADUs of one stream into requests/responses and rule calls.
struct ModbusSink<'a> {
    st: &'a mut State,
    dir: Dir,
    key: &'a FlowKey,
    pending: &'a mut PendingTable,
    pair: &'a mut PairCache,
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

    /// Add an ADU to the tap, when inspecting.
    fn record(&mut self, ts_ns: u64, make: impl FnOnce(&AduOrigin) -> AduRecord) {
        if self.st.salvaging {
            return;
        }
        let frame = self.st.frame_no;
        let Some(tap) = self.st.tap.as_mut() else {
            return;
        };
        let (src, src_port, dst, dst_port) = match self.dir {
            Dir::ToServer => (
                self.key.client,
                self.key.client_port,
                self.key.server,
                self.key.server_port,
            ),
            Dir::ToClient => (
                self.key.server,
                self.key.server_port,
                self.key.client,
                self.key.client_port,
            ),
        };
        tap.push(make(&AduOrigin {
            frame,
            frame_len: self.st.frame_len,
            ts_ns,
            src,
            src_port,
            dst,
            dst_port,
        }));
    }

    /// Record a request in the inventory; the pair's entry, if it has one.
    /// The entry is looked up once per connection and remembered: a request
    /// then costs no hashing here (`Baseline::record` hashed the pair and
    /// the slave every time, 7 % of the per-frame cost).
    fn note_request(
        &mut self,
        ep: &Endpoints,
        req: &Request<'_>,
        unit: u8,
        ts_ns: u64,
    ) -> Option<PairId> {
        let inventory = &mut self.st.inventory;
        let entry = match self.pair.inventory {
            Some(entry) => entry,
            None => {
                // A pair left out stays out: the inventory never shrinks.
                let entry = inventory.pair(ep.master, ep.slave);
                self.pair.inventory = Some(entry);
                entry
            }
        };
        inventory.on_request(entry, req, unit, ts_ns);
        entry
    }

    fn on_request(&mut self, mbap: &Mbap, pdu: &[u8], ts_ns: u64) -> AduVerdict {
        let req = match parse_request(pdu) {
            Ok(r) => r,
            Err(e) => return self.undecodable(mbap, pdu, &e, ts_ns),
        };
        self.record(ts_ns, |o| AduRecord::request(o, mbap, &req));
        self.st.counters.requests += 1;
        let ep = self.endpoints();
        let fc = req.function_code();
        let pair = self.note_request(&ep, &req, mbap.unit, ts_ns);
        let limits = self.st.cfg.limits;
        self.pending.insert(
            PendingRequest::new(ts_ns, mbap.tid, mbap.unit, &req),
            limits.max_pending_per_flow,
            limits.transaction_timeout_ns,
            &mut self.st.counters,
        );
        let facts = match self.pair.facts {
            Some(f) => f,
            None => *self.pair.facts.insert(self.st.analysis.pair_facts(&ep)),
        };
        let ctx = RequestCtx {
            ts_ns,
            ep,
            unit: mbap.unit,
            tid: mbap.tid,
            req: &req,
            outstanding: self.pending.len(),
            facts,
            pair,
        };
        self.st.analysis.on_request(&ctx, &mut self.st.alerts);
        // Its response may have overtaken it (several RX queues).
        if let Some(early) = self.pending.take_early(mbap.tid, mbap.unit, fc) {
            let request = self.pending.take(mbap.tid, mbap.unit, fc);
            self.handle_early(&early, request);
        }
        AduVerdict::Continue
    }

    fn on_response(&mut self, mbap: &Mbap, pdu: &[u8], ts_ns: u64) -> AduVerdict {
        let resp = match parse_response(pdu) {
            Ok(r) => r,
            Err(e) => return self.undecodable(mbap, pdu, &e, ts_ns),
        };
        self.record(ts_ns, |o| AduRecord::response(o, mbap, &resp));
        if matches!(resp, Response::Exception { .. }) && pdu.len() > 2 {
            // A vendor's longer exception PDU (see `parse_response`).
            self.st.counters.exceptions_with_trailing_bytes += 1;
        }
        self.release_early(ts_ns);
        let request = self.pending.take(mbap.tid, mbap.unit, resp.function_code());
        let hold = self.st.cfg.limits.early_response_hold_ns;
        if request.is_none() && hold > 0 {
            let early = EarlyResponse {
                ts_ns,
                tid: mbap.tid,
                unit: mbap.unit,
                fc: resp.function_code(),
                proto: mbap.proto,
                len: mbap.len,
                pdu: pdu.to_vec(),
            };
            if let Some(old) = self.pending.hold_early(early) {
                self.handle_early(&old, None);
            }
            return AduVerdict::Continue;
        }
        self.handle_response(mbap, &resp, ts_ns, request);
        AduVerdict::Continue
    }

    /// Handle held responses whose request did not come within the hold time.
    /// Inlined check, outlined work: almost no connection ever holds one,
    /// and the call alone cost 20 instructions per response (callgrind).
    #[inline(always)]
    fn release_early(&mut self, now: u64) {
        if self.pending.has_early() {
            self.release_expired_early(now);
        }
    }

    #[cold]
    fn release_expired_early(&mut self, now: u64) {
        let hold = self.st.cfg.limits.early_response_hold_ns;
        for e in self.pending.expired_early(now, hold) {
            self.handle_early(&e, None);
        }
    }

    /// Handle a held response, with its request if it has now been seen.
    fn handle_early(&mut self, e: &EarlyResponse, request: Option<PendingRequest>) {
        let mbap = Mbap {
            tid: e.tid,
            proto: e.proto,
            len: e.len,
            unit: e.unit,
        };
        // It parsed when it was held, so this cannot fail.
        if let Ok(resp) = parse_response(&e.pdu) {
            self.handle_response(&mbap, &resp, e.ts_ns, request);
        }
    }

    /// Count a response and run the rules (or learn) on it.
    fn handle_response(
        &mut self,
        mbap: &Mbap,
        resp: &Response<'_>,
        ts_ns: u64,
        request: Option<PendingRequest>,
    ) {
        self.st.counters.responses += 1;
        if matches!(resp, Response::Exception { .. }) {
            self.st.counters.exceptions += 1;
        }
        if request.is_some() {
            self.st.counters.matched_responses += 1;
            if let Some(h) = self.st.alerts.here {
                let answer = resp
                    .exception_code()
                    .map_or(Answer::Accepted, Answer::Exception);
                self.st
                    .alerts
                    .answer(h.flow_id, mbap.tid, mbap.unit, answer, h.frame);
            }
        } else {
            self.st.counters.unmatched_responses += 1;
            self.unanswered_response(mbap, resp, ts_ns);
        }
        if let Some(Some(id)) = self.pair.inventory {
            self.st
                .inventory
                .on_response(id, request.as_ref(), resp, ts_ns);
        }
        let ctx = ResponseCtx {
            ts_ns,
            ep: self.endpoints(),
            unit: mbap.unit,
            tid: mbap.tid,
            resp,
            request: request.as_ref(),
            pair: self.pair.inventory.flatten(),
        };
        self.st.analysis.on_response(&ctx, &mut self.st.alerts);
    }

    /// A response that answers no outstanding request: one with its
    /// transaction id but another function code (not an exception) is a
    /// mismatch; on a
    /// connection seen from its start, none at all is unsolicited (a
    /// capture that began later may just have missed the request).
    #[cold]
    fn unanswered_response(&mut self, mbap: &Mbap, resp: &Response<'_>, ts_ns: u64) {
        let ep = self.endpoints();
        let (kind, reason) = match self.pending.function_code_of(mbap.tid, mbap.unit) {
            // An exception with another code: what servers send for a
            // request they could not parse (0x80 for a short FC 3), no
            // spoofed answer.
            Some(_) if matches!(resp, Response::Exception { .. }) => return,
            Some(_) => (
                AlertKind::ResponseMismatch,
                "function code other than its request's",
            ),
            None if self.pair.from_start => {
                (AlertKind::UnsolicitedResponse, "no outstanding request")
            }
            None => return,
        };
        let mut alert = ep.from_slave(kind, Severity::Medium, ts_ns);
        alert.unit = mbap.unit;
        alert.function_code = resp.function_code();
        alert.detail = Detail::Malformed { reason };
        alert.tx = Some(response_tx(mbap.tid, resp, None));
        self.st.alerts.raise(alert, 1);
    }

    /// A PDU that does not fit its MBAP length (MALFORMED_MBAP_HEADER), or
    /// whose byte count does not fit its quantity or data
    /// (INVALID_PDU_LENGTH): recorded as undecodable, alerted on, and the
    /// stream resynchronised.
    fn undecodable(&mut self, mbap: &Mbap, pdu: &[u8], e: &PduError, ts_ns: u64) -> AduVerdict {
        let request = self.dir == Dir::ToServer;
        self.record(ts_ns, |o| {
            AduRecord::undecodable(o, mbap, pdu, request, e.describe())
        });
        let mut alert = self.malformed_alert(e.describe(), ts_ns);
        if matches!(e, PduError::ByteCountMismatch { .. }) {
            alert.kind = AlertKind::InvalidPduLength;
        }
        alert.unit = mbap.unit;
        alert.function_code = pdu.first().copied().unwrap_or(0);
        alert.tx = Some(Tx {
            tid: mbap.tid,
            request,
            fc: alert.function_code,
            ..Tx::default()
        });
        self.raise_malformed(alert);
        AduVerdict::Resync
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

    /// Raise an EVASION_ATTEMPT from this direction's sender.
    fn evasion(&mut self, technique: Evasion, policy: TargetPolicy, ts_ns: u64) {
        let ep = self.endpoints();
        let kind = AlertKind::EvasionAttempt;
        let mut alert = match self.dir {
            Dir::ToServer => ep.from_master(kind, Severity::Medium, ts_ns),
            Dir::ToClient => ep.from_slave(kind, Severity::Medium, ts_ns),
        };
        alert.detail = Detail::Evasion { technique, policy };
        self.st.alerts.raise(alert, 1);
    }

    fn raise_malformed(&mut self, alert: Alert) {
        self.st.counters.malformed_adus += 1;
        let st = &mut *self.st;
        st.analysis.on_malformed(alert, &mut st.alerts);
    }
}

impl AduSink for ModbusSink<'_> {
    fn counters(&mut self) -> &mut Counters {
        &mut self.st.counters
    }

    fn adu(&mut self, adu: &[u8], ts_ns: u64) -> AduVerdict {
        let Some(mbap) = Mbap::parse(adu) else {
            return AduVerdict::Resync;
        };
        self.st.counters.modbus_adus += 1;
        let pdu = adu.get(MBAP_LEN..).unwrap_or(&[]);
        match self.dir {
            Dir::ToServer => self.on_request(&mbap, pdu, ts_ns),
            Dir::ToClient => self.on_response(&mbap, pdu, ts_ns),
        }
    }

    fn malformed(&mut self, reason: &'static str, ts_ns: u64) {
        if self.pair.not_modbus {
            // The connection is another protocol (raised once as such):
            // its framing errors are counted, not raised one by one.
            self.st.counters.malformed_adus += 1;
            return;
        }
        let alert = self.malformed_alert(reason, ts_ns);
        self.raise_malformed(alert);
    }

    fn conflicting_copies(&mut self, policy: TargetPolicy, ts_ns: u64) {
        self.evasion(Evasion::ConflictingCopies, policy, ts_ns);
    }

    /// One alert per connection, from the side that first broke the
    /// framing.
    fn not_modbus(&mut self, ts_ns: u64) {
        if std::mem::replace(&mut self.pair.not_modbus, true) {
            return;
        }
        let ep = self.endpoints();
        let kind = AlertKind::NonModbusTraffic;
        let alert = match self.dir {
            Dir::ToServer => ep.from_master(kind, Severity::High, ts_ns),
            Dir::ToClient => ep.from_slave(kind, Severity::High, ts_ns),
        };
        self.st.alerts.raise(alert, 1);
    }

    /// A request behind a header the stream could not frame by, decoded
    /// by its function code's shape and run through the rules like any
    /// other (the framing alert is raised already).
    fn salvage(&mut self, bytes: &[u8], ts_ns: u64) {
        if self.dir != Dir::ToServer {
            return;
        }
        let Some(after) = bytes.get(MBAP_LEN..) else {
            return;
        };
        let Some(pdu) = request_len_by_shape(after).and_then(|n| after.get(..n)) else {
            return;
        };
        let Some(&[t0, t1, p0, p1, _, _, unit]) = bytes.first_chunk::<MBAP_LEN>() else {
            return;
        };
        let mbap = Mbap {
            tid: u16::from_be_bytes([t0, t1]),
            proto: u16::from_be_bytes([p0, p1]),
            // The length the PDU has, as the server took it.
            len: (pdu.len() + 1) as u16,
            unit,
        };
        if parse_request(pdu).is_ok() {
            self.st.counters.salvaged_requests += 1;
            self.st.salvaging = true;
            self.on_request(&mbap, pdu, ts_ns);
            self.st.salvaging = false;
        }
    }
}
