//! Realized accuracy, the stage: for a range of target days, reads the issued forecasts from
//! the job's `<table>_history` and the actuals with the job's own history SQL (`input.
//! train_sql`, bound to the evaluation's as-of time), computes the figures ([`accuracy`]) and
//! replaces the job's rows of those days in `prescore_accuracy` in one short transaction of its
//! own: a rerun, or `prescore evaluate` over the same days, leaves exactly one row per model
//! version, method, lead time and day. A forecast run evaluates its recent days after its
//! publish has committed; a failure there is logged and never undoes the publish.
//!
//! [`accuracy`]: super::accuracy

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use polars::prelude::*;

use super::accuracy::{self, Actuals, Clock, Group};
use crate::config::{ColumnType, ForecastSpec, Job, JobKind};
use crate::pipeline::forecast::output::forecast_columns;
use crate::pipeline::{read, Shard};
use crate::warehouse::ident::Ident;
use crate::warehouse::{Dialect, Guard, Value, Warehouse, WarehouseError, WriteMode};

#[derive(Debug, thiserror::Error)]
pub enum EvaluateError {
    #[error(transparent)]
    Warehouse(#[from] WarehouseError),
    #[error("job {job} is a score job: realized forecast accuracy is measured for forecast jobs")]
    NotForecast { job: String },
    #[error("job {job} keeps no history (output.keep_history), so there are no issued predictions to evaluate")]
    NoHistory { job: String },
    #[error("job {job} has no input.labels_sql: set it (and output.keep_history) to measure its issued scores against the labels that arrive later")]
    NoLabels { job: String },
    #[error("input contract broken: {0}")]
    Labels(#[from] super::labels::LabelError),
    #[error("{table} does not exist yet: run the job first, then evaluate once actuals (or labels) arrive")]
    NoTable { table: String },
    #[error("computing accuracy from {what}: {source}")]
    Frame {
        what: &'static str,
        source: PolarsError,
    },
}

/// Target days `from..to` (midnight UTC, `to` exclusive), with actuals known at `as_of`.
#[derive(Debug, Clone, Copy)]
pub struct Range {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub as_of: DateTime<Utc>,
}

fn midnight(d: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight exists"))
}

impl Range {
    /// The range as the `:from`, `:to` and `:as_of` parameters of a query over a history table.
    pub fn params(&self) -> BTreeMap<&'static str, Value> {
        BTreeMap::from([
            ("from", Value::Ts(Some(self.from))),
            ("to", Value::Ts(Some(self.to))),
            ("as_of", Value::Ts(Some(self.as_of))),
        ])
    }

    /// The days `from` through `to`, both included.
    pub fn days(from: NaiveDate, to: NaiveDate, as_of: DateTime<Utc>) -> Self {
        Range {
            from: midnight(from),
            to: midnight(to) + Duration::days(1),
            as_of,
        }
    }

    /// What a run evaluates: the target days of the last two horizons (at least two days)
    /// up to the run's as-of day, which is where new actuals land.
    pub fn recent(spec: &ForecastSpec, as_of: DateTime<Utc>) -> Self {
        let back = spec.horizon_span().max(Duration::days(1)) * 2;
        Range::days((as_of - back).date_naive(), as_of.date_naive(), as_of)
    }

    pub fn day_count(&self) -> i64 {
        (self.to - self.from).num_days()
    }
}

/// What an evaluation found and wrote.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub groups: Vec<Group>,
    /// Forecasts in the range that have an actual.
    pub matched: i64,
}

/// Evaluates a forecast job over `range` and replaces its rows in `prescore_accuracy`.
/// `actuals` are the job's history rows when the caller has read them already (a run), else
/// they are read here.
#[tracing::instrument(skip_all, fields(job = %job.name, from = %range.from.date_naive(), to = %range.to.date_naive()))]
pub async fn evaluate(
    job: &Job,
    wh: &Warehouse,
    range: Range,
    actuals: Option<DataFrame>,
) -> Result<Evaluation, EvaluateError> {
    let (spec, time) = forecast_of(job)?;
    let history = history_table(job)?;
    if wh.table_columns(&history).await?.is_empty() {
        return Err(EvaluateError::NoTable {
            table: history.to_string(),
        });
    }
    index_history(wh, &history, "target_ts").await;
    let issued = read_issued(job, wh, &history, range).await?;
    let actuals = match actuals {
        Some(df) => df,
        None => {
            let what = "the history SQL (actuals)";
            read::history(job, wh, what, range.as_of, Shard::ALL).await?
        }
    };
    let frame = |what| move |source| EvaluateError::Frame { what, source };
    let target = job.input.target.as_str();
    let actuals = Actuals::from_frame(&actuals, job.input.key.as_str(), time, target)
        .map_err(frame("the actuals"))?;
    let clock = Clock {
        step_us: spec.step_seconds * 1_000_000,
        season: spec.day() as i64,
    };
    let groups = accuracy::compute(&issued, &actuals, clock).map_err(frame("the history"))?;
    let matched = groups.iter().map(|g| g.n).sum();
    write(job, wh, range, &groups).await?;
    tracing::info!(
        issued = issued.height(),
        actuals = actuals.len(),
        matched,
        rows = groups.len(),
        "recorded realized accuracy"
    );
    Ok(Evaluation { groups, matched })
}

