//! Gradient-boosted trees over the feature groups' levels: the part of the
//! success model that captures the high-order interactions of the payment with
//! the retry time (decline code × card funding × days since pay day × country…),
//! which crosses of two or three groups cannot reach.
//!
//! Every example's input is its [`GroupLevels`]: one small integer per feature
//! group (at most 32 levels); an inner node sends a set of levels left (a
//! threshold for ordered buckets, any subset for names). [`Forest::bind`] takes
//! the splits on groups already known (a decision binds the payment once, then
//! each local day), and [`Forest::contributions`] attributes a logit to groups.
//! Each leaf may carry the spread of its value over [`REPLICATES`] bootstrap
//! refits ([`Tree::spreads`]): the trees' counterpart of the logistic weights'
//! posterior variances, so the engine can value a retry time the log pins down
//! loosely at a lower bound ([`Bound::eval_spread`]).
//! Fitting them is on the learning side (`recoup::trees::boost`); why they are
//! written here rather than taken from a crate is in ARCHITECTURE.md.
//!
//! Side: core (pure: no I/O, no clock, no global randomness; the crate cannot depend on I/O crates).

use serde::{Deserialize, Serialize};

use crate::features::{group_names, GroupLevels, GROUP_SIZES, N_GROUPS};

/// `Node::group` of a leaf.
pub const LEAF: u8 = u8::MAX;
/// Most levels a group may have (a split is a `u32` bit set of levels).
pub const MAX_LEVELS: usize = 32;
/// Bootstrap refits a leaf's spread holds ([`Tree::spreads`]).
pub const REPLICATES: usize = 8;

/// Per bootstrap refit, how far a logit lies from the fitted one.
pub type Spread = [f32; REPLICATES];

/// One node of a tree, in the tree's node array (the root first).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// The group split on, or 255 for a leaf.
    pub group: u8,
    /// Bit `l` set: level `l` goes to `left`.
    pub left_levels: u32,
    pub left: u32,
    pub right: u32,
    /// The node's value (learning rate included): a leaf's output, and for an
    /// inner node the value it would have had as a leaf (for the per-group
    /// attribution of [`Forest::contributions`]).
    pub value: f64,
}

impl Node {
    pub fn leaf(value: f64) -> Node {
        Node { group: LEAF, left_levels: 0, left: 0, right: 0, value }
    }

    /// The child an example with levels `x` goes to (an inner node's).
    #[inline]
    fn child(&self, x: &GroupLevels) -> usize {
        (if self.left_levels >> x[self.group as usize] & 1 == 1 { self.left } else { self.right }) as usize
    }
}

/// The leaf an example with levels `x` reaches from node `i` of `nodes`, by index.
#[inline]
fn leaf_of(nodes: &[Node], mut i: usize, x: &GroupLevels) -> usize {
    loop {
        let n = &nodes[i];
        if n.group == LEAF {
            return i;
        }
        i = n.child(x);
    }
}

/// The leaf value an example with levels `x` reaches from node `i` of `nodes`.
#[inline]
fn walk(nodes: &[Node], i: usize, x: &GroupLevels) -> f64 {
    nodes[leaf_of(nodes, i, x)].value
}

fn add_spread(to: &mut Spread, from: &Spread) {
    for (t, f) in to.iter_mut().zip(from) {
        *t += f;
    }
}

/// One regression tree on the logit scale.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
    /// Per node (by index), a leaf's value in each of [`REPLICATES`] bootstrap refits
    /// of the leaf values (Poisson-weighted examples, the structure kept) less its
    /// `value`; zero for inner nodes. Empty for trees fitted without refits. Apart
    /// from the nodes, so scoring without them walks nodes as small as before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spreads: Vec<Spread>,
}

impl Tree {
    /// The leaf value for `x`.
    #[inline]
    pub fn eval(&self, x: &GroupLevels) -> f64 {
        walk(&self.nodes, 0, x)
    }

    /// The index in `nodes` of the leaf `x` reaches.
    #[inline]
    pub fn leaf(&self, x: &GroupLevels) -> usize {
        leaf_of(&self.nodes, 0, x)
    }
}

/// A sum of trees, added to the logistic model's logit.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Forest {
    pub trees: Vec<Tree>,
}

impl Forest {
    /// No trees (a purely logistic model).
    pub fn is_empty(&self) -> bool {
        self.trees.is_empty()
    }

