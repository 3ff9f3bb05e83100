//! Training a forecast job, CPU-bound on the pool: fit each strategy on the rows before the
//! backtest, run the backtest, choose the methods and calibrate the intervals, then fit the
//! served model on every row (`forecast.refit`) for the strategy that won, only if some series
//! will use it.

use super::dataset::Plan;
use super::evaluate::Method;
use super::evaluate::{self, Points};
use super::features::{Fitted, Scale, SeriesSchema};
use super::forecaster::{Forecaster, Partner};
use super::select::{self, Choice};
use super::series::{AsServed, Series};
use crate::config::{ForecastMethod, ForecastSpec, ModelSpec, Strategy};
use crate::model::metrics::Metrics;
use crate::model::{Model, ModelError};
use rayon::prelude::*;

/// Training rows aimed at for the direct strategy on small data: each target gets more origins
/// (up to 8) until the set reaches this size.
const DIRECT_ROWS: usize = 300_000;
/// Fewer rows than this and no model is fitted: the seasonal naives compete alone.
const MIN_ROWS: usize = 50;

/// What training produced and measured.
pub struct Outcome {
    pub forecaster: Forecaster,
    /// The published method's backtest metrics, overall and per step, next to the naives'.
    pub metrics: Metrics,
    pub per_step: Vec<Metrics>,
    pub naive_day: Metrics,
    pub naive_day_steps: Vec<Metrics>,
    pub naive_week: Metrics,
    pub coverage: Option<f64>,
    pub rows_train: usize,
    pub points: usize,
    pub windows: usize,
    pub choice: Choice,
    pub importances: Option<Vec<(String, f64)>>,
}

/// The strategies the config asks to fit.
fn strategies(spec: &ForecastSpec) -> Vec<Fitted> {
    let model_wanted = spec
        .candidates
        .iter()
        .any(|c| matches!(c, ForecastMethod::Model | ForecastMethod::Blend));
    match (model_wanted, spec.strategy) {
        (false, _) => vec![],
        (true, Strategy::Auto) => vec![Fitted::Recursive, Fitted::Direct],
        (true, Strategy::Recursive) => vec![Fitted::Recursive],
        (true, Strategy::Direct) => vec![Fitted::Direct],
    }
}

/// Fits `strategy` on the rows before `ends`. None when there are too few rows.
fn fit(
    schema: &SeriesSchema,
    model: &ModelSpec,
    series: &[Series],
    scales: &[Scale],
    ends: &[usize],
    strategy: Fitted,
) -> Result<Option<(Model, usize)>, ModelError> {
    let base: usize = series
        .iter()
        .zip(ends)
        .filter(|(s, _)| s.model_ok)
        .map(|(_, e)| e.saturating_sub(schema.first_target()))
        .sum();
    let copies = match strategy {
        Fitted::Recursive => 1,
        Fitted::Direct => DIRECT_ROWS
            .div_ceil(base.max(1))
            .clamp(1, schema.horizon.min(8)),
    };
    let plan = Plan {
        strategy,
        copies,
        cap: model.max_train_rows,
        seed: model.seed,
    };
    let started = std::time::Instant::now();
    let set = schema.training_set(series, scales, ends, plan);
    let built = started.elapsed().as_secs_f64();
    if set.rows() < MIN_ROWS {
        tracing::warn!(
            rows = set.rows(),
            strategy = strategy.name(),
            "too few rows to fit a model"
        );
        return Ok(None);
    }
    tracing::info!(
        rows = set.total,
        fitted = set.rows(),
        features = set.width,
        series = series.len(),
        strategy = strategy.name(),
        "training"
    );
    let fill = |r: usize, row: &mut Vec<f64>| set.fill(r, row);
    let fitted = Model::fit_rows(model, set.rows(), set.width, &fill, &set.y)?;
    tracing::debug!(
        pairs_s = built,
        fit_s = started.elapsed().as_secs_f64() - built,
        "fitted"
    );
    Ok(Some((fitted, set.total)))
}

/// How much lower (relative) the backtest MAE of the ensemble (the best variant and its
/// partner) must be than the best variant's for it to compete: it costs a second fit, and of
/// several candidates scored on the same points the best looks better than it is.
const ENSEMBLE_MARGIN: f64 = 0.02;

/// Above this many series, model variants are compared on an even sample of this many.
const VARIANT_SAMPLE_SERIES: usize = 2_000;

/// A model variant the backtest tries: a strategy and a differencing lag.
struct Variant {
    schema: SeriesSchema,
    strategy: Fitted,
    model: Model,
}