fn forecast_of(job: &Job) -> Result<(&ForecastSpec, &str), EvaluateError> {
    match &job.kind {
        JobKind::Forecast { spec, time, .. } => Ok((spec, time.as_str())),
        JobKind::Score { .. } => Err(EvaluateError::NotForecast {
            job: job.name.clone(),
        }),
    }
}

/// `<output.table>_history`, when the job keeps one.
pub fn history_table(job: &Job) -> Result<Ident, EvaluateError> {
    if job.output.keep_history.is_none() {
        return Err(EvaluateError::NoHistory {
            job: job.name.clone(),
        });
    }
    Ok(Ident::new(&format!("{}_history", job.output.table)).expect("validated with the config"))
}

/// An index on the history's `column` (a forecast's target time, a score's issue time), so
/// that reading a few days does not scan the whole history (its key leads with the series or
/// entity). Created once; a failure (another process creating it at the same moment, a role
/// without the right) only costs speed.
pub(crate) async fn index_history(wh: &Warehouse, history: &Ident, column: &str) {
    let name = format!("{}_{column}", history.base());
    let schema = history.to_string();
    let schema = schema.strip_suffix(history.base()).unwrap_or_default();
    let index = format!("{}\"{name}\"", quoted_prefix(schema));
    // Looked up in the catalog first: CREATE INDEX IF NOT EXISTS takes a lock on the table
    // even when the index is there, and would wait for another shard's open publish.
    let exists = match wh.dialect() {
        Dialect::Sqlite => format!(
            "SELECT COUNT(*) FROM {}sqlite_master WHERE type = 'index' AND name = $1",
            quoted_prefix(schema)
        ),
        Dialect::Postgres => "SELECT COUNT(*) FROM pg_class WHERE oid = to_regclass($1)".into(),
    };
    let probe = match wh.dialect() {
        Dialect::Sqlite => Value::text(&name),
        Dialect::Postgres => Value::text(&index),
    };
    if let Ok(rows) = wh.fetch(&exists, &[probe]).await {
        if rows.first().and_then(|r| r[0].as_i64()) == Some(1) {
            return;
        }
    }
    let sql = match wh.dialect() {
        // SQLite names the index in the table's schema and the table without one.
        Dialect::Sqlite => {
            let on = format!("\"{}\"", history.base());
            format!("CREATE INDEX IF NOT EXISTS {index} ON {on} ({column})")
        }
        Dialect::Postgres => format!(
            "CREATE INDEX IF NOT EXISTS \"{name}\" ON {} ({column})",
            history.quoted()
        ),
    };
    if let Err(e) = wh.execute(&sql, &[]).await {
        tracing::warn!(error = %e, table = %history, column, "could not index the history");
    }
}

/// `"schema".` for `schema.`, nothing for nothing.
fn quoted_prefix(schema: &str) -> String {
    schema
        .strip_suffix('.')
        .map(|s| format!("\"{s}\"."))
        .unwrap_or_default()
}

/// The issued forecasts whose target lies in the range and is known at its as-of time.
async fn read_issued(
    job: &Job,
    wh: &Warehouse,
    history: &Ident,
    range: Range,
) -> Result<DataFrame, WarehouseError> {
    let sql = format!(
        "SELECT series_id, target_ts, horizon, yhat, yhat_lo, yhat_hi, method, model_version \
         FROM {} WHERE target_ts >= :from AND target_ts < :to AND target_ts <= :as_of",
        history.quoted()
    );
    let params = range.params();
    let key_type = job.input.columns[job.input.key.as_str()];
    let contract: BTreeMap<String, ColumnType> = forecast_columns(key_type)
        .into_iter()
        .chain([("model_version", ColumnType::Int)])
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let file = format!("the history table {history}");
    wh.read_frame(&sql, &file, &params, &contract).await
}

