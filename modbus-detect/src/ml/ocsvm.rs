//! One-Class SVM (Schölkopf, Platt, Shawe-Taylor, Smola, Williamson,
//! "Estimating the support of a high-dimensional distribution", 2001).
//!
//! Where the Isolation Forest looks for points that are easy to cut off, the
//! one-class SVM learns a smooth boundary around the training data: with an
//! RBF kernel `k(a, b) = exp(-gamma |a - b|^2)` the decision function
//! `f(x) = sum_i alpha_i k(sv_i, x) - rho` is a weighted sum of bumps centred
//! on the support vectors, and `f(x) < 0` means `x` lies outside the region
//! that holds most of the training data. `nu` bounds the share of training
//! points left outside (at most `nu`) and the share of support vectors (at
//! least `nu`).
//!
//! Training solves the dual problem
//! `min 1/2 alpha^T K alpha` subject to `0 <= alpha_i <= 1/(nu l)` and
//! `sum alpha_i = 1` with SMO, as libsvm's one-class solver does: start
//! from libsvm's feasible point, repeatedly move weight between the maximal
//! violating pair, stop when the KKT gap falls below [`EPS`] or after
//! [`MAX_ITERATIONS`]. libsvm's weights are ours times `nu l` (its box is
//! `[0, 1]`, its sum `nu l`); we store the `sum = 1` form, whose decision
//! values do not grow with `l`, but measure the gap in libsvm's scale so
//! that [`EPS`] means what it means there. The kernel matrix is computed
//! once: training sets are capped at `max_samples` rows (1024 means 8 MiB of
//! kernel values).
//!
//! On a compact cloud of points the decision function is nearly flat inside
//! (many training points sit within a small fraction of `rho` of the
//! boundary), the more so the larger `gamma`: the sign of a decision value
//! close to 0 is within the solver's tolerance, so a caller wanting few
//! false alarms should flag clearly negative values rather than any
//! negative one.
//!
//! `gamma` is the inverse squared length scale; on standardized features
//! `1 / dims` (libsvm's default) is a reasonable start.

use serde::{Deserialize, Serialize};

use super::ModelError;
use modbus_common::rng::Rng;

/// Stopping tolerance on the KKT gap (largest gradient difference over a
/// pair that can still move), measured like libsvm's (gradients of weights
/// summing to `nu l`, i.e. ours times `nu l`); libsvm's default value.
pub const EPS: f64 = 1e-3;

/// Cap on SMO iterations, so that training ends even on data where the
/// solver stalls (it normally needs a few thousand at most).
pub const MAX_ITERATIONS: usize = 100_000;

/// Most support vectors a loaded model may have (training keeps at most
/// the 1024 rows it is fitted on).
pub const MAX_SUPPORT_VECTORS: usize = 1 << 14;

/// Stand-in for a non-positive curvature `K_ii + K_jj - 2 K_ij` (two equal
/// points), as in libsvm: the step is then limited by the bounds alone.
const TAU: f64 = 1e-12;

/// A trained one-class SVM: support vectors, their weights and the offset.
///
/// JSON: `{"gamma":0.5,"rho":0.21,"alpha":[0.02,..],"sv":[[0.1,-1.3],..]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OneClassSvm {
    /// RBF kernel parameter.
    pub gamma: f64,
    /// Offset: `decision = sum alpha_i k(sv_i, x) - rho`.
    pub rho: f64,
    /// Weight of each support vector (all positive after training, summing
    /// to 1).
    pub alpha: Vec<f64>,
    /// The support vectors: the training rows with a positive weight.
    pub sv: Vec<Vec<f64>>,
}

/// How training went, for logs: whether SMO reached the tolerance or
/// stopped at the iteration cap.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainReport {
    /// Rows actually trained on (at most `max_samples`).
    pub samples: usize,
    /// SMO iterations run.
    pub iterations: usize,
    /// Final KKT gap, in the scale of [`EPS`] (0 when no pair could move).
    pub gap: f64,
    /// True when `gap < EPS`, false when the iteration cap stopped SMO.
    pub converged: bool,
}

