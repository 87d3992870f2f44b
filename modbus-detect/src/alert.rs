//! Alerts: their types and severities, and per-shard aggregation.
//!
//! A rule raises an [`Alert`] for every offending event. The shard's
//! [`AlertStore`] folds identical alerts (same type, endpoints, unit, function
//! code and register) into one [`Aggregate`] with a count and first/last seen,
//! so a flood of a million requests is one report entry whose count is exact.
//! The store is bounded: a key that does not fit is dropped and counted.
//! EVE lines are rate-limited per key; suppressed lines are counted too.

use std::net::{IpAddr, Ipv4Addr};

use crate::detect::program::ProgramOp;
use crate::detect::protocol::ReservedReason;
use crate::flow::policy::TargetPolicy;
use crate::keyed::KeyedMap;
use serde::Serialize;

/// Alert types, with the original tool's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum AlertKind {
    RogueMaster,
    UnauthorizedWrite,
    RegisterOutOfRange,
    DeviceEnumeration,
    NewFunctionCode,
    RegisterExcessiveRate,
    ExceptionBurst,
    TimingAnomaly,
    MalformedMbap,
    Flood,
    /// A master-slave pair's window of traffic unlike any of the baseline's
    /// (Isolation Forest / One-Class SVM, `--ml`).
    MlAnomaly,
    /// Someone shows the sensor and the PLC different bytes: conflicting
    /// copies of TCP data (or, later, of IP fragments).
    EvasionAttempt,
    /// Program upload/download, start/stop, mode changes (UMAS, FC 125/126,
    /// FC 8 restart and listen-only).
    PlcProgramOperation,
    /// A request with a reserved, unassigned or invalid function code,
    /// FC 8 sub-function or FC 43 MEI type.
    ReservedFunctionCode,
    /// A slave answering again and again with exception 5 or 6.
    SlaveBusyAckDelay,
    /// One master probing many function codes of a slave.
    FunctionCodeScan,
    /// One master sweeping a slave's addresses.
    AddressScan,
    /// One master addressing many unit ids of a slave or gateway.
    UnitIdScan,
    /// A stream on a Modbus port that is another protocol.
    NonModbusTraffic,
    /// A byte count or quantity that does not fit the function code.
    InvalidPduLength,
    /// A response with no outstanding request.
    UnsolicitedResponse,
    /// A response that does not match its request.
    ResponseMismatch,
}

impl AlertKind {
    pub const ALL: [AlertKind; 22] = [
        AlertKind::RogueMaster,
        AlertKind::UnauthorizedWrite,
        AlertKind::RegisterOutOfRange,
        AlertKind::DeviceEnumeration,
        AlertKind::NewFunctionCode,
        AlertKind::RegisterExcessiveRate,
        AlertKind::ExceptionBurst,
        AlertKind::TimingAnomaly,
        AlertKind::MalformedMbap,
        AlertKind::Flood,
        AlertKind::MlAnomaly,
        AlertKind::EvasionAttempt,
        AlertKind::PlcProgramOperation,
        AlertKind::ReservedFunctionCode,
        AlertKind::SlaveBusyAckDelay,
        AlertKind::FunctionCodeScan,
        AlertKind::AddressScan,
        AlertKind::UnitIdScan,
        AlertKind::NonModbusTraffic,
        AlertKind::InvalidPduLength,
        AlertKind::UnsolicitedResponse,
        AlertKind::ResponseMismatch,
    ];

