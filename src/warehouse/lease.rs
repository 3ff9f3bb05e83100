//! The job lock's lease and fencing token, in `prescore_leases` on both warehouses. A run
//! that takes the job lock writes a lease row: its run id, its holder (host, PID namespace,
//! PID), an expiry time a heartbeat pushes forward every third of `job.lock_lease`, and a
//! token that every takeover increments. On SQLite the row is the lock itself: a holder whose
//! lease lapsed is taken over, whatever host or PID namespace it ran in (a holder on this
//! host, in this PID namespace, whose PID is gone is taken over at once). On PostgreSQL the
//! advisory lock decides who runs and the row only fences: a server restart drops the
//! advisory lock with its session, and a second run may then take the job. Either way a run
//! proves inside its publish transaction that the row still carries its token ([`check`]),
//! and fails without publishing when another run took the job over.

use std::time::Duration;

use chrono::Utc;

use super::{Tx, Value, Warehouse, WarehouseError};

/// What a run proves at publish: that the job's lease row still carries its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub job: String,
    pub shard: String,
    pub run_id: String,
    pub token: i64,
}

/// Who holds a lock: `host:pidns:pid`, where the PID namespace tells whether the PID can be
/// checked from here.
pub fn holder_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{host}:{}:{}", pid_namespace(), std::process::id())
}

fn pid_namespace() -> String {
    std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .and_then(|p| {
            let s = p.to_string_lossy().to_string();
            s.strip_prefix("pid:[")
                .and_then(|r| r.strip_suffix(']'))
                .map(str::to_string)
        })
        .unwrap_or_else(|| "?".into())
}

/// Whether the holder is known to be gone: it ran on this host, in this PID namespace, and its
/// PID no longer exists. Any other holder (another host, another namespace, an older
/// `host:pid` id) is trusted until its lease lapses.
pub fn holder_gone(holder: &str) -> bool {
    let me = holder_id();
    let mut mine = me.rsplitn(2, ':');
    let (_, my_prefix) = (mine.next(), mine.next().unwrap_or_default());
    let mut theirs = holder.rsplitn(2, ':');
    let (pid, prefix) = (theirs.next().unwrap_or_default(), theirs.next());
    if prefix != Some(my_prefix) || my_prefix.ends_with(":?") {
        return false;
    }
    match pid.parse::<u32>() {
        Ok(pid) if pid == std::process::id() => false,
        Ok(pid) => !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        Err(_) => false,
    }
}

/// Takes the job's lease in `tx` and returns the run's fencing token. `exclusive`: the caller
/// already holds the job (PostgreSQL's advisory lock), so any row left is a dead run's.
pub(super) async fn take(
    tx: &mut Tx,
    job: &str,
    shard: &str,
    run_id: &str,
    lease: Duration,
    exclusive: bool,
) -> Result<i64, WarehouseError> {
    let now = Utc::now();
    let held = tx
        .fetch(
            "SELECT run_id, holder, token, expires_at FROM prescore_leases \
             WHERE job = $1 AND shard = $2",
            &[Value::text(job), Value::text(shard)],
        )
        .await?;
    let token = match held.first() {
        None => 1,
        Some(row) => {
            let (run, holder) = (row[0].as_str().unwrap_or_default(), row[1].as_str());
            let holder = holder.unwrap_or_default();
            let expires = row[3].as_ts();
            let live = expires.is_none_or(|e| e > now);
            if !exclusive && live && !holder_gone(holder) {
                let until = expires.map_or("?".into(), |e| e.format("%H:%M:%SZ").to_string());
                return Err(WarehouseError::Locked {
                    job: job.into(),
                    shard: shard.into(),
                    holder: format!("run {run} held by {holder}, its lease runs until {until}"),
                });
            }
            let why = if exclusive {
                "its session ended"
            } else if live {
                "its process is gone"
            } else {
                "its lease lapsed"
            };
            tracing::warn!(run, holder, why, "taking over the job lock of another run");
            row[2].as_i64().unwrap_or(0) + 1
        }
    };
    tx.execute(
        "DELETE FROM prescore_leases WHERE job = $1 AND shard = $2",
        &[Value::text(job), Value::text(shard)],
    )
    .await?;
    tx.execute(
        "INSERT INTO prescore_leases (job, shard, run_id, holder, token, acquired_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            Value::text(job),
            Value::text(shard),
            Value::text(run_id),
            Value::text(holder_id()),
            Value::Int(Some(token)),
            Value::Ts(Some(now)),
            Value::Ts(Some(now + lease_delta(lease))),
        ],
    )
    .await?;
    Ok(token)
}

