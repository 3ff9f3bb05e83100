//! What operators check after the fact: every issued forecast is kept in the history table,
//! a backfill (an older `--as-of`) fills history and gaps but never overwrites a fresher
//! prediction, and a score backfill serves the model that was champion at its as_of.

use crate::support::*;

const ENERGY: &str = "configs/energy_hourly.toml";

fn at(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backfill_keeps_fresher_rows_and_the_history_keeps_every_forecast() {
    for db in backends("backfill") {
        seed_energy(&db, 30, 30, 5);
        let cfg = config(
            &db,
            ENERGY,
            &[("retrain = \"24h\"", "retrain = \"always\"")],
        );
        let c = cfg.to_str().unwrap();
        let now = chrono::Utc::now();
        let o = prescore(&["run", "--config", c, "--as-of", &at(now)], &[]);
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
        let fresh = rows(
            &db,
            "SELECT series_id, target_ts, yhat, run_id FROM energy_forecasts ORDER BY series_id, target_ts",
        )
        .await;
        let series = rows(
            &db,
            "SELECT COUNT(DISTINCT series_id) FROM energy_forecasts",
        )
        .await[0][0]
            .parse::<usize>()
            .unwrap();
        assert!(series > 20, "{}: {series} series", db.name);

        // A backfill three hours back: its overlapping target hours must not replace the
        // fresher forecasts; the hours only it forecasts are filled in.
        let o = prescore(
            &[
                "run",
                "--config",
                c,
                "--as-of",
                &at(now - chrono::Duration::hours(3)),
            ],
            &[],
        );
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
        let after = rows(
            &db,
            "SELECT series_id, target_ts, yhat, run_id FROM energy_forecasts ORDER BY series_id, target_ts",
        )
        .await;
        for row in &fresh {
            assert!(
                after.contains(row),
                "{}: the fresher row {row:?} changed",
                db.name
            );
        }
        // The hours only the backfill forecasts, read from its history rows.
        let only_backfill = rows(
            &db,
            "SELECT COUNT(*) FROM energy_forecasts_history b \
             WHERE b.as_of = (SELECT MIN(as_of) FROM energy_forecasts_history) \
             AND NOT EXISTS (SELECT 1 FROM energy_forecasts_history f \
                 WHERE f.as_of > b.as_of AND f.series_id = b.series_id AND f.target_ts = b.target_ts)",
        )
        .await[0][0]
            .parse::<usize>()
            .unwrap();
        assert!(
            only_backfill >= series,
            "{}: {only_backfill} hours filled",
            db.name
        );
        assert_eq!(
            after.len(),
            fresh.len() + only_backfill,
            "{}: the earlier hours are filled in, nothing else added",
            db.name
        );
        // The history holds both runs' forecasts, every row.
        let history = rows(
            &db,
            "SELECT COUNT(*), COUNT(DISTINCT as_of) FROM energy_forecasts_history",
        )
        .await;
        assert_eq!(
            (history[0][0].as_str(), history[0][1].as_str()),
            ((2 * 24 * series).to_string().as_str(), "2"),
            "{}",
            db.name
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_views_show_the_latest_run_and_the_champion_and_tables_are_described() {
    for db in backends("views") {
        seed_churn(&db, 400);
        let cfg = config(&db, "configs/churn_daily.toml", &[]);
        let c = cfg.to_str().unwrap();
        for _ in 0..2 {
            let o = prescore(&["run", "--config", c], &[]);
            assert!(o.status.success(), "{}: {}", db.name, text(&o));
        }
        let latest = rows(
            &db,
            "SELECT l.run_id, l.status FROM prescore_latest_runs l WHERE l.job = 'churn_daily'",
        )
        .await;
        let newest = rows(
            &db,
            "SELECT run_id FROM prescore_runs WHERE job = 'churn_daily' ORDER BY started_at DESC LIMIT 1",
        )
        .await;
        assert_eq!(latest.len(), 1, "{}: one row per job and shard", db.name);
        assert_eq!(latest[0][0], newest[0][0], "{}", db.name);
        assert_eq!(latest[0][1], "succeeded", "{}", db.name);
        let champion = rows(&db, "SELECT job, version FROM prescore_champions").await;
        let registry = rows(
            &db,
            "SELECT job, version FROM prescore_models WHERE status = 'champion'",
        )
        .await;
        assert_eq!(champion, registry, "{}", db.name);
        assert_eq!(champion.len(), 1, "{}", db.name);
        // A score job has no forecasts to evaluate: the view is there, and empty.
        let acc = rows(&db, "SELECT COUNT(*) FROM prescore_accuracy_by_lead").await;
        assert_eq!(acc[0][0], "0", "{}", db.name);
        if db.name == "postgres" {
            let described = rows(
                &db,
                "SELECT obj_description('prescore_runs'::regclass, 'pg_class'), \
                 col_description('prescore_accuracy'::regclass, 4)",
            )
            .await;
            assert!(
                described[0][0].contains("One row per prescore run"),
                "{described:?}"
            );
            assert!(described[0][1].contains("Lead time"), "{described:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_score_backfill_serves_the_model_that_was_champion_at_its_as_of() {
    for db in backends("champion_at") {
        seed_churn(&db, 800);
        let cfg = config(&db, "configs/churn_daily.toml", &[]);
        let c = cfg.to_str().unwrap();
        let now = chrono::Utc::now();
        let day = chrono::Duration::days(1);
        // v1 is trained and promoted as of 20 days ago, v2 by today's run, which publishes.
        let o = prescore(
            &["train", "--config", c, "--as-of", &at(now - day * 20)],
            &[],
        );
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
        let o = prescore(&["run", "--config", c, "--as-of", &at(now)], &[]);
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
        let champion = rows(
            &db,
            "SELECT version FROM prescore_models WHERE status = 'champion'",
        )
        .await;
        assert_eq!(champion, vec![vec!["2".to_string()]], "{}", db.name);
        let today = rows(&db, "SELECT * FROM churn_scores ORDER BY customer_id").await;

        // A backfill twelve days back: v1 was the champion then.
        let o = prescore(
            &["score", "--config", c, "--as-of", &at(now - day * 12)],
            &[],
        );
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
        // Today's rows are untouched. When twelve days back falls in the previous month's
        // snapshot (the first twelve days of a month), the backfill also adds the customers
        // active then and not now: rows no run had written, from v1.
        let after = rows(&db, "SELECT * FROM churn_scores ORDER BY customer_id").await;
        for row in &today {
            assert!(
                after.contains(row),
                "{}: today's row changed: {row:?}",
                db.name
            );
        }
        for row in after.iter().filter(|r| !today.iter().any(|t| t[0] == r[0])) {
            assert_eq!(row[3], "1", "{}: an added row is v1's: {row:?}", db.name);
        }
        let history = rows(
            &db,
            "SELECT model_version, COUNT(*) FROM churn_scores_history \
             GROUP BY model_version ORDER BY model_version",
        )
        .await;
        let versions: Vec<&str> = history.iter().map(|r| r[0].as_str()).collect();
        assert_eq!(versions, ["1", "2"], "{}: {history:?}", db.name);
        let ledger = rows(
            &db,
            "SELECT model_version FROM prescore_runs WHERE command = 'score'",
        )
        .await;
        assert_eq!(ledger, vec![vec!["1".to_string()]], "{}", db.name);

        // Before v1 no model was champion: refused, nothing written.
        let o = prescore(
            &["score", "--config", c, "--as-of", &at(now - day * 30)],
            &[],
        );
        assert_eq!(o.status.code(), Some(1), "{}: {}", db.name, text(&o));
        assert!(
            text(&o).contains("had no champion at") && text(&o).contains("(v1)"),
            "{}: {}",
            db.name,
            text(&o)
        );
        assert_eq!(
            count(&db, "churn_scores_history").await,
            history
                .iter()
                .map(|r| r[1].parse::<i64>().unwrap())
                .sum::<i64>(),
            "{}",
            db.name
        );
    }
}
