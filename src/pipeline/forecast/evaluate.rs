//! Stage 4 for `forecast` jobs, the rolling-origin backtest. Each model-eligible series gets
//! up to `forecast.backtest_windows` origins spaced `backtest_step` apart, the last window
//! ending at the series' end. Scheme: one fit per strategy on the targets before each series'
//! earliest origin, evaluated on every window (a refit per window would cost W fits and, in
//! our measurements, choose the same methods); every window's forecasts are compared with the
//! actuals next to the seasonal-naive baselines made at the same origin. Selection, interval
//! calibration and the gate all read these points.

use super::features::{Fitted, Scale, SeriesSchema};
use super::series::{AsServed, Series};
use crate::model::metrics::{self, Metrics};

/// A forecast method: what produced a published row (`method` in the results table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Recursive,
    Direct,
    NaiveDay,
    NaiveWeek,
    /// The mean of the chosen model strategy and the better seasonal naive.
    Blend,
    /// The mean of the best model variant and its partner (the other strategy on the same
    /// differencing), each fitted on its own (`forecast.ensemble`).
    Ensemble,
}

impl Method {
    /// The method as the results table names it; the naives by their lag in steps
    /// (`naive24`, `naive168` for hourly data).
    pub fn label(self, day: usize) -> String {
        match self {
            Method::Recursive => "recursive".into(),
            Method::Direct => "direct".into(),
            Method::NaiveDay => format!("naive{day}"),
            Method::NaiveWeek => format!("naive{}", 7 * day),
            Method::Blend => "blend".into(),
            Method::Ensemble => "ensemble".into(),
        }
    }

    pub fn of(strategy: Fitted) -> Method {
        match strategy {
            Fitted::Recursive => Method::Recursive,
            Fitted::Direct => Method::Direct,
        }
    }

    pub fn uses_model(self) -> bool {
        matches!(
            self,
            Method::Recursive | Method::Direct | Method::Blend | Method::Ensemble
        )
    }
}

/// The seasonal-naive forecast `k` steps (1-based) after `origin`: the value one `period`
/// (or as many periods as it takes to reach known history) before the target; where that
/// value is missing, the same season further back; failing that, the latest known value.
pub fn seasonal_naive(y: &[f64], origin: usize, k: usize, period: usize) -> f64 {
    let t = origin + k - 1;
    let mut back = period * k.div_ceil(period);
    while let Some(i) = t.checked_sub(back) {
        if y[i].is_finite() {
            return y[i];
        }
        back += period;
    }
    y[..origin.min(y.len())]
        .iter()
        .rev()
        .find(|v| v.is_finite())
        .copied()
        .unwrap_or(f64::NAN)
}

/// The backtest origins of a series of `n` steps: `windows` of them, `step` apart, the last
/// window ending at `n`, none earlier than `min_origin` (a full feature row needs history).
pub fn origins(
    n: usize,
    windows: usize,
    step: usize,
    horizon: usize,
    min_origin: usize,
) -> Vec<usize> {
    (0..windows)
        .filter_map(|w| n.checked_sub(horizon + w * step))
        .filter(|&o| o >= min_origin)
        .collect()
}

/// Every forecast point of the backtest: which series and step, the actual, and each
/// fitted model variant's and each seasonal naive's prediction.
#[derive(Debug, Default, Clone)]
pub struct Points {
    pub series: Vec<u32>,
    /// The backtest window (0 = the latest).
    pub window: Vec<u8>,
    pub step: Vec<u16>,
    pub actual: Vec<f64>,
    /// Per fitted model variant (in the order of `backtest`'s `fits`), its predictions.
    pub models: Vec<Vec<f64>>,
    pub naive_day: Vec<f64>,
    pub naive_week: Vec<f64>,
}

/// Which model variant the model-based methods read, and which naive a blend mixes in.
#[derive(Debug, Clone, Copy)]
pub struct Pick {
    pub model: Option<usize>,
    pub naive: Method,
}

impl Points {
    pub fn len(&self) -> usize {
        self.actual.len()
    }

    pub fn is_empty(&self) -> bool {
        self.actual.is_empty()
    }

    /// A method's prediction at point `i`: NaN for a model method without a model.
    pub fn pred(&self, m: Method, i: usize, pick: Pick) -> f64 {
        let model = || pick.model.map(|v| self.models[v][i]).unwrap_or(f64::NAN);
        match m {
            Method::Recursive | Method::Direct | Method::Ensemble => model(),
            Method::NaiveDay => self.naive_day[i],
            Method::NaiveWeek => self.naive_week[i],
            Method::Blend => 0.5 * (model() + self.pred(pick.naive, i, pick)),
        }
    }
}

