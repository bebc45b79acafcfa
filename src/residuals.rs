//! Where a model is wrong on a history: the history's retries scored by the model as
//! it serves (every calibration and the failed-retries correction), predicted against
//! realised success per decline class, cut by every feature group's level and, finer
//! than the model sees them, by the exact local day of month, local hour and hours
//! since the previous attempt.
//!
//! The model assumes that every value inside one of its levels behaves alike (days 11
//! and 15 share `day_of_month=11-15`); the finer cuts check that on the data. A level
//! whose exact values disagree beyond their noise is structure the model cannot
//! represent, and the engine, which picks the best hour inside a level, may act on it
//! (`recoup models residuals`, README "What recoup assumes about your history").
//!
//! Standard errors are clustered by payer (a payer's retries are not independent), so
//! a cell is flagged only when its error is large against that.
//!
//! Side: learning (pure computation over scored retries; `train::residuals` scores them).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::declines::DeclineClass;
use crate::features::{group_column, group_levels, group_names, ACTIVE, GROUP_SIZES, N_GROUPS};

/// A cell or a level is flagged at this many standard errors: about a 3 % chance of any
/// false alarm over the 500 or so cells a history fills (two-sided 6e-5 each).
pub const FLAG_Z: f64 = 4.0;

/// Nor is an error (or a cell's distance from its class's, or a value's from its level's)
/// below this, however sure: on millions of retries a point of error is many standard
/// errors, and not worth acting on.
pub const MIN_ERROR: f64 = 0.02;

/// Cells with fewer retries are listed but never flagged (their normal approximation is poor).
pub const MIN_RETRIES: usize = 30;

/// Nor are cells the model expects fewer successes (or failures) in than this.
pub const MIN_EXPECTED: f64 = 5.0;

/// Hours-since-last bins of the finer cut: 0–2 and 2–6 h (the model's own first levels),
/// then 6 h wide up to a week, then the rest; every bin inside one of the model's levels.
const SINCE_LAST_BIN_HOURS: u16 = 6;
const SINCE_LAST_BINS: usize = 2 + (168 - 6) / SINCE_LAST_BIN_HOURS as usize + 1;

/// A retry's local day of month and hour and the hours since the attempt before it, exact
/// where the features bucket them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub day_of_month: u8,
    pub local_hour: u8,
    /// Whole hours since the previous attempt of the payment, capped at `u16::MAX`.
    pub hours_since_last: u16,
}

/// One cell: retries of a decline class with one value of one cut.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Cell {
    pub class: String,
    /// A feature group's name, or a finer cut's (`day_of_month_exact`…).
    pub cut: String,
    pub value: String,
    /// For a finer cut, the model's level the value falls in (`day_of_month=11-15`).
    pub level: Option<String>,
    pub retries: usize,
    pub predicted: f64,
    pub observed: f64,
    /// Standard error of `observed − predicted`, clustered by payer (never below the
    /// binomial one).
    pub se: f64,
    /// `(observed − predicted) / se`, when the cell has [`MIN_RETRIES`] and [`MIN_EXPECTED`]
    /// successes and failures.
    pub z: Option<f64>,
    /// The cell's error less its class's (the structure inside the class, apart from a
    /// shift of the whole class), in standard errors; `None` for a class's own row.
    pub z_within: Option<f64>,
    /// That difference itself: the cell's error less its class's.
    #[serde(default)]
    pub apart: Option<f64>,
}

impl Cell {
    /// Flagged: enough retries and at least [`FLAG_Z`] standard errors off, a class's row
    /// by its own error, a cell by how far it lies from its class's.
    pub fn flagged(&self) -> bool {
        let size = if self.cut == "all" { Some(self.observed - self.predicted) } else { self.apart };
        self.score().abs() >= FLAG_Z && size.is_some_and(|e| e.abs() >= MIN_ERROR)
    }

    /// The figure [`Cell::flagged`] reads.
    pub fn score(&self) -> f64 {
        self.z_within.or(if self.cut == "all" { self.z } else { None }).unwrap_or(0.0)
    }
}

