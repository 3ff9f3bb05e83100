//! Operating a job over time: the model history records every registry change in order and
//! `models rollback` restores the model that served before the champion; the metrics file
//! for Prometheus is written after every run, failed ones too; a terminal sees a spinner per
//! stage, and a pipe (cron) nothing extra.

use crate::support::*;

const CHURN: &str = "configs/churn_daily.toml";
const ENERGY: &str = "configs/energy_hourly.toml";

async fn events(db: &Db) -> Vec<Vec<String>> {
    rows(
        db,
        "SELECT version, event, command, CASE WHEN run_id IS NULL THEN 'hand' ELSE 'run' END \
         FROM prescore_model_events WHERE job = 'churn_daily' ORDER BY id",
    )
    .await
}

fn ev(version: i64, event: &str, command: &str, by: &str) -> Vec<String> {
    vec![version.to_string(), event.into(), command.into(), by.into()]
}

#[tokio::test(flavor = "multi_thread")]
async fn rollback_restores_the_model_that_served_before_and_the_history_says_so() {
    for db in backends("modelevents") {
        seed_churn(&db, 1500);
        let cfg = config(&db, CHURN, &[]);
        let c = cfg.to_str().unwrap();
        let waiting = config(
            &db,
            CHURN,
            &[("[gate]\n", "[gate]\nauto_promote = false\n")],
        );
        for (file, expect) in [(c, "v1"), (c, "v2"), (waiting.to_str().unwrap(), "v3")] {
            let o = prescore(&["train", "--config", file], &[]);
            assert!(o.status.success(), "{} {expect}: {}", db.name, text(&o));
        }
        let o = prescore(&["models", "promote", "3", "--config", c], &[]);
        assert!(o.status.success(), "{}: {}", db.name, text(&o));

        let o = prescore(&["models", "rollback", "--config", c], &[]);
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
        assert!(text(&o).contains("from v3 to v2"), "{}", text(&o));
        let champion = rows(
            &db,
            "SELECT version FROM prescore_models WHERE status = 'champion'",
        )
        .await;
        assert_eq!(champion, vec![vec!["2".to_string()]], "{}", db.name);

        let mut expected = vec![
            ev(1, "trained", "train", "run"),
            ev(1, "promoted", "train", "run"),
            ev(2, "trained", "train", "run"),
            ev(1, "retired", "train", "run"),
            ev(2, "promoted", "train", "run"),
            ev(3, "trained", "train", "run"),
            ev(2, "retired", "models promote", "hand"),
            ev(3, "promoted", "models promote", "hand"),
            ev(3, "rolled_back", "models rollback", "hand"),
            ev(2, "promoted", "models rollback", "hand"),
        ];
        assert_eq!(events(&db).await, expected, "{}", db.name);

        // A second rollback goes on to v1, never back to v3.
        let o = prescore(&["models", "rollback", "--config", c], &[]);
        assert!(text(&o).contains("from v2 to v1"), "{}", text(&o));
        expected.extend([
            ev(2, "rolled_back", "models rollback", "hand"),
            ev(1, "promoted", "models rollback", "hand"),
        ]);
        assert_eq!(events(&db).await, expected, "{}", db.name);
        let o = prescore(&["models", "rollback", "--config", c], &[]);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(text(&o).contains("no earlier model"), "{}", text(&o));

        let o = prescore(&["models", "show", "2", "--config", c], &[]);
        let shown = String::from_utf8_lossy(&o.stdout);
        let order: Vec<usize> = ["trained", "promoted", "retired", "promoted", "rolled_back"]
            .iter()
            .scan(0, |from, word| {
                let at = shown[*from..].find(word).map(|i| i + *from)?;
                *from = at + word.len();
                Some(at)
            })
            .collect();
        assert_eq!(order.len(), 5, "history of v2 out of order:\n{shown}");
        assert!(shown.contains("rolled back to v1"), "{shown}");
    }
}

