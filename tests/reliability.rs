//! Faults and bad input: every case exits with its documented code, names the problem, and
//! leaves the previous predictions exactly as they were.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

const CHURN: &str = "configs/churn_daily.toml";

/// Runs a good job once, then `bad` (SQL text for the scoring query, or config edits), and
/// checks the exit code, that the message contains `needle`, and that nothing changed.
async fn refused(
    db: &Db,
    score_sql: Option<&str>,
    edits: &[(&str, &str)],
    code: i32,
    needle: &str,
) {
    let before = rows(db, "SELECT * FROM churn_scores ORDER BY customer_id").await;
    let mut all: Vec<(String, String)> = edits
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    if let Some(sql) = score_sql {
        let path = sql_file(
            db,
            &format!("bad{}.sql", all.len() + before.len() % 97),
            sql,
        );
        all.push((format!("{ROOT}/sql/churn_daily/score.sql"), path));
    }
    let refs: Vec<(&str, &str)> = all.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let cfg = config(db, CHURN, &refs);
    let o = prescore(&["run", "--config", cfg.to_str().unwrap()], &[]);
    assert_eq!(
        o.status.code(),
        Some(code),
        "{} {needle}: {}",
        db.name,
        text(&o)
    );
    assert!(
        text(&o).contains(needle),
        "{}: expected {needle:?} in {}",
        db.name,
        text(&o)
    );
    let after = rows(db, "SELECT * FROM churn_scores ORDER BY customer_id").await;
    assert_eq!(
        before, after,
        "{}: {needle}: previous predictions changed",
        db.name
    );
}

const FEATURES: &str = "customer_id, tenure_months, plan, region, monthly_usage_gb, usage_change_pct, support_tickets, payment_delays";

