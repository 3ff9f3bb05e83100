//! The `score` kind: one prediction per entity. Training reads the labeled history
//! (`input.train_sql`), holds out the latest rows and fits (`train`); serving reads the rows
//! to score (`input.score_sql`), builds the same features (`features`) and writes one row per
//! key with its score, its label (classification) or its prediction interval (regression,
//! `interval`), and its provenance.

pub mod features;
pub mod interval;
pub mod train;

use std::sync::Arc;

use polars::prelude::*;

use super::context::RunContext;
use super::contract::ContractError;
use super::lifecycle::{top_features, Candidate, Kind, Output};
use super::{contract, pool, publish, read, Shard, TrainSummary};
use crate::config::{ColumnType, Job, Sql, Task};
use crate::error::Error;
use crate::ledger;
use crate::model::Model;
use crate::registry::{ModelRecord, StoredModel};
use crate::warehouse::ident::Ident;
use crate::warehouse::ColumnDef;
use features::FeatureSchema;
use interval::Interval;

/// A score job's kind-specific config.
pub struct ScoreJob<'a> {
    pub score_sql: &'a Sql,
    pub time: Option<&'a Ident>,
}

/// A model and the schema that builds its inputs.
pub struct Scorer {
    pub model: Model,
    pub schema: FeatureSchema,
}

