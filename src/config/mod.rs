//! The job config: one TOML file declares what to read, which features, which model and where
//! to write. Loading is three steps, as in Vector: parse strictly (unknown keys are errors),
//! expand `${VAR}` from the environment, then validate in one pure pass that reports every
//! problem at once with its key path. Everything after [`load`] can trust a [`Job`].

pub mod expand;
mod raw;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use raw::RawConfig;

use crate::warehouse::ident::Ident;
pub use crate::warehouse::{ColumnType, WriteMode};

/// A config that could not be loaded. Every variant names the file; `Invalid` lists every
/// problem found, each with its key path.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path} has {} problem(s):\n{}", problems.len(), render(problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

/// One thing wrong with a config, at a key path such as `model.max_depth`.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

fn render(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A secret string that never prints itself.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Self {
        Secret(s)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// What kind of job a config declares (`job.kind`), as a plain tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KindTag {
    Score,
    Forecast,
}

impl KindTag {
    pub fn name(self) -> &'static str {
        match self {
            KindTag::Score => "score",
            KindTag::Forecast => "forecast",
        }
    }
}

/// One of the job's SQL files, loaded and checked.
#[derive(Debug, Clone)]
pub struct Sql {
    pub text: String,
    pub path: PathBuf,
}

/// What differs between the two kinds of job, with exactly the fields each one has.
// A job holds one JobKind for the whole run: the forecast variant's size costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum JobKind {
    /// One row per entity: trains on `input.train_sql`, scores the rows of `score_sql`.
    Score {
        score_sql: Sql,
        /// Holds out the latest rows by this column (else a stable hash of the key).
        time: Option<Ident>,
    },
    /// One row per series and future step: `input.train_sql` returns the history.
    Forecast {
        spec: ForecastSpec,
        /// The series clock.
        time: Ident,
        /// Future covariates for the steps after each series' end.
        future_sql: Option<Sql>,
    },
}

impl JobKind {
    pub fn tag(&self) -> KindTag {
        match self {
            JobKind::Score { .. } => KindTag::Score,
            JobKind::Forecast { .. } => KindTag::Forecast,
        }
    }

    /// The column of `<table>_history` realized accuracy reads by: a forecast's target time,
    /// a score's issue time.
    pub fn history_time(&self) -> &'static str {
        match self {
            JobKind::Score { .. } => "as_of",
            JobKind::Forecast { .. } => "target_ts",
        }
    }

    /// How far after its `as_of` a history row's `history_time` lies at most: a forecast's
    /// horizon (None for score jobs, whose history time is `as_of` itself). Pruning bounds
    /// the indexed column with it, so that it reads the expired rows and not the history.
    pub fn history_reach(&self) -> Option<chrono::Duration> {
        match self {
            JobKind::Score { .. } => None,
            JobKind::Forecast { spec, .. } => Some(spec.horizon_span()),
        }
    }

    /// The time column, if the job has one.
    pub fn time(&self) -> Option<&Ident> {
        match self {
            JobKind::Score { time, .. } => time.as_ref(),
            JobKind::Forecast { time, .. } => Some(time),
        }
    }

    /// The second SQL file: rows to score, or future covariates.
    pub fn second_sql(&self) -> Option<&Sql> {
        match self {
            JobKind::Score { score_sql, .. } => Some(score_sql),
            JobKind::Forecast { future_sql, .. } => future_sql.as_ref(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    Classification,
    Regression,
}

impl Task {
    pub fn name(self) -> &'static str {
        match self {
            Task::Classification => "classification",
            Task::Regression => "regression",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    DecisionTree,
    RandomForest,
    Linear,
    Gbdt,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::DecisionTree => "decision_tree",
            Algorithm::RandomForest => "random_forest",
            Algorithm::Linear => "linear",
            Algorithm::Gbdt => "gbdt",
        }
    }
}

/// When `run` trains a new model instead of loading the champion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetrainPolicy {
    Always,
    Never,
    /// Retrain when the champion is older than this.
    OlderThan(Duration),
}

