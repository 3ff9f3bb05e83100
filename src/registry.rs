//! The model registry, `prescore_models`: every trained model with its params, feature schema
//! and hash, training window, holdout metrics next to its baseline's, importances, serialized
//! artifact, and a status (candidate, champion, retired, rejected) with when and why it last
//! changed. A partial unique index keeps at most one champion per job. Every change is also
//! appended to `prescore_model_events` (see [`events`]) in the same transaction.
//! `registry.keep` prunes the artifacts of old versions that never served ([`prune_in`]), and
//! candidates left behind by runs that never finished are rejected ([`reject_orphans`]).

pub mod events;

pub use events::{Actor, Event};

use chrono::{DateTime, Utc};

use crate::model::metrics::Metrics;
use crate::warehouse::{Tx, Value, Warehouse, WarehouseError};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Warehouse(#[from] WarehouseError),
    #[error("job {job} has no model version {version}")]
    NoSuchVersion { job: String, version: i64 },
    #[error("job {job} has no champion model yet: train one first with `prescore train` (or an unsharded `prescore run`); sharded runs only load the champion")]
    NoChampion { job: String },
    #[error("model {job} v{version} cannot serve: its artifact was pruned (registry.keep keeps the last versions and every champion); train a new one")]
    Pruned { job: String, version: i64 },
    #[error("job {job} had no champion at {as_of}: its first model was promoted as of {first} (v{version}). A backfill serves the model that was champion then; to score that time, train a model as of it (`prescore run --as-of` with model.retrain = \"always\")")]
    NoChampionAt {
        job: String,
        as_of: String,
        first: String,
        version: i64,
    },
    #[error("job {job} has no earlier model to roll back to")]
    NothingToRollBack { job: String },
    #[error("model {job} v{version} is {status}; only a candidate, retired or rejected model can be promoted")]
    CannotPromote {
        job: String,
        version: i64,
        status: String,
    },
}

/// A model as stored (the artifact only when asked for).
#[derive(Debug, Clone)]
pub struct StoredModel {
    pub version: i64,
    pub algorithm: String,
    pub task: String,
    pub params: String,
    pub features: String,
    pub feature_hash: String,
    pub trained_at: Option<DateTime<Utc>>,
    pub as_of: Option<DateTime<Utc>>,
    pub rows_train: i64,
    pub rows_holdout: i64,
    pub metrics: Metrics,
    pub baseline: Metrics,
    pub importances: Option<String>,
    pub status: String,
    pub status_reason: Option<String>,
    pub status_changed_at: Option<DateTime<Utc>>,
    /// The artifact was dropped by `registry.keep`: the row is metadata only.
    pub pruned: bool,
    pub artifact: Option<Vec<u8>>,
}

/// A freshly trained model, to be registered as a candidate: every field serialized already.
#[derive(Debug, Clone)]
pub struct ModelRecord {
    pub algorithm: String,
    pub task: String,
    pub params: String,
    pub features: String,
    pub feature_hash: String,
    pub train_from: Option<DateTime<Utc>>,
    pub train_to: Option<DateTime<Utc>>,
    pub rows_train: i64,
    pub rows_holdout: i64,
    pub metrics: Metrics,
    pub baseline: Metrics,
    pub importances: Option<String>,
    pub artifact: Vec<u8>,
}

const SUMMARY: &str = "version, algorithm, task, params, features, feature_hash, trained_at, as_of, \
    rows_train, rows_holdout, metrics, baseline, importances, status, status_reason, status_changed_at, \
    length(artifact)";

fn parse(row: Vec<Value>, with_artifact: bool) -> StoredModel {
    let mut it = row.into_iter();
    let mut next = || it.next().unwrap_or(Value::Text(None));
    let metrics = |v: Value| {
        v.as_str()
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default()
    };
    let text = |v: Value| v.as_str().unwrap_or_default().to_string();
    let mut m = StoredModel {
        version: next().as_i64().unwrap_or_default(),
        algorithm: text(next()),
        task: text(next()),
        params: text(next()),
        features: text(next()),
        feature_hash: text(next()),
        trained_at: next().as_ts(),
        as_of: next().as_ts(),
        rows_train: next().as_i64().unwrap_or_default(),
        rows_holdout: next().as_i64().unwrap_or_default(),
        metrics: metrics(next()),
        baseline: metrics(next()),
        importances: next().as_str().map(str::to_string),
        status: text(next()),
        status_reason: next().as_str().map(str::to_string),
        status_changed_at: next().as_ts(),
        pruned: next().as_i64() == Some(0),
        artifact: None,
    };
    if with_artifact {
        m.artifact = next().into_bytes();
    }
    m
}

