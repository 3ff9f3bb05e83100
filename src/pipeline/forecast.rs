//! The `forecast` kind of job through the same stages: read the history (and future
//! covariates), check the contract, build regular series, train on all but the last
//! `horizon` steps of every series, evaluate by forecasting those steps recursively against
//! the seasonal-naive baselines (t-24 and t-168 for hourly data), gate, then forecast every
//! series from its end and publish one row per series and target time with split-conformal
//! prediction intervals from the holdout residuals of each horizon step.

use std::sync::Arc;

use chrono::Utc;
use polars::prelude::*;

use super::contract::{self, ContractError};
use super::series::{self, Key, Series, SeriesSchema};
use super::{
    provenance, provenance_defs, read, register_and_gate, score, should_train, Options, Report,
    Timer, TrainSummary,
};
use crate::config::{ColumnType, Job};
use crate::error::Error;
use crate::ledger::{self, RunStats, Status};
use crate::model::metrics::{self, Metrics};
use crate::model::Model;
use crate::registry::{self, NewModel};
use crate::warehouse::ColumnDef;

/// What the holdout evaluation measured.
struct Evaluation {
    metrics: Metrics,
    naive_day: Metrics,
    naive_week: Metrics,
    per_horizon: Vec<(usize, f64, f64)>,
    /// Every metric per horizon step: (model, seasonal naive t-24).
    per_step: Vec<(Metrics, Metrics)>,
    half_width: Vec<f64>,
}

/// Recursive holdout forecast of the last `h` steps of every series, scored against the
/// actuals and the seasonal-naive baselines.
fn evaluate(
    schema: &SeriesSchema,
    model: &Model,
    series: &[Series],
    h: usize,
    interval: f64,
) -> Evaluation {
    let preds = schema.recursive(series, |s| s.y.len() - h, h, |m| model.predict(m));
    let day = (86_400 / schema.step_seconds).max(1) as usize;
    let week = 7 * day;
    let naive = |s: &Series, t: usize, step: usize, period: usize| {
        let back = period * step.div_ceil(period);
        s.y[t.saturating_sub(back)]
    };
    let (mut truth, mut yhat, mut n_day, mut n_week) = (vec![], vec![], vec![], vec![]);
    let mut per_step_abs: Vec<Vec<f64>> = vec![Vec::with_capacity(series.len()); h];
    let mut step_truth: Vec<Vec<f64>> = vec![Vec::with_capacity(series.len()); h];
    let mut step_pred: Vec<Vec<f64>> = vec![Vec::with_capacity(series.len()); h];
    let mut step_naive: Vec<Vec<f64>> = vec![Vec::with_capacity(series.len()); h];
    for (s, p) in series.iter().zip(&preds) {
        let origin = s.y.len() - h;
        for (k, pred) in p.iter().enumerate() {
            let t = origin + k;
            let actual = s.y[t];
            truth.push(actual);
            yhat.push(*pred);
            let nd = naive(s, t, k + 1, day);
            n_day.push(nd);
            n_week.push(naive(s, t, k + 1, week));
            per_step_abs[k].push((actual - pred).abs());
            step_truth[k].push(actual);
            step_pred[k].push(*pred);
            step_naive[k].push(nd);
        }
    }
    let task = crate::config::Task::Regression;
    let per_step: Vec<(Metrics, Metrics)> = (0..h)
        .map(|k| {
            (
                metrics::evaluate(task, &step_truth[k], &step_pred[k], 0.5),
                metrics::evaluate(task, &step_truth[k], &step_naive[k], 0.5),
            )
        })
        .collect();
    let per_horizon = per_step
        .iter()
        .enumerate()
        .map(|(k, (m, n))| (k + 1, m["mae"], n["mae"]))
        .collect();
    // Split conformal: the ceil((n+1)c)/n empirical quantile of |residual| at each step.
    let half_width = per_step_abs
        .into_iter()
        .map(|mut abs| {
            abs.sort_by(f64::total_cmp);
            let n = abs.len();
            if n == 0 {
                return 0.0;
            }
            let rank = (((n + 1) as f64) * interval).ceil() as usize;
            abs[rank.clamp(1, n) - 1]
        })
        .collect();
    Evaluation {
        metrics: metrics::evaluate(task, &truth, &yhat, 0.5),
        naive_day: metrics::evaluate(task, &truth, &n_day, 0.5),
        naive_week: metrics::evaluate(task, &truth, &n_week, 0.5),
        per_horizon,
        per_step,
        half_width,
    }
}