/// Replaces the job's rows of the range's days with `groups`, in one transaction.
async fn write(
    job: &Job,
    wh: &Warehouse,
    range: Range,
    groups: &[Group],
) -> Result<(), EvaluateError> {
    let table = Ident::new("prescore_accuracy").expect("a valid name");
    let frame = accuracy_frame(&job.name, groups).map_err(|source| EvaluateError::Frame {
        what: "the accuracy rows",
        source,
    })?;
    let mut tx = wh.begin().await?;
    tx.execute(
        "DELETE FROM prescore_accuracy WHERE job = $1 AND day >= $2 AND day < $3",
        &[
            Value::text(job.name.as_str()),
            Value::Ts(Some(range.from)),
            Value::Ts(Some(range.to)),
        ],
    )
    .await?;
    if !groups.is_empty() {
        let key = ["job", "model_version", "method", "horizon", "day"];
        // Other jobs (and a concurrent `evaluate`) may write the table at the same time.
        let guard = Guard {
            newer_by: None,
            concurrent: true,
        };
        tx.write_with(&table, &key, &frame, WriteMode::Upsert, guard)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

fn accuracy_frame(job: &str, groups: &[Group]) -> PolarsResult<DataFrame> {
    let n = groups.len();
    let ts = |name: &str, v: Vec<i64>| {
        Int64Chunked::from_vec(name.into(), v)
            .into_datetime(TimeUnit::Microseconds, Some(polars::prelude::TimeZone::UTC))
            .into_column()
    };
    let ints = |name: &str, f: fn(&Group) -> i64| {
        Column::new(name.into(), groups.iter().map(f).collect::<Vec<_>>())
    };
    let floats = |name: &str, f: fn(&Group) -> f64| {
        Column::new(name.into(), groups.iter().map(f).collect::<Vec<_>>())
    };
    DataFrame::new(
        n,
        vec![
            StringChunked::full("job".into(), job, n).into_column(),
            ints("model_version", |g| g.model_version),
            Column::new(
                "method".into(),
                groups.iter().map(|g| g.method.as_str()).collect::<Vec<_>>(),
            ),
            ints("horizon", |g| g.horizon),
            ts("day", groups.iter().map(|g| g.day_us).collect()),
            ints("n", |g| g.n),
            floats("mae", |g| g.mae),
            floats("rmse", |g| g.rmse),
            floats("bias", |g| g.bias),
            floats("coverage", |g| g.coverage),
            ints("naive_n", |g| g.naive_n),
            Column::new(
                "naive_mae".into(),
                groups.iter().map(|g| g.naive_mae).collect::<Vec<_>>(),
            ),
            ts("evaluated_at", vec![Utc::now().timestamp_micros(); n]),
        ],
    )
}

/// The rows of the job's history a run keeps for its evaluation: the key, time and target of
/// the rows recent enough for [`Range::recent`] (with seasonal naive's look-back), so that the
/// run neither reads its history twice nor holds all of it until the end.
pub fn recent_actuals(
    job: &Job,
    history: &DataFrame,
    as_of: DateTime<Utc>,
) -> PolarsResult<DataFrame> {
    let (spec, time) = match forecast_of(job) {
        Ok(found) => found,
        Err(_) => return Ok(DataFrame::empty()),
    };
    let range = Range::recent(spec, as_of);
    let clock = Clock {
        step_us: spec.step_seconds * 1_000_000,
        season: spec.day() as i64,
    };
    let since = clock.earliest_needed(range.from.timestamp_micros(), spec.horizon as i64);
    let columns = [job.input.key.as_str(), time, job.input.target.as_str()];
    let kept = history.select(columns)?;
    let mask: BooleanChunked = kept
        .column(time)?
        .datetime()?
        .physical()
        .iter()
        .map(|t| t.is_some_and(|t| t >= since))
        .collect();
    kept.filter(&mask)
}

/// A run's own evaluation, after its publish committed: the recent days, from the history rows
/// the run read. Returns the figures per lead time for the summary; a failure is logged, and
/// `prescore evaluate` can redo it.
pub async fn after_run(
    job: &Job,
    wh: &Warehouse,
    as_of: DateTime<Utc>,
    actuals: DataFrame,
) -> Vec<(i64, i64, f64, Option<f64>)> {
    let Ok((spec, _)) = forecast_of(job) else {
        return Vec::new();
    };
    match evaluate(job, wh, Range::recent(spec, as_of), Some(actuals)).await {
        Ok(e) => accuracy::by_horizon(&e.groups),
        Err(e) => {
            tracing::warn!(error = %e, "could not record realized accuracy (the forecasts are published); `prescore evaluate` can redo it");
            Vec::new()
        }
    }
}
