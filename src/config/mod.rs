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

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Score,
    Forecast,
}

/// The declared type of an input column: the contract the job's SQL must keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    Int,
    Float,
    Text,
    Bool,
    Timestamp,
}

impl ColumnType {
    pub fn name(self) -> &'static str {
        match self {
            ColumnType::Int => "int",
            ColumnType::Float => "float",
            ColumnType::Text => "text",
            ColumnType::Bool => "bool",
            ColumnType::Timestamp => "timestamp",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    Classification,
    Regression,
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

/// The validated input side of a job: its SQL, its key columns and its contract.
#[derive(Debug, Clone)]
pub struct Input {
    /// Training rows (score jobs) or the history of every series (forecast jobs).
    pub train_sql: String,
    pub train_sql_path: PathBuf,
    /// Rows to score (score jobs). Forecast jobs score from the history.
    pub score_sql: Option<String>,
    pub score_sql_path: Option<PathBuf>,
    pub key: Ident,
    pub time: Option<Ident>,
    pub target: Ident,
    pub columns: BTreeMap<String, ColumnType>,
    pub min_rows: usize,
    pub max_null_fraction: BTreeMap<String, f64>,
    /// Refuse to publish when the scored entities fall below this fraction of the last
    /// successful run's.
    pub min_entities_ratio: f64,
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
    pub budget: f32,
    pub max_trees: usize,
    pub memory_limit_gb: f32,
    pub max_train_rows: usize,
    pub holdout_fraction: f64,
    pub seed: u64,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct ForecastSpec {
    pub horizon: usize,
    pub step_seconds: i64,
    pub lags: Vec<usize>,
    pub rolling: Vec<usize>,
    pub calendar: Vec<String>,
    pub min_history: usize,
    pub max_gap: usize,
    pub interval: f64,
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
}

#[derive(Debug, Clone)]
pub struct Output {
    pub table: Ident,
    pub threshold: f64,
    pub write: WriteMode,
}

/// How a publish writes the results table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteMode {
    /// Insert new keys, replace the rows of keys already there; rows of entities missing from
    /// this run stay. Readers are never blocked.
    #[default]
    Upsert,
    /// The table afterwards holds exactly this run's rows. On PostgreSQL a `TRUNCATE` and a
    /// `COPY` straight into the table, the fastest write; readers wait for the commit.
    Replace,
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
    pub input: Input,
    pub features: FeatureSpec,
    pub model: ModelSpec,
    pub retrain: RetrainPolicy,
    pub gate: Gate,
    pub forecast: Option<ForecastSpec>,
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
    let raw = raw::parse(&text, env).map_err(|e| match e {
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
    raw::validate(raw, path, base).map_err(|problems| ConfigError::Invalid {
        path: path.to_path_buf(),
        problems,
    })
}

impl Job {
    /// The columns the output table gets, in order.
    pub fn feature_columns(&self) -> impl Iterator<Item = &String> {
        self.features
            .numeric
            .iter()
            .chain(self.features.categorical.iter())
    }
}

/// Parses `24h`, `30m`, `7d`, `90s` into a duration.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("24h"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("h"), None);
        assert_eq!(parse_duration("5w"), None);
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("postgres://u:pw@h/db".into());
        assert_eq!(format!("{s:?}"), "Secret(***)");
    }
}
