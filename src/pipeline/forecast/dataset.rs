//! Training sets of a forecast job: which (target, origin) pairs each series contributes and
//! their feature rows, written on demand (in parallel by the fit) and optionally sampled.

use rayon::prelude::*;

use super::features::{mix, Fitted, Scale, SeriesSchema};
use super::series::Series;

/// How a training set is drawn: the strategy's rows, `copies` origins per target (direct),
/// at most about `cap` rows (0: all), seeded.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub strategy: Fitted,
    pub copies: usize,
    pub cap: usize,
    pub seed: u64,
}

impl SeriesSchema {
    /// The (target, origin) pairs a series trains on: every target `t` in
    /// `[first_target, end)` with a known value. `direct` gives each target `copies` origins,
    /// each at a step ahead drawn from `1..=horizon` (seeded by the series and `t`), so the
    /// training set stays `copies` times the recursive one rather than `horizon` times.
    fn pairs(
        &self,
        b: &[f64],
        end: usize,
        strategy: Fitted,
        copies: usize,
        salt: u64,
    ) -> Vec<(u32, u32)> {
        let mut out = Vec::new();
        let end = end.min(b.len());
        for (t, v) in b.iter().enumerate().take(end).skip(self.first_target()) {
            if !v.is_finite() {
                continue;
            }
            match strategy {
                Fitted::Recursive => out.push((t as u32, t as u32)),
                Fitted::Direct => {
                    for c in 0..copies {
                        let h = 1
                            + (mix(salt ^ (t as u64) << 8 ^ c as u64) % self.horizon as u64)
                                as usize;
                        let origin = (t + 1).saturating_sub(h).max(1);
                        out.push((t as u32, origin as u32));
                    }
                }
            }
        }
        out
    }

    /// The training rows of every model-eligible series `i` for targets before `ends[i]`,
    /// scaled by `scales[i]`: with `plan.cap > 0` a seeded sample of about `cap` rows.
    pub fn training_set<'a>(
        &'a self,
        series: &'a [Series],
        scales: &[Scale],
        ends: &[usize],
        plan: Plan,
    ) -> TrainingSet<'a> {
        let Plan {
            strategy,
            copies,
            cap,
            seed,
        } = plan;
        let width = self.names(strategy).len();
        // Per series: its feature buffer and the (target, origin) pairs it contributes.
        let per_series: Vec<Pairs> = series
            .par_iter()
            .zip(scales.par_iter())
            .zip(ends.par_iter())
            .enumerate()
            .map(|(i, ((s, sc), &e))| {
                if !s.model_ok {
                    return (Vec::new(), Vec::new());
                }
                let b = self.diffed(&self.scaled(s, e, *sc));
                let salt = mix(seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                let pairs = self.pairs(&b, e, strategy, copies, salt);
                (b, pairs)
            })
            .collect();
        let total: usize = per_series.iter().map(|p| p.1.len()).sum();
        // Keep each row with probability cap/total (seeded): an even sample without an index.
        let keep = |i: usize, t: u32, c: usize| -> bool {
            cap == 0
                || total <= cap
                || (mix(seed ^ (i as u64) << 32 ^ u64::from(t) ^ (c as u64) << 56) % total as u64)
                    < cap as u64
        };
        // The kept rows, in series order: (series, target, origin).
        let kept: Vec<(u32, u32, u32)> = per_series
            .iter()
            .enumerate()
            .flat_map(|(i, (_, pairs))| {
                pairs
                    .iter()
                    .enumerate()
                    .filter(move |(c, &(t, _))| keep(i, t, *c))
                    .map(move |(_, &(t, o))| (i as u32, t, o))
            })
            .collect();
        let y = kept
            .iter()
            .map(|&(i, t, _)| per_series[i as usize].0[t as usize])
            .collect();
        TrainingSet {
            schema: self,
            series,
            strategy,
            per_series,
            kept,
            width,
            y,
            total,
        }
    }
}

/// A series' transformed values and the (target, origin) pairs it contributes.
type Pairs = (Vec<f64>, Vec<(u32, u32)>);

/// A training set whose feature rows are written on demand ([`TrainingSet::fill`]): the fit
/// bins them as they come instead of holding them all as `f64`s.
pub struct TrainingSet<'a> {
    schema: &'a SeriesSchema,
    series: &'a [Series],
    strategy: Fitted,
    per_series: Vec<Pairs>,
    /// The rows, in series order: (series, target, origin).
    kept: Vec<(u32, u32, u32)>,
    /// Features per row.
    pub width: usize,
    /// The targets, one per row.
    pub y: Vec<f64>,
    /// Rows before sampling.
    pub total: usize,
}

impl TrainingSet<'_> {
    pub fn rows(&self) -> usize {
        self.kept.len()
    }

    /// Writes row `r`'s features into `row` (cleared first).
    pub fn fill(&self, r: usize, row: &mut Vec<f64>) {
        let (i, t, o) = self.kept[r];
        let b = &self.per_series[i as usize].0;
        self.schema.row(
            &self.series[i as usize],
            b,
            t as usize,
            o as usize,
            self.strategy,
            row,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::forecast::features::tests::{schema, series};

    #[test]
    fn a_sampled_training_set_is_a_subset_of_the_full_one() {
        let sc = schema();
        let all: Vec<Series> = (0..4)
            .map(|k| {
                series(
                    (0..(30 + 3 * k))
                        .map(|i| (i * i) as f64 + k as f64)
                        .collect(),
                )
            })
            .collect();
        let scales = vec![Scale::IDENTITY; 4];
        let ends: Vec<usize> = all.iter().map(|s| s.y.len() - 2).collect();
        let end = &ends[..];
        let plan = |strategy, copies, cap| Plan {
            strategy,
            copies,
            cap,
            seed: 7,
        };
        let full = sc.training_set(&all, &scales, end, plan(Fitted::Recursive, 1, 0));
        let total = full.total;
        assert_eq!(full.rows(), total);
        assert_eq!(full.y.len(), total);
        let part = sc.training_set(&all, &scales, end, plan(Fitted::Recursive, 1, total / 3));
        assert_eq!(part.total, total);
        assert!(part.rows() < total && part.rows() > 0);
        assert!(part.y.iter().all(|v| full.y.contains(v)));
        // Direct with two origins per target: twice the rows, every step ahead in 1..=3.
        let d = sc.training_set(&all, &scales, end, plan(Fitted::Direct, 2, 0));
        assert_eq!(d.total, 2 * total);
        let mut row = Vec::new();
        for r in 0..d.rows() {
            d.fill(r, &mut row);
            assert_eq!(row.len(), d.width);
            assert!((1.0..=3.0).contains(&row[d.width - 1]));
        }
    }
}
