//! Prometheus metrics (`--metrics ADDR`): the run's counters in the
//! exposition format, served over HTTP at `/metrics` by a thread of its
//! own, so that a scrape never touches the packet path. The numbers are
//! the latest the run handed over (every second while live, once at the
//! end of a replay): Prometheus computes the rates.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::alert::{AlertKind, Severity};
use crate::counters::Counters;
use crate::decode::SkipReason;
use crate::source::xdp::XdpCounters;

use super::publish::{Figures as PublishFigures, Published};
use super::report::Summary;
use crate::config::live::LiveConfig;

/// What the metrics show, taken from a run's summary.
#[derive(Debug, Clone, Default)]
pub struct MetricsData {
    pub counters: Counters,
    pub raised: [u64; AlertKind::ALL.len()],
    pub raised_by_severity: [u64; Severity::ALL.len()],
    pub alerts_dropped: u64,
    pub eve_suppressed: u64,
    pub inventory_pairs_dropped: u64,
    pub rule_state_evicted: u64,
    /// Live capture only: the XDP program's counters, the sockets' drops
    /// and the frames dropped because a shard's ring was full, per shard.
    pub xdp: Option<XdpCounters>,
    pub socket_drops: u64,
    pub shard_ring_full: Vec<u64>,
    /// Live capture only: batches waiting for each shard.
    pub shard_queue_depth: Vec<u64>,
}

impl MetricsData {
    pub fn of(s: &Summary) -> Self {
        MetricsData {
            counters: s.counters.clone(),
            raised: s.raised,
            raised_by_severity: s.raised_by_severity,
            alerts_dropped: s.alerts_dropped,
            eve_suppressed: s.eve_suppressed,
            inventory_pairs_dropped: s.inventory.pairs_dropped,
            rule_state_evicted: s.rule_state_evicted,
            ..MetricsData::default()
        }
    }
}

/// The latest figures, shared by the run (which publishes) and the HTTP
/// thread (which renders them per scrape).
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    data: Arc<Mutex<Option<MetricsData>>>,
    /// `--publish`: the publisher's figures, read as they are at each scrape.
    publisher: Arc<OnceLock<Arc<PublishFigures>>>,
    /// `--config-from`: the central settings' story, read at each scrape.
    central: Arc<OnceLock<Arc<LiveConfig>>>,
}

impl Metrics {
    pub fn publish(&self, data: MetricsData) {
        if let Ok(mut m) = self.data.lock() {
            *m = Some(data);
        }
    }

    /// Show the publisher's figures too (once, when it starts).
    pub fn follow_publisher(&self, figures: Arc<PublishFigures>) {
        let _ = self.publisher.set(figures);
    }

    /// Show the central settings' changes too (once, at the start).
    pub fn follow_central(&self, live: Arc<LiveConfig>) {
        let _ = self.central.set(live);
    }

    /// The central settings' figures now: read once, applied, rejected.
    pub fn central(&self) -> Option<CentralFigures> {
        self.central.get().map(|l| {
            let r = l.central();
            CentralFigures {
                loaded: r.loaded,
                applied: r.applied,
                rejected: r.rejected,
            }
        })
    }

    /// The publisher's figures now, if there is one.
    pub fn published(&self) -> Option<Published> {
        self.publisher.get().map(|f| f.snapshot())
    }

    /// The exposition text (OpenMetrics) of the latest figures.
    pub fn render(&self) -> String {
        let data = self
            .data
            .lock()
            .ok()
            .and_then(|m| m.clone())
            .unwrap_or_default();
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Figures(data, self.published(), self.central())));
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

/// One scrape's figures, as a collector of constant metrics.
#[derive(Debug)]
struct Figures(MetricsData, Option<Published>, Option<CentralFigures>);

/// What the metrics and stats events say of the central settings.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct CentralFigures {
    pub loaded: bool,
    pub applied: u64,
    pub rejected: u64,
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, MetricType::Counter)?)
}

fn counters<'a>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &'static str,
    values: impl IntoIterator<Item = (&'a str, u64)>,
) -> std::fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (l, v) in values {
        ConstCounter::new(v).encode(m.encode_family(&[(label, l)])?)?;
    }
    Ok(())
}

