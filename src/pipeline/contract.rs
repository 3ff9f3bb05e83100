//! Stage 2, the input contract: what the job's SQL must deliver before anything is trained or
//! written. Column names and types are enforced while reading (stage 1); this stage checks the
//! rows: a minimum count, the NULL policy, finite and sane numbers, unique keys, and timestamps
//! that are not in the future. A broken contract stops the run with exit code 3.

use chrono::{DateTime, Utc};
use polars::prelude::*;

use crate::config::{ColumnType, Job};

#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    #[error("the input drifted from the model's training data: PSI {psi:.3} for {feature} exceeds gate.max_psi = {max} (every PSI is in the log); nothing was published")]
    Drift { feature: String, psi: f64, max: f64 },
    #[error("the scores moved: their mean is {now:.4} against {then:.4} on the model's holdout, a shift of {shift:.4} past gate.max_score_shift = {max}; nothing was published")]
    ScoreShift {
        now: f64,
        then: f64,
        shift: f64,
        max: f64,
    },
    #[error(
        "{what} returned {rows} row(s); the contract requires at least {min} (input.min_rows)"
    )]
    TooFewRows {
        what: &'static str,
        rows: usize,
        min: usize,
    },
    #[error("no series can be forecast: all {skipped} were skipped, e.g. {example}")]
    NoSeries { skipped: usize, example: String },
    #[error("column {column:?} is {fraction:.1}% NULL (first at row {first_row}); the contract allows {allowed:.1}% (input.max_null_fraction.{column})")]
    TooManyNulls {
        column: String,
        fraction: f64,
        allowed: f64,
        first_row: usize,
    },
    #[error("column {column:?}, row {row}: {problem}")]
    BadValue {
        column: String,
        row: usize,
        problem: String,
    },
    #[error(
        "duplicate key {key} at rows {first} and {second}: {what} must return one row per {per}"
    )]
    DuplicateKey {
        key: String,
        first: usize,
        second: usize,
        what: &'static str,
        per: String,
    },
    #[error("{what} returned key {key} (row {row}), which belongs to shard {owner}, not to this shard {shard}: the SQL's split must match prescore's (`key % :shard_count = :shard_index`)")]
    WrongShard {
        what: &'static str,
        key: String,
        row: usize,
        shard: String,
        owner: u32,
    },
    #[error("only {now} entities to score, fewer than {ratio:.0}% of the {before} the last successful run scored (input.min_entities_ratio): refusing to publish a partial result")]
    SuddenDrop { now: usize, before: i64, ratio: f64 },
}

/// Numbers beyond this magnitude are treated as corrupt (unit errors, sentinel values).
const ABSURD: f64 = 1e15;