    /// The type name users' scripts and SIEM parsers match on.
    pub fn name(self) -> &'static str {
        match self {
            AlertKind::RogueMaster => "ROGUE_MODBUS_MASTER",
            AlertKind::UnauthorizedWrite => "UNAUTHORIZED_MODBUS_WRITE",
            AlertKind::RegisterOutOfRange => "REGISTER_VALUE_OUT_OF_RANGE",
            AlertKind::DeviceEnumeration => "DEVICE_ENUMERATION",
            AlertKind::NewFunctionCode => "NEW_FUNCTION_CODE",
            AlertKind::RegisterExcessiveRate => "REGISTER_VALUE_EXCESSIVE_RATE",
            AlertKind::ExceptionBurst => "EXCEPTION_BURST",
            AlertKind::TimingAnomaly => "TIMING_ANOMALY",
            AlertKind::MalformedMbap => "MALFORMED_MBAP_HEADER",
            AlertKind::Flood => "MODBUS_FLOOD",
            AlertKind::MlAnomaly => "ML_ANOMALY",
            AlertKind::EvasionAttempt => "EVASION_ATTEMPT",
            AlertKind::PlcProgramOperation => "PLC_PROGRAM_OPERATION",
            AlertKind::ReservedFunctionCode => "RESERVED_FUNCTION_CODE",
            AlertKind::SlaveBusyAckDelay => "SLAVE_BUSY_ACK_DELAY",
            AlertKind::FunctionCodeScan => "FUNCTION_CODE_SCAN",
            AlertKind::AddressScan => "ADDRESS_SCAN",
            AlertKind::UnitIdScan => "UNIT_ID_SCAN",
            AlertKind::NonModbusTraffic => "NON_MODBUS_TRAFFIC",
            AlertKind::InvalidPduLength => "INVALID_PDU_LENGTH",
            AlertKind::UnsolicitedResponse => "UNSOLICITED_RESPONSE",
            AlertKind::ResponseMismatch => "RESPONSE_MISMATCH",
        }
    }

    /// Stable rule id (report `rule_id`); never reuse a number.
    pub fn rule_id(self) -> &'static str {
        match self {
            AlertKind::RogueMaster => "MBD-001",
            AlertKind::UnauthorizedWrite => "MBD-002",
            AlertKind::RegisterOutOfRange => "MBD-003",
            AlertKind::DeviceEnumeration => "MBD-004",
            AlertKind::NewFunctionCode => "MBD-005",
            AlertKind::RegisterExcessiveRate => "MBD-006",
            AlertKind::ExceptionBurst => "MBD-007",
            AlertKind::TimingAnomaly => "MBD-008",
            AlertKind::MalformedMbap => "MBD-009",
            AlertKind::Flood => "MBD-010",
            AlertKind::MlAnomaly => "MBD-011",
            AlertKind::EvasionAttempt => "MBD-012",
            AlertKind::PlcProgramOperation => "MBD-013",
            AlertKind::ReservedFunctionCode => "MBD-014",
            AlertKind::SlaveBusyAckDelay => "MBD-015",
            AlertKind::FunctionCodeScan => "MBD-016",
            AlertKind::AddressScan => "MBD-017",
            AlertKind::UnitIdScan => "MBD-018",
            AlertKind::NonModbusTraffic => "MBD-019",
            AlertKind::InvalidPduLength => "MBD-020",
            AlertKind::UnsolicitedResponse => "MBD-021",
            AlertKind::ResponseMismatch => "MBD-022",
        }
    }

    /// Numeric signature id for EVE records (Suricata's `signature_id`).
    pub fn signature_id(self) -> u32 {
        9_100_001 + self as u32
    }

    /// EVE `alert.category`.
    pub fn category(self) -> &'static str {
        match self {
            AlertKind::RogueMaster | AlertKind::UnauthorizedWrite => "Unauthorized Access",
            AlertKind::RegisterOutOfRange | AlertKind::RegisterExcessiveRate => {
                "Process Safety Violation"
            }
            AlertKind::DeviceEnumeration => "Reconnaissance",
            AlertKind::NewFunctionCode | AlertKind::TimingAnomaly | AlertKind::MlAnomaly => {
                "Behavioural Anomaly"
            }
            AlertKind::ExceptionBurst => "Device Fault or Probing",
            AlertKind::MalformedMbap => "Protocol Anomaly",
            AlertKind::Flood => "Denial of Service",
            AlertKind::EvasionAttempt => "Sensor Evasion",
            AlertKind::PlcProgramOperation => "Program Change",
            AlertKind::ReservedFunctionCode => "Protocol Anomaly",
            AlertKind::SlaveBusyAckDelay => "Device Fault or Probing",
            AlertKind::NonModbusTraffic
            | AlertKind::InvalidPduLength
            | AlertKind::UnsolicitedResponse
            | AlertKind::ResponseMismatch => "Protocol Anomaly",
            AlertKind::FunctionCodeScan | AlertKind::AddressScan | AlertKind::UnitIdScan => {
                "Reconnaissance"
            }
        }
    }
}

