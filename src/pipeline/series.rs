//! Stage 3 for `forecast` jobs: series on a regular clock, and the one feature function that
//! serves training, holdout evaluation and the recursive forecast alike (each step's
//! prediction becomes the next step's lag). Because there is exactly one function that turns
//! a series' buffer into a feature row, training and serving cannot drift apart.
//!
//! Missing steps: a gap of at most `forecast.max_gap` steps is filled by linear interpolation
//! (target and covariates); after a longer gap only the history since the gap is used. A
//! series whose last reading is more than `max_gap` steps before the as-of time is stale and
//! gets no forecast; so does one with fewer than `forecast.min_history` steps. Both are
//! counted and reported, never a crash.

use std::collections::BTreeMap;

use polars::prelude::*;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::features::{fnv_hex, FeatureError};
use crate::config::{ColumnType, ForecastSpec, Job};
use crate::model::Matrix;
use crate::warehouse::frame::cell_text;

/// A series' key, kept in its own type for the output table.
#[derive(Debug, Clone, PartialEq)]
pub enum Key {
    Int(i64),
    Text(String),
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Key::Int(i) => write!(f, "{i}"),
            Key::Text(s) => f.write_str(s),
        }
    }
}

/// One series on a regular grid: `y[i]` is the value at `start + i * step`.
#[derive(Debug, Clone)]
pub struct Series {
    pub key: Key,
    pub start_us: i64,
    pub y: Vec<f64>,
    /// One vector per exogenous covariate, aligned with `y` (and extended for the future).
    pub exog: Vec<Vec<f64>>,
    /// Static categorical values, one per `statics` column.
    pub statics: Vec<String>,
}

impl Series {
    pub fn time_at(&self, i: usize, step_us: i64) -> i64 {
        self.start_us + i as i64 * step_us
    }
}

