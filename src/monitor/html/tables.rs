//! What the report reads: aggregates from prescore's own tables (the ledger, realized
//! accuracy, drift, the registry and its history), each query bounded by a row limit, and for
//! forecast jobs a few sampled series: their latest issued forecasts from `<table>_history`
//! and their actuals from the job's history SQL, read as `prescore evaluate` reads them.

use chrono::{DateTime, Duration, Utc};

use super::ReportError;
use crate::config::{Job, JobKind};
use crate::ledger;
use crate::monitor::accuracy::{Actuals, SeriesKey};
use crate::monitor::evaluate::{history_table, EvaluateError};
use crate::pipeline::{read, Shard};
use crate::registry::{self, events::Recorded, StoredModel};
use crate::warehouse::{Value, Warehouse, WarehouseError};

/// The most runs the report reads (the newest).
pub const MAX_RUNS: i64 = 500;
/// The most target days of realized accuracy it reads (the latest).
pub const MAX_DAYS: i64 = 180;
/// The most runs whose drift it reads.
pub const MAX_DRIFT_RUNS: i64 = 200;
/// Series drawn against their actuals.
pub const SAMPLE_SERIES: usize = 4;

/// One row of the ledger.
#[derive(Debug, Clone, Default)]
pub struct Run {
    pub id: String,
    pub status: String,
    pub command: String,
    pub shard: String,
    pub as_of: Option<DateTime<Utc>>,
    pub started: Option<DateTime<Utc>>,
    pub finished: Option<DateTime<Utc>>,
    pub rows_read: Option<i64>,
    pub rows_written: Option<i64>,
    pub model_version: Option<i64>,
    /// Seconds per stage, in pipeline order.
    pub stages: Vec<(String, f64)>,
    pub error: Option<String>,
}

impl Run {
    /// Wall-clock seconds from start to finish, when it finished.
    pub fn seconds(&self) -> Option<f64> {
        let (s, f) = (self.started?, self.finished?);
        Some((f - s).num_milliseconds() as f64 / 1000.0)
    }
}

/// Stages in the order a run goes through them; others follow alphabetically.
const STAGE_ORDER: &[&str] = &[
    "read", "contract", "features", "train", "score", "publish", "evaluate",
];

/// `prescore_runs.stage_seconds` (a JSON object) in pipeline order.
pub fn stages(json: &str) -> Vec<(String, f64)> {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str(json) else {
        return Vec::new();
    };
    let mut v: Vec<(String, f64)> = map
        .into_iter()
        .filter_map(|(k, v)| Some((k, v.as_f64()?)))
        .collect();
    let rank = |s: &str| {
        STAGE_ORDER
            .iter()
            .position(|o| *o == s)
            .unwrap_or(usize::MAX)
    };
    v.sort_by(|a, b| rank(&a.0).cmp(&rank(&b.0)).then_with(|| a.0.cmp(&b.0)));
    v
}

/// The job's newest runs (at most [`MAX_RUNS`]), oldest first.
pub async fn runs(wh: &Warehouse, job: &str) -> Result<Vec<Run>, WarehouseError> {
    let rows = ledger::recent(wh, Some(job), MAX_RUNS).await?;
    let at = |name: &str| {
        ledger::COLUMNS
            .iter()
            .position(|c| *c == name)
            .expect("a ledger column")
    };
    let mut runs: Vec<Run> = rows
        .into_iter()
        .map(|r| Run {
            id: r[at("run_id")].display(),
            status: r[at("status")].display(),
            command: r[at("command")].display(),
            shard: r[at("shard")].display(),
            as_of: r[at("as_of")].as_ts(),
            started: r[at("started_at")].as_ts(),
            finished: r[at("finished_at")].as_ts(),
            rows_read: r[at("rows_read")].as_i64(),
            rows_written: r[at("rows_written")].as_i64(),
            model_version: r[at("model_version")].as_i64(),
            stages: r[at("stage_seconds")]
                .as_str()
                .map(stages)
                .unwrap_or_default(),
            error: r[at("error")].as_str().map(str::to_string),
        })
        .collect();
    runs.reverse();
    Ok(runs)
}

