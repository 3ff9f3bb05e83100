//! Stage 3, features for `score` jobs: one code path turns a frame into a feature matrix for
//! training and for scoring alike, so the two can never disagree (no training/serving skew).
//! Categorical levels are learned once at training time and stored with the model as part of
//! its [`FeatureSchema`]; a later run that loads the model encodes with those same levels.

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::config::{FeatureSpec, Task};
use crate::model::Matrix;

#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    #[error("feature {column:?}, row {row} ({key}): {problem}")]
    BadValue {
        column: String,
        row: usize,
        key: String,
        problem: String,
    },
    #[error("target {column:?}: {problem}")]
    Target { column: String, problem: String },
    #[error("column {column:?}: {source}")]
    Frame { column: String, source: PolarsError },
}

/// At most this many levels per categorical column; rarer ones share the `other` level.
const MAX_LEVELS: usize = 30;

/// The model's input columns in order, with the categorical levels learned in training.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FeatureSchema {
    pub numeric: Vec<String>,
    pub categorical: Vec<(String, Vec<String>)>,
    /// Training medians of the numeric features: where the contract allows NULLs
    /// (`input.max_null_fraction`), a NULL becomes the median; a NULL categorical is `other`.
    #[serde(default)]
    pub medians: Vec<f64>,
}

impl FeatureSchema {
    /// Learns categorical levels (most frequent first, ties by name) from the training frame.
    pub fn learn(spec: &FeatureSpec, df: &DataFrame) -> Result<Self, FeatureError> {
        let mut categorical = Vec::new();
        for name in &spec.categorical {
            let values = text_values(df, name)?;
            let mut counts: std::collections::HashMap<&str, usize> = Default::default();
            for v in values.iter().flatten() {
                *counts.entry(v.as_str()).or_default() += 1;
            }
            let mut levels: Vec<(&str, usize)> = counts.into_iter().collect();
            levels.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            categorical.push((
                name.clone(),
                levels
                    .into_iter()
                    .take(MAX_LEVELS)
                    .map(|(l, _)| l.to_string())
                    .collect(),
            ));
        }
        let mut medians = Vec::with_capacity(spec.numeric.len());
        for name in &spec.numeric {
            let mut v: Vec<f64> = numeric_values(df, name)?
                .into_iter()
                .flatten()
                .filter(|x| x.is_finite())
                .collect();
            v.sort_by(f64::total_cmp);
            medians.push(v.get(v.len() / 2).copied().unwrap_or(0.0));
        }
        Ok(FeatureSchema {
            numeric: spec.numeric.clone(),
            categorical,
            medians,
        })
    }

    /// Column names of the matrix: numeric ones, then `col=level` and `col=other`.
    pub fn names(&self) -> Vec<String> {
        let mut out = self.numeric.clone();
        for (c, levels) in &self.categorical {
            out.extend(levels.iter().map(|l| format!("{c}={l}")));
            out.push(format!("{c}=other"));
        }
        out
    }

    /// A stable fingerprint of the schema: a model is only ever fed the schema it was trained on.
    pub fn hash(&self) -> String {
        fnv_hex(&self.names().join("\u{1f}"))
    }

    /// The feature matrix of `df`. NULL, NaN and infinite values are errors naming the column,
    /// the row and its key.
    pub fn matrix(&self, df: &DataFrame, key: &str) -> Result<Matrix, FeatureError> {
        let rows = df.height();
        let mut columns: Vec<Vec<f64>> = Vec::with_capacity(self.names().len());
        let key_of = |r: usize| -> String {
            df.column(key)
                .map(|c| format!("{key}={}", crate::warehouse::frame::cell_text(c, r)))
                .unwrap_or_default()
        };
        for (j, name) in self.numeric.iter().enumerate() {
            let values = numeric_values(df, name)?;
            let mut col = Vec::with_capacity(rows);
            for (r, v) in values.into_iter().enumerate() {
                match v {
                    Some(x) if x.is_finite() => col.push(x),
                    None if j < self.medians.len() => col.push(self.medians[j]),
                    other => {
                        return Err(FeatureError::BadValue {
                            column: name.clone(),
                            row: r + 1,
                            key: key_of(r),
                            problem: match other {
                                None => "NULL, and the model has no median to fill it".into(),
                                Some(x) => format!("{x} is not a finite number"),
                            },
                        })
                    }
                }
            }
            columns.push(col);
        }
        for (name, levels) in &self.categorical {
            let values = text_values(df, name)?;
            let mut onehot = vec![vec![0.0; rows]; levels.len() + 1];
            for (r, v) in values.iter().enumerate() {
                let slot = v
                    .as_ref()
                    .and_then(|v| levels.iter().position(|l| l == v))
                    .unwrap_or(levels.len());
                onehot[slot][r] = 1.0;
            }
            columns.extend(onehot);
        }
        Ok(Matrix::from_columns(columns, rows))
    }
}

