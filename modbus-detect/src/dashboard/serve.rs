//! The dashboard over HTTP, from a thread of its own (a request never
//! touches the packet path): the page, its script and style, the data as
//! JSON, and server-sent events telling a live page when new figures are
//! there. Read-only: every route is a GET, nothing changes state.
//!
//! Bound to loopback unless the operator gives a token; with one, every
//! request must carry it (`Authorization: Bearer T`, or `?token=T`, which
//! the page passes on to its own requests), or it gets 401.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::watch;

use serde::Serialize;

use super::eve_lines::EveLines;
use super::page;
use super::query::AlertQuery;
use crate::output::http;
use crate::output::report::{AlertEntry, Report};

/// What a live page follows: a new version of the data, or the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Update {
    Version(u64),
    End,
}

struct Shared {
    served: RwLock<Arc<Served>>,
    /// The EVE file beside a served report, if one was given.
    eve: Option<EveLines>,
    updates: watch::Sender<Update>,
}

/// What is served now: the report, and its dashboard JSON.
struct Served {
    report: Report,
    json: String,
}

impl Served {
    fn new(report: Report, live: bool) -> Served {
        let json = super::served_json(&report, live);
        Served { report, json }
    }
}

/// The handle the run keeps to hand the server new figures.
#[derive(Clone)]
pub struct Board(Arc<Shared>);

impl Board {
    /// The report to serve from now on; live pages refetch it.
    pub fn publish(&self, report: Report, live: bool) {
        let served = Arc::new(Served::new(report, live));
        if let Ok(mut s) = self.0.served.write() {
            *s = served;
        }
        self.0.updates.send_modify(|u| {
            *u = match *u {
                Update::Version(n) => Update::Version(n + 1),
                Update::End => Update::End,
            }
        });
    }

    /// The run is over: live pages show it and stop following.
    pub fn finish(&self) {
        let _ = self.0.updates.send(Update::End);
    }
}

/// Why the dashboard cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{addr}: not a loopback address: give --dashboard-token (or --dashboard-token-file) to serve the dashboard beyond this host")]
    NeedsToken { addr: SocketAddr },
    #[error("{addr}: cannot listen: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Serve the dashboard of `report` on `addr` from a thread of its own;
/// the handle and the address bound (port 0 picks one).
pub fn serve(
    addr: SocketAddr,
    token: Option<String>,
    report: Report,
    live: bool,
    eve: Option<EveLines>,
) -> Result<(Board, SocketAddr), ServeError> {
    if token.is_none() && !addr.ip().is_loopback() {
        return Err(ServeError::NeedsToken { addr });
    }
    let listen = |source| ServeError::Listen { addr, source };
    let (listener, bound) = http::bind(addr).map_err(listen)?;
    let (updates, _) = watch::channel(Update::Version(0));
    let shared = Arc::new(Shared {
        served: RwLock::new(Arc::new(Served::new(report, live))),
        eve,
        updates,
    });
    let board = Board(shared.clone());
    let app = axum::Router::new()
        .route("/", get(index))
        .route("/page.js", get(common_script))
        .route("/app.js", get(script))
        .route("/app.css", get(style))
        .route("/api/data", get(data))
        .route("/api/alerts", get(alerts))
        .route("/api/alerts.csv", get(alerts_csv))
        .route("/api/eve", get(eve_page))
        .route("/api/events", get(events))
        .layer(axum::middleware::from_fn_with_state(Arc::new(token), guard))
        .with_state(shared);
    http::spawn("dashboard", listener, app).map_err(listen)?;
    Ok((board, bound))
}

/// The token check and the headers every answer carries; the state is
/// the token (none: loopback only). The fleet console uses it too.
pub(crate) async fn guard(
    State(token): State<Arc<Option<String>>>,
    headers: HeaderMap,
    uri: Uri,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let response = if allowed(token.as_deref(), &headers, &uri) {
        next.run(request).await
    } else {
        refused()
    };
    harden(response)
}

/// Does the request carry the token (`Authorization: Bearer T` or
/// `?token=T`), when there is one?
fn allowed(token: Option<&str>, headers: &HeaderMap, uri: &Uri) -> bool {
    let Some(t) = token else {
        return true;
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let query = uri.query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("token="))
            .map(percent_decode)
    });
    bearer.is_some_and(|b| same(b, t)) || query.is_some_and(|q| same(&q, t))
}

/// The answer to a request without the token.
fn refused() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        "a token is needed: ?token=T or Authorization: Bearer T\n",
    )
        .into_response()
}