    /// The forest's logit for `x`.
    pub fn eval(&self, x: &GroupLevels) -> f64 {
        self.trees.iter().map(|t| t.eval(x)).sum()
    }

    /// Whether the leaves carry bootstrap spreads ([`Tree::spreads`]).
    pub fn has_spread(&self) -> bool {
        self.trees.iter().any(|t| !t.spreads.is_empty())
    }

    /// What each group adds to [`Forest::eval`] for `x` (Saabas' path
    /// attribution: each split's change of the node value goes to its group),
    /// and the roots' sum, which is the same for every `x`: `eval(x) = base + Σ contributions`.
    pub fn contributions(&self, x: &GroupLevels) -> ([f64; N_GROUPS], f64) {
        let mut out = [0.0; N_GROUPS];
        let mut base = 0.0;
        for t in &self.trees {
            let mut i = 0;
            base += t.nodes[0].value;
            loop {
                let n = &t.nodes[i];
                if n.group == LEAF {
                    break;
                }
                let next = n.child(x);
                out[n.group as usize] += t.nodes[next].value - n.value;
                i = next;
            }
        }
        (out, base)
    }

    /// Refuse a forest that does not fit this build's groups: a split on a group
    /// or level the code does not have, a child out of range or not after its
    /// parent (no cycles), or a split on a group outside `allowed` (bit per
    /// group: the engine scores the channel apart from the trees).
    /// Every node's value, as (tree, node, value).
    pub fn values(&self) -> impl Iterator<Item = (usize, usize, f64)> + '_ {
        self.trees.iter().enumerate().flat_map(|(k, t)| t.nodes.iter().enumerate().map(move |(i, n)| (k, i, n.value)))
    }

    pub fn check(&self, allowed: u32) -> Result<(), String> {
        let names = group_names();
        for (k, t) in self.trees.iter().enumerate() {
            if t.nodes.is_empty() {
                return Err(format!("tree {k} has no nodes"));
            }
            if !(t.spreads.is_empty() || t.spreads.len() == t.nodes.len()) {
                return Err(format!("tree {k} has {} bootstrap spreads for {} nodes", t.spreads.len(), t.nodes.len()));
            }
            if !t.spreads.is_empty() && (t.nodes.len() > MAX_SPREAD_NODES || k >= MAX_SPREAD_NODES - 1) {
                return Err(format!(
                    "tree {k} has bootstrap spreads and {} nodes; spreads are read for at most {MAX_SPREAD_NODES} nodes in each of the first {} trees",
                    t.nodes.len(),
                    MAX_SPREAD_NODES - 1
                ));
            }
            if let Some((i, v)) = t
                .spreads
                .iter()
                .enumerate()
                .flat_map(|(i, s)| s.iter().map(move |v| (i, v)))
                .find(|(_, v)| !(v.is_finite() && v.abs() <= 50.0))
            {
                return Err(format!("tree {k} node {i}: a bootstrap spread of {v} is not a finite logit within ±50"));
            }
            for (i, n) in t.nodes.iter().enumerate() {
                if !n.value.is_finite() {
                    return Err(format!("tree {k} node {i}: value {} is not finite", n.value));
                }
                if n.group == LEAF {
                    continue;
                }
                let g = n.group as usize;
                if g >= N_GROUPS {
                    return Err(format!("tree {k} node {i} splits on group {g}; this build has {N_GROUPS}"));
                }
                if allowed >> g & 1 == 0 {
                    return Err(format!("tree {k} node {i} splits on {}, which trees may not use", names[g]));
                }
                if GROUP_SIZES[g] < MAX_LEVELS && n.left_levels >> GROUP_SIZES[g] != 0 {
                    return Err(format!(
                        "tree {k} node {i} sends level(s) {:#b} of {} left; it has {} levels",
                        n.left_levels, names[g], GROUP_SIZES[g]
                    ));
                }
                for c in [n.left, n.right] {
                    if c as usize <= i || c as usize >= t.nodes.len() {
                        return Err(format!("tree {k} node {i} has child {c} out of order (nodes: {})", t.nodes.len()));
                    }
                }
            }
        }
        Ok(())
    }
}