/// What the model reads, stored with it: lags, windows, calendar, covariates, static levels.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SeriesSchema {
    pub lags: Vec<usize>,
    pub rolling: Vec<usize>,
    pub calendar: Vec<String>,
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
        n.extend(self.calendar.iter().cloned());
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
            out.push(match c.as_str() {
                "hour" => (ts_s.rem_euclid(86_400) / 3600) as f64,
                "dow" => dow as f64,
                _ => f64::from(dow >= 5),
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

/// Why a series got no forecast.
pub type Skipped = (String, String);

/// Turns the history frame into regular series. `future` (optional) extends covariates past
/// each series' end; missing future covariates carry the last observed value forward.
pub fn build(
    job: &Job,
    spec: &ForecastSpec,
    df: &DataFrame,
    future: Option<&DataFrame>,
    as_of_us: i64,
) -> Result<(Vec<Series>, Vec<Skipped>), FeatureError> {
    let key = job.input.key.as_str();
    let time = job
        .input
        .time
        .as_ref()
        .expect("validated: forecast jobs have a time column");
    let step_us = spec.step_seconds * 1_000_000;
    let frame_err = |column: &str| {
        let column = column.to_string();
        move |source| FeatureError::Frame { column, source }
    };
    let keys = df.column(key).map_err(frame_err(key))?;
    let times = df
        .column(time.as_str())
        .and_then(|c| c.datetime().map(|d| d.physical().clone()))
        .map_err(frame_err(time.as_str()))?;
    let y = float_column(df, job.input.target.as_str())?;
    let exog: Vec<Vec<Option<f64>>> = job
        .features
        .numeric
        .iter()
        .map(|c| float_column(df, c))
        .collect::<Result<_, _>>()?;
    let statics: Vec<&Column> = job
        .features
        .categorical
        .iter()
        .map(|c| df.column(c).map_err(frame_err(c)))
        .collect::<Result<_, _>>()?;

    // Group row indices by series, ordered by time.
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for r in 0..df.height() {
        groups.entry(cell_text(keys, r)).or_default().push(r);
    }
    let future_map = future.map(|f| future_covariates(job, f)).transpose()?;

    let mut out = Vec::with_capacity(groups.len());
    let mut skipped = Vec::new();
    for (name, mut rows) in groups {
        rows.sort_by_key(|&r| times.get(r).unwrap_or(i64::MIN));
        let first_row = rows[0];
        let key_value = match job.input.columns.get(key) {
            Some(ColumnType::Int) => Key::Int(
                keys.i64()
                    .ok()
                    .and_then(|c| c.get(first_row))
                    .unwrap_or_default(),
            ),
            _ => Key::Text(name.clone()),
        };
        let t0 = times.get(rows[0]).unwrap_or_default();
        let t_last = times
            .get(*rows.last().expect("non-empty"))
            .unwrap_or_default();
        let len = ((t_last - t0) / step_us) as usize + 1;
        let mut ys = vec![f64::NAN; len];
        let mut ex = vec![vec![f64::NAN; len]; exog.len()];
        let mut off_grid = None;
        for &r in &rows {
            let t = times.get(r).unwrap_or_default();
            if (t - t0) % step_us != 0 {
                off_grid = Some(t);
                break;
            }
            let i = ((t - t0) / step_us) as usize;
            ys[i] = y[r].unwrap_or(f64::NAN);
            for (e, col) in ex.iter_mut().zip(&exog) {
                e[i] = col[r].unwrap_or(f64::NAN);
            }
        }
        if let Some(t) = off_grid {
            skipped.push((
                name,
                format!(
                    "timestamp {} is not on the {}s step grid",
                    crate::warehouse::frame::micros_to_utc(t),
                    spec.step_seconds
                ),
            ));
            continue;
        }
        // Gap policy: interpolate short gaps, cut the history at the last long one.
        let cut = fill_gaps(&mut ys, spec.max_gap);
        for e in ex.iter_mut() {
            fill_gaps(e, usize::MAX);
        }
        let ys = ys[cut..].to_vec();
        let mut ex: Vec<Vec<f64>> = ex.into_iter().map(|e| e[cut..].to_vec()).collect();
        let start_us = t0 + cut as i64 * step_us;
        let stale_after = t_last + (spec.max_gap as i64 + 1) * step_us;
        if stale_after <= as_of_us {
            skipped.push((
                name,
                format!(
                    "stale: last reading at {}",
                    crate::warehouse::frame::micros_to_utc(t_last).format("%Y-%m-%d %H:%M")
                ),
            ));
            continue;
        }
        if ys.len() < spec.min_history {
            skipped.push((
                name,
                format!(
                    "{} steps of history, fewer than forecast.min_history = {}",
                    ys.len(),
                    spec.min_history
                ),
            ));
            continue;
        }
        // Covariates for the forecast steps: the future SQL where it has them, else the last value.
        for (j, e) in ex.iter_mut().enumerate() {
            let last = e.last().copied().unwrap_or(f64::NAN);
            for h in 1..=spec.horizon {
                let t = t_last + h as i64 * step_us;
                let v = future_map
                    .as_ref()
                    .and_then(|m| m.get(&(name.clone(), t)))
                    .and_then(|vals| vals[j])
                    .unwrap_or(last);
                e.push(v);
            }
        }
        let statics = statics
            .iter()
            .map(|c| cell_text(c, *rows.last().expect("non-empty")))
            .collect();
        out.push(Series {
            key: key_value,
            start_us,
            y: ys,
            exog: ex,
            statics,
        });
    }
    Ok((out, skipped))
}

/// Linear interpolation of runs of NaN no longer than `max_gap`; returns the index after the
/// last longer gap (history before it is dropped). Leading NaNs are dropped too.
fn fill_gaps(v: &mut [f64], max_gap: usize) -> usize {
    let mut cut = 0;
    let mut i = 0;
    while i < v.len() {
        if !v[i].is_nan() {
            i += 1;
            continue;
        }
        let start = i;
        while i < v.len() && v[i].is_nan() {
            i += 1;
        }
        let gap = i - start;
        if start == 0 || i == v.len() || gap > max_gap {
            cut = cut.max(i);
            continue;
        }
        let (a, b) = (v[start - 1], v[i]);
        for (k, slot) in v[start..i].iter_mut().enumerate() {
            *slot = a + (b - a) * (k + 1) as f64 / (gap + 1) as f64;
        }
    }
    cut.min(v.len())
}

fn float_column(df: &DataFrame, name: &str) -> Result<Vec<Option<f64>>, FeatureError> {
    let col = df.column(name).map_err(|source| FeatureError::Frame {
        column: name.to_string(),
        source,
    })?;
    let cast = col
        .cast(&DataType::Float64)
        .map_err(|source| FeatureError::Frame {
            column: name.to_string(),
            source,
        })?;
    Ok(cast.f64().expect("cast to f64").iter().collect())
}

type FutureMap = std::collections::HashMap<(String, i64), Vec<Option<f64>>>;

fn future_covariates(job: &Job, f: &DataFrame) -> Result<FutureMap, FeatureError> {
    let key = job.input.key.as_str();
    let time = job.input.time.as_ref().expect("validated").as_str();
    let keys = f.column(key).map_err(|source| FeatureError::Frame {
        column: key.into(),
        source,
    })?;
    let times = f
        .column(time)
        .and_then(|c| c.datetime().map(|d| d.physical().clone()))
        .map_err(|source| FeatureError::Frame {
            column: time.into(),
            source,
        })?;
    let cols: Vec<Vec<Option<f64>>> = job
        .features
        .numeric
        .iter()
        .map(|c| float_column(f, c))
        .collect::<Result<_, _>>()?;
    let mut m = FutureMap::with_capacity(f.height());
    for r in 0..f.height() {
        if let Some(t) = times.get(r) {
            m.insert((cell_text(keys, r), t), cols.iter().map(|c| c[r]).collect());
        }
    }
    Ok(m)
}

/// The columns the future-covariates SQL must return: key, time and the numeric covariates.
pub fn future_contract(job: &Job) -> BTreeMap<String, ColumnType> {
    let mut wanted: Vec<&str> = vec![job.input.key.as_str()];
    if let Some(t) = &job.input.time {
        wanted.push(t.as_str());
    }
    wanted.extend(job.features.numeric.iter().map(String::as_str));
    job.input
        .columns
        .iter()
        .filter(|(k, _)| wanted.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

/// Static categorical levels, most frequent first, learned from the series.
pub fn learn_statics(job: &Job, series: &[Series]) -> Vec<(String, Vec<String>)> {
    job.features
        .categorical
        .iter()
        .enumerate()
        .map(|(j, name)| {
            let mut counts: std::collections::HashMap<&str, usize> = Default::default();
            for s in series {
                *counts.entry(s.statics[j].as_str()).or_default() += 1;
            }
            let mut levels: Vec<(&str, usize)> = counts.into_iter().collect();
            levels.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            (
                name.clone(),
                levels
                    .into_iter()
                    .take(30)
                    .map(|(l, _)| l.to_string())
                    .collect(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> SeriesSchema {
        SeriesSchema {
            lags: vec![1, 2],
            rolling: vec![3],
            calendar: vec!["hour".into(), "dow".into(), "weekend".into()],
            exog: vec!["temp".into()],
            statics: vec![("region".into(), vec!["north".into()])],
            step_seconds: 3600,
            interval: 0.8,
            half_width: vec![],
        }
    }

    #[test]
    fn short_gaps_are_interpolated_and_long_ones_cut_history() {
        let mut v = vec![1.0, f64::NAN, 3.0, 4.0];
        assert_eq!(fill_gaps(&mut v, 1), 0);
        assert_eq!(v, vec![1.0, 2.0, 3.0, 4.0]);
        let mut v = vec![1.0, f64::NAN, f64::NAN, 4.0, 5.0];
        assert_eq!(fill_gaps(&mut v, 1), 3);
        let mut v = vec![f64::NAN, 2.0, 3.0];
        assert_eq!(fill_gaps(&mut v, 5), 1);
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
