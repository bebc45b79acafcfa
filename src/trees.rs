//! Fitting the gradient-boosted trees (learning side): histograms per leaf from
//! group-major columns (the larger child's by subtraction), leaf-wise growth,
//! subset splits for names and thresholds for ordered buckets, early stopping on
//! the calibration split. Histogram blocks and partition chunks are combined in
//! order, so a fit is identical for any thread count. The trees themselves and
//! their scoring are core: [`recoup_core::trees`], re-exported here.
//!
//! Side: learning (fits or evaluates over a loaded history or the simulator; in the binary crate, beside the edges).

pub use recoup_core::trees::*;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::features::{group_is_ordered, GroupLevels, GROUP_SIZES, N_GROUPS};
use crate::model::{logit_loss, sigmoid};

/// Rows per parallel histogram chunk; chunks are summed in order.
const CHUNK: usize = 1 << 14;
/// Added to the hessian when ordering a nominal group's levels (LightGBM's `cat_smooth`).
const CAT_SMOOTH: f64 = 10.0;

/// Why boosting could not start: inputs that do not fit together, or settings out of range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("boosting: {0}")]
pub struct BoostError(pub String);

/// Boosting settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BoostConfig {
    /// Most trees; early stopping on the calibration split usually ends sooner.
    pub max_trees: usize,
    /// Leaves per tree.
    pub leaves: usize,
    pub learning_rate: f64,
    /// Fewest fit examples in a leaf.
    pub min_leaf: usize,
    /// L2 penalty on leaf values (added to the hessian sum).
    pub l2: f64,
    /// Stop after this many trees without a better calibration-split log loss.
    pub patience: usize,
    /// Refit the kept trees' leaf values on [`REPLICATES`] bootstrap draws of the
    /// fit examples ([`bootstrap_spread`]), for the engine's lower bound.
    pub bootstrap: bool,
}

impl Default for BoostConfig {
    fn default() -> Self {
        BoostConfig { max_trees: 300, leaves: 127, learning_rate: 0.2, min_leaf: 50, l2: 1.0, patience: 5, bootstrap: true }
    }
}

/// A boosting run's result.
#[derive(Debug, Clone)]
pub struct Boosted {
    /// The trees up to the best calibration-split log loss.
    pub forest: Forest,
    /// Calibration-split log loss with 0, 1, 2… trees (every tree grown).
    pub cal_log_loss: Vec<f64>,
    /// Forest logit of every fit and calibration example (for the next stage).
    pub fit_logit: Vec<f64>,
    pub cal_logit: Vec<f64>,
}

/// Split candidate of a leaf.
#[derive(Debug, Clone, Copy)]
struct Split {
    gain: f64,
    group: usize,
    left_levels: u32,
}

/// (gradient, hessian, count) per group × level.
type Hist = Vec<[f64; 3]>;

struct Leaf {
    node: usize,
    start: usize,
    end: usize,
    hist: Hist,
    split: Option<Split>,
}

/// Groups a histogram pass reads together (see [`histogram`]).
const BLOCK: usize = 12;