/// Realized accuracy at one lead time, over every evaluated day.
#[derive(Debug, Clone, Default)]
pub struct Lead {
    pub horizon: i64,
    pub n: i64,
    pub mae: Option<f64>,
    pub bias: Option<f64>,
    pub coverage: Option<f64>,
    pub naive_mae: Option<f64>,
}

/// From the view `prescore_accuracy_by_lead`. PostgreSQL sums integers as `numeric`: the
/// casts keep the types the same on both warehouses.
pub async fn accuracy_by_lead(wh: &Warehouse, job: &str) -> Result<Vec<Lead>, WarehouseError> {
    let rows = wh
        .fetch(
            "SELECT horizon, CAST(n AS BIGINT), CAST(mae AS DOUBLE PRECISION), \
             CAST(bias AS DOUBLE PRECISION), CAST(coverage AS DOUBLE PRECISION), \
             CAST(naive_mae AS DOUBLE PRECISION) \
             FROM prescore_accuracy_by_lead WHERE job = $1 ORDER BY horizon",
            &[Value::text(job)],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| Lead {
            horizon: r[0].as_i64().unwrap_or_default(),
            n: r[1].as_i64().unwrap_or_default(),
            mae: r[2].as_f64(),
            bias: r[3].as_f64(),
            coverage: r[4].as_f64(),
            naive_mae: r[5].as_f64(),
        })
        .collect())
}

/// Realized accuracy of one target day, over every lead time and model version.
#[derive(Debug, Clone)]
pub struct Day {
    pub day: DateTime<Utc>,
    pub n: i64,
    pub mae: Option<f64>,
    pub naive_mae: Option<f64>,
    pub coverage: Option<f64>,
}

/// The latest [`MAX_DAYS`] target days of `prescore_accuracy`, oldest first, each weighted by
/// the forecasts it covers (as the view weighs lead times).
pub async fn accuracy_by_day(wh: &Warehouse, job: &str) -> Result<Vec<Day>, WarehouseError> {
    let rows = wh
        .fetch(
            "SELECT day, CAST(SUM(n) AS BIGINT), \
             CAST(SUM(mae * n) / NULLIF(SUM(CASE WHEN mae IS NULL THEN 0 ELSE n END), 0) AS DOUBLE PRECISION), \
             CAST(SUM(naive_mae * naive_n) / NULLIF(SUM(CASE WHEN naive_mae IS NULL THEN 0 ELSE naive_n END), 0) AS DOUBLE PRECISION), \
             CAST(SUM(coverage * n) / NULLIF(SUM(CASE WHEN coverage IS NULL THEN 0 ELSE n END), 0) AS DOUBLE PRECISION) \
             FROM prescore_accuracy WHERE job = $1 GROUP BY day ORDER BY day DESC LIMIT $2",
            &[Value::text(job), Value::Int(Some(MAX_DAYS))],
        )
        .await?;
    let mut days: Vec<Day> = rows
        .into_iter()
        .filter_map(|r| {
            Some(Day {
                day: r[0].as_ts()?,
                n: r[1].as_i64().unwrap_or_default(),
                mae: r[2].as_f64(),
                naive_mae: r[3].as_f64(),
                coverage: r[4].as_f64(),
            })
        })
        .collect();
    days.reverse();
    Ok(days)
}

/// Realized accuracy of a score job's issued scores on one issue day, over its model
/// versions (weighted by the labeled scores each covers).
#[derive(Debug, Clone)]
pub struct LabelDay {
    pub day: DateTime<Utc>,
    pub n: i64,
    pub auc: Option<f64>,
    pub log_loss: Option<f64>,
    pub brier: Option<f64>,
    pub positive_rate: Option<f64>,
    pub mean_score: Option<f64>,
    pub mae: Option<f64>,
    pub bias: Option<f64>,
}

