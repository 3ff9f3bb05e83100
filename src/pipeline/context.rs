//! What every stage of a run shares: the job, the warehouse, the run's options and id, the
//! clock that times each stage, and the [`Report`] the stages fill in. The ledger's figures
//! are derived from the report ([`Report::stats`]), never kept twice.

use std::future::Future;
use std::time::Instant;

use super::{Options, Report};
use crate::config::Job;
use crate::warehouse::Warehouse;

/// One run in progress.
pub struct RunContext<'a> {
    pub job: &'a Job,
    pub wh: &'a Warehouse,
    pub opts: &'a Options,
    pub run_id: &'a str,
    pub report: Report,
    /// The key, time and target of recent history rows, kept by a forecast run that
    /// evaluates its earlier forecasts after publishing (see `monitor::evaluate`).
    pub actuals: Option<polars::prelude::DataFrame>,
    /// The stage the run entered last, for a run stopped by its deadline.
    pub stage: String,
    /// The job lock's fencing token, proved in every transaction that publishes or promotes.
    pub fence: Option<crate::warehouse::lease::Fence>,
}

impl<'a> RunContext<'a> {
    pub fn new(
        job: &'a Job,
        wh: &'a Warehouse,
        opts: &'a Options,
        run_id: &'a str,
        report: Report,
    ) -> Self {
        RunContext {
            job,
            wh,
            opts,
            run_id,
            report,
            actuals: None,
            stage: "start".into(),
            fence: None,
        }
    }

    /// Runs one stage in a tracing span and adds its wall-clock seconds to the report (a
    /// stage that runs twice, such as two reads, adds up).
    pub async fn time<T, F: Future<Output = T>>(&mut self, stage: &str, f: F) -> T {
        self.stage = stage.to_string();
        crate::fault::pause(stage).await;
        let start = Instant::now();
        let span = tracing::info_span!("stage", stage);
        let spinner = crate::progress::stage(stage);
        let out = tracing::Instrument::instrument(f, span).await;
        drop(spinner);
        let secs = start.elapsed().as_secs_f64();
        let timings = &mut self.report.stage_seconds;
        match timings.iter_mut().find(|(s, _)| s == stage) {
            Some((_, t)) => *t += secs,
            None => timings.push((stage.to_string(), secs)),
        }
        out
    }

    /// The report, once the run is over.
    pub fn finish(self) -> Report {
        self.report
    }
}
