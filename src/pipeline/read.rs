//! Stage 1, read: runs one of the job's SQL files with `:as_of` bound and decodes the declared
//! columns into a polars frame, retrying transient warehouse errors with back-off. Reading the
//! past (`--as-of`) is the same code path, which is what makes backfills safe.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use polars::prelude::DataFrame;

use super::Shard;
use crate::config::{ColumnType, Job, Sql};
use crate::warehouse::{retry, Value, Warehouse, WarehouseError};

/// The values bound to a job's named parameters.
pub fn params(as_of: DateTime<Utc>, shard: Shard) -> BTreeMap<&'static str, Value> {
    BTreeMap::from([
        ("as_of", Value::Ts(Some(as_of))),
        ("shard_index", Value::Int(Some(i64::from(shard.index)))),
        ("shard_count", Value::Int(Some(i64::from(shard.count)))),
    ])
}

/// Reads one of the job's SQL files, expecting the columns of `contract`.
#[tracing::instrument(skip_all, fields(what))]
pub async fn read(
    job: &Job,
    wh: &Warehouse,
    sql: &Sql,
    what: &str,
    contract: &BTreeMap<String, ColumnType>,
    as_of: DateTime<Utc>,
    shard: Shard,
) -> Result<DataFrame, WarehouseError> {
    tracing::info!("running {what}");
    let df = fetch(job, wh, sql, what, contract, as_of, shard).await?;
    tracing::info!(rows = df.height(), columns = df.width(), "read {what}");
    Ok(df)
}

/// [`read`] without its log lines, for SQL run many times (the labels of each issue time).
pub async fn fetch(
    job: &Job,
    wh: &Warehouse,
    sql: &Sql,
    what: &str,
    contract: &BTreeMap<String, ColumnType>,
    as_of: DateTime<Utc>,
    shard: Shard,
) -> Result<DataFrame, WarehouseError> {
    let params = params(as_of, shard);
    let file = sql.path.display().to_string();
    retry(what, job.retry_attempts, job.retry_backoff, || {
        wh.read_frame(&sql.text, &file, &params, contract)
    })
    .await
    .map_err(|e| {
        let l = job.limits;
        e.waited_on(&format!("the job's SQL {file}"), l.lock, l.statement)
    })
}

/// Reads the job's training (forecast: history) SQL with every declared column: what a
/// forecast run builds its series from and what the realized accuracy takes its actuals from.
pub async fn history(
    job: &Job,
    wh: &Warehouse,
    what: &str,
    as_of: DateTime<Utc>,
    shard: Shard,
) -> Result<DataFrame, WarehouseError> {
    let sql = &job.input.train_sql;
    read(job, wh, sql, what, &job.input.columns, as_of, shard).await
}

/// The columns the scoring SQL must return: the contract without the target and time.
pub fn scoring_contract(job: &Job) -> BTreeMap<String, ColumnType> {
    job.input
        .columns
        .iter()
        .filter(|(name, _)| {
            name.as_str() != job.input.target.as_str()
                && Some(name.as_str()) != job.kind.time().map(|t| t.as_str())
        })
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

/// The columns a score job's labels SQL must return: the key and the target.
pub fn labels_contract(job: &Job) -> BTreeMap<String, ColumnType> {
    [job.input.key.as_str(), job.input.target.as_str()]
        .into_iter()
        .map(|c| (c.to_string(), job.input.columns[c]))
        .collect()
}
