//! Forecast jobs: one row per series and target hour, intervals around the point forecast,
//! a model that beats seasonal naive on a fixed seeded dataset, reruns that replace their
//! rows, and later runs that overwrite overlapping target times.

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