impl Collector for Figures {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let d = &self.0;
        let c = &d.counters;
        {
            let info = ConstGauge::new(1i64);
            let mut m = e.encode_descriptor(
                "modbus_detect_build_info",
                "The build: its version",
                None,
                MetricType::Gauge,
            )?;
            info.encode(m.encode_family(&[("version", env!("CARGO_PKG_VERSION"))])?)?;
        }
        for (name, help, v) in [
            (
                "modbus_detect_frames",
                "Frames read from the source",
                c.frames,
            ),
            ("modbus_detect_bytes", "Bytes of those frames", c.bytes),
            (
                "modbus_detect_modbus_frames",
                "Frames that reached a shard (TCP on a Modbus port)",
                c.modbus_frames,
            ),
            (
                "modbus_detect_modbus_adus",
                "Modbus ADUs decoded",
                c.modbus_adus,
            ),
            ("modbus_detect_requests", "Modbus requests", c.requests),
            ("modbus_detect_responses", "Modbus responses", c.responses),
            (
                "modbus_detect_exceptions",
                "Modbus exception responses",
                c.exceptions,
            ),
            (
                "modbus_detect_malformed_adus",
                "ADUs with a malformed header or PDU",
                c.malformed_adus,
            ),
            ("modbus_detect_flows", "TCP connections tracked", c.flows),
            (
                "modbus_detect_flows_evicted",
                "Connections evicted because the table was full",
                c.flows_evicted,
            ),
            (
                "modbus_detect_flows_expired",
                "Connections let go after the idle timeout",
                c.flows_expired,
            ),
            (
                "modbus_detect_reassembly_gaps",
                "Holes in TCP streams (capture loss)",
                c.reassembly_gaps,
            ),
            (
                "modbus_detect_checksum_errors",
                "Segments dropped for a wrong checksum",
                c.checksum_errors,
            ),
            (
                "modbus_detect_overlap_conflicts",
                "Overlapping TCP data that differs",
                c.overlap_conflicts,
            ),
            (
                "modbus_detect_transactions_expired",
                "Requests never answered",
                c.transactions_expired,
            ),
            (
                "modbus_detect_inventory_pairs_dropped",
                "Requests of pairs left out of the full inventory",
                d.inventory_pairs_dropped,
            ),
            (
                "modbus_detect_rule_state_evicted",
                "Entries evicted from the rules' full state tables",
                d.rule_state_evicted,
            ),
        ] {
            counter(&mut e, name, help, v)?;
        }
        counters(
            &mut e,
            "modbus_detect_skipped_frames",
            "Frames skipped before the shards, by reason",
            "reason",
            SkipReason::ALL
                .iter()
                .map(|r| (r.name(), c.skipped[r.index()])),
        )?;
        counters(
            &mut e,
            "modbus_detect_alerts",
            "Alerts raised, by type",
            "type",
            AlertKind::ALL
                .iter()
                .map(|k| (k.name(), d.raised[*k as usize])),
        )?;
        counters(
            &mut e,
            "modbus_detect_alerts_by_severity",
            "Alerts raised, by severity",
            "severity",
            Severity::ALL
                .iter()
                .map(|s| (s.name(), d.raised_by_severity[*s as usize])),
        )?;
        let xdp = d.xdp.unwrap_or_default();
        counters(
            &mut e,
            "modbus_detect_drops",
            "What was lost, by stage: XDP redirects that found no socket, the sockets' drops, shards' full rings, alerts whose key did not fit the table, alert lines folded into later ones",
            "stage",
            [
                ("xdp_redirect_failed", xdp.redirect_failed),
                ("socket", d.socket_drops),
                ("shard_ring_full", d.shard_ring_full.iter().sum()),
                ("alert_table_full", d.alerts_dropped),
                ("eve_line_suppressed", d.eve_suppressed),
            ],
        )?;
        let shards: Vec<String> = (0..d.shard_ring_full.len().max(d.shard_queue_depth.len()))
            .map(|i| i.to_string())
            .collect();
        counters(
            &mut e,
            "modbus_detect_shard_ring_full_drops",
            "Frames dropped because the shard's ring was full, by shard",
            "shard",
            shards
                .iter()
                .map(String::as_str)
                .zip(d.shard_ring_full.iter().copied()),
        )?;
        if !d.shard_queue_depth.is_empty() {
            let mut m = e.encode_descriptor(
                "modbus_detect_shard_queue_depth",
                "Batches of frames waiting for the shard (each RX queue's ring holds 64): a shard that falls behind shows here before its ring overflows",
                None,
                MetricType::Gauge,
            )?;
            for (shard, depth) in shards.iter().zip(&d.shard_queue_depth) {
                let g = ConstGauge::new(i64::try_from(*depth).unwrap_or(i64::MAX));
                g.encode(m.encode_family(&[("shard", shard.as_str())])?)?;
            }
        }
        if let Some(p) = self.1 {
            counter(
                &mut e,
                "modbus_detect_published",
                "Events (alert lines, stats) the streaming engine acknowledged",
                p.acked,
            )?;
            counter(
                &mut e,
                "modbus_detect_publish_spooled",
                "Events written to the on-disk spool while the engine was unreachable or behind",
                p.spooled,
            )?;
            counters(
                &mut e,
                "modbus_detect_publish_dropped",
                "Events lost to publishing, by reason: the queue to the publishing thread was full, or the spool was",
                "reason",
                [("queue_full", p.queue_full_drops), ("spool_full", p.spool_dropped)],
            )?;
            counter(
                &mut e,
                "modbus_detect_publish_send_failures",
                "Sends that failed (each retried from the spool)",
                p.send_failures,
            )?;
            let g = ConstGauge::new(i64::try_from(p.spool_waiting).unwrap_or(i64::MAX));
            g.encode(e.encode_descriptor(
                "modbus_detect_publish_spool_waiting",
                "Events waiting in the spool",
                None,
                MetricType::Gauge,
            )?)?;
        }
        if let Some(c) = self.2 {
            counters(
                &mut e,
                "modbus_detect_config_changes",
                "Changes of the central settings (--config-from): applied, or refused whole (the item kept its last value)",
                "outcome",
                [("applied", c.applied), ("rejected", c.rejected)],
            )?;
            let g = ConstGauge::new(i64::from(c.loaded));
            g.encode(e.encode_descriptor(
                "modbus_detect_config_loaded",
                "1 once the central settings' bucket was read (0: the local settings run)",
                None,
                MetricType::Gauge,
            )?)?;
        }
        if let Some(x) = d.xdp {
            counter(
                &mut e,
                "modbus_detect_xdp_seen",
                "Frames the XDP program saw",
                x.seen,
            )?;
            counter(
                &mut e,
                "modbus_detect_xdp_redirected",
                "Frames the XDP program sent to userspace",
                x.redirected,
            )?;
        }
        Ok(())
    }
}