/// The histogram of the rows `rows` (gradients `gh` in the same order). Each
/// group's column is a byte per example (about a megabyte per million: it stays
/// in cache, where whole rows would not); one pass over the rows fills the bins
/// of a block of up to [`BLOCK`] groups, whose additions do not wait on each
/// other. The groups are split into one block per thread and no partial sums
/// are merged across blocks, so the result does not depend on the thread count.
fn histogram(cols: &[Vec<u8>], rows: &[u32], gh: &[[f32; 2]], groups: &[usize]) -> Hist {
    // Bins of up to BLOCK columns per pass over the rows; counts apart (integer adds).
    fn pass<const B: usize>(cols: &[Vec<u8>], ks: &[usize], rows: &[u32], gh: &[[f32; 2]]) -> Vec<[[f64; 3]; MAX_LEVELS]> {
        let cs: [&[u8]; B] = std::array::from_fn(|j| cols[ks[j]].as_slice());
        let mut h = [[[0.0f64; 2]; MAX_LEVELS]; B];
        let mut n = [[0u32; MAX_LEVELS]; B];
        for (&r, &[g, hs]) in rows.iter().zip(gh) {
            for j in 0..B {
                let l = cs[j][r as usize] as usize;
                let b = &mut h[j][l];
                b[0] += f64::from(g);
                b[1] += f64::from(hs);
                n[j][l] += 1;
            }
        }
        (0..B).map(|j| std::array::from_fn(|l| [h[j][l][0], h[j][l][1], n[j][l] as f64])).collect()
    }
    let block = |ks: &[usize]| -> Vec<[[f64; 3]; MAX_LEVELS]> {
        macro_rules! by_len {
            ($($b:literal)*) => {
                match ks.len() {
                    $($b => pass::<$b>(cols, ks, rows, gh),)*
                    _ => unreachable!("blocks have 1 to {BLOCK} groups"),
                }
            };
        }
        by_len!(1 2 3 4 5 6 7 8 9 10 11 12)
    };
    // One block per thread (the groups split evenly), at most BLOCK groups each.
    let threads = if rows.len() < CHUNK / 4 { 1 } else { rayon::current_num_threads().max(1) };
    let per = groups.len().div_ceil(threads).clamp(1, BLOCK);
    let blocks: Vec<&[usize]> = groups.chunks(per).collect();
    let parts: Vec<Vec<[[f64; 3]; MAX_LEVELS]>> =
        if threads == 1 { blocks.iter().map(|ks| block(ks)).collect() } else { blocks.par_iter().map(|ks| block(ks)).collect() };
    let mut out = vec![[0.0; 3]; N_GROUPS * MAX_LEVELS];
    for (ks, p) in blocks.iter().zip(parts) {
        for (&k, bins) in ks.iter().zip(p) {
            out[k * MAX_LEVELS..(k + 1) * MAX_LEVELS].copy_from_slice(&bins);
        }
    }
    out
}

fn leaf_value(sum: &[f64; 3], cfg: &BoostConfig) -> f64 {
    -sum[0] / (sum[1] + cfg.l2) * cfg.learning_rate
}

/// The best split of a leaf with histogram `h` and totals `sum`.
fn best_split(h: &Hist, sum: &[f64; 3], groups: &[usize], cfg: &BoostConfig) -> Option<Split> {
    let score = |g: f64, hs: f64| g * g / (hs + cfg.l2);
    let parent = score(sum[0], sum[1]);
    let min = cfg.min_leaf as f64;
    let mut best: Option<Split> = None;
    let mut order = Vec::with_capacity(MAX_LEVELS);
    for &k in groups {
        let bins = &h[k * MAX_LEVELS..k * MAX_LEVELS + GROUP_SIZES[k]];
        order.clear();
        if group_is_ordered(k) {
            order.extend(0..bins.len());
        } else {
            order.extend((0..bins.len()).filter(|&l| bins[l][2] > 0.0));
            order.sort_by(|&a, &b| {
                (bins[a][0] / (bins[a][1] + CAT_SMOOTH)).total_cmp(&(bins[b][0] / (bins[b][1] + CAT_SMOOTH))).then(a.cmp(&b))
            });
        }
        let (mut gl, mut hl, mut nl, mut mask) = (0.0, 0.0, 0.0, 0u32);
        for &l in order.iter().take(order.len().saturating_sub(1)) {
            gl += bins[l][0];
            hl += bins[l][1];
            nl += bins[l][2];
            mask |= 1 << l;
            let (gr, hr, nr) = (sum[0] - gl, sum[1] - hl, sum[2] - nl);
            if nl < min || nr < min || hl < 1e-3 || hr < 1e-3 {
                continue;
            }
            let gain = score(gl, hl) + score(gr, hr) - parent;
            if gain > 1e-9 && best.is_none_or(|b| gain > b.gain) {
                best = Some(Split { gain, group: k, left_levels: mask });
            }
        }
    }
    best
}

