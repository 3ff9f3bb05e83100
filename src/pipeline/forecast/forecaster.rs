//! What a forecast job trains and serves: the schema, the fitted model (none when only
//! seasonal naives won the backtest), the per-series scaling, the method chosen for the job and
//! for each series, and the conformal interval widths. It is stored whole in the registry, so a
//! later run that loads the champion forecasts exactly as the training run would have.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::evaluate::{seasonal_naive, Method};
use super::features::{Fitted, Scale, SeriesSchema};
use super::select::conformal;
use super::series::Series;
use crate::model::Model;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Forecaster {
    pub schema: SeriesSchema,
    pub strategy: Fitted,
    pub model: Option<Model>,
    /// The job's winner, for series without a choice of their own.
    pub default: Method,
    /// The better seasonal naive (what a blend mixes in, and the fallback).
    pub naive: Method,
    /// Per-series choices, by key.
    pub methods: HashMap<String, Method>,
    /// Per-series scaling learned on the training window, by key.
    pub scales: HashMap<String, Scale>,
    /// Per-series typical backtest error (MAE of its published forecast), by key: the unit
    /// of its interval.
    pub errors: HashMap<String, f64>,
    /// A series without its own: this many of its scale's standard deviations.
    pub error_ratio: f64,
    /// Interval half-widths per step, in units of the series' typical error.
    pub half_width: Vec<f64>,
    pub interval: f64,
    /// Steps per day: the seasonal-naive period.
    pub day: usize,
    /// The training data's distribution, for drift (None for forecasters stored before).
    #[serde(default)]
    pub reference: Option<crate::monitor::drift::Reference>,
    /// With an ensemble (`forecast.ensemble`), its second model: the model's forecast is then
    /// the mean of `model`'s and this one's. None for a single model (and forecasters stored
    /// before ensembles).
    #[serde(default)]
    pub partner: Option<Partner>,
}

/// The second member of an ensemble: a model variant with its own differencing and strategy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Partner {
    pub schema: SeriesSchema,
    pub strategy: Fitted,
    pub model: Model,
}

/// One series' forecast: values, interval half-widths and the method, per step.
#[derive(Debug, Clone)]
pub struct SeriesForecast {
    pub yhat: Vec<f64>,
    pub half: Vec<f64>,
    pub method: Method,
}

impl Forecaster {
    /// The method a series is forecast with: its own choice, else the job's; a series too
    /// short for the model, or a model-less forecaster, falls back to the seasonal naive.
    pub fn method_for(&self, s: &Series) -> Method {
        if !s.model_ok {
            return Method::NaiveDay;
        }
        let m = self
            .methods
            .get(&s.key.to_string())
            .copied()
            .unwrap_or(self.default);
        if m.uses_model() && self.model.is_none() {
            self.naive
        } else {
            m
        }
    }

    fn scale_for(&self, s: &Series) -> Scale {
        self.scales
            .get(&s.key.to_string())
            .copied()
            .unwrap_or_else(|| self.schema.scale_of(s, s.y.len()))
    }

    /// Forecasts every series from its end. CPU-bound: call on the pool.
    pub fn forecast(&self, series: &[Series]) -> Vec<SeriesForecast> {
        let h = self.schema.horizon;
        let methods: Vec<Method> = series.iter().map(|s| self.method_for(s)).collect();
        let scales: Vec<Scale> = series.iter().map(|s| self.scale_for(s)).collect();
        // The model runs once, for every series whose method uses it.
        let need: Vec<usize> = (0..series.len())
            .filter(|&i| methods[i].uses_model())
            .collect();
        let mut model_out: Vec<Option<Vec<f64>>> = vec![None; series.len()];
        if let (Some(model), false) = (&self.model, need.is_empty()) {
            let refs: Vec<&Series> = need.iter().map(|&i| &series[i]).collect();
            let sc: Vec<Scale> = need.iter().map(|&i| scales[i]).collect();
            let origins: Vec<usize> = refs.iter().map(|s| s.y.len()).collect();
            let mut f = self
                .schema
                .forecast(&refs, &sc, &origins, self.strategy, |m| model.predict(m));
            if let Some(p) = &self.partner {
                let g =
                    (p.schema).forecast(&refs, &sc, &origins, p.strategy, |m| p.model.predict(m));
                for (a, b) in f.iter_mut().zip(g) {
                    a.iter_mut().zip(b).for_each(|(a, b)| *a = 0.5 * (*a + b));
                }
            }
            for (i, v) in need.into_iter().zip(f) {
                model_out[i] = Some(v);
            }
        }
        series
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let n = s.y.len();
                let naive = |m: Method| -> Vec<f64> {
                    let period = if m == Method::NaiveWeek {
                        7 * self.day
                    } else {
                        self.day
                    };
                    (1..=h)
                        .map(|k| seasonal_naive(&s.y, n, k, period))
                        .collect()
                };
                let method = methods[i];
                let yhat = match (method, model_out[i].take()) {
                    (Method::Blend, Some(m)) => m
                        .iter()
                        .zip(naive(self.naive))
                        .map(|(a, b)| 0.5 * (a + b))
                        .collect(),
                    (Method::Recursive | Method::Direct | Method::Ensemble, Some(m)) => m,
                    (m, _) => naive(m),
                };
                let half = if s.model_ok {
                    let unit = self
                        .errors
                        .get(&s.key.to_string())
                        .copied()
                        .unwrap_or(self.error_ratio * scales[i].sd);
                    self.half_width.iter().map(|q| q * unit).collect()
                } else {
                    vec![own_half_width(&s.y, self.day, self.interval); h]
                };
                SeriesForecast { yhat, half, method }
            })
            .collect()
    }
}

/// A naive-fallback series' interval: the conformal quantile of its own seasonal-naive
/// residuals over its history.
fn own_half_width(y: &[f64], day: usize, coverage: f64) -> f64 {
    let mut r: Vec<f64> = (day..y.len())
        .map(|t| (y[t] - y[t - day]).abs())
        .filter(|v| v.is_finite())
        .collect();
    conformal(&mut r, coverage)
}
