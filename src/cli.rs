//! The command line: clap definitions only. Each subcommand's help says what it does, when
//! to use it and shows an example; `main` turns the parsed flags into calls.

use std::path::PathBuf;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::pipeline::Shard;

#[derive(Debug, Parser)]
#[command(
    name = "prescore",
    version,
    about = "Precompute ML predictions into your warehouse, on a schedule",
    long_about = "prescore reads fresh rows from a warehouse with SQL, trains or loads a model, scores \
every entity in parallel and writes the predictions into a results table in one transaction \
(an upsert, or with output.write = \"replace\" a full replacement). \
Applications and dashboards read that table with plain SQL.\n\n\
A job is one TOML config plus its SQL files (see configs/). Start with `prescore demo`.",
    after_help = "Exit codes: 0 ok, 1 failed (nothing published), 2 bad config or usage, \
3 input contract broken (nothing published), 4 gated (candidate model rejected; previous \
predictions kept), 5 already running, 6 incomplete (status), 7 timed out (job.timeout, a lock \
or statement time-out; nothing published), 130/143 interrupted by SIGINT/SIGTERM.\n\nExamples:\n  prescore demo\n  prescore check --config configs/churn_daily.toml\n  \
DATABASE_URL=postgres://etl@wh/analytics prescore run --config configs/churn_daily.toml\n  prescore runs --config configs/churn_daily.toml"
)]
pub struct Cli {
    /// Log format: `text` for terminals, `json` for log collectors.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "PRESCORE_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// More detail in the logs (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only warnings and errors in the logs.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// `run`, `train` and `score`: at the end of every run (failed and gated ones too), write
    /// Prometheus metrics for node_exporter's textfile collector to this file, atomically.
    /// Use one file per job, e.g. /var/lib/node_exporter/textfile/prescore_churn_daily.prom.
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        env = "PRESCORE_METRICS_FILE"
    )]
    pub metrics_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create prescore's own tables (ledger, registry, model history, metrics, locks). `run`
    /// does this too.
    #[command(after_help = "Example:\n  prescore init --config configs/churn_daily.toml")]
    Init(Target),
    /// The cron entrypoint: train when the retrain policy says so, gate, score every entity and
    /// publish the predictions in one transaction.
    #[command(
        after_help = "Examples:\n  prescore run --config configs/churn_daily.toml\n  \
prescore run --config configs/energy_hourly.toml --as-of 2026-11-01T00:00:00Z   # backfill\n  \
prescore run --config configs/churn_daily.toml --shard 2/8                      # one of 8 workers\n\n\
crontab:\n  15 * * * * cd /srv/prescore && DATABASE_URL=postgres://etl@wh/db prescore run --config configs/energy_hourly.toml"
    )]
    Run(RunArgs),
    /// Train, evaluate on the holdout, gate and register a model, without scoring.
    #[command(after_help = "Example:\n  prescore train --config configs/churn_daily.toml")]
    Train(RunArgs),
    /// Score with the champion model and publish, without training. With `--as-of` in the
    /// past (a backfill) the model is the one that was champion at that time, by the model
    /// history; a time before any model was promoted is refused.
    #[command(
        after_help = "Examples:\n  prescore score --config configs/churn_daily.toml --shard 0/4\n  \
prescore score --config configs/churn_daily.toml --as-of 2026-10-15   # backfill, with that day's champion"
    )]
    Score(RunArgs),
    /// Validate a config, run its SQL with a LIMIT and compare the columns with the contract.
    /// Writes nothing.
    #[command(after_help = "Example:\n  prescore check --config configs/churn_daily.toml")]
    Check(CheckArgs),
    /// Show recent runs from the ledger (prescore_runs).
    #[command(
        after_help = "Examples:\n  prescore runs --config configs/churn_daily.toml\n  prescore runs --warehouse sqlite://prescore.db --limit 50"
    )]
    Runs(RunsArgs),
    /// Whether a logical run (every shard of one scheduled run) succeeded: exit 0 only when
    /// each shard's latest run of the group succeeded, 6 otherwise. For a downstream step
    /// (a dashboard refresh, an Airflow sensor) to wait on.
    #[command(
        after_help = "Examples:\n  prescore status --config configs/energy_hourly.toml --as-of 2026-11-30T06:00:00Z\n  \
prescore status --config configs/energy_hourly.toml --run-group energy-hourly-29412360"
    )]
    Status(StatusArgs),
    /// List, inspect, promote and roll back models in the registry (prescore_models).
    Models(ModelsArgs),
    /// Measure the realized accuracy of what a job issued (kept in `<table>_history`) once the
    /// truth has arrived. Forecast jobs: against the actuals (read with the job's history SQL),
    /// into prescore_accuracy per model version, method, lead time and target day. Score jobs
    /// with input.labels_sql: against the labels of the entities scored at each issue time
    /// (the labels SQL bound to that time), into prescore_label_accuracy (n, AUC, log loss,
    /// Brier, positive rate, mean score; regression: MAE, RMSE, bias) and prescore_calibration
    /// (per score decile) per model version and issue day. Replaces the rows of the days it
    /// evaluates (score jobs: the days with labels). Every run does this for its recent days;
    /// use this command for a range, after late actuals or labels, or for sharded jobs.
    #[command(
        after_help = "Examples:\n  prescore evaluate --config configs/energy_hourly.toml\n  \
prescore evaluate --config configs/energy_hourly.toml --from 2026-11-01 --to 2026-11-29\n  \
prescore evaluate --config configs/churn_daily.toml --from 2026-10-01"
    )]
    Evaluate(EvaluateArgs),
    /// Write one self-contained HTML page about a job, to read in a browser or attach to a
    /// mail: its runs over time (status, seconds per stage), the realized accuracy of its
    /// forecasts by lead time and by day next to seasonal naive (score jobs: AUC and log loss
    /// by issue day and calibration by score decile), a few series' forecasts with their
    /// intervals against the actuals, drift per feature with PSI flags, and its models with
    /// their history. Built from prescore's own tables (prescore_runs, prescore_accuracy,
    /// prescore_label_accuracy, prescore_calibration, prescore_drift, prescore_models,
    /// prescore_model_events); for forecast
    /// jobs the actuals of the few series drawn come from the job's history SQL, so that chart
    /// needs --config. Aggregates only, no input rows; inline SVG, no script, nothing loaded
    /// from the network. A section without data says why. Writes nothing to the warehouse
    /// (besides creating prescore's tables if they are missing, as every command does).
    #[command(
        after_help = "Examples:\n  prescore report --config configs/energy_hourly.toml --out energy.html\n  \
prescore report --warehouse sqlite://prescore.db --job churn_daily --out churn.html\n  \
prescore report --config configs/churn_daily.toml --out - | gzip > churn.html.gz\n\n\
Exit codes: 0 written, 1 a warehouse error or a file that cannot be written (the previous one \
stays), 2 bad config or usage (no job named, --job not the config's), 7 a statement time-out."
    )]
    Report(ReportArgs),
    /// Generate realistic demo data into a warehouse and run the demo jobs on it.
    #[command(
        after_help = "Examples:\n  prescore demo                                   # SQLite file prescore.db\n  \
prescore demo --warehouse postgres://postgres@127.0.0.1/test\n  prescore demo --seed-only --customers 200000"
    )]
    Demo(DemoArgs),
}