/// Registers a candidate and returns its version, with its `trained` event. Callers hold the
/// job lock, so versions do not race.
pub async fn insert_candidate(
    wh: &Warehouse,
    job: &str,
    by: Actor<'_>,
    as_of: DateTime<Utc>,
    m: &ModelRecord,
) -> Result<i64, WarehouseError> {
    let mut tx = wh.begin().await?;
    let next = tx
        .fetch(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM prescore_models WHERE job = $1",
            &[Value::text(job)],
        )
        .await?;
    let version = next.first().and_then(|r| r[0].as_i64()).unwrap_or(1);
    let now = Utc::now();
    tx.execute(
        "INSERT INTO prescore_models (job, version, algorithm, task, params, features, feature_hash, \
         trained_at, as_of, train_from, train_to, rows_train, rows_holdout, metrics, baseline, \
         importances, artifact, status, status_reason, status_changed_at, run_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
         'candidate', 'trained', $18, $19)",
        &[
            Value::text(job),
            Value::Int(Some(version)),
            Value::text(&m.algorithm),
            Value::text(&m.task),
            Value::text(&m.params),
            Value::text(&m.features),
            Value::text(&m.feature_hash),
            Value::Ts(Some(now)),
            Value::Ts(Some(as_of)),
            Value::Ts(m.train_from),
            Value::Ts(m.train_to),
            Value::Int(Some(m.rows_train)),
            Value::Int(Some(m.rows_holdout)),
            Value::text(metrics_json(&m.metrics)),
            Value::text(metrics_json(&m.baseline)),
            Value::Text(m.importances.clone()),
            Value::Bytes(Some(m.artifact.clone())),
            Value::Ts(Some(now)),
            Value::Text(by.run_id.map(str::to_string)),
        ],
    )
    .await?;
    let reason = format!("{} on {} rows", m.algorithm, m.rows_train);
    events::record(&mut tx, job, version, Event::Trained, &reason, by).await?;
    tx.commit().await?;
    Ok(version)
}

/// A metrics map as JSON. Maps of names to numbers always serialize (NaN becomes null).
fn metrics_json(m: &Metrics) -> String {
    serde_json::to_string(m).expect("a map of names to numbers serializes")
}

/// The serving model, with its artifact.
pub async fn champion(wh: &Warehouse, job: &str) -> Result<Option<StoredModel>, WarehouseError> {
    let rows = wh
        .fetch(
            &format!("SELECT {SUMMARY}, artifact FROM prescore_models WHERE job = $1 AND status = 'champion'"),
            &[Value::text(job)],
        )
        .await?;
    Ok(rows.into_iter().next().map(|r| parse(r, true)))
}

/// The model that was champion at `as_of`, with its artifact: the one promoted last (or
/// rolled back to) by then, by the model history ([`events::serving_at`]), which for a run at
/// the present is the champion and for a backfill the model that served at its as_of. A
/// registry without a history (written before it existed) serves its champion. Refuses a time
/// before any model was promoted: no model existed then that had not seen its future.
pub async fn champion_at(
    wh: &Warehouse,
    job: &str,
    as_of: DateTime<Utc>,
) -> Result<StoredModel, RegistryError> {
    let changes = events::changes(wh, job).await?;
    if changes.is_empty() {
        let none = || RegistryError::NoChampion { job: job.into() };
        return champion(wh, job).await?.ok_or_else(none);
    }
    let Some(version) = events::serving_at(&changes, as_of) else {
        let first = changes
            .iter()
            .min_by_key(|c| c.effective)
            .expect("not empty");
        return Err(RegistryError::NoChampionAt {
            job: job.into(),
            as_of: as_of.to_rfc3339(),
            first: first.effective.to_rfc3339(),
            version: first.version,
        });
    };
    let rows = wh
        .fetch(
            &format!(
                "SELECT {SUMMARY}, artifact FROM prescore_models WHERE job = $1 AND version = $2"
            ),
            &[Value::text(job), Value::Int(Some(version))],
        )
        .await?;
    let m =
        rows.into_iter()
            .next()
            .map(|r| parse(r, true))
            .ok_or(RegistryError::NoSuchVersion {
                job: job.into(),
                version,
            })?;
    if m.pruned {
        return Err(RegistryError::Pruned {
            job: job.into(),
            version,
        });
    }
    Ok(m)
}

