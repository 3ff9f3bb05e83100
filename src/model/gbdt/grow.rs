//! Growing one tree leaf-wise: always split the leaf whose best split gains most, partitioning
//! its rows in place, until `num_leaves` leaves or nothing splits.

use super::*;

pub(super) struct Leaf {
    /// The leaf's rows are `indices[start..start + len]`.
    pub(super) start: usize,
    pub(super) len: usize,
    pub(super) sums: GradStats,
    pub(super) depth: usize,
    /// The leaf's node in the tree being built.
    pub(super) node: usize,
    /// Index of the leaf's histogram in the pool.
    pub(super) hist: usize,
    pub(super) best: Option<Split>,
    /// Output, learning rate included (set when the tree is complete).
    pub(super) value: f64,
}

/// A grown tree: nodes with indices local to the tree (root 0), leaf values by node, and depth.
pub(super) struct Tree {
    pub(super) nodes: Vec<Node>,
    pub(super) values: Vec<f64>,
    pub(super) depth: usize,
}

/// Grows trees over one binned matrix, reusing its buffers from tree to tree, with histograms of
/// kind `K`.
pub(super) struct Grower<'a, K: Hist> {
    pub(super) data: &'a BinnedData,
    pub(super) params: &'a GbdtParams,
    pub(super) rules: SplitRules,
    /// Row indices, grouped by leaf.
    pub(super) indices: Vec<u32>,
    pub(super) scratch: Vec<u32>,
    /// One histogram per leaf; leaf `k` of a tree is given buffer `k` when it appears.
    pub(super) hists: Vec<Vec<K::Bin>>,
    pub(super) leaves: Vec<Leaf>,
    /// The histograms' kind, as of the tree being grown.
    pub(super) kind: K,
    /// Spare histogram buffer the next root is assembled in.
    pub(super) root_hist: Vec<K::Bin>,
}

