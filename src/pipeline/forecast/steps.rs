//! Forecasting `horizon` steps ahead from an origin with a fitted model, for many series at
//! once: recursively (every series advances one step per batched model call, each prediction
//! becoming the next step's lag) or directly (one call for every series and step); each
//! forecast is then kept within the series' envelope at its time of day (`forecast.envelope`).

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
            .zip(series)
            .map(|((((z, _), sc), &o), s)| {
                (z[o..].iter().enumerate())
                    .map(|(k, v)| match self.envelope {
                        true => within_envelope(&s.y, o, o + k, self.day(), sc.undo(*v)),
                        false => sc.undo(*v),
                    })
                    .collect()
            })
            .collect()
    }
}

/// Days of the same time of day a forecast's envelope spans.
const ENVELOPE_DAYS: usize = 28;
/// Fewest of those days with a value for the envelope to apply.
const ENVELOPE_MIN_DAYS: usize = 7;
/// How far past its envelope a forecast may go, as a share of the envelope's width.
const ENVELOPE_MARGIN: f64 = 0.1;

/// `v`, a forecast made at `origin` for step `t` of the series `y` (`day` steps a day), kept
/// within what the series did at the same time of day on the last [`ENVELOPE_DAYS`] days before
/// the origin, widened by [`ENVELOPE_MARGIN`] of that range; unchanged when fewer than
/// [`ENVELOPE_MIN_DAYS`] of those days have a value. A series that is 0 every night (solar
/// irradiance, a closed shop's footfall) is then forecast 0 at night, where a model's
/// averaged leaves give a little more.
pub fn within_envelope(y: &[f64], origin: usize, t: usize, day: usize, v: f64) -> f64 {
    // The first day back whose same time lies before the origin.
    let first = (t - origin) / day + 1;
    let (mut lo, mut hi, mut n) = (f64::INFINITY, f64::NEG_INFINITY, 0);
    for d in first..first + ENVELOPE_DAYS {
        let Some(x) = t.checked_sub(d * day).and_then(|i| y.get(i)) else {
            break;
        };
        if x.is_finite() {
            (lo, hi, n) = (lo.min(*x), hi.max(*x), n + 1);
        }
    }
    if n < ENVELOPE_MIN_DAYS || !v.is_finite() {
        return v;
    }
    let margin = ENVELOPE_MARGIN * (hi - lo);
    v.clamp(lo - margin, hi + margin)
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
    fn a_forecast_keeps_within_its_time_of_day_envelope() {
        // Four weeks of a day that is 0 at night (steps 0 to 5 of 8) and 10 to 20 by day.
        let day = 8;
        let y: Vec<f64> = (0..28 * day)
            .map(|i| match i % day {
                0..=5 => 0.0,
                _ => 10.0 + (i / day % 11) as f64,
            })
            .collect();
        let origin = y.len();
        // At night only 0 was ever seen: a forecast of 0.8 becomes 0, and -1 too.
        assert_eq!(within_envelope(&y, origin, origin + 2, day, 0.8), 0.0);
        assert_eq!(within_envelope(&y, origin, origin + 2, day, -1.0), 0.0);
        // By day the range is 10 to 20, widened by a tenth: 21 stays, 30 becomes 21.
        assert_eq!(within_envelope(&y, origin, origin + 7, day, 21.0), 21.0);
        assert_eq!(within_envelope(&y, origin, origin + 7, day, 30.0), 21.0);
        assert_eq!(within_envelope(&y, origin, origin + 7, day, 15.0), 15.0);
        // A step more than a day ahead reads the days before the origin, not after it.
        let mut late = y.clone();
        late.extend([5.0; 16]);
        assert_eq!(within_envelope(&late, origin, origin + 10, day, 0.8), 0.0);
        // Fewer than a week of days: unchanged.
        assert_eq!(
            within_envelope(&y[..6 * day], 6 * day, 6 * day + 2, day, 0.8),
            0.8
        );
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
            envelope: false,
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
