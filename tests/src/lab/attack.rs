//! `modbus-lab attack`: the misbehaving masters the detector must catch, each
//! sent through the same real Modbus stack as the HMI, so what the sensor
//! sees is what a real tool puts on the wire.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::Duration;

use clap::ValueEnum;
use serde_json::{json, Value};
use tokio_modbus::prelude::ReadCode;
use tokio_modbus::Request;

use super::client::Master;
use super::{LabError, Outcome};

/// Addresses at and above this are outside the PLC's tables (it has 64).
pub const ILLEGAL_BASE: u16 = 500;
/// The out-of-range write: this value to this holding register.
pub const OOR_REGISTER: u16 = 20;
pub const OOR_VALUE: u16 = 5000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// COUNT FC 3 reads (from an address that should not be a master).
    Rogue,
    /// COUNT pairs of FC 6 and FC 16 writes, values in range.
    Write,
    /// COUNT rounds of FC 17, FC 43/14 (basic device id) and FC 8/1 (restart).
    Enumerate,
    /// COUNT FC 3 reads back to back, no pause.
    Flood,
    /// COUNT FC 3 reads of illegal addresses (500 and up): exception 2 each.
    Exceptions,
    /// COUNT FC 6 writes of 5000 to holding register 20.
    Oor,
}

impl Kind {
    /// COUNT when none is given.
    pub fn default_count(self) -> u64 {
        match self {
            Kind::Rogue => 10,
            Kind::Write => 3,
            Kind::Enumerate => 1,
            Kind::Flood => 200,
            Kind::Exceptions => 12,
            Kind::Oor => 3,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Rogue => "rogue",
            Kind::Write => "write",
            Kind::Enumerate => "enumerate",
            Kind::Flood => "flood",
            Kind::Exceptions => "exceptions",
            Kind::Oor => "oor",
        }
    }
}

pub struct AttackArgs {
    pub target: SocketAddr,
    pub unit: u8,
    pub kind: Kind,
    pub count: u64,
    /// Pause between requests (not for `flood`, which never pauses).
    pub interval: Duration,
}

pub async fn run(args: AttackArgs) -> Outcome {
    let mut m = match Master::connect(args.target, args.unit).await {
        Ok(m) => m,
        Err(e) => return Outcome::failed(None, e),
    };
    let res = send(&args, &mut m).await;
    let tally = m.close().await;
    let mut summary = serde_json::Map::new();
    summary.insert("role".into(), json!("attack"));
    summary.insert("kind".into(), json!(args.kind.name()));
    summary.insert("target".into(), json!(args.target.to_string()));
    summary.insert("unit".into(), json!(args.unit));
    summary.insert("count".into(), json!(args.count));
    tally.json_fields(&mut summary);
    let summary = Value::Object(summary);
    match res {
        Ok(()) => Outcome::ok(summary),
        Err(e) => Outcome::failed(Some(summary), e),
    }
}

/// Exceptions are an answer, not an error: an attack counts them and goes on.
async fn send(args: &AttackArgs, m: &mut Master) -> Result<(), LabError> {
    let pause = if args.kind == Kind::Flood {
        Duration::ZERO
    } else {
        args.interval
    };
    for i in 0..args.count {
        if i > 0 && !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        // Wrapping keeps every value a u16 whatever COUNT is.
        let step = (i % 1000) as u16;
        match args.kind {
            Kind::Rogue | Kind::Flood => {
                m.call(Request::ReadHoldingRegisters(0, 10)).await?;
            }
            Kind::Write => {
                m.call(Request::WriteSingleRegister(1, 100 + step)).await?;
                let words = [step, step + 1, step + 2, step + 3];
                m.call(Request::WriteMultipleRegisters(2, Cow::Borrowed(&words)))
                    .await?;
            }
            Kind::Enumerate => {
                m.call(Request::ReportServerId).await?;
                m.call(Request::ReadDeviceIdentification(ReadCode::Basic, 0))
                    .await?;
                // Diagnostics has no typed request: sub-function 1 (restart
                // communications), data 0x0000, as raw PDU bytes.
                m.call(Request::Custom(8, Cow::Borrowed(&[0x00, 0x01, 0x00, 0x00])))
                    .await?;
            }
            Kind::Exceptions => {
                m.call(Request::ReadHoldingRegisters(ILLEGAL_BASE + step, 1))
                    .await?;
            }
            Kind::Oor => {
                m.call(Request::WriteSingleRegister(OOR_REGISTER, OOR_VALUE))
                    .await?;
            }
        }
    }
    Ok(())
}
