//! A tiny deterministic PRNG (splitmix64), shared by the synthetic capture
//! generator and the training of the ML models.
//!
//! Both must give the same result for the same seed on every machine and
//! toolchain — byte-identical captures, models reproducible from their
//! seed — so neither can depend on an external RNG crate whose algorithm
//! might change between versions; splitmix64 is a few lines, accepts any
//! seed (including 0) and is plenty random for traffic shapes and
//! sub-samples.

/// Deterministic pseudo-random source: the whole stream follows from the seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0), by multiply-shift: no modulo bias
    /// worth mentioning and no rejection loop, so the number of draws per call
    /// is fixed, which keeps streams aligned across configs.
    pub fn below(&mut self, n: u64) -> u64 {
        let wide = u128::from(self.next_u64()) * u128::from(n);
        // The high half of a 64x64 product always fits in 64 bits.
        u64::try_from(wide >> 64).unwrap_or(u64::MAX)
    }

    /// Uniform in `lo..=hi` (`lo` when `hi < lo`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo).saturating_add(1))
    }

    /// [`Rng::range`] for the many 16-bit protocol fields.
    pub fn range_u16(&mut self, lo: u16, hi: u16) -> u16 {
        u16::try_from(self.range(u64::from(lo), u64::from(hi))).unwrap_or(hi)
    }

    /// True with probability `per_10k` / 10 000; integer-only so results do
    /// not hinge on floating-point formatting or rounding anywhere.
    pub fn chance(&mut self, per_10k: u64) -> bool {
        self.below(10_000) < per_10k
    }

    /// A u32 drawn from the full range, for sequence numbers.
    pub fn next_u32(&mut self) -> u32 {
        // Keep the high bits: they are the best-mixed ones.
        u32::try_from(self.next_u64() >> 32).unwrap_or(0)
    }

    /// Uniform in `0..n` for indices: [`Rng::below`] in `usize`.
    pub fn index(&mut self, n: usize) -> usize {
        let n64 = u64::try_from(n).unwrap_or(u64::MAX);
        // Below n64 <= usize::MAX, so it always converts.
        usize::try_from(self.below(n64)).unwrap_or(0)
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
            let j = i + self.index(n - i);
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn same_seed_same_stream() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(Rng::new(7).next_u64(), Rng::new(8).next_u64());
    }

    #[test]
    fn bounded_draws_stay_in_range() {
        let mut r = Rng::new(0);
        for _ in 0..10_000 {
            assert!(r.below(10) < 10);
            let x = r.range(5, 9);
            assert!((5..=9).contains(&x));
        }
        assert_eq!(r.below(0), 0);
        assert_eq!(r.range(3, 3), 3);
        assert_eq!(r.range_u16(9, 9), 9);
    }

    #[test]
    fn chance_is_roughly_calibrated() {
        let mut r = Rng::new(42);
        let hits = (0..100_000).filter(|_| r.chance(200)).count();
        assert!((1_600..2_400).contains(&hits), "{hits}");
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
    fn index_stays_below_n_and_covers_it() {
        let mut r = Rng::new(7);
        for n in [1usize, 2, 3, 10, 1000, usize::MAX] {
            for _ in 0..2000 {
                assert!(r.index(n) < n);
            }
        }
        assert_eq!(r.index(0), 0);
        let mut seen = [false; 10];
        for _ in 0..1000 {
            seen[r.index(10)] = true;
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
