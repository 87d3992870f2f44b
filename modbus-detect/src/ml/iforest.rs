//! Isolation Forest (Liu, Ting, Zhou, "Isolation Forest", ICDM 2008).
//!
//! Anomalies are few and different, so random axis-parallel cuts separate
//! them from the rest in fewer steps than it takes to single out a normal
//! point deep inside a dense region. The forest grows random trees on small
//! sub-samples of the training data and scores a point by its average depth
//! across the trees: a short average path means an easy-to-isolate point.
//! It needs no distance, no density estimate and no labels, trains in
//! `O(trees * psi * log psi)` and scores in `O(trees * log psi)`.
//!
//! The trees are stored as flat vectors of nodes in pre-order (a child always
//! comes after its parent), which keeps the JSON compact and makes the "no
//! cycles" check of a deserialized model a simple index comparison.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use super::ModelError;
use modbus_common::rng::Rng;

/// Euler-Mascheroni constant, for the harmonic-number approximation.
const EULER_GAMMA: f64 = 0.577_215_664_9;

/// Most trees a loaded forest may have (training grows 100).
pub const MAX_TREES: usize = 1024;
/// Largest sub-sample a loaded forest may claim (training uses 256).
pub const MAX_PSI: usize = 1 << 16;

/// Average path length of an unsuccessful search in a binary search tree of
/// `n` points: the depth a subtree of `n` points would have added had it been
/// grown out, and the normaliser of the score.
///
/// `c(n) = 2 H(n-1) - 2 (n-1) / n` with `H(i) ~ ln(i) + gamma`; `c(1) = 0`,
/// `c(2) = 1`.
pub fn average_path_length(n: usize) -> f64 {
    match n {
        0 | 1 => 0.0,
        2 => 1.0,
        _ => {
            let m = (n - 1) as f64;
            2.0 * (m.ln() + EULER_GAMMA) - 2.0 * m / n as f64
        }
    }
}

/// One node of a tree.
///
/// JSON: a split is `[feature, value, left, right]`, a leaf is its size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Node {
    /// Internal node: `x[feature] < value` goes to `left`, anything else
    /// (including NaN) to `right`.
    Split(Split),
    /// External node: how many training points of the sub-sample ended here.
    Leaf(usize),
}

/// A split: `(feature, value, left child index, right child index)`, the
/// child indices pointing into the same tree's node vector.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Split(pub usize, pub f64, pub usize, pub usize);

/// One isolation tree, root first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

/// A trained forest.
///
/// JSON: `{"psi":256,"trees":[[[0,0.31,1,4],[1,-1.2,2,3],1,3,...],...]}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IsolationForest {
    /// Sub-sample size each tree was grown from; normalises the score.
    pub psi: usize,
    pub trees: Vec<Tree>,
    /// Extended forests ([`IsolationForest::fit_extended`]): per tree, per
    /// node, the range `[lo, hi]` of the split feature among the node's
    /// rows (`[0, 0]` at leaves). Empty for a standard forest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ranges: Vec<Vec<[f64; 2]>>,
    /// The same trees laid out for scoring, made on the first score.
    #[serde(skip)]
    compiled: OnceLock<Compiled>,
}

/// Equal when the trees are (the scoring layout is derived from them).
impl PartialEq for IsolationForest {
    fn eq(&self, o: &Self) -> bool {
        self.psi == o.psi && self.trees == o.trees && self.ranges == o.ranges
    }
}

/// A node laid out for scoring: a split (`feature`, `value`, children as
/// indices into [`Compiled::nodes`]) or, with `feature` [`LEAF`], a leaf
/// whose `value` is `c(size)`, computed once rather than per visit.
#[derive(Debug, Clone, Copy)]
struct Flat {
    value: f64,
    left: u32,
    right: u32,
    feature: u32,
}

const LEAF: u32 = u32::MAX;
/// A child index that leads nowhere (only in a model that failed
/// `validate`): the walk stops there, as it always did.
const NOWHERE: u32 = u32::MAX;