/// A forest with the splits on some groups already taken (those whose levels
/// are known: a payment's, for every hour of a decision grid). What remains
/// splits on the other groups only, and trees with no such split are one sum.
/// A leaf's `left` (unused in a leaf) names where it came from in the forest
/// ([`origin`]), so its spread is read there rather than copied at every bind.
#[derive(Debug, Clone, Default)]
pub struct Bound {
    nodes: Vec<Node>,
    roots: Vec<u32>,
    constant: f64,
    /// The spreads of the leaves in `constant` that a [`Bound::bind`] took
    /// (those a [`Forest::bind`] took are left out: see [`Bound::eval_spread`]).
    spread: Spread,
}

/// A bound leaf's origin when its tree has no spreads.
const NO_SPREAD: u32 = u32::MAX;
/// Nodes a tree with spreads may have: a bound leaf's origin packs (tree, node) in a `u32`.
const MAX_SPREAD_NODES: usize = 1 << 16;

/// The origin a leaf of tree `k` at node `i` gets in a bound forest.
fn origin(k: usize, i: usize) -> u32 {
    ((k as u32) << 16) | i as u32
}

/// Where the nodes being bound come from: tree `k` of the forest (whether it has
/// spreads), or a bound forest (whose leaves carry their origin).
#[derive(Clone, Copy)]
enum Source {
    Tree(usize, bool),
    Bound,
}

impl Source {
    fn origin(self, i: usize, n: &Node) -> u32 {
        match self {
            Source::Tree(k, true) => origin(k, i),
            Source::Tree(_, false) => NO_SPREAD,
            Source::Bound => n.left,
        }
    }
}

/// The subtree of `nodes` from `i` with the splits on `known` groups taken
/// (levels from `x`), appended to `out`: its root's index there, or the leaf's
/// value and origin when it comes down to one.
fn bind_walk(nodes: &[Node], from: Source, mut i: usize, x: &GroupLevels, known: u32, out: &mut Vec<Node>) -> Result<u32, (f64, u32)> {
    loop {
        let n = &nodes[i];
        if n.group == LEAF {
            return Err((n.value, from.origin(i, n)));
        }
        if known >> n.group & 1 == 0 {
            break;
        }
        i = n.child(x);
    }
    let n = nodes[i];
    let at = out.len();
    out.push(n);
    let child = |c: u32, out: &mut Vec<Node>| match bind_walk(nodes, from, c as usize, x, known, out) {
        Ok(k) => k,
        Err((value, origin)) => {
            out.push(Node { left: origin, ..Node::leaf(value) });
            (out.len() - 1) as u32
        }
    };
    let l = child(n.left, out);
    let r = child(n.right, out);
    (out[at].left, out[at].right) = (l, r);
    Ok(at as u32)
}

/// Bind the subtrees `(nodes, from, root)` into `out` (emptied first), their leaf
/// values added to `constant` where a subtree comes down to one, and their
/// spreads (read in `forest`) to `spread` when it is given.
fn bind_all<'a>(
    subtrees: impl Iterator<Item = (&'a [Node], Source, usize)>,
    constant: f64,
    mut spread: Option<(Spread, &Forest)>,
    x: &GroupLevels,
    known: u32,
    out: &mut Bound,
) {
    out.nodes.clear();
    out.roots.clear();
    out.constant = constant;
    for (nodes, from, root) in subtrees {
        match bind_walk(nodes, from, root, x, known, &mut out.nodes) {
            Ok(r) => out.roots.push(r),
            Err((value, origin)) => {
                out.constant += value;
                if let Some((s, l)) = spread.as_mut().and_then(|(s, forest)| Some((s, forest.spread(origin)?))) {
                    add_spread(s, l);
                }
            }
        }
    }
    out.spread = spread.map_or([0.0; REPLICATES], |(s, _)| s);
}

impl Forest {
    /// Take every split on a group in `known` (bit per group) with the levels
    /// of `x`; the other groups' levels in `x` are ignored. The spreads of the
    /// trees this decides entirely are not kept: they move every candidate of a
    /// payment alike (as the logistic model's payment-level weights do).
    pub fn bind(&self, x: &GroupLevels, known: u32) -> Bound {
        let mut b = Bound::default();
        let trees = self.trees.iter().enumerate().map(|(k, t)| (t.nodes.as_slice(), Source::Tree(k, !t.spreads.is_empty()), 0));
        bind_all(trees, 0.0, None, x, known, &mut b);
        b
    }

