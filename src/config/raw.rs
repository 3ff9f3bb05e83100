//! The config file as written: serde structs that reject unknown keys, and the one pure
//! `validate` step that turns them into a [`Job`] or a list of every problem, one function per
//! config section. The doc comment of each field is the user documentation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::expand::{expand, Env};
use super::*;
use crate::warehouse::ident::Ident;
use crate::warehouse::Dialect;

pub(super) enum ParseError {
    Syntax(String),
    Problems(Vec<Problem>),
}

/// Numbers and booleans may be written as strings, so that `${VAR}` works in every value:
/// `max_train_rows = "${ROWS:-200000}"`.
mod lenient {
    use serde::{Deserialize, Deserializer};
    use std::str::FromStr;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either<T> {
        Value(T),
        Text(String),
    }

    pub fn de<'de, D, T>(d: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de> + FromStr,
        T::Err: std::fmt::Display,
    {
        match Either::<T>::deserialize(d)? {
            Either::Value(v) => Ok(v),
            Either::Text(s) => s
                .trim()
                .parse()
                .map_err(|e| serde::de::Error::custom(format!("{s:?}: {e}"))),
        }
    }

    pub fn de_opt<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de> + FromStr,
        T::Err: std::fmt::Display,
    {
        de(d).map(Some)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub job: RawJob,
    pub input: RawInput,
    #[serde(default)]
    pub features: RawFeatures,
    pub model: RawModel,
    #[serde(default)]
    pub forecast: Option<RawForecast>,
    #[serde(default)]
    pub gate: RawGate,
    pub output: RawOutput,
    #[serde(default)]
    pub registry: RawRegistry,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJob {
    /// Job name: keys the ledger, the registry and the lock. Letters, digits, `_`, `-`.
    pub name: String,
    /// `score` (one row per entity) or `forecast` (one row per series and future step).
    pub kind: KindTag,
    /// Warehouse URL: `sqlite://prescore.db` or `postgres://user@host/db`. Use `${VAR}`.
    #[serde(default = "default_warehouse")]
    pub warehouse: String,
    /// Scoring threads; 0 means one per CPU.
    #[serde(default, deserialize_with = "lenient::de")]
    pub threads: usize,
    /// Attempts for transient warehouse errors (connection lost, pool time-out).
    #[serde(default = "default_retry_attempts", deserialize_with = "lenient::de")]
    pub retry_attempts: u32,
    /// First back-off between attempts; doubles each time.
    #[serde(default = "default_retry_backoff")]
    pub retry_backoff: String,
    /// A deadline for the whole run (`"50m"`); past it the run fails with exit 7.
    #[serde(default = "default_timeout")]
    pub timeout: String,
    /// PostgreSQL: how long one statement waits for a table lock (`lock_timeout`).
    #[serde(default = "default_lock_timeout")]
    pub lock_timeout: String,
    /// PostgreSQL: how long one statement may run (`statement_timeout`); default `timeout`.
    #[serde(default)]
    pub statement_timeout: Option<String>,
    /// How long the job lock outlives its holder's last heartbeat (renewed every third of
    /// it): a run killed on another host or in another PID namespace blocks the job that long.
    #[serde(default = "default_lock_lease")]
    pub lock_lease: String,
}

/// `[registry]`: what the model registry keeps.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRegistry {
    /// Keep the artifacts of the last `keep` versions (and of every champion, ever); older
    /// versions keep their row and metadata, without the artifact. None: keep everything.
    #[serde(default, deserialize_with = "lenient::de_opt")]
    pub keep: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInput {
    /// SQL file (relative to the config) returning training rows (score) or history (forecast).
    pub train_sql: String,
    /// Score jobs: the SQL of the rows to score. Forecast jobs: future covariates (optional).
    #[serde(default)]
    pub score_sql: Option<String>,
    /// Entity key (score) or series id (forecast).
    pub key: String,
    /// Timestamp column: the time-based holdout (score) or the series clock (forecast).
    #[serde(default)]
    pub time: Option<String>,
    /// The column to learn.
    pub target: String,
    /// The contract: every column the SQL must return, with its type
    /// (`int`, `float`, `text`, `bool`, `timestamp`).
    pub columns: BTreeMap<String, ColumnType>,
    /// Fewer rows than this and the run stops before writing.
    #[serde(default = "default_min_rows", deserialize_with = "lenient::de")]
    pub min_rows: usize,
    /// Per column, the largest fraction of NULLs accepted (default 0: none).
    #[serde(default)]
    pub max_null_fraction: BTreeMap<String, f64>,
    /// Refuse to publish when fewer entities than this fraction of the last successful run's
    /// are scored (a guard against a half-loaded source table). 0 disables it.
    #[serde(
        default = "default_min_entities_ratio",
        deserialize_with = "lenient::de"
    )]
    pub min_entities_ratio: f64,
    /// Score jobs: SQL file returning the label (`input.target`) of each entity (`input.key`)
    /// scored as of `:as_of`, for the entities whose label has arrived. It runs once for each
    /// time scores were issued (the `as_of` of the rows in `<table>_history`, so it needs
    /// `output.keep_history`), and the realized AUC, log loss, Brier score and calibration by
    /// score decile (regression: MAE, RMSE, bias) go to `prescore_label_accuracy` and
    /// `prescore_calibration`.
    #[serde(default)]
    pub labels_sql: Option<String>,
    /// Score jobs with `labels_sql`: how long after the scores were issued their labels may
    /// still arrive. Every run evaluates the scores issued in this window before its as-of
    /// time; `prescore evaluate` covers any range.
    #[serde(default = "default_labels_window")]
    pub labels_window: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFeatures {
    /// Numeric feature columns (int, float or bool), used as they are.
    #[serde(default)]
    pub numeric: Vec<String>,
    /// Text columns one-hot encoded with the levels seen in training (plus an `other` level).
    #[serde(default)]
    pub categorical: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    /// `classification` (binary; the score is the probability of the positive class) or `regression`.
    pub task: Task,
    /// `decision_tree` (classification), `linear` (regression), `random_forest` and `gbdt` (both).
    pub algorithm: String,
    /// Deepest split of a tree (gbdt: 0 = no limit, leaves bound it).
    #[serde(default = "default_max_depth", deserialize_with = "lenient::de")]
    pub max_depth: usize,
    /// Fewest training rows in a leaf.
    #[serde(default = "default_min_samples_leaf", deserialize_with = "lenient::de")]
    pub min_samples_leaf: usize,
    /// Trees in a random forest.
    #[serde(default = "default_trees", deserialize_with = "lenient::de")]
    pub trees: usize,
    /// gbdt: boosting rounds.
    #[serde(default = "default_max_trees", deserialize_with = "lenient::de")]
    pub max_trees: usize,
    /// gbdt: shrinkage of each tree.
    #[serde(default = "default_learning_rate", deserialize_with = "lenient::de")]
    pub learning_rate: f64,
    /// gbdt: leaves per tree (trees grow best-first).
    #[serde(default = "default_num_leaves", deserialize_with = "lenient::de")]
    pub num_leaves: usize,
    /// Deprecated (perpetual's complexity budget); accepted and ignored with a warning.
    #[serde(default)]
    pub budget: Option<toml::Value>,
    /// Deprecated (perpetual's memory plan); accepted and ignored with a warning.
    #[serde(default)]
    pub memory_limit_gb: Option<toml::Value>,
    /// Train on a seeded random sample of at most this many rows (0: all). Bounds training
    /// time and memory on a schedule; evaluation always uses the whole holdout. Default:
    /// 200000 for score jobs, every row for forecast jobs.
    #[serde(default, deserialize_with = "lenient::de_opt")]
    pub max_train_rows: Option<usize>,
    /// Forecast jobs: the methods the backtest chooses from: `model`, `naive_day`,
    /// `naive_week`, `blend`.
    #[serde(default = "default_candidates")]
    pub candidates: Vec<ForecastMethod>,
    /// Score jobs: the latest fraction of rows (by `input.time`) held out for evaluation.
    #[serde(default = "default_holdout", deserialize_with = "lenient::de")]
    pub holdout_fraction: f64,
    #[serde(default = "default_seed", deserialize_with = "lenient::de")]
    pub seed: u64,
    /// `always`, `never` (load the champion) or an age such as `24h`.
    #[serde(default = "default_retrain")]
    pub retrain: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawForecast {
    /// Steps to forecast.
    #[serde(default = "default_horizon", deserialize_with = "lenient::de")]
    pub horizon: usize,
    /// Step length, such as `1h`.
    #[serde(default = "default_step")]
    pub step: String,
    /// Lagged targets, in steps.
    #[serde(default = "default_lags")]
    pub lags: Vec<usize>,
    /// Rolling mean and standard deviation windows, in steps (ending one step back).
    #[serde(default = "default_rolling")]
    pub rolling: Vec<usize>,
    /// Seasonal means, in days: `[7]` is the mean of the same time of day over the last 7 days
    /// (the values 24, 48, ... 168 steps back for hourly data); `[]` for none; `"auto"` (the
    /// default) for `[3, 7]` when the series follow a daily routine, decided at each training.
    #[serde(default = "default_auto")]
    pub seasonal_rolling: toml::Value,
    /// Any of `hour`, `dow`, `weekend`.
    #[serde(default = "default_calendar")]
    pub calendar: Vec<Calendar>,
    /// Series with fewer observed steps get no model forecast (a seasonal-naive one when
    /// possible), counted and reported.
    #[serde(default = "default_min_history", deserialize_with = "lenient::de")]
    pub min_history: usize,
    /// Gaps of at most this many missing steps are filled by linear interpolation.
    #[serde(default = "default_max_gap", deserialize_with = "lenient::de")]
    pub max_gap: usize,
    /// Coverage of the prediction interval, from backtest residuals per step.
    #[serde(default = "default_interval", deserialize_with = "lenient::de")]
    pub interval: f64,
    /// `auto` (the backtest picks), `recursive` or `direct`.
    #[serde(default = "default_strategy")]
    pub strategy: Strategy,
    /// `per_series` (each series gets the method that did best on its own backtest) or `job`.
    #[serde(default = "default_selection")]
    pub selection: Selection,
    /// Rolling-origin backtest windows, the last one ending at each series' end: a number, or
    /// `auto` (4 on large jobs, up to 14 on small ones; see `BacktestWindows::Auto`).
    #[serde(default = "default_auto")]
    pub backtest_windows: toml::Value,
    /// Steps between backtest origins (default: the horizon).
    #[serde(default, deserialize_with = "lenient::de_opt")]
    pub backtest_step: Option<usize>,
    /// Scale each series to mean 0 and standard deviation 1 over its recent training window,
    /// so one model serves series of any size and level.
    #[serde(default = "default_true", deserialize_with = "lenient::de")]
    pub scale: bool,
    /// Seasonal differencing: `auto` (the backtest decides, with a season of a day), 0 (off),
    /// or the season in steps: the model predicts y(t) - y(t - season).
    #[serde(default = "default_auto")]
    pub difference: toml::Value,
    /// Steps a series' last reading may lie before as_of and still be forecast from its end
    /// (default: the horizon).
    #[serde(default, deserialize_with = "lenient::de_opt")]
    pub max_stale: Option<usize>,
    /// Refit the served model on all rows after the backtest.
    #[serde(default = "default_true", deserialize_with = "lenient::de")]
    pub refit: bool,
    /// Let the backtest choose the mean of its best model variant and that variant's partner
    /// (the other strategy on the same differencing; each fitted and refitted on its own) when
    /// that mean's MAE is at least 2% below the best variant's.
    #[serde(default = "default_true", deserialize_with = "lenient::de")]
    pub ensemble: bool,
    /// Rows each backtest fit samples: enough to rank the variants and methods, few enough
    /// that trying four variants stays cheap on large jobs.
    #[serde(default = "default_backtest_rows", deserialize_with = "lenient::de")]
    pub backtest_rows: usize,
    /// Keep a sub-daily model's forecasts within what each series did at the same time of day
    /// over the last four weeks, widened by a tenth of that range.
    #[serde(default = "default_true", deserialize_with = "lenient::de")]
    pub envelope: bool,
    /// The covariates the backtest's forecasts read after each origin: `served` (the future
    /// SQL run as of that origin, what a run then would have served) or `observed` (the
    /// covariates as they were later observed: only for future SQL that cannot look back).
    #[serde(default)]
    pub backtest_covariates: BacktestCovariates,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGate {
    /// Absolute bounds on holdout metrics, such as `"auc >= 0.7"` or `"mae <= 2.5"`.
    #[serde(default)]
    pub require: Vec<String>,
    /// `baseline` and/or `champion`: the candidate must be at least as good (within `tolerance`).
    #[serde(default)]
    pub must_beat: Vec<String>,
    /// Relative slack for `must_beat`, e.g. 0.02 accepts a candidate 2% worse.
    #[serde(default, deserialize_with = "lenient::de")]
    pub tolerance: f64,
    /// Promote a passing candidate at once; `false` waits for `prescore models promote`.
    #[serde(default = "default_true", deserialize_with = "lenient::de")]
    pub auto_promote: bool,
    /// Refuse to publish (exit 3) when any feature's, or the score's, PSI against the model's
    /// training data exceeds this (e.g. 0.25). Forecast jobs: the target, the covariates and
    /// the forecasts.
    #[serde(default, deserialize_with = "lenient::de_opt")]
    pub max_psi: Option<f64>,
    /// Score jobs: refuse to publish (exit 3) when the mean score moved further than this from
    /// its mean on the model's holdout (in score units: 0.05 is five points of probability).
    #[serde(default, deserialize_with = "lenient::de_opt")]
    pub max_score_shift: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutput {
    /// Results table, created when missing.
    pub table: String,
    /// Classification: the score at or above which `label` is the positive class.
    #[serde(default = "default_threshold", deserialize_with = "lenient::de")]
    pub threshold: f64,
    /// `upsert` (default) or `replace`.
    #[serde(default)]
    pub write: WriteMode,
    /// Regression score jobs: the coverage of `score_lo`..`score_hi` (default 0.8).
    #[serde(default, deserialize_with = "lenient::de_opt")]
    pub interval: Option<f64>,
    /// Regression score jobs: the lowest possible value of the target (e.g. 0 for revenue).
    /// A lower prediction, or interval bound, is raised to it.
    #[serde(default, deserialize_with = "lenient::de_opt")]
    pub min_score: Option<f64>,
    /// Keep every published row in `<table>_history`, keyed by the row's key and `as_of`, for
    /// this long (`"90d"`); `"0"` keeps none. Default: 90 days for forecasts, none for score
    /// jobs.
    #[serde(default)]
    pub keep_history: Option<String>,
}

fn default_warehouse() -> String {
    crate::warehouse::DEFAULT_URL.into()
}
fn default_retry_attempts() -> u32 {
    3
}
fn default_retry_backoff() -> String {
    "1s".into()
}
fn default_timeout() -> String {
    "50m".into()
}
fn default_lock_timeout() -> String {
    "30s".into()
}
fn default_lock_lease() -> String {
    "60s".into()
}
fn default_min_rows() -> usize {
    1
}
fn default_min_entities_ratio() -> f64 {
    0.5
}
fn default_labels_window() -> String {
    "35d".into()
}
fn default_max_depth() -> usize {
    8
}
fn default_min_samples_leaf() -> usize {
    20
}
fn default_trees() -> usize {
    50
}
fn default_max_trees() -> usize {
    100
}
fn default_learning_rate() -> f64 {
    0.1
}
fn default_num_leaves() -> usize {
    31
}
fn default_holdout() -> f64 {
    0.2
}
fn default_seed() -> u64 {
    42
}
fn default_retrain() -> String {
    "always".into()
}
fn default_horizon() -> usize {
    24
}
fn default_step() -> String {
    "1h".into()
}
fn default_lags() -> Vec<usize> {
    vec![1, 2, 3, 24, 168]
}
fn default_rolling() -> Vec<usize> {
    vec![24]
}
fn default_calendar() -> Vec<Calendar> {
    vec![Calendar::Hour, Calendar::Dow, Calendar::Weekend]
}
fn default_min_history() -> usize {
    336
}
fn default_max_gap() -> usize {
    3
}
fn default_interval() -> f64 {
    0.8
}
/// `"auto"`: the default of the settings a training run decides from the data.
fn default_auto() -> toml::Value {
    toml::Value::String("auto".into())
}
fn default_backtest_rows() -> usize {
    100_000
}
fn default_strategy() -> Strategy {
    Strategy::Auto
}
fn default_selection() -> Selection {
    Selection::PerSeries
}
fn default_candidates() -> Vec<ForecastMethod> {
    vec![
        ForecastMethod::Model,
        ForecastMethod::NaiveDay,
        ForecastMethod::NaiveWeek,
        ForecastMethod::Blend,
    ]
}
fn default_true() -> bool {
    true
}
fn default_threshold() -> f64 {
    0.5
}

/// TOML → table → `${VAR}` expanded in every string → typed structs (unknown keys rejected).
#[cfg(test)]
pub(super) fn parse(text: &str, env: &dyn Env) -> Result<RawConfig, ParseError> {
    parse_expanded(text, env).map(|(raw, _)| raw)
}

/// [`parse`], also returning what `${VAR}` expanded to, for [`Expansion::scrub`].
pub(super) fn parse_expanded(
    text: &str,
    env: &dyn Env,
) -> Result<(RawConfig, Vec<Expansion>), ParseError> {
    let mut table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ParseError::Syntax(e.to_string().trim_end().to_string()))?;
    let mut problems = Vec::new();
    let mut expansions = Vec::new();
    for (k, v) in table.iter_mut() {
        expand_value(k, v, env, &mut problems, &mut expansions);
    }
    if !problems.is_empty() {
        return Err(ParseError::Problems(problems));
    }
    match serde_path_to_error::deserialize(toml::Value::Table(table)) {
        Ok(raw) => Ok((raw, expansions)),
        Err(e) => {
            let key = e.path().to_string();
            let message = e.into_inner().to_string();
            let mut problems = vec![Problem {
                key: if key == "." {
                    "(top level)".into()
                } else {
                    key
                },
                message: message.trim_end().to_string(),
            }];
            Expansion::scrub(&mut problems, &expansions);
            Err(ParseError::Problems(problems))
        }
    }
}

/// A config value that held `${VAR}`: where, as written, and what it became. Its value may be
/// a secret (the warehouse URL), so problems never quote it: they quote the value as written.
pub(super) struct Expansion {
    path: String,
    written: String,
    value: String,
}

impl Expansion {
    /// Replaces every expanded value in `problems` by the text as written (`${DATABASE_URL}`):
    /// at the value's own key always, elsewhere when the value is long enough to be told apart
    /// from ordinary words and numbers.
    pub(super) fn scrub(problems: &mut [Problem], expansions: &[Expansion]) {
        for p in problems.iter_mut() {
            for e in expansions {
                if e.value.is_empty() || (p.key != e.path && e.value.chars().count() < 6) {
                    continue;
                }
                let quoted = format!("{:?}", e.value);
                let escaped = &quoted[1..quoted.len() - 1];
                p.message = p
                    .message
                    .replace(escaped, &e.written)
                    .replace(&e.value, &e.written);
            }
        }
    }
}

fn expand_value(
    path: &str,
    v: &mut toml::Value,
    env: &dyn Env,
    problems: &mut Vec<Problem>,
    expansions: &mut Vec<Expansion>,
) {
    match v {
        toml::Value::String(s) => match expand(s, env) {
            Ok(e) if e != *s => {
                expansions.push(Expansion {
                    path: path.to_string(),
                    written: s.clone(),
                    value: e.clone(),
                });
                *s = e;
            }
            Ok(_) => {}
            Err(message) => problems.push(Problem {
                key: path.to_string(),
                message,
            }),
        },
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_value(&format!("{path}[{i}]"), item, env, problems, expansions);
            }
        }
        toml::Value::Table(t) => {
            for (k, item) in t.iter_mut() {
                expand_value(&format!("{path}.{k}"), item, env, problems, expansions);
            }
        }
        _ => {}
    }
}

struct Problems(Vec<Problem>);

impl Problems {
    fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    fn ident(&mut self, key: &str, name: &str) -> Option<Ident> {
        match Ident::new(name) {
            Ok(i) => Some(i),
            Err(e) => {
                self.push(key, e.to_string());
                None
            }
        }
    }

