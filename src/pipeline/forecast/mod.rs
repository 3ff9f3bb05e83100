//! The `forecast` kind: one prediction per series and future step. A run reads the history
//! (and future covariates), builds regular series (`series`), trains on all but the last
//! `horizon` steps of every series with the one feature function (`features`), evaluates by
//! forecasting those steps against the seasonal-naive baselines (`evaluate`), then forecasts
//! every series from its end and writes the rows (`output`).

pub mod evaluate;
pub mod features;
pub mod output;
pub mod series;

use std::sync::Arc;

use super::context::RunContext;
use super::contract::{self, ContractError};
use super::lifecycle::{Candidate, Kind, Output};
use super::score::to_json;
use super::{pool, read, TrainSummary};
use crate::config::{ForecastSpec, Job, Sql};
use crate::error::Error;
use crate::ledger;
use crate::model::Model;
use crate::registry::{ModelRecord, StoredModel};
use crate::warehouse::ident::Ident;
use evaluate::Evaluation;
use features::SeriesSchema;
use series::Series;

/// A forecast job's kind-specific config.
pub struct ForecastJob<'a> {
    pub spec: &'a ForecastSpec,
    pub time: &'a Ident,
    pub future_sql: Option<&'a Sql>,
}

/// A model and the schema that builds its feature rows.
pub struct Forecaster {
    pub model: Model,
    pub schema: SeriesSchema,
}

