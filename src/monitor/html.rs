//! `prescore report`: one self-contained HTML page about a job, for people: runs over time
//! with their status and seconds per stage, realized accuracy by lead time and by day next to
//! seasonal naive (score jobs: AUC and log loss by issue day and calibration by score decile),
//! a few series' forecasts against their actuals with intervals, drift per
//! feature with PSI flags, and the model registry with its history. Everything comes from
//! prescore's own tables as aggregates (the sampled series' actuals from the job's history
//! SQL, drawn, never listed), the charts are inline SVG and the page has no script and loads
//! nothing, so it can be mailed, archived or served as a file. `tables` reads, `sections`
//! turns what it read into HTML, `svg` draws.

mod sections;
pub mod svg;
mod tables;

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use polars::prelude::PolarsError;

use crate::config::{Job, KindTag};
use crate::registry::{events::Recorded, StoredModel};
use crate::warehouse::{Warehouse, WarehouseError};
use tables::{Calibration, Day, Drift, LabelDay, Lead, Run, Samples};

/// Models and model events the report lists.
const MODELS_LISTED: usize = 30;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Warehouse(#[from] WarehouseError),
    #[error("reading the actuals of the sampled series: {0}")]
    Frame(PolarsError),
    #[error("cannot write the report to {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Everything one report shows, read before any HTML is made.
#[derive(Debug, Clone)]
pub struct Gathered {
    pub job: String,
    /// From the config, or from what the tables hold; None when neither tells.
    pub kind: Option<KindTag>,
    /// The config's path, for the commands the report suggests.
    pub config: Option<String>,
    pub warehouse: &'static str,
    pub generated: DateTime<Utc>,
    pub runs: Vec<Run>,
    pub leads: Vec<Lead>,
    pub days: Vec<Day>,
    /// Score jobs: realized accuracy against labels, per issue day, and the calibration.
    pub label_days: Vec<LabelDay>,
    pub calibration: Option<Calibration>,
    /// The sampled series, or why there are none.
    pub samples: Result<Samples, String>,
    pub drift: Option<Drift>,
    pub drift_runs: Vec<(DateTime<Utc>, f64)>,
    /// `gate.max_psi`, drawn as a line next to the PSI.
    pub max_psi: Option<f64>,
    pub models: Vec<StoredModel>,
    pub events: Vec<Recorded>,
}

impl Gathered {
    /// What the page holds, in one line for the terminal.
    pub fn summary(&self) -> String {
        let series = self.samples.as_ref().map_or(0, |s| s.series.len());
        format!(
            "{} runs, {} lead times of realized accuracy over {} days, {} issue days of scores with labels, {series} series drawn, {} drift features, {} models, {} model events",
            self.runs.len(),
            self.leads.len(),
            self.days.len(),
            self.label_days.len(),
            self.drift.as_ref().map_or(0, |d| d.features.len()),
            self.models.len(),
            self.events.len()
        )
    }
}

/// Reads what the report of job `name` shows. With the job's config (`job`) it also draws
/// forecasts against the actuals its history SQL returns at `now`; without one, that section
/// says it needs the config.
#[tracing::instrument(skip_all, fields(job = %name))]
pub async fn gather(
    wh: &Warehouse,
    name: &str,
    job: Option<&Job>,
    now: DateTime<Utc>,
) -> Result<Gathered, ReportError> {
    let runs = tables::runs(wh, name).await?;
    let leads = tables::accuracy_by_lead(wh, name).await?;
    let days = tables::accuracy_by_day(wh, name).await?;
    let label_days = tables::labels_by_day(wh, name).await?;
    let calibration = tables::calibration(wh, name).await?;
    let drift = tables::latest_drift(wh, name).await?;
    let drift_runs = tables::drift_over_runs(wh, name).await?;
    let (models, events) = tables::models(wh, name, MODELS_LISTED).await?;
    let samples = match job {
        Some(job) => tables::samples(job, wh, now).await?,
        None if leads.is_empty() && (drift.is_some() || !label_days.is_empty()) => {
            Err("a score job (it records drift): no forecasts to draw".into())
        }
        None => Err(format!(
            "forecasts against actuals need the job's config (`prescore report --config F`): \
             the actuals come from its history SQL, and {name}'s is not known from the tables"
        )),
    };
    let gathered = Gathered {
        job: name.to_string(),
        // Without a config, what the tables hold tells the kind: drift and label accuracy
        // are recorded for score jobs, realized accuracy against actuals for forecasts.
        kind: job.map(|j| j.kind.tag()).or(
            match (drift.is_some() || !label_days.is_empty(), leads.is_empty()) {
                (true, _) => Some(KindTag::Score),
                (false, false) => Some(KindTag::Forecast),
                (false, true) => None,
            },
        ),
        config: job.map(|j| j.config_path.display().to_string()),
        warehouse: wh.dialect().name(),
        generated: now,
        runs,
        leads,
        days,
        label_days,
        calibration,
        samples,
        drift,
        drift_runs,
        max_psi: job.and_then(|j| j.gate.max_psi),
        models,
        events,
    };
    tracing::info!(read = %gathered.summary(), "gathered the report");
    Ok(gathered)
}

/// The page.
pub fn render(g: &Gathered) -> String {
    let mut s = String::with_capacity(64 * 1024);
    s.push_str(&format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>prescore report: {}</title><style>{CSS}</style></head><body>",
        svg::esc(&g.job)
    ));
    s.push_str(&sections::header(g));
    s.push_str("<main>");
    s.push_str(&sections::runs(g));
    s.push_str(&sections::accuracy(g));
    s.push_str(&sections::forecasts(g));
    s.push_str(&sections::drift(g));
    s.push_str(&sections::models(g));
    s.push_str(&format!(
        "</main><footer>prescore {} · prescore_runs, prescore_accuracy, \
         prescore_label_accuracy, prescore_calibration, prescore_drift, prescore_models, \
         prescore_model_events</footer></body></html>\n",
        env!("CARGO_PKG_VERSION")
    ));
    s
}

