//! Metrics for Prometheus through node_exporter's textfile collector: `--metrics-file PATH`
//! makes `run`, `train` and `score` write one small exposition-format file at the end of
//! every run, failed and gated ones too. The file is written to a temporary name in the same
//! directory and renamed over the old one, so the collector never reads half a file. A run
//! that did not succeed carries the last success time over from the file it replaces (or the
//! ledger), so `time() - prescore_last_success_timestamp_seconds` keeps growing until a run
//! succeeds again.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

#[derive(Debug, thiserror::Error)]
pub enum TextfileError {
    #[error("cannot write the metrics file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Everything one run reports.
#[derive(Debug, Clone, Default)]
pub struct RunMetrics {
    pub job: String,
    /// succeeded, failed or gated.
    pub status: String,
    pub exit_code: u8,
    pub finished_at: DateTime<Utc>,
    /// Seconds since the epoch of the last success, when known.
    pub last_success: Option<f64>,
    pub stage_seconds: Vec<(String, f64)>,
    pub rows_read: u64,
    pub rows_scored: u64,
    pub rows_written: u64,
    /// Whether a candidate trained in this run passed the gate (None: none was judged).
    pub gate_passed: Option<bool>,
    pub skipped_entities: u64,
    pub model_version: Option<i64>,
    /// Holdout (score) or backtest (forecast) MAE of the model this run trained or served.
    pub mae: Option<f64>,
    /// Forecasts: the realized MAE of earlier forecasts over the recent days the run evaluated
    /// (regression score jobs: of the scores issued in `input.labels_window` against labels).
    pub realized_mae: Option<f64>,
    /// Classification score jobs: the realized AUC of the scores issued in
    /// `input.labels_window` whose labels arrived.
    pub realized_auc: Option<f64>,
    /// Score jobs: the highest PSI of a feature or the score against the training data.
    pub psi_max: Option<f64>,
}

pub const STATUSES: [&str; 3] = ["succeeded", "failed", "gated"];

/// One metric family: name, help, samples of (labels, value).
struct Family {
    name: &'static str,
    help: &'static str,
    samples: Vec<(Vec<(&'static str, String)>, f64)>,
}

/// The exposition text of one run: HELP and TYPE (every family a gauge) once per family, its
/// samples right after.
pub fn render(m: &RunMetrics) -> String {
    let mut out = String::new();
    let families = outcome_families(m).into_iter().chain(work_families(m));
    for f in families.filter(|f| !f.samples.is_empty()) {
        let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(f.help));
        let _ = writeln!(out, "# TYPE {} gauge", f.name);
        for (labels, value) in &f.samples {
            let _ = writeln!(out, "{}{} {}", f.name, label_set(labels), number(*value));
        }
    }
    out
}

/// A family with one sample labelled by the job.
fn single(m: &RunMetrics, name: &'static str, help: &'static str, v: f64) -> Family {
    Family {
        name,
        help,
        samples: vec![(vec![("job", m.job.clone())], v)],
    }
}

/// A family with one sample per value of `label`, each labelled by the job too.
fn by(
    m: &RunMetrics,
    name: &'static str,
    help: &'static str,
    label: &'static str,
    values: impl IntoIterator<Item = (String, f64)>,
) -> Family {
    let samples = values
        .into_iter()
        .map(|(l, v)| (vec![("job", m.job.clone()), (label, l)], v))
        .collect();
    Family {
        name,
        help,
        samples,
    }
}

/// How the run ended: last success, time, status, exit code.
fn outcome_families(m: &RunMetrics) -> Vec<Family> {
    let status = STATUSES
        .iter()
        .map(|s| (s.to_string(), f64::from(u8::from(m.status == *s))));
    vec![
        single(
            m,
            "prescore_last_success_timestamp_seconds",
            "When the job last succeeded (seconds since the epoch; 0 if no success is known).",
            m.last_success.unwrap_or(0.0),
        ),
        single(
            m,
            "prescore_run_timestamp_seconds",
            "When the job's latest run ended, whatever its status.",
            m.finished_at.timestamp() as f64,
        ),
        by(
            m,
            "prescore_run_status",
            "1 for the status of the job's latest run (succeeded, failed, gated), 0 for the others.",
            "status",
            status,
        ),
        single(
            m,
            "prescore_run_exit_code",
            "The exit code of the job's latest run (0 ok, 1 failed, 2 usage, 3 contract, 4 gated).",
            f64::from(m.exit_code),
        ),
    ]
}

/// What the run did: stages, rows, skipped entities, and what is known of its model.
fn work_families(m: &RunMetrics) -> Vec<Family> {
    let rows = [
        ("read", m.rows_read),
        ("scored", m.rows_scored),
        ("written", m.rows_written),
    ]
    .map(|(k, v)| (k.to_string(), v as f64));
    let mut families = vec![
        by(
            m,
            "prescore_stage_seconds",
            "Wall-clock seconds of each stage of the job's latest run.",
            "stage",
            m.stage_seconds.iter().cloned(),
        ),
        by(
            m,
            "prescore_rows",
            "Rows the job's latest run read, scored (entities or series) and wrote.",
            "kind",
            rows,
        ),
        single(
            m,
            "prescore_skipped_entities",
            "Entities or series the job's latest run could not score (the run summary says why).",
            m.skipped_entities as f64,
        ),
    ];
    let optional = [
        (
            "prescore_gate_passed",
            "1 if the candidate trained in the latest run passed the quality gate, 0 if rejected.",
            m.gate_passed.map(|p| f64::from(u8::from(p))),
        ),
        (
            "prescore_model_version",
            "The model version the job's latest run trained or served.",
            m.model_version.map(|v| v as f64),
        ),
        (
            "prescore_holdout_mae",
            "Holdout (score jobs) or backtest (forecasts) MAE of the model of the latest run.",
            m.mae,
        ),
        (
            "prescore_realized_mae",
            "Forecast jobs: MAE of earlier forecasts against the actuals, over the recent days the latest run evaluated (regression score jobs: of earlier scores against their labels).",
            m.realized_mae,
        ),
        (
            "prescore_realized_auc",
            "Classification score jobs: AUC of the scores issued in input.labels_window against the labels that arrived, as the latest run evaluated.",
            m.realized_auc,
        ),
        (
            "prescore_psi_max",
            "Score jobs: the highest PSI of a feature or of the score against the model's training data, in the latest run.",
            m.psi_max,
        ),
    ];
    for (name, help, value) in optional {
        families.extend(value.map(|v| single(m, name, help, v)));
    }
    families
}

fn label_set(labels: &[(&str, String)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// Label values escape backslash, double quote and line feed.
pub fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// HELP text escapes backslash and line feed.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

/// The job's last success time in an earlier metrics file, if it has one.
pub fn previous_last_success(text: &str, job: &str) -> Option<f64> {
    let series = format!(
        "prescore_last_success_timestamp_seconds{{job=\"{}\"}} ",
        escape_label(job)
    );
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v > 0.0)
}

/// The job an earlier metrics file was written for (to report a run whose config did not load).
pub fn previous_job(text: &str) -> Option<String> {
    let rest = text
        .lines()
        .find_map(|l| l.strip_prefix("prescore_last_success_timestamp_seconds{job=\""))?;
    let end = rest.find("\"}")?;
    let job = &rest[..end];
    (!job.contains('\\')).then(|| job.to_string())
}

/// Writes `text` to `path` atomically: a temporary file in the same directory (a name the
/// collector ignores, as it reads only `*.prom`), flushed to disk, then renamed over `path`.
pub fn write_atomic(path: &Path, text: &str) -> Result<(), TextfileError> {
    let err = |source| TextfileError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().to_string());
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.unwrap_or_else(|| "prescore".into()),
        std::process::id()
    ));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(err)
}

#[cfg(test)]
mod tests;
