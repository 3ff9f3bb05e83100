//! Realized accuracy of score jobs, the stage: for a range of issue days, reads the scores the
//! job issued from its `<table>_history`, and for each time they were issued runs the job's
//! `input.labels_sql` bound to that time (`:as_of`), which returns the labels that have
//! arrived for the entities scored then. The figures ([`labels`]) replace the job's rows of
//! each issue day that has labels in `prescore_label_accuracy` and `prescore_calibration`, in
//! one short transaction of its own; a day whose labels have not arrived keeps what was
//! recorded before (nothing, at first). A score run evaluates the issue days of
//! `input.labels_window` after its publish has committed; a failure there is logged and never
//! undoes the publish.
//!
//! [`labels`]: super::labels

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use polars::prelude::*;

use super::evaluate::{history_table, EvaluateError, Range};
use super::labels::{self, Group, Labels};
use crate::config::{ColumnType, Job};
use crate::pipeline::{read, Shard};
use crate::warehouse::frame::micros_to_utc;
use crate::warehouse::ident::Ident;
use crate::warehouse::{Guard, Value, Warehouse, WarehouseError, WriteMode};

/// What an evaluation found and wrote.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub groups: Vec<Group>,
    /// Issued scores in the range, and how many of them have a label.
    pub issued: usize,
    pub matched: i64,
    /// Times scores were issued in the range (one labels query each).
    pub issue_times: usize,
}

/// Evaluates a score job's issued scores over `range` (issue days) against their labels.
#[tracing::instrument(skip_all, fields(job = %job.name, from = %range.from.date_naive(), to = %range.to.date_naive()))]
pub async fn evaluate(
    job: &Job,
    wh: &Warehouse,
    range: Range,
) -> Result<Evaluation, EvaluateError> {
    let Some(spec) = &job.input.labels else {
        return Err(EvaluateError::NoLabels {
            job: job.name.clone(),
        });
    };
    let history = history_table(job)?;
    if wh.table_columns(&history).await?.is_empty() {
        return Err(EvaluateError::NoTable {
            table: history.to_string(),
        });
    }
    let issued = read_issued(job, wh, &history, range).await?;
    let frame = |what| move |source| EvaluateError::Frame { what, source };
    let times: BTreeSet<i64> =
        super::accuracy::micros(issued.column("as_of").map_err(frame("the issued scores"))?)
            .map_err(frame("the issued scores"))?
            .into_iter()
            .flatten()
            .collect();
    let (key, target) = (job.input.key.as_str(), job.input.target.as_str());
    let contract = read::labels_contract(job);
    let mut found = Labels::default();
    for &t in &times {
        let df = read::fetch(
            job,
            wh,
            &spec.sql,
            "the labels SQL",
            &contract,
            micros_to_utc(t),
            Shard::ALL,
        )
        .await?;
        let n = found.add(t, &df, key, target, job.model.task)?;
        tracing::debug!(as_of = %micros_to_utc(t), labels = n, "read the labels of issued scores");
    }
    let groups = labels::compute(&issued, key, &found, job.model.task)
        .map_err(frame("the issued scores"))?;
    let matched = groups.iter().map(|g| g.n).sum();
    write(job, wh, &groups).await?;
    let e = Evaluation {
        groups,
        issued: issued.height(),
        matched,
        issue_times: times.len(),
    };
    tracing::info!(
        issued = e.issued,
        issue_times = e.issue_times,
        labels = found.len(),
        matched,
        days = e.groups.len(),
        "recorded realized label accuracy"
    );
    Ok(e)
}

/// The scores issued in the range (by their as_of), known at its as-of time.
async fn read_issued(
    job: &Job,
    wh: &Warehouse,
    history: &Ident,
    range: Range,
) -> Result<DataFrame, WarehouseError> {
    let key = &job.input.key;
    let sql = format!(
        "SELECT {}, score, model_version, as_of FROM {} \
         WHERE as_of >= :from AND as_of < :to AND as_of <= :as_of",
        key.quoted(),
        history.quoted()
    );
    let params = range.params();
    let contract = BTreeMap::from([
        (key.to_string(), job.input.columns[key.as_str()]),
        ("score".to_string(), ColumnType::Float),
        ("model_version".to_string(), ColumnType::Int),
        ("as_of".to_string(), ColumnType::Timestamp),
    ]);
    let file = format!("the history table {history}");
    wh.read_frame(&sql, &file, &params, &contract).await
}

