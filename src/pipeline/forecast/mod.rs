//! The `forecast` kind: one prediction per series and future step. A run reads the history
//! (and future covariates) and builds regular series (`series`); training decides whether the
//! series' days repeat (`routine`, for automatic seasonal means), fits the model with
//! the one feature function (`features`), runs the rolling-origin backtest (`evaluate`),
//! chooses each series' method and calibrates the intervals (`select`) — all in `train` — and
//! stores the result as a [`Forecaster`]; serving forecasts every series from its end and
//! writes one row per series and step (`output`).

pub mod dataset;
pub mod drift;
pub mod evaluate;
pub mod features;
pub mod forecaster;
pub mod output;
pub mod routine;
pub mod select;
pub mod series;
pub mod steps;
pub mod train;

use std::sync::Arc;

use super::context::RunContext;
use super::contract::{self, ContractError};
use super::lifecycle::{Candidate, Kind, Output};
use super::score::to_json;
use super::{pool, read, TrainSummary};
use crate::config::{BacktestCovariates, ForecastSpec, Job, Sql};
use crate::error::Error;
use crate::ledger;
use crate::model::metrics::Metrics;
use crate::registry::{ModelRecord, StoredModel};
use crate::warehouse::ident::Ident;
use features::SeriesSchema;
pub use forecaster::Forecaster;
use series::{AsServed, Series};

/// A forecast job's kind-specific config.
pub struct ForecastJob<'a> {
    pub spec: &'a ForecastSpec,
    pub time: &'a Ident,
    pub future_sql: Option<&'a Sql>,
    /// What a training run's read stage fetched for the backtest: the future SQL as of each
    /// backtest origin (`forecast.backtest_covariates = "served"`), read beside the history.
    pub served: std::sync::Mutex<Option<Vec<polars::prelude::DataFrame>>>,
}

impl ForecastJob<'_> {
    /// Whether a training run reads the covariates as served at each backtest origin: the
    /// job has a future SQL and covariates, and `forecast.backtest_covariates = "served"`.
    fn reads_served(&self, job: &Job) -> bool {
        self.future_sql.is_some()
            && !job.features.numeric.is_empty()
            && self.spec.backtest_covariates == BacktestCovariates::Served
    }

    /// The future SQL run as of the origin of each backtest window in `windows` (see
    /// [`ForecastJob::served`]).
    async fn read_served(
        &self,
        job: &Job,
        wh: &crate::warehouse::Warehouse,
        opts: &super::Options,
        windows: std::ops::Range<usize>,
    ) -> Result<Vec<polars::prelude::DataFrame>, Error> {
        let (Some(sql), spec) = (self.future_sql, self.spec) else {
            return Ok(Vec::new());
        };
        let contract = series::future_contract(job, self.time.as_str());
        let what = "the future covariates SQL (as of a backtest origin)";
        let reads = windows.map(|w| {
            let back = (spec.horizon + w * spec.backtest_step) as i64 * spec.step_seconds;
            let as_of = opts.as_of - chrono::Duration::seconds(back);
            read::read(job, wh, sql, what, &contract, as_of, opts.shard)
        });
        let frames = futures_util::future::try_join_all(reads).await?;
        let key = job.input.key.as_str();
        let split = frames
            .into_iter()
            .map(|f| opts.shard.split(f, key, &sql.text, what))
            .collect::<Result<_, _>>()?;
        Ok(split)
    }

    /// The frames the read stage fetched of the covariates as served at each backtest origin
    /// (only when the job reads them, see [`ForecastJob::reads_served`]); taken, once.
    fn served_frames(&self) -> Option<Vec<polars::prelude::DataFrame>> {
        self.served.lock().map(|mut s| s.take()).unwrap_or(None)
    }
}

/// The covariates a run at each backtest origin would have served, from their frames.
fn as_served(
    job: &Job,
    spec: &ForecastSpec,
    time: &str,
    frames: Option<Vec<polars::prelude::DataFrame>>,
    series: &[Series],
) -> Result<Option<AsServed>, Error> {
    let Some(frames) = frames else {
        return Ok(None);
    };
    let served = AsServed::new(job, spec, time, &frames, series)?;
    tracing::debug!(
        windows = frames.len(),
        "the backtest reads the covariates as served"
    );
    Ok(Some(served))
}

