//! Holdout metrics fitting the task: accuracy, AUC and log loss for classification; MAE,
//! RMSE, R² and sMAPE for regression (and the Brier score and bias the realized accuracy of
//! score jobs adds, `monitor::labels`). Each metric knows whether higher is better, which is what
//! the quality gate needs to compare a candidate with a baseline or the champion.

use std::collections::BTreeMap;

use crate::config::Task;

pub type Metrics = BTreeMap<String, f64>;

/// Whether a larger value of this metric means a better model.
pub fn higher_is_better(metric: &str) -> bool {
    matches!(metric, "auc" | "accuracy" | "r2")
}

/// The metric a task is judged by when comparing models.
pub fn primary(task: Task) -> &'static str {
    match task {
        // Ranking is what a score table is for; the baseline's AUC is 0.5 by construction.
        Task::Classification => "auc",
        Task::Regression => "mae",
    }
}

/// All metrics of `pred` against `truth` (`truth` is 0/1 for classification).
pub fn evaluate(task: Task, truth: &[f64], pred: &[f64], threshold: f64) -> Metrics {
    let mut m = Metrics::new();
    match task {
        Task::Classification => {
            m.insert("accuracy".into(), accuracy(truth, pred, threshold));
            m.insert("auc".into(), auc(truth, pred));
            m.insert("log_loss".into(), log_loss(truth, pred));
        }
        Task::Regression => {
            m.insert("mae".into(), mae(truth, pred));
            m.insert("rmse".into(), rmse(truth, pred));
            m.insert("r2".into(), r2(truth, pred));
            m.insert("smape".into(), smape(truth, pred));
        }
    }
    m
}

pub fn accuracy(truth: &[f64], pred: &[f64], threshold: f64) -> f64 {
    let hits = truth
        .iter()
        .zip(pred)
        .filter(|(t, p)| (**t >= 0.5) == (**p >= threshold))
        .count();
    hits as f64 / truth.len().max(1) as f64
}

/// Area under the ROC curve by the rank-sum (Mann-Whitney) formula, ties counted half.
pub fn auc(truth: &[f64], pred: &[f64]) -> f64 {
    let mut idx: Vec<usize> = (0..pred.len()).collect();
    idx.sort_by(|a, b| pred[*a].total_cmp(&pred[*b]));
    let (mut rank_sum, mut pos) = (0.0, 0usize);
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && pred[idx[j + 1]] == pred[idx[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        for k in &idx[i..=j] {
            if truth[*k] >= 0.5 {
                rank_sum += avg_rank;
                pos += 1;
            }
        }
        i = j + 1;
    }
    let neg = pred.len() - pos;
    if pos == 0 || neg == 0 {
        return 0.5;
    }
    (rank_sum - (pos * (pos + 1)) as f64 / 2.0) / (pos as f64 * neg as f64)
}

pub fn log_loss(truth: &[f64], pred: &[f64]) -> f64 {
    let sum: f64 = truth
        .iter()
        .zip(pred)
        .map(|(t, p)| {
            let p = p.clamp(1e-15, 1.0 - 1e-15);
            -(t * p.ln() + (1.0 - t) * (1.0 - p).ln())
        })
        .sum();
    sum / truth.len().max(1) as f64
}

/// Mean squared difference of the predicted probability and the 0/1 outcome (0 is perfect,
/// 0.25 is a constant 0.5).
pub fn brier(truth: &[f64], pred: &[f64]) -> f64 {
    rmse(truth, pred).powi(2)
}

/// Mean of prediction minus truth: positive when the model predicts too high.
pub fn bias(truth: &[f64], pred: &[f64]) -> f64 {
    truth.iter().zip(pred).map(|(t, p)| p - t).sum::<f64>() / truth.len().max(1) as f64
}

pub fn mae(truth: &[f64], pred: &[f64]) -> f64 {
    truth
        .iter()
        .zip(pred)
        .map(|(t, p)| (t - p).abs())
        .sum::<f64>()
        / truth.len().max(1) as f64
}

pub fn rmse(truth: &[f64], pred: &[f64]) -> f64 {
    (truth
        .iter()
        .zip(pred)
        .map(|(t, p)| (t - p).powi(2))
        .sum::<f64>()
        / truth.len().max(1) as f64)
        .sqrt()
}

pub fn r2(truth: &[f64], pred: &[f64]) -> f64 {
    let mean = truth.iter().sum::<f64>() / truth.len().max(1) as f64;
    let ss_tot: f64 = truth.iter().map(|t| (t - mean).powi(2)).sum();
    let ss_res: f64 = truth.iter().zip(pred).map(|(t, p)| (t - p).powi(2)).sum();
    if ss_tot == 0.0 {
        0.0
    } else {
        1.0 - ss_res / ss_tot
    }
}

/// Symmetric mean absolute percentage error, in percent (0 to 200); pairs of zeros count 0.
pub fn smape(truth: &[f64], pred: &[f64]) -> f64 {
    let sum: f64 = truth
        .iter()
        .zip(pred)
        .map(|(t, p)| {
            let d = t.abs() + p.abs();
            if d == 0.0 {
                0.0
            } else {
                2.0 * (t - p).abs() / d
            }
        })
        .sum();
    100.0 * sum / truth.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_of_perfect_random_and_inverted_rankings() {
        let t = [0.0, 0.0, 1.0, 1.0];
        assert!((auc(&t, &[0.1, 0.2, 0.8, 0.9]) - 1.0).abs() < 1e-12);
        assert!((auc(&t, &[0.9, 0.8, 0.2, 0.1]) - 0.0).abs() < 1e-12);
        assert!((auc(&t, &[0.5, 0.5, 0.5, 0.5]) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn regression_metrics_match_hand_computation() {
        let t = [1.0, 2.0, 3.0];
        let p = [1.0, 2.0, 5.0];
        assert!((mae(&t, &p) - 2.0 / 3.0).abs() < 1e-12);
        assert!((rmse(&t, &p) - (4.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert!((r2(&t, &t) - 1.0).abs() < 1e-12);
        assert!((smape(&[0.0], &[0.0])).abs() < 1e-12);
        assert!((smape(&[1.0], &[3.0]) - 100.0).abs() < 1e-12);
        assert!((bias(&t, &p) - 2.0 / 3.0).abs() < 1e-12);
        assert!((brier(&[1.0, 0.0], &[0.5, 0.5]) - 0.25).abs() < 1e-12);
    }

    #[test]
    fn log_loss_and_accuracy() {
        let t = [1.0, 0.0];
        assert!((log_loss(&t, &[0.5, 0.5]) - 2f64.ln()).abs() < 1e-12);
        assert_eq!(accuracy(&t, &[0.7, 0.2], 0.5), 1.0);
        assert!(higher_is_better("auc") && !higher_is_better("mae"));
    }
}