/// The schema this job's config asks for now (without learned statics or interval widths),
/// to compare with a stored model's.
fn same_shape(job: &Job, stored: &SeriesSchema) -> Result<(), String> {
    let spec = job.forecast.as_ref().expect("forecast job");
    let cats: Vec<&String> = stored.statics.iter().map(|(c, _)| c).collect();
    let want: Vec<&String> = job.features.categorical.iter().collect();
    if stored.lags != spec.lags
        || stored.rolling != spec.rolling
        || stored.calendar != spec.calendar
        || stored.exog != job.features.numeric
        || cats != want
        || stored.step_seconds != spec.step_seconds
    {
        return Err(format!(
            "it was trained with lags {:?}, rolling {:?}, calendar {:?}, covariates {:?}, statics {:?}; the config now asks for lags {:?}, rolling {:?}, calendar {:?}, covariates {:?}, statics {:?}",
            stored.lags, stored.rolling, stored.calendar, stored.exog, cats, spec.lags, spec.rolling, spec.calendar, job.features.numeric, want
        ));
    }
    Ok(())
}

pub(super) async fn run(
    job: &Job,
    wh: &crate::warehouse::Warehouse,
    opts: &Options,
    run_id: &str,
    stats: &mut RunStats,
    timer: &mut Timer,
    report: &mut Report,
) -> Result<(), Error> {
    let spec = job
        .forecast
        .clone()
        .expect("validated: forecast jobs have a [forecast] spec");
    let key = job.input.key.as_str();
    let time = job.input.time.as_ref().expect("validated").as_str();
    let history = timer
        .time(
            "read",
            read::read(
                job,
                wh,
                &job.input.train_sql,
                "the history SQL",
                &job.input.columns,
                opts.as_of,
            ),
        )
        .await?;
    report.rows_read = history.height();
    let future = match &job.input.score_sql {
        Some(sql) => Some(
            timer
                .time(
                    "read",
                    read::read(
                        job,
                        wh,
                        sql,
                        "the future covariates SQL",
                        &series::future_contract(job),
                        opts.as_of,
                    ),
                )
                .await?,
        ),
        None => None,
    };
    report.rows_read += future.as_ref().map(|f| f.height()).unwrap_or(0);
    stats.rows_read = Some(report.rows_read as i64);
    timer
        .time("contract", async {
            contract::check(job, &history, "the history SQL", &[key, time], opts.as_of)
        })
        .await?;

    let as_of_us = opts.as_of.timestamp_micros();
    let (job2, spec2) = (job.clone(), spec.clone());
    let built = timer
        .time(
            "features",
            score::on_pool(job.threads, move || {
                series::build(&job2, &spec2, &history, future.as_ref(), as_of_us)
            }),
        )
        .await??;
    let (mut all, skipped) = built;
    if opts.shard.count > 1 {
        all.retain(|s| opts.shard.owns(&s.key.to_string()));
    }
    report.skipped_entities = skipped;
    if !report.skipped_entities.is_empty() {
        tracing::warn!(
            skipped = report.skipped_entities.len(),
            example = %format!("{}: {}", report.skipped_entities[0].0, report.skipped_entities[0].1),
            "series without a forecast"
        );
    }
    if all.is_empty() {
        return Err(ContractError::TooFewRows {
            what: "the history SQL (series with enough recent history)",
            rows: 0,
            min: 1,
        }
        .into());
    }
    let before = ledger::last_scored(wh, &job.name, &opts.shard.label()).await?;
    contract::check_drop(all.len(), before, job.input.min_entities_ratio)?;
    let series = Arc::new(all);
    let h = spec.horizon;

    let mut serving: Option<(i64, Arc<Model>, SeriesSchema)> = None;
    let mut promote = None;
    if should_train(job, wh, opts).await? {
        let statics = series::learn_statics(job, &series);
        let mut schema = SeriesSchema::new(&spec, &job.features.numeric, statics);
        let (s2, sc2, model_spec) = (series.clone(), schema.clone(), job.model.clone());
        let interval = spec.interval;
        let fitted = timer
            .time(
                "train",
                score::on_pool(
                    job.threads,
                    move || -> Result<(Model, Evaluation, usize), crate::model::ModelError> {
                        let end = |s: &Series| s.y.len() - h;
                        // Sampled before the matrix is built: only the rows the model trains
                        // on are ever materialized.
                        let total = sc2.training_rows(&s2, end);
                        let keep = crate::model::training_sample(&model_spec, total);
                        let (x, y) = sc2.training_matrix(&s2, end, keep.as_deref());
                        tracing::info!(
                            rows = total,
                            sample = x.rows,
                            features = x.cols,
                            series = s2.len(),
                            algorithm = model_spec.algorithm.name(),
                            "training"
                        );
                        let model = Model::fit(&model_spec, &x, &y)?;
                        let eval = evaluate(&sc2, &model, &s2, h, interval);
                        Ok((model, eval, total))
                    },
                ),
            )
            .await;
        let (model, eval, rows_train) = fitted??;
        crate::fault::pause("trained");
        schema.half_width = eval.half_width.clone();
        let champion = registry::champion(wh, &job.name).await?;
        let champion_metrics = match champion {
            Some(c) => {
                let stored: Option<SeriesSchema> = serde_json::from_str(&c.features).ok();
                match (
                    stored,
                    Model::from_bytes(c.artifact.as_deref().unwrap_or_default()),
                ) {
                    (Some(sc), Ok(m)) if sc.hash() == schema.hash() => {
                        let s3 = series.clone();
                        Some(
                            score::on_pool(job.threads, move || {
                                evaluate(&sc, &m, &s3, h, interval).metrics
                            })
                            .await?,
                        )
                    }
                    _ => Some(c.metrics),
                }
            }
            None => None,
        };
        // The gate compares with the better of the two seasonal-naive baselines.
        let best_naive = if eval.naive_week.get("mae") < eval.naive_day.get("mae") {
            eval.naive_week.clone()
        } else {
            eval.naive_day.clone()
        };
        // Overall metrics, and every metric per horizon step (`mae_h001`, `rmse_h001`, …).
        let mut stored_metrics = eval.metrics.clone();
        let mut baseline = eval.naive_day.clone();
        for (k, (m, n)) in eval.per_step.iter().enumerate() {
            for (name, v) in m {
                stored_metrics.insert(format!("{name}_h{:03}", k + 1), *v);
            }
            for (name, v) in n {
                baseline.insert(format!("{name}_h{:03}", k + 1), *v);
            }
        }
        for (k, v) in &eval.naive_week {
            baseline.insert(format!("weekly_{k}"), *v);
        }
        let mut summary = TrainSummary {
            version: 0,
            algorithm: job.model.algorithm.name().into(),
            rows_train,
            rows_holdout: series.len() * h,
            metrics: eval.metrics.clone(),
            baseline: eval.naive_day.clone(),
            per_horizon: eval.per_horizon.clone(),
            baseline_weekly: Some(eval.naive_week.clone()),
            top_features: Vec::new(),
            verdict: String::new(),
        };
        let names = schema.names();
        let importances = model.importances(names.len()).map(|imp| {
            let mut v: Vec<(String, f64)> = names.iter().cloned().zip(imp).collect();
            v.sort_by(|a, b| b.1.total_cmp(&a.1));
            v
        });
        summary.top_features = importances
            .clone()
            .unwrap_or_default()
            .into_iter()
            .take(5)
            .collect();
        let new = NewModel {
            job: &job.name,
            run_id,
            algorithm: job.model.algorithm.name(),
            task: "regression",
            params: serde_json::to_string(&(&job.model, &spec)).unwrap_or_default(),
            features: serde_json::to_string(&schema).unwrap_or_default(),
            feature_hash: schema.hash(),
            as_of: opts.as_of,
            train_from: series
                .iter()
                .map(|s| s.start_us)
                .min()
                .map(crate::warehouse::frame::micros_to_utc),
            train_to: Some(opts.as_of),
            rows_train: rows_train as i64,
            rows_holdout: (series.len() * h) as i64,
            metrics: &stored_metrics,
            baseline: &baseline,
            importances: importances.map(|i| serde_json::to_string(&i).unwrap_or_default()),
            artifact: model.to_bytes().map_err(|e| Error::Train(e.into()))?,
        };
        // Judged on the overall metrics against the better naive baseline.
        let gated = register_and_gate(
            job,
            wh,
            opts,
            run_id,
            new,
            &best_naive,
            champion_metrics,
            &mut summary,
        )
        .await;
        report.trained = Some(summary);
        let candidate = gated?;
        promote = candidate.promotion(run_id, stats);
        if promote.is_some() {
            serving = Some((candidate.version, Arc::new(model), schema));
        }
    }
    if opts.mode == super::Mode::Train {
        ledger::finish(wh, run_id, Status::Succeeded, stats, None).await?;
        return Ok(());
    }
    let (version, model, schema) = match serving {
        Some(s) => s,
        None => {
            let (stored, model) = super::load_champion(job, wh).await?;
            let schema: SeriesSchema =
                serde_json::from_str(&stored.features).map_err(|e| Error::SchemaMismatch {
                    job: job.name.clone(),
                    version: stored.version,
                    problem: format!("its stored feature schema is not a forecast schema ({e})"),
                })?;
            same_shape(job, &schema).map_err(|problem| Error::SchemaMismatch {
                job: job.name.clone(),
                version: stored.version,
                problem,
            })?;
            (stored.version, Arc::new(model), schema)
        }
    };
    report.model_version = Some(version);
    stats.model_version = Some(version);

    let (s2, sc2, m2) = (series.clone(), schema.clone(), model.clone());
    let forecasts = timer
        .time(
            "score",
            score::on_pool(job.threads, move || {
                sc2.recursive(&s2, |s| s.y.len(), h, |m| m2.predict(m))
            }),
        )
        .await?;
    crate::fault::pause("scored");
    report.entities = series.len();
    stats.rows_scored = Some(series.len() as i64);

    let frame = output_frame(job, &schema, &series, &forecasts, version, run_id, opts)?;
    let mut defs = vec![
        ColumnDef {
            name: "series_id".into(),
            ty: job.input.columns[key],
        },
        ColumnDef {
            name: "target_ts".into(),
            ty: ColumnType::Timestamp,
        },
        ColumnDef {
            name: "horizon".into(),
            ty: ColumnType::Int,
        },
        ColumnDef {
            name: "yhat".into(),
            ty: ColumnType::Float,
        },
        ColumnDef {
            name: "yhat_lo".into(),
            ty: ColumnType::Float,
        },
        ColumnDef {
            name: "yhat_hi".into(),
            ty: ColumnType::Float,
        },
    ];
    defs.extend(provenance_defs("issued_at"));
    let mut run_metrics = vec![
        (
            "series_forecast".to_string(),
            String::new(),
            series.len() as f64,
        ),
        (
            "series_skipped".to_string(),
            String::new(),
            report.skipped_entities.len() as f64,
        ),
    ];
    if let Some(t) = &report.trained {
        run_metrics.extend(
            t.per_horizon
                .iter()
                .map(|(step, mae, _)| ("holdout_mae".to_string(), format!("horizon={step}"), *mae)),
        );
        run_metrics.extend(t.per_horizon.iter().map(|(step, _, naive)| {
            (
                "holdout_naive_mae".to_string(),
                format!("horizon={step}"),
                *naive,
            )
        }));
    }
    let publication = super::publish::Publication {
        job: &job.name,
        run_id,
        table: &job.output.table,
        columns: defs,
        key: vec!["series_id", "target_ts"],
        frame,
        write: job.output.write,
        promote,
        metrics: run_metrics,
    };
    report.rows_written = timer
        .time("publish", super::publish::publish(wh, publication, stats))
        .await?;
    Ok(())
}

