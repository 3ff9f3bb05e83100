//! `make bench`: the churn score job and the energy forecast job on PostgreSQL at a realistic
//! size, stage by stage.
//!
//! Each part recreates a dedicated database (`prescore_bench`), generates its data with the demo
//! generators and loads it with the warehouse's own upsert, then runs its job three times through
//! the real pipeline, each in a process of its own (so that its peak RSS is its own): `run`
//! (trains, then publishes into the empty results table), `score` (loads the champion and
//! upserts over every row) and `replace` (the same with `output.write = "replace"`). For each it
//! prints rows, seconds and rows/s per stage, and the peak RSS of the run. In the same run it
//! measures the floor with `psql`: a binary `COPY (the job's SQL) TO STDOUT` for the read, and a
//! binary `COPY … FROM STDIN` of the same output rows into a table shaped like the results table
//! for the publish, and prints prescore's ratio to them. Only measured numbers are printed.
//!
//! - score part: `configs/churn_daily.toml` on N customers (`--entities`); `--scale K` repeats
//!   it with N/K customers and prints how time grows with rows.
//! - forecast part: `configs/energy_hourly.toml` on `--series` meters with `--days` of hourly
//!   readings (10,000 x 15 days by default: one day more than the config's 14-day
//!   `forecast.min_history`, so that the 14-day history is complete even for a meter that missed
//!   its first or last reading). The generator also gives some meters a data-quality case (a
//!   late start, too little history, stopped reporting, a long outage); the pipeline skips those
//!   and the bench prints how many series were forecast and skipped, and why.
//! - shards part (`shards.rs`): the churn job on `--shard-entities` customers, trained once,
//!   then 1, 2 and 4 shard processes started together with the scoring SQL split by
//!   `:shard_index` / `:shard_count`: each process's rows read and seconds, each group's wall
//!   time, and rows/s per core per stage for sizing.
//! - gbdt part (`gbdt.rs`): the GBDT fit alone, without a database, on a generated matrix
//!   shaped like the peer job's refit (`--gbdt-series` x 287 rows x 11 features).
//!
//! ```text
//! make bench BENCH_ARGS="--only gbdt"
//! make bench BENCH_ARGS="--only shards"
//! make bench BENCH_ARGS="--entities 100000 --scale 10"
//! make bench BENCH_ARGS="--only forecast --series 1000"
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use chrono::{DateTime, SubsecRound, Utc};
use clap::Parser;
use polars::prelude::{DataFrame, DataType};

use prescore::config::{self, Algorithm, ColumnType, Job, JobKind, KindTag};
use prescore::demo::{churn, energy};
use prescore::pipeline::{self, Mode, Options, Report, Shard};
use prescore::warehouse::ident::Ident;
use prescore::warehouse::{params, redact, ColumnDef, Warehouse, WriteMode};

mod gbdt;
mod peer;
mod shards;

const BENCH_DB: &str = "prescore_bench";
/// Each floor is measured this many times and the fastest kept: a generous floor, so the
/// ratios printed against it err on prescore's side of slow.
const FLOOR_TRIES: usize = 2;

#[derive(Parser, Debug)]
#[command(
    name = "prescore-bench",
    about = "Benchmark the churn score job and the energy forecast job on PostgreSQL"
)]
struct Args {
    /// PostgreSQL server; the bench creates (drops and recreates) its own database there.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    warehouse: String,
    /// Run only one part: `score` (the churn job), `forecast` (the energy job), `shards` (the
    /// churn job as 1, 2 and 4 shard processes), `peer` (prescore against the pandas +
    /// LightGBM script) or `gbdt` (the GBDT fit alone, no database). All five by default.
    #[arg(long, value_enum)]
    only: Option<Part>,
    /// Score part: customers to generate (about 5.5 monthly rows each).
    #[arg(long, default_value_t = 1_000_000)]
    entities: usize,
    /// Score part: also run with entities/SCALE customers and print how time grows with rows.
    #[arg(long)]
    scale: Option<usize>,
    /// Shards part: customers to generate (about 5.5 monthly rows each).
    #[arg(long, default_value_t = 500_000)]
    shard_entities: usize,
    /// Score and shards parts: the job to run.
    #[arg(long, default_value = "configs/churn_daily.toml")]
    config: PathBuf,
    /// Score part: override the config's model.algorithm (decision_tree, random_forest, linear,
    /// gbdt).
    #[arg(long)]
    algorithm: Option<String>,
    /// Forecast part: meters (series) to generate.
    #[arg(long, default_value_t = 10_000)]
    series: usize,
    /// Forecast part: days of hourly readings to generate. 15 by default: one more than the
    /// 14 days (336 hours) of forecast.min_history, so that the 14-day history is complete.
    #[arg(long, default_value_t = 15)]
    days: usize,
    /// Forecast part: the job to run (a `forecast` job reading the energy demo tables).
    #[arg(long, default_value = "configs/energy_hourly.toml")]
    forecast_config: PathBuf,
    /// Peer part: meters of the peer's dataset (336 hours each).
    #[arg(long, default_value_t = 10_000)]
    peer_meters: usize,
    /// Peer part: timed runs of each side, after one warm-up of each.
    #[arg(long, default_value_t = 3)]
    peer_runs: usize,
    /// Gbdt part: series of the generated training matrix (287 rows each).
    #[arg(long, default_value_t = 10_000)]
    gbdt_series: usize,
    /// Gbdt part: squared-error fits to time (then one log-loss fit).
    #[arg(long, default_value_t = 2)]
    gbdt_fits: usize,
    /// Seed for the generators.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Keep the prescore_bench database afterwards (it is dropped by default).
    #[arg(long)]
    keep: bool,
}

