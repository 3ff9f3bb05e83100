//! The one feature function of a forecast: [`SeriesSchema::row`] builds the row that predicts
//! `y[t]` from what was known at the forecast origin, the calendar of `t`, the covariates at
//! `t` and the series' static levels. Training matrices, backtests and the forecasts served
//! all call it, for both strategies, so training and serving cannot drift apart.
//!
//! Known values: with the `recursive` strategy the origin is `t` itself (earlier predictions
//! stand in for values not yet observed); with `direct` the origin is fixed and a lag that
//! falls at or after it reads the latest known value instead (`y[origin - lag]`), windows end
//! at the origin, and the row also carries the step ahead. The target is scaled per series
//! ([`Scale`]); with seasonal differencing the rows and the target are read from the
//! differenced series (`z[t] - z[t - season]`), as mlforecast does.

use serde::{Deserialize, Serialize};

use super::series::Series;
use crate::config::{Calendar, ForecastSpec};
use crate::pipeline::score::features::fnv_hex;

/// How the learned model reaches `horizon` steps ahead (resolved from the config's `auto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fitted {
    Recursive,
    Direct,
}

impl Fitted {
    pub fn name(self) -> &'static str {
        match self {
            Fitted::Recursive => "recursive",
            Fitted::Direct => "direct",
        }
    }
}

/// A series' standard scaling, learned on its recent training window: `z = (y - mu) / sd`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Scale {
    pub mu: f64,
    pub sd: f64,
}

impl Scale {
    pub const IDENTITY: Scale = Scale { mu: 0.0, sd: 1.0 };

    /// Mean and standard deviation of the finite values among the last `window` steps before
    /// `end`. A constant series gets sd 1, so it is shifted but never divided by zero.
    pub fn learn(y: &[f64], end: usize, window: usize) -> Scale {
        let from = end.saturating_sub(window);
        let (mut n, mut sum, mut sq) = (0.0, 0.0, 0.0);
        for v in y[from..end.min(y.len())].iter().filter(|v| v.is_finite()) {
            n += 1.0;
            sum += v;
            sq += v * v;
        }
        if n == 0.0 {
            return Scale::IDENTITY;
        }
        let mu = sum / n;
        let sd = (sq / n - mu * mu).max(0.0).sqrt();
        let floor = 1e-6 * (mu.abs() + 1.0);
        Scale {
            mu,
            sd: if sd > floor { sd } else { 1.0 },
        }
    }

    pub fn apply(&self, v: f64) -> f64 {
        (v - self.mu) / self.sd
    }

    pub fn undo(&self, z: f64) -> f64 {
        z * self.sd + self.mu
    }
}

/// What the model reads, stored with it: lags, windows, calendar, covariates, static levels,
/// and the target transform.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SeriesSchema {
    pub lags: Vec<usize>,
    pub rolling: Vec<usize>,
    /// Seasonal means over this many days (models stored before them have none).
    #[serde(default)]
    pub seasonal: Vec<usize>,
    pub calendar: Vec<Calendar>,
    pub exog: Vec<String>,
    pub statics: Vec<(String, Vec<String>)>,
    pub step_seconds: i64,
    pub horizon: usize,
    pub scale: bool,
    pub difference: usize,
    /// Forecasts stay within the series' envelope at their time of day (`forecast.envelope`;
    /// models stored before it have none). See `steps::within_envelope`.
    #[serde(default)]
    pub envelope: bool,
}

/// Steps of history the per-series scaling looks at: four weeks of hourly data.
pub const SCALE_WINDOW: usize = 672;

impl SeriesSchema {
    /// The schema of `spec` with the seasonal means this run's model reads (`seasonal`, the
    /// config's list or what `auto` decided).
    pub fn new(
        spec: &ForecastSpec,
        seasonal: Vec<usize>,
        exog: &[String],
        statics: Vec<(String, Vec<String>)>,
    ) -> Self {
        SeriesSchema {
            lags: spec.lags.clone(),
            rolling: spec.rolling.clone(),
            seasonal,
            calendar: spec.calendar.clone(),
            exog: exog.to_vec(),
            statics,
            step_seconds: spec.step_seconds,
            horizon: spec.horizon,
            scale: spec.scale,
            // Set per fitted variant (`forecast.difference` may let the backtest choose).
            difference: 0,
            // A daily or longer step has no time of day to keep to.
            envelope: spec.envelope && crate::config::steps_per_day(spec.step_seconds) >= 2,
        }
    }

    /// Column names of a row; `direct` rows end with the step ahead.
    pub fn names(&self, strategy: Fitted) -> Vec<String> {
        let mut n: Vec<String> = self.lags.iter().map(|l| format!("lag_{l}")).collect();
        for w in &self.rolling {
            n.push(format!("roll_mean_{w}"));
            n.push(format!("roll_std_{w}"));
        }
        n.extend(self.seasonal.iter().map(|d| format!("seasonal_mean_{d}d")));
        n.extend(self.calendar.iter().map(|c| c.name().to_string()));
        n.extend(self.exog.iter().cloned());
        for (c, levels) in &self.statics {
            n.extend(levels.iter().map(|l| format!("{c}={l}")));
            n.push(format!("{c}=other"));
        }
        if strategy == Fitted::Direct {
            n.push("step_ahead".into());
        }
        n
    }