/// Where to connect: a job config (its `job.warehouse`), or a URL.
#[derive(Debug, Args, Clone)]
pub struct Target {
    /// Job config (TOML).
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Warehouse URL, when no config is given. Defaults to $DATABASE_URL, then sqlite://prescore.db.
    #[arg(long, value_name = "URL", env = "DATABASE_URL", hide_env_values = true)]
    pub warehouse: Option<String>,
}

#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// Job config (TOML).
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,
    /// Bind the job's SQL to this time instead of now (backfills). RFC 3339, or a date.
    #[arg(long, value_name = "TIMESTAMP", value_parser = parse_as_of)]
    pub as_of: Option<DateTime<Utc>>,
    /// Handle only shard k of N (an integer key modulo N, any other key by its hash; the SQL
    /// may split the reading itself with `:shard_index` and `:shard_count`), e.g. `3/8`.
    /// Defaults to $JOB_COMPLETION_INDEX of $PRESCORE_SHARDS when both are set.
    #[arg(long, value_name = "K/N", value_parser = parse_shard)]
    pub shard: Option<Shard>,
    /// The logical run this process is part of, shared by all its shards (`prescore status`
    /// checks the group). Defaults to the as-of time: give every shard the same `--as-of`, or
    /// the same group (Kubernetes: the Job's name).
    #[arg(long, value_name = "ID", env = "PRESCORE_RUN_GROUP")]
    pub run_group: Option<String>,
}

#[derive(Debug, Args, Clone)]
pub struct StatusArgs {
    /// Job config (TOML).
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,
    /// The group's as-of time (the default group of runs given this `--as-of`).
    #[arg(long, value_name = "TIMESTAMP", value_parser = parse_as_of, required_unless_present = "run_group")]
    pub as_of: Option<DateTime<Utc>>,
    /// The group, as the runs were given it with `--run-group` / $PRESCORE_RUN_GROUP.
    #[arg(long, value_name = "ID", env = "PRESCORE_RUN_GROUP")]
    pub run_group: Option<String>,
}

#[derive(Debug, Args, Clone)]
pub struct EvaluateArgs {
    /// Job config (TOML) of a forecast job, or of a score job with input.labels_sql.
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,
    /// First target day (forecasts) or issue day (scores), UTC, to evaluate. Default: the
    /// oldest day the history keeps.
    #[arg(long, value_name = "DATE")]
    pub from: Option<NaiveDate>,
    /// Last target or issue day (UTC) to evaluate, included. Default: the as-of day.
    #[arg(long, value_name = "DATE")]
    pub to: Option<NaiveDate>,
    /// Forecasts: read the actuals known at this time (the history SQL's :as_of). Score jobs:
    /// evaluate the scores issued up to this time (each issue time's labels SQL is bound to
    /// that issue time). Default: now.
    #[arg(long, value_name = "TIMESTAMP", value_parser = parse_as_of)]
    pub as_of: Option<DateTime<Utc>>,
}

