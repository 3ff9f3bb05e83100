//! The pipeline: one run of a job, stage by stage. This module only sequences; each stage is
//! its own file, numbered in the order a run goes through them:
//!
//! 1. `s1_read`: the job's SQL into a polars frame (`:as_of` bound, transient errors retried)
//! 2. `s2_contract`: row count, NULL policy, finite numbers, unique keys, no future timestamps
//! 3. `s3_features`: one feature code path for training and scoring (`series` for forecasts)
//! 4. `s4_train`: time-based holdout, fit, metrics next to a baseline (or load the champion)
//! 5. `s5_gate`: bounds, baseline and champion decide whether the candidate may serve
//! 6. `s6_score`: every entity through the model on a rayon pool, off the async runtime
//! 7. `s7_publish`: one transaction: upsert, promote, metrics, ledger `succeeded`
//!
//! Around them, a run takes the job lock and keeps its ledger row; every failure ends the row
//! as `failed` (or `gated`) with the error text and leaves the results table untouched.

#[path = "s2_contract.rs"]
pub mod contract;
#[path = "s3_features.rs"]
pub mod features;
mod forecast;
#[path = "s5_gate.rs"]
pub mod gate;
#[path = "s7_publish.rs"]
pub mod publish;
#[path = "s1_read.rs"]
pub mod read;
#[path = "s6_score.rs"]
pub mod score;
pub mod series;
#[path = "s4_train.rs"]
pub mod train;

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use polars::prelude::*;

use crate::config::{ColumnType, Job, JobKind, RetrainPolicy, Task, WriteMode};
use crate::error::Error;
use crate::ledger::{self, RunStats, Status};
use crate::model::metrics::Metrics;
use crate::model::Model;
use crate::registry::{self, NewModel, StoredModel};
use crate::warehouse::{ColumnDef, Warehouse};
use features::FeatureSchema;
use gate::Verdict;

/// Which subcommand started the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Train when the retrain policy says so, then score and publish (the cron entrypoint).
    Run,
    /// Train, gate and register only.
    Train,
    /// Score with the champion and publish.
    Score,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Run => "run",
            Mode::Train => "train",
            Mode::Score => "score",
        }
    }
}

/// `--shard k/N`: this process handles the entities whose stable key hash is k modulo N.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    pub fn label(&self) -> String {
        format!("{}/{}", self.index, self.count)
    }

    pub fn owns(&self, key: &str) -> bool {
        self.count <= 1
            || u64::from_str_radix(&features::fnv_hex(key), 16).unwrap_or(0) % u64::from(self.count)
                == u64::from(self.index)
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub mode: Mode,
    pub as_of: DateTime<Utc>,
    pub shard: Shard,
}

/// What a training produced, for the summary.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TrainSummary {
    pub version: i64,
    pub algorithm: String,
    pub rows_train: usize,
    pub rows_holdout: usize,
    pub metrics: Metrics,
    pub baseline: Metrics,
    /// Forecasts: the same per horizon step, and the second seasonal baseline.
    pub per_horizon: Vec<(usize, f64, f64)>,
    pub baseline_weekly: Option<Metrics>,
    pub top_features: Vec<(String, f64)>,
    pub verdict: String,
}

/// What a run did.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Report {
    pub run_id: String,
    pub job: String,
    pub kind: JobKind,
    pub table: String,
    pub rows_read: usize,
    pub entities: usize,
    pub rows_written: u64,
    pub skipped_entities: Vec<(String, String)>,
    pub model_version: Option<i64>,
    pub trained: Option<TrainSummary>,
    pub stage_seconds: Vec<(String, f64)>,
}

/// Wall-clock seconds per stage, in order.
#[derive(Default)]
struct Timer(Vec<(String, f64)>);