impl Kind for ForecastJob<'_> {
    type Data = Arc<Vec<Series>>;
    type Serving = Forecaster;

    async fn read(
        &self,
        ctx: &mut RunContext<'_>,
        training: bool,
    ) -> Result<Arc<Vec<Series>>, Error> {
        let (job, wh, opts) = (ctx.job, ctx.wh, ctx.opts);
        let (key, time) = (job.input.key.as_str(), self.time.as_str());
        let what = "the history SQL";
        let sql = &job.input.train_sql;
        // The history, the future covariates and (to train) the covariates as served at each
        // backtest origin are read at once: the warehouse runs the queries side by side while
        // prescore decodes. On the peer bench (local PostgreSQL on the same 2 cores) this
        // measured within noise of reading them one after the other (x0.98); a remote
        // warehouse's round trips overlap too.
        const FUTURE: &str = "the future covariates SQL";
        let future = async {
            match self.future_sql {
                Some(sql) => {
                    let contract = series::future_contract(job, time);
                    let f = read::read(job, wh, sql, FUTURE, &contract, opts.as_of, opts.shard);
                    Ok::<_, Error>(Some((sql, f.await?)))
                }
                None => Ok(None),
            }
        };
        let served = async {
            match training && self.reads_served(job) {
                true => (self.read_served(job, wh, opts, 0..self.spec.backtest_windows.at_least()))
                    .await
                    .map(Some),
                false => Ok(None),
            }
        };
        let history =
            async { Ok::<_, Error>(read::history(job, wh, what, opts.as_of, opts.shard).await?) };
        let (history, future, served) = ctx
            .time("read", async { tokio::try_join!(history, future, served) })
            .await?;
        ctx.report.rows_read = history.height();
        ctx.report.rows_read += future.as_ref().map_or(0, |(_, f)| f.height());
        // Only this shard's series are built (and, with the split in the SQL, read).
        let history = opts.shard.split(history, key, &sql.text, what)?;
        let future = future
            .map(|(sql, f)| opts.shard.split(f, key, &sql.text, FUTURE))
            .transpose()?;
        ctx.time("contract", async {
            contract::check(job, &history, what, &[key, time], opts.as_of)
        })
        .await?;
        if evaluates_after_publish(job, opts) {
            ctx.actuals = Some(
                crate::monitor::evaluate::recent_actuals(job, &history, opts.as_of)
                    .map_err(|e| Error::internal("the recent actuals", e))?,
            );
        }
        let (owned, spec, time) = (job.clone(), self.spec.clone(), time.to_string());
        let as_of_us = opts.as_of.timestamp_micros();
        let (all, skipped) = ctx
            .time(
                "features",
                pool::on_pool(job.threads, move || {
                    series::build(&owned, &spec, &time, &history, future.as_ref(), as_of_us)
                }),
            )
            .await??;
        if let Some((key, why)) = skipped.first() {
            tracing::warn!(skipped = skipped.len(), example = %format!("{key}: {why}"), "series without a forecast");
        }
        if all.is_empty() {
            if let Some((key, why)) = skipped.first() {
                return Err(ContractError::NoSeries {
                    skipped: skipped.len(),
                    example: format!("{key}: {why}"),
                }
                .into());
            }
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
        // A small job's backtest has more windows (`forecast.backtest_windows = "auto"`): the
        // covariates as served at their origins are read now that the series are counted.
        let mut served = served;
        if let Some(frames) = &mut served {
            let windows = self
                .spec
                .backtest_windows
                .resolve(all.len(), self.spec.horizon);
            if windows > frames.len() {
                let more = frames.len()..windows;
                let extra = ctx.time("read", self.read_served(job, wh, opts, more));
                frames.extend(extra.await?);
            }
        }
        ctx.report.rows_read += served.iter().flatten().map(|f| f.height()).sum::<usize>();
        if let Ok(mut slot) = self.served.lock() {
            *slot = served;
        }
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
        let seasonal =
            routine::seasonal_means(&self.spec.seasonal_rolling, series, self.spec.day());
        let schema = SeriesSchema::new(self.spec, seasonal, &job.features.numeric, statics);
        let frames = self.served_frames();
        let (s2, sc2, spec2, owned, time) = (
            series.clone(),
            schema.clone(),
            self.spec.clone(),
            job.clone(),
            self.time.to_string(),
        );
        let mut out = ctx
            .time(
                "train",
                pool::on_pool(job.threads, move || {
                    let served = as_served(&owned, &spec2, &time, frames, &s2)?;
                    Ok::<_, Error>(train::train(&sc2, &spec2, &owned.model, &s2, served)?)
                }),
            )
            .await??;
        let target = job.input.target.as_str();
        out.forecaster.reference = Some(drift::reference(target, &job.features.numeric, series));
        // The gate compares with the better of the two seasonal-naive baselines.
        let best_naive = if out.naive_week.get("mae") < out.naive_day.get("mae") {
            out.naive_week.clone()
        } else {
            out.naive_day.clone()
        };
        let (stored_metrics, baseline, per_horizon) = registered_metrics(&out, h);
        let f = &out.forecaster;
        let methods = method_counts(f, series);
        let summary = TrainSummary {
            version: 0,
            algorithm: job.model.algorithm.name().into(),
            rows_train: out.rows_train,
            rows_holdout: out.points,
            metrics: out.metrics.clone(),
            baseline: out.naive_day.clone(),
            per_horizon,
            baseline_weekly: Some(out.naive_week.clone()),
            top_features: super::lifecycle::top_features(&out.importances),
            verdict: String::new(),
            coverage: out.coverage,
            interval: None,
            methods: methods.clone(),
            backtest: Some(describe_backtest(&out, self.spec)),
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
            rows_train: out.rows_train as i64,
            rows_holdout: out.points as i64,
            metrics: stored_metrics,
            baseline,
            importances: out.importances.as_ref().map(to_json).transpose()?,
            artifact: crate::model::artifact::encode("forecaster", &out.forecaster)?,
        };
        Ok(Candidate {
            serving: out.forecaster,
            record,
            summary,
            // Judged on the overall metrics against the better naive baseline.
            gate_baseline: best_naive,
            // A champion's backtest cannot be rerun without its own training window: the
            // gate compares with the metrics it was registered with.
            champion_metrics: champion.map(|c| c.metrics.clone()),
        })
    }

    fn load(&self, ctx: &RunContext<'_>, stored: &StoredModel) -> Result<Forecaster, Error> {
        let job = ctx.job;
        let f: Forecaster = crate::model::artifact::decode(
            "forecaster",
            stored.artifact.as_deref().unwrap_or_default(),
        )?;
        self.same_shape(job, &f.schema)
            .map_err(|problem| Error::SchemaMismatch {
                job: job.name.clone(),
                version: stored.version,
                problem,
            })?;
        Ok(f)
    }

    async fn serve(
        &self,
        ctx: &mut RunContext<'_>,
        series: Arc<Vec<Series>>,
        f: Arc<Forecaster>,
        version: i64,
    ) -> Result<Output, Error> {
        let job = ctx.job;
        let (s2, f2) = (series.clone(), f.clone());
        let forecasts = ctx
            .time(
                "score",
                pool::on_pool(job.threads, move || f2.forecast(&s2)),
            )
            .await?;
        crate::fault::pause("scored").await;
        ctx.report.entities = series.len();
        let (frame, columns) =
            output::frame(job, &f, &series, &forecasts, version, ctx.run_id, ctx.opts)?;
        let mut metrics = vec![
            ("series_forecast".into(), String::new(), series.len() as f64),
            (
                "series_skipped".into(),
                String::new(),
                ctx.report.skipped_entities.len() as f64,
            ),
        ];
        for (method, n) in method_counts(&f, &series) {
            metrics.push((
                "series_by_method".into(),
                format!("method={method}"),
                n as f64,
            ));
        }
        if let Some(t) = &ctx.report.trained {
            for (step, mae, naive) in &t.per_horizon {
                let label = format!("horizon={step}");
                metrics.push(("holdout_mae".into(), label.clone(), *mae));
                metrics.push(("holdout_naive_mae".into(), label, *naive));
            }
        }
        let drift = match &f.reference {
            Some(r) => {
                let yhat: Vec<f64> = forecasts
                    .iter()
                    .flat_map(|s| s.yhat.iter().copied())
                    .collect();
                let (target, exog) = (job.input.target.as_str(), &job.features.numeric);
                let recent = self.spec.horizon.max(7 * self.spec.day());
                drift::psi(r, target, exog, &series, recent, &yhat)
            }
            None => Vec::new(),
        };
        for (feature, value) in &drift {
            tracing::debug!(feature = %feature, psi = value, "drift against the training data");
        }
        ctx.report.max_psi = crate::monitor::drift::worst(&drift).cloned();
        contract::refuse_drift(job, &drift)?;
        Ok(Output {
            columns,
            key: vec!["series_id".into(), "target_ts".into()],
            frame,
            metrics,
            drift,
        })
    }
}