/// The backtest's frame: the differencing choices, each series' origins, where its backtest
/// fits must stop (its earliest origin), and its scale up to there.
struct Frame {
    schemas: Vec<SeriesSchema>,
    origins_of: Vec<Vec<usize>>,
    cut: Vec<usize>,
    scales: Vec<Scale>,
}

impl Frame {
    /// The frame of a backtest of `windows` windows (`forecast.backtest_windows` resolved).
    fn new(schema: &SeriesSchema, spec: &ForecastSpec, series: &[Series], windows: usize) -> Frame {
        let schemas: Vec<SeriesSchema> = spec
            .difference
            .choices(spec.day())
            .into_iter()
            .map(|d| SeriesSchema {
                difference: d,
                ..schema.clone()
            })
            .collect();
        let lookback = schemas.iter().map(|s| s.lookback()).max().unwrap_or(1);
        let origins_of: Vec<Vec<usize>> = series
            .iter()
            .map(|s| match s.model_ok {
                true => evaluate::origins(
                    s.y.len(),
                    windows,
                    spec.backtest_step,
                    spec.horizon,
                    lookback + 1,
                )
                .into_iter()
                .enumerate()
                .filter(|&(w, o)| spec.backtest_windows.keeps(w, o, s.y.len()))
                .map(|(_, o)| o)
                .collect(),
                false => Vec::new(),
            })
            .collect();
        // The backtest fits see only targets before each series' earliest origin.
        let cut: Vec<usize> = series
            .iter()
            .zip(&origins_of)
            .map(|(s, o)| o.last().copied().unwrap_or(s.y.len()))
            .collect();
        let scales = series
            .iter()
            .zip(&cut)
            .map(|(s, &e)| schema.scale_of(s, e))
            .collect();
        Frame {
            schemas,
            origins_of,
            cut,
            scales,
        }
    }
}