/// Checks a frame read by `what` ("the training SQL", "the scoring SQL", "the history SQL").
/// `unique` lists the columns that together must be unique.
pub fn check(
    job: &Job,
    df: &DataFrame,
    what: &'static str,
    unique: &[&str],
    as_of: DateTime<Utc>,
) -> Result<(), ContractError> {
    let rows = df.height();
    if rows < job.input.min_rows.max(1) {
        return Err(ContractError::TooFewRows {
            what,
            rows,
            min: job.input.min_rows.max(1),
        });
    }
    for col in df.columns() {
        let name = col.name().as_str();
        let nulls = col.null_count();
        let allowed = job
            .input
            .max_null_fraction
            .get(name)
            .copied()
            .unwrap_or(0.0);
        if nulls > 0 && nulls as f64 / rows as f64 > allowed {
            let first_row = col
                .is_null()
                .iter()
                .position(|v| v == Some(true))
                .unwrap_or(0)
                + 1;
            return Err(ContractError::TooManyNulls {
                column: name.to_string(),
                fraction: 100.0 * nulls as f64 / rows as f64,
                allowed: 100.0 * allowed,
                first_row,
            });
        }
        match job.input.columns.get(name) {
            Some(ColumnType::Float) => {
                let ca = col.f64().expect("float column");
                // Without NULLs in one array (as read), a scan for the first bad value finds
                // nothing in one tight pass; the loop below then names it.
                let sane = |x: &f64| x.is_finite() && x.abs() <= ABSURD;
                if ca.null_count() == 0 && ca.cont_slice().is_ok_and(|v| v.iter().all(sane)) {
                    continue;
                }
                for (r, v) in ca.iter().enumerate() {
                    if let Some(x) = v {
                        if !x.is_finite() {
                            return Err(bad(name, r, format!("{x} is not a finite number")));
                        }
                        if x.abs() > ABSURD {
                            return Err(bad(
                                name,
                                r,
                                format!("{x:e} is an absurd magnitude (beyond 1e15)"),
                            ));
                        }
                    }
                }
            }
            Some(ColumnType::Timestamp) => {
                let ca = col.datetime().expect("timestamp column");
                let limit = as_of.timestamp_micros();
                let physical = ca.physical();
                if physical.null_count() == 0
                    && physical
                        .cont_slice()
                        .is_ok_and(|v| v.iter().all(|&us| us <= limit))
                {
                    continue;
                }
                for (r, v) in physical.iter().enumerate() {
                    if let Some(us) = v {
                        if us > limit {
                            return Err(bad(
                                name,
                                r,
                                format!(
                                    "{} is after the run's as-of time {}: the SQL must not read the future (filter on :as_of)",
                                    crate::warehouse::frame::micros_to_utc(us).format("%Y-%m-%d %H:%M:%S"),
                                    as_of.format("%Y-%m-%d %H:%M:%S")
                                ),
                            ));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    if !unique.is_empty() {
        check_unique(df, unique, what)?;
    }
    Ok(())
}

fn bad(column: &str, r: usize, problem: String) -> ContractError {
    ContractError::BadValue {
        column: column.to_string(),
        row: r + 1,
        problem,
    }
}

/// A column's values as integers, when it is an integer or timestamp column without NULLs:
/// borrowed from the frame when it is one contiguous array.
fn as_i64(c: &Column) -> Option<std::borrow::Cow<'_, [i64]>> {
    let ca = match c.dtype() {
        DataType::Int64 => c.i64().ok()?,
        DataType::Datetime(_, _) => c.datetime().ok()?.physical(),
        _ => return None,
    };
    if ca.null_count() > 0 {
        return None;
    }
    Some(match ca.cont_slice() {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => std::borrow::Cow::Owned(ca.iter().map(|v| v.unwrap_or_default()).collect()),
    })
}

fn check_unique(df: &DataFrame, cols: &[&str], what: &'static str) -> Result<(), ContractError> {
    let columns: Vec<&Column> = cols.iter().filter_map(|c| df.column(c).ok()).collect();
    let key_text = |r: usize| {
        columns
            .iter()
            .map(|c| format!("{}={}", c.name(), crate::warehouse::frame::cell_text(c, r)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let duplicate = |first: usize, r: usize| ContractError::DuplicateKey {
        key: key_text(r),
        first,
        second: r + 1,
        what,
        per: cols.join(" + "),
    };
    // Fast path: one or two integer/timestamp columns compare as integers, in linear time when
    // the rows already come in key order (a clustered table, an ORDER BY), else by sorting.
    let ints: Option<Vec<_>> = columns.iter().map(|c| as_i64(c)).collect();
    if let Some(ints) = ints.filter(|v| (1..=2).contains(&v.len())) {
        let n = df.height();
        let key = |r: usize| (ints[0][r], ints.get(1).map_or(0, |c| c[r]));
        if (1..n).all(|r| key(r - 1) < key(r)) {
            return Ok(());
        }
        let mut keys: Vec<(i64, i64)> = (0..n).map(key).collect();
        keys.sort_unstable();
        let Some(dup) = keys.windows(2).find(|w| w[0] == w[1]).map(|w| w[0]) else {
            return Ok(());
        };
        // Name the duplicate by its first two rows.
        let mut rows = (0..n).filter(|&r| key(r) == dup);
        let first = rows.next().expect("the key occurs twice");
        let second = rows.next().expect("the key occurs twice");
        return Err(duplicate(first + 1, second));
    }
    let mut seen: std::collections::HashMap<String, usize> = Default::default();
    seen.reserve(df.height());
    for r in 0..df.height() {
        if let Some(first) = seen.insert(key_text(r), r + 1) {
            return Err(duplicate(first, r));
        }
    }
    Ok(())
}

/// Refuses to publish when far fewer entities are scored than last time.
pub fn check_drop(now: usize, before: Option<i64>, ratio: f64) -> Result<(), ContractError> {
    match before {
        Some(b) if ratio > 0.0 && b > 0 && (now as f64) < ratio * b as f64 => {
            Err(ContractError::SuddenDrop {
                now,
                before: b,
                ratio: 100.0 * ratio,
            })
        }
        _ => Ok(()),
    }
}

/// Refuses a run whose drift passed `gate.max_psi`: the worst PSI names the feature, every PSI
/// goes to the log.
pub fn refuse_drift(job: &Job, psi: &[(String, f64)]) -> Result<(), ContractError> {
    let worst = crate::monitor::drift::worst(psi);
    if let (Some(max), Some((feature, value))) = (job.gate.max_psi, worst) {
        if *value > max {
            let all: Vec<String> = psi.iter().map(|(f, v)| format!("{f} {v:.3}")).collect();
            tracing::warn!(psi = %all.join(", "), "input drifted past gate.max_psi");
            return Err(ContractError::Drift {
                feature: feature.clone(),
                psi: *value,
                max,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dup(df: &DataFrame, cols: &[&str]) -> Option<(usize, usize, String)> {
        match check_unique(df, cols, "the SQL") {
            Ok(()) => None,
            Err(ContractError::DuplicateKey {
                first, second, key, ..
            }) => Some((first, second, key)),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn unique_keys_in_order_out_of_order_and_as_text() {
        let sorted = df!("id" => [1i64, 2, 3, 4]).unwrap();
        assert_eq!(dup(&sorted, &["id"]), None);
        let shuffled = df!("id" => [4i64, 1, 3, 2]).unwrap();
        assert_eq!(dup(&shuffled, &["id"]), None);
        let pairs = df!("id" => [2i64, 1, 2, 1], "t" => [1i64, 1, 2, 2]).unwrap();
        assert_eq!(dup(&pairs, &["id", "t"]), None);
        let text = df!("id" => ["b", "a", "c"]).unwrap();
        assert_eq!(dup(&text, &["id"]), None);
    }

    #[test]
    fn a_duplicate_names_its_key_and_first_two_rows() {
        let ints = df!("id" => [5i64, 9, 7, 9, 9]).unwrap();
        assert_eq!(dup(&ints, &["id"]), Some((2, 4, "id=9".into())));
        let pairs = df!("id" => [1i64, 2, 1, 1], "t" => [1i64, 1, 2, 1]).unwrap();
        assert_eq!(dup(&pairs, &["id", "t"]), Some((1, 4, "id=1, t=1".into())));
        let text = df!("id" => ["b", "a", "b"]).unwrap();
        assert_eq!(dup(&text, &["id"]), Some((1, 3, "id=b".into())));
    }
}
