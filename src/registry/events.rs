//! The model history, `prescore_model_events`: an append-only row per registry change
//! (trained, rejected, promoted, rolled_back, retired) with the run or command that made it, its
//! reason and time, always written in the transaction of the change it records. Replaying
//! it tells which model served before the current one, which `models rollback` restores, and
//! which model was champion at a past as_of, which a backfill serves.

use chrono::{DateTime, Utc};

use crate::warehouse::{Tx, Value, Warehouse, WarehouseError};

/// What happened to a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Trained,
    Rejected,
    Promoted,
    RolledBack,
    Retired,
}

impl Event {
    pub fn name(self) -> &'static str {
        match self {
            Event::Trained => "trained",
            Event::Rejected => "rejected",
            Event::Promoted => "promoted",
            Event::RolledBack => "rolled_back",
            Event::Retired => "retired",
        }
    }
}

/// Who changes the registry: the command, and the run when a run does it.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    pub command: &'a str,
    pub run_id: Option<&'a str>,
}

impl<'a> Actor<'a> {
    pub fn run(command: &'a str, run_id: &'a str) -> Self {
        Actor {
            command,
            run_id: Some(run_id),
        }
    }

    pub fn by_hand(command: &'a str) -> Self {
        Actor {
            command,
            run_id: None,
        }
    }
}

/// One row of the history.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub version: i64,
    pub event: String,
    pub run_id: Option<String>,
    pub reason: Option<String>,
    pub at: Option<DateTime<Utc>>,
    pub command: String,
}

/// Appends one event inside the transaction of the change it records.
pub async fn record(
    tx: &mut Tx,
    job: &str,
    version: i64,
    event: Event,
    reason: &str,
    by: Actor<'_>,
) -> Result<(), WarehouseError> {
    tx.execute(
        "INSERT INTO prescore_model_events (job, version, event, run_id, reason, at, command) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            Value::text(job),
            Value::Int(Some(version)),
            Value::text(event.name()),
            Value::Text(by.run_id.map(str::to_string)),
            Value::text(reason),
            Value::Ts(Some(Utc::now())),
            Value::text(by.command),
        ],
    )
    .await
    .map(|_| ())
}

/// A job's events in the order they happened, of one version or of all.
pub async fn history(
    wh: &Warehouse,
    job: &str,
    version: Option<i64>,
) -> Result<Vec<Recorded>, WarehouseError> {
    let rows = wh
        .fetch(
            "SELECT version, event, run_id, reason, at, command FROM prescore_model_events \
             WHERE job = $1 AND ($2 IS NULL OR version = $2) ORDER BY id",
            &[Value::text(job), Value::Int(version)],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| Recorded {
            version: r[0].as_i64().unwrap_or_default(),
            event: r[1].as_str().unwrap_or_default().to_string(),
            run_id: r[2].as_str().map(str::to_string),
            reason: r[3].as_str().map(str::to_string),
            at: r[4].as_ts(),
            command: r[5].as_str().unwrap_or_default().to_string(),
        })
        .collect())
}

/// The model that served before `current`, from the job's events read inside `tx`.
pub async fn served_before(
    tx: &mut Tx,
    job: &str,
    current: i64,
) -> Result<Option<i64>, WarehouseError> {
    let rows = tx
        .fetch(
            "SELECT version, event FROM prescore_model_events WHERE job = $1 \
             AND event IN ('promoted', 'rolled_back') ORDER BY id",
            &[Value::text(job)],
        )
        .await?;
    let events: Vec<(i64, String)> = rows
        .into_iter()
        .filter_map(|r| Some((r[0].as_i64()?, r[1].as_str()?.to_string())))
        .collect();
    let stack = service_stack(events.iter().map(|(v, e)| (*v, e.as_str())));
    Ok(match stack.split_last() {
        Some((&top, rest)) if top == current => rest.last().copied(),
        _ => None,
    })
}

/// A promotion or rollback, with the time it took effect in data time.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub version: i64,
    pub event: String,
    pub effective: DateTime<Utc>,
}

