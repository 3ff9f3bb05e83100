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

use std::borrow::Cow;
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

/// The history frame's columns, decoded once.
struct Columns<'a> {
    /// The key of every row: integers when the key column is an integer column without NULLs.
    keys: RowKeys,
    times: Vec<i64>,
    /// The target and the covariates, NaN where NULL: a series holds a missing value as NaN.
    y: Cow<'a, [f64]>,
    exog: Vec<Cow<'a, [f64]>>,
    statics: Vec<&'a Column>,
}

enum RowKeys {
    Int(Vec<i64>),
    Text(Vec<String>),
}

impl RowKeys {
    fn text(&self, r: usize) -> String {
        match self {
            RowKeys::Int(k) => k[r].to_string(),
            RowKeys::Text(k) => k[r].clone(),
        }
    }

    fn key(&self, r: usize) -> Key {
        match self {
            RowKeys::Int(k) => Key::Int(k[r]),
            RowKeys::Text(k) => Key::Text(k[r].clone()),
        }
    }

    fn same(&self, a: usize, b: usize) -> bool {
        match self {
            RowKeys::Int(k) => k[a] == k[b],
            RowKeys::Text(k) => k[a] == k[b],
        }
    }

    /// Row numbers ordered by (key, time); rows usually arrive in that order already, which
    /// is checked in one pass before sorting.
    fn order(&self, times: &[i64]) -> Vec<usize> {
        let n = times.len();
        let mut order: Vec<usize> = (0..n).collect();
        let sorted = |a: usize, b: usize| match self {
            RowKeys::Int(k) => (k[a], times[a]) <= (k[b], times[b]),
            RowKeys::Text(k) => (&k[a], times[a]) <= (&k[b], times[b]),
        };
        if !(1..n).all(|r| sorted(r - 1, r)) {
            match self {
                RowKeys::Int(k) => return key_order(k, times),
                RowKeys::Text(k) => {
                    order.sort_unstable_by(|&a, &b| (&k[a], times[a]).cmp(&(&k[b], times[b])))
                }
            }
        }
        order
    }
}

/// Row numbers ordered by `(a, b)`, rows with equal values in their original order. In linear
/// time when the values of `a` are dense (their range at most about four times the rows, as
/// integer ids are): a counting sort by `a`, then each run of one `a` sorted by `b` unless it is
/// in order already (rows usually come in time order within a key, whatever the order of the
/// keys). Sparse values are sorted as triples.
fn key_order(a: &[i64], b: &[i64]) -> Vec<usize> {
    let n = a.len();
    let (Some(&lo), Some(&hi)) = (a.iter().min(), a.iter().max()) else {
        return Vec::new();
    };
    let range = i128::from(hi) - i128::from(lo) + 1;
    if range > 4 * n as i128 + 1024 {
        let mut triples: Vec<(i64, i64, usize)> = (0..n).map(|r| (a[r], b[r], r)).collect();
        triples.sort_unstable();
        return triples.into_iter().map(|(_, _, r)| r).collect();
    }
    // ends[v] is where the rows of value lo + v end once placed; filled backwards from there.
    let mut ends = vec![0usize; range as usize];
    for &v in a {
        ends[(v - lo) as usize] += 1;
    }
    let mut total = 0;
    for e in ends.iter_mut() {
        total += *e;
        *e = total;
    }
    let mut order = vec![0usize; n];
    for (r, &v) in a.iter().enumerate().rev() {
        let e = &mut ends[(v - lo) as usize];
        *e -= 1;
        order[*e] = r;
    }
    // `ends` now holds where each value's rows start.
    let mut rest = &mut order[..];
    let mut at = 0;
    for &start in ends.iter().skip(1).chain(std::iter::once(&n)) {
        let (run, tail) = std::mem::take(&mut rest).split_at_mut(start - at);
        if !run.windows(2).all(|w| b[w[0]] <= b[w[1]]) {
            run.sort_by_key(|&r| b[r]);
        }
        (rest, at) = (tail, start);
    }
    order
}