/// How many series each method forecasts, most used first.
fn method_counts(f: &Forecaster, series: &[Series]) -> Vec<(String, usize)> {
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for s in series {
        *counts.entry(f.method_for(s).label(f.day)).or_default() += 1;
    }
    let mut v: Vec<(String, usize)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v
}

impl ForecastJob<'_> {
    /// Whether a stored schema reads what this job's config asks for now (learned statics and
    /// interval widths aside).
    fn same_shape(&self, job: &Job, stored: &SeriesSchema) -> Result<(), String> {
        let spec = self.spec;
        let cats: Vec<&String> = stored.statics.iter().map(|(c, _)| c).collect();
        let want: Vec<&String> = job.features.categorical.iter().collect();
        if stored.lags != spec.lags
            || stored.rolling != spec.rolling
            || !spec.seasonal_rolling.choices().contains(&stored.seasonal)
            || stored.calendar != spec.calendar
            || stored.exog != job.features.numeric
            || cats != want
            || stored.step_seconds != spec.step_seconds
            || stored.horizon != spec.horizon
            || stored.scale != spec.scale
            || !spec
                .difference
                .choices(spec.day())
                .contains(&stored.difference)
        {
            return Err(format!(
                "it was trained with lags {:?}, rolling {:?}, seasonal_rolling {:?}, calendar {:?}, covariates {:?}, statics {:?}, horizon {}, scale {}, difference {}; the config now asks for lags {:?}, rolling {:?}, seasonal_rolling {:?}, calendar {:?}, covariates {:?}, statics {:?}, horizon {}, scale {}, difference {:?}",
                stored.lags, stored.rolling, stored.seasonal, stored.calendar, stored.exog, cats, stored.horizon, stored.scale, stored.difference, spec.lags, spec.rolling, spec.seasonal_rolling.choices(), spec.calendar, job.features.numeric, want, spec.horizon, spec.scale, spec.difference.choices(spec.day())
            ));
        }
        Ok(())
    }
}

