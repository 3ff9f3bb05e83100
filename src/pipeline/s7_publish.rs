//! Stage 7, publish: one transaction writes the predictions into the results table, promotes
//! the model if the gate passed, records the run's metrics and marks the ledger row
//! `succeeded`. Until the commit, readers see the previous predictions exactly as they were
//! (with `write = "replace"` on PostgreSQL they wait for the commit instead); a crash anywhere
//! before it changes nothing.

use polars::prelude::DataFrame;

use crate::ledger::{self, RunStats, Status};
use crate::registry;
use crate::warehouse::ident::Ident;
use crate::warehouse::{ColumnDef, Value, Warehouse, WarehouseError, WriteMode};

/// Everything one publish writes.
pub struct Publication<'a> {
    pub job: &'a str,
    pub run_id: &'a str,
    pub table: &'a Ident,
    pub columns: Vec<ColumnDef>,
    pub key: Vec<&'a str>,
    pub frame: DataFrame,
    pub write: WriteMode,
    /// Promote this model version in the same transaction.
    pub promote: Option<(i64, String)>,
    /// Run metrics for `prescore_metrics`: (name, labels, value).
    pub metrics: Vec<(String, String, f64)>,
}

/// Writes a publication atomically; returns the rows upserted.
#[tracing::instrument(skip_all, fields(table = %p.table, rows = p.frame.height()))]
pub async fn publish(
    wh: &Warehouse,
    p: Publication<'_>,
    stats: &mut RunStats,
) -> Result<u64, WarehouseError> {
    wh.ensure_table(p.table, &p.columns, &p.key, p.write == WriteMode::Upsert)
        .await?;
    let mut tx = wh.begin().await?;
    let written = tx.write(p.table, &p.key, &p.frame, p.write).await?;
    crate::fault::pause("commit");
    if let Some((version, reason)) = &p.promote {
        registry::promote_in(&mut tx, p.job, *version, reason).await?;
    }
    for (name, labels, value) in &p.metrics {
        tx.execute(
            "INSERT INTO prescore_metrics (run_id, job, name, labels, value) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (run_id, name, labels) DO UPDATE SET value = excluded.value",
            &[
                Value::text(p.run_id),
                Value::text(p.job),
                Value::text(name.as_str()),
                Value::text(labels.as_str()),
                Value::Float(Some(*value)),
            ],
        )
        .await?;
    }
    stats.rows_written = Some(written as i64);
    ledger::finish_in(&mut tx, p.run_id, Status::Succeeded, stats).await?;
    tx.commit().await?;
    tracing::info!(rows = written, "published");
    Ok(written)
}