/// One fitted model variant: its schema (differencing), strategy and model.
pub struct Fit<'a> {
    pub schema: &'a SeriesSchema,
    pub strategy: Fitted,
    pub model: &'a crate::model::Model,
}

/// Runs the backtest: every fitted variant and both seasonal naives at every window.
/// `origins_of[i]` are series i's origins (empty for a series the model does not serve).
/// With `served`, the models read the covariates a run at each origin would have served
/// (see [`AsServed`]); without it, the ones observed later.
pub fn backtest(
    series: &[Series],
    scales: &[Scale],
    origins_of: &[Vec<usize>],
    fits: &[Fit],
    served: Option<&AsServed>,
    horizon: usize,
    day: usize,
) -> Points {
    use rayon::prelude::*;
    let h = horizon;
    let windows = origins_of.iter().map(Vec::len).max().unwrap_or(0);
    let mut p = Points {
        models: vec![Vec::new(); fits.len()],
        ..Default::default()
    };
    for w in 0..windows {
        let idx: Vec<usize> = (0..series.len())
            .filter(|&i| origins_of[i].len() > w)
            .collect();
        let sc: Vec<Scale> = idx.iter().map(|&i| scales[i]).collect();
        let origin_at: Vec<usize> = idx.iter().map(|&i| origins_of[i][w]).collect();
        let as_served: Vec<Series>;
        let refs: Vec<&Series> = match served {
            Some(served) => {
                as_served = (idx.par_iter().zip(&origin_at))
                    .map(|(&i, &o)| served.as_of(i, &series[i], w, o))
                    .collect();
                as_served.iter().collect()
            }
            None => idx.iter().map(|&i| &series[i]).collect(),
        };
        let by_fit: Vec<Vec<Vec<f64>>> = fits
            .iter()
            .map(|f| {
                f.schema
                    .forecast(&refs, &sc, &origin_at, f.strategy, |m| f.model.predict(m))
            })
            .collect();
        for (j, &i) in idx.iter().enumerate() {
            let s = &series[i];
            let o = origin_at[j];
            for k in 0..h {
                let t = o + k;
                let Some(actual) = s.y.get(t).copied().filter(|v| v.is_finite()) else {
                    continue;
                };
                p.series.push(i as u32);
                p.window.push(w.min(255) as u8);
                p.step.push(k as u16);
                p.actual.push(actual);
                for (v, f) in by_fit.iter().enumerate() {
                    p.models[v].push(f[j][k]);
                }
                p.naive_day.push(seasonal_naive(&s.y, o, k + 1, day));
                p.naive_week.push(seasonal_naive(&s.y, o, k + 1, 7 * day));
            }
        }
    }
    p
}

/// Metrics of a set of predictions, overall and per horizon step.
pub fn scored(points: &Points, pred: &[f64], horizon: usize) -> (Metrics, Vec<Metrics>) {
    let task = crate::config::Task::Regression;
    let overall = metrics::evaluate(task, &points.actual, pred, 0.5);
    let mut by_step: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); horizon];
    for (i, &k) in points.step.iter().enumerate() {
        by_step[k as usize].0.push(points.actual[i]);
        by_step[k as usize].1.push(pred[i]);
    }
    let per_step = by_step
        .iter()
        .map(|(a, b)| metrics::evaluate(task, a, b, 0.5))
        .collect();
    (overall, per_step)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backtest_windows_end_at_the_series_end_and_respect_history() {
        // 100 steps, 4 windows of 24 spaced 24: origins 76, 52, 28, 4 — minus those too early.
        assert_eq!(origins(100, 4, 24, 24, 10), vec![76, 52, 28]);
        assert_eq!(origins(100, 4, 24, 24, 0), vec![76, 52, 28, 4]);
        // Spaced by 12: overlapping windows.
        assert_eq!(origins(100, 3, 12, 24, 0), vec![76, 64, 52]);
        // A series shorter than the horizon has none.
        assert!(origins(20, 4, 24, 24, 0).is_empty());
    }

    #[test]
    fn seasonal_naive_reaches_back_over_gaps() {
        let mut y: Vec<f64> = (0..72).map(|i| (i % 24) as f64).collect();
        assert_eq!(seasonal_naive(&y, 48, 1, 24), 0.0);
        assert_eq!(seasonal_naive(&y, 48, 24, 24), 23.0);
        // Beyond one period: two days back.
        assert_eq!(seasonal_naive(&y, 48, 30, 24), 5.0);
        y[24] = f64::NAN;
        assert_eq!(seasonal_naive(&y, 48, 1, 24), 0.0, "one more period back");
        y[0] = f64::NAN;
        assert_eq!(
            seasonal_naive(&y, 48, 1, 24),
            23.0,
            "the latest known value"
        );
    }
}