/// The parts of the bench.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    /// The churn score job.
    Score,
    /// The energy forecast job.
    Forecast,
    /// The churn score job as 1, 2 and 4 shard processes started together.
    Shards,
    /// prescore against the pandas + LightGBM peer, on the peer's data.
    Peer,
    /// The GBDT fit alone, on a generated matrix; needs no database.
    Gbdt,
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// One stage of one pipeline run.
struct Stage {
    name: String,
    rows: Option<u64>,
    seconds: f64,
}

/// One pipeline run, as measured.
struct RunResult {
    label: &'static str,
    wall: f64,
    peak_rss_kib: Option<u64>,
    stages: Vec<Stage>,
    /// The report, or why the run failed (its error, or its panic).
    report: Result<Report, String>,
}

/// One database size, as measured.
struct SizeResult {
    entities: usize,
    rows_loaded: usize,
    load_s: f64,
    runs: Vec<RunResult>,
    floor_score_read: Floor,
    floor_train_read: Floor,
    /// None when no run published (there is no results table to copy).
    floor_publish: Option<Floor>,
    floor_publish_pk: Option<Floor>,
}

/// The forecast part, as measured.
struct ForecastResult {
    horizon: usize,
    runs: Vec<RunResult>,
    floor_history_read: Floor,
    floor_future_read: Floor,
    /// None when no run published (there is no results table to copy).
    floor_publish: Option<Floor>,
    floor_publish_pk: Option<Floor>,
}

struct Floor {
    rows: u64,
    /// psql's `\timing` of the COPY statement: from sending it until the last row is through.
    seconds: f64,
    /// The whole psql process (start, connect, COPY, exit).
    process_seconds: f64,
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        if let Err(e) = child(&spec).await {
            eprintln!("prescore-bench (child run): {e}");
            std::process::exit(1);
        }
        return;
    }
    let args = Args::parse();
    if let Err(e) = bench(&args).await {
        eprintln!("prescore-bench: {e}");
        std::process::exit(1);
    }
}

async fn bench(args: &Args) -> Res<()> {
    if args.only == Some(Part::Gbdt) {
        return gbdt::part(args.gbdt_series, args.gbdt_fits, args.seed);
    }
    if !args.warehouse.starts_with("postgres") {
        return Err(format!(
            "the bench needs PostgreSQL; --warehouse / DATABASE_URL is {}",
            redact(&args.warehouse)
        )
        .into());
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!(
        "prescore-bench: on {} (database {BENCH_DB}), {cores} CPU core(s), PostgreSQL {}",
        redact(&args.warehouse),
        server_version(&args.warehouse).await?
    );
    if !reset_peak_rss() {
        println!(
            "note: cannot reset VmHWM (/proc/self/clear_refs); peak RSS is the process's so far"
        );
    }
    if matches!(args.only, None | Some(Part::Score)) {
        let config_path = resolve(&args.config);
        // The larger size first, so a warm cache can only favour the smaller one: the growth
        // ratio printed at the end is, if anything, pessimistic.
        let mut sizes = vec![args.entities];
        if let Some(k) = args.scale {
            if k < 2 {
                return Err("--scale must be at least 2".into());
            }
            sizes.push((args.entities / k).max(1));
        }
        let mut results = Vec::new();
        for &n in &sizes {
            let r = one_size(args, &config_path, n).await?;
            print_size(&r);
            results.push(r);
        }
        if let [big, small] = &results[..] {
            print_scaling(big, small);
        }
    }
    if matches!(args.only, None | Some(Part::Forecast)) {
        let r = forecast_part(args, &resolve(&args.forecast_config)).await?;
        print_forecast(&r);
    }
    if matches!(args.only, None | Some(Part::Shards)) {
        shards::part(args, &resolve(&args.config)).await?;
    }
    if matches!(args.only, None | Some(Part::Peer)) {
        peer::compare(
            &args.warehouse,
            args.peer_meters,
            args.peer_runs.max(1),
            args.keep,
        )
        .await?;
    }
    if args.only.is_none() {
        gbdt::part(args.gbdt_series, args.gbdt_fits, args.seed)?;
    }
    if !args.keep {
        let admin = Warehouse::connect(&args.warehouse, 2).await?;
        admin
            .execute(
                &format!("DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)"),
                &[],
            )
            .await?;
        admin.close().await;
    }
    Ok(())
}

/// A path relative to the working directory, else to this repository.
fn resolve(p: &Path) -> PathBuf {
    if p.is_absolute() || p.exists() {
        p.to_path_buf()
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
    }
}

async fn server_version(url: &str) -> Res<String> {
    let wh = Warehouse::connect(url, 2).await?;
    let v = wh.fetch("SHOW server_version", &[]).await?;
    wh.close().await;
    Ok(v.first()
        .and_then(|r| r.first())
        .map(|v| v.display())
        .unwrap_or_default())
}

/// `url` with its database replaced by `db` (the query string, if any, kept).
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.find('?') {
        Some(q) => (&url[..q], &url[q..]),
        None => (url, ""),
    };
    let authority_start = base.find("://").map(|i| i + 3).unwrap_or(0);
    let path_start = base[authority_start..]
        .find('/')
        .map(|i| authority_start + i)
        .unwrap_or(base.len());
    format!("{}/{db}{query}", &base[..path_start])
}

