//! Decision trees (linfa-trees) that give probabilities. linfa's trees predict a class only,
//! so after fitting we route the training rows to their leaves and keep each leaf's smoothed
//! positive rate; scoring walks the tree and reads it.

use std::collections::HashMap;

use linfa::prelude::*;
use linfa_trees::{DecisionTree, TreeNode};
use ndarray::{Array1, Array2, ShapeBuilder};
use serde::{Deserialize, Serialize};

use super::{Matrix, ModelError};

/// One fitted tree with the positive rate of each leaf, keyed by the leaf's path from the root
/// (1 = root, then ×2 for left and ×2+1 for right; depth is capped at 40 by the config).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbTree {
    tree: DecisionTree<f64, usize>,
    /// Columns of the full feature matrix this tree reads, in its own feature order.
    features: Vec<usize>,
    leaf_rate: HashMap<u64, f64>,
    /// Positive rate of the whole training set, for a leaf no training row reached.
    prior: f64,
}

impl ProbTree {
    /// Probability of the positive class for row `r` of `x`.
    pub fn predict(&self, x: &Matrix, r: usize) -> f64 {
        let id = leaf_of(self.tree.root_node(), |f| x.get(r, self.features[f]));
        self.leaf_rate.get(&id).copied().unwrap_or(self.prior)
    }

    pub fn importances(&self, n_features: usize) -> Vec<f64> {
        let mut out = vec![0.0; n_features];
        for (i, v) in self.tree.feature_importance().into_iter().enumerate() {
            if let Some(&f) = self.features.get(i) {
                out[f] += v;
            }
        }
        out
    }
}

fn leaf_of(node: &TreeNode<f64, usize>, value: impl Fn(usize) -> f64) -> u64 {
    let mut node = node;
    let mut id = 1u64;
    while !node.is_leaf() {
        let (feature, threshold, _) = node.split();
        let children = node.children();
        let go_left = value(feature) < threshold;
        let next = if go_left { children[0] } else { children[1] };
        match next {
            Some(child) => {
                id = id * 2 + u64::from(!go_left);
                node = child;
            }
            None => break,
        }
    }
    id
}

fn labels(y: &[f64]) -> Array1<usize> {
    y.iter().map(|v| usize::from(*v >= 0.5)).collect()
}

/// Balanced class weights. linfa prunes sibling leaves that predict the same class, so with a
/// rare positive class an unweighted tree collapses to one "negative" leaf and ranks nothing;
/// weighting positives by negatives/positives keeps the splits that separate risk levels.
/// Leaf rates are still counted on the unweighted rows, so scores stay probabilities.
pub fn balanced_weights(y: &[f64]) -> Vec<f64> {
    let pos = y.iter().filter(|v| **v >= 0.5).count().max(1) as f64;
    let neg = (y.len() as f64 - pos).max(1.0);
    y.iter()
        .map(|v| if *v >= 0.5 { neg / pos } else { 1.0 })
        .collect()
}

fn records(x: &Matrix, features: &[usize]) -> Array2<f64> {
    let mut data = Vec::with_capacity(x.rows * features.len());
    for &f in features {
        data.extend_from_slice(x.column(f));
    }
    Array2::from_shape_vec((x.rows, features.len()).f(), data).expect("shape matches data")
}

fn with_rates(
    tree: DecisionTree<f64, usize>,
    features: Vec<usize>,
    x: &Matrix,
    y: &[f64],
) -> ProbTree {
    let mut counts: HashMap<u64, (f64, f64)> = HashMap::new();
    for (r, &target) in y.iter().enumerate() {
        let id = leaf_of(tree.root_node(), |f| x.get(r, features[f]));
        let e = counts.entry(id).or_default();
        e.0 += target;
        e.1 += 1.0;
    }
    let prior = y.iter().sum::<f64>() / y.len().max(1) as f64;
    // Smoothed towards the prior (m-estimate with m = 10), so a small leaf does not claim 0 or 1.
    let leaf_rate = counts
        .into_iter()
        .map(|(id, (pos, n))| (id, (pos + 10.0 * prior) / (n + 10.0)))
        .collect();
    ProbTree {
        tree,
        features,
        leaf_rate,
        prior,
    }
}

pub fn fit_tree(
    x: &Matrix,
    y: &[f64],
    max_depth: usize,
    min_leaf: usize,
) -> Result<ProbTree, ModelError> {
    let features: Vec<usize> = (0..x.cols).collect();
    let weights: Array1<f32> = balanced_weights(y).into_iter().map(|w| w as f32).collect();
    let dataset = Dataset::new(records(x, &features), labels(y)).with_weights(weights);
    let tree = DecisionTree::params()
        .max_depth(Some(max_depth))
        .min_weight_leaf(min_leaf as f32)
        .min_weight_split((2 * min_leaf) as f32)
        .fit(&dataset)
        .map_err(|e| ModelError::Fit(e.to_string()))?;
    Ok(with_rates(tree, features, x, y))
}
