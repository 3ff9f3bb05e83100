//! The error a run ends with, and the exit code cron sees. Codes are documented in the README
//! and stable: 0 success, 1 failed (nothing published), 2 bad config or usage, 3 input
//! contract broken (bad data; nothing published), 4 gated (the candidate model was rejected,
//! or waits for a person with no champion to serve; the previous predictions stay), 5 already
//! running, 6 incomplete (`status`), 7 timed out (`job.timeout`, a lock or statement time-out;
//! nothing published), 130/143 interrupted by SIGINT/SIGTERM (see `pipeline::interrupt`).

use crate::config::ConfigError;
use crate::monitor::evaluate::EvaluateError;
use crate::monitor::html::ReportError;
use crate::pipeline::contract::ContractError;
use crate::pipeline::score::features::FeatureError;
use crate::pipeline::score::train::TrainError;
use crate::registry::RegistryError;
use crate::warehouse::WarehouseError;

pub const EXIT_OK: u8 = 0;
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_CONTRACT: u8 = 3;
pub const EXIT_GATED: u8 = 4;
pub const EXIT_RUNNING: u8 = 5;
pub const EXIT_INCOMPLETE: u8 = 6;
/// The run passed `job.timeout`, or a statement its lock or statement time-out.
pub const EXIT_TIMEOUT: u8 = 7;
/// Interrupted by SIGINT (128 + 2) or SIGTERM (128 + 15), as shells report them.
pub const EXIT_SIGINT: u8 = 130;
pub const EXIT_SIGTERM: u8 = 143;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Warehouse(#[from] WarehouseError),
    #[error("input contract broken: {0}")]
    Contract(#[from] ContractError),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Evaluate(#[from] EvaluateError),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error("model {job} v{version} does not fit this job's features: {problem}. Retrain (`prescore train`) or fix the config")]
    SchemaMismatch {
        job: String,
        version: i64,
        problem: String,
    },
    #[error("candidate model v{version} was not promoted: {}", reasons.join("; "))]
    Gated { version: i64, reasons: Vec<String> },
    #[error("candidate model v{version} passed the gate and waits for a person (gate.auto_promote = false), and there is no champion to serve meanwhile: nothing was published. Promote it with `prescore models promote {version}`")]
    AwaitingPromotion { version: i64 },
    #[error("{0}")]
    Usage(String),
    /// `prescore status`: the logical run is not complete.
    #[error("{0}")]
    Incomplete(String),
    /// The run passed its deadline (`job.timeout`).
    #[error("the run did not finish within job.timeout = {limit}: it was in stage {stage} and was stopped there; nothing was published")]
    TimedOut { limit: String, stage: String },
    /// A bug or an unexpected library failure, not the user's input.
    #[error("internal error in {context}: {message} (nothing was published; please report this)")]
    Internal { context: String, message: String },
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) | Error::Usage(_) => EXIT_USAGE,
            Error::Warehouse(w) => warehouse_code(w),
            Error::Contract(_) => EXIT_CONTRACT,
            Error::Train(TrainError::Features(_) | TrainError::Split { .. }) => EXIT_CONTRACT,
            Error::Train(TrainError::Model(_)) => EXIT_FAILED,
            Error::Registry(RegistryError::Warehouse(w)) => warehouse_code(w),
            Error::Registry(_) | Error::SchemaMismatch { .. } => EXIT_FAILED,
            Error::Evaluate(EvaluateError::Warehouse(w)) => warehouse_code(w),
            Error::Evaluate(EvaluateError::Labels(_)) => EXIT_CONTRACT,
            Error::Evaluate(
                EvaluateError::NotForecast { .. }
                | EvaluateError::NoHistory { .. }
                | EvaluateError::NoLabels { .. },
            ) => EXIT_USAGE,
            Error::Evaluate(_) => EXIT_FAILED,
            Error::Report(ReportError::Warehouse(w)) => warehouse_code(w),
            Error::Report(_) => EXIT_FAILED,
            Error::Gated { .. } | Error::AwaitingPromotion { .. } => EXIT_GATED,
            Error::Internal { .. } => EXIT_FAILED,
            Error::Incomplete(_) => EXIT_INCOMPLETE,
            Error::TimedOut { .. } => EXIT_TIMEOUT,
        }
    }

    /// An internal failure in `context` (a polars operation, a serialization).
    pub fn internal(context: &str, e: impl std::fmt::Display) -> Self {
        Error::Internal {
            context: context.to_string(),
            message: e.to_string(),
        }
    }
}

fn warehouse_code(w: &WarehouseError) -> u8 {
    if w.is_timeout() {
        return EXIT_TIMEOUT;
    }
    match w {
        WarehouseError::Locked { .. } | WarehouseError::Fenced { .. } => EXIT_RUNNING,
        WarehouseError::Decode { .. }
        | WarehouseError::MissingColumn { .. }
        | WarehouseError::DuplicateColumn { .. } => EXIT_CONTRACT,
        WarehouseError::SqlWrites { .. } => EXIT_USAGE,
        _ => EXIT_FAILED,
    }
}

impl From<FeatureError> for Error {
    fn from(e: FeatureError) -> Self {
        Error::Train(TrainError::Features(e))
    }
}

impl From<crate::model::ModelError> for Error {
    fn from(e: crate::model::ModelError) -> Self {
        Error::Train(TrainError::Model(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_exit_1_not_2() {
        let e = Error::internal("the output frame", "lengths differ");
        assert_eq!(e.exit_code(), EXIT_FAILED);
        assert!(e.to_string().contains("the output frame"), "{e}");
        assert_eq!(Error::Usage("bad flag".into()).exit_code(), EXIT_USAGE);
        assert_eq!(
            Error::AwaitingPromotion { version: 1 }.exit_code(),
            EXIT_GATED
        );
    }
}