/// Drops and recreates the bench database; returns its URL.
async fn fresh_database(server: &str) -> Res<String> {
    let admin = Warehouse::connect(server, 2).await?;
    admin
        .execute(
            &format!("DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)"),
            &[],
        )
        .await?;
    admin
        .execute(&format!("CREATE DATABASE {BENCH_DB}"), &[])
        .await?;
    admin.close().await;
    Ok(with_database(server, BENCH_DB))
}

/// The warehouse column types of a generated frame.
fn column_defs(df: &DataFrame) -> Res<Vec<ColumnDef>> {
    Ok(df
        .columns()
        .iter()
        .map(|c| {
            let ty = match c.dtype() {
                DataType::Int64 => ColumnType::Int,
                DataType::Float64 => ColumnType::Float,
                DataType::String => ColumnType::Text,
                DataType::Boolean => ColumnType::Bool,
                DataType::Datetime(_, _) => ColumnType::Timestamp,
                other => return Err(format!("generated column {} has type {other}", c.name())),
            };
            Ok(ColumnDef {
                name: c.name().to_string(),
                ty,
            })
        })
        .collect::<Result<Vec<_>, _>>()?)
}

/// Creates `name` for `df` and loads it with the warehouse's own upsert (binary COPY into a
/// staging table, then INSERT … ON CONFLICT), in one transaction.
async fn load_table(wh: &Warehouse, name: &str, key: &[&str], df: &DataFrame) -> Res<Ident> {
    let table = Ident::new(name)?;
    wh.ensure_table(&table, &column_defs(df)?, key, false)
        .await?;
    let mut tx = wh.begin().await?;
    tx.write(&table, key, df, WriteMode::Upsert).await?;
    tx.commit().await?;
    Ok(table)
}

/// A loaded warehouse table has been vacuumed and analyzed; without this the first read would
/// also pay for setting hint bits on every page. Returns the seconds it took.
async fn vacuum_analyze(wh: &Warehouse, tables: &[&Ident]) -> Res<f64> {
    let t = Instant::now();
    for table in tables {
        wh.execute(&format!("VACUUM ANALYZE {}", table.quoted()), &[])
            .await?;
    }
    Ok(t.elapsed().as_secs_f64())
}

/// The config, pointed at the bench database.
fn load_job(config_path: &Path, url: &str) -> Res<Job> {
    let mut env: HashMap<String, String> = std::env::vars().collect();
    env.insert("DATABASE_URL".into(), url.to_string());
    Ok(config::load_with_env(config_path, &env)?)
}

/// One measured pipeline run, as a child process is told it (through [`CHILD_ENV`]).
#[derive(serde::Serialize, serde::Deserialize)]
struct ChildSpec {
    config: PathBuf,
    url: String,
    as_of: DateTime<Utc>,
    train: bool,
    write: WriteMode,
    algorithm: Option<String>,
    /// `--shard index/count`; None: unsharded.
    #[serde(default)]
    shard: Option<(u32, u32)>,
    /// Split the scoring SQL by shard (`:shard_index`, `:shard_count`).
    #[serde(default)]
    push_down: bool,
    /// `--run-group`.
    #[serde(default)]
    group: Option<String>,
}

/// What a child process reports back: its last line of stdout.
#[derive(serde::Serialize, serde::Deserialize)]
struct ChildResult {
    wall: f64,
    peak_rss_kib: Option<u64>,
    report: Result<Report, String>,
}

/// Set (to a JSON [`ChildSpec`]) in the environment of the bench's own child processes.
const CHILD_ENV: &str = "PRESCORE_BENCH_CHILD";

/// The config, pointed at `url`, with `--algorithm` applied.
fn job_for(config_path: &Path, url: &str, algorithm: Option<&str>) -> Res<Job> {
    let mut job = load_job(config_path, url)?;
    if let Some(a) = algorithm {
        job.model.algorithm =
            serde_json::from_value::<Algorithm>(serde_json::Value::String(a.to_string()))
                .map_err(|e| format!("--algorithm {a}: {e}"))?;
    }
    Ok(job)
}