/// The validated input side of a job: its training SQL, its key columns and its contract.
#[derive(Debug, Clone)]
pub struct Input {
    /// Training rows (score jobs) or the history of every series (forecast jobs).
    pub train_sql: Sql,
    pub key: Ident,
    pub target: Ident,
    pub columns: BTreeMap<String, ColumnType>,
    pub min_rows: usize,
    pub max_null_fraction: BTreeMap<String, f64>,
    /// Refuse to publish when the scored entities fall below this fraction of the last
    /// successful run's.
    pub min_entities_ratio: f64,
    /// Score jobs: where the labels of issued scores come from (`input.labels_sql`).
    pub labels: Option<Labels>,
}

/// The labels of a score job's issued scores, once they arrive.
#[derive(Debug, Clone)]
pub struct Labels {
    /// Returns `input.key` and `input.target` of the entities scored as of `:as_of`.
    pub sql: Sql,
    /// How long after issue labels may still arrive: the issue times each run evaluates.
    pub window: Duration,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct FeatureSpec {
    pub numeric: Vec<String>,
    pub categorical: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct ModelSpec {
    pub task: Task,
    pub algorithm: Algorithm,
    pub max_depth: usize,
    pub min_samples_leaf: usize,
    pub trees: usize,
    pub max_trees: usize,
    pub learning_rate: f64,
    pub num_leaves: usize,
    pub max_train_rows: usize,
    pub holdout_fraction: f64,
    pub seed: u64,
}

/// A calendar feature of the forecast step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Calendar {
    /// Hour of the day, 0-23 (UTC).
    Hour,
    /// Day of the week, Monday = 0.
    Dow,
    /// 1 on Saturdays and Sundays.
    Weekend,
}

impl Calendar {
    pub fn name(self) -> &'static str {
        match self {
            Calendar::Hour => "hour",
            Calendar::Dow => "dow",
            Calendar::Weekend => "weekend",
        }
    }
}

/// How a learned model reaches `horizon` steps ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Both, and the backtest picks.
    Auto,
    /// One step at a time, each prediction fed back as the next step's lag.
    Recursive,
    /// Every step from what is known at the origin, with the step as a feature.
    Direct,
}

/// Whether the forecast method is chosen once for the job or for each series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    Job,
    PerSeries,
}

/// A forecast method the backtest may choose (`model.candidates`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForecastMethod {
    /// The learned model (by `forecast.strategy`).
    Model,
    /// The same step one day earlier (t-24 for hourly data).
    NaiveDay,
    /// The same step one week earlier (t-168 for hourly data).
    NaiveWeek,
    /// The mean of the model and the better seasonal naive.
    Blend,
}

/// Whether the model predicts the series or its change since the same step a season back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Differencing {
    /// The backtest tries both (a season of one day) and keeps the better.
    Auto,
    Off,
    /// Differencing by this many steps.
    Season(usize),
}

impl Differencing {
    /// The differencing lags to fit: one, or for `auto` none and a day.
    pub fn choices(self, day: usize) -> Vec<usize> {
        match self {
            Differencing::Auto => vec![0, day],
            Differencing::Off => vec![0],
            Differencing::Season(d) => vec![d],
        }
    }
}

/// Rolling-origin backtest windows (`forecast.backtest_windows`): a fixed number, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BacktestWindows {
    /// Enough windows for about [`AUTO_BACKTEST_POINTS`] forecast points, between
    /// [`AUTO_WINDOWS`]' bounds: large jobs keep the minimum, and a job of a few hundred series
    /// or fewer gets the maximum, so that its per-series choice and intervals rest on more than
    /// four days. A window past the minimum must leave half of a series' history before its
    /// origin, so the backtest's fits still see most of it.
    Auto,
    Fixed(usize),
}

/// Forecast points `forecast.backtest_windows = "auto"` aims the backtest at.
pub const AUTO_BACKTEST_POINTS: usize = 200_000;
/// The fewest and most windows `forecast.backtest_windows = "auto"` gives.
pub const AUTO_WINDOWS: std::ops::RangeInclusive<usize> = 4..=14;

impl BacktestWindows {
    /// The windows a job of `series` series forecasting `horizon` steps is backtested on.
    pub fn resolve(self, series: usize, horizon: usize) -> usize {
        match self {
            BacktestWindows::Fixed(n) => n,
            BacktestWindows::Auto => AUTO_BACKTEST_POINTS
                .div_ceil((series * horizon).max(1))
                .clamp(*AUTO_WINDOWS.start(), *AUTO_WINDOWS.end()),
        }
    }