/// Every tree's nodes in one array, 24 bytes each, and the extended
/// ranges beside them: scoring walks one allocation instead of a vector
/// of 40-byte enums per tree, and takes no logarithm at the leaves
/// (judging a window was three quarters forest walk, an eighth `ln`).
/// Walking four trees side by side was tried: more instructions and
/// mispredicted loop branches than it saved.
#[derive(Debug, Clone, Default)]
struct Compiled {
    nodes: Vec<Flat>,
    ranges: Vec<[f64; 2]>,
    /// Per tree: its root and its node count (the walk's bound).
    trees: Vec<(u32, u32)>,
}

impl Compiled {
    fn of(forest: &IsolationForest) -> Compiled {
        let mut c = Compiled::default();
        for (t, tree) in forest.trees.iter().enumerate() {
            let start = c.nodes.len();
            let len = tree.nodes.len();
            let at = |i: usize| {
                if i < len {
                    u32::try_from(start + i).unwrap_or(NOWHERE)
                } else {
                    NOWHERE
                }
            };
            for node in &tree.nodes {
                c.nodes.push(match *node {
                    Node::Split(Split(feature, value, left, right)) => Flat {
                        value,
                        left: at(left),
                        right: at(right),
                        feature: u32::try_from(feature).unwrap_or(LEAF - 1),
                    },
                    Node::Leaf(size) => Flat {
                        value: average_path_length(size),
                        left: NOWHERE,
                        right: NOWHERE,
                        feature: LEAF,
                    },
                });
            }
            if let Some(r) = forest.ranges.get(t).filter(|r| r.len() == len) {
                c.ranges.extend_from_slice(r);
            }
            c.trees
                .push((at(0), u32::try_from(len).unwrap_or(u32::MAX)));
        }
        // Ranges are used for every tree or none.
        if c.ranges.len() != c.nodes.len() {
            c.ranges.clear();
        }
        c
    }

    /// Sum of the path lengths of `x` in every tree, in tree order.
    fn total_path_length(&self, x: &[f64]) -> f64 {
        self.trees.iter().map(|&t| self.path_length(t, x)).sum()
    }

    /// Depth at which `x` reaches a leaf, plus `c(leaf size)` for the part
    /// of the tree the height limit cut off; in an extended forest, the
    /// expected depth when a node isolates `x` with the chance that a cut
    /// over its range widened to `x` falls between.
    ///
    /// Bounded by the tree's node count even on a model that skipped
    /// `validate`, so it never loops.
    fn path_length(&self, (root, len): (u32, u32), x: &[f64]) -> f64 {
        let mut index = root;
        let mut depth = 0.0;
        // Chance that `x` is not yet isolated, and the expected depth of
        // the ways it was.
        let mut still = 1.0;
        let mut isolated = 0.0;
        for _ in 0..len {
            let Some(n) = self.nodes.get(index as usize) else {
                break;
            };
            if n.feature == LEAF {
                return isolated + still * (depth + n.value);
            }
            let v = x.get(n.feature as usize).copied().unwrap_or(f64::NAN);
            if let Some(&[lo, hi]) = self.ranges.get(index as usize) {
                // Rare for a normal window: a well-predicted branch.
                let excess = (lo - v).max(v - hi);
                if excess > 0.0 {
                    let p = excess / (hi - lo + excess);
                    isolated += still * p * (depth + 1.0);
                    still *= 1.0 - p;
                }
            }
            // Branch-free: which way a point goes is a coin toss to the
            // predictor. Left when `v < value`; NaN goes right.
            index = [n.right, n.left][usize::from(v < n.value)];
            depth += 1.0;
        }
        isolated + still * depth
    }
}

impl IsolationForest {
    /// A forest of these trees (and, extended, their ranges).
    pub fn new(psi: usize, trees: Vec<Tree>, ranges: Vec<Vec<[f64; 2]>>) -> IsolationForest {
        IsolationForest {
            psi,
            trees,
            ranges,
            compiled: OnceLock::new(),
        }
    }

