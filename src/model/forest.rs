//! Random forests, grown here: CART with the variance-reduction criterion, exact splits on a
//! random subset of features at each node, a bootstrap sample per tree, trees grown in
//! parallel with rayon and averaged. Regression forests average leaf means. Classification
//! forests grow the same trees on 0/1 targets from a bootstrap drawn in proportion to the row
//! weights (balanced class weights, so a rare positive class still shapes the splits), then
//! set every leaf to the smoothed positive rate of the unweighted training rows that reach it,
//! so scores stay probabilities. (linfa-ensemble rebuilds each bootstrap without its weights,
//! which silently dropped the class weights, and grows its trees one at a time.)

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::Matrix;

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Node {
    Leaf(f64),
    Split {
        feature: u32,
        threshold: f64,
        left: u32,
        right: u32,
    },
}

/// One regression tree, stored as a flat node list (node 0 is the root).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegTree {
    nodes: Vec<Node>,
}

impl RegTree {
    pub fn predict(&self, x: &Matrix, r: usize) -> f64 {
        let mut i = 0usize;
        loop {
            match &self.nodes[i] {
                Node::Leaf(v) => return *v,
                Node::Split {
                    feature,
                    threshold,
                    left,
                    right,
                } => {
                    i = if x.get(r, *feature as usize) <= *threshold {
                        *left as usize
                    } else {
                        *right as usize
                    }
                }
            }
        }
    }
}

impl RegTree {
    fn leaf(&self, x: &Matrix, r: usize) -> usize {
        let mut i = 0usize;
        while let Node::Split {
            feature,
            threshold,
            left,
            right,
        } = &self.nodes[i]
        {
            i = if x.get(r, *feature as usize) <= *threshold {
                *left as usize
            } else {
                *right as usize
            };
        }
        i
    }

    /// Sets every leaf to the positive rate of the (unweighted) rows reaching it, smoothed
    /// towards the overall rate (an m-estimate with m = 10) so a small leaf never claims 0 or 1.
    fn set_leaf_rates(&mut self, x: &Matrix, y: &[f64]) {
        let prior = y.iter().sum::<f64>() / y.len().max(1) as f64;
        let mut counts = vec![(0.0, 0.0); self.nodes.len()];
        for (r, target) in y.iter().enumerate() {
            let c = &mut counts[self.leaf(x, r)];
            c.0 += target;
            c.1 += 1.0;
        }
        for (node, (pos, n)) in self.nodes.iter_mut().zip(counts) {
            if let Node::Leaf(v) = node {
                *v = (pos + 10.0 * prior) / (n + 10.0);
            }
        }
    }
}

struct Grower<'a> {
    x: &'a Matrix,
    y: &'a [f64],
    max_depth: usize,
    min_leaf: usize,
    mtry: usize,
    nodes: Vec<Node>,
    importance: Vec<f64>,
}

