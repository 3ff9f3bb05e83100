//! Stage 3, features for `score` jobs: one code path turns a frame into a feature matrix for
//! training and for scoring alike, so the two can never disagree (no training/serving skew).
//! Categorical levels are learned once at training time and stored with the model as part of
//! its [`FeatureSchema`]; a later run that loads the model encodes with those same levels.

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use super::interval::Interval;
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
    /// Regression: the prediction interval calibrated on the holdout, kept here so that a run
    /// that loads this model writes the same bounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Interval>,
    /// The training data's distribution, for drift (absent in models trained before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<crate::monitor::drift::Reference>,
}

impl FeatureSchema {
    /// Learns categorical levels (most frequent first, ties by name) from the training frame.
    pub fn learn(spec: &FeatureSpec, df: &DataFrame) -> Result<Self, FeatureError> {
        let mut categorical = Vec::new();
        for name in &spec.categorical {
            let mut counts: std::collections::HashMap<String, usize> = Default::default();
            each_text(df, name, |_, v| {
                if let Some(v) = v {
                    match counts.get_mut(v) {
                        Some(n) => *n += 1,
                        None => {
                            counts.insert(v.to_string(), 1);
                        }
                    }
                }
            })?;
            let mut levels: Vec<(String, usize)> = counts.into_iter().collect();
            levels.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            categorical.push((
                name.clone(),
                levels
                    .into_iter()
                    .take(MAX_LEVELS)
                    .map(|(l, _)| l)
                    .collect(),
            ));
        }
        let mut medians = Vec::with_capacity(spec.numeric.len());
        for name in &spec.numeric {
            let mut v: Vec<f64> = Vec::with_capacity(df.height());
            each_numeric(df, name, |_, x| {
                v.extend(x.filter(|x| x.is_finite()));
                Ok(())
            })?;
            let mid = v.len() / 2;
            let median = if v.is_empty() {
                0.0
            } else {
                *v.select_nth_unstable_by(mid, f64::total_cmp).1
            };
            medians.push(median);
        }
        Ok(FeatureSchema {
            numeric: spec.numeric.clone(),
            categorical,
            medians,
            interval: None,
            reference: None,
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
        self.matrix_of(df, key, None)
    }

    /// The feature matrix of the frame's rows `only` (in that order), or of every row. Rows
    /// outside `only` are not checked here (the contract has checked every row already).
    pub fn matrix_of(
        &self,
        df: &DataFrame,
        key: &str,
        only: Option<&[usize]>,
    ) -> Result<Matrix, FeatureError> {
        // Frame row -> matrix row, when only some rows are wanted.
        let position: Option<Vec<u32>> = only.map(|only| {
            let mut p = vec![u32::MAX; df.height()];
            for (i, &r) in only.iter().enumerate() {
                p[r] = i as u32;
            }
            p
        });
        let at = |r: usize| -> Option<usize> {
            match &position {
                None => Some(r),
                Some(p) => (p[r] != u32::MAX).then_some(p[r] as usize),
            }
        };
        let rows = only.map_or(df.height(), <[usize]>::len);
        let cols = self.numeric.len()
            + self
                .categorical
                .iter()
                .map(|(_, l)| l.len() + 1)
                .sum::<usize>();
        // One allocation, column-major, filled in place: no per-column or per-row copies.
        let mut data = vec![0.0; rows * cols];
        if rows == 0 {
            return Ok(Matrix { data, rows, cols });
        }
        let key_of = |r: usize| -> String {
            df.column(key)
                .map(|c| format!("{key}={}", crate::warehouse::frame::cell_text(c, r)))
                .unwrap_or_default()
        };
        let mut slots = data.chunks_mut(rows);
        for (j, name) in self.numeric.iter().enumerate() {
            let out = slots.next().expect("one slot per numeric feature");
            let median = self.medians.get(j).copied();
            each_numeric(df, name, |r, v| {
                let Some(o) = at(r) else { return Ok(()) };
                out[o] = match (v, median) {
                    (Some(x), _) if x.is_finite() => x,
                    (None, Some(m)) => m,
                    (other, _) => {
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
                };
                Ok(())
            })?;
        }
        for (name, levels) in &self.categorical {
            let mut onehot: Vec<&mut [f64]> = slots.by_ref().take(levels.len() + 1).collect();
            each_text(df, name, |r, v| {
                let Some(o) = at(r) else { return };
                let slot = v
                    .and_then(|v| levels.iter().position(|l| l == v))
                    .unwrap_or(levels.len());
                onehot[slot][o] = 1.0;
            })?;
        }
        Ok(Matrix { data, rows, cols })
    }
}

fn column<'a>(df: &'a DataFrame, name: &str) -> Result<&'a Column, FeatureError> {
    df.column(name).map_err(|source| FeatureError::Frame {
        column: name.to_string(),
        source,
    })
}

/// Calls `f(row, value)` for each value of a numeric-ish column (int, float, bool) as `f64`,
/// straight from the frame's arrays; the first error `f` returns stops the walk.
fn each_numeric(
    df: &DataFrame,
    name: &str,
    mut f: impl FnMut(usize, Option<f64>) -> Result<(), FeatureError>,
) -> Result<(), FeatureError> {
    let col = column(df, name)?;
    let frame_err = |source| FeatureError::Frame {
        column: name.to_string(),
        source,
    };
    match col.dtype() {
        DataType::Float64 => {
            for (r, v) in col.f64().map_err(frame_err)?.iter().enumerate() {
                f(r, v)?;
            }
        }
        DataType::Int64 => {
            for (r, v) in col.i64().map_err(frame_err)?.iter().enumerate() {
                f(r, v.map(|x| x as f64))?;
            }
        }
        DataType::Boolean => {
            for (r, v) in col.bool().map_err(frame_err)?.iter().enumerate() {
                f(r, v.map(f64::from))?;
            }
        }
        other => {
            return Err(FeatureError::Frame {
                column: name.to_string(),
                source: PolarsError::ComputeError(format!("type {other} is not numeric").into()),
            })
        }
    }
    Ok(())
}

/// Calls `f(row, value)` for each value of a column as text (categorical encoding); a
/// numeric column's values are spelled as Rust prints them.
fn each_text(
    df: &DataFrame,
    name: &str,
    mut f: impl FnMut(usize, Option<&str>),
) -> Result<(), FeatureError> {
    let col = column(df, name)?;
    if let DataType::String = col.dtype() {
        let ca = col.str().map_err(|source| FeatureError::Frame {
            column: name.to_string(),
            source,
        })?;
        for (r, v) in ca.iter().enumerate() {
            f(r, v);
        }
        return Ok(());
    }
    let mut buf = String::new();
    each_numeric(df, name, |r, v| {
        match v {
            Some(x) => {
                use std::fmt::Write as _;
                buf.clear();
                let _ = write!(buf, "{x}");
                f(r, Some(&buf));
            }
            None => f(r, None),
        }
        Ok(())
    })
}

/// The training target as `f64` (0/1 for classification), checked for being learnable.
pub fn target(df: &DataFrame, name: &str, task: Task) -> Result<Vec<f64>, FeatureError> {
    let err = |problem: String| FeatureError::Target {
        column: name.to_string(),
        problem,
    };
    let mut y = Vec::with_capacity(df.height());
    each_numeric(df, name, |r, v| match v {
        Some(x) if x.is_finite() => {
            y.push(x);
            Ok(())
        }
        None => Err(err(format!("row {} is NULL", r + 1))),
        Some(x) => Err(err(format!("row {} is {x}, not a finite number", r + 1))),
    })?;
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

    /// The test frame and the schema learned from it (`x` numeric, `plan` categorical).
    fn frame_and_schema() -> (DataFrame, FeatureSchema) {
        let spec = FeatureSpec {
            numeric: vec!["x".into()],
            categorical: vec!["plan".into()],
        };
        let df = frame();
        let schema = FeatureSchema::learn(&spec, &df).unwrap();
        (df, schema)
    }

    #[test]
    fn same_schema_encodes_train_and_score_identically() {
        let (df, schema) = frame_and_schema();
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
    fn a_matrix_of_some_rows_is_those_rows_of_the_whole_one() {
        let (df, schema) = frame_and_schema();
        let all = schema.matrix(&df, "id").unwrap();
        let only = [2, 0];
        let some = schema.matrix_of(&df, "id", Some(&only)).unwrap();
        assert_eq!(some.data, all.select_rows(&only).data);
    }

    #[test]
    fn nans_name_column_row_and_key_and_allowed_nulls_take_the_median() {
        let schema = FeatureSchema {
            numeric: vec!["x".into()],
            categorical: vec![],
            medians: vec![5.0],
            interval: None,
            reference: None,
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
