//! Forecast jobs (placeholder).

use super::{Options, Report, Timer};
use crate::config::Job;
use crate::error::Error;
use crate::ledger::RunStats;
use crate::warehouse::Warehouse;

pub(super) async fn run(
    _job: &Job,
    _wh: &Warehouse,
    _opts: &Options,
    _run_id: &str,
    _stats: &mut RunStats,
    _timer: &mut Timer,
    _report: &mut Report,
) -> Result<(), Error> {
    Err(Error::Usage("forecast jobs are not implemented yet".into()))
}
