//! SIGTERM and SIGINT during a run (systemd, Kubernetes and Ctrl-C send them). Without a
//! handler the process died on the spot, its ledger row stayed `running` and, as PID 1 in a
//! container, SIGTERM was ignored altogether. While a run holds its lock, a task waits for
//! either signal; on one it marks the run failed ("interrupted by SIGTERM"), releases the
//! lock and exits 143 (SIGTERM) or 130 (SIGINT). The process ends without committing: an open
//! publish transaction is rolled back by the warehouse, so the tables stay as they were.

use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::task::JoinHandle;

use crate::error::{EXIT_SIGINT, EXIT_SIGTERM};
use crate::ledger;
use crate::warehouse::Warehouse;

/// How long the ledger update and the lock release may take before the process exits anyway
/// (a run left `running` is marked `abandoned` by the next one).
const CLEANUP: Duration = Duration::from_secs(10);

/// The signal watch of one run; stopped when the run ends on its own.
pub struct Watch(Option<JoinHandle<()>>);

impl Watch {
    pub fn stop(self) {
        if let Some(task) = self.0 {
            task.abort();
        }
    }
}

/// Starts watching for SIGTERM and SIGINT on behalf of the run `run_id` of `job` and `shard`.
pub fn watch(wh: &Warehouse, job: &str, shard: &str, run_id: &str) -> Watch {
    let signals =
        signal(SignalKind::terminate()).and_then(|t| Ok((t, signal(SignalKind::interrupt())?)));
    let (term, int) = match signals {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot handle SIGTERM and SIGINT; a signal ends the run on the spot");
            return Watch(None);
        }
    };
    let run = Interrupted {
        wh: wh.clone(),
        job: job.to_string(),
        shard: shard.to_string(),
        run_id: run_id.to_string(),
    };
    Watch(Some(tokio::spawn(run.wait(term, int))))
}

struct Interrupted {
    wh: Warehouse,
    job: String,
    shard: String,
    run_id: String,
}

impl Interrupted {
    async fn wait(self, mut term: Signal, mut int: Signal) {
        let (name, code) = tokio::select! {
            _ = term.recv() => ("SIGTERM", EXIT_SIGTERM),
            _ = int.recv() => ("SIGINT", EXIT_SIGINT),
        };
        tracing::warn!(signal = name, "interrupted: stopping without publishing");
        if tokio::time::timeout(CLEANUP, self.clean_up(name))
            .await
            .is_err()
        {
            tracing::error!("the ledger or the lock did not answer in {CLEANUP:?}; exiting anyway");
        }
        eprintln!("prescore: interrupted by {name} (exit {code})");
        std::process::exit(code.into());
    }

    /// Marks the run failed (unless its publish committed first) and releases the lock.
    async fn clean_up(&self, name: &str) {
        match ledger::interrupt(&self.wh, &self.run_id, name).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!("the run had already finished when the signal came"),
            Err(e) => {
                tracing::error!(error = %e, "could not record the interruption in the ledger")
            }
        }
        self.wh
            .release_lock_of(&self.job, &self.shard, &self.run_id)
            .await;
    }
}
