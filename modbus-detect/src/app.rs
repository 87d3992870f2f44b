//! One run of `modbus-detect`: load the settings files, replay, write the
//! report and streams, and decide the exit code.
//!
//! Exit codes: 0 success, 1 `--fail-on` threshold reached, 2 usage error
//! (clap), 3 unreadable input (capture, limits or baseline file), 4 output
//! not writable. A capture that breaks off half-way still gets its report
//! (status `input_error`) before exiting with 3; so does SIGINT/SIGTERM
//! (status `interrupted`, exit 130).

use std::cell::Cell;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cli::{Args, Command, ConfigAction, EvalArgs, MlAllowed, MlCaptures, MlStep};
use crate::config::addrs::{load_list, AddrSet, IpNet};
use crate::config::baseline::Baseline;
use crate::config::limits::RegisterLimits;
use crate::config::live::LiveConfig;
use crate::config::{DetectConfig, Mode, ThresholdValues};
use crate::counters::Counters;
use crate::dashboard::serve::Board;
use crate::files::{
    atomic_write, atomic_write_with, check_writable, identity, is_stdout, load_file, FileError,
    ParseError, Shown,
};
use crate::flow::policy::TargetPolicies;
use crate::output::eve::{EveError, EveWriter, Origin};
use crate::output::metrics::{self, Metrics, MetricsData};
use crate::output::publish::{nats, spool::Spool, Kind as PublishKind, Publisher, Worker};
use crate::output::report::{self, CaptureSection, RunInfo, ShardDrops, Status, Summary};
use crate::output::{inventory, stats};
use crate::runtime::offline::{replay_watched, Capture, FileRead, Watch};
use crate::runtime::online::{self, LiveError, LiveOptions, StartError};
use crate::runtime::{InputError, Plan, RunOutcome};
use crate::source::set::SetError;
use crate::source::xdp::XdpMode;
use crate::source::{CaptureFile, CaptureSet, CaptureStream, SourceError};