/// Severities, ordered so that `Critical` is the greatest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 4] = [
        Severity::Critical,
        Severity::High,
        Severity::Medium,
        Severity::Low,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Severity::Low => "LOW",
            Severity::Medium => "MEDIUM",
            Severity::High => "HIGH",
            Severity::Critical => "CRITICAL",
        }
    }

    /// Parse a user-supplied severity (`--fail-on high`).
    pub fn parse(s: &str) -> Option<Severity> {
        match s.to_ascii_uppercase().as_str() {
            "LOW" => Some(Severity::Low),
            "MEDIUM" => Some(Severity::Medium),
            "HIGH" => Some(Severity::High),
            "CRITICAL" => Some(Severity::Critical),
            _ => None,
        }
    }

    /// EVE `alert.severity`: 1 is the most severe, as in Suricata.
    pub fn eve_level(self) -> u8 {
        match self {
            Severity::Critical => 1,
            Severity::High => 2,
            Severity::Medium => 3,
            Severity::Low => 4,
        }
    }
}

/// Why a flood alert fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloodReason {
    /// Many consecutive requests closer together than the flood interval.
    BackToBack,
    /// Too many requests outstanding (unanswered) on one connection.
    Outstanding,
}

/// How someone tried to show the sensor other bytes than the PLC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evasion {
    /// Two copies of the same TCP bytes differ.
    ConflictingCopies,
    /// IP fragments overlapped with different bytes.
    OverlappingFragments,
    /// A fragment other than the last was smaller than any link makes.
    TinyFragments,
}

impl Evasion {
    pub fn name(self) -> &'static str {
        match self {
            Evasion::ConflictingCopies => "conflicting_tcp_copies",
            Evasion::OverlappingFragments => "overlapping_ip_fragments",
            Evasion::TinyFragments => "tiny_ip_fragments",
        }
    }
}

/// The type-specific part of an alert. `Copy` and small: rules never allocate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Detail {
    None,
    /// DEVICE_ENUMERATION: FC 8 sub-function or FC 43 MEI type.
    Enumeration {
        sub_function: Option<u16>,
        mei: Option<u8>,
    },
    /// REGISTER_VALUE_OUT_OF_RANGE: index of the entry in the limits file.
    Range {
        limit: u32,
        min: f64,
        max: f64,
        from_response: bool,
    },
    /// REGISTER_VALUE_EXCESSIVE_RATE.
    Rate {
        limit: u32,
        previous: i64,
        interval_ns: u64,
        rate: f64,
        max_rate: f64,
    },
    /// TIMING_ANOMALY.
    Timing {
        interval_ns: u64,
        mean_s: f64,
        std_s: f64,
        sigmas: f64,
    },
    /// EXCEPTION_BURST: exception code and the exceptions in the window.
    Exception {
        code: u8,
        in_window: u32,
    },
    /// MALFORMED_MBAP_HEADER: what is wrong.
    Malformed {
        reason: &'static str,
    },
    /// MODBUS_FLOOD.
    Flood {
        reason: FloodReason,
        run: u32,
        interval_ns: u64,
    },
    /// NEW_FUNCTION_CODE: whether the pair itself was in the baseline.
    NewFunctionCode {
        pair_in_baseline: bool,
    },
    /// EVASION_ATTEMPT: what was seen, and the receiver's policy that
    /// chose among the copies.
    Evasion {
        technique: Evasion,
        policy: TargetPolicy,
    },
    /// FUNCTION_CODE_SCAN, ADDRESS_SCAN, UNIT_ID_SCAN: how many distinct
    /// codes, addresses or units were asked (or, `refused`, refused) in
    /// the window.
    Scan {
        distinct: u32,
        refused: bool,
    },
    /// RESERVED_FUNCTION_CODE: what is reserved.
    Reserved {
        reason: ReservedReason,
    },
    /// PLC_PROGRAM_OPERATION: which operation.
    Program {
        op: ProgramOp,
    },
    /// ML_ANOMALY: the window's scores against the models' thresholds, and
    /// the feature furthest from normal (index into the model's features).
    Ml {
        iforest_score: f64,
        iforest_threshold: f64,
        ocsvm_decision: f64,
        ocsvm_threshold: f64,
        feature: u8,
        z: f64,
        window_start_ns: u64,
        requests: u32,
        /// The original pipeline's threat label of the window.
        label: crate::detect::ml::ThreatLabel,
    },
}

