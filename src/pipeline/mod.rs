//! The pipeline: one run of a job. A run goes through the same stages for both kinds of job:
//!
//! 1. `read`: the job's SQL into a polars frame (`:as_of` bound, transient errors retried)
//! 2. `contract`: row count, NULL policy, finite numbers, unique keys, no future timestamps
//! 3. features: `score::features` (a frame to a matrix) or `forecast::series` (regular series
//!    and the one feature function of a forecast)
//! 4. train: `score::train` (a time-based holdout) or `forecast::evaluate` (backtest windows),
//!    each next to its naive baseline; or load the champion from the registry
//! 5. `gate`: bounds, baseline and champion decide whether the candidate may serve
//! 6. score: every entity through the model on a rayon pool (`pool`), off the async runtime
//! 7. `publish`: one transaction: write the rows, promote, metrics, ledger `succeeded`
//!
//! `lifecycle` holds that sequence once; the [`lifecycle::Kind`] trait is what differs by kind
//! (`score/` and `forecast/`). Around it, [`run`] takes the job lock and keeps the ledger row:
//! every failure ends the row as `failed` (or `gated`) with the error text and leaves the
//! results table untouched. The lifecycle runs within `job.timeout`: past it, it is dropped
//! where it stands (an open publish rolls back) and the run fails with exit 7.

pub mod context;
pub mod contract;
pub mod forecast;
pub mod gate;
pub mod interrupt;
pub mod lifecycle;
pub mod pool;
pub mod publish;
pub mod read;
pub mod score;
pub mod shard;

pub use shard::Shard;

use chrono::{DateTime, Utc};

use crate::config::{Job, KindTag, WriteMode};
use crate::error::Error;
use crate::ledger::{self, RunStats, Status};
use crate::model::metrics::Metrics;
use crate::warehouse::Warehouse;
use context::RunContext;

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
    pub fn name(self) -> &'static str {
        match self {
            Mode::Run => "run",
            Mode::Train => "train",
            Mode::Score => "score",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub mode: Mode,
    pub as_of: DateTime<Utc>,
    pub shard: Shard,
    /// The logical run this one belongs to (`--run-group`); None: its as-of time.
    pub group: Option<String>,
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
    /// Forecasts: (step, model MAE, seasonal naive MAE) per horizon step, and the second
    /// seasonal baseline.
    pub per_horizon: Vec<(usize, f64, f64)>,
    pub baseline_weekly: Option<Metrics>,
    pub top_features: Vec<(String, f64)>,
    pub verdict: String,
    /// The share of actuals inside the prediction interval: on the backtest (forecasts), or
    /// on the half of the holdout the interval was not calibrated on (regression scores).
    pub coverage: Option<f64>,
    /// Regression scores: how the interval was calibrated and measured.
    #[serde(default)]
    pub interval: Option<String>,
    /// Forecasts: how many series each method serves.
    pub methods: Vec<(String, usize)>,
    /// Forecasts: the backtest's shape and each candidate's MAE.
    pub backtest: Option<String>,
}

/// What a run did.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Report {
    pub run_id: String,
    pub job: String,
    pub kind: KindTag,
    pub table: String,
    pub rows_read: usize,
    pub entities: usize,
    pub rows_written: u64,
    pub skipped_entities: Vec<(String, String)>,
    pub model_version: Option<i64>,
    pub trained: Option<TrainSummary>,
    pub stage_seconds: Vec<(String, f64)>,
    /// Forecast runs: realized accuracy of earlier forecasts over the recent days, per lead
    /// time: (horizon, n, MAE, seasonal naive's MAE).
    #[serde(default)]
    pub accuracy: Vec<(i64, i64, f64, Option<f64>)>,
    /// Score jobs: the feature (or `score`) with the highest PSI against the training data.
    #[serde(default)]
    pub max_psi: Option<(String, f64)>,
    /// Score runs with `input.labels_sql`: realized accuracy of the scores issued over
    /// `input.labels_window`, per model version and issue day that has labels.
    #[serde(default)]
    pub labels: Vec<crate::monitor::labels::Group>,
}

impl Report {
    fn new(job: &Job, run_id: &str) -> Self {
        Report {
            run_id: run_id.to_string(),
            job: job.name.clone(),
            kind: job.kind.tag(),
            table: job.output.table.to_string(),
            rows_read: 0,
            entities: 0,
            rows_written: 0,
            skipped_entities: Vec::new(),
            model_version: None,
            trained: None,
            stage_seconds: Vec::new(),
            accuracy: Vec::new(),
            max_psi: None,
            labels: Vec::new(),
        }
    }

