//! Drift against the training data: a [`Reference`] stored with every model (decile bin edges
//! of each numeric feature and of the score with the training shares, the share of each
//! category, the row count) and the population stability index of a run's inputs and scores
//! against it: PSI = Σ (p − q) · ln(p / q) over the bins, with p the run's share and q the
//! training share, each floored at 0.0001 so that an empty bin counts without dividing by
//! zero. Rule of thumb: below 0.1 stable, 0.1 to 0.25 moving, above 0.25 shifted.

use std::collections::BTreeMap;

use polars::prelude::*;
use serde::{Deserialize, Serialize};

/// Bins of the numeric references: deciles.
const BINS: usize = 10;
/// The least share a bin counts with.
const FLOOR: f64 = 1e-4;

/// A numeric column at training time: inner bin edges (a value `v` falls in the first bin
/// whose edge is above it) and the share of training rows in each bin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Numeric {
    pub edges: Vec<f64>,
    pub shares: Vec<f64>,
}

/// What a model was trained on, for drift.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    pub rows: usize,
    pub numeric: BTreeMap<String, Numeric>,
    pub categorical: BTreeMap<String, BTreeMap<String, f64>>,
    pub score: Option<Numeric>,
    /// The mean score on the holdout (`gate.max_score_shift`); None for models stored before.
    #[serde(default)]
    pub score_mean: Option<f64>,
}

fn bin_of(edges: &[f64], v: f64) -> usize {
    edges.partition_point(|e| *e <= v)
}

impl Numeric {
    /// Decile edges of the finite values (distinct, so ties share a bin) and their shares.
    pub fn of(values: &[f64]) -> Self {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        let mut edges: Vec<f64> = (1..BINS)
            .filter_map(|i| v.get(i * v.len() / BINS).copied())
            .collect();
        edges.dedup();
        let shares = shares(&edges, &v);
        Numeric { edges, shares }
    }

    /// PSI of `values` against this reference.
    pub fn psi(&self, values: &[f64]) -> f64 {
        psi(&self.shares, &shares(&self.edges, values))
    }
}

fn shares(edges: &[f64], values: &[f64]) -> Vec<f64> {
    let mut counts = vec![0usize; edges.len() + 1];
    let mut n = 0;
    for v in values.iter().filter(|v| v.is_finite()) {
        counts[bin_of(edges, *v)] += 1;
        n += 1;
    }
    counts
        .into_iter()
        .map(|c| c as f64 / n.max(1) as f64)
        .collect()
}

/// PSI between two distributions over the same bins: `expected` (training), `actual` (run).
pub fn psi(expected: &[f64], actual: &[f64]) -> f64 {
    expected
        .iter()
        .zip(actual)
        .map(|(q, p)| {
            let (q, p) = (q.max(FLOOR), p.max(FLOOR));
            (p - q) * (p / q).ln()
        })
        .sum()
}

/// The share of each category among `values`.
pub fn category_shares<'a>(values: impl Iterator<Item = &'a str>) -> BTreeMap<String, f64> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut n = 0;
    for v in values {
        *counts.entry(v.to_string()).or_default() += 1;
        n += 1;
    }
    counts
        .into_iter()
        .map(|(k, c)| (k, c as f64 / n.max(1) as f64))
        .collect()
}

/// PSI of a run's category shares against the training ones; categories new to the run and
/// ones it lacks count as bins too.
pub fn category_psi(reference: &BTreeMap<String, f64>, run: &BTreeMap<String, f64>) -> f64 {
    let mut keys: Vec<&String> = reference.keys().chain(run.keys()).collect();
    keys.sort();
    keys.dedup();
    let q: Vec<f64> = keys
        .iter()
        .map(|k| reference.get(*k).copied().unwrap_or(0.0))
        .collect();
    let p: Vec<f64> = keys
        .iter()
        .map(|k| run.get(*k).copied().unwrap_or(0.0))
        .collect();
    psi(&q, &p)
}

/// Values kept per numeric column for the reference: an even sample (sorting millions of rows
/// per feature would cost more than the deciles gain).
const SAMPLE: usize = 100_000;