    /// Steps of history a full feature row needs before it.
    pub fn lookback(&self) -> usize {
        let seasonal = self.seasonal.iter().map(|d| d * self.day());
        let longest = self
            .lags
            .iter()
            .chain(&self.rolling)
            .copied()
            .chain(seasonal);
        longest.max().unwrap_or(1) + self.difference
    }

    /// The first step a training row may predict: its shortest lag is known. Longer lags and
    /// windows that reach before the series' start are missing (NaN), which the trees route
    /// on their own, so a short series still teaches its first weeks (a weekday seen only
    /// before the longest lag is available is otherwise never seen at all).
    pub fn first_target(&self) -> usize {
        self.lags.iter().copied().min().unwrap_or(1) + self.difference
    }

    /// A fingerprint of what the rows hold (learned levels included).
    pub fn hash(&self) -> String {
        let mut key = self.names(Fitted::Direct).join("\u{1f}");
        key.push_str(&format!(
            "|step={}|h={}|scale={}|diff={}",
            self.step_seconds, self.horizon, self.scale, self.difference
        ));
        fnv_hex(&key)
    }

    /// Steps per day (at least 1).
    pub fn day(&self) -> usize {
        crate::config::steps_per_day(self.step_seconds)
    }

    fn step_us(&self) -> i64 {
        self.step_seconds * 1_000_000
    }

    /// The scaling of `s` learned on the steps before `end`.
    pub fn scale_of(&self, s: &Series, end: usize) -> Scale {
        if self.scale {
            Scale::learn(&s.y, end, SCALE_WINDOW)
        } else {
            Scale::IDENTITY
        }
    }

    /// `s.y[..end]` scaled: the buffer rows read from.
    pub fn scaled(&self, s: &Series, end: usize, scale: Scale) -> Vec<f64> {
        s.y[..end.min(s.y.len())]
            .iter()
            .map(|v| scale.apply(*v))
            .collect()
    }

    /// The buffer features are read from: the scaled values, or with seasonal differencing
    /// `d[t] = z[t] - z[t - difference]` (missing where `t < difference`). The model predicts
    /// the buffer's next value; [`SeriesSchema::undiff`] turns it back into `z`.
    pub fn diffed(&self, z: &[f64]) -> Vec<f64> {
        let d = self.difference;
        if d == 0 {
            return z.to_vec();
        }
        (0..z.len())
            .map(|t| if t >= d { z[t] - z[t - d] } else { f64::NAN })
            .collect()
    }

    /// `z[t]` from the model's prediction `b` of the buffer at `t`, given `z[..t]`.
    pub fn undiff(&self, z: &[f64], t: usize, b: f64) -> f64 {
        match self.difference {
            0 => b,
            d => b + t.checked_sub(d).map(|i| z[i]).unwrap_or(f64::NAN),
        }
    }

    /// THE feature function: the row predicting `z[t]` from `z[..origin]` (observed, or with
    /// `recursive` predicted), the covariates at `t`, the calendar of `t` and the statics.
    pub fn row(
        &self,
        s: &Series,
        z: &[f64],
        t: usize,
        origin: usize,
        strategy: Fitted,
        out: &mut Vec<f64>,
    ) {
        out.clear();
        let at = |i: usize, back: usize| -> f64 {
            match i.checked_sub(back) {
                Some(j) => z[j],
                None => f64::NAN,
            }
        };
        for &l in &self.lags {
            // A lag at or after the origin is not known yet: read the latest known instead.
            out.push(if t < origin + l {
                at(t, l)
            } else {
                at(origin, l)
            });
        }
        let end = t.min(origin);
        for &w in &self.rolling {
            let window = &z[end.saturating_sub(w)..end];
            let (mut n, mut sum, mut sq) = (0.0, 0.0, 0.0);
            for v in window.iter().filter(|v| v.is_finite()) {
                n += 1.0;
                sum += v;
                sq += v * v;
            }
            if n == 0.0 {
                out.extend([f64::NAN, f64::NAN]);
            } else {
                let mean = sum / n;
                out.push(mean);
                out.push((sq / n - mean * mean).max(0.0).sqrt());
            }
        }
        // The same time of day on each of the last `n` days, where known at the origin.
        for &n in &self.seasonal {
            let (k, sum) = (1..=n)
                .filter_map(|d| t.checked_sub(d * self.day()))
                .filter(|&j| j < origin && z[j].is_finite())
                .fold((0.0, 0.0), |(k, sum), j| (k + 1.0, sum + z[j]));
            out.push(if k > 0.0 { sum / k } else { f64::NAN });
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
        if strategy == Fitted::Direct {
            out.push((t + 1 - origin) as f64);
        }
    }
}

/// A 64-bit mixer (splitmix64's finalizer): seeded, reproducible choices without an RNG.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::pipeline::forecast::series::Key;

