//! Where CPU-bound work runs: feature building, training and scoring go to a rayon pool sized
//! by `job.threads` (default: one thread per CPU), inside `spawn_blocking`, so tokio's threads
//! never run model code and a panic in a library becomes an error the ledger records.

use crate::model::ModelError;

/// Runs CPU-bound work on a dedicated rayon pool, off the async runtime. A panic inside (a
/// library assertion, say) becomes an error, so the run still ends in the ledger as failed.
pub async fn on_pool<T, F>(threads: usize, work: F) -> Result<T, ModelError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        let threads = if threads == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            threads
        };
        match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
            Ok(pool) => pool.install(work),
            Err(e) => {
                tracing::warn!(error = %e, "could not build a rayon pool; using the global one");
                work()
            }
        }
    })
    .await
    .map_err(|e| {
        let payload = e.into_panic();
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        ModelError::Panicked(msg)
    })
}
