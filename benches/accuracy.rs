//! `make accuracy`: how good the published forecasts are, on real hourly series and on the
//! demo's generated data, measured the way a user would check them: a rolling origin. At each
//! of `--origins` origins 24 hours apart (the last one 24 hours before the data ends),
//! `prescore run --as-of ORIGIN` (the real pipeline, in process, on a fresh SQLite file)
//! forecasts the next 24 hours; every published row is then compared with what happened, next
//! to the two seasonal-naive forecasts made at the same origin (t-24 and t-168).
//!
//! Per dataset it prints the MAE of the published forecast and of both naives, the ratio to
//! the better naive (below 1.0: prescore wins), the share of actuals inside the 80% interval,
//! the methods the published rows came from, and the time taken. Datasets: `benches/data/`
//! (real series, see its README for sources and licences) and the demo's energy and weather
//! jobs at a fixed seed.
//!
//! ```text
//! make accuracy
//! make accuracy ACCURACY_ARGS="--only pedestrians --set forecast.strategy=direct"
//! ```

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::{DateTime, Duration, SubsecRound, TimeZone, Utc};
use clap::Parser;
use polars::prelude::*;

use prescore::config;
use prescore::pipeline::{self, Mode, Options, Shard};
use prescore::warehouse::frame::parse_timestamp;
use prescore::warehouse::ident::Ident;
use prescore::warehouse::{ColumnDef, ColumnType, Value, Warehouse, WriteMode};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Every dataset, in the order they run.
const DATASETS: [&str; 6] = [
    "pedestrians",
    "city_temps",
    "tmy_weather",
    "tmy_irradiance",
    "demo_energy",
    "demo_weather",
];

/// The real datasets: name, file in `--data` (without `.csv.gz`), and the column that is the
/// target (0-based; the first two are `series_id,ts`). The TMY file's irradiance column is a
/// series of its own: 0 every night, and by day close to persistence from history alone.
const REAL: [(&str, &str, usize); 4] = [
    ("pedestrians", "pedestrians", 2),
    ("city_temps", "city_temps", 2),
    ("tmy_weather", "tmy_weather", 2),
    ("tmy_irradiance", "tmy_weather", 3),
];

#[derive(Parser, Debug)]
#[command(
    name = "prescore-accuracy",
    about = "Rolling-origin forecast accuracy on real and demo hourly series"
)]
struct Args {
    /// Only these datasets (repeat the flag or separate them with commas).
    #[arg(long, value_delimiter = ',', value_parser = DATASETS)]
    only: Vec<String>,
    /// Forecast origins, 24 hours apart.
    #[arg(long, default_value_t = 7)]
    origins: usize,
    /// Config overrides for the real datasets' job, `section.key=value` (TOML value), e.g.
    /// `forecast.strategy="direct"` or `model.max_trees=200`.
    #[arg(long = "set")]
    set: Vec<String>,
    /// Where the real datasets are.
    #[arg(long, default_value = "benches/data")]
    data: PathBuf,
    /// Print one JSON object per dataset as well.
    #[arg(long)]
    json: bool,
}

/// One dataset's job and where its truth lives.
struct Dataset {
    name: String,
    job: config::Job,
    /// (key as text, ts, value) of every observation.
    actuals_sql: String,
    /// The last observed hour.
    end: DateTime<Utc>,
    series: usize,
    rows: usize,
}

/// What a dataset's rolling origin measured.
#[derive(Debug, Default, serde::Serialize)]
struct Measured {
    dataset: String,
    series: usize,
    points: usize,
    missing: usize,
    mae: f64,
    naive24: f64,
    naive168: f64,
    ratio: f64,
    coverage: f64,
    methods: BTreeMap<String, usize>,
    gated: usize,
    seconds: f64,
}

/// The job the real datasets run: the shipped energy job's forecast settings, univariate.
const REAL_JOB: &str = r#"
[job]
name = "NAME"
kind = "forecast"
warehouse = "URL"

