//! `modbus-detect ml features|train|score|run`: the original pipeline's
//! steps, each reading what the previous one wrote, so that a step can be
//! rerun alone (train once, score every new capture).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::label::{label, Allowed, LABELS};
use super::model::{OriginalModels, Training};
use super::table::{FeatureReader, TableError};
use crate::config::DetectConfig;
use crate::detect::ml::ThreatLabel;
use crate::files::{atomic_write, atomic_write_with, Shown};
use crate::ml::ModelError;
use crate::output::features::FeatureWriter;
use crate::source::set::{expand, SetError};
use crate::source::{CaptureFile, SourceError};

/// File names the steps write and read in their directory.
pub const NORMAL_FEATURES: &str = "normal_features.csv";
pub const ATTACK_FEATURES: &str = "attack_features.csv";
pub const MODELS: &str = "original_models.json";
pub const IFOREST_REPORT: &str = "iso_forest_report.csv";
pub const OCSVM_REPORT: &str = "ocsvm_report.csv";

/// Why a step stopped: one line naming the file.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    List(#[from] SetError),
    #[error(transparent)]
    Capture(#[from] SourceError),
    #[error(transparent)]
    Table(#[from] TableError),
    #[error("{}: {source}", Shown(path))]
    Model { path: PathBuf, source: ModelError },
    #[error("{}: cannot read models: {problem}", Shown(path))]
    ModelFile { path: PathBuf, problem: String },
    #[error("{}: cannot write: {source}", Shown(path))]
    Output {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The outputs were written, but some captures were not read whole.
    #[error("{0}")]
    Incomplete(String),
}

impl StepError {
    /// Exit code: 4 for an output, 3 for an input.
    pub fn exit_code(&self) -> u8 {
        match self {
            StepError::Output { .. } => 4,
            _ => 3,
        }
    }

    fn output(path: &Path, source: std::io::Error) -> StepError {
        StepError::Output {
            path: path.into(),
            source,
        }
    }
}

/// What `features` read.
#[derive(Debug, Default)]
pub struct FeatureCount {
    pub captures: usize,
    pub rows: u64,
    /// Files left out (`--skip-bad-files`): why.
    pub skipped: Vec<String>,
    /// Captures that broke off part-way: why (their rows before it are kept).
    pub partial: Vec<String>,
}

/// Every capture of `paths` (a directory's files in name order), each its
/// own capture (its first row's `delta_time` is 0), into one feature file.
pub fn write_features(
    paths: &[PathBuf],
    out: &Path,
    cfg: &Arc<DetectConfig>,
    skip_bad: bool,
) -> Result<FeatureCount, StepError> {
    let mut files = Vec::new();
    for p in paths {
        expand(p, &mut files)?;
    }
    let mut count = FeatureCount::default();
    // All opened first: a file that is no capture writes no features.
    let mut captures = Vec::new();
    for path in &files {
        match CaptureFile::open(path) {
            Ok(c) => captures.push(c),
            Err(e) if skip_bad => count.skipped.push(e.to_string()),
            Err(e) => return Err(e.into()),
        }
    }
    atomic_write_with(out, |w| {
        let mut rows = FeatureWriter::with_captures(std::io::BufWriter::new(w))?;
        for capture in &captures {
            rows.next_capture(&capture.path().display().to_string());
            let decoded = crate::inspect::decode_capture_with(capture, cfg.clone(), &mut |adu| {
                rows.row(&adu)
            })?;
            count.captures += 1;
            if let Some(e) = decoded.error {
                count.partial.push(e.to_string());
            }
        }
        count.rows = rows.finish()?;
        Ok(())
    })
    .map_err(|e| StepError::output(out, e))?;
    Ok(count)
}

/// `train`: both models from a feature file of normal traffic.
pub fn train(features: &Path, models: &Path) -> Result<OriginalModels, StepError> {
    let mut rd = FeatureReader::open(features)?;
    let mut t = Training::default();
    while let Some(row) = rd.next_row()? {
        t.add(row.features, row.src);
    }
    let m = t.train().map_err(|source| StepError::Model {
        path: features.into(),
        source,
    })?;
    let text = serde_json::to_vec(&m).map_err(|e| StepError::output(models, e.into()))?;
    atomic_write(models, &text).map_err(|e| StepError::output(models, e))?;
    Ok(m)
}

/// Load and check a models file.
pub fn load_models(path: &Path) -> Result<OriginalModels, StepError> {
    let bad = |problem: String| StepError::ModelFile {
        path: path.into(),
        problem,
    };
    let text = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let m: OriginalModels = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    m.validate().map_err(|source| StepError::Model {
        path: path.into(),
        source,
    })?;
    Ok(m)
}

/// What one model found in a scored file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Breakdown {
    pub scored: u64,
    pub anomalies: u64,
    /// Anomalies per label, in [`LABELS`] order.
    pub labels: [u64; 4],
}

impl Breakdown {
    fn count(&mut self, anomalous: bool, l: ThreatLabel) {
        self.scored += 1;
        if anomalous {
            self.anomalies += 1;
            if let Some(i) = LABELS.iter().position(|x| *x == l) {
                self.labels[i] += 1;
            }
        }
    }
}

/// `score`: every row of `features` judged by both models; the anomalies
/// of each written to its report in `out_dir`.
pub fn score(
    models: &OriginalModels,
    features: &Path,
    out_dir: &Path,
    allowed: &Allowed,
) -> Result<[Breakdown; 2], StepError> {
    let mut rd = FeatureReader::open(features)?;
    let iso = out_dir.join(IFOREST_REPORT);
    let oc = out_dir.join(OCSVM_REPORT);
    let mut found = [Breakdown::default(), Breakdown::default()];
    // Why the inner closures stopped, when it is not the file they write.
    let mut failed: Option<StepError> = None;
    let written = atomic_write_with(&iso, |wi| {
        let mut wi = std::io::BufWriter::new(wi);
        let inner = atomic_write_with(&oc, |wo| {
            let mut wo = std::io::BufWriter::new(wo);
            rd.write_report_header(&mut wi)?;
            rd.write_report_header(&mut wo)?;
            loop {
                let row = match rd.next_row() {
                    Ok(Some(r)) => r,
                    Ok(None) => break,
                    Err(e) => {
                        failed = Some(e.into());
                        return Err(std::io::Error::other("bad input"));
                    }
                };
                let v = models.judge(&row.features);
                let l = label(row.function_code, row.src, row.delta_time(), allowed);
                for ((b, decision), out) in found
                    .iter_mut()
                    .zip([v.iforest, v.ocsvm])
                    .zip([&mut wi as &mut dyn Write, &mut wo])
                {
                    b.count(decision < 0.0, l);
                    if decision < 0.0 {
                        rd.write_report_row(out, &row, decision, l.name())?;
                    }
                }
            }
            wo.flush()
        });
        if let Err(e) = inner {
            failed.get_or_insert_with(|| StepError::output(&oc, e));
            return Err(std::io::Error::other("stopped"));
        }
        wi.flush()
    });
    match (failed, written) {
        (Some(e), _) => Err(e),
        (None, Err(e)) => Err(StepError::output(&iso, e)),
        (None, Ok(())) => Ok(found),
    }
}

/// The printed breakdown of one model's scoring.
pub fn print_breakdown(
    out: &mut dyn Write,
    model: &str,
    b: &Breakdown,
    report: &Path,
) -> std::io::Result<()> {
    writeln!(
        out,
        "{model}: {} ADUs scored: {} normal, {} anomalies",
        b.scored,
        b.scored - b.anomalies,
        b.anomalies
    )?;
    for (l, n) in LABELS.iter().zip(b.labels) {
        writeln!(out, "  {:<42} {n}", l.name())?;
    }
    writeln!(out, "  report: {}", report.display())
}
