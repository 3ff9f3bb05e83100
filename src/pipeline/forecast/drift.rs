//! Drift for forecast jobs: the training run stores a [`Reference`] of the target and of each
//! covariate over every series' training window (deciles of an even sample), and the target's
//! distribution as the reference of the forecasts themselves. Each run then computes the PSI
//! of the latest week of actuals and covariates (at least one horizon: a whole weekly cycle,
//! so that a weekend is not drift) and of the forecasts it publishes against it, for
//! `prescore_drift` and `gate.max_psi`. Values are pooled over series in their own units, so
//! a PSI says the population moved (a heat wave, a meter fleet that changed), not that one
//! series did. A day of forecasts against weeks of history reads higher than a week of
//! actuals does: set `gate.max_psi` for forecasts from the values the job's runs record.

use super::series::Series;
use crate::monitor::drift::{Numeric, Reference};

/// Values sampled per column for the reference.
const SAMPLE: usize = 100_000;

/// Every `stride`-th finite value of `column(s)[..end(s)]` over the series.
fn pooled<'a>(
    series: &'a [Series],
    from: impl Fn(&Series) -> usize + 'a,
    column: impl Fn(&'a Series) -> &'a [f64] + 'a,
    stride: usize,
) -> Vec<f64> {
    series
        .iter()
        .flat_map(|s| {
            let n = s.y.len();
            column(s)[from(s).min(n)..n].iter().copied()
        })
        .filter(|v| v.is_finite())
        .step_by(stride.max(1))
        .collect()
}

/// The reference of a forecast trained on `series`: the target (named `target`) and the
/// covariates `exog` over the whole history, and the target again as the forecasts' reference.
pub fn reference(target: &str, exog: &[String], series: &[Series]) -> Reference {
    let total: usize = series.iter().map(|s| s.y.len()).sum();
    let stride = total.div_ceil(SAMPLE);
    let y = pooled(series, |_| 0, |s| &s.y, stride);
    let mut numeric = std::collections::BTreeMap::new();
    for (j, name) in exog.iter().enumerate() {
        let v = pooled(series, |_| 0, |s| &s.exog[j], stride);
        numeric.insert(name.clone(), Numeric::of(&v));
    }
    let score = Numeric::of(&y);
    numeric.insert(target.to_string(), score.clone());
    Reference {
        rows: total,
        numeric,
        categorical: Default::default(),
        score: Some(score),
        score_mean: None,
    }
}

/// PSI of the latest `recent` steps of every series (target and covariates) and of the
/// forecasts `yhat` (named `score`) against the reference.
pub fn psi(
    reference: &Reference,
    target: &str,
    exog: &[String],
    series: &[Series],
    recent: usize,
    yhat: &[f64],
) -> Vec<(String, f64)> {
    let from = |s: &Series| s.y.len().saturating_sub(recent);
    let mut out = Vec::new();
    for (name, r) in &reference.numeric {
        let values = if name == target {
            pooled(series, from, |s| &s.y, 1)
        } else if let Some(j) = exog.iter().position(|e| e == name) {
            pooled(series, from, move |s| &s.exog[j], 1)
        } else {
            continue;
        };
        out.push((name.clone(), r.psi(&values)));
    }
    if let Some(r) = &reference.score {
        out.push(("score".into(), r.psi(yhat)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::forecast::series::Key;

    fn series(level: f64, temp: f64) -> Vec<Series> {
        (0..20)
            .map(|k| Series {
                key: Key::Int(k),
                start_us: 0,
                y: (0..200).map(|i| level + f64::from(i % 24)).collect(),
                exog: vec![(0..224).map(|i| temp + f64::from(i % 7)).collect()],
                statics: vec![],
                model_ok: true,
            })
            .collect()
    }

    #[test]
    fn a_shifted_target_and_covariate_show_up_and_a_steady_one_does_not() {
        let exog = vec!["temp".to_string()];
        let train = series(10.0, 5.0);
        let r = reference("kwh", &exog, &train);
        let yhat: Vec<f64> = (0..24).map(|i| 10.0 + f64::from(i)).collect();
        let same = psi(&r, "kwh", &exog, &train, 24, &yhat);
        assert!(same.iter().all(|(_, v)| *v < 0.1), "{same:?}");
        // The covariate (not the target) moves far: only it is flagged.
        let hot = series(10.0, 40.0);
        let moved = psi(&r, "kwh", &exog, &hot, 24, &yhat);
        let of = |n: &str| moved.iter().find(|(f, _)| f == n).unwrap().1;
        assert!(
            of("temp") > 1.0 && of("kwh") < 0.1 && of("score") < 0.1,
            "{moved:?}"
        );
    }
}