fn lease_delta(lease: Duration) -> chrono::Duration {
    chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::days(7))
}

/// Pushes the lease's expiry forward every third of `lease` until aborted. A renewal that
/// finds the row gone or re-tokened means another run took the job: it says so once (the
/// publish's [`check`] then refuses).
pub(super) fn heartbeat(
    wh: Warehouse,
    fence: Fence,
    lease: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut warned = false;
        loop {
            tokio::time::sleep(lease / 3).await;
            let renewed = wh
                .execute(
                    "UPDATE prescore_leases SET expires_at = $1 \
                     WHERE job = $2 AND shard = $3 AND run_id = $4 AND token = $5",
                    &[
                        Value::Ts(Some(Utc::now() + lease_delta(lease))),
                        Value::text(&fence.job),
                        Value::text(&fence.shard),
                        Value::text(&fence.run_id),
                        Value::Int(Some(fence.token)),
                    ],
                )
                .await;
            match renewed {
                Ok(0) if !warned => {
                    warned = true;
                    tracing::error!(
                        run_id = %fence.run_id,
                        "another run took over this job's lock: this run will not publish"
                    );
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "could not renew the job lock's lease; trying again")
                }
            }
        }
    })
}

/// Inside a publish transaction: fails unless the job's lease row still carries this run's
/// token. PostgreSQL locks the row against a takeover (`FOR KEY SHARE`: a takeover deletes
/// it, so it waits for this transaction to end) but not against the heartbeat, whose update
/// of `expires_at` must not wait for a long publish.
pub async fn check(tx: &mut Tx, fence: &Fence) -> Result<(), WarehouseError> {
    let lock = match tx {
        Tx::Postgres(_) => " FOR KEY SHARE",
        Tx::Sqlite(_) => "",
    };
    let rows = tx
        .fetch(
            &format!(
                "SELECT run_id, token FROM prescore_leases WHERE job = $1 AND shard = $2{lock}"
            ),
            &[Value::text(&fence.job), Value::text(&fence.shard)],
        )
        .await?;
    let now = rows
        .first()
        .map(|r| (r[0].as_str().unwrap_or_default().to_string(), r[1].as_i64()));
    match now {
        Some((_, Some(token))) if token == fence.token => Ok(()),
        other => Err(WarehouseError::Fenced {
            job: fence.job.clone(),
            shard: fence.shard.clone(),
            run_id: fence.run_id.clone(),
            taken_by: other.map_or("no run (the lock row is gone)".into(), |(run, _)| {
                format!("run {run}")
            }),
        }),
    }
}

/// Deletes this run's lease row (a row another run took over is left alone).
pub(super) async fn release(wh: &Warehouse, job: &str, shard: &str, run_id: &str) {
    let r = wh
        .execute(
            "DELETE FROM prescore_leases WHERE job = $1 AND shard = $2 AND run_id = $3",
            &[Value::text(job), Value::text(shard), Value::text(run_id)],
        )
        .await;
    if let Err(e) = r {
        tracing::warn!(error = %e, "could not release the job lock; the next run takes it over when its lease lapses");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_holder_in_this_pid_namespace_can_be_declared_gone() {
        let me = holder_id();
        let prefix = me.rsplit_once(':').unwrap().0;
        // A PID that cannot exist here (above pid_max).
        assert!(holder_gone(&format!("{prefix}:4194305")));
        assert!(!holder_gone(&me), "this process is alive");
        assert!(!holder_gone("otherhost:4026531836:4194305"), "another host");
        let host = prefix.split(':').next().unwrap();
        assert!(
            !holder_gone(&format!("{host}:1:4194305")),
            "another PID namespace"
        );
        assert!(
            !holder_gone(&format!("{host}:4194305")),
            "an old host:pid id"
        );
    }
}
