//! The models prescore trains, behind one serializable enum: params from the config go in,
//! a fitted [`Model`] comes out, and `predict` scores a feature [`Matrix`] in parallel chunks
//! with no allocation per row. A fitted model round-trips through JSON, which is how the
//! registry stores it.

pub mod metrics;
mod tree;

use perpetual::objective::Objective;
use perpetual::PerpetualBooster;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::config::{Algorithm, ModelSpec, Task};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("training failed: {0}")]
    Fit(String),
    #[error("the stored model cannot be read: {0}")]
    Artifact(String),
}

/// A dense feature matrix, column-major: column `c` is `data[c*rows .. (c+1)*rows]`.
#[derive(Debug, Clone, Default)]
pub struct Matrix {
    pub data: Vec<f64>,
    pub rows: usize,
    pub cols: usize,
}

impl Matrix {
    pub fn from_columns(columns: Vec<Vec<f64>>, rows: usize) -> Self {
        let cols = columns.len();
        let mut data = Vec::with_capacity(rows * cols);
        for c in columns {
            debug_assert_eq!(c.len(), rows);
            data.extend(c);
        }
        Matrix { data, rows, cols }
    }

    #[inline]
    pub fn get(&self, r: usize, c: usize) -> f64 {
        self.data[c * self.rows + r]
    }

    pub fn column(&self, c: usize) -> &[f64] {
        &self.data[c * self.rows..(c + 1) * self.rows]
    }

    /// The rows at `idx`, in that order.
    pub fn select_rows(&self, idx: &[usize]) -> Matrix {
        let mut data = Vec::with_capacity(idx.len() * self.cols);
        for c in 0..self.cols {
            let col = self.column(c);
            data.extend(idx.iter().map(|&r| col[r]));
        }
        Matrix {
            data,
            rows: idx.len(),
            cols: self.cols,
        }
    }
}

/// Ordinary least squares with an intercept (fitted by linfa-linear).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Linear {
    coef: Vec<f64>,
    intercept: f64,
}

/// A fitted model.
#[derive(Clone, Serialize, Deserialize)]
pub enum Model {
    DecisionTree(tree::ProbTree),
    RandomForest(Vec<tree::ProbTree>),
    Linear(Linear),
    Gbdt {
        booster: Box<PerpetualBooster>,
        task: Task,
    },
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Model({})", self.algorithm().name())
    }
}

/// Rows scored per rayon task: large enough to amortize scheduling, small enough to balance.
const CHUNK: usize = 4096;

impl Model {
    /// Trains the configured algorithm on `x` and `y` (0/1 for classification), on a seeded
    /// sample of `spec.max_train_rows` rows when there are more.
    pub fn fit(spec: &ModelSpec, x: &Matrix, y: &[f64]) -> Result<Model, ModelError> {
        if x.rows == 0 {
            return Err(ModelError::Fit("no training rows".into()));
        }
        if spec.max_train_rows > 0 && x.rows > spec.max_train_rows {
            use rand::seq::index::sample;
            use rand::SeedableRng;
            let mut rng = rand::rngs::StdRng::seed_from_u64(spec.seed);
            let mut idx = sample(&mut rng, x.rows, spec.max_train_rows).into_vec();
            idx.sort_unstable();
            tracing::info!(
                rows = x.rows,
                sample = idx.len(),
                "training on a sample (model.max_train_rows)"
            );
            let ys: Vec<f64> = idx.iter().map(|&i| y[i]).collect();
            return Self::fit_all(spec, &x.select_rows(&idx), &ys);
        }
        Self::fit_all(spec, x, y)
    }

    fn fit_all(spec: &ModelSpec, x: &Matrix, y: &[f64]) -> Result<Model, ModelError> {
        match spec.algorithm {
            Algorithm::DecisionTree => Ok(Model::DecisionTree(tree::fit_tree(
                x,
                y,
                spec.max_depth,
                spec.min_samples_leaf,
            )?)),
            Algorithm::RandomForest => Ok(Model::RandomForest(tree::fit_forest(
                x,
                y,
                spec.max_depth,
                spec.min_samples_leaf,
                spec.trees,
                spec.seed,
            )?)),
            Algorithm::Linear => fit_linear(x, y),
            Algorithm::Gbdt => {
                let objective = match spec.task {
                    Task::Classification => Objective::LogLoss,
                    Task::Regression => Objective::SquaredLoss,
                };
                let mut booster = PerpetualBooster::default()
                    .set_objective(objective)
                    .set_budget(spec.budget)
                    .set_iteration_limit(Some(spec.max_trees))
                    .set_num_threads(Some(rayon::current_num_threads()))
                    .set_seed(spec.seed);
                let data = perpetual::Matrix::new(&x.data, x.rows, x.cols);
                booster
                    .fit(&data, y, None, None)
                    .map_err(|e| ModelError::Fit(e.to_string()))?;
                Ok(Model::Gbdt {
                    booster: Box::new(booster),
                    task: spec.task,
                })
            }
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            Model::DecisionTree(_) => Algorithm::DecisionTree,
            Model::RandomForest(_) => Algorithm::RandomForest,
            Model::Linear(_) => Algorithm::Linear,
            Model::Gbdt { .. } => Algorithm::Gbdt,
        }
    }

