//! Gradients: per-row first and second derivatives of the loss at the current scores, and
//! their update after each tree.

use super::*;

/// Rows per parallel chunk in the per-row passes.
pub(super) const ROW_CHUNK: usize = 1 << 15;

/// Per-row first and second derivatives of the loss at the current scores. `f32` like LightGBM:
/// half the memory traffic, and histograms accumulate them in `f64`. Unweighted squared error
/// keeps them in fixed point instead ([`FixedGrad`]), and `grad` is empty.
pub(super) struct Gradients {
    pub(super) grad: Vec<f32>,
    /// `None` when every hessian is 1 (squared error without weights): a bin's hessian sum is
    /// then its row count, so histograms skip the hessian entirely.
    pub(super) hess: Option<Vec<f32>>,
    /// Raw training scores, kept for LogLoss only: squared-error gradients are updated in place.
    pub(super) score: Vec<f64>,
    pub(super) fixed: Option<FixedGrad>,
}

/// Unweighted squared-error gradients in fixed point: row `r`'s gradient is `q[r] * unit`.
///
/// With g = score - y and leaf values that are whole multiples of `unit` (the grower rounds
/// them, [`Hist::representable`]), every gradient stays an exact integer multiple of `unit` from
/// tree to tree: the targets are rounded to the grid once, at the start, by at most half a unit,
/// and nothing is quantized after that. The unit is small: the largest starting gradient is
/// `limit / 8` units (about 22,000 units for 3 million rows, 2^25 for a few thousand), so the
/// rounding is far below any model's error. Histogram bins sum `q` over up to every row in 40
/// bits ([`COUNT_BITS`] below them hold the count), which `limit` keeps from overflowing: should
/// a gradient ever grow past it, all are halved and the unit doubled.
pub(super) struct FixedGrad {
    pub(super) q: Vec<i32>,
    pub(super) unit: f64,
    /// The largest |q| whose sum over every row fits a bin.
    limit: i64,
}

impl FixedGrad {
    /// The fixed-point gradients at `base` for `y`, or None when the fit has too many rows for a
    /// bin's count, or no gradient is non-zero.
    pub(super) fn new(base: f64, y: &[f64]) -> Option<FixedGrad> {
        let rows = y.len();
        if rows == 0 || rows as u64 >= 1 << COUNT_BITS {
            return None;
        }
        let largest = y.iter().map(|v| (base - v).abs()).fold(0.0, f64::max);
        if !(largest.is_finite() && largest > 0.0) {
            return None;
        }
        let limit = FixedGrad::limit_for(rows);
        let unit = largest / (limit / 8) as f64;
        let q = y
            .par_iter()
            .map(|v| ((base - v) / unit).round() as i32)
            .collect();
        Some(FixedGrad { q, unit, limit })
    }

    /// The largest |q| for `rows` rows: their sum within 40 bits, and steps within `i32`.
    pub(super) fn limit_for(rows: usize) -> i64 {
        ((1i64 << (63 - COUNT_BITS)) / rows as i64).min(1 << 28)
    }

    /// The histogram kind that reads these gradients.
    pub(super) fn kind(&self) -> Fixed {
        Fixed { unit: self.unit }
    }

    /// Squared error: a row's gradient grows by its leaf's value, a whole number of units. Halves
    /// every gradient (doubling the unit) if one grew past `limit`; the next root is then built
    /// from the rows, since the kind changed.
    pub(super) fn add_tree(&mut self, tree: &LeafRows) {
        // Each leaf's value in units, once per leaf rather than per row.
        let steps = LeafRows {
            indices: tree.indices,
            leaves: (tree.leaves.iter())
                .map(|&(start, len, v)| (start, len, (v / self.unit).round()))
                .collect(),
        };
        let largest = self
            .q
            .par_chunks_mut(ROW_CHUNK)
            .enumerate()
            .map(|(k, q)| {
                let start = k * ROW_CHUNK;
                steps.for_each_in(start, q.len(), |r, step| {
                    q[r - start] = q[r - start].saturating_add(step as i32);
                });
                q.iter().map(|x| x.unsigned_abs()).max().unwrap_or(0)
            })
            .max()
            .unwrap_or(0);
        let mut shift = 0;
        while i64::from(largest >> shift) > self.limit / 2 {
            shift += 1;
        }
        if shift > 0 {
            let half = 1i32 << (shift - 1);
            self.q
                .par_iter_mut()
                .for_each(|x| *x = x.saturating_add(half) >> shift);
            self.unit *= f64::from(1u32 << shift);
        }
    }
}

impl Gradients {
    /// The gradients at the base score: in fixed point for unweighted squared error (where
    /// [`FixedGrad::new`] can), else [`Gradients::floating`].
    pub(super) fn new(
        objective: Objective,
        base_score: f64,
        y: &[f64],
        weights: Option<&[f64]>,
    ) -> Gradients {
        let fixed = match (objective, weights) {
            (Objective::SquaredError, None) => FixedGrad::new(base_score, y),
            _ => None,
        };
        match fixed {
            Some(fixed) => Gradients {
                grad: Vec::new(),
                hess: None,
                score: Vec::new(),
                fixed: Some(fixed),
            },
            None => Gradients::floating(objective, base_score, y, weights),
        }
    }

