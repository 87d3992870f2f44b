//! Requests per function code of one master-slave pair.
//!
//! Every request of a detection run is counted here (the inventory), and
//! every request is looked up in the learned baseline's (NEW_FUNCTION_CODE).
//! A pair uses a handful of codes (a poller one to four), so the first
//! [`INLINE`] live inline with the pair's profile and are searched in place:
//! counting touches no tree node, where a `BTreeMap` entry per request cost
//! a cache miss and ~25 instructions. A pair that uses more (a function
//! code scan) keeps the rest in a map.

use std::collections::BTreeMap;

/// Codes kept inline.
const INLINE: usize = 8;

#[derive(Debug, Clone, Default)]
pub struct FcCounts {
    /// The inline codes, in the order they were first counted; the first
    /// `len` are in use.
    codes: [u8; INLINE],
    counts: [u64; INLINE],
    len: u8,
    more: BTreeMap<u8, u64>,
}

impl FcCounts {
    /// Count `n` requests of code `fc`.
    #[inline]
    pub fn add(&mut self, fc: u8, n: u64) {
        let len = usize::from(self.len);
        if let Some(i) = self.codes[..len].iter().position(|&c| c == fc) {
            self.counts[i] += n;
        } else if len < INLINE {
            self.codes[len] = fc;
            self.counts[len] = n;
            self.len += 1;
        } else {
            *self.more.entry(fc).or_default() += n;
        }
    }

    /// The requests of code `fc`, if the pair used it.
    #[inline]
    pub fn get(&self, fc: u8) -> Option<u64> {
        let len = usize::from(self.len);
        match self.codes[..len].iter().position(|&c| c == fc) {
            Some(i) => Some(self.counts[i]),
            None => self.more.get(&fc).copied(),
        }
    }

    pub fn contains(&self, fc: u8) -> bool {
        self.get(fc).is_some()
    }

    /// All requests counted.
    pub fn total(&self) -> u64 {
        self.counts[..usize::from(self.len)].iter().sum::<u64>() + self.more.values().sum::<u64>()
    }

    /// Code and count, by code.
    pub fn to_map(&self) -> BTreeMap<u8, u64> {
        let len = usize::from(self.len);
        let mut map = self.more.clone();
        map.extend(self.codes[..len].iter().copied().zip(self.counts));
        map
    }
}

/// Equal when they count the same codes the same, whatever order the codes
/// came in.
impl PartialEq for FcCounts {
    fn eq(&self, other: &Self) -> bool {
        self.to_map() == other.to_map()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counting into the inline table and past it gives what a map gives,
    /// in any order of arrival.
    #[test]
    fn counts_as_a_map_does_inline_and_beyond() {
        let codes = [3u8, 3, 16, 1, 3, 255, 2, 4, 5, 6, 7, 8, 9, 16, 9, 0, 3];
        let mut c = FcCounts::default();
        let mut map = BTreeMap::new();
        for (i, fc) in codes.iter().enumerate() {
            let n = i as u64 + 1;
            c.add(*fc, n);
            *map.entry(*fc).or_insert(0) += n;
            assert_eq!(c.to_map(), map);
        }
        assert!(c.len as usize == INLINE && !c.more.is_empty());
        for fc in 0..=255u8 {
            assert_eq!(c.get(fc), map.get(&fc).copied(), "code {fc}");
            assert_eq!(c.contains(fc), map.contains_key(&fc));
        }
        assert_eq!(c.total(), map.values().sum::<u64>());
        let mut reversed = FcCounts::default();
        for (fc, n) in map.iter().rev() {
            reversed.add(*fc, *n);
        }
        assert_eq!(reversed, c);
        assert_ne!(reversed, FcCounts::default());
    }
}