/// A model level whose exact values (a finer cut) are tested for agreeing with each other.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WithinLevel {
    pub class: String,
    pub cut: String,
    pub level: String,
    /// The values tested (those with [`MIN_RETRIES`] and [`MIN_EXPECTED`]).
    pub values: usize,
    pub retries: usize,
    /// Σ (r_i² / v_i) − (Σ r_i)² / Σ v_i over the values: χ² on `values − 1` degrees of
    /// freedom when the values agree (r = observed − predicted successes, v its variance).
    pub chi2: f64,
    /// The χ² as a normal score (Wilson–Hilferty): ≥ [`FLAG_Z`] is flagged.
    pub score: f64,
    /// The value furthest from the level's own error, and its error (observed − predicted).
    pub worst_value: String,
    pub worst_error: f64,
    /// The level's own error (observed − predicted over the values tested).
    #[serde(default)]
    pub level_error: f64,
}

impl WithinLevel {
    pub fn flagged(&self) -> bool {
        self.score >= FLAG_Z && (self.worst_error - self.level_error).abs() >= MIN_ERROR
    }
}

/// What [`residuals`] found.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Residuals {
    pub retries: usize,
    /// Per decline class, every retry of it (`cut` = `all`).
    pub classes: Vec<Cell>,
    pub cells: Vec<Cell>,
    pub within: Vec<WithinLevel>,
}

impl Residuals {
    /// The flagged cells, largest |z| first.
    pub fn flagged(&self) -> Vec<&Cell> {
        let mut v: Vec<&Cell> = self.classes.iter().chain(&self.cells).filter(|c| c.flagged()).collect();
        v.sort_by(|a, b| b.score().abs().total_cmp(&a.score().abs()));
        v
    }

    /// The flagged levels, largest score first.
    pub fn flagged_levels(&self) -> Vec<&WithinLevel> {
        let mut v: Vec<&WithinLevel> = self.within.iter().filter(|w| w.flagged()).collect();
        v.sort_by(|a, b| b.score.total_cmp(&a.score));
        v
    }
}

/// What the model card keeps of [`Residuals`] on the test split: each class, the flagged
/// cells (the worst [`SUMMARY_CELLS`]) and the flagged levels.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub retries: usize,
    /// Cells and levels with enough retries to be judged.
    pub cells_tested: usize,
    pub levels_tested: usize,
    pub classes: Vec<Cell>,
    pub flagged_cells: usize,
    pub flagged: Vec<Cell>,
    pub flagged_levels: Vec<WithinLevel>,
    /// Whether the finer cuts were made (the examples carried their [`Stamp`]s).
    pub finer: bool,
}

/// The flagged cells a [`Summary`] keeps.
pub const SUMMARY_CELLS: usize = 12;

impl Residuals {
    /// What the model card keeps.
    pub fn summary(&self, finer: bool) -> Summary {
        let flagged: Vec<Cell> = self.flagged().into_iter().filter(|c| c.cut != "all").cloned().collect();
        Summary {
            retries: self.retries,
            cells_tested: self.cells.iter().filter(|c| c.z.is_some()).count(),
            levels_tested: self.within.len(),
            classes: self.classes.clone(),
            flagged_cells: flagged.len(),
            flagged: flagged.into_iter().take(SUMMARY_CELLS).collect(),
            flagged_levels: self.flagged_levels().into_iter().cloned().collect(),
            finer,
        }
    }
}

impl Summary {
    /// One line per finding, for training's progress output (nothing when nothing is flagged).
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for c in self.classes.iter().filter(|c| c.flagged()) {
            out.push(format!(
                "residuals (test split): {} predicted {:.3}, observed {:.3} ({:+.1} SE)",
                c.class,
                c.predicted,
                c.observed,
                c.z.unwrap_or(0.0)
            ));
        }
        for w in &self.flagged_levels {
            out.push(format!(
                "residuals (test split): {} {}: its exact values disagree (χ² score {:.1}; {} at {:+.3}): structure the model's level cannot see",
                w.class, w.level, w.score, w.worst_value, w.worst_error
            ));
        }
        if self.flagged_cells > 0 {
            out.push(format!(
                "residuals (test split): {} cells off their class's error by {FLAG_Z}+ SE and {}+ points (model card; `recoup models residuals` lists every cell)",
                self.flagged_cells,
                100.0 * MIN_ERROR
            ));
        }
        out
    }
}

/// One way of cutting the retries: a name, its values and (for a finer cut) the feature
/// group whose levels it refines.
struct Cut {
    name: String,
    values: Vec<String>,
    refines: Option<usize>,
}

