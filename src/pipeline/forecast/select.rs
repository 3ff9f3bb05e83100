//! Choosing what to publish, from the backtest: the candidates (`model.candidates`) are the
//! better of the fitted model strategies, the two seasonal naives and their blend. The winner
//! is the lowest backtest MAE for the whole job, or for each series on its own points with
//! `forecast.selection = "per_series"`; either way the published forecast is never worse on the
//! backtest than the better seasonal naive. Prediction intervals are split-conformal per
//! horizon step: quantiles of the chosen method's absolute backtest residuals, each divided by
//! its series' scale so that series of every size pool their evidence.

use super::evaluate::{Method, Pick, Points};
use crate::config::ForecastMethod;

/// What the backtest chose.
#[derive(Debug, Clone)]
pub struct Choice {
    /// The best fitted model variant (index into the backtest's fits) and its method, if a
    /// model was fitted.
    pub model: Option<(usize, Method)>,
    /// The better seasonal naive.
    pub naive: Method,
    /// The job's winner: what a series without its own evidence gets.
    pub default: Method,
    /// Per series (by index): its method, when selection is per series and it has points.
    pub per_series: Vec<Option<Method>>,
    /// Backtest MAE of every candidate, for the summary.
    pub mae: Vec<(Method, f64)>,
}

impl Choice {
    pub fn method_of(&self, series: usize) -> Method {
        self.per_series
            .get(series)
            .copied()
            .flatten()
            .unwrap_or(self.default)
    }

    pub fn pick(&self) -> Pick {
        Pick {
            model: self.model.map(|(v, _)| v),
            naive: self.naive,
        }
    }
}

/// How much better (relative MAE) a series' own best method must be than the job's winner,
/// on the series' own backtest points, for the series to switch to it.
const SWITCH_MARGIN: f64 = 0.05;

/// The candidates the config allows, given the model the backtest chose.
fn candidates(allowed: &[ForecastMethod], model: Option<Method>) -> Vec<Method> {
    let mut out = Vec::new();
    for c in allowed {
        match (c, model) {
            (ForecastMethod::Model, Some(m)) => out.push(m),
            (ForecastMethod::Blend, Some(_)) => out.push(Method::Blend),
            (ForecastMethod::NaiveDay, _) => out.push(Method::NaiveDay),
            (ForecastMethod::NaiveWeek, _) => out.push(Method::NaiveWeek),
            _ => {}
        }
    }
    if out.is_empty() {
        out.push(Method::NaiveDay);
    }
    out
}

/// Mean absolute error of method `m` over the points `idx`; infinite when it cannot forecast
/// one of them (a method that cannot forecast a point loses it outright).
fn mae_of(points: &Points, idx: &[usize], m: Method, pick: Pick) -> f64 {
    let mut sum = 0.0;
    for &i in idx {
        let p = points.pred(m, i, pick);
        if !p.is_finite() {
            return f64::INFINITY;
        }
        sum += (points.actual[i] - p).abs();
    }
    if idx.is_empty() {
        f64::INFINITY
    } else {
        sum / idx.len() as f64
    }
}

fn lowest(scored: impl Iterator<Item = (Method, f64)>) -> Option<(Method, f64)> {
    scored.min_by(|a, b| a.1.total_cmp(&b.1))
}

