//! The original's two models of per-ADU features, trained on normal
//! traffic only, with its parameters: an Isolation Forest on the raw
//! features whose threshold leaves the most isolated 1 % of the training
//! ADUs outside (contamination 0.01), and a One-Class SVM (RBF kernel, nu
//! 0.01, gamma "scale") on standardised features. Both say "anomaly" with
//! a negative decision, as scikit-learn's `decision_function` does.
//!
//! Memory is bounded whatever the training set: at most [`MAX_ROWS`] rows
//! are kept (a uniform reservoir sample beyond, counted in
//! `rows_not_kept`), the SVM solves on at most [`SVM_SAMPLES`] of them.

use std::collections::BTreeSet;
use std::net::IpAddr;

use modbus_common::rng::Rng;
use serde::{Deserialize, Serialize};

use super::{Features, DIMS, FEATURE_NAMES};
use crate::ml::iforest::IsolationForest;
use crate::ml::ocsvm::OneClassSvm;
use crate::ml::scale::Standardizer;
use crate::ml::ModelError;

/// What the file says it is (checked on load).
pub const FORMAT: &str = "modbus-detect original per-ADU models 1";
/// The original's parameters.
pub const CONTAMINATION: f64 = 0.01;
pub const NU: f64 = 0.01;
const TREES: usize = 100;
const TREE_SAMPLE: usize = 256;
/// Training rows kept at most (32 bytes each: 32 MiB).
pub const MAX_ROWS: usize = 1 << 20;
/// Rows the SVM solves on at most (its kernel matrix is `8 n^2` bytes:
/// 128 MiB at 4096; scikit-learn would take every row).
pub const SVM_SAMPLES: usize = 4096;
/// Distinct training sources remembered at most (the FOREIGN IP label's
/// allow list beyond `--authorized-masters`).
pub const MAX_SOURCES: usize = 4096;
const SEED: u64 = 0x6d62_6474_6f72_6731;

/// Gathers training rows in bounded memory.
#[derive(Debug)]
pub struct Training {
    rows: Vec<Features>,
    seen: u64,
    sources: BTreeSet<IpAddr>,
    sources_not_kept: u64,
    rng: Rng,
}

impl Default for Training {
    fn default() -> Self {
        Training {
            rows: Vec::new(),
            seen: 0,
            sources: BTreeSet::new(),
            sources_not_kept: 0,
            rng: Rng::new(SEED),
        }
    }
}

impl Training {
    /// One normal ADU's features and source.
    pub fn add(&mut self, f: Features, src: IpAddr) {
        self.seen += 1;
        if self.rows.len() < MAX_ROWS {
            self.rows.push(f);
        } else {
            // Reservoir sampling: every row seen stays with equal chance.
            let j = self.rng.below(self.seen) as usize;
            if let Some(slot) = self.rows.get_mut(j) {
                *slot = f;
            }
        }
        if self.sources.len() < MAX_SOURCES {
            self.sources.insert(src);
        } else if !self.sources.contains(&src) {
            self.sources_not_kept += 1;
        }
    }

    pub fn rows_seen(&self) -> u64 {
        self.seen
    }

    /// Train both models on what was gathered.
    pub fn train(self) -> Result<OriginalModels, ModelError> {
        if self.rows.len() < 2 {
            return Err(ModelError::new(format!(
                "{} training ADUs: at least 2 are needed",
                self.rows.len()
            )));
        }
        let rows: Vec<Vec<f64>> = self.rows.iter().map(|r| r.to_vec()).collect();
        let iforest = IsolationForest::fit(&rows, TREES, TREE_SAMPLE, SEED);
        let mut scores: Vec<f64> = rows.iter().map(|r| iforest.score(r)).collect();
        scores.sort_by(f64::total_cmp);
        let iforest_threshold = percentile(&scores, 1.0 - CONTAMINATION);
        let scaler = Standardizer::fit(&rows);
        let scaled: Vec<Vec<f64>> = rows
            .iter()
            .map(|r| {
                let mut z = vec![0.0; DIMS];
                scaler.transform(r, &mut z);
                z
            })
            .collect();
        let gamma = gamma_scale(&scaled);
        let ocsvm = OneClassSvm::fit(&scaled, NU, gamma, SVM_SAMPLES, SEED)
            .map_err(|e| e.within("one-class SVM"))?;
        Ok(OriginalModels {
            format: FORMAT.into(),
            features: FEATURE_NAMES.iter().map(|s| s.to_string()).collect(),
            training_rows: self.seen,
            rows_kept: self.rows.len(),
            contamination: CONTAMINATION,
            iforest,
            iforest_threshold,
            nu: NU,
            scaler,
            ocsvm,
            sources: self.sources.into_iter().collect(),
            sources_not_kept: self.sources_not_kept,
        })
    }
}

/// scikit-learn's `gamma="scale"`: `1 / (features * variance of all values)`.
fn gamma_scale(rows: &[Vec<f64>]) -> f64 {
    let n = (rows.len() * DIMS) as f64;
    let mean = rows.iter().flatten().sum::<f64>() / n;
    let var = rows
        .iter()
        .flatten()
        .map(|v| (v - mean).powi(2))
        .sum::<f64>()
        / n;
    if var > 0.0 && var.is_finite() {
        1.0 / (DIMS as f64 * var)
    } else {
        1.0
    }
}