[input]
train_sql = "history.sql"
key = "series_id"
time = "ts"
target = "value"
min_rows = 100

[input.columns]
series_id = "text"
ts = "timestamp"
value = "float"

[forecast]
horizon = 24
step = "1h"
lags = [1, 2, 3, 24, 168]
rolling = [24, 168]
calendar = ["hour", "dow", "weekend"]
min_history = 336
max_gap = 3
interval = 0.8

[model]
task = "regression"
algorithm = "gbdt"
retrain = "always"

[gate]
must_beat = ["baseline"]

[output]
table = "forecasts"
"#;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if let Err(e) = run(&args).await {
        eprintln!("prescore-accuracy: {e}");
        std::process::exit(1);
    }
}

async fn run(args: &Args) -> Res<()> {
    let tmp = std::env::temp_dir().join(format!("prescore-accuracy-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let wanted = |n: &str| args.only.is_empty() || args.only.iter().any(|o| o == n);
    let mut results = Vec::new();
    for (name, file, column) in REAL {
        if wanted(name) {
            let file = args.data.join(format!("{file}.csv.gz"));
            let ds = real_dataset(name, &file, column, &tmp, &args.set).await?;
            results.push(measure(&ds, args.origins).await?);
            print_one(results.last().expect("pushed"), args.json);
        }
    }
    for (name, config) in [
        ("demo_energy", "configs/energy_hourly.toml"),
        ("demo_weather", "configs/weather_hourly.toml"),
    ] {
        if wanted(name) {
            let ds = demo_dataset(name, config, &tmp).await?;
            results.push(measure(&ds, args.origins).await?);
            print_one(results.last().expect("pushed"), args.json);
        }
    }
    println!("\n{}", table(&results));
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

/// Loads a `series_id,ts,value[,...]` CSV (gzip) into a fresh SQLite file, column `column` as
/// the value.
async fn real_dataset(
    name: &str,
    file: &Path,
    column: usize,
    tmp: &Path,
    set: &[String],
) -> Res<Dataset> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(file).map_err(|e| {
        format!(
            "{}: {e} (run from the repository root, or pass --data)",
            file.display()
        )
    })?)
    .read_to_string(&mut text)?;
    let (mut keys, mut ts, mut vals) = (Vec::new(), Vec::new(), Vec::new());
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let (Some(k), Some(t), Some(v)) = (f.first(), f.get(1), f.get(column)) else {
            continue;
        };
        let Some(t) = parse_timestamp(t) else {
            return Err(format!("{}: bad timestamp {t:?}", file.display()).into());
        };
        keys.push(k.to_string());
        ts.push(t.timestamp_micros());
        vals.push(v.parse::<f64>().ok());
    }
    let end = DateTime::from_timestamp_micros(*ts.iter().max().ok_or("empty dataset")?)
        .ok_or("bad end")?;
    let series = keys.iter().collect::<std::collections::HashSet<_>>().len();
    let rows = keys.len();
    let frame = DataFrame::new(
        rows,
        vec![
            Column::new("series_id".into(), keys),
            Int64Chunked::from_vec("ts".into(), ts)
                .into_datetime(TimeUnit::Microseconds, Some(polars::prelude::TimeZone::UTC))
                .into_column(),
            Column::new("value".into(), vals),
        ],
    )?;
    let url = format!("sqlite://{}", tmp.join(format!("{name}.db")).display());
    let wh = Warehouse::connect(&url, 2).await?;
    let table = Ident::new("observations")?;
    let defs = [
        ("series_id", ColumnType::Text),
        ("ts", ColumnType::Timestamp),
        ("value", ColumnType::Float),
    ]
    .map(|(n, ty)| ColumnDef { name: n.into(), ty });
    wh.ensure_table(&table, &defs, &["series_id", "ts"], false)
        .await?;
    let mut tx = wh.begin().await?;
    tx.write(&table, &["series_id", "ts"], &frame, WriteMode::Replace)
        .await?;
    tx.commit().await?;
    wh.close().await;
    let dir = tmp.join(name);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("history.sql"),
        "SELECT series_id, ts, value FROM observations WHERE ts <= :as_of",
    )?;
    let toml = with_overrides(&REAL_JOB.replace("NAME", name).replace("URL", &url), set)?;
    let path = dir.join("job.toml");
    std::fs::write(&path, toml)?;
    Ok(Dataset {
        name: name.into(),
        job: config::load(&path)?,
        actuals_sql: "SELECT series_id, ts, value FROM observations WHERE value IS NOT NULL".into(),
        end,
        series,
        rows,
    })
}