/// Trains, backtests and chooses. `per_series` selection by `spec.selection`. The backtest's
/// models read the covariates in `served` where given (see [`AsServed`]); they are dropped
/// before the final fit, the run's peak of memory.
pub fn train(
    schema: &SeriesSchema,
    spec: &ForecastSpec,
    model_spec: &ModelSpec,
    series: &[Series],
    served: Option<AsServed>,
) -> Result<Outcome, ModelError> {
    let (h, day) = (spec.horizon, spec.day());
    // As many windows as the read stage fetched the served covariates of, at most.
    let windows = spec.backtest_windows.resolve(series.len(), h);
    let windows = served
        .as_ref()
        .map_or(windows, |s| windows.min(s.windows()));
    let frame = Frame::new(schema, spec, series, windows);
    let (variants, sampled_pair) = fit_variants(&frame, spec, model_spec, series, served.as_ref())?;
    crate::progress::step("backtest");
    // When the sampled comparison already chose the served model (one variant left, or the
    // ensemble of two), its refit on every row runs beside the backtest (each leaves the
    // other's cores idle at times), and is dropped in the rare case that no series ends up
    // using the model.
    let early: Vec<usize> = match (spec.refit, variants.len(), sampled_pair) {
        (true, 1, _) => vec![0],
        (true, 2, true) => vec![0, 1],
        _ => Vec::new(),
    };
    let (mut points, early_fits) = rayon::join(
        || {
            evaluate::backtest(
                series,
                &frame.scales,
                &frame.origins_of,
                &fits_of(&variants),
                served.as_ref(),
                h,
                day,
            )
        },
        || refit_each(&variants, &early, model_spec, series),
    );
    drop(served);
    // The model columns of the points: each variant, then the ensemble when it wins.
    let mut columns: Vec<Method> = variants.iter().map(|v| Method::of(v.strategy)).collect();
    let pair = (spec.ensemble)
        .then(|| ensemble(&points, &variants, &maes_of(&points, variants.len())))
        .flatten()
        .filter(|e| e.wins)
        .map(|e| {
            points.models.push(e.mean);
            columns.push(Method::Ensemble);
            (e.best, e.partner)
        });
    let per_series = spec.selection == crate::config::Selection::PerSeries;
    let choice = select::choose(
        &points,
        series.len(),
        &columns,
        &spec.candidates,
        per_series,
    );
    let pred = select::chosen_predictions(&points, &choice);
    let cal = calibrate(&points, &pred, &frame.scales, h, spec.interval);
    let (metrics, per_step) = scored_or_empty(&points, &pred, h);
    let (naive_day, naive_day_steps) = scored_or_empty(&points, &points.naive_day, h);
    let (naive_week, _) = scored_or_empty(&points, &points.naive_week, h);

    // The served model: the winning variant (or the two of the ensemble), refit on every row
    // when some series uses it.
    let used = (0..series.len()).any(|i| series[i].model_ok && choice.method_of(i).uses_model());
    let members: Vec<usize> = match (choice.model, pair) {
        (Some((_, Method::Ensemble)), Some((a, b))) => vec![a, b],
        (Some((v, _)), _) => vec![v],
        (None, _) => Vec::new(),
    };
    let mut fitted: Vec<(usize, Model, usize)> = Vec::new();
    if used {
        let mut early_fits: Vec<(usize, Option<(Model, usize)>)> =
            early.iter().copied().zip(early_fits?).collect();
        let mut todo = Vec::new();
        for &m in &members {
            if !spec.refit {
                fitted.push((m, variants[m].model.clone(), 0));
            } else if let Some(k) = early_fits.iter().position(|(v, _)| *v == m) {
                if let Some((model, rows)) = early_fits.swap_remove(k).1 {
                    fitted.push((m, model, rows));
                }
            } else {
                todo.push(m);
            }
        }
        if !todo.is_empty() {
            crate::progress::step("refit on every row");
            for (m, f) in todo
                .iter()
                .zip(refit_each(&variants, &todo, model_spec, series)?)
            {
                if let Some((model, rows)) = f {
                    fitted.push((*m, model, rows));
                }
            }
        }
        // The ensemble's members in the order the backtest ranked them.
        fitted.sort_by_key(|(m, _, _)| members.iter().position(|x| x == m));
    }
    let (schema, strategy) = match members.first() {
        Some(&v) => (variants[v].schema.clone(), variants[v].strategy),
        None => (frame.schemas[0].clone(), Fitted::Recursive),
    };
    let scales = full_scales(&schema, series);
    let mut fitted = fitted.into_iter();
    let (model, rows_train) = match fitted.next() {
        Some((_, m, rows)) => (Some(m), rows),
        None => (None, 0),
    };
    let partner = fitted.next().map(|(v, model, _)| Partner {
        schema: variants[v].schema.clone(),
        strategy: variants[v].strategy,
        model,
    });
    let named: Vec<(&Model, Vec<String>)> = (model.iter().map(|m| (m, schema.names(strategy))))
        .chain(
            partner
                .iter()
                .map(|p| (&p.model, p.schema.names(p.strategy))),
        )
        .collect();
    let importances = importances(&named);
    let key_of = |i: usize| series[i].key.to_string();
    let forecaster = Forecaster {
        schema,
        strategy,
        model,
        default: choice.default,
        naive: choice.naive,
        methods: (0..series.len())
            .filter_map(|i| choice.per_series[i].map(|m| (key_of(i), m)))
            .collect(),
        scales: (0..series.len()).map(|i| (key_of(i), scales[i])).collect(),
        errors: (0..series.len())
            .filter_map(|i| cal.errors[i].filter(|e| *e > 0.0).map(|e| (key_of(i), e)))
            .collect(),
        error_ratio: cal.error_ratio,
        half_width: cal.half_width,
        interval: spec.interval,
        day,
        reference: None,
        partner,
    };
    Ok(Outcome {
        forecaster,
        metrics,
        per_step,
        naive_day,
        naive_day_steps,
        naive_week,
        coverage: cal.coverage,
        rows_train,
        points: points.len(),
        windows: frame.origins_of.iter().map(Vec::len).max().unwrap_or(0),
        choice,
        importances,
    })
}

/// The variants `which` each refit on every row, side by side (two fits share the cores
/// better than one after the other: each has phases that use one).
fn refit_each(
    variants: &[Variant],
    which: &[usize],
    model_spec: &ModelSpec,
    series: &[Series],
) -> Result<Vec<Option<(Model, usize)>>, ModelError> {
    which
        .par_iter()
        .map(|&v| refit(&variants[v], model_spec, series))
        .collect()
}

/// The ensemble the backtest's points measure: the best variant by MAE with its partner, the
/// variant of the other strategy on the same target (differencing), and their mean.
struct Ensemble {
    best: usize,
    partner: usize,
    mean: Vec<f64>,
    mae: f64,
    /// Its MAE is below the best variant's by `ENSEMBLE_MARGIN`.
    wins: bool,
}

/// The backtest MAE of each of the first `n` model columns.
fn maes_of(points: &Points, n: usize) -> Vec<f64> {
    (0..n).map(|k| mae(points, &points.models[k])).collect()
}