    /// The spread of the leaf a bound forest's leaf came from ([`origin`]).
    #[inline]
    fn spread(&self, origin: u32) -> Option<&Spread> {
        if origin == NO_SPREAD {
            return None;
        }
        self.trees.get((origin >> 16) as usize)?.spreads.get((origin & 0xffff) as usize)
    }
}

impl Bound {
    /// [`Forest::bind`] again: take the splits on more groups (`forest`: the one bound).
    pub fn bind(&self, forest: &Forest, x: &GroupLevels, known: u32) -> Bound {
        let mut b = Bound::default();
        self.bind_into(forest, x, known, &mut b);
        b
    }

    /// [`Bound::bind`] into `out`, reusing its memory (a grid rebinds once per day).
    pub fn bind_into(&self, forest: &Forest, x: &GroupLevels, known: u32, out: &mut Bound) {
        let subtrees = self.roots.iter().map(|&r| (self.nodes.as_slice(), Source::Bound, r as usize));
        bind_all(subtrees, self.constant, Some((self.spread, forest)), x, known, out);
    }

    /// The forest's logit for `x` (whose levels of the bound groups do not matter).
    pub fn eval(&self, x: &GroupLevels) -> f64 {
        self.roots.iter().fold(self.constant, |z, &root| z + walk(&self.nodes, root as usize, x))
    }

    /// [`Bound::eval`] and the bootstrap refits' departures from it (read in
    /// `forest`, the one bound), summed over the trees the first [`Forest::bind`]
    /// left open (those that depend on the retry time). Their mean square is the
    /// variance the engine's lower bound uses.
    pub fn eval_spread(&self, forest: &Forest, x: &GroupLevels) -> (f64, Spread) {
        let mut z = self.constant;
        let mut spread = self.spread;
        for &root in &self.roots {
            let leaf = &self.nodes[leaf_of(&self.nodes, root as usize, x)];
            z += leaf.value;
            if let Some(s) = forest.spread(leaf.left) {
                add_spread(&mut spread, s);
            }
        }
        (z, spread)
    }
}

/// The mean square of a spread: the bootstrap variance of a logit.
pub fn spread_variance(s: &Spread) -> f64 {
    s.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / REPLICATES as f64
}