fn log_loss(z: &[f64], y: &[bool]) -> f64 {
    let s: f64 = z
        .par_chunks(CHUNK)
        .zip(y.par_chunks(CHUNK))
        .map(|(z, y)| z.iter().zip(y).map(|(&z, &y)| logit_loss(z, y)).sum::<f64>())
        .collect::<Vec<f64>>()
        .iter()
        .sum();
    s / y.len().max(1) as f64
}

/// Stable partition of `rows` and their gradients `gh`: rows whose level in
/// `col` is in `left_levels` first. Returns how many go left. Large ranges are
/// partitioned chunk by chunk in parallel, then the chunks' left and right parts
/// are laid out in chunk order (the same result as one pass).
fn partition(rows: &mut [u32], gh: &mut [[f32; 2]], col: &[u8], left_levels: u32, scratch: &mut Scratch) -> usize {
    let goes_left = |r: u32| left_levels >> col[r as usize] & 1 == 1;
    // Left examples to the front of the slice, right ones set aside (in order).
    let split = |rows: &mut [u32], gh: &mut [[f32; 2]], right_rows: &mut Vec<u32>, right_gh: &mut Vec<[f32; 2]>| -> usize {
        right_rows.clear();
        right_gh.clear();
        let mut nl = 0;
        for i in 0..rows.len() {
            let (r, g) = (rows[i], gh[i]);
            if goes_left(r) {
                rows[nl] = r;
                gh[nl] = g;
                nl += 1;
            } else {
                right_rows.push(r);
                right_gh.push(g);
            }
        }
        nl
    };
    if rows.len() < 4 * CHUNK {
        let nl = split(rows, gh, &mut scratch.rows, &mut scratch.gh);
        rows[nl..].copy_from_slice(&scratch.rows);
        gh[nl..].copy_from_slice(&scratch.gh);
        return nl;
    }
    let chunks = rows.len().div_ceil(CHUNK);
    if scratch.chunks.len() < chunks {
        scratch.chunks.resize_with(chunks, || (Vec::with_capacity(CHUNK), Vec::with_capacity(CHUNK)));
    }
    let nls: Vec<usize> = rows
        .par_chunks_mut(CHUNK)
        .zip(gh.par_chunks_mut(CHUNK))
        .zip(scratch.chunks.par_iter_mut())
        .map(|((r, g), (sr, sg))| split(r, g, sr, sg))
        .collect();
    // The chunks' left parts moved to the front in chunk order (each moves down
    // or stays, so in order nothing is overwritten before it is moved), then
    // the right parts in chunk order.
    let mut at = 0;
    for (c, &nl) in nls.iter().enumerate() {
        rows.copy_within(c * CHUNK..c * CHUNK + nl, at);
        gh.copy_within(c * CHUNK..c * CHUNK + nl, at);
        at += nl;
    }
    let left = at;
    for (sr, sg) in &scratch.chunks[..chunks] {
        rows[at..at + sr.len()].copy_from_slice(sr);
        gh[at..at + sg.len()].copy_from_slice(sg);
        at += sr.len();
    }
    left
}

/// Buffers [`grow`] reuses from tree to tree.
#[derive(Default)]
struct Scratch {
    rows: Vec<u32>,
    gh: Vec<[f32; 2]>,
    /// Per parallel chunk of a partition: its right-hand rows and gradients.
    chunks: Vec<(Vec<u32>, Vec<[f32; 2]>)>,
}

