//! The config file as written: serde structs that reject unknown keys, and the one pure
//! `validate` step that turns them into a [`Job`] or a list of every problem. The doc comment
//! of each field is the user documentation (README "Config reference" mirrors it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::expand::{expand, Env};
use super::*;
use crate::warehouse::ident::Ident;

pub(super) enum ParseError {
    Syntax(String),
    Problems(Vec<Problem>),
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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJob {
    /// Job name: keys the ledger, the registry and the lock. Letters, digits, `_`, `-`.
    pub name: String,
    /// `score` (one row per entity) or `forecast` (one row per series and future step).
    pub kind: JobKind,
    /// Warehouse URL: `sqlite://prescore.db` or `postgres://user@host/db`. Use `${VAR}`.
    #[serde(default = "default_warehouse")]
    pub warehouse: String,
    /// Scoring threads; 0 means one per CPU.
    #[serde(default)]
    pub threads: usize,
    /// Attempts for transient warehouse errors (connection lost, pool time-out).
    #[serde(default = "default_retry_attempts")]
    pub retry_attempts: u32,
    /// First back-off between attempts; doubles each time.
    #[serde(default = "default_retry_backoff")]
    pub retry_backoff: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInput {
    /// SQL file (relative to the config) returning training rows (score) or history (forecast).
    pub train_sql: String,
    /// SQL file returning the rows to score (score jobs only).
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
    #[serde(default = "default_min_rows")]
    pub min_rows: usize,
    /// Per column, the largest fraction of NULLs accepted (default 0: none).
    #[serde(default)]
    pub max_null_fraction: BTreeMap<String, f64>,
    /// Refuse to publish when fewer entities than this fraction of the last successful run's
    /// are scored (a guard against a half-loaded source table). 0 disables it.
    #[serde(default = "default_min_entities_ratio")]
    pub min_entities_ratio: f64,
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
    #[serde(default = "default_max_depth")]
    pub max_depth: usize,
    #[serde(default = "default_min_samples_leaf")]
    pub min_samples_leaf: usize,
    /// Trees in a random forest.
    #[serde(default = "default_trees")]
    pub trees: usize,
    /// Complexity budget of the gradient-boosted model (perpetual); 0.5 to 2 is typical.
    #[serde(default = "default_budget")]
    pub budget: f32,
    /// Train on a seeded random sample of at most this many rows (0: all). Bounds training
    /// time and memory on a schedule; evaluation always uses the whole holdout.
    #[serde(default = "default_max_train_rows")]
    pub max_train_rows: usize,
    /// Upper bound on boosting rounds (gbdt), which bounds training time on a schedule.
    #[serde(default = "default_max_trees")]
    pub max_trees: usize,
    /// gbdt: the memory perpetual may plan its histograms for, in GB. Without a limit it sizes
    /// them from the machine's free memory (1.5 GiB and 20 s for the demo's energy job,
    /// against 0.7 GiB and 11 s at 1 GB, with the same holdout error).
    #[serde(default = "default_memory_limit_gb")]
    pub memory_limit_gb: f32,
    /// Score jobs: the latest fraction of rows (by `input.time`) held out for evaluation.
    #[serde(default = "default_holdout")]
    pub holdout_fraction: f64,
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// `always`, `never` (load the champion) or an age such as `24h`.
    #[serde(default = "default_retrain")]
    pub retrain: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawForecast {
    /// Steps to forecast.
    #[serde(default = "default_horizon")]
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
    /// Any of `hour`, `dow`, `weekend`.
    #[serde(default = "default_calendar")]
    pub calendar: Vec<String>,
    /// Series with fewer observed steps get no forecast (counted and reported).
    #[serde(default = "default_min_history")]
    pub min_history: usize,
    /// Gaps of at most this many missing steps are filled by linear interpolation; after a
    /// longer gap only the history since the gap is used.
    #[serde(default = "default_max_gap")]
    pub max_gap: usize,
    /// Coverage of the prediction interval, from holdout residuals per step.
    #[serde(default = "default_interval")]
    pub interval: f64,
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
    #[serde(default)]
    pub tolerance: f64,
    /// Promote a passing candidate at once; `false` waits for `prescore models promote`.
    #[serde(default = "default_true")]
    pub auto_promote: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutput {
    /// Results table, created when missing.
    pub table: String,
    /// Classification: the score at or above which `label` is the positive class.
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// `upsert` (default) or `replace`.
    #[serde(default)]
    pub write: WriteMode,
}

fn default_warehouse() -> String {
    "sqlite://prescore.db".into()
}
fn default_retry_attempts() -> u32 {
    3
}
fn default_retry_backoff() -> String {
    "1s".into()
}
fn default_min_rows() -> usize {
    1
}
fn default_min_entities_ratio() -> f64 {
    0.5
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
fn default_budget() -> f32 {
    0.5
}
fn default_max_train_rows() -> usize {
    200_000
}
fn default_memory_limit_gb() -> f32 {
    1.0
}
fn default_max_trees() -> usize {
    100
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
fn default_calendar() -> Vec<String> {
    vec!["hour".into(), "dow".into(), "weekend".into()]
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
fn default_true() -> bool {
    true
}
fn default_threshold() -> f64 {
    0.5
}

/// TOML → table → `${VAR}` expanded in every string → typed structs (unknown keys rejected).
pub(super) fn parse(text: &str, env: &dyn Env) -> Result<RawConfig, ParseError> {
    let mut table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ParseError::Syntax(e.to_string().trim_end().to_string()))?;
    let mut problems = Vec::new();
    for (k, v) in table.iter_mut() {
        expand_value(k, v, env, &mut problems);
    }
    if !problems.is_empty() {
        return Err(ParseError::Problems(problems));
    }
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let key = e.path().to_string();
        let message = e.into_inner().to_string();
        ParseError::Problems(vec![Problem {
            key: if key == "." {
                "(top level)".into()
            } else {
                key
            },
            message: message.trim_end().to_string(),
        }])
    })
}

fn expand_value(path: &str, v: &mut toml::Value, env: &dyn Env, problems: &mut Vec<Problem>) {
    match v {
        toml::Value::String(s) => match expand(s, env) {
            Ok(e) => *s = e,
            Err(message) => problems.push(Problem {
                key: path.to_string(),
                message,
            }),
        },
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_value(&format!("{path}[{i}]"), item, env, problems);
            }
        }
        toml::Value::Table(t) => {
            for (k, item) in t.iter_mut() {
                expand_value(&format!("{path}.{k}"), item, env, problems);
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
}

/// The one validation pass: collects every problem, then either all are reported or a `Job`
/// is built. Reads the SQL files (relative to the config) so a missing file is reported here.
pub(super) fn validate(raw: RawConfig, path: &Path, base: &Path) -> Result<Job, Vec<Problem>> {
    let mut p = Problems(Vec::new());

    if raw.job.name.is_empty()
        || !raw
            .job
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        p.push(
            "job.name",
            format!(
                "{:?} must be non-empty letters, digits, `_` or `-`",
                raw.job.name
            ),
        );
    }
    let warehouse = raw.job.warehouse.trim().to_string();
    if !(warehouse.starts_with("sqlite:")
        || warehouse.starts_with("postgres://")
        || warehouse.starts_with("postgresql://"))
    {
        p.push(
            "job.warehouse",
            format!(
                "unsupported URL scheme in {:?}: use sqlite://FILE or postgres://…",
                crate::warehouse::redact(&warehouse)
            ),
        );
    }
    let retry_backoff = parse_duration(&raw.job.retry_backoff).unwrap_or_else(|| {
        p.push(
            "job.retry_backoff",
            format!(
                "{:?} is not a duration such as `1s` or `2m`",
                raw.job.retry_backoff
            ),
        );
        Duration::from_secs(1)
    });

    // Input and its contract.
    let mut read_sql = |key: &str, rel: &str| -> Option<(String, PathBuf)> {
        let file = base.join(rel);
        // Configs live in configs/ and SQL in sql/: also accept paths relative to the
        // working directory, which is how people write them.
        let candidates = [file.clone(), PathBuf::from(rel)];
        for c in &candidates {
            if let Ok(text) = std::fs::read_to_string(c) {
                if text.trim().is_empty() {
                    p.push(key, format!("{} is empty", c.display()));
                    return None;
                }
                return Some((text, c.clone()));
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
    };
    let train = read_sql("input.train_sql", &raw.input.train_sql);
    let score = raw
        .input
        .score_sql
        .as_deref()
        .and_then(|s| read_sql("input.score_sql", s));
    for (key, sql) in [("input.train_sql", &train), ("input.score_sql", &score)] {
        if let Some((text, _)) = sql {
            if let Err(e) = crate::warehouse::params::check(text) {
                p.push(key, e);
            }
        }
    }
    let key = p.ident("input.key", &raw.input.key);
    let time = raw
        .input
        .time
        .as_deref()
        .and_then(|t| p.ident("input.time", t));
    let target = p.ident("input.target", &raw.input.target);
    let cols = &raw.input.columns;
    if cols.is_empty() {
        p.push(
            "input.columns",
            "declare every column the SQL returns, with its type",
        );
    }
    for name in cols.keys() {
        if let Err(e) = Ident::new(name) {
            p.push(format!("input.columns.{name}"), e.to_string());
        }
    }
    let mut declared = |key: &str, name: &str, allowed: &[ColumnType]| match cols.get(name) {
        None => p.push(
            key,
            format!("column {name:?} is not declared in [input.columns]"),
        ),
        Some(t) if !allowed.is_empty() && !allowed.contains(t) => p.push(
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
    };
    declared(
        "input.key",
        &raw.input.key,
        &[ColumnType::Int, ColumnType::Text],
    );
    if let Some(t) = &raw.input.time {
        declared("input.time", t, &[ColumnType::Timestamp]);
    }
    let target_types: &[ColumnType] = match raw.model.task {
        Task::Classification => &[ColumnType::Bool, ColumnType::Int],
        Task::Regression => &[ColumnType::Int, ColumnType::Float],
    };
    declared("input.target", &raw.input.target, target_types);
    for (i, f) in raw.features.numeric.iter().enumerate() {
        declared(
            &format!("features.numeric[{i}]"),
            f,
            &[ColumnType::Int, ColumnType::Float, ColumnType::Bool],
        );
    }
    for (i, f) in raw.features.categorical.iter().enumerate() {
        declared(
            &format!("features.categorical[{i}]"),
            f,
            &[ColumnType::Text, ColumnType::Int, ColumnType::Bool],
        );
    }
    for (name, frac) in &raw.input.max_null_fraction {
        if !cols.contains_key(name) {
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
    if !(0.0..=1.0).contains(&raw.input.min_entities_ratio) {
        p.push("input.min_entities_ratio", "must be between 0 and 1");
    }
    let features_used = raw.features.numeric.len() + raw.features.categorical.len();
    if raw.job.kind == JobKind::Score && features_used == 0 {
        p.push(
            "features",
            "a score job needs at least one numeric or categorical feature",
        );
    }
    for f in raw.feature_names() {
        if Some(f.as_str()) == Some(raw.input.target.as_str()) {
            p.push(
                "features",
                format!("the target {f:?} cannot also be a feature (leakage)"),
            );
        }
    }

    // Model.
    let algorithm = match raw.model.algorithm.as_str() {
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
    if let Some(a) = algorithm {
        let ok = match raw.model.task {
            Task::Classification => {
                matches!(
                    a,
                    Algorithm::DecisionTree | Algorithm::RandomForest | Algorithm::Gbdt
                )
            }
            Task::Regression => {
                matches!(
                    a,
                    Algorithm::Linear | Algorithm::Gbdt | Algorithm::RandomForest
                )
            }
        };
        if !ok {
            p.push(
                "model.algorithm",
                format!(
                    "{} does not do {:?}: classification takes decision_tree, random_forest or gbdt; regression takes linear, random_forest or gbdt",
                    a.name(),
                    raw.model.task
                ),
            );
        }
    }
    if !(1..=40).contains(&raw.model.max_depth) {
        p.push("model.max_depth", "must be between 1 and 40");
    }
    if raw.model.min_samples_leaf == 0 {
        p.push("model.min_samples_leaf", "must be at least 1");
    }
    if !(1..=1000).contains(&raw.model.trees) {
        p.push("model.trees", "must be between 1 and 1000");
    }
    let gb = raw.model.memory_limit_gb;
    if !(gb.is_finite() && gb > 0.0) {
        p.push("model.memory_limit_gb", "must be a positive number of GB");
    }
    if !(1..=10_000).contains(&raw.model.max_trees) {
        p.push("model.max_trees", "must be between 1 and 10000");
    }
    if !(raw.model.budget > 0.0 && raw.model.budget <= 5.0) {
        p.push("model.budget", "must be in (0, 5]");
    }
    if !(raw.model.holdout_fraction > 0.0 && raw.model.holdout_fraction < 0.9) {
        p.push("model.holdout_fraction", "must be between 0 and 0.9");
    }
    let retrain = match raw.model.retrain.as_str() {
        "always" => RetrainPolicy::Always,
        "never" => RetrainPolicy::Never,
        other => match parse_duration(other) {
            Some(d) => RetrainPolicy::OlderThan(d),
            None => {
                p.push(
                    "model.retrain",
                    format!("{other:?}: use `always`, `never` or an age such as `24h`"),
                );
                RetrainPolicy::Always
            }
        },
    };

    // Kind-specific rules.
    let forecast = match (raw.job.kind, &raw.forecast) {
        (JobKind::Score, Some(_)) => {
            p.push(
                "forecast",
                "a [forecast] table needs job.kind = \"forecast\"",
            );
            None
        }
        (JobKind::Score, None) => {
            if raw.input.score_sql.is_none() {
                p.push(
                    "input.score_sql",
                    "a score job needs the SQL of the rows to score",
                );
            }
            None
        }
        (JobKind::Forecast, f) => {
            if raw.input.time.is_none() {
                p.push(
                    "input.time",
                    "a forecast job needs the series timestamp column",
                );
            }
            if raw.model.task != Task::Regression {
                p.push("model.task", "a forecast job is a regression");
            }
            let default;
            let f = match f {
                Some(f) => f,
                None => {
                    default = toml::from_str::<RawForecast>("").expect("defaults parse");
                    &default
                }
            };
            validate_forecast(f, &mut p)
        }
    };

    let gate = validate_gate(&raw.gate, raw.model.task, &mut p);
    let table = p.ident("output.table", &raw.output.table);
    if let Some(t) = &table {
        if t.as_str().starts_with("prescore_") {
            p.push(
                "output.table",
                "names starting with prescore_ are reserved for prescore's own tables",
            );
        }
    }
    if !(0.0..=1.0).contains(&raw.output.threshold) {
        p.push("output.threshold", "must be between 0 and 1");
    }

    if !p.0.is_empty() {
        return Err(p.0);
    }
    let (train_sql, train_sql_path) = train.expect("checked");
    Ok(Job {
        name: raw.job.name,
        kind: raw.job.kind,
        warehouse: Secret::new(warehouse),
        threads: raw.job.threads,
        retry_attempts: raw.job.retry_attempts.max(1),
        retry_backoff,
        input: Input {
            train_sql,
            train_sql_path,
            score_sql: score.as_ref().map(|s| s.0.clone()),
            score_sql_path: score.map(|s| s.1),
            key: key.expect("checked"),
            time,
            target: target.expect("checked"),
            columns: raw.input.columns,
            min_rows: raw.input.min_rows,
            max_null_fraction: raw.input.max_null_fraction,
            min_entities_ratio: raw.input.min_entities_ratio,
        },
        features: FeatureSpec {
            numeric: raw.features.numeric,
            categorical: raw.features.categorical,
        },
        model: ModelSpec {
            task: raw.model.task,
            algorithm: algorithm.expect("checked"),
            max_depth: raw.model.max_depth,
            min_samples_leaf: raw.model.min_samples_leaf,
            trees: raw.model.trees,
            budget: raw.model.budget,
            max_trees: raw.model.max_trees,
            memory_limit_gb: raw.model.memory_limit_gb,
            max_train_rows: raw.model.max_train_rows,
            holdout_fraction: raw.model.holdout_fraction,
            seed: raw.model.seed,
        },
        retrain,
        gate,
        forecast,
        output: Output {
            table: table.expect("checked"),
            threshold: raw.output.threshold,
            write: raw.output.write,
        },
        config_path: path.to_path_buf(),
    })
}

impl RawConfig {
    fn feature_names(&self) -> impl Iterator<Item = &String> {
        self.features
            .numeric
            .iter()
            .chain(&self.features.categorical)
    }
}

fn validate_forecast(f: &RawForecast, p: &mut Problems) -> Option<ForecastSpec> {
    if !(1..=24 * 14).contains(&f.horizon) {
        p.push("forecast.horizon", "must be between 1 and 336 steps");
    }
    let step = parse_duration(&f.step);
    if step.is_none() {
        p.push(
            "forecast.step",
            format!("{:?} is not a duration such as `1h`", f.step),
        );
    }
    if f.lags.is_empty() || f.lags.contains(&0) {
        p.push("forecast.lags", "give at least one lag, each at least 1");
    }
    if f.rolling.contains(&0) || f.rolling.contains(&1) {
        p.push(
            "forecast.rolling",
            "rolling windows must be at least 2 steps",
        );
    }
    for (i, c) in f.calendar.iter().enumerate() {
        if !["hour", "dow", "weekend"].contains(&c.as_str()) {
            p.push(
                format!("forecast.calendar[{i}]"),
                format!("unknown calendar feature {c:?}: use hour, dow or weekend"),
            );
        }
    }
    let longest = f
        .lags
        .iter()
        .chain(f.rolling.iter())
        .copied()
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
    Some(ForecastSpec {
        horizon: f.horizon,
        step_seconds: step.map(|d| d.as_secs() as i64).unwrap_or(3600),
        lags: f.lags.clone(),
        rolling: f.rolling.clone(),
        calendar: f.calendar.clone(),
        min_history: f.min_history,
        max_gap: f.max_gap,
        interval: f.interval,
    })
}

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
    Gate {
        bounds,
        must_beat_baseline,
        must_beat_champion,
        tolerance: g.tolerance,
        auto_promote: g.auto_promote,
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
