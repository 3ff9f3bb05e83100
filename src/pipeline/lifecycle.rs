//! The sequence every run follows, whatever its kind: decide whether to train; read; train and
//! evaluate a candidate (the champion judged on the same holdout); register it and gate it;
//! finish here for `train`; otherwise serve the candidate or load the champion, score, and
//! publish in one transaction. What differs by kind is the [`Kind`] trait: how inputs are
//! read, how a model is trained and evaluated, how a stored one is loaded, and how the
//! predictions are shaped.

use std::sync::Arc;

use polars::prelude::DataFrame;

use super::context::RunContext;
use super::gate::{self, Verdict};
use super::publish::{self, Publication};
use super::{forecast, score, Mode, TrainSummary};
use crate::config::{JobKind, RetrainPolicy};
use crate::error::Error;
use crate::ledger::{self, Status};
use crate::model::metrics::Metrics;
use crate::registry::{self, ModelRecord, StoredModel};
use crate::warehouse::ColumnDef;

/// A freshly trained model, evaluated, before the gate.
pub struct Candidate<S> {
    /// What serves if the gate passes.
    pub serving: S,
    /// What the registry stores.
    pub record: ModelRecord,
    /// What the run summary prints.
    pub summary: TrainSummary,
    /// The baseline the gate compares with.
    pub gate_baseline: Metrics,
    /// The champion's metrics on the same holdout when it could be scored there (else its
    /// stored ones); None without a champion.
    pub champion_metrics: Option<Metrics>,
}

/// The predictions, shaped for the results table.
pub struct Output {
    pub columns: Vec<ColumnDef>,
    pub key: Vec<String>,
    pub frame: DataFrame,
    /// Run metrics for `prescore_metrics`: (name, labels, value).
    pub metrics: Vec<(String, String, f64)>,
    /// PSI per feature (and `score`) against the model's training data, for `prescore_drift`.
    pub drift: Vec<(String, f64)>,
}

/// What differs between a `score` job and a `forecast` job.
pub(crate) trait Kind {
    /// What both training and serving use, read once per run.
    type Data: Send + Sync + 'static;
    /// A model ready to score, with what it needs to build its inputs.
    type Serving: Send + Sync + 'static;