impl Timer {
    async fn time<T, F: std::future::Future<Output = T>>(&mut self, stage: &str, f: F) -> T {
        crate::fault::pause(stage);
        let start = Instant::now();
        let span = tracing::info_span!("stage", stage);
        let out = tracing::Instrument::instrument(f, span).await;
        let secs = start.elapsed().as_secs_f64();
        match self.0.iter_mut().find(|(s, _)| s == stage) {
            Some((_, t)) => *t += secs,
            None => self.0.push((stage.to_string(), secs)),
        }
        out
    }
}

/// A run id that sorts by time: `20261129T081500Z-3f9a1c`.
pub fn new_run_id() -> String {
    use rand::Rng;
    format!(
        "{}-{:06x}",
        Utc::now().format("%Y%m%dT%H%M%SZ"),
        rand::thread_rng().gen_range(0..0xffffff)
    )
}

/// Runs a job: lock, ledger, stages, and the ledger's final word on any failure.
pub async fn run(job: &Job, wh: &Warehouse, opts: &Options) -> Result<Report, Error> {
    if opts.shard.count > 1 && job.output.write == WriteMode::Replace && opts.mode != Mode::Train {
        return Err(Error::Usage(format!(
            "job {} has output.write = \"replace\", which cannot run sharded (--shard {}): \
             each shard would delete the rows the other shards wrote. Run it unsharded, or \
             use write = \"upsert\"",
            job.name,
            opts.shard.label()
        )));
    }
    let run_id = new_run_id();
    wh.migrate().await?;
    let shard = opts.shard.label();
    let lock = wh.lock(&job.name, &shard, &run_id).await?;
    let result = async {
        let stale = ledger::abandon_stale(wh, &job.name, &shard, &run_id).await?;
        if stale > 0 {
            tracing::warn!(runs = stale, "marked runs of a dead process as abandoned");
        }
        ledger::start(wh, &run_id, &job.name, &shard, opts.mode.name(), opts.as_of).await?;
        let span = tracing::info_span!("run", job = %job.name, run_id = %run_id, as_of = %opts.as_of.format("%Y-%m-%dT%H:%M:%SZ"));
        let mut stats = RunStats::default();
        let r = tracing::Instrument::instrument(stages(job, wh, opts, &run_id, &mut stats), span).await;
        if let Err(e) = &r {
            let status = match e {
                Error::Gated { .. } => Status::Gated,
                _ => Status::Failed,
            };
            if let Err(le) = ledger::finish(wh, &run_id, status, &stats, Some(&e.to_string())).await {
                tracing::error!(error = %le, "could not record the failure in the ledger");
            }
        }
        r
    }
    .await;
    lock.release().await;
    result
}

async fn stages(
    job: &Job,
    wh: &Warehouse,
    opts: &Options,
    run_id: &str,
    stats: &mut RunStats,
) -> Result<Report, Error> {
    let mut timer = Timer::default();
    let mut report = Report {
        run_id: run_id.to_string(),
        job: job.name.clone(),
        kind: job.kind,
        table: job.output.table.to_string(),
        rows_read: 0,
        entities: 0,
        rows_written: 0,
        skipped_entities: Vec::new(),
        model_version: None,
        trained: None,
        stage_seconds: Vec::new(),
    };
    let r = match job.kind {
        JobKind::Score => score_job(job, wh, opts, run_id, stats, &mut timer, &mut report).await,
        JobKind::Forecast => {
            forecast::run(job, wh, opts, run_id, stats, &mut timer, &mut report).await
        }
    };
    stats.stage_seconds = timer.0.clone();
    report.stage_seconds = timer.0;
    r.map(|_| report)
}

/// Whether this run trains, by mode, shard and retrain policy.
async fn should_train(job: &Job, wh: &Warehouse, opts: &Options) -> Result<bool, Error> {
    Ok(match opts.mode {
        Mode::Train => true,
        Mode::Score => false,
        // Shards load the champion: training happens once, not once per shard.
        Mode::Run if opts.shard.count > 1 => false,
        Mode::Run => match job.retrain {
            RetrainPolicy::Always => true,
            RetrainPolicy::Never => false,
            RetrainPolicy::OlderThan(age) => match registry::champion(wh, &job.name).await? {
                None => true,
                Some(c) => c.trained_at.is_none_or(|t| {
                    Utc::now() - t > chrono::Duration::from_std(age).unwrap_or_default()
                }),
            },
        },
    })
}