    /// The windows known before the history is read (their covariates are read beside it).
    pub fn at_least(self) -> usize {
        match self {
            BacktestWindows::Fixed(n) => n,
            BacktestWindows::Auto => *AUTO_WINDOWS.start(),
        }
    }

    /// Whether window `w` (0 = the latest) of a series of `n` steps may start at `origin`:
    /// under `auto` a window past the minimum needs half the series before it.
    pub fn keeps(self, w: usize, origin: usize, n: usize) -> bool {
        w < self.at_least() || 2 * origin >= n
    }
}

/// The seasonal-mean windows `forecast.seasonal_rolling = "auto"` may give a model, in days: the
/// mean of the same time of day over the last 3 and over the last 7 days.
pub const AUTO_SEASONAL_DAYS: [usize; 2] = [3, 7];

/// Seasonal means (`forecast.seasonal_rolling`): the mean of the same time of day over the last
/// n days, as features.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeasonalMeans {
    /// `auto`: these windows (those of [`AUTO_SEASONAL_DAYS`] that `min_history` can fill)
    /// when the series follow a daily routine, else none; decided by each training run from
    /// the history (`pipeline::forecast::routine`).
    Auto(Vec<usize>),
    /// A fixed list of windows (empty: none).
    Days(Vec<usize>),
}

impl SeasonalMeans {
    /// Every list of windows a model trained under this setting may read.
    pub fn choices(&self) -> Vec<Vec<usize>> {
        match self {
            SeasonalMeans::Auto(days) if !days.is_empty() => vec![Vec::new(), days.clone()],
            SeasonalMeans::Auto(_) => vec![Vec::new()],
            SeasonalMeans::Days(days) => vec![days.clone()],
        }
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct ForecastSpec {
    pub horizon: usize,
    pub step_seconds: i64,
    pub lags: Vec<usize>,
    pub rolling: Vec<usize>,
    /// Seasonal means, in days, or `auto` (see `RawForecast::seasonal_rolling`).
    pub seasonal_rolling: SeasonalMeans,
    pub calendar: Vec<Calendar>,
    pub min_history: usize,
    pub max_gap: usize,
    pub interval: f64,
    pub strategy: Strategy,
    pub selection: Selection,
    pub candidates: Vec<ForecastMethod>,
    pub backtest_windows: BacktestWindows,
    /// Steps between backtest origins.
    pub backtest_step: usize,
    /// Per-series standard scaling of the target, learned on the training window.
    pub scale: bool,
    /// Seasonal differencing: the model predicts y(t) - y(t - season).
    pub difference: Differencing,
    /// A series whose last reading is at most this many steps before as_of is forecast from
    /// its end; older ones are skipped as stale.
    pub max_stale: usize,
    /// Refit the served model on every row after the backtest (else serve the backtest's fit).
    pub refit: bool,
    /// The backtest may choose the mean of its best model variant and that variant's partner,
    /// the other strategy on the same differencing (`forecast.ensemble`).
    pub ensemble: bool,
    /// Rows each backtest fit samples (the served model trains on every row).
    pub backtest_rows: usize,
    /// Keep a sub-daily model's forecasts within the series' range at their time of day over
    /// the last four weeks, widened by a tenth (`forecast.envelope`).
    pub envelope: bool,
    /// Where the backtest's forecasts read their covariates after each origin.
    #[serde(default)]
    pub backtest_covariates: BacktestCovariates,
}

/// The covariates a backtest forecast reads after its origin (`forecast.backtest_covariates`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BacktestCovariates {
    /// What the future SQL returns when run as of the origin: the values a run at that time
    /// would have served (a weather forecast issued then, or a persistence rule), so that the
    /// backtest measures the error users will see.
    #[default]
    Served,
    /// The values observed later (the history SQL's): optimistic wherever the served ones
    /// are forecasts, for a future SQL that cannot be run as of a past time.
    Observed,
}

impl ForecastSpec {
    /// Steps in a day (at least 1): the seasonal-naive period.
    pub fn day(&self) -> usize {
        steps_per_day(self.step_seconds)
    }

