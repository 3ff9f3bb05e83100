//! The one feature function of a forecast: the row that predicts `y[t]` from what was known
//! before `t` (lags, rolling windows), the calendar of `t`, the covariates at `t` and the
//! series' static levels. Training matrices, backtests and the recursive forecast all call
//! [`SeriesSchema::row`], so training and serving cannot drift apart.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::series::Series;
use crate::config::{Calendar, ForecastSpec};
use crate::model::Matrix;
use crate::pipeline::score::features::fnv_hex;

/// What the model reads, stored with it: lags, windows, calendar, covariates, static levels.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SeriesSchema {
    pub lags: Vec<usize>,
    pub rolling: Vec<usize>,
    pub calendar: Vec<Calendar>,
    pub exog: Vec<String>,
    pub statics: Vec<(String, Vec<String>)>,
    pub step_seconds: i64,
    /// Split-conformal half-widths of the prediction interval per horizon step (filled after
    /// the holdout evaluation).
    pub interval: f64,
    pub half_width: Vec<f64>,
}

impl SeriesSchema {
    pub fn new(spec: &ForecastSpec, exog: &[String], statics: Vec<(String, Vec<String>)>) -> Self {
        SeriesSchema {
            lags: spec.lags.clone(),
            rolling: spec.rolling.clone(),
            calendar: spec.calendar.clone(),
            exog: exog.to_vec(),
            statics,
            step_seconds: spec.step_seconds,
            interval: spec.interval,
            half_width: Vec::new(),
        }
    }

    pub fn names(&self) -> Vec<String> {
        let mut n: Vec<String> = self.lags.iter().map(|l| format!("lag_{l}")).collect();
        for w in &self.rolling {
            n.push(format!("roll_mean_{w}"));
            n.push(format!("roll_std_{w}"));
        }
        n.extend(self.calendar.iter().map(|c| c.name().to_string()));
        n.extend(self.exog.iter().cloned());
        for (c, levels) in &self.statics {
            n.extend(levels.iter().map(|l| format!("{c}={l}")));
            n.push(format!("{c}=other"));
        }
        n
    }

    pub fn width(&self) -> usize {
        self.names().len()
    }

    /// Steps of history a feature row needs before it.
    pub fn lookback(&self) -> usize {
        self.lags
            .iter()
            .chain(self.rolling.iter())
            .copied()
            .max()
            .unwrap_or(1)
    }

    pub fn hash(&self) -> String {
        let mut key = self.names().join("\u{1f}");
        key.push_str(&format!("|step={}", self.step_seconds));
        fnv_hex(&key)
    }

    fn step_us(&self) -> i64 {
        self.step_seconds * 1_000_000
    }

    /// THE feature function: the row predicting `y[t]` from `y[..t]` (observed or predicted),
    /// the covariates at `t`, the calendar of `t` and the series' static levels.
    pub fn row(&self, s: &Series, y: &[f64], t: usize, out: &mut Vec<f64>) {
        out.clear();
        for &l in &self.lags {
            out.push(y[t - l]);
        }
        for &w in &self.rolling {
            let window = &y[t - w..t];
            let mean = window.iter().sum::<f64>() / w as f64;
            let var = window.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / w as f64;
            out.push(mean);
            out.push(var.sqrt());
        }
        let ts_s = s.time_at(t, self.step_us()).div_euclid(1_000_000);
        let days = ts_s.div_euclid(86_400);
        let dow = (days + 3).rem_euclid(7); // 1970-01-01 was a Thursday; Monday = 0
        for c in &self.calendar {
            out.push(match c {
                Calendar::Hour => (ts_s.rem_euclid(86_400) / 3600) as f64,
                Calendar::Dow => dow as f64,
                Calendar::Weekend => f64::from(dow >= 5),
            });
        }
        for e in &s.exog {
            out.push(e.get(t).copied().unwrap_or(f64::NAN));
        }
        for ((_, levels), v) in self.statics.iter().zip(&s.statics) {
            let slot = levels.iter().position(|l| l == v).unwrap_or(levels.len());
            out.extend((0..=levels.len()).map(|i| f64::from(i == slot)));
        }
    }