    /// A duration of at most [`LONGEST_DURATION`]: longer ones are typos, and overflow the
    /// date arithmetic they feed.
    fn duration(&mut self, key: &str, text: &str) -> Option<Duration> {
        self.duration_at_most(key, text, LONGEST_DURATION, "36500d (100 years)")
    }

    fn duration_at_most(
        &mut self,
        key: &str,
        text: &str,
        max: Duration,
        max_text: &str,
    ) -> Option<Duration> {
        let d = parse_duration(text);
        match d {
            None => self.push(
                key,
                format!("{text:?} is not a duration such as `1s`, `30m` or `24h`"),
            ),
            Some(d) if d > max => {
                self.push(key, format!("{text:?} is longer than {max_text}"));
                return None;
            }
            Some(_) => {}
        }
        d
    }
}

/// The longest duration any key accepts.
const LONGEST_DURATION: Duration = Duration::from_secs(36_500 * 86_400);

/// The longest `job.timeout`, `lock_timeout` or `statement_timeout`.
const LONGEST_TIMEOUT: Duration = Duration::from_secs(7 * 86_400);

/// The longest first retry back-off (it doubles with each attempt).
const LONGEST_BACKOFF: Duration = Duration::from_secs(3_600);

impl Problems {}

/// The one validation pass: collects every problem, then either all are reported or a `Job`
/// is built. Reads the SQL files (relative to the config) so a missing file is reported here.
pub(super) fn validate(raw: RawConfig, path: &Path, base: &Path) -> Result<Job, Vec<Problem>> {
    let mut p = Problems(Vec::new());
    let job = validate_job(&raw.job, &mut p);
    let input = validate_input(&raw, base, &mut p);
    validate_features(&raw, &mut p);
    let (model, retrain) = validate_model(&raw.model, raw.job.kind, &mut p);
    let kind = validate_kind(&raw, base, &mut p);
    let gate = validate_gate(&raw.gate, raw.model.task, &mut p);
    let output = validate_output(&raw.output, raw.job.kind, raw.model.task, &mut p);
    match (job, input, model, kind, output) {
        (
            Some((warehouse, retry_backoff, limits)),
            Some(input),
            Some(model),
            Some(kind),
            Some(output),
        ) if p.0.is_empty() => Ok(Job {
            name: raw.job.name,
            kind,
            warehouse: Secret::new(warehouse),
            threads: raw.job.threads,
            retry_attempts: raw.job.retry_attempts.max(1),
            retry_backoff,
            limits,
            registry_keep: raw.registry.keep,
            input,
            features: FeatureSpec {
                numeric: raw.features.numeric,
                categorical: raw.features.categorical,
            },
            model,
            retrain,
            gate,
            output,
            config_path: path.to_path_buf(),
        }),
        _ => Err(p.0),
    }
}

/// `[job]`: the name, the warehouse URL and the retry policy.
fn validate_job(j: &RawJob, p: &mut Problems) -> Option<(String, Duration, Limits)> {
    if j.name.is_empty()
        || !j
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        p.push(
            "job.name",
            format!("{:?} must be non-empty letters, digits, `_` or `-`", j.name),
        );
    }
    let warehouse = j.warehouse.trim().to_string();
    if Dialect::from_url(&warehouse).is_none() {
        p.push(
            "job.warehouse",
            format!(
                "unsupported URL scheme in {:?}: use sqlite://FILE or postgres://…",
                crate::warehouse::redact(&warehouse)
            ),
        );
    }
    let backoff =
        p.duration_at_most("job.retry_backoff", &j.retry_backoff, LONGEST_BACKOFF, "1h")?;
    let limits = validate_limits(j, p)?;
    Some((warehouse, backoff, limits))
}