/// Applies `section.key=value` overrides to a TOML text.
fn with_overrides(toml: &str, set: &[String]) -> Res<String> {
    let mut doc: toml::Table = toml.parse()?;
    for s in set {
        let (path, value) = s
            .split_once('=')
            .ok_or_else(|| format!("--set {s:?}: write section.key=value"))?;
        let (section, key) = path
            .split_once('.')
            .ok_or_else(|| format!("--set {s:?}: write section.key=value"))?;
        let v: toml::Value = format!("v = {value}")
            .parse::<toml::Table>()
            .map(|mut t| t.remove("v").expect("parsed"))
            .or_else(|_| Ok::<_, String>(toml::Value::String(value.to_string())))?;
        doc.entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()))
            .as_table_mut()
            .ok_or_else(|| format!("--set {s:?}: {section} is not a table"))?
            .insert(key.to_string(), v);
    }
    Ok(toml::to_string(&doc)?)
}

/// The demo's energy or weather data at a fixed seed, with the shipped config.
async fn demo_dataset(name: &str, config_path: &str, tmp: &Path) -> Res<Dataset> {
    let url = format!("sqlite://{}", tmp.join("demo.db").display());
    // A fixed hour, so the data (and the figures) do not change from day to day.
    let now = Utc
        .with_ymd_and_hms(2026, 11, 29, 12, 0, 0)
        .unwrap()
        .trunc_subsecs(0);
    let (meters, days) = (300, 42);
    if !tmp.join("demo.db").exists() {
        let wh = Warehouse::connect(&url, 2).await?;
        prescore::demo::energy::seed(&wh, meters, days, 7, now).await?;
        wh.close().await;
    }
    let mut env: HashMap<String, String> = std::env::vars().collect();
    env.insert("DATABASE_URL".into(), url.clone());
    let mut job = config::load_with_env(Path::new(config_path), &env)?;
    job.retrain = config::RetrainPolicy::Always;
    let (actuals_sql, series) = match name {
        "demo_energy" => (
            format!(
                "SELECT meter_id, ts, kwh FROM meter_readings WHERE kwh IS NOT NULL AND ts <= '{}'",
                now.format("%Y-%m-%d %H:%M:%S")
            ),
            meters,
        ),
        _ => (
            format!(
                "SELECT region, ts, temperature FROM weather WHERE ts <= '{}'",
                now.format("%Y-%m-%d %H:%M:%S")
            ),
            4,
        ),
    };
    Ok(Dataset {
        name: name.into(),
        job,
        actuals_sql,
        end: now,
        series,
        rows: 0,
    })
}

