//! Stage 3 for `forecast` jobs: the history frame becomes series on a regular clock, with
//! future covariates appended for the steps to forecast.
//!
//! Missing steps: a gap of at most `forecast.max_gap` steps is filled by linear interpolation
//! (target and covariates); a longer gap stays missing, so the lags and windows that fall into
//! it are missing values (the tree models route them) and the history before it still counts.
//! A series shorter than `forecast.min_history` gets a seasonal-naive forecast instead of the
//! model's (`model_ok` is false) when it has at least a day of history. A series whose last
//! reading lies more than `forecast.max_stale` steps before the as-of time is stale. Stale
//! series, series with less than a day of values and series off the step grid are skipped:
//! counted and reported, never a crash.

use std::collections::BTreeMap;

use polars::prelude::*;

use crate::config::{ColumnType, ForecastSpec, Job};
use crate::pipeline::score::features::FeatureError;
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
    /// Long enough for the model (`forecast.min_history`); else a seasonal-naive fallback.
    pub model_ok: bool,
}

impl Series {
    pub fn time_at(&self, i: usize, step_us: i64) -> i64 {
        self.start_us + i as i64 * step_us
    }
}

/// Why a series got no forecast.
pub type Skipped = (String, String);

/// Turns the history frame into regular series. `future` (optional) extends covariates past
/// each series' end; missing future covariates carry the last observed value forward.
pub fn build(
    job: &Job,
    spec: &ForecastSpec,
    time: &str,
    df: &DataFrame,
    future: Option<&DataFrame>,
    as_of_us: i64,
) -> Result<(Vec<Series>, Vec<Skipped>), FeatureError> {
    let key = job.input.key.as_str();
    let step_us = spec.step_seconds * 1_000_000;
    let frame_err = |column: &str| {
        let column = column.to_string();
        move |source| FeatureError::Frame { column, source }
    };
    let keys = df.column(key).map_err(frame_err(key))?;
    let times = df
        .column(time)
        .and_then(|c| c.datetime().map(|d| d.physical().clone()))
        .map_err(frame_err(time))?;
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
    let future_map = future
        .map(|f| future_covariates(job, time, f))
        .transpose()?;

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
        // Gap policy: interpolate short gaps; longer ones stay missing.
        fill_gaps(&mut ys, spec.max_gap);
        for e in ex.iter_mut() {
            fill_gaps(e, usize::MAX);
            fill_edges(e);
        }
        let start_us = t0;
        let stale_steps = (as_of_us - t_last).max(0) / step_us;
        let observed = ys.iter().filter(|v| v.is_finite()).count();
        let reason = if stale_steps > spec.max_stale as i64 {
            Some(format!(
                "stale: last reading at {}, more than forecast.max_stale = {} steps before as_of",
                crate::warehouse::frame::micros_to_utc(t_last).format("%Y-%m-%d %H:%M"),
                spec.max_stale
            ))
        } else if observed == 0 {
            Some(format!(
                "every value of {:?} is NULL",
                job.input.target.as_str()
            ))
        } else if ys.len() < spec.day() {
            Some(format!(
                "{} steps of history, less than a day: nothing to forecast from",
                ys.len()
            ))
        } else {
            None
        };
        if let Some(reason) = reason {
            skipped.push((name, reason));
            continue;
        }
        let model_ok = observed >= spec.min_history;
        let mut ex = ex;
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
            model_ok,
        });
    }
    Ok((out, skipped))
}

/// Linear interpolation of inner runs of NaN no longer than `max_gap`; longer runs and runs at
/// either end stay NaN.
fn fill_gaps(v: &mut [f64], max_gap: usize) {
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
            continue;
        }
        let (a, b) = (v[start - 1], v[i]);
        for (k, slot) in v[start..i].iter_mut().enumerate() {
            *slot = a + (b - a) * (k + 1) as f64 / (gap + 1) as f64;
        }
    }
}

/// Carries the first known value back and the last one forward over NaN runs at the ends
/// (covariates only: a covariate is known wherever the target is).
fn fill_edges(v: &mut [f64]) {
    if let Some(first) = v.iter().position(|x| !x.is_nan()) {
        let f = v[first];
        v[..first].iter_mut().for_each(|x| *x = f);
        let last = v.iter().rposition(|x| !x.is_nan()).unwrap_or(first);
        let l = v[last];
        v[last + 1..].iter_mut().for_each(|x| *x = l);
    }
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

fn future_covariates(job: &Job, time: &str, f: &DataFrame) -> Result<FutureMap, FeatureError> {
    let key = job.input.key.as_str();
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
pub fn future_contract(job: &Job, time: &str) -> BTreeMap<String, ColumnType> {
    let mut wanted: Vec<&str> = vec![job.input.key.as_str(), time];
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

    #[test]
    fn short_gaps_are_interpolated_and_long_ones_stay_missing() {
        let mut v = vec![1.0, f64::NAN, 3.0, 4.0];
        fill_gaps(&mut v, 1);
        assert_eq!(v, vec![1.0, 2.0, 3.0, 4.0]);
        let mut v = vec![1.0, f64::NAN, f64::NAN, 4.0, 5.0];
        fill_gaps(&mut v, 1);
        assert!(v[1].is_nan() && v[2].is_nan() && v[3] == 4.0 && v[0] == 1.0);
        let mut v = vec![f64::NAN, 2.0, 3.0, f64::NAN];
        fill_gaps(&mut v, 5);
        assert!(v[0].is_nan() && v[3].is_nan());
        fill_edges(&mut v);
        assert_eq!(v, vec![2.0, 2.0, 3.0, 3.0]);
    }
}