/// The Modbus message an alert was raised on, for its alert line's
/// `modbus` object (Suricata's shape): `None` on alerts about many
/// messages (a scan, a window of traffic) or none (a connection that is
/// not Modbus).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tx {
    pub tid: u16,
    /// Raised on the request (else on the response).
    pub request: bool,
    /// The function code on the wire (0x80 set in an exception).
    pub fc: u8,
    /// What the request reads: start address and quantity.
    pub read: Option<(u16, u16)>,
    /// What it writes: the start address, and the value of a single write.
    pub write: Option<(u16, Option<u16>)>,
    /// The response's exception code.
    pub exception: Option<u8>,
}

/// Values of a write kept on its alerts, at most.
pub const WRITE_VALUES: usize = 8;

/// What a write asked and what the PLC answered, on alerts raised on a
/// write request: the shard holds such alerts until the answer comes (or
/// the transaction times out, or the connection ends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteCtx {
    pub table: crate::modbus::pdu::Table,
    pub start: u16,
    /// Registers or coils written.
    pub count: u16,
    /// The first values written (coils as 0 or 1), `shown` of them.
    pub values: [u16; WRITE_VALUES],
    pub shown: u8,
    pub answer: Answer,
    /// The response's frame (0: none).
    pub response_frame: u64,
}

/// The PLC's answer to a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Not seen yet (or not waited for: the shard's hold was full).
    Pending,
    /// A normal response: the PLC took the write.
    Accepted,
    /// An exception response, with its code.
    Exception(u8),
    /// No response within the transaction timeout, or before the
    /// connection ended.
    None,
}

impl Answer {
    pub fn name(self) -> &'static str {
        match self {
            Answer::Pending => "unknown",
            Answer::Accepted => "accepted",
            Answer::Exception(_) => "exception",
            Answer::None => "none",
        }
    }
}

/// Where an alert was raised: its connection, frame and direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The connection's `flow_id` (see `flow::flow_id`).
    pub flow_id: u64,
    /// The frame's number: in the capture file (replay), or since capture
    /// started (live).
    pub frame: u64,
    /// The alert's source is the connection's client.
    pub to_server: bool,
}

/// One raised alert, before aggregation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Alert {
    pub kind: AlertKind,
    pub severity: Severity,
    /// Capture time of the frame that raised it, ns since the epoch.
    pub ts_ns: u64,
    pub src: IpAddr,
    pub src_port: u16,
    pub dst: IpAddr,
    pub dst_port: u16,
    pub unit: u8,
    pub function_code: u8,
    /// Register in Modicon numbering (40001 = holding register 0).
    pub register: Option<u32>,
    pub value: Option<i64>,
    pub detail: Detail,
    /// The message it was raised on (its unit id and function code are
    /// only known when this is set).
    pub tx: Option<Tx>,
    /// Its connection and frame, stamped by the shard.
    pub stamp: Option<Stamp>,
    /// Raised on a write: what it wrote and what the PLC answered.
    pub write: Option<WriteCtx>,
}

/// What makes two alerts "the same" for aggregation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AlertKey {
    pub kind: AlertKind,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub unit: u8,
    pub function_code: u8,
    pub register: Option<u32>,
    /// What else tells two alerts of a type apart (a PLC program
    /// operation's code; 0 for the other types).
    pub sub: u16,
}

/// Placeholder for a key field a type does not aggregate on.
const ANY_ADDR: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

impl Alert {
    /// The aggregation key. An exception burst belongs to the slave: its
    /// exceptions to every master and for every function code are one alert.
    pub fn key(&self) -> AlertKey {
        match self.kind {
            AlertKind::ExceptionBurst => AlertKey {
                kind: self.kind,
                src: self.src,
                dst: ANY_ADDR,
                unit: self.unit,
                function_code: 0,
                register: None,
                sub: 0,
            },
            _ => AlertKey {
                kind: self.kind,
                src: self.src,
                dst: self.dst,
                unit: self.unit,
                function_code: self.function_code,
                register: self.register,
                sub: match self.detail {
                    Detail::Program { op } => op.code(),
                    _ => 0,
                },
            },
        }
    }
}

