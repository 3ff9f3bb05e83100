//! The run ledger, `prescore_runs`: one row per run, written `running` at the start and
//! finished as `succeeded` inside the publish transaction (so the ledger never claims a publish
//! that did not commit), or as `failed`, `gated` or `abandoned` otherwise.

use chrono::{DateTime, Utc};

use crate::warehouse::{Tx, Value, Warehouse, WarehouseError};

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Running,
    Succeeded,
    Failed,
    Gated,
    Abandoned,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Gated => "gated",
            Status::Abandoned => "abandoned",
        }
    }
}

/// What a run did, recorded with its final status.
#[derive(Debug, Clone, Default)]
pub struct RunStats {
    pub rows_read: Option<i64>,
    pub rows_scored: Option<i64>,
    pub rows_written: Option<i64>,
    pub model_version: Option<i64>,
    /// Seconds per stage, in pipeline order of first appearance.
    pub stage_seconds: Vec<(String, f64)>,
}

impl RunStats {
    fn timings_json(&self) -> String {
        let map: serde_json::Map<String, serde_json::Value> = self
            .stage_seconds
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::json!((v * 1000.0).round() / 1000.0)))
            .collect();
        serde_json::Value::Object(map).to_string()
    }

    fn values(&self) -> [Value; 5] {
        [
            Value::Int(self.rows_read),
            Value::Int(self.rows_scored),
            Value::Int(self.rows_written),
            Value::Int(self.model_version),
            Value::text(self.timings_json()),
        ]
    }
}

/// Records a `running` row.
pub async fn start(
    wh: &Warehouse,
    run_id: &str,
    job: &str,
    shard: &str,
    command: &str,
    as_of: DateTime<Utc>,
) -> Result<(), WarehouseError> {
    wh.execute(
        "INSERT INTO prescore_runs (run_id, job, shard, command, as_of, status, started_at, holder) \
         VALUES ($1, $2, $3, $4, $5, 'running', $6, $7)",
        &[
            Value::text(run_id),
            Value::text(job),
            Value::text(shard),
            Value::text(command),
            Value::Ts(Some(as_of)),
            Value::Ts(Some(Utc::now())),
            Value::text(crate::warehouse::holder_id()),
        ],
    )
    .await
    .map(|_| ())
}

/// Marks `running` rows of this job and shard as abandoned: called while holding the job
/// lock, so any such row belongs to a process that died.
pub async fn abandon_stale(
    wh: &Warehouse,
    job: &str,
    shard: &str,
    except: &str,
) -> Result<u64, WarehouseError> {
    wh.execute(
        "UPDATE prescore_runs SET status = 'abandoned', finished_at = $1, \
         error = 'the process ended without finishing this run (killed or crashed); nothing of it was published' \
         WHERE job = $2 AND shard = $3 AND status = 'running' AND run_id <> $4",
        &[
            Value::Ts(Some(Utc::now())),
            Value::text(job),
            Value::text(shard),
            Value::text(except),
        ],
    )
    .await
}

/// Sets the final status inside the publish transaction.
pub async fn finish_in(
    tx: &mut Tx,
    run_id: &str,
    status: Status,
    stats: &RunStats,
) -> Result<(), WarehouseError> {
    let [a, b, c, d, e] = stats.values();
    tx.execute(
        "UPDATE prescore_runs SET status = $1, finished_at = $2, rows_read = $3, rows_scored = $4, \
         rows_written = $5, model_version = $6, stage_seconds = $7 WHERE run_id = $8",
        &[
            Value::text(status.as_str()),
            Value::Ts(Some(Utc::now())),
            a,
            b,
            c,
            d,
            e,
            Value::text(run_id),
        ],
    )
    .await
    .map(|_| ())
}

/// Marks a run a signal interrupted as failed, unless it already finished (a publish that
/// committed first stays `succeeded`). Returns whether the run was still running.
pub async fn interrupt(wh: &Warehouse, run_id: &str, signal: &str) -> Result<bool, WarehouseError> {
    wh.execute(
        "UPDATE prescore_runs SET status = $1, finished_at = $2, error = $3 \
         WHERE run_id = $4 AND status = $5",
        &[
            Value::text(Status::Failed.as_str()),
            Value::Ts(Some(Utc::now())),
            Value::text(format!("interrupted by {signal}")),
            Value::text(run_id),
            Value::text(Status::Running.as_str()),
        ],
    )
    .await
    .map(|n| n > 0)
}

/// Sets a final status outside any transaction, with the error text for failures.
pub async fn finish(
    wh: &Warehouse,
    run_id: &str,
    status: Status,
    stats: &RunStats,
    error: Option<&str>,
) -> Result<(), WarehouseError> {
    let [a, b, c, d, e] = stats.values();
    wh.execute(
        "UPDATE prescore_runs SET status = $1, finished_at = $2, rows_read = $3, rows_scored = $4, \
         rows_written = $5, model_version = $6, stage_seconds = $7, error = $8 WHERE run_id = $9",
        &[
            Value::text(status.as_str()),
            Value::Ts(Some(Utc::now())),
            a,
            b,
            c,
            d,
            e,
            Value::Text(error.map(str::to_string)),
            Value::text(run_id),
        ],
    )
    .await
    .map(|_| ())
}

/// Entities scored by the last successful run of this job and shard, for the drop guard.
pub async fn last_scored(
    wh: &Warehouse,
    job: &str,
    shard: &str,
) -> Result<Option<i64>, WarehouseError> {
    let rows = wh
        .fetch(
            "SELECT rows_scored FROM prescore_runs WHERE job = $1 AND shard = $2 \
             AND status = 'succeeded' AND rows_scored IS NOT NULL ORDER BY started_at DESC LIMIT 1",
            &[Value::text(job), Value::text(shard)],
        )
        .await?;
    Ok(rows.first().and_then(|r| r[0].as_i64()))
}

/// The ledger columns `prescore runs` reads, in order.
pub const COLUMNS: &[&str] = &[
    "run_id",
    "job",
    "shard",
    "command",
    "status",
    "as_of",
    "started_at",
    "finished_at",
    "rows_read",
    "rows_scored",
    "rows_written",
    "model_version",
    "stage_seconds",
    "error",
];

/// The most recent runs, newest first.
pub async fn recent(
    wh: &Warehouse,
    job: Option<&str>,
    limit: i64,
) -> Result<Vec<Vec<Value>>, WarehouseError> {
    let cols = COLUMNS.join(", ");
    wh.fetch(
        &format!(
            "SELECT {cols} FROM prescore_runs WHERE ($1 IS NULL OR job = $1) \
             ORDER BY started_at DESC LIMIT $2"
        ),
        &[
            Value::Text(job.map(str::to_string)),
            Value::Int(Some(limit)),
        ],
    )
    .await
}
