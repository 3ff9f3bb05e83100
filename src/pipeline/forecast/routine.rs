//! Whether a job's series follow a daily routine, which decides `forecast.seasonal_rolling =
//! "auto"` at each training run. Seasonal means (the mean of the same time of day over the last
//! few days) help series whose days repeat, such as footfall or energy use, and cost accuracy
//! on series that persist from one hour to the next instead, such as temperatures. The test
//! reads the history alone: over each series' last four weeks, the mean of the same time of
//! day over the longest window is compared as a forecast with the value one day back; when it
//! does at least as well for the median series, the days repeat more than they persist.

use rayon::prelude::*;

use super::features::SCALE_WINDOW;
use super::series::Series;
use super::train::median;
use crate::config::SeasonalMeans;

/// The seasonal-mean windows this run's model reads: the configured ones, or for `auto` its
/// windows when the series follow a daily routine and none when they do not.
pub fn seasonal_means(setting: &SeasonalMeans, series: &[Series], day: usize) -> Vec<usize> {
    let days = match setting {
        SeasonalMeans::Days(days) => return days.clone(),
        SeasonalMeans::Auto(days) => days,
    };
    let Some(&longest) = days.iter().max() else {
        return Vec::new();
    };
    let ratios: Vec<f64> = series
        .par_iter()
        .filter(|s| s.model_ok)
        .filter_map(|s| routine_ratio(&s.y, day, longest))
        .collect();
    let compared = ratios.len();
    let median = median(ratios);
    let routine = median.is_some_and(|r| r <= 1.0);
    tracing::info!(
        median_ratio = median.map(|r| format!("{r:.3}")),
        series = compared,
        seasonal_means = ?if routine { days.as_slice() } else { &[] },
        "seasonal means (auto): the mean of the same time over the last {longest} days against \
         the same time yesterday, as forecasts of the history (at most 1: a daily routine)"
    );
    if routine {
        days.clone()
    } else {
        Vec::new()
    }
}

/// Over the last [`SCALE_WINDOW`] steps of `y`: the absolute error of the mean of the same
/// step over the last `n` days, over that of the value one day back. None without a step where
/// both are known, or when the value one day back was never wrong.
fn routine_ratio(y: &[f64], day: usize, n: usize) -> Option<f64> {
    let from = y.len().saturating_sub(SCALE_WINDOW).max(n * day);
    let (mut mean_err, mut day_err) = (0.0, 0.0);
    for t in from..y.len() {
        let back = || (1..=n).map(|k| y[t - k * day]);
        if !y[t].is_finite() || !back().all(f64::is_finite) {
            continue;
        }
        let mean = back().sum::<f64>() / n as f64;
        mean_err += (y[t] - mean).abs();
        day_err += (y[t] - y[t - day]).abs();
    }
    (day_err > 0.0).then(|| mean_err / day_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::forecast::features::tests::series;

    /// Five weeks of hourly values from `f(t)`.
    fn hourly(f: impl Fn(usize) -> f64) -> Series {
        series((0..24 * 35).map(f).collect())
    }

    /// A reproducible noise in [-0.5, 0.5) (splitmix64 of `t`).
    fn noise(t: usize) -> f64 {
        let mut x = (t as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
        ((x >> 11) as f64 / (1u64 << 53) as f64) - 0.5
    }

    #[test]
    fn a_daily_routine_with_noise_gets_the_seasonal_means_and_a_drifting_series_does_not() {
        let auto = SeasonalMeans::Auto(vec![3, 7]);
        let tau = std::f64::consts::TAU;
        // The same daily profile every day plus independent noise: the mean of the last 7
        // days averages the noise away, yesterday carries all of it.
        let routine = hourly(|t| 10.0 + 5.0 * (t as f64 / 24.0 * tau).sin() + 2.0 * noise(t));
        assert_eq!(seasonal_means(&auto, &[routine], 24), vec![3, 7]);
        // A daily cycle on a level that wanders from day to day (like weather): yesterday
        // is closer than last week's mean.
        let mut level = 0.0;
        let levels: Vec<f64> = (0..35)
            .map(|d| {
                level += 4.0 * noise(1000 + d);
                level
            })
            .collect();
        let drifting = hourly(|t| levels[t / 24] + 5.0 * (t as f64 / 24.0 * tau).sin());
        assert_eq!(seasonal_means(&auto, &[drifting], 24), Vec::<usize>::new());
    }

    #[test]
    fn fixed_windows_are_kept_and_auto_without_windows_or_history_uses_none() {
        let flat = hourly(|_| 1.0);
        let s = std::slice::from_ref(&flat);
        assert_eq!(
            seasonal_means(&SeasonalMeans::Days(vec![2]), s, 24),
            vec![2]
        );
        assert!(seasonal_means(&SeasonalMeans::Auto(vec![]), s, 24).is_empty());
        // A constant series: yesterday is never wrong, so there is nothing to compare.
        assert!(seasonal_means(&SeasonalMeans::Auto(vec![3, 7]), s, 24).is_empty());
    }
}