impl Grower<'_> {
    fn grow(&mut self, rows: &mut [usize], depth: usize, rng: &mut StdRng) -> u32 {
        let id = self.nodes.len() as u32;
        let n = rows.len() as f64;
        let mean = rows.iter().map(|&r| self.y[r]).sum::<f64>() / n;
        self.nodes.push(Node::Leaf(mean));
        if depth >= self.max_depth || rows.len() < 2 * self.min_leaf {
            return id;
        }
        let mut features: Vec<usize> = (0..self.x.cols).collect();
        features.shuffle(rng);
        let total: f64 = rows.iter().map(|&r| self.y[r]).sum();
        let parent_sse_part = total * total / n;
        let mut best: Option<(f64, usize, f64)> = None; // (gain, feature, threshold)
        for &f in features.iter().take(self.mtry) {
            let col = self.x.column(f);
            rows.sort_unstable_by(|a, b| col[*a].total_cmp(&col[*b]));
            let mut left_sum = 0.0;
            for i in 0..rows.len() - 1 {
                left_sum += self.y[rows[i]];
                let nl = (i + 1) as f64;
                if i + 1 < self.min_leaf || rows.len() - i - 1 < self.min_leaf {
                    continue;
                }
                let (v, next) = (col[rows[i]], col[rows[i + 1]]);
                if v == next {
                    continue;
                }
                let right_sum = total - left_sum;
                // SSE reduction = sum_l²/n_l + sum_r²/n_r - total²/n.
                let gain =
                    left_sum * left_sum / nl + right_sum * right_sum / (n - nl) - parent_sse_part;
                if best.is_none_or(|b| gain > b.0) {
                    best = Some((gain, f, (v + next) / 2.0));
                }
            }
        }
        let Some((gain, feature, threshold)) = best.filter(|b| b.0 > 1e-12) else {
            return id;
        };
        self.importance[feature] += gain;
        let col = self.x.column(feature);
        let mut split = 0;
        for i in 0..rows.len() {
            if col[rows[i]] <= threshold {
                rows.swap(i, split);
                split += 1;
            }
        }
        let (l, r) = rows.split_at_mut(split);
        let left = self.grow(l, depth + 1, rng);
        let right = self.grow(r, depth + 1, rng);
        self.nodes[id as usize] = Node::Split {
            feature: feature as u32,
            threshold,
            left,
            right,
        };
        id
    }
}

/// The forest's shape: how many trees, how deep, and how leaves are set.
#[derive(Debug, Clone, Copy)]
pub struct ForestParams {
    pub trees: usize,
    pub max_depth: usize,
    pub min_leaf: usize,
    pub seed: u64,
    /// Classification: features tried per split is sqrt(cols) (regression: cols / 3), and
    /// leaves hold smoothed positive rates of the unweighted rows.
    pub classification: bool,
}