/// The column with the lowest MAE.
fn best_of(maes: &[f64]) -> Option<usize> {
    (0..maes.len()).min_by(|&a, &b| maes[a].total_cmp(&maes[b]))
}

/// The best variant's ensemble with its partner, given each variant's MAE; None when no
/// partner was fitted.
fn ensemble(points: &Points, variants: &[Variant], maes: &[f64]) -> Option<Ensemble> {
    let best = best_of(maes)?;
    let partner = (0..variants.len()).find(|&k| {
        variants[k].strategy != variants[best].strategy
            && variants[k].schema.difference == variants[best].schema.difference
    })?;
    let mean: Vec<f64> = (points.models[best].iter().zip(&points.models[partner]))
        .map(|(x, y)| 0.5 * (x + y))
        .collect();
    let mae = mae(points, &mean);
    Some(Ensemble {
        best,
        partner,
        wins: mae < (1.0 - ENSEMBLE_MARGIN) * maes[best],
        mean,
        mae,
    })
}

/// The served model: `variant` fitted on every row of every series.
fn refit(
    variant: &Variant,
    model_spec: &ModelSpec,
    series: &[Series],
) -> Result<Option<(Model, usize)>, ModelError> {
    let scales = full_scales(&variant.schema, series);
    let ends: Vec<usize> = series.iter().map(|s| s.y.len()).collect();
    fit(
        &variant.schema,
        model_spec,
        series,
        &scales,
        &ends,
        variant.strategy,
    )
}

/// Each series' scale learned on all of it.
fn full_scales(schema: &SeriesSchema, series: &[Series]) -> Vec<Scale> {
    series
        .iter()
        .map(|s| schema.scale_of(s, s.y.len()))
        .collect()
}

/// Fits every model variant (strategy × differencing) for the backtest, on a sample of rows;
/// with many series they compete on an even sample of series, and only the winner is kept to
/// be backtested on all of them (for the per-series choice and the intervals).
fn fit_variants(
    frame: &Frame,
    spec: &ForecastSpec,
    model_spec: &ModelSpec,
    series: &[Series],
    served: Option<&AsServed>,
) -> Result<(Vec<Variant>, bool), ModelError> {
    // A sample ranks the variants as the full data would, and keeps four of them affordable
    // on large jobs. The served model trains on every row.
    let backtest_spec = ModelSpec {
        max_train_rows: match model_spec.max_train_rows {
            0 => spec.backtest_rows,
            n => n.min(spec.backtest_rows),
        },
        ..model_spec.clone()
    };
    crate::progress::step("backtest fits");
    // The variants are fitted side by side: a fit of a sample this small builds most of its
    // histograms on one thread, so one fit alone leaves the other cores idle.
    let pairs: Vec<(&SeriesSchema, Fitted)> = (frame.schemas.iter())
        .flat_map(|sc| strategies(spec).into_iter().map(move |st| (sc, st)))
        .collect();
    let fitted: Vec<Option<(Model, usize)>> = pairs
        .par_iter()
        .map(|&(sc, strategy)| {
            fit(
                sc,
                &backtest_spec,
                series,
                &frame.scales,
                &frame.cut,
                strategy,
            )
        })
        .collect::<Result<_, _>>()?;
    let variants: Vec<Variant> = pairs
        .into_iter()
        .zip(fitted)
        .filter_map(|((sc, strategy), f)| {
            f.map(|(model, _)| Variant {
                schema: sc.clone(),
                strategy,
                model,
            })
        })
        .collect();
    if variants.len() > 1 && series.len() > VARIANT_SAMPLE_SERIES {
        let every = series.len().div_ceil(VARIANT_SAMPLE_SERIES);
        let sampled: Vec<Vec<usize>> = (frame.origins_of.iter().enumerate())
            .map(|(i, o)| {
                if i % every == 0 {
                    o.clone()
                } else {
                    Vec::new()
                }
            })
            .collect();
        let (h, day) = (spec.horizon, spec.day());
        let fits = fits_of(&variants);
        let points = evaluate::backtest(series, &frame.scales, &sampled, &fits, served, h, day);
        let maes = maes_of(&points, variants.len());
        let best = best_of(&maes).unwrap_or(0);
        // The best variant's ensemble with its partner competes too (`forecast.ensemble`):
        // when it wins, both are kept, and the ensemble is chosen (or not) on every series'
        // backtest.
        let pair = spec
            .ensemble
            .then(|| ensemble(&points, &variants, &maes))
            .flatten();
        let describe = |k: usize| {
            let v = &variants[k];
            format!("{} diff {}", v.strategy.name(), v.schema.difference)
        };
        let mut compared: Vec<String> = (0..variants.len())
            .map(|k| format!("{}: {:.4}", describe(k), maes[k]))
            .collect();
        if let Some(e) = &pair {
            compared.push(format!(
                "ensemble of {} and {}: {:.4}",
                describe(e.best),
                describe(e.partner),
                e.mae
            ));
        }
        let second = pair.filter(|e| e.wins).map(|e| e.partner);
        let keep_pair = second.is_some();
        let chosen = match keep_pair {
            true => compared.last().cloned().unwrap_or_default(),
            false => compared[best].clone(),
        };
        tracing::info!(
            sampled_series = series.len().div_ceil(every),
            mae = %compared.join(", "),
            chosen = %chosen,
            "the model variants compared on a sample of series"
        );
        let mut slots: Vec<Option<Variant>> = variants.into_iter().map(Some).collect();
        let kept: Vec<usize> = std::iter::once(best).chain(second).collect();
        let variants = kept.iter().filter_map(|&k| slots[k].take()).collect();
        return Ok((variants, keep_pair));
    }
    Ok((variants, false))
}