/// What the registry keeps of a forecast model's backtest: the overall metrics with the
/// interval coverage and every metric per horizon step (`mae_h001`, `rmse_h001`, …), the
/// seasonal-naive baseline the same way (the weekly one as `weekly_mae`, …), and the MAE per
/// step next to naive's for the summary.
fn registered_metrics(
    out: &train::Outcome,
    h: usize,
) -> (Metrics, Metrics, Vec<(usize, f64, f64)>) {
    let mut stored = out.metrics.clone();
    if let Some(c) = out.coverage {
        stored.insert("coverage".into(), c);
    }
    let mut baseline = out.naive_day.clone();
    for (k, (m, n)) in out.per_step.iter().zip(&out.naive_day_steps).enumerate() {
        for (name, v) in m {
            stored.insert(format!("{name}_h{:03}", k + 1), *v);
        }
        for (name, v) in n {
            baseline.insert(format!("{name}_h{:03}", k + 1), *v);
        }
    }
    for (k, v) in &out.naive_week {
        baseline.insert(format!("weekly_{k}"), *v);
    }
    let per_horizon = (0..h)
        .filter_map(|k| {
            let m = out.per_step[k].get("mae")?;
            let n = out.naive_day_steps[k].get("mae")?;
            Some((k + 1, *m, *n))
        })
        .collect();
    (stored, baseline, per_horizon)
}

/// "4 window(s) of 24 steps, 24 apart; model direct on differences over 24 steps;
/// candidates direct 0.43, naive24 0.76, …" (an ensemble: "model the mean of direct on
/// differences over 24 steps and recursive …").
fn describe_backtest(out: &train::Outcome, spec: &ForecastSpec) -> String {
    let f = &out.forecaster;
    let variant = |strategy: features::Fitted, difference: usize| {
        let diff = match difference {
            0 => String::new(),
            d => format!(" on differences over {d} steps"),
        };
        format!("{}{diff}", strategy.name())
    };
    let model = match &f.partner {
        None => variant(f.strategy, f.schema.difference),
        Some(p) => format!(
            "the mean of {} and {}",
            variant(f.strategy, f.schema.difference),
            variant(p.strategy, p.schema.difference)
        ),
    };
    // What `seasonal_rolling = "auto"` decided is read off the model's schema.
    let seasonal = match f.schema.seasonal.as_slice() {
        [] => String::new(),
        days => {
            let days: Vec<String> = days.iter().map(|d| d.to_string()).collect();
            format!(", with seasonal means over {} days", days.join(" and "))
        }
    };
    format!(
        "{} window(s) of {} steps, {} apart; model {model}{seasonal}; candidates {}",
        out.windows,
        spec.horizon,
        spec.backtest_step,
        out.choice
            .mae
            .iter()
            .map(|(m, v)| format!("{} {v:.4}", m.label(spec.day())))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Whether a run measures the realized accuracy of earlier forecasts after it publishes: it
/// publishes, keeps history, and is not one shard of several (a shard sees only its series,
/// and the accuracy of a day is one row for the whole job: run `prescore evaluate`).
fn evaluates_after_publish(job: &Job, opts: &crate::pipeline::Options) -> bool {
    opts.mode != crate::pipeline::Mode::Train
        && opts.shard.count == 1
        && job.output.keep_history.is_some()
}