/// The scoring query over the latest month with one column replaced by `expr AS column`.
fn latest_with(column: &str, expr: &str) -> String {
    let cols = FEATURES.replacen(column, &format!("{expr} AS {column}"), 1);
    format!("SELECT {cols} FROM customer_months WHERE period_end = (SELECT MAX(period_end) FROM customer_months)")
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_refused_with_a_clear_message() {
    for db in backends("bad_input") {
        seed_churn(&db, 1500);
        assert!(prescore(
            &["run", "--config", config(&db, CHURN, &[]).to_str().unwrap()],
            &[]
        )
        .status
        .success());
        let latest = "period_end = (SELECT MAX(period_end) FROM customer_months)";
        // Empty source.
        refused(
            &db,
            Some(&format!(
                "SELECT {FEATURES} FROM customer_months WHERE 1 = 0"
            )),
            &[],
            3,
            "0 row(s)",
        )
        .await;
        // Duplicate keys.
        refused(
            &db,
            Some(&format!("SELECT {FEATURES} FROM customer_months")),
            &[],
            3,
            "duplicate key customer_id=",
        )
        .await;
        // Missing column.
        refused(
            &db,
            Some(&format!(
                "SELECT customer_id, plan FROM customer_months WHERE {latest}"
            )),
            &[],
            3,
            "returned no column",
        )
        .await;
        // Wrong type: text where an int is declared.
        refused(
            &db,
            Some(&latest_with("tenure_months", "plan")),
            &[],
            3,
            "tenure_months",
        )
        .await;
        // NULL in a feature.
        refused(
            &db,
            Some(&latest_with(
                "monthly_usage_gb",
                "CASE WHEN customer_id = 7 THEN NULL ELSE monthly_usage_gb END",
            )),
            &[],
            3,
            "monthly_usage_gb",
        )
        .await;
        // Absurd magnitude.
        refused(
            &db,
            Some(&latest_with("monthly_usage_gb", "monthly_usage_gb * 1e20")),
            &[],
            3,
            "absurd",
        )
        .await;
        // A sudden drop: a third of last run's customers.
        refused(
            &db,
            Some(&format!(
                "SELECT {FEATURES} FROM customer_months WHERE {latest} AND customer_id % 3 = 0"
            )),
            &[],
            3,
            "refusing to publish a partial result",
        )
        .await;
        // Unknown algorithm, unknown key, malformed TOML: config errors, exit 2.
        refused(
            &db,
            None,
            &[(
                "algorithm = \"decision_tree\"",
                "algorithm = \"deep_magic\"",
            )],
            2,
            "model.algorithm",
        )
        .await;
        refused(
            &db,
            None,
            &[("[output]", "[output]\ncolour = \"red\"")],
            2,
            "colour",
        )
        .await;
        refused(&db, None, &[("[output]", "[output")], 2, "line").await;
        // Injection attempt in a table name.
        refused(
            &db,
            None,
            &[(
                "table = \"churn_scores\"",
                "table = \"churn_scores\\\"; DROP TABLE customer_months; --\"",
            )],
            2,
            "not a valid identifier",
        )
        .await;
        // A single class in the labels: nothing to learn.
        let one_class = sql_file(
            &db,
            "one_class.sql",
            "SELECT customer_id, period_end, tenure_months, plan, region, monthly_usage_gb, usage_change_pct, \
             support_tickets, payment_delays, churned FROM customer_months WHERE churned = false AND period_end <= :as_of",
        );
        refused(
            &db,
            None,
            &[(&format!("{ROOT}/sql/churn_daily/train.sql"), &one_class)],
            3,
            "same class",
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_warehouse_and_wrong_password_fail_with_code_1_and_no_secret() {
    let db = sqlite();
    let cfg = config(
        &db,
        CHURN,
        &[(
            db.url.as_str(),
            "postgres://prescore:hunter2@127.0.0.1:1/nowhere",
        )],
    );
    let o = prescore(&["run", "--config", cfg.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("cannot connect"), "{}", text(&o));
    assert!(
        !text(&o).contains("hunter2"),
        "the password leaked: {}",
        text(&o)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_run_of_the_same_job_exits_already_running() {
    for db in backends("lock") {
        seed_churn(&db, 1000);
        let cfg = config(&db, CHURN, &[]);
        let mut first = Command::new(BIN)
            .args(["run", "--config", cfg.to_str().unwrap()])
            .env("PRESCORE_PAUSE_AT", "read")
            .env("PRESCORE_PAUSE_SECS", "5")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for_ledger(&db, "running").await;
        let second = prescore(&["run", "--config", cfg.to_str().unwrap()], &[]);
        assert_eq!(
            second.status.code(),
            Some(5),
            "{}: {}",
            db.name,
            text(&second)
        );
        assert!(
            text(&second).contains("already running"),
            "{}",
            text(&second)
        );
        assert!(
            first.wait().unwrap().success(),
            "{}: the first run failed",
            db.name
        );
    }
}

async fn wait_for_ledger(db: &Db, status: &str) {
    let start = Instant::now();
    loop {
        let ok = tokio::time::timeout(Duration::from_secs(5), async {
            let wh = prescore::warehouse::Warehouse::connect(&db.url, 1)
                .await
                .ok()?;
            let r = wh
                .fetch(
                    "SELECT COUNT(*) FROM prescore_runs WHERE status = $1",
                    &[prescore::warehouse::Value::text(status)],
                )
                .await
                .ok()?;
            wh.close().await;
            r[0][0].as_i64()
        })
        .await
        .ok()
        .flatten()
        .unwrap_or(0);
        if ok > 0 {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no {status} run appeared"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_at_any_stage_leaves_the_table_as_it_was() {
    for db in backends("kill") {
        seed_churn(&db, 1500);
        let cfg = config(&db, CHURN, &[]);
        let c = cfg.to_str().unwrap();
        assert!(prescore(&["run", "--config", c], &[]).status.success());
        let before = rows(&db, "SELECT * FROM churn_scores ORDER BY customer_id").await;
        // The last kill is inside a replacing publish: after the TRUNCATE (PostgreSQL) or
        // DELETE (SQLite) and the new rows, before the commit.
        let replace = config(&db, CHURN, &[WRITE_REPLACE]);
        let kills = [
            ("read", c),
            ("train", c),
            ("trained", c),
            ("score", c),
            ("commit", c),
            ("commit", replace.to_str().unwrap()),
        ];
        for (stage, c) in kills {
            let mut child = Command::new(BIN)
                .args(["run", "--config", c])
                .env("PRESCORE_PAUSE_AT", stage)
                .env("PRESCORE_PAUSE_SECS", "60")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            // Wait until the process says it paused at the stage, then SIGKILL it.
            let mut stderr = child.stderr.take().unwrap();
            let paused = std::thread::spawn(move || {
                use std::io::Read;
                let mut buf = Vec::new();
                let mut byte = [0u8; 1];
                while stderr.read(&mut byte).unwrap_or(0) == 1 {
                    buf.push(byte[0]);
                    if String::from_utf8_lossy(&buf).contains("paused at") {
                        return true;
                    }
                }
                false
            });
            assert!(paused.join().unwrap(), "{}: never reached {stage}", db.name);
            child.kill().unwrap();
            child.wait().unwrap();
            let after = rows(&db, "SELECT * FROM churn_scores ORDER BY customer_id").await;
            assert_eq!(
                before, after,
                "{}: killed at {stage}, the table changed",
                db.name
            );
        }
        let o = prescore(&["run", "--config", c], &[]);
        assert!(
            o.status.success(),
            "{}: the run after the kills failed: {}",
            db.name,
            text(&o)
        );
        let abandoned = rows(
            &db,
            "SELECT COUNT(*) FROM prescore_runs WHERE status = 'abandoned'",
        )
        .await;
        assert_eq!(abandoned[0][0], "6", "{}", db.name);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn more_bad_input_future_timestamps_infinity_and_a_foreign_results_table() {
    for db in backends("bad_input_2") {
        seed_churn(&db, 800);
        assert!(prescore(
            &["run", "--config", config(&db, CHURN, &[]).to_str().unwrap()],
            &[]
        )
        .status
        .success());
        // Infinity in a feature (each dialect spells it its own way).
        let infinity = if db.name == "postgres" {
            "'Infinity'::float8"
        } else {
            "9e999"
        };
        refused(
            &db,
            Some(&latest_with("monthly_usage_gb", infinity)),
            &[],
            3,
            "monthly_usage_gb",
        )
        .await;
        // Training rows after the as-of time: the SQL ignores :as_of, and the run is a backfill.
        let leaky = sql_file(
            &db,
            "leaky.sql",
            "SELECT customer_id, period_end, tenure_months, plan, region, monthly_usage_gb, usage_change_pct, \
             support_tickets, payment_delays, churned FROM customer_months WHERE churned IS NOT NULL",
        );
        let cfg = config(
            &db,
            CHURN,
            &[(&format!("{ROOT}/sql/churn_daily/train.sql"), &leaky)],
        );
        let past = (chrono::Utc::now() - chrono::Duration::days(62))
            .format("%Y-%m-%d")
            .to_string();
        let o = prescore(
            &["run", "--config", cfg.to_str().unwrap(), "--as-of", &past],
            &[],
        );
        assert_eq!(o.status.code(), Some(3), "{}: {}", db.name, text(&o));
        assert!(
            text(&o).contains("after the run's as-of time"),
            "{}",
            text(&o)
        );
        // A results table that is not this job's.
        let other = config(
            &db,
            CHURN,
            &[("table = \"churn_scores\"", "table = \"customer_months\"")],
        );
        let o = prescore(&["run", "--config", other.to_str().unwrap()], &[]);
        assert_eq!(o.status.code(), Some(1), "{}: {}", db.name, text(&o));
        assert!(
            text(&o).contains("does not match this job") && text(&o).contains("score"),
            "{}",
            text(&o)
        );
        let before = count(&db, "customer_months").await;
        assert!(before > 0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dropped_connections_mid_run_are_survived_and_published_once() {
    let Some(db) = postgres("dropped") else {
        return;
    };
    seed_churn(&db, 1000);
    let cfg = config(&db, CHURN, &[]);
    let child = Command::new(BIN)
        .args(["run", "--config", cfg.to_str().unwrap()])
        .env("PRESCORE_PAUSE_AT", "score")
        .env("PRESCORE_PAUSE_SECS", "3")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_ledger(&db, "running").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Terminate every pooled connection of the run (as a server restart or a proxy would),
    // except the lock's, which the run holds for its whole life.
    let db_name = db.url.rsplit('/').next().unwrap().to_string();
    let killed = Command::new("psql")
        .args([
            &std::env::var("PRESCORE_TEST_PG")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
            "-Atc",
            &format!(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = '{db_name}' AND application_name = 'prescore' \
                 AND pid NOT IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory')"
            ),
        ])
        .output()
        .unwrap();
    let n: i64 = String::from_utf8_lossy(&killed.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    assert!(
        n >= 1,
        "no connection was terminated: {}",
        String::from_utf8_lossy(&killed.stderr)
    );
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the run did not survive dropped connections: {}",
        text(&out)
    );
    assert_eq!(last_run(&db).await.0, "succeeded");
    let active = rows(
        &db,
        "SELECT COUNT(*) FROM customer_months WHERE churned IS NULL",
    )
    .await[0][0]
        .clone();
    assert_eq!(count(&db, "churn_scores").await.to_string(), active);
}

#[tokio::test(flavor = "multi_thread")]
async fn least_privilege_roles_job_writes_reader_only_reads_and_no_permission_is_exit_1() {
    let Some(db) = postgres("roles") else { return };
    seed_churn(&db, 800);
    let suffix = db.url.rsplit('_').next().unwrap().to_string();
    let (job_role, reader_role) = (format!("pj_{suffix}"), format!("pr_{suffix}"));
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
    let host_db = db.url.split_once("@").unwrap().1.to_string();
    let job_url = format!("postgres://{job_role}:x@{host_db}");
    let reader_url = format!("postgres://{reader_role}:y@{host_db}");

    // The job's role runs the job; its tables land in the prescore schema.
    let job_db = Db::borrowed(&db, &job_url);
    let cfg = config(&job_db, CHURN, &[]);
    let o = prescore(&["run", "--config", cfg.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        !text(&o).contains(":x@"),
        "the password leaked: {}",
        text(&o)
    );

    // The reader may read and may not write.
    let o = psql(
        &reader_url,
        &["-Atc", "SELECT count(*) FROM prescore.churn_scores"],
    );
    assert!(
        o.status.success()
            && String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<i64>()
                .unwrap()
                > 0,
        "{}",
        text(&o)
    );
    let o = psql(&reader_url, &["-c", "DELETE FROM prescore.churn_scores"]);
    assert!(
        !o.status.success() && text(&o).contains("permission denied"),
        "{}",
        text(&o)
    );

    // A results table the job may not write: exit 1, the message says so, the row stays.
    let admin = psql(
        &db.url,
        &["-v", "ON_ERROR_STOP=1", "-c", "CREATE TABLE public.locked_scores (customer_id BIGINT PRIMARY KEY, score DOUBLE PRECISION, label BIGINT, \
          model_version BIGINT, run_id TEXT, as_of TIMESTAMPTZ, scored_at TIMESTAMPTZ); \
          INSERT INTO public.locked_scores VALUES (1, 0.5, 0, 0, 'before', now(), now())"],
    );
    assert!(admin.status.success(), "{}", text(&admin));
    let locked = config(
        &job_db,
        CHURN,
        &[(
            "table = \"churn_scores\"",
            "table = \"public.locked_scores\"",
        )],
    );
    let o = prescore(&["score", "--config", locked.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("permission denied"), "{}", text(&o));
    let o = psql(
        &db.url,
        &["-Atc", "SELECT run_id FROM public.locked_scores"],
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "before");

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