/// Grow one tree on the fit rows `rows` (index order) and their gradients `gh`
/// (same order). Both are partitioned in place as the tree splits, so a leaf's
/// rows and gradients are contiguous (no random gather per histogram). Returns
/// the tree and, per leaf, its value and its rows as a range of `rows`.
fn grow(
    cols: &[Vec<u8>],
    gh: &mut [[f32; 2]],
    rows: &mut [u32],
    groups: &[usize],
    cfg: &BoostConfig,
    scratch: &mut Scratch,
) -> (Tree, Vec<(f64, usize, usize)>) {
    // Rows start in index order, so the root's gradients are `gh` itself.
    let hist = histogram(cols, rows, gh, groups);
    let mut sum = [0.0; 3];
    for &[g, h] in gh.iter() {
        sum[0] += f64::from(g);
        sum[1] += f64::from(h);
    }
    sum[2] = rows.len() as f64;
    let mut tree = Tree { nodes: vec![Node::leaf(leaf_value(&sum, cfg))], spreads: Vec::new() };
    let split = best_split(&hist, &sum, groups, cfg);
    let mut leaves = vec![Leaf { node: 0, start: 0, end: rows.len(), hist, split }];
    while leaves.len() < cfg.leaves.max(1) {
        let Some((at, _)) = leaves
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.split.map(|s| (i, s.gain)))
            .fold(None, |b: Option<(usize, f64)>, (i, g)| if b.is_none_or(|b| g > b.1) { Some((i, g)) } else { b })
        else {
            break;
        };
        let leaf = leaves.swap_remove(at);
        let s = leaf.split.expect("chosen for its split");
        // Stable partition: left rows first.
        let nl = partition(&mut rows[leaf.start..leaf.end], &mut gh[leaf.start..leaf.end], &cols[s.group], s.left_levels, scratch);
        let part_len = leaf.end - leaf.start;
        let mid = leaf.start + nl;
        let (small, large_is_left) = if nl <= part_len - nl { (leaf.start..mid, false) } else { (mid..leaf.end, true) };
        let h_small = histogram(cols, &rows[small.clone()], &gh[small], groups);
        let h_large: Hist = leaf.hist.iter().zip(&h_small).map(|(p, s)| [p[0] - s[0], p[1] - s[1], p[2] - s[2]]).collect();
        let (h_left, h_right) = if large_is_left { (h_large, h_small) } else { (h_small, h_large) };
        let total = |h: &Hist| -> [f64; 3] {
            let k = s.group;
            h[k * MAX_LEVELS..k * MAX_LEVELS + GROUP_SIZES[k]].iter().fold([0.0; 3], |a, b| [a[0] + b[0], a[1] + b[1], a[2] + b[2]])
        };
        let (sl, sr) = (total(&h_left), total(&h_right));
        let (li, ri) = (tree.nodes.len(), tree.nodes.len() + 1);
        tree.nodes.push(Node::leaf(leaf_value(&sl, cfg)));
        tree.nodes.push(Node::leaf(leaf_value(&sr, cfg)));
        let parent = &mut tree.nodes[leaf.node];
        (parent.group, parent.left_levels, parent.left, parent.right) = (s.group as u8, s.left_levels, li as u32, ri as u32);
        let ls = best_split(&h_left, &sl, groups, cfg);
        let rs = best_split(&h_right, &sr, groups, cfg);
        leaves.push(Leaf { node: li, start: leaf.start, end: mid, hist: h_left, split: ls });
        leaves.push(Leaf { node: ri, start: mid, end: leaf.end, hist: h_right, split: rs });
    }
    let out = leaves.iter().map(|l| (tree.nodes[l.node].value, l.start, l.end)).collect();
    (tree, out)
}