    /// Grows `trees` trees (at least 1), each on its own sub-sample, drawn
    /// without replacement, of `min(sample_size, rows.len())` rows (at least
    /// 1). Rows should have equal length; missing or non-finite values are
    /// never used to choose a split.
    ///
    /// The paper's defaults (100 trees, `sample_size` 256) work for most
    /// data; a larger sub-sample mostly costs time. The same rows and seed
    /// always give the same forest.
    pub fn fit(rows: &[Vec<f64>], trees: usize, sample_size: usize, seed: u64) -> IsolationForest {
        Self::grow(rows, trees, sample_size, seed, false)
    }

    /// [`IsolationForest::fit`], remembering at every split the range of
    /// its feature among the node's rows, so that scoring sees a point
    /// beyond that range.
    ///
    /// Why: a standard forest cuts only within the range of its training
    /// rows, so a point far beyond it lands in the same leaf as the most
    /// extreme training row and scores like it: a flood of ten times the
    /// usual requests looks as normal as the busiest normal window. Here a
    /// node asks what its random cut would have done had the point been
    /// among its rows: a cut drawn uniformly over the range widened to
    /// include `x` isolates `x` with probability `excess / widened range`,
    /// and the score is the expected path length over those chances. A
    /// point within every range (every training row) scores exactly as in
    /// the standard forest; slightly beyond, a little higher; far beyond,
    /// as isolated at the first cut on that feature.
    pub fn fit_extended(
        rows: &[Vec<f64>],
        trees: usize,
        sample_size: usize,
        seed: u64,
    ) -> IsolationForest {
        Self::grow(rows, trees, sample_size, seed, true)
    }

    fn grow(
        rows: &[Vec<f64>],
        trees: usize,
        sample_size: usize,
        seed: u64,
        extended: bool,
    ) -> IsolationForest {
        let psi = sample_size.min(rows.len()).max(1);
        let mut grower = Grower {
            rows,
            dims: rows.iter().map(Vec::len).max().unwrap_or(0),
            height_limit: ceil_log2(psi),
            rng: Rng::new(seed),
            candidates: Vec::new(),
            ranges: Vec::new(),
        };
        let mut order: Vec<usize> = (0..rows.len()).collect();
        let mut ranges = Vec::new();
        let trees = (0..trees.max(1))
            .map(|_| {
                grower.rng.partial_shuffle(&mut order, psi);
                let mut sample: Vec<usize> = order.iter().take(psi).copied().collect();
                let tree = grower.grow(&mut sample);
                if extended {
                    ranges.push(std::mem::take(&mut grower.ranges));
                }
                tree
            })
            .collect();
        IsolationForest::new(psi, trees, ranges)
    }

    /// Anomaly score of `x`, in `(0, 1]`: `2^(-E[h(x)] / c(psi))`.
    ///
    /// Near 1: isolated much faster than average, an anomaly; about 0.5 or
    /// less: an ordinary point. Allocation-free. `x` should have the
    /// training dimension; a missing feature is treated like NaN (it goes
    /// right at every split on it).
    pub fn score(&self, x: &[f64]) -> f64 {
        let norm = average_path_length(self.psi);
        if self.trees.is_empty() || norm <= 0.0 {
            // A sub-sample of one point cannot tell points apart.
            return 0.5;
        }
        let compiled = self.compiled.get_or_init(|| Compiled::of(self));
        let total = compiled.total_path_length(x);
        let mean = total / self.trees.len() as f64;
        (-mean / norm).exp2()
    }