impl Kind for ScoreJob<'_> {
    /// Training and scoring read different SQL, each when it is needed.
    type Data = ();
    type Serving = Scorer;

    async fn read(&self, _ctx: &mut RunContext<'_>, _training: bool) -> Result<(), Error> {
        Ok(())
    }

    async fn train(
        &self,
        ctx: &mut RunContext<'_>,
        _data: &(),
        champion: Option<&StoredModel>,
    ) -> Result<Candidate<Scorer>, Error> {
        let (job, wh, as_of) = (ctx.job, ctx.wh, ctx.opts.as_of);
        let sql = &job.input.train_sql;
        let what = "the training SQL";
        let df = ctx
            .time(
                "read",
                read::read(job, wh, sql, what, &job.input.columns, as_of, Shard::ALL),
            )
            .await?;
        ctx.report.rows_read += df.height();
        let mut unique = vec![job.input.key.as_str()];
        unique.extend(self.time.map(Ident::as_str));
        ctx.time("contract", async {
            contract::check(job, &df, what, &unique, as_of)
        })
        .await?;
        let owned = job.clone();
        let trained = ctx
            .time(
                "train",
                pool::on_pool(job.threads, move || with_reference(&owned, &df)),
            )
            .await??;
        // Like for like: score the champion on this holdout when it reads the same features.
        let champion_metrics =
            champion.map(
                |c| match Model::from_bytes(c.artifact.as_deref().unwrap_or_default()) {
                    Ok(m) if c.feature_hash == trained.schema.hash() => {
                        let mut pred = m.predict(&trained.holdout_x);
                        interval::raise(&mut pred, job.output.min_score);
                        crate::model::metrics::evaluate(
                            job.model.task,
                            &trained.holdout_y,
                            &pred,
                            job.output.threshold,
                        )
                    }
                    _ => c.metrics.clone(),
                },
            );
        let summary = TrainSummary {
            version: 0,
            algorithm: job.model.algorithm.name().into(),
            rows_train: trained.rows_train,
            rows_holdout: trained.rows_holdout,
            metrics: trained.metrics.clone(),
            baseline: trained.baseline.clone(),
            per_horizon: Vec::new(),
            baseline_weekly: None,
            top_features: top_features(&trained.importances),
            verdict: String::new(),
            coverage: trained.calibrated.as_ref().map(|c| c.measured),
            interval: trained.calibrated.as_ref().map(|c| c.describe()),
            methods: Vec::new(),
            backtest: None,
        };
        // The registry keeps the interval's measured coverage with the holdout metrics.
        let mut stored_metrics = trained.metrics.clone();
        if let Some(c) = &trained.calibrated {
            stored_metrics.insert("coverage".into(), c.measured);
        }
        let record = ModelRecord {
            algorithm: job.model.algorithm.name().into(),
            task: job.model.task.name().into(),
            params: to_json(&job.model)?,
            features: to_json(&trained.schema)?,
            feature_hash: trained.schema.hash(),
            train_from: trained.train_from,
            train_to: trained.train_to,
            rows_train: trained.rows_train as i64,
            rows_holdout: trained.rows_holdout as i64,
            metrics: stored_metrics,
            baseline: trained.baseline.clone(),
            importances: trained.importances.as_ref().map(to_json).transpose()?,
            artifact: trained.model.to_bytes()?,
        };
        Ok(Candidate {
            gate_baseline: trained.baseline,
            serving: Scorer {
                model: trained.model,
                schema: trained.schema,
            },
            record,
            summary,
            champion_metrics,
        })
    }

    fn load(&self, ctx: &RunContext<'_>, stored: &StoredModel) -> Result<Scorer, Error> {
        let job = ctx.job;
        let model = Model::from_bytes(stored.artifact.as_deref().unwrap_or_default())?;
        let schema: FeatureSchema =
            serde_json::from_str(&stored.features).map_err(|e| Error::SchemaMismatch {
                job: job.name.clone(),
                version: stored.version,
                problem: format!("its stored feature schema is unreadable ({e})"),
            })?;
        check_schema(job, &schema, stored.version)?;
        Ok(Scorer { model, schema })
    }

    async fn serve(
        &self,
        ctx: &mut RunContext<'_>,
        _data: (),
        scorer: Arc<Scorer>,
        version: i64,
    ) -> Result<Output, Error> {
        let (job, wh, opts) = (ctx.job, ctx.wh, ctx.opts);
        let key = job.input.key.as_str();
        let what = "the scoring SQL";
        let contract_cols = read::scoring_contract(job);
        let mut df = ctx
            .time(
                "read",
                read::read(
                    job,
                    wh,
                    self.score_sql,
                    what,
                    &contract_cols,
                    opts.as_of,
                    opts.shard,
                ),
            )
            .await?;
        ctx.report.rows_read += df.height();
        df = opts.shard.split(df, key, &self.score_sql.text, what)?;
        let before = ledger::last_scored(wh, &job.name, &opts.shard.label()).await?;
        ctx.time("contract", async {
            contract::check(job, &df, what, &[key], opts.as_of)?;
            contract::check_drop(df.height(), before, job.input.min_entities_ratio)
        })
        .await?;
        let x = ctx
            .time("features", async { scorer.schema.matrix(&df, key) })
            .await?;
        // The mean of each numeric feature this run scored: a drift chart for dashboards.
        let mut metrics: Vec<(String, String, f64)> = (0..scorer.schema.numeric.len())
            .map(|c| {
                let col = x.column(c);
                let mean = col.iter().sum::<f64>() / col.len().max(1) as f64;
                let name = &scorer.schema.numeric[c];
                ("feature_mean".to_string(), format!("feature={name}"), mean)
            })
            .collect();
        let s2 = scorer.clone();
        let min_score = job.output.min_score;
        let scores = ctx
            .time(
                "score",
                pool::on_pool(job.threads, move || {
                    let mut scores = s2.model.predict(&x);
                    interval::raise(&mut scores, min_score);
                    scores
                }),
            )
            .await?;
        crate::fault::pause("scored").await;
        ctx.report.entities = scores.len();
        let mean = scores.iter().sum::<f64>() / scores.len().max(1) as f64;
        metrics.push(("rows_scored".into(), String::new(), scores.len() as f64));
        metrics.push(("score_mean".into(), String::new(), mean));
        if let Some(t) = &ctx.report.trained {
            let coverage = t.coverage.map(|c| ("coverage".to_string(), c));
            metrics.extend(
                t.metrics
                    .clone()
                    .into_iter()
                    .chain(coverage)
                    .map(|(k, v)| (format!("holdout_{k}"), format!("model=v{}", t.version), v)),
            );
        }
        let drift = drift(job, &df, &scorer.schema, &scores, mean)?;
        ctx.report.max_psi = crate::monitor::drift::worst(&drift).cloned();
        let key_col = df
            .column(key)
            .map_err(|e| Error::internal("the key column", e))?
            .clone();
        // The input is no longer needed (the key column is shared with the output frame).
        drop(df);
        let (frame, columns) = output_frame(
            job,
            key_col,
            &scores,
            scorer.schema.interval.as_ref(),
            Provenance {
                version,
                run_id: ctx.run_id,
                as_of: opts.as_of,
            },
        )?;
        Ok(Output {
            columns,
            key: vec![job.input.key.to_string()],
            frame,
            metrics,
            drift,
        })
    }
}

/// Which model scored the rows, in which run, as of when.
struct Provenance<'a> {
    version: i64,
    run_id: &'a str,
    as_of: chrono::DateTime<chrono::Utc>,
}