pub async fn get(wh: &Warehouse, job: &str, version: i64) -> Result<StoredModel, RegistryError> {
    let rows = wh
        .fetch(
            &format!("SELECT {SUMMARY} FROM prescore_models WHERE job = $1 AND version = $2"),
            &[Value::text(job), Value::Int(Some(version))],
        )
        .await?;
    rows.into_iter()
        .next()
        .map(|r| parse(r, false))
        .ok_or(RegistryError::NoSuchVersion {
            job: job.into(),
            version,
        })
}

/// Every model of a job, newest first, without artifacts.
pub async fn list(wh: &Warehouse, job: &str) -> Result<Vec<StoredModel>, WarehouseError> {
    let rows = wh
        .fetch(
            &format!("SELECT {SUMMARY} FROM prescore_models WHERE job = $1 ORDER BY version DESC"),
            &[Value::text(job)],
        )
        .await?;
    Ok(rows.into_iter().map(|r| parse(r, false)).collect())
}

/// Sets a model's status and reason without an event (a candidate that passed the gate and
/// waits for a person).
pub async fn set_status(
    wh: &Warehouse,
    job: &str,
    version: i64,
    status: &str,
    reason: &str,
) -> Result<(), WarehouseError> {
    let mut tx = wh.begin().await?;
    set_status_in(&mut tx, job, version, status, reason).await?;
    tx.commit().await
}

async fn set_status_in(
    tx: &mut Tx,
    job: &str,
    version: i64,
    status: &str,
    reason: &str,
) -> Result<(), WarehouseError> {
    tx.execute(
        "UPDATE prescore_models SET status = $1, status_reason = $2, status_changed_at = $3 \
         WHERE job = $4 AND version = $5",
        &[
            Value::text(status),
            Value::text(reason),
            Value::Ts(Some(Utc::now())),
            Value::text(job),
            Value::Int(Some(version)),
        ],
    )
    .await
    .map(|_| ())
}

/// Marks a candidate rejected by the gate, with its `rejected` event.
pub async fn reject(
    wh: &Warehouse,
    job: &str,
    version: i64,
    reason: &str,
    by: Actor<'_>,
) -> Result<(), WarehouseError> {
    let mut tx = wh.begin().await?;
    set_status_in(&mut tx, job, version, "rejected", reason).await?;
    events::record(&mut tx, job, version, Event::Rejected, reason, by).await?;
    tx.commit().await
}

/// Makes `version` the champion and retires the previous one, inside `tx`, recording a
/// `retired` event for the one replaced and a `promoted` event for `version`.
pub async fn promote_in(
    tx: &mut Tx,
    job: &str,
    version: i64,
    reason: &str,
    by: Actor<'_>,
) -> Result<(), WarehouseError> {
    let replaced: Vec<i64> = tx
        .fetch(
            "SELECT version FROM prescore_models WHERE job = $1 AND status = 'champion' AND version <> $2",
            &[Value::text(job), Value::Int(Some(version))],
        )
        .await?
        .iter()
        .filter_map(|r| r[0].as_i64())
        .collect();
    let why = format!("replaced by v{version}");
    for old in replaced {
        set_status_in(tx, job, old, "retired", &why).await?;
        events::record(tx, job, old, Event::Retired, &why, by).await?;
    }
    set_status_in(tx, job, version, "champion", reason).await?;
    events::record(tx, job, version, Event::Promoted, reason, by).await
}