impl OneClassSvm {
    /// Trains on `rows` (on a random subset of `max_samples` of them, drawn
    /// with `seed`, when there are more). The kernel matrix takes
    /// `8 l^2` bytes for `l = min(rows, max_samples)`: 8 MiB at 1024, so
    /// keep `max_samples` in the low thousands.
    ///
    /// Errors on no rows, `nu` outside `(0, 1]`, `gamma` not finite and
    /// positive, `max_samples` 0, rows of unequal length or non-finite
    /// values.
    pub fn fit(
        rows: &[Vec<f64>],
        nu: f64,
        gamma: f64,
        max_samples: usize,
        seed: u64,
    ) -> Result<OneClassSvm, ModelError> {
        Self::fit_with_report(rows, nu, gamma, max_samples, seed).map(|(model, _)| model)
    }

    /// [`OneClassSvm::fit`], also saying whether the solver converged.
    pub fn fit_with_report(
        rows: &[Vec<f64>],
        nu: f64,
        gamma: f64,
        max_samples: usize,
        seed: u64,
    ) -> Result<(OneClassSvm, TrainReport), ModelError> {
        check_params(nu, gamma, max_samples)?;
        check_rows(rows)?;
        let train = training_subset(rows, max_samples, seed);
        let kernel = kernel_matrix(&train, gamma);
        let solution = solve(&kernel, train.len(), nu, EPS, MAX_ITERATIONS);
        let (alpha, sv) = train
            .iter()
            .zip(&solution.alpha)
            .filter(|(_, &a)| a > 0.0)
            .map(|(row, &a)| (a, row.to_vec()))
            .unzip();
        let report = TrainReport {
            samples: train.len(),
            iterations: solution.iterations,
            gap: solution.gap,
            converged: solution.gap < EPS,
        };
        let model = OneClassSvm {
            gamma,
            rho: solution.rho,
            alpha,
            sv,
        };
        Ok((model, report))
    }

    /// `sum alpha_i k(sv_i, x) - rho`: `>= 0` inside the learnt region,
    /// `< 0` outside; the more negative, the farther out. Allocation-free.
    ///
    /// `x` should have the training dimension (only the common prefix of `x`
    /// and each support vector is compared otherwise).
    pub fn decision(&self, x: &[f64]) -> f64 {
        let sum: f64 = self
            .sv
            .iter()
            .zip(&self.alpha)
            .map(|(sv, &a)| a * rbf(self.gamma, sv, x))
            .sum();
        sum - self.rho
    }

    /// Whether `decision(x) >= threshold` certainly holds (the SVM does
    /// not flag `x`): the kernel terms are summed in `decision`'s order and
    /// the sum stops once it is past `threshold + rho`. Exact, because
    /// every term is at least 0 (a term that is not stops the shortcut),
    /// so the whole sum is never below a partial one. A no may be either.
    pub fn reaches(&self, x: &[f64], threshold: f64) -> bool {
        let mut sum = 0.0;
        for (sv, &a) in self.sv.iter().zip(&self.alpha) {
            let term = a * rbf(self.gamma, sv, x);
            if term.is_nan() || term < 0.0 {
                return false;
            }
            sum += term;
            if sum - self.rho >= threshold {
                return true;
            }
        }
        false
    }

    /// Checks a (typically deserialized) model before use: at least one
    /// support vector, as many alphas as support vectors, every support
    /// vector `dims` finite values, alphas finite and `>= 0`, `rho` finite,
    /// `gamma` finite and positive. A valid model's decision is finite for
    /// finite input.
    pub fn validate(&self, dims: usize) -> Result<(), ModelError> {
        if !(self.gamma.is_finite() && self.gamma > 0.0) {
            return Err(ModelError::new(
                "one-class SVM gamma must be finite and positive",
            ));
        }
        if !self.rho.is_finite() {
            return Err(ModelError::new("one-class SVM rho is not finite"));
        }
        if self.sv.is_empty() {
            return Err(ModelError::new("one-class SVM has no support vectors"));
        }
        // Every judgement evaluates the kernel on every support vector.
        if self.sv.len() > MAX_SUPPORT_VECTORS {
            return Err(ModelError::new(format!(
                "one-class SVM has {} support vectors, at most {MAX_SUPPORT_VECTORS}",
                self.sv.len()
            )));
        }
        if self.alpha.len() != self.sv.len() {
            return Err(ModelError::new(format!(
                "one-class SVM has {} alphas for {} support vectors",
                self.alpha.len(),
                self.sv.len()
            )));
        }
        if let Some(i) = self
            .alpha
            .iter()
            .position(|a| !(a.is_finite() && *a >= 0.0))
        {
            return Err(ModelError::new(format!(
                "one-class SVM alpha {i} is not finite and >= 0"
            )));
        }
        for (i, sv) in self.sv.iter().enumerate() {
            if sv.len() != dims {
                return Err(ModelError::new(format!(
                    "support vector {i} has {} values, expected {dims}",
                    sv.len()
                )));
            }
            if sv.iter().any(|v| !v.is_finite()) {
                return Err(ModelError::new(format!(
                    "support vector {i} has a non-finite value"
                )));
            }
        }
        Ok(())
    }
}

