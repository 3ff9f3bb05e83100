//! Reliability and security, round two (issue 13): repeated columns, unclear messages, SQLite
//! lock contention, SQL that writes, secrets, signals, bounded waits (job.timeout,
//! lock_timeout), registry hygiene (registry.keep, orphaned candidates) and a migration that
//! takes no locks when the schema is current. Each test first pins the fault it fixes.

use std::process::{Child, Command, Stdio};

use crate::cluster::{Cluster, Setup};
use crate::support::*;

const CHURN: &str = "configs/churn_daily.toml";
const WEATHER: &str = "configs/weather_hourly.toml";
const SCORE_SQL: &str = "/sql/churn_daily/score.sql";

/// The churn scoring query with its select list replaced by `select`.
fn scoring(select: &str) -> String {
    format!("SELECT {select} FROM customer_months WHERE period_end = (SELECT MAX(period_end) FROM customer_months)")
}

const FEATURES: &str = "customer_id, tenure_months, plan, region, monthly_usage_gb, usage_change_pct, support_tickets, payment_delays";

/// A churn config whose scoring SQL is `sql`, written to a file of the test; returns the config
/// and the SQL file's path.
fn churn_scoring(db: &Db, name: &str, sql: &str) -> (String, String) {
    let file = sql_file(db, name, sql);
    let from = format!("{ROOT}{SCORE_SQL}");
    let cfg = config(db, CHURN, &[(from.as_str(), file.as_str())]);
    (cfg.display().to_string(), file)
}