impl<'a, K: Hist> Grower<'a, K> {
    pub(super) fn new(data: &'a BinnedData, params: &'a GbdtParams, kind: K) -> Grower<'a, K> {
        let empty_hist = || vec![K::Bin::default(); kind.len(data.total_bins)];
        Grower {
            data,
            params,
            rules: SplitRules::new(params),
            indices: Vec::with_capacity(data.rows),
            scratch: vec![0; data.rows],
            hists: vec![empty_hist()],
            leaves: Vec::with_capacity(params.num_leaves),
            kind,
            root_hist: empty_hist(),
        }
    }

    /// Grows one tree on the gradients (represented as `kind` says), adding each split's gain to
    /// `importances`.
    pub(super) fn grow(&mut self, grad: &Gradients, kind: K, importances: &mut [f64]) -> Tree {
        self.indices.clear();
        self.indices.extend(0..self.data.rows as u32);
        let mut root_hist = std::mem::take(&mut self.root_hist);
        // Squared error after a first tree derives the root from that tree's leaves, as long as
        // the gradients' representation (`kind`) is unchanged since.
        let derivable = self.params.objective == Objective::SquaredError && !self.leaves.is_empty();
        if derivable && kind == self.kind {
            self.root_from_last_tree(&mut root_hist);
        } else {
            self.kind = kind;
            build_root_histogram(kind, self.data, &self.indices, grad, &mut root_hist);
        }
        // The root takes buffer 0; buffer 0's old contents become the next root's scratch.
        std::mem::swap(&mut self.hists[0], &mut root_hist);
        self.root_hist = root_hist;
        self.leaves.clear();

        let sums = self.feature_total(0, 0);
        let mut root = Leaf {
            start: 0,
            len: self.data.rows,
            sums,
            depth: 0,
            node: 0,
            hist: 0,
            best: None,
            value: 0.0,
        };
        let mut nodes = vec![Node::leaf(0)];
        root.best = self.find_split(&root);
        self.leaves.push(root);
        while self.leaves.len() < self.params.num_leaves {
            let Some(leaf) = self.best_leaf() else { break };
            let split = self.leaves[leaf]
                .best
                .expect("best_leaf returns leaves with a split");
            importances[split.feature] += split.gain;
            self.split_leaf(leaf, split, grad, &mut nodes);
        }
        let mut depth = 0;
        let mut values = vec![0.0; nodes.len()];
        for leaf in &mut self.leaves {
            let value = self.rules.leaf_value(leaf.sums, self.params.learning_rate);
            leaf.value = self.kind.representable(value);
            values[leaf.node] = leaf.value;
            depth = depth.max(leaf.depth);
        }
        Tree {
            nodes,
            values,
            depth,
        }
    }

    /// The leaf whose best split gains most (the first such leaf on ties, for determinism).
    pub(super) fn best_leaf(&self) -> Option<usize> {
        let mut best: Option<(usize, f64)> = None;
        for (i, leaf) in self.leaves.iter().enumerate() {
            if let Some(s) = leaf.best {
                if best.is_none_or(|(_, g)| s.gain > g) {
                    best = Some((i, s.gain));
                }
            }
        }
        best.map(|(i, _)| i)
    }

    pub(super) fn find_split(&self, leaf: &Leaf) -> Option<Split> {
        let too_deep = self.params.max_depth > 0 && leaf.depth >= self.params.max_depth;
        if too_deep || leaf.len < 2 * self.rules.min_data as usize {
            return None;
        }
        self.rules
            .best_split(self.data, self.kind, &self.hists[leaf.hist], leaf.sums)
    }

    /// Splits leaf `id`: partitions its rows, turns its node into a split node with two leaf
    /// children, and gives both children a histogram and a best split.
    pub(super) fn split_leaf(
        &mut self,
        id: usize,
        split: Split,
        grad: &Gradients,
        nodes: &mut Vec<Node>,
    ) {
        let (start, len, depth, node, parent_hist) = {
            let l = &self.leaves[id];
            (l.start, l.len, l.depth, l.node, l.hist)
        };
        let goes_left = left_table(
            self.data.bins[split.feature].nan_bin(),
            split.bin,
            split.default_left,
        );
        let n_left = partition(
            &mut self.indices[start..start + len],
            &mut self.scratch[start..start + len],
            &self.data.columns[split.feature],
            &goes_left,
        );
        debug_assert_eq!(n_left, split.left.n as usize);

        let (left_node, right_node) = (nodes.len(), nodes.len() + 1);
        nodes.push(Node::leaf(left_node));
        nodes.push(Node::leaf(right_node));
        let threshold = self.data.bins[split.feature].upper[split.bin];
        nodes[node] = Node::split(split.feature, threshold, split.default_left, left_node);

        // The smaller child gets a fresh histogram built from its rows; the larger one inherits
        // the parent's buffer, minus the smaller child's histogram.
        let fresh_hist = self.leaves.len();
        let mut left = Leaf {
            start,
            len: n_left,
            sums: split.left,
            depth: depth + 1,
            node: left_node,
            hist: parent_hist,
            best: None,
            value: 0.0,
        };
        let mut right = Leaf {
            start: start + n_left,
            len: len - n_left,
            sums: split.right,
            depth: depth + 1,
            node: right_node,
            hist: parent_hist,
            best: None,
            value: 0.0,
        };
        let small = if left.len <= right.len {
            &mut left
        } else {
            &mut right
        };
        small.hist = fresh_hist;
        let small_rows = &self.indices[small.start..small.start + small.len];
        if fresh_hist == self.hists.len() {
            self.hists
                .push(vec![K::Bin::default(); self.kind.len(self.data.total_bins)]);
        }
        let (built, parent) = two_hists(&mut self.hists, fresh_hist, parent_hist);
        build_histogram(self.kind, self.data, small_rows, grad, built);
        subtract_histogram(parent, built);

        left.best = self.find_split(&left);
        right.best = self.find_split(&right);
        self.leaves[id] = left;
        self.leaves.push(right);
    }

    /// A leaf's total sums, read off its histogram (every row falls in exactly one bin of each
    /// feature, NaN included), so that they agree exactly with what the split search sees.
    pub(super) fn feature_total(&self, hist: usize, feature: usize) -> GradStats {
        let first = self.data.offsets[feature];
        let bins = first..first + self.data.bins[feature].upper.len() + 1;
        bins.map(|b| self.kind.stats(&self.hists[hist], b))
            .fold(GradStats::default(), |a, b| a + b)
    }

    /// The rows and values of the leaves of the tree just grown.
    pub(super) fn leaf_rows(&self) -> LeafRows<'_> {
        LeafRows {
            indices: &self.indices,
            leaves: self
                .leaves
                .iter()
                .map(|l| (l.start, l.len, l.value))
                .collect(),
        }
    }

    /// For squared error, the next tree's root histogram without a pass over the rows: a row's
    /// gradient grows by exactly its leaf's value times its hessian (g = w (score - y), h = w), so
    /// bin by bin, root = sum over the last tree's leaves of (g + value * h, h, n).
    pub(super) fn root_from_last_tree(&self, out: &mut [K::Bin]) {
        out.fill(K::Bin::default());
        for leaf in &self.leaves {
            self.kind
                .add_shifted(out, &self.hists[leaf.hist], leaf.value);
        }
    }
}