/// The finer cuts: (name, values, the name of the group whose levels it refines).
fn finer_cuts() -> [(&'static str, Vec<String>, &'static str); 3] {
    let since: Vec<String> = (0..SINCE_LAST_BINS)
        .map(|b| match b {
            0 => "0-2 h".to_string(),
            1 => "2-6 h".to_string(),
            _ if b + 1 == SINCE_LAST_BINS => "168+ h".to_string(),
            _ => {
                let lo = 6 + (b as u16 - 2) * SINCE_LAST_BIN_HOURS;
                format!("{lo}-{} h", lo + SINCE_LAST_BIN_HOURS)
            }
        })
        .collect();
    [
        ("day_of_month_exact", (1..=31).map(|d| d.to_string()).collect(), "day_of_month"),
        ("local_hour_exact", (0..24).map(|h| format!("{h:02}")).collect(), "local_hour"),
        ("hours_since_last_6h", since, "hours_since_last"),
    ]
}

fn finer_value(cut: usize, s: &Stamp) -> usize {
    match cut {
        0 => (s.day_of_month as usize).clamp(1, 31) - 1,
        1 => (s.local_hour as usize).min(23),
        _ => match s.hours_since_last {
            0..2 => 0,
            2..6 => 1,
            h => (2 + ((h - 6) / SINCE_LAST_BIN_HOURS) as usize).min(SINCE_LAST_BINS - 1),
        },
    }
}

/// Sums of one (class, cut, value) cell.
#[derive(Default, Clone, Copy)]
struct Acc {
    n: usize,
    p: f64,
    y: f64,
    /// Σ over payers of (Σ their residuals)².
    var: f64,
    /// Σ p(1 − p): the variance if every retry were independent and the model right.
    model_var: f64,
}

impl Acc {
    /// Variance of Σ(y − p): the payer-clustered estimate, never below the model's own
    /// binomial variance (a cell with no success at all has a clustered variance of Σp²,
    /// far too small).
    fn variance(&self) -> f64 {
        self.var.max(self.model_var)
    }

    /// Enough retries, and enough expected successes and failures, for a normal approximation.
    fn testable(&self) -> bool {
        self.n >= MIN_RETRIES && self.p >= MIN_EXPECTED && self.n as f64 - self.p >= MIN_EXPECTED
    }
}

/// The retries to cut, scored: per example its active columns ([`ACTIVE`] each), the
/// model's P, its decline class, whether it succeeded, its payer (the cluster) and, when
/// known, its [`Stamp`] (`stamps` empty: the feature groups' cuts only).
pub struct Scored<'a> {
    pub columns: &'a [u16],
    pub p: &'a [f64],
    pub classes: &'a [DeclineClass],
    pub succeeded: &'a [bool],
    pub payers: &'a [u64],
    pub stamps: &'a [Stamp],
}

/// The cuts and where each one's cells sit in a class's row of accumulators.
struct Layout {
    cuts: Vec<Cut>,
    /// Index of the first finer cut.
    group_cuts: usize,
    offsets: Vec<usize>,
    /// Accumulators per class: [all] then every cut's values.
    width: usize,
    class_group: usize,
}

impl Layout {
    fn new(finer: bool) -> Layout {
        let names = group_names();
        let class_group = names.iter().position(|n| *n == "decline_class").expect("the decline_class group");
        let mut cuts: Vec<Cut> = (0..N_GROUPS)
            .filter(|&g| g != class_group)
            .map(|g| Cut { name: names[g].to_string(), values: (0..GROUP_SIZES[g]).map(|l| level_value(g, l)).collect(), refines: None })
            .collect();
        let group_cuts = cuts.len();
        if finer {
            for (name, values, refines) in finer_cuts() {
                let g = names.iter().position(|n| *n == refines).expect("a refined group");
                cuts.push(Cut { name: name.to_string(), values, refines: Some(g) });
            }
        }
        let offsets: Vec<usize> = cuts.iter().scan(0, |o, c| Some(std::mem::replace(o, *o + c.values.len()))).collect();
        let width = 1 + cuts.iter().map(|c| c.values.len()).sum::<usize>();
        Layout { cuts, group_cuts, offsets, width, class_group }
    }
}

/// Cut the residuals of `s`'s retries.
pub fn residuals(s: &Scored) -> Residuals {
    let n = s.p.len();
    assert!(s.columns.len() == n * ACTIVE && s.classes.len() == n && s.succeeded.len() == n, "one row, class and outcome per P");
    let finer = s.stamps.len() == n;
    let layout = Layout::new(finer);
    let (acc, level_of) = accumulate(s, &layout);
    collect(&layout, &acc, &level_of, n)
}

