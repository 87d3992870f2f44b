//! The master side shared by `hmi` and `attack`: one tokio-modbus TCP
//! connection, a per-request timeout, and a tally of what went over the wire
//! so the summary line can be checked frame for frame against a capture.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use tokio_modbus::client::{tcp, Client, Context};
use tokio_modbus::{ExceptionCode, ProtocolError, Request, Response, Slave};

use super::LabError;

/// How long a TCP connect may take before we give up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one request may wait for its response.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Requests sent, responses received (normal or exception) and exception
/// responses, per function code. Counted as the frames go out and come in, so
/// a capture of the conversation must show exactly these numbers.
#[derive(Debug, Default)]
pub struct Tally {
    pub requests: BTreeMap<u8, u64>,
    pub responses: BTreeMap<u8, u64>,
    pub exceptions: BTreeMap<u8, u64>,
}

impl Tally {
    /// The counters as JSON fields (maps keyed by function code, and totals).
    pub fn json_fields(&self, out: &mut serde_json::Map<String, Value>) {
        let total = |m: &BTreeMap<u8, u64>| m.values().sum::<u64>();
        out.insert("requests".into(), json!(self.requests));
        out.insert("responses".into(), json!(self.responses));
        out.insert("exceptions".into(), json!(self.exceptions));
        out.insert("requests_total".into(), json!(total(&self.requests)));
        out.insert("responses_total".into(), json!(total(&self.responses)));
        out.insert("exceptions_total".into(), json!(total(&self.exceptions)));
    }
}

/// What a request came back with.
#[derive(Debug)]
pub enum Reply {
    Normal(Response),
    Exception(ExceptionCode),
}

/// One master connection to one unit of a slave.
pub struct Master {
    ctx: Context,
    target: SocketAddr,
    pub tally: Tally,
}

impl Master {
    /// Connect to `target`, addressing unit `unit`.
    pub async fn connect(target: SocketAddr, unit: u8) -> Result<Self, LabError> {
        let ctx = tokio::time::timeout(CONNECT_TIMEOUT, tcp::connect_slave(target, Slave(unit)))
            .await
            .map_err(|_| LabError(format!("cannot connect to {target}: timed out")))?
            .map_err(|e| LabError(format!("cannot connect to {target}: {}", super::io_msg(&e))))?;
        Ok(Self {
            ctx,
            target,
            tally: Tally::default(),
        })
    }

    /// Send one request and wait for its response; every request and every
    /// response is counted before this returns, errors included.
    pub async fn call(&mut self, req: Request<'_>) -> Result<Reply, LabError> {
        let fc = req.function_code().value();
        *self.tally.requests.entry(fc).or_default() += 1;
        let target = self.target;
        let res = tokio::time::timeout(REQUEST_TIMEOUT, self.ctx.call(req))
            .await
            .map_err(|_| {
                LabError(format!(
                    "no response from {target} to function code {fc} within {} s",
                    REQUEST_TIMEOUT.as_secs()
                ))
            })?;
        let reply = match res {
            Ok(Ok(resp)) => Reply::Normal(resp),
            Ok(Err(code)) => Reply::Exception(code),
            // tokio-modbus decodes the exception to a `Custom(8)` request as
            // `Diagnostics` and calls it a mismatch; it is still the answer.
            Err(tokio_modbus::Error::Protocol(ProtocolError::FunctionCodeMismatch {
                request,
                result: Err(exc),
            })) if exc.function.value() == request.value() => Reply::Exception(exc.exception),
            Err(tokio_modbus::Error::Protocol(e)) => {
                return Err(LabError(format!(
                    "bad response from {target} to function code {fc}: {e}"
                )))
            }
            Err(tokio_modbus::Error::Transport(e)) => {
                return Err(LabError(format!(
                    "connection to {target} lost at function code {fc}: {}",
                    super::io_msg(&e)
                )))
            }
        };
        *self.tally.responses.entry(fc).or_default() += 1;
        if matches!(reply, Reply::Exception(_)) {
            *self.tally.exceptions.entry(fc).or_default() += 1;
        }
        Ok(reply)
    }

    /// Close the connection with a FIN, so captures end cleanly.
    pub async fn close(mut self) -> Tally {
        // A failed shutdown changes nothing for the counts.
        let _ = self.ctx.disconnect().await;
        self.tally
    }
}