    pub fn schema() -> SeriesSchema {
        SeriesSchema {
            lags: vec![1, 2],
            rolling: vec![3],
            seasonal: vec![],
            calendar: vec![Calendar::Hour, Calendar::Dow, Calendar::Weekend],
            exog: vec!["temp".into()],
            statics: vec![("region".into(), vec!["north".into()])],
            step_seconds: 3600,
            horizon: 3,
            scale: false,
            difference: 0,
            envelope: false,
        }
    }

    pub fn series(y: Vec<f64>) -> Series {
        let n = y.len();
        Series {
            key: Key::Int(1),
            start_us: 0,
            exog: vec![(0..n + 3).map(|i| 10.0 + i as f64).collect()],
            y,
            statics: vec!["south".into()],
            model_ok: true,
        }
    }

    #[test]
    fn the_feature_row_reads_lags_windows_calendar_and_statics() {
        // 2026-11-30 is a Monday; start at 00:00 UTC.
        let start = chrono::DateTime::parse_from_rfc3339("2026-11-30T00:00:00Z")
            .unwrap()
            .timestamp_micros();
        let mut s = series(vec![1.0, 2.0, 3.0, 4.0]);
        s.start_us = start;
        let mut row = Vec::new();
        let sc = schema();
        sc.row(&s, &s.y, 3, 3, Fitted::Recursive, &mut row);
        let mean = 2.0;
        let std = (2.0f64 / 3.0).sqrt();
        assert_eq!(row.len(), sc.names(Fitted::Recursive).len());
        assert_eq!(&row[..2], &[3.0, 2.0]);
        assert!((row[2] - mean).abs() < 1e-12 && (row[3] - std).abs() < 1e-12);
        assert_eq!(&row[4..7], &[3.0, 0.0, 0.0]); // 03:00, Monday, not weekend
        assert_eq!(row[7], 13.0);
        assert_eq!(&row[8..], &[0.0, 1.0]); // south is not a learned level: `other`
    }

    #[test]
    fn a_seasonal_mean_averages_the_same_hour_of_the_last_days_known_at_the_origin() {
        let mut sc = schema();
        sc.seasonal = vec![3];
        let s = series((0..100).map(f64::from).collect());
        let names = sc.names(Fitted::Direct);
        let at = names.iter().position(|n| n == "seasonal_mean_3d").unwrap();
        let mut row = Vec::new();
        // 24, 48 and 72 hours before t = 80: 56, 32 and 8.
        sc.row(&s, &s.y, 80, 80, Fitted::Recursive, &mut row);
        assert_eq!(row[at], (56.0 + 32.0 + 8.0) / 3.0);
        sc.row(&s, &s.y, 80, 70, Fitted::Direct, &mut row);
        assert_eq!(row[at], (56.0 + 32.0 + 8.0) / 3.0);
        // From an origin 30 steps back, yesterday's value is not known yet: it is left out.
        sc.row(&s, &s.y, 80, 50, Fitted::Direct, &mut row);
        assert_eq!(row[at], (32.0 + 8.0) / 2.0);
        // Nothing known that far back: missing.
        sc.row(&s, &s.y, 20, 20, Fitted::Recursive, &mut row);
        assert!(row[at].is_nan());
        assert_eq!(sc.lookback(), 72);
    }

    #[test]
    fn a_schema_stored_before_seasonal_means_still_loads() {
        let mut json = serde_json::to_value(schema()).unwrap();
        json.as_object_mut().unwrap().remove("seasonal");
        let old: SeriesSchema = serde_json::from_value(json).unwrap();
        assert_eq!(old, schema());
        assert!(!old
            .names(Fitted::Direct)
            .iter()
            .any(|n| n.starts_with("seasonal")));
    }

    /// Leakage: a direct row for any step ahead reads nothing at or after its origin. Values
    /// from the origin on are poisoned; no feature may see them.
    #[test]
    fn direct_rows_never_read_past_the_origin() {
        let mut sc = schema();
        sc.lags = vec![1, 2, 3, 24];
        sc.rolling = vec![3, 24];
        sc.seasonal = vec![2];
        sc.horizon = 24;
        let origin = 40;
        let y: Vec<f64> = (0..64)
            .map(|i| if i < origin { i as f64 } else { 1e9 })
            .collect();
        let s = series(y);
        let mut row = Vec::new();
        for t in origin..origin + 24 {
            sc.row(&s, &s.y, t, origin, Fitted::Direct, &mut row);
            let lags = &row[..4];
            assert!(lags.iter().all(|v| *v < 1e9), "t {t}: {lags:?}");
            assert!(row[4..9].iter().all(|v| v.abs() < 1e9), "t {t}: {row:?}");
            assert_eq!(*row.last().unwrap(), (t - origin + 1) as f64);
        }
        // One step ahead, a direct row is the recursive row plus the step.
        let mut rec = Vec::new();
        sc.row(&s, &s.y, origin, origin, Fitted::Direct, &mut row);
        sc.row(&s, &s.y, origin, origin, Fitted::Recursive, &mut rec);
        assert_eq!(&row[..rec.len()], &rec[..]);
    }
}