/// Every cell's sums, and each finer cell's model level (as its examples fell: a value
/// lies in one level).
fn accumulate(s: &Scored, l: &Layout) -> (Vec<Acc>, HashMap<usize, usize>) {
    let classes = <DeclineClass as strum::VariantArray>::VARIANTS;
    let mut acc = vec![Acc::default(); classes.len() * l.width];
    let mut level_of: HashMap<usize, usize> = HashMap::new();
    // Payer by payer, so each payer's residuals are summed per cell before squaring (no
    // payers: each retry its own cluster).
    let cluster = |i: usize| s.payers.get(i).copied().map_or((1, i as u64), |p| (0, p));
    let mut order: Vec<usize> = (0..s.p.len()).collect();
    order.sort_by_key(|&i| (cluster(i), i));
    let mut slots: Vec<usize> = Vec::with_capacity(1 + l.cuts.len());
    let mut payer_sum: HashMap<usize, f64> = HashMap::new();
    for (k, &i) in order.iter().enumerate() {
        let pi = s.p[i];
        let y = if s.succeeded[i] { 1.0 } else { 0.0 };
        let base = s.classes[i] as usize * l.width;
        let levels = group_levels(&s.columns[i * ACTIVE..(i + 1) * ACTIVE]);
        slots.clear();
        slots.push(base);
        let groups = (0..N_GROUPS).filter(|&g| g != l.class_group);
        slots.extend(groups.enumerate().map(|(c, g)| base + 1 + l.offsets[c] + levels[g] as usize));
        for (f, cut) in l.cuts[l.group_cuts..].iter().enumerate() {
            let slot = base + 1 + l.offsets[l.group_cuts + f] + finer_value(f, &s.stamps[i]);
            let g = cut.refines.expect("a finer cut refines a group");
            level_of.entry(slot).or_insert(levels[g] as usize);
            slots.push(slot);
        }
        for &slot in &slots {
            let a = &mut acc[slot];
            a.n += 1;
            a.p += pi;
            a.y += y;
            a.model_var += pi * (1.0 - pi);
            *payer_sum.entry(slot).or_default() += y - pi;
        }
        if order.get(k + 1).is_none_or(|&j| cluster(j) != cluster(i)) {
            for (slot, r) in payer_sum.drain() {
                acc[slot].var += r * r;
            }
        }
    }
    (acc, level_of)
}

/// A cell from its sums; `whole`: its class's, for the error apart from the class's.
fn cell(class: DeclineClass, cut: &str, value: &str, level: Option<String>, a: &Acc, whole: Option<&Acc>) -> Cell {
    let n = a.n.max(1) as f64;
    let se = a.variance().sqrt() / n;
    let z = (a.testable() && se > 0.0).then(|| (a.y - a.p) / n / se);
    // A cell of more than half its class is judged by the rest of the class (its complement).
    let within = whole.filter(|w| a.testable() && se > 0.0 && 2 * a.n <= w.n).map(|w| {
        let share = a.n as f64 / w.n as f64;
        let apart = (a.y - a.p) / n - (w.y - w.p) / w.n as f64;
        (apart / (se * (1.0 - share).sqrt()), apart)
    });
    Cell {
        class: <&str>::from(class).to_string(),
        cut: cut.to_string(),
        value: value.to_string(),
        level,
        retries: a.n,
        predicted: a.p / n,
        observed: a.y / n,
        se,
        z,
        z_within: within.map(|w| w.0),
        apart: within.map(|w| w.1),
    }
}