fn output_frame(
    job: &Job,
    schema: &SeriesSchema,
    series: &[Series],
    forecasts: &[Vec<f64>],
    version: i64,
    run_id: &str,
    opts: &Options,
) -> Result<DataFrame, Error> {
    let step_us = schema.step_seconds * 1_000_000;
    let n: usize = forecasts.iter().map(Vec::len).sum();
    let mut target = Vec::with_capacity(n);
    let mut horizon = Vec::with_capacity(n);
    let (mut yhat, mut lo, mut hi) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let mut int_keys = Vec::new();
    let mut text_keys = Vec::new();
    for (s, f) in series.iter().zip(forecasts) {
        let last = s.time_at(s.y.len() - 1, step_us);
        for (k, v) in f.iter().enumerate() {
            match &s.key {
                Key::Int(i) => int_keys.push(*i),
                Key::Text(t) => text_keys.push(t.clone()),
            }
            target.push(last + (k as i64 + 1) * step_us);
            horizon.push(k as i64 + 1);
            let w = schema.half_width.get(k).copied().unwrap_or(0.0);
            yhat.push(*v);
            lo.push(v - w);
            hi.push(v + w);
        }
    }
    let key_col = match job.input.columns.get(job.input.key.as_str()) {
        Some(ColumnType::Int) => Column::new("series_id".into(), int_keys),
        _ => Column::new("series_id".into(), text_keys),
    };
    let mut cols = vec![
        key_col,
        Int64Chunked::from_vec("target_ts".into(), target)
            .into_datetime(TimeUnit::Microseconds, Some(polars::prelude::TimeZone::UTC))
            .into_column(),
        Column::new("horizon".into(), horizon),
        Column::new("yhat".into(), yhat),
        Column::new("yhat_lo".into(), lo),
        Column::new("yhat_hi".into(), hi),
    ];
    cols.extend(provenance(
        n,
        version,
        run_id,
        opts.as_of,
        Utc::now(),
        "issued_at",
    ));
    DataFrame::new(n, cols).map_err(|e| Error::Usage(e.to_string()))
}