    /// Reads (and checks) what training and serving share; with `training`, also what only
    /// training reads, so that every read of the run can go at once.
    async fn read(&self, ctx: &mut RunContext<'_>, training: bool) -> Result<Self::Data, Error>;

    /// Trains and evaluates a candidate next to its baseline and the champion.
    async fn train(
        &self,
        ctx: &mut RunContext<'_>,
        data: &Self::Data,
        champion: Option<&StoredModel>,
    ) -> Result<Candidate<Self::Serving>, Error>;

    /// Rebuilds a stored model, refusing one that does not fit this job's features.
    fn load(&self, ctx: &RunContext<'_>, stored: &StoredModel) -> Result<Self::Serving, Error>;

    /// Scores every entity and shapes the output rows.
    async fn serve(
        &self,
        ctx: &mut RunContext<'_>,
        data: Self::Data,
        serving: Arc<Self::Serving>,
        version: i64,
    ) -> Result<Output, Error>;
}

/// Runs the job's lifecycle with its kind.
pub async fn run(ctx: &mut RunContext<'_>) -> Result<(), Error> {
    match &ctx.job.kind {
        JobKind::Score { score_sql, time } => {
            drive(
                &score::ScoreJob {
                    score_sql,
                    time: time.as_ref(),
                },
                ctx,
            )
            .await
        }
        JobKind::Forecast {
            spec,
            time,
            future_sql,
        } => {
            drive(
                &forecast::ForecastJob {
                    spec,
                    time,
                    future_sql: future_sql.as_ref(),
                    served: Default::default(),
                },
                ctx,
            )
            .await
        }
    }
}

async fn drive<K: Kind>(kind: &K, ctx: &mut RunContext<'_>) -> Result<(), Error> {
    let training = should_train(ctx).await?;
    let data = kind.read(ctx, training).await?;
    let mut serving = None;
    let mut promote = None;
    if training {
        let champion = registry::champion(ctx.wh, &ctx.job.name).await?;
        let candidate = kind.train(ctx, &data, champion.as_ref()).await?;
        crate::fault::pause("trained").await;
        let version = register_and_gate(ctx, &candidate).await?;
        if let Some(version) = version {
            promote = Some((version, format!("passed the gate in run {}", ctx.run_id)));
            serving = Some((version, Arc::new(candidate.serving)));
        }
    }
    if ctx.opts.mode == Mode::Train {
        let stats = ctx.report.stats();
        ledger::finish(ctx.wh, ctx.run_id, Status::Succeeded, &stats, None).await?;
        return Ok(());
    }
    let (version, serving) = match serving {
        Some(s) => s,
        None => load_champion(kind, ctx).await?,
    };
    ctx.report.model_version = Some(version);
    let output = kind.serve(ctx, data, serving, version).await?;
    let out = &ctx.job.output;
    let history = out.history_table.clone().zip(out.keep_history);
    let fence = ctx.fence.clone();
    let publication = Publication {
        job: &ctx.job.name,
        run_id: ctx.run_id,
        as_of: ctx.opts.as_of,
        table: &ctx.job.output.table,
        history,
        history_time: ctx.job.kind.history_time(),
        history_reach: ctx.job.kind.history_reach(),
        sharded: ctx.opts.shard.count > 1,
        prunes_history: ctx.opts.shard.index == 0,
        columns: output.columns,
        key: output.key.iter().map(String::as_str).collect(),
        frame: output.frame,
        write: ctx.job.output.write,
        promote,
        command: ctx.opts.mode.name(),
        metrics: output.metrics,
        drift: output.drift,
        model_version: version,
        limits: ctx.job.limits,
        keep: ctx.job.registry_keep,
        fence: fence.as_ref(),
    };
    let stats = ctx.report.stats();
    let wh = ctx.wh;
    ctx.report.rows_written = ctx
        .time("publish", publish::publish(wh, publication, stats))
        .await?;
    let (job, as_of) = (ctx.job, ctx.opts.as_of);
    if let Some(actuals) = ctx.actuals.take() {
        let eval = crate::monitor::evaluate::after_run(job, wh, as_of, actuals);
        ctx.report.accuracy = ctx.time("evaluate", eval).await;
    } else if job.input.labels.is_some() && ctx.opts.shard.count == 1 {
        // A sharded job's scores are whole only once every shard published: `prescore
        // evaluate` measures them.
        let eval = crate::monitor::evaluate_scores::after_run(job, wh, as_of);
        let found = ctx.time("evaluate", eval).await;
        ctx.report.labels = found.map(|e| e.groups).unwrap_or_default();
    }
    Ok(())
}

/// Whether this run trains, by mode, shard and retrain policy.
async fn should_train(ctx: &RunContext<'_>) -> Result<bool, Error> {
    let (job, opts) = (ctx.job, ctx.opts);
    Ok(match opts.mode {
        Mode::Train => true,
        Mode::Score => false,
        // Shards load the champion: training happens once, not once per shard.
        Mode::Run if opts.shard.count > 1 => false,
        Mode::Run => match job.retrain {
            RetrainPolicy::Always => true,
            RetrainPolicy::Never => false,
            // Age is measured in data time: how far this run's as_of lies past the data the
            // champion was trained on. A champion trained on data newer than this run (a
            // backfill) has seen its future, so the run trains its own.
            RetrainPolicy::OlderThan(age) => match registry::champion(ctx.wh, &job.name).await? {
                None => true,
                Some(c) => c.as_of.is_none_or(|t| {
                    t > opts.as_of
                        || opts.as_of - t > chrono::Duration::from_std(age).unwrap_or_default()
                }),
            },
        },
    })
}

/// The model that was champion at the run's as_of, rebuilt by the kind: today's champion for
/// a run at the present, the one that served then for a backfill.
async fn load_champion<K: Kind>(
    kind: &K,
    ctx: &RunContext<'_>,
) -> Result<(i64, Arc<K::Serving>), Error> {
    let (wh, job, as_of) = (ctx.wh, &ctx.job.name, ctx.opts.as_of);
    let stored = registry::champion_at(wh, job, as_of).await?;
    let serving = kind.load(ctx, &stored)?;
    if stored.status == "champion" {
        tracing::info!(version = stored.version, algorithm = %stored.algorithm, "loaded the champion");
    } else {
        tracing::info!(
            version = stored.version,
            algorithm = %stored.algorithm,
            status = %stored.status,
            as_of = %as_of,
            "loaded the model that was champion at the run's as_of (a backfill)"
        );
    }
    Ok((stored.version, Arc::new(serving)))
}

/// Registers the candidate and runs the gate. Returns the version to promote in the publish
/// transaction (None when it waits for a person and a champion serves meanwhile). Rejection
/// ends the run as `gated`.
async fn register_and_gate<S>(
    ctx: &mut RunContext<'_>,
    c: &Candidate<S>,
) -> Result<Option<i64>, Error> {
    let (job, wh) = (ctx.job, ctx.wh);
    let by = registry::Actor::run(ctx.opts.mode.name(), ctx.run_id);
    let version = registry::insert_candidate(wh, &job.name, by, ctx.opts.as_of, &c.record).await?;
    let mut summary = c.summary.clone();
    summary.version = version;
    ctx.report.model_version = Some(version);
    let verdict = gate::judge(
        &job.gate,
        job.model.task,
        &summary.metrics,
        &c.gate_baseline,
        c.champion_metrics.as_ref(),
    );
    let outcome = match verdict {
        Verdict::Reject(reasons) => {
            registry::reject(wh, &job.name, version, &reasons.join("; "), by).await?;
            summary.verdict = format!("rejected: {}", reasons.join("; "));
            tracing::warn!(version, reasons = %reasons.join("; "), "candidate rejected by the quality gate");
            Err(Error::Gated { version, reasons })
        }
        Verdict::Pass if !job.gate.auto_promote => {
            registry::set_status(
                wh,
                &job.name,
                version,
                "candidate",
                "passed the gate; waiting for `prescore models promote`",
            )
            .await?;
            summary.verdict = format!("passed; waiting for `prescore models promote {version}`");
            if ctx.opts.mode != Mode::Train && registry::champion(wh, &job.name).await?.is_none() {
                // Nothing may serve until a person promotes it: the run is gated.
                Err(Error::AwaitingPromotion { version })
            } else {
                Ok(None)
            }
        }
        Verdict::Pass => {
            summary.verdict = "passed; promoted to champion".into();
            if ctx.opts.mode == Mode::Train {
                // No publish follows: promote now.
                let mut tx = wh.begin().await?;
                if let Some(fence) = &ctx.fence {
                    crate::warehouse::lease::check(&mut tx, fence).await?;
                }
                let reason = format!("passed the gate in run {}", ctx.run_id);
                registry::promote_in(&mut tx, &job.name, version, &reason, by).await?;
                tx.commit().await?;
            }
            Ok(Some(version))
        }
    };
    ctx.report.trained = Some(summary);
    if let Some(keep) = job.registry_keep {
        if ctx.opts.mode == Mode::Train || outcome.is_err() {
            // No publish follows, which would prune in its transaction: prune now.
            let mut tx = wh.begin().await?;
            registry::prune_in(&mut tx, &job.name, keep).await?;
            tx.commit().await?;
        }
    }
    outcome
}

/// The five features that matter most, from a list of (name, importance).
pub fn top_features(importances: &Option<Vec<(String, f64)>>) -> Vec<(String, f64)> {
    let mut v = importances.clone().unwrap_or_default();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v.truncate(5);
    v
}
