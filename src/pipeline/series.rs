//! Stage 3 for `forecast` jobs: series features (placeholder until forecasts land).

use std::collections::BTreeMap;

use crate::config::{ColumnType, Job};

/// The columns the future-covariates SQL must return.
pub fn future_contract(job: &Job) -> BTreeMap<String, ColumnType> {
    job.input.columns.clone()
}