/// The latest [`MAX_DAYS`] issue days of `prescore_label_accuracy`, oldest first.
pub async fn labels_by_day(wh: &Warehouse, job: &str) -> Result<Vec<LabelDay>, WarehouseError> {
    let weighted = |c: &str| {
        format!(
            "CAST(SUM({c} * n) / NULLIF(SUM(CASE WHEN {c} IS NULL THEN 0 ELSE n END), 0) AS DOUBLE PRECISION)"
        )
    };
    let figures = [
        "auc",
        "log_loss",
        "brier",
        "positive_rate",
        "mean_score",
        "mae",
        "bias",
    ];
    let sql = format!(
        "SELECT day, CAST(SUM(n) AS BIGINT), {} FROM prescore_label_accuracy WHERE job = $1 \
         GROUP BY day ORDER BY day DESC LIMIT $2",
        figures.map(weighted).join(", ")
    );
    let rows = wh
        .fetch(&sql, &[Value::text(job), Value::Int(Some(MAX_DAYS))])
        .await?;
    let mut days: Vec<LabelDay> = rows
        .into_iter()
        .filter_map(|r| {
            Some(LabelDay {
                day: r[0].as_ts()?,
                n: r[1].as_i64().unwrap_or_default(),
                auc: r[2].as_f64(),
                log_loss: r[3].as_f64(),
                brier: r[4].as_f64(),
                positive_rate: r[5].as_f64(),
                mean_score: r[6].as_f64(),
                mae: r[7].as_f64(),
                bias: r[8].as_f64(),
            })
        })
        .collect();
    days.reverse();
    Ok(days)
}

/// Calibration of one model's issued scores: per score decile, the labeled scores, their mean
/// score and mean label, pooled over the issue days evaluated.
#[derive(Debug, Clone)]
pub struct Calibration {
    pub model_version: i64,
    pub days: i64,
    /// (decile, n, mean score, mean label)
    pub deciles: Vec<(i64, i64, f64, f64)>,
}

/// The calibration of the newest model version that has any, over its latest [`MAX_DAYS`]
/// issue days.
pub async fn calibration(wh: &Warehouse, job: &str) -> Result<Option<Calibration>, WarehouseError> {
    let newest = wh
        .fetch(
            "SELECT MAX(model_version) FROM prescore_calibration WHERE job = $1",
            &[Value::text(job)],
        )
        .await?;
    let Some(version) = newest.first().and_then(|r| r[0].as_i64()) else {
        return Ok(None);
    };
    let rows = wh
        .fetch(
            "SELECT decile, CAST(SUM(n) AS BIGINT), \
             CAST(SUM(mean_score * n) / SUM(n) AS DOUBLE PRECISION), \
             CAST(SUM(mean_label * n) / SUM(n) AS DOUBLE PRECISION), CAST(COUNT(*) AS BIGINT) \
             FROM prescore_calibration WHERE job = $1 AND model_version = $2 AND day >= \
             (SELECT MIN(day) FROM (SELECT day FROM prescore_calibration WHERE job = $1 \
              AND model_version = $2 GROUP BY day ORDER BY day DESC LIMIT $3) latest) \
             GROUP BY decile ORDER BY decile",
            &[
                Value::text(job),
                Value::Int(Some(version)),
                Value::Int(Some(MAX_DAYS)),
            ],
        )
        .await?;
    let days = rows.iter().filter_map(|r| r[4].as_i64()).max().unwrap_or(0);
    let deciles = rows
        .into_iter()
        .filter_map(|r| {
            Some((
                r[0].as_i64()?,
                r[1].as_i64()?,
                r[2].as_f64()?,
                r[3].as_f64()?,
            ))
        })
        .collect();
    Ok(Some(Calibration {
        model_version: version,
        days,
        deciles,
    }))
}

/// The drift a run recorded: PSI per feature (and `score`), highest first.
#[derive(Debug, Clone)]
pub struct Drift {
    pub run_id: String,
    pub model_version: Option<i64>,
    pub at: Option<DateTime<Utc>>,
    pub features: Vec<(String, f64)>,
}

