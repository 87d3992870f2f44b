//! Per-feature standardisation (z-scores).
//!
//! Traffic features come in unrelated units (requests per second, bytes,
//! distinct registers); an RBF kernel measures plain Euclidean distance, so
//! without rescaling the feature with the largest numbers would decide
//! alone. Mapping each feature to `(x - mean) / std` of the training data
//! gives every feature the same weight. The Isolation Forest does not need
//! it, but sharing one scaled input keeps the pipeline simple.

use super::ModelError;
use serde::{Deserialize, Serialize};

/// Below this a feature's standard deviation is treated as "constant".
const MIN_STD: f64 = 1e-9;

/// Mean and population standard deviation of each feature of the training
/// data.
///
/// JSON: `{"mean":[..],"std":[..]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Standardizer {
    /// Per-feature mean of the training rows.
    pub mean: Vec<f64>,
    /// Per-feature population standard deviation; 1.0 for a constant
    /// feature, so that it maps to 0 instead of dividing by zero.
    pub std: Vec<f64>,
}

impl Standardizer {
    /// Learns the mean and standard deviation of every feature.
    ///
    /// The number of features is the length of the longest row; rows should
    /// all have that length, but a shorter row only contributes to the
    /// features it has. Two passes (mean, then squared deviations) avoid the
    /// cancellation of the one-pass formula. With no rows, the result has no
    /// features.
    pub fn fit(rows: &[Vec<f64>]) -> Standardizer {
        let dims = rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut count = vec![0usize; dims];
        let mut mean = vec![0.0; dims];
        for row in rows {
            for ((m, c), &v) in mean.iter_mut().zip(&mut count).zip(row) {
                *m += v;
                *c += 1;
            }
        }
        for (m, &c) in mean.iter_mut().zip(&count) {
            *m /= c.max(1) as f64;
        }
        let mut var = vec![0.0; dims];
        for row in rows {
            for ((s, &m), &v) in var.iter_mut().zip(&mean).zip(row) {
                *s += (v - m) * (v - m);
            }
        }
        let std = var
            .iter()
            .zip(&count)
            .map(|(&s, &c)| usable_std((s / c.max(1) as f64).sqrt()))
            .collect();
        Standardizer { mean, std }
    }

    /// Writes the z-scores of `x` into `out`, without allocating (it runs
    /// once per scored window).
    ///
    /// Only the first `min(dims, x.len(), out.len())` positions are written;
    /// callers check `validate(dims)` and pass slices of length `dims`.
    pub fn transform(&self, x: &[f64], out: &mut [f64]) {
        let params = self.mean.iter().zip(&self.std);
        for ((o, &v), (&m, &s)) in out.iter_mut().zip(x).zip(params) {
            *o = (v - m) / s;
        }
    }

    /// Number of features.
    pub fn dims(&self) -> usize {
        self.mean.len()
    }

    /// Checks a (typically deserialized) standardizer before use: both
    /// vectors have `dims` values, all finite, and every std is positive, so
    /// that `transform` yields finite values for finite input.
    pub fn validate(&self, dims: usize) -> Result<(), ModelError> {
        if self.mean.len() != dims || self.std.len() != dims {
            return Err(ModelError::new(format!(
                "standardizer has {} means and {} stds, expected {dims} of each",
                self.mean.len(),
                self.std.len()
            )));
        }
        if let Some(i) = self.mean.iter().position(|m| !m.is_finite()) {
            return Err(ModelError::new(format!(
                "standardizer mean {i} is not finite"
            )));
        }
        if let Some(i) = self.std.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(ModelError::new(format!(
                "standardizer std {i} is not a finite positive number"
            )));
        }
        Ok(())
    }
}

/// A constant (or degenerate) feature gets std 1.0: its z-score is then
/// `x - mean`, 0 for every training value.
fn usable_std(s: f64) -> f64 {
    if s.is_finite() && s >= MIN_STD {
        s
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests {
    use super::Standardizer;

    fn known() -> Vec<Vec<f64>> {
        // Feature 0: 2,4,4,4,5,5,7,9 (mean 5, population std 2).
        // Feature 1: constant 3. Feature 2: -1, 1 alternating (mean 0, std 1).
        [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]
            .iter()
            .enumerate()
            .map(|(i, &v)| vec![v, 3.0, if i % 2 == 0 { -1.0 } else { 1.0 }])
            .collect()
    }

    #[test]
    fn fit_gives_known_mean_and_population_std() {
        let s = Standardizer::fit(&known());
        assert_eq!(s.dims(), 3);
        assert_eq!(s.mean, vec![5.0, 3.0, 0.0]);
        assert_eq!(s.std, vec![2.0, 1.0, 1.0]);
    }

    #[test]
    fn transform_of_the_mean_is_zero_and_scales_by_std() {
        let s = Standardizer::fit(&known());
        let mut out = [f64::NAN; 3];
        s.transform(&s.mean.clone(), &mut out);
        assert_eq!(out, [0.0, 0.0, 0.0]);
        s.transform(&[9.0, 3.0, -1.0], &mut out);
        assert_eq!(out, [2.0, 0.0, -1.0]);
    }

    #[test]
    fn constant_feature_maps_to_zero() {
        let rows = vec![vec![1e6, 0.5]; 10];
        let s = Standardizer::fit(&rows);
        assert_eq!(s.std, vec![1.0, 1.0]);
        let mut out = [f64::NAN; 2];
        s.transform(&rows[0], &mut out);
        assert_eq!(out, [0.0, 0.0]);
        assert!(s.validate(2).is_ok());
    }

    #[test]
    fn tiny_spread_counts_as_constant() {
        let rows = vec![vec![1.0], vec![1.0 + 1e-12]];
        assert_eq!(Standardizer::fit(&rows).std, vec![1.0]);
    }

    #[test]
    fn empty_input_has_no_features() {
        let s = Standardizer::fit(&[]);
        assert_eq!(s.dims(), 0);
        assert!(s.validate(0).is_ok());
    }

    #[test]
    fn transform_with_short_slices_does_not_panic() {
        let s = Standardizer::fit(&known());
        let mut out = [7.0; 2];
        s.transform(&[5.0], &mut out);
        assert_eq!(out, [0.0, 7.0]);
    }

    #[test]
    fn validate_rejects_bad_models() {
        let good = Standardizer::fit(&known());
        assert!(good.validate(3).is_ok());
        assert!(good.validate(2).is_err());
        assert!(good.validate(4).is_err());

        let mut short_std = good.clone();
        short_std.std.pop();
        assert!(short_std.validate(3).is_err());

        let mut nan_mean = good.clone();
        nan_mean.mean[1] = f64::NAN;
        assert!(nan_mean.validate(3).is_err());

        let mut inf_mean = good.clone();
        inf_mean.mean[0] = f64::INFINITY;
        assert!(inf_mean.validate(3).is_err());

        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let mut m = good.clone();
            m.std[2] = bad;
            assert!(m.validate(3).is_err(), "std {bad} accepted");
        }
    }

    #[test]
    fn serde_round_trip() {
        let s = Standardizer::fit(&known());
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, r#"{"mean":[5.0,3.0,0.0],"std":[2.0,1.0,1.0]}"#);
        let back: Standardizer = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
    }
}