fn check_params(nu: f64, gamma: f64, max_samples: usize) -> Result<(), ModelError> {
    if !(nu > 0.0 && nu <= 1.0) {
        return Err(ModelError::new(format!("nu must be in (0, 1], got {nu}")));
    }
    if !(gamma.is_finite() && gamma > 0.0) {
        return Err(ModelError::new(format!(
            "gamma must be finite and positive, got {gamma}"
        )));
    }
    if max_samples == 0 {
        return Err(ModelError::new("max_samples must be at least 1"));
    }
    Ok(())
}

/// The kernel of a NaN is NaN, which would silently stall the solver; and a
/// ragged row has no defined distance. Both are caller bugs worth naming.
fn check_rows(rows: &[Vec<f64>]) -> Result<(), ModelError> {
    let Some(first) = rows.first() else {
        return Err(ModelError::new("no training rows"));
    };
    let dims = first.len();
    for (i, row) in rows.iter().enumerate() {
        if row.len() != dims {
            return Err(ModelError::new(format!(
                "row {i} has {} values, row 0 has {dims}",
                row.len()
            )));
        }
        if row.iter().any(|v| !v.is_finite()) {
            return Err(ModelError::new(format!("row {i} has a non-finite value")));
        }
    }
    Ok(())
}

/// All rows, or a seeded uniform subset of `max_samples` of them (kept in
/// their original order).
fn training_subset(rows: &[Vec<f64>], max_samples: usize, seed: u64) -> Vec<&[f64]> {
    if rows.len() <= max_samples {
        return rows.iter().map(Vec::as_slice).collect();
    }
    let mut order: Vec<usize> = (0..rows.len()).collect();
    Rng::new(seed).partial_shuffle(&mut order, max_samples);
    order.truncate(max_samples);
    order.sort_unstable();
    order
        .iter()
        .filter_map(|&i| rows.get(i).map(Vec::as_slice))
        .collect()
}

/// `exp(-gamma |a - b|^2)` over the common prefix of `a` and `b`.
fn rbf(gamma: f64, a: &[f64], b: &[f64]) -> f64 {
    let d2: f64 = a.iter().zip(b).map(|(u, v)| (u - v) * (u - v)).sum();
    (-gamma * d2).exp()
}

/// The full symmetric `l x l` kernel matrix, row-major.
fn kernel_matrix(rows: &[&[f64]], gamma: f64) -> Vec<f64> {
    let l = rows.len();
    let mut k = vec![0.0; l * l];
    for (i, a) in rows.iter().enumerate() {
        for (j, b) in rows.iter().enumerate().take(i + 1) {
            let v = rbf(gamma, a, b);
            k[i * l + j] = v;
            k[j * l + i] = v;
        }
    }
    k
}

/// Result of SMO on the dual.
struct Solution {
    alpha: Vec<f64>,
    rho: f64,
    iterations: usize,
    gap: f64,
}

/// SMO for `min 1/2 a^T K a`, `0 <= a_i <= 1/(nu l)`, `sum a_i = 1`; the
/// gap is compared with `eps` after scaling by `nu l` (see the module docs).
fn solve(kernel: &[f64], l: usize, nu: f64, eps: f64, max_iterations: usize) -> Solution {
    let c = 1.0 / (nu * l as f64);
    let mut smo = Smo {
        kernel,
        l,
        c,
        alpha: initial_alpha(l, nu),
        grad: vec![0.0; l],
    };
    smo.init_gradient();
    let mut iterations = 0;
    let mut gap = 0.0;
    while let Some((i, j, g)) = smo.select_pair() {
        gap = g * nu * l as f64;
        if gap < eps || iterations >= max_iterations {
            break;
        }
        smo.step(i, j);
        iterations += 1;
    }
    let rho = smo.rho();
    Solution {
        alpha: smo.alpha,
        rho,
        iterations,
        gap,
    }
}