/// Two distinct histograms of the pool, mutably.
pub(super) fn two_hists<B>(hists: &mut [Vec<B>], a: usize, b: usize) -> (&mut [B], &mut [B]) {
    assert_ne!(a, b);
    if a < b {
        let (lo, hi) = hists.split_at_mut(b);
        (&mut lo[a], &mut hi[0])
    } else {
        let (lo, hi) = hists.split_at_mut(a);
        (&mut hi[0], &mut lo[b])
    }
}

/// For each bin code, whether the split sends it left: a lookup instead of a branch on NaN.
pub(super) fn left_table(nan_bin: u8, threshold_bin: usize, default_left: bool) -> [bool; 256] {
    let mut table = [false; 256];
    for (b, goes_left) in table.iter_mut().enumerate() {
        *goes_left = if b == nan_bin as usize {
            default_left
        } else {
            b <= threshold_bin
        };
    }
    table
}

/// Stable partition of `idx` by `goes_left[column[row]]`, in place (`scratch` is as long as `idx`);
/// returns the number of rows sent left. Large ranges are partitioned in parallel blocks.
pub(super) fn partition(
    idx: &mut [u32],
    scratch: &mut [u32],
    column: &[u8],
    goes_left: &[bool; 256],
) -> usize {
    if idx.len() < PARTITION_PAR_MIN_ROWS {
        let n_left = partition_block_apart(idx, scratch, column, goes_left);
        let (lefts, rights) = idx.split_at_mut(n_left);
        place_runs(lefts, rights, scratch);
        return n_left;
    }
    // Each block writes its rows into its own part of `scratch`, left rows from the front and
    // right rows from the back; then every block copies its two runs to where they belong in
    // `idx`, all blocks at once (the runs' places in `idx` are disjoint, and `scratch` is only
    // read). Nothing is moved one block after another.
    let block = idx
        .len()
        .div_ceil(4 * rayon::current_num_threads())
        .max(PARTITION_PAR_MIN_ROWS / 4);
    let counts: Vec<usize> = idx
        .par_chunks(block)
        .zip(scratch.par_chunks_mut(block))
        .map(|(idx, scratch)| partition_block_apart(idx, scratch, column, goes_left))
        .collect();
    let n_left: usize = counts.iter().sum();
    let (mut lefts, mut rights) = idx.split_at_mut(n_left);
    let mut targets = Vec::with_capacity(counts.len());
    for (k, &n_left_k) in counts.iter().enumerate() {
        let n_right_k = block.min(scratch.len() - k * block) - n_left_k;
        let (l, rest) = std::mem::take(&mut lefts).split_at_mut(n_left_k);
        let (r, rest_r) = std::mem::take(&mut rights).split_at_mut(n_right_k);
        (lefts, rights) = (rest, rest_r);
        targets.push((l, r));
    }
    targets
        .into_par_iter()
        .zip(scratch.par_chunks(block))
        .for_each(|((l, r), from)| place_runs(l, r, from));
    n_left
}

/// Writes `idx`'s left rows to the front of `out` in order and its right rows to the back in
/// reverse order; returns the left count. Branch-free, because the direction is unpredictable
/// and a mispredicted branch costs more than a store: each row is written at both ends of the
/// part not yet filled, and only the matching end moves.
fn partition_block_apart(
    idx: &[u32],
    out: &mut [u32],
    column: &[u8],
    goes_left: &[bool; 256],
) -> usize {
    let (mut front, mut back) = (0, out.len());
    for &r in idx {
        let left = usize::from(goes_left[column[r as usize] as usize]);
        // front < back: one slot at least is still unfilled.
        out[front] = r;
        out[back - 1] = r;
        front += left;
        back -= 1 - left;
    }
    front
}

/// Copies the runs [`partition_block_apart`] wrote into `from` to `lefts` and `rights`, the right
/// run back in row order.
fn place_runs(lefts: &mut [u32], rights: &mut [u32], from: &[u32]) {
    lefts.copy_from_slice(&from[..lefts.len()]);
    (rights.iter_mut())
        .zip(from[lefts.len()..].iter().rev())
        .for_each(|(to, &row)| *to = row);
}