/// Identical alerts folded together.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    /// The first alert of the key (its endpoints, value and detail).
    pub first: Alert,
    /// The most recent alert of the key.
    pub last: Alert,
    pub count: u64,
    /// Highest severity raised under this key.
    pub severity: Severity,
    /// Capture time of the last EVE line written for this key.
    eve_last_ns: u64,
    /// Alerts folded since that line.
    eve_pending: u64,
}

/// An EVE line to write: the alert as raised now, with how many identical
/// alerts were folded into it since the key's previous line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EveEvent {
    pub alert: Alert,
    /// Total count of the key so far.
    pub count: u64,
    /// Alerts this line stands for: 1, or more where a rule recognises
    /// an attack after several events and raises them at once (a flood's
    /// run, an exception burst).
    pub events: u64,
    /// Alerts of this key not written as lines since the previous line.
    pub suppressed: u64,
}

/// Per-shard alert aggregation, bounded by `max_keys`.
#[derive(Debug)]
pub struct AlertStore {
    aggregates: KeyedMap<AlertKey, Aggregate>,
    max_keys: usize,
    eve_interval_ns: u64,
    /// Alerts raised, by type (every raise, whether stored, folded or dropped).
    pub raised: [u64; AlertKind::ALL.len()],
    /// The same, by severity (indexed by `Severity as usize`).
    pub raised_by_severity: [u64; Severity::ALL.len()],
    /// Alerts whose key did not fit in the store.
    pub dropped: u64,
    /// Alerts folded without an EVE line of their own.
    pub eve_suppressed: u64,
}

impl AlertStore {
    pub fn new(max_keys: usize, eve_interval_ns: u64) -> Self {
        AlertStore {
            aggregates: KeyedMap::default(),
            max_keys,
            eve_interval_ns,
            raised: [0; AlertKind::ALL.len()],
            raised_by_severity: [0; Severity::ALL.len()],
            dropped: 0,
            eve_suppressed: 0,
        }
    }

    /// Record `n` occurrences of an alert (rules that recognise an attack
    /// after several events fold them in at once); returns the EVE event to
    /// write, if the key's rate limit lets one through.
    pub fn raise(&mut self, alert: Alert, n: u64) -> Option<EveEvent> {
        self.raised[alert.kind as usize] += n;
        self.raised_by_severity[alert.severity as usize] += n;
        let key = alert.key();
        if let Some(agg) = self.aggregates.get_mut(&key) {
            agg.count += n;
            agg.last = alert;
            agg.severity = agg.severity.max(alert.severity);
            let due = alert.ts_ns.saturating_sub(agg.eve_last_ns) >= self.eve_interval_ns;
            if due || alert.severity > agg.first.severity {
                let event = EveEvent {
                    alert,
                    count: agg.count,
                    events: n,
                    suppressed: agg.eve_pending,
                };
                agg.eve_last_ns = alert.ts_ns;
                agg.eve_pending = 0;
                return Some(event);
            }
            agg.eve_pending += n;
            self.eve_suppressed += n;
            return None;
        }
        if self.aggregates.len() >= self.max_keys {
            self.dropped += n;
            // One line per event was asked for (no rate limit): the event
            // still gets its line, though its key is not kept.
            return (self.eve_interval_ns == 0).then_some(EveEvent {
                alert,
                count: n,
                events: n,
                suppressed: 0,
            });
        }
        self.aggregates.insert(
            key,
            Aggregate {
                first: alert,
                last: alert,
                count: n,
                severity: alert.severity,
                eve_last_ns: alert.ts_ns,
                eve_pending: 0,
            },
        );
        Some(EveEvent {
            alert,
            count: n,
            events: n,
            suppressed: 0,
        })
    }

    /// Number of distinct keys held.
    pub fn len(&self) -> usize {
        self.aggregates.len()
    }

    pub fn is_empty(&self) -> bool {
        self.aggregates.is_empty()
    }

