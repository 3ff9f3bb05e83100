//! The `gbdt` part of `make bench`: prescore's GBDT alone, without a database, on a training
//! matrix shaped like the peer job's refit (10,000 hourly series x 287 target hours = 2.87M
//! rows, 11 features: lags 1, 2, 3, 24 and 168 (missing for the first week), a 24-hour rolling
//! mean, hour, day of week, temperature, the day-over-day change and a step). The series are
//! generated (a daily and weekly cycle on a per-series level, an AR(1) noise and a temperature
//! effect), so the figures need no download and do not depend on a warehouse.
//!
//! It fits the default parameters (100 trees, 31 leaves, 255 bins) with squared error `--fits`
//! times, then once with log loss (target: above 3), and predicts a tenth of the rows; it
//! prints seconds, row-trees per second and the process's peak RSS during each (the generated
//! series included). The fit is the stage that
//! dominates a forecast training run, so a change to it can be measured here in seconds.

use std::time::Instant;

use prescore::model::gbdt::{Gbdt, GbdtParams, Objective};

use super::{mib, peak_rss_kib, rate, reset_peak_rss, thousands, Res};

/// Hours of each generated series; rows start where the 48-hour lookback is known.
const HOURS: usize = 336;
const FIRST: usize = 49;
const COLS: usize = 11;

/// The generated series: hourly values and temperatures, `HOURS` per series.
struct Series {
    y: Vec<f64>,
    temperature: Vec<f64>,
}

fn generate(series: usize, seed: u64) -> Series {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut noise = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((state >> 11) as f64 / (1u64 << 53) as f64) - 0.5
    };
    let mut y = vec![0.0; series * HOURS];
    let mut temperature = vec![0.0; series * HOURS];
    let tau = std::f64::consts::TAU;
    for s in 0..series {
        let level = 2.0 + 3.0 * (noise() + 0.5);
        let mut ar = 0.0;
        for t in 0..HOURS {
            let hour = (t % 24) as f64;
            let weekend = (t / 24) % 7 >= 5;
            let temp = 5.0 + 5.0 * (hour / 24.0 * tau).sin() + 2.0 * noise();
            ar = 0.8 * ar + 0.3 * noise();
            let week = if weekend { 0.7 } else { 1.0 };
            let daily = 1.0 + 0.5 * ((hour - 7.0) / 24.0 * tau).sin();
            temperature[s * HOURS + t] = temp;
            y[s * HOURS + t] = level * week * daily + ar - 0.05 * temp;
        }
    }
    Series { y, temperature }
}

impl Series {
    /// Row `r`'s features (series `r / per`, target hour `FIRST + r % per`).
    fn fill(&self, r: usize, row: &mut Vec<f64>) {
        let per = HOURS - FIRST;
        let (s, t) = (r / per, FIRST + r % per);
        let y = &self.y[s * HOURS..(s + 1) * HOURS];
        row.extend([y[t - 1], y[t - 2], y[t - 3], y[t - 24]]);
        row.push(if t >= 168 { y[t - 168] } else { f64::NAN });
        row.push(y[t - 24..t].iter().sum::<f64>() / 24.0);
        row.push((t % 24) as f64);
        row.push(((t / 24) % 7) as f64);
        row.push(self.temperature[s * HOURS + t]);
        row.push(y[t - 1] - y[t - 25]);
        row.push((r % 24) as f64);
    }

    fn target(&self, r: usize) -> f64 {
        let per = HOURS - FIRST;
        self.y[(r / per) * HOURS + FIRST + r % per]
    }
}

pub fn part(series: usize, fits: usize, seed: u64) -> Res<()> {
    let rows = series * (HOURS - FIRST);
    println!(
        "\n=== gbdt: {} rows x {COLS} features ({series} series x {} hours), no database ===",
        thousands(rows as u64),
        HOURS - FIRST
    );
    let started = Instant::now();
    let data = generate(series, seed);
    let y: Vec<f64> = (0..rows).map(|r| data.target(r)).collect();
    let above: Vec<f64> = y.iter().map(|&v| f64::from(u8::from(v > 3.0))).collect();
    println!("generated in {:.2} s", started.elapsed().as_secs_f64());
    let fill = |r: usize, row: &mut Vec<f64>| data.fill(r, row);
    let squared = GbdtParams::default();
    let logloss = GbdtParams {
        objective: Objective::LogLoss,
        ..GbdtParams::default()
    };
    let mut runs: Vec<(&str, &GbdtParams, &[f64])> = vec![("squared error", &squared, &y); fits];
    runs.push(("log loss", &logloss, &above));
    println!(
        "  {:<14} {:>9} {:>6} {:>16} {:>10}",
        "fit", "seconds", "trees", "row-trees/s", "peak RSS"
    );
    let mut model = None;
    for (name, params, target) in runs {
        reset_peak_rss();
        let t = Instant::now();
        let m = Gbdt::fit_rows(params, rows, COLS, &fill, target, None)?;
        let secs = t.elapsed().as_secs_f64();
        let trees = m.num_trees();
        println!(
            "  {name:<14} {secs:>9.2} {trees:>6} {:>16} {:>10}",
            rate((rows * trees) as u64, secs),
            mib(peak_rss_kib())
        );
        if params.objective == Objective::SquaredError {
            model = Some(m);
        }
    }
    if let Some(m) = model {
        // Every tenth row, column-major, as `Gbdt::predict` takes them.
        let picked: Vec<usize> = (0..rows).step_by(10).collect();
        let n = picked.len();
        let mut x = vec![0.0; n * COLS];
        let mut row = Vec::with_capacity(COLS);
        for (i, &r) in picked.iter().enumerate() {
            row.clear();
            data.fill(r, &mut row);
            for (c, v) in row.iter().enumerate() {
                x[c * n + i] = *v;
            }
        }
        let t = Instant::now();
        let pred = m.predict(&x, n, COLS);
        let secs = t.elapsed().as_secs_f64();
        let mae = picked
            .iter()
            .zip(&pred)
            .map(|(&r, p)| (y[r] - p).abs())
            .sum::<f64>()
            / n as f64;
        println!(
            "  predict {} rows: {secs:.3} s, {} rows/s (in-sample MAE {mae:.4}, a check that it learned)",
            thousands(n as u64),
            rate(n as u64, secs),
        );
    }
    Ok(())
}