/// Picks the model variant, the naive, the job's method and each series' from the backtest.
/// `variants[v]` is the method of model column `v` of the points (a fitted variant's strategy,
/// or the ensemble of two).
pub fn choose(
    points: &Points,
    n_series: usize,
    variants: &[Method],
    allowed: &[ForecastMethod],
    per_series: bool,
) -> Choice {
    let all: Vec<usize> = (0..points.len()).collect();
    let no_model = Pick {
        model: None,
        naive: Method::NaiveDay,
    };
    let naive = lowest(
        [Method::NaiveDay, Method::NaiveWeek]
            .into_iter()
            .map(|m| (m, mae_of(points, &all, m, no_model))),
    )
    .map(|(m, _)| m)
    .unwrap_or(Method::NaiveDay);
    let model = (0..variants.len())
        .map(|v| {
            let pick = Pick {
                model: Some(v),
                naive,
            };
            (v, mae_of(points, &all, Method::Recursive, pick))
        })
        .filter(|(_, mae)| mae.is_finite())
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(v, _)| (v, variants[v]));
    let pick = Pick {
        model: model.map(|(v, _)| v),
        naive,
    };
    let cands = candidates(allowed, model.map(|(_, m)| m));
    let mae: Vec<(Method, f64)> = cands
        .iter()
        .map(|m| (*m, mae_of(points, &all, *m, pick)))
        .collect();
    let default = lowest(mae.iter().copied()).map(|(m, _)| m).unwrap_or(naive);
    let mut chosen = vec![None; n_series];
    if per_series {
        for (s, idx) in by_series(points, n_series).iter().enumerate() {
            if idx.is_empty() {
                continue;
            }
            let score = |m: Method| mae_of(points, idx, m, pick);
            let own = lowest(cands.iter().map(|m| (*m, score(*m))));
            // A series leaves the job's winner only for a clear gain on its own points: with
            // a few windows per series, the smallest of several noisy MAEs flatters its method.
            let job_mae = score(default);
            chosen[s] = match own {
                Some((m, v)) if v.is_finite() && v < (1.0 - SWITCH_MARGIN) * job_mae => Some(m),
                _ if job_mae.is_finite() => Some(default),
                _ => own.filter(|(_, v)| v.is_finite()).map(|(m, _)| m),
            };
        }
    }
    Choice {
        model,
        naive,
        default,
        per_series: chosen,
        mae,
    }
}

/// The backtest points of each series.
pub fn by_series(points: &Points, n_series: usize) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = vec![Vec::new(); n_series];
    for (i, &s) in points.series.iter().enumerate() {
        out[s as usize].push(i);
    }
    out
}

/// The chosen method's prediction at every backtest point.
pub fn chosen_predictions(points: &Points, choice: &Choice) -> Vec<f64> {
    (0..points.len())
        .map(|i| {
            let m = choice.method_of(points.series[i] as usize);
            points.pred(m, i, choice.pick())
        })
        .collect()
}

/// Each series' typical error: the mean absolute error of its published backtest forecast
/// (None for a series without points). Intervals are in these units, so a series that is hard
/// to forecast gets a wider interval than an easy one of the same size.
pub fn error_scales(points: &Points, pred: &[f64], n_series: usize) -> Vec<Option<f64>> {
    by_series(points, n_series)
        .iter()
        .map(|idx| {
            (!idx.is_empty()).then(|| {
                idx.iter()
                    .map(|&i| (points.actual[i] - pred[i]).abs())
                    .sum::<f64>()
                    / idx.len() as f64
            })
        })
        .collect()
}

/// The error scale of every backtest point, cross-fitted: the mean absolute error of its
/// series' published forecast in the *other* windows. A scale estimated from the very
/// residuals it divides shrinks the large ones and makes intervals too narrow out of sample;
/// leaving the point's own window out keeps the calibration honest. `fallback(series)` stands
/// in where the other windows have no error.
pub fn cross_fitted_scales(
    points: &Points,
    pred: &[f64],
    n_series: usize,
    fallback: impl Fn(usize) -> f64,
) -> Vec<f64> {
    let windows = points
        .window
        .iter()
        .copied()
        .max()
        .map_or(0, |w| w as usize + 1);
    // Per series and window: (sum of |residual|, count).
    let mut sums = vec![(0.0, 0usize); n_series * windows.max(1)];
    for i in 0..points.len() {
        let cell = &mut sums[points.series[i] as usize * windows + points.window[i] as usize];
        cell.0 += (points.actual[i] - pred[i]).abs();
        cell.1 += 1;
    }
    (0..points.len())
        .map(|i| {
            let (s, w) = (points.series[i] as usize, points.window[i] as usize);
            let (mut sum, mut n) = (0.0, 0);
            for other in (0..windows).filter(|&o| o != w) {
                let c = sums[s * windows + other];
                sum += c.0;
                n += c.1;
            }
            match n {
                0 => fallback(s),
                _ if sum > 0.0 => sum / n as f64,
                _ => fallback(s),
            }
        })
        .collect()
}

/// Fewest residuals a step's quantile is taken from; neighbouring steps are pooled until
/// there are this many.
const MIN_POOL: usize = 200;