fn columns<'a>(job: &Job, time: &str, df: &'a DataFrame) -> Result<Columns<'a>, FeatureError> {
    let frame_err = |column: &str| {
        let column = column.to_string();
        move |source| FeatureError::Frame { column, source }
    };
    let key = job.input.key.as_str();
    let key_col = df.column(key).map_err(frame_err(key))?;
    // Keys and times on one thread, the values on another: each is a pass over every row.
    let (keys_times, values) = rayon::join(
        || {
            let keys = match key_col.i64() {
                Ok(k) if k.null_count() == 0 => RowKeys::Int(k.into_no_null_iter().collect()),
                _ => RowKeys::Text((0..df.height()).map(|r| cell_text(key_col, r)).collect()),
            };
            let times: Vec<i64> = df
                .column(time)
                .and_then(|c| c.datetime().map(|d| d.physical().clone()))
                .map_err(frame_err(time))?
                .iter()
                .map(|t| t.unwrap_or(i64::MIN))
                .collect();
            Ok::<_, FeatureError>((keys, times))
        },
        || {
            let y = values_column(df, job.input.target.as_str())?;
            let exog = (job.features.numeric.iter())
                .map(|c| values_column(df, c))
                .collect::<Result<Vec<_>, _>>()?;
            Ok::<_, FeatureError>((y, exog))
        },
    );
    let ((keys, times), (y, exog)) = (keys_times?, values?);
    Ok(Columns {
        keys,
        times,
        y,
        exog,
        statics: job
            .features
            .categorical
            .iter()
            .map(|c| df.column(c).map_err(frame_err(c)))
            .collect::<Result<_, _>>()?,
    })
}

/// Turns the history frame into regular series, in parallel. `future` (optional) extends
/// covariates past each series' end; missing future covariates carry the last observed value
/// forward.
pub fn build(
    job: &Job,
    spec: &ForecastSpec,
    time: &str,
    df: &DataFrame,
    future: Option<&DataFrame>,
    as_of_us: i64,
) -> Result<(Vec<Series>, Vec<Skipped>), FeatureError> {
    use rayon::prelude::*;
    let cols = columns(job, time, df)?;
    let order = cols.keys.order(&cols.times);
    // Runs of one key in `order`: one series each.
    let mut groups = Vec::new();
    let mut start = 0;
    for i in 1..=order.len() {
        if i == order.len() || !cols.keys.same(order[start], order[i]) {
            groups.push(&order[start..i]);
            start = i;
        }
    }
    let future_map = future
        .map(|f| future_covariates(job, time, f))
        .transpose()?;
    let built: Vec<Result<Series, Skipped>> = groups
        .par_iter()
        .map(|rows| one_series(job, spec, &cols, rows, future_map.as_ref(), as_of_us))
        .collect();
    let mut out = Vec::with_capacity(built.len());
    let mut skipped = Vec::new();
    for b in built {
        match b {
            Ok(s) => out.push(s),
            Err(why) => skipped.push(why),
        }
    }
    Ok((out, skipped))
}

/// One series from its rows (in time order), or why it gets no forecast.
fn one_series(
    job: &Job,
    spec: &ForecastSpec,
    cols: &Columns,
    rows: &[usize],
    future: Option<&FutureMap>,
    as_of_us: i64,
) -> Result<Series, Skipped> {
    let step_us = spec.step_seconds * 1_000_000;
    let (first, last) = (rows[0], rows[rows.len() - 1]);
    let name = cols.keys.text(first);
    let (t0, t_last) = (cols.times[first], cols.times[last]);
    let len = ((t_last - t0) / step_us) as usize + 1;
    let mut ys = vec![f64::NAN; len];
    let mut ex = vec![vec![f64::NAN; len]; cols.exog.len()];
    for &r in rows {
        let t = cols.times[r];
        if (t - t0) % step_us != 0 {
            let why = format!(
                "timestamp {} is not on the {}s step grid",
                crate::warehouse::frame::micros_to_utc(t),
                spec.step_seconds
            );
            return Err((name, why));
        }
        let i = ((t - t0) / step_us) as usize;
        ys[i] = cols.y[r];
        for (e, col) in ex.iter_mut().zip(&cols.exog) {
            e[i] = col[r];
        }
    }
    // Gap policy: interpolate short gaps; longer ones stay missing.
    fill_gaps(&mut ys, spec.max_gap);
    for e in ex.iter_mut() {
        fill_gaps(e, usize::MAX);
        fill_edges(e);
    }
    let stale_steps = (as_of_us - t_last).max(0) / step_us;
    let observed = ys.iter().filter(|v| v.is_finite()).count();
    if stale_steps > spec.max_stale as i64 {
        let why = format!(
            "stale: last reading at {}, more than forecast.max_stale = {} steps before as_of",
            crate::warehouse::frame::micros_to_utc(t_last).format("%Y-%m-%d %H:%M"),
            spec.max_stale
        );
        return Err((name, why));
    }
    if observed == 0 {
        let why = format!("every value of {:?} is NULL", job.input.target.as_str());
        return Err((name, why));
    }
    if ys.len() < spec.day() {
        let why = format!(
            "{} steps of history, less than a day: nothing to forecast from",
            ys.len()
        );
        return Err((name, why));
    }
    // Covariates for the forecast steps: the future SQL where it has them, else the last value.
    for (j, e) in ex.iter_mut().enumerate() {
        let last_value = e.last().copied().unwrap_or(f64::NAN);
        for h in 1..=spec.horizon {
            let t = t_last + h as i64 * step_us;
            let v = future
                .and_then(|m| m.get(&(name.clone(), t)))
                .and_then(|vals| vals[j])
                .unwrap_or(last_value);
            e.push(v);
        }
    }
    Ok(Series {
        key: cols.keys.key(first),
        start_us: t0,
        y: ys,
        exog: ex,
        statics: cols.statics.iter().map(|c| cell_text(c, last)).collect(),
        model_ok: observed >= spec.min_history,
    })
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

/// A history column as `f64`s, NaN where NULL: borrowed from the frame when it is a float
/// column in one piece without NULLs (as read), else converted.
fn values_column<'a>(df: &'a DataFrame, name: &str) -> Result<Cow<'a, [f64]>, FeatureError> {
    let col = df.column(name).map_err(|source| FeatureError::Frame {
        column: name.to_string(),
        source,
    })?;
    if let Ok(ca) = col.f64() {
        if let (0, Ok(v)) = (ca.null_count(), ca.cont_slice()) {
            return Ok(Cow::Borrowed(v));
        }
    }
    let values = float_column(df, name)?;
    Ok(Cow::Owned(
        values.into_iter().map(|v| v.unwrap_or(f64::NAN)).collect(),
    ))
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
    let mut m = FutureMap::with_capacity(f.height());
    future_rows(job, time, f, |key, t, values| {
        m.insert((key, t), values);
    })?;
    Ok(m)
}

