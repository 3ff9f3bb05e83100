//! A random forest for regression. linfa-trees' `DecisionTree` is a classifier only and
//! linfa-ensemble bags classifiers, so regression trees are grown here: CART with the
//! variance-reduction criterion, exact splits on a random subset of features at each node
//! (a third of them, as is usual for regression), bootstrap samples per tree, trees grown in
//! parallel with rayon and averaged.

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

/// Grows `trees` trees on bootstrap samples, in parallel. Returns the trees and the
/// features' total variance reduction (for importances).
pub fn fit(
    x: &Matrix,
    y: &[f64],
    trees: usize,
    max_depth: usize,
    min_leaf: usize,
    seed: u64,
) -> (Vec<RegTree>, Vec<f64>) {
    let mtry = (x.cols / 3).max(1);
    let grown: Vec<(RegTree, Vec<f64>)> = (0..trees)
        .into_par_iter()
        .map(|t| {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_add(t as u64 * 0x9e37_79b9));
            let mut rows: Vec<usize> = (0..x.rows).map(|_| rng.gen_range(0..x.rows)).collect();
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
            (RegTree { nodes: g.nodes }, g.importance)
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
        let (trees, imp) = fit(&x, &y, 10, 6, 5, 1);
        let mae: f64 = (0..n)
            .map(|r| (trees.iter().map(|t| t.predict(&x, r)).sum::<f64>() / 10.0 - y[r]).abs())
            .sum::<f64>()
            / n as f64;
        assert!(mae < 0.2, "mae {mae}");
        assert!(imp[0] > 0.0);
    }
}