/// The cells and level tests from the sums.
fn collect(l: &Layout, acc: &[Acc], level_of: &HashMap<usize, usize>, retries: usize) -> Residuals {
    let mut out = Residuals { retries, classes: Vec::new(), cells: Vec::new(), within: Vec::new() };
    for &class in <DeclineClass as strum::VariantArray>::VARIANTS {
        let base = class as usize * l.width;
        if acc[base].n == 0 {
            continue;
        }
        let whole = acc[base];
        out.classes.push(cell(class, "all", "all", None, &whole, None));
        for (c, cut) in l.cuts.iter().enumerate() {
            // Per model level: the finer values in it, for the agreement test.
            let mut by_level: Vec<Vec<(usize, &Acc)>> = vec![Vec::new(); cut.refines.map_or(0, |g| GROUP_SIZES[g])];
            for (v, value) in cut.values.iter().enumerate() {
                let slot = base + 1 + l.offsets[c] + v;
                let a = &acc[slot];
                if a.n == 0 {
                    continue;
                }
                let level = cut.refines.map(|g| level_name(g, level_of[&slot]));
                out.cells.push(cell(class, &cut.name, value, level, a, Some(&whole)));
                if cut.refines.is_some() {
                    by_level[level_of[&slot]].push((v, a));
                }
            }
            let Some(g) = cut.refines else { continue };
            for (level, vals) in by_level.iter().enumerate() {
                if let Some(w) = agreement(vals, &cut.values) {
                    let (class, cut, level) = (<&str>::from(class).to_string(), cut.name.clone(), level_name(g, level));
                    out.within.push(WithinLevel { class, cut, level, ..w });
                }
            }
        }
    }
    out
}

/// `group=level` for a feature group's level.
fn level_name(g: usize, level: usize) -> String {
    group_column(g, level).to_string()
}

/// The level's name alone (`7-9` of `local_hour=7-9`).
fn level_value(g: usize, level: usize) -> String {
    let name = group_column(g, level);
    name.split_once('=').map_or(name, |(_, v)| v).to_string()
}

/// The agreement test of one level's values: `None` with fewer than two testable values.
fn agreement(vals: &[(usize, &Acc)], names: &[String]) -> Option<WithinLevel> {
    let tested: Vec<&(usize, &Acc)> = vals.iter().filter(|(_, a)| a.testable() && a.variance() > 0.0).collect();
    if tested.len() < 2 {
        return None;
    }
    let (mut q, mut r_all, mut v_all, mut n_all, mut y_all, mut p_all) = (0.0, 0.0, 0.0, 0, 0.0, 0.0);
    for (_, a) in &tested {
        let r = a.y - a.p;
        q += r * r / a.variance();
        r_all += r;
        v_all += a.variance();
        n_all += a.n;
        y_all += a.y;
        p_all += a.p;
    }
    let chi2 = (q - r_all * r_all / v_all).max(0.0);
    let df = (tested.len() - 1) as f64;
    let level_error = (y_all - p_all) / n_all as f64;
    let (worst, err) = tested
        .iter()
        .map(|(v, a)| (*v, (a.y - a.p) / a.n as f64))
        .max_by(|x, y| (x.1 - level_error).abs().total_cmp(&(y.1 - level_error).abs()))
        .expect("two tested values");
    Some(WithinLevel {
        class: String::new(),
        cut: String::new(),
        level: String::new(),
        values: tested.len(),
        retries: n_all,
        chi2,
        score: wilson_hilferty(chi2, df),
        worst_value: names[worst].clone(),
        worst_error: err,
        level_error,
    })
}

/// A χ² on `df` degrees of freedom as an approximately standard normal score.
fn wilson_hilferty(chi2: f64, df: f64) -> f64 {
    let s = 2.0 / (9.0 * df);
    ((chi2 / df).cbrt() - (1.0 - s)) / s.sqrt()
}

/// Every cut's name: the feature groups (but the decline class, which every cut is per)
/// and the finer cuts.
pub fn cut_names() -> Vec<String> {
    let mut v: Vec<String> = group_names().into_iter().filter(|n| *n != "decline_class").map(String::from).collect();
    v.extend(finer_cut_names().into_iter().map(String::from));
    v
}

/// The finer cuts' names (`day_of_month_exact`…), in their order.
pub fn finer_cut_names() -> Vec<&'static str> {
    finer_cuts().into_iter().map(|(n, _, _)| n).collect()
}

