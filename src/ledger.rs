//! The run ledger, `prescore_runs`: one row per run, written `running` at the start and
//! finished as `succeeded` inside the publish transaction (so the ledger never claims a publish
//! that did not commit), or as `failed`, `gated` or `abandoned` otherwise.

use chrono::{DateTime, Utc};

use crate::pipeline::Shard;
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

/// When the job's latest successful run finished, if it ever succeeded.
pub async fn last_success(
    wh: &Warehouse,
    job: &str,
) -> Result<Option<DateTime<Utc>>, WarehouseError> {
    let rows = wh
        .fetch(
            "SELECT MAX(finished_at) FROM prescore_runs WHERE job = $1 AND status = 'succeeded'",
            &[Value::text(job)],
        )
        .await?;
    Ok(rows.first().and_then(|r| r[0].as_ts()))
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

/// Sets a final status outside any transaction, with the error text for failures. Only a row
/// still `running` changes: a run stopped by its deadline just as its publish committed stays
/// `succeeded`. A row another run marked `abandoned` when it took the job over (this run had
/// stalled past its lease) gets this run's real end: it can only fail, its lock is gone.
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
         rows_written = $5, model_version = $6, stage_seconds = $7, error = $8 \
         WHERE run_id = $9 AND status IN ('running', 'abandoned')",
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

/// The group of a run that was not given one: its as-of time, which the shards of one
/// scheduled run share when they are given the same `--as-of`.
pub fn group_of(as_of: DateTime<Utc>) -> String {
    as_of.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Records that `run_id` is shard `shard` of the logical run `group`.
pub async fn join_group(
    wh: &Warehouse,
    run_id: &str,
    job: &str,
    group: &str,
    shard: Shard,
) -> Result<(), WarehouseError> {
    wh.execute(
        "INSERT INTO prescore_run_groups (run_id, job, run_group, shard_index, shard_count) \
         VALUES ($1, $2, $3, $4, $5)",
        &[
            Value::text(run_id),
            Value::text(job),
            Value::text(group),
            Value::Int(Some(i64::from(shard.index))),
            Value::Int(Some(i64::from(shard.count))),
        ],
    )
    .await
    .map(|_| ())
}

/// The latest run of each shard of one logical run.
#[derive(Debug, Clone)]
pub struct GroupStatus {
    pub group: String,
    /// How many shards the group has (as its latest runs were started).
    pub count: u32,
    /// Per shard index that ran: its latest run id, status and error.
    pub shards: Vec<(u32, String, String, Option<String>)>,
}

impl GroupStatus {
    pub fn succeeded(&self) -> usize {
        self.shards.iter().filter(|s| s.2 == "succeeded").count()
    }

    /// Every shard ran, and each one's latest run succeeded.
    pub fn complete(&self) -> bool {
        self.succeeded() == self.count as usize
    }

    /// "3 of 4 shards succeeded (shard 2/4 failed: …; shard 3/4 never ran)".
    pub fn summary(&self) -> String {
        let mut problems: Vec<String> = Vec::new();
        for i in 0..self.count {
            match self.shards.iter().find(|s| s.0 == i) {
                None => problems.push(format!("shard {i}/{} never ran", self.count)),
                Some((_, run, status, error)) if status != "succeeded" => problems.push(format!(
                    "shard {i}/{} {status} (run {run}{})",
                    self.count,
                    error
                        .as_deref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                )),
                Some(_) => {}
            }
        }
        let head = format!("{} of {} shards succeeded", self.succeeded(), self.count);
        match problems.is_empty() {
            true => head,
            false => format!("{head} ({})", problems.join("; ")),
        }
    }
}

/// The status of `job`'s logical run `group`, or None when no run of it was recorded.
pub async fn group_status(
    wh: &Warehouse,
    job: &str,
    group: &str,
) -> Result<Option<GroupStatus>, WarehouseError> {
    let rows = wh
        .fetch(
            "SELECT g.shard_index, g.shard_count, r.run_id, r.status, r.error \
             FROM prescore_run_groups g JOIN prescore_runs r ON r.run_id = g.run_id \
             WHERE g.job = $1 AND g.run_group = $2 ORDER BY r.started_at, r.run_id",
            &[Value::text(job), Value::text(group)],
        )
        .await?;
    let mut status = GroupStatus {
        group: group.to_string(),
        count: 0,
        shards: Vec::new(),
    };
    for r in rows {
        let index = r[0].as_i64().unwrap_or(0) as u32;
        status.count = r[1].as_i64().unwrap_or(1) as u32;
        let run = (
            index,
            r[2].display(),
            r[3].display(),
            r[4].as_str().map(str::to_string),
        );
        // Later runs of a shard replace earlier ones (a retried shard).
        status.shards.retain(|s| s.0 != index);
        status.shards.push(run);
    }
    status.shards.sort_by_key(|s| s.0);
    Ok((!status.shards.is_empty()).then_some(status))
}

/// The sharded groups among `runs` (run ids), newest first, with their status.
pub async fn groups_of(
    wh: &Warehouse,
    job: &str,
    runs: &[String],
) -> Result<Vec<GroupStatus>, WarehouseError> {
    let rows = wh
        .fetch(
            "SELECT run_id, run_group, shard_count FROM prescore_run_groups WHERE job = $1",
            &[Value::text(job)],
        )
        .await?;
    let mut groups: Vec<String> = Vec::new();
    for run in runs {
        let found = rows
            .iter()
            .find(|r| r[0].as_str() == Some(run.as_str()) && r[2].as_i64().unwrap_or(1) > 1);
        if let Some(g) = found.and_then(|r| r[1].as_str()) {
            if !groups.iter().any(|x| x == g) {
                groups.push(g.to_string());
            }
        }
    }
    let mut out = Vec::new();
    for g in groups {
        if let Some(s) = group_status(wh, job, &g).await? {
            out.push(s);
        }
    }
    Ok(out)
}
