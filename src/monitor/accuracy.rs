//! Realized accuracy, the computation: issued forecasts (rows of `<table>_history`) joined with
//! the actuals by series and target time, grouped by model version, method, lead time and
//! target day (UTC), with n, MAE, RMSE, bias (mean of yhat − actual), interval coverage and the
//! MAE of seasonal naive: the actual one season (a day of steps) before the target, or as many
//! seasons back as it takes to be known at the forecast's origin, as a naive forecast issued at
//! the same time would have been. Plain Rust over the polars columns: one code path for both
//! warehouses, and the actuals come from the job's own SQL, which the warehouse cannot join.

use std::collections::{BTreeMap, HashMap};

use polars::prelude::*;

/// A series (or entity) key, as the history table and the job's SQL both hold it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SeriesKey {
    Int(i64),
    Text(String),
}

impl std::fmt::Display for SeriesKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SeriesKey::Int(k) => write!(f, "{k}"),
            SeriesKey::Text(k) => write!(f, "{k:?}"),
        }
    }
}

/// The keys of a column: integers stay integers, anything else is compared as text.
pub(crate) fn keys(col: &Column) -> PolarsResult<Vec<Option<SeriesKey>>> {
    if let Ok(ints) = col.i64() {
        return Ok(ints.iter().map(|k| k.map(SeriesKey::Int)).collect());
    }
    let text = col.cast(&DataType::String)?;
    Ok(text
        .str()?
        .iter()
        .map(|k| k.map(|s| SeriesKey::Text(s.to_string())))
        .collect())
}

pub(crate) fn micros(col: &Column) -> PolarsResult<Vec<Option<i64>>> {
    Ok(col.datetime()?.physical().iter().collect())
}

pub(crate) fn floats(col: &Column) -> PolarsResult<Vec<Option<f64>>> {
    Ok(col.cast(&DataType::Float64)?.f64()?.iter().collect())
}

/// What happened: the target of each series at each time (microseconds, UTC).
#[derive(Debug, Default)]
pub struct Actuals(HashMap<(SeriesKey, i64), f64>);

impl Actuals {
    /// From the job's history rows; rows with a NULL key, time or target are not actuals.
    pub fn from_frame(df: &DataFrame, key: &str, time: &str, target: &str) -> PolarsResult<Self> {
        let k = keys(df.column(key)?)?;
        let t = micros(df.column(time)?)?;
        let y = floats(df.column(target)?)?;
        let map = k
            .into_iter()
            .zip(t)
            .zip(y)
            .filter_map(|((k, t), y)| Some(((k?, t?), y.filter(|v| v.is_finite())?)))
            .collect();
        Ok(Actuals(map))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The actual of `key` at `t` (microseconds, UTC), if it arrived.
    pub fn get(&self, key: &SeriesKey, t: i64) -> Option<f64> {
        self.0.get(&(key.clone(), t)).copied()
    }
}

/// The calendar of the job: its step and its season (steps per day), for seasonal naive.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub step_us: i64,
    pub season: i64,
}

impl Clock {
    /// How far back seasonal naive reads for a forecast `horizon` steps ahead: whole seasons,
    /// enough to be known at the origin.
    fn naive_back_us(&self, horizon: i64) -> i64 {
        let seasons = (horizon.max(1) + self.season - 1) / self.season;
        seasons * self.season * self.step_us
    }

    /// The earliest actual a forecast for a target at `from_us`, up to `horizon` steps ahead,
    /// can need.
    pub fn earliest_needed(&self, from_us: i64, horizon: i64) -> i64 {
        from_us - self.naive_back_us(horizon)
    }
}

/// One row of `prescore_accuracy`, without the job.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub model_version: i64,
    pub method: String,
    pub horizon: i64,
    /// Midnight UTC of the target's day, in microseconds.
    pub day_us: i64,
    pub n: i64,
    pub mae: f64,
    pub rmse: f64,
    pub bias: f64,
    pub coverage: f64,
    pub naive_n: i64,
    pub naive_mae: Option<f64>,
}

#[derive(Default)]
struct Sums {
    n: i64,
    abs: f64,
    sq: f64,
    err: f64,
    covered: i64,
    naive_n: i64,
    naive_abs: f64,
}

const DAY_US: i64 = 86_400 * 1_000_000;

/// Joins the issued forecasts (`series_id`, `target_ts`, `horizon`, `yhat`, `yhat_lo`,
/// `yhat_hi`, `method`, `model_version`) with the actuals and aggregates them. Forecasts
/// without an actual yet are left out; groups come sorted by their key.
pub fn compute(issued: &DataFrame, actuals: &Actuals, clock: Clock) -> PolarsResult<Vec<Group>> {
    let col = |name: &str| issued.column(name);
    let key = keys(col("series_id")?)?;
    let target = micros(col("target_ts")?)?;
    let horizon: Vec<Option<i64>> = col("horizon")?
        .cast(&DataType::Int64)?
        .i64()?
        .iter()
        .collect();
    let version: Vec<Option<i64>> = col("model_version")?
        .cast(&DataType::Int64)?
        .i64()?
        .iter()
        .collect();
    let (yhat, lo, hi) = (
        floats(col("yhat")?)?,
        floats(col("yhat_lo")?)?,
        floats(col("yhat_hi")?)?,
    );
    let method = col("method")?.cast(&DataType::String)?;
    let method = method.str()?;
    let mut groups: BTreeMap<(i64, String, i64, i64), Sums> = BTreeMap::new();
    for r in 0..issued.height() {
        let (Some(k), Some(t), Some(h), Some(f)) = (&key[r], target[r], horizon[r], yhat[r]) else {
            continue;
        };
        let Some(y) = actuals.get(k, t) else { continue };
        let day = t.div_euclid(DAY_US) * DAY_US;
        let m = method.get(r).unwrap_or_default().to_string();
        let s = groups
            .entry((version[r].unwrap_or(0), m, h, day))
            .or_default();
        let e = f - y;
        s.n += 1;
        s.abs += e.abs();
        s.sq += e * e;
        s.err += e;
        if let (Some(l), Some(u)) = (lo[r], hi[r]) {
            s.covered += i64::from(l <= y && y <= u);
        }
        if let Some(naive) = actuals.get(k, t - clock.naive_back_us(h)) {
            s.naive_n += 1;
            s.naive_abs += (naive - y).abs();
        }
    }
    Ok(groups
        .into_iter()
        .map(|((model_version, method, horizon, day_us), s)| {
            let n = s.n as f64;
            Group {
                model_version,
                method,
                horizon,
                day_us,
                n: s.n,
                mae: s.abs / n,
                rmse: (s.sq / n).sqrt(),
                bias: s.err / n,
                coverage: s.covered as f64 / n,
                naive_n: s.naive_n,
                naive_mae: (s.naive_n > 0).then(|| s.naive_abs / s.naive_n as f64),
            }
        })
        .collect())
}