/// The value of one series (name with its labels, as written) in a metrics file.
fn metric(file: &str, series: &str) -> Option<f64> {
    file.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_metrics_file_is_written_after_every_run_failed_and_gated_ones_too() {
    for db in backends("metricsfile") {
        seed_churn(&db, 1500);
        let prom = db.dir.path().join("prescore_churn.prom");
        let p = prom.to_str().unwrap();
        let good = config(&db, CHURN, &[]);
        let o = prescore(
            &[
                "run",
                "--config",
                good.to_str().unwrap(),
                "--metrics-file",
                p,
            ],
            &[],
        );
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
        let file = std::fs::read_to_string(&prom).unwrap();
        let job = "job=\"churn_daily\"";
        let status = |s: &str| format!("prescore_run_status{{{job},status=\"{s}\"}}");
        let success = format!("prescore_last_success_timestamp_seconds{{{job}}}");
        assert_eq!(metric(&file, &status("succeeded")), Some(1.0), "{file}");
        assert!(
            metric(&file, &format!("prescore_rows{{{job},kind=\"read\"}}")) > Some(0.0),
            "{file}"
        );
        assert!(
            metric(
                &file,
                &format!("prescore_stage_seconds{{{job},stage=\"publish\"}}")
            )
            .is_some(),
            "{file}"
        );
        assert_eq!(
            metric(&file, &format!("prescore_gate_passed{{{job}}}")),
            Some(1.0),
            "{file}"
        );
        assert!(
            file.contains("# TYPE prescore_run_status gauge\n"),
            "{file}"
        );
        let succeeded_at = metric(&file, &success).unwrap();
        assert!(succeeded_at > 1.7e9, "{file}");

        // A broken contract (the scoring SQL lost a column): exit 3, a file all the same, and
        // the last success carried over from the file it replaces.
        let missing = sql_file(
            &db,
            "score.sql",
            "SELECT customer_id, plan, region FROM customer_months",
        );
        let broken = config(
            &db,
            CHURN,
            &[(&format!("{ROOT}/sql/churn_daily/score.sql"), &missing)],
        );
        let b = broken.to_str().unwrap();
        let o = prescore(&["score", "--config", b, "--metrics-file", p], &[]);
        assert_eq!(o.status.code(), Some(3), "{}: {}", db.name, text(&o));
        let file = std::fs::read_to_string(&prom).unwrap();
        assert_eq!(metric(&file, &status("failed")), Some(1.0), "{file}");
        assert_eq!(metric(&file, &status("succeeded")), Some(0.0), "{file}");
        assert_eq!(
            metric(&file, &format!("prescore_run_exit_code{{{job}}}")),
            Some(3.0),
            "{file}"
        );
        assert_eq!(metric(&file, &success), Some(succeeded_at), "{file}");

        // Without the old file the ledger still knows when the job last succeeded.
        std::fs::remove_file(&prom).unwrap();
        let o = prescore(&["score", "--config", b, "--metrics-file", p], &[]);
        assert_eq!(o.status.code(), Some(3), "{}", text(&o));
        let file = std::fs::read_to_string(&prom).unwrap();
        let from_ledger = metric(&file, &success).unwrap();
        assert!(from_ledger > 1.7e9 && from_ledger <= succeeded_at, "{file}");

        // A config that does not load (exit 2) reports the job the old file names.
        let bad = db.dir.path().join("bad.toml");
        std::fs::write(&bad, "[job]\nname = 1\n").unwrap();
        let o = prescore(
            &[
                "run",
                "--config",
                bad.to_str().unwrap(),
                "--metrics-file",
                p,
            ],
            &[],
        );
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        let file = std::fs::read_to_string(&prom).unwrap();
        assert_eq!(metric(&file, &status("failed")), Some(1.0), "{file}");
        assert_eq!(
            metric(&file, &format!("prescore_run_exit_code{{{job}}}")),
            Some(2.0),
            "{file}"
        );
        assert_eq!(metric(&file, &success), Some(from_ledger), "{file}");

        // A gated run says so, with the gate's verdict.
        let strict = config(
            &db,
            CHURN,
            &[("require = [\"auc >= 0.6\"]", "require = [\"auc >= 0.999\"]")],
        );
        let o = prescore(
            &[
                "run",
                "--config",
                strict.to_str().unwrap(),
                "--metrics-file",
                p,
            ],
            &[],
        );
        assert_eq!(o.status.code(), Some(4), "{}", text(&o));
        let file = std::fs::read_to_string(&prom).unwrap();
        assert_eq!(metric(&file, &status("gated")), Some(1.0), "{file}");
        assert_eq!(
            metric(&file, &format!("prescore_gate_passed{{{job}}}")),
            Some(0.0),
            "{file}"
        );
        assert_eq!(metric(&file, &success), Some(from_ledger), "{file}");
        let leftovers = std::fs::read_dir(db.dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains(".tmp")
            })
            .count();
        assert_eq!(leftovers, 0, "a temporary metrics file was left behind");
    }
}