/// Any numeric-ish column (int, float, bool) as `f64` values.
fn numeric_values(df: &DataFrame, name: &str) -> Result<Vec<Option<f64>>, FeatureError> {
    let frame_err = |source| FeatureError::Frame {
        column: name.to_string(),
        source,
    };
    let col = df.column(name).map_err(frame_err)?;
    Ok(match col.dtype() {
        DataType::Float64 => col.f64().map_err(frame_err)?.iter().collect(),
        DataType::Int64 => col
            .i64()
            .map_err(frame_err)?
            .iter()
            .map(|v| v.map(|x| x as f64))
            .collect(),
        DataType::Boolean => col
            .bool()
            .map_err(frame_err)?
            .iter()
            .map(|v| v.map(f64::from))
            .collect(),
        other => {
            return Err(FeatureError::Frame {
                column: name.to_string(),
                source: PolarsError::ComputeError(format!("type {other} is not numeric").into()),
            })
        }
    })
}

/// Any column as text values, for categorical encoding.
fn text_values(df: &DataFrame, name: &str) -> Result<Vec<Option<String>>, FeatureError> {
    let frame_err = |source| FeatureError::Frame {
        column: name.to_string(),
        source,
    };
    let col = df.column(name).map_err(frame_err)?;
    Ok(match col.dtype() {
        DataType::String => col
            .str()
            .map_err(frame_err)?
            .iter()
            .map(|v| v.map(str::to_string))
            .collect(),
        _ => numeric_values(df, name)?
            .into_iter()
            .map(|v| v.map(|x| x.to_string()))
            .collect(),
    })
}

/// The training target as `f64` (0/1 for classification), checked for being learnable.
pub fn target(df: &DataFrame, name: &str, task: Task) -> Result<Vec<f64>, FeatureError> {
    let err = |problem: String| FeatureError::Target {
        column: name.to_string(),
        problem,
    };
    let values = numeric_values(df, name)?;
    let mut y = Vec::with_capacity(values.len());
    for (r, v) in values.into_iter().enumerate() {
        match v {
            Some(x) if x.is_finite() => y.push(x),
            None => return Err(err(format!("row {} is NULL", r + 1))),
            Some(x) => return Err(err(format!("row {} is {x}, not a finite number", r + 1))),
        }
    }
    match task {
        Task::Classification => {
            if let Some((r, x)) = y.iter().enumerate().find(|(_, x)| **x != 0.0 && **x != 1.0) {
                return Err(err(format!(
                    "row {} is {x}: a classification target must be 0/1 or a boolean",
                    r + 1
                )));
            }
            let positives = y.iter().filter(|x| **x == 1.0).count();
            if positives == 0 || positives == y.len() {
                return Err(err(format!(
                    "every training row has the same class ({}): nothing to learn",
                    if positives == 0 { "0/false" } else { "1/true" }
                )));
            }
        }
        Task::Regression => {
            if y.windows(2).all(|w| w[0] == w[1]) {
                return Err(err(format!(
                    "the target is constant ({}): nothing to learn",
                    y.first().copied().unwrap_or_default()
                )));
            }
        }
    }
    Ok(y)
}

/// 64-bit FNV-1a as hex: small, stable across platforms and releases.
pub fn fnv_hex(s: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame() -> DataFrame {
        df!(
            "id" => [1i64, 2, 3, 4],
            "x" => [1.0f64, 2.0, 3.0, 4.0],
            "plan" => ["a", "b", "a", "c"],
            "y" => [true, false, true, false],
        )
        .unwrap()
    }

    #[test]
    fn same_schema_encodes_train_and_score_identically() {
        let spec = FeatureSpec {
            numeric: vec!["x".into()],
            categorical: vec!["plan".into()],
        };
        let df = frame();
        let schema = FeatureSchema::learn(&spec, &df).unwrap();
        assert_eq!(
            schema.names(),
            ["x", "plan=a", "plan=b", "plan=c", "plan=other"]
        );
        let m = schema.matrix(&df, "id").unwrap();
        assert_eq!(m.cols, 5);
        assert_eq!(m.column(1), &[1.0, 0.0, 1.0, 0.0]);
        // An unseen level at scoring time lands in `other`.
        let later = df!("id" => [9i64], "x" => [0.5], "plan" => ["z"]).unwrap();
        let m2 = schema.matrix(&later, "id").unwrap();
        assert_eq!(m2.column(4), &[1.0]);
    }

    #[test]
    fn nans_name_column_row_and_key_and_allowed_nulls_take_the_median() {
        let schema = FeatureSchema {
            numeric: vec!["x".into()],
            categorical: vec![],
            medians: vec![5.0],
        };
        let df = df!("id" => [7i64, 8], "x" => [Some(1.0), Some(f64::NAN)]).unwrap();
        let e = schema.matrix(&df, "id").unwrap_err().to_string();
        assert!(
            e.contains("\"x\"") && e.contains("row 2") && e.contains("id=8"),
            "{e}"
        );
        let df = df!("id" => [7i64, 8], "x" => [Some(1.0), None]).unwrap();
        assert_eq!(schema.matrix(&df, "id").unwrap().column(0), &[1.0, 5.0]);
    }

    #[test]
    fn unlearnable_targets_are_refused() {
        let df = df!("y" => [true, true]).unwrap();
        assert!(target(&df, "y", Task::Classification)
            .unwrap_err()
            .to_string()
            .contains("same class"));
        let df = df!("y" => [2.0, 2.0]).unwrap();
        assert!(target(&df, "y", Task::Regression)
            .unwrap_err()
            .to_string()
            .contains("constant"));
    }
}