/// Calls `each(key, time, covariates)` for every row of a future-covariates frame.
fn future_rows(
    job: &Job,
    time: &str,
    f: &DataFrame,
    mut each: impl FnMut(String, i64, Vec<Option<f64>>),
) -> Result<(), FeatureError> {
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
    for r in 0..f.height() {
        if let Some(t) = times.get(r) {
            each(cell_text(keys, r), t, cols.iter().map(|c| c[r]).collect());
        }
    }
    Ok(())
}

/// The covariates the backtest's forecasts read after their origins
/// (`forecast.backtest_covariates = "served"`): for each backtest window (0 = the latest), the
/// future SQL's rows when run as of that window's origin, which is what a run at that time
/// would have served. Without it a backtest reads the covariates observed later, and a model
/// that leans on them (temperature for energy) looks better than it will be when served a
/// forecast or a persistence rule. Kept per window and series as the `horizon` steps after the
/// series' origin in that window (NaN where the SQL returned nothing), a few MB where a map of
/// the rows took hundreds.
pub struct AsServed {
    /// `[window][series]`: the steps' values, covariate by covariate (`horizon` each).
    windows: Vec<Vec<Vec<f64>>>,
    /// Each series' origin in each window (`[window][series]`), as the backtest computes it.
    origins: Vec<Vec<Option<usize>>>,
    horizon: usize,
}

impl AsServed {
    /// From the future SQL's frames, one per window, latest first; the origin of window `w` of
    /// a series of `n` steps is `n - horizon - w * backtest_step`.
    pub fn new(
        job: &Job,
        spec: &ForecastSpec,
        time: &str,
        frames: &[DataFrame],
        series: &[Series],
    ) -> Result<AsServed, FeatureError> {
        let (h, covs) = (spec.horizon, job.features.numeric.len());
        let step_us = spec.step_seconds * 1_000_000;
        let index: std::collections::HashMap<String, usize> = series
            .iter()
            .enumerate()
            .map(|(i, s)| (s.key.to_string(), i))
            .collect();
        // The windows' frames are independent: decoded side by side.
        use rayon::prelude::*;
        let per_window = frames
            .par_iter()
            .enumerate()
            .map(|(w, f)| {
                let at: Vec<Option<usize>> = series
                    .iter()
                    .map(|s| s.y.len().checked_sub(h + w * spec.backtest_step))
                    .collect();
                let mut values = vec![Vec::new(); series.len()];
                future_rows(job, time, f, |key, t, row| {
                    let Some(&i) = index.get(&key) else { return };
                    let Some(o) = at[i] else { return };
                    let k = (t - series[i].time_at(o, step_us)).div_euclid(step_us);
                    if !(0..h as i64).contains(&k) || (t - series[i].start_us) % step_us != 0 {
                        return;
                    }
                    let v: &mut Vec<f64> = &mut values[i];
                    if v.is_empty() {
                        v.resize(h * covs, f64::NAN);
                    }
                    for (j, x) in row.into_iter().enumerate() {
                        v[j * h + k as usize] = x.unwrap_or(f64::NAN);
                    }
                })?;
                Ok((values, at))
            })
            .collect::<Result<Vec<_>, FeatureError>>()?;
        let (windows, origins) = per_window.into_iter().unzip();
        Ok(AsServed {
            windows,
            origins,
            horizon: h,
        })
    }