    /// The aggregates, for the report.
    pub fn into_aggregates(self) -> Vec<Aggregate> {
        self.aggregates.into_values().collect()
    }

    /// A copy of the aggregates so far (periodic reports while live).
    pub fn aggregates(&self) -> Vec<Aggregate> {
        self.aggregates.values().cloned().collect()
    }
}

/// Report order: severity (highest first), then first seen, then a stable key,
/// so the same capture gives the same report whatever the shard count.
pub fn sort_for_report(aggs: &mut [Aggregate]) {
    aggs.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(a.first.ts_ns.cmp(&b.first.ts_ns))
            .then(a.first.key().cmp(&b.first.key()))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(kind: AlertKind, ts_ns: u64, src: [u8; 4]) -> Alert {
        Alert {
            kind,
            severity: Severity::High,
            ts_ns,
            src: IpAddr::from(src),
            src_port: 40000,
            dst: IpAddr::from([10, 0, 0, 1]),
            dst_port: 502,
            unit: 1,
            function_code: 3,
            register: None,
            value: None,
            detail: Detail::None,
            tx: None,
            stamp: None,
            write: None,
        }
    }

    #[test]
    fn identical_alerts_fold_with_exact_count() {
        let mut store = AlertStore::new(10, 1_000_000_000);
        for i in 0..1000u64 {
            store.raise(alert(AlertKind::RogueMaster, i * 1000, [10, 0, 0, 9]), 1);
        }
        assert_eq!(store.len(), 1);
        assert_eq!(store.raised[AlertKind::RogueMaster as usize], 1000);
        let aggs = store.into_aggregates();
        assert_eq!(aggs[0].count, 1000);
        assert_eq!(aggs[0].first.ts_ns, 0);
        assert_eq!(aggs[0].last.ts_ns, 999_000);
    }

    #[test]
    fn eve_lines_are_rate_limited_and_suppressions_counted() {
        let mut store = AlertStore::new(10, 1_000_000_000);
        let mut lines = Vec::new();
        // 30 alerts, 100 ms apart: 3 s of capture time.
        for i in 0..30u64 {
            if let Some(ev) =
                store.raise(alert(AlertKind::Flood, i * 100_000_000, [10, 0, 0, 9]), 1)
            {
                lines.push(ev);
            }
        }
        assert_eq!(lines.len(), 3, "one line per second of capture time");
        assert_eq!(lines[1].suppressed, 9);
        assert_eq!(lines[1].count, 11);
        assert_eq!(store.eve_suppressed, 27);
    }

    #[test]
    fn full_store_drops_new_keys_but_counts_them() {
        let mut store = AlertStore::new(2, 0);
        for last in 1..=5u8 {
            store.raise(alert(AlertKind::RogueMaster, 0, [10, 0, 0, last]), 1);
        }
        assert_eq!(store.len(), 2);
        assert_eq!(store.dropped, 3);
        assert_eq!(store.raised[AlertKind::RogueMaster as usize], 5);
    }

    #[test]
    fn exception_burst_folds_across_masters() {
        let mut store = AlertStore::new(10, 0);
        let mut a = alert(AlertKind::ExceptionBurst, 0, [10, 0, 0, 1]);
        store.raise(a, 1);
        a.dst = IpAddr::from([10, 0, 0, 77]);
        a.function_code = 4;
        store.raise(a, 1);
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn report_order_is_severity_then_time() {
        let mut low = alert(AlertKind::TimingAnomaly, 5, [1, 1, 1, 1]);
        low.severity = Severity::Medium;
        let mut crit = alert(AlertKind::RogueMaster, 9, [1, 1, 1, 2]);
        crit.severity = Severity::Critical;
        let early = alert(AlertKind::Flood, 1, [1, 1, 1, 3]);
        let mut store = AlertStore::new(10, 0);
        for a in [low, crit, early] {
            store.raise(a, 1);
        }
        let mut aggs = store.into_aggregates();
        sort_for_report(&mut aggs);
        let kinds: Vec<_> = aggs.iter().map(|a| a.first.kind).collect();
        assert_eq!(
            kinds,
            [
                AlertKind::RogueMaster,
                AlertKind::Flood,
                AlertKind::TimingAnomaly
            ]
        );
    }
}
