//! `modbus-lab hmi`: a well-behaved operator station. It polls at a steady
//! pace and nudges a set point within its safe range, so that captures of it
//! teach a baseline and raise no alert.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::time::MissedTickBehavior;
use tokio_modbus::{Request, Response};

use super::client::{Master, Reply};
use super::{LabError, Outcome};

/// Register 0 is the set point; it stays within these bounds.
pub const SETPOINT_MIN: u16 = 60;
pub const SETPOINT_MAX: u16 = 180;
/// Where the set point starts when the PLC holds something out of range.
const SETPOINT_DEFAULT: u16 = 120;

/// What the `hmi` subcommand was asked to do.
pub struct HmiArgs {
    pub target: SocketAddr,
    pub unit: u8,
    pub duration: Duration,
    pub interval: Duration,
    /// Write the set point every this many polls; 0: never.
    pub write_every: u64,
}

/// A set point that walks up and down between the bounds, one unit per
/// write, so no change rate limit of 1/write is ever exceeded.
struct Setpoint {
    value: u16,
    rising: bool,
}

impl Setpoint {
    fn new(read_back: u16) -> Self {
        let value = if (SETPOINT_MIN..=SETPOINT_MAX).contains(&read_back) {
            read_back
        } else {
            SETPOINT_DEFAULT
        };
        Self {
            value,
            rising: true,
        }
    }

    fn next(&mut self) -> u16 {
        if self.value >= SETPOINT_MAX {
            self.rising = false;
        } else if self.value <= SETPOINT_MIN {
            self.rising = true;
        }
        self.value = if self.rising {
            self.value + 1
        } else {
            self.value - 1
        };
        self.value
    }
}

pub async fn run(args: HmiArgs) -> Outcome {
    let mut m = match Master::connect(args.target, args.unit).await {
        Ok(m) => m,
        Err(e) => return Outcome::failed(None, e),
    };
    let started = Instant::now();
    let mut polls = 0u64;
    let mut setpoint: Option<Setpoint> = None;
    let res = poll_loop(&args, &mut m, &mut polls, &mut setpoint).await;
    let elapsed = started.elapsed();
    let tally = m.close().await;
    let mut summary = serde_json::Map::new();
    summary.insert("role".into(), json!("hmi"));
    summary.insert("target".into(), json!(args.target.to_string()));
    summary.insert("unit".into(), json!(args.unit));
    summary.insert("polls".into(), json!(polls));
    summary.insert(
        "elapsed_s".into(),
        json!((elapsed.as_secs_f64() * 1000.0).round() / 1000.0),
    );
    tally.json_fields(&mut summary);
    summary.insert("setpoint".into(), json!(setpoint.map(|s| s.value)));
    let summary = Value::Object(summary);
    match res {
        Ok(()) => Outcome::ok(summary),
        Err(e) => Outcome::failed(Some(summary), e),
    }
}

async fn poll_loop(
    args: &HmiArgs,
    m: &mut Master,
    polls: &mut u64,
    setpoint: &mut Option<Setpoint>,
) -> Result<(), LabError> {
    let deadline = Instant::now() + args.duration;
    let mut since_write = 0u64;
    let mut ticker = tokio::time::interval(args.interval.max(Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if Instant::now() >= deadline {
            return Ok(());
        }
        let regs = m.call(Request::ReadHoldingRegisters(0, 16)).await?;
        if let Reply::Normal(Response::ReadHoldingRegisters(words)) = &regs {
            if setpoint.is_none() {
                *setpoint = words.first().map(|&w| Setpoint::new(w));
            }
        }
        m.call(Request::ReadCoils(0, 16)).await?;
        *polls += 1;
        since_write += 1;
        if since_write == args.write_every {
            since_write = 0;
            let sp = setpoint.get_or_insert_with(|| Setpoint::new(SETPOINT_DEFAULT));
            let value = sp.next();
            if let Reply::Exception(code) = m.call(Request::WriteSingleRegister(0, value)).await? {
                return Err(LabError(format!(
                    "{}: set point write of {value} refused: {code}",
                    args.target
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setpoint_stays_in_range_and_moves_by_one() {
        let mut sp = Setpoint::new(178);
        let mut prev = sp.value;
        for _ in 0..1000 {
            let v = sp.next();
            assert!((SETPOINT_MIN..=SETPOINT_MAX).contains(&v));
            assert_eq!(v.abs_diff(prev), 1);
            prev = v;
        }
        assert_eq!(Setpoint::new(5000).value, SETPOINT_DEFAULT);
    }
}