fn numbers(df: &DataFrame, name: &str) -> PolarsResult<Vec<f64>> {
    let col = df.column(name)?.cast(&DataType::Float64)?;
    let all = col.f64()?;
    let stride = all.len().div_ceil(SAMPLE).max(1);
    Ok(all.iter().step_by(stride).flatten().collect())
}

fn levels(df: &DataFrame, name: &str) -> PolarsResult<BTreeMap<String, f64>> {
    let col = df.column(name)?.cast(&DataType::String)?;
    let text = col.str()?;
    Ok(category_shares(text.iter().map(|v| v.unwrap_or("NULL"))))
}

impl Reference {
    /// The reference of a model trained on `df`'s columns `numeric` and `categorical`, whose
    /// scores on its holdout were `scores`.
    pub fn of_frame(
        df: &DataFrame,
        numeric: &[String],
        categorical: &[String],
        scores: &[f64],
    ) -> PolarsResult<Self> {
        Ok(Reference {
            rows: df.height(),
            numeric: numeric
                .iter()
                .map(|c| Ok((c.clone(), Numeric::of(&numbers(df, c)?))))
                .collect::<PolarsResult<_>>()?,
            categorical: categorical
                .iter()
                .map(|c| Ok((c.clone(), levels(df, c)?)))
                .collect::<PolarsResult<_>>()?,
            score: (!scores.is_empty()).then(|| Numeric::of(scores)),
            score_mean: (!scores.is_empty())
                .then(|| scores.iter().sum::<f64>() / scores.len() as f64),
        })
    }

    /// PSI of every referenced column of `df` and of `scores` (named `score`), in that order.
    pub fn psi_of_frame(&self, df: &DataFrame, scores: &[f64]) -> PolarsResult<Vec<(String, f64)>> {
        let mut out = Vec::new();
        for (name, r) in &self.numeric {
            out.push((name.clone(), r.psi(&numbers(df, name)?)));
        }
        for (name, shares) in &self.categorical {
            out.push((name.clone(), category_psi(shares, &levels(df, name)?)));
        }
        if let Some(r) = &self.score {
            out.push(("score".to_string(), r.psi(scores)));
        }
        Ok(out)
    }
}

/// The feature with the highest PSI, if any.
pub fn worst(psi: &[(String, f64)]) -> Option<&(String, f64)> {
    psi.iter().max_by(|a, b| a.1.total_cmp(&b.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psi_of_a_known_shift_matches_a_hand_computation() {
        // Training: 0..100, deciles edges 10, 20, ..., 90: a tenth in each bin.
        let train: Vec<f64> = (0..100).map(f64::from).collect();
        let r = Numeric::of(&train);
        assert_eq!(
            r.edges,
            vec![10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0]
        );
        assert!(r.shares.iter().all(|s| (s - 0.1).abs() < 1e-12));
        assert!(r.psi(&train).abs() < 1e-12);
        // The run shifted by 50: bins 0..4 empty, a tenth in each of bins 5..8, and 90..149,
        // six tenths, in the top bin.
        let shifted: Vec<f64> = (50..150).map(f64::from).collect();
        let empty = (1e-4 - 0.1) * (1e-4f64 / 0.1).ln();
        let top = (0.6 - 0.1) * (0.6f64 / 0.1).ln();
        let by_hand = 5.0 * empty + top;
        assert!(
            (r.psi(&shifted) - by_hand).abs() < 1e-9,
            "{} vs {by_hand}",
            r.psi(&shifted)
        );
        assert!(r.psi(&shifted) > 0.25);
    }

    #[test]
    fn category_psi_counts_new_and_missing_levels() {
        let train = category_shares(["a", "a", "b", "b"].into_iter());
        let run = category_shares(["a", "c"].into_iter());
        let q: [f64; 3] = [0.5, 0.5, 1e-4];
        let p: [f64; 3] = [0.5, 1e-4, 0.5];
        let by_hand: f64 = q.iter().zip(&p).map(|(q, p)| (p - q) * (p / q).ln()).sum();
        assert!((category_psi(&train, &run) - by_hand).abs() < 1e-12);
        assert_eq!(category_psi(&train, &train), 0.0);
    }
}
