//! A tiny deterministic PRNG (splitmix64).
//!
//! The generator must produce byte-identical captures for the same config on
//! every machine and toolchain, so it cannot depend on an external RNG crate
//! whose algorithm might change between versions; splitmix64 is a few lines,
//! accepts any seed (including 0) and is plenty random for traffic shapes.

/// Deterministic pseudo-random source seeded from the config.
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
}
