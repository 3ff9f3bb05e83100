//! The pipeline spine: a full run, an idempotent rerun, `check`, and a failing run that
//! leaves the previous predictions untouched.

use crate::support::*;

const CHURN: &str = "configs/churn_daily.toml";

#[tokio::test(flavor = "multi_thread")]
async fn full_run_then_rerun_gives_the_same_rows() {
    for db in backends("full_run") {
        seed_churn(&db, 3000);
        let cfg = config(&db, CHURN, &[]);
        let as_of = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let o = prescore(
            &["run", "--config", cfg.to_str().unwrap(), "--as-of", &as_of],
            &[],
        );
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            out.contains("entities scored") && out.contains("auc"),
            "{}: {out}",
            db.name
        );

        // Every customer active at the latest month gets exactly one score in [0, 1].
        let active = rows(
            &db,
            "SELECT COUNT(*) FROM customer_months WHERE churned IS NULL",
        )
        .await[0][0]
            .clone();
        let scored = count(&db, "churn_scores").await;
        assert_eq!(scored.to_string(), active, "{}", db.name);
        let bad = rows(
            &db,
            "SELECT COUNT(*) FROM churn_scores WHERE score < 0 OR score > 1 OR score IS NULL",
        )
        .await;
        assert_eq!(bad[0][0], "0", "{}", db.name);
        assert_eq!(last_run(&db).await.0, "succeeded");
        let before = rows(&db, "SELECT customer_id, score, label, model_version FROM churn_scores ORDER BY customer_id").await;

        // Same as_of again: same rows, same values (a new model version, trained on the same data).
        let o = prescore(
            &["run", "--config", cfg.to_str().unwrap(), "--as-of", &as_of],
            &[],
        );
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
        let after = rows(
            &db,
            "SELECT customer_id, score, label FROM churn_scores ORDER BY customer_id",
        )
        .await;
        assert_eq!(after.len(), before.len(), "{}", db.name);
        for (a, b) in after.iter().zip(&before) {
            assert_eq!(a[..3], b[..3], "{}: rerun changed a prediction", db.name);
        }
        let versions = rows(&db, "SELECT DISTINCT model_version FROM churn_scores").await;
        assert_eq!(versions, vec![vec!["2".to_string()]], "{}", db.name);
        let runs = rows(&db, "SELECT status FROM prescore_runs ORDER BY started_at").await;
        assert_eq!(runs.len(), 2, "{}", db.name);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn check_reports_every_mistake_at_once_and_writes_nothing() {
    let db = sqlite();
    let cfg = config(
        &db,
        CHURN,
        &[
            ("name = \"churn_daily\"", "name = \"churn daily\""),
            ("algorithm = \"decision_tree\"", "algorithm = \"xgboost\""),
            ("max_depth = 7", "max_depth = 0"),
            (
                "table = \"churn_scores\"",
                "table = \"churn_scores; DROP TABLE x\"",
            ),
            ("numeric = [\"tenure_months\"", "numeric = [\"tenure\""),
        ],
    );
    let o = prescore(&["check", "--config", cfg.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    for key in [
        "job.name",
        "model.algorithm",
        "model.max_depth",
        "output.table",
        "features.numeric[0]",
    ] {
        assert!(err.contains(key), "missing {key} in:\n{err}");
    }
    assert!(
        !db.dir.path().join("prescore.db").exists(),
        "check must not create the warehouse"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn check_never_creates_a_missing_sqlite_file() {
    let db = sqlite();
    let cfg = config(&db, CHURN, &[]);
    let o = prescore(&["check", "--config", cfg.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        !db.dir.path().join("prescore.db").exists(),
        "check must not create the warehouse: {}",
        text(&o)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn variables_work_in_numbers_and_bad_values_name_their_key() {
    let db = sqlite();
    seed_churn(&db, 300);
    let cfg = config(
        &db,
        CHURN,
        &[
            ("max_depth = 7", "max_depth = \"${DEPTH:-7}\""),
            ("min_rows = 100", "min_rows = \"${MIN_ROWS}\""),
        ],
    );
    let c = cfg.to_str().unwrap();
    let o = prescore(&["check", "--config", c], &[("MIN_ROWS", "50")]);
    assert!(o.status.success(), "{}", text(&o));
    let o = prescore(&["check", "--config", c], &[("MIN_ROWS", "many")]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("input.min_rows"), "{}", text(&o));
    for (edit, key) in [
        (
            (
                "calendar = [\"hour\", \"dow\"",
                "calendar = [\"hour\", \"dom\"",
            ),
            "forecast.calendar[1]",
        ),
        (("step = \"1h\"", "step = \"0s\""), "forecast.step"),
        (
            ("step = \"1h\"", "step = \"999999999999d\""),
            "forecast.step",
        ),
    ] {
        let forecast = config(&db, "configs/energy_hourly.toml", &[edit]);
        let o = prescore(&["check", "--config", forecast.to_str().unwrap()], &[]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains(key), "missing {key}: {}", text(&o));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn check_compares_the_sql_with_the_contract() {
    for db in backends("check_sql") {
        seed_churn(&db, 500);
        let ok = prescore(
            &[
                "check",
                "--config",
                config(&db, CHURN, &[]).to_str().unwrap(),
            ],
            &[],
        );
        assert!(ok.status.success(), "{}: {}", db.name, text(&ok));
        assert!(String::from_utf8_lossy(&ok.stdout).contains("check passed"));
        let missing = sql_file(
            &db,
            "score.sql",
            "SELECT customer_id, plan, region FROM customer_months",
        );
        let cfg = config(
            &db,
            CHURN,
            &[(&format!("{ROOT}/sql/churn_daily/score.sql"), &missing)],
        );
        let o = prescore(&["check", "--config", cfg.to_str().unwrap()], &[]);
        assert_eq!(o.status.code(), Some(3), "{}: {}", db.name, text(&o));
        assert!(
            text(&o).contains("returned no column \"monthly_usage_gb\""),
            "{}: {}",
            db.name,
            text(&o)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_sql_marks_the_run_failed_and_keeps_previous_predictions() {
    for db in backends("failing_sql") {
        seed_churn(&db, 2000);
        let good = config(&db, CHURN, &[]);
        assert!(prescore(&["run", "--config", good.to_str().unwrap()], &[])
            .status
            .success());
        let before = rows(&db, "SELECT * FROM churn_scores ORDER BY customer_id").await;

        let broken = sql_file(
            &db,
            "broken.sql",
            // A query only the warehouse finds wrong (a statement that is not a query is
            // refused earlier, with the config).
            "SELECT customer_id FROM FROM customer_months WHERE period_end <= :as_of",
        );
        let cfg = config(
            &db,
            CHURN,
            &[(&format!("{ROOT}/sql/churn_daily/score.sql"), &broken)],
        );
        let o = prescore(&["run", "--config", cfg.to_str().unwrap()], &[]);
        assert_eq!(o.status.code(), Some(1), "{}: {}", db.name, text(&o));
        let (status, error) = last_run(&db).await;
        assert_eq!(status, "failed", "{}", db.name);
        assert!(
            error.to_lowercase().contains("syntax"),
            "{}: ledger error {error:?}",
            db.name
        );
        let after = rows(&db, "SELECT * FROM churn_scores ORDER BY customer_id").await;
        assert_eq!(before, after, "{}: previous predictions changed", db.name);
    }
}

#[test]
fn help_teaches_with_examples_and_exit_codes() {
    let o = prescore(&["--help"], &[]);
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(
        s.contains("Exit codes") && s.contains("prescore demo"),
        "{s}"
    );
    let o = prescore(&["run", "--help"], &[]);
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(s.contains("--as-of") && s.contains("crontab"), "{s}");
    let o = prescore(&["run"], &[]);
    assert_eq!(o.status.code(), Some(2), "usage errors exit 2");
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_lists_the_ledger() {
    let db = sqlite();
    seed_churn(&db, 1000);
    let cfg = config(&db, CHURN, &[]);
    assert!(prescore(&["run", "--config", cfg.to_str().unwrap()], &[])
        .status
        .success());
    let o = prescore(&["runs", "--config", cfg.to_str().unwrap()], &[]);
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && s.contains("succeeded") && s.contains("churn_daily"),
        "{}",
        text(&o)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reading_keeps_types_timestamps_in_utc_and_nulls() {
    use prescore::config::ColumnType;
    use prescore::warehouse::Value;
    use std::collections::BTreeMap;
    for db in backends("types") {
        let wh = connect(&db).await;
        let (ts_type, bool_type) = if db.name == "postgres" {
            ("TIMESTAMPTZ", "BOOLEAN")
        } else {
            ("TEXT", "INTEGER")
        };
        wh.execute(&format!("CREATE TABLE typed (i BIGINT, f DOUBLE PRECISION, t TEXT, b {bool_type}, ts {ts_type})"), &[]).await.unwrap();
        let ts = if db.name == "postgres" {
            "'2026-11-29 08:00:00+01'"
        } else {
            "'2026-11-29T08:00:00+01:00'"
        };
        let truth = if db.name == "postgres" { "true" } else { "1" };
        wh.execute(&format!("INSERT INTO typed VALUES (1, 0.5, 'a', {truth}, {ts}), (NULL, NULL, NULL, NULL, NULL)"), &[]).await.unwrap();
        let contract: BTreeMap<String, ColumnType> = [
            ("i", ColumnType::Int),
            ("f", ColumnType::Float),
            ("t", ColumnType::Text),
            ("b", ColumnType::Bool),
            ("ts", ColumnType::Timestamp),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let params: BTreeMap<&str, Value> = BTreeMap::new();
        let df = wh
            .read_frame(
                "SELECT i, f, t, b, ts FROM typed ORDER BY i",
                "typed.sql",
                &params,
                &contract,
            )
            .await
            .unwrap();
        assert_eq!(df.height(), 2, "{}", db.name);
        let i = df.column("i").unwrap().i64().unwrap();
        // NULLs sort last in PostgreSQL and first in SQLite: find the non-NULL row.
        let first = if i.get(0).is_some() { 0 } else { 1 };
        assert_eq!(i.get(first), Some(1));
        assert_eq!(df.column("f").unwrap().f64().unwrap().get(first), Some(0.5));
        assert_eq!(df.column("t").unwrap().str().unwrap().get(first), Some("a"));
        assert_eq!(
            df.column("b").unwrap().bool().unwrap().get(first),
            Some(true)
        );
        let us = df
            .column("ts")
            .unwrap()
            .datetime()
            .unwrap()
            .physical()
            .get(first)
            .unwrap();
        assert_eq!(
            prescore::warehouse::frame::micros_to_utc(us).to_rfc3339(),
            "2026-11-29T07:00:00+00:00",
            "{}",
            db.name
        );
        for c in ["i", "f", "t", "b", "ts"] {
            assert_eq!(
                df.column(c).unwrap().null_count(),
                1,
                "{}: column {c}",
                db.name
            );
        }
        wh.close().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_are_one_object_per_line() {
    let db = sqlite();
    seed_churn(&db, 500);
    let cfg = config(&db, CHURN, &[]);
    let o = prescore(
        &[
            "--log-format",
            "json",
            "run",
            "--config",
            cfg.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with('{')).collect();
    assert!(lines.len() >= 3, "{stderr}");
    for l in lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{l}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn shards_split_the_entities_without_overlap_and_never_train() {
    let db = sqlite();
    seed_churn(&db, 1200);
    let cfg = config(&db, CHURN, &[]);
    let c = cfg.to_str().unwrap();
    assert!(prescore(&["train", "--config", c], &[]).status.success());
    let active: i64 = rows(
        &db,
        "SELECT COUNT(*) FROM customer_months WHERE churned IS NULL",
    )
    .await[0][0]
        .parse()
        .unwrap();
    let o = prescore(&["run", "--config", c, "--shard", "0/2"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("trained"),
        "a shard must not train: {}",
        text(&o)
    );
    let first = count(&db, "churn_scores").await;
    assert!(
        first > active / 4 && first < active * 3 / 4,
        "shard 0 of 2 scored {first} of {active}"
    );
    // The other shard, as Kubernetes' indexed jobs would start it.
    let o = prescore(
        &["run", "--config", c],
        &[("JOB_COMPLETION_INDEX", "1"), ("PRESCORE_SHARDS", "2")],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        count(&db, "churn_scores").await,
        active,
        "the two shards together score every customer once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn replace_leaves_exactly_this_runs_rows_and_refuses_shards() {
    for db in backends("replace") {
        let (upsert_cfg, _) = published_churn(&db, 1500).await;
        let replace_cfg = config(&db, CHURN, &[WRITE_REPLACE]);
        let scored = count(&db, "churn_scores").await;
        // Ten customers leave the source.
        let wh = connect(&db).await;
        wh.execute(
            "DELETE FROM customer_months WHERE customer_id IN \
             (SELECT customer_id FROM churn_scores ORDER BY customer_id LIMIT 10)",
            &[],
        )
        .await
        .unwrap();
        wh.close().await;

        // Upsert keeps their last rows.
        let o = prescore(&["score", "--config", upsert_cfg.to_str().unwrap()], &[]);
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
        assert_eq!(count(&db, "churn_scores").await, scored, "{}", db.name);

        // A sharded replace is refused with exit 2 and changes nothing.
        let before = rows(&db, "SELECT * FROM churn_scores ORDER BY customer_id").await;
        let r = replace_cfg.to_str().unwrap();
        let o = prescore(&["score", "--config", r, "--shard", "0/2"], &[]);
        assert_eq!(o.status.code(), Some(2), "{}: {}", db.name, text(&o));
        assert!(text(&o).contains("cannot run sharded"), "{}", text(&o));
        assert_eq!(
            before,
            rows(&db, "SELECT * FROM churn_scores ORDER BY customer_id").await,
            "{}",
            db.name
        );

        // Replace leaves exactly this run's rows, every one from this run.
        let o = prescore(&["score", "--config", r], &[]);
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
        let run_id = rows(
            &db,
            "SELECT run_id FROM prescore_runs WHERE status = 'succeeded' \
             ORDER BY started_at DESC, run_id DESC LIMIT 1",
        )
        .await[0][0]
            .clone();
        assert_eq!(count(&db, "churn_scores").await, scored - 10, "{}", db.name);
        let runs = rows(&db, "SELECT DISTINCT run_id FROM churn_scores").await;
        assert_eq!(runs, vec![vec![run_id]], "{}", db.name);
    }
}
