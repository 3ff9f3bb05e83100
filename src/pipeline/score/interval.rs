//! Prediction intervals for regression `score` jobs: split-conformal bounds from the holdout.
//! The holdout is cut in two by a stable hash of the key, so that an entity's rows (one per
//! month, say) all fall on one side: the absolute residuals of one half give the half-width
//! (the ceil((n+1)·c)-th smallest), and the other half measures how often the truth falls
//! inside. That measured coverage is honest because the half-width never saw those residuals.
//! The interval is stored with the model's feature schema, so a run that loads the champion
//! writes the same bounds. No bound goes below the job's `output.min_score`.

use serde::{Deserialize, Serialize};

use crate::pipeline::forecast::select::conformal;

/// `score_lo = score - half_width`, `score_hi = score + half_width`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Interval {
    /// The nominal coverage (`output.interval`).
    pub coverage: f64,
    pub half_width: f64,
}

impl Interval {
    /// The bounds around a score, the lower one at least `min` (scores are at least `min`
    /// already: see [`raise`]).
    pub fn bounds(&self, score: f64, min: Option<f64>) -> (f64, f64) {
        let lo = score - self.half_width;
        (min.map_or(lo, |m| lo.max(m)), score + self.half_width)
    }
}

/// Raises every score below `min` (`output.min_score`) to it: a model's prediction of a
/// quantity that cannot be negative, such as revenue, is 0 at the least.
pub fn raise(scores: &mut [f64], min: Option<f64>) {
    if let Some(m) = min {
        for s in scores {
            *s = s.max(m);
        }
    }
}

/// An interval and its coverage, measured on rows its half-width was not calibrated on.
#[derive(Debug, Clone, PartialEq)]
pub struct Calibrated {
    pub interval: Interval,
    /// The share of the measuring half's targets inside their bounds.
    pub measured: f64,
    pub calibration_rows: usize,
    pub measured_rows: usize,
}

impl Calibrated {
    /// One line for the run summary.
    pub fn describe(&self) -> String {
        format!(
            "nominal {:.0}%, score ± {:.2}, calibrated on {} holdout rows and measured on the other {}",
            self.interval.coverage * 100.0,
            self.interval.half_width,
            self.calibration_rows,
            self.measured_rows
        )
    }
}

/// Which half of the holdout a key falls in: true for the calibrating half. The key's stable
/// hash goes through a bit mixer first: FNV's top bits are far from even over short keys such
/// as small integers.
pub fn calibrates(key: &str) -> bool {
    let mut h = u64::from_str_radix(&super::features::fnv_hex(key), 16).unwrap_or(0);
    // splitmix64's finalizer.
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    h >> 63 == 0
}

/// Calibrates the half-width on the holdout rows where `calibrate[i]` and measures coverage on
/// the rest, with lower bounds at least `min`. None when either half is empty.
pub fn calibrate(
    truth: &[f64],
    pred: &[f64],
    calibrate: &[bool],
    coverage: f64,
    min: Option<f64>,
) -> Option<Calibrated> {
    let mut residuals: Vec<f64> = (0..truth.len())
        .filter(|&i| calibrate[i])
        .map(|i| (truth[i] - pred[i]).abs())
        .collect();
    let calibration_rows = residuals.len();
    let measured_rows = truth.len() - calibration_rows;
    if calibration_rows == 0 || measured_rows == 0 {
        return None;
    }
    let interval = Interval {
        coverage,
        half_width: conformal(&mut residuals, coverage),
    };
    let inside = (0..truth.len())
        .filter(|&i| !calibrate[i])
        .filter(|&i| {
            let (lo, hi) = interval.bounds(pred[i], min);
            (lo..=hi).contains(&truth[i])
        })
        .count();
    Some(Calibrated {
        interval,
        measured: inside as f64 / measured_rows as f64,
        calibration_rows,
        measured_rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_distr::{Distribution, Normal};

    #[test]
    fn coverage_measured_on_the_other_half_is_near_nominal() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let noise = Normal::new(0.0, 2.0).unwrap();
        let n = 20_000;
        let pred: Vec<f64> = (0..n).map(|_| rng.gen_range(0.0..100.0)).collect();
        let truth: Vec<f64> = pred.iter().map(|p| p + noise.sample(&mut rng)).collect();
        let sides: Vec<bool> = (0..n).map(|i| calibrates(&i.to_string())).collect();
        let c = calibrate(&truth, &pred, &sides, 0.8, None).unwrap();
        assert!((c.measured - 0.8).abs() < 0.02, "{c:?}");
        // The 80% half-width of N(0, 2) residuals is 1.2816 * 2.
        assert!((c.interval.half_width - 2.563).abs() < 0.15, "{c:?}");
        assert!(
            c.calibration_rows > 9_700 && c.measured_rows > 9_700,
            "{c:?}"
        );
    }

    #[test]
    fn a_min_score_raises_scores_and_low_bounds() {
        let i = Interval {
            coverage: 0.8,
            half_width: 10.0,
        };
        let mut scores = [25.0, 4.0, -1.0];
        raise(&mut scores, Some(0.0));
        assert_eq!(scores, [25.0, 4.0, 0.0]);
        assert_eq!(i.bounds(25.0, Some(0.0)), (15.0, 35.0));
        assert_eq!(i.bounds(4.0, Some(0.0)), (0.0, 14.0));
        assert_eq!(i.bounds(4.0, None), (-6.0, 14.0));
        raise(&mut scores, None);
        assert_eq!(scores, [25.0, 4.0, 0.0]);
    }

    #[test]
    fn an_empty_half_gives_no_interval() {
        assert_eq!(calibrate(&[1.0], &[1.0], &[true], 0.8, None), None);
        assert_eq!(calibrate(&[1.0], &[1.0], &[false], 0.8, None), None);
    }
}
