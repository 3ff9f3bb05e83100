//! Realized accuracy of score jobs, the computation: the scores a job issued (rows of
//! `<table>_history`) joined by key with the labels that arrived for the entities scored at
//! that issue time, grouped by model version and issue day (UTC). Classification gets n, AUC,
//! log loss, Brier score, positive rate and mean score, and calibration by score decile (mean
//! score next to the observed rate); regression gets MAE, RMSE and bias, and the same deciles
//! with the mean actual. The metrics are the holdout's ([`metrics`]), so a realized AUC means
//! what the registry's does.
//!
//! [`metrics`]: crate::model::metrics

use std::collections::{BTreeMap, HashMap};

use polars::prelude::*;

use super::accuracy::{floats, keys, micros, SeriesKey};
use crate::config::Task;
use crate::model::metrics;

/// Score deciles: ten groups of (nearly) equal size, lowest scores first.
pub const DECILES: usize = 10;

const DAY_US: i64 = 86_400 * 1_000_000;

#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    #[error("the labels SQL returned {value} as the label of {key} = {id} (scored as of {as_of}): a classification label must be 0/1 or a boolean")]
    NotBinary {
        key: String,
        id: SeriesKey,
        value: f64,
        as_of: String,
    },
    #[error("the labels SQL returned two labels for {key} = {id} (scored as of {as_of}): it must return one row per entity")]
    Duplicate {
        key: String,
        id: SeriesKey,
        as_of: String,
    },
    #[error("reading the labels: {0}")]
    Frame(#[from] PolarsError),
}

/// The labels that arrived, per issue time (microseconds, UTC) and key.
#[derive(Debug, Default)]
pub struct Labels(HashMap<i64, HashMap<SeriesKey, f64>>);

impl Labels {
    /// Adds what the labels SQL returned for the scores issued at `as_of_us`: rows with a NULL
    /// key or label have no label yet. A classification label must be 0 or 1.
    pub fn add(
        &mut self,
        as_of_us: i64,
        df: &DataFrame,
        key: &str,
        target: &str,
        task: Task,
    ) -> Result<usize, LabelError> {
        let ids = keys(df.column(key)?)?;
        let values = floats(df.column(target)?)?;
        let when = || crate::warehouse::frame::micros_to_utc(as_of_us).to_rfc3339();
        let map = self.0.entry(as_of_us).or_default();
        for (id, value) in ids.into_iter().zip(values) {
            let (Some(id), Some(value)) = (id, value.filter(|v| v.is_finite())) else {
                continue;
            };
            if task == Task::Classification && value != 0.0 && value != 1.0 {
                return Err(LabelError::NotBinary {
                    key: key.into(),
                    id,
                    value,
                    as_of: when(),
                });
            }
            if map.insert(id.clone(), value).is_some() {
                return Err(LabelError::Duplicate {
                    key: key.into(),
                    id,
                    as_of: when(),
                });
            }
        }
        Ok(map.len())
    }

    /// How many labels arrived, over every issue time.
    pub fn len(&self) -> usize {
        self.0.values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn get(&self, as_of_us: i64, id: &SeriesKey) -> Option<f64> {
        self.0.get(&as_of_us)?.get(id).copied()
    }
}

/// One row of `prescore_calibration`, without the job, model version and day.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Decile {
    /// 1 (lowest scores) to 10.
    pub decile: i64,
    pub n: i64,
    pub mean_score: f64,
    /// The observed positive rate (classification) or the mean actual (regression).
    pub mean_label: f64,
}

/// One row of `prescore_label_accuracy`, without the job, with its deciles.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Group {
    pub model_version: i64,
    /// Midnight UTC of the day the scores were issued (their as_of), in microseconds.
    pub day_us: i64,
    /// Issued scores with a label.
    pub n: i64,
    pub mean_score: f64,
    /// Classification: the share of positive labels.
    pub positive_rate: Option<f64>,
    pub auc: Option<f64>,
    pub log_loss: Option<f64>,
    pub brier: Option<f64>,
    /// Regression.
    pub mae: Option<f64>,
    pub rmse: Option<f64>,
    /// Mean of score minus actual.
    pub bias: Option<f64>,
    pub deciles: Vec<Decile>,
}

