//! Forecast jobs: one row per series and target hour, intervals around the point forecast,
//! a model that beats seasonal naive on a fixed seeded dataset, reruns that replace their
//! rows, and later runs that overwrite overlapping target times.

use chrono::DurationRound;

use crate::support::*;

const ENERGY: &str = "configs/energy_hourly.toml";

fn seed_energy(db: &Db) {
    seed(
        db,
        &[
            "--customers",
            "200",
            "--meters",
            "80",
            "--days",
            "35",
            "--seed",
            "11",
        ],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn energy_forecast_beats_seasonal_naive_and_publishes_every_series() {
    for db in backends("forecast") {
        seed_energy(&db);
        // retrain = "24h": the first run trains, the next ones load the champion.
        let cfg = config(&db, ENERGY, &[]);
        let c = cfg.to_str().unwrap();
        let now = chrono::Utc::now();
        let early = (now - chrono::Duration::hours(2))
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        let o = prescore(&["run", "--config", c, "--as-of", &early], &[]);
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(
            out.contains("naive day") && out.contains("skipped") && out.contains("coverage"),
            "{out}"
        );
        // The energy job fixes its seasonal means, and the summary says the model reads them.
        assert!(
            out.contains("with seasonal means over 3 and 7 days"),
            "{out}"
        );
        // A job of 80 meters gets the most backtest windows `auto` gives (35 days leave room
        // for all 14), with the covariates as served at every origin, the last ten read after
        // the series were counted.
        assert!(out.contains("14 window(s) of 24 steps"), "{out}");

        // The published forecast beats both seasonal-naive baselines on the backtest, by a
        // clear margin.
        let m = rows(&db, "SELECT metrics, baseline FROM prescore_models WHERE job = 'energy_hourly' ORDER BY version DESC LIMIT 1").await;
        let metrics: serde_json::Value = serde_json::from_str(&m[0][0]).unwrap();
        let baseline: serde_json::Value = serde_json::from_str(&m[0][1]).unwrap();
        let mae = metrics["mae"].as_f64().unwrap();
        let naive_day = baseline["mae"].as_f64().unwrap();
        let naive_week = baseline["weekly_mae"].as_f64().unwrap();
        assert!(
            mae < 0.9 * naive_day.min(naive_week),
            "{}: model MAE {mae} vs naive {naive_day} / {naive_week}",
            db.name
        );
        for m in ["mae_h001", "mae_h024", "rmse_h012", "smape_h024"] {
            assert!(
                metrics[m].as_f64().is_some() && baseline[m].as_f64().is_some(),
                "{m}"
            );
        }

        // One row per series and step; intervals around the point forecast.
        let series: i64 = rows(
            &db,
            "SELECT COUNT(DISTINCT series_id) FROM energy_forecasts",
        )
        .await[0][0]
            .parse()
            .unwrap();
        assert!(series >= 60, "{}: only {series} series forecast", db.name);
        assert_eq!(
            count(&db, "energy_forecasts").await,
            series * 24,
            "{}",
            db.name
        );
        let bad = rows(&db, "SELECT COUNT(*) FROM energy_forecasts WHERE NOT (yhat_lo <= yhat AND yhat <= yhat_hi) OR horizon < 1 OR horizon > 24").await;
        assert_eq!(bad[0][0], "0", "{}", db.name);

        // Rerun at the same as_of: same rows, no duplicates.
        let o = prescore(&["run", "--config", c, "--as-of", &early], &[]);
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
        assert_eq!(
            count(&db, "energy_forecasts").await,
            series * 24,
            "{}",
            db.name
        );

        // A later as_of: fresher forecasts overwrite the overlapping target hours.
        let o = prescore(&["run", "--config", c], &[]);
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
        let latest_run = rows(&db, "SELECT run_id FROM prescore_runs WHERE job = 'energy_hourly' ORDER BY started_at DESC LIMIT 1").await[0][0].clone();
        assert_eq!(
            count(&db, "energy_forecasts").await,
            series * 25,
            "{}: 23 overlapping hours replaced, one new",
            db.name
        );
        let fresh = rows(
            &db,
            &format!("SELECT COUNT(*) FROM energy_forecasts WHERE run_id = '{latest_run}'"),
        )
        .await;
        assert_eq!(fresh[0][0], (series * 24).to_string(), "{}", db.name);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn loading_the_champion_forecasts_without_training() {
    let db = sqlite();
    seed_energy(&db);
    let cfg = config(&db, ENERGY, &[]);
    let c = cfg.to_str().unwrap();
    assert!(prescore(&["train", "--config", c], &[]).status.success());
    let o = prescore(&["score", "--config", c], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("trained gbdt"),
        "score must not train"
    );
    assert!(count(&db, "energy_forecasts").await > 0);
    // A config that asks for other lags cannot use that model.
    let other = config(
        &db,
        ENERGY,
        &[("lags = [1, 2, 3, 24, 168]", "lags = [1, 24, 168]")],
    );
    let o = prescore(&["score", "--config", other.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("lags"), "{}", text(&o));
}

/// Hourly series written straight into an `observations` table, for forecast tests that need
/// a known shape: (series, values), the last value at `end`.
async fn observations(
    db: &Db,
    series: &[(&str, Vec<Option<f64>>)],
    end: chrono::DateTime<chrono::Utc>,
) {
    use polars::prelude::*;
    use prescore::warehouse::{ColumnDef, ColumnType, WriteMode};
    let (mut keys, mut ts, mut vals) = (Vec::new(), Vec::new(), Vec::new());
    for (name, values) in series {
        let n = values.len() as i64;
        for (i, v) in values.iter().enumerate() {
            if let Some(v) = v {
                keys.push(name.to_string());
                ts.push((end - chrono::Duration::hours(n - 1 - i as i64)).timestamp_micros());
                vals.push(*v);
            }
        }
    }
    let n = keys.len();
    let frame = DataFrame::new(
        n,
        vec![
            Column::new("series_id".into(), keys),
            Int64Chunked::from_vec("ts".into(), ts)
                .into_datetime(TimeUnit::Microseconds, Some(polars::prelude::TimeZone::UTC))
                .into_column(),
            Column::new("value".into(), vals),
        ],
    )
    .unwrap();
    let wh = connect(db).await;
    let table = prescore::warehouse::ident::Ident::new("observations").unwrap();
    let defs = [
        ("series_id", ColumnType::Text),
        ("ts", ColumnType::Timestamp),
        ("value", ColumnType::Float),
    ]
    .map(|(name, ty)| ColumnDef {
        name: name.into(),
        ty,
    });
    wh.ensure_table(&table, &defs, &["series_id", "ts"], false)
        .await
        .unwrap();
    let mut tx = wh.begin().await.unwrap();
    tx.write(&table, &["series_id", "ts"], &frame, WriteMode::Replace)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    wh.close().await;
}

/// A univariate hourly job over `observations`.
fn observations_job(db: &Db, extra_forecast: &str) -> std::path::PathBuf {
    let sql = sql_file(
        db,
        "observations.sql",
        "SELECT series_id, ts, value FROM observations WHERE ts <= :as_of",
    );
    let text = format!(
        r#"
[job]
name = "obs"
kind = "forecast"
warehouse = "{url}"
[input]
train_sql = "{sql}"
key = "series_id"
time = "ts"
target = "value"
min_rows = 10
[input.columns]
series_id = "text"
ts = "timestamp"
value = "float"
[forecast]
horizon = 24
lags = [1, 2, 3, 24, 168]
rolling = [24]
min_history = 336
{extra_forecast}
[model]
task = "regression"
algorithm = "gbdt"
[gate]
must_beat = ["baseline"]
[output]
table = "obs_forecasts"
"#,
        url = db.url
    );
    let path = db.dir.path().join("obs.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs the job at `cfg` as of `end`, which must succeed.
fn run_obs(
    db: &Db,
    cfg: &std::path::Path,
    end: chrono::DateTime<chrono::Utc>,
) -> std::process::Output {
    let as_of = end.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let o = prescore(
        &["run", "--config", cfg.to_str().unwrap(), "--as-of", &as_of],
        &[],
    );
    assert!(o.status.success(), "{}: {}", db.name, text(&o));
    o
}

/// A deterministic pseudo-random number in [-0.5, 0.5) from a seed and an index.
fn noise(seed: u64, i: usize) -> f64 {
    let mut x =
        seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (i as u64).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 31;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 29;
    (x % 10_000) as f64 / 10_000.0 - 0.5
}

#[tokio::test(flavor = "multi_thread")]
async fn selection_picks_the_method_that_is_best_for_each_series() {
    for db in backends("selection") {
        let end = chrono::Utc::now()
            .duration_trunc(chrono::Duration::hours(1))
            .unwrap()
            - chrono::Duration::hours(1);
        let n = 24 * 42;
        // The same day every day: yesterday at this hour is exact.
        let periodic = |phase: f64| -> Vec<Option<f64>> {
            (0..n)
                .map(|i| {
                    Some(
                        10.0 + 5.0 * ((i % 24) as f64 / 24.0 * std::f64::consts::TAU + phase).sin(),
                    )
                })
                .collect()
        };
        // A slow random walk without any daily shape: the last hours say most, yesterday little.
        let walk = |seed: u64| -> Vec<Option<f64>> {
            let mut v = 100.0;
            (0..n)
                .map(|i| {
                    v += 2.0 * noise(seed, i) + 0.3 * (i as f64 / 37.0).sin();
                    Some(v)
                })
                .collect()
        };
        observations(
            &db,
            &[
                ("periodic_a", periodic(0.0)),
                ("periodic_b", periodic(1.0)),
                ("walk_a", walk(1)),
                ("walk_b", walk(2)),
                ("walk_c", walk(3)),
            ],
            end,
        )
        .await;
        // Without the envelope, which would make the model exact on the periodic series too
        // (it clamps a forecast to a range of one value there) and so keep the job's method.
        let cfg = observations_job(&db, "envelope = false");
        run_obs(&db, &cfg, end);
        let methods = rows(
            &db,
            "SELECT series_id, MIN(method), MAX(method) FROM obs_forecasts GROUP BY series_id ORDER BY series_id",
        )
        .await;
        for r in &methods {
            assert_eq!(r[1], r[2], "{}: one method per series: {r:?}", db.name);
            let want_naive = r[0].starts_with("periodic");
            assert_eq!(
                r[1] == "naive24",
                want_naive,
                "{}: {} got {}",
                db.name,
                r[0],
                r[1]
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn short_gappy_and_stale_series_still_get_the_best_forecast_available() {
    for db in backends("fallbacks") {
        let end = chrono::Utc::now()
            .duration_trunc(chrono::Duration::hours(1))
            .unwrap()
            - chrono::Duration::hours(1);
        let daily =
            |i: usize, seed: u64| 20.0 + 8.0 * ((i % 24) as f64 / 3.8).sin() + noise(seed, i);
        let n = 24 * 30;
        let good: Vec<Option<f64>> = (0..n).map(|i| Some(daily(i, 1))).collect();
        // A 60-hour hole in the middle: the history before it still counts.
        let gappy: Vec<Option<f64>> = (0..n)
            .map(|i| (!(300..360).contains(&i)).then(|| daily(i, 2)))
            .collect();
        // 100 hours: too short for the model (min_history 336), long enough for yesterday.
        let short: Vec<Option<f64>> = (0..n)
            .map(|i| (i >= n - 100).then(|| daily(i, 3)))
            .collect();
        // Stopped 10 hours ago: within max_stale (24), forecast from its end.
        let stale: Vec<Option<f64>> = (0..n).map(|i| (i < n - 10).then(|| daily(i, 4))).collect();
        // Stopped three days ago, and one with 10 hours in all: nothing usable.
        let dead: Vec<Option<f64>> = (0..n).map(|i| (i < n - 72).then(|| daily(i, 5))).collect();
        let tiny: Vec<Option<f64>> = (0..n).map(|i| (i >= n - 10).then(|| daily(i, 6))).collect();
        observations(
            &db,
            &[
                ("good", good),
                ("gappy", gappy),
                ("short", short),
                ("stale", stale),
                ("dead", dead),
                ("tiny", tiny),
            ],
            end,
        )
        .await;
        let cfg = observations_job(&db, "");
        let o = run_obs(&db, &cfg, end);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains("skipped           2"), "{}: {out}", db.name);
        let got = rows(
            &db,
            "SELECT series_id, COUNT(*), MIN(method), MAX(method), MIN(yhat_hi - yhat_lo) FROM obs_forecasts GROUP BY series_id ORDER BY series_id",
        )
        .await;
        let names: Vec<&str> = got.iter().map(|r| r[0].as_str()).collect();
        assert_eq!(names, ["gappy", "good", "short", "stale"], "{}", db.name);
        for r in &got {
            assert_eq!(r[1], "24", "{}: {r:?}", db.name);
            let width: f64 = r[4].parse().unwrap();
            assert!(width > 0.0, "{}: an interval for every row: {r:?}", db.name);
        }
        let short = got.iter().find(|r| r[0] == "short").unwrap();
        assert_eq!(
            (short[2].as_str(), short[3].as_str()),
            ("naive24", "naive24"),
            "{}",
            db.name
        );
        // Counted in the ledger's metrics too.
        let m = rows(
            &db,
            "SELECT value FROM prescore_metrics WHERE name = 'series_skipped'",
        )
        .await;
        assert_eq!(m[0][0].parse::<f64>().unwrap(), 2.0, "{}", db.name);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_weather_job_passes_its_gate_on_every_seed() {
    for s in ["1", "2", "3", "4", "5"] {
        let db = sqlite();
        seed(
            &db,
            &[
                "--customers",
                "100",
                "--meters",
                "10",
                "--days",
                "42",
                "--seed",
                s,
            ],
        );
        let cfg = config(&db, "configs/weather_hourly.toml", &[]);
        let o = prescore(&["run", "--config", cfg.to_str().unwrap()], &[]);
        assert!(o.status.success(), "seed {s}: {}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("gate: passed"),
            "seed {s}: {}",
            text(&o)
        );
    }
}

/// The ensemble (`forecast.ensemble`): when the mean of the recursive and the direct model wins
/// the backtest, each series is forecast with exactly the mean of the two models, each the same
/// fit as the strategy trained alone; and a later run that loads the champion forecasts the
/// same. The data and the as-of time are fixed, so the backtest's choice is too.
#[tokio::test(flavor = "multi_thread")]
async fn seasonal_means_are_used_when_the_days_repeat_and_not_when_the_level_wanders() {
    let end = chrono::DateTime::parse_from_rfc3339("2026-01-07T23:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let n = 24 * 42;
    let daily = |i: usize| ((i % 24) as f64 / 24.0 * std::f64::consts::TAU).sin();
    // Footfall-like: the same daily profile every day, with independent noise.
    let routine = |seed: u64| -> Vec<Option<f64>> {
        (0..n)
            .map(|i| Some(50.0 + 20.0 * daily(i) + 8.0 * noise(seed, i)))
            .collect()
    };
    // Temperature-like: the same daily cycle on a level that wanders from day to day.
    let wandering = |seed: u64| -> Vec<Option<f64>> {
        let mut level = 10.0;
        (0..n)
            .map(|i| {
                if i % 24 == 0 {
                    level += 6.0 * noise(seed, i);
                }
                Some(level + 5.0 * daily(i))
            })
            .collect()
    };
    let cases = [
        ("routine", (1..=4).map(routine).collect::<Vec<_>>(), true),
        ("wandering", (1..=4).map(wandering).collect(), false),
    ];
    for (kind, values, wanted) in cases {
        let db = sqlite();
        let names: Vec<String> = (0..values.len()).map(|k| format!("{kind}{k}")).collect();
        let data: Vec<(&str, Vec<Option<f64>>)> =
            names.iter().map(String::as_str).zip(values).collect();
        observations(&db, &data, end).await;
        // No seasonal_rolling in the config: the default, "auto".
        let cfg = observations_job(&db, "");
        let as_of = end.format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let o = prescore(
            &["run", "--config", cfg.to_str().unwrap(), "--as-of", &as_of],
            &[],
        );
        assert!(o.status.success(), "{kind}: {}", text(&o));
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        assert_eq!(
            out.contains("with seasonal means over 3 and 7 days"),
            wanted,
            "{kind}: {out}"
        );
        // The model stores what it reads: its features name the means, or do not.
        let features = rows(
            &db,
            "SELECT features FROM prescore_models WHERE job = 'obs'",
        )
        .await;
        assert_eq!(
            features[0][0].contains("\"seasonal\":[3,7]"),
            wanted,
            "{kind}: {}",
            features[0][0]
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_series_that_is_zero_every_night_is_forecast_zero_at_night() {
    for db in backends("envelope") {
        let end = chrono::DateTime::parse_from_rfc3339("2026-01-07T23:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        // Sunshine: 0 from 18:00 to 06:00, by day a bell whose height the clouds change.
        let sun = |seed: u64| -> Vec<Option<f64>> {
            (0..24 * 42)
                .map(|i| {
                    let hour = (i % 24) as f64;
                    let bell = ((hour - 6.0) / 12.0 * std::f64::consts::PI).sin();
                    let clouds = 0.6 + 0.8 * noise(seed, i / 24);
                    Some(if (6.0..=18.0).contains(&hour) {
                        (500.0 * bell * clouds).max(0.0)
                    } else {
                        0.0
                    })
                })
                .collect()
        };
        observations(&db, &[("north", sun(1)), ("south", sun(2))], end).await;
        let cfg = observations_job(&db, "");
        run_obs(&db, &cfg, end);
        // The forecast starts at midnight: steps 1 to 6 and 20 to 24 are night.
        let night = rows(
            &db,
            "SELECT series_id, horizon, yhat FROM obs_forecasts \
             WHERE horizon <= 6 OR horizon >= 20 ORDER BY series_id, horizon",
        )
        .await;
        assert_eq!(night.len(), 2 * 11, "{}", db.name);
        for r in &night {
            assert_eq!(r[2].parse::<f64>().unwrap(), 0.0, "{}: {r:?}", db.name);
        }
        let noon = rows(
            &db,
            "SELECT MIN(yhat) FROM obs_forecasts WHERE horizon = 13",
        )
        .await;
        assert!(
            noon[0][0].parse::<f64>().unwrap() > 100.0,
            "{}: {noon:?}",
            db.name
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ensemble_forecasts_the_mean_of_its_two_models() {
    let db = sqlite();
    let end = chrono::DateTime::parse_from_rfc3339("2026-01-07T23:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let n = 24 * 42;
    // A daily cycle on a slow random walk, with noise: neither strategy is exact.
    let series = |seed: u64| -> Vec<Option<f64>> {
        let mut level = 50.0;
        (0..n)
            .map(|i| {
                level += 0.8 * noise(seed, i);
                let day = (i % 24) as f64 / 24.0 * std::f64::consts::TAU;
                Some(level + 6.0 * day.sin() + 2.0 * noise(seed + 100, i))
            })
            .collect()
    };
    let names: Vec<String> = (0..8).map(|k| format!("s{k}")).collect();
    let data: Vec<(&str, Vec<Option<f64>>)> = (names.iter().enumerate())
        .map(|(k, name)| (name.as_str(), series(k as u64 + 1)))
        .collect();
    observations(&db, &data, end).await;
    let as_of = end.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    // Each strategy alone (on levels), then both with the ensemble allowed; every series
    // publishes the model, so that the runs can be compared.
    let run = |name: &str, strategy: &str| {
        // Without the envelope: the test is about the mean of the two models.
        let extra = format!("difference = 0\nstrategy = \"{strategy}\"\nenvelope = false");
        let cfg = observations_job(&db, &extra);
        let toml = std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("name = \"obs\"", &format!("name = \"{name}\""))
            .replace(
                "table = \"obs_forecasts\"",
                &format!("table = \"f_{name}\""),
            )
            .replace(
                "algorithm = \"gbdt\"",
                "algorithm = \"gbdt\"\ncandidates = [\"model\"]",
            )
            .replace("must_beat = [\"baseline\"]", "must_beat = []");
        let cfg = db.dir.path().join(format!("{name}.toml"));
        std::fs::write(&cfg, toml).unwrap();
        let o = prescore(
            &["run", "--config", cfg.to_str().unwrap(), "--as-of", &as_of],
            &[],
        );
        assert!(o.status.success(), "{name}: {}", text(&o));
        (cfg, String::from_utf8_lossy(&o.stdout).to_string())
    };
    run("rec", "recursive");
    run("dir", "direct");
    let (cfg, out) = run("both", "auto");
    assert!(out.contains("model the mean of"), "the ensemble won: {out}");

    let compare = "SELECT b.series_id, b.horizon, b.method, b.yhat, r.yhat, d.yhat \
         FROM f_both b JOIN f_rec r USING (series_id, horizon) JOIN f_dir d USING (series_id, horizon) \
         ORDER BY b.series_id, b.horizon";
    let rows_of = |r: Vec<Vec<String>>| -> Vec<(String, f64, f64, f64)> {
        r.into_iter()
            .map(|r| {
                (
                    r[2].clone(),
                    r[3].parse().unwrap(),
                    r[4].parse().unwrap(),
                    r[5].parse().unwrap(),
                )
            })
            .collect()
    };
    let published = rows_of(rows(&db, compare).await);
    let ensemble: Vec<_> = published.iter().filter(|r| r.0 == "ensemble").collect();
    assert_eq!(
        ensemble.len(),
        published.len(),
        "every series: {published:?}"
    );
    for (_, both, rec, dir) in &ensemble {
        let mean = 0.5 * (rec + dir);
        assert!(
            (both - mean).abs() <= 1e-9 * mean.abs().max(1.0),
            "ensemble {both} vs mean of {rec} and {dir}"
        );
    }
    // The two models really differ: the mean is not just one of them.
    assert!(ensemble
        .iter()
        .any(|(_, _, rec, dir)| (rec - dir).abs() > 1e-3));
    // The registry's importances are both models': each feature's mean share over the two
    // solo models (the direct model's step counts as 0 in the recursive one).
    let stored = rows(&db, "SELECT job, importances FROM prescore_models").await;
    let importances = |job: &str| -> Vec<(String, f64)> {
        let r = stored.iter().find(|r| r[0] == job).unwrap();
        serde_json::from_str(&r[1]).unwrap()
    };
    let (both, rec, dir) = (importances("both"), importances("rec"), importances("dir"));
    let share = |v: &[(String, f64)], name: &str| {
        v.iter().find(|(n, _)| n == name).map_or(0.0, |(_, s)| *s)
    };
    assert_eq!(
        both.len(),
        dir.len(),
        "every feature of either model: {both:?}"
    );
    for (name, s) in &both {
        let want = 0.5 * (share(&rec, name) + share(&dir, name));
        assert!((s - want).abs() < 1e-9, "{name}: {s} vs {want}");
    }
    assert!(share(&both, "step_ahead") > 0.0 && share(&rec, "step_ahead") == 0.0);

    // Scoring with the stored champion (no training) gives the same forecasts.
    let before: Vec<String> = rows(&db, "SELECT yhat FROM f_both ORDER BY series_id, horizon")
        .await
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    let o = prescore(
        &[
            "score",
            "--config",
            cfg.to_str().unwrap(),
            "--as-of",
            &as_of,
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    let after: Vec<String> = rows(&db, "SELECT yhat FROM f_both ORDER BY series_id, horizon")
        .await
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(
        before, after,
        "the loaded ensemble forecasts as the trained one did"
    );
}
