//! Stage 6, score: every entity through the model on a rayon pool sized by `job.threads`
//! (default: one thread per CPU), inside `spawn_blocking` so tokio's threads never run model
//! code. The model is shared read-only; each rayon task fills its own slice of the output.

use std::sync::Arc;

use crate::model::{Matrix, Model};

/// Runs CPU-bound work on a dedicated rayon pool, off the async runtime.
pub async fn on_pool<T, F>(threads: usize, work: F) -> T
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
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// Scores every row of `x`.
pub async fn score(model: Arc<Model>, x: Matrix, threads: usize) -> Vec<f64> {
    on_pool(threads, move || model.predict(&x)).await
}
