//! Unsupervised anomaly models for feature vectors of Modbus/TCP traffic.
//!
//! Why unsupervised: an industrial network has no labelled attacks to learn
//! from, but it has plenty of normal traffic, and normal traffic there is
//! very regular (the same masters poll the same registers at the same
//! rates). So the models are trained only on feature vectors of windows of
//! normal traffic, and the detector flags a window whose vector the models
//! find unlike anything they were trained on. The rules in `detect` catch
//! what can be written down; these models catch departures from the learnt
//! baseline that nobody wrote a rule for.
//!
//! How the detector uses them: `detect::ml` turns each master-slave pair's
//! traffic into one feature vector ([`features`]) per window of capture
//! time; [`models`] trains both models on the windows of a baseline and
//! judges a window against thresholds set from them. This module knows
//! nothing of packets, shards or alerts: it is the algorithms only.
//!
//! The algorithms, all pure computation with no I/O, needing nothing of the
//! rest of the crate but its seeded generator:
//! - [`scale::Standardizer`]: per-feature z-scores, so that no feature
//!   dominates a distance merely because of its unit;
//! - [`iforest::IsolationForest`]: anomalies are few and different, so random
//!   axis-parallel cuts isolate them in fewer steps than normal points;
//! - [`ocsvm::OneClassSvm`]: a smooth boundary (RBF kernel) around the
//!   region where the training vectors lie;
//! - `modbus_common::rng::Rng` (shared with the capture generator): a seeded
//!   generator, so that the same training data and seed always give the
//!   same model, on every machine.
//!
//! Every model is `serde` (de)serializable so that it can be trained once and
//! loaded by the detector, and has a `validate` method: a model read from a
//! user's file must be validated before it is used, and a model that passed
//! `validate` never makes scoring panic or loop.

pub mod features;
pub mod iforest;
pub mod models;
pub mod ocsvm;
pub mod scale;

/// What is wrong with a model read from a file, or with what it was asked
/// to train on: the part of the model (outermost first) and the problem,
/// e.g. "models: iforest: tree 3: node 7: feature 12 >= 10".
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}{problem}", .parts.iter().map(|p| format!("{p}: ")).collect::<String>())]
pub struct ModelError {
    parts: Vec<String>,
    problem: String,
}

impl ModelError {
    pub fn new(problem: impl Into<String>) -> ModelError {
        ModelError {
            parts: Vec::new(),
            problem: problem.into(),
        }
    }

    /// The same problem, found inside `part`.
    pub fn within(mut self, part: impl Into<String>) -> ModelError {
        self.parts.insert(0, part.into());
        self
    }
}

/// Data shared by the models' tests.
#[cfg(test)]
pub(crate) mod testdata {
    use modbus_common::rng::Rng;

    /// A standard normal draw (Box-Muller; `1 - u` keeps `ln` away from 0).
    pub fn normal(rng: &mut Rng) -> f64 {
        let u1 = 1.0 - rng.unit_f64();
        let u2 = rng.unit_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// `n` points of a `dims`-dimensional standard normal blob.
    pub fn blob(n: usize, dims: usize, seed: u64) -> Vec<Vec<f64>> {
        let mut rng = Rng::new(seed);
        (0..n)
            .map(|_| (0..dims).map(|_| normal(&mut rng)).collect())
            .collect()
    }

    /// Points far from the blob centre, in every direction.
    pub fn outliers() -> Vec<Vec<f64>> {
        vec![
            vec![7.0, 7.0],
            vec![-8.0, 6.0],
            vec![9.0, -7.0],
            vec![0.0, 10.0],
            vec![-7.5, -7.5],
            vec![12.0, 0.0],
        ]
    }
}