/// `prescore models promote`: a person makes a version the champion.
pub async fn promote(wh: &Warehouse, job: &str, version: i64) -> Result<(), RegistryError> {
    let m = get(wh, job, version).await?;
    if m.status == "champion" {
        return Err(RegistryError::CannotPromote {
            job: job.into(),
            version,
            status: m.status,
        });
    }
    if pruned(wh, job, version).await? {
        return Err(RegistryError::Pruned {
            job: job.into(),
            version,
        });
    }
    let mut tx = wh.begin().await?;
    promote_in(
        &mut tx,
        job,
        version,
        "promoted by hand",
        Actor::by_hand("models promote"),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// `prescore models rollback`: take the champion out of service and bring back the model that
/// served before it, as the event history tells. Returns (old, new) versions.
pub async fn rollback(wh: &Warehouse, job: &str) -> Result<(i64, i64), RegistryError> {
    let mut tx = wh.begin().await?;
    let current = tx
        .fetch(
            "SELECT version FROM prescore_models WHERE job = $1 AND status = 'champion'",
            &[Value::text(job)],
        )
        .await?
        .first()
        .and_then(|r| r[0].as_i64())
        .ok_or(RegistryError::NoChampion { job: job.into() })?;
    let previous = match events::served_before(&mut tx, job, current).await? {
        Some(v) => Some(v),
        None => legacy_previous(&mut tx, job, current).await?,
    }
    .ok_or(RegistryError::NothingToRollBack { job: job.into() })?;
    let by = Actor::by_hand("models rollback");
    let why = format!("rolled back to v{previous}");
    set_status_in(&mut tx, job, current, "retired", &why).await?;
    events::record(&mut tx, job, current, Event::RolledBack, &why, by).await?;
    promote_in(
        &mut tx,
        job,
        previous,
        &format!("rollback from v{current}"),
        by,
    )
    .await?;
    tx.commit().await?;
    Ok((current, previous))
}

/// A registry written before the event history: the newest retired version below `current`.
/// Every model retired since has its events, and the oldest model in them was never retired
/// below anything, so this finds only models older than the history.
async fn legacy_previous(
    tx: &mut Tx,
    job: &str,
    current: i64,
) -> Result<Option<i64>, WarehouseError> {
    let rows = tx
        .fetch(
            "SELECT version FROM prescore_models WHERE job = $1 AND status = 'retired' AND version < $2 \
             ORDER BY version DESC LIMIT 1",
            &[Value::text(job), Value::Int(Some(current))],
        )
        .await?;
    Ok(rows.first().and_then(|r| r[0].as_i64()))
}

/// Whether `version`'s artifact was pruned by `registry.keep`.
pub async fn pruned(wh: &Warehouse, job: &str, version: i64) -> Result<bool, WarehouseError> {
    let rows = wh
        .fetch(
            "SELECT length(artifact) FROM prescore_models WHERE job = $1 AND version = $2",
            &[Value::text(job), Value::Int(Some(version))],
        )
        .await?;
    Ok(rows.first().and_then(|r| r[0].as_i64()) == Some(0))
}

/// `registry.keep`: drops the artifacts of versions older than the job's last `keep`, except
/// every version that ever served (champion or retired now, or promoted or rolled back to in
/// the model history), inside `tx` (the publish, or a training's promotion). A pruned row
/// keeps its metadata (params, metrics, status, history) and an empty artifact. Returns how
/// many artifacts were dropped.
pub async fn prune_in(tx: &mut Tx, job: &str, keep: usize) -> Result<u64, WarehouseError> {
    let pruned = tx
        .execute(
            "UPDATE prescore_models SET artifact = $3 \
             WHERE job = $1 AND length(artifact) > 0 \
             AND version <= (SELECT MAX(version) FROM prescore_models WHERE job = $1) - $2 \
             AND status NOT IN ('champion', 'retired') \
             AND version NOT IN (SELECT version FROM prescore_model_events \
                 WHERE job = $1 AND event IN ('promoted', 'rolled_back'))",
            &[
                Value::text(job),
                Value::Int(Some(keep as i64)),
                Value::Bytes(Some(Vec::new())),
            ],
        )
        .await?;
    if pruned > 0 {
        tracing::info!(
            pruned,
            keep,
            "dropped the artifacts of old model versions (registry.keep)"
        );
    }
    Ok(pruned)
}

/// Candidates that their run left behind, never judged (the run was killed, timed out or
/// failed between training and the gate's verdict), become `rejected` with the reason, so no
/// one promotes a model whose run did not finish. Returns how many.
pub async fn reject_orphans(wh: &Warehouse, job: &str) -> Result<u64, WarehouseError> {
    let mut tx = wh.begin().await?;
    let orphans: Vec<(i64, String)> = tx
        .fetch(
            "SELECT m.version, r.run_id FROM prescore_models m JOIN prescore_runs r ON r.run_id = m.run_id \
             WHERE m.job = $1 AND m.status = 'candidate' AND m.status_reason = 'trained' \
             AND r.status IN ('abandoned', 'failed')",
            &[Value::text(job)],
        )
        .await?
        .into_iter()
        .filter_map(|r| Some((r[0].as_i64()?, r[1].as_str()?.to_string())))
        .collect();
    for (version, run_id) in &orphans {
        let why = format!("orphaned: run {run_id} ended before the gate's verdict was published");
        set_status_in(&mut tx, job, *version, "rejected", &why).await?;
        let by = Actor::run("run", run_id);
        events::record(&mut tx, job, *version, Event::Rejected, &why, by).await?;
    }
    tx.commit().await?;
    Ok(orphans.len() as u64)
}