/// Boost trees on the fit examples from the logits `fit_offset` (the rest of the
/// model), splitting only on the groups in `allowed` (bit per group), and keep
/// the number of trees with the best calibration-split log loss (from
/// `cal_offset`). `progress` hears every 25th tree.
#[allow(clippy::too_many_arguments)]
pub fn boost(
    fit_x: &[GroupLevels],
    fit_y: &[bool],
    fit_offset: &[f64],
    cal_x: &[GroupLevels],
    cal_y: &[bool],
    cal_offset: &[f64],
    allowed: u32,
    cfg: &BoostConfig,
    progress: &mut dyn FnMut(&str),
) -> Result<Boosted, BoostError> {
    let fail = |why: String| Err(BoostError(why));
    if !(fit_x.len() == fit_y.len() && fit_y.len() == fit_offset.len()) {
        return fail("fit inputs differ in length".into());
    }
    if !(cal_x.len() == cal_y.len() && cal_y.len() == cal_offset.len()) {
        return fail("calibration inputs differ in length".into());
    }
    if fit_x.is_empty() || cal_x.is_empty() {
        return fail("boosting needs fit and calibration examples".into());
    }
    if !GROUP_SIZES.iter().all(|&s| s <= MAX_LEVELS) {
        return fail(format!("a group has more than {MAX_LEVELS} levels"));
    }
    if !(cfg.learning_rate > 0.0 && cfg.l2 >= 0.0 && cfg.leaves >= 2) {
        return fail(format!("boosting settings out of range: {cfg:?}"));
    }
    let groups: Vec<usize> = (0..N_GROUPS).filter(|&g| allowed >> g & 1 == 1 && GROUP_SIZES[g] > 1).collect();
    let (mut fit_z, mut cal_z) = (fit_offset.to_vec(), cal_offset.to_vec());
    // Group-major copy of the fit examples' levels (only the groups split on).
    let cols: Vec<Vec<u8>> = (0..N_GROUPS)
        .into_par_iter()
        .map(|g| if groups.contains(&g) { fit_x.iter().map(|x| x[g]).collect() } else { Vec::new() })
        .collect();
    let mut gh = vec![[0.0f32; 2]; fit_x.len()];
    let mut rows: Vec<u32> = (0..fit_x.len() as u32).collect();
    let mut scratch = Scratch::default();
    let mut losses = vec![log_loss(&cal_z, cal_y)];
    let mut best = (losses[0], 0usize, fit_z.clone(), cal_z.clone());
    let mut trees: Vec<Tree> = Vec::new();
    while trees.len() < cfg.max_trees {
        // Rows in index order for every tree: the same tree for the same data.
        gh.par_iter_mut().zip(fit_z.par_iter()).zip(fit_y.par_iter()).for_each(|((g, &z), &y)| {
            let p = sigmoid(z);
            // Single precision, as LightGBM keeps them; histograms add in double.
            *g = [(p - y as u8 as f64) as f32, (p * (1.0 - p)).max(1e-16) as f32];
        });
        rows.iter_mut().enumerate().for_each(|(i, r)| *r = i as u32);
        let (tree, leaves) = grow(&cols, &mut gh, &mut rows, &groups, cfg, &mut scratch);
        if tree.nodes.len() == 1 {
            progress(&format!("tree {}: no split gains; stopping", trees.len() + 1));
            break;
        }
        for &(v, start, end) in &leaves {
            rows[start..end].iter().for_each(|&r| fit_z[r as usize] += v);
        }
        cal_z.par_iter_mut().zip(cal_x.par_iter()).for_each(|(z, x)| *z += tree.eval(x));
        trees.push(tree);
        let ll = log_loss(&cal_z, cal_y);
        losses.push(ll);
        if ll < best.0 {
            // Into the kept buffers: a fresh copy per better tree costs page faults.
            best.0 = ll;
            best.1 = trees.len();
            best.2.copy_from_slice(&fit_z);
            best.3.copy_from_slice(&cal_z);
        }
        if trees.len() % 25 == 0 {
            progress(&format!("tree {}: calibration-split log loss {ll:.5} (best {:.5} at {} trees)", trees.len(), best.0, best.1));
        }
        if trees.len() - best.1 >= cfg.patience {
            break;
        }
    }
    let (_, keep, fit_logit, cal_logit) = best;
    trees.truncate(keep);
    let mut forest = Forest { trees };
    if cfg.bootstrap && !forest.is_empty() {
        let t = std::time::Instant::now();
        bootstrap_spread(&mut forest, fit_x, fit_y, fit_offset, cfg);
        progress(&format!("{REPLICATES} bootstrap refits of the {} trees' leaf values in {:.1?}", forest.trees.len(), t.elapsed()));
    }
    let sub = |z: Vec<f64>, off: &[f64]| z.into_iter().zip(off).map(|(z, o)| z - o).collect::<Vec<f64>>();
    Ok(Boosted { forest, cal_log_loss: losses, fit_logit: sub(fit_logit, fit_offset), cal_logit: sub(cal_logit, cal_offset) })
}

