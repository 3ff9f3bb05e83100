//! Training sets of a forecast job: which (target, origin) pairs each series contributes and
//! the matrix of their feature rows, built in parallel and optionally sampled.

use rayon::prelude::*;

use super::features::{mix, Fitted, Scale, SeriesSchema};
use super::series::Series;
use crate::model::Matrix;

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

    /// The training matrix of every model-eligible series `i` for targets before `ends[i]`,
    /// scaled by `scales[i]`: with `plan.cap > 0` a seeded sample of about
    /// `cap` rows. Returns the matrix, the targets and the row count before sampling.
    pub fn training_set(
        &self,
        series: &[Series],
        scales: &[Scale],
        ends: &[usize],
        plan: Plan,
    ) -> (Matrix, Vec<f64>, usize) {
        let Plan {
            strategy,
            copies,
            cap,
            seed,
        } = plan;
        let width = self.names(strategy).len();
        // Per series: its feature buffer and the (target, origin) pairs it contributes.
        type Pairs = (Vec<f64>, Vec<(u32, u32)>);
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
        let x = Matrix::build(kept.len(), width, |r, row| {
            let (i, t, o) = kept[r];
            let b = &per_series[i as usize].0;
            self.row(
                &series[i as usize],
                b,
                t as usize,
                o as usize,
                strategy,
                row,
            );
        });
        let y = kept
            .iter()
            .map(|&(i, t, _)| per_series[i as usize].0[t as usize])
            .collect();
        (x, y, total)
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
        let (full, y_full, total) =
            sc.training_set(&all, &scales, end, plan(Fitted::Recursive, 1, 0));
        assert_eq!(full.rows, total);
        assert_eq!(y_full.len(), total);
        let (part, y_part, total2) =
            sc.training_set(&all, &scales, end, plan(Fitted::Recursive, 1, total / 3));
        assert_eq!(total2, total);
        assert!(part.rows < total && part.rows > 0);
        assert!(y_part.iter().all(|v| y_full.contains(v)));
        // Direct with two origins per target: twice the rows, every step ahead in 1..=3.
        let (d, _, dt) = sc.training_set(&all, &scales, end, plan(Fitted::Direct, 2, 0));
        assert_eq!(dt, 2 * total);
        let steps = d.column(d.cols - 1);
        assert!(steps.iter().all(|h| (1.0..=3.0).contains(h)));
    }
}
