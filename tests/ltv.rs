//! The customer-lifetime-value job (`configs/ltv_daily.toml`) on the demo's billing history:
//! it beats the mean, its training SQL reads no label that was not known at `as_of`, its
//! prediction interval covers what it says on holdout rows it was not calibrated on, and the
//! `customer_value` view joins it with the churn scores, one row per customer.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use chrono::{DateTime, Duration, Months, Utc};
use prescore::warehouse::Value;

use crate::support::*;

const LTV: &str = "configs/ltv_daily.toml";
const CHURN: &str = "configs/churn_daily.toml";
/// Small enough for CI; the LTV run takes about a second on it.
const CUSTOMERS: usize = 2000;

/// Seeds the demo data, runs the LTV job, and returns its config.
fn seed_and_run_ltv(db: &Db) -> std::path::PathBuf {
    seed_churn(db, CUSTOMERS);
    let cfg = config(db, LTV, &[]);
    let o = prescore(&["run", "--config", cfg.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}: {}", db.name, text(&o));
    cfg
}

/// A JSON object column of the LTV model's registry row, by version.
async fn model_json(db: &Db, column: &str, version: i64) -> serde_json::Value {
    let r = rows(
        db,
        &format!(
            "SELECT {column} FROM prescore_models WHERE job = 'ltv_daily' AND version = {version}"
        ),
    )
    .await;
    serde_json::from_str(&r[0][0]).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn ltv_beats_the_mean_baseline_by_a_clear_margin() {
    for db in backends("ltv_beats_mean") {
        seed_and_run_ltv(&db);
        let metrics = model_json(&db, "metrics", 1).await;
        let baseline = model_json(&db, "baseline", 1).await;
        let (mae, mean_mae) = (
            metrics["mae"].as_f64().unwrap(),
            baseline["mae"].as_f64().unwrap(),
        );
        // Next year's revenue is mostly this month's bill times the months a customer stays,
        // which the features show, while the mean knows neither: asserted, a 40% cut of the
        // mean's error; measured, 70% on this data (MAE 173 vs 576), and at least 50% over
        // seeds 7 to 11 at 2,000 and 4,000 customers (the data is seeded: this is no dice roll).
        assert!(
            mae <= 0.6 * mean_mae,
            "{}: mae {mae} vs the mean's {mean_mae}",
            db.name
        );
        assert!(
            metrics["r2"].as_f64().unwrap() > 0.5,
            "{}: {metrics}",
            db.name
        );

        // Every customer billed in the latest month gets one prediction, none negative
        // (output.min_score).
        let billed = rows(
            &db,
            "SELECT COUNT(*) FROM customer_revenue \
             WHERE period_end = (SELECT MAX(period_end) FROM customer_revenue)",
        )
        .await[0][0]
            .clone();
        assert_eq!(
            count(&db, "ltv_scores").await.to_string(),
            billed,
            "{}",
            db.name
        );
        let bad = rows(
            &db,
            "SELECT COUNT(*) FROM ltv_scores WHERE score IS NULL OR score < 0 OR score_lo < 0 \
             OR score_lo > score OR score_hi < score",
        )
        .await;
        assert_eq!(bad[0][0], "0", "{}", db.name);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ltv_interval_coverage_is_measured_on_holdout_rows_it_was_not_calibrated_on() {
    for db in backends("ltv_coverage") {
        let cfg = seed_and_run_ltv(&db);
        // The half-width comes from one half of the holdout (split by customer) and the
        // coverage from the other half (about 2,300 rows each), so it is an honest estimate:
        // 82.4% on this data, and 78.3% to 82.4% over seeds 7 to 11 at 2,000 and 4,000
        // customers.
        let metrics = model_json(&db, "metrics", 1).await;
        let coverage = metrics["coverage"].as_f64().unwrap();
        assert!(
            (0.75..=0.85).contains(&coverage),
            "{}: coverage {coverage} for nominal 0.8",
            db.name
        );
        let ledger = rows(
            &db,
            "SELECT value FROM prescore_metrics WHERE name = 'holdout_coverage'",
        )
        .await;
        assert_eq!(ledger.len(), 1, "{}", db.name);
        assert!((ledger[0][0].parse::<f64>().unwrap() - coverage).abs() < 1e-9);

        // The interval is stored with the model: score ± its half-width, floored at 0.
        let schema = model_json(&db, "features", 1).await;
        let half = schema["interval"]["half_width"].as_f64().unwrap();
        assert_eq!(schema["interval"]["coverage"].as_f64(), Some(0.8));
        let published = rows(
            &db,
            "SELECT customer_id, score, score_lo, score_hi FROM ltv_scores ORDER BY customer_id",
        )
        .await;
        for r in &published {
            let [score, lo, hi] = [1, 2, 3].map(|i| r[i].parse::<f64>().unwrap());
            assert!((hi - score - half).abs() < 1e-6, "{}: {r:?}", db.name);
            assert!(
                (lo - (score - half).max(0.0)).abs() < 1e-6,
                "{}: {r:?}",
                db.name
            );
        }

        // A run that loads the champion writes the same bounds.
        let o = prescore(&["score", "--config", cfg.to_str().unwrap()], &[]);
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
        let again = rows(
            &db,
            "SELECT customer_id, score, score_lo, score_hi FROM ltv_scores ORDER BY customer_id",
        )
        .await;
        assert_eq!(again, published, "{}", db.name);
    }
}

/// The first day of the month `months` after `t` (a month start).
fn months_after(t: DateTime<Utc>, months: u32) -> DateTime<Utc> {
    t.checked_add_months(Months::new(months)).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn ltv_training_reads_no_label_that_was_not_known_at_as_of() {
    for db in backends("ltv_leakage") {
        seed_churn(&db, 1000);
        let cfg = config(&db, LTV, &[]);
        let job = prescore::config::load(&cfg).unwrap();
        let wh = connect(&db).await;
        let latest = wh
            .fetch("SELECT MAX(period_end) FROM customer_revenue", &[])
            .await
            .unwrap()[0][0]
            .as_ts()
            .unwrap();
        // Four months back, in the middle of a month: that month's bills are known, the next
        // four months' are not.
        let known = latest.checked_sub_months(Months::new(4)).unwrap();
        let as_of = known + Duration::days(10);
        let params = prescore::pipeline::read::params(as_of, prescore::pipeline::Shard::ALL);
        let train_sql = &job.input.train_sql.text;
        let before = wh
            .read_frame(train_sql, "train.sql", &params, &job.input.columns)
            .await
            .unwrap();
        let times = before
            .column("period_end")
            .unwrap()
            .datetime()
            .unwrap()
            .physical()
            .clone();
        let last_trained = DateTime::from_timestamp_micros(
            (0..times.len()).filter_map(|i| times.get(i)).max().unwrap(),
        )
        .unwrap();
        // The latest labelled month-end is the one whose 12 months end with the latest known.
        assert_eq!(
            last_trained,
            known.checked_sub_months(Months::new(12)).unwrap(),
            "{}",
            db.name
        );
        assert!(months_after(last_trained, 12) <= as_of, "{}", db.name);

        // Each label is the next 12 months' bills known at as_of (0 after a customer left).
        let bills: HashMap<(i64, DateTime<Utc>), f64> = wh
            .fetch(
                "SELECT customer_id, period_end, monthly_revenue FROM customer_revenue \
                 WHERE period_end <= $1",
                &[Value::Ts(Some(as_of))],
            )
            .await
            .unwrap()
            .into_iter()
            .map(|r| {
                (
                    (r[0].as_i64().unwrap(), r[1].as_ts().unwrap()),
                    r[2].as_f64().unwrap(),
                )
            })
            .collect();
        let ids = before.column("customer_id").unwrap().i64().unwrap();
        let labels = before.column("revenue_next_12m").unwrap().f64().unwrap();
        for r in 0..before.height() {
            let (id, t) = (
                ids.get(r).unwrap(),
                DateTime::from_timestamp_micros(times.get(r).unwrap()).unwrap(),
            );
            let want: f64 = (1..=12)
                .filter_map(|k| bills.get(&(id, months_after(t, k))))
                .sum();
            let got = labels.get(r).unwrap();
            assert!(
                (got - want).abs() < 1e-6 * want.max(1.0),
                "{}: customer {id} at {t}: label {got}, bills say {want}",
                db.name
            );
        }

        // Later bills changed or gone: not one label or feature moves.
        wh.execute(
            "UPDATE customer_revenue SET monthly_revenue = monthly_revenue * 100 + 5000 \
             WHERE period_end > $1",
            &[Value::Ts(Some(as_of))],
        )
        .await
        .unwrap();
        wh.execute(
            "DELETE FROM customer_revenue WHERE period_end > $1 AND customer_id % 3 = 0",
            &[Value::Ts(Some(as_of))],
        )
        .await
        .unwrap();
        let after = wh
            .read_frame(train_sql, "train.sql", &params, &job.input.columns)
            .await
            .unwrap();
        assert!(before.equals_missing(&after), "{}", db.name);
        wh.close().await;

        // The pipeline trains on that window: the registry records it.
        let stamp = as_of.format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let o = prescore(
            &[
                "train",
                "--config",
                cfg.to_str().unwrap(),
                "--as-of",
                &stamp,
            ],
            &[],
        );
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
        let window = rows(
            &db,
            "SELECT train_to FROM prescore_models WHERE job = 'ltv_daily'",
        )
        .await;
        assert_eq!(
            window[0][0],
            last_trained.format("%Y-%m-%d %H:%M:%S").to_string(),
            "{}",
            db.name
        );
    }
}

/// Runs the churn and LTV jobs on `db` and creates the view there.
async fn churn_ltv_and_view(db: &Db) {
    for job in [CHURN, LTV] {
        let cfg = config(db, job, &[]);
        let o = prescore(&["run", "--config", cfg.to_str().unwrap()], &[]);
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
    }
    let wh = connect(db).await;
    prescore::demo::create_customer_value(&wh, Path::new(ROOT))
        .await
        .unwrap();
    wh.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn customer_value_has_one_row_per_customer_with_the_champions_versions() {
    for db in backends("customer_value") {
        seed_churn(&db, CUSTOMERS);
        churn_ltv_and_view(&db).await;
        // Twice: the file replaces the view.
        churn_ltv_and_view(&db).await;
        let active = rows(
            &db,
            "SELECT COUNT(*) FROM customer_months WHERE churned IS NULL",
        )
        .await[0][0]
            .clone();
        let view = rows(
            &db,
            "SELECT COUNT(*), COUNT(DISTINCT customer_id) FROM customer_value",
        )
        .await;
        assert_eq!(view[0], vec![active.clone(), active], "{}", db.name);
        let versions = rows(
            &db,
            "SELECT DISTINCT churn_model_version, ltv_model_version FROM customer_value",
        )
        .await;
        let champions = rows(
            &db,
            "SELECT (SELECT version FROM prescore_models WHERE job = 'churn_daily' AND status = 'champion'), \
                    (SELECT version FROM prescore_models WHERE job = 'ltv_daily' AND status = 'champion')",
        )
        .await;
        assert_eq!(versions, champions, "{}", db.name);
        assert_eq!(champions[0], vec!["2".to_string(), "2".to_string()]);
        let wrong = rows(
            &db,
            "SELECT COUNT(*) FROM customer_value \
             WHERE ABS(expected_value - ltv * (1 - churn_probability)) > 1e-6 \
                OR ABS(value_at_risk - ltv * churn_probability) > 1e-6 \
                OR churn_probability < 0 OR churn_probability > 1 OR ltv_lo > ltv OR ltv_hi < ltv",
        )
        .await;
        assert_eq!(wrong[0][0], "0", "{}", db.name);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn customer_value_is_readable_by_the_reader_role() {
    let Some(db) = postgres("customer_value_roles") else {
        return;
    };
    seed_churn(&db, 800);
    let suffix = db.url.rsplit('_').next().unwrap().to_string();
    let (job_role, reader_role) = (format!("pvj_{suffix}"), format!("pvr_{suffix}"));
    let sql = std::fs::read_to_string(format!("{ROOT}/sql/roles.sql"))
        .unwrap()
        .replace("prescore_job", &job_role)
        .replace("prescore_reader", &reader_role);
    let roles_file = sql_file(&db, "roles.sql", &sql);
    let psql =
        |url: &str, args: &[&str]| Command::new("psql").arg(url).args(args).output().unwrap();
    let o = psql(
        &db.url,
        &[
            "-v",
            "ON_ERROR_STOP=1",
            "-v",
            "job_password='x'",
            "-v",
            "reader_password='y'",
            "-f",
            &roles_file,
        ],
    );
    assert!(o.status.success(), "roles.sql failed: {}", text(&o));
    let host_db = db.url.split_once('@').unwrap().1.to_string();
    let job_db = Db::borrowed(&db, &format!("postgres://{job_role}:x@{host_db}"));
    let reader_url = format!("postgres://{reader_role}:y@{host_db}");

    // The job's role runs both jobs and creates the view (all in its schema); the reader
    // reads the view and may not change it.
    churn_ltv_and_view(&job_db).await;
    let o = psql(
        &reader_url,
        &["-Atc", "SELECT count(*) FROM prescore.customer_value"],
    );
    let n = String::from_utf8_lossy(&o.stdout).trim().parse::<i64>();
    assert!(o.status.success() && n.unwrap_or(0) > 0, "{}", text(&o));
    let o = psql(&reader_url, &["-c", "DROP VIEW prescore.customer_value"]);
    assert!(!o.status.success(), "{}", text(&o));

    drop(job_db);
    drop(db);
    let admin_url = std::env::var("PRESCORE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let _ = psql(
        &admin_url,
        &[
            "-c",
            &format!("DROP ROLE IF EXISTS {job_role}; DROP ROLE IF EXISTS {reader_role}"),
        ],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_regression_results_table_from_before_intervals_gets_its_bound_columns() {
    for db in backends("ltv_old_table") {
        seed_churn(&db, 600);
        let wh = connect(&db).await;
        let ts = match db.name {
            "sqlite" => "TEXT",
            _ => "TIMESTAMPTZ",
        };
        wh.execute(
            &format!(
                "CREATE TABLE ltv_scores (customer_id BIGINT PRIMARY KEY, score DOUBLE PRECISION, \
                 model_version BIGINT, run_id TEXT, as_of {ts}, scored_at {ts})"
            ),
            &[],
        )
        .await
        .unwrap();
        wh.close().await;
        let cfg = config(&db, LTV, &[]);
        let o = prescore(&["run", "--config", cfg.to_str().unwrap()], &[]);
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
        let missing = rows(
            &db,
            "SELECT COUNT(*) FROM ltv_scores WHERE score_lo IS NULL OR score_hi IS NULL",
        )
        .await;
        assert_eq!(missing[0][0], "0", "{}", db.name);
        assert!(count(&db, "ltv_scores").await > 0);
    }
}
