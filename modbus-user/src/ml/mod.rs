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
//! How the detector uses them: [`window`] turns each master-slave pair's
//! traffic into one feature vector per window of capture time, [`models`]
//! trains both models on the windows of a baseline and judges a window
//! against thresholds set from them, and [`monitor`] is a shard's share of
//! that work (training windows in `--baseline-mode`, `ML_ANOMALY` alerts
//! with `--ml`).
//!
//! The algorithms, all pure computation with no I/O and no dependency on the
//! rest of the crate:
//! - [`scale::Standardizer`]: per-feature z-scores, so that no feature
//!   dominates a distance merely because of its unit;
//! - [`iforest::IsolationForest`]: anomalies are few and different, so random
//!   axis-parallel cuts isolate them in fewer steps than normal points;
//! - [`ocsvm::OneClassSvm`]: a smooth boundary (RBF kernel) around the
//!   region where the training vectors lie;
//! - [`Rng`]: a small seeded generator, so that the same training data and
//!   seed always give the same model, on every machine.
//!
//! Every model is `serde` (de)serializable so that it can be trained once and
//! loaded by the detector, and has a `validate` method: a model read from a
//! user's file must be validated before it is used, and a model that passed
//! `validate` never makes scoring panic or loop.

pub mod iforest;
pub mod models;
pub mod monitor;
pub mod ocsvm;
pub mod scale;
pub mod window;

/// Deterministic pseudo-random source (splitmix64) for training.
///
/// Training draws random sub-samples and split points; a fixed algorithm in
/// a few lines (rather than an external crate whose stream might change
/// between versions) makes models reproducible from their seed. Splitmix64
/// accepts any seed, 0 included.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator whose whole stream is determined by `seed`.
    pub fn new(seed: u64) -> Self {
        Rng { state: seed }
    }

    /// The next 64 uniformly distributed bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    ///
    /// Multiply-shift (the high half of `next_u64() * n`): the bias is at
    /// most `n / 2^64`, far below anything training could notice, and every
    /// call consumes exactly one draw.
    pub fn below(&mut self, n: usize) -> usize {
        let n64 = u64::try_from(n).unwrap_or(u64::MAX);
        let wide = u128::from(self.next_u64()) * u128::from(n64);
        // The high half is < n64 <= usize::MAX, so it always converts.
        usize::try_from(wide >> 64).unwrap_or(0)
    }

    /// Uniform in `[0, 1)`, with 53 random bits (every value is a multiple
    /// of 2^-53, so 1.0 is never returned).
    pub fn unit_f64(&mut self) -> f64 {
        const SCALE: f64 = 1.0 / (1u64 << 53) as f64;
        (self.next_u64() >> 11) as f64 * SCALE
    }

    /// Moves a uniformly random subset of `k` items (all of them if `k` is
    /// larger than the slice) to the front of `items`, in random order.
    ///
    /// A partial Fisher-Yates shuffle: O(k), and it works from any starting
    /// order, so one index buffer can be reused to draw many sub-samples
    /// without replacement.
    pub fn partial_shuffle<T>(&mut self, items: &mut [T], k: usize) {
        let n = items.len();
        for i in 0..k.min(n) {
            let j = i + self.below(n - i);
            items.swap(i, j);
        }
    }
}

/// Data shared by the models' tests.
#[cfg(test)]
pub(crate) mod testdata {
    use super::Rng;

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

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn same_seed_same_sequence() {
        let mut a = Rng::new(42);
        let mut b = Rng::new(42);
        for _ in 0..1000 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
    }

    #[test]
    fn different_seeds_differ() {
        let a: Vec<u64> = {
            let mut r = Rng::new(1);
            (0..16).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = Rng::new(2);
            (0..16).map(|_| r.next_u64()).collect()
        };
        assert!(a.iter().zip(&b).all(|(x, y)| x != y));
        // Seed 0 is not a fixed point.
        let mut z = Rng::new(0);
        assert_ne!(z.next_u64(), z.next_u64());
    }

    #[test]
    fn below_stays_below_n_and_covers_it() {
        let mut r = Rng::new(7);
        for n in [1usize, 2, 3, 10, 1000, usize::MAX] {
            for _ in 0..2000 {
                assert!(r.below(n) < n);
            }
        }
        assert_eq!(r.below(0), 0);
        let mut seen = [false; 10];
        for _ in 0..1000 {
            seen[r.below(10)] = true;
        }
        assert!(seen.iter().all(|&s| s), "{seen:?}");
    }

    #[test]
    fn unit_f64_in_half_open_interval_and_spread() {
        let mut r = Rng::new(3);
        let draws: Vec<f64> = (0..100_000).map(|_| r.unit_f64()).collect();
        assert!(draws.iter().all(|&u| (0.0..1.0).contains(&u)));
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((mean - 0.5).abs() < 0.01, "{mean}");
        assert!(draws.iter().any(|&u| u < 0.01) && draws.iter().any(|&u| u > 0.99));
    }

    #[test]
    fn partial_shuffle_picks_a_subset_without_repeats() {
        let mut r = Rng::new(11);
        let mut items: Vec<usize> = (0..50).collect();
        for _ in 0..100 {
            r.partial_shuffle(&mut items, 20);
            let mut sorted = items.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        }
        // k larger than the slice shuffles everything, without panicking.
        r.partial_shuffle(&mut items, 500);
        let mut empty: [u8; 0] = [];
        r.partial_shuffle(&mut empty, 3);
    }

    #[test]
    fn partial_shuffle_is_roughly_uniform() {
        let mut r = Rng::new(5);
        let mut items: Vec<usize> = (0..10).collect();
        let mut hits = [0u32; 10];
        for _ in 0..20_000 {
            r.partial_shuffle(&mut items, 3);
            for &i in &items[..3] {
                hits[i] += 1;
            }
        }
        // Expected 6000 each.
        assert!(hits.iter().all(|&h| (5500..6500).contains(&h)), "{hits:?}");
    }
}
