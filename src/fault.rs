//! Test hook for fault-injection tests: `PRESCORE_PAUSE_AT=<stage>` makes the process sleep
//! for `PRESCORE_PAUSE_SECS` (default 30) when it reaches that stage, so a test can kill it
//! there with SIGKILL. Points: each stage name (read, contract, train, features, score, publish), `trained`,
//! `scored`, and `commit` (inside the open publish transaction, after the upsert).

/// Sleeps here if the environment asks for a pause at `stage` (without blocking the runtime,
/// so the run's deadline and signal handling still work during the pause).
pub async fn pause(stage: &str) {
    if std::env::var("PRESCORE_PAUSE_AT").ok().as_deref() == Some(stage) {
        let secs: u64 = std::env::var("PRESCORE_PAUSE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(30);
        eprintln!("prescore: paused at {stage} for {secs}s (PRESCORE_PAUSE_AT)");
        tokio::time::sleep(std::time::Duration::from_secs(secs)).await;
    }
}