/// A job's promotions and rollbacks in the order they happened, each with the time it took
/// effect: a run's at the run's as_of (the data the model was trained on, so a backfill's
/// promotion counts at its past as_of), a person's when it was made (whole seconds, like an
/// as_of given on the command line).
pub async fn changes(wh: &Warehouse, job: &str) -> Result<Vec<Change>, WarehouseError> {
    let rows = wh
        .fetch(
            "SELECT e.version, e.event, e.run_id, m.as_of, e.at FROM prescore_model_events e \
             JOIN prescore_models m ON m.job = e.job AND m.version = e.version \
             WHERE e.job = $1 AND e.event IN ('promoted', 'rolled_back') ORDER BY e.id",
            &[Value::text(job)],
        )
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let by_run = r[2].as_str().is_some();
            let effective = match by_run {
                true => r[3].as_ts().or(r[4].as_ts())?,
                false => chrono::SubsecRound::trunc_subsecs(r[4].as_ts()?, 0),
            };
            Some(Change {
                version: r[0].as_i64()?,
                event: r[1].as_str()?.to_string(),
                effective,
            })
        })
        .collect())
}

/// The model that served at `as_of`: the changes that took effect at or before it, replayed
/// in the order they took effect (the order they happened among equals). None when no model
/// had been promoted by then.
pub fn serving_at(changes: &[Change], as_of: DateTime<Utc>) -> Option<i64> {
    let mut known: Vec<&Change> = changes.iter().filter(|c| c.effective <= as_of).collect();
    known.sort_by_key(|c| c.effective);
    let stack = service_stack(known.iter().map(|c| (c.version, c.event.as_str())));
    stack.last().copied()
}

/// Replays promotions and rollbacks into the stack of models that served, the serving one
/// last: a promotion pushes (unless that model already serves), a rollback pops. So two
/// rollbacks in a row go two models back, never back and forth.
pub fn service_stack<'e>(events: impl IntoIterator<Item = (i64, &'e str)>) -> Vec<i64> {
    let mut stack: Vec<i64> = Vec::new();
    for (version, event) in events {
        match event {
            "promoted" if stack.last() != Some(&version) => stack.push(version),
            "rolled_back" => {
                if let Some(i) = stack.iter().rposition(|&v| v == version) {
                    stack.remove(i);
                }
            }
            _ => {}
        }
    }
    stack
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_serving_at_a_time_is_the_last_promoted_by_then() {
        let t = |day: u32| {
            chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 11, day, 0, 0, 0)
                .single()
                .unwrap()
        };
        let change = |version, event: &str, day| Change {
            version,
            event: event.into(),
            effective: t(day),
        };
        // v1 trained and promoted as of the 1st, v2 as of the 10th, v3 by a backfill as of
        // the 5th (recorded last), and a rollback from v2 to v1 on the 20th.
        let changes = vec![
            change(1, "promoted", 1),
            change(2, "promoted", 10),
            change(3, "promoted", 5),
            change(2, "rolled_back", 20),
            change(1, "promoted", 20),
        ];
        let just_before = t(1) - chrono::Duration::seconds(1);
        assert_eq!(serving_at(&changes, just_before), None);
        assert_eq!(serving_at(&changes, t(1)), Some(1));
        assert_eq!(serving_at(&changes, t(7)), Some(3));
        assert_eq!(serving_at(&changes, t(12)), Some(2));
        assert_eq!(serving_at(&changes, t(25)), Some(1));
    }

    #[test]
    fn rollbacks_walk_back_through_the_models_that_served() {
        let promoted = |v| (v, "promoted");
        let rolled = |v| (v, "rolled_back");
        // v1, v2, v3 served; a rollback from v3 restores v2 (recorded as its promotion).
        let events = vec![
            promoted(1),
            promoted(2),
            promoted(3),
            rolled(3),
            promoted(2),
        ];
        assert_eq!(service_stack(events.clone()), vec![1, 2]);
        // A second rollback goes on to v1, not back to v3.
        let mut more = events;
        more.extend([rolled(2), promoted(1)]);
        assert_eq!(service_stack(more), vec![1]);
        // A model promoted again by hand served twice.
        let again = vec![promoted(1), promoted(2), promoted(1)];
        assert_eq!(service_stack(again), vec![1, 2, 1]);
    }
}