#[test]
fn a_terminal_sees_a_spinner_for_each_long_stage() {
    let db = sqlite();
    seed_churn(&db, 1500);
    let cfg = config(&db, CHURN, &[]);
    // `script` gives the run a terminal; without it (not util-linux) there is nothing to test.
    let cmd = format!("{BIN} run --config {}", cfg.display());
    let o = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("TERM", "xterm")
        .env_remove("DATABASE_URL")
        .output();
    let Some(o) = o.ok().filter(|o| o.status.code().is_some()) else {
        eprintln!("SKIPPING the terminal half: no `script` command");
        return;
    };
    let shown = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{shown}");
    for stage in ["read", "train", "score", "publish"] {
        assert!(
            shown.contains(&format!(" {stage} ")),
            "no spinner for {stage}:\n{shown}"
        );
    }
    assert!(shown.contains("finished"), "{shown}");
}

#[test]
fn the_demo_outside_the_checkout_says_where_its_configs_are_before_writing_anything() {
    let db = sqlite();
    let elsewhere = tempfile::tempdir().unwrap();
    let root = elsewhere.path().to_str().unwrap();
    let o = prescore(&["demo", "--root", root, "--warehouse", &db.url], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("configs/churn_daily.toml does not exist") && err.contains("--root"),
        "{}",
        text(&o)
    );
    // Nothing was generated: the warehouse file was never created.
    assert!(!db.dir.path().join("prescore.db").exists(), "{}", text(&o));
}

const WEATHER: &str = "configs/weather_hourly.toml";

/// A timestamp as a literal both warehouses compare with their target times (UTC).
fn at(db: &Db, t: chrono::DateTime<chrono::Utc>) -> String {
    let s = t.format("%Y-%m-%d %H:%M:%S").to_string();
    match db.name {
        "postgres" => format!("'{s}+00'"),
        _ => format!("'{s}'"),
    }
}

/// Per lead time, what prescore_accuracy says over all days, methods and versions:
/// (n, mae, bias, coverage, naive_n, naive mae), n-weighted.
async fn recorded(db: &Db) -> Vec<Vec<f64>> {
    let q = "SELECT horizon, CAST(SUM(n) AS DOUBLE PRECISION), SUM(n * mae) / SUM(n), SUM(n * bias) / SUM(n), \
             SUM(n * coverage) / SUM(n), CAST(SUM(naive_n) AS DOUBLE PRECISION), \
             SUM(naive_n * naive_mae) / SUM(naive_n) \
             FROM prescore_accuracy WHERE job = 'weather_hourly' GROUP BY horizon ORDER BY horizon";
    parse(rows(db, q).await)
}