/// The interval calibration read from the backtest: each series' error scale, the typical
/// error-to-spread ratio for series without one, the half-widths per step and the coverage.
struct Calibration {
    errors: Vec<Option<f64>>,
    error_ratio: f64,
    half_width: Vec<f64>,
    coverage: Option<f64>,
}

fn calibrate(
    points: &Points,
    pred: &[f64],
    scales: &[Scale],
    h: usize,
    interval: f64,
) -> Calibration {
    let n = scales.len();
    let errors = select::error_scales(points, pred, n);
    // Series whose backtest forecast was exact still get an interval scaled like the rest.
    let ratios: Vec<f64> = errors
        .iter()
        .zip(scales)
        .filter_map(|(e, sc)| e.map(|e| e / sc.sd))
        .filter(|r| *r > 0.0)
        .collect();
    let error_ratio = median(ratios).unwrap_or(1.0);
    let norm_of = |i: usize| {
        errors[i]
            .filter(|e| *e > 0.0)
            .unwrap_or(error_ratio * scales[i].sd)
    };
    let norm = select::cross_fitted_scales(points, pred, n, norm_of);
    let half_width = select::half_widths(points, pred, &norm, h, interval);
    let coverage = (!points.is_empty()).then(|| select::coverage(points, pred, &norm, &half_width));
    Calibration {
        errors,
        error_ratio,
        half_width,
        coverage,
    }
}

/// The served models' feature importances (each model's with its feature names), largest
/// first: for an ensemble, the mean over its two models of each one's share (a feature only one
/// model has, like the direct model's step, counts as 0 in the other).
fn importances(models: &[(&Model, Vec<String>)]) -> Option<Vec<(String, f64)>> {
    let mut sum: Vec<(String, f64)> = Vec::new();
    for (model, names) in models {
        for (name, share) in names.iter().zip(model.importances(names.len())?) {
            match sum.iter_mut().find(|(n, _)| n == name) {
                Some((_, total)) => *total += share,
                None => sum.push((name.clone(), share)),
            }
        }
    }
    if sum.is_empty() {
        return None;
    }
    sum.iter_mut().for_each(|(_, v)| *v /= models.len() as f64);
    sum.sort_by(|a, b| b.1.total_cmp(&a.1));
    Some(sum)
}

fn fits_of(variants: &[Variant]) -> Vec<evaluate::Fit<'_>> {
    variants
        .iter()
        .map(|v| evaluate::Fit {
            schema: &v.schema,
            strategy: v.strategy,
            model: &v.model,
        })
        .collect()
}

/// Mean absolute error of predictions at the backtest points (NaN counts as infinitely bad).
fn mae(points: &Points, pred: &[f64]) -> f64 {
    let sum: f64 = points
        .actual
        .iter()
        .zip(pred)
        .map(|(a, p)| {
            if p.is_finite() {
                (a - p).abs()
            } else {
                f64::INFINITY
            }
        })
        .sum();
    sum / points.len().max(1) as f64
}

/// The middle value (the upper one of an even count); None for no values.
pub(super) fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

fn scored_or_empty(points: &Points, pred: &[f64], h: usize) -> (Metrics, Vec<Metrics>) {
    if points.is_empty() {
        (Metrics::new(), vec![Metrics::new(); h])
    } else {
        evaluate::scored(points, pred, h)
    }
}