/// `job.timeout`, `job.lock_timeout`, `job.statement_timeout` and `job.lock_lease`: positive,
/// at most a week.
fn validate_limits(j: &RawJob, p: &mut Problems) -> Option<Limits> {
    let mut positive = |key: &str, text: &str| {
        let d = p.duration_at_most(key, text, LONGEST_TIMEOUT, "7d")?;
        if d < Duration::from_millis(1) {
            p.push(key, format!("{text:?} must be at least 1ms"));
            return None;
        }
        Some(d)
    };
    let run = positive("job.timeout", &j.timeout);
    let lock = positive("job.lock_timeout", &j.lock_timeout);
    let statement = match &j.statement_timeout {
        Some(t) => positive("job.statement_timeout", t).map(Some),
        None => Some(None),
    };
    let lease = p.duration_at_most("job.lock_lease", &j.lock_lease, LONGEST_TIMEOUT, "7d");
    let lease = lease.and_then(|d| {
        if d < Duration::from_secs(1) {
            p.push(
                "job.lock_lease",
                format!("{:?} must be at least 1s", j.lock_lease),
            );
            return None;
        }
        Some(d)
    });
    let (run, lock, statement, lease) = (run?, lock?, statement?, lease?);
    Some(Limits {
        run,
        lock,
        statement: statement.unwrap_or(run),
        lease,
    })
}