/// A labeled issued score: what the figures are computed from.
struct Scored {
    score: f64,
    label: f64,
    as_of: i64,
    id: SeriesKey,
}

/// Joins the issued scores (`key`, `score`, `model_version`, `as_of`) with the labels of
/// their issue time and computes each (model version, issue day)'s figures. Scores without a
/// label yet are left out; groups come sorted by model version and day.
pub fn compute(
    issued: &DataFrame,
    key: &str,
    labels: &Labels,
    task: Task,
) -> PolarsResult<Vec<Group>> {
    let ids = keys(issued.column(key)?)?;
    let scores = floats(issued.column("score")?)?;
    let as_of = micros(issued.column("as_of")?)?;
    let version: Vec<Option<i64>> = issued
        .column("model_version")?
        .cast(&DataType::Int64)?
        .i64()?
        .iter()
        .collect();
    let mut groups: BTreeMap<(i64, i64), Vec<Scored>> = BTreeMap::new();
    for (r, id) in ids.into_iter().enumerate() {
        let (Some(id), Some(score), Some(t)) = (id, scores[r], as_of[r]) else {
            continue;
        };
        let Some(label) = labels.get(t, &id) else {
            continue;
        };
        let day = t.div_euclid(DAY_US) * DAY_US;
        groups
            .entry((version[r].unwrap_or(0), day))
            .or_default()
            .push(Scored {
                score,
                label,
                as_of: t,
                id,
            });
    }
    Ok(groups
        .into_iter()
        .map(|((model_version, day_us), rows)| figures(model_version, day_us, rows, task))
        .collect())
}

fn figures(model_version: i64, day_us: i64, mut rows: Vec<Scored>, task: Task) -> Group {
    // Deciles by score; ties (a tree scores many entities alike) split by issue time and key,
    // so that a rerun puts every entity in the same decile.
    rows.sort_by(|a, b| {
        (a.score.total_cmp(&b.score))
            .then(a.as_of.cmp(&b.as_of))
            .then_with(|| a.id.cmp(&b.id))
    });
    let truth: Vec<f64> = rows.iter().map(|r| r.label).collect();
    let pred: Vec<f64> = rows.iter().map(|r| r.score).collect();
    let n = rows.len();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let classification = task == Task::Classification;
    let both = |f: fn(&[f64], &[f64]) -> f64, wanted: bool| wanted.then(|| f(&truth, &pred));
    let deciles = (0..DECILES.min(n))
        .map(|d| {
            let (from, to) = decile_bounds(n, d);
            Decile {
                decile: d as i64 + 1,
                n: (to - from) as i64,
                mean_score: mean(&pred[from..to]),
                mean_label: mean(&truth[from..to]),
            }
        })
        .collect();
    Group {
        model_version,
        day_us,
        n: n as i64,
        mean_score: mean(&pred),
        positive_rate: classification.then(|| mean(&truth)),
        auc: both(metrics::auc, classification),
        log_loss: both(metrics::log_loss, classification),
        brier: both(metrics::brier, classification),
        mae: both(metrics::mae, !classification),
        rmse: both(metrics::rmse, !classification),
        bias: both(metrics::bias, !classification),
        deciles,
    }
}

