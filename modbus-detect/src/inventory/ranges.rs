//! Address ranges a master read or wrote in one data table, bounded: a
//! sweep of the whole address space costs the same few ranges as a poll.

use serde::{Deserialize, Serialize};

/// Ranges kept per table and access. Beyond, the two ranges with the
/// smallest gap between them merge: the set still covers every address
/// accessed (and a little more), and says it was coarsened.
pub const MAX_RANGES: usize = 16;

/// Disjoint, non-adjacent, sorted inclusive ranges of 0-based (PDU)
/// addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ranges {
    spans: Vec<(u16, u16)>,
    /// Ranges were merged across addresses never accessed, to stay within
    /// [`MAX_RANGES`].
    coarsened: bool,
}

impl Ranges {
    /// `qty` addresses from `start` (none past 65535: they do not exist).
    #[inline]
    pub fn add(&mut self, start: u16, qty: u16) {
        if qty == 0 {
            return;
        }
        let end = start.saturating_add(qty - 1);
        // A poll reads what it read before: nothing to change (checked
        // inline, the rest is out of line).
        if !self.spans.iter().any(|&(a, b)| a <= start && end <= b) {
            self.add_span(start, end);
        }
    }

    /// The inclusive range `lo..=hi`, not yet covered.
    #[cold]
    fn add_span(&mut self, lo: u16, hi: u16) {
        let (mut lo, mut hi) = (lo, hi);
        self.spans.retain(|&(a, b)| {
            let touches = u32::from(a) <= u32::from(hi) + 1 && u32::from(lo) <= u32::from(b) + 1;
            if touches {
                lo = lo.min(a);
                hi = hi.max(b);
            }
            !touches
        });
        let at = self.spans.partition_point(|&(a, _)| a < lo);
        self.spans.insert(at, (lo, hi));
        if self.spans.len() > MAX_RANGES {
            let closest = self
                .spans
                .windows(2)
                .enumerate()
                .min_by_key(|(_, w)| w[1].0 - w[0].1)
                .map(|(i, _)| i);
            if let Some(i) = closest {
                let (_, end) = self.spans.remove(i + 1);
                self.spans[i].1 = end;
                self.coarsened = true;
            }
        }
    }

    /// Everything `other` holds.
    pub fn merge(&mut self, other: &Ranges) {
        for &(a, b) in &other.spans {
            if !self.spans.iter().any(|&(x, y)| x <= a && b <= y) {
                self.add_span(a, b);
            }
        }
        self.coarsened |= other.coarsened;
    }

    pub fn spans(&self) -> &[(u16, u16)] {
        &self.spans
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    pub fn coarsened(&self) -> bool {
        self.coarsened
    }

    /// Each range as `first-last`, a single address alone (`0-9`, `17`).
    pub fn texts(&self) -> Vec<String> {
        self.spans
            .iter()
            .map(|&(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn joins_overlapping_and_adjacent_ranges() {
        let mut r = Ranges::default();
        r.add(100, 10);
        r.add(0, 10);
        assert_eq!(r.spans(), [(0, 9), (100, 109)]);
        r.add(10, 5); // adjacent to 0-9
        r.add(105, 20); // overlaps 100-109
        assert_eq!(r.spans(), [(0, 14), (100, 124)]);
        r.add(15, 85); // fills the gap
        assert_eq!(r.spans(), [(0, 124)]);
        assert_eq!(r.texts(), ["0-124"]);
        assert!(!r.coarsened());
    }

    #[test]
    fn stops_at_the_last_address_and_ignores_empty_reads() {
        let mut r = Ranges::default();
        r.add(65530, 100);
        r.add(7, 0);
        assert_eq!(r.spans(), [(65530, 65535)]);
        r.add(3, 1);
        assert_eq!(r.texts(), ["3", "65530-65535"]);
    }

    #[test]
    fn a_sweep_is_bounded_and_says_so() {
        let mut r = Ranges::default();
        for a in (0..60_000u16).step_by(3) {
            r.add(a, 1);
        }
        assert_eq!(r.spans().len(), MAX_RANGES);
        assert!(r.coarsened());
        assert_eq!(r.spans().first().map(|s| s.0), Some(0));
        assert_eq!(r.spans().last().map(|s| s.1), Some(59_997));
    }

    proptest! {
        /// Whatever is added, the set stays sorted, disjoint, bounded, and
        /// covers every address added.
        #[test]
        fn covers_everything_added(adds in proptest::collection::vec((any::<u16>(), 0u16..300), 0..80)) {
            let mut r = Ranges::default();
            for &(a, q) in &adds {
                r.add(a, q);
            }
            let s = r.spans();
            prop_assert!(s.len() <= MAX_RANGES);
            for w in s.windows(2) {
                prop_assert!(u32::from(w[0].1) + 1 < u32::from(w[1].0));
            }
            for &(a, q) in &adds {
                if q > 0 {
                    let end = a.saturating_add(q - 1);
                    prop_assert!(s.iter().any(|&(x, y)| x <= a && end <= y));
                }
            }
            let mut merged = Ranges::default();
            merged.merge(&r);
            prop_assert_eq!(merged.spans(), r.spans());
        }
    }
}