/// Fills each tree's [`Tree::spreads`]: the forest's leaf values refitted on
/// [`REPLICATES`] bootstrap draws of the fit examples, the trees' structure kept.
/// Each draw weights every example by a Poisson(1) count (the standard online
/// form of resampling with replacement) and boosts again through the same trees
/// in order, each leaf's value the same Newton step as the fit's on that draw's
/// own running logits; a leaf's spread is the draws' values less the fit's.
/// Summed along an example's leaves, a draw's departure keeps the trees'
/// correlations (a later tree corrects an earlier one within a draw). The
/// structure was chosen on all the data, so this understates the uncertainty where
/// the splits themselves are unsure, as the logistic weights' posterior
/// variances take the columns as given. The draws are hashes of (draw, example):
/// the same for any thread count.
pub fn bootstrap_spread(forest: &mut Forest, fit_x: &[GroupLevels], fit_y: &[bool], fit_offset: &[f64], cfg: &BoostConfig) {
    let n = fit_x.len();
    // P(Poisson(1) ≤ k) for k = 0, 1, …: the count is the number of these a uniform exceeds.
    let mut cdf = [0.0f64; 10];
    let (mut term, mut acc) = ((-1.0f64).exp(), 0.0);
    for (k, c) in cdf.iter_mut().enumerate() {
        acc += term;
        *c = acc;
        term /= (k + 1) as f64;
    }
    let count = |draw: usize, i: usize| -> u8 {
        let u = (splitmix(0x7265_636f_7570_0000 ^ ((draw as u64) << 40) ^ i as u64) >> 11) as f64 / (1u64 << 53) as f64;
        cdf.iter().take_while(|&&c| u >= c).count() as u8
    };
    let weights: Vec<Vec<u8>> = (0..REPLICATES).into_par_iter().map(|b| (0..n).map(|i| count(b, i)).collect()).collect();
    let mut logits: Vec<Vec<f32>> = (0..REPLICATES).map(|_| fit_offset.iter().map(|&z| z as f32).collect()).collect();
    let mut leaf = vec![0u32; n];
    for tree in &mut forest.trees {
        leaf.par_iter_mut().zip(fit_x.par_iter()).for_each(|(l, x)| *l = tree.leaf(x) as u32);
        let nodes = tree.nodes.len();
        let values: Vec<Vec<f64>> = logits
            .par_iter_mut()
            .zip(weights.par_iter())
            .map(|(z, w)| {
                let mut sums = vec![[0.0f64; 3]; nodes];
                for i in 0..n {
                    if w[i] > 0 {
                        let p = sigmoid(f64::from(z[i]));
                        let s = &mut sums[leaf[i] as usize];
                        s[0] += f64::from(w[i]) * (p - fit_y[i] as u8 as f64);
                        s[1] += f64::from(w[i]) * (p * (1.0 - p)).max(1e-16);
                    }
                }
                let values: Vec<f64> = sums.iter().map(|s| leaf_value(s, cfg)).collect();
                for (z, &l) in z.iter_mut().zip(&leaf) {
                    *z += values[l as usize] as f32;
                }
                values
            })
            .collect();
        tree.spreads = tree
            .nodes
            .iter()
            .enumerate()
            .map(|(k, node)| {
                if node.group == LEAF {
                    std::array::from_fn(|b| (values[b][k] - node.value).clamp(-50.0, 50.0) as f32)
                } else {
                    [0.0; REPLICATES]
                }
            })
            .collect();
    }
}

