//! `modbus-lab`: real Modbus/TCP traffic from a real Modbus stack
//! (tokio-modbus) on both ends, for the live-capture tests and the live demo.
//!
//! ```text
//! modbus-lab plc    --listen IP:PORT [--units 1,2]
//! modbus-lab hmi    --target IP:PORT --duration S [--interval-ms 50] [--write-every N]
//! modbus-lab attack --target IP:PORT --kind rogue|write|enumerate|flood|exceptions|oor [--count N]
//! modbus-lab demo   --detector PATH [--seconds S] [--out DIR]   (root: the live demo)
//! modbus-lab inject --iface IF --pcap FILE [--loops N] [--pps N] [--vlan TPID:VID ...]
//! ```
//!
//! `hmi` and `attack` print one JSON line on stdout when they finish: the
//! requests sent, responses and exception responses received, per function
//! code. `plc` prints `listening on IP:PORT` once it accepts connections and,
//! on SIGTERM or SIGINT, a JSON line of what it served. Errors are one line on
//! stderr. Exit codes: 0 done, 1 failed (connect, listen, lost connection),
//! 2 usage.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::Value;

#[path = "../lab/attack.rs"]
mod attack;
#[path = "../lab/client.rs"]
mod client;
#[path = "../lab/demo.rs"]
mod demo;
#[path = "../lab/hmi.rs"]
mod hmi;
#[path = "../lab/inject.rs"]
mod inject;
#[path = "../lab/plc.rs"]
mod plc;

/// A failure, as the one line the user sees.
#[derive(Debug)]
pub struct LabError(pub String);

/// An I/O error without the "(os error N)" tail: "Connection refused".
pub fn io_msg(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// What a subcommand ends with: its summary line (if it got far enough to
/// have one) and its error (if any). A run that fails half-way still reports
/// what it sent, so a capture can be checked against it.
pub struct Outcome {
    summary: Option<Value>,
    error: Option<LabError>,
}

impl Outcome {
    pub fn ok(summary: Value) -> Self {
        Self {
            summary: Some(summary),
            error: None,
        }
    }

    pub fn failed(summary: Option<Value>, error: LabError) -> Self {
        Self {
            summary,
            error: Some(error),
        }
    }
}

#[derive(Parser)]
#[command(
    name = "modbus-lab",
    about = "Real Modbus/TCP traffic (tokio-modbus) for live-capture tests",
    after_help = "Exit codes: 0 done, 1 failed (connect, listen, lost connection), 2 usage."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// A slave with 64 coils, discrete inputs, input and holding registers
    /// per unit; runs until SIGTERM/SIGINT.
    Plc {
        #[arg(long, value_name = "IP:PORT")]
        listen: SocketAddr,
        /// Unit ids served (others get exception 11).
        #[arg(long, value_delimiter = ',', default_value = "1")]
        units: Vec<u8>,
    },
    /// An operator station: FC 3 (registers 0-15) and FC 1 (coils 0-15)
    /// every interval, an FC 6 set point write (register 0, 60-180, +/-1)
    /// every N polls.
    Hmi {
        #[arg(long, value_name = "IP:PORT")]
        target: SocketAddr,
        /// Seconds to poll for.
        #[arg(long, value_name = "S", value_parser = parse_secs)]
        duration: Duration,
        #[arg(long, default_value_t = 50)]
        interval_ms: u64,
        /// Write the set point every N polls; 0: never.
        #[arg(long, value_name = "N", default_value_t = 10)]
        write_every: u64,
        #[arg(long, default_value_t = 1)]
        unit: u8,
    },
    /// The live demo (root): a virtual plant in network namespaces mirrored
    /// to `modbus-detect --interface`, attacks, alerts as they come.
    Demo {
        /// The modbus-detect binary.
        #[arg(long)]
        detector: std::path::PathBuf,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Where the report, the alert stream and the limits file go.
        #[arg(long, default_value = "target/demo-live")]
        out: std::path::PathBuf,
    },
    /// Send a pcap's frames out of an interface (AF_PACKET, root), as fast
    /// as possible or at --pps, optionally with VLAN tags inserted.
    Inject {
        #[arg(long)]
        iface: String,
        #[arg(long)]
        pcap: std::path::PathBuf,
        #[arg(long, default_value_t = 1)]
        loops: u64,
        /// Frames per second; 0: as fast as possible.
        #[arg(long, default_value_t = 0)]
        pps: u64,
        /// VLAN tags to insert, outermost first: 0x88a8:100,0x8100:200.
        #[arg(long, value_delimiter = ',', value_parser = parse_vlan)]
        vlan: Vec<(u16, u16)>,
    },
    /// A misbehaving master.
    Attack {
        #[arg(long, value_name = "IP:PORT")]
        target: SocketAddr,
        #[arg(long)]
        kind: attack::Kind,
        /// Repetitions (default per kind: rogue 10, write 3, enumerate 1,
        /// flood 200, exceptions 12, oor 3).
        #[arg(long)]
        count: Option<u64>,
        /// Pause between requests (flood never pauses).
        #[arg(long, default_value_t = 20)]
        interval_ms: u64,
        #[arg(long, default_value_t = 1)]
        unit: u8,
    },
}

