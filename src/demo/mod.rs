//! `prescore demo`: generates realistic data into a warehouse (the SQLite file by default)
//! and runs the demo jobs on it with the real pipeline, printing each run's summary. The
//! generators are seeded, so the same seed gives the same data.

pub mod churn;
pub mod energy;
pub mod revenue;

use std::collections::HashMap;

use chrono::{SubsecRound, Utc};

use crate::cli::DemoArgs;
use crate::config;
use crate::error::Error;
use crate::pipeline::{self, Mode, Options, Shard};
use crate::warehouse::{redact, Warehouse};

/// The demo jobs, in the order they run.
pub const JOBS: &[&str] = &[
    "configs/churn_daily.toml",
    "configs/energy_hourly.toml",
    "configs/weather_hourly.toml",
];

pub async fn demo(a: DemoArgs) -> Result<(), Error> {
    let url = a
        .warehouse
        .clone()
        .unwrap_or_else(|| crate::warehouse::DEFAULT_URL.into());
    let wh = Warehouse::connect(&url, 4).await?;
    let now = Utc::now().trunc_subsecs(0);
    println!("prescore demo: generating data into {}", redact(&url));
    let (snapshots, profiles) = churn::seed(&wh, a.customers, a.seed, now).await?;
    println!(
        "  {}: {} rows ({} customers, monthly snapshots)",
        churn::TABLE,
        snapshots.height(),
        a.customers
    );
    let bills = revenue::seed(&wh, &snapshots, &profiles, a.seed, now).await?;
    drop((snapshots, profiles));
    println!(
        "  {}: {bills} rows ({} months of billing, with the customers who left before)",
        revenue::TABLE,
        revenue::MONTHS
    );
    let readings = energy::seed(&wh, a.meters, a.days, a.seed, now).await?;
    println!(
        "  meter_readings: {readings} rows ({} meters, {} days hourly); weather: 4 regions with a 48h forecast",
        a.meters, a.days
    );
    if a.seed_only {
        println!("seeded; run a job with: prescore run --config configs/churn_daily.toml (or energy_hourly.toml)");
        wh.close().await;
        return Ok(());
    }
    // The configs read ${DATABASE_URL:-sqlite://prescore.db}: point them at the seeded warehouse.
    let mut env: HashMap<String, String> = std::env::vars().collect();
    env.insert("DATABASE_URL".into(), url.clone());
    for path in JOBS {
        let job = config::load_with_env(&a.root.join(path), &env)?;
        println!("\nrunning {path}");
        let opts = Options {
            mode: Mode::Run,
            as_of: now,
            shard: Shard::ALL,
        };
        match pipeline::run(&job, &wh, &opts).await {
            Ok(report) => print!("{}", crate::report::run_summary(&report)),
            // The gate at work, not a broken demo: on some generated data (it depends on the
            // seed and the hour it is generated at) a small job's candidate does not beat its
            // naive baseline on the holdout, so it must not serve.
            Err(e @ Error::Gated { .. }) => println!(
                "prescore: job {} gated, nothing published for it: {e}\n  the quality gate \
                 kept a model that did not beat the naive baseline from serving (README: Models \
                 and the gate); `prescore runs` lists it as gated",
                job.name
            ),
            Err(e) => return Err(e),
        }
    }
    println!("\nrecent runs: prescore runs --warehouse {}", redact(&url));
    wh.close().await;
    Ok(())
}
