//! Monitoring what prescore published, after the fact: how accurate the issued forecasts
//! turned out once the actuals arrived (`accuracy` computes it, `evaluate` is the stage that
//! reads the history and the actuals and records `prescore_accuracy`, after every forecast run
//! and in `prescore evaluate`), how the issued scores of score jobs fared once their labels
//! arrived (`labels` computes it, `evaluate_scores` records `prescore_label_accuracy` and
//! `prescore_calibration`), whether a score job's inputs moved since training (`drift`), and
//! the page people read about all of it (`html`, `prescore report`).

pub mod accuracy;
pub mod drift;
pub mod evaluate;
pub mod evaluate_scores;
pub mod html;
pub mod labels;
