//! Round-trip times of a master-slave pair: exact mean, and quantiles
//! from a log-linear histogram (8 buckets per power of two, so a quantile
//! is within 1/16 of the true value), in microseconds.

use serde::{Deserialize, Serialize};

/// Times from 2^24 µs (16.8 s, longer than any transaction is kept) on
/// share the last bucket; the mean and maximum stay exact.
const MAX_US: u64 = (1 << 24) - 1;
/// Sub-buckets per power of two.
const SUB: u64 = 8;

/// Bucket of a time in µs: exact below 8 µs, then 8 per power of two.
fn bucket(us: u64) -> usize {
    let us = us.min(MAX_US);
    if us < SUB {
        return us as usize;
    }
    let e = u64::from(63 - us.leading_zeros());
    (SUB * (e - 2) + ((us >> (e - 3)) & (SUB - 1))) as usize
}

/// The middle of bucket `i`, in µs.
fn middle(i: usize) -> f64 {
    let i = i as u64;
    if i < SUB {
        return i as f64 + 0.5;
    }
    let (e, sub) = (i / SUB + 2, i % SUB);
    let lo = (SUB + sub) << (e - 3);
    lo as f64 + (1u64 << (e - 3)) as f64 / 2.0
}

/// A bounded histogram: only the buckets between the shortest and the
/// longest time seen are held (at most 176 counters).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rtt {
    count: u64,
    sum_ns: u64,
    max_ns: u64,
    /// Bucket of `counts[0]`.
    base: u16,
    counts: Vec<u32>,
}

impl Rtt {
    #[inline]
    pub fn add(&mut self, ns: u64) {
        self.count += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
        self.max_ns = self.max_ns.max(ns);
        let b = bucket(ns / 1000);
        // A slave answers in about the same time: its bucket is there.
        match self.counts.get_mut(b.wrapping_sub(usize::from(self.base))) {
            Some(c) => *c = c.saturating_add(1),
            None => self.add_to_bucket(b, 1),
        }
    }

    #[cold]
    fn add_to_bucket(&mut self, b: usize, n: u32) {
        let base = usize::from(self.base);
        if self.counts.is_empty() {
            self.base = b as u16;
            self.counts.push(n);
            return;
        }
        if b < base {
            let grow = base - b;
            self.counts.splice(0..0, std::iter::repeat_n(0, grow));
            self.base = b as u16;
        }
        let at = b - usize::from(self.base);
        if at >= self.counts.len() {
            self.counts.resize(at + 1, 0);
        }
        self.counts[at] = self.counts[at].saturating_add(n);
    }

    pub fn merge(&mut self, o: &Rtt) {
        self.count += o.count;
        self.sum_ns = self.sum_ns.saturating_add(o.sum_ns);
        self.max_ns = self.max_ns.max(o.max_ns);
        for (i, &n) in o.counts.iter().enumerate() {
            if n > 0 {
                self.add_to_bucket(usize::from(o.base) + i, n);
            }
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn mean_ms(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum_ns as f64 / self.count as f64 / 1e6)
    }

    pub fn max_ms(&self) -> Option<f64> {
        (self.count > 0).then(|| self.max_ns as f64 / 1e6)
    }

    /// The `q` quantile (0 < q <= 1) in ms: the middle of the bucket that
    /// holds the sample of rank ceil(q * count).
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total: u64 = self.counts.iter().map(|&n| u64::from(n)).sum();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0u64;
        for (i, &n) in self.counts.iter().enumerate() {
            seen += u64::from(n);
            if seen >= rank {
                return Some(middle(usize::from(self.base) + i) / 1000.0);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn buckets_are_exact_then_log_linear() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(7), 7);
        assert_eq!(bucket(8), 8);
        assert_eq!(bucket(15), 15);
        assert_eq!(bucket(16), 16);
        assert_eq!(bucket(17), 16);
        assert_eq!(bucket(MAX_US), bucket(u64::MAX));
        assert_eq!(bucket(MAX_US), 175);
        assert_eq!(middle(16), 17.0);
    }

    #[test]
    fn quantiles_of_a_known_distribution() {
        let mut r = Rtt::default();
        // 98 answers in 2 ms, 2 in 40 ms.
        for _ in 0..98 {
            r.add(2_000_000);
        }
        r.add(40_000_000);
        r.add(40_000_000);
        let p50 = r.quantile_ms(0.5).unwrap();
        let p99 = r.quantile_ms(0.99).unwrap();
        assert!((p50 - 2.0).abs() / 2.0 < 1.0 / 16.0, "{p50}");
        assert!((p99 - 40.0).abs() / 40.0 < 1.0 / 16.0, "{p99}");
        assert!((r.mean_ms().unwrap() - 2.76).abs() < 1e-9);
        assert_eq!(r.max_ms(), Some(40.0));
        assert_eq!(Rtt::default().quantile_ms(0.5), None);
    }

    proptest! {
        /// Any quantile is within 1/16 (or 1 µs) of the exact one, merged
        /// histograms equal one fed everything, and the buckets stay bounded.
        #[test]
        fn quantiles_are_close(a in proptest::collection::vec(0u64..20_000_000_000, 1..200),
                               b in proptest::collection::vec(0u64..20_000_000_000, 0..200),
                               q in 0.01f64..=1.0) {
            let (mut ra, mut rb, mut all) = (Rtt::default(), Rtt::default(), Rtt::default());
            for &x in &a { ra.add(x); all.add(x); }
            for &x in &b { rb.add(x); all.add(x); }
            ra.merge(&rb);
            prop_assert_eq!(&ra, &all);
            prop_assert!(all.counts.len() <= 176);
            let mut sorted: Vec<u64> = a.iter().chain(&b).map(|&x| (x / 1000).min(MAX_US)).collect();
            sorted.sort_unstable();
            let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
            let exact = sorted[rank - 1] as f64;
            let got = all.quantile_ms(q).unwrap() * 1000.0;
            prop_assert!((got - exact).abs() <= exact / 16.0 + 1.0, "{} vs {}", got, exact);
        }
    }
}
