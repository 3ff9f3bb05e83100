//! Shards that split the work: with `:shard_index` and `:shard_count` in the job's SQL each
//! shard reads about 1/N of the rows, and the shards together publish exactly what one
//! process publishes; SQL whose split disagrees with prescore's is refused.

use crate::support::*;

const ENERGY: &str = "configs/energy_hourly.toml";
const FORECASTS: &str =
    "SELECT series_id, target_ts, horizon, yhat, yhat_lo, yhat_hi, method, model_version \
     FROM energy_forecasts ORDER BY series_id, target_ts";

/// The energy job with its SQL split by shard (`bad`: a split that ignores the index).
fn pushed_down(db: &Db, bad: bool) -> std::path::PathBuf {
    let split = if bad {
        "r.meter_id % :shard_count = 0"
    } else {
        "r.meter_id % :shard_count = :shard_index"
    };
    let history = std::fs::read_to_string(format!("{ROOT}/sql/energy_hourly/history.sql"))
        .unwrap()
        .replace(
            "WHERE r.ts <= :as_of",
            &format!("WHERE r.ts <= :as_of AND {split}"),
        );
    let future = std::fs::read_to_string(format!("{ROOT}/sql/energy_hourly/future.sql"))
        .unwrap()
        .replace(
            "WHERE w.ts > :as_of",
            &format!("WHERE w.ts > :as_of AND {}", split.replace("r.", "m.")),
        );
    assert!(history.contains(":shard_count") && future.contains(":shard_count"));
    let h = sql_file(db, "history_sharded.sql", &history);
    let f = sql_file(db, "future_sharded.sql", &future);
    config(
        db,
        ENERGY,
        &[
            (&format!("{ROOT}/sql/energy_hourly/history.sql"), h.as_str()),
            (&format!("{ROOT}/sql/energy_hourly/future.sql"), f.as_str()),
        ],
    )
}

/// An hour two days before the seeded data ends (it ends now), the same for every process.
fn as_of() -> String {
    let t = chrono::Utc::now() - chrono::Duration::days(2);
    t.format("%Y-%m-%dT%H:00:00Z").to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn three_shards_read_a_third_each_and_publish_what_one_process_does() {
    for db in backends("shards") {
        seed_energy(&db, 30, 30, 9);
        let cfg = pushed_down(&db, false);
        let c = cfg.to_str().unwrap();
        let as_of = as_of();
        let at = as_of.as_str();
        let o = prescore(&["train", "--config", c, "--as-of", at], &[]);
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
        let o = prescore(&["score", "--config", c, "--as-of", at], &[]);
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
        let single = rows(&db, FORECASTS).await;
        let total_read: i64 = rows(
            &db,
            "SELECT rows_read FROM prescore_runs WHERE command = 'score' AND shard = '0/1'",
        )
        .await[0][0]
            .parse()
            .unwrap();
        // Fresh tables: the shards create them and publish into them at the same time.
        rows(&db, "DROP TABLE energy_forecasts").await;
        rows(&db, "DROP TABLE energy_forecasts_history").await;

        // Three shard processes; started together where the warehouse takes concurrent writers.
        let run = |k: usize| {
            let (c, at) = (c.to_string(), at.to_string());
            std::thread::spawn(move || {
                let shard = format!("{k}/3");
                prescore(
                    &["score", "--config", &c, "--as-of", &at, "--shard", &shard],
                    &[],
                )
            })
        };
        let outputs: Vec<_> = if db.name == "postgres" {
            (0..3)
                .map(run)
                .collect::<Vec<_>>()
                .into_iter()
                .map(|t| t.join().unwrap())
                .collect()
        } else {
            (0..3).map(|k| run(k).join().unwrap()).collect()
        };
        for o in &outputs {
            assert!(o.status.success(), "{}: {}", db.name, text(o));
        }
        assert_eq!(
            rows(&db, FORECASTS).await,
            single,
            "{}: the shards' union",
            db.name
        );
        let per_shard = rows(
            &db,
            "SELECT shard, rows_read FROM prescore_runs WHERE command = 'score' AND shard LIKE '%/3' ORDER BY shard",
        )
        .await;
        assert_eq!(per_shard.len(), 3, "{}", db.name);
        for r in &per_shard {
            let read: f64 = r[1].parse().unwrap();
            let share = read / total_read as f64;
            assert!(
                (share - 1.0 / 3.0).abs() < 0.2 / 3.0,
                "{}: shard {} read {read} of {total_read} rows",
                db.name,
                r[0]
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_whose_split_disagrees_with_the_shard_is_refused_and_changes_nothing() {
    for db in backends("shard_mismatch") {
        seed_energy(&db, 30, 30, 9);
        let as_of = as_of();
        let at = as_of.as_str();
        let good = pushed_down(&db, false);
        let o = prescore(
            &["run", "--config", good.to_str().unwrap(), "--as-of", at],
            &[],
        );
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
        let before = rows(&db, FORECASTS).await;
        let bad = pushed_down(&db, true);
        let o = prescore(
            &[
                "score",
                "--config",
                bad.to_str().unwrap(),
                "--as-of",
                at,
                "--shard",
                "1/3",
            ],
            &[],
        );
        assert_eq!(o.status.code(), Some(3), "{}: {}", db.name, text(&o));
        assert!(
            text(&o).contains("belongs to shard 0, not to this shard 1/3"),
            "{}: {}",
            db.name,
            text(&o)
        );
        assert_eq!(rows(&db, FORECASTS).await, before, "{}", db.name);
    }
}

const CHURN: &str = "configs/churn_daily.toml";

#[tokio::test(flavor = "multi_thread")]
async fn a_group_is_complete_only_when_every_shard_succeeded_and_shards_need_a_champion() {
    for db in backends("shard_group") {
        seed_churn(&db, 600);
        let cfg = config(&db, CHURN, &[]);
        let c = cfg.to_str().unwrap();
        let shard = |k: usize| {
            let s = format!("{k}/3");
            prescore(
                &[
                    "score",
                    "--config",
                    c,
                    "--shard",
                    &s,
                    "--run-group",
                    "nightly-7",
                ],
                &[],
            )
        };
        // Before any champion: a clear failure that says to train first.
        let o = shard(0);
        assert_eq!(o.status.code(), Some(1), "{}: {}", db.name, text(&o));
        assert!(
            text(&o).contains("prescore train"),
            "{}: {}",
            db.name,
            text(&o)
        );

        let o = prescore(&["train", "--config", c], &[]);
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
        for k in 0..2 {
            let o = shard(k);
            assert!(o.status.success(), "{}: {}", db.name, text(&o));
        }
        let status = || prescore(&["status", "--config", c, "--run-group", "nightly-7"], &[]);
        let o = status();
        assert_eq!(o.status.code(), Some(6), "{}: {}", db.name, text(&o));
        assert!(
            text(&o).contains("2 of 3 shards succeeded")
                && text(&o).contains("shard 2/3 never ran"),
            "{}: {}",
            db.name,
            text(&o)
        );
        let o = prescore(&["runs", "--config", c], &[]);
        assert!(
            text(&o).contains("group nightly-7: 2 of 3 shards succeeded"),
            "{}: {}",
            db.name,
            text(&o)
        );
        let o = shard(2);
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
        let o = status();
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
        assert!(text(&o).contains("3 of 3 shards succeeded"), "{}", text(&o));
        // A group nobody ran is not complete either.
        let o = prescore(&["status", "--config", c, "--run-group", "nightly-8"], &[]);
        assert_eq!(o.status.code(), Some(6), "{}: {}", db.name, text(&o));
    }
}