/// The child side: runs one pipeline and prints a [`ChildResult`].
async fn child(spec: &str) -> Res<()> {
    let spec: ChildSpec = serde_json::from_str(spec)?;
    let mut job = job_for(&spec.config, &spec.url, spec.algorithm.as_deref())?;
    job.output.write = spec.write;
    if spec.push_down {
        shards::push_down(&mut job);
    }
    let wh = Warehouse::connect(&spec.url, 4).await?;
    let opts = Options {
        mode: if spec.train { Mode::Run } else { Mode::Score },
        as_of: spec.as_of,
        shard: spec
            .shard
            .map(|(index, count)| Shard { index, count })
            .unwrap_or(Shard::ALL),
        group: spec.group.clone(),
    };
    let t = Instant::now();
    // On a task of its own, so a panic in a stage is reported like an error.
    let wh2 = wh.clone();
    let report = match tokio::spawn(async move { pipeline::run(&job, &wh2, &opts).await }).await {
        Ok(Ok(report)) => Ok(report),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(match e.try_into_panic() {
            Ok(p) => format!(
                "panicked: {}",
                p.downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_default()
            ),
            Err(e) => e.to_string(),
        }),
    };
    let wall = t.elapsed().as_secs_f64();
    wh.close().await;
    let result = ChildResult {
        wall,
        peak_rss_kib: peak_rss_kib(),
        report,
    };
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

/// `run` (trains, then publishes into the empty results table), `score` (loads the champion and
/// upserts over every row) and `replace` (loads the champion, `output.write = "replace"`),
/// each through the real pipeline in a child process, with its wall time and peak RSS;
/// `stages` turns a report into the stage table.
async fn run_modes(
    config: &Path,
    url: &str,
    algorithm: Option<&str>,
    now: DateTime<Utc>,
    stages: impl Fn(&Report) -> Vec<Stage>,
) -> Res<Vec<RunResult>> {
    let mut runs = Vec::new();
    for (train, write, label) in [
        (
            true,
            WriteMode::Upsert,
            "run (trains; publish into the empty table)",
        ),
        (
            false,
            WriteMode::Upsert,
            "score (loaded model; upsert over every row)",
        ),
        (
            false,
            WriteMode::Replace,
            "replace (loaded model; output.write = replace)",
        ),
    ] {
        let spec = ChildSpec {
            config: config.to_path_buf(),
            url: url.to_string(),
            as_of: now,
            train,
            write,
            algorithm: algorithm.map(str::to_string),
            shard: None,
            push_down: false,
            group: None,
        };
        let (wall, peak_rss_kib, report) = shards::child(spec).await?;
        runs.push(RunResult {
            label,
            wall,
            peak_rss_kib,
            stages: report.as_ref().map(&stages).unwrap_or_default(),
            report,
        });
    }
    Ok(runs)
}

async fn one_size(args: &Args, config_path: &Path, entities: usize) -> Res<SizeResult> {
    println!(
        "\n=== score job {}: {} customers ===",
        config_path.display(),
        thousands(entities as u64)
    );
    let url = fresh_database(&args.warehouse).await?;
    let wh = Warehouse::connect(&url, 4).await?;
    let now = Utc::now().trunc_subsecs(0);

    // Generate and load with the warehouse's own upsert.
    reset_peak_rss();
    let t = Instant::now();
    let df = churn::generate(entities, args.seed, now);
    let generate_s = t.elapsed().as_secs_f64();
    let rows_loaded = df.height();
    let t = Instant::now();
    let table = load_table(&wh, churn::TABLE, &["customer_id", "period_end"], &df).await?;
    let load_s = t.elapsed().as_secs_f64();
    drop(df);
    let load_peak_rss_kib = peak_rss_kib();
    let vacuum_s = vacuum_analyze(&wh, &[&table]).await?;
    println!(
        "loaded {} rows: generate {:.2} s, upsert {:.2} s ({} rows/s), VACUUM ANALYZE {:.2} s, peak RSS {}",
        thousands(rows_loaded as u64),
        generate_s,
        load_s,
        thousands((rows_loaded as f64 / load_s) as u64),
        vacuum_s,
        mib(load_peak_rss_kib)
    );

    let job = job_for(config_path, &url, args.algorithm.as_deref())?;
    if args.algorithm.is_some() {
        println!(
            "model.algorithm overridden by --algorithm: {}",
            job.model.algorithm.name()
        );
    }
    // The read floors, on the table as the runs find it (loaded, vacuumed, analyzed).
    let lit = ts_literal(now);
    let score_sql = match &job.kind {
        JobKind::Score { score_sql, .. } => score_sql.text.as_str(),
        _ => return Err("the job is not a score job".into()),
    };
    let floor_score_read = copy_out_floor(&url, &inline_as_of(score_sql, &lit)).await?;
    let floor_train_read =
        copy_out_floor(&url, &inline_as_of(&job.input.train_sql.text, &lit)).await?;

    wh.close().await;
    let runs = run_modes(config_path, &url, args.algorithm.as_deref(), now, stages).await?;

    // The publish floors, once there are results to copy.
    let (floor_publish, floor_publish_pk) = copy_in_floors(&url, &job).await?;
    Ok(SizeResult {
        entities,
        rows_loaded,
        load_s,
        runs,
        floor_score_read,
        floor_train_read,
        floor_publish,
        floor_publish_pk,
    })
}

async fn forecast_part(args: &Args, config_path: &Path) -> Res<ForecastResult> {
    if args.series == 0 || args.days == 0 {
        return Err("--series and --days must be at least 1".into());
    }
    let url = fresh_database(&args.warehouse).await?;
    let job = load_job(config_path, &url)?;
    let spec = match &job.kind {
        JobKind::Forecast { spec, .. } => spec.clone(),
        _ => {
            return Err(format!(
                "{} is not a forecast job (--forecast-config)",
                config_path.display()
            )
            .into())
        }
    };
    let hours = args.days * 24;
    println!(
        "\n=== forecast job {}: {} series x {} days of hourly readings ({} steps each) ===",
        config_path.display(),
        thousands(args.series as u64),
        args.days,
        hours
    );
    if hours > spec.min_history {
        println!(
            "{} days generated so that the {}-step ({}-day) history forecast.min_history asks for is complete; the history SQL reads all {} steps",
            args.days,
            spec.min_history,
            spec.min_history as f64 / 24.0,
            hours
        );
    } else {
        println!(
            "note: {} steps generated, not more than forecast.min_history = {}: a series that misses its first or last reading is skipped",
            hours, spec.min_history
        );
    }
    println!(
        "model: {}, training fits a seeded sample of at most model.max_train_rows = {} rows; horizon {} steps",
        job.model.algorithm.name(),
        thousands(job.model.max_train_rows as u64),
        spec.horizon
    );
    let wh = Warehouse::connect(&url, 4).await?;
    let now = Utc::now().trunc_subsecs(0);

    // Generate and load like `energy::seed`, timing the two apart.
    reset_peak_rss();
    let t = Instant::now();
    let g = energy::generate(args.series, args.days, args.seed, now);
    let generate_s = t.elapsed().as_secs_f64();
    let readings = g.readings.height();
    let rows_loaded = g.meters.height() + readings + g.weather.height();
    let t = Instant::now();
    let meters = load_table(&wh, "meters", &["meter_id"], &g.meters).await?;
    let meter_readings =
        load_table(&wh, "meter_readings", &["meter_id", "ts"], &g.readings).await?;
    let weather = load_table(&wh, "weather", &["region", "ts"], &g.weather).await?;
    let load_s = t.elapsed().as_secs_f64();
    let (n_meters, n_weather) = (g.meters.height(), g.weather.height());
    drop(g);
    let load_peak_rss_kib = peak_rss_kib();
    let vacuum_s = vacuum_analyze(&wh, &[&meters, &meter_readings, &weather]).await?;
    println!(
        "loaded {} rows ({} meter_readings, {} meters, {} weather): generate {:.2} s, upsert {:.2} s ({} rows/s), VACUUM ANALYZE {:.2} s, peak RSS {}",
        thousands(rows_loaded as u64),
        thousands(readings as u64),
        thousands(n_meters as u64),
        thousands(n_weather as u64),
        generate_s,
        load_s,
        thousands((rows_loaded as f64 / load_s) as u64),
        vacuum_s,
        mib(load_peak_rss_kib)
    );

    // The read floors, on the tables as the runs find them.
    let lit = ts_literal(now);
    let future_sql = match &job.kind {
        JobKind::Forecast {
            future_sql: Some(sql),
            ..
        } => sql.text.as_str(),
        _ => return Err("the job has no score_sql (future covariates)".into()),
    };
    let floor_history_read =
        copy_out_floor(&url, &inline_as_of(&job.input.train_sql.text, &lit)).await?;
    let floor_future_read = copy_out_floor(&url, &inline_as_of(future_sql, &lit)).await?;

    let history_rows = floor_history_read.rows;
    let horizon = spec.horizon;
    wh.close().await;
    let runs = run_modes(config_path, &url, None, now, |r| {
        forecast_stages(r, history_rows, horizon)
    })
    .await?;

    let (floor_publish, floor_publish_pk) = copy_in_floors(&url, &job).await?;
    Ok(ForecastResult {
        horizon,
        runs,
        floor_history_read,
        floor_future_read,
        floor_publish,
        floor_publish_pk,
    })
}

/// Rows and seconds per stage, from the report. `read` and `contract` of a training run cover
/// both the training and the scoring SQL, as the pipeline's timer adds them up.
fn stages(r: &Report) -> Vec<Stage> {
    let trained = r
        .trained
        .as_ref()
        .map(|t| (t.rows_train + t.rows_holdout) as u64);
    r.stage_seconds
        .iter()
        .map(|(name, secs)| Stage {
            name: name.clone(),
            rows: match name.as_str() {
                "read" | "contract" => Some(r.rows_read as u64),
                "train" => trained,
                "features" | "score" => Some(r.entities as u64),
                "publish" => Some(r.rows_written),
                _ => None,
            },
            seconds: *secs,
        })
        .collect()
}

/// The forecast job's stages. `read` covers the history and the future covariates SQL;
/// `contract` checks the history (`history_rows`, counted with the same SQL and as-of);
/// `features` turns all rows read into series; `train` builds the training matrix (its rows
/// plus the holdout steps are counted; the fit itself uses a sample of at most
/// `model.max_train_rows`) and forecasts the holdout; `score` forecasts `horizon` steps for
/// every series.
fn forecast_stages(r: &Report, history_rows: u64, horizon: usize) -> Vec<Stage> {
    let trained = r
        .trained
        .as_ref()
        .map(|t| (t.rows_train + t.rows_holdout) as u64);
    r.stage_seconds
        .iter()
        .map(|(name, secs)| Stage {
            name: name.clone(),
            rows: match name.as_str() {
                "read" | "features" => Some(r.rows_read as u64),
                "contract" => Some(history_rows),
                "train" => trained,
                "score" => Some((r.entities * horizon) as u64),
                "publish" => Some(r.rows_written),
                _ => None,
            },
            seconds: *secs,
        })
        .collect()
}

fn ts_literal(t: DateTime<Utc>) -> String {
    format!("'{}'::timestamptz", t.format("%Y-%m-%d %H:%M:%S%.6f+00"))
}

/// The job's SQL with `:as_of` as a literal, as `COPY` needs it.
fn inline_as_of(sql: &str, literal: &str) -> String {
    let p = params::prepare(params::trim_statement(sql));
    assert!(
        p.names.iter().all(|n| n == "as_of"),
        "the bench binds only :as_of"
    );
    p.sql.replace("$1", &format!("({literal})"))
}

fn psql(url: &str) -> tokio::process::Command {
    let mut c = tokio::process::Command::new("psql");
    c.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url]);
    c
}

