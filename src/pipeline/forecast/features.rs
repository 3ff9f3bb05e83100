//! The one feature function of a forecast: [`SeriesSchema::row`] builds the row that predicts
//! `y[t]` from what was known at the forecast origin, the calendar of `t`, the covariates at
//! `t` and the series' static levels. Training matrices, backtests and the forecasts served
//! all call it, for both strategies, so training and serving cannot drift apart.
//!
//! Known values: with the `recursive` strategy the origin is `t` itself (earlier predictions
//! stand in for values not yet observed); with `direct` the origin is fixed and a lag that
//! falls at or after it reads the latest known value instead (`y[origin - lag]`), windows end
//! at the origin, and the row also carries the step ahead. The target is scaled per series
//! ([`Scale`]) and optionally differenced against the same season one period back.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::series::Series;
use crate::config::{Calendar, ForecastSpec};
use crate::model::Matrix;
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

/// How a training set is drawn: the strategy's rows, `copies` origins per target (direct),
/// at most about `cap` rows (0: all), seeded.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub strategy: Fitted,
    pub copies: usize,
    pub cap: usize,
    pub seed: u64,
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
    pub calendar: Vec<Calendar>,
    pub exog: Vec<String>,
    pub statics: Vec<(String, Vec<String>)>,
    pub step_seconds: i64,
    pub horizon: usize,
    pub scale: bool,
    pub difference: usize,
}

/// Steps of history the per-series scaling looks at: four weeks of hourly data.
pub const SCALE_WINDOW: usize = 672;

impl SeriesSchema {
    pub fn new(spec: &ForecastSpec, exog: &[String], statics: Vec<(String, Vec<String>)>) -> Self {
        SeriesSchema {
            lags: spec.lags.clone(),
            rolling: spec.rolling.clone(),
            calendar: spec.calendar.clone(),
            exog: exog.to_vec(),
            statics,
            step_seconds: spec.step_seconds,
            horizon: spec.horizon,
            scale: spec.scale,
            difference: spec.difference,
        }
    }

    /// Column names of a row; `direct` rows end with the step ahead.
    pub fn names(&self, strategy: Fitted) -> Vec<String> {
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
        if strategy == Fitted::Direct {
            n.push("step_ahead".into());
        }
        n
    }

