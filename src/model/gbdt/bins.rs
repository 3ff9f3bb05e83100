//! Binning: each feature's bin edges from a sample of its values, and the training matrix as
//! `u8` bin codes (column-major to partition leaves, row-major to build histograms).

use super::*;

/// splitmix64: a tiny, good-enough PRNG for choosing the rows that bin edges are computed from.
pub(super) struct SplitMix64(pub(super) u64);

impl SplitMix64 {
    pub(super) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(super) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `k` of the rows `0..n`, ascending, each subset equally likely (Knuth's selection sampling).
pub(super) fn sample_rows(n: usize, k: usize, seed: u64) -> Vec<usize> {
    if k >= n {
        return (0..n).collect();
    }
    let mut rng = SplitMix64(seed);
    let mut out = Vec::with_capacity(k);
    for i in 0..n {
        let need = k - out.len();
        if need == 0 {
            break;
        }
        if ((n - i) as f64) * rng.next_f64() < need as f64 {
            out.push(i);
        }
    }
    out
}

/// Bin edges of one feature: bin `b` holds the values in `(upper[b - 1], upper[b]]`; the last
/// edge is `f64::MAX` (finite, so that models serialize to JSON) and NaN has bin `upper.len()`.
pub(super) struct FeatureBins {
    pub(super) upper: Vec<f64>,
}

impl FeatureBins {
    /// Edges from a sample of the feature's values (NaNs are ignored).
    pub(super) fn from_sample(mut values: Vec<f64>, max_bins: usize) -> FeatureBins {
        values.retain(|v| !v.is_nan());
        values.sort_unstable_by(f64::total_cmp);
        let (distinct, counts) = distinct_with_counts(&values);
        FeatureBins {
            upper: greedy_edges(&distinct, &counts, max_bins),
        }
    }

    pub(super) fn nan_bin(&self) -> u8 {
        self.upper.len() as u8
    }

    pub(super) fn bin(&self, v: f64) -> u8 {
        if v.is_nan() {
            self.nan_bin()
        } else {
            // std's binary search is branch-free; measured 4x faster than a hand-written one here.
            self.upper.partition_point(|&u| u < v) as u8
        }
    }
}

/// Distinct values of a sorted slice with their multiplicities (-0.0 and 0.0 are one value).
pub(super) fn distinct_with_counts(sorted: &[f64]) -> (Vec<f64>, Vec<usize>) {
    let mut values: Vec<f64> = Vec::new();
    let mut counts: Vec<usize> = Vec::new();
    for &v in sorted {
        match values.last() {
            Some(&last) if last == v => *counts.last_mut().unwrap() += 1,
            _ => {
                values.push(v);
                counts.push(1);
            }
        }
    }
    (values, counts)
}

/// Upper bin edges over distinct values: one bin per value when they fit, otherwise bins of about
/// equal count, where a value more frequent than a bin's share gets a bin of its own.
pub(super) fn greedy_edges(values: &[f64], counts: &[usize], max_bins: usize) -> Vec<f64> {
    let k = values.len();
    let mut upper = Vec::with_capacity(k.min(max_bins));
    let mut remaining: usize = counts.iter().sum();
    let mut in_bin = 0;
    for i in 0..k.saturating_sub(1) {
        in_bin += counts[i];
        let bins_left = max_bins - upper.len(); // including the bin being filled
        if bins_left <= 1 {
            break;
        }
        let target = remaining as f64 / bins_left as f64;
        let few_values_left = k - 1 - i < bins_left; // every remaining value can have its own bin
        if few_values_left || in_bin as f64 >= target || counts[i + 1] as f64 >= target {
            upper.push(midpoint(values[i], values[i + 1]));
            remaining -= in_bin;
            in_bin = 0;
        }
    }
    upper.push(f64::MAX);
    upper
}

/// A threshold `t` with `a <= t < b`, so that `a` bins left and `b` right.
pub(super) fn midpoint(a: f64, b: f64) -> f64 {
    let m = a / 2.0 + b / 2.0;
    if m >= b || m < a {
        a
    } else {
        m
    }
}

/// The training matrix as bin codes.
pub(super) struct BinnedData {
    pub(super) rows: usize,
    pub(super) bins: Vec<FeatureBins>,
    /// Column-major codes (one column per feature), for partitioning a leaf by its split feature.
    pub(super) columns: Vec<Vec<u8>>,
    /// Row-major codes (`cols` bytes per row), for histograms: one row's codes share a cache line.
    pub(super) row_major: Vec<u8>,
    /// Start of each feature's bins in a histogram; feature `f` has `upper.len() + 1` bins.
    pub(super) offsets: Vec<usize>,
    pub(super) total_bins: usize,
    /// Features a split is looked for in: more than one bin or any NaN (in the binning sample).
    pub(super) splittable: Vec<bool>,
    /// Rows in each bin (`offsets` layout) over all rows: the root's counts, for every tree.
    pub(super) root_counts: Vec<f64>,
}

/// Rows binned per parallel task.
const BIN_CHUNK_ROWS: usize = 1 << 14;

impl BinnedData {
    /// Bins a column-major matrix (feature `c` of row `r` at `x[c * rows + r]`).
    pub(super) fn new(
        x: &[f64],
        rows: usize,
        cols: usize,
        max_bins: usize,
        seed: u64,
    ) -> BinnedData {
        let fill = |r: usize, row: &mut Vec<f64>| row.extend((0..cols).map(|c| x[c * rows + r]));
        BinnedData::from_rows(rows, cols, &fill, max_bins, seed)
    }

    /// Bins rows that `fill(r, buf)` writes into a cleared buffer (`cols` values), without a
    /// matrix of `f64`s: edges from the sampled rows, then each row is written and turned into
    /// codes in one pass. A training set is then 1 byte per value instead of 8 (twice 8 while
    /// a matrix is transposed), and is never written out and read back.
    pub(super) fn from_rows(
        rows: usize,
        cols: usize,
        fill: &(dyn Fn(usize, &mut Vec<f64>) + Sync),
        max_bins: usize,
        seed: u64,
    ) -> BinnedData {
        let sample = sample_rows(rows, BIN_SAMPLE_ROWS, seed);
        let mut sampled = vec![0.0; sample.len() * cols];
        sampled
            .par_chunks_mut(cols * BIN_CHUNK_ROWS)
            .zip(sample.par_chunks(BIN_CHUNK_ROWS))
            .for_each_init(
                || Vec::with_capacity(cols),
                |buf, (block, rows)| {
                    for (slot, &r) in block.chunks_exact_mut(cols).zip(rows) {
                        buf.clear();
                        fill(r, buf);
                        slot.copy_from_slice(buf);
                    }
                },
            );
        let bins: Vec<FeatureBins> = (0..cols)
            .into_par_iter()
            .map(|c| {
                let values = sampled.iter().skip(c).step_by(cols).copied().collect();
                FeatureBins::from_sample(values, max_bins)
            })
            .collect();
        drop(sampled);
        let mut row_major = vec![0u8; rows * cols];
        row_major
            .par_chunks_mut(cols * BIN_CHUNK_ROWS)
            .enumerate()
            .for_each_init(
                || Vec::with_capacity(cols),
                |buf, (k, block)| {
                    for (i, codes) in block.chunks_exact_mut(cols).enumerate() {
                        buf.clear();
                        fill(k * BIN_CHUNK_ROWS + i, buf);
                        for ((code, &v), fb) in codes.iter_mut().zip(buf.iter()).zip(&bins) {
                            *code = fb.bin(v);
                        }
                    }
                },
            );
        let columns = columns_of(&row_major, rows, cols);
        let mut offsets = Vec::with_capacity(cols);
        let mut total_bins = 0;
        for fb in &bins {
            offsets.push(total_bins);
            total_bins += fb.upper.len() + 1;
        }
        let splittable = columns
            .par_iter()
            .zip(&bins)
            .map(|(col, fb)| {
                let nan = fb.nan_bin();
                fb.upper.len() > 1 || (col.contains(&nan) && col.iter().any(|&b| b != nan))
            })
            .collect();
        let root_counts = columns
            .par_iter()
            .zip(&bins)
            .flat_map_iter(|(col, fb)| {
                let mut counts = vec![0.0; fb.upper.len() + 1];
                col.iter().for_each(|&b| counts[b as usize] += 1.0);
                counts
            })
            .collect();
        BinnedData {
            rows,
            bins,
            columns,
            row_major,
            offsets,
            total_bins,
            splittable,
            root_counts,
        }
    }

    pub(super) fn cols(&self) -> usize {
        self.bins.len()
    }
}

/// The column-major copy of row-major codes: one column per feature.
pub(super) fn columns_of(row_major: &[u8], rows: usize, cols: usize) -> Vec<Vec<u8>> {
    (0..cols)
        .into_par_iter()
        .map(|c| (0..rows).map(|r| row_major[r * cols + c]).collect())
        .collect()
}
