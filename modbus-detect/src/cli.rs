//! Command-line flags (the original tool's, same meaning) and their
//! translation into a [`crate::config::DetectConfig`]. Nothing else.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::Parser;

use crate::config::addrs::IpNet;
use crate::files::Shown;

use crate::alert::Severity;
use crate::flow::policy::PolicyRule;

/// Modbus/TCP anomaly detector for ICS/SCADA networks.
///
/// Replays a pcap/pcapng capture (or, with the live sensor, reads a mirror
/// port) through TCP reassembly and request/response matching, raises alerts
/// for rogue masters, unauthorized writes, unsafe register values, device
/// enumeration, baseline deviations, exception bursts, malformed framing and
/// floods, and writes a JSON report sorted by severity.
#[derive(Debug, Parser)]
#[command(
    name = "modbus-detect",
    version,
    about,
    long_about = None,
    args_conflicts_with_subcommands = true
)]
pub struct Args {
    /// Tools beside detection (without one: detect, with the flags below).
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Settings file (TOML): any of the flags below by their long name
    /// (`interface = "eth1"`, `authorized-masters = ["10.0.0.20"]`,
    /// `eve-every-event = true`); flags given on the command line win.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Capture to replay (pcap or pcapng): a file, `-` for standard input,
    /// or a FIFO (both read as the records come, e.g. from `tcpdump -U -w -`);
    /// several files or directories are one capture, in the order of their
    /// first packet (a rotated set from `tcpdump -G` or `-C`).
    #[arg(long, value_name = "FILE", num_args = 1.., conflicts_with = "interface")]
    pub pcap: Vec<PathBuf>,

    /// In a capture set, leave out a file that is not a capture or whose
    /// first record is broken (listed in the report) instead of stopping.
    #[arg(long)]
    pub skip_bad_files: bool,

    /// Capture live on this interface (a mirror/SPAN port or TAP) with XDP and AF_XDP.
    #[arg(long, visible_alias = "iface", value_name = "IF")]
    pub interface: Option<String>,

    /// Live: stop after this many seconds (0: until SIGINT/SIGTERM).
    #[arg(long, value_name = "S", default_value_t = 0.0)]
    pub duration: f64,

    /// Live: RX queues to capture on (default: all).
    #[arg(long, value_name = "Q", num_args = 1.., value_delimiter = ',')]
    pub queues: Option<Vec<u32>>,

    /// Live: XDP attach mode (default: native, falling back to skb with a warning).
    #[arg(long, value_name = "MODE", value_parser = ["native", "skb"])]
    pub xdp_mode: Option<String>,

    /// Live: attach even though this host serves Modbus on the interface
    /// (XDP would take those frames away from the local stack).
    #[arg(long)]
    pub force: bool,

    /// Live: CPUs to pin to, RX threads first, then shards (e.g. 2,3,4,5).
    #[arg(long, value_name = "CPU", num_args = 1.., value_delimiter = ',')]
    pub cpus: Option<Vec<usize>>,

    /// Live: microseconds an RX thread keeps polling an empty ring (and,
    /// with preferred busy polling, runs the interface's NAPI itself)
    /// before it sleeps; 0 turns busy polling off (least CPU, lower rate).
    #[arg(long, value_name = "US", default_value_t = 1000)]
    pub busy_poll: u64,

    /// Live: seconds between stats lines on stderr, and between `stats`
    /// events in the --eve stream.
    #[arg(long, value_name = "S", default_value_t = 5.0)]
    pub stats_interval: f64,

    /// Addresses or ranges (10.0.1.0/24) allowed to act as Modbus masters
    /// (space or comma separated). Without it (and its file) the
    /// rogue-master rule is off.
    #[arg(long, value_name = "IP[/PREFIX]", num_args = 1.., value_delimiter = ',')]
    pub authorized_masters: Option<Vec<IpNet>>,

    /// A file of authorized masters: one address or range per line, `#`
    /// comments (joins --authorized-masters).
    #[arg(long, value_name = "FILE")]
    pub authorized_masters_file: Option<PathBuf>,

    /// Addresses or ranges allowed to write (FC 5, 6, 15, 16, 22, 23).
    /// Without it (and its file) the unauthorized-write rule is off.
    #[arg(long, value_name = "IP[/PREFIX]", num_args = 1.., value_delimiter = ',')]
    pub authorized_writers: Option<Vec<IpNet>>,