    /// Steps of history a full feature row needs before it.
    pub fn lookback(&self) -> usize {
        self.lags
            .iter()
            .chain(self.rolling.iter())
            .copied()
            .chain(std::iter::once(self.difference))
            .max()
            .unwrap_or(1)
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

    /// The value the model's output is added to: with seasonal differencing the same season one
    /// period back, the latest such value known at `origin`; else 0.
    pub fn base(&self, z: &[f64], t: usize, origin: usize) -> f64 {
        let d = self.difference;
        if d == 0 {
            return 0.0;
        }
        let k = (t + 1 - origin).div_ceil(d).max(1);
        match t.checked_sub(k * d) {
            Some(i) => z[i],
            None => f64::NAN,
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

    /// The (target, origin) pairs a series trains on: every target `t` in
    /// `[lookback, end)` with a known value. `direct` gives each target `copies` origins,
    /// each at a step ahead drawn from `1..=horizon` (seeded by the series and `t`), so the
    /// training set stays `copies` times the recursive one rather than `horizon` times.
    fn pairs(
        &self,
        z: &[f64],
        end: usize,
        strategy: Fitted,
        copies: usize,
        salt: u64,
    ) -> Vec<(u32, u32)> {
        let mut out = Vec::new();
        for t in self.lookback()..end.min(z.len()) {
            if !z[t].is_finite() {
                continue;
            }
            match strategy {
                Fitted::Recursive => {
                    if self.base(z, t, t).is_finite() || self.difference == 0 {
                        out.push((t as u32, t as u32));
                    }
                }
                Fitted::Direct => {
                    for c in 0..copies {
                        let h = 1
                            + (mix(salt ^ (t as u64) << 8 ^ c as u64) % self.horizon as u64)
                                as usize;
                        let origin = (t + 1).saturating_sub(h).max(1);
                        if self.difference == 0 || self.base(z, t, origin).is_finite() {
                            out.push((t as u32, origin as u32));
                        }
                    }
                }
            }
        }
        out
    }

    /// The training matrix of every model-eligible series `i` for targets before `ends[i]`,
    /// scaled by `scales[i]`: with `plan.cap > 0` a seeded sample of about
    /// `cap` rows. Returns the matrix, the targets and the row count before sampling.
    pub fn training_set(
        &self,
        series: &[Series],
        scales: &[Scale],
        ends: &[usize],
        plan: Plan,
    ) -> (Matrix, Vec<f64>, usize) {
        let Plan {
            strategy,
            copies,
            cap,
            seed,
        } = plan;
        let width = self.names(strategy).len();
        let per_series: Vec<(Vec<f64>, Vec<(u32, u32)>)> = series
            .par_iter()
            .zip(scales.par_iter())
            .zip(ends.par_iter())
            .enumerate()
            .map(|(i, ((s, sc), &e))| {
                if !s.model_ok {
                    return (Vec::new(), Vec::new());
                }
                let z = self.scaled(s, e, *sc);
                let salt = mix(seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                let pairs = self.pairs(&z, e, strategy, copies, salt);
                (z, pairs)
            })
            .collect();
        let total: usize = per_series.iter().map(|p| p.1.len()).sum();
        // Keep each row with probability cap/total (seeded): an even sample without an index.
        let keep = |i: usize, t: u32, c: usize| -> bool {
            cap == 0
                || total <= cap
                || (mix(seed ^ (i as u64) << 32 ^ u64::from(t) ^ (c as u64) << 56) % total as u64)
                    < cap as u64
        };
        let blocks: Vec<(Vec<f64>, Vec<f64>)> = per_series
            .par_iter()
            .zip(series.par_iter())
            .enumerate()
            .map(|(i, ((z, pairs), s))| {
                let mut rows = Vec::new();
                let mut ys = Vec::new();
                let mut buf = Vec::with_capacity(width);
                for (c, &(t, o)) in pairs.iter().enumerate() {
                    if !keep(i, t, c) {
                        continue;
                    }
                    let (t, o) = (t as usize, o as usize);
                    self.row(s, z, t, o, strategy, &mut buf);
                    rows.extend_from_slice(&buf);
                    ys.push(z[t] - self.base(z, t, o));
                }
                (rows, ys)
            })
            .collect();
        let n: usize = blocks.iter().map(|b| b.1.len()).sum();
        let mut data = vec![0.0; n * width];
        let mut y = Vec::with_capacity(n);
        let mut r0 = 0;
        for (rows, ys) in blocks {
            for (i, row) in rows.chunks(width).enumerate() {
                for (c, v) in row.iter().enumerate() {
                    data[c * n + r0 + i] = *v;
                }
            }
            r0 += ys.len();
            y.extend(ys);
        }
        let x = Matrix {
            data,
            rows: n,
            cols: width,
        };
        (x, y, total)
    }

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
        let mut buffers: Vec<Vec<f64>> = series
            .par_iter()
            .zip(scales.par_iter())
            .zip(origins.par_iter())
            .map(|((s, sc), &o)| {
                let mut z = Vec::with_capacity(o + h);
                z.extend(s.y[..o].iter().map(|v| sc.apply(*v)));
                z
            })
            .collect();
        let n = series.len();
        let matrix_of = |rows: Vec<Vec<f64>>| {
            let m = rows.len();
            let mut data = vec![0.0; m * width];
            for (r, row) in rows.iter().enumerate() {
                for (c, v) in row.iter().enumerate() {
                    data[c * m + r] = *v;
                }
            }
            Matrix {
                data,
                rows: m,
                cols: width,
            }
        };
        match strategy {
            Fitted::Recursive => {
                for _ in 0..h {
                    let rows: Vec<Vec<f64>> = series
                        .par_iter()
                        .zip(buffers.par_iter())
                        .map(|(s, z)| {
                            let mut row = Vec::with_capacity(width);
                            self.row(s, z, z.len(), z.len(), strategy, &mut row);
                            row
                        })
                        .collect();
                    let preds = predict(&matrix_of(rows));
                    for (z, p) in buffers.iter_mut().zip(preds) {
                        let t = z.len();
                        let v = p + self.base(z, t, t);
                        z.push(v);
                    }
                }
            }
            Fitted::Direct => {
                let rows: Vec<Vec<f64>> = series
                    .par_iter()
                    .zip(buffers.par_iter())
                    .flat_map_iter(|(s, z)| {
                        let o = z.len();
                        (o..o + h).map(move |t| {
                            let mut row = Vec::with_capacity(width);
                            self.row(s, z, t, o, strategy, &mut row);
                            row
                        })
                    })
                    .collect();
                let preds = predict(&matrix_of(rows));
                for (z, p) in buffers.iter_mut().zip(preds.chunks(h.max(1))) {
                    let o = z.len();
                    let with_base: Vec<f64> = p
                        .iter()
                        .enumerate()
                        .map(|(k, v)| v + self.base(z, o + k, o))
                        .collect();
                    z.extend(with_base);
                }
            }
        }
        debug_assert_eq!(buffers.len(), n);
        buffers
            .into_iter()
            .zip(scales)
            .zip(origins)
            .map(|((z, sc), &o)| z[o..].iter().map(|v| sc.undo(*v)).collect())
            .collect()
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
            horizon: 3,
            scale: false,
            difference: 0,
        }
    }

    fn series(y: Vec<f64>) -> Series {
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

    /// Leakage: a direct row for any step ahead reads nothing at or after its origin. Values
    /// from the origin on are poisoned; no feature may see them.
    #[test]
    fn direct_rows_never_read_past_the_origin() {
        let mut sc = schema();
        sc.lags = vec![1, 2, 3, 24];
        sc.rolling = vec![3, 24];
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
            assert!(row[4..8].iter().all(|v| v.abs() < 1e9), "t {t}: {row:?}");
            assert_eq!(*row.last().unwrap(), (t - origin + 1) as f64);
        }
        // One step ahead, a direct row is the recursive row plus the step.
        let mut rec = Vec::new();
        sc.row(&s, &s.y, origin, origin, Fitted::Direct, &mut row);
        sc.row(&s, &s.y, origin, origin, Fitted::Recursive, &mut rec);
        assert_eq!(&row[..rec.len()], &rec[..]);
    }

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
    fn a_sampled_training_set_is_a_subset_of_the_full_one() {
        let sc = schema();
        let all: Vec<Series> = (0..4)
            .map(|k| {
                series(
                    (0..(30 + 3 * k))
                        .map(|i| (i * i) as f64 + k as f64)
                        .collect(),
                )
            })
            .collect();
        let scales = vec![Scale::IDENTITY; 4];
        let ends: Vec<usize> = all.iter().map(|s| s.y.len() - 2).collect();
        let end = &ends[..];
        let plan = |strategy, copies, cap| Plan {
            strategy,
            copies,
            cap,
            seed: 7,
        };
        let (full, y_full, total) =
            sc.training_set(&all, &scales, end, plan(Fitted::Recursive, 1, 0));
        assert_eq!(full.rows, total);
        assert_eq!(y_full.len(), total);
        let (part, y_part, total2) =
            sc.training_set(&all, &scales, end, plan(Fitted::Recursive, 1, total / 3));
        assert_eq!(total2, total);
        assert!(part.rows < total && part.rows > 0);
        assert!(y_part.iter().all(|v| y_full.contains(v)));
        // Direct with two origins per target: twice the rows, every step ahead in 1..=3.
        let (d, _, dt) = sc.training_set(&all, &scales, end, plan(Fitted::Direct, 2, 0));
        assert_eq!(dt, 2 * total);
        let steps = d.column(d.cols - 1);
        assert!(steps.iter().all(|h| (1.0..=3.0).contains(h)));
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