/// The latest run's drift, if any run recorded one.
pub async fn latest_drift(wh: &Warehouse, job: &str) -> Result<Option<Drift>, WarehouseError> {
    let rows = wh
        .fetch(
            "SELECT run_id, model_version, feature, psi, at FROM prescore_drift \
             WHERE job = $1 AND run_id = (SELECT run_id FROM prescore_drift WHERE job = $1 \
             ORDER BY at DESC, run_id DESC LIMIT 1) ORDER BY psi DESC, feature",
            &[Value::text(job)],
        )
        .await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    Ok(Some(Drift {
        run_id: first[0].display(),
        model_version: first[1].as_i64(),
        at: first[4].as_ts(),
        features: rows
            .iter()
            .map(|r| (r[2].display(), r[3].as_f64().unwrap_or(f64::NAN)))
            .collect(),
    }))
}

/// The highest PSI of each of the newest [`MAX_DRIFT_RUNS`] runs, oldest first.
pub async fn drift_over_runs(
    wh: &Warehouse,
    job: &str,
) -> Result<Vec<(DateTime<Utc>, f64)>, WarehouseError> {
    let rows = wh
        .fetch(
            "SELECT MAX(at), MAX(psi) FROM prescore_drift WHERE job = $1 \
             GROUP BY run_id ORDER BY MAX(at) DESC LIMIT $2",
            &[Value::text(job), Value::Int(Some(MAX_DRIFT_RUNS))],
        )
        .await?;
    let mut v: Vec<(DateTime<Utc>, f64)> = rows
        .into_iter()
        .filter_map(|r| Some((r[0].as_ts()?, r[1].as_f64()?)))
        .collect();
    v.reverse();
    Ok(v)
}

/// The registry (newest first) and its history (oldest first), each at most `limit` rows.
pub async fn models(
    wh: &Warehouse,
    job: &str,
    limit: usize,
) -> Result<(Vec<StoredModel>, Vec<Recorded>), WarehouseError> {
    let mut models = registry::list(wh, job).await?;
    models.truncate(limit);
    let mut events = registry::events::history(wh, job, None).await?;
    let skip = events.len().saturating_sub(limit);
    events.drain(..skip);
    Ok((models, events))
}

/// One sampled series: its actuals and the latest forecast issued for each target time
/// (seconds since the epoch).
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub key: String,
    /// The method of the newest forecast.
    pub method: String,
    pub actual: Vec<(i64, f64)>,
    /// (target time, yhat, yhat_lo, yhat_hi).
    pub forecast: Vec<(i64, f64, f64, f64)>,
}

/// The sampled series of a forecast job, around its latest forecast.
#[derive(Debug, Clone)]
pub struct Samples {
    pub history: String,
    pub as_of: DateTime<Utc>,
    pub series: Vec<Sample>,
}