    /// A file of authorized writers, as --authorized-masters-file.
    #[arg(long, value_name = "FILE")]
    pub authorized_writers_file: Option<PathBuf>,

    /// JSON file with safe ranges and change rates per register.
    #[arg(long, value_name = "FILE")]
    pub register_limits_file: Option<PathBuf>,

    /// Baseline to compare with, or (with --baseline-mode) to write.
    #[arg(long, value_name = "FILE")]
    pub baseline_file: Option<PathBuf>,

    /// Learn a baseline from the traffic instead of detecting (with ML
    /// models of the traffic's windows when there are enough of them).
    #[arg(long, requires = "baseline_file")]
    pub baseline_mode: bool,

    /// Judge each master-slave pair's windows of traffic with the ML models
    /// of the baseline (Isolation Forest, One-Class SVM): ML_ANOMALY alerts.
    /// Needs --baseline-file, or a baseline from --config-from.
    #[arg(long, conflicts_with = "baseline_mode")]
    pub ml: bool,

    /// Baseline mode: seconds of traffic per ML window (a baseline's models
    /// keep the window they were learned with).
    #[arg(long, value_name = "S", default_value_t = 5.0)]
    pub ml_window: f64,

    /// Where to write the JSON report.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "modbus_anomaly_report.json"
    )]
    pub output: PathBuf,

    /// Write each alert as it is raised, one JSON object per line (Suricata EVE style).
    #[arg(long, value_name = "FILE")]
    pub eve: Option<PathBuf>,

    /// Empty the --eve file first instead of appending to it (appending
    /// is the default, as Suricata does).
    #[arg(long, requires = "eve")]
    pub eve_truncate: bool,

    /// One EVE line per alert event, instead of at most one per alert key
    /// and second of capture time (the default, which counts what it folds
    /// in `suppressed_since_last_line`).
    #[arg(long, requires = "eve")]
    pub eve_every_event: bool,

    /// The sensor's name in alert lines (`host`); default: the host name.
    #[arg(long, value_name = "NAME")]
    pub sensor_name: Option<String>,

    /// Detector shard threads; default: one per core left after the reading
    /// thread(s) (one shard in the reader's thread on a one-core machine).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,

    /// TCP ports that carry Modbus/TCP.
    #[arg(long, value_name = "PORT", num_args = 1.., value_delimiter = ',', default_value = "502")]
    pub ports: Vec<u16>,

    /// How the monitored hosts' TCP/IP stacks take overlapping copies of the
    /// same bytes (linux, bsd, windows, first, last): POLICY for every host,
    /// ADDR[/PREFIX]=POLICY for a range (the most specific range wins);
    /// repeatable. Default linux.
    #[arg(long, value_name = "[RANGE=]POLICY")]
    pub target_policy: Vec<PolicyRule>,

    /// Segments with a wrong IP or TCP checksum are dropped, as the PLC's
    /// stack drops them (verify); `ignore` only replays captures whose
    /// addresses were rewritten (anonymised) without fixing the checksums:
    /// on a live network it lets forged copies through.
    #[arg(long, value_name = "MODE", value_parser = ["verify", "ignore"], default_value = "verify")]
    pub checksums: String,

    /// Exit with status 1 when an alert at or above this severity was raised
    /// (low, medium, high, critical).
    #[arg(long, value_name = "SEVERITY", value_parser = parse_severity)]
    pub fail_on: Option<Severity>,

    /// Change a rule's threshold, NAME=VALUE (repeatable; the names, units
    /// and defaults are in data/thresholds.toml and the README; the report
    /// gives the values used).
    #[arg(long = "threshold", value_name = "NAME=VALUE")]
    pub threshold: Vec<String>,

    /// Connections tracked at most (memory bound under floods and scans).
    #[arg(long, value_name = "N", default_value_t = 1 << 20)]
    pub max_flows: usize,

    /// Write the asset inventory alone to FILE (JSON) and beside it as CSV
    /// (FILE's name with `.devices.csv` and `.pairs.csv`); during live
    /// capture also every --inventory-interval seconds.
    #[arg(long, value_name = "FILE")]
    pub inventory: Option<PathBuf>,

    /// Live: also write the report every S seconds while capturing
    /// (atomically, with status "running"), not only at exit.
    #[arg(long, value_name = "S")]
    pub report_interval: Option<f64>,

    /// Serve Prometheus metrics at http://ADDR/metrics (e.g.
    /// 127.0.0.1:9502): frames, ADUs, alerts by type and severity, drops at
    /// every stage, connections, evictions, build info.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,

    /// With --metrics: after a replay, keep serving its final figures this
    /// many seconds (for a scraper to take them), or until SIGINT/SIGTERM.
    #[arg(long, value_name = "S", default_value_t = 0.0, requires = "metrics")]
    pub metrics_hold: f64,

    /// Live: seconds between --inventory files, and between the inventory
    /// snapshots --publish sends, while capturing.
    #[arg(long, value_name = "S", default_value_t = 60.0)]
    pub inventory_interval: f64,

    /// Write the analyst's dashboard as one self-contained HTML file that
    /// opens offline (no network, nothing loaded from elsewhere).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,

    /// Write the dashboard's tables as CSV into DIR: alerts.csv,
    /// alert_types.csv, devices.csv, pairs.csv (README, "Dashboard").
    #[arg(long, value_name = "DIR")]
    pub csv_dir: Option<PathBuf>,

    /// Write the overview charts as SVG into DIR.
    #[arg(long, value_name = "DIR")]
    pub plots_dir: Option<PathBuf>,

    /// Serve the dashboard at http://ADDR/ while the run goes on (e.g.
    /// 127.0.0.1:8502); an address beyond loopback needs a token.
    #[arg(long, value_name = "ADDR")]
    pub dashboard: Option<std::net::SocketAddr>,

    #[command(flatten)]
    pub token: TokenArgs,

    #[command(flatten)]
    pub publish: PublishArgs,

    #[command(flatten)]
    pub central: CentralArgs,

    /// Write every decoded ADU as JSON lines to FILE (replay, for comparing with Wireshark).
    #[arg(long, value_name = "FILE")]
    pub dump_adus: Option<PathBuf>,

    /// No progress bar and no summary on stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Publishing the alert lines and stats to NATS JetStream (README, "Many