/// MAE per lead time over all groups (n-weighted), with seasonal naive's where known: what
/// the run summary prints. (horizon, n, mae, naive mae)
pub fn by_horizon(groups: &[Group]) -> Vec<(i64, i64, f64, Option<f64>)> {
    let mut acc: BTreeMap<i64, (i64, f64, i64, f64)> = BTreeMap::new();
    for g in groups {
        let a = acc.entry(g.horizon).or_default();
        a.0 += g.n;
        a.1 += g.mae * g.n as f64;
        if let Some(nm) = g.naive_mae {
            a.2 += g.naive_n;
            a.3 += nm * g.naive_n as f64;
        }
    }
    acc.into_iter()
        .map(|(h, (n, abs, nn, nabs))| (h, n, abs / n as f64, (nn > 0).then(|| nabs / nn as f64)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000_000;

    fn ts(name: &str, v: Vec<i64>) -> Column {
        Int64Chunked::from_vec(name.into(), v)
            .into_datetime(TimeUnit::Microseconds, Some(TimeZone::UTC))
            .into_column()
    }

    #[test]
    fn groups_match_a_hand_computation() {
        // Hourly series "a": actuals 10 at day 1 00:00 and 01:00, 20 at 02:00; one season
        // (3 steps here) earlier, 12 and 14.
        let day1 = DAY_US;
        let actual = DataFrame::new(
            5,
            vec![
                Column::new("k".into(), ["a", "a", "a", "a", "a"]),
                ts(
                    "t",
                    vec![day1 - 3 * H, day1 - 2 * H, day1, day1 + H, day1 + 2 * H],
                ),
                Column::new("y".into(), [12.0, 14.0, 10.0, 10.0, 20.0]),
            ],
        )
        .unwrap();
        let actuals = Actuals::from_frame(&actual, "k", "t", "y").unwrap();
        // Three forecasts at horizon 1 (one without an actual yet), one at horizon 2.
        let issued = DataFrame::new(
            4,
            vec![
                Column::new("series_id".into(), ["a", "a", "a", "a"]),
                ts(
                    "target_ts",
                    vec![day1, day1 + H, day1 + 5 * H, day1 + 2 * H],
                ),
                Column::new("horizon".into(), [1i64, 1, 1, 2]),
                Column::new("yhat".into(), [11.0, 7.0, 0.0, 20.0]),
                Column::new("yhat_lo".into(), [9.0, 8.0, 0.0, 19.0]),
                Column::new("yhat_hi".into(), [12.0, 9.0, 0.0, 21.0]),
                Column::new("method".into(), ["direct", "direct", "direct", "direct"]),
                Column::new("model_version".into(), [2i64, 2, 2, 2]),
            ],
        )
        .unwrap();
        let clock = Clock {
            step_us: H,
            season: 3,
        };
        let g = compute(&issued, &actuals, clock).unwrap();
        assert_eq!(g.len(), 2);
        let h1 = &g[0];
        assert_eq!((h1.horizon, h1.n, h1.day_us), (1, 2, day1));
        // errors +1 and -3
        assert!((h1.mae - 2.0).abs() < 1e-12);
        assert!((h1.rmse - 5.0f64.sqrt()).abs() < 1e-12);
        assert!((h1.bias + 1.0).abs() < 1e-12);
        assert!((h1.coverage - 0.5).abs() < 1e-12);
        // naive: 12 for 10 at 00:00, 14 for 10 at 01:00; nothing 3h before 02:00 is missing
        assert_eq!(h1.naive_n, 2);
        assert!((h1.naive_mae.unwrap() - 3.0).abs() < 1e-12);
        let h2 = &g[1];
        assert_eq!(
            (h2.horizon, h2.n, h2.naive_n, h2.naive_mae),
            (2, 1, 0, None)
        );
        assert_eq!(h2.coverage, 1.0);
        let per = by_horizon(&g);
        assert_eq!(per[0], (1, 2, 2.0, Some(3.0)));
    }

    #[test]
    fn naive_reads_whole_seasons_back_known_at_the_origin() {
        let c = Clock {
            step_us: H,
            season: 24,
        };
        assert_eq!(c.naive_back_us(1), 24 * H);
        assert_eq!(c.naive_back_us(24), 24 * H);
        assert_eq!(c.naive_back_us(25), 48 * H);
    }
}
