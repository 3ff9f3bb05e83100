//! `prescore demo`: generates realistic data into a warehouse (the SQLite file by default)
//! and runs the demo jobs on it with the real pipeline, printing each run's summary, then
//! creates the `customer_value` view over the churn and LTV scores. The generators are
//! seeded, so the same seed gives the same data.

pub mod churn;
pub mod energy;
pub mod revenue;

use std::collections::HashMap;
use std::path::Path;

use chrono::{SubsecRound, Utc};

use crate::cli::DemoArgs;
use crate::config;
use crate::error::Error;
use crate::pipeline::{self, Mode, Options, Shard};
use crate::warehouse::{redact, Warehouse};

/// The demo jobs, in the order they run.
pub const JOBS: &[&str] = &[
    "configs/churn_daily.toml",
    "configs/ltv_daily.toml",
    "configs/energy_hourly.toml",
    "configs/weather_hourly.toml",
];

pub async fn demo(a: DemoArgs) -> Result<(), Error> {
    // Before any data is generated: the jobs' configs must be where --root says.
    let missing = JOBS.iter().map(|p| a.root.join(p)).find(|p| !p.is_file());
    if let (false, Some(path)) = (a.seed_only, missing) {
        return Err(Error::Usage(format!(
            "the demo's job configs are not here: {} does not exist. Run `prescore demo` in \
             prescore's checkout (where configs/ and sql/ are), or point --root at it",
            path.display()
        )));
    }
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
        println!("seeded; run a job with: prescore run --config configs/churn_daily.toml (or ltv_daily.toml, energy_hourly.toml, weather_hourly.toml)");
        wh.close().await;
        return Ok(());
    }
    // The configs read ${DATABASE_URL:-sqlite://prescore.db}: point them at the seeded warehouse.
    let mut env: HashMap<String, String> = std::env::vars().collect();
    env.insert("DATABASE_URL".into(), url.clone());
    let mut published = Vec::new();
    for path in JOBS {
        let job = config::load_with_env(&a.root.join(path), &env)?;
        println!("\nrunning {path}");
        let opts = Options {
            mode: Mode::Run,
            as_of: now,
            shard: Shard::ALL,
            group: None,
        };
        match pipeline::run(&job, &wh, &opts).await {
            Ok(report) => {
                print!("{}", crate::report::run_summary(&report));
                published.push(job.name.clone());
            }
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
    if ["churn_daily", "ltv_daily"]
        .iter()
        .all(|j| published.iter().any(|p| p == j))
    {
        create_customer_value(&wh, &a.root).await?;
        println!(
            "\ncreated the view customer_value (churn probability and LTV per customer, {VIEW}):\n    \
             SELECT * FROM customer_value ORDER BY value_at_risk DESC LIMIT 10;"
        );
    }
    println!("\nrecent runs: prescore runs --warehouse {}", redact(&url));
    wh.close().await;
    Ok(())
}

/// The view over the churn and LTV scores, relative to the demo's root.
pub const VIEW: &str = "sql/views/customer_value.sql";

/// Creates (or replaces) the `customer_value` view from [`VIEW`], in one transaction. Both
/// results tables (`churn_scores`, `ltv_scores`) must exist.
pub async fn create_customer_value(wh: &Warehouse, root: &Path) -> Result<(), Error> {
    let path = root.join(VIEW);
    let script = std::fs::read_to_string(&path).map_err(|e| {
        Error::Usage(format!(
            "cannot read {} (run from the directory holding sql/, or pass --root): {e}",
            path.display()
        ))
    })?;
    // Whole-line comments dropped, the rest split at semicolons: one statement each.
    let code: String = script
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .map(|l| format!("{l}\n"))
        .collect();
    let mut tx = wh.begin().await?;
    for stmt in code.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        tx.execute(stmt, &[]).await?;
    }
    tx.commit().await?;
    Ok(())
}