/// Key, score, label (classification) or interval bounds (regression; NULL when the model
/// has no interval, e.g. one trained before intervals existed) and provenance, one row per
/// entity.
fn output_frame(
    job: &Job,
    key_col: Column,
    scores: &[f64],
    interval: Option<&Interval>,
    prov: Provenance<'_>,
) -> Result<(DataFrame, Vec<ColumnDef>), Error> {
    let key = job.input.key.as_str();
    let n = scores.len();
    let mut columns = vec![key_col, Column::new("score".into(), scores)];
    let mut defs = vec![
        ColumnDef {
            name: key.into(),
            ty: job.input.columns[key],
        },
        ColumnDef {
            name: "score".into(),
            ty: ColumnType::Float,
        },
    ];
    match job.model.task {
        Task::Classification => {
            let labels: Vec<i64> = scores
                .iter()
                .map(|s| i64::from(*s >= job.output.threshold))
                .collect();
            columns.push(Column::new("label".into(), labels));
            defs.push(ColumnDef {
                name: "label".into(),
                ty: ColumnType::Int,
            });
        }
        Task::Regression => {
            let min = job.output.min_score;
            let bounds: Vec<Option<(f64, f64)>> = scores
                .iter()
                .map(|s| interval.map(|i| i.bounds(*s, min)))
                .collect();
            let lo: Vec<Option<f64>> = bounds.iter().map(|b| b.map(|b| b.0)).collect();
            let hi: Vec<Option<f64>> = bounds.iter().map(|b| b.map(|b| b.1)).collect();
            columns.push(Column::new("score_lo".into(), lo));
            columns.push(Column::new("score_hi".into(), hi));
            for name in ["score_lo", "score_hi"] {
                defs.push(ColumnDef {
                    name: name.into(),
                    ty: ColumnType::Float,
                });
            }
        }
    }
    let (prov, prov_defs) =
        publish::provenance(n, prov.version, prov.run_id, prov.as_of, "scored_at");
    columns.extend(prov);
    defs.extend(prov_defs);
    let frame = DataFrame::new(n, columns).map_err(|e| Error::internal("the output frame", e))?;
    Ok((frame, defs))
}

/// Serializes what the registry stores; a failure is an internal error, never an empty field.
pub(super) fn to_json<T: serde::Serialize + ?Sized>(v: &T) -> Result<String, Error> {
    serde_json::to_string(v).map_err(|e| Error::internal("serializing a model record", e))
}

/// Checks that a stored schema reads the columns this job's config declares, in order.
fn check_schema(job: &Job, schema: &FeatureSchema, version: i64) -> Result<(), Error> {
    let cats: Vec<&String> = schema.categorical.iter().map(|(c, _)| c).collect();
    let want_cats: Vec<&String> = job.features.categorical.iter().collect();
    if schema.numeric != job.features.numeric || cats != want_cats {
        return Err(Error::SchemaMismatch {
            job: job.name.clone(),
            version,
            problem: format!(
                "it was trained on numeric {:?} and categorical {:?}, the config now declares numeric {:?} and categorical {:?}",
                schema.numeric, cats, job.features.numeric, want_cats
            ),
        });
    }
    Ok(())
}

/// Trains, and keeps the training data's distribution in the schema the registry stores:
/// the numeric and categorical feature columns of every training row, and the scores of the
/// holdout (the model's scores on rows it did not fit).
fn with_reference(job: &Job, df: &DataFrame) -> Result<train::Trained, Error> {
    let mut t = train::train(job, df)?;
    let mut scores = t.model.predict(&t.holdout_x);
    interval::raise(&mut scores, job.output.min_score);
    let (numeric, categorical) = (&job.features.numeric, &job.features.categorical);
    let reference = crate::monitor::drift::Reference::of_frame(df, numeric, categorical, &scores)
        .map_err(|e| Error::internal("the drift reference", e))?;
    t.schema.reference = Some(reference);
    Ok(t)
}

/// PSI of the scored rows and their scores against the model's training data (none for a
/// model stored before references), refusing the run past `gate.max_psi`, or when the mean
/// score `now` moved past `gate.max_score_shift` from the holdout's.
fn drift(
    job: &Job,
    df: &DataFrame,
    schema: &FeatureSchema,
    scores: &[f64],
    now: f64,
) -> Result<Vec<(String, f64)>, Error> {
    let Some(reference) = &schema.reference else {
        return Ok(Vec::new());
    };
    let psi = reference
        .psi_of_frame(df, scores)
        .map_err(|e| Error::internal("the drift of the input", e))?;
    for (feature, value) in &psi {
        tracing::debug!(feature = %feature, psi = value, "drift against the training data");
    }
    super::contract::refuse_drift(job, &psi)?;
    if let (Some(max), Some(then)) = (job.gate.max_score_shift, reference.score_mean) {
        let shift = (now - then).abs();
        tracing::debug!(now, then, shift, "mean score against the holdout's");
        if shift > max {
            return Err(ContractError::ScoreShift {
                now,
                then,
                shift,
                max,
            }
            .into());
        }
    }
    Ok(psi)
}
