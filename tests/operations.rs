//! Operating a job over time: the model history records every registry change in order and
//! `models rollback` restores the model that served before the champion; the metrics file
//! for Prometheus is written after every run, failed ones too.

use crate::support::*;

const CHURN: &str = "configs/churn_daily.toml";

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