/// Reads one SQL file, relative to the config or to the working directory.
fn read_sql(p: &mut Problems, base: &Path, key: &str, rel: &str) -> Option<Sql> {
    let file = base.join(rel);
    // Configs live in configs/ and SQL in sql/: also accept paths relative to the working
    // directory, which is how people write them.
    let candidates = [file.clone(), PathBuf::from(rel)];
    for c in &candidates {
        if c.is_dir() {
            p.push(
                key,
                format!("{} is a directory, not an SQL file", c.display()),
            );
            return None;
        }
        if let Ok(text) = std::fs::read_to_string(c) {
            if text.trim().is_empty() {
                p.push(key, format!("{} is empty", c.display()));
                return None;
            }
            if let Err(e) = crate::warehouse::params::check(&text) {
                p.push(key, e);
                return None;
            }
            if let Err(e) = crate::warehouse::params::check_single_query(&text) {
                p.push(key, format!("{} {e}", c.display()));
                return None;
            }
            return Some(Sql {
                text,
                path: c.clone(),
            });
        }
    }
    p.push(
        key,
        format!(
            "SQL file {rel:?} not found (looked at {} and {})",
            file.display(),
            rel
        ),
    );
    None
}

/// `[input]`: the training SQL, key and target, and the contract every column keeps.
fn validate_input(raw: &RawConfig, base: &Path, p: &mut Problems) -> Option<Input> {
    let i = &raw.input;
    let train_sql = read_sql(p, base, "input.train_sql", &i.train_sql);
    let key = p.ident("input.key", &i.key);
    let target = p.ident("input.target", &i.target);
    if i.columns.is_empty() {
        p.push(
            "input.columns",
            "declare every column the SQL returns, with its type",
        );
    }
    for name in i.columns.keys() {
        if let Err(e) = Ident::new(name) {
            p.push(format!("input.columns.{name}"), e.to_string());
        }
    }
    declared(
        p,
        &i.columns,
        "input.key",
        &i.key,
        &[ColumnType::Int, ColumnType::Text],
    );
    let target_types: &[ColumnType] = match raw.model.task {
        Task::Classification => &[ColumnType::Bool, ColumnType::Int],
        Task::Regression => &[ColumnType::Int, ColumnType::Float],
    };
    declared(p, &i.columns, "input.target", &i.target, target_types);
    for (name, frac) in &i.max_null_fraction {
        if !i.columns.contains_key(name) {
            p.push(
                format!("input.max_null_fraction.{name}"),
                "not a declared column",
            );
        }
        if !(0.0..=1.0).contains(frac) {
            p.push(
                format!("input.max_null_fraction.{name}"),
                format!("{frac} is not a fraction between 0 and 1"),
            );
        }
    }
    if !(0.0..=1.0).contains(&i.min_entities_ratio) {
        p.push("input.min_entities_ratio", "must be between 0 and 1");
    }
    let labels = validate_labels(raw, base, p);
    Some(Input {
        train_sql: train_sql?,
        key: key?,
        target: target?,
        columns: i.columns.clone(),
        min_rows: i.min_rows,
        max_null_fraction: i.max_null_fraction.clone(),
        min_entities_ratio: i.min_entities_ratio,
        labels: labels?,
    })
}

/// `input.labels_sql` and `input.labels_window`: score jobs that keep their issued scores.
fn validate_labels(raw: &RawConfig, base: &Path, p: &mut Problems) -> Option<Option<Labels>> {
    let i = &raw.input;
    let window = p.duration("input.labels_window", &i.labels_window);
    let Some(rel) = &i.labels_sql else {
        return Some(None);
    };
    if raw.job.kind != KindTag::Score {
        p.push(
            "input.labels_sql",
            "labels are for score jobs: a forecast job's actuals come from input.train_sql",
        );
    }
    let keeps = raw.output.keep_history.as_deref().map(str::trim);
    if matches!(keeps, None | Some("0" | "off" | "none")) {
        p.push(
            "input.labels_sql",
            format!(
                "needs output.keep_history (such as \"90d\"): the issued scores are read from {}_history",
                raw.output.table
            ),
        );
    } else if let (Some(kept), Some(w)) = (keeps.and_then(parse_duration), window) {
        if w > kept {
            p.push(
                "input.labels_window",
                format!(
                    "{:?} is longer than output.keep_history ({:?}): the scores would be pruned before their labels arrive",
                    i.labels_window,
                    keeps.unwrap_or_default()
                ),
            );
        }
    }
    let sql = read_sql(p, base, "input.labels_sql", rel)?;
    Some(Some(Labels {
        sql,
        window: window?,
    }))
}