/// sensors").
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PublishArgs {
    /// Publish every alert line and stats event to these NATS servers
    /// (nats://HOST:PORT, comma separated), subjects
    /// modbus.<sensor>.alerts and .stats, with acknowledgements.
    #[arg(long, value_name = "URLS")]
    pub publish: Option<String>,
    /// The JetStream stream, created if missing (subjects modbus.>).
    #[arg(
        long,
        value_name = "NAME",
        default_value = "MODBUS",
        requires = "publish"
    )]
    pub publish_stream: String,
    /// Its replicas, when this sensor creates it.
    #[arg(long, value_name = "N", default_value_t = 1, requires = "publish")]
    pub publish_replicas: usize,
    /// Its size limit in bytes, when this sensor creates it (0: none).
    #[arg(long, value_name = "B", default_value_t = 0, requires = "publish")]
    pub publish_max_bytes: i64,
    /// Its age limit in seconds, when this sensor creates it (0: none).
    #[arg(long, value_name = "S", default_value_t = 0, requires = "publish")]
    pub publish_max_age: u64,
    /// A NATS credentials file (for --publish and --config-from).
    #[arg(long, value_name = "FILE")]
    pub publish_creds: Option<PathBuf>,
    /// A CA certificate (PEM) the servers' TLS certificates must chain to
    /// (TLS is then required; for --publish and --config-from).
    #[arg(long, value_name = "FILE")]
    pub publish_ca: Option<PathBuf>,
    /// Where events wait while the servers are unreachable (kept across
    /// runs, sent in order once they are back).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "modbus-detect-spool",
        requires = "publish"
    )]
    pub publish_spool: PathBuf,
    /// The spool's size limit; beyond it the oldest events are dropped,
    /// counted.
    #[arg(long, value_name = "B", default_value_t = 256 << 20, requires = "publish")]
    pub publish_spool_max_bytes: u64,
    /// At the end of a run, seconds to wait for the servers to take what
    /// is queued and spooled (the rest stays spooled).
    #[arg(long, value_name = "S", default_value_t = 10.0, requires = "publish")]
    pub publish_wait: f64,
}