/// Rows `from..to` of decile `d` (0-based) of `n` sorted rows, as SQL's `NTILE(10)` splits
/// them: the first `n % 10` deciles hold one row more.
pub fn decile_bounds(n: usize, d: usize) -> (usize, usize) {
    let (size, extra) = (n / DECILES, n % DECILES);
    let start = |d: usize| d * size + d.min(extra);
    (start(d), start(d + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issued(ids: &[i64], scores: &[f64], as_of: &[i64], versions: &[i64]) -> DataFrame {
        let ts = Int64Chunked::from_vec("as_of".into(), as_of.to_vec())
            .into_datetime(TimeUnit::Microseconds, Some(TimeZone::UTC))
            .into_column();
        DataFrame::new(
            ids.len(),
            vec![
                Column::new("id".into(), ids),
                Column::new("score".into(), scores),
                Column::new("model_version".into(), versions),
                ts,
            ],
        )
        .unwrap()
    }

    fn labels(at: i64, ids: &[i64], y: &[Option<bool>], task: Task) -> Labels {
        let df = DataFrame::new(
            ids.len(),
            vec![Column::new("id".into(), ids), Column::new("y".into(), y)],
        )
        .unwrap();
        let mut l = Labels::default();
        l.add(at, &df, "id", "y", task).unwrap();
        l
    }

    #[test]
    fn deciles_split_like_ntile() {
        // 23 rows: three deciles of 3, seven of 2.
        let sizes: Vec<usize> = (0..10)
            .map(|d| decile_bounds(23, d))
            .map(|(a, b)| b - a)
            .collect();
        assert_eq!(sizes, vec![3, 3, 3, 2, 2, 2, 2, 2, 2, 2]);
        assert_eq!(decile_bounds(23, 9).1, 23);
        assert_eq!(decile_bounds(4, 3), (3, 4));
    }

    #[test]
    fn figures_match_a_hand_computation() {
        let day = 3 * DAY_US;
        let t = day + 6 * 3_600_000_000;
        // Five scored entities; entity 5's label has not arrived, entity 6 was not scored.
        let df = issued(
            &[1, 2, 3, 4, 5],
            &[0.9, 0.2, 0.6, 0.1, 0.5],
            &[t; 5],
            &[2; 5],
        );
        let y = [
            Some(true),
            Some(false),
            Some(false),
            Some(false),
            None,
            Some(true),
        ];
        let l = labels(t, &[1, 2, 3, 4, 5, 6], &y, Task::Classification);
        let g = compute(&df, "id", &l, Task::Classification).unwrap();
        assert_eq!(g.len(), 1);
        let g = &g[0];
        assert_eq!((g.model_version, g.day_us, g.n), (2, day, 4));
        // The one positive outscores the three negatives.
        assert_eq!(g.auc, Some(1.0));
        let ll = -(0.9f64.ln() + 0.8f64.ln() + 0.4f64.ln() + 0.9f64.ln()) / 4.0;
        assert!((g.log_loss.unwrap() - ll).abs() < 1e-12);
        let brier = (0.01 + 0.04 + 0.36 + 0.01) / 4.0;
        assert!((g.brier.unwrap() - brier).abs() < 1e-12);
        assert_eq!(g.positive_rate, Some(0.25));
        assert!((g.mean_score - 0.45).abs() < 1e-12);
        assert_eq!(g.mae, None);
        // Four rows, four deciles of one, lowest score first.
        let d: Vec<(i64, i64, f64, f64)> = g
            .deciles
            .iter()
            .map(|d| (d.decile, d.n, d.mean_score, d.mean_label))
            .collect();
        assert_eq!(
            d,
            vec![
                (1, 1, 0.1, 0.0),
                (2, 1, 0.2, 0.0),
                (3, 1, 0.6, 0.0),
                (4, 1, 0.9, 1.0)
            ]
        );
    }

    #[test]
    fn regression_gets_errors_and_no_labels_give_no_rows() {
        let t = 10 * DAY_US;
        let df = issued(&[1, 2], &[10.0, 4.0], &[t, t], &[1, 1]);
        let ids = [1i64, 2];
        let y = DataFrame::new(
            2,
            vec![
                Column::new("id".into(), ids),
                Column::new("y".into(), [7.0, 5.0]),
            ],
        )
        .unwrap();
        let mut l = Labels::default();
        l.add(t, &y, "id", "y", Task::Regression).unwrap();
        let g = &compute(&df, "id", &l, Task::Regression).unwrap()[0];
        assert_eq!((g.mae, g.bias, g.auc), (Some(2.0), Some(1.0), None));
        assert!((g.rmse.unwrap() - 5f64.sqrt()).abs() < 1e-12);
        // Labels of another issue time do not count.
        let other = labels(t + 1, &[1, 2], &[Some(true), Some(false)], Task::Regression);
        assert!(compute(&df, "id", &other, Task::Regression)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_label_that_is_not_binary_names_the_entity() {
        let df = DataFrame::new(
            1,
            vec![
                Column::new("customer_id".into(), [7i64]),
                Column::new("churned".into(), [2i64]),
            ],
        )
        .unwrap();
        let e = Labels::default()
            .add(0, &df, "customer_id", "churned", Task::Classification)
            .unwrap_err()
            .to_string();
        assert!(e.contains("customer_id = 7") && e.contains("0/1"), "{e}");
    }
}