    /// Checks a (typically deserialized) forest before use: at least one
    /// tree, `psi >= 1`, and in every tree a root, child indices in range and
    /// greater than their parent's (so every path ends), feature indices
    /// below `dims` and finite split values.
    pub fn validate(&self, dims: usize) -> Result<(), ModelError> {
        if self.trees.is_empty() {
            return Err(ModelError::new("isolation forest has no trees"));
        }
        if self.psi == 0 {
            return Err(ModelError::new("isolation forest psi must be at least 1"));
        }
        // Bounds on what a file may ask of memory and of each judgement
        // (every window walks every tree).
        if self.trees.len() > MAX_TREES || self.psi > MAX_PSI {
            return Err(ModelError::new(format!(
                "isolation forest of {} trees grown from {} samples: at most {MAX_TREES} trees and {MAX_PSI} samples",
                self.trees.len(),
                self.psi
            )));
        }
        // A tree grown from psi samples has at most 2 psi - 1 nodes.
        if let Some(t) = self
            .trees
            .iter()
            .position(|t| t.nodes.len() >= 2 * self.psi)
        {
            return Err(ModelError::new(format!(
                "isolation forest tree {t} has more nodes than {} samples can grow",
                self.psi
            )));
        }
        for (t, tree) in self.trees.iter().enumerate() {
            tree.validate(dims)
                .map_err(|e| e.within(format!("tree {t}")))?;
        }
        if !self.ranges.is_empty() {
            if self.ranges.len() != self.trees.len() {
                return Err(ModelError::new(format!(
                    "isolation forest has ranges for {} of its {} trees",
                    self.ranges.len(),
                    self.trees.len()
                )));
            }
            for (t, (tree, ranges)) in self.trees.iter().zip(&self.ranges).enumerate() {
                if ranges.len() != tree.nodes.len()
                    || ranges
                        .iter()
                        .any(|&[lo, hi]| !(lo.is_finite() && hi.is_finite() && lo <= hi))
                {
                    return Err(ModelError::new(format!(
                        "isolation forest tree {t}: ranges are not one finite [lo, hi] per node"
                    )));
                }
            }
        }
        Ok(())
    }
}

