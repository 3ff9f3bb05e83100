//! The model registry and the quality gate: a gated run changes nothing, rollback serves the
//! older model, a schema mismatch is a clear error, and concurrent promotes leave one champion.

use crate::support::*;

const CHURN: &str = "configs/churn_daily.toml";

#[tokio::test(flavor = "multi_thread")]
async fn a_gated_run_leaves_the_results_table_exactly_as_it_was() {
    for db in backends("gated") {
        let (_, before) = published_churn(&db, 2000).await;

        let strict = config(
            &db,
            CHURN,
            &[("require = [\"auc >= 0.6\"]", "require = [\"auc >= 0.999\"]")],
        );
        let o = prescore(&["run", "--config", strict.to_str().unwrap()], &[]);
        assert_eq!(o.status.code(), Some(4), "{}: {}", db.name, text(&o));
        assert!(text(&o).contains("auc"), "{}", text(&o));
        assert_eq!(last_run(&db).await.0, "gated", "{}", db.name);
        let after = rows(&db, "SELECT * FROM churn_scores ORDER BY customer_id").await;
        assert_eq!(
            before, after,
            "{}: a gated run changed predictions",
            db.name
        );
        let models = rows(
            &db,
            "SELECT version, status FROM prescore_models ORDER BY version",
        )
        .await;
        assert_eq!(
            models,
            vec![
                vec!["1".to_string(), "champion".into()],
                vec!["2".into(), "rejected".into()]
            ],
            "{}",
            db.name
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rollback_then_run_scores_with_the_older_version() {
    for db in backends("rollback") {
        seed_churn(&db, 2000);
        let cfg = config(&db, CHURN, &[]);
        let c = cfg.to_str().unwrap();
        for _ in 0..2 {
            assert!(prescore(&["run", "--config", c], &[]).status.success());
        }
        let o = prescore(&["models", "rollback", "--config", c], &[]);
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
        let never = config(
            &db,
            CHURN,
            &[("retrain = \"always\"", "retrain = \"never\"")],
        );
        let o = prescore(&["run", "--config", never.to_str().unwrap()], &[]);
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
        let versions = rows(&db, "SELECT DISTINCT model_version FROM churn_scores").await;
        assert_eq!(versions, vec![vec!["1".to_string()]], "{}", db.name);
        let list = prescore(&["models", "list", "--config", c], &[]);
        let s = String::from_utf8_lossy(&list.stdout);
        assert!(s.contains("rolled back to v1"), "{s}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn loading_a_model_with_other_features_is_a_clear_error() {
    for db in backends("mismatch") {
        let (_, before) = published_churn(&db, 1500).await;
        let fewer = config(
            &db,
            CHURN,
            &[(
                "categorical = [\"plan\", \"region\"]",
                "categorical = [\"plan\"]",
            )],
        );
        let o = prescore(&["score", "--config", fewer.to_str().unwrap()], &[]);
        assert_eq!(o.status.code(), Some(1), "{}: {}", db.name, text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("does not fit this job's features") && err.contains("region"),
            "{err}"
        );
        assert_eq!(
            before,
            rows(&db, "SELECT * FROM churn_scores ORDER BY customer_id").await
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_promotes_leave_exactly_one_champion() {
    for db in backends("promotes") {
        seed_churn(&db, 1000);
        let cfg = config(&db, CHURN, &[]);
        let c = cfg.to_str().unwrap().to_string();
        for _ in 0..3 {
            assert!(prescore(&["train", "--config", &c], &[]).status.success());
        }
        let handles: Vec<_> = [1, 2]
            .into_iter()
            .map(|v| {
                let c = c.clone();
                std::thread::spawn(move || {
                    prescore(&["models", "promote", &v.to_string(), "--config", &c], &[])
                })
            })
            .collect();
        for h in handles {
            let o = h.join().unwrap();
            assert!(matches!(o.status.code(), Some(0) | Some(1)), "{}", text(&o));
        }
        let champions = rows(
            &db,
            "SELECT COUNT(*) FROM prescore_models WHERE status = 'champion'",
        )
        .await;
        assert_eq!(champions[0][0], "1", "{}", db.name);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn without_auto_promote_a_passing_model_waits_for_a_person() {
    let db = sqlite();
    seed_churn(&db, 1500);
    let cfg = config(&db, CHURN, &[]);
    let c = cfg.to_str().unwrap();
    assert!(prescore(&["run", "--config", c], &[]).status.success());
    let manual = config(
        &db,
        CHURN,
        &[(
            "must_beat = [\"baseline\"]",
            "must_beat = [\"baseline\"]\nauto_promote = false",
        )],
    );
    let o = prescore(&["run", "--config", manual.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("waiting for `prescore models promote 2`"),
        "{}",
        text(&o)
    );
    // The champion (v1) still scored this run.
    assert_eq!(
        rows(&db, "SELECT DISTINCT model_version FROM churn_scores").await,
        vec![vec!["1".to_string()]]
    );
    let o = prescore(&["models", "promote", "2", "--config", c], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let o = prescore(&["models", "show", "2", "--config", c], &[]);
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(
        s.contains("champion") && s.contains("promoted by hand") && s.contains("auc"),
        "{s}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_auto_promote_and_no_champion_the_run_is_gated_and_publishes_nothing() {
    for db in backends("awaiting") {
        seed_churn(&db, 1500);
        let manual = config(
            &db,
            CHURN,
            &[(
                "must_beat = [\"baseline\"]",
                "must_beat = [\"baseline\"]\nauto_promote = \"${AUTO:-false}\"",
            )],
        );
        let m = manual.to_str().unwrap();
        let o = prescore(&["run", "--config", m], &[]);
        assert_eq!(o.status.code(), Some(4), "{}: {}", db.name, text(&o));
        assert!(
            text(&o).contains("prescore models promote 1"),
            "{}: {}",
            db.name,
            text(&o)
        );
        let wh = connect(&db).await;
        let published = wh.fetch("SELECT COUNT(*) FROM churn_scores", &[]).await;
        wh.close().await;
        assert!(
            published
                .map(|r| r[0][0].as_i64() == Some(0))
                .unwrap_or(true),
            "{}: nothing may be published",
            db.name
        );
        assert_eq!(last_run(&db).await.0, "gated", "{}", db.name);
        // A person promotes it; the next run serves it.
        let o = prescore(&["models", "promote", "1", "--config", m], &[]);
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
        let o = prescore(&["score", "--config", m], &[]);
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
        assert_eq!(
            rows(&db, "SELECT DISTINCT model_version FROM churn_scores").await,
            vec![vec!["1".to_string()]],
            "{}",
            db.name
        );
    }
}