/// Checks that `name` is a declared column of one of the `allowed` types.
fn declared(
    p: &mut Problems,
    cols: &BTreeMap<String, ColumnType>,
    key: &str,
    name: &str,
    allowed: &[ColumnType],
) {
    match cols.get(name) {
        None => p.push(
            key,
            format!("column {name:?} is not declared in [input.columns]"),
        ),
        Some(t) if !allowed.contains(t) => p.push(
            key,
            format!(
                "column {name:?} is declared {} but must be one of: {}",
                t.name(),
                allowed
                    .iter()
                    .map(|a| a.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        _ => {}
    }
}

/// `[features]`: declared columns of usable types, never the target.
fn validate_features(raw: &RawConfig, p: &mut Problems) {
    let (f, cols) = (&raw.features, &raw.input.columns);
    for (i, name) in f.numeric.iter().enumerate() {
        declared(
            p,
            cols,
            &format!("features.numeric[{i}]"),
            name,
            &[ColumnType::Int, ColumnType::Float, ColumnType::Bool],
        );
    }
    for (i, name) in f.categorical.iter().enumerate() {
        declared(
            p,
            cols,
            &format!("features.categorical[{i}]"),
            name,
            &[ColumnType::Text, ColumnType::Int, ColumnType::Bool],
        );
    }
    if raw.job.kind == KindTag::Score && f.numeric.is_empty() && f.categorical.is_empty() {
        p.push(
            "features",
            "a score job needs at least one numeric or categorical feature",
        );
    }
    if f.numeric
        .iter()
        .chain(&f.categorical)
        .any(|c| *c == raw.input.target)
    {
        p.push(
            "features",
            format!(
                "the target {:?} cannot also be a feature (leakage)",
                raw.input.target
            ),
        );
    }
}

/// `[model]`: the algorithm for the task, its bounds and the retrain policy.
fn validate_model(
    m: &RawModel,
    kind: KindTag,
    p: &mut Problems,
) -> (Option<ModelSpec>, RetrainPolicy) {
    let algorithm = match m.algorithm.as_str() {
        "decision_tree" => Some(Algorithm::DecisionTree),
        "random_forest" => Some(Algorithm::RandomForest),
        "linear" => Some(Algorithm::Linear),
        "gbdt" => Some(Algorithm::Gbdt),
        other => {
            p.push(
                "model.algorithm",
                format!(
                    "unknown algorithm {other:?}: use decision_tree, random_forest, linear or gbdt"
                ),
            );
            None
        }
    };
    let fits = |a: Algorithm| match m.task {
        Task::Classification => a != Algorithm::Linear,
        Task::Regression => a != Algorithm::DecisionTree,
    };
    if let Some(a) = algorithm.filter(|a| !fits(*a)) {
        p.push(
            "model.algorithm",
            format!(
                "{} does not do {}: classification takes decision_tree, random_forest or gbdt; regression takes linear, random_forest or gbdt",
                a.name(),
                m.task.name()
            ),
        );
    }
    if m.budget.is_some() || m.memory_limit_gb.is_some() {
        tracing::warn!(
            "model.budget and model.memory_limit_gb are ignored: they tuned the previous gbdt \
             library; prescore's own gbdt takes max_trees, learning_rate and num_leaves"
        );
    }
    if !(1..=40).contains(&m.max_depth) {
        p.push("model.max_depth", "must be between 1 and 40");
    }
    if m.min_samples_leaf == 0 {
        p.push("model.min_samples_leaf", "must be at least 1");
    }
    if !(1..=1000).contains(&m.trees) {
        p.push("model.trees", "must be between 1 and 1000");
    }
    if !(1..=10_000).contains(&m.max_trees) {
        p.push("model.max_trees", "must be between 1 and 10000");
    }
    if !(m.learning_rate > 0.0 && m.learning_rate <= 1.0) {
        p.push("model.learning_rate", "must be in (0, 1]");
    }
    if !(2..=4096).contains(&m.num_leaves) {
        p.push("model.num_leaves", "must be between 2 and 4096");
    }
    if !(m.holdout_fraction > 0.0 && m.holdout_fraction < 0.9) {
        p.push("model.holdout_fraction", "must be between 0 and 0.9");
    }
    let retrain = match m.retrain.as_str() {
        "always" => RetrainPolicy::Always,
        "never" => RetrainPolicy::Never,
        other if parse_duration(other).is_none() => {
            p.push(
                "model.retrain",
                format!("{other:?}: use `always`, `never` or an age such as `24h`"),
            );
            RetrainPolicy::Always
        }
        other => p
            .duration("model.retrain", other)
            .map_or(RetrainPolicy::Always, RetrainPolicy::OlderThan),
    };
    let spec = algorithm.map(|algorithm| ModelSpec {
        task: m.task,
        algorithm,
        max_depth: m.max_depth,
        min_samples_leaf: m.min_samples_leaf,
        trees: m.trees,
        max_trees: m.max_trees,
        learning_rate: m.learning_rate,
        num_leaves: m.num_leaves,
        max_train_rows: m.max_train_rows.unwrap_or(match kind {
            KindTag::Score => 200_000,
            KindTag::Forecast => 0,
        }),
        holdout_fraction: m.holdout_fraction,
        seed: m.seed,
    });
    (spec, retrain)
}

/// What depends on `job.kind`: the second SQL file, the time column, `[forecast]`.
fn validate_kind(raw: &RawConfig, base: &Path, p: &mut Problems) -> Option<JobKind> {
    let i = &raw.input;
    let time = i.time.as_deref().and_then(|t| {
        declared(p, &i.columns, "input.time", t, &[ColumnType::Timestamp]);
        p.ident("input.time", t)
    });
    let second = i
        .score_sql
        .as_deref()
        .and_then(|s| read_sql(p, base, "input.score_sql", s));
    match raw.job.kind {
        KindTag::Score => {
            if raw.forecast.is_some() {
                p.push(
                    "forecast",
                    "a [forecast] table needs job.kind = \"forecast\"",
                );
            }
            if i.score_sql.is_none() {
                p.push(
                    "input.score_sql",
                    "a score job needs the SQL of the rows to score",
                );
            }
            Some(JobKind::Score {
                score_sql: second?,
                time,
            })
        }
        KindTag::Forecast => {
            if i.time.is_none() {
                p.push(
                    "input.time",
                    "a forecast job needs the series timestamp column",
                );
            }
            if raw.model.task != Task::Regression {
                p.push("model.task", "a forecast job is a regression");
            }
            let default;
            let f = match &raw.forecast {
                Some(f) => f,
                None => {
                    default = toml::from_str::<RawForecast>("").expect("defaults parse");
                    &default
                }
            };
            let spec = validate_forecast(f, &raw.model.candidates, p);
            if i.score_sql.is_some() && second.is_none() {
                return None;
            }
            Some(JobKind::Forecast {
                spec: spec?,
                time: time?,
                future_sql: second,
            })
        }
    }
}

/// Longest step accepted: a week.
const MAX_STEP_SECONDS: u64 = 7 * 86_400;

/// `[forecast]`: horizon, step, lags and windows, history and gap policy, interval.
fn validate_forecast(
    f: &RawForecast,
    candidates: &[ForecastMethod],
    p: &mut Problems,
) -> Option<ForecastSpec> {
    if !(1..=24 * 14).contains(&f.horizon) {
        p.push("forecast.horizon", "must be between 1 and 336 steps");
    }
    let step = p.duration("forecast.step", &f.step).and_then(|d| {
        let ok = d.as_secs() >= 1 && d.as_secs() <= MAX_STEP_SECONDS && d.subsec_nanos() == 0;
        if !ok {
            p.push(
                "forecast.step",
                format!(
                    "{:?} must be a whole number of seconds between 1s and 7d",
                    f.step
                ),
            );
        }
        ok.then_some(d.as_secs() as i64)
    });
    if f.lags.is_empty() || f.lags.contains(&0) {
        p.push("forecast.lags", "give at least one lag, each at least 1");
    }
    if f.lags.iter().chain(&f.rolling).any(|&l| l > 10_000) {
        p.push(
            "forecast.lags",
            "lags and rolling windows must be at most 10000 steps",
        );
    }
    if f.rolling.contains(&0) || f.rolling.contains(&1) {
        p.push(
            "forecast.rolling",
            "rolling windows must be at least 2 steps",
        );
    }
    let day = step.map_or(24, steps_per_day);
    let seasonal = seasonal_means(f, day, p);
    let fixed_seasonal = match &seasonal {
        Some(SeasonalMeans::Days(days)) => days.as_slice(),
        _ => &[],
    };
    let longest = f
        .lags
        .iter()
        .chain(f.rolling.iter())
        .copied()
        .chain(fixed_seasonal.iter().map(|n| n * day))
        .max()
        .unwrap_or(1);
    if f.min_history <= longest + f.horizon {
        p.push(
            "forecast.min_history",
            format!(
                "must exceed the longest lag or window ({longest}) plus the horizon ({})",
                f.horizon
            ),
        );
    }
    if !(f.interval > 0.0 && f.interval < 1.0) {
        p.push(
            "forecast.interval",
            "must be a coverage between 0 and 1, such as 0.8",
        );
    }
    let backtest_windows = match &f.backtest_windows {
        toml::Value::String(v) if v.trim() == "auto" => Some(BacktestWindows::Auto),
        toml::Value::Integer(n) if (1..=100).contains(n) => {
            Some(BacktestWindows::Fixed(*n as usize))
        }
        toml::Value::String(v) => match v.trim().parse::<usize>() {
            Ok(n) if (1..=100).contains(&n) => Some(BacktestWindows::Fixed(n)),
            _ => None,
        },
        _ => None,
    };
    if backtest_windows.is_none() {
        p.push(
            "forecast.backtest_windows",
            format!(
                "{}: use \"auto\" or a number of windows from 1 to 100",
                f.backtest_windows
            ),
        );
    }
    let backtest_step = f.backtest_step.unwrap_or(f.horizon);
    if backtest_step == 0 {
        p.push("forecast.backtest_step", "must be at least 1 step");
    }
    let difference = match &f.difference {
        toml::Value::String(v) if v.trim() == "auto" => Some(Differencing::Auto),
        toml::Value::Integer(0) => Some(Differencing::Off),
        toml::Value::Integer(n) if (1..=10_000).contains(n) => {
            Some(Differencing::Season(*n as usize))
        }
        toml::Value::String(v) => match v.trim().parse::<usize>() {
            Ok(0) => Some(Differencing::Off),
            Ok(n) if n <= 10_000 => Some(Differencing::Season(n)),
            _ => None,
        },
        _ => None,
    };
    if difference.is_none() {
        p.push(
            "forecast.difference",
            format!(
                "{}: use \"auto\", 0 (off) or a season of 1 to 10000 steps",
                f.difference
            ),
        );
    }
    if candidates.is_empty() {
        p.push("model.candidates", "give at least one candidate method");
    }
    Some(ForecastSpec {
        horizon: f.horizon,
        step_seconds: step?,
        lags: f.lags.clone(),
        rolling: f.rolling.clone(),
        seasonal_rolling: seasonal?,
        calendar: f.calendar.clone(),
        min_history: f.min_history,
        max_gap: f.max_gap,
        interval: f.interval,
        strategy: f.strategy,
        selection: f.selection,
        candidates: candidates.to_vec(),
        backtest_windows: backtest_windows?,
        backtest_step,
        scale: f.scale,
        difference: difference?,
        max_stale: f.max_stale.unwrap_or(f.horizon),
        refit: f.refit,
        ensemble: f.ensemble,
        backtest_rows: f.backtest_rows.max(1_000),
        envelope: f.envelope,
        backtest_covariates: f.backtest_covariates,
    })
}

/// `forecast.seasonal_rolling`: a list of windows in days (each at least 2, reaching at most
/// 10000 steps back) or `"auto"`, which may use those of [`AUTO_SEASONAL_DAYS`] that a
/// sub-daily step and `min_history` leave room for (none for a daily or longer step).
fn seasonal_means(f: &RawForecast, day: usize, p: &mut Problems) -> Option<SeasonalMeans> {
    const KEY: &str = "forecast.seasonal_rolling";
    let days: Vec<usize> = match &f.seasonal_rolling {
        toml::Value::String(v) if v.trim() == "auto" => {
            let fits = |n: &usize| day >= 2 && n * day + f.horizon < f.min_history;
            let days = AUTO_SEASONAL_DAYS.iter().copied().filter(fits).collect();
            return Some(SeasonalMeans::Auto(days));
        }
        toml::Value::Array(items) => {
            let whole: Option<Vec<usize>> = (items.iter())
                .map(|v| v.as_integer().and_then(|n| usize::try_from(n).ok()))
                .collect();
            match whole {
                Some(days) if days.iter().all(|&n| n >= 2) => days,
                _ => {
                    p.push(
                        KEY,
                        "seasonal windows must be whole numbers of at least 2 days",
                    );
                    return None;
                }
            }
        }
        other => {
            p.push(
                KEY,
                format!("{other}: use \"auto\" or a list of days such as [3, 7] ([] for none)"),
            );
            return None;
        }
    };
    if days.iter().any(|&n| n * day > 10_000) {
        p.push(KEY, "seasonal windows must reach at most 10000 steps back");
        return None;
    }
    Some(SeasonalMeans::Days(days))
}

/// `[output]`: the results table (never one of prescore's own), the label threshold and the
/// prediction interval of regression score jobs.
fn validate_output(o: &RawOutput, kind: KindTag, task: Task, p: &mut Problems) -> Option<Output> {
    let table = p.ident("output.table", &o.table);
    if let Some(t) = &table {
        if t.base().to_ascii_lowercase().starts_with("prescore_") {
            p.push(
                "output.table",
                "names starting with prescore_ are reserved for prescore's own tables",
            );
        }
    }
    if !(0.0..=1.0).contains(&o.threshold) {
        p.push("output.threshold", "must be between 0 and 1");
    }
    let interval = match (kind, task, o.interval) {
        (KindTag::Score, Task::Regression, i) => Some(i.unwrap_or_else(default_interval)),
        (_, _, None) => None,
        (KindTag::Forecast, _, Some(_)) => {
            p.push(
                "output.interval",
                "a forecast job sets its interval in forecast.interval",
            );
            None
        }
        (KindTag::Score, Task::Classification, Some(_)) => {
            p.push(
                "output.interval",
                "only regression jobs have prediction intervals (a classification score is a probability)",
            );
            None
        }
    };
    let regression_score = kind == KindTag::Score && task == Task::Regression;
    if o.min_score.is_some() && !regression_score {
        p.push(
            "output.min_score",
            "only regression score jobs have a lowest possible score",
        );
    }
    if o.min_score.is_some_and(|m| !m.is_finite()) {
        p.push("output.min_score", "must be a finite number");
    }
    if let Some(i) = interval.filter(|i| !(*i > 0.0 && *i < 1.0)) {
        p.push(
            "output.interval",
            format!("{i} must be a coverage between 0 and 1, such as 0.8"),
        );
    }
    let keep_history = match (o.keep_history.as_deref().map(str::trim), kind) {
        (None, KindTag::Forecast) => Some(Duration::from_secs(90 * 86_400)),
        (None, KindTag::Score) | (Some("0" | "off" | "none"), _) => None,
        (Some(text), _) => p.duration("output.keep_history", text),
    };
    let mut history_table = None;
    if let (Some(t), Some(_)) = (&table, keep_history) {
        match Ident::new(&format!("{t}_history")) {
            Ok(h) => history_table = Some(h),
            Err(_) => p.push(
                "output.keep_history",
                format!(
                    "the history table {t}_history would not be a valid name: shorten output.table"
                ),
            ),
        }
    }
    Some(Output {
        table: table?,
        threshold: o.threshold,
        write: o.write,
        interval,
        min_score: o.min_score.filter(|_| regression_score),
        keep_history,
        history_table,
    })
}

/// `[gate]`: absolute bounds on known metrics, what to beat, slack, promotion.
fn validate_gate(g: &RawGate, task: Task, p: &mut Problems) -> Gate {
    let known: &[&str] = match task {
        Task::Classification => &["auc", "accuracy", "log_loss"],
        Task::Regression => &["mae", "rmse", "r2", "smape"],
    };
    let mut bounds = Vec::new();
    for (i, r) in g.require.iter().enumerate() {
        let key = format!("gate.require[{i}]");
        let parsed = r
            .split_once(">=")
            .map(|(m, v)| (m, true, v))
            .or_else(|| r.split_once("<=").map(|(m, v)| (m, false, v)));
        match parsed {
            Some((m, at_least, v)) => {
                let metric = m.trim().to_string();
                if !known.contains(&metric.as_str()) {
                    p.push(
                        &key,
                        format!(
                            "unknown metric {metric:?} for this task: use {}",
                            known.join(", ")
                        ),
                    );
                }
                match v.trim().parse::<f64>() {
                    Ok(value) if value.is_finite() => bounds.push(Bound {
                        metric,
                        at_least,
                        value,
                    }),
                    _ => p.push(&key, format!("{:?} is not a number", v.trim())),
                }
            }
            None => p.push(
                &key,
                format!("{r:?}: write `metric >= value` or `metric <= value`"),
            ),
        }
    }
    let mut must_beat_baseline = false;
    let mut must_beat_champion = false;
    for (i, m) in g.must_beat.iter().enumerate() {
        match m.as_str() {
            "baseline" => must_beat_baseline = true,
            "champion" => must_beat_champion = true,
            other => p.push(
                format!("gate.must_beat[{i}]"),
                format!("{other:?}: use \"baseline\" or \"champion\""),
            ),
        }
    }
    if !(0.0..1.0).contains(&g.tolerance) {
        p.push("gate.tolerance", "must be between 0 and 1");
    }
    if g.max_psi.is_some_and(|m| !(m > 0.0 && m.is_finite())) {
        p.push("gate.max_psi", "must be a positive number, e.g. 0.25");
    }
    if g.max_score_shift
        .is_some_and(|m| !(m > 0.0 && m.is_finite()))
    {
        p.push(
            "gate.max_score_shift",
            "must be a positive number, e.g. 0.05",
        );
    }
    Gate {
        bounds,
        must_beat_baseline,
        must_beat_champion,
        tolerance: g.tolerance,
        auto_promote: g.auto_promote,
        max_psi: g.max_psi,
        max_score_shift: g.max_score_shift,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env() -> HashMap<String, String> {
        HashMap::new()
    }

    #[test]
    fn unknown_keys_are_named_with_their_path() {
        let text = r#"
[job]
name = "j"
kind = "score"
colour = "blue"
"#;
        match parse(text, &env()) {
            Err(ParseError::Problems(p)) => {
                assert_eq!(p[0].key, "job.colour");
                assert!(p[0].message.contains("colour"), "{:?}", p);
            }
            _ => panic!("expected a problem"),
        }
    }

    #[test]
    fn syntax_errors_give_the_line() {
        match parse("[job\nname=", &env()) {
            Err(ParseError::Syntax(m)) => assert!(m.contains("line 1"), "{m}"),
            _ => panic!("expected a syntax error"),
        }
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let dir = std::env::temp_dir().join(format!("prescore-raw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let text = r#"
[job]
name = "bad name"
kind = "score"
warehouse = "mysql://x"
[input]
train_sql = "missing.sql"
key = "id"
target = "y"
columns = { id = "int", y = "float" }
[features]
numeric = ["nope"]
[model]
task = "classification"
algorithm = "svm"
max_depth = 0
[output]
table = "bad;table"
"#;
        let raw = match parse(text, &env()) {
            Ok(r) => r,
            Err(_) => panic!("parses"),
        };
        let problems = validate(raw, &dir.join("c.toml"), &dir).unwrap_err();
        let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
        for k in [
            "job.name",
            "job.warehouse",
            "input.train_sql",
            "input.target",
            "features.numeric[0]",
            "model.algorithm",
            "model.max_depth",
            "input.score_sql",
            "output.table",
        ] {
            assert!(keys.contains(&k), "missing {k} in {keys:?}");
        }
    }

    #[test]
    fn intervals_and_min_scores_belong_to_regression_score_jobs() {
        let dir = std::env::temp_dir();
        let keys = |task: &str, output: &str| -> Vec<String> {
            let text = format!(
                "[job]\nname = \"j\"\nkind = \"score\"\n[input]\ntrain_sql = \"t.sql\"\n\
                 score_sql = \"s.sql\"\nkey = \"id\"\ntarget = \"y\"\n\
                 columns = {{ id = \"int\", y = \"float\" }}\n[model]\ntask = \"{task}\"\n\
                 algorithm = \"random_forest\"\n[output]\ntable = \"t\"\n{output}"
            );
            let raw = parse(&text, &env()).unwrap_or_else(|_| panic!("parses"));
            match validate(raw, &dir.join("c.toml"), &dir) {
                Ok(_) => Vec::new(),
                Err(p) => p.into_iter().map(|p| p.key).collect(),
            }
        };
        let k = keys("classification", "interval = 0.9\nmin_score = 0");
        assert!(k.contains(&"output.interval".to_string()), "{k:?}");
        assert!(k.contains(&"output.min_score".to_string()), "{k:?}");
        let k = keys("regression", "interval = 1.5\nmin_score = 0");
        assert!(k.contains(&"output.interval".to_string()), "{k:?}");
        assert!(!k.contains(&"output.min_score".to_string()), "{k:?}");
        let k = keys("regression", "interval = 0.9");
        assert!(!k.iter().any(|k| k.starts_with("output")), "{k:?}");
    }

    #[test]
    fn labels_belong_to_score_jobs_that_keep_their_scores_long_enough() {
        let dir = std::env::temp_dir();
        let problems = |kind: &str, input: &str, output: &str| -> Vec<String> {
            let text = format!(
                "[job]\nname = \"j\"\nkind = \"{kind}\"\n[input]\ntrain_sql = \"t.sql\"\n\
                 score_sql = \"s.sql\"\nkey = \"id\"\ntarget = \"y\"\ntime = \"t\"\n{input}\n\
                 columns = {{ id = \"int\", y = \"float\", t = \"timestamp\" }}\n[model]\n\
                 task = \"regression\"\nalgorithm = \"random_forest\"\n[output]\ntable = \"t\"\n{output}"
            );
            let raw = parse(&text, &env()).unwrap_or_else(|_| panic!("parses"));
            match validate(raw, &dir.join("c.toml"), &dir) {
                Ok(_) => Vec::new(),
                Err(p) => p
                    .into_iter()
                    .map(|p| format!("{}: {}", p.key, p.message))
                    .collect(),
            }
        };
        let labels = "labels_sql = \"l.sql\"";
        let about = |p: &[String], key: &str, text: &str| {
            p.iter().any(|m| m.starts_with(key) && m.contains(text))
        };
        let p = problems("score", labels, "");
        assert!(
            about(&p, "input.labels_sql", "needs output.keep_history"),
            "{p:?}"
        );
        let p = problems("forecast", labels, "keep_history = \"90d\"");
        assert!(about(&p, "input.labels_sql", "score jobs"), "{p:?}");
        let window = format!("{labels}\nlabels_window = \"60d\"");
        let p = problems("score", &window, "keep_history = \"30d\"");
        assert!(about(&p, "input.labels_window", "pruned"), "{p:?}");
        let p = problems("score", &window, "keep_history = \"90d\"");
        assert!(
            !p.iter().any(|m| m.starts_with("input.labels_window")),
            "{p:?}"
        );
    }

    /// A small forecast job with `forecast` added to its `[forecast]` section: its spec, or
    /// the problems as `key: message`.
    fn forecast_spec(forecast: &str) -> Result<ForecastSpec, Vec<String>> {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::write(dir.join("t.sql"), "SELECT 1").unwrap();
        let text = format!(
            "[job]\nname = \"j\"\nkind = \"forecast\"\n[input]\ntrain_sql = \"t.sql\"\n\
             key = \"id\"\ntarget = \"y\"\ntime = \"t\"\n\
             columns = {{ id = \"int\", y = \"float\", t = \"timestamp\" }}\n[model]\n\
             task = \"regression\"\nalgorithm = \"gbdt\"\n[output]\ntable = \"t\"\n\
             [forecast]\nlags = [1, 24]\nrolling = []\n{forecast}"
        );
        let raw = parse(&text, &env()).unwrap_or_else(|_| panic!("parses"));
        match validate(raw, &dir.join("c.toml"), dir) {
            Ok(job) => match job.kind {
                JobKind::Forecast { spec, .. } => Ok(spec),
                _ => panic!("a forecast job"),
            },
            Err(p) => Err(p
                .into_iter()
                .map(|p| format!("{}: {}", p.key, p.message))
                .collect()),
        }
    }

    #[test]
    fn backtest_windows_are_auto_by_default_a_number_or_a_named_error() {
        let windows = |f: &str| forecast_spec(f).map(|s| s.backtest_windows);
        assert_eq!(windows(""), Ok(BacktestWindows::Auto));
        assert_eq!(
            windows("backtest_windows = 6"),
            Ok(BacktestWindows::Fixed(6))
        );
        assert_eq!(
            windows("backtest_windows = \"6\""),
            Ok(BacktestWindows::Fixed(6))
        );
        for bad in ["0", "101", "\"weekly\"", "[4]"] {
            let p = windows(&format!("backtest_windows = {bad}")).unwrap_err();
            assert!(
                p.iter().any(|m| m.starts_with("forecast.backtest_windows")),
                "{bad}: {p:?}"
            );
        }
        // `auto`: the minimum on large jobs, the maximum on small ones, in between about
        // AUTO_BACKTEST_POINTS points.
        let auto = BacktestWindows::Auto;
        assert_eq!(auto.resolve(10_000, 24), 4);
        assert_eq!(auto.resolve(21, 24), 14);
        assert_eq!(auto.resolve(1_000, 24), 9);
        assert_eq!(auto.resolve(0, 24), 14);
        assert_eq!(BacktestWindows::Fixed(2).resolve(21, 24), 2);
        // A window past the minimum needs half of the series before its origin.
        assert!(auto.keeps(3, 10, 1_000));
        assert!(!auto.keeps(4, 499, 1_000));
        assert!(auto.keeps(4, 500, 1_000));
        assert!(BacktestWindows::Fixed(8).keeps(7, 10, 1_000));
    }

    #[test]
    fn seasonal_means_are_auto_by_default_a_list_or_a_named_error() {
        let spec = |f: &str| forecast_spec(f).map(|s| s.seasonal_rolling);
        assert_eq!(spec(""), Ok(SeasonalMeans::Auto(vec![3, 7])));
        // `auto` only offers the windows min_history leaves room for (3 x 24 + 24 < 100).
        assert_eq!(
            spec("seasonal_rolling = \"auto\"\nmin_history = 100"),
            Ok(SeasonalMeans::Auto(vec![3]))
        );
        // A daily step has no time of day to average.
        assert_eq!(spec("step = \"1d\""), Ok(SeasonalMeans::Auto(vec![])));
        assert_eq!(
            spec("seasonal_rolling = []"),
            Ok(SeasonalMeans::Days(vec![]))
        );
        assert_eq!(
            spec("seasonal_rolling = [2, 7]"),
            Ok(SeasonalMeans::Days(vec![2, 7]))
        );
        for bad in ["\"weekly\"", "[1]", "[\"3\"]", "[500]"] {
            let p = spec(&format!("seasonal_rolling = {bad}")).unwrap_err();
            assert!(
                p.iter().any(|m| m.starts_with("forecast.seasonal_rolling")),
                "{bad}: {p:?}"
            );
        }
        // A fixed list must fit in min_history; `auto` leaves out what does not.
        let p = spec("seasonal_rolling = [7]\nmin_history = 100").unwrap_err();
        assert!(
            p.iter().any(|m| m.starts_with("forecast.min_history")),
            "{p:?}"
        );
    }

    /// Property: random edits of a valid config never panic the parser or the validator;
    /// they either load or come back as errors.
    #[test]
    fn mutated_configs_never_panic() {
        use rand::{Rng, SeedableRng};
        let text = include_str!("../../configs/churn_daily.toml");
        let dir = std::env::temp_dir();
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let junk: Vec<char> = "[]{}=\"',.#\n x0-_$".chars().collect();
        for _ in 0..500 {
            let mut chars: Vec<char> = text.chars().collect();
            for _ in 0..rng.gen_range(1..6) {
                let at = rng.gen_range(0..chars.len());
                match rng.gen_range(0..3) {
                    0 => {
                        chars.remove(at);
                    }
                    1 => chars.insert(at, junk[rng.gen_range(0..junk.len())]),
                    _ => chars[at] = junk[rng.gen_range(0..junk.len())],
                }
            }
            let mutated: String = chars.into_iter().collect();
            if let Ok(raw) = parse(&mutated, &env()) {
                let _ = validate(raw, &dir.join("c.toml"), &dir);
            }
        }
    }
}
