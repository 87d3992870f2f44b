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

/// A node laid out for scoring, 32 bytes (a cache line holds two): a split
/// (`feature`, `value`, and the range `[lo, hi]` of its feature among the
/// node's rows; its left child is the next node, its right child at
/// `right`) or, with `feature` [`LEAF`], a leaf whose `value` is
/// `c(size)`, computed once rather than per visit.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(32))]
struct Flat {
    value: f64,
    lo: f64,
    hi: f64,
    right: u32,
    feature: u32,
}

const LEAF: u32 = u32::MAX;

impl Flat {
    fn leaf(value: f64) -> Flat {
        Flat {
            value,
            lo: f64::NEG_INFINITY,
            hi: f64::INFINITY,
            right: 0,
            feature: LEAF,
        }
    }
}

/// Every tree's nodes in one array, each tree in pre-order with a split's
/// left child right after it, and its range inside the node: a walk reads
/// one cache line per level, mostly the next one, instead of a 24-byte
/// node and, in another array, its range; it takes no logarithm at the
/// leaves (judging a window was three quarters forest walk, an eighth
/// `ln`). A standard forest's ranges are unbounded, so nothing is beyond
/// them. Walking four trees side by side was tried: more instructions and
/// mispredicted loop branches than it saved.
#[derive(Debug, Clone, Default)]
struct Compiled {
    nodes: Vec<Flat>,
    /// Per tree: its root and its node count (the walk's bound).
    trees: Vec<(u32, u32)>,
    /// Per tree: a lower bound on the path lengths of the trees after it
    /// ([`Compiled::total_reaches`]).
    rest_floor: Vec<f64>,
}

/// Relative slack on the early exit's bounds, far above the rounding of a
/// sum of a thousand path lengths (about 1e-13), so that the exit never
/// clears a point the whole walk would flag.
const SLACK: f64 = 1e-9;

impl Compiled {
    fn of(forest: &IsolationForest) -> Compiled {
        // Ranges are used for every tree or none.
        let extended = !forest.ranges.is_empty()
            && forest.trees.iter().enumerate().all(|(t, tree)| {
                forest
                    .ranges
                    .get(t)
                    .is_some_and(|r| r.len() == tree.nodes.len())
            });
        let mut c = Compiled::default();
        let mut floors = Vec::with_capacity(forest.trees.len());
        for (t, tree) in forest.trees.iter().enumerate() {
            let ranges = forest.ranges.get(t).filter(|_| extended);
            let root = c.nodes.len();
            c.lay_out(tree, ranges.map(Vec::as_slice));
            let len = c.nodes.len() - root;
            c.trees.push((
                u32::try_from(root).unwrap_or(u32::MAX),
                u32::try_from(len).unwrap_or(u32::MAX),
            ));
            // A tree whose root splits gives any point a path of at least
            // 1 (the first cut, or a deeper end); a single leaf its `c`.
            floors.push(match c.nodes.get(root) {
                Some(n) if n.feature == LEAF => n.value,
                _ => 1.0,
            });
        }
        let mut rest = 0.0;
        c.rest_floor = floors
            .iter()
            .rev()
            .map(|f| {
                let after = rest;
                rest += f;
                after * (1.0 - SLACK)
            })
            .collect();
        c.rest_floor.reverse();
        c
    }