/// SplitMix64's output function: a well-mixed 64-bit hash of `x`.
fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::CHANNEL_GROUP;
    use rand::{Rng, SeedableRng};

    const NO_CHANNEL: u32 = ((1u32 << N_GROUPS) - 1) & !(1 << CHANNEL_GROUP);

    fn random_levels(rng: &mut rand_chacha::ChaCha8Rng) -> GroupLevels {
        std::array::from_fn(|g| rng.random_range(0..GROUP_SIZES[g]) as u8)
    }

    /// Examples whose log-odds have a three-way interaction of groups 0, 4 and
    /// 18 (no sum of one-group terms can express it) and a channel effect.
    fn interaction(n: usize, seed: u64) -> (Vec<GroupLevels>, Vec<bool>) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let ch = CHANNEL_GROUP;
        (0..n)
            .map(|_| {
                let x = random_levels(&mut rng);
                let cell = x[0] < 12 && x[4] % 2 == 0 && x[18] >= 3;
                let z = if cell { 1.5 } else { -1.0 } + if x[ch] == 1 { 0.8 } else { 0.0 };
                (x, rng.random::<f64>() < sigmoid(z))
            })
            .unzip()
    }

    #[test]
    fn boosting_finds_an_interaction_and_never_splits_where_it_may_not() {
        let (x, y) = interaction(30_000, 1);
        let (cx, cy) = interaction(10_000, 2);
        let cfg = BoostConfig { leaves: 7, max_trees: 150, ..BoostConfig::default() };
        let base = -0.5;
        let mut heard = Vec::new();
        let b = boost(&x, &y, &vec![base; x.len()], &cx, &cy, &vec![base; cx.len()], NO_CHANNEL, &cfg, &mut |m| heard.push(m.to_string()))
            .expect("boosts");
        assert!(!b.forest.is_empty() && b.forest.trees.len() < cfg.max_trees, "{} trees", b.forest.trees.len());
        b.forest.check(NO_CHANNEL).expect("only allowed groups");
        assert!(b.forest.check(NO_CHANNEL & !1).is_err(), "group 0 carries the signal: the trees split on it");
        // The calibration loss is best at the trees kept, and well below the start.
        let best = b.cal_log_loss.iter().copied().fold(f64::INFINITY, f64::min);
        assert_eq!(b.cal_log_loss[b.forest.trees.len()], best);
        assert!(best < b.cal_log_loss[0] - 0.03, "{best} vs {}", b.cal_log_loss[0]);
        // Inside and outside the cell, the trees' probability is the truth's,
        // averaged over the channel they cannot see.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let ch = CHANNEL_GROUP;
        let marginal =
            |z: f64| (0..GROUP_SIZES[ch]).map(|c| sigmoid(z + if c == 1 { 0.8 } else { 0.0 })).sum::<f64>() / GROUP_SIZES[ch] as f64;
        let mut errors = Vec::new();
        for _ in 0..400 {
            let mut x = random_levels(&mut rng);
            x[ch] = 0;
            let cell = x[0] < 12 && x[4] % 2 == 0 && x[18] >= 3;
            let p = sigmoid(base + b.forest.eval(&x));
            let truth = marginal(if cell { 1.5 } else { -1.0 });
            errors.push((p - truth).abs());
            assert!((p - truth).abs() < 0.15, "cell {cell}: {p} vs {truth} at {x:?}");
        }
        let mean = errors.iter().sum::<f64>() / errors.len() as f64;
        assert!(mean < 0.03, "mean error {mean}");
        // The logits handed on are the kept trees' own.
        for i in (0..x.len()).step_by(997) {
            assert!((b.fit_logit[i] - b.forest.eval(&x[i])).abs() < 1e-9);
        }
        for i in (0..cx.len()).step_by(991) {
            assert!((b.cal_logit[i] - b.forest.eval(&cx[i])).abs() < 1e-9);
        }
    }

    #[test]
    fn bootstrap_spread_is_wide_where_the_fit_examples_are_few() {
        // Group 0's level 0 in 1 % of the examples (about 600), with its own rate;
        // the other levels share one rate (about 59,400 examples).
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let draw = |n: usize, rng: &mut rand_chacha::ChaCha8Rng| -> (Vec<GroupLevels>, Vec<bool>) {
            (0..n)
                .map(|_| {
                    let mut x = random_levels(rng);
                    x[0] = if rng.random::<f64>() < 0.01 { 0 } else { 1 + x[0] % (GROUP_SIZES[0] as u8 - 1) };
                    let z = if x[0] == 0 { 1.0 } else { -0.5 };
                    (x, rng.random::<f64>() < sigmoid(z))
                })
                .unzip()
        };
        let (x, y) = draw(60_000, &mut rng);
        let (cx, cy) = draw(20_000, &mut rng);
        let cfg = BoostConfig { leaves: 4, max_trees: 60, ..BoostConfig::default() };
        let b = boost(&x, &y, &vec![0.0; x.len()], &cx, &cy, &vec![0.0; cx.len()], NO_CHANNEL, &cfg, &mut |_| {}).expect("boosts");
        assert!(b.forest.has_spread());
        b.forest.check(NO_CHANNEL).expect("spreads are finite");
        // Nothing is bound, so every tree's spread counts.
        let sd = |x: &GroupLevels| spread_variance(&b.forest.bind(x, 0).eval_spread(&b.forest, x).1).sqrt();
        let (rare, common): (Vec<&GroupLevels>, Vec<&GroupLevels>) = x.iter().take(20_000).partition(|x| x[0] == 0);
        let mean = |v: &[&GroupLevels]| v.iter().map(|x| sd(x)).sum::<f64>() / v.len() as f64;
        let (rare_sd, common_sd) = (mean(&rare), mean(&common));
        // A cell's logit from m examples at p has a standard error of 1 / √(m p (1 − p)).
        let se = |m: f64, p: f64| 1.0 / (m * p * (1.0 - p)).sqrt();
        let rare_se = se(600.0, sigmoid(1.0));
        assert!(rare_sd > 3.0 * common_sd, "rare {rare_sd} vs common {common_sd}");
        assert!(rare_sd > 0.5 * rare_se && rare_sd < 1.5 * rare_se, "rare {rare_sd} vs its standard error {rare_se}");
        // The fit itself is what it was without the refits.
        let plain = boost(
            &x,
            &y,
            &vec![0.0; x.len()],
            &cx,
            &cy,
            &vec![0.0; cx.len()],
            NO_CHANNEL,
            &BoostConfig { bootstrap: false, ..cfg },
            &mut |_| {},
        )
        .expect("boosts");
        assert!(!plain.forest.has_spread());
        assert_eq!(plain.forest.trees.len(), b.forest.trees.len());
        for (t, u) in b.forest.trees.iter().zip(&plain.forest.trees) {
            assert!(t.nodes.iter().zip(&u.nodes).all(|(a, b)| (a.group, a.left_levels, a.value) == (b.group, b.left_levels, b.value)));
        }
    }

    #[test]
    fn a_fit_is_the_same_for_any_thread_count() {
        // Over 4 chunks of rows: partitions and histograms run in parallel.
        let (x, y) = interaction(70_000, 4);
        let (cx, cy) = interaction(5_000, 5);
        let cfg = BoostConfig { max_trees: 8, leaves: 31, ..BoostConfig::default() };
        let fit = |threads| {
            rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool").install(|| {
                boost(&x, &y, &vec![0.0; x.len()], &cx, &cy, &vec![0.0; cx.len()], NO_CHANNEL, &cfg, &mut |_| {}).expect("boosts").forest
            })
        };
        let one = fit(1);
        assert_eq!(one.trees.len(), 8);
        assert_eq!(one, fit(2));
    }
}