/// Runs a prepared psql command with its stdio as set (stderr captured) and returns its wall
/// time. (tokio's `output()` would replace stdout with a pipe.)
async fn timed(mut cmd: tokio::process::Command, what: &str) -> Res<f64> {
    let t = Instant::now();
    let out = cmd
        .stderr(Stdio::piped())
        .spawn()?
        .wait_with_output()
        .await?;
    let seconds = t.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(format!(
            "psql {what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(seconds)
}

/// Runs one COPY statement in psql with `\timing on`; returns (psql's timing of the statement,
/// the process's wall time). COPY TO data goes to /dev/null (`-o`), COPY FROM data comes from
/// `stdin`.
async fn psql_copy(url: &str, stmt: &str, stdin: Option<std::fs::File>) -> Res<(f64, f64)> {
    let mut cmd = psql(url);
    cmd.args(["-o", "/dev/null", "-c", "\\timing on", "-c", stmt])
        .stdout(Stdio::piped());
    if let Some(f) = stdin {
        cmd.stdin(Stdio::from(f));
    }
    let t = Instant::now();
    let out = cmd
        .stderr(Stdio::piped())
        .spawn()?
        .wait_with_output()
        .await?;
    let wall = t.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(format!(
            "psql {stmt:.40}… failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let ms: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("Time: "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("no `Time:` in psql's output: {text:?}"))?;
    Ok((ms / 1000.0, wall))
}

async fn psql_ok(url: &str, sql: &str) -> Res<String> {
    let out = psql(url).args(["-At", "-c", sql]).output().await?;
    if !out.status.success() {
        return Err(format!("psql failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// psql running `COPY (sql) TO STDOUT (FORMAT binary)` into /dev/null.
async fn copy_out_floor(url: &str, sql: &str) -> Res<Floor> {
    let rows: u64 = psql_ok(url, &format!("SELECT count(*) FROM (\n{sql}\n) AS q"))
        .await?
        .parse()?;
    let stmt = format!("COPY (\n{sql}\n) TO STDOUT (FORMAT binary)");
    let mut best: Option<Floor> = None;
    for _ in 0..FLOOR_TRIES {
        let (seconds, process_seconds) = psql_copy(url, &stmt, None).await?;
        if best.as_ref().is_none_or(|b| seconds < b.seconds) {
            best = Some(Floor {
                rows,
                seconds,
                process_seconds,
            });
        }
    }
    Ok(best.expect("at least one try"))
}

/// psql loading the results table's rows (exported with `COPY TO`) with a binary
/// `COPY FROM STDIN` into a new table of the same columns; and into one that also has the
/// results table's primary key.
async fn copy_in_floors(url: &str, job: &Job) -> Res<(Option<Floor>, Option<Floor>)> {
    let results = job.output.table.quoted();
    let exists = psql_ok(url, &format!("SELECT to_regclass('{results}') IS NOT NULL")).await?;
    if exists != "t" {
        return Ok((None, None));
    }
    let file = std::env::temp_dir().join(format!("prescore-bench-{}.bin", std::process::id()));
    let exported = std::fs::File::create(&file)?;
    let mut cmd = psql(url);
    cmd.args(["-c", &format!("COPY {results} TO STDOUT (FORMAT binary)")])
        .stdout(Stdio::from(exported));
    timed(cmd, "COPY TO (export)").await?;
    let mut floors = Vec::new();
    for (table, like) in [
        ("bench_copy_floor", "LIKE {results}"),
        ("bench_copy_floor_pk", "LIKE {results} INCLUDING INDEXES"),
    ] {
        let like = like.replace("{results}", &results);
        let mut best: Option<Floor> = None;
        for _ in 0..FLOOR_TRIES {
            psql_ok(
                url,
                &format!("DROP TABLE IF EXISTS {table}; CREATE TABLE {table} ({like})"),
            )
            .await?;
            let input = std::fs::File::open(&file)?;
            let stmt = format!("COPY {table} FROM STDIN (FORMAT binary)");
            let (seconds, process_seconds) = psql_copy(url, &stmt, Some(input)).await?;
            let rows: u64 = psql_ok(url, &format!("SELECT count(*) FROM {table}"))
                .await?
                .parse()?;
            if best.as_ref().is_none_or(|b| seconds < b.seconds) {
                best = Some(Floor {
                    rows,
                    seconds,
                    process_seconds,
                });
            }
        }
        floors.push(best.expect("at least one try"));
    }
    let _ = std::fs::remove_file(&file);
    let pk = floors.pop().expect("two floors");
    let plain = floors.pop().expect("two floors");
    Ok((Some(plain), Some(pk)))
}

/// Resets the kernel's peak-RSS mark (VmHWM) of this process; false if not permitted.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// VmHWM from /proc/self/status, in KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn mib(kib: Option<u64>) -> String {
    kib.map(|k| format!("{:.0} MiB", k as f64 / 1024.0))
        .unwrap_or_else(|| "n/a".into())
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn rate(rows: u64, secs: f64) -> String {
    if secs > 0.0 {
        thousands((rows as f64 / secs) as u64)
    } else {
        "-".into()
    }
}

fn stage_seconds(run: &RunResult, stage: &str) -> Option<f64> {
    run.stages
        .iter()
        .find(|s| s.name == stage)
        .map(|s| s.seconds)
}

/// Each run's header line and stage table; `legend` says what the rows column counts.
fn print_runs(runs: &[RunResult], legend: Option<&str>) {
    for run in runs {
        let report = match &run.report {
            Ok(report) => report,
            Err(e) => {
                println!(
                    "\n{}: FAILED after {:.2} s, peak RSS {}: {e}",
                    run.label,
                    run.wall,
                    mib(run.peak_rss_kib)
                );
                continue;
            }
        };
        let scored = match report.kind {
            KindTag::Score => "scored",
            KindTag::Forecast => "series forecast",
        };
        println!(
            "\n{}: {:.2} s wall (pipeline::run), peak RSS {}, model v{}, {} rows read, {} {scored}, {} written",
            run.label,
            run.wall,
            mib(run.peak_rss_kib),
            report.model_version.unwrap_or_default(),
            thousands(report.rows_read as u64),
            thousands(report.entities as u64),
            thousands(report.rows_written),
        );
        if report.kind == KindTag::Forecast {
            print_skipped(report);
        }
        println!(
            "  {:<10} {:>12} {:>10} {:>14}",
            "stage", "rows", "seconds", "rows/s"
        );
        for s in &run.stages {
            println!(
                "  {:<10} {:>12} {:>10.3} {:>14}",
                s.name,
                s.rows.map(thousands).unwrap_or_else(|| "-".into()),
                s.seconds,
                s.rows
                    .map(|n| rate(n, s.seconds))
                    .unwrap_or_else(|| "-".into()),
            );
        }
        let staged: f64 = run.stages.iter().map(|s| s.seconds).sum();
        println!(
            "  {:<10} {:>12} {:>10.3}   (lock, ledger, registry, gate)",
            "other",
            "",
            run.wall - staged
        );
        if let Some(legend) = legend {
            println!("  rows: {legend}");
        }
    }
}

/// Series forecast and skipped, the skipped grouped by reason with one example each.
fn print_skipped(report: &Report) {
    println!(
        "  series: {} forecast, {} skipped",
        thousands(report.entities as u64),
        thousands(report.skipped_entities.len() as u64)
    );
    // (reason, count, an example)
    let mut groups: Vec<(String, usize, String)> = Vec::new();
    for (series, why) in &report.skipped_entities {
        let reason = if why.starts_with("stale") {
            "stale (no recent reading)".to_string()
        } else if let Some(i) = why.find("fewer than ") {
            format!(
                "fewer steps of history than {}",
                &why[i + "fewer than ".len()..]
            )
        } else if why.contains("step grid") {
            "a timestamp off the step grid".to_string()
        } else {
            why.clone()
        };
        match groups.iter_mut().find(|g| g.0 == reason) {
            Some(g) => g.1 += 1,
            None => groups.push((reason, 1, format!("series {series}: {why}"))),
        }
    }
    groups.sort_by_key(|g| std::cmp::Reverse(g.1));
    for (reason, n, example) in groups {
        println!(
            "  {:>8} skipped: {reason} (e.g. {example})",
            thousands(n as u64)
        );
    }
}

/// The floor table (the given read floors, then the two publish floors, if measured) and the
/// heading of the `prescore / floor` lines that follow.
fn print_floors(
    runs: &[RunResult],
    reads: &[(&str, &Floor)],
    publish: Option<&Floor>,
    publish_pk: Option<&Floor>,
) {
    println!(
        "\nfloor (psql \\timing of the COPY statement, best of {FLOOR_TRIES}; last column: that psql process's wall time):"
    );
    println!(
        "  {:<58} {:>12} {:>10} {:>14} {:>10}",
        "", "rows", "seconds", "rows/s", "process s"
    );
    let writes = [
        ("COPY FROM STDIN (FORMAT binary), results' columns", publish),
        (
            "  same, into a table with the results' primary key",
            publish_pk,
        ),
    ];
    let all = reads
        .iter()
        .map(|(name, fl)| (*name, Some(*fl)))
        .chain(writes);
    for (name, fl) in all {
        match fl {
            Some(fl) => println!(
                "  {:<58} {:>12} {:>10.3} {:>14} {:>10.3}",
                name,
                thousands(fl.rows),
                fl.seconds,
                rate(fl.rows, fl.seconds),
                fl.process_seconds
            ),
            None => println!("  {name:<58} (not measured: no run published a results table)"),
        }
    }
    println!("\nprescore / floor:");
    if runs.iter().all(|run| run.report.is_err()) {
        println!("  (none: no run succeeded)");
    }
}

/// One `prescore / floor` line, when both were measured.
fn print_ratio(name: &str, ours: Option<f64>, floor: Option<f64>) {
    if let (Some(ours), Some(floor)) = (ours, floor) {
        println!("  {:<66} x{:.2}", name, ours / floor);
    }
}

fn print_size(r: &SizeResult) {
    print_runs(&r.runs, None);
    print_floors(
        &r.runs,
        &[
            (
                "COPY (scoring SQL) TO STDOUT (FORMAT binary), to /dev/null",
                &r.floor_score_read,
            ),
            (
                "COPY (training SQL) TO STDOUT (FORMAT binary), to /dev/null",
                &r.floor_train_read,
            ),
        ],
        r.floor_publish.as_ref(),
        r.floor_publish_pk.as_ref(),
    );
    let publish = r.floor_publish.as_ref().map(|f| f.seconds);
    let publish_pk = r.floor_publish_pk.as_ref().map(|f| f.seconds);
    let (run, score) = (&r.runs[0], &r.runs[1]);
    print_ratio(
        "score: read (scoring SQL) / COPY TO of the scoring SQL",
        stage_seconds(score, "read"),
        Some(r.floor_score_read.seconds),
    );
    print_ratio(
        "run:   read (training + scoring SQL) / both COPY TO",
        stage_seconds(run, "read"),
        Some(r.floor_score_read.seconds + r.floor_train_read.seconds),
    );
    print_publish_ratios(&r.runs, r.floor_score_read.seconds, publish, publish_pk);
}

/// Each run's publish, and each loaded-model run as a whole, against the COPY floors.
fn print_publish_ratios(
    runs: &[RunResult],
    read_floor: f64,
    publish: Option<f64>,
    publish_pk: Option<f64>,
) {
    for run in runs {
        let mode = run.label.split_whitespace().next().unwrap_or_default();
        print_ratio(
            &format!("{mode:<8}publish / COPY FROM"),
            stage_seconds(run, "publish"),
            publish,
        );
        print_ratio(
            &format!("{mode:<8}publish / COPY FROM with the primary key"),
            stage_seconds(run, "publish"),
            publish_pk,
        );
    }
    for run in runs.iter().skip(1) {
        let mode = run.label.split_whitespace().next().unwrap_or_default();
        let whole = run.report.as_ref().ok().map(|_| run.wall);
        print_ratio(
            &format!("{mode:<8}whole run / (COPY TO + COPY FROM)"),
            whole,
            publish.map(|p| p + read_floor),
        );
        print_ratio(
            &format!("{mode:<8}whole run / (COPY TO + COPY FROM with the primary key)"),
            whole,
            publish_pk.map(|p| p + read_floor),
        );
    }
}

fn print_forecast(r: &ForecastResult) {
    let legend = format!(
        "read, features = history + future covariate rows; contract = history rows; train = training-matrix rows + holdout steps; score = series x {} steps; publish = rows upserted",
        r.horizon
    );
    print_runs(&r.runs, Some(&legend));
    if let Some(report) = r.runs.iter().find_map(|run| run.report.as_ref().ok()) {
        let counted = r.floor_history_read.rows + r.floor_future_read.rows;
        if counted != report.rows_read as u64 {
            println!(
                "note: the runs read {} rows, the COPY floors' SQL counts {}",
                thousands(report.rows_read as u64),
                thousands(counted)
            );
        }
    }
    print_floors(
        &r.runs,
        &[
            (
                "COPY (history SQL) TO STDOUT (FORMAT binary), to /dev/null",
                &r.floor_history_read,
            ),
            (
                "COPY (future SQL) TO STDOUT (FORMAT binary), to /dev/null",
                &r.floor_future_read,
            ),
        ],
        r.floor_publish.as_ref(),
        r.floor_publish_pk.as_ref(),
    );
    let (run, score) = (&r.runs[0], &r.runs[1]);
    let both = r.floor_history_read.seconds + r.floor_future_read.seconds;
    print_ratio(
        "score: read (history + future SQL) / both COPY TO",
        stage_seconds(score, "read"),
        Some(both),
    );
    print_ratio(
        "score: read (history + future SQL) / COPY TO of the history SQL",
        stage_seconds(score, "read"),
        Some(r.floor_history_read.seconds),
    );
    print_ratio(
        "run:   read (history + future SQL) / both COPY TO",
        stage_seconds(run, "read"),
        Some(both),
    );
    print_publish_ratios(
        &r.runs,
        both,
        r.floor_publish.as_ref().map(|f| f.seconds),
        r.floor_publish_pk.as_ref().map(|f| f.seconds),
    );
}

fn print_scaling(big: &SizeResult, small: &SizeResult) {
    println!(
        "\nscaling: {} vs {} customers ({} vs {} rows loaded)",
        thousands(big.entities as u64),
        thousands(small.entities as u64),
        thousands(big.rows_loaded as u64),
        thousands(small.rows_loaded as u64)
    );
    println!(
        "  {:<24} {:>11} {:>11} {:>16}",
        "stage", "rows ratio", "time ratio", "time <= 1.1 x rows"
    );
    let line = |name: String, rows: Option<(u64, u64)>, secs: (f64, f64)| {
        let (rows_ratio, ok) = match rows {
            Some((b, s)) if s > 0 => {
                let rr = b as f64 / s as f64;
                let tr = secs.0 / secs.1;
                (
                    format!("x{rr:.2}"),
                    if tr <= 1.1 * rr { "yes" } else { "NO" },
                )
            }
            _ => ("-".into(), "-"),
        };
        println!(
            "  {:<24} {:>11} {:>11} {:>16}",
            name,
            rows_ratio,
            format!("x{:.2}", secs.0 / secs.1),
            ok
        );
    };
    line(
        "load (upsert)".into(),
        Some((big.rows_loaded as u64, small.rows_loaded as u64)),
        (big.load_s, small.load_s),
    );
    for (b, s) in big.runs.iter().zip(&small.runs) {
        let mode = b.label.split_whitespace().next().unwrap_or_default();
        for bs in &b.stages {
            let Some(ss) = s.stages.iter().find(|x| x.name == bs.name) else {
                continue;
            };
            line(
                format!("{mode}: {}", bs.name),
                bs.rows.zip(ss.rows),
                (bs.seconds, ss.seconds),
            );
        }
        if let (Ok(br), Ok(sr)) = (&b.report, &s.report) {
            line(
                format!("{mode}: whole run"),
                Some((br.rows_read as u64, sr.rows_read as u64)),
                (b.wall, s.wall),
            );
        }
    }
    for (name, b, s) in [
        (
            "floor: COPY TO (scoring)",
            Some(&big.floor_score_read),
            Some(&small.floor_score_read),
        ),
        (
            "floor: COPY FROM",
            big.floor_publish.as_ref(),
            small.floor_publish.as_ref(),
        ),
    ] {
        if let (Some(b), Some(s)) = (b, s) {
            line(name.into(), Some((b.rows, s.rows)), (b.seconds, s.seconds));
        }
    }
}