/// Replaces the job's rows of each issue day that has labels, in one transaction.
async fn write(job: &Job, wh: &Warehouse, groups: &[Group]) -> Result<(), EvaluateError> {
    if groups.is_empty() {
        return Ok(());
    }
    let frame = |what| move |source| EvaluateError::Frame { what, source };
    let figures = figures_frame(&job.name, groups).map_err(frame("the label accuracy rows"))?;
    let deciles = deciles_frame(&job.name, groups).map_err(frame("the calibration rows"))?;
    let days: BTreeSet<i64> = groups.iter().map(|g| g.day_us).collect();
    let mut tx = wh.begin().await?;
    for table in ["prescore_label_accuracy", "prescore_calibration"] {
        for &day in &days {
            tx.execute(
                &format!("DELETE FROM {table} WHERE job = $1 AND day = $2"),
                &[
                    Value::text(job.name.as_str()),
                    Value::Ts(Some(micros_to_utc(day))),
                ],
            )
            .await?;
        }
    }
    // Other jobs (and a concurrent `evaluate`) may write the tables at the same time.
    let guard = Guard {
        newer_by: None,
        concurrent: true,
    };
    let table = Ident::new("prescore_label_accuracy").expect("a valid name");
    let key = ["job", "model_version", "day"];
    tx.write_with(&table, &key, &figures, WriteMode::Upsert, guard)
        .await?;
    let table = Ident::new("prescore_calibration").expect("a valid name");
    let key = ["job", "model_version", "day", "decile"];
    tx.write_with(&table, &key, &deciles, WriteMode::Upsert, guard)
        .await?;
    tx.commit().await?;
    Ok(())
}

fn ts(name: &str, v: Vec<i64>) -> Column {
    Int64Chunked::from_vec(name.into(), v)
        .into_datetime(TimeUnit::Microseconds, Some(polars::prelude::TimeZone::UTC))
        .into_column()
}

fn figures_frame(job: &str, groups: &[Group]) -> PolarsResult<DataFrame> {
    let n = groups.len();
    let ints = |name: &str, f: fn(&Group) -> i64| {
        Column::new(name.into(), groups.iter().map(f).collect::<Vec<_>>())
    };
    let floats = |name: &str, f: fn(&Group) -> Option<f64>| {
        Column::new(name.into(), groups.iter().map(f).collect::<Vec<_>>())
    };
    DataFrame::new(
        n,
        vec![
            StringChunked::full("job".into(), job, n).into_column(),
            ints("model_version", |g| g.model_version),
            ts("day", groups.iter().map(|g| g.day_us).collect()),
            ints("n", |g| g.n),
            floats("mean_score", |g| Some(g.mean_score)),
            floats("positive_rate", |g| g.positive_rate),
            floats("auc", |g| g.auc),
            floats("log_loss", |g| g.log_loss),
            floats("brier", |g| g.brier),
            floats("mae", |g| g.mae),
            floats("rmse", |g| g.rmse),
            floats("bias", |g| g.bias),
            ts("evaluated_at", vec![Utc::now().timestamp_micros(); n]),
        ],
    )
}

fn deciles_frame(job: &str, groups: &[Group]) -> PolarsResult<DataFrame> {
    let rows: Vec<(&Group, &labels::Decile)> = groups
        .iter()
        .flat_map(|g| g.deciles.iter().map(move |d| (g, d)))
        .collect();
    let n = rows.len();
    DataFrame::new(
        n,
        vec![
            StringChunked::full("job".into(), job, n).into_column(),
            Column::new(
                "model_version".into(),
                rows.iter()
                    .map(|(g, _)| g.model_version)
                    .collect::<Vec<_>>(),
            ),
            ts("day", rows.iter().map(|(g, _)| g.day_us).collect()),
            Column::new(
                "decile".into(),
                rows.iter().map(|(_, d)| d.decile).collect::<Vec<_>>(),
            ),
            Column::new(
                "n".into(),
                rows.iter().map(|(_, d)| d.n).collect::<Vec<_>>(),
            ),
            Column::new(
                "mean_score".into(),
                rows.iter().map(|(_, d)| d.mean_score).collect::<Vec<_>>(),
            ),
            Column::new(
                "mean_label".into(),
                rows.iter().map(|(_, d)| d.mean_label).collect::<Vec<_>>(),
            ),
        ],
    )
}

/// What a score run evaluates: the issue days of `input.labels_window` up to its as-of time.
pub fn recent(window: std::time::Duration, as_of: DateTime<Utc>) -> Range {
    let back = Duration::from_std(window).unwrap_or(Duration::days(35));
    Range::days((as_of - back).date_naive(), as_of.date_naive(), as_of)
}

/// A score run's own evaluation, after its publish committed. Nothing happens for a job
/// without `input.labels_sql`; a failure is logged, and `prescore evaluate` can redo it.
pub async fn after_run(job: &Job, wh: &Warehouse, as_of: DateTime<Utc>) -> Option<Evaluation> {
    let spec = job.input.labels.as_ref()?;
    match evaluate(job, wh, recent(spec.window, as_of)).await {
        Ok(e) => Some(e),
        Err(e) => {
            tracing::warn!(error = %e, "could not record realized label accuracy (the scores are published); `prescore evaluate` can redo it");
            None
        }
    }
}
