//! `modbus-detect console`: one view of a fleet of sensors. It reads the
//! events the sensors publish (`--publish`) from the JetStream stream with
//! a durable consumer named for it, builds [`fleet::Fleet`] in memory (it
//! keeps nothing on disk: on start the consumer is made again and the
//! stream read from its beginning), and serves it over HTTP: the sensors'
//! health, every alert with its sensor, the merged inventory, and the
//! alerts only the fleet can raise.
//!
//! Served as the dashboard is: loopback unless a token is given, the
//! token on every request, GET only, the same security headers.

pub mod fleet;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use axum::extract::State;
use axum::http::{header, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::StreamExt;
use serde_json::json;

use crate::dashboard::serve::{guard, percent_decode, token_query, typed, ServeError};
use crate::output::http;
use crate::output::publish::nats::{connect, Connect};
use fleet::Fleet;

/// Where the console reads from.
#[derive(Debug, Clone)]
pub struct Source {
    /// The servers, with the credentials and CA to reach them.
    pub connect: Connect,
    pub stream: String,
    pub consumer: String,
}

struct Shared {
    fleet: Mutex<Fleet>,
}

/// Read the stream into the fleet until `stop`; connect again after any
/// failure (the servers restart, the stream is made later).
fn consume(source: Source, shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        eprintln!("modbus-detect: console: cannot start a runtime");
        return;
    };
    // Until the consumer was made again once, a consumer of an earlier
    // console must not be resumed (its history is not in this one).
    let mut fresh = false;
    while !stop.load(Ordering::Relaxed) {
        let run = rt.block_on(read(&source, &shared, &stop, &mut fresh));
        if let Err(e) = run {
            eprintln!(
                "modbus-detect: console: {}: {e}; connecting again",
                source.connect.servers
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

async fn read(
    source: &Source,
    shared: &Shared,
    stop: &AtomicBool,
    fresh: &mut bool,
) -> Result<(), String> {
    let client = connect(&source.connect).await?;
    let js = jetstream::new(client);
    let stream = js
        .get_stream(&source.stream)
        .await
        .map_err(|e| format!("stream {}: {e}", source.stream))?;
    if !*fresh {
        // The fleet is rebuilt from the stream's first event.
        let _ = stream.delete_consumer(&source.consumer).await;
    }
    let consumer: consumer::PullConsumer = stream
        .get_or_create_consumer(
            &source.consumer,
            consumer::pull::Config {
                durable_name: Some(source.consumer.clone()),
                deliver_policy: consumer::DeliverPolicy::All,
                ack_policy: consumer::AckPolicy::Explicit,
                filter_subject: "modbus.>".into(),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| format!("consumer {}: {e}", source.consumer))?;
    *fresh = true;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    while !stop.load(Ordering::Relaxed) {
        let next = tokio::time::timeout(Duration::from_millis(500), messages.next()).await;
        let Ok(next) = next else {
            continue;
        };
        let Some(m) = next else {
            return Err("the consumer ended".into());
        };
        let m = m.map_err(|e| e.to_string())?;
        if let Ok(mut f) = shared.fleet.lock() {
            f.apply(&m.subject, &m.payload);
        }
        m.ack().await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Start reading and serving; the address bound.
pub fn start(
    source: Source,
    listen: SocketAddr,
    token: Option<String>,
    stop: Arc<AtomicBool>,
) -> Result<SocketAddr, ServeError> {
    if token.is_none() && !listen.ip().is_loopback() {
        return Err(ServeError::NeedsToken { addr: listen });
    }
    let fail = |source| ServeError::Listen {
        addr: listen,
        source,
    };
    let (listener, bound) = http::bind(listen).map_err(fail)?;
    let shared = Arc::new(Shared {
        fleet: Mutex::new(Fleet::default()),
    });
    let app = axum::Router::new()
        .route("/", get(index))
        .route("/app.css", get(style))
        .route("/page.js", get(crate::dashboard::serve::common_script))
        .route("/console.js", get(script))
        .route("/api/sensors", get(sensors))
        .route("/api/alerts", get(alerts))
        .route("/api/inventory", get(inventory))
        .route("/api/fleet-alerts", get(fleet_alerts))
        .layer(axum::middleware::from_fn_with_state(Arc::new(token), guard))
        .with_state(shared.clone());
    http::spawn("console", listener, app).map_err(fail)?;
    std::thread::Builder::new()
        .name("console-read".into())
        .spawn(move || consume(source, shared, stop))
        .map_err(fail)?;
    Ok(bound)
}

/// A JSON answer.
fn json(v: serde_json::Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

fn with_fleet<T>(shared: &Shared, f: impl FnOnce(&Fleet) -> T) -> Option<T> {
    shared.fleet.lock().ok().map(|g| f(&g))
}

async fn sensors(State(shared): State<Arc<Shared>>) -> Response {
    with_fleet(&shared, |f| {
        json(json!({
            "sensors": f.sensors.values().collect::<Vec<_>>(),
            "messages": f.messages,
            "undecodable": f.undecodable,
            "alerts_evicted": f.alerts_evicted,
            "left_out": f.left_out,
        }))
    })
    .unwrap_or_else(|| "busy".into_response())
}

/// Alert lines, newest first, of one sensor or all.
async fn alerts(State(shared): State<Arc<Shared>>, uri: Uri) -> Response {
    let param = |name: &str| {
        uri.query().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .map(percent_decode)
        })
    };
    let sensor = param("sensor");
    let kind = param("type");
    let offset: usize = param("offset").and_then(|v| v.parse().ok()).unwrap_or(0);
    let limit = param("limit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(100usize)
        .min(10_000);
    with_fleet(&shared, |f| {
        let of_sensor = f
            .alerts
            .iter()
            .rev()
            .filter(|(s, _)| sensor.as_ref().is_none_or(|want| want == s));
        // The types the sensor filter leaves, for the page's type filter.
        let types: std::collections::BTreeSet<&str> = of_sensor
            .clone()
            .filter_map(|(_, l)| l["modbus_detect"]["type"].as_str())
            .collect();
        let matching = of_sensor.filter(|(_, l)| {
            kind.as_ref()
                .is_none_or(|want| l["modbus_detect"]["type"].as_str() == Some(want))
        });
        let total = matching.clone().count();
        let page: Vec<_> = matching
            .skip(offset)
            .take(limit)
            .map(|(s, line)| json!({"sensor": s, "line": line}))
            .collect();
        json(json!({"total": total, "types": types, "alerts": page}))
    })
    .unwrap_or_else(|| "busy".into_response())
}

async fn inventory(State(shared): State<Arc<Shared>>) -> Response {
    with_fleet(&shared, |f| json(json!({"assets": f.assets()})))
        .unwrap_or_else(|| "busy".into_response())
}

async fn fleet_alerts(State(shared): State<Arc<Shared>>) -> Response {
    with_fleet(&shared, |f| json(json!({"alerts": f.fleet_alerts()})))
        .unwrap_or_else(|| "busy".into_response())
}

/// The console's page: the dashboard's style, a script of its own; its
/// data comes from the JSON API (served under the dashboard's policy:
/// nothing inline, nothing from elsewhere).
const BODY: &str = include_str!("../../assets/console-body.html");
const SCRIPT: &str = include_str!("../../assets/console.js");

async fn index(uri: Uri) -> Response {
    let query = token_query(&uri);
    typed(
        "text/html; charset=utf-8",
        format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>modbus-detect fleet</title><link rel=\"stylesheet\" href=\"app.css{query}\"></head><body>\n{BODY}<script src=\"page.js{query}\"></script><script src=\"console.js{query}\"></script></body></html>\n"
        ),
    )
}

async fn script() -> Response {
    typed("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    typed("text/css; charset=utf-8", crate::dashboard::page::STYLE)
}
