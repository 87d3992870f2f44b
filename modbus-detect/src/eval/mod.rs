//! `modbus-detect eval`: how well each way of detecting finds the attacks
//! of labelled captures, on the same units ([`units`]) and the same
//! training traffic: the original pipeline's per-ADU models, our per-window
//! models, the rules, and the rules with our models. One table of
//! precision, recall, F1, false alarms on normal captures and time, and one
//! of what each method found per capture.
//!
//! Everything runs in this process, on one thread, with the detector's own
//! engine (the replay path of a `--pcap` run): the time column compares
//! like with like. Training: the original models learn the normal
//! capture's ADUs (`ml train`); ours its windows (`--baseline-mode`, which
//! also learns the baseline the rules compare with). Detection time of a
//! window model is that of a run with `--ml`, rules included: they run in
//! one pass.

pub mod labels;
pub mod units;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use serde_json::Value;

use crate::config::addrs::{AddrSet, IpNet};
use crate::config::baseline::Baseline;
use crate::config::limits::RegisterLimits;
use crate::config::{DetectConfig, Mode};
use crate::files::{FileError, Shown};
use crate::original::model::Training;
use crate::original::{delta_time, features_of};
use crate::output::report::Summary;
use crate::runtime::offline::replay;
use crate::runtime::Plan as RunPlan;
use crate::source::{CaptureFile, SourceError};
use labels::{LabelError, Labels};
use units::{
    Counts, Units, METHODS, ORIGINAL_IF, ORIGINAL_OCSVM, RULES, RULES_MODELS, WINDOW_IF,
    WINDOW_OCSVM,
};