/// Grows `p.trees` trees on bootstrap samples, in parallel; with `weights`, each bootstrap
/// draws rows in proportion to them. Returns the trees and the features' total variance
/// reduction (for importances).
pub fn fit(
    x: &Matrix,
    y: &[f64],
    weights: Option<&[f64]>,
    p: ForestParams,
) -> (Vec<RegTree>, Vec<f64>) {
    let (trees, max_depth, min_leaf, seed) = (p.trees, p.max_depth, p.min_leaf, p.seed);
    let mtry = if p.classification {
        ((x.cols as f64).sqrt().ceil() as usize).max(1)
    } else {
        (x.cols / 3).max(1)
    };
    // Cumulative weights, for drawing rows in proportion to them.
    let cumulative: Option<Vec<f64>> = weights.map(|w| {
        w.iter()
            .scan(0.0, |acc, v| {
                *acc += v.max(0.0);
                Some(*acc)
            })
            .collect()
    });
    let draw = |rng: &mut StdRng| -> usize {
        match &cumulative {
            Some(c) => {
                let total = c.last().copied().unwrap_or(0.0);
                let u = rng.gen::<f64>() * total;
                c.partition_point(|v| *v <= u).min(x.rows - 1)
            }
            None => rng.gen_range(0..x.rows),
        }
    };
    let grown: Vec<(RegTree, Vec<f64>)> = (0..trees)
        .into_par_iter()
        .map(|t| {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_add(t as u64 * 0x9e37_79b9));
            let mut rows: Vec<usize> = (0..x.rows).map(|_| draw(&mut rng)).collect();
            let mut g = Grower {
                x,
                y,
                max_depth,
                min_leaf: min_leaf.max(1),
                mtry,
                nodes: Vec::new(),
                importance: vec![0.0; x.cols],
            };
            g.grow(&mut rows, 0, &mut rng);
            let mut tree = RegTree { nodes: g.nodes };
            if p.classification {
                tree.set_leaf_rates(x, y);
            }
            (tree, g.importance)
        })
        .collect();
    let mut importance = vec![0.0; x.cols];
    let mut out = Vec::with_capacity(grown.len());
    for (tree, imp) in grown {
        for (a, b) in importance.iter_mut().zip(imp) {
            *a += b;
        }
        out.push(tree);
    }
    (out, importance)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_a_step_function_a_line_cannot() {
        let n = 2000;
        let x0: Vec<f64> = (0..n).map(|i| i as f64 / n as f64).collect();
        let y: Vec<f64> = x0
            .iter()
            .map(|v| if *v < 0.5 { 0.0 } else { 10.0 })
            .collect();
        let x = Matrix::from_columns(vec![x0], n);
        let p = ForestParams {
            trees: 10,
            max_depth: 6,
            min_leaf: 5,
            seed: 1,
            classification: false,
        };
        let (trees, imp) = fit(&x, &y, None, p);
        let mae: f64 = (0..n)
            .map(|r| (trees.iter().map(|t| t.predict(&x, r)).sum::<f64>() / 10.0 - y[r]).abs())
            .sum::<f64>()
            / n as f64;
        assert!(mae < 0.2, "mae {mae}");
        assert!(imp[0] > 0.0);
    }

    /// 4% positives, most of them in a corner (4% of the rows) that two features find. With
    /// balanced class weights the bootstrap holds enough positives for a leaf to isolate the
    /// corner; without, the corner is smaller than `min_leaf` and large leaves swallow it.
    #[test]
    fn class_weights_shape_a_classification_forest() {
        use rand::{Rng, SeedableRng};
        let n = 20_000;
        let mut rng = StdRng::seed_from_u64(5);
        let cols: Vec<Vec<f64>> = (0..6)
            .map(|_| (0..n).map(|_| rng.gen::<f64>()).collect())
            .collect();
        let y: Vec<f64> = (0..n)
            .map(|r| {
                let risk = cols[0][r] > 0.8 && cols[1][r] > 0.8;
                let p = if risk { 0.7 } else { 0.012 };
                f64::from(rng.gen::<f64>() < p)
            })
            .collect();
        let x = Matrix::from_columns(cols, n);
        let rate = y.iter().sum::<f64>() / n as f64;
        assert!((0.02..0.06).contains(&rate), "positive rate {rate}");
        let pos = y.iter().filter(|v| **v > 0.5).count() as f64;
        let w: Vec<f64> = y
            .iter()
            .map(|v| {
                if *v > 0.5 {
                    (n as f64 - pos) / pos
                } else {
                    1.0
                }
            })
            .collect();
        let p = ForestParams {
            trees: 30,
            max_depth: 4,
            min_leaf: 1000,
            seed: 3,
            classification: true,
        };
        // The mean score in the corner, where 70% are positive, and the log loss overall.
        let judge = |trees: &[RegTree]| {
            let pred: Vec<f64> = (0..n)
                .map(|r| trees.iter().map(|t| t.predict(&x, r)).sum::<f64>() / trees.len() as f64)
                .collect();
            assert!(pred.iter().all(|v| (0.0..=1.0).contains(v)));
            let corner: Vec<f64> = (0..n)
                .filter(|&r| x.get(r, 0) > 0.8 && x.get(r, 1) > 0.8)
                .map(|r| pred[r])
                .collect();
            let corner_mean = corner.iter().sum::<f64>() / corner.len() as f64;
            (corner_mean, crate::model::metrics::log_loss(&y, &pred))
        };
        let (weighted, _) = fit(&x, &y, Some(&w), p);
        let (plain, _) = fit(&x, &y, None, p);
        let ((c_w, ll_w), (c_p, ll_p)) = (judge(&weighted), judge(&plain));
        assert!(
            c_w > c_p + 0.1 && ll_w < ll_p,
            "weighted: corner {c_w:.3}, log loss {ll_w:.4}; unweighted: corner {c_p:.3}, log loss {ll_p:.4}"
        );
    }
}
