//! Shards that split the work: with `:shard_index` and `:shard_count` in the job's SQL each
//! shard reads about 1/N of the rows, and the shards together publish exactly what one
//! process publishes; SQL whose split disagrees with prescore's is refused; text keys split in
//! SQL on both dialects; a shard SIGKILLed inside its publish leaves its slice as it was and
//! its rerun completes the table.

use std::process::{Child, Output};
use std::sync::mpsc;
use std::time::{Duration, Instant};

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

/// Trains, then scores in one (unsharded) process as of `at`; returns the published rows
/// that `values` selects: what the shards must reproduce.
async fn one_process(db: &Db, c: &str, at: &str, values: &str) -> Vec<Vec<String>> {
    for command in ["train", "score"] {
        let o = prescore(&[command, "--config", c, "--as-of", at], &[]);
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
    }
    rows(db, values).await
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
        let single = one_process(&db, c, at, FORECASTS).await;
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

/// The score job with its scoring SQL split by shard (training reads everything).
fn churn_pushed_down(db: &Db) -> std::path::PathBuf {
    let score = std::fs::read_to_string(format!("{ROOT}/sql/churn_daily/score.sql")).unwrap();
    let score = format!(
        "{}\n  AND customer_id % :shard_count = :shard_index\n",
        score.trim_end()
    );
    let s = sql_file(db, "score_sharded.sql", &score);
    config(
        db,
        CHURN,
        &[(&format!("{ROOT}/sql/churn_daily/score.sql"), s.as_str())],
    )
}

const CHURN_VALUES: &str =
    "SELECT customer_id, score, label, model_version, as_of FROM churn_scores ORDER BY customer_id";
const CHURN_ROWS: &str = "SELECT * FROM churn_scores ORDER BY customer_id";
const FORECAST_ROWS: &str = "SELECT * FROM energy_forecasts ORDER BY series_id, target_ts";

/// Waits for a child on a thread of its own: its output arrives on the channel.
fn waiter(child: Child) -> mpsc::Receiver<Output> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output().unwrap());
    });
    rx
}

/// The rows (rendered) whose key, the first column, belongs to shard `k` of 3 (`owned`) or not.
fn slice(rows: &[Vec<String>], k: i64, owned: bool) -> Vec<Vec<String>> {
    rows.iter()
        .filter(|r| (r[0].parse::<i64>().unwrap().rem_euclid(3) == k) == owned)
        .cloned()
        .collect()
}