/// A run that could not be completed; one line naming the file or
/// interface, and the exit code it maps to.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The flags do not make sense together (exit 2).
    #[error("{0}")]
    Usage(&'static str),
    /// A threshold setting (exit 2): the message names it.
    #[error("{0}")]
    Threshold(String),
    /// A limits or baseline file (exit 3).
    #[error(transparent)]
    Settings(#[from] FileError),
    /// An address list (exit 3): the message names it.
    #[error("{0}")]
    List(String),
    #[error("{}: has no ML models for --ml (learned from fewer than {} windows of traffic, or by an older version); learn it again with --baseline-mode", Shown(.0), crate::ml::models::MIN_WINDOWS)]
    NoModels(PathBuf),
    /// The capture file (exit 3).
    #[error(transparent)]
    Capture(#[from] SourceError),
    /// The capture interface (exit 3).
    #[error(transparent)]
    Live(#[from] LiveError),
    /// The source failed part-way; the report was written (exit 3).
    #[error("{error} (report written to {})", Shown(report))]
    InputAfterReport { error: InputError, report: PathBuf },
    #[error("{}: cannot start the shards: {source}", Shown(path))]
    Threads {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An output cannot be written (exit 4): `what` is "write", "write
    /// report", "create", ...
    #[error("{}: cannot {what}: {source}", Shown(path))]
    Output {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// An output that was writable is not once privileges are dropped (exit 4).
    #[error("{0} (after dropping privileges)")]
    OutputAfterDrop(Box<AppError>),
    /// The metrics address cannot be listened on (exit 4).
    #[error("--metrics {addr}: cannot listen: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The dashboard cannot be served (exit 4).
    #[error("--dashboard {0}")]
    Dashboard(#[from] crate::dashboard::serve::ServeError),
    /// A step of the original ML pipeline (exit 3 or 4).
    #[error(transparent)]
    Step(#[from] crate::original::command::StepError),
    /// An evaluation's inputs (exit 3).
    #[error(transparent)]
    Eval(#[from] crate::eval::EvalError),
    /// The alert stream broke off (exit 4).
    #[error("EVE stream {0}")]
    Eve(#[from] EveError),
    /// Central settings (`config`, `--config-from`): the message names the
    /// key or the servers (exit 3).
    #[error("{0}")]
    Central(String),
}

impl AppError {
    pub fn exit_code(&self) -> u8 {
        match self {
            AppError::Usage(_) | AppError::Threshold(_) => 2,
            AppError::Settings(_)
            | AppError::List(_)
            | AppError::NoModels(_)
            | AppError::Capture(_)
            | AppError::Live(_)
            | AppError::InputAfterReport { .. }
            | AppError::Threads { .. }
            | AppError::Eval(_)
            | AppError::Central(_) => 3,
            AppError::Output { .. }
            | AppError::OutputAfterDrop(_)
            | AppError::Eve(_)
            | AppError::Listen { .. }
            | AppError::Dashboard(_) => 4,
            AppError::Step(e) => e.exit_code(),
        }
    }

    fn output(path: &Path, what: &'static str, source: std::io::Error) -> AppError {
        AppError::Output {
            path: path.to_path_buf(),
            what,
            source,
        }
    }
}

/// How often a dashboard following a run gets new figures.
const DASHBOARD_EVERY: Duration = Duration::from_secs(1);

/// Exit code when interrupted by a signal (128 + SIGINT).
const EXIT_INTERRUPTED: u8 = 130;

/// Build the detector's configuration from the flags, loading its files.
pub fn config_from_args(args: &Args) -> Result<DetectConfig, AppError> {
    let mut cfg = DetectConfig {
        mode: if args.baseline_mode {
            Mode::Learn
        } else {
            Mode::Detect
        },
        ports: args.ports.clone(),
        authorized_masters: allow_list(&args.authorized_masters, &args.authorized_masters_file)?,
        authorized_writers: allow_list(&args.authorized_writers, &args.authorized_writers_file)?,
        ..DetectConfig::default()
    };
    cfg.thresholds = ThresholdValues::parse_settings(&args.threshold)
        .and_then(|changes| ThresholdValues::with_changes(&changes))
        .and_then(|values| values.thresholds())
        .map_err(AppError::Threshold)?;
    cfg.limits.max_flows = args.max_flows.max(1);
    if args.eve_every_event {
        cfg.limits.eve_interval_ns = 0;
    }
    cfg.verify_checksums = args.checksums == "verify";
    cfg.target_policies = TargetPolicies::new(&args.target_policy)
        .map_err(|_| AppError::Usage("--target-policy takes at most 1024 address ranges"))?;
    if !(args.ml_window.is_finite() && (0.001..=86_400.0).contains(&args.ml_window)) {
        return Err(AppError::Usage(
            "--ml-window needs seconds from 0.001 to 86400",
        ));
    }
    cfg.ml_window_ns = (args.ml_window * 1e9) as u64;
    if args.ml && args.baseline_file.is_none() && args.central.config_from.is_none() {
        return Err(AppError::Usage(
            "--ml needs a baseline: --baseline-file, or one from --config-from",
        ));
    }
    cfg.ml = args.ml;
    if args.ports.is_empty() || args.ports.contains(&0) {
        return Err(AppError::Usage(
            "--ports needs port numbers from 1 to 65535",
        ));
    }
    if let Some(p) = &args.register_limits_file {
        let limits = RegisterLimits::load(p)?;
        cfg.limits_file = Some(Arc::new(limits));
    }
    if let (Some(p), false) = (&args.baseline_file, args.baseline_mode) {
        let b = Baseline::load(p)?;
        if args.ml && b.models().is_none() {
            return Err(AppError::NoModels(p.clone()));
        }
        cfg.baseline = Some(Arc::new(b));
    }
    Ok(cfg)
}

/// An allow list from its flag and its file; `None` when neither is given
/// (the rule is then off).
fn allow_list(
    flags: &Option<Vec<IpNet>>,
    file: &Option<PathBuf>,
) -> Result<Option<AddrSet>, AppError> {
    if flags.is_none() && file.is_none() {
        return Ok(None);
    }
    let mut items = flags.clone().unwrap_or_default();
    if let Some(f) = file {
        items.extend(load_list(f).map_err(AppError::List)?);
    }
    AddrSet::new(items).map(Some).map_err(AppError::List)
}

/// Run with the given flags; returns the exit code.
pub fn run(args: &Args) -> Result<u8, AppError> {
    let stop = Arc::new(AtomicBool::new(false));
    let reopen = Arc::new(AtomicBool::new(false));
    match &args.command {
        Some(Command::DiffInventory { before, after }) => return diff_inventory(before, after),
        Some(Command::Census {
            paths,
            preview,
            json,
        }) => return census(paths, &args.ports, *preview, json.as_deref()),
        Some(Command::Ml { step }) => return ml_step(step),
        Some(Command::Eval(e)) => return eval(e),
        Some(Command::Console {
            nats,
            stream,
            consumer,
            listen,
            auth,
            token,
        }) => {
            install_signal_handlers(&stop, &reopen);
            let source = crate::console::Source {
                connect: auth.connect(nats),
                stream: stream.clone(),
                consumer: consumer.clone(),
            };
            let bound =
                crate::console::start(source, *listen, dashboard_token(token)?, stop.clone())?;
            if !args.quiet {
                eprintln!("modbus-detect: fleet console at http://{bound}/ (reading {nats})");
            }
            wait_for(&stop);
            return Ok(0);
        }
        Some(Command::Config {
            nats,
            bucket,
            replicas,
            sensor,
            auth,
            action,
        }) => {
            let said = config_edit(&auth.connect(nats), bucket, *replicas, sensor, action)?;
            println!("{said}");
            return Ok(0);
        }
        Some(Command::Serve {
            report,
            eve,
            listen,
            token,
        }) => {
            install_signal_handlers(&stop, &reopen);
            return serve_report(report, eve.as_deref(), *listen, token, args.quiet, &stop);
        }
        None => {}
    }
    install_signal_handlers(&stop, &reopen);
    let cfg = Arc::new(follow_central(args, config_from_args(args)?)?);
    let board = match args.dashboard {
        Some(addr) => {
            let token = dashboard_token(&args.token)?;
            let info = run_info(args, "pcap", String::new(), String::new(), 1);
            let mut start = report::build(&Summary::default(), &info, &cfg);
            start.status = Status::Running;
            let (board, bound) = crate::dashboard::serve::serve(addr, token, start, true, None)?;
            if !args.quiet {
                eprintln!("modbus-detect: dashboard at http://{bound}/");
            }
            Some(board)
        }
        None => None,
    };
    let metrics = Metrics::default();
    if let Some(addr) = args.metrics {
        metrics::serve(addr, metrics.clone())
            .map_err(|source| AppError::Listen { addr, source })?;
    }
    if let Some(live) = &cfg.updates {
        metrics.follow_central(live.clone());
    }
    let publishing = start_publisher(args)?;
    if let Some((p, _)) = &publishing {
        metrics.follow_publisher(p.figures.clone());
    }
    let lines = Lines {
        reopen: &reopen,
        publish: publishing.as_ref().map(|(p, _)| p),
    };
    let (outcome, info) = match (args.pcap.as_slice(), &args.interface) {
        ([pcap, ..], _) => {
            let mut capture = open_inputs(args, &args.pcap)?;
            // Passes of their own, then detection as usual: they never
            // stand in for the report, the alerts or --fail-on.
            let files = match &capture {
                Input::File(f) => Some(std::slice::from_ref(f)),
                Input::Set(set) => Some(set.files.as_slice()),
                Input::Stream(_) => None,
            };
            if let (Some(path), Some(files)) = (&args.dump_adus, files) {
                dump_adus(files, path, cfg.clone())?;
            }
            match (&args.csv_dir, files) {
                (Some(dir), Some(files)) => adu_features(files, dir, cfg.clone())?,
                (Some(dir), None) => eprintln!(
                    "modbus-detect: warning: {}: adu_features.csv needs a capture file or set (a stream can be read once); the other tables are written",
                    Shown(dir)
                ),
                _ => {}
            }
            replay_capture(
                args,
                &cfg,
                &mut capture,
                pcap,
                &stop,
                &lines,
                board.as_ref(),
            )?
        }
        ([], Some(iface)) => {
            check_outputs(args)?;
            live_capture(args, &cfg, iface, &stop, &lines, &metrics, board.as_ref())?
        }
        ([], None) => {
            return Err(AppError::Usage(
                "nothing to read: give --pcap FILE or --interface IF (see --help)",
            ))
        }
    };
    let code = write_results(
        args,
        &cfg,
        outcome,
        info,
        &metrics,
        board.as_ref(),
        publishing,
    )?;
    hold_metrics(args, &stop);
    if board.is_some() {
        // The analyst looks at the finished run until SIGINT/SIGTERM.
        if !args.quiet {
            eprintln!("modbus-detect: the run is over; the dashboard stays up until Ctrl-C");
        }
        wait_for(&stop);
    }
    Ok(code)
}

/// Sleep until SIGINT/SIGTERM.
fn wait_for(stop: &AtomicBool) {
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The dashboard token of --dashboard-token or the first line of
/// --dashboard-token-file.
fn dashboard_token(t: &crate::cli::TokenArgs) -> Result<Option<String>, AppError> {
    let Some(path) = &t.dashboard_token_file else {
        return match t.dashboard_token.as_deref() {
            Some("") => Err(AppError::Usage("--dashboard-token must not be empty")),
            other => Ok(other.map(str::to_string)),
        };
    };
    let token = load_file(path, |text| {
        text.lines()
            .next()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .ok_or_else(|| ParseError::Content("the first line holds no token".into()))
    })?;
    Ok(Some(token))
}

/// `serve --report F`: the dashboard of a finished report, until
/// SIGINT/SIGTERM.
fn serve_report(
    path: &Path,
    eve: Option<&Path>,
    listen: std::net::SocketAddr,
    token: &crate::cli::TokenArgs,
    quiet: bool,
    stop: &AtomicBool,
) -> Result<u8, AppError> {
    let report = load_file(path, |text| {
        serde_json::from_str::<report::Report>(text).map_err(ParseError::Json)
    })?;
    let eve = eve
        .map(crate::dashboard::eve_lines::EveLines::load)
        .transpose()?;
    let token = dashboard_token(token)?;
    let (_board, bound) = crate::dashboard::serve::serve(listen, token, report, false, eve)?;
    if !quiet {
        eprintln!(
            "modbus-detect: dashboard of {} at http://{bound}/ (Ctrl-C to stop)",
            Shown(path)
        );
    }
    wait_for(stop);
    Ok(0)
}

/// `--metrics-hold S`: keep the process (and its metrics) up a while after
/// the run, until the time is up or a signal comes.
fn hold_metrics(args: &Args, stop: &AtomicBool) {
    // A NaN or negative hold is no hold.
    if args.metrics.is_none() || args.metrics_hold.is_nan() || args.metrics_hold <= 0.0 {
        return;
    }
    let until = Instant::now() + Duration::from_secs_f64(args.metrics_hold.min(86_400.0));
    while Instant::now() < until && !stop.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `census PATH...`: the table on stdout (and JSON); exit 3 when no file
/// could be read.
fn census(
    paths: &[PathBuf],
    ports: &[u16],
    preview: usize,
    json: Option<&Path>,
) -> Result<u8, AppError> {
    let files = crate::census::census(paths, ports, preview.min(1000))
        .map_err(|e| AppError::List(e.to_string()))?;
    if let Some(path) = json {
        check_output(path)?;
        let text = serde_json::to_vec_pretty(&files)
            .map_err(|e| AppError::output(path, "write", e.into()))?;
        atomic_write(path, &text).map_err(|e| AppError::output(path, "write", e))?;
    }
    let _ = crate::census::print(&mut std::io::stdout().lock(), &files);
    let readable = files.iter().any(|f| f.format.is_some());
    Ok(if readable { 0 } else { 3 })
}

/// `ml STEP`: a step of the original pipeline; its breakdown on stdout.
fn ml_step(step: &MlStep) -> Result<u8, AppError> {
    use crate::original::command::{self as steps, *};
    use crate::original::label::Allowed;
    use crate::original::model::OriginalModels;
    let cfg = Arc::new(DetectConfig::default());
    let features = |c: &MlCaptures, dir: &Path| -> Result<Vec<String>, AppError> {
        std::fs::create_dir_all(dir).map_err(|e| AppError::output(dir, "create", e))?;
        let mut problems = Vec::new();
        for (paths, name) in [(&c.normal, NORMAL_FEATURES), (&c.attack, ATTACK_FEATURES)] {
            if paths.is_empty() {
                continue;
            }
            let out = dir.join(name);
            let n = write_features(paths, &out, &cfg, c.skip_bad_files)?;
            println!(
                "{}: {} ADUs of {} captures",
                out.display(),
                n.rows,
                n.captures
            );
            for why in &n.skipped {
                eprintln!("modbus-detect: warning: {why} (left out)");
            }
            problems.extend(n.partial);
        }
        Ok(problems)
    };
    let allowed = |a: &MlAllowed, m: &OriginalModels| -> Result<Allowed, AppError> {
        Ok(Allowed {
            list: allow_list(&a.authorized_masters, &a.authorized_masters_file)?,
            sources: m.sources.iter().copied().collect(),
        })
    };
    let scored = |m: &OriginalModels, features: &Path, dir: &Path, a: &MlAllowed| {
        std::fs::create_dir_all(dir).map_err(|e| AppError::output(dir, "create", e))?;
        let found = steps::score(m, features, dir, &allowed(a, m)?)?;
        let mut out = std::io::stdout().lock();
        for ((name, file), b) in [
            ("Isolation Forest (contamination 0.01)", IFOREST_REPORT),
            ("One-Class SVM (RBF, nu 0.01, gamma scale)", OCSVM_REPORT),
        ]
        .iter()
        .zip(&found)
        {
            let _ = print_breakdown(&mut out, name, b, &dir.join(file));
        }
        Ok::<(), AppError>(())
    };
    let trained = |features: &Path, models: &Path| -> Result<OriginalModels, AppError> {
        let m = steps::train(features, models)?;
        println!(
            "{}: trained on {} ADUs ({} kept), Isolation Forest threshold {:.4}, {} support vectors",
            models.display(),
            m.training_rows,
            m.rows_kept,
            m.iforest_threshold,
            m.ocsvm.sv.len()
        );
        Ok(m)
    };
    let problems = match step {
        MlStep::Features { captures, out_dir } => features(captures, out_dir)?,
        MlStep::Train { features, models } => {
            trained(features, models)?;
            Vec::new()
        }
        MlStep::Score {
            models,
            features,
            out_dir,
            allowed,
        } => {
            scored(&load_models(models)?, features, out_dir, allowed)?;
            Vec::new()
        }
        MlStep::Run {
            captures,
            out_dir,
            allowed,
        } => {
            let problems = features(captures, out_dir)?;
            let m = trained(&out_dir.join(NORMAL_FEATURES), &out_dir.join(MODELS))?;
            if !captures.attack.is_empty() {
                scored(&m, &out_dir.join(ATTACK_FEATURES), out_dir, allowed)?;
            }
            problems
        }
    };
    if problems.is_empty() {
        return Ok(0);
    }
    for p in &problems {
        eprintln!("modbus-detect: {p}");
    }
    Err(StepError::Incomplete(format!(
        "{} captures broke off (above); the rows before each break are written",
        problems.len()
    ))
    .into())
}

/// `eval`: the tables on stdout (and JSON).
fn eval(e: &EvalArgs) -> Result<u8, AppError> {
    use crate::eval::{labels, Case, EvalPlan};
    let plan = match (&e.manifest, &e.normal) {
        (Some(m), _) => EvalPlan::from_manifest(m)?,
        (None, Some(normal)) => {
            let masters = allow_list(
                &e.allowed.authorized_masters,
                &e.allowed.authorized_masters_file,
            )?;
            let writers = allow_list(&e.authorized_writers, &None)?;
            let limits = match &e.register_limits_file {
                Some(p) => Some(Arc::new(RegisterLimits::load(p)?)),
                None => None,
            };
            let mut cases = Vec::new();
            for c in &e.capture {
                let (path, labels) = match c.split_once('=') {
                    Some((p, l)) => (
                        PathBuf::from(p),
                        labels::from_frame_csv(Path::new(l))
                            .map_err(crate::eval::EvalError::from)?,
                    ),
                    None => (PathBuf::from(c), labels::Labels::default()),
                };
                cases.push(Case {
                    name: path.file_name().map_or_else(
                        || path.display().to_string(),
                        |n| n.to_string_lossy().into_owned(),
                    ),
                    path,
                    labels,
                    authorized_masters: masters.clone(),
                    authorized_writers: writers.clone(),
                    limits: limits.clone(),
                });
            }
            EvalPlan {
                normal: normal.clone(),
                authorized_masters: masters,
                ml_window_ns: 0,
                cases,
            }
        }
        (None, None) => {
            return Err(AppError::Usage(
                "eval needs --manifest FILE, or --normal PATH and --capture CAPTURE[=LABELS]",
            ))
        }
    };
    if !(e.ml_window.is_finite() && (0.001..=86_400.0).contains(&e.ml_window)) {
        return Err(AppError::Usage(
            "--ml-window needs seconds from 0.001 to 86400",
        ));
    }
    let plan = EvalPlan {
        ml_window_ns: (e.ml_window * 1e9) as u64,
        ..plan
    };
    if let Some(path) = &e.json {
        check_output(path)?;
    }
    let result = crate::eval::evaluate(&plan)?;
    let _ = crate::eval::print(&mut std::io::stdout().lock(), &result);
    if let Some(path) = &e.json {
        let text = serde_json::to_vec_pretty(&result)
            .map_err(|err| AppError::output(path, "write", err.into()))?;
        atomic_write(path, &text).map_err(|err| AppError::output(path, "write", err))?;
    }
    Ok(0)
}

/// `diff-inventory A B`: the differences on stdout, one per line.
fn diff_inventory(before: &Path, after: &Path) -> Result<u8, AppError> {
    let a = inventory::load(before)?;
    let b = inventory::load(after)?;
    let lines = inventory::diff(&a, &b);
    let mut out = std::io::stdout().lock();
    for l in &lines {
        let _ = writeln!(out, "{l}");
    }
    Ok(u8::from(!lines.is_empty()))
}

/// Every file the run will write must be writable before it reads a frame:
/// report, EVE stream, learned baseline, ADU dump, inventory.
fn check_outputs(args: &Args) -> Result<(), AppError> {
    // The directories of --csv-dir and --plots-dir are made if missing.
    for dir in [&args.csv_dir, &args.plots_dir].into_iter().flatten() {
        std::fs::create_dir_all(dir).map_err(|e| AppError::output(dir, "create", e))?;
    }
    let outputs = outputs(args);
    if outputs.iter().filter(|o| is_stdout(o)).count() > 1 {
        return Err(AppError::Usage(
            "only one output can be standard output (-): their lines would mix",
        ));
    }
    refuse_inputs_as_outputs(args, &outputs)?;
    outputs.iter().try_for_each(|o| check_output(o))
}

/// Every file the run writes.
fn outputs(args: &Args) -> Vec<PathBuf> {
    let mut out = vec![args.output.clone()];
    if let Some(i) = &args.inventory {
        out.push(i.clone());
        out.extend(["devices", "pairs"].map(|t| inventory::csv_path(i, t)));
    }
    out.extend(args.eve.clone());
    if args.baseline_mode {
        out.extend(args.baseline_file.clone());
    }
    out.extend(args.dump_adus.clone());
    out.extend(args.html.clone());
    if let Some(d) = &args.csv_dir {
        out.extend(
            [
                "alerts.csv",
                "alert_types.csv",
                "devices.csv",
                "pairs.csv",
                "ml_alerts.csv",
                "adu_features.csv",
            ]
            .map(|f| d.join(f)),
        );
    }
    if let Some(d) = &args.plots_dir {
        out.extend(["traffic.svg", "timeline.svg"].map(|f| d.join(f)));
    }
    out
}

/// An output that is also an input (the same file under any name: a hard
/// link, a symbolic link) is refused before anything is opened for
/// writing: writing it would destroy the evidence, or the capture being
/// read (a SIGBUS on the mapped file).
fn refuse_inputs_as_outputs(args: &Args, outputs: &[PathBuf]) -> Result<(), AppError> {
    // A directory's files are inputs too.
    let listed: Vec<PathBuf> = args
        .pcap
        .iter()
        .filter_map(|p| std::fs::read_dir(p).ok())
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    let mut inputs: Vec<&PathBuf> = args.pcap.iter().chain(&listed).collect();
    inputs.extend(&args.register_limits_file);
    if !args.baseline_mode {
        inputs.extend(&args.baseline_file);
    }
    for o in outputs.iter().filter(|o| !is_stdout(o)) {
        let Some(id) = identity(o) else {
            continue;
        };
        if let Some(i) = inputs.iter().find(|i| identity(i) == Some(id)) {
            let e = std::io::Error::other(format!("is the input {}", Shown(i)));
            return Err(AppError::output(o, "write", e));
        }
    }
    Ok(())
}

/// A capture to replay.
enum Input {
    /// A file, memory-mapped.
    File(CaptureFile),
    /// Standard input (`-`) or a FIFO, read as it comes.
    Stream(CaptureStream),
    /// Several files, or a directory's, as one capture.
    Set(CaptureSet),
}

fn is_stream(p: &Path) -> bool {
    p == Path::new("-")
        || std::fs::metadata(p)
            .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_fifo(&m.file_type()))
}

/// Check the outputs, then open the capture (cheap: a file is
/// memory-mapped, a stream is read later).
fn open_inputs(args: &Args, pcaps: &[PathBuf]) -> Result<Input, AppError> {
    check_outputs(args)?;
    let one = match pcaps {
        [p] if !std::fs::metadata(p).is_ok_and(|m| m.is_dir()) => Some(p),
        _ => None,
    };
    if one.is_none() && pcaps.iter().any(|p| is_stream(p)) {
        return Err(AppError::Usage(
            "a stream (- or a FIFO) cannot be part of a capture set: give it alone",
        ));
    }
    let stream = one.is_some_and(|p| is_stream(p));
    if args.dump_adus.is_some() && stream {
        return Err(AppError::Usage(
            "--dump-adus needs capture files: it reads the capture twice, a stream can be read once",
        ));
    }
    Ok(match one {
        Some(p) if stream => Input::Stream(CaptureStream::open(p)?),
        Some(p) => Input::File(CaptureFile::open(p)?),
        None => {
            let set = CaptureSet::open(pcaps, args.skip_bad_files).map_err(|e| match e {
                SetError::File(e) => AppError::Capture(e),
                other => AppError::List(other.to_string()),
            })?;
            for s in &set.skipped {
                eprintln!("modbus-detect: warning: left out of the set: {}", s.error);
            }
            Input::Set(set)
        }
    })
}

fn eve_writer(
    args: &Args,
    cfg: &Arc<DetectConfig>,
    lines: &Lines,
) -> Result<Option<EveWriter>, AppError> {
    let origin = Origin {
        host: args.sensor_name.clone().unwrap_or_else(host_name),
        // A set's frames are numbered across it: the first path names it.
        pcap_filename: args.pcap.first().map(|p| p.display().to_string()),
        in_iface: args.interface.clone(),
    };
    let writer = match (&args.eve, lines.publish) {
        (Some(p), publish) => {
            let w = EveWriter::open(p, cfg.clone(), args.eve_truncate)
                .map(|w| w.with_origin(origin).with_reopen(lines.reopen.clone()))
                .map_err(|e| AppError::output(p, "create", e.source))?;
            Some(match publish {
                Some(publisher) => w.with_publisher(publisher.clone()),
                None => w,
            })
        }
        (None, Some(publisher)) => {
            Some(EveWriter::publishing(publisher.clone(), cfg.clone()).with_origin(origin))
        }
        (None, None) => None,
    };
    Ok(writer)
}

/// Where the alert lines go besides the report: SIGHUP's reopen flag for
/// the `--eve` file, and the `--publish` publisher.
struct Lines<'a> {
    reopen: &'a Arc<AtomicBool>,
    publish: Option<&'a Publisher>,
}

/// `--publish`: the publishing thread, with its spool (one line naming
/// what cannot be used).
fn start_publisher(args: &Args) -> Result<Option<(Publisher, Worker)>, AppError> {
    let a = &args.publish;
    let Some(servers) = &a.publish else {
        return Ok(None);
    };
    if !(a.publish_wait.is_finite() && (0.0..=3600.0).contains(&a.publish_wait)) {
        return Err(AppError::Usage(
            "--publish-wait needs seconds from 0 to 3600",
        ));
    }
    let spool = Spool::open(&a.publish_spool, a.publish_spool_max_bytes)
        .map_err(|e| AppError::output(&a.publish_spool, "open the spool in", e))?;
    let connect = nats::Connect {
        servers: servers.clone(),
        credentials: a.publish_creds.clone(),
        root_ca: a.publish_ca.clone(),
    };
    let stream = nats::StreamSettings {
        name: a.publish_stream.clone(),
        replicas: a.publish_replicas,
        max_bytes: a.publish_max_bytes,
        max_age: Duration::from_secs(a.publish_max_age),
        ..nats::StreamSettings::default()
    };
    let sink = nats::NatsSink::new(connect, stream)
        .map_err(|e| AppError::output(&a.publish_spool, "start publishing for", e))?;
    let sensor = args.sensor_name.clone().unwrap_or_else(host_name);
    Ok(Some(Publisher::start(&sensor, Box::new(sink), spool)))
}

/// The machine's name (`host` of the alert lines when no --sensor-name).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// `config put|delete|show`.
fn config_edit(
    connect: &nats::Connect,
    bucket: &str,
    replicas: usize,
    sensor: &str,
    action: &ConfigAction,
) -> Result<String, AppError> {
    use crate::config::central::{nats::Edit, Item};
    let item = |name: &str| {
        Item::from_name(name).ok_or_else(|| {
            let names: Vec<&str> = Item::ALL.iter().map(|i| i.name()).collect();
            AppError::Central(format!(
                "{name:?}: no such item (one of {})",
                names.join(", ")
            ))
        })
    };
    let edit = match action {
        ConfigAction::Put { item: name, file } => {
            let value = read_item_file(file).map_err(AppError::Central)?;
            Edit::Put {
                item: item(name)?,
                value,
            }
        }
        ConfigAction::Delete { item: name } => Edit::Delete { item: item(name)? },
        ConfigAction::Show => Edit::Show,
    };
    crate::config::central::nats::edit(connect, bucket, replicas, sensor, edit)
        .map_err(AppError::Central)
}

/// An item's file for `config put`: a regular file of at most 64 MiB.
fn read_item_file(path: &Path) -> Result<Vec<u8>, String> {
    let shown = Shown(path);
    let meta = std::fs::metadata(path).map_err(|e| format!("{shown}: cannot read: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{shown}: is {}", crate::files::kind(&meta)));
    }
    if meta.len() > 64 << 20 {
        return Err(format!("{shown}: {} bytes, more than 64 MiB", meta.len()));
    }
    std::fs::read(path).map_err(|e| format!("{shown}: cannot read: {e}"))
}

/// `--config-from`: the settings to start with (the bucket's over the
/// local ones, once read), following the bucket from now on.
fn follow_central(args: &Args, local: DetectConfig) -> Result<DetectConfig, AppError> {
    let c = &args.central;
    let Some(from) = &c.config_from else {
        return Ok(local);
    };
    let servers = match from.as_str() {
        "nats" => args.publish.publish.clone().ok_or(AppError::Usage(
            "--config-from nats takes the --publish servers: give --publish, or --config-from nats://HOST:PORT",
        ))?,
        s if s.starts_with("nats://") || s.starts_with("tls://") => s.to_string(),
        _ => {
            return Err(AppError::Usage(
                "--config-from takes nats or nats://HOST:PORT[,...]",
            ))
        }
    };
    if !(c.config_wait.is_finite() && (0.0..=3600.0).contains(&c.config_wait)) {
        return Err(AppError::Usage(
            "--config-wait needs seconds from 0 to 3600",
        ));
    }
    let source = crate::config::central::nats::Source {
        connect: nats::Connect {
            servers,
            credentials: args.publish.publish_creds.clone(),
            root_ca: args.publish.publish_ca.clone(),
        },
        bucket: c.config_bucket.clone(),
        sensor: args.sensor_name.clone().unwrap_or_else(host_name),
    };
    let live = Arc::new(LiveConfig::new(Arc::new(local.clone())));
    let wait = Duration::from_secs_f64(c.config_wait);
    crate::config::central::nats::follow(source, local, live.clone(), wait)
        .map_err(|e| AppError::Central(format!("central settings: cannot start: {e}")))?;
    Ok(DetectConfig {
        updates: Some(live.clone()),
        ..(*live.current()).clone()
    })
}

fn run_info(
    args: &Args,
    kind: &'static str,
    input: String,
    format: String,
    threads: usize,
) -> RunInfo {
    RunInfo {
        input_kind: kind,
        input,
        format,
        threads,
        status: Status::Complete,
        error: None,
        elapsed_s: 0.0,
        limits_file: args
            .register_limits_file
            .as_ref()
            .map(|p| p.display().to_string()),
        baseline_file: args.baseline_file.as_ref().map(|p| p.display().to_string()),
        eve_file: args.eve.as_ref().map(|p| p.display().to_string()),
        eve_lines: 0,
        capture: None,
        files: Vec::new(),
        publish: None,
    }
}

fn replay_capture(
    args: &Args,
    cfg: &Arc<DetectConfig>,
    capture: &mut Input,
    pcap: &Path,
    stop: &AtomicBool,
    lines: &Lines,
    board: Option<&Board>,
) -> Result<(RunOutcome, RunInfo), AppError> {
    let eve = eve_writer(args, cfg, lines)?;
    let plan = Plan::choose(args.threads.map(usize::from), 1);
    let show_progress = !args.quiet && std::io::stderr().is_terminal();
    // A stream's length is unknown: the bar counts bytes without an end.
    let len = match capture {
        Input::File(f) => f.data().len() as u64,
        Input::Stream(_) | Input::Set(_) => 0,
    };
    let bar = show_progress.then(|| progress_bar(len));
    let progress = |pos: u64| {
        if let Some(b) = &bar {
            b.set_position(pos);
        }
    };
    // A set's files as they are read: their frames and how they ended.
    let set_files: Vec<(String, &'static str)> = match &*capture {
        Input::Set(set) => set
            .files
            .iter()
            .map(|f| (f.path().display().to_string(), f.format()))
            .collect(),
        _ => Vec::new(),
    };
    let files: std::cell::RefCell<Vec<report::InputFile>> = Default::default();
    let on_file = |read: FileRead| {
        let Some((path, format)) = set_files.get(read.index) else {
            return;
        };
        let mut files = files.borrow_mut();
        let before: u64 = files.iter().map(|f| f.frames).sum();
        files.push(report::InputFile {
            path: path.clone(),
            format: (*format).into(),
            first_frame: if read.frames > 0 { before + 1 } else { 0 },
            frames: read.frames,
            skipped: false,
            error: read.error.map(|e| e.to_string()),
        });
    };
    let source = match capture {
        Input::File(f) => Capture::File(f),
        Input::Stream(s) => Capture::Stream(s),
        Input::Set(set) => Capture::Set(set, &on_file),
    };
    // The live dashboard follows the replay every second.
    let follow = |shards: Vec<crate::shard::ShardResult>, read: &Counters, elapsed: Duration| {
        if let Some(board) = board {
            let summary = Summary::merge(read, shards);
            let mut info = run_info(
                args,
                "pcap",
                pcap.display().to_string(),
                String::new(),
                plan.shards(),
            );
            info.status = Status::Running;
            info.elapsed_s = elapsed.as_secs_f64();
            let report = report::build(&summary, &info, cfg);
            board.publish(report, true);
        }
    };
    let watch = Watch {
        every: DASHBOARD_EVERY,
        on_snapshot: &follow,
    };
    let watch = board.map(|_| &watch);
    let outcome = replay_watched(cfg.clone(), source, plan, eve, stop, Some(&progress), watch)
        .map_err(|source| AppError::Threads {
            path: pcap.to_path_buf(),
            source,
        })?;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let format = match &*capture {
        Input::File(f) => f.format(),
        Input::Stream(s) => s.format(),
        Input::Set(_) => "set",
    };
    let mut info = run_info(
        args,
        "pcap",
        pcap.display().to_string(),
        format.to_string(),
        plan.shards(),
    );
    info.files = files.into_inner();
    if let Input::Set(set) = &*capture {
        info.files
            .extend(set.skipped.iter().map(|s| report::InputFile {
                path: s.path.display().to_string(),
                format: String::new(),
                first_frame: 0,
                frames: 0,
                skipped: true,
                error: Some(s.error.to_string()),
            }));
    }
    Ok((outcome, info))
}

fn live_capture(
    args: &Args,
    cfg: &Arc<DetectConfig>,
    iface: &str,
    stop: &AtomicBool,
    lines: &Lines,
    metrics: &Metrics,
    board: Option<&Board>,
) -> Result<(RunOutcome, RunInfo), AppError> {
    let opts = LiveOptions {
        iface: iface.to_string(),
        queues: args.queues.clone(),
        mode: args.xdp_mode.as_deref().map(|m| match m {
            "skb" => XdpMode::Skb,
            _ => XdpMode::Native,
        }),
        duration: (args.duration > 0.0).then(|| std::time::Duration::from_secs_f64(args.duration)),
        force: args.force,
        cpus: args.cpus.clone(),
        stats_interval: std::time::Duration::from_secs_f64(args.stats_interval.max(0.1)),
        busy_poll: std::time::Duration::from_micros(args.busy_poll),
        quiet: args.quiet,
    };
    let available =
        crate::sys::netdev::rx_queue_count(iface).map_err(|e| AppError::Live(e.into()))?;
    let queues = args.queues.as_ref().map_or(available as usize, Vec::len);
    let threads = match args.threads {
        Some(n) => usize::from(n),
        None => online::default_shards(iface, args.queues.as_deref())?,
    };
    let mut live_cfg = DetectConfig::clone(cfg);
    if queues > 1 {
        // The directions of a connection may come through different queues.
        live_cfg.limits.early_response_hold_ns = 50_000_000;
        live_cfg.limits.ack_confirms_loss = false;
    }
    let cfg = &Arc::new(live_cfg);
    let eve = eve_writer(args, cfg, lines)?;
    // Once the capabilities are gone (CAP_DAC_OVERRIDE with them), check
    // again that the outputs can be written, before capture starts.
    let ready = || check_outputs(args);
    let periodic_outputs = PeriodicOutputs::new(
        args,
        cfg,
        iface,
        threads,
        metrics,
        board,
        lines.publish.cloned(),
    );
    let on_snapshot = |snap: online::LiveSnapshot| periodic_outputs.write(snap);
    let due = || periodic_outputs.due();
    let periodic = periodic_outputs.every().map(|every| online::Periodic {
        every,
        due: &due,
        on_snapshot: &on_snapshot,
    });
    let periodic = periodic.as_ref();
    let outcome = online::run_live(cfg.clone(), &opts, threads, eve, stop, &ready, periodic)
        .map_err(|e| match e {
            StartError::Check(e) => AppError::OutputAfterDrop(Box::new(e)),
            StartError::Live(e) => AppError::Live(e),
        })?;
    let mode = outcome.capture.as_ref().map_or("", |c| match c.mode {
        XdpMode::Native => "native",
        XdpMode::Skb => "skb",
    });
    let mut info = run_info(
        args,
        "interface",
        iface.to_string(),
        format!("af_xdp ({mode})"),
        threads,
    );
    info.capture = outcome.capture.as_ref().map(|out| CaptureSection {
        xdp_mode: mode.into(),
        xdp: out.xdp,
        queues: out.queues.clone(),
        shards: out
            .shard_ring_full_drops
            .iter()
            .enumerate()
            .map(|(shard, &ring_full_drops)| ShardDrops {
                shard,
                ring_full_drops,
            })
            .collect(),
        link_down_events: out.link_down_events,
        link_down_seconds: out.link_down_seconds,
        inventory_snapshots_missed: out.inventory_snapshots_missed,
        privileges: out.privileges.clone(),
        busy_poll: out.busy_poll.clone(),
    });
    Ok((outcome, info))
}

/// What a live capture writes while it runs, each at its own interval:
/// the report (`--report-interval`), the inventory files
/// (`--inventory-interval`) and `stats` events in the EVE stream
/// (`--stats-interval`). A file that cannot be written now is said on
/// stderr; the last one, at exit, decides the exit code.
struct PeriodicOutputs<'a> {
    args: &'a Args,
    cfg: &'a DetectConfig,
    iface: &'a str,
    threads: usize,
    host: String,
    report: Option<(Duration, Cell<Instant>)>,
    inventory: Option<(Duration, Cell<Instant>)>,
    stats: Option<(Duration, Cell<Instant>)>,
    /// Metrics are handed over every second.
    metrics: Option<(Duration, Cell<Instant>)>,
    published: &'a Metrics,
    /// The live dashboard, every [`DASHBOARD_EVERY`].
    dashboard: Option<(Duration, Cell<Instant>)>,
    board: Option<&'a Board>,
    /// `--publish`: inventory snapshots go there too.
    publisher: Option<Publisher>,
    /// What the snapshot being taken is for: report, inventory, stats,
    /// metrics, dashboard.
    pending: Cell<[bool; 5]>,
}

impl<'a> PeriodicOutputs<'a> {
    fn new(
        args: &'a Args,
        cfg: &'a DetectConfig,
        iface: &'a str,
        threads: usize,
        published: &'a Metrics,
        board: Option<&'a Board>,
        publisher: Option<Publisher>,
    ) -> Self {
        let every = |on: bool, s: f64| {
            on.then(|| {
                (
                    Duration::from_secs_f64(s.max(0.1)),
                    Cell::new(Instant::now()),
                )
            })
        };
        PeriodicOutputs {
            args,
            cfg,
            iface,
            threads,
            host: args.sensor_name.clone().unwrap_or_else(host_name),
            report: every(
                args.report_interval.is_some(),
                args.report_interval.unwrap_or(0.0),
            ),
            // Published too: snapshots of the inventory, stats events.
            inventory: every(
                args.inventory.is_some() || publisher.is_some(),
                args.inventory_interval,
            ),
            stats: every(
                args.eve.is_some() || publisher.is_some(),
                args.stats_interval,
            ),
            // Due at the first tick: a scraper sees figures from the start.
            metrics: every(args.metrics.is_some(), 1.0).map(|(d, last)| {
                last.set(Instant::now().checked_sub(d).unwrap_or_else(Instant::now));
                (d, last)
            }),
            published,
            dashboard: every(board.is_some(), DASHBOARD_EVERY.as_secs_f64()),
            board,
            publisher,
            pending: Cell::new([false; 5]),
        }
    }

    /// Which outputs are due now: `None` when none is, else whether the
    /// snapshot must be whole (a report or an inventory file).
    fn due(&self) -> Option<bool> {
        let due = [
            Self::take_due(&self.report),
            Self::take_due(&self.inventory),
            Self::take_due(&self.stats),
            Self::take_due(&self.metrics),
            Self::take_due(&self.dashboard),
        ];
        self.pending.set(due);
        due.contains(&true).then_some(due[0] || due[1] || due[4])
    }

    /// How often the capture must hand over a snapshot (the shortest
    /// interval asked for), if any output wants one.
    fn every(&self) -> Option<Duration> {
        [
            &self.report,
            &self.inventory,
            &self.stats,
            &self.metrics,
            &self.dashboard,
        ]
        .into_iter()
        .flatten()
        .map(|(d, _)| *d)
        .min()
    }

    /// Whether an output of interval `d` last written at `last` is due
    /// (a little early rather than a period late).
    fn take_due(slot: &Option<(Duration, Cell<Instant>)>) -> bool {
        match slot {
            Some((d, last)) if last.get().elapsed() + d.mul_f64(0.05) >= *d => {
                last.set(Instant::now());
                true
            }
            _ => false,
        }
    }

    fn write(&self, snap: online::LiveSnapshot) -> Option<serde_json::Value> {
        let summary = Summary::merge(&snap.dispatch, snap.shards);
        let warn = |path: &Path, what: &str, e: std::io::Error| {
            eprintln!(
                "modbus-detect: warning: {}: cannot write {what}: {e}",
                Shown(path)
            );
        };
        let mut info = run_info(
            self.args,
            "interface",
            self.iface.to_string(),
            "af_xdp".into(),
            self.threads,
        );
        info.status = Status::Running;
        info.elapsed_s = snap.elapsed.as_secs_f64();
        // The publisher's figures as they are now (the final ones come
        // when it has finished).
        info.publish = self.published.published();
        let [report_due, inventory_due, stats_due, metrics_due, dashboard_due] = self.pending.get();
        if metrics_due {
            let mut m = MetricsData::of(&summary);
            m.xdp = Some(snap.xdp);
            m.socket_drops = snap.socket_drops;
            m.shard_ring_full = snap.ring_full_by_shard.clone();
            m.shard_queue_depth = snap.ring_depth_by_shard.clone();
            self.published.publish(m);
        }
        if report_due || inventory_due || dashboard_due {
            let json = report::build(&summary, &info, self.cfg);
            if let (true, Some(board)) = (dashboard_due, self.board) {
                board.publish(json.clone(), true);
            }
            if report_due {
                let written = serde_json::to_vec_pretty(&json)
                    .map_err(std::io::Error::from)
                    .and_then(|text| atomic_write(&self.args.output, &text));
                if let Err(e) = written {
                    warn(&self.args.output, "report", e);
                }
            }
            if inventory_due {
                let file =
                    inventory::InventoryFile::new(self.iface.to_string(), false, json.inventory);
                if let Some(path) = &self.args.inventory {
                    if let Err(e) = inventory::write_files(path, &file) {
                        warn(path, "inventory", e);
                    }
                }
                if let (Some(p), Ok(bytes)) = (&self.publisher, serde_json::to_vec(&file)) {
                    p.send(PublishKind::Inventory, bytes);
                }
            }
        }
        stats_due.then(|| {
            let now_ns = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            stats::stats_line(
                &summary,
                &stats::CaptureHealth {
                    now_ns,
                    uptime_s: snap.elapsed.as_secs(),
                    host: &self.host,
                    iface: self.iface,
                    xdp: snap.xdp,
                    socket_drops: snap.socket_drops,
                    ring_full_drops: snap.ring_full_by_shard.iter().sum(),
                    publish: self.published.published(),
                    central: self.published.central(),
                },
            )
        })
    }
}

/// Report, baseline, summary and exit code, for replay and live alike.
fn write_results(
    args: &Args,
    cfg: &DetectConfig,
    f: RunOutcome,
    mut info: RunInfo,
    metrics: &Metrics,
    board: Option<&Board>,
    publishing: Option<(Publisher, Worker)>,
) -> Result<u8, AppError> {
    if let (Some(Err(_)), Some(path)) = (&f.eve, args.eve.as_ref().filter(|p| !is_stdout(p))) {
        // The stream broke off (disk full, I/O error): leave whole lines.
        trim_to_last_line(path);
    }
    info.status = if f.interrupted {
        Status::Interrupted
    } else if f.input_error.is_some() {
        Status::InputError
    } else {
        Status::Complete
    };
    info.error = f.input_error.as_ref().map(ToString::to_string);
    info.eve_lines = match &f.eve {
        Some(Ok(n)) => *n,
        _ => 0,
    };
    let elapsed_s = f.elapsed.as_secs_f64();
    info.elapsed_s = elapsed_s;
    let mut summary = Summary::merge(&f.dispatch, f.shards);
    if cfg.mode == Mode::Learn {
        crate::detect::learn::train(
            &mut summary.inventory.observed,
            &mut summary.ml_samples,
            args.ml_window,
        );
    }
    let mut figures = MetricsData::of(&summary);
    if let Some(c) = &f.capture {
        figures.xdp = Some(c.xdp);
        figures.socket_drops = c
            .queues
            .iter()
            .map(|q| q.rx_dropped + q.rx_ring_full + q.fill_ring_empty + q.rx_invalid_descs)
            .sum();
        figures.shard_ring_full = c.shard_ring_full_drops.clone();
    }
    metrics.publish(figures);
    let mut json = report::build(&summary, &info, cfg);
    if let Some((publisher, worker)) = publishing {
        // The final inventory, then what is queued and spooled.
        let file = inventory::InventoryFile::new(info.input.clone(), true, json.inventory.clone());
        if let Ok(bytes) = serde_json::to_vec(&file) {
            publisher.send(PublishKind::Inventory, bytes);
        }
        drop(publisher);
        let figures = worker.finish(Duration::from_secs_f64(args.publish.publish_wait));
        if !args.quiet || figures.spool_waiting > 0 {
            eprintln!(
                "modbus-detect: published {} events to {} ({} spooled on the way, {} waiting in {}, {} dropped)",
                figures.acked,
                args.publish.publish.as_deref().unwrap_or(""),
                figures.spooled,
                figures.spool_waiting,
                args.publish.publish_spool.display(),
                figures.spool_dropped + figures.queue_full_drops
            );
        }
        json.publish = Some(figures);
    }
    let text = serde_json::to_vec_pretty(&json)
        .map_err(|e| AppError::output(&args.output, "write report", e.into()))?;
    atomic_write(&args.output, &text)
        .map_err(|e| AppError::output(&args.output, "write report", e))?;
    if let Some(path) = &args.inventory {
        let file = inventory::InventoryFile::new(info.input.clone(), true, json.inventory.clone());
        inventory::write_files(path, &file)
            .map_err(|e| AppError::output(path, "write inventory", e))?;
    }
    crate::dashboard::write_files(
        &json,
        args.html.as_deref(),
        args.csv_dir.as_deref(),
        args.plots_dir.as_deref(),
    )
    .map_err(|(path, e)| AppError::output(&path, "write", e))?;
    if let Some(board) = board {
        board.publish(json.clone(), false);
        board.finish();
    }
    if let (Mode::Learn, Some(path)) = (cfg.mode, &args.baseline_file) {
        summary
            .inventory
            .observed
            .save(path, &info.input)
            .map_err(|e| AppError::output(path, "write baseline", e))?;
    }
    if !args.quiet {
        print_summary(&summary, &info, args, elapsed_s);
    }
    if !args.pcap.is_empty() && mostly_bad_checksums(&summary.counters) {
        // Not a summary but a warning: said even with --quiet.
        eprintln!(
            "modbus-detect: warning: {} of {} segments had wrong checksums and were dropped, as the PLC drops them; if the capture's addresses were rewritten (anonymised), replay it with --checksums ignore",
            summary.counters.checksum_errors, summary.counters.modbus_frames
        );
    }
    if let Some(Err(e)) = f.eve {
        return Err(e.into());
    }
    if let Some(error) = f.input_error {
        return Err(AppError::InputAfterReport {
            error,
            report: args.output.clone(),
        });
    }
    if f.interrupted {
        return Ok(EXIT_INTERRUPTED);
    }
    match args.fail_on {
        Some(sev) if summary.raised_at_or_above(sev) > 0 => Ok(1),
        _ => Ok(0),
    }
}

fn check_output(path: &Path) -> Result<(), AppError> {
    if path.is_dir() {
        let e = std::io::Error::other("is a directory");
        return Err(AppError::output(path, "write", e));
    }
    check_writable(path).map_err(|e| AppError::output(path, "write", e))
}

/// Cut a JSON-lines file after its last complete line, so that a stream
/// that broke off half-way through a line (disk full) is still valid
/// JSON lines. Best effort: a file that cannot be read or cut is left.
fn trim_to_last_line(path: &Path) {
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(mut f) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    else {
        return;
    };
    // Only a regular file can be cut (a FIFO or a device has no end to
    // find: reading /dev/full would never stop).
    let Some(len) = f.metadata().ok().filter(|m| m.is_file()).map(|m| m.len()) else {
        return;
    };
    // A line is about a kilobyte: the last newline is in the tail.
    let start = len.saturating_sub(1 << 16);
    let mut tail = Vec::new();
    if f.seek(SeekFrom::Start(start)).is_err()
        || (&mut f).take(1 << 16).read_to_end(&mut tail).is_err()
    {
        return;
    }
    let keep = match tail.iter().rposition(|&b| b == b'\n') {
        Some(i) => start + i as u64 + 1,
        None if start == 0 => 0,
        None => return,
    };
    if keep < len {
        let _ = f.set_len(keep);
    }
}

/// First SIGINT/SIGTERM: stop reading and write what was found. A second
/// one: exit at once.
fn install_signal_handlers(stop: &Arc<AtomicBool>, reopen: &Arc<AtomicBool>) {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    for sig in [SIGINT, SIGTERM] {
        // Registration fails only for forbidden signals; these are allowed.
        let _ = signal_hook::flag::register_conditional_shutdown(sig, 130, stop.clone());
        let _ = signal_hook::flag::register(sig, stop.clone());
    }
    // SIGHUP: reopen the alert stream (logrotate's postrotate), go on.
    let _ = signal_hook::flag::register(SIGHUP, reopen.clone());
}

fn progress_bar(len: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
    ) {
        bar.set_style(style);
    }
    bar
}

/// Most segments of a replay had wrong checksums: the capture was likely
/// rewritten without fixing them, rather than attacked.
fn mostly_bad_checksums(c: &crate::counters::Counters) -> bool {
    c.checksum_errors >= 10 && c.checksum_errors * 2 >= c.modbus_frames
}

fn print_summary(s: &Summary, info: &RunInfo, args: &Args, secs: f64) {
    let c = &s.counters;
    let mut err = std::io::stderr().lock();
    let rate = if secs > 0.0 {
        c.frames as f64 / secs
    } else {
        0.0
    };
    let _ = writeln!(
        err,
        "modbus-detect: {} frames ({} Modbus ADUs, {} requests, {} responses, {} exceptions) in {:.3} s ({:.0} frames/s, {} threads)",
        c.frames, c.modbus_adus, c.requests, c.responses, c.exceptions, secs, rate, info.threads
    );
    if args.baseline_mode {
        let _ = writeln!(
            err,
            "baseline: {} master-slave pairs, {} requests, {} masters, {} slaves",
            s.inventory.observed.pair_count(),
            s.inventory.observed.request_count(),
            s.inventory.observed.masters().len(),
            s.inventory.observed.slaves().len()
        );
        let windows = s.ml_samples.len();
        let _ = match s.inventory.observed.models() {
            Some(_) => writeln!(
                err,
                "ML models (Isolation Forest, One-Class SVM) trained on {windows} windows of {} s",
                args.ml_window
            ),
            None => writeln!(
                err,
                "no ML models: {windows} windows of {} s of traffic, {} needed (--ml will refuse this baseline)",
                args.ml_window,
                crate::ml::models::MIN_WINDOWS
            ),
        };
        if let Some(p) = &args.baseline_file {
            let _ = writeln!(err, "baseline written to {}", p.display());
        }
    } else {
        let by_sev: Vec<String> = crate::alert::Severity::ALL
            .iter()
            .map(|sev| format!("{} {}", s.raised_by_severity[*sev as usize], sev.name()))
            .collect();
        let _ = writeln!(
            err,
            "alerts: {} ({}) in {} report entries",
            s.raised.iter().sum::<u64>(),
            by_sev.join(", "),
            s.alerts.len()
        );
    }
    if info.status != Status::Complete {
        let _ = writeln!(err, "run status: {}", info.status.name());
    }
    let _ = writeln!(err, "report written to {}", args.output.display());
}

/// `--csv-dir`'s `adu_features.csv`: the original ML pipeline's features,
/// one row per ADU, from a decoding pass of its own (as `--dump-adus`).
fn adu_features(files: &[CaptureFile], dir: &Path, cfg: Arc<DetectConfig>) -> Result<(), AppError> {
    let out = dir.join("adu_features.csv");
    atomic_write_with(&out, |w| {
        let mut rows = crate::output::features::FeatureWriter::new(std::io::BufWriter::new(w))?;
        crate::inspect::decode_files_with(files, cfg, &mut |adu| rows.row(&adu))?;
        rows.finish()
    })
    .map_err(|e| AppError::output(&out, "write", e))?;
    Ok(())
}

/// `--dump-adus`: every decoded ADU as a JSON line. A capture that breaks
/// off is reported by the detection pass that follows (with its report).
fn dump_adus(files: &[CaptureFile], out: &Path, cfg: Arc<DetectConfig>) -> Result<(), AppError> {
    let forgotten = atomic_write_with(out, |w| {
        let mut w = std::io::BufWriter::new(w);
        let forgotten = crate::inspect::decode_files_with(files, cfg, &mut |adu| {
            serde_json::to_writer(&mut w, &adu)?;
            w.write_all(b"\n")
        })?;
        w.flush()?;
        Ok(forgotten)
    })
    .map_err(|e| AppError::output(out, "write", e))?;
    if forgotten > 0 {
        eprintln!(
            "modbus-detect: warning: {}: {} requests were left unlinked (more than {} unanswered at once); their responses have no request_frame",
            Shown(out),
            forgotten,
            crate::modbus::record::MAX_UNANSWERED
        );
    }
    Ok(())
}
