//! The forecast rows: one per series and target time, with the forecast, its interval and the
//! provenance of the run.

use polars::prelude::*;

use super::forecaster::{Forecaster, SeriesForecast};
use super::series::{Key, Series};
use crate::config::{ColumnType, Job};
use crate::error::Error;
use crate::pipeline::{publish, Options};
use crate::warehouse::ColumnDef;

/// The forecast rows of every series and the definitions of their columns.
pub fn frame(
    job: &Job,
    forecaster: &Forecaster,
    series: &[Series],
    forecasts: &[SeriesForecast],
    version: i64,
    run_id: &str,
    opts: &Options,
) -> Result<(DataFrame, Vec<ColumnDef>), Error> {
    let step_us = forecaster.schema.step_seconds * 1_000_000;
    let day = forecaster.day;
    let n: usize = forecasts.iter().map(|f| f.yhat.len()).sum();
    let mut method = Vec::with_capacity(n);
    let mut target = Vec::with_capacity(n);
    let mut horizon = Vec::with_capacity(n);
    let (mut yhat, mut lo, mut hi) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let mut int_keys = Vec::new();
    let mut text_keys = Vec::new();
    for (s, f) in series.iter().zip(forecasts) {
        let last = s.time_at(s.y.len() - 1, step_us);
        let label = f.method.label(day);
        for (k, (v, w)) in f.yhat.iter().zip(&f.half).enumerate() {
            match &s.key {
                Key::Int(i) => int_keys.push(*i),
                Key::Text(t) => text_keys.push(t.clone()),
            }
            target.push(last + (k as i64 + 1) * step_us);
            horizon.push(k as i64 + 1);
            yhat.push(*v);
            method.push(label.clone());
            lo.push(v - w);
            hi.push(v + w);
        }
    }
    let key_col = match job.input.columns.get(job.input.key.as_str()) {
        Some(ColumnType::Int) => Column::new("series_id".into(), int_keys),
        _ => Column::new("series_id".into(), text_keys),
    };
    let mut cols = vec![
        key_col,
        Int64Chunked::from_vec("target_ts".into(), target)
            .into_datetime(TimeUnit::Microseconds, Some(polars::prelude::TimeZone::UTC))
            .into_column(),
        Column::new("horizon".into(), horizon),
        Column::new("yhat".into(), yhat),
        Column::new("yhat_lo".into(), lo),
        Column::new("yhat_hi".into(), hi),
        Column::new("method".into(), method),
    ];
    let key_type = job.input.columns[job.input.key.as_str()];
    let mut defs: Vec<ColumnDef> = forecast_columns(key_type)
        .into_iter()
        .map(|(name, ty)| ColumnDef {
            name: name.into(),
            ty,
        })
        .collect();
    let (prov, prov_defs) = publish::provenance(n, version, run_id, opts.as_of, "issued_at");
    cols.extend(prov);
    defs.extend(prov_defs);
    let frame = DataFrame::new(n, cols).map_err(|e| Error::internal("the forecast frame", e))?;
    Ok((frame, defs))
}

/// The forecast columns of a results table (and of its history), before provenance: what a
/// publish writes and what the realized accuracy reads back.
pub fn forecast_columns(key_type: ColumnType) -> [(&'static str, ColumnType); 7] {
    [
        ("series_id", key_type),
        ("target_ts", ColumnType::Timestamp),
        ("horizon", ColumnType::Int),
        ("yhat", ColumnType::Float),
        ("yhat_lo", ColumnType::Float),
        ("yhat_hi", ColumnType::Float),
        ("method", ColumnType::Text),
    ]
}