/// A few series of a forecast job, or why there are none, in words. The series are spread
/// evenly over the keys of the latest forecast, so a rerun draws the same ones.
pub async fn samples(
    job: &Job,
    wh: &Warehouse,
    now: DateTime<Utc>,
) -> Result<Result<Samples, String>, ReportError> {
    let JobKind::Forecast { spec, time, .. } = &job.kind else {
        return Ok(Err("a score job has no forecasts to draw".into()));
    };
    let history = match history_table(job) {
        Ok(h) => h,
        Err(EvaluateError::NoHistory { .. }) => {
            return Ok(Err(format!(
                "job {} keeps no forecast history (output.keep_history = \"0\"): there are no issued forecasts to draw",
                job.name
            )))
        }
        Err(e) => return Ok(Err(e.to_string())),
    };
    if wh.table_columns(&history).await?.is_empty() {
        return Ok(Err(format!(
            "no forecasts issued yet: {history} does not exist until the job's first run"
        )));
    }
    let table = history.quoted();
    let latest = wh
        .fetch(&format!("SELECT MAX(as_of) FROM {table}"), &[])
        .await?;
    let Some(as_of) = latest.first().and_then(|r| r[0].as_ts()) else {
        return Ok(Err(format!("no forecasts issued yet: {history} is empty")));
    };
    let keys: Vec<Value> = wh
        .fetch(
            &format!(
                "SELECT series_id FROM {table} WHERE as_of = (SELECT MAX(as_of) FROM {table}) \
                 GROUP BY series_id ORDER BY series_id"
            ),
            &[],
        )
        .await?
        .into_iter()
        .map(|mut r| r.swap_remove(0))
        .collect();
    let keys = super::svg::thin(&keys, SAMPLE_SERIES);
    let step = spec.step_seconds;
    let back = 3 * spec.day().max(spec.horizon) as i64;
    let from = as_of - Duration::seconds(step * back);
    let to = as_of + Duration::seconds(step * spec.horizon as i64);

    let marks: Vec<String> = (1..=keys.len()).map(|i| format!("${}", i + 2)).collect();
    let sql = format!(
        "SELECT series_id, target_ts, as_of, yhat, yhat_lo, yhat_hi, method FROM {table} \
         WHERE target_ts >= $1 AND target_ts <= $2 AND series_id IN ({}) \
         ORDER BY series_id, target_ts, as_of",
        marks.join(", ")
    );
    let mut params = vec![Value::Ts(Some(from)), Value::Ts(Some(to))];
    params.extend(keys.iter().cloned());
    let issued = wh.fetch(&sql, &params).await?;

    let what = "the history SQL (actuals)";
    let frame = read::history(job, wh, what, now, Shard::ALL).await?;
    let actuals = Actuals::from_frame(
        &frame,
        job.input.key.as_str(),
        time.as_str(),
        job.input.target.as_str(),
    )
    .map_err(ReportError::Frame)?;
    drop(frame);

    let series = keys
        .iter()
        .map(|key| {
            let mut s = Sample {
                key: key.display(),
                ..Sample::default()
            };
            let mut newest = None;
            for r in issued.iter().filter(|r| r[0] == *key) {
                let (Some(t), Some(y)) = (r[1].as_ts(), r[3].as_f64()) else {
                    continue;
                };
                let row = (
                    t.timestamp(),
                    y,
                    r[4].as_f64().unwrap_or(y),
                    r[5].as_f64().unwrap_or(y),
                );
                // Rows come by target time, then as_of: the last of a target is its newest.
                match s.forecast.last_mut() {
                    Some(last) if last.0 == row.0 => *last = row,
                    _ => s.forecast.push(row),
                }
                let issued_at = r[2].as_ts();
                if issued_at >= newest {
                    newest = issued_at;
                    s.method = r[6].display();
                }
            }
            let series_key = match key {
                Value::Int(Some(k)) => SeriesKey::Int(*k),
                other => SeriesKey::Text(other.display()),
            };
            let last = to.min(now);
            let mut t = on_grid(from, step, &issued);
            while t <= last {
                if let Some(y) = actuals.get(&series_key, t.timestamp_micros()) {
                    s.actual.push((t.timestamp(), y));
                }
                t += Duration::seconds(step);
            }
            s
        })
        .collect();
    Ok(Ok(Samples {
        history: history.to_string(),
        as_of,
        series,
    }))
}

/// `t` moved back onto the series' clock, whose phase the issued target times give (as_of
/// need not fall on it: a run at 06:23 forecasts 07:00, 08:00…).
fn on_grid(t: DateTime<Utc>, step: i64, issued: &[Vec<Value>]) -> DateTime<Utc> {
    let phase = issued
        .first()
        .and_then(|r| r[1].as_ts())
        .map_or(0, |f| f.timestamp().rem_euclid(step));
    t - Duration::seconds((t.timestamp() - phase).rem_euclid(step))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_seconds_come_back_in_pipeline_order() {
        let s =
            stages(r#"{"publish": 0.5, "read": 1.25, "zeta": 1, "train": 2, "contract": 0.01}"#);
        let names: Vec<&str> = s.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["read", "contract", "train", "publish", "zeta"]);
        assert_eq!(s[0].1, 1.25);
        assert!(stages("not json").is_empty());
    }
}