/// The headers every answer carries: nothing runs but the page's own
/// script, nothing is sniffed, nothing leaks in a referrer or a cache.
fn harden(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(page::SERVED_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Equal, in time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// `%XX` escapes and `+` of a query value.
pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn typed(content_type: &'static str, body: impl IntoResponse) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn index(uri: Uri) -> Response {
    typed("text/html; charset=utf-8", page::served(&token_query(&uri)))
}

/// The `?token=T` a served page's own links carry. A browser sends no
/// Authorization header for a stylesheet or a script, so a page opened
/// with `?token=T` hands it on (the guard checked it before the page was
/// served). Anything but URL-safe characters is left out, never put into
/// the page.
pub(crate) fn token_query(uri: &Uri) -> String {
    uri.query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")))
        .filter(|t| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"%-._~".contains(&b))
        })
        .map(|t| format!("?token={t}"))
        .unwrap_or_default()
}

/// The helpers the dashboard and the fleet console share.
pub(crate) async fn common_script() -> Response {
    typed("text/javascript; charset=utf-8", page::COMMON)
}

async fn script() -> Response {
    typed("text/javascript; charset=utf-8", page::SCRIPT)
}

async fn style() -> Response {
    typed("text/css; charset=utf-8", page::STYLE)
}

fn current(shared: &Shared) -> Arc<Served> {
    shared
        .served
        .read()
        .map(|s| s.clone())
        .unwrap_or_else(|e| e.into_inner().clone())
}

async fn data(State(shared): State<Arc<Shared>>) -> Response {
    typed("application/json", current(&shared).json.clone())
}

/// One page of the alert table, as the query filters and orders it.
#[derive(Serialize)]
struct Page<'a> {
    /// Entries of the report, and those the filters keep.
    total: usize,
    matching: usize,
    offset: usize,
    rows: Vec<PageRow<'a>>,
}

#[derive(Serialize)]
struct PageRow<'a> {
    /// The entry's place in the report.
    index: usize,
    entry: &'a AlertEntry,
    #[serde(flatten)]
    row: super::AlertRow,
}

async fn alerts(State(shared): State<Arc<Shared>>, uri: Uri) -> Response {
    let served = current(&shared);
    let q = AlertQuery::parse(uri.query().unwrap_or(""));
    let all = &served.report.alerts;
    let selected = q.select(all);
    let rows = selected
        .iter()
        .skip(q.offset)
        .take(q.limit)
        .map(|&index| PageRow {
            index,
            entry: &all[index],
            row: super::AlertRow::of(&all[index]),
        })
        .collect();
    let page = Page {
        total: all.len(),
        matching: selected.len(),
        offset: q.offset,
        rows,
    };
    let json = serde_json::to_string(&page).unwrap_or_else(|_| "{}".into());
    typed("application/json", json)
}

/// A page of the EVE file's alert lines (`available: false` without one).
async fn eve_page(State(shared): State<Arc<Shared>>, uri: Uri) -> Response {
    let q = AlertQuery::parse(uri.query().unwrap_or(""));
    let body = match &shared.eve {
        None => serde_json::json!({ "available": false }),
        Some(e) => serde_json::json!({
            "available": true,
            "path": e.path,
            "total": e.len(),
            "not_loaded": e.not_loaded,
            "other_events": e.other_events,
            "not_json": e.not_json,
            "offset": q.offset,
            "lines": e.page(q.offset, q.limit),
        }),
    };
    typed("application/json", body.to_string())
}

/// `alerts.csv` of the entries the query keeps, in its order.
async fn alerts_csv(State(shared): State<Arc<Shared>>, uri: Uri) -> Response {
    let served = current(&shared);
    let q = AlertQuery::parse(uri.query().unwrap_or(""));
    let all = &served.report.alerts;
    let mut out = super::tables::ALERT_COLUMNS.join(",");
    out.push_str("\r\n");
    for i in q.select(all) {
        out.push_str(&super::tables::alert_line(&all[i]));
        out.push_str("\r\n");
    }
    typed("text/csv; charset=utf-8", out)
}

async fn events(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let rx = shared.updates.subscribe();
    // One event per new version (intermediate ones a slow page missed
    // are folded: it refetches the latest), then `end`.
    let stream = futures_util::stream::unfold((rx, false), |(mut rx, ended)| async move {
        if ended {
            return None;
        }
        if rx.changed().await.is_err() {
            return None;
        }
        let update = *rx.borrow_and_update();
        let event = match update {
            Update::Version(n) => Event::default().data(n.to_string()),
            Update::End => Event::default().event("end").data("end"),
        };
        Some((
            Ok::<Event, std::convert::Infallible>(event),
            (rx, update == Update::End),
        ))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole_and_decode() {
        assert!(same("s3cret", "s3cret"));
        assert!(!same("s3cret", "s3cre"));
        assert!(!same("s3cret", "s3creT"));
        assert_eq!(percent_decode("a%2Bb+c%zz"), "a+b c%zz");
    }
}
