//! Forecasting `horizon` steps ahead from an origin with a fitted model, for many series at
//! once: recursively (every series advances one step per batched model call, each prediction
//! becoming the next step's lag) or directly (one call for every series and step).

use rayon::prelude::*;

use super::features::{Fitted, Scale, SeriesSchema};
use super::series::Series;
use crate::model::Matrix;

impl SeriesSchema {
    /// Forecasts `horizon` steps after `origins[i]` for every series `i` with the model
    /// `predict`, in the series' own units. Recursive: all series advance one step at a time,
    /// one batched model call per step. Direct: one call for every series and step.
    pub fn forecast(
        &self,
        series: &[&Series],
        scales: &[Scale],
        origins: &[usize],
        strategy: Fitted,
        predict: impl Fn(&Matrix) -> Vec<f64>,
    ) -> Vec<Vec<f64>> {
        let h = self.horizon;
        let width = self.names(strategy).len();
        // Per series: the scaled values `z` and the feature buffer `b` (differenced or not),
        // both growing by the forecast steps.
        let mut buffers: Vec<(Vec<f64>, Vec<f64>)> = series
            .par_iter()
            .zip(scales.par_iter())
            .zip(origins.par_iter())
            .map(|((s, sc), &o)| {
                let mut z = Vec::with_capacity(o + h);
                z.extend(s.y[..o].iter().map(|v| sc.apply(*v)));
                let mut b = self.diffed(&z);
                b.reserve(h);
                (z, b)
            })
            .collect();
        let n = series.len();
        match strategy {
            Fitted::Recursive => {
                for _ in 0..h {
                    let x = Matrix::build(n, width, |r, row| {
                        let b = &buffers[r].1;
                        self.row(series[r], b, b.len(), b.len(), strategy, row);
                    });
                    let preds = predict(&x);
                    for ((z, b), p) in buffers.iter_mut().zip(preds) {
                        let t = z.len();
                        z.push(self.undiff(z, t, p));
                        b.push(p);
                    }
                }
            }
            Fitted::Direct => {
                let x = Matrix::build(n * h, width, |r, row| {
                    let (i, k) = (r / h, r % h);
                    let b = &buffers[i].1;
                    let o = b.len();
                    self.row(series[i], b, o + k, o, strategy, row);
                });
                let preds = predict(&x);
                for ((z, _), p) in buffers.iter_mut().zip(preds.chunks(h.max(1))) {
                    // In step order, so a step more than a season ahead adds to a forecast.
                    for v in p {
                        let t = z.len();
                        z.push(self.undiff(z, t, *v));
                    }
                }
            }
        }
        debug_assert_eq!(buffers.len(), n);
        buffers
            .into_iter()
            .zip(scales)
            .zip(origins)
            .map(|(((z, _), sc), &o)| z[o..].iter().map(|v| sc.undo(*v)).collect())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::forecast::features::tests::{schema, series};

    #[test]
    fn scaling_and_differencing_round_trip() {
        let y: Vec<f64> = (0..100).map(|i| 50.0 + 10.0 * ((i % 24) as f64)).collect();
        let sc = Scale::learn(&y, 100, 672);
        for v in &y {
            assert!((sc.undo(sc.apply(*v)) - v).abs() < 1e-9);
        }
        let constant = Scale::learn(&[5.0; 10], 10, 672);
        assert_eq!(constant.sd, 1.0);
        assert_eq!(constant.apply(5.0), 0.0);
        // Differencing against the same hour yesterday: a model that predicts 0 reproduces
        // seasonal naive exactly, through scaling and back.
        let mut schema = schema();
        schema.lags = vec![1, 24];
        schema.rolling = vec![];
        schema.scale = true;
        schema.difference = 24;
        schema.horizon = 24;
        let s = series(y.clone());
        let scale = schema.scale_of(&s, 100);
        let f = schema.forecast(&[&s], &[scale], &[76], Fitted::Direct, |m| {
            vec![0.0; m.rows]
        });
        let naive: Vec<f64> = (76..100).map(|t| y[t - 24]).collect();
        for (a, b) in f[0].iter().zip(&naive) {
            assert!((a - b).abs() < 1e-9, "{a} vs {b}");
        }
    }

    #[test]
    fn recursion_feeds_predictions_back_as_lags() {
        let sc = SeriesSchema {
            lags: vec![1],
            rolling: vec![],
            seasonal: vec![],
            calendar: vec![],
            exog: vec![],
            statics: vec![],
            step_seconds: 3600,
            horizon: 3,
            scale: false,
            difference: 0,
        };
        let mut s = series(vec![1.0, 2.0]);
        s.exog.clear();
        s.statics.clear();
        // A "model" that adds one to lag 1: the forecast must count up from the last value.
        let f = sc.forecast(&[&s], &[Scale::IDENTITY], &[2], Fitted::Recursive, |m| {
            m.column(0).iter().map(|v| v + 1.0).collect()
        });
        assert_eq!(f, vec![vec![3.0, 4.0, 5.0]]);
    }
}
