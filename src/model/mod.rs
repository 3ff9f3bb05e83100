//! The models prescore trains, behind one serializable enum: params from the config go in,
//! a fitted [`Model`] comes out, and `predict` scores a feature [`Matrix`] in parallel chunks
//! with no allocation per row. A fitted model round-trips through the registry's artifact
//! format ([`artifact`]).

pub mod artifact;
mod forest;
pub mod gbdt;
pub mod metrics;
mod tree;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::config::{Algorithm, ModelSpec, Task};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("training failed: {0}")]
    Fit(String),
    #[error("the stored model cannot be read: {0}")]
    Artifact(String),
    #[error("model code panicked: {0} (nothing was published)")]
    Panicked(String),
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

    /// A matrix of `rows` rows, row `r` written by `fill(r, buf)` into a cleared buffer that
    /// must end up `cols` long. Rows are filled in parallel into one row-major block, then
    /// transposed column by column: no allocation per row.
    pub fn build(rows: usize, cols: usize, fill: impl Fn(usize, &mut Vec<f64>) + Sync) -> Matrix {
        let mut row_major = vec![0.0; rows * cols];
        if cols > 0 {
            row_major
                .par_chunks_mut(cols * ROWS_PER_TASK)
                .enumerate()
                .for_each_init(
                    || Vec::with_capacity(cols),
                    |buf, (chunk, block)| {
                        for (i, slot) in block.chunks_mut(cols).enumerate() {
                            buf.clear();
                            fill(chunk * ROWS_PER_TASK + i, buf);
                            slot.copy_from_slice(buf);
                        }
                    },
                );
        }
        let mut data = vec![0.0; rows * cols];
        if rows > 0 {
            data.par_chunks_mut(rows).enumerate().for_each(|(c, col)| {
                for (r, v) in col.iter_mut().enumerate() {
                    *v = row_major[r * cols + c];
                }
            });
        }
        Matrix { data, rows, cols }
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

/// The gbdt's parameters from the job's `[model]`.
fn gbdt_params(spec: &ModelSpec) -> gbdt::GbdtParams {
    gbdt::GbdtParams {
        objective: match spec.task {
            Task::Classification => gbdt::Objective::LogLoss,
            Task::Regression => gbdt::Objective::SquaredError,
        },
        num_trees: spec.max_trees,
        learning_rate: spec.learning_rate,
        num_leaves: spec.num_leaves,
        max_depth: spec.max_depth,
        min_data_in_leaf: spec.min_samples_leaf,
        seed: spec.seed,
        ..gbdt::GbdtParams::default()
    }
}

/// Least squares with an intercept (see `fit_linear`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Linear {
    coef: Vec<f64>,
    intercept: f64,
}

/// A fitted model.
#[derive(Clone, Serialize, Deserialize)]
pub enum Model {
    DecisionTree(tree::ProbTree),
    /// A random forest; classification forests hold positive rates in their leaves.
    Forest {
        trees: Vec<forest::RegTree>,
        importance: Vec<f64>,
    },
    Linear(Linear),
    /// Gradient-boosted trees (prescore's own histogram GBDT, see [`gbdt`]).
    Gbdt(Box<gbdt::Gbdt>),
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Model({})", self.algorithm().name())
    }
}

/// Rows scored per rayon task: large enough to amortize scheduling, small enough to balance.
const CHUNK: usize = 4096;
/// Rows built per rayon task by [`Matrix::build`].
const ROWS_PER_TASK: usize = 1024;

/// The rows a training set of `total` rows is cut to: a seeded sample of
/// `spec.max_train_rows` row numbers in ascending order, or None to keep every row. A caller
/// that builds its matrix row by row can build only these.
pub fn training_sample(spec: &ModelSpec, total: usize) -> Option<Vec<usize>> {
    if spec.max_train_rows == 0 || total <= spec.max_train_rows {
        return None;
    }
    use rand::seq::index::sample;
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(spec.seed);
    let mut idx = sample(&mut rng, total, spec.max_train_rows).into_vec();
    idx.sort_unstable();
    Some(idx)
}

impl Model {
    /// Trains the configured algorithm on `x` and `y` (0/1 for classification). Callers cut
    /// the rows to [`training_sample`] before building `x`, so only those become features.
    pub fn fit(spec: &ModelSpec, x: &Matrix, y: &[f64]) -> Result<Model, ModelError> {
        if x.rows == 0 {
            return Err(ModelError::Fit("no training rows".into()));
        }
        match spec.algorithm {
            Algorithm::DecisionTree => Ok(Model::DecisionTree(tree::fit_tree(
                x,
                y,
                spec.max_depth,
                spec.min_samples_leaf,
            )?)),
            Algorithm::RandomForest => {
                let classification = spec.task == Task::Classification;
                let params = forest::ForestParams {
                    trees: spec.trees,
                    max_depth: spec.max_depth,
                    min_leaf: spec.min_samples_leaf,
                    seed: spec.seed,
                    classification,
                };
                let weights = classification.then(|| tree::balanced_weights(y));
                let (trees, importance) = forest::fit(x, y, weights.as_deref(), params);
                Ok(Model::Forest { trees, importance })
            }
            Algorithm::Linear => fit_linear(x, y),
            Algorithm::Gbdt => {
                let model = gbdt::Gbdt::fit(&gbdt_params(spec), &x.data, x.rows, x.cols, y, None)
                    .map_err(ModelError::Fit)?;
                Ok(Model::Gbdt(Box::new(model)))
            }
        }
    }