/// numpy's `percentile` (linear interpolation) of sorted values, `q` in [0, 1].
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let Some(last) = sorted.len().checked_sub(1) else {
        return f64::NAN;
    };
    let pos = q.clamp(0.0, 1.0) * last as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(last);
    let (a, b) = (sorted[lo], sorted[hi]);
    a + (b - a) * (pos - lo as f64)
}

/// Both models' verdicts on one ADU: negative is anomalous.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    pub iforest: f64,
    pub ocsvm: f64,
}

/// The trained models, as their file holds them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginalModels {
    pub format: String,
    pub features: Vec<String>,
    /// Normal ADUs seen, and kept for training (see [`MAX_ROWS`]).
    pub training_rows: u64,
    pub rows_kept: usize,
    pub contamination: f64,
    pub iforest: IsolationForest,
    /// Isolation Forest scores above this are the training set's top
    /// `contamination`.
    pub iforest_threshold: f64,
    pub nu: f64,
    pub scaler: Standardizer,
    pub ocsvm: OneClassSvm,
    /// Sources of the training ADUs (at most [`MAX_SOURCES`]).
    pub sources: Vec<IpAddr>,
    pub sources_not_kept: u64,
}

impl OriginalModels {
    /// Judge one ADU. No allocation.
    pub fn judge(&self, f: &Features) -> Verdict {
        let mut z = [0.0; DIMS];
        self.scaler.transform(f, &mut z);
        Verdict {
            iforest: self.iforest_threshold - self.iforest.score(f),
            ocsvm: self.ocsvm.decision(&z),
        }
    }

    /// A model file is used only once it is known to be this build's and
    /// safe to evaluate.
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.format != FORMAT {
            return Err(ModelError::new(format!(
                "format {:?} is not {FORMAT:?}",
                self.format
            )));
        }
        if self.features.iter().map(String::as_str).ne(FEATURE_NAMES) {
            return Err(ModelError::new(format!(
                "features {:?} are not {FEATURE_NAMES:?}",
                self.features
            )));
        }
        if !self.iforest_threshold.is_finite() {
            return Err(ModelError::new("iforest_threshold must be a finite number"));
        }
        if self.sources.len() > MAX_SOURCES {
            return Err(ModelError::new(format!(
                "{} sources: at most {MAX_SOURCES}",
                self.sources.len()
            )));
        }
        self.scaler.validate(DIMS).map_err(|e| e.within("scaler"))?;
        self.iforest
            .validate(DIMS)
            .map_err(|e| e.within("iforest"))?;
        self.ocsvm.validate(DIMS).map_err(|e| e.within("ocsvm"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A poller: one ADU every 100 ms (+-10 %), 12-byte frames, FC 3.
    fn normal(n: usize, seed: u64) -> Training {
        let mut rng = Rng::new(seed);
        let mut t = Training::default();
        let src = IpAddr::from([10, 0, 0, 1]);
        for _ in 0..n {
            let d = 0.1 * (0.9 + 0.2 * rng.unit_f64());
            let len = if rng.below(2) == 0 { 66.0 } else { 75.0 };
            t.add([d, len, ip_f(src), 3.0], src);
        }
        t
    }

    fn ip_f(ip: IpAddr) -> f64 {
        super::super::ip_as_number(ip)
    }

    #[test]
    fn about_contamination_of_the_training_rows_are_flagged_and_a_write_flood_is() {
        let m = normal(2000, 1).train().unwrap();
        m.validate().unwrap();
        let flagged = normal(2000, 1)
            .rows
            .iter()
            .filter(|f| m.judge(f).iforest < 0.0)
            .count();
        // The threshold is the 99th percentile of the training scores.
        assert!((10..=30).contains(&flagged), "{flagged}");
        let attack = [0.0001, 80.0, ip_f(IpAddr::from([10, 0, 0, 66])), 6.0];
        let v = m.judge(&attack);
        assert!(v.iforest < 0.0 && v.ocsvm < 0.0, "{v:?}");
    }

    #[test]
    fn training_memory_is_bounded_and_the_file_is_checked() {
        let mut t = Training::default();
        for i in 0..(MAX_ROWS as u64 + 10) {
            t.add(
                [i as f64, 0.0, 0.0, 3.0],
                IpAddr::from([10, 0, (i >> 8) as u8, i as u8]),
            );
        }
        assert_eq!(t.rows.len(), MAX_ROWS);
        assert_eq!(t.rows_seen(), MAX_ROWS as u64 + 10);
        assert_eq!(t.sources.len(), MAX_SOURCES);
        assert!(t.sources_not_kept > 0);
        let m = normal(200, 2).train().unwrap();
        let back: OriginalModels =
            serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
        let mut bad = m.clone();
        bad.features.reverse();
        assert!(bad.validate().unwrap_err().to_string().contains("features"));
        let mut bad = m;
        bad.iforest_threshold = f64::NAN;
        assert!(bad.validate().is_err());
        assert!(Training::default().train().is_err());
    }

    #[test]
    fn percentile_interpolates_as_numpy_does() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 0.5), 2.5);
        assert_eq!(percentile(&v, 1.0), 4.0);
        assert!((percentile(&v, 0.99) - 3.97).abs() < 1e-12);
    }
}