    /// The gradients at the base score as `f32`s.
    pub(super) fn floating(
        objective: Objective,
        base_score: f64,
        y: &[f64],
        weights: Option<&[f64]>,
    ) -> Gradients {
        let rows = y.len();
        let varying_hessian = objective == Objective::LogLoss || weights.is_some();
        let mut grads = Gradients {
            grad: vec![0.0; rows],
            hess: varying_hessian.then(|| vec![0.0; rows]),
            score: Vec::new(),
            fixed: None,
        };
        match objective {
            Objective::SquaredError => {
                // g = w (score - y), h = w.
                let weight = |r: usize| weights.map_or(1.0, |w| w[r]);
                grads
                    .grad
                    .par_iter_mut()
                    .enumerate()
                    .for_each(|(r, g)| *g = (weight(r) * (base_score - y[r])) as f32);
                if let Some(h) = &mut grads.hess {
                    h.par_iter_mut()
                        .enumerate()
                        .for_each(|(r, h)| *h = weight(r) as f32);
                }
            }
            Objective::LogLoss => {
                grads.score = vec![base_score; rows];
                grads.update_logloss(y, weights, None);
            }
        }
        grads
    }

    /// Moves the gradients on by the tree just grown (its leaves' rows and values).
    pub(super) fn add_tree(
        &mut self,
        objective: Objective,
        y: &[f64],
        weights: Option<&[f64]>,
        tree: &LeafRows,
    ) {
        match (objective, &mut self.fixed) {
            (Objective::SquaredError, Some(fixed)) => fixed.add_tree(tree),
            (Objective::SquaredError, None) => self.update_squared(tree),
            (Objective::LogLoss, _) => self.update_logloss(y, weights, Some(tree)),
        }
    }

    /// Squared error: a row's score grows by its leaf value `v`, so g = w (score - y) grows by
    /// `w v = h v`. Touching only the gradients (no scores, no targets) is less than half the
    /// memory traffic of recomputing them. (Rounding to `f32` after each tree drifts by about 1e-7
    /// relative per tree, the order of the `f32` rounding of the gradients themselves.)
    pub(super) fn update_squared(&mut self, tree: &LeafRows) {
        let hess = self.hess.as_deref();
        self.grad
            .par_chunks_mut(ROW_CHUNK)
            .enumerate()
            .for_each(|(k, g)| {
                let start = k * ROW_CHUNK;
                tree.for_each_in(start, g.len(), |r, v| {
                    let step = hess.map_or(v, |h| v * f64::from(h[r]));
                    g[r - start] = (f64::from(g[r - start]) + step) as f32;
                });
            });
    }

    /// LogLoss: adds the last tree (if any) to the scores, then p = sigmoid(score),
    /// g = w (p - y), h = w p (1 - p).
    pub(super) fn update_logloss(
        &mut self,
        y: &[f64],
        weights: Option<&[f64]>,
        last_tree: Option<&LeafRows>,
    ) {
        let hess = self.hess.as_mut().expect("LogLoss keeps hessians");
        self.grad
            .par_chunks_mut(ROW_CHUNK)
            .zip(hess.par_chunks_mut(ROW_CHUNK))
            .zip(self.score.par_chunks_mut(ROW_CHUNK))
            .enumerate()
            .for_each(|(k, ((g, h), score))| {
                let start = k * ROW_CHUNK;
                if let Some(tree) = last_tree {
                    tree.for_each_in(start, score.len(), |r, v| score[r - start] += v);
                }
                for (i, ((g, h), s)) in g.iter_mut().zip(h.iter_mut()).zip(score.iter()).enumerate()
                {
                    let r = start + i;
                    let w = weights.map_or(1.0, |w| w[r]);
                    let p = sigmoid(*s);
                    *g = (w * (p - y[r])) as f32;
                    *h = (w * p * (1.0 - p)) as f32;
                }
            });
    }
}

/// The rows of each leaf of a grown tree (sorted, as the grower keeps them) with the leaf's value.
pub(super) struct LeafRows<'a> {
    pub(super) indices: &'a [u32],
    /// (start, len, value) of each leaf's range in `indices`.
    pub(super) leaves: Vec<(usize, usize, f64)>,
}

impl LeafRows<'_> {
    /// Calls `f(row, value)` for every row in `start..start + len`. Each leaf's rows are sorted, so
    /// two binary searches find the ones in range: row chunks can then be updated in parallel,
    /// each writing only its own rows, with the writes landing in a cache-resident chunk.
    pub(super) fn for_each_in(&self, start: usize, len: usize, mut f: impl FnMut(usize, f64)) {
        let (lo, hi) = (start as u32, (start + len) as u32);
        for &(leaf_start, leaf_len, value) in &self.leaves {
            let rows = &self.indices[leaf_start..leaf_start + leaf_len];
            let from = rows.partition_point(|&r| r < lo);
            let to = rows.partition_point(|&r| r < hi);
            for &r in &rows[from..to] {
                f(r as usize, value);
            }
        }
    }
}