/// Why an evaluation could not run: one line naming the file.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Capture(#[from] SourceError),
    #[error(transparent)]
    Labels(#[from] LabelError),
    #[error(transparent)]
    Settings(#[from] FileError),
    #[error("{}: {problem}", Shown(path))]
    Manifest { path: PathBuf, problem: String },
    #[error("{}: {problem}", Shown(path))]
    Training { path: PathBuf, problem: String },
    #[error("{}: {source}", Shown(path))]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One labelled capture to score, with the settings its rules need.
pub struct Case {
    pub name: String,
    pub path: PathBuf,
    pub labels: Labels,
    pub authorized_masters: Option<AddrSet>,
    pub authorized_writers: Option<AddrSet>,
    pub limits: Option<Arc<RegisterLimits>>,
}

/// What to train on and what to score.
pub struct EvalPlan {
    pub normal: PathBuf,
    /// The allow lists of the normal capture (the baseline learns with them).
    pub authorized_masters: Option<AddrSet>,
    /// Our models' window, ns.
    pub ml_window_ns: u64,
    pub cases: Vec<Case>,
}

fn addr_set(v: &Value, path: &Path) -> Result<Option<AddrSet>, EvalError> {
    let Some(list) = v.as_array() else {
        return Ok(None);
    };
    let nets: Result<Vec<IpNet>, String> = list
        .iter()
        .map(|x| x.as_str().unwrap_or("").parse())
        .collect();
    let bad = |problem| EvalError::Manifest {
        path: path.into(),
        problem,
    };
    AddrSet::new(nets.map_err(bad)?).map(Some).map_err(bad)
}

impl EvalPlan {
    /// A lab set's manifest: its baseline capture is the normal traffic,
    /// every other capture (a scenario once: the first file of it) is scored.
    pub fn from_manifest(path: &Path) -> Result<EvalPlan, EvalError> {
        let bad = |problem: String| EvalError::Manifest {
            path: path.into(),
            problem,
        };
        let text = std::fs::read(path).map_err(|e| bad(format!("cannot read: {e}")))?;
        let m: Value = serde_json::from_slice(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let baseline = m["baseline_pcap"]
            .as_str()
            .ok_or_else(|| bad("no baseline_pcap".into()))?;
        let captures = m["captures"]
            .as_array()
            .ok_or_else(|| bad("no captures list".into()))?;
        let mut cases: Vec<Case> = Vec::new();
        for c in captures {
            let file = c["file"]
                .as_str()
                .ok_or_else(|| bad("a capture has no file".into()))?;
            let name = c["scenario"].as_str().unwrap_or(file).to_string();
            if file == baseline || cases.iter().any(|k| k.name == name) {
                continue;
            }
            let limits = match c["register_limits_file"].as_str() {
                Some(f) => Some(Arc::new(RegisterLimits::load(&dir.join(f))?)),
                None => None,
            };
            cases.push(Case {
                name,
                path: dir.join(file),
                labels: labels::from_manifest_entry(c),
                authorized_masters: addr_set(&c["authorized_masters"], path)?,
                authorized_writers: addr_set(&c["authorized_writers"], path)?,
                limits,
            });
        }
        Ok(EvalPlan {
            normal: dir.join(baseline),
            authorized_masters: addr_set(&m["authorized_masters"], path)?,
            ml_window_ns: DetectConfig::default().ml_window_ns,
            cases,
        })
    }
}

/// One method's figures over all captures.
#[derive(Debug, Clone, Serialize)]
pub struct MethodRow {
    pub method: &'static str,
    #[serde(flatten)]
    pub counts: Counts,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Units flagged in captures without attacks.
    pub false_alarms_on_normal: u64,
    pub train_s: f64,
    pub detect_s: f64,
}

/// One capture's figures.
#[derive(Debug, Clone, Serialize)]
pub struct CaptureRow {
    pub capture: String,
    pub units: u64,
    pub attacks: u64,
    /// Per method, in [`METHODS`] order.
    pub counts: Vec<Counts>,
    /// ADUs the original Isolation Forest and One-Class SVM flagged (the
    /// rows `ml score` would write into their reports).
    pub original_adus_flagged: [u64; 2],
}

/// The whole evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub normal: String,
    pub methods: Vec<MethodRow>,
    pub captures: Vec<CaptureRow>,
}

/// Seconds since `t`.
fn since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

/// Run the evaluation.
pub fn evaluate(plan: &EvalPlan) -> Result<Evaluation, EvalError> {
    let stop = AtomicBool::new(false);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| EvalError::Io { path, source }
    };
    let normal = CaptureFile::open(&plan.normal)?;

    // The original models: the normal capture's ADUs.
    let t = Instant::now();
    let mut training = Training::default();
    let mut last = None;
    crate::inspect::decode_capture_with(&normal, Arc::new(DetectConfig::default()), &mut |r| {
        training.add(features_of(&r, delta_time(&mut last, r.ts_ns)), r.src);
        Ok(())
    })
    .map_err(io(&plan.normal))?;
    let original = training.train().map_err(|e| EvalError::Training {
        path: plan.normal.clone(),
        problem: e.to_string(),
    })?;
    let original_train_s = since(t);

    // Ours: the baseline (and its window models) of the same capture.
    let t = Instant::now();
    let learn = Arc::new(DetectConfig {
        mode: Mode::Learn,
        authorized_masters: plan.authorized_masters.clone(),
        ml_window_ns: plan.ml_window_ns,
        ..DetectConfig::default()
    });
    let out = replay(learn.clone(), &normal, RunPlan::Inline, None, &stop, None)
        .map_err(io(&plan.normal))?;
    let mut summary = Summary::merge(&out.dispatch, out.shards);
    let window_s = learn.ml_window_ns as f64 / 1e9;
    crate::detect::learn::train(
        &mut summary.inventory.observed,
        &mut summary.ml_samples,
        window_s,
    );
    let baseline: Arc<Baseline> = Arc::new(summary.inventory.observed);
    if baseline.models().is_none() {
        return Err(EvalError::Training {
            path: plan.normal.clone(),
            problem: "too little traffic for window models".into(),
        });
    }
    let ours_train_s = since(t);

    let mut totals = [Counts::default(); METHODS.len()];
    let mut on_normal = [0u64; METHODS.len()];
    let mut detect_s = [0.0f64; METHODS.len()];
    let mut captures = Vec::new();
    for case in &plan.cases {
        let file = CaptureFile::open(&case.path)?;
        let cfg = |ml: bool| {
            let mut c = DetectConfig {
                authorized_masters: case.authorized_masters.clone(),
                authorized_writers: case.authorized_writers.clone(),
                limits_file: case.limits.clone(),
                baseline: Some(baseline.clone()),
                ml,
                ..DetectConfig::default()
            };
            c.limits.eve_interval_ns = 0;
            Arc::new(c)
        };
        // Timed runs, as a `--pcap` run does them.
        for (ml, methods) in [
            (false, &[RULES][..]),
            (true, &[WINDOW_IF, WINDOW_OCSVM, RULES_MODELS][..]),
        ] {
            let t = Instant::now();
            replay(cfg(ml), &file, RunPlan::Inline, None, &stop, None).map_err(io(&case.path))?;
            let s = since(t);
            for &m in methods {
                detect_s[m] += s;
            }
        }
        // The original models: decoding, then judging every ADU.
        let t = Instant::now();
        let mut verdicts = Vec::new();
        let mut last = None;
        crate::inspect::decode_capture_with(&file, Arc::new(DetectConfig::default()), &mut |r| {
            let v = original.judge(&features_of(&r, delta_time(&mut last, r.ts_ns)));
            verdicts.push([v.iforest < 0.0, v.ocsvm < 0.0]);
            Ok(())
        })
        .map_err(io(&case.path))?;
        let s = since(t);
        detect_s[ORIGINAL_IF] += s;
        detect_s[ORIGINAL_OCSVM] += s;

        // The units, flagged by everyone (untimed).
        let mut units = Units::default();
        let mut alerts = Vec::new();
        let mut next = verdicts.iter();
        crate::inspect::trace_capture(
            &file,
            cfg(true),
            &mut |r| {
                units.add_record(&r, next.next().copied().unwrap_or_default());
                Ok(())
            },
            Some(&mut alerts),
        )
        .map_err(io(&case.path))?;
        units.add_alerts(&alerts);
        let (counts, attacks) = units.score(&case.labels);
        for (i, c) in counts.iter().enumerate() {
            totals[i].add(c);
            if !case.labels.has_attacks() {
                on_normal[i] += c.fp;
            }
        }
        captures.push(CaptureRow {
            capture: case.name.clone(),
            units: counts[0].tp + counts[0].fp + counts[0].fn_ + counts[0].tn,
            attacks,
            counts: counts.to_vec(),
            original_adus_flagged: [0, 1]
                .map(|m| verdicts.iter().filter(|v: &&[bool; 2]| v[m]).count() as u64),
        });
    }
    let methods = METHODS
        .iter()
        .enumerate()
        .map(|(i, &method)| MethodRow {
            method,
            counts: totals[i],
            precision: totals[i].precision(),
            recall: totals[i].recall(),
            f1: totals[i].f1(),
            false_alarms_on_normal: on_normal[i],
            train_s: match i {
                ORIGINAL_IF | ORIGINAL_OCSVM => original_train_s,
                RULES => 0.0,
                _ => ours_train_s,
            },
            detect_s: detect_s[i],
        })
        .collect();
    Ok(Evaluation {
        normal: plan.normal.display().to_string(),
        methods,
        captures,
    })
}

/// The two tables, as Markdown (they go into the README as they are).
pub fn print(out: &mut dyn std::io::Write, e: &Evaluation) -> std::io::Result<()> {
    writeln!(
        out,
        "Trained on {}; units are Modbus transactions.\n",
        e.normal
    )?;
    writeln!(
        out,
        "| method | precision | recall | F1 | TP | FP | FN | false alarms on normal | train s | detect s |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for m in &e.methods {
        writeln!(
            out,
            "| {} | {:.3} | {:.3} | {:.3} | {} | {} | {} | {} | {:.3} | {:.3} |",
            m.method,
            m.precision,
            m.recall,
            m.f1,
            m.counts.tp,
            m.counts.fp,
            m.counts.fn_,
            m.false_alarms_on_normal,
            m.train_s,
            m.detect_s
        )?;
    }
    writeln!(out, "\nFound (TP/attacks, FP) per capture:\n")?;
    write!(out, "| capture | units | attacks |")?;
    for m in METHODS {
        write!(out, " {m} |")?;
    }
    writeln!(out)?;
    writeln!(out, "|---|---:|---:|{}", "---:|".repeat(METHODS.len()))?;
    for c in &e.captures {
        write!(out, "| {} | {} | {} |", c.capture, c.units, c.attacks)?;
        for k in &c.counts {
            write!(out, " {}/{}, {} |", k.tp, c.attacks, k.fp)?;
        }
        writeln!(out)?;
    }
    Ok(())
}