/// The champion, required.
async fn load_champion(job: &Job, wh: &Warehouse) -> Result<(StoredModel, Model), Error> {
    let stored =
        registry::champion(wh, &job.name)
            .await?
            .ok_or(registry::RegistryError::NoChampion {
                job: job.name.clone(),
            })?;
    let bytes = stored.artifact.clone().unwrap_or_default();
    let model = Model::from_bytes(&bytes).map_err(|e| Error::Train(e.into()))?;
    tracing::info!(version = stored.version, algorithm = %stored.algorithm, "loaded the champion");
    Ok((stored, model))
}

/// The outcome of training plus gating: the version to serve this run, if any.
struct Candidate {
    version: i64,
    promote: bool,
}

impl Candidate {
    /// Records the candidate in the run's stats and returns the promotion the publish
    /// transaction makes, if the gate passed and promotion is automatic.
    fn promotion(&self, run_id: &str, stats: &mut RunStats) -> Option<(i64, String)> {
        stats.model_version = Some(self.version);
        self.promote
            .then(|| (self.version, format!("passed the gate in run {run_id}")))
    }
}

/// Registers a trained model and runs the gate. Rejection ends the run as `gated`.
#[allow(clippy::too_many_arguments)]
async fn register_and_gate(
    job: &Job,
    wh: &Warehouse,
    opts: &Options,
    run_id: &str,
    new: NewModel<'_>,
    gate_baseline: &Metrics,
    champion_metrics: Option<Metrics>,
    summary: &mut TrainSummary,
) -> Result<Candidate, Error> {
    let version = registry::insert_candidate(wh, new).await?;
    summary.version = version;
    let verdict = gate::judge(
        &job.gate,
        job.model.task,
        &summary.metrics,
        gate_baseline,
        champion_metrics.as_ref(),
    );
    match verdict {
        Verdict::Reject(reasons) => {
            registry::set_status(wh, &job.name, version, "rejected", &reasons.join("; ")).await?;
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
            Ok(Candidate {
                version,
                promote: false,
            })
        }
        Verdict::Pass => {
            summary.verdict = "passed; promoted to champion".into();
            if opts.mode == Mode::Train {
                // No publish follows: promote now.
                let mut tx = wh.begin().await?;
                registry::promote_in(
                    &mut tx,
                    &job.name,
                    version,
                    &format!("passed the gate in run {run_id}"),
                )
                .await?;
                tx.commit().await?;
            }
            Ok(Candidate {
                version,
                promote: true,
            })
        }
    }
}