/// Central settings: allow lists, register limits, baseline and
/// thresholds from a JetStream key-value bucket (README, "Many sensors").
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CentralArgs {
    /// Take this sensor's settings from NATS and follow their changes
    /// without a restart: `nats` (the --publish servers) or nats://HOST:PORT
    /// (comma separated). Keys `<sensor>.authorized-masters`,
    /// `.authorized-writers`, `.register-limits`, `.baseline`,
    /// `.thresholds`, each in its file's format; each wins over the local
    /// setting while it is set.
    #[arg(long, value_name = "SOURCE", conflicts_with = "baseline_mode")]
    pub config_from: Option<String>,
    /// The key-value bucket.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "modbus-config",
        requires = "config_from"
    )]
    pub config_bucket: String,
    /// Seconds to wait for the first reading of the bucket before starting
    /// with the local settings (they are replaced when it comes).
    #[arg(
        long,
        value_name = "S",
        default_value_t = 10.0,
        requires = "config_from"
    )]
    pub config_wait: f64,
}

/// Who may see the dashboard when it is served beyond loopback.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TokenArgs {
    /// A token every dashboard request must carry (?token=T or
    /// Authorization: Bearer T); needed to serve beyond loopback.
    #[arg(long, value_name = "T", conflicts_with = "dashboard_token_file")]
    pub dashboard_token: Option<String>,

    /// The dashboard token, from the first line of FILE (kept out of the
    /// process list).
    #[arg(long, value_name = "FILE")]
    pub dashboard_token_file: Option<PathBuf>,
}

/// What `modbus-detect COMMAND` does instead of detecting.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// A first look at captures before detection (the original ML
    /// pipeline's census): per file, its first frames, its frames, those
    /// that are TCP on a Modbus port and their time span; the totals.
    Census {
        /// Capture files and directories of them.
        #[arg(value_name = "PATH", required = true)]
        paths: Vec<PathBuf>,
        /// Frames shown per file.
        #[arg(long, value_name = "N", default_value_t = 5)]
        preview: usize,
        /// Also write the census as JSON to FILE.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// The original ML pipeline, step by step: per-ADU features, an
    /// Isolation Forest and a One-Class SVM trained on normal traffic,
    /// anomaly reports with threat labels (README, "The original ML pipeline").
    Ml {
        #[command(subcommand)]
        step: MlStep,
    },
    /// Measure detection against labelled captures: precision, recall, F1,
    /// false alarms and time of the original per-ADU models, our window
    /// models, the rules, and rules with models (README, "Evaluation").
    Eval(EvalArgs),
    /// One view of many sensors: read what they publish (--publish) from
    /// NATS JetStream and serve it (until SIGINT/SIGTERM): sensors' health,
    /// all alerts, the merged inventory, alerts across sensors.
    Console {
        /// NATS servers (nats://HOST:PORT, comma separated).
        #[arg(long, value_name = "URLS")]
        nats: String,
        /// The stream the sensors publish into.
        #[arg(long, value_name = "NAME", default_value = "MODBUS")]
        stream: String,
        /// The console's durable consumer (made again on start: the fleet
        /// is rebuilt from the stream).
        #[arg(long, value_name = "NAME", default_value = "modbus-console")]
        consumer: String,
        /// Where to listen; an address beyond loopback needs a token.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8503")]
        listen: std::net::SocketAddr,
        #[command(flatten)]
        auth: NatsAuth,
        #[command(flatten)]
        token: TokenArgs,
    },
    /// Central settings of a sensor (for --config-from): write, delete or
    /// list its items in the bucket (created if missing). A value is
    /// checked as its file would be before it is stored.
    Config {
        /// NATS servers (nats://HOST:PORT, comma separated).
        #[arg(long, value_name = "URLS")]
        nats: String,
        /// The key-value bucket.
        #[arg(long, value_name = "NAME", default_value = "modbus-config")]
        bucket: String,
        /// Its replicas, when this command creates it.
        #[arg(long, value_name = "N", default_value_t = 1)]
        replicas: usize,
        /// The sensor (its --sensor-name).
        #[arg(long, value_name = "NAME")]
        sensor: String,
        #[command(flatten)]
        auth: NatsAuth,
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Serve the dashboard of a finished report (until SIGINT/SIGTERM).
    Serve {
        /// The report (`--output` of a run).
        #[arg(long, value_name = "FILE")]
        report: PathBuf,
        /// The run's alert lines (`--eve`), shown beside the report.
        #[arg(long, value_name = "FILE")]
        eve: Option<PathBuf>,
        /// Where to listen; an address beyond loopback needs a token.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8502")]
        listen: std::net::SocketAddr,
        #[command(flatten)]
        token: TokenArgs,
    },
    /// Compare two inventories (an --inventory file, a report or a baseline
    /// file each): new devices, pairs, function codes, unit ids, MAC
    /// addresses, changed identification, and what is gone. Exit 0 when
    /// they agree, 1 when they differ.
    DiffInventory {
        /// The reference (a baseline, or an earlier run).
        #[arg(value_name = "A")]
        before: PathBuf,
        /// The run to check against it.
        #[arg(value_name = "B")]
        after: PathBuf,
    },
}

/// How `console` and `config` reach a secured NATS cluster.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct NatsAuth {
    /// A NATS credentials file.
    #[arg(long, value_name = "FILE")]
    pub creds: Option<PathBuf>,
    /// A CA certificate (PEM) the servers' certificates must chain to
    /// (TLS is then required).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
}