#[derive(Debug, Args, Clone)]
pub struct ReportArgs {
    #[command(flatten)]
    pub target: Target,
    /// The job to report on (defaults to the config's job; required with --warehouse).
    #[arg(long)]
    pub job: Option<String>,
    /// Where to write the page (replaced atomically); `-` writes it to stdout.
    #[arg(short, long, value_name = "FILE", default_value = "report.html")]
    pub out: PathBuf,
}

#[derive(Debug, Args, Clone)]
pub struct CheckArgs {
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,
    /// Rows to fetch from each SQL file.
    #[arg(long, default_value_t = 5)]
    pub limit: usize,
    #[arg(long, value_name = "TIMESTAMP", value_parser = parse_as_of)]
    pub as_of: Option<DateTime<Utc>>,
}

#[derive(Debug, Args, Clone)]
pub struct RunsArgs {
    #[command(flatten)]
    pub target: Target,
    /// Only this job (defaults to the config's job).
    #[arg(long)]
    pub job: Option<String>,
    #[arg(long, default_value_t = 20)]
    pub limit: i64,
}

#[derive(Debug, Args, Clone)]
pub struct ModelsArgs {
    /// Job config (TOML).
    #[arg(short, long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub action: ModelsAction,
}

#[derive(Debug, Subcommand, Clone)]
pub enum ModelsAction {
    /// Every model of the job, newest first, with status and holdout metrics.
    #[command(after_help = "Example:\n  prescore models list --config configs/churn_daily.toml")]
    List,
    /// One model in full: params, features, metrics, importances, and its history (trained,
    /// promoted, retired, rolled back: when, by which command or run, and why).
    #[command(after_help = "Example:\n  prescore models show 3 --config configs/churn_daily.toml")]
    Show { version: i64 },
    /// Make a version the champion (retiring the current one).
    #[command(
        after_help = "Example:\n  prescore models promote 3 --config configs/churn_daily.toml"
    )]
    Promote { version: i64 },
    /// Take the champion out of service and bring back the model that served before it (from
    /// the model history, prescore_model_events).
    #[command(
        after_help = "Example:\n  prescore models rollback --config configs/churn_daily.toml"
    )]
    Rollback,
}

#[derive(Debug, Args, Clone)]
pub struct DemoArgs {
    /// Warehouse to seed. Defaults to $DATABASE_URL, then sqlite://prescore.db.
    #[arg(long, value_name = "URL", env = "DATABASE_URL", hide_env_values = true)]
    pub warehouse: Option<String>,
    /// Only generate the data; do not run the jobs.
    #[arg(long)]
    pub seed_only: bool,
    /// Customers in the churn dataset (customer_months); their billing history
    /// (customer_revenue) adds the former customers who left before.
    #[arg(long, default_value_t = 50_000)]
    pub customers: usize,
    /// Meters in the energy dataset.
    #[arg(long, default_value_t = 300)]
    pub meters: usize,
    /// Days of hourly meter history.
    #[arg(long, default_value_t = 42)]
    pub days: usize,
    /// Random seed: the same seed generates the same data.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Directory holding configs/ and sql/.
    #[arg(long, default_value = ".")]
    pub root: PathBuf,
}

/// Accepts RFC 3339 (`2026-11-01T06:00:00Z`), `2026-11-01 06:00:00` (UTC) or a date.
pub fn parse_as_of(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S") {
        return Ok(t.and_utc());
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc());
    }
    Err(format!(
        "{s:?} is not a timestamp: use RFC 3339 (2026-11-01T06:00:00Z), `2026-11-01 06:00:00` (UTC) or a date"
    ))
}

pub fn parse_shard(s: &str) -> Result<Shard, String> {
    let err = || format!("{s:?} is not a shard: write K/N with 0 <= K < N, e.g. 0/4");
    let (k, n) = s.split_once('/').ok_or_else(err)?;
    let index: u32 = k.trim().parse().map_err(|_| err())?;
    let count: u32 = n.trim().parse().map_err(|_| err())?;
    if count == 0 || index >= count {
        return Err(err());
    }
    Ok(Shard { index, count })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_as_of_and_shards() {
        assert_eq!(
            parse_as_of("2026-11-01").unwrap().to_rfc3339(),
            "2026-11-01T00:00:00+00:00"
        );
        assert_eq!(
            parse_as_of("2026-11-01T07:00:00+01:00")
                .unwrap()
                .to_rfc3339(),
            "2026-11-01T06:00:00+00:00"
        );
        assert!(parse_as_of("tomorrow").is_err());
        assert_eq!(parse_shard("2/8").unwrap(), Shard { index: 2, count: 8 });
        assert!(
            parse_shard("8/8").is_err() && parse_shard("1/0").is_err() && parse_shard("x").is_err()
        );
    }
}