    /// Appends `tree` in pre-order from its root. A child that is out of
    /// range or already laid out (only in a model that failed `validate`)
    /// becomes a leaf of `c = 0`: the walk ends there, as it always did,
    /// and a forest that shares subtrees cannot make the layout grow.
    fn lay_out(&mut self, tree: &Tree, ranges: Option<&[[f64; 2]]>) {
        let mut seen = vec![false; tree.nodes.len()];
        // Nodes to lay out, with the split whose right child each is.
        let mut todo: Vec<(usize, Option<usize>)> = vec![(0, None)];
        while let Some((i, parent)) = todo.pop() {
            let here = self.nodes.len();
            if let Some(p) = parent.and_then(|p| self.nodes.get_mut(p)) {
                p.right = u32::try_from(here).unwrap_or(u32::MAX);
            }
            let fresh = seen.get_mut(i).is_some_and(|s| !std::mem::replace(s, true));
            let node = match tree.nodes.get(i) {
                Some(node) if fresh => node,
                _ => {
                    self.nodes.push(Flat::leaf(0.0));
                    continue;
                }
            };
            match *node {
                Node::Leaf(size) => self.nodes.push(Flat::leaf(average_path_length(size))),
                Node::Split(Split(feature, value, left, right)) => {
                    let [lo, hi] = ranges
                        .and_then(|r| r.get(i))
                        .copied()
                        .unwrap_or([f64::NEG_INFINITY, f64::INFINITY]);
                    self.nodes.push(Flat {
                        value,
                        lo,
                        hi,
                        right: 0,
                        feature: u32::try_from(feature).unwrap_or(LEAF - 1),
                    });
                    todo.push((right, Some(here)));
                    todo.push((left, None));
                }
            }
        }
    }

    /// Sum of the path lengths of `x` in every tree, in tree order.
    fn total_path_length(&self, x: &[f64]) -> f64 {
        self.trees.iter().map(|&t| self.path_length(t, x)).sum()
    }

    /// Whether the total path length of `x` is certainly at least `need`:
    /// trees are walked in the order [`Compiled::total_path_length`] sums
    /// them, and the walk stops once the path so far plus the least the
    /// remaining trees can add reaches `need`. Exact: path lengths are not
    /// negative, so the whole sum is never below a partial one.
    fn total_reaches(&self, x: &[f64], need: f64) -> bool {
        let mut total = 0.0;
        for (&tree, &rest) in self.trees.iter().zip(&self.rest_floor) {
            total += self.path_length(tree, x);
            if total + rest >= need {
                return true;
            }
        }
        false
    }