impl Tree {
    fn validate(&self, dims: usize) -> Result<(), ModelError> {
        if self.nodes.is_empty() {
            return Err(ModelError::new("no nodes"));
        }
        let len = self.nodes.len();
        for (i, node) in self.nodes.iter().enumerate() {
            let Node::Split(Split(feature, value, left, right)) = *node else {
                continue;
            };
            if feature >= dims {
                return Err(ModelError::new(format!(
                    "node {i}: feature {feature} >= {dims}"
                )));
            }
            if !value.is_finite() {
                return Err(ModelError::new(format!(
                    "node {i}: split value is not finite"
                )));
            }
            for child in [left, right] {
                if child <= i || child >= len {
                    return Err(ModelError::new(format!(
                        "node {i}: child {child} is not after it and below {len}"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// `ceil(log2(n))` for `n >= 1` (0 for 0 and 1): the height limit, about the
/// average depth of a tree of `n` points, below which only normal points
/// would still be separated.
fn ceil_log2(n: usize) -> usize {
    let bits = usize::BITS - n.saturating_sub(1).leading_zeros();
    usize::try_from(bits).unwrap_or(usize::MAX)
}

/// State for growing trees over one training set.
struct Grower<'a> {
    rows: &'a [Vec<f64>],
    dims: usize,
    height_limit: usize,
    rng: Rng,
    /// Scratch: the features that can split the current node, with their
    /// range there; reused so that growing allocates only the node vector.
    candidates: Vec<(usize, f64, f64)>,
    /// The tree being grown's split ranges, node by node.
    ranges: Vec<[f64; 2]>,
}

impl Grower<'_> {
    fn grow(&mut self, sample: &mut [usize]) -> Tree {
        let mut nodes = Vec::with_capacity(2 * sample.len());
        self.ranges.clear();
        self.grow_node(&mut nodes, sample, 0);
        Tree { nodes }
    }

    /// Appends the subtree of the rows in `sample` in pre-order and returns
    /// its root's index. `sample` is reordered in place (left rows first).
    fn grow_node(&mut self, nodes: &mut Vec<Node>, sample: &mut [usize], depth: usize) -> usize {
        let here = nodes.len();
        let split = if depth < self.height_limit && sample.len() > 1 {
            self.choose_split(sample)
        } else {
            None
        };
        let Some((feature, value, range)) = split else {
            nodes.push(Node::Leaf(sample.len()));
            self.ranges.push([0.0, 0.0]);
            return here;
        };
        // Placeholder, patched once the children's indices are known.
        nodes.push(Node::Leaf(0));
        self.ranges.push(range);
        let cut = partition(self.rows, sample, feature, value);
        let (left_rows, right_rows) = sample.split_at_mut(cut);
        let left = self.grow_node(nodes, left_rows, depth + 1);
        let right = self.grow_node(nodes, right_rows, depth + 1);
        nodes[here] = Node::Split(Split(feature, value, left, right));
        here
    }

    /// A uniformly random feature among those whose (finite) values in the
    /// node are not all equal, and a uniformly random cut in its range; None
    /// when every row of the node is the same point.
    fn choose_split(&mut self, sample: &[usize]) -> Option<(usize, f64, [f64; 2])> {
        self.candidates.clear();
        for feature in 0..self.dims {
            if let Some((lo, hi)) = finite_range(self.rows, sample, feature) {
                if lo < hi {
                    self.candidates.push((feature, lo, hi));
                }
            }
        }
        let pick = self.rng.index(self.candidates.len());
        let &(feature, lo, hi) = self.candidates.get(pick)?;
        Some((feature, split_value(lo, hi, self.rng.unit_f64()), [lo, hi]))
    }
}

/// Smallest and largest finite value of `feature` among the rows in `sample`.
fn finite_range(rows: &[Vec<f64>], sample: &[usize], feature: usize) -> Option<(f64, f64)> {
    sample
        .iter()
        .filter_map(|&r| rows.get(r)?.get(feature).copied())
        .filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        })
}

/// The cut `lo + u (hi - lo)` for `lo < hi` and `u` in `[0, 1)`, kept in
/// `(lo, hi]` so that both sides of `x < cut` get at least one row, and
/// finite even when `hi - lo` overflows.
fn split_value(lo: f64, hi: f64, u: f64) -> f64 {
    let v = lo + u * (hi - lo);
    if v > lo && v <= hi {
        return v;
    }
    // u = 0, rounding, or an infinite width: fall back to the midpoint, or
    // to `hi` itself when `lo` and `hi` are adjacent floats.
    let mid = lo / 2.0 + hi / 2.0;
    if mid > lo && mid <= hi {
        mid
    } else {
        hi
    }
}

/// Moves the rows with `x[feature] < value` to the front of `sample` and
/// returns how many there are.
fn partition(rows: &[Vec<f64>], sample: &mut [usize], feature: usize, value: f64) -> usize {
    let goes_left = |r: usize| {
        rows.get(r)
            .and_then(|row| row.get(feature))
            .is_some_and(|&v| v < value)
    };
    let mut cut = 0;
    for i in 0..sample.len() {
        if goes_left(sample[i]) {
            sample.swap(cut, i);
            cut += 1;
        }
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ml::testdata::{blob, outliers};

    fn forest() -> (IsolationForest, Vec<Vec<f64>>) {
        let mut rows = blob(500, 2, 1);
        rows.extend(outliers());
        (IsolationForest::fit(&rows, 100, 256, 7), rows)
    }

    fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
        v.sort_by(f64::total_cmp);
        let i = ((v.len() - 1) as f64 * p).round() as usize;
        v[i]
    }

    #[test]
    fn average_path_length_known_values() {
        assert_eq!(average_path_length(0), 0.0);
        assert_eq!(average_path_length(1), 0.0);
        assert_eq!(average_path_length(2), 1.0);
        // 2 (ln 2 + gamma) - 4/3
        let c3 = 2.0 * (2f64.ln() + EULER_GAMMA) - 4.0 / 3.0;
        assert!((average_path_length(3) - c3).abs() < 1e-12);
        // The value usually quoted for psi = 256.
        assert!((average_path_length(256) - 10.2448).abs() < 1e-3);
    }

    #[test]
    fn ceil_log2_is_the_height_limit() {
        let expected = [
            (0, 0),
            (1, 0),
            (2, 1),
            (3, 2),
            (4, 2),
            (5, 3),
            (256, 8),
            (257, 9),
        ];
        for (n, h) in expected {
            assert_eq!(ceil_log2(n), h, "n = {n}");
        }
    }

    #[test]
    fn split_value_stays_in_lo_exclusive_hi_inclusive() {
        let next_up = |x: f64| f64::from_bits(x.to_bits() + 1);
        let cases = [
            (0.0, 1.0),
            (-3.0, -2.0),
            (1.0, next_up(1.0)),
            (-f64::MAX, f64::MAX),
            (1e300, 1.0000001e300),
        ];
        for (lo, hi) in cases {
            for u in [0.0, 1e-300, 0.25, 0.5, 1.0 - f64::EPSILON / 2.0] {
                let v = split_value(lo, hi, u);
                assert!(v > lo && v <= hi && v.is_finite(), "{lo} {hi} {u} -> {v}");
            }
        }
    }

    #[test]
    fn outliers_score_above_95th_percentile_of_inliers() {
        let (f, rows) = forest();
        let inliers: Vec<f64> = rows[..500].iter().map(|x| f.score(x)).collect();
        let p95 = percentile(inliers, 0.95);
        for x in outliers() {
            let s = f.score(&x);
            assert!(s > p95, "outlier {x:?} scored {s} <= p95 {p95}");
        }
        // And a point at the centre is an ordinary point.
        assert!(f.score(&[0.0, 0.0]) < 0.5);
    }

    #[test]
    fn scores_are_in_zero_one() {
        let (f, rows) = forest();
        let far = [
            vec![1e300, -1e300],
            vec![f64::NAN, 0.0],
            vec![],
            vec![0.0; 5],
        ];
        for x in rows.iter().chain(&far) {
            let s = f.score(x);
            assert!(s > 0.0 && s <= 1.0, "{x:?} -> {s}");
        }
    }

    #[test]
    fn trees_respect_height_limit_and_hold_the_whole_sample() {
        let (f, _) = forest();
        assert_eq!(f.psi, 256);
        assert_eq!(f.trees.len(), 100);
        for tree in &f.trees {
            let mut leaves = 0;
            let mut stack = vec![(0usize, 0usize)];
            while let Some((i, depth)) = stack.pop() {
                match tree.nodes[i] {
                    Node::Split(Split(_, _, l, r)) => {
                        stack.push((l, depth + 1));
                        stack.push((r, depth + 1));
                    }
                    Node::Leaf(size) => {
                        assert!(depth <= 8 && size >= 1);
                        leaves += size;
                    }
                }
            }
            assert_eq!(leaves, 256);
        }
    }

    #[test]
    fn same_seed_gives_identical_scores_and_another_seed_does_not() {
        let (a, rows) = forest();
        let b = IsolationForest::fit(&rows, 100, 256, 7);
        let c = IsolationForest::fit(&rows, 100, 256, 8);
        assert_eq!(a, b);
        for x in &rows {
            assert_eq!(a.score(x).to_bits(), b.score(x).to_bits());
        }
        assert_ne!(a, c);
    }

    /// serde_json without `float_roundtrip` may read a split value back 1
    /// ULP off; a score changes only if a point falls exactly between the
    /// two, which none of these does.
    #[test]
    fn serde_round_trip_gives_identical_scores() {
        let (f, rows) = forest();
        let json = serde_json::to_string(&f).unwrap();
        let back: IsolationForest = serde_json::from_str(&json).unwrap();
        back.validate(2).unwrap();
        for x in rows.iter().chain(&outliers()) {
            assert_eq!(f.score(x).to_bits(), back.score(x).to_bits());
        }
        // The JSON stays compact: no field names inside the trees.
        assert!(json.starts_with(r#"{"psi":256,"trees":[[["#));
        assert!(!json.contains("Split") && !json.contains("Leaf"));
    }

    #[test]
    fn json_shape_is_readable_by_hand() {
        let json = r#"{"psi":4,"trees":[[[1,0.5,1,2],3,[0,-2.0,3,4],0,1]]}"#;
        let f: IsolationForest = serde_json::from_str(json).unwrap();
        f.validate(2).unwrap();
        assert_eq!(f.trees[0].nodes[0], Node::Split(Split(1, 0.5, 1, 2)));
        assert_eq!(f.trees[0].nodes[1], Node::Leaf(3));
        // x[1] = 0 < 0.5: left leaf of 3 at depth 1: h = 1 + c(3).
        let h = 1.0 + average_path_length(3);
        let expected = (-h / average_path_length(4)).exp2();
        assert_eq!(f.score(&[0.0, 0.0]), expected);
        assert_eq!(serde_json::to_string(&f).unwrap(), json);
    }

    #[test]
    fn constant_data_gives_single_leaf_trees() {
        let rows = vec![vec![3.0, -1.0]; 300];
        let f = IsolationForest::fit(&rows, 10, 256, 1);
        f.validate(2).unwrap();
        assert!(f.trees.iter().all(|t| t.nodes == [Node::Leaf(256)]));
        // Every point sits at the expected depth: score exactly 0.5.
        assert_eq!(f.score(&[3.0, -1.0]), 0.5);
    }

    #[test]
    fn degenerate_inputs_give_valid_models() {
        for (rows, trees, sample) in [
            (vec![], 10, 256),
            (vec![vec![1.0]], 10, 256),
            (blob(50, 2, 3), 0, 0),
            (vec![vec![f64::NAN, 1.0], vec![f64::INFINITY, 2.0]], 5, 8),
        ] {
            let f = IsolationForest::fit(&rows, trees, sample, 1);
            let dims = rows.first().map_or(2, Vec::len);
            f.validate(dims).unwrap();
            let s = f.score(&[0.0, 0.0]);
            assert!(s > 0.0 && s <= 1.0);
        }
    }

    #[test]
    fn non_finite_values_never_become_split_values() {
        let mut rows = blob(100, 2, 4);
        rows[3][0] = f64::INFINITY;
        rows[5][1] = f64::NEG_INFINITY;
        rows[7][0] = f64::NAN;
        let f = IsolationForest::fit(&rows, 20, 64, 2);
        f.validate(2).unwrap();
    }

    fn tiny() -> IsolationForest {
        serde_json::from_str(r#"{"psi":4,"trees":[[[1,0.5,1,2],3,1]]}"#).unwrap()
    }

    fn set_root(f: &mut IsolationForest, split: Split) {
        f.trees[0].nodes[0] = Node::Split(split);
    }

    #[test]
    fn validate_rejects_malformed_models() {
        tiny().validate(2).unwrap();
        let cases: [(&str, Split); 6] = [
            ("child out of range", Split(1, 0.5, 1, 3)),
            ("child far out of range", Split(1, 0.5, usize::MAX, 2)),
            ("self child", Split(1, 0.5, 0, 2)),
            ("feature >= dims", Split(2, 0.5, 1, 2)),
            ("NaN split", Split(1, f64::NAN, 1, 2)),
            ("infinite split", Split(1, f64::INFINITY, 1, 2)),
        ];
        for (what, split) in cases {
            let mut f = tiny();
            set_root(&mut f, split);
            assert!(f.validate(2).is_err(), "{what} accepted");
            // Even unvalidated, scoring neither panics nor loops.
            let s = f.score(&[0.0, 0.0]);
            assert!(s > 0.0 && s <= 1.0, "{what}: {s}");
        }

        // A backward edge: node 2 splits and points back at node 1.
        let mut back = tiny();
        back.trees[0].nodes[2] = Node::Split(Split(0, 0.0, 1, 1));
        assert!(back.validate(2).is_err());
        back.score(&[1.0, 1.0]);

        let mut no_trees = tiny();
        no_trees.trees.clear();
        assert!(no_trees.validate(2).is_err());
        assert_eq!(no_trees.score(&[0.0, 0.0]), 0.5);

        let mut empty_tree = tiny();
        empty_tree.trees[0].nodes.clear();
        assert!(empty_tree.validate(2).is_err());
        empty_tree.score(&[0.0, 0.0]);

        let mut psi0 = tiny();
        psi0.psi = 0;
        assert!(psi0.validate(2).is_err());
    }

    #[test]
    fn deserialized_cycle_is_rejected_and_scoring_terminates() {
        let json = r#"{"psi":8,"trees":[[[0,1.0,1,2],[0,0.0,0,0],2]]}"#;
        let f: IsolationForest = serde_json::from_str(json).unwrap();
        assert!(f.validate(1).is_err());
        let s = f.score(&[-5.0]);
        assert!(s > 0.0 && s <= 1.0);
    }

    /// A forest larger than training ever grows is refused on load: every
    /// judged window walks every tree.
    #[test]
    fn oversized_forests_are_refused() {
        let leaf = || Tree {
            nodes: vec![Node::Leaf(1)],
        };
        let ok = IsolationForest::new(1, vec![leaf(); 10], Vec::new());
        assert!(ok.validate(2).is_ok());
        let many = IsolationForest::new(1, vec![leaf(); MAX_TREES + 1], Vec::new());
        assert!(many.validate(2).is_err());
        let huge_psi = IsolationForest::new(MAX_PSI + 1, vec![leaf()], Vec::new());
        assert!(huge_psi.validate(2).is_err());
        let bushy = IsolationForest::new(
            1,
            vec![Tree {
                nodes: vec![Node::Leaf(1); 2],
            }],
            Vec::new(),
        );
        assert!(bushy.validate(2).is_err());
    }

    /// The extended forest scores its training rows almost as the standard
    /// one, and a point beyond their range much higher; its ranges are
    /// checked on load.
    #[test]
    fn the_extended_forest_sees_beyond_the_training_range() {
        let rows = crate::ml::testdata::blob(512, 2, 5);
        let standard = IsolationForest::fit(&rows, 100, 256, 9);
        let extended = IsolationForest::fit_extended(&rows, 100, 256, 9);
        assert_eq!(standard.trees, extended.trees, "the same trees");
        extended.validate(2).unwrap();
        // A row is within the ranges of the nodes it passes, but those of
        // a tree whose sample missed it may end just short of it.
        for r in &rows {
            let (a, b) = (standard.score(r), extended.score(r));
            assert!(b >= a && b - a < 0.05, "{r:?}: {a} {b}");
        }
        let max = rows
            .iter()
            .map(|r| extended.score(r))
            .fold(f64::NEG_INFINITY, f64::max);
        let far = [40.0, 0.0];
        assert!(standard.score(&far) <= max + 0.05, "blind beyond the range");
        assert!(
            extended.score(&far) > max + 0.1,
            "{} vs {max}",
            extended.score(&far)
        );
        // Scores grow with the distance beyond the range.
        assert!(extended.score(&[6.0, 0.0]) < extended.score(&far));

        let mut bad = extended.clone();
        bad.ranges[3][0] = [1.0, 0.0];
        assert!(bad.validate(2).is_err());
        let mut bad = extended.clone();
        bad.ranges.pop();
        assert!(bad.validate(2).is_err());
        let back: IsolationForest =
            serde_json::from_str(&serde_json::to_string(&extended).unwrap()).unwrap();
        assert_eq!(back, extended);
    }
}