/// "0x8100:200" -> (TPID, VID).
fn parse_vlan(s: &str) -> Result<(u16, u16), String> {
    let (tpid, vid) = s
        .split_once(':')
        .ok_or("expected TPID:VID, e.g. 0x8100:200")?;
    let tpid = u16::from_str_radix(tpid.trim_start_matches("0x"), 16).map_err(|e| e.to_string())?;
    let vid: u16 = vid
        .parse()
        .map_err(|e: std::num::ParseIntError| e.to_string())?;
    Ok((tpid, vid))
}

/// Seconds, fractions allowed: "1", "0.5".
fn parse_secs(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .and_then(|f| Duration::try_from_secs_f64(f).ok())
        .ok_or_else(|| format!("{s:?} is not a number of seconds"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Cmd::Inject {
        iface,
        pcap,
        loops,
        pps,
        vlan,
    } = &cli.cmd
    {
        let args = inject::InjectArgs {
            iface,
            pcap,
            loops: *loops,
            pps: *pps,
            vlans: vlan,
        };
        return match inject::run(&args) {
            Ok(summary) => {
                println!("{summary}");
                ExitCode::SUCCESS
            }
            Err(LabError(msg)) => {
                eprintln!("modbus-lab: inject: {msg}");
                ExitCode::FAILURE
            }
        };
    }
    if let Cmd::Demo {
        detector,
        seconds,
        out,
    } = &cli.cmd
    {
        return match demo::run(detector, *seconds, out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(LabError(msg)) => {
                eprintln!("modbus-lab: demo: {msg}");
                ExitCode::FAILURE
            }
        };
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("modbus-lab: cannot start the runtime: {}", io_msg(&e));
            return ExitCode::FAILURE;
        }
    };
    let outcome = rt.block_on(async {
        match cli.cmd {
            // Synchronous commands, handled before the runtime starts.
            Cmd::Demo { .. } | Cmd::Inject { .. } => {
                Outcome::failed(None, LabError("internal: not an async command".into()))
            }
            Cmd::Plc { listen, units } => plc::run(listen, units).await,
            Cmd::Hmi {
                target,
                duration,
                interval_ms,
                write_every,
                unit,
            } => {
                hmi::run(hmi::HmiArgs {
                    target,
                    unit,
                    duration,
                    interval: Duration::from_millis(interval_ms),
                    write_every,
                })
                .await
            }
            Cmd::Attack {
                target,
                kind,
                count,
                interval_ms,
                unit,
            } => {
                attack::run(attack::AttackArgs {
                    target,
                    unit,
                    kind,
                    count: count.unwrap_or_else(|| kind.default_count()),
                    interval: Duration::from_millis(interval_ms),
                })
                .await
            }
        }
    });
    if let Some(summary) = &outcome.summary {
        println!("{summary}");
    }
    match outcome.error {
        None => ExitCode::SUCCESS,
        Some(LabError(msg)) => {
            eprintln!("modbus-lab: {msg}");
            ExitCode::FAILURE
        }
    }
}