/// The same, computed by hand from the history table and the actuals (`weather`) known at `cut`;
/// seasonal naive is the temperature one day before the target (every horizon is <= 24 h).
async fn by_hand(db: &Db, cut: chrono::DateTime<chrono::Utc>) -> Vec<Vec<f64>> {
    let day_before = match db.name {
        "postgres" => "h.target_ts - interval '1 day'",
        _ => "datetime(h.target_ts, '-1 day')",
    };
    let cut = at(db, cut);
    let q = format!(
        "SELECT h.horizon, COUNT(*), AVG(ABS(h.yhat - w.temperature)), AVG(h.yhat - w.temperature), \
         CAST(AVG(CASE WHEN w.temperature >= h.yhat_lo AND w.temperature <= h.yhat_hi THEN 1 ELSE 0 END) AS DOUBLE PRECISION), \
         COUNT(n.temperature), AVG(ABS(n.temperature - w.temperature)) \
         FROM weather_forecasts_history h \
         JOIN weather w ON w.region = h.series_id AND w.ts = h.target_ts AND w.ts <= {cut} \
         LEFT JOIN weather n ON n.region = h.series_id AND n.ts = {day_before} \
         GROUP BY h.horizon ORDER BY h.horizon"
    );
    parse(rows(db, &q).await)
}

fn parse(r: Vec<Vec<String>>) -> Vec<Vec<f64>> {
    r.iter()
        .map(|row| row.iter().map(|v| v.parse().unwrap_or(f64::NAN)).collect())
        .collect()
}