/// What `config` does to a sensor's item.
#[derive(Debug, clap::Subcommand)]
pub enum ConfigAction {
    /// Store FILE as ITEM (authorized-masters, authorized-writers,
    /// register-limits, baseline, thresholds).
    Put { item: String, file: PathBuf },
    /// Delete ITEM: the sensor goes back to its local setting.
    Delete { item: String },
    /// Each item's revision and size.
    Show,
}

/// A settings file that cannot be used; one line naming it (exit 3).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read: {source}", Shown(path))]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {problem}", Shown(path))]
    Content { path: PathBuf, problem: String },
}

/// The flags of a settings file, as command-line arguments: each key is a
/// flag's long name, a string or number its value, `true` the flag alone,
/// a list the values joined by commas.
fn config_args(path: &Path, given: &[String]) -> Result<Vec<OsString>, ConfigError> {
    let content = |problem: String| ConfigError::Content {
        path: path.to_path_buf(),
        problem,
    };
    let meta = std::fs::metadata(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() || meta.len() > 1 << 20 {
        return Err(content(
            "not a settings file (a regular file of at most 1 MiB)".into(),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| content(e.message().to_string()))?;
    let cmd = <Args as clap::CommandFactory>::command();
    let mut out = Vec::new();
    for (key, value) in table {
        if let ("thresholds", toml::Value::Table(changes)) = (key.as_str(), &value) {
            // Before the command line's --threshold settings, which win
            // key by key.
            for (name, v) in changes {
                out.push("--threshold".into());
                out.push(format!("{name}={v}").into());
            }
            continue;
        }
        let flag = key.replace('_', "-");
        let known = cmd
            .get_arguments()
            .any(|a| a.get_long() == Some(flag.as_str()) && flag != "config");
        if !known {
            return Err(content(format!(
                "unknown setting {key:?} (the settings are the long flags)"
            )));
        }
        if given.contains(&flag) {
            // The command line wins, a list as a whole.
            continue;
        }
        let scalar = |v: &toml::Value| -> Result<String, ConfigError> {
            match v {
                toml::Value::String(s) => Ok(s.clone()),
                toml::Value::Integer(n) => Ok(n.to_string()),
                toml::Value::Float(x) => Ok(x.to_string()),
                _ => Err(content(format!(
                    "{key}: a string, a number or a list of them"
                ))),
            }
        };
        match &value {
            toml::Value::Boolean(true) => out.push(format!("--{flag}").into()),
            toml::Value::Boolean(false) => {}
            toml::Value::Array(items) => {
                let values = items.iter().map(scalar).collect::<Result<Vec<_>, _>>()?;
                // Repeatable flags (--target-policy) take one value each.
                for v in values {
                    out.push(format!("--{flag}").into());
                    out.push(v.into());
                }
            }
            v => {
                out.push(format!("--{flag}").into());
                out.push(scalar(v)?.into());
            }
        }
    }
    Ok(out)
}

/// The command line, with the settings of `--config FILE` (if given)
/// before it, so that flags on the command line win.
pub fn parse_with_config(argv: Vec<OsString>) -> Result<Args, ConfigError> {
    let config = argv.iter().enumerate().find_map(|(i, a)| {
        let a = a.to_str()?;
        match a.strip_prefix("--config=") {
            Some(p) => Some(PathBuf::from(p)),
            None if a == "--config" => argv.get(i + 1).map(PathBuf::from),
            None => None,
        }
    });
    let Some(path) = config else {
        return Ok(Args::parse_from(argv));
    };
    // The flags the command line gives (clap's own errors and --help come
    // from the final parse below).
    let cmd = <Args as clap::CommandFactory>::command();
    let given: Vec<String> = match cmd.clone().try_get_matches_from(&argv) {
        Ok(m) => cmd
            .get_arguments()
            .filter(|a| {
                m.value_source(a.get_id().as_str()) == Some(clap::parser::ValueSource::CommandLine)
            })
            .filter_map(|a| a.get_long().map(str::to_string))
            .collect(),
        Err(_) => Vec::new(),
    };
    let mut all: Vec<OsString> = argv.first().cloned().into_iter().collect();
    all.extend(config_args(&path, &given)?);
    all.extend(argv.into_iter().skip(1));
    Ok(Args::parse_from(all))
}

fn parse_severity(s: &str) -> Result<Severity, String> {
    Severity::parse(s).ok_or_else(|| format!("{s:?} is not one of low, medium, high, critical"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<OsString> {
        std::iter::once("modbus-detect")
            .chain(a.iter().copied())
            .map(OsString::from)
            .collect()
    }

    #[test]
    fn a_settings_file_is_flags_that_the_command_line_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("sensor.toml");
        std::fs::write(
            &f,
            r#"
interface = "eth1"
authorized-masters = ["10.0.0.20", "10.0.0.21"]
authorized_writers = ["10.0.0.20"]
target-policy = ["linux", "10.1.0.0/16=windows"]
eve = "/var/log/alerts.json"
eve-every-event = true
stats-interval = 60
max-flows = 65536
force = false
"#,
        )
        .unwrap();
        let cfg = f.to_str().unwrap();
        let a = parse_with_config(argv(&["--config", cfg])).unwrap();
        assert_eq!(a.interface.as_deref(), Some("eth1"));
        assert_eq!(a.authorized_masters.as_ref().map(Vec::len), Some(2));
        assert_eq!(a.authorized_writers.as_ref().map(Vec::len), Some(1));
        assert_eq!(a.target_policy.len(), 2);
        assert!(a.eve_every_event && !a.force);
        assert_eq!((a.stats_interval, a.max_flows), (60.0, 65536));
        // The command line wins, list and all.
        let a = parse_with_config(argv(&[
            &format!("--config={cfg}"),
            "--authorized-masters",
            "10.9.9.9",
            "--stats-interval",
            "5",
        ]))
        .unwrap();
        assert_eq!(
            a.authorized_masters,
            Some(vec!["10.9.9.9".parse().unwrap()])
        );
        assert_eq!(a.stats_interval, 5.0);
    }

    #[test]
    fn a_bad_settings_file_is_one_line_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("sensor.toml");
        let err = |text: &str| {
            std::fs::write(&f, text).unwrap();
            parse_with_config(argv(&["--config", f.to_str().unwrap()]))
                .unwrap_err()
                .to_string()
        };
        let e = err("interfce = \"eth1\"\n");
        assert!(
            e.starts_with(&f.display().to_string()) && e.contains("unknown setting \"interfce\""),
            "{e}"
        );
        assert!(err("interface = \n").contains("sensor.toml: "));
        assert!(err("ports = [{a = 1}]\n").contains("ports: a string, a number or a list"));
        assert!(err("config = \"x\"\n").contains("unknown setting"));
        let missing = dir.path().join("none.toml");
        let e = parse_with_config(argv(&["--config", missing.to_str().unwrap()]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("none.toml: cannot read"), "{e}");
    }
}

/// The original pipeline's steps; each reads what the one before wrote.
#[derive(Debug, clap::Subcommand)]
pub enum MlStep {
    /// Per-ADU features of captures: DIR/normal_features.csv from the
    /// normal ones, DIR/attack_features.csv from the others.
    Features {
        #[command(flatten)]
        captures: MlCaptures,
        /// Where to write the feature files.
        #[arg(long, value_name = "DIR")]
        out_dir: PathBuf,
    },
    /// Train both models on a feature file of normal traffic.
    Train {
        /// The normal features (`normal_features.csv`).
        #[arg(long, value_name = "FILE")]
        features: PathBuf,
        /// Where to write the models (scaler included).
        #[arg(long, value_name = "FILE")]
        models: PathBuf,
    },
    /// Score a feature file with trained models: DIR/iso_forest_report.csv
    /// and DIR/ocsvm_report.csv (the anomalies, labelled), and a breakdown.
    Score {
        /// The models (`ml train --models`).
        #[arg(long, value_name = "FILE")]
        models: PathBuf,
        /// The features to score (`attack_features.csv`).
        #[arg(long, value_name = "FILE")]
        features: PathBuf,
        /// Where to write the reports.
        #[arg(long, value_name = "DIR")]
        out_dir: PathBuf,
        #[command(flatten)]
        allowed: MlAllowed,
    },
    /// All of it: features of both sets, models trained on the normal
    /// ones, the attack ones scored; every file in DIR.
    Run {
        #[command(flatten)]
        captures: MlCaptures,
        /// Where to write features, models and reports.
        #[arg(long, value_name = "DIR")]
        out_dir: PathBuf,
        #[command(flatten)]
        allowed: MlAllowed,
    },
}

/// The captures of the original pipeline.
#[derive(Debug, Clone, clap::Args)]
pub struct MlCaptures {
    /// Captures of normal traffic (files, or directories of them).
    #[arg(long, value_name = "PATH", num_args = 1.., required = true)]
    pub normal: Vec<PathBuf>,
    /// Captures to score (files, or directories of them).
    #[arg(long, value_name = "PATH", num_args = 1..)]
    pub attack: Vec<PathBuf>,
    /// Leave out a file that is not a capture (listed) instead of stopping.
    #[arg(long)]
    pub skip_bad_files: bool,
}

/// The original's allow list: sources its FOREIGN IP label leaves alone
/// (beside every source of the normal traffic).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct MlAllowed {
    /// Addresses or ranges (10.0.1.0/24).
    #[arg(long, value_name = "IP[/PREFIX]", num_args = 1.., value_delimiter = ',')]
    pub authorized_masters: Option<Vec<IpNet>>,
    /// A file of them: one address or range per line, `#` comments.
    #[arg(long, value_name = "FILE")]
    pub authorized_masters_file: Option<PathBuf>,
}

/// `modbus-detect eval`: what is trained on, what is scored, how it is labelled.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// A lab set's manifest.json: train on its baseline capture, score every
    /// other capture it lists, labelled by its ground truth, with its allow
    /// lists and register limits.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["normal", "capture"])]
    pub manifest: Option<PathBuf>,
    /// Normal traffic to train on (without --manifest).
    #[arg(long, value_name = "PATH", requires = "capture")]
    pub normal: Option<PathBuf>,
    /// A capture to score, with its per-frame labels (`frame;label` CSV,
    /// label 0/1 or normal/attack): CAPTURE=LABELS, or CAPTURE alone for
    /// all-normal traffic. Repeatable.
    #[arg(long, value_name = "CAPTURE[=LABELS]")]
    pub capture: Vec<String>,
    #[command(flatten)]
    pub allowed: MlAllowed,
    /// Addresses or ranges allowed to write (the rules' allow list).
    #[arg(long, value_name = "IP[/PREFIX]", num_args = 1.., value_delimiter = ',')]
    pub authorized_writers: Option<Vec<IpNet>>,
    /// Register limits for the rules.
    #[arg(long, value_name = "FILE")]
    pub register_limits_file: Option<PathBuf>,
    /// Seconds of traffic per window of our models (as --ml-window).
    #[arg(long, value_name = "S", default_value_t = 5.0)]
    pub ml_window: f64,
    /// Also write the figures as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}