/// Three shard processes of group `group` start together; shard 1 pauses inside its publish
/// transaction and is SIGKILLed there. The other two publish (on PostgreSQL while shard 1
/// still holds its transaction open: no table lock serializes them), shard 1's slice stays
/// as it was (`before`, every column, run ids included), `status` says the group is
/// incomplete, and shard 1 run again alone completes the table to the values one unsharded
/// run published (`single`, read by `values`).
#[allow(clippy::too_many_arguments)]
async fn kill_one_shard_mid_publish(
    db: &Db,
    c: &str,
    at: &str,
    group: &str,
    values: &str,
    all: &str,
    single: &[Vec<String>],
    before: &[Vec<String>],
) {
    let shard = |k: usize, envs: &[(&str, &str)]| {
        let s = format!("{k}/3");
        spawn(
            &[
                "score",
                "--config",
                c,
                "--as-of",
                at,
                "--shard",
                &s,
                "--run-group",
                group,
            ],
            envs,
        )
    };
    let pause = [
        ("PRESCORE_PAUSE_AT", "commit"),
        ("PRESCORE_PAUSE_SECS", "60"),
    ];
    let mut victim = shard(1, &pause);
    let others = [waiter(shard(0, &[])), waiter(shard(2, &[]))];

    // Wait until shard 1 is paused inside its publish transaction.
    let mut stderr = victim.stderr.take().unwrap();
    // The reader drains shard 1's stderr to the end, so that a line it logs while paused
    // never meets a closed pipe.
    let (tx, paused) = mpsc::channel();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        let mut told = false;
        while stderr.read(&mut byte).unwrap_or(0) == 1 {
            buf.push(byte[0]);
            if !told && String::from_utf8_lossy(&buf).contains("paused at commit") {
                told = true;
                let _ = tx.send(Ok(()));
            }
        }
        if !told {
            let _ = tx.send(Err(String::from_utf8_lossy(&buf).into_owned()));
        }
    });
    if let Err(e) = paused.recv().unwrap() {
        panic!("{}: shard 1 never reached its commit: {e}", db.name);
    }
    let finish = |rx: &mpsc::Receiver<Output>| {
        let o = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("a shard did not finish within 120 s");
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
    };
    if db.name == "postgres" {
        // Both publish while shard 1's transaction is still open (it sleeps 60 s there).
        let t = Instant::now();
        others.iter().for_each(finish);
        assert!(
            t.elapsed() < Duration::from_secs(50),
            "{}: the other shards waited for the paused one",
            db.name
        );
        assert!(victim.try_wait().unwrap().is_none(), "{}", db.name);
        victim.kill().unwrap();
        victim.wait().unwrap();
    } else {
        // SQLite has one writer: shard 1 holds the file until it dies, and the others,
        // waiting in their busy timeout, then go ahead.
        victim.kill().unwrap();
        victim.wait().unwrap();
        others.iter().for_each(finish);
    }

    let now = rows(db, values).await;
    for k in [0, 2] {
        assert_eq!(
            slice(&now, k, true),
            slice(single, k, true),
            "{}: shard {k}'s slice",
            db.name
        );
    }
    assert_eq!(
        slice(&rows(db, all).await, 1, true),
        slice(before, 1, true),
        "{}: the killed shard's slice changed",
        db.name
    );

    let status = || prescore(&["status", "--config", c, "--run-group", group], &[]);
    let o = status();
    assert_eq!(o.status.code(), Some(6), "{}: {}", db.name, text(&o));
    assert!(
        text(&o).contains("2 of 3 shards succeeded"),
        "{}: {}",
        db.name,
        text(&o)
    );

    // Shard 1 again, alone: its lock is taken over at once (the holder's PID is gone on
    // SQLite; the session died with it on PostgreSQL), and the table is complete.
    let o = shard(1, &[]).wait_with_output().unwrap();
    assert!(o.status.success(), "{}: {}", db.name, text(&o));
    assert_eq!(
        rows(db, values).await,
        single,
        "{}: after the rerun",
        db.name
    );
    let o = status();
    assert!(o.status.success(), "{}: {}", db.name, text(&o));
    assert!(text(&o).contains("3 of 3 shards succeeded"), "{}", text(&o));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_score_shard_killed_mid_publish_leaves_its_slice_and_a_rerun_completes_the_table() {
    for db in backends("shard_kill") {
        seed_churn(&db, 900);
        let cfg = churn_pushed_down(&db);
        let c = cfg.to_str().unwrap();
        let as_of = as_of();
        let at = as_of.as_str();
        let single = one_process(&db, c, at, CHURN_VALUES).await;
        // The table stays: the killed shard's slice must keep the unsharded run's rows, run
        // ids and times included.
        let before = rows(&db, CHURN_ROWS).await;
        assert!(slice(&before, 1, true).len() > 100, "{}", db.name);
        kill_one_shard_mid_publish(
            &db,
            c,
            at,
            "kill-score",
            CHURN_VALUES,
            CHURN_ROWS,
            &single,
            &before,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forecast_shard_killed_mid_publish_on_a_first_run_leaves_its_series_absent() {
    for db in backends("shard_kill_fc") {
        seed_energy(&db, 30, 30, 9);
        let cfg = pushed_down(&db, false);
        let c = cfg.to_str().unwrap();
        let as_of = as_of();
        let at = as_of.as_str();
        let single = one_process(&db, c, at, FORECASTS).await;
        // A first run: no tables, so the killed shard's series must be absent.
        rows(&db, "DROP TABLE energy_forecasts").await;
        rows(&db, "DROP TABLE energy_forecasts_history").await;
        kill_one_shard_mid_publish(
            &db,
            c,
            at,
            "kill-forecast",
            FORECASTS,
            FORECAST_ROWS,
            &single,
            &[],
        )
        .await;
    }
}

/// A text key's split, computed in SQL on each dialect (README, "To make each shard read only
/// its own entities"): PostgreSQL hashes it, SQLite, which has no hash function, weighs its
/// last two characters.
fn text_split(db: &Db) -> &'static str {
    if db.name == "postgres" {
        "(hashtext(customer_id) & 2147483647) % :shard_count = :shard_index"
    } else {
        "(unicode(substr('00' || customer_id, -1)) + 31 * unicode(substr('00' || customer_id, -2, 1))) \
         % :shard_count = :shard_index"
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn text_keys_split_in_sql_on_both_dialects_give_what_one_process_does() {
    for db in backends("shard_text") {
        seed_churn(&db, 900);
        // The churn data with a text key, "C-<id>".
        rows(
            &db,
            "CREATE VIEW customer_months_text AS SELECT 'C-' || customer_id AS customer_id, \
             period_end, tenure_months, plan, region, monthly_usage_gb, usage_change_pct, \
             support_tickets, payment_delays, churned FROM customer_months",
        )
        .await;
        let read = |name: &str| {
            std::fs::read_to_string(format!("{ROOT}/sql/churn_daily/{name}"))
                .unwrap()
                .replace("FROM customer_months", "FROM customer_months_text")
        };
        let train = sql_file(&db, "train_text.sql", &read("train.sql"));
        let score = format!(
            "SELECT * FROM ({}) s WHERE {}",
            read("score.sql").trim_end(),
            text_split(&db)
        );
        let score = sql_file(&db, "score_text.sql", &score);
        let cfg = config(
            &db,
            CHURN,
            &[
                (&format!("{ROOT}/sql/churn_daily/train.sql"), train.as_str()),
                (&format!("{ROOT}/sql/churn_daily/score.sql"), score.as_str()),
                ("customer_id = \"int\"", "customer_id = \"text\""),
            ],
        );
        let c = cfg.to_str().unwrap();
        let as_of = as_of();
        let at = as_of.as_str();
        let single = one_process(&db, c, at, CHURN_VALUES).await;
        assert!(
            single.len() > 300 && single[0][0].starts_with("C-"),
            "{single:?}"
        );
        let total = single.len() as f64;
        rows(&db, "DROP TABLE churn_scores").await;

        for k in 0..3 {
            let s = format!("{k}/3");
            let o = prescore(&["score", "--config", c, "--as-of", at, "--shard", &s], &[]);
            assert!(o.status.success(), "{}: {}", db.name, text(&o));
        }
        assert_eq!(rows(&db, CHURN_VALUES).await, single, "{}", db.name);
        let per_shard = rows(
            &db,
            "SELECT shard, rows_read FROM prescore_runs WHERE command = 'score' AND shard LIKE '%/3' ORDER BY shard",
        )
        .await;
        assert_eq!(per_shard.len(), 3, "{}", db.name);
        for r in &per_shard {
            let share = r[1].parse::<f64>().unwrap() / total;
            assert!(
                (share - 1.0 / 3.0).abs() < 0.2 / 3.0,
                "{}: shard {} read {} of {total} rows",
                db.name,
                r[0],
                r[1]
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_first_shard_prunes_the_forecast_history() {
    for db in backends("shardprune") {
        seed_energy(&db, 6, 20, 1);
        let keep = ("[output]\n", "[output]\nkeep_history = \"2d\"\n");
        let cfg = config(&db, ENERGY, &[keep]);
        let c = cfg.to_str().unwrap();
        let now = chrono::Utc::now();
        let stamp = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:00:00Z").to_string();
        // A backfill five days back leaves history rows past the window of a run now.
        let old = stamp(now - chrono::Duration::days(5));
        let o = prescore(&["run", "--config", c, "--as-of", &old], &[]);
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
        // Both warehouses compare a date-only literal with their stored as_of.
        let cutoff = (now - chrono::Duration::days(3)).format("%Y-%m-%d");
        let expired =
            format!("SELECT COUNT(*) FROM energy_forecasts_history WHERE as_of < '{cutoff}'");
        let before: i64 = rows(&db, &expired).await[0][0].parse().unwrap();
        assert!(before > 0, "{}: no history rows at {old}", db.name);
        let o = prescore(&["run", "--config", c, "--shard", "1/2"], &[]);
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
        let kept: i64 = rows(&db, &expired).await[0][0].parse().unwrap();
        assert_eq!(kept, before, "{}: shard 1 pruned", db.name);
        let o = prescore(&["run", "--config", c, "--shard", "0/2"], &[]);
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
        let left: i64 = rows(&db, &expired).await[0][0].parse().unwrap();
        assert_eq!(left, 0, "{}: shard 0 keeps the window", db.name);
    }
}
