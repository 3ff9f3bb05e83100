//! Stage 4 for `score` jobs, train: hold out the latest rows (by `input.time`; a stable hash
//! of the key when the job has no time column), fit the configured model on the rest and
//! measure it on the holdout next to a naive baseline (the base rate, or the training mean).

use chrono::{DateTime, Utc};
use polars::prelude::*;

use super::features::{self, FeatureSchema};
use super::interval::{self, Calibrated};
use crate::config::Job;
use crate::model::metrics::{self, Metrics};
use crate::model::{Matrix, Model};

/// A freshly trained model and what is known about it.
pub struct Trained {
    pub model: Model,
    pub schema: FeatureSchema,
    pub metrics: Metrics,
    pub baseline: Metrics,
    pub rows_train: usize,
    pub rows_holdout: usize,
    pub train_from: Option<DateTime<Utc>>,
    pub train_to: Option<DateTime<Utc>>,
    pub importances: Option<Vec<(String, f64)>>,
    /// The holdout, kept so the gate can score the champion on the same rows.
    pub holdout_x: Matrix,
    pub holdout_y: Vec<f64>,
    /// Regression: the prediction interval (also in `schema.interval`) and its coverage.
    pub calibrated: Option<Calibrated>,
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Features(#[from] features::FeatureError),
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error("the holdout split left {train} training and {holdout} holdout rows: need more rows or a different model.holdout_fraction")]
    Split { train: usize, holdout: usize },
}

/// Trains a `score` job's model on the training frame. CPU-bound: call from `spawn_blocking`.
pub fn train(job: &Job, df: &DataFrame) -> Result<Trained, TrainError> {
    let mut schema = FeatureSchema::learn(&job.features, df)?;
    let y = features::target(df, job.input.target.as_str(), job.model.task)?;
    let times = job
        .kind
        .time()
        .and_then(|t| df.column(t.as_str()).ok())
        .and_then(|c| c.datetime().ok().map(|d| d.physical().clone()));
    let (train_idx, hold_idx) = split(df, job, times.as_ref());
    if train_idx.len() < 10 || hold_idx.is_empty() {
        return Err(TrainError::Split {
            train: train_idx.len(),
            holdout: hold_idx.len(),
        });
    }
    // Features only for the rows the model fits (a seeded sample when model.max_train_rows
    // cuts them) and the holdout: the rest of the training rows never become a matrix.
    let fit_idx: Vec<usize> = match crate::model::training_sample(&job.model, train_idx.len()) {
        Some(sample) => sample.iter().map(|&i| train_idx[i]).collect(),
        None => train_idx.clone(),
    };
    let key = job.input.key.as_str();
    let y_train = pick(&y, &train_idx);
    let (x_fit, y_fit) = (
        schema.matrix_of(df, key, Some(&fit_idx))?,
        pick(&y, &fit_idx),
    );
    let (x_hold, y_hold) = (
        schema.matrix_of(df, key, Some(&hold_idx))?,
        pick(&y, &hold_idx),
    );
    let cols = x_fit.cols;
    tracing::info!(
        train = train_idx.len(),
        fit = fit_idx.len(),
        holdout = hold_idx.len(),
        features = cols,
        algorithm = job.model.algorithm.name(),
        "training"
    );
    let model = Model::fit(&job.model, &x_fit, &y_fit)?;
    let mut pred = model.predict(&x_hold);
    interval::raise(&mut pred, job.output.min_score);
    let threshold = job.output.threshold;
    let metrics = metrics::evaluate(job.model.task, &y_hold, &pred, threshold);
    // The naive baseline: the base rate (classification) or the mean (regression).
    let constant = y_train.iter().sum::<f64>() / y_train.len() as f64;
    let baseline = metrics::evaluate(
        job.model.task,
        &y_hold,
        &vec![constant; y_hold.len()],
        threshold,
    );
    let calibrated = job.output.interval.and_then(|coverage| {
        // Half of the holdout calibrates, the other half measures (split by key, so that an
        // entity's rows stay together).
        let keys = df.column(key).ok()?;
        let sides: Vec<bool> = hold_idx
            .iter()
            .map(|&i| interval::calibrates(&crate::warehouse::frame::cell_text(keys, i)))
            .collect();
        interval::calibrate(&y_hold, &pred, &sides, coverage, job.output.min_score)
    });
    schema.interval = calibrated.as_ref().map(|c| c.interval);
    let names = schema.names();
    let importances = model
        .importances(names.len())
        .map(|imp| names.iter().cloned().zip(imp).collect());
    let (train_from, train_to) = match &times {
        Some(t) => (
            t.min().map(crate::warehouse::frame::micros_to_utc),
            t.max().map(crate::warehouse::frame::micros_to_utc),
        ),
        None => (None, None),
    };
    Ok(Trained {
        model,
        schema,
        metrics,
        baseline,
        rows_train: train_idx.len(),
        rows_holdout: hold_idx.len(),
        train_from,
        train_to,
        importances,
        holdout_x: x_hold,
        holdout_y: y_hold,
        calibrated,
    })
}

fn pick(y: &[f64], idx: &[usize]) -> Vec<f64> {
    idx.iter().map(|&i| y[i]).collect()
}

/// Time-based split when there is a time column with more than one distinct time; otherwise a
/// stable hash of the key, so reruns split identically.
fn split(df: &DataFrame, job: &Job, times: Option<&Int64Chunked>) -> (Vec<usize>, Vec<usize>) {
    let n = df.height();
    let frac = job.model.holdout_fraction;
    if let Some(t) = times {
        let mut order: Vec<(i64, usize)> = t
            .iter()
            .enumerate()
            .map(|(i, v)| (v.unwrap_or(i64::MIN), i))
            .collect();
        order.sort_unstable();
        // Hold out whole timestamps from the latest back, as many as fit in the fraction
        // (at least the latest one), so the cut never splits a timestamp.
        let budget = ((n as f64) * frac).round() as usize;
        let mut held = 0;
        let mut cut = None;
        let mut i = n;
        while i > 0 {
            let t = order[i - 1].0;
            let start = order.partition_point(|p| p.0 < t);
            let block = i - start;
            if cut.is_some() && held + block > budget {
                break;
            }
            held += block;
            cut = Some(t);
            i = start;
        }
        if let Some(cut) = cut.filter(|_| i > 0) {
            let (mut tr, mut ho) = (Vec::new(), Vec::new());
            for (v, idx) in order {
                if v >= cut {
                    ho.push(idx)
                } else {
                    tr.push(idx)
                }
            }
            tr.sort_unstable();
            ho.sort_unstable();
            return (tr, ho);
        }
    }
    let key = df.column(job.input.key.as_str()).ok();
    let (mut tr, mut ho) = (Vec::new(), Vec::new());
    for i in 0..n {
        let k = key
            .map(|c| crate::warehouse::frame::cell_text(c, i))
            .unwrap_or_else(|| i.to_string());
        let h = u64::from_str_radix(&features::fnv_hex(&k), 16).unwrap_or(0);
        if (h % 10_000) as f64 / 10_000.0 < frac {
            ho.push(i)
        } else {
            tr.push(i)
        }
    }
    (tr, ho)
}