    /// Depth at which `x` reaches a leaf, plus `c(leaf size)` for the part
    /// of the tree the height limit cut off; in an extended forest, the
    /// expected depth when a node isolates `x` with the chance that a cut
    /// over its range widened to `x` falls between.
    ///
    /// Bounded by the tree's node count even on a model that skipped
    /// `validate`, so it never loops.
    fn path_length(&self, (root, len): (u32, u32), x: &[f64]) -> f64 {
        let mut index = root as usize;
        let mut depth = 0.0;
        // Chance that `x` is not yet isolated, and the expected depth of
        // the ways it was.
        let mut still = 1.0;
        let mut isolated = 0.0;
        for _ in 0..len {
            let Some(n) = self.nodes.get(index) else {
                break;
            };
            if n.feature == LEAF {
                return isolated + still * (depth + n.value);
            }
            let v = x.get(n.feature as usize).copied().unwrap_or(f64::NAN);
            // Rare for a normal window: a well-predicted branch.
            let excess = (n.lo - v).max(v - n.hi);
            if excess > 0.0 {
                let p = excess / (n.hi - n.lo + excess);
                isolated += still * p * (depth + 1.0);
                still *= 1.0 - p;
            }
            // Branch-free: which way a point goes is a coin toss to the
            // predictor. Left (the next node) when `v < value`; NaN goes
            // right.
            index = [n.right as usize, index + 1][usize::from(v < n.value)];
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

    /// Whether `x` certainly scores at most `threshold` (the forest does not
    /// flag it): the same answer as `score(x) <= threshold` whenever this
    /// says yes, usually after walking half of the trees or fewer, since
    /// a normal point's path is long. A no may be either: then score it.
    pub fn scores_at_most(&self, x: &[f64], threshold: f64) -> bool {
        let norm = average_path_length(self.psi);
        if self.trees.is_empty() || norm <= 0.0 {
            return 0.5 <= threshold;
        }
        // `2^(-(S / trees) / norm) <= threshold` when the total `S` is at
        // least this (never, for a threshold of 0 or NaN).
        let total = -(self.trees.len() as f64) * norm * threshold.log2();
        let need = total * (1.0 + SLACK) + SLACK;
        let compiled = self.compiled.get_or_init(|| Compiled::of(self));
        compiled.total_reaches(x, need)
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
        // A tree, not a graph: scoring lays each node out once.
        let mut has_parent = vec![false; len];
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
                if std::mem::replace(&mut has_parent[child], true) {
                    return Err(ModelError::new(format!(
                        "node {i}: child {child} has another parent"
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

    /// The path length read straight off a tree's own nodes and ranges,
    /// as the paper and [`IsolationForest::fit_extended`] describe it.
    fn direct_path(tree: &Tree, ranges: Option<&Vec<[f64; 2]>>, x: &[f64]) -> f64 {
        let (mut i, mut depth, mut still, mut isolated) = (0, 0.0, 1.0, 0.0);
        loop {
            match tree.nodes[i] {
                Node::Leaf(size) => return isolated + still * (depth + average_path_length(size)),
                Node::Split(Split(f, value, left, right)) => {
                    if let Some([lo, hi]) = ranges.map(|r| r[i]) {
                        let excess = (lo - x[f]).max(x[f] - hi);
                        if excess > 0.0 {
                            let p = excess / (hi - lo + excess);
                            isolated += still * p * (depth + 1.0);
                            still *= 1.0 - p;
                        }
                    }
                    i = if x[f] < value { left } else { right };
                    depth += 1.0;
                }
            }
        }
    }

    /// The scoring layout changes nothing: every score is bit for bit the
    /// one the trees give read directly.
    #[test]
    fn the_scoring_layout_scores_as_the_trees_do() {
        let rows = blob(300, 3, 11);
        let points: Vec<Vec<f64>> = blob(200, 3, 12)
            .into_iter()
            .map(|r| r.iter().map(|v| v * 2.5).collect())
            .collect();
        for forest in [
            IsolationForest::fit(&rows, 50, 128, 4),
            IsolationForest::fit_extended(&rows, 50, 128, 4),
        ] {
            let norm = average_path_length(forest.psi);
            for x in &points {
                let total: f64 = forest
                    .trees
                    .iter()
                    .enumerate()
                    .map(|(t, tree)| direct_path(tree, forest.ranges.get(t), x))
                    .sum();
                let direct = (-(total / forest.trees.len() as f64) / norm).exp2();
                assert_eq!(forest.score(x).to_bits(), direct.to_bits(), "{x:?}");
            }
        }
    }

    /// The shortcut agrees with the score at the edge: with the threshold
    /// one float below a point's score it must not clear the point; a
    /// millionth above, it must. Standard and extended
    /// forests, points inside, at the edge of and far beyond the data.
    #[test]
    fn scores_at_most_never_clears_a_point_the_score_flags() {
        let mut rows = blob(400, 3, 5);
        rows.extend(
            blob(40, 3, 6)
                .into_iter()
                .map(|r| r.iter().map(|v| v * 4.0).collect()),
        );
        let points: Vec<Vec<f64>> = rows
            .iter()
            .cloned()
            .chain(
                blob(300, 3, 8)
                    .into_iter()
                    .map(|r| r.iter().map(|v| v * 3.0).collect()),
            )
            .collect();
        for forest in [
            IsolationForest::fit(&rows, 100, 256, 3),
            IsolationForest::fit_extended(&rows, 100, 256, 3),
        ] {
            let mut cleared = 0;
            for x in &points {
                let s = forest.score(x);
                assert!(!forest.scores_at_most(x, s.next_down()), "{x:?} scores {s}");
                cleared += usize::from(forest.scores_at_most(x, s + 1e-6));
                assert!(forest.scores_at_most(x, 1.0));
                assert!(!forest.scores_at_most(x, 0.0));
            }
            // A hair above its own score, every point is cleared.
            assert_eq!(cleared, points.len());
        }
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

        // A shared child: both splits lead to node 3. Unvalidated, the
        // layout takes node 3 once, and the second way ends there.
        let shared: IsolationForest = serde_json::from_str(
            r#"{"psi":4,"trees":[[[1,0.5,1,2],[0,0.5,3,4],[0,0.5,3,4],1,2]]}"#,
        )
        .unwrap();
        let e = shared.validate(2).unwrap_err().to_string();
        assert!(e.contains("another parent"), "{e}");
        let s = shared.score(&[0.0, 1.0]);
        assert!(s > 0.0 && s <= 1.0, "{s}");

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