fn assert_close(db: &Db, ours: &[Vec<f64>], hand: &[Vec<f64>]) {
    assert_eq!(ours.len(), hand.len(), "{}: lead times differ", db.name);
    for (o, h) in ours.iter().zip(hand) {
        for (a, b) in o.iter().zip(h) {
            assert!(
                (a - b).abs() <= 1e-9 * (1.0 + b.abs()),
                "{}: recorded {o:?} vs by hand {h:?}",
                db.name
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn realized_accuracy_matches_a_hand_computation_from_history_and_actuals() {
    use chrono::{Duration, DurationRound, Utc};
    for db in backends("accuracy") {
        let flags = ["--customers", "200", "--meters", "20", "--days", "21"];
        seed(&db, &[&flags[..], &["--seed", "11"]].concat());
        let cfg = config(&db, WEATHER, &[]);
        let c = cfg.to_str().unwrap();
        // The seeded weather is observed up to now: forecasts issued three days ago have
        // their actuals by the next runs.
        let hour = Utc::now().duration_trunc(Duration::hours(1)).unwrap();
        let t1 = hour - Duration::days(3) + Duration::minutes(5);
        let t2 = t1 + Duration::days(1);
        let iso = |t: chrono::DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let o = prescore(&["run", "--config", c, "--as-of", &iso(t1)], &[]);
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
        assert_eq!(count(&db, "prescore_accuracy").await, 0, "{}", db.name);

        // The next day's run measures the forecasts of the first: 4 regions, every lead time.
        let prom = db.dir.path().join("weather.prom").display().to_string();
        let o = prescore(
            &[
                "run",
                "--config",
                c,
                "--as-of",
                &iso(t2),
                "--metrics-file",
                &prom,
            ],
            &[],
        );
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("realized MAE"),
            "{}",
            text(&o)
        );
        let ours = recorded(&db).await;
        assert_eq!(ours.len(), 24, "{}: {ours:?}", db.name);
        assert_eq!(ours[0][1], 4.0, "{}: {ours:?}", db.name);
        assert_close(&db, &ours, &by_hand(&db, t2).await);
        let file = std::fs::read_to_string(&prom).unwrap();
        let realized = metric(&file, "prescore_realized_mae{job=\"weather_hourly\"}").unwrap();
        let n: f64 = ours.iter().map(|h| h[1]).sum();
        let overall = ours.iter().map(|h| h[1] * h[2]).sum::<f64>() / n;
        assert!((realized - overall).abs() < 1e-9, "{file}");

        // `evaluate` a day later sees the second run's forecasts' actuals too; run twice, it
        // replaces its rows rather than adding to them.
        let t3 = t2 + Duration::days(1);
        for _ in 0..2 {
            let o = prescore(&["evaluate", "--config", c, "--as-of", &iso(t3)], &[]);
            assert!(o.status.success(), "{}: {}", db.name, text(&o));
            let ours = recorded(&db).await;
            assert_eq!(ours[0][1], 8.0, "{}: {ours:?}", db.name);
            assert_close(&db, &ours, &by_hand(&db, t3).await);
        }
        let keyed = rows(
            &db,
            "SELECT COUNT(*) FROM (SELECT DISTINCT job, model_version, method, horizon, day FROM prescore_accuracy) k",
        )
        .await;
        assert_eq!(
            keyed[0][0],
            count(&db, "prescore_accuracy").await.to_string()
        );

        // Reading a few days of history uses an index on the target times.
        let index = match db.name {
            "postgres" => "SELECT COUNT(*) FROM pg_indexes WHERE indexname = 'weather_forecasts_history_target_ts'",
            _ => "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = 'weather_forecasts_history_target_ts'",
        };
        assert_eq!(rows(&db, index).await[0][0], "1", "{}", db.name);

        // A range evaluates only its days; a score job without labels has nothing to evaluate.
        let day = t1.date_naive().to_string();
        let o = prescore(
            &[
                "evaluate",
                "--config",
                c,
                "--from",
                &day,
                "--to",
                &day,
                "--as-of",
                &iso(t3),
            ],
            &[],
        );
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
        assert_close(&db, &recorded(&db).await, &by_hand(&db, t3).await);
        let churn = config(&db, CHURN, &[("labels_sql = ", "# labels_sql = ")]);
        let o = prescore(&["evaluate", "--config", churn.to_str().unwrap()], &[]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains("no input.labels_sql"), "{}", text(&o));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn drift_is_recorded_per_feature_and_the_psi_guard_refuses_a_shifted_input() {
    for db in backends("drift") {
        let guard = (
            "require = [\"auc >= 0.6\"]",
            "require = [\"auc >= 0.6\"]\nmax_psi = 0.5",
        );
        seed_churn(&db, 1500);
        let cfg = config(&db, CHURN, &[guard]);
        let prom = db.dir.path().join("churn.prom").display().to_string();
        let c = cfg.to_str().unwrap();
        let o = prescore(&["run", "--config", c, "--metrics-file", &prom], &[]);
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("max PSI"),
            "{}",
            text(&o)
        );
        // One PSI per numeric and categorical feature and for the score, all under the guard.
        let drift = rows(
            &db,
            "SELECT feature, psi FROM prescore_drift ORDER BY feature",
        )
        .await;
        let features: Vec<&str> = drift.iter().map(|r| r[0].as_str()).collect();
        assert_eq!(
            features,
            [
                "monthly_usage_gb",
                "payment_delays",
                "plan",
                "region",
                "score",
                "support_tickets",
                "tenure_months",
                "usage_change_pct"
            ],
            "{}",
            db.name
        );
        assert!(
            drift.iter().all(|r| r[1].parse::<f64>().unwrap() < 0.5),
            "{drift:?}"
        );
        let highest = drift
            .iter()
            .map(|r| r[1].parse::<f64>().unwrap())
            .fold(0.0, f64::max);
        let file = std::fs::read_to_string(&prom).unwrap();
        let exported = metric(&file, "prescore_psi_max{job=\"churn_daily\"}").unwrap();
        assert!((exported - highest).abs() < 1e-9, "{file}");
        let before = rows(&db, "SELECT * FROM churn_scores ORDER BY customer_id").await;

        // The usage arrives in MB instead of GB: far past the guard, exit 3, nothing written.
        let shifted = sql_file(
            &db,
            "score.sql",
            &std::fs::read_to_string(format!("{ROOT}/sql/churn_daily/score.sql"))
                .unwrap()
                .replace(
                    " monthly_usage_gb,",
                    " monthly_usage_gb * 1000 AS monthly_usage_gb,",
                ),
        );
        let moved = config(
            &db,
            CHURN,
            &[
                guard,
                (&format!("{ROOT}/sql/churn_daily/score.sql"), &shifted),
            ],
        );
        let o = prescore(&["score", "--config", moved.to_str().unwrap()], &[]);
        assert_eq!(o.status.code(), Some(3), "{}: {}", db.name, text(&o));
        assert!(text(&o).contains("monthly_usage_gb"), "{}", text(&o));
        assert_eq!(
            rows(&db, "SELECT * FROM churn_scores ORDER BY customer_id").await,
            before,
            "{}",
            db.name
        );
        assert_eq!(count(&db, "prescore_drift").await, 8, "{}", db.name);
        assert_eq!(last_run(&db).await.0, "failed", "{}", db.name);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn forecast_drift_is_recorded_for_the_target_covariates_and_forecasts_and_guarded() {
    for db in backends("forecastdrift") {
        seed_energy(&db, 12, 30, 3);
        let cfg = config(&db, ENERGY, &[]);
        let o = prescore(&["run", "--config", cfg.to_str().unwrap()], &[]);
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
        let drift = rows(
            &db,
            "SELECT feature, psi FROM prescore_drift ORDER BY feature",
        )
        .await;
        let features: Vec<&str> = drift.iter().map(|r| r[0].as_str()).collect();
        assert_eq!(features, ["kwh", "score", "temperature"], "{}", db.name);
        for r in &drift {
            let psi: f64 = r[1].parse().unwrap();
            assert!(psi.is_finite() && psi >= 0.0, "{}: {drift:?}", db.name);
        }
        let before = rows(&db, "SELECT * FROM energy_forecasts ORDER BY 1, 2").await;
        // A guard tighter than any real input: the run is refused, naming the worst feature.
        let guard = config(&db, ENERGY, &[("[gate]\n", "[gate]\nmax_psi = 0.000001\n")]);
        let o = prescore(&["score", "--config", guard.to_str().unwrap()], &[]);
        assert_eq!(o.status.code(), Some(3), "{}: {}", db.name, text(&o));
        let worst = drift
            .iter()
            .max_by(|a, b| {
                a[1].parse::<f64>()
                    .unwrap()
                    .total_cmp(&b[1].parse().unwrap())
            })
            .unwrap();
        assert!(text(&o).contains("gate.max_psi"), "{}", text(&o));
        assert!(
            text(&o).contains(&format!("for {}", worst[0])),
            "{}",
            text(&o)
        );
        let after = rows(&db, "SELECT * FROM energy_forecasts ORDER BY 1, 2").await;
        assert!(before == after, "{}: the forecasts changed", db.name);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_score_shift_past_the_guard_is_refused_with_the_table_intact() {
    for db in backends("scoreshift") {
        seed_churn(&db, 1500);
        let guard = (
            "require = [\"auc >= 0.6\"]",
            "require = [\"auc >= 0.6\"]\nmax_score_shift = 0.1",
        );
        let cfg = config(&db, CHURN, &[guard]);
        let o = prescore(&["run", "--config", cfg.to_str().unwrap()], &[]);
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
        let before = rows(&db, "SELECT * FROM churn_scores ORDER BY customer_id").await;
        // Every customer suddenly late with payments: the churn scores jump.
        let score_sql = format!("{ROOT}/sql/churn_daily/score.sql");
        let shifted = sql_file(
            &db,
            "score.sql",
            &std::fs::read_to_string(&score_sql).unwrap().replace(
                "support_tickets, payment_delays",
                "support_tickets, payment_delays + 6 AS payment_delays",
            ),
        );
        let moved = config(&db, CHURN, &[guard, (&score_sql, &shifted)]);
        let o = prescore(&["score", "--config", moved.to_str().unwrap()], &[]);
        assert_eq!(o.status.code(), Some(3), "{}: {}", db.name, text(&o));
        assert!(text(&o).contains("gate.max_score_shift"), "{}", text(&o));
        let after = rows(&db, "SELECT * FROM churn_scores ORDER BY customer_id").await;
        assert!(before == after, "{}: the scores changed", db.name);
    }
}