    /// How many training rows [`SeriesSchema::training_matrix`] has before any sampling.
    pub fn training_rows(&self, series: &[Series], end: impl Fn(&Series) -> usize) -> usize {
        series
            .iter()
            .map(|s| end(s).saturating_sub(self.lookback()))
            .sum()
    }

    /// Training rows of every series for targets `t` in `[lookback, end(series))`, numbered
    /// across series in order; with `keep` (ascending row numbers) only those rows are built.
    pub fn training_matrix(
        &self,
        series: &[Series],
        end: impl Fn(&Series) -> usize + Sync,
        keep: Option<&[usize]>,
    ) -> (Matrix, Vec<f64>) {
        let width = self.width();
        let start = self.lookback();
        let mut offsets = Vec::with_capacity(series.len());
        let mut acc = 0;
        for s in series {
            offsets.push(acc);
            acc += end(s).saturating_sub(start);
        }
        let blocks: Vec<(Vec<f64>, Vec<f64>)> = series
            .par_iter()
            .zip(offsets.par_iter())
            .map(|(s, &off)| {
                let stop = end(s).max(start);
                let steps: Box<dyn Iterator<Item = usize>> = match keep {
                    None => Box::new(start..stop),
                    Some(k) => {
                        let lo = k.partition_point(|&i| i < off);
                        let hi = k.partition_point(|&i| i < off + (stop - start));
                        Box::new(k[lo..hi].iter().map(move |&i| start + i - off))
                    }
                };
                let mut rows = Vec::new();
                let mut ys = Vec::new();
                let mut buf = Vec::with_capacity(width);
                for t in steps {
                    self.row(s, &s.y, t, &mut buf);
                    rows.extend_from_slice(&buf);
                    ys.push(s.y[t]);
                }
                (rows, ys)
            })
            .collect();
        let total: usize = blocks.iter().map(|b| b.1.len()).sum();
        let mut data = vec![0.0; total * width];
        let mut y = Vec::with_capacity(total);
        let mut r0 = 0;
        for (rows, ys) in blocks {
            for (i, row) in rows.chunks(width).enumerate() {
                for (c, v) in row.iter().enumerate() {
                    data[c * total + r0 + i] = *v;
                }
            }
            r0 += ys.len();
            y.extend(ys);
        }
        (
            Matrix {
                data,
                rows: total,
                cols: width,
            },
            y,
        )
    }