/// libsvm's starting point: the first `floor(nu l)` weights at the upper
/// bound, the next one holding the remainder, the rest 0.
fn initial_alpha(l: usize, nu: f64) -> Vec<f64> {
    let total = nu * l as f64;
    let c = 1.0 / total;
    // `total` <= l, so the truncation stays in 0..=l.
    let full = (total.floor() as usize).min(l);
    let mut alpha = vec![0.0; l];
    for a in alpha.iter_mut().take(full) {
        *a = c;
    }
    if let Some(a) = alpha.get_mut(full) {
        *a = ((total - full as f64) / total).clamp(0.0, c);
    }
    alpha
}

/// Solver state: weights and the gradient `K alpha`.
struct Smo<'a> {
    kernel: &'a [f64],
    l: usize,
    c: f64,
    alpha: Vec<f64>,
    grad: Vec<f64>,
}

/// Row `i` of the row-major `l x l` kernel matrix.
fn kernel_row(kernel: &[f64], l: usize, i: usize) -> &[f64] {
    &kernel[i * l..(i + 1) * l]
}

impl Smo<'_> {
    fn init_gradient(&mut self) {
        let mut grad = vec![0.0; self.l];
        for (i, &a) in self.alpha.iter().enumerate() {
            if a > 0.0 {
                for (g, &k) in grad.iter_mut().zip(kernel_row(self.kernel, self.l, i)) {
                    *g += a * k;
                }
            }
        }
        self.grad = grad;
    }

    /// The maximal violating pair: `i`, the weight that may grow with the
    /// smallest gradient, and `j`, the weight that may shrink with the
    /// largest, with the gap `grad_j - grad_i`. None when no weight can grow
    /// or none can shrink (then nothing can move).
    fn select_pair(&self) -> Option<(usize, usize, f64)> {
        let mut up: Option<(usize, f64)> = None;
        let mut low: Option<(usize, f64)> = None;
        for (t, (&a, &g)) in self.alpha.iter().zip(&self.grad).enumerate() {
            if a < self.c && up.is_none_or(|(_, best)| g < best) {
                up = Some((t, g));
            }
            if a > 0.0 && low.is_none_or(|(_, best)| g > best) {
                low = Some((t, g));
            }
        }
        let ((i, gi), (j, gj)) = (up?, low?);
        Some((i, j, gj - gi))
    }

    /// Moves weight from `j` to `i` (minimising along the pair's feasible
    /// line, clipped to the bounds) and updates the gradient.
    fn step(&mut self, i: usize, j: usize) {
        let (kernel, l, c) = (self.kernel, self.l, self.c);
        let (row_i, row_j) = (kernel_row(kernel, l, i), kernel_row(kernel, l, j));
        let (ai, aj) = (self.alpha[i], self.alpha[j]);
        let curvature = row_i[i] + row_j[j] - 2.0 * row_i[j];
        let wanted = (self.grad[j] - self.grad[i]) / curvature.max(TAU);
        let room_i = c - ai;
        let (new_i, new_j) = if wanted >= room_i && room_i <= aj {
            (c, aj - room_i)
        } else if wanted >= aj {
            ((ai + aj).min(c), 0.0)
        } else {
            (ai + wanted, aj - wanted)
        };
        self.alpha[i] = new_i;
        self.alpha[j] = new_j;
        let (di, dj) = (new_i - ai, new_j - aj);
        for ((g, &ki), &kj) in self.grad.iter_mut().zip(row_i).zip(row_j) {
            *g += di * ki + dj * kj;
        }
    }

    /// The offset: the mean gradient over free weights (all lie on the
    /// boundary, `f = 0`), or the middle of the feasible interval when none
    /// is free, as libsvm does.
    fn rho(&self) -> f64 {
        let (mut free_sum, mut free_count) = (0.0, 0usize);
        let (mut lower, mut upper) = (f64::NEG_INFINITY, f64::INFINITY);
        for (&a, &g) in self.alpha.iter().zip(&self.grad) {
            if a >= self.c {
                lower = lower.max(g);
            } else if a <= 0.0 {
                upper = upper.min(g);
            } else {
                free_sum += g;
                free_count += 1;
            }
        }
        if free_count > 0 {
            free_sum / free_count as f64
        } else if lower.is_finite() && upper.is_finite() {
            (lower + upper) / 2.0
        } else if lower.is_finite() {
            lower
        } else if upper.is_finite() {
            upper
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ml::testdata::{blob, outliers};

    const NU: f64 = 0.05;
    /// Wide enough for a decision function with a clear dome over the blob.
    const GAMMA: f64 = 0.1;

    fn trained() -> (OneClassSvm, TrainReport, Vec<Vec<f64>>) {
        let rows = blob(500, 2, 21);
        let (model, report) = OneClassSvm::fit_with_report(&rows, NU, GAMMA, 1024, 1).unwrap();
        (model, report, rows)
    }

    /// The shortcut agrees with the decision at the edge: with the
    /// threshold one float above a point's decision it must not clear the
    /// point; a negative weight (a model that skipped `validate`) turns the
    /// shortcut off.
    #[test]
    fn reaches_never_clears_a_point_the_decision_flags() {
        let (m, _, rows) = trained();
        let points = rows
            .iter()
            .cloned()
            .chain(blob(200, 2, 9))
            .chain(outliers());
        let mut cleared = 0;
        for x in points {
            let d = m.decision(&x);
            assert!(!m.reaches(&x, d.next_up()), "{x:?} decides {d}");
            assert!(m.reaches(&x, d - m.rho.abs() - 1.0) || d.is_nan());
            cleared += usize::from(m.reaches(&x, d));
        }
        // At its own decision, every point is cleared (the same sum).
        assert_eq!(cleared, 200 + 500 + outliers().len());
        let mut negative = m.clone();
        negative.alpha[0] = -1.0;
        assert!(!negative.reaches(&rows[0], f64::NEG_INFINITY));
    }

    #[test]
    fn converges_and_keeps_only_weighted_support_vectors() {
        let (m, report, _) = trained();
        assert!(report.converged, "{report:?}");
        assert!(report.gap < EPS && report.iterations > 0);
        assert_eq!(report.samples, 500);
        m.validate(2).unwrap();
        assert!(m.alpha.iter().all(|&a| a > 0.0));
        // At least nu l support vectors, but far from all points.
        assert!(m.sv.len() >= 25 && m.sv.len() < 250, "{}", m.sv.len());
    }

    #[test]
    fn alphas_sum_to_one_within_the_box() {
        let (m, _, _) = trained();
        let sum: f64 = m.alpha.iter().sum();
        assert!((sum - 1.0).abs() < 1e-9, "{sum}");
        let c = 1.0 / (NU * 500.0);
        assert!(m.alpha.iter().all(|&a| a <= c), "{:?}", m.alpha);
    }

    #[test]
    fn training_outlier_fraction_is_about_nu() {
        let rows = blob(500, 2, 21);
        // 0.5 = 1 / dims, libsvm's default.
        for gamma in [0.1, 0.2, 0.5] {
            let m = OneClassSvm::fit(&rows, NU, gamma, 1024, 1).unwrap();
            let outside = rows.iter().filter(|x| m.decision(x) < 0.0).count();
            let fraction = outside as f64 / rows.len() as f64;
            assert!(fraction <= NU + 0.05, "gamma {gamma}: {fraction}");
            // nu is also roughly a lower bound: the boundary is not slack.
            assert!(fraction >= NU - 0.02, "gamma {gamma}: {fraction}");
        }
    }

    #[test]
    fn far_outliers_are_outside_and_the_centre_inside() {
        let (m, _, _) = trained();
        for x in outliers() {
            assert!(m.decision(&x) < 0.0, "{x:?}");
        }
        for x in [[0.0, 0.0], [0.3, -0.2], [-0.5, 0.4]] {
            assert!(m.decision(&x) > 0.0, "{x:?}");
        }
    }

    #[test]
    fn decision_matches_the_solver_gradient_on_support_vectors() {
        // For a free support vector (0 < alpha < C) the KKT conditions put it
        // on the boundary: |f(sv)| is within the stopping tolerance (EPS is
        // in libsvm's scale, nu l times ours).
        let (m, _, _) = trained();
        let c = 1.0 / (NU * 500.0);
        let free: Vec<_> = m.sv.iter().zip(&m.alpha).filter(|(_, &a)| a < c).collect();
        assert!(!free.is_empty());
        for (sv, _) in free {
            let d = m.decision(sv);
            assert!(d.abs() < EPS * c, "{d}");
        }
        // Bounded support vectors (alpha = C) are on or outside it.
        for (sv, _) in m.sv.iter().zip(&m.alpha).filter(|(_, &a)| a >= c) {
            assert!(m.decision(sv) < EPS * c);
        }
    }

    fn ulps(a: f64, b: f64) -> u64 {
        a.to_bits().abs_diff(b.to_bits())
    }

    /// serde_json without its `float_roundtrip` feature (not enabled in
    /// this workspace) may parse a float 1 ULP off, so the round trip is
    /// exact only to 1 ULP per stored value; the decisions then agree to
    /// ~1e-16, never in sign for points off the boundary.
    #[test]
    fn serde_round_trip_gives_the_same_decisions() {
        let (m, _, rows) = trained();
        let json = serde_json::to_string(&m).unwrap();
        assert!(
            json.starts_with(r#"{"gamma":0.1,"rho":"#),
            "{}",
            &json[..40]
        );
        let back: OneClassSvm = serde_json::from_str(&json).unwrap();
        back.validate(2).unwrap();
        assert_eq!(back.gamma, m.gamma);
        assert!(ulps(back.rho, m.rho) <= 1);
        let stored = |x: &OneClassSvm| -> Vec<f64> {
            x.alpha
                .iter()
                .chain(x.sv.iter().flatten())
                .copied()
                .collect()
        };
        let (before, after) = (stored(&m), stored(&back));
        assert_eq!(before.len(), after.len());
        assert!(before.iter().zip(&after).all(|(&a, &b)| ulps(a, b) <= 1));
        for x in rows.iter().chain(&outliers()) {
            let (d, e) = (m.decision(x), back.decision(x));
            assert!((d - e).abs() <= 1e-15, "{d} {e}");
        }
    }

    #[test]
    fn same_seed_same_model_on_a_subsample() {
        let rows = blob(1500, 2, 5);
        let (a, report) = OneClassSvm::fit_with_report(&rows, 0.1, GAMMA, 300, 9).unwrap();
        let b = OneClassSvm::fit(&rows, 0.1, GAMMA, 300, 9).unwrap();
        let c = OneClassSvm::fit(&rows, 0.1, GAMMA, 300, 10).unwrap();
        assert_eq!(report.samples, 300);
        assert_eq!(a, b);
        assert_ne!(a, c);
        // Support vectors are training rows.
        assert!(a.sv.iter().all(|sv| rows.contains(sv)));
    }

    #[test]
    fn fit_rejects_bad_input() {
        let rows = blob(20, 2, 1);
        let bad_params = [
            (0.0, 0.5, 10),
            (-0.1, 0.5, 10),
            (1.01, 0.5, 10),
            (f64::NAN, 0.5, 10),
            (0.1, 0.0, 10),
            (0.1, -1.0, 10),
            (0.1, f64::NAN, 10),
            (0.1, f64::INFINITY, 10),
            (0.1, 0.5, 0),
        ];
        for (nu, gamma, max) in bad_params {
            assert!(
                OneClassSvm::fit(&rows, nu, gamma, max, 1).is_err(),
                "{nu} {gamma} {max}"
            );
        }
        assert!(OneClassSvm::fit(&[], 0.1, 0.5, 10, 1).is_err());
        let mut ragged = rows.clone();
        ragged[3].push(1.0);
        assert!(OneClassSvm::fit(&ragged, 0.1, 0.5, 100, 1).is_err());
        let mut nan = rows.clone();
        nan[5][1] = f64::NAN;
        assert!(OneClassSvm::fit(&nan, 0.1, 0.5, 100, 1).is_err());
        // nu = 1 is allowed: every point is a support vector of weight 1/l.
        let all = OneClassSvm::fit(&rows, 1.0, 0.5, 100, 1).unwrap();
        assert_eq!(all.sv.len(), 20);
    }

    #[test]
    fn validate_rejects_malformed_models() {
        let (good, _, _) = trained();
        good.validate(2).unwrap();
        assert!(good.validate(3).is_err());

        let mut m = good.clone();
        m.alpha[0] = f64::NAN;
        assert!(m.validate(2).is_err());
        m.alpha[0] = -1e-3;
        assert!(m.validate(2).is_err());

        let mut m = good.clone();
        m.alpha.pop();
        assert!(m.validate(2).is_err());

        let mut m = good.clone();
        m.sv[1].push(0.0);
        assert!(m.validate(2).is_err());

        let mut m = good.clone();
        m.sv[2][0] = f64::INFINITY;
        assert!(m.validate(2).is_err());

        let mut m = good.clone();
        m.sv.clear();
        m.alpha.clear();
        assert!(m.validate(2).is_err());
        assert_eq!(m.decision(&[0.0, 0.0]), -good.rho);

        for (gamma, rho) in [(0.0, 0.1), (f64::NAN, 0.1), (-1.0, 0.1), (0.5, f64::NAN)] {
            let mut m = good.clone();
            m.gamma = gamma;
            m.rho = rho;
            assert!(m.validate(2).is_err(), "{gamma} {rho}");
        }

        // Unvalidated mismatches still score without panicking.
        let mut m = good.clone();
        m.alpha.truncate(3);
        m.sv[0].clear();
        assert!(m.decision(&[1.0]).is_finite());
    }

    #[test]
    fn identical_rows_terminate_with_a_valid_model() {
        let rows = vec![vec![1.5, -2.0, 0.25]; 300];
        let (m, report) = OneClassSvm::fit_with_report(&rows, 0.05, 0.5, 1024, 1).unwrap();
        assert!(report.iterations <= MAX_ITERATIONS);
        m.validate(3).unwrap();
        assert!(m.decision(&rows[0]).abs() < 1e-9);
        assert!(m.decision(&[10.0, 10.0, 10.0]) < 0.0);
    }

    #[test]
    fn iteration_cap_stops_the_solver_with_a_feasible_point() {
        let rows = blob(200, 2, 8);
        let slices: Vec<&[f64]> = rows.iter().map(Vec::as_slice).collect();
        let kernel = kernel_matrix(&slices, GAMMA);
        let s = solve(&kernel, 200, 0.05, 0.0, 7);
        assert_eq!(s.iterations, 7);
        assert!(s.gap > 0.0);
        let c = 1.0 / (0.05 * 200.0);
        assert!(s.alpha.iter().all(|&a| (0.0..=c).contains(&a)));
        assert!((s.alpha.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        // eps = 0 can never be met exactly: only the cap ends this run.
        let s = solve(&kernel, 200, 0.05, 0.0, 5_000);
        assert_eq!(s.iterations, 5_000);
    }

    #[test]
    fn one_step_solves_the_two_point_problem() {
        // nu l = 1: libsvm starts at alpha = [1, 0]; the optimum of
        // 1/2 a^T K a on a1 + a2 = 1 is [1/2, 1/2], which the exact line
        // minimisation reaches in one step, with rho = (1 + k12) / 2.
        let rows: Vec<&[f64]> = vec![&[0.0], &[1.0]];
        let kernel = kernel_matrix(&rows, 1.0);
        let s = solve(&kernel, 2, 0.5, 1e-12, 100);
        assert_eq!(s.iterations, 1);
        assert_eq!(s.alpha, vec![0.5, 0.5]);
        let k12 = (-1.0f64).exp();
        assert!((s.rho - (1.0 + k12) / 2.0).abs() < 1e-15);
    }

    #[test]
    fn initial_alpha_follows_libsvm() {
        let a = initial_alpha(10, 0.25);
        // nu l = 2.5: two at C = 0.4, the third 0.5 / 2.5 = 0.2.
        assert_eq!(&a[..4], &[0.4, 0.4, 0.2, 0.0]);
        assert!((a.iter().sum::<f64>() - 1.0).abs() < 1e-15);
        let all = initial_alpha(4, 1.0);
        assert_eq!(all, vec![0.25; 4]);
    }

    #[test]
    fn kernel_matrix_is_symmetric_with_unit_diagonal() {
        let rows: Vec<&[f64]> = vec![&[0.0, 0.0], &[1.0, 0.0], &[0.0, 2.0]];
        let k = kernel_matrix(&rows, 0.5);
        let expected = [
            [1.0, (-0.5f64).exp(), (-2.0f64).exp()],
            [(-0.5f64).exp(), 1.0, (-2.5f64).exp()],
            [(-2.0f64).exp(), (-2.5f64).exp(), 1.0],
        ];
        for (i, row) in expected.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                assert_eq!(k[i * 3 + j], v);
            }
        }
    }

    /// More support vectors than training keeps are refused on load.
    #[test]
    fn oversized_models_are_refused() {
        let model = |n: usize| OneClassSvm {
            gamma: 0.5,
            rho: 0.1,
            alpha: vec![1.0 / n as f64; n],
            sv: vec![vec![0.0; 2]; n],
        };
        assert!(model(100).validate(2).is_ok());
        assert!(model(MAX_SUPPORT_VECTORS + 1).validate(2).is_err());
    }
}