/// The report for a terminal: per class, the flagged cells and levels, then the cuts asked for.
pub fn text(r: &Residuals, version: &str, window: &str, cuts: &[String]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "model {version}: {} retries {window}, scored as the model serves them\n", r.retries);
    let row = |c: &Cell| {
        let z = c.z.map_or("    –".to_string(), |z| format!("{z:+5.1}"));
        let within = c.z_within.map_or(String::new(), |z| format!(" {z:+6.1}"));
        format!(
            "{:>8} {:>9.3} {:>8.3} {:>+7.3} ±{:.3} {z}{within}{}",
            c.retries,
            c.predicted,
            c.observed,
            c.observed - c.predicted,
            c.se,
            if c.flagged() { "  *" } else { "" }
        )
    };
    let header = |first: &str| {
        format!("{first:<44} {:>8} {:>9} {:>8} {:>7}  {:>5}  {:>5} {:>6}", "retries", "predicted", "observed", "error", "SE", "z", "within")
    };
    let _ = writeln!(s, "{}", header("decline class"));
    for c in &r.classes {
        let _ = writeln!(s, "{:<44} {}", c.class, row(c));
    }
    let _ = writeln!(
        s,
        "(error = observed − predicted; SE clustered by payer; z = error / SE; within = a cell's error less its class's, in SE)"
    );
    let flagged = r.flagged();
    let cells = flagged.iter().filter(|c| c.cut != "all").count();
    let _ = writeln!(
        s,
        "\ncells whose error differs from their class's by at least {FLAG_Z} standard errors and {} points (of {} cells large enough to judge): {cells}",
        100.0 * MIN_ERROR,
        r.cells.iter().filter(|c| c.z.is_some()).count()
    );
    if cells > 0 {
        let _ = writeln!(s, "{}", header("  class cut=value"));
    }
    for c in flagged.iter().filter(|c| c.cut != "all").take(20) {
        let name = format!("{} {}={}", c.class, c.cut, c.value);
        let _ = writeln!(s, "  {name:<42} {}", row(c));
    }
    if cells > 20 {
        let _ = writeln!(s, "  … {} more (--json lists every cell)", cells - 20);
    }
    let levels = r.flagged_levels();
    let _ = writeln!(
        s,
        "\nmodel levels whose exact values disagree (χ² as a normal score ≥ {FLAG_Z}, a value {} points off the level; of {} levels tested): {}",
        100.0 * MIN_ERROR,
        r.within.len(),
        levels.len()
    );
    for w in &levels {
        let _ = writeln!(
            s,
            "  {} {} by {}: {} values, {} retries, χ² {:.1} on {} df (score {:.1}); furthest: {} at {:+.3} (the level {:+.3})",
            w.class,
            w.level,
            w.cut,
            w.values,
            w.retries,
            w.chi2,
            w.values - 1,
            w.score,
            w.worst_value,
            w.worst_error,
            w.level_error
        );
    }
    if !levels.is_empty() {
        let _ = writeln!(s, "  The model gives every value of such a level the same terms; the engine may pick the wrong part of it.");
    }
    for cut in cuts {
        let _ = writeln!(s, "\n{cut}:");
        let _ = writeln!(s, "{}", header("  class value [model level]"));
        for c in r.cells.iter().filter(|c| &c.cut == cut) {
            let level = c.level.as_ref().map_or(String::new(), |l| format!(" [{l}]"));
            let _ = writeln!(s, "  {:<42} {}", format!("{} {}{level}", c.class, c.value), row(c));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::features::SCHEMA;
    use rand::{Rng, SeedableRng};

    /// `n` funds retries, four per payer, at random local days, hours and spacings, each
    /// encoded at the levels its stamp falls in (other groups at random levels), scored
    /// P = 0.4 by a model that sees no more; success drawn with P = `truth(stamp)`.
    struct Set {
        columns: Vec<u16>,
        p: Vec<f64>,
        classes: Vec<DeclineClass>,
        succeeded: Vec<bool>,
        payers: Vec<u64>,
        stamps: Vec<Stamp>,
    }

    impl Set {
        fn scored(&self, from: usize) -> Scored<'_> {
            Scored {
                columns: &self.columns[from * ACTIVE..],
                p: &self.p[from..],
                classes: &self.classes[from..],
                succeeded: &self.succeeded[from..],
                payers: &self.payers[from..],
                stamps: &self.stamps[from..],
            }
        }
    }

    fn set(n: usize, seed: u64, truth: impl Fn(&Stamp) -> f64) -> Set {
        let slots = SCHEMA.slot_ranges();
        let slot_of = |group: &str| slots.iter().position(|r| SCHEMA.columns[r.start].starts_with(&format!("{group}="))).unwrap();
        let level = |x: f64, bounds: &[f64]| bounds.iter().position(|b| x < *b).unwrap_or(bounds.len());
        let (day, hour, since) = (slot_of("day_of_month"), slot_of("local_hour"), slot_of("hours_since_last"));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut out =
            Set { columns: Vec::new(), p: Vec::new(), classes: Vec::new(), succeeded: Vec::new(), payers: Vec::new(), stamps: Vec::new() };
        for i in 0..n {
            let stamp = Stamp {
                day_of_month: rng.random_range(1..=28),
                local_hour: rng.random_range(0..24),
                hours_since_last: rng.random_range(1..200),
            };
            let mut row: Vec<u16> = slots.iter().map(|r| rng.random_range(r.clone()) as u16).collect();
            row[day] = (slots[day].start + level(stamp.day_of_month as f64, &[6.0, 11.0, 16.0, 21.0, 26.0])) as u16;
            row[hour] = (slots[hour].start + level(stamp.local_hour as f64, &[4.0, 7.0, 10.0, 14.0, 18.0, 22.0])) as u16;
            row[since] = (slots[since].start + level(stamp.hours_since_last as f64, &[2.0, 6.0, 12.0, 24.0, 48.0, 96.0, 168.0])) as u16;
            out.columns.extend_from_slice(&row);
            out.p.push(0.4);
            out.classes.push(DeclineClass::SoftFunds);
            out.succeeded.push(rng.random::<f64>() < truth(&stamp));
            out.payers.push(i as u64 / 4);
            out.stamps.push(stamp);
        }
        out
    }

    #[test]
    fn a_right_model_flags_nothing() {
        let set = set(60_000, 7, |_| 0.4);
        let r = residuals(&set.scored(0));
        assert_eq!(r.retries, 60_000);
        assert_eq!(r.classes.len(), 1);
        let funds = &r.classes[0];
        assert_eq!((funds.class.as_str(), funds.retries), ("soft_funds", 60_000));
        assert!((funds.predicted - 0.4).abs() < 1e-9 && (funds.observed - 0.4).abs() < 0.01, "{funds:?}");
        assert!(r.flagged().is_empty(), "{:?}", r.flagged());
        assert!(r.flagged_levels().is_empty(), "{:?}", r.flagged_levels());
        // Every finer cut is there, each value inside one model level.
        let day15 = r.cells.iter().find(|c| c.cut == "day_of_month_exact" && c.value == "15").unwrap();
        assert_eq!(day15.level.as_deref(), Some("day_of_month=11-15"));
        let since = r.cells.iter().find(|c| c.cut == "hours_since_last_6h" && c.value == "96-102 h").unwrap();
        assert_eq!(since.level.as_deref(), Some("hours_since_last=96-168"));
        assert!(r.within.iter().any(|w| w.level == "local_hour=7-9"), "levels tested: {:?}", r.within);
    }

    #[test]
    fn a_bad_day_inside_a_level_is_flagged_there_and_only_there() {
        // Day 15 is a bill day: P 0.1 there, 0.4 everywhere else. The model (0.4) cannot
        // tell day 15 from days 11 to 14, which share its level.
        let set = set(60_000, 8, |s| if s.day_of_month == 15 { 0.1 } else { 0.4 });
        let r = residuals(&set.scored(0));
        let flagged: Vec<(String, String)> = r.flagged().iter().map(|c| (c.cut.clone(), c.value.clone())).collect();
        assert!(flagged.contains(&("day_of_month_exact".into(), "15".into())), "{flagged:?}");
        assert!(
            flagged.iter().all(|(cut, v)| cut == "all" || (cut == "day_of_month_exact" && v == "15") || cut == "day_of_month"),
            "{flagged:?}"
        );
        let levels: Vec<&str> = r.flagged_levels().iter().map(|w| w.level.as_str()).collect();
        assert_eq!(levels, ["day_of_month=11-15"]);
        let w = r.flagged_levels()[0];
        assert_eq!((w.worst_value.as_str(), w.values), ("15", 5));
        assert!((w.worst_error + 0.3).abs() < 0.05, "{w:?}");
        // The same set from the middle on: only those retries are scored.
        let half = residuals(&set.scored(30_000));
        assert_eq!(half.retries, 30_000);
        assert_eq!(half.classes[0].retries, 30_000);
    }

    #[test]
    fn the_wilson_hilferty_score_matches_chi2_quantiles() {
        // χ² quantiles (df, 0.999 quantile): the score is about 3.09 there.
        for (df, q) in [(4.0, 18.467), (23.0, 49.728), (29.0, 58.301)] {
            let z = wilson_hilferty(q, df);
            assert!((z - 3.09).abs() < 0.05, "df {df}: {z}");
        }
        // The median is about 0.
        assert!(wilson_hilferty(3.357, 4.0).abs() < 0.05);
    }
}