/// Serve `/metrics` on `addr` from a thread of its own; the address bound
/// (port 0 picks one). Fails at once, naming the address, when it cannot
/// be bound.
pub fn serve(addr: SocketAddr, metrics: Metrics) -> std::io::Result<SocketAddr> {
    let (listener, bound) = super::http::bind(addr)?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let m = metrics.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    m.render(),
                )
            }
        }),
    );
    super::http::spawn("metrics", listener, app)?;
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_published_figures() {
        let m = Metrics::default();
        let mut d = MetricsData::default();
        d.counters.frames = 1234;
        d.raised[AlertKind::RogueMaster as usize] = 7;
        d.shard_ring_full = vec![1, 2];
        d.shard_queue_depth = vec![0, 5];
        m.publish(d);
        let text = m.render();
        assert!(text.contains("modbus_detect_frames_total 1234\n"), "{text}");
        assert!(
            text.contains("modbus_detect_alerts_total{type=\"ROGUE_MODBUS_MASTER\"} 7\n"),
            "{text}"
        );
        assert!(
            text.contains("modbus_detect_drops_total{stage=\"shard_ring_full\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("modbus_detect_shard_queue_depth{shard=\"1\"} 5\n"),
            "{text}"
        );
        assert!(text.contains("modbus_detect_build_info{version="), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
