//! Stage 4 for `forecast` jobs, evaluate: forecast the last `horizon` steps of every series
//! recursively from a model trained without them, and score that forecast against the
//! actuals and the seasonal-naive baselines (t-24 and t-168 for hourly data), overall and per
//! horizon step. The absolute residuals per step give split-conformal interval half-widths.

use super::features::SeriesSchema;
use super::series::Series;
use crate::model::metrics::{self, Metrics};
use crate::model::Model;

/// What the holdout evaluation measured.
pub struct Evaluation {
    pub metrics: Metrics,
    pub naive_day: Metrics,
    pub naive_week: Metrics,
    pub per_horizon: Vec<(usize, f64, f64)>,
    /// Every metric per horizon step: (model, seasonal naive t-24).
    pub per_step: Vec<(Metrics, Metrics)>,
    pub half_width: Vec<f64>,
}

/// Recursive holdout forecast of the last `h` steps of every series, scored against the
/// actuals and the seasonal-naive baselines.
pub fn evaluate(
    schema: &SeriesSchema,
    model: &Model,
    series: &[Series],
    h: usize,
    interval: f64,
) -> Evaluation {
    let preds = schema.recursive(series, |s| s.y.len() - h, h, |m| model.predict(m));
    let day = (86_400 / schema.step_seconds).max(1) as usize;
    let week = 7 * day;
    let naive = |s: &Series, t: usize, step: usize, period: usize| {
        let back = period * step.div_ceil(period);
        s.y[t.saturating_sub(back)]
    };
    let (mut truth, mut yhat, mut n_day, mut n_week) = (vec![], vec![], vec![], vec![]);
    let mut per_step_abs: Vec<Vec<f64>> = vec![Vec::with_capacity(series.len()); h];
    let mut step_truth: Vec<Vec<f64>> = vec![Vec::with_capacity(series.len()); h];
    let mut step_pred: Vec<Vec<f64>> = vec![Vec::with_capacity(series.len()); h];
    let mut step_naive: Vec<Vec<f64>> = vec![Vec::with_capacity(series.len()); h];
    for (s, p) in series.iter().zip(&preds) {
        let origin = s.y.len() - h;
        for (k, pred) in p.iter().enumerate() {
            let t = origin + k;
            let actual = s.y[t];
            truth.push(actual);
            yhat.push(*pred);
            let nd = naive(s, t, k + 1, day);
            n_day.push(nd);
            n_week.push(naive(s, t, k + 1, week));
            per_step_abs[k].push((actual - pred).abs());
            step_truth[k].push(actual);
            step_pred[k].push(*pred);
            step_naive[k].push(nd);
        }
    }
    let task = crate::config::Task::Regression;
    let per_step: Vec<(Metrics, Metrics)> = (0..h)
        .map(|k| {
            (
                metrics::evaluate(task, &step_truth[k], &step_pred[k], 0.5),
                metrics::evaluate(task, &step_truth[k], &step_naive[k], 0.5),
            )
        })
        .collect();
    let per_horizon = per_step
        .iter()
        .enumerate()
        .map(|(k, (m, n))| (k + 1, m["mae"], n["mae"]))
        .collect();
    // Split conformal: the ceil((n+1)c)/n empirical quantile of |residual| at each step.
    let half_width = per_step_abs
        .into_iter()
        .map(|mut abs| {
            abs.sort_by(f64::total_cmp);
            let n = abs.len();
            if n == 0 {
                return 0.0;
            }
            let rank = (((n + 1) as f64) * interval).ceil() as usize;
            abs[rank.clamp(1, n) - 1]
        })
        .collect();
    Evaluation {
        metrics: metrics::evaluate(task, &truth, &yhat, 0.5),
        naive_day: metrics::evaluate(task, &truth, &n_day, 0.5),
        naive_week: metrics::evaluate(task, &truth, &n_week, 0.5),
        per_horizon,
        per_step,
        half_width,
    }
}