    /// The backtest windows whose served covariates were read.
    pub fn windows(&self) -> usize {
        self.windows.len()
    }

    /// Series `i` (`s`) as a run forecasting from `origin` in window `w` would have seen it:
    /// its history up to the origin, and for the `horizon` steps from it the covariates the
    /// future SQL returned then, or where it returned none the last value before the origin
    /// (as a served forecast does).
    pub fn as_of(&self, i: usize, s: &Series, w: usize, origin: usize) -> Series {
        let h = self.horizon;
        let same_origin = self.origins.get(w).and_then(|o| o[i]) == Some(origin);
        let served = self
            .windows
            .get(w)
            .map(|v| v[i].as_slice())
            .filter(|v| same_origin && !v.is_empty());
        let exog = s
            .exog
            .iter()
            .enumerate()
            .map(|(j, e)| {
                let mut v = e[..origin.min(e.len())].to_vec();
                let last = v.last().copied().unwrap_or(f64::NAN);
                for k in 0..h {
                    let x = served.map_or(f64::NAN, |sv| sv[j * h + k]);
                    v.push(if x.is_nan() { last } else { x });
                }
                v
            })
            .collect();
        Series {
            key: s.key.clone(),
            start_us: s.start_us,
            y: s.y[..origin.min(s.y.len())].to_vec(),
            exog,
            statics: s.statics.clone(),
            model_ok: s.model_ok,
        }
    }
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
    fn key_order_sorts_by_key_then_time_keeping_ties_in_row_order() {
        let check = |a: &[i64], b: &[i64]| {
            let mut want: Vec<usize> = (0..a.len()).collect();
            want.sort_by_key(|&r| (a[r], b[r]));
            assert_eq!(key_order(a, b), want, "a {a:?} b {b:?}");
        };
        check(&[3, 1, 2, 1, 3, 2], &[0, 5, 1, 4, 0, 0]); // dense: counted
        check(&[3 << 50, -1, 3 << 50, -1], &[2, 1, 1, 1]); // sparse: sorted as triples
        check(&[], &[]);
        // Keys in any order, times in order within each key (the usual history), and not.
        let a: Vec<i64> = (0..600).map(|i| (i * 7919) % 13 - 6).collect();
        let in_time: Vec<i64> = (0..600).collect();
        let shuffled: Vec<i64> = (0..600).map(|i| (i * 104_729) % 600).collect();
        check(&a, &in_time);
        check(&a, &shuffled);
    }

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

    #[test]
    fn a_backtest_origin_sees_the_covariates_served_then() {
        // 10 observed steps, 2 future ones; the covariate was observed as 100 + i.
        let s = Series {
            key: Key::Int(7),
            start_us: 0,
            y: (0..10).map(f64::from).collect(),
            exog: vec![(0..12).map(|i| 100.0 + f64::from(i)).collect()],
            statics: vec![],
            model_ok: true,
        };
        // Window 0 (origin 8): the SQL served nothing; window 1 (origin 6): step 6 only, a
        // forecast of -1 (NaN: no row).
        let served = AsServed {
            windows: vec![vec![vec![]], vec![vec![-1.0, f64::NAN, f64::NAN]]],
            origins: vec![vec![Some(8)], vec![Some(6)]],
            horizon: 3,
        };
        let seen = served.as_of(0, &s, 1, 6);
        assert_eq!(
            seen.y,
            vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
            "history ends at the origin"
        );
        // Served where the SQL had it; else the last value before the origin, never the
        // value observed later.
        assert_eq!(
            seen.exog[0],
            vec![100.0, 101.0, 102.0, 103.0, 104.0, 105.0, -1.0, 105.0, 105.0]
        );
        // A window the SQL returned nothing for: persistence throughout.
        let seen = served.as_of(0, &s, 0, 8);
        assert_eq!(seen.exog[0][8..], [107.0, 107.0, 107.0]);
    }
}