impl Kind for ForecastJob<'_> {
    type Data = Arc<Vec<Series>>;
    type Serving = Forecaster;

    async fn read(&self, ctx: &mut RunContext<'_>) -> Result<Arc<Vec<Series>>, Error> {
        let (job, wh, opts) = (ctx.job, ctx.wh, ctx.opts);
        let (key, time) = (job.input.key.as_str(), self.time.as_str());
        let what = "the history SQL";
        let sql = &job.input.train_sql.text;
        let history = ctx
            .time(
                "read",
                read::read(job, wh, sql, what, &job.input.columns, opts.as_of),
            )
            .await?;
        ctx.report.rows_read = history.height();
        let future = match self.future_sql {
            Some(sql) => {
                let contract = series::future_contract(job, time);
                let what = "the future covariates SQL";
                let f = ctx
                    .time(
                        "read",
                        read::read(job, wh, &sql.text, what, &contract, opts.as_of),
                    )
                    .await?;
                ctx.report.rows_read += f.height();
                Some(f)
            }
            None => None,
        };
        ctx.time("contract", async {
            contract::check(job, &history, what, &[key, time], opts.as_of)
        })
        .await?;
        let (owned, spec, time) = (job.clone(), self.spec.clone(), time.to_string());
        let as_of_us = opts.as_of.timestamp_micros();
        let (mut all, skipped) = ctx
            .time(
                "features",
                pool::on_pool(job.threads, move || {
                    series::build(&owned, &spec, &time, &history, future.as_ref(), as_of_us)
                }),
            )
            .await??;
        if opts.shard.count > 1 {
            all.retain(|s| opts.shard.owns(&s.key.to_string()));
        }
        if let Some((key, why)) = skipped.first() {
            tracing::warn!(skipped = skipped.len(), example = %format!("{key}: {why}"), "series without a forecast");
        }
        ctx.report.skipped_entities = skipped;
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
        Ok(Arc::new(all))
    }

    async fn train(
        &self,
        ctx: &mut RunContext<'_>,
        series: &Arc<Vec<Series>>,
        champion: Option<&StoredModel>,
    ) -> Result<Candidate<Forecaster>, Error> {
        let job = ctx.job;
        let h = self.spec.horizon;
        let statics = series::learn_statics(job, series);
        let mut schema = SeriesSchema::new(self.spec, &job.features.numeric, statics);
        let (s2, sc2, model_spec) = (series.clone(), schema.clone(), job.model.clone());
        let interval = self.spec.interval;
        let (model, eval, rows_train) = ctx
            .time(
                "train",
                pool::on_pool(
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
                        let eval = evaluate::evaluate(&sc2, &model, &s2, h, interval);
                        Ok((model, eval, total))
                    },
                ),
            )
            .await??;
        schema.half_width = eval.half_width.clone();
        let champion_metrics = match champion {
            Some(c) => Some(self.champion_metrics(job, c, &schema, series).await?),
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
        let names = schema.names();
        let importances = model.importances(names.len()).map(|imp| {
            let mut v: Vec<(String, f64)> = names.iter().cloned().zip(imp).collect();
            v.sort_by(|a, b| b.1.total_cmp(&a.1));
            v
        });
        let summary = TrainSummary {
            version: 0,
            algorithm: job.model.algorithm.name().into(),
            rows_train,
            rows_holdout: series.len() * h,
            metrics: eval.metrics.clone(),
            baseline: eval.naive_day.clone(),
            per_horizon: eval.per_horizon.clone(),
            baseline_weekly: Some(eval.naive_week.clone()),
            top_features: super::lifecycle::top_features(&importances),
            verdict: String::new(),
        };
        let record = ModelRecord {
            algorithm: job.model.algorithm.name().into(),
            task: job.model.task.name().into(),
            params: to_json(&(&job.model, self.spec))?,
            features: to_json(&schema)?,
            feature_hash: schema.hash(),
            train_from: series
                .iter()
                .map(|s| s.start_us)
                .min()
                .map(crate::warehouse::frame::micros_to_utc),
            train_to: Some(ctx.opts.as_of),
            rows_train: rows_train as i64,
            rows_holdout: (series.len() * h) as i64,
            metrics: stored_metrics,
            baseline,
            importances: importances.as_ref().map(to_json).transpose()?,
            artifact: model.to_bytes()?,
        };
        Ok(Candidate {
            serving: Forecaster { model, schema },
            record,
            summary,
            // Judged on the overall metrics against the better naive baseline.
            gate_baseline: best_naive,
            champion_metrics,
        })
    }

    fn load(&self, ctx: &RunContext<'_>, stored: &StoredModel) -> Result<Forecaster, Error> {
        let job = ctx.job;
        let model = Model::from_bytes(stored.artifact.as_deref().unwrap_or_default())?;
        let mismatch = |problem: String| Error::SchemaMismatch {
            job: job.name.clone(),
            version: stored.version,
            problem,
        };
        let schema: SeriesSchema = serde_json::from_str(&stored.features).map_err(|e| {
            mismatch(format!(
                "its stored feature schema is not a forecast schema ({e})"
            ))
        })?;
        self.same_shape(job, &schema).map_err(mismatch)?;
        Ok(Forecaster { model, schema })
    }

    async fn serve(
        &self,
        ctx: &mut RunContext<'_>,
        series: Arc<Vec<Series>>,
        f: Arc<Forecaster>,
        version: i64,
    ) -> Result<Output, Error> {
        let job = ctx.job;
        let h = self.spec.horizon;
        let (s2, f2) = (series.clone(), f.clone());
        let forecasts = ctx
            .time(
                "score",
                pool::on_pool(job.threads, move || {
                    f2.schema
                        .recursive(&s2, |s| s.y.len(), h, |m| f2.model.predict(m))
                }),
            )
            .await?;
        crate::fault::pause("scored");
        ctx.report.entities = series.len();
        let (frame, columns) = output::frame(
            job, &f.schema, &series, &forecasts, version, ctx.run_id, ctx.opts,
        )?;
        let mut metrics = vec![
            ("series_forecast".into(), String::new(), series.len() as f64),
            (
                "series_skipped".into(),
                String::new(),
                ctx.report.skipped_entities.len() as f64,
            ),
        ];
        if let Some(t) = &ctx.report.trained {
            for (step, mae, naive) in &t.per_horizon {
                let label = format!("horizon={step}");
                metrics.push(("holdout_mae".into(), label.clone(), *mae));
                metrics.push(("holdout_naive_mae".into(), label, *naive));
            }
        }
        Ok(Output {
            columns,
            key: vec!["series_id".into(), "target_ts".into()],
            frame,
            metrics,
        })
    }
}

impl ForecastJob<'_> {
    /// The champion scored on the same holdout when its schema matches the candidate's, else
    /// the metrics it was registered with.
    async fn champion_metrics(
        &self,
        job: &Job,
        c: &StoredModel,
        schema: &SeriesSchema,
        series: &Arc<Vec<Series>>,
    ) -> Result<crate::model::metrics::Metrics, Error> {
        let stored: Option<SeriesSchema> = serde_json::from_str(&c.features).ok();
        let model = Model::from_bytes(c.artifact.as_deref().unwrap_or_default());
        match (stored, model) {
            (Some(sc), Ok(m)) if sc.hash() == schema.hash() => {
                let (s3, h, interval) = (series.clone(), self.spec.horizon, self.spec.interval);
                Ok(pool::on_pool(job.threads, move || {
                    evaluate::evaluate(&sc, &m, &s3, h, interval).metrics
                })
                .await?)
            }
            _ => Ok(c.metrics.clone()),
        }
    }

    /// Whether a stored schema reads what this job's config asks for now (learned statics and
    /// interval widths aside).
    fn same_shape(&self, job: &Job, stored: &SeriesSchema) -> Result<(), String> {
        let spec = self.spec;
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
}
