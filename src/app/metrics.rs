//! `--metrics-file`: turns how a run ended (its report, its error) into [`RunMetrics`] and
//! writes them for node_exporter's textfile collector. A run that did not succeed keeps the
//! last success time of the file it replaces, or the ledger's if that is later; a run that
//! found the job already running (exit 5) leaves the file to the run that holds the lock. A
//! metrics file that cannot be written is logged as an error and does not change the exit code.

use std::path::Path;

use chrono::Utc;

use crate::config::Job;
use crate::error::{Error, EXIT_GATED, EXIT_RUNNING};
use crate::pipeline::Report;
use crate::textfile::{self, RunMetrics};
use crate::warehouse::Warehouse;
use crate::{ledger, registry};

/// Writes the metrics of a run of `job` that ended with `outcome`.
pub async fn write(
    path: &Path,
    job: &Job,
    wh: Option<&Warehouse>,
    report: Option<&Report>,
    outcome: Result<(), &Error>,
) {
    let (status, exit_code) = match outcome {
        Ok(()) => ("succeeded", 0),
        Err(e) if e.exit_code() == EXIT_RUNNING => return,
        Err(e) if e.exit_code() == EXIT_GATED => ("gated", EXIT_GATED),
        Err(e) => ("failed", e.exit_code()),
    };
    let now = Utc::now();
    let mut m = RunMetrics {
        job: job.name.clone(),
        status: status.into(),
        exit_code,
        finished_at: now,
        ..RunMetrics::default()
    };
    m.last_success = if outcome.is_ok() {
        Some(now.timestamp() as f64)
    } else {
        earlier_success(path, &job.name, wh).await
    };
    if let Some(r) = report {
        fill_from_report(&mut m, r);
        if m.mae.is_none() {
            m.mae = stored_mae(wh, &job.name, r.model_version).await;
        }
    }
    save(path, &m);
}

fn fill_from_report(m: &mut RunMetrics, r: &Report) {
    m.stage_seconds = r.stage_seconds.clone();
    m.rows_read = r.rows_read as u64;
    m.rows_scored = r.entities as u64;
    m.rows_written = r.rows_written;
    m.skipped_entities = r.skipped_entities.len() as u64;
    m.model_version = r.model_version;
    m.psi_max = r.max_psi.as_ref().map(|(_, v)| *v);
    let n: i64 = r.accuracy.iter().map(|a| a.1).sum();
    m.realized_mae =
        (n > 0).then(|| r.accuracy.iter().map(|a| a.2 * a.1 as f64).sum::<f64>() / n as f64);
    // Score jobs: over the issue days with labels, weighted by the labeled scores of each.
    let labeled: i64 = r.labels.iter().map(|g| g.n).sum();
    let weighted = |f: fn(&crate::monitor::labels::Group) -> Option<f64>| {
        let sum: Option<f64> = r.labels.iter().map(|g| Some(f(g)? * g.n as f64)).sum();
        sum.filter(|_| labeled > 0).map(|s| s / labeled as f64)
    };
    m.realized_auc = weighted(|g| g.auc);
    m.realized_mae = m.realized_mae.or(weighted(|g| g.mae));
    if let Some(t) = &r.trained {
        m.gate_passed = (!t.verdict.is_empty()).then(|| t.verdict.starts_with("passed"));
        m.mae = t.metrics.get("mae").copied().filter(|v| v.is_finite());
    }
}

/// The served model's stored holdout or backtest MAE (a run that loaded the champion).
async fn stored_mae(wh: Option<&Warehouse>, job: &str, version: Option<i64>) -> Option<f64> {
    let stored = registry::get(wh?, job, version?).await.ok()?;
    stored.metrics.get("mae").copied().filter(|v| v.is_finite())
}

/// The later of the old file's last success and the ledger's (when the warehouse answers).
async fn earlier_success(path: &Path, job: &str, wh: Option<&Warehouse>) -> Option<f64> {
    let from_file = std::fs::read_to_string(path)
        .ok()
        .and_then(|old| textfile::previous_last_success(&old, job));
    let from_ledger = match wh {
        Some(wh) => ledger::last_success(wh, job)
            .await
            .ok()
            .flatten()
            .map(|t| t.timestamp() as f64),
        None => None,
    };
    from_file.into_iter().chain(from_ledger).reduce(f64::max)
}

/// A run whose config did not load: the job is the one the old file names, if any.
pub fn config_failed(path: &Path, e: &Error) {
    let Ok(old) = std::fs::read_to_string(path) else {
        tracing::warn!(path = %path.display(), "the config did not load and there is no earlier metrics file to name the job: no metrics written");
        return;
    };
    let Some(job) = textfile::previous_job(&old) else {
        return;
    };
    let m = RunMetrics {
        last_success: textfile::previous_last_success(&old, &job),
        job,
        status: "failed".into(),
        exit_code: e.exit_code(),
        finished_at: Utc::now(),
        ..RunMetrics::default()
    };
    save(path, &m);
}

fn save(path: &Path, m: &RunMetrics) {
    match textfile::write_atomic(path, &textfile::render(m)) {
        Ok(()) => {
            tracing::info!(path = %path.display(), status = %m.status, "wrote the metrics file")
        }
        Err(e) => tracing::error!("{e}"),
    }
}