/// Runs `check` and `run` on `cfg`; both must exit `code` with `needle` in their output, and
/// the published churn scores must stay exactly as they were.
async fn both_refuse(db: &Db, cfg: &str, code: i32, needle: &str) {
    let before = rows(db, "SELECT * FROM churn_scores ORDER BY customer_id").await;
    for cmd in ["check", "run"] {
        let o = prescore(&[cmd, "--config", cfg], &[]);
        assert_eq!(
            o.status.code(),
            Some(code),
            "{} {cmd}: {}",
            db.name,
            text(&o)
        );
        assert!(
            text(&o).contains(needle),
            "{} {cmd}: expected {needle:?} in {}",
            db.name,
            text(&o)
        );
    }
    let after = rows(db, "SELECT * FROM churn_scores ORDER BY customer_id").await;
    assert_eq!(before, after, "{}: the published scores changed", db.name);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_column_returned_twice_is_a_contract_error_naming_it() {
    for db in backends("dupcol") {
        published_churn(&db, 600).await;
        // `payment_delays AS tenure_months, tenure_months`: two columns named tenure_months.
        let select = FEATURES.replacen(
            "tenure_months",
            "payment_delays AS tenure_months, tenure_months",
            1,
        );
        let (cfg, _) = churn_scoring(&db, "dup.sql", &scoring(&select));
        both_refuse(
            &db,
            &cfg,
            3,
            "the SQL returns column \"tenure_months\" more than once",
        )
        .await;
        // An undeclared column may repeat: the contract never reads it.
        let select = format!("{FEATURES}, 1 AS extra, 2 AS extra");
        let (cfg, _) = churn_scoring(&db, "extra.sql", &scoring(&select));
        let o = prescore(&["run", "--config", &cfg], &[]);
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
    }
}

/// A weather config with `edits`; `check` and `run` both exit 2 naming `key` and `needle`.
fn config_refused(db: &Db, edits: &[(&str, &str)], key: &str, needle: &str) {
    let cfg = config(db, WEATHER, edits);
    for cmd in ["check", "run"] {
        let o = prescore(&[cmd, "--config", cfg.to_str().unwrap()], &[]);
        let out = text(&o);
        assert_eq!(o.status.code(), Some(2), "{cmd} {edits:?}: {out}");
        assert!(
            out.contains(key) && out.contains(needle),
            "{cmd} {edits:?}: expected {key} and {needle:?} in {out}"
        );
        assert!(!out.contains("panicked"), "{cmd} {edits:?}: {out}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unclear_config_values_exit_2_with_a_message_naming_the_key() {
    let db = sqlite();
    let step = r#"step = "1h""#;
    config_refused(
        &db,
        &[(step, r#"step = "0s""#)],
        "forecast.step",
        "between 1s and 7d",
    );
    config_refused(
        &db,
        &[(step, r#"step = "999999999999d""#)],
        "forecast.step",
        "\"999999999999d\" is longer than",
    );
    // Absurd durations elsewhere used to panic (exit 101) or overflow a back-off.
    let absurd = "\"999999999999d\"";
    for (section, key) in [
        ("[output]\n", "keep_history"),
        ("[model]\n", "retrain"),
        ("[job]\n", "retry_backoff"),
        ("[job]\n", "timeout"),
        ("[job]\n", "lock_timeout"),
        ("[job]\n", "statement_timeout"),
    ] {
        let edit = format!("{section}{key} = {absurd}\n");
        let path = format!("{}.{key}", section.trim_matches(['[', ']', '\n']));
        config_refused(&db, &[(section, &edit)], &path, "is longer than");
    }
    // A zero time-out would mean "no limit" to PostgreSQL: refused.
    config_refused(
        &db,
        &[("[job]\n", "[job]\nlock_timeout = \"0s\"\n")],
        "job.lock_timeout",
        "must be at least 1ms",
    );
    let dir = db.dir.path().display().to_string();
    let sql = format!("{ROOT}/sql/weather_hourly/history.sql");
    config_refused(
        &db,
        &[(sql.as_str(), dir.as_str())],
        "input.train_sql",
        "is a directory, not an SQL file",
    );
    for table in ["PRESCORE_RUNS", "main.prescore_runs", "Prescore_Locks"] {
        config_refused(
            &db,
            &[("\"weather_forecasts\"", &format!("\"{table}\""))],
            "output.table",
            "reserved for prescore's own tables",
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_all_null_forecast_target_is_named() {
    for db in backends("nulltarget") {
        seed(
            &db,
            &["--customers", "100", "--meters", "5", "--days", "20"],
        );
        let sql = sql_file(
            &db,
            "null.sql",
            "SELECT region, ts, CAST(NULL AS REAL) AS temperature FROM weather WHERE ts <= :as_of",
        );
        let from = format!("{ROOT}/sql/weather_hourly/history.sql");
        let cfg = config(
            &db,
            WEATHER,
            &[
                (from.as_str(), sql.as_str()),
                (
                    "[input]\n",
                    "[input]\nmax_null_fraction = { temperature = 1.0 }\n",
                ),
            ],
        );
        let o = prescore(&["run", "--config", cfg.to_str().unwrap()], &[]);
        assert_eq!(o.status.code(), Some(3), "{}: {}", db.name, text(&o));
        assert!(
            text(&o).contains("no series can be forecast")
                && text(&o).contains("every value of \"temperature\" is NULL"),
            "{}: {}",
            db.name,
            text(&o)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_jobs_and_shards_started_together_all_succeed() {
    let db = sqlite();
    seed(
        &db,
        &["--customers", "1500", "--meters", "5", "--days", "20"],
    );
    let churn = config(&db, CHURN, &[]);
    let churn = churn.to_str().unwrap();
    let o = prescore(&["train", "--config", churn], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let weather = config(&db, WEATHER, &[]);
    let shards = ["0/4", "1/4", "2/4", "3/4"];
    let mut children: Vec<Child> = shards
        .iter()
        .map(|s| spawn(&["run", "--config", churn, "--shard", s], &[]))
        .collect();
    children.push(spawn(&["run", "--config", weather.to_str().unwrap()], &[]));
    children.push(spawn(&["train", "--config", churn], &[]));
    for (i, (code, err)) in wait_all(children).into_iter().enumerate() {
        assert_eq!(code, Some(0), "process {i}: {err}");
    }
    assert!(count(&db, "churn_scores").await > 0);
    assert!(count(&db, "weather_forecasts").await > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn five_sqlite_runs_of_one_job_give_one_success_and_four_exit_5() {
    let db = sqlite();
    seed_churn(&db, 800);
    let cfg = config(&db, CHURN, &[]);
    let cfg = cfg.to_str().unwrap();
    // Whichever run takes the lock pauses after it for 10 s, so the other four meet it held.
    let pause = [("PRESCORE_PAUSE_AT", "read"), ("PRESCORE_PAUSE_SECS", "10")];
    let children: Vec<Child> = (0..5)
        .map(|_| spawn(&["run", "--config", cfg], &pause))
        .collect();
    let results = wait_all(children);
    let ok = results.iter().filter(|(c, _)| *c == Some(0)).count();
    let running = results.iter().filter(|(c, _)| *c == Some(5)).count();
    assert_eq!((ok, running), (1, 4), "{results:#?}");
    for (code, err) in &results {
        if *code == Some(5) {
            assert!(err.contains("already running"), "{err}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_jobs_sql_may_not_write() {
    for db in backends("readonly") {
        published_churn(&db, 600).await;
        let rows_before = count(&db, "customer_months").await;
        // A second statement: SQLite would run it too.
        let two = format!("{};\nDELETE FROM churn_scores;", scoring(FEATURES));
        let (cfg, file) = churn_scoring(&db, "two.sql", &two);
        both_refuse(
            &db,
            &cfg,
            2,
            &format!("{file} holds more than one statement"),
        )
        .await;
        // A statement that is not a query, even with RETURNING the contract's columns.
        let del = format!("DELETE FROM customer_months WHERE customer_id < 0 RETURNING {FEATURES}");
        let (cfg, file) = churn_scoring(&db, "delete.sql", &del);
        both_refuse(&db, &cfg, 2, &format!("{file} starts with DELETE")).await;
        let (cfg, file) = churn_scoring(&db, "attach.sql", "ATTACH 'x.db' AS x");
        both_refuse(&db, &cfg, 2, &format!("{file} starts with ATTACH")).await;
        if db.name == "postgres" {
            // A data-modifying WITH is one query that writes: the READ ONLY transaction
            // refuses it, and `check` says the same as `run`.
            let cte = format!(
                "WITH gone AS (DELETE FROM churn_scores RETURNING customer_id) {}",
                scoring(FEATURES)
            );
            let (cfg, file) = churn_scoring(&db, "cte.sql", &cte);
            both_refuse(
                &db,
                &cfg,
                2,
                &format!("{file}: the job's SQL must only read"),
            )
            .await;
        }
        assert_eq!(
            count(&db, "customer_months").await,
            rows_before,
            "{}",
            db.name
        );
    }
}

const SECRET: &str = "Pw-S3cr3t";

/// An environment variable for a run.
type Env<'a> = (&'a str, &'a str);

/// The URL forms a password takes: in the user info (plain, percent-encoded, with a raw `/`,
/// `?` or `@`), as a query parameter, and towards a server that is not there.
fn secret_urls(db: &Db) -> Vec<String> {
    let (scheme, rest) = db.url.split_once("://").unwrap();
    let (user, host_db) = rest.split_once('@').unwrap();
    let user = user.split(':').next().unwrap();
    let at = |pw: &str| format!("{scheme}://{user}:{pw}@{host_db}");
    vec![
        at(SECRET),
        format!("{scheme}://{user}@{host_db}?password={SECRET}"),
        format!("{scheme}://{user}@{host_db}?sslmode=disable&password={SECRET}"),
        at(&format!("a/{SECRET}")),
        at(&format!("a?{SECRET}")),
        at(&format!("a@{SECRET}")),
        at(&format!("a%2F{SECRET}")),
        format!("{scheme}://{user}:{SECRET}@127.0.0.1:1/nowhere"),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn passwords_never_reach_logs_errors_or_the_ledger() {
    let Some(db) = postgres("secrets") else {
        return;
    };
    published_churn(&db, 600).await;
    let broken = sql_file(&db, "broken.sql", &format!("{} AND", scoring(FEATURES)));
    let score = format!("{ROOT}{SCORE_SQL}");
    let good = config(&db, CHURN, &[(db.url.as_str(), "${DATABASE_URL}")]);
    let bad = config(
        &db,
        CHURN,
        &[
            (db.url.as_str(), "${DATABASE_URL}"),
            (score.as_str(), broken.as_str()),
        ],
    );
    let (good, bad) = (good.to_str().unwrap(), bad.to_str().unwrap());
    for url in secret_urls(&db) {
        let env = [("DATABASE_URL", url.as_str())];
        let trace = [("DATABASE_URL", url.as_str()), ("RUST_LOG", "trace")];
        let runs: [(&[&str], &[Env]); 6] = [
            (&["-vv", "run", "--config", good], &env),
            (&["run", "--config", good], &trace),
            (
                &["--log-format", "json", "-vv", "run", "--config", bad],
                &env,
            ),
            (&["-vv", "check", "--config", good], &env),
            (&["runs", "--config", good], &env),
            (&["runs", "--warehouse", &url], &[]),
        ];
        // A server that is not there answers after the 15 s pool time-out: one command is
        // enough for its error path.
        let n = if url.contains("127.0.0.1:1/") {
            1
        } else {
            runs.len()
        };
        for (args, envs) in runs.into_iter().take(n) {
            let o = prescore(args, envs);
            assert!(
                !text(&o).contains("S3cr3t"),
                "{url} {args:?}: the password leaked: {}",
                text(&o)
            );
        }
    }
    let ledger = rows(&db, "SELECT COALESCE(error, '') FROM prescore_runs").await;
    assert!(
        ledger.iter().flatten().all(|e| !e.contains("S3cr3t")),
        "the ledger holds the password: {ledger:?}"
    );
    assert!(
        ledger.iter().flatten().any(|e| !e.is_empty()),
        "the broken runs recorded no error"
    );
}

#[test]
fn config_errors_name_the_variable_never_its_value() {
    let db = sqlite();
    let url = format!("postgres://u:{SECRET}@127.0.0.1:1/x");
    for (from, to, key) in [
        (
            "name = \"churn_daily\"",
            "name = \"${DATABASE_URL}\"",
            "job.name",
        ),
        (
            "threads = 0",
            "threads = \"${DATABASE_URL}\"",
            "job.threads",
        ),
        (
            "[job]\n",
            "[job]\nretry_backoff = \"${DATABASE_URL}\"\n",
            "job.retry_backoff",
        ),
        ("\"churn_scores\"", "\"${DATABASE_URL}\"", "output.table"),
    ] {
        let cfg = config(&db, CHURN, &[(from, to)]);
        let o = prescore(
            &["check", "--config", cfg.to_str().unwrap()],
            &[("DATABASE_URL", &url)],
        );
        let out = text(&o);
        assert_eq!(o.status.code(), Some(2), "{key}: {out}");
        assert!(
            out.contains(key) && out.contains("${DATABASE_URL}"),
            "{key}: {out}"
        );
        assert!(!out.contains("S3cr3t"), "{key}: the value leaked: {out}");
    }
    // An SQL path pointing at a secret file: refused without quoting the file.
    let secret = sql_file(&db, "db-password", &format!("{SECRET}\n"));
    let score = format!("{ROOT}{SCORE_SQL}");
    let cfg = config(&db, CHURN, &[(score.as_str(), secret.as_str())]);
    let o = prescore(&["check", "--config", cfg.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("does not start with a query"),
        "{}",
        text(&o)
    );
    assert!(
        !text(&o).contains("S3cr3t"),
        "the file leaked: {}",
        text(&o)
    );
}

/// Waits until a run of the job is recorded `running`.
async fn wait_running(db: &Db) {
    let start = std::time::Instant::now();
    loop {
        let n = rows(
            db,
            "SELECT COUNT(*) FROM prescore_runs WHERE status = 'running'",
        )
        .await;
        if n[0][0] != "0" {
            return;
        }
        assert!(start.elapsed().as_secs() < 60, "no run started");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_and_sigint_mark_the_run_failed_release_the_lock_and_exit_128_plus_n() {
    for db in backends("signals") {
        let (cfg, _) = published_churn(&db, 600).await;
        let cfg = cfg.to_str().unwrap();
        for (sig, code) in [("TERM", 143), ("INT", 130)] {
            let before = rows(&db, "SELECT * FROM churn_scores ORDER BY customer_id").await;
            let pause = [
                ("PRESCORE_PAUSE_AT", "trained"),
                ("PRESCORE_PAUSE_SECS", "60"),
            ];
            let child = spawn(&["run", "--config", cfg], &pause);
            wait_running(&db).await;
            let sent = std::time::Instant::now();
            let kill = Command::new("kill")
                .args([format!("-{sig}"), child.id().to_string()])
                .status()
                .unwrap();
            assert!(kill.success());
            let o = child.wait_with_output().unwrap();
            let took = sent.elapsed();
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(code), "{} SIG{sig}: {err}", db.name);
            assert!(
                took.as_secs() < 10,
                "{} SIG{sig}: exit took {took:?}",
                db.name
            );
            let (status, error) = last_run(&db).await;
            assert_eq!(status, "failed", "{} SIG{sig}", db.name);
            assert_eq!(error, format!("interrupted by SIG{sig}"), "{}", db.name);
            let after = rows(&db, "SELECT * FROM churn_scores ORDER BY customer_id").await;
            assert!(before == after, "{} SIG{sig}: the scores changed", db.name);
            // The lock is free at once: the next run does not exit 5.
            let o = prescore(&["run", "--config", cfg], &[]);
            assert!(
                o.status.success(),
                "{} after SIG{sig}: {}",
                db.name,
                text(&o)
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn as_pid_1_in_a_pid_namespace_sigterm_still_ends_the_run() {
    let probe = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("\n!!!!! SKIPPING the PID 1 test: `unshare --pid` is not permitted here\n");
        return;
    }
    let db = sqlite();
    let (cfg, before) = published_churn(&db, 600).await;
    let mut c = Command::new("unshare");
    c.args(["--pid", "--fork", "--mount-proc", BIN, "run", "--config"])
        .arg(&cfg)
        .current_dir(ROOT)
        .env("PRESCORE_PAUSE_AT", "trained")
        .env("PRESCORE_PAUSE_SECS", "60")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    wait_running(&db).await;
    // prescore is PID 1 inside; from here it is unshare's child.
    let pid = child.id();
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    let inner = children.split_whitespace().next().expect("unshare's child");
    let sent = std::time::Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", inner])
        .status()
        .unwrap()
        .success());
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(143), "{err}");
    assert!(
        sent.elapsed().as_secs() < 10,
        "exit took {:?}",
        sent.elapsed()
    );
    let (status, error) = last_run(&db).await;
    assert_eq!(
        (status.as_str(), error.as_str()),
        ("failed", "interrupted by SIGTERM")
    );
    let after = rows(&db, "SELECT * FROM churn_scores ORDER BY customer_id").await;
    assert!(before == after, "the scores changed");
}

/// The churn job with `[job]` limits added (e.g. `timeout = "2s"`).
fn churn_with_limits(db: &Db, limits: &str, replace: bool) -> String {
    let job = format!("[job]\n{limits}\n");
    let mut edits = vec![("[job]\n", job.as_str())];
    if replace {
        edits.push(WRITE_REPLACE);
    }
    config(db, CHURN, &edits).display().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_past_job_timeout_fails_with_exit_7_naming_its_stage() {
    for db in backends("deadline") {
        let (_, before) = published_churn(&db, 600).await;
        let cfg = churn_with_limits(&db, "timeout = \"2s\"", false);
        let pause = [
            ("PRESCORE_PAUSE_AT", "trained"),
            ("PRESCORE_PAUSE_SECS", "60"),
        ];
        let start = std::time::Instant::now();
        let o = prescore(&["run", "--config", &cfg], &pause);
        let took = start.elapsed();
        assert_eq!(o.status.code(), Some(7), "{}: {}", db.name, text(&o));
        assert!(took.as_secs() < 20, "{}: took {took:?}", db.name);
        let (status, error) = last_run(&db).await;
        assert_eq!(status, "failed", "{}", db.name);
        assert!(
            error.contains("job.timeout = 2s") && error.contains("stage train"),
            "{}: {error}",
            db.name
        );
        let after = rows(&db, "SELECT * FROM churn_scores ORDER BY customer_id").await;
        assert!(before == after, "{}: the scores changed", db.name);
        // The lock was released: the next run (no pause) succeeds.
        let o = prescore(&["run", "--config", &cfg], &[]);
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_locked_results_table_times_out_with_exit_7_naming_the_table() {
    let Some(db) = postgres("locktimeout") else {
        return;
    };
    let (_, before) = published_churn(&db, 600).await;
    for replace in [false, true] {
        let cfg = churn_with_limits(&db, "lock_timeout = \"2s\"", replace);
        let holder = connect(&db).await;
        let mut tx = holder.begin().await.unwrap();
        tx.execute("LOCK TABLE churn_scores IN ACCESS EXCLUSIVE MODE", &[])
            .await
            .unwrap();
        let start = std::time::Instant::now();
        let o = prescore(&["run", "--config", &cfg], &[]);
        let took = start.elapsed();
        drop(tx);
        holder.close().await;
        assert_eq!(o.status.code(), Some(7), "replace {replace}: {}", text(&o));
        assert!(took.as_secs() < 30, "replace {replace}: took {took:?}");
        let (status, error) = last_run(&db).await;
        assert_eq!(status, "failed");
        assert!(
            error.contains("waited 2s for a lock on churn_scores: another session holds it"),
            "replace {replace}: {error}"
        );
        let after = rows(&db, "SELECT * FROM churn_scores ORDER BY customer_id").await;
        assert!(before == after, "replace {replace}: the scores changed");
    }
    // Once the lock is gone, the next run publishes.
    let cfg = churn_with_limits(&db, "lock_timeout = \"2s\"", false);
    let o = prescore(&["run", "--config", &cfg], &[]);
    assert!(o.status.success(), "{}", text(&o));
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_keep_prunes_old_artifacts_and_keeps_every_champion() {
    for db in backends("registrykeep") {
        seed_churn(&db, 600);
        let cfg = config(
            &db,
            CHURN,
            &[("[output]\n", "[registry]\nkeep = 2\n\n[output]\n")],
        );
        let cfg = cfg.to_str().unwrap();
        // A run stopped after registering its candidate leaves it behind: an orphan.
        let slow = churn_with_limits(&db, "timeout = \"5s\"", false);
        let pause = [
            ("PRESCORE_PAUSE_AT", "score"),
            ("PRESCORE_PAUSE_SECS", "60"),
        ];
        let o = prescore(&["run", "--config", &slow], &pause);
        assert_eq!(o.status.code(), Some(7), "{}: {}", db.name, text(&o));
        for _ in 0..5 {
            let o = prescore(&["train", "--config", cfg], &[]);
            assert!(
                matches!(o.status.code(), Some(0 | 4)),
                "{}: {}",
                db.name,
                text(&o)
            );
        }
        let models = rows(
            &db,
            "SELECT version, status, length(artifact), status_reason, \
             (SELECT COUNT(*) FROM prescore_model_events e WHERE e.job = m.job \
              AND e.version = m.version AND e.event IN ('promoted', 'rolled_back')) \
             FROM prescore_models m WHERE job = 'churn_daily' ORDER BY version",
        )
        .await;
        assert_eq!(models.len(), 6, "{}: {models:?}", db.name);
        assert_eq!(
            models[0][1], "rejected",
            "{}: the orphan {models:?}",
            db.name
        );
        assert!(
            models[0][3].starts_with("orphaned"),
            "{}: {models:?}",
            db.name
        );
        for m in &models {
            let version: i64 = m[0].parse().unwrap();
            let served = m[1] == "champion" || m[1] == "retired" || m[4] != "0";
            let kept = m[2] != "0";
            assert_eq!(
                kept,
                served || version > 4,
                "{}: {m:?} in {models:?}",
                db.name
            );
        }
        // The champion serves, and so does the one before it after a rollback.
        let o = prescore(&["score", "--config", cfg], &[]);
        assert!(o.status.success(), "{}: {}", db.name, text(&o));
        if models.iter().filter(|m| m[1] == "retired").count() > 0 {
            let o = prescore(&["models", "rollback", "--config", cfg], &[]);
            assert!(o.status.success(), "{}: {}", db.name, text(&o));
            let o = prescore(&["score", "--config", cfg], &[]);
            assert!(o.status.success(), "{}: {}", db.name, text(&o));
        }
        let o = prescore(&["models", "list", "--config", cfg], &[]);
        assert!(
            text(&o).contains("rejected (pruned)"),
            "{}: {}",
            db.name,
            text(&o)
        );
        // A pruned version cannot be promoted.
        let o = prescore(&["models", "promote", "1", "--config", cfg], &[]);
        assert_eq!(o.status.code(), Some(1), "{}: {}", db.name, text(&o));
        assert!(text(&o).contains("pruned"), "{}: {}", db.name, text(&o));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_current_schema_takes_no_ddl_locks_against_a_concurrent_publish() {
    let Some(db) = postgres("migrate") else {
        return;
    };
    let (_, _) = published_churn(&db, 600).await;
    let current = rows(&db, "SELECT version FROM prescore_schema").await;
    assert_eq!(current.len(), 1, "{current:?}");
    let cfg = churn_with_limits(&db, "lock_timeout = \"2s\"", false);
    // What another job's open publish holds: `CREATE INDEX IF NOT EXISTS` waited for these
    // (and deadlocked against a publish that then wanted the migration's locks).
    let holder = connect(&db).await;
    let mut tx = holder.begin().await.unwrap();
    tx.execute(
        "LOCK TABLE prescore_runs, prescore_model_events IN ROW EXCLUSIVE MODE",
        &[],
    )
    .await
    .unwrap();
    let o = prescore(&["run", "--config", &cfg], &[]);
    assert!(o.status.success(), "{}", text(&o));
    drop(tx);
    holder.close().await;
    // An older schema is migrated and recorded.
    let wh = connect(&db).await;
    wh.execute("UPDATE prescore_schema SET version = 'older'", &[])
        .await
        .unwrap();
    wh.close().await;
    let o = prescore(&["run", "--config", &cfg], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        rows(&db, "SELECT version FROM prescore_schema").await,
        current
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_statement_past_statement_timeout_exits_7_naming_the_sql_file() {
    let Some(db) = postgres("stmttimeout") else {
        return;
    };
    let (_, before) = published_churn(&db, 600).await;
    let slow = format!(
        "SELECT {FEATURES} FROM customer_months, (SELECT pg_sleep(5)) AS s \
         WHERE period_end = (SELECT MAX(period_end) FROM customer_months)"
    );
    let (cfg, file) = churn_scoring(&db, "slow.sql", &slow);
    let text_cfg = std::fs::read_to_string(&cfg).unwrap();
    let limited = text_cfg.replacen("[job]\n", "[job]\nstatement_timeout = \"1s\"\n", 1);
    std::fs::write(&cfg, limited).unwrap();
    let o = prescore(&["run", "--config", &cfg], &[]);
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
    let (status, error) = last_run(&db).await;
    assert_eq!(status, "failed");
    let needle = format!("the job's SQL {file} ran longer than job.statement_timeout = 1s");
    assert!(error.contains(&needle), "{error}");
    let after = rows(&db, "SELECT * FROM churn_scores ORDER BY customer_id").await;
    assert!(before == after, "the scores changed");
}

/// Whether `unshare` may make the namespaces in `flags` here (root or user namespaces).
fn unshare_allowed(flags: &[&str]) -> bool {
    let mut c = Command::new("unshare");
    c.args(flags).arg("true");
    c.output().is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lock_held_by_a_killed_run_in_another_host_or_pid_namespace_lapses_with_its_lease() {
    let db = sqlite();
    let (_, before) = published_churn(&db, 600).await;
    let cfg = churn_with_limits(&db, "lock_lease = \"3s\"", false);
    let other_host = format!("hostname elsewhere && exec {BIN} run --config {cfg}");
    let pid_ns = ["--pid", "--fork", "--mount-proc"];
    let wrappers: [(&str, Vec<&str>); 2] = [
        ("another hostname", vec!["--uts", "sh", "-c", &other_host]),
        (
            "another PID namespace",
            [&pid_ns[..], &[BIN, "run", "--config", &cfg]].concat(),
        ),
    ];
    for (what, args) in wrappers {
        let flags = if args[0] == "--uts" {
            &args[..1]
        } else {
            &pid_ns[..]
        };
        if !unshare_allowed(flags) {
            eprintln!(
                "\n!!!!! SKIPPING the lease test in {what}: `unshare` is not permitted here\n"
            );
            continue;
        }
        let child = Command::new("unshare")
            .args(&args)
            .current_dir(ROOT)
            .env("PRESCORE_PAUSE_AT", "trained")
            .env("PRESCORE_PAUSE_SECS", "60")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_running(&db).await;
        // SIGKILL the run itself: with --fork it is unshare's child, PID 1 inside.
        let pid = child.id();
        let inner = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .map_or(pid.to_string(), str::to_string);
        assert!(Command::new("kill")
            .args(["-KILL", &inner])
            .status()
            .unwrap()
            .success());
        let _ = child.wait_with_output();
        let holder = rows(&db, "SELECT holder FROM prescore_leases").await;
        // Its lease still runs: the job is busy (exit 5), not blocked for ever.
        let o = prescore(&["run", "--config", &cfg], &[]);
        assert_eq!(o.status.code(), Some(5), "{what}: {}", text(&o));
        assert!(
            text(&o).contains("lease runs until"),
            "{what}: {}",
            text(&o)
        );
        tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
        let o = prescore(&["run", "--config", &cfg], &[]);
        assert!(o.status.success(), "{what} {holder:?}: {}", text(&o));
        let runs = rows(
            &db,
            "SELECT status FROM prescore_runs ORDER BY started_at DESC LIMIT 2",
        )
        .await;
        assert_eq!(runs, [["succeeded"], ["abandoned"]], "{what}");
    }
    let after = rows(&db, "SELECT COUNT(*) FROM churn_scores").await;
    assert_eq!(after[0][0], before.len().to_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_whose_lock_was_taken_over_publishes_nothing() {
    for db in backends("fencing") {
        let (_, _) = published_churn(&db, 600).await;
        let cfg = churn_with_limits(&db, "lock_lease = \"2s\"", false);
        let pause = [
            ("PRESCORE_PAUSE_AT", "scored"),
            ("PRESCORE_PAUSE_SECS", "4"),
        ];
        let first = spawn(&["run", "--config", &cfg], &pause);
        wait_running(&db).await;
        let stalled = rows(
            &db,
            "SELECT run_id FROM prescore_runs WHERE status = 'running'",
        )
        .await;
        let stalled = stalled[0][0].clone();
        if db.name == "sqlite" {
            // The process stalls (a frozen VM, SIGSTOP) past its lease: its heartbeat stops.
            let pid = first.id().to_string();
            assert!(Command::new("kill")
                .args(["-STOP", &pid])
                .status()
                .unwrap()
                .success());
            tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
            let o = prescore(&["run", "--config", &cfg], &[]);
            assert!(o.status.success(), "{}: {}", db.name, text(&o));
            assert!(Command::new("kill")
                .args(["-CONT", &pid])
                .status()
                .unwrap()
                .success());
        } else {
            // What a server restart does to the run: its advisory lock's session ends.
            let killed = rows(
                &db,
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' \
                 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            )
            .await;
            assert_eq!(killed.len(), 1, "one advisory lock held");
            let o = prescore(&["run", "--config", &cfg], &[]);
            assert!(o.status.success(), "{}: {}", db.name, text(&o));
        }
        let (code, err) = wait_all(vec![first]).remove(0);
        assert_eq!(code, Some(5), "{}: {err}", db.name);
        assert!(
            err.contains("no longer holds the lock"),
            "{}: {err}",
            db.name
        );
        let sql = format!("SELECT COUNT(*) FROM churn_scores WHERE run_id = '{stalled}'");
        assert_eq!(rows(&db, &sql).await[0][0], "0", "{}", db.name);
        let sql = format!("SELECT status FROM prescore_runs WHERE run_id = '{stalled}'");
        assert_eq!(rows(&db, &sql).await[0][0], "failed", "{}", db.name);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_postgresql_restart_mid_run_fences_the_run_whose_lock_it_dropped() {
    let Some(mut pg) = Cluster::start(
        "a_postgresql_restart_mid_run_fences_the_run_whose_lock_it_dropped",
        Setup {
            hba: vec!["host all all 127.0.0.1/32 scram-sha-256".into()],
            ..Setup::default()
        },
    ) else {
        return;
    };
    pg.create_user("prescore", "s3cret");
    let url = pg.url(
        "127.0.0.1",
        "prescore",
        "s3cret",
        "prescore",
        "sslmode=disable",
    );
    let db = Db::at("postgres (private cluster)", &url);
    let (cfg, _) = published_churn(&db, 600).await;
    let cfg = cfg.to_str().unwrap();
    let pause = [
        ("PRESCORE_PAUSE_AT", "scored"),
        ("PRESCORE_PAUSE_SECS", "15"),
    ];
    let first = spawn(&["run", "--config", cfg], &pause);
    wait_running(&db).await;
    let stalled = rows(
        &db,
        "SELECT run_id FROM prescore_runs WHERE status = 'running'",
    )
    .await;
    let stalled = stalled[0][0].clone();
    // The restart ends every session, the first run's advisory lock with it; a second run
    // then takes the job and publishes.
    pg.restart();
    let o = prescore(&["run", "--config", cfg], &[]);
    assert!(o.status.success(), "the second run: {}", text(&o));
    let (code, err) = wait_all(vec![first]).remove(0);
    assert_eq!(code, Some(5), "{err}");
    assert!(err.contains("no longer holds the lock"), "{err}");
    let sql = format!("SELECT COUNT(*) FROM churn_scores WHERE run_id = '{stalled}'");
    assert_eq!(rows(&db, &sql).await[0][0], "0");
    let sql = format!("SELECT status, error FROM prescore_runs WHERE run_id = '{stalled}'");
    let row = rows(&db, &sql).await;
    assert_eq!(row[0][0], "failed");
    assert!(row[0][1].contains("no longer holds the lock"), "{row:?}");
}