    /// Forecasts `horizon` steps after `origin(s)` for every series, recursively: all series
    /// advance one step at a time, so each step is one batched, parallel model call.
    pub fn recursive(
        &self,
        series: &[Series],
        origin: impl Fn(&Series) -> usize + Sync,
        horizon: usize,
        predict: impl Fn(&Matrix) -> Vec<f64>,
    ) -> Vec<Vec<f64>> {
        let width = self.width();
        let mut buffers: Vec<Vec<f64>> = series
            .par_iter()
            .map(|s| {
                let o = origin(s);
                let mut b = Vec::with_capacity(o + horizon);
                b.extend_from_slice(&s.y[..o]);
                b
            })
            .collect();
        let n = series.len();
        for _ in 0..horizon {
            let rows: Vec<Vec<f64>> = series
                .par_iter()
                .zip(buffers.par_iter())
                .map(|(s, b)| {
                    let mut row = Vec::with_capacity(width);
                    self.row(s, b, b.len(), &mut row);
                    row
                })
                .collect();
            let mut data = vec![0.0; n * width];
            for (r, row) in rows.iter().enumerate() {
                for (c, v) in row.iter().enumerate() {
                    data[c * n + r] = *v;
                }
            }
            let preds = predict(&Matrix {
                data,
                rows: n,
                cols: width,
            });
            for (b, p) in buffers.iter_mut().zip(preds) {
                b.push(p);
            }
        }
        buffers
            .into_iter()
            .zip(series)
            .map(|(b, s)| b[origin(s)..].to_vec())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::forecast::series::Key;

    fn schema() -> SeriesSchema {
        SeriesSchema {
            lags: vec![1, 2],
            rolling: vec![3],
            calendar: vec![Calendar::Hour, Calendar::Dow, Calendar::Weekend],
            exog: vec!["temp".into()],
            statics: vec![("region".into(), vec!["north".into()])],
            step_seconds: 3600,
            interval: 0.8,
            half_width: vec![],
        }
    }

    #[test]
    fn the_feature_row_reads_lags_windows_calendar_and_statics() {
        // 2026-11-30 is a Monday; start at 00:00 UTC.
        let start = chrono::DateTime::parse_from_rfc3339("2026-11-30T00:00:00Z")
            .unwrap()
            .timestamp_micros();
        let s = Series {
            key: Key::Int(1),
            start_us: start,
            y: vec![1.0, 2.0, 3.0, 4.0],
            exog: vec![vec![10.0, 11.0, 12.0, 13.0]],
            statics: vec!["south".into()],
        };
        let mut row = Vec::new();
        schema().row(&s, &s.y, 3, &mut row);
        let mean = 2.0;
        let std = (2.0f64 / 3.0).sqrt();
        assert_eq!(row.len(), schema().width());
        assert_eq!(&row[..2], &[3.0, 2.0]);
        assert!((row[2] - mean).abs() < 1e-12 && (row[3] - std).abs() < 1e-12);
        assert_eq!(&row[4..7], &[3.0, 0.0, 0.0]); // 03:00, Monday, not weekend
        assert_eq!(row[7], 13.0);
        assert_eq!(&row[8..], &[0.0, 1.0]); // south is not a learned level: `other`
    }

    #[test]
    fn a_sampled_training_matrix_is_exactly_those_rows_of_the_full_one() {
        let series: Vec<Series> = (0..4)
            .map(|k| Series {
                key: Key::Int(k),
                start_us: 0,
                y: (0..(10 + 3 * k as usize))
                    .map(|i| (i * i) as f64 + k as f64)
                    .collect(),
                exog: vec![(0..(10 + 3 * k as usize)).map(|i| i as f64).collect()],
                statics: vec!["north".into()],
            })
            .collect();
        let sc = schema();
        let end = |s: &Series| s.y.len() - 2;
        let total = sc.training_rows(&series, end);
        let (full, y_full) = sc.training_matrix(&series, end, None);
        assert_eq!(full.rows, total);
        let keep: Vec<usize> = (0..total).filter(|i| i % 3 == 1).collect();
        let (part, y_part) = sc.training_matrix(&series, end, Some(&keep));
        assert_eq!(part.data, full.select_rows(&keep).data);
        assert_eq!(y_part, keep.iter().map(|&i| y_full[i]).collect::<Vec<_>>());
    }

    #[test]
    fn recursion_feeds_predictions_back_as_lags() {
        let sc = SeriesSchema {
            lags: vec![1],
            rolling: vec![],
            calendar: vec![],
            exog: vec![],
            statics: vec![],
            step_seconds: 3600,
            interval: 0.8,
            half_width: vec![],
        };
        let s = Series {
            key: Key::Int(1),
            start_us: 0,
            y: vec![1.0, 2.0],
            exog: vec![],
            statics: vec![],
        };
        // A "model" that adds one to lag 1: the forecast must count up from the last value.
        let f = sc.recursive(
            &[s],
            |s| s.y.len(),
            3,
            |m| m.column(0).iter().map(|v| v + 1.0).collect(),
        );
        assert_eq!(f, vec![vec![3.0, 4.0, 5.0]]);
    }
}