async fn score_job(
    job: &Job,
    wh: &Warehouse,
    opts: &Options,
    run_id: &str,
    stats: &mut RunStats,
    timer: &mut Timer,
    report: &mut Report,
) -> Result<(), Error> {
    let key = job.input.key.as_str();
    let mut serving: Option<(i64, Arc<Model>, FeatureSchema)> = None;
    let mut promote = None;

    if should_train(job, wh, opts).await? {
        let train_df = timer
            .time(
                "read",
                read::read(
                    job,
                    wh,
                    &job.input.train_sql,
                    "the training SQL",
                    &job.input.columns,
                    opts.as_of,
                ),
            )
            .await?;
        report.rows_read += train_df.height();
        stats.rows_read = Some(report.rows_read as i64);
        let mut unique = vec![key];
        if let Some(t) = &job.input.time {
            unique.push(t.as_str());
        }
        timer
            .time("contract", async {
                contract::check(job, &train_df, "the training SQL", &unique, opts.as_of)
            })
            .await?;
        let job2 = job.clone();
        let trained = timer
            .time(
                "train",
                score::on_pool(job.threads, move || train::train(&job2, &train_df)),
            )
            .await??;
        crate::fault::pause("trained");
        let champion = registry::champion(wh, &job.name).await?;
        let champion_metrics = champion.as_ref().map(|c| {
            // Like for like: score the champion on this holdout when it reads the same features.
            match Model::from_bytes(c.artifact.as_deref().unwrap_or_default()) {
                Ok(m) if c.feature_hash == trained.schema.hash() => {
                    crate::model::metrics::evaluate(
                        job.model.task,
                        &trained.holdout_y,
                        &m.predict(&trained.holdout_x),
                        job.output.threshold,
                    )
                }
                _ => c.metrics.clone(),
            }
        });
        let mut summary = TrainSummary {
            version: 0,
            algorithm: job.model.algorithm.name().into(),
            rows_train: trained.rows_train,
            rows_holdout: trained.rows_holdout,
            metrics: trained.metrics.clone(),
            baseline: trained.baseline.clone(),
            per_horizon: Vec::new(),
            baseline_weekly: None,
            top_features: top(&trained.importances),
            verdict: String::new(),
        };
        let new = NewModel {
            job: &job.name,
            run_id,
            algorithm: job.model.algorithm.name(),
            task: task_name(job.model.task),
            params: serde_json::to_string(&job.model).unwrap_or_default(),
            features: serde_json::to_string(&trained.schema).unwrap_or_default(),
            feature_hash: trained.schema.hash(),
            as_of: opts.as_of,
            train_from: trained.train_from,
            train_to: trained.train_to,
            rows_train: trained.rows_train as i64,
            rows_holdout: trained.rows_holdout as i64,
            metrics: &trained.metrics,
            baseline: &trained.baseline,
            importances: trained
                .importances
                .as_ref()
                .map(|i| serde_json::to_string(i).unwrap_or_default()),
            artifact: trained
                .model
                .to_bytes()
                .map_err(|e| Error::Train(e.into()))?,
        };
        let gated = register_and_gate(
            job,
            wh,
            opts,
            run_id,
            new,
            &trained.baseline,
            champion_metrics,
            &mut summary,
        )
        .await;
        report.trained = Some(summary);
        let candidate = gated?;
        promote = candidate.promotion(run_id, stats);
        if promote.is_some() {
            serving = Some((candidate.version, Arc::new(trained.model), trained.schema));
        }
    }
    if opts.mode == Mode::Train {
        ledger::finish(wh, run_id, Status::Succeeded, stats, None).await?;
        return Ok(());
    }
    let (version, model, schema) = match serving {
        Some(s) => s,
        None => {
            let (stored, model) = load_champion(job, wh).await?;
            let schema: FeatureSchema =
                serde_json::from_str(&stored.features).map_err(|e| Error::SchemaMismatch {
                    job: job.name.clone(),
                    version: stored.version,
                    problem: format!("its stored feature schema is unreadable ({e})"),
                })?;
            check_schema(job, &schema, stored.version)?;
            (stored.version, Arc::new(model), schema)
        }
    };
    report.model_version = Some(version);
    stats.model_version = Some(version);

    let score_sql = job
        .input
        .score_sql
        .as_deref()
        .expect("validated: score jobs have score_sql");
    let contract_cols = read::scoring_contract(job);
    let mut df = timer
        .time(
            "read",
            read::read(
                job,
                wh,
                score_sql,
                "the scoring SQL",
                &contract_cols,
                opts.as_of,
            ),
        )
        .await?;
    report.rows_read += df.height();
    stats.rows_read = Some(report.rows_read as i64);
    if opts.shard.count > 1 {
        df = shard_filter(&df, key, opts.shard)?;
    }
    let before = ledger::last_scored(wh, &job.name, &opts.shard.label()).await?;
    timer
        .time("contract", async {
            contract::check(job, &df, "the scoring SQL", &[key], opts.as_of)?;
            contract::check_drop(df.height(), before, job.input.min_entities_ratio)
        })
        .await?;
    let x = timer
        .time("features", async { schema.matrix(&df, key) })
        .await?;
    // The mean of each numeric feature this run scored: a drift chart for dashboards.
    let feature_means: Vec<(String, String, f64)> = schema
        .numeric
        .iter()
        .enumerate()
        .map(|(c, name)| {
            let col = x.column(c);
            let mean = col.iter().sum::<f64>() / col.len().max(1) as f64;
            ("feature_mean".to_string(), format!("feature={name}"), mean)
        })
        .collect();
    let scores = timer
        .time("score", score::score(model, x, job.threads))
        .await?;
    crate::fault::pause("scored");
    report.entities = scores.len();
    stats.rows_scored = Some(scores.len() as i64);

    let now = Utc::now();
    let n = df.height();
    let key_col = df
        .column(key)
        .map_err(|e| Error::Usage(e.to_string()))?
        .clone();
    let mut columns = vec![key_col, Column::new("score".into(), &scores)];
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
    if job.model.task == Task::Classification {
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
    columns.extend(provenance(n, version, run_id, opts.as_of, now, "scored_at"));
    defs.extend(provenance_defs("scored_at"));
    let frame = DataFrame::new(n, columns).map_err(|e| Error::Usage(e.to_string()))?;
    // The input is no longer needed (the key column is shared with the output frame).
    drop(df);
    let mean = scores.iter().sum::<f64>() / scores.len().max(1) as f64;
    let mut metrics = vec![
        (
            "rows_scored".to_string(),
            String::new(),
            scores.len() as f64,
        ),
        ("score_mean".to_string(), String::new(), mean),
    ];
    metrics.extend(feature_means);
    if let Some(t) = &report.trained {
        metrics.extend(
            t.metrics
                .iter()
                .map(|(k, v)| (format!("holdout_{k}"), format!("model=v{}", t.version), *v)),
        );
    }
    let publication = publish::Publication {
        job: &job.name,
        run_id,
        table: &job.output.table,
        columns: defs,
        key: vec![key],
        frame,
        write: job.output.write,
        promote,
        metrics,
    };
    report.rows_written = timer
        .time("publish", publish::publish(wh, publication, stats))
        .await?;
    Ok(())
}

/// model_version, run_id, as_of and the publish time: the provenance of every prediction row.
fn provenance(
    n: usize,
    version: i64,
    run_id: &str,
    as_of: DateTime<Utc>,
    now: DateTime<Utc>,
    time_name: &str,
) -> Vec<Column> {
    let ts = |name: &str, t: DateTime<Utc>| {
        Int64Chunked::full(name.into(), t.timestamp_micros(), n)
            .into_datetime(TimeUnit::Microseconds, Some(TimeZone::UTC))
            .into_column()
    };
    vec![
        Int64Chunked::full("model_version".into(), version, n).into_column(),
        StringChunked::full("run_id".into(), run_id, n).into_column(),
        ts("as_of", as_of),
        ts(time_name, now),
    ]
}

fn provenance_defs(time_name: &str) -> Vec<ColumnDef> {
    vec![
        ColumnDef {
            name: "model_version".into(),
            ty: ColumnType::Int,
        },
        ColumnDef {
            name: "run_id".into(),
            ty: ColumnType::Text,
        },
        ColumnDef {
            name: "as_of".into(),
            ty: ColumnType::Timestamp,
        },
        ColumnDef {
            name: time_name.into(),
            ty: ColumnType::Timestamp,
        },
    ]
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

fn shard_filter(df: &DataFrame, key: &str, shard: Shard) -> Result<DataFrame, Error> {
    let col = df.column(key).map_err(|e| Error::Usage(e.to_string()))?;
    let mask: BooleanChunked = (0..df.height())
        .map(|r| {
            let k = crate::warehouse::frame::cell_text(col, r);
            Some(shard.owns(&k))
        })
        .collect();
    df.filter(&mask).map_err(|e| Error::Usage(e.to_string()))
}

fn top(importances: &Option<Vec<(String, f64)>>) -> Vec<(String, f64)> {
    let mut v = importances.clone().unwrap_or_default();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v.truncate(5);
    v
}

fn task_name(t: Task) -> &'static str {
    match t {
        Task::Classification => "classification",
        Task::Regression => "regression",
    }
}