/// A random forest of full trees of `depth` over the `allowed` groups (tests).
#[cfg(test)]
pub(crate) fn random_forest(seed: u64, trees: usize, depth: usize, allowed: u32) -> Forest {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let groups: Vec<usize> = (0..N_GROUPS).filter(|&g| allowed >> g & 1 == 1 && GROUP_SIZES[g] > 1).collect();
    fn node(rng: &mut rand_chacha::ChaCha8Rng, groups: &[usize], depth: usize, out: &mut Vec<Node>) -> u32 {
        let at = out.len();
        let value = rng.random_range(-0.3..0.3);
        out.push(Node::leaf(value));
        if depth > 0 {
            let g = groups[rng.random_range(0..groups.len())];
            let mask = rng.random_range(1..(1u32 << GROUP_SIZES[g]) - 1);
            let l = node(rng, groups, depth - 1, out);
            let r = node(rng, groups, depth - 1, out);
            out[at] = Node { group: g as u8, left_levels: mask, left: l, right: r, ..Node::leaf(value) };
        }
        at as u32
    }
    Forest {
        trees: (0..trees)
            .map(|_| {
                let mut nodes = Vec::new();
                node(&mut rng, &groups, depth, &mut nodes);
                Tree { nodes, spreads: Vec::new() }
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::{CHANNEL_GROUP, DAY_GROUPS, N_FIXED};
    use rand::{Rng, SeedableRng};

    const NO_CHANNEL: u32 = ((1u32 << N_GROUPS) - 1) & !(1 << CHANNEL_GROUP);

    fn random_levels(rng: &mut rand_chacha::ChaCha8Rng) -> GroupLevels {
        std::array::from_fn(|g| rng.random_range(0..GROUP_SIZES[g]) as u8)
    }

    #[test]
    fn a_bound_forest_scores_as_the_whole_and_contributions_add_up() {
        let f = random_forest(7, 20, 6, NO_CHANNEL);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(8);
        let payment = (1u32 << N_FIXED) - 1;
        for _ in 0..300 {
            let x = random_levels(&mut rng);
            let whole = f.eval(&x);
            let by_payment = f.bind(&x, payment);
            assert!((by_payment.eval(&x) - whole).abs() < 1e-12);
            // Bound to the payment and the day, the rest splits on hour-level groups only.
            let by_day = by_payment.bind(&f, &x, DAY_GROUPS);
            assert!((by_day.eval(&x) - whole).abs() < 1e-12);
            assert!(by_day.nodes.iter().all(|n| n.group == LEAF || (n.group as usize >= N_FIXED && DAY_GROUPS >> n.group & 1 == 0)));
            // Other levels of the bound groups do not matter any more.
            let mut y = x;
            for g in 0..N_FIXED {
                y[g] = (y[g] + 1) % GROUP_SIZES[g] as u8;
            }
            assert_eq!(by_payment.eval(&y), by_payment.eval(&x));
            let (c, base) = f.contributions(&x);
            assert!((base + c.iter().sum::<f64>() - whole).abs() < 1e-9);
        }
    }

    #[test]
    fn a_bound_forest_sums_the_spreads_of_the_trees_the_payment_leaves_open() {
        let mut f = random_forest(12, 30, 4, NO_CHANNEL);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(13);
        for t in &mut f.trees {
            t.spreads =
                t.nodes.iter().map(|n| std::array::from_fn(|_| if n.group == LEAF { rng.random_range(-0.5..0.5) } else { 0.0 })).collect();
        }
        assert!(f.has_spread());
        // One tree without spreads among the others (a forest may mix them).
        f.trees[4].spreads.clear();
        let payment = (1u32 << N_FIXED) - 1;
        let mut open_trees = 0;
        for _ in 0..300 {
            let x = random_levels(&mut rng);
            // By hand: the leaves of the trees whose path splits on a group beyond the payment's.
            let mut want = [0.0f32; REPLICATES];
            for t in &f.trees {
                let (mut i, mut open) = (0, false);
                while t.nodes[i].group != LEAF {
                    open |= payment >> t.nodes[i].group & 1 == 0;
                    i = t.nodes[i].child(&x);
                }
                if open && !t.spreads.is_empty() {
                    open_trees += 1;
                    add_spread(&mut want, &t.spreads[i]);
                }
            }
            let by_payment = f.bind(&x, payment);
            for bound in [by_payment.clone(), by_payment.bind(&f, &x, DAY_GROUPS)] {
                let (z, spread) = bound.eval_spread(&f, &x);
                assert!((z - f.eval(&x)).abs() < 1e-12);
                assert!(spread.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-5), "{spread:?} vs {want:?}");
            }
        }
        assert!(open_trees > 300, "the time groups are split on ({open_trees} open trees)");
        // Spreads that are not finite logits are refused.
        let mut bad = f.clone();
        bad.trees[2].spreads[0][3] = f32::NAN;
        assert!(bad.check(NO_CHANNEL).expect_err("refused").contains("bootstrap"));
        let mut big = f.clone();
        big.trees[2].nodes.resize(MAX_SPREAD_NODES + 1, Node::leaf(0.0));
        big.trees[2].spreads.resize(MAX_SPREAD_NODES + 1, [0.0; REPLICATES]);
        assert!(big.check(NO_CHANNEL).expect_err("refused").contains("at most"));
        f.trees[2].spreads.pop();
        assert!(f.check(NO_CHANNEL).expect_err("refused").contains("spreads for"));
    }

    #[test]
    fn a_forest_that_does_not_fit_the_groups_is_refused() {
        let ok = random_forest(9, 3, 3, NO_CHANNEL);
        ok.check(NO_CHANNEL).expect("fits");
        let with = |f: &dyn Fn(&mut Node)| {
            let mut bad = ok.clone();
            f(&mut bad.trees[1].nodes[0]);
            bad.check(NO_CHANNEL).expect_err("refused")
        };
        assert!(with(&|n| n.group = CHANNEL_GROUP as u8).contains("channel"));
        assert!(with(&|n| n.group = N_GROUPS as u8).contains("group"));
        let class = 1; // decline_class: 5 levels
        assert!(with(&|n| (n.group, n.left_levels) = (class, 1 << 7)).contains("levels"));
        assert!(with(&|n| n.left = 0).contains("out of order"));
        assert!(with(&|n| n.value = f64::NAN).contains("not finite"));
    }
}