    /// `fit` on `rows` rows of `cols` features that `fill(r, buf)` writes into a cleared
    /// buffer. The gbdt bins them as they are written, so a large training set is never held
    /// as a matrix of `f64`s; the other algorithms fit the matrix built from them.
    pub fn fit_rows(
        spec: &ModelSpec,
        rows: usize,
        cols: usize,
        fill: &(dyn Fn(usize, &mut Vec<f64>) + Sync),
        y: &[f64],
    ) -> Result<Model, ModelError> {
        match spec.algorithm {
            Algorithm::Gbdt if rows > 0 => {
                let model = gbdt::Gbdt::fit_rows(&gbdt_params(spec), rows, cols, fill, y, None)
                    .map_err(ModelError::Fit)?;
                Ok(Model::Gbdt(Box::new(model)))
            }
            _ => Model::fit(spec, &Matrix::build(rows, cols, fill), y),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            Model::DecisionTree(_) => Algorithm::DecisionTree,
            Model::Forest { .. } => Algorithm::RandomForest,
            Model::Linear(_) => Algorithm::Linear,
            Model::Gbdt(_) => Algorithm::Gbdt,
        }
    }

    /// Scores every row: the positive-class probability (classification) or the value.
    /// Runs on the current rayon pool.
    pub fn predict(&self, x: &Matrix) -> Vec<f64> {
        if let Model::Gbdt(g) = self {
            return g.predict(&x.data, x.rows, x.cols);
        }
        let mut out = vec![0.0; x.rows];
        out.par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(chunk, slots)| {
                let start = chunk * CHUNK;
                for (i, slot) in slots.iter_mut().enumerate() {
                    *slot = self.predict_row(x, start + i);
                }
            });
        out
    }

    fn predict_row(&self, x: &Matrix, r: usize) -> f64 {
        match self {
            Model::DecisionTree(t) => t.predict(x, r),
            Model::Forest { trees, .. } => {
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
            Model::Gbdt(_) => unreachable!("gbdt predicts a whole matrix"),
        }
    }

    /// Relative importance per feature (summing to 1), where the model has them.
    pub fn importances(&self, n_features: usize) -> Option<Vec<f64>> {
        let raw = match self {
            Model::DecisionTree(t) => t.importances(n_features),
            Model::Gbdt(g) => g.importances(),
            Model::Forest { importance, .. } => importance.clone(),
            Model::Linear(_) => return None,
        };
        let total: f64 = raw.iter().sum();
        Some(if total > 0.0 {
            raw.iter().map(|v| v / total).collect()
        } else {
            raw
        })
    }

    /// The registry artifact (see [`artifact`]).
    pub fn to_bytes(&self) -> Result<Vec<u8>, ModelError> {
        artifact::encode("model", self)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Model, ModelError> {
        artifact::decode("model", bytes)
    }
}

/// Least squares with an intercept and a tiny ridge penalty, solved from the normal equations
/// on centered data. The ridge term keeps one-hot encoded categoricals (whose levels sum to
/// the intercept) solvable; linfa-linear's OLS rejects such a design as non-invertible.
fn fit_linear(x: &Matrix, y: &[f64]) -> Result<Model, ModelError> {
    let (n, p) = (x.rows as f64, x.cols);
    let means: Vec<f64> = (0..p)
        .map(|c| x.column(c).iter().sum::<f64>() / n)
        .collect();
    let y_mean = y.iter().sum::<f64>() / n;
    let mut a = vec![vec![0.0; p + 1]; p]; // [XᵀX | Xᵀy], centered
    for i in 0..p {
        let ci = x.column(i);
        for j in i..p {
            let cj = x.column(j);
            let v: f64 = ci
                .iter()
                .zip(cj)
                .map(|(u, w)| (u - means[i]) * (w - means[j]))
                .sum();
            a[i][j] = v;
            a[j][i] = v;
        }
        a[i][p] = ci
            .iter()
            .zip(y)
            .map(|(u, t)| (u - means[i]) * (t - y_mean))
            .sum();
    }
    let scale = (0..p).map(|i| a[i][i]).fold(0.0, f64::max).max(1.0);
    for (i, row) in a.iter_mut().enumerate() {
        row[i] += 1e-9 * scale;
    }
    // Gaussian elimination with partial pivoting.
    for col in 0..p {
        let pivot = (col..p)
            .max_by(|r1, r2| a[*r1][col].abs().total_cmp(&a[*r2][col].abs()))
            .unwrap_or(col);
        a.swap(col, pivot);
        let d = a[col][col];
        if d.abs() < 1e-300 {
            return Err(ModelError::Fit(format!(
                "linear regression: feature {col} has no variance"
            )));
        }
        let pivot_row = a[col].clone();
        for (r, row) in a.iter_mut().enumerate() {
            if r != col {
                let f = row[col] / d;
                if f != 0.0 {
                    for (x, pv) in row[col..].iter_mut().zip(&pivot_row[col..]) {
                        *x -= f * pv;
                    }
                }
            }
        }
    }
    let coef: Vec<f64> = (0..p).map(|i| a[i][p] / a[i][i]).collect();
    let intercept = y_mean - coef.iter().zip(&means).map(|(c, m)| c * m).sum::<f64>();
    if !coef.iter().all(|c| c.is_finite()) {
        return Err(ModelError::Fit(
            "linear regression did not converge to finite coefficients".into(),
        ));
    }
    Ok(Model::Linear(Linear { coef, intercept }))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    pub fn spec(task: Task, algorithm: Algorithm) -> ModelSpec {
        ModelSpec {
            task,
            algorithm,
            max_depth: 6,
            min_samples_leaf: 5,
            trees: 10,
            max_trees: 100,
            learning_rate: 0.1,
            num_leaves: 31,
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
        assert!(metrics::mae(&y, &lin.predict(&x)) < 1e-6);
        // One-hot columns that sum to one (collinear with the intercept) still fit.
        let a: Vec<f64> = (0..n).map(|i| (i % 2) as f64).collect();
        let b: Vec<f64> = a.iter().map(|v| 1.0 - v).collect();
        let yy: Vec<f64> = a.iter().map(|v| 2.0 + 3.0 * v).collect();
        let x2 = Matrix::from_columns(vec![a, b], n);
        let lin = Model::fit(&spec(Task::Regression, Algorithm::Linear), &x2, &yy).unwrap();
        assert!(metrics::mae(&yy, &lin.predict(&x2)) < 1e-6);
        let gb = Model::fit(&spec(Task::Regression, Algorithm::Gbdt), &x, &y).unwrap();
        assert!(metrics::mae(&y, &gb.predict(&x)) < 0.1);
        let rf = Model::fit(&spec(Task::Regression, Algorithm::RandomForest), &x, &y).unwrap();
        assert!(metrics::mae(&y, &rf.predict(&x)) < 0.1);
        let back = Model::from_bytes(&rf.to_bytes().unwrap()).unwrap();
        assert_eq!(back.predict(&x), rf.predict(&x));
    }

    #[test]
    fn models_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Model>();
        check::<Matrix>();
    }
}

/// A model stored by this version must load in the next: the committed fixture was written
/// by `cargo test --release --lib write_the_fixture -- --ignored` and holds a small gbdt and
/// the predictions it made. A change that breaks reading it must bump `artifact::FORMAT`
/// (and refuse the old one with a clear message) rather than misread the champion.
#[cfg(test)]
mod fixture {
    use super::*;

    const FIXTURE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/gbdt-format2.artifact"
    );

    fn data() -> (Matrix, Vec<f64>) {
        let n = 500;
        let x0: Vec<f64> = (0..n).map(|i| (i % 50) as f64).collect();
        let x1: Vec<f64> = (0..n)
            .map(|i| {
                if i % 7 == 0 {
                    f64::NAN
                } else {
                    (i % 13) as f64
                }
            })
            .collect();
        let y = (0..n).map(|i| x0[i] * 0.5 + (i % 13) as f64).collect();
        (Matrix::from_columns(vec![x0, x1], n), y)
    }

    #[test]
    #[ignore = "writes the fixture; run once by hand"]
    fn write_the_fixture() {
        let (x, y) = data();
        let mut spec = tests::spec(Task::Regression, Algorithm::Gbdt);
        spec.max_trees = 20;
        let m = Model::fit(&spec, &x, &y).unwrap();
        let mut bytes = m.to_bytes().unwrap();
        let pred = serde_json::to_vec(&m.predict(&x)).unwrap();
        bytes.extend_from_slice(b"\n--predictions--\n");
        bytes.extend_from_slice(&pred);
        std::fs::write(FIXTURE, bytes).unwrap();
    }

    #[test]
    fn a_stored_gbdt_from_this_format_loads_and_predicts_the_same() {
        let raw = std::fs::read(FIXTURE).expect("the committed fixture");
        let sep = b"\n--predictions--\n";
        let at = raw
            .windows(sep.len())
            .rposition(|w| w == sep)
            .expect("fixture predictions");
        let model = Model::from_bytes(&raw[..at]).expect("the fixture loads");
        let want: Vec<f64> = serde_json::from_slice(&raw[at + sep.len()..]).unwrap();
        let (x, _) = data();
        assert_eq!(model.predict(&x), want);
        let h = artifact::header(&raw[..at]).unwrap();
        assert_eq!(h.format, artifact::FORMAT);
    }
}