/// Split-conformal half-widths per step, in units of each point's `norm` (its series' error
/// scale): the ceil((n+1)·coverage)-th smallest normalized absolute residual of the step
/// (pooled with its neighbours when it has fewer than `MIN_POOL`).
pub fn half_widths(
    points: &Points,
    pred: &[f64],
    norm: &[f64],
    horizon: usize,
    coverage: f64,
) -> Vec<f64> {
    let mut by_step: Vec<Vec<f64>> = vec![Vec::new(); horizon];
    for i in 0..points.len() {
        let r = (points.actual[i] - pred[i]).abs() / norm[i];
        if r.is_finite() {
            by_step[points.step[i] as usize].push(r);
        }
    }
    (0..horizon)
        .map(|k| {
            let mut pool: Vec<f64> = by_step[k].clone();
            let mut radius = 1;
            while pool.len() < MIN_POOL && radius < horizon {
                if k >= radius {
                    pool.extend(&by_step[k - radius]);
                }
                if k + radius < horizon {
                    pool.extend(&by_step[k + radius]);
                }
                radius += 1;
            }
            conformal(&mut pool, coverage)
        })
        .collect()
}

/// The split-conformal quantile: the ceil((n+1)·c)-th smallest value (the largest when that
/// rank passes n); 0 for no values.
pub fn conformal(values: &mut [f64], coverage: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let rank = (((n + 1) as f64) * coverage).ceil() as usize;
    values[rank.clamp(1, n) - 1]
}

/// The share of backtest actuals inside the interval.
pub fn coverage(points: &Points, pred: &[f64], norm: &[f64], half: &[f64]) -> f64 {
    let inside = (0..points.len())
        .filter(|&i| (points.actual[i] - pred[i]).abs() <= half[points.step[i] as usize] * norm[i])
        .count();
    inside as f64 / points.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two series: on the first the day-ago value is exact, on the second a model is.
    fn points() -> Points {
        let mut p = Points {
            models: vec![Vec::new(), Vec::new()],
            ..Default::default()
        };
        for s in 0..2u32 {
            for k in 0..24u16 {
                let actual = 10.0 + f64::from(k);
                p.series.push(s);
                p.window.push(0);
                p.step.push(k);
                p.actual.push(actual);
                let (naive, model) = if s == 0 {
                    (actual, actual + 1.0)
                } else {
                    (actual + 3.0, actual + 0.5)
                };
                p.naive_day.push(naive);
                p.naive_week.push(actual + 5.0);
                p.models[0].push(model);
                p.models[1].push(model + 0.25);
            }
        }
        p
    }

    #[test]
    fn selection_picks_naive_where_naive_is_exact() {
        let all = [
            ForecastMethod::Model,
            ForecastMethod::NaiveDay,
            ForecastMethod::NaiveWeek,
            ForecastMethod::Blend,
        ];
        let fitted = [Method::Recursive, Method::Direct];
        let c = choose(&points(), 2, &fitted, &all, true);
        assert_eq!(c.model, Some((0, Method::Recursive)), "the better variant");
        assert_eq!(c.naive, Method::NaiveDay);
        assert_eq!(c.method_of(0), Method::NaiveDay, "naive is exact there");
        assert_eq!(c.method_of(1), Method::Recursive);
        // For the job as a whole the model wins (0.75 against 1.5).
        assert_eq!(c.default, Method::Recursive);
        let job = choose(&points(), 2, &fitted, &all, false);
        assert_eq!(job.method_of(0), Method::Recursive);
        // Never worse than the better naive on the backtest.
        let pred = chosen_predictions(&points(), &c);
        let p = points();
        let mae = |v: &[f64]| {
            v.iter()
                .zip(&p.actual)
                .map(|(a, b)| (a - b).abs())
                .sum::<f64>()
                / v.len() as f64
        };
        assert!(mae(&pred) <= mae(&p.naive_day));
        // Without a model only the naives compete.
        let naive_only = choose(&points(), 2, &[], &all, true);
        assert_eq!(naive_only.default, Method::NaiveDay);
    }

    #[test]
    fn conformal_half_widths_cover_their_share() {
        let mut p = Points::default();
        for i in 0..1000 {
            p.series.push(0);
            p.window.push(0);
            p.step.push(((i / 10) % 4) as u16);
            p.actual.push(f64::from(i % 10));
        }
        let pred = vec![0.0; 1000];
        let norm = vec![2.0; 1000];
        let half = half_widths(&p, &pred, &norm, 4, 0.8);
        // |residual| / norm is 0, 0.5, ..., 4.5 evenly: the 80% quantile is 4.0.
        assert!(half.iter().all(|h| (*h - 4.0).abs() < 1e-12), "{half:?}");
        let cov = coverage(&p, &pred, &norm, &half);
        assert!((cov - 0.9).abs() < 1e-9, "{cov}");
        assert_eq!(conformal(&mut [], 0.8), 0.0);
    }
}