    /// What the ledger records of this run so far.
    pub fn stats(&self) -> RunStats {
        let some = |n: u64| (n > 0).then_some(n as i64);
        RunStats {
            rows_read: some(self.rows_read as u64),
            rows_scored: some(self.entities as u64),
            rows_written: some(self.rows_written),
            model_version: self.model_version,
            stage_seconds: self.stage_seconds.clone(),
        }
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

/// Runs a job: lock, ledger, the lifecycle, and the ledger's final word on any failure.
pub async fn run(job: &Job, wh: &Warehouse, opts: &Options) -> Result<Report, Error> {
    let (report, result) = run_reported(job, wh, opts).await;
    result.map(|()| report)
}

/// Runs a job like [`run`], and returns what it did even when it failed or was gated (for the
/// metrics file): rows read, seconds per stage, the gate's verdict, as far as the run got.
pub async fn run_reported(
    job: &Job,
    wh: &Warehouse,
    opts: &Options,
) -> (Report, Result<(), Error>) {
    let run_id = new_run_id();
    let mut report = Report::new(job, &run_id);
    let result = run_locked(job, wh, opts, &run_id, &mut report).await;
    (report, result)
}

async fn run_locked(
    job: &Job,
    wh: &Warehouse,
    opts: &Options,
    run_id: &str,
    report: &mut Report,
) -> Result<(), Error> {
    if opts.shard.count > 1 && job.output.write == WriteMode::Replace && opts.mode != Mode::Train {
        return Err(Error::Usage(format!(
            "job {} has output.write = \"replace\", which cannot run sharded (--shard {}): \
             each shard would delete the rows the other shards wrote. Run it unsharded, or \
             use write = \"upsert\"",
            job.name,
            opts.shard.label()
        )));
    }
    wh.migrate().await?;
    let shard = opts.shard.label();
    let lock = wh.lock(&job.name, &shard, run_id, job.limits.lease).await?;
    let watch = interrupt::watch(wh, &job.name, &shard, run_id);
    let result = async {
        let stale = ledger::abandon_stale(wh, &job.name, &shard, run_id).await?;
        if stale > 0 {
            tracing::warn!(runs = stale, "marked runs of a dead process as abandoned");
        }
        let orphans = crate::registry::reject_orphans(wh, &job.name).await?;
        if orphans > 0 {
            tracing::warn!(models = orphans, "rejected candidates whose runs never finished");
        }
        ledger::start(wh, run_id, &job.name, &shard, opts.mode.name(), opts.as_of).await?;
        if opts.mode != Mode::Train {
            // A training run publishes nothing: it is no shard of a scheduled run.
            let group = opts.group.clone().unwrap_or_else(|| ledger::group_of(opts.as_of));
            ledger::join_group(wh, run_id, &job.name, &group, opts.shard).await?;
        }
        let span = tracing::info_span!("run", job = %job.name, run_id = %run_id, as_of = %opts.as_of.format("%Y-%m-%dT%H:%M:%SZ"));
        let fresh = Report::new(job, run_id);
        let mut ctx = RunContext::new(job, wh, opts, run_id, std::mem::replace(report, fresh));
        ctx.fence = Some(lock.fence().clone());
        let r = within_deadline(job, &mut ctx, span).await;
        *report = ctx.finish();
        if let Err(e) = &r {
            record_failure(wh, run_id, e, report).await;
        }
        r
    }
    .await;
    watch.stop();
    lock.release().await;
    result
}

/// Runs the lifecycle within `job.timeout`. Past it the lifecycle is dropped where it stands
/// (an open publish transaction rolls back) and the run fails naming the stage it was in.
async fn within_deadline(
    job: &Job,
    ctx: &mut RunContext<'_>,
    span: tracing::Span,
) -> Result<(), Error> {
    let limit = job.limits.run;
    let run = tracing::Instrument::instrument(lifecycle::run(ctx), span);
    match tokio::time::timeout(limit, run).await {
        Ok(r) => r,
        Err(_) => {
            let limit = humantime::format_duration(limit).to_string();
            tracing::error!(%limit, stage = %ctx.stage, "the run passed job.timeout; stopping it");
            Err(Error::TimedOut {
                limit,
                stage: ctx.stage.clone(),
            })
        }
    }
}

/// Ends the ledger row of a run that failed or was gated, with the error text.
async fn record_failure(wh: &Warehouse, run_id: &str, e: &Error, report: &Report) {
    let status = match e {
        Error::Gated { .. } | Error::AwaitingPromotion { .. } => Status::Gated,
        _ => Status::Failed,
    };
    let stats = report.stats();
    if let Err(le) = ledger::finish(wh, run_id, status, &stats, Some(&e.to_string())).await {
        tracing::error!(error = %le, "could not record the failure in the ledger");
    }
}
