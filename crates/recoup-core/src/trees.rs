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

/// The leaf value an example with levels `x` reaches from node `i` of `nodes`.
#[inline]
fn walk(nodes: &[Node], mut i: usize, x: &GroupLevels) -> f64 {
    loop {
        let n = &nodes[i];
        if n.group == LEAF {
            return n.value;
        }
        i = n.child(x);
    }
}

/// One regression tree on the logit scale.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

impl Tree {
    /// The leaf value for `x`.
    #[inline]
    pub fn eval(&self, x: &GroupLevels) -> f64 {
        walk(&self.nodes, 0, x)
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
#[derive(Debug, Clone, Default)]
pub struct Bound {
    nodes: Vec<Node>,
    roots: Vec<u32>,
    constant: f64,
}

/// The subtree of `nodes` from `i` with the splits on `known` groups taken
/// (levels from `x`), appended to `out`: its root's index there, or the value
/// when it comes down to a leaf.
fn bind_walk(nodes: &[Node], mut i: usize, x: &GroupLevels, known: u32, out: &mut Vec<Node>) -> Result<u32, f64> {
    loop {
        let n = &nodes[i];
        if n.group == LEAF {
            return Err(n.value);
        }
        if known >> n.group & 1 == 0 {
            break;
        }
        i = n.child(x);
    }
    let n = nodes[i];
    let at = out.len();
    out.push(n);
    let child = |c: u32, out: &mut Vec<Node>| match bind_walk(nodes, c as usize, x, known, out) {
        Ok(k) => k,
        Err(v) => {
            out.push(Node::leaf(v));
            (out.len() - 1) as u32
        }
    };
    let l = child(n.left, out);
    let r = child(n.right, out);
    (out[at].left, out[at].right) = (l, r);
    Ok(at as u32)
}

/// Bind the subtrees `(nodes, root)` into `out` (emptied first), their leaf
/// values added to `constant` where a subtree comes down to one.
fn bind_all<'a>(subtrees: impl Iterator<Item = (&'a [Node], usize)>, constant: f64, x: &GroupLevels, known: u32, out: &mut Bound) {
    out.nodes.clear();
    out.roots.clear();
    out.constant = constant;
    for (nodes, root) in subtrees {
        match bind_walk(nodes, root, x, known, &mut out.nodes) {
            Ok(r) => out.roots.push(r),
            Err(v) => out.constant += v,
        }
    }
}

impl Forest {
    /// Take every split on a group in `known` (bit per group) with the levels
    /// of `x`; the other groups' levels in `x` are ignored.
    pub fn bind(&self, x: &GroupLevels, known: u32) -> Bound {
        let mut b = Bound::default();
        bind_all(self.trees.iter().map(|t| (t.nodes.as_slice(), 0)), 0.0, x, known, &mut b);
        b
    }
}

impl Bound {
    /// [`Forest::bind`] again: take the splits on more groups.
    pub fn bind(&self, x: &GroupLevels, known: u32) -> Bound {
        let mut b = Bound::default();
        self.bind_into(x, known, &mut b);
        b
    }

    /// [`Bound::bind`] into `out`, reusing its memory (a grid rebinds once per day).
    pub fn bind_into(&self, x: &GroupLevels, known: u32, out: &mut Bound) {
        bind_all(self.roots.iter().map(|&r| (self.nodes.as_slice(), r as usize)), self.constant, x, known, out);
    }

    /// The forest's logit for `x` (whose levels of the bound groups do not matter).
    pub fn eval(&self, x: &GroupLevels) -> f64 {
        self.roots.iter().fold(self.constant, |z, &root| z + walk(&self.nodes, root as usize, x))
    }
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
            out[at] = Node { group: g as u8, left_levels: mask, left: l, right: r, value };
        }
        at as u32
    }
    Forest {
        trees: (0..trees)
            .map(|_| {
                let mut nodes = Vec::new();
                node(&mut rng, &groups, depth, &mut nodes);
                Tree { nodes }
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
            let by_day = by_payment.bind(&x, DAY_GROUPS);
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