    /// Scores every row: the positive-class probability (classification) or the value.
    /// Runs on the current rayon pool.
    pub fn predict(&self, x: &Matrix) -> Vec<f64> {
        let mut out = vec![0.0; x.rows];
        match self {
            Model::Gbdt { booster, task } => {
                let data = perpetual::Matrix::new(&x.data, x.rows, x.cols);
                out = match task {
                    Task::Classification => booster.predict_proba(&data, true, false),
                    Task::Regression => booster.predict(&data, true),
                };
            }
            _ => out
                .par_chunks_mut(CHUNK)
                .enumerate()
                .for_each(|(chunk, slots)| {
                    let start = chunk * CHUNK;
                    for (i, slot) in slots.iter_mut().enumerate() {
                        *slot = self.predict_row(x, start + i);
                    }
                }),
        }
        out
    }

    fn predict_row(&self, x: &Matrix, r: usize) -> f64 {
        match self {
            Model::DecisionTree(t) => t.predict(x, r),
            Model::RandomForest(trees) => {
                trees.iter().map(|t| t.predict(x, r)).sum::<f64>() / trees.len().max(1) as f64
            }
            Model::Linear(l) => {
                l.intercept
                    + l.coef
                        .iter()
                        .enumerate()
                        .map(|(c, w)| w * x.get(r, c))
                        .sum::<f64>()
            }
            Model::Gbdt { .. } => unreachable!("gbdt predicts a whole matrix"),
        }
    }

    /// Relative importance per feature (summing to 1), where the model has them.
    pub fn importances(&self, n_features: usize) -> Option<Vec<f64>> {
        let raw = match self {
            Model::DecisionTree(t) => t.importances(n_features),
            Model::RandomForest(trees) => {
                let mut sum = vec![0.0; n_features];
                for t in trees {
                    for (s, v) in sum.iter_mut().zip(t.importances(n_features)) {
                        *s += v;
                    }
                }
                sum
            }
            Model::Gbdt { booster, .. } => {
                let map = booster.calculate_feature_importance(
                    perpetual::booster::config::ImportanceMethod::TotalGain,
                    true,
                );
                (0..n_features)
                    .map(|i| map.get(&i).copied().unwrap_or(0.0) as f64)
                    .collect()
            }
            Model::Linear(_) => return None,
        };
        let total: f64 = raw.iter().sum();
        Some(if total > 0.0 {
            raw.iter().map(|v| v / total).collect()
        } else {
            raw
        })
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, ModelError> {
        serde_json::to_vec(self).map_err(|e| ModelError::Artifact(e.to_string()))
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Model, ModelError> {
        serde_json::from_slice(bytes).map_err(|e| ModelError::Artifact(e.to_string()))
    }
}

fn fit_linear(x: &Matrix, y: &[f64]) -> Result<Model, ModelError> {
    use linfa::prelude::*;
    use ndarray::{Array1, Array2, ShapeBuilder};
    let records = Array2::from_shape_vec((x.rows, x.cols).f(), x.data.clone())
        .map_err(|e| ModelError::Fit(e.to_string()))?;
    let dataset = Dataset::new(records, Array1::from(y.to_vec()));
    let fitted = linfa_linear::LinearRegression::new()
        .fit(&dataset)
        .map_err(|e| ModelError::Fit(format!("linear regression: {e}")))?;
    Ok(Model::Linear(Linear {
        coef: fitted.params().to_vec(),
        intercept: fitted.intercept(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn spec(task: Task, algorithm: Algorithm) -> ModelSpec {
        ModelSpec {
            task,
            algorithm,
            max_depth: 6,
            min_samples_leaf: 5,
            trees: 10,
            budget: 0.5,
            max_trees: 100,
            max_train_rows: 0,
            holdout_fraction: 0.2,
            seed: 7,
        }
    }

    /// y = 1 when x0 + noise > 0.5: every classifier should rank far better than chance.
    fn classification_data(n: usize) -> (Matrix, Vec<f64>) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let x0: Vec<f64> = (0..n).map(|_| rng.gen::<f64>()).collect();
        let x1: Vec<f64> = (0..n).map(|_| rng.gen::<f64>()).collect();
        let y = x0
            .iter()
            .map(|v| f64::from(v + rng.gen_range(-0.1..0.1) > 0.5))
            .collect();
        (Matrix::from_columns(vec![x0, x1], n), y)
    }

    #[test]
    fn classifiers_learn_and_round_trip() {
        let (x, y) = classification_data(2000);
        for algo in [
            Algorithm::DecisionTree,
            Algorithm::RandomForest,
            Algorithm::Gbdt,
        ] {
            let m = Model::fit(&spec(Task::Classification, algo), &x, &y).unwrap();
            let p = m.predict(&x);
            assert!(p.iter().all(|v| (0.0..=1.0).contains(v)), "{algo:?}");
            let auc = metrics::auc(&y, &p);
            assert!(auc > 0.9, "{algo:?} auc {auc}");
            let back = Model::from_bytes(&m.to_bytes().unwrap()).unwrap();
            assert_eq!(back.predict(&x), p, "{algo:?} changed after a round trip");
        }
    }

    #[test]
    fn regressors_fit_a_line() {
        let n = 1000;
        let x0: Vec<f64> = (0..n).map(|i| i as f64 / n as f64).collect();
        let y: Vec<f64> = x0.iter().map(|v| 3.0 * v + 1.0).collect();
        let x = Matrix::from_columns(vec![x0], n);
        let lin = Model::fit(&spec(Task::Regression, Algorithm::Linear), &x, &y).unwrap();
        assert!(metrics::mae(&y, &lin.predict(&x)) < 1e-9);
        let gb = Model::fit(&spec(Task::Regression, Algorithm::Gbdt), &x, &y).unwrap();
        assert!(metrics::mae(&y, &gb.predict(&x)) < 0.1);
    }

    #[test]
    fn models_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Model>();
        check::<Matrix>();
    }
}