    /// The time the horizon covers: from a forecast's `as_of` to its last target.
    pub fn horizon_span(&self) -> chrono::Duration {
        chrono::Duration::seconds(self.step_seconds.saturating_mul(self.horizon as i64))
    }
}

/// Steps of `step_seconds` in a day (at least 1): the season of seasonal naive, differencing
/// and seasonal means.
pub fn steps_per_day(step_seconds: i64) -> usize {
    ((86_400 / step_seconds.max(1)) as usize).max(1)
}

/// A comparison in the quality gate, such as `auc >= 0.7`.
#[derive(Debug, Clone, PartialEq)]
pub struct Bound {
    pub metric: String,
    pub at_least: bool,
    pub value: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Gate {
    pub bounds: Vec<Bound>,
    pub must_beat_baseline: bool,
    pub must_beat_champion: bool,
    pub tolerance: f64,
    pub auto_promote: bool,
    /// Refuse to publish when a feature's (or the score's) PSI exceeds this.
    pub max_psi: Option<f64>,
    /// Score jobs: refuse to publish when the mean score moved further than this from its
    /// mean on the model's holdout.
    pub max_score_shift: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct Output {
    pub table: Ident,
    pub threshold: f64,
    pub write: WriteMode,
    /// Regression score jobs: the coverage of the prediction interval (`score_lo`..`score_hi`).
    pub interval: Option<f64>,
    /// Regression score jobs: scores and lower bounds are never below this.
    pub min_score: Option<f64>,
    /// Keep every published row in `<table>_history` for this long (None: no history).
    pub keep_history: Option<Duration>,
    /// `<table>_history`, when the job keeps history.
    pub history_table: Option<Ident>,
}

/// The bounded waits of a run (`job.timeout`, `job.lock_timeout`, `job.statement_timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The deadline of the whole run.
    pub run: Duration,
    /// PostgreSQL `lock_timeout`: one statement's wait for a lock.
    pub lock: Duration,
    /// PostgreSQL `statement_timeout`: one statement's run time.
    pub statement: Duration,
    /// `job.lock_lease`: how long the job lock outlives its holder's last heartbeat.
    pub lease: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            run: Duration::from_secs(50 * 60),
            lock: Duration::from_secs(30),
            statement: Duration::from_secs(50 * 60),
            lease: Duration::from_secs(60),
        }
    }
}

/// A validated job: everything the pipeline needs, checked.
#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub kind: JobKind,
    pub warehouse: Secret,
    pub threads: usize,
    pub retry_attempts: u32,
    pub retry_backoff: Duration,
    /// How long the run and its statements may wait.
    pub limits: Limits,
    /// `registry.keep`: artifacts of how many recent versions to keep (None: all).
    pub registry_keep: Option<usize>,
    pub input: Input,
    pub features: FeatureSpec,
    pub model: ModelSpec,
    pub retrain: RetrainPolicy,
    pub gate: Gate,
    pub output: Output,
    pub config_path: PathBuf,
}

/// Reads, expands and validates a job config.
pub fn load(path: &Path) -> Result<Job, ConfigError> {
    load_with_env(path, &expand::ProcessEnv)
}

pub fn load_with_env(path: &Path, env: &dyn expand::Env) -> Result<Job, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let (raw, expansions) = raw::parse_expanded(&text, env).map_err(|e| match e {
        raw::ParseError::Syntax(message) => ConfigError::Syntax {
            path: path.to_path_buf(),
            message,
        },
        raw::ParseError::Problems(problems) => ConfigError::Invalid {
            path: path.to_path_buf(),
            problems,
        },
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    raw::validate(raw, path, base).map_err(|mut problems| {
        raw::Expansion::scrub(&mut problems, &expansions);
        ConfigError::Invalid {
            path: path.to_path_buf(),
            problems,
        }
    })
}

/// Parses a duration such as `24h`, `30m`, `7d`, `90s` or `1h 30m` (humantime's syntax).
pub fn parse_duration(s: &str) -> Option<Duration> {
    humantime::parse_duration(s.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("24h"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("1h 30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("h"), None);
        assert_eq!(parse_duration("5 parsecs"), None);
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("postgres://u:pw@h/db".into());
        assert_eq!(format!("{s:?}"), "Secret(***)");
    }
}