/// Writes the page under a temporary name beside `path` and renames it over `path`, so a
/// reader never sees half a report and a failed run leaves the previous one.
pub fn write(path: &Path, html: &str) -> Result<(), ReportError> {
    let err = |source| ReportError::Write {
        path: path.to_path_buf(),
        source,
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(
        ".{}.{}.tmp",
        name.unwrap_or_else(|| "report.html".into()),
        std::process::id()
    ));
    std::fs::write(&tmp, html).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(e)
    })
}

const CSS: &str = "\
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#222;margin:0 auto;\
max-width:1120px;padding:16px 20px 40px;background:#fff}\
h1{font-size:24px;margin:8px 0 4px}h2{font-size:19px;border-bottom:2px solid #ddd;\
padding-bottom:4px;margin-top:36px}h3{font-size:15px;margin:18px 0 6px}\
.meta{color:#666;margin:0 0 12px}small{color:#666}\
.facts{display:flex;flex-wrap:wrap;gap:10px;margin:0 0 12px}\
.facts div{border:1px solid #ddd;border-radius:6px;padding:6px 10px;min-width:150px}\
dt{font-size:12px;color:#666}dd{margin:2px 0 0;font-size:15px}\
nav a{margin-right:14px;color:#1f77b4}\
table{border-collapse:collapse;font-size:13px;margin:8px 0;min-width:60%}\
th,td{border-bottom:1px solid #eee;padding:3px 8px;text-align:left;vertical-align:top}\
th{background:#f6f6f6}td.num{text-align:right;font-variant-numeric:tabular-nums}\
.badge{border-radius:4px;padding:1px 6px;font-size:12px;color:#fff;background:#757575}\
.badge.ok{background:#2e7d32}.badge.bad{background:#c62828}.badge.warn{background:#ef6c00}\
.empty{color:#555;background:#f7f7f7;border-left:4px solid #bbb;padding:10px 12px}\
.grid{display:grid;grid-template-columns:repeat(2,530px);gap:12px}\
svg{display:block;margin:8px 0;max-width:100%;height:auto}\
footer{margin-top:40px;color:#888;font-size:12px}";