/// The rolling origin on one dataset.
async fn measure(ds: &Dataset, origins: usize) -> Res<Measured> {
    let started = Instant::now();
    let wh = Warehouse::connect(ds.job.warehouse.expose(), 4).await?;
    let mut truth: HashMap<(String, i64), f64> = HashMap::new();
    for r in wh.fetch(&ds.actuals_sql, &[]).await? {
        let (Some(t), Some(v)) = (r[1].as_ts(), r[2].as_f64()) else {
            continue;
        };
        truth.insert((text(&r[0]), t.timestamp_micros()), v);
    }
    eprintln!(
        "{}: {} series, {} observations{}, {} origins",
        ds.name,
        ds.series,
        truth.len(),
        if ds.rows > 0 {
            format!(" ({} rows loaded)", ds.rows)
        } else {
            String::new()
        },
        origins
    );
    let hour = Duration::hours(1);
    let mut m = Measured {
        dataset: ds.name.clone(),
        series: ds.series,
        ..Default::default()
    };
    let (mut err, mut err24, mut err168, mut inside) = (0.0, 0.0, 0.0, 0usize);
    for j in (1..=origins).rev() {
        let origin = ds.end - Duration::hours(24 * j as i64);
        let opts = Options {
            mode: Mode::Run,
            as_of: origin,
            shard: Shard::ALL,
            group: None,
        };
        let report = match pipeline::run(&ds.job, &wh, &opts).await {
            Ok(r) => r,
            Err(e @ prescore::error::Error::Gated { .. }) => {
                eprintln!("  origin {origin}: gated ({e})");
                m.gated += 1;
                continue;
            }
            Err(e) => return Err(format!("{} at {origin}: {e}", ds.name).into()),
        };
        let rows = wh
            .fetch(
                &format!(
                    "SELECT series_id, target_ts, yhat, yhat_lo, yhat_hi, method FROM {} WHERE run_id = $1",
                    ds.job.output.table
                ),
                &[Value::text(report.run_id.as_str())],
            )
            .await?;
        for r in rows {
            let key = text(&r[0]);
            let Some(target) = r[1].as_ts() else { continue };
            let at = |t: DateTime<Utc>| truth.get(&(key.clone(), t.timestamp_micros())).copied();
            let (Some(actual), Some(n24), Some(n168)) =
                (at(target), at(target - hour * 24), at(target - hour * 168))
            else {
                m.missing += 1;
                continue;
            };
            let (yhat, lo, hi) = (
                r[2].as_f64().unwrap_or(f64::NAN),
                r[3].as_f64().unwrap_or(f64::NAN),
                r[4].as_f64().unwrap_or(f64::NAN),
            );
            m.points += 1;
            err += (actual - yhat).abs();
            err24 += (actual - n24).abs();
            err168 += (actual - n168).abs();
            inside += usize::from(lo <= actual && actual <= hi);
            *m.methods.entry(text(&r[5])).or_default() += 1;
        }
        eprintln!(
            "  origin {}: {} rows published, {:.1}s",
            origin.format("%Y-%m-%d %H:%M"),
            report.rows_written,
            started.elapsed().as_secs_f64()
        );
    }
    wh.close().await;
    let n = m.points.max(1) as f64;
    m.mae = err / n;
    m.naive24 = err24 / n;
    m.naive168 = err168 / n;
    m.ratio = m.mae / m.naive24.min(m.naive168);
    m.coverage = inside as f64 / n;
    m.seconds = started.elapsed().as_secs_f64();
    Ok(m)
}

fn text(v: &Value) -> String {
    match v {
        Value::Int(Some(i)) => i.to_string(),
        other => other.as_str().unwrap_or_default().to_string(),
    }
}

fn print_one(m: &Measured, json: bool) {
    if json {
        println!("{}", serde_json::to_string(m).unwrap_or_default());
    }
}

fn table(rows: &[Measured]) -> String {
    let mut out = String::from(
        "dataset        series  points  MAE model  naive t-24  naive t-168  ratio  coverage  methods (rows)                      seconds\n",
    );
    out.push_str(&"-".repeat(132));
    out.push('\n');
    for m in rows {
        let methods: Vec<String> = m.methods.iter().map(|(k, v)| format!("{k} {v}")).collect();
        out.push_str(&format!(
            "{:<14} {:>6}  {:>6}  {:>9.4}  {:>10.4}  {:>11.4}  {:>5.3}  {:>8.3}  {:<35} {:>7.1}{}\n",
            m.dataset,
            m.series,
            m.points,
            m.mae,
            m.naive24,
            m.naive168,
            m.ratio,
            m.coverage,
            methods.join(", "),
            m.seconds,
            if m.gated > 0 {
                format!("  ({} origins gated)", m.gated)
            } else {
                String::new()
            }
        ));
    }
    out
}
