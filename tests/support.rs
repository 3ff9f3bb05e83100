//! Test fixtures: a fresh SQLite file or a fresh PostgreSQL database per test, the real
//! binary, and job configs written into a temporary directory. PostgreSQL tests fail when
//! PRESCORE_REQUIRE_PG=1 (CI) and the server is unreachable; elsewhere they are skipped loudly.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use prescore::warehouse::{Value, Warehouse};

pub const BIN: &str = env!("CARGO_BIN_EXE_prescore");
pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// One warehouse for one test.
pub struct Db {
    pub name: &'static str,
    pub url: String,
    pub dir: tempfile::TempDir,
    pg_db: Option<String>,
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Some(db) = &self.pg_db {
            let _ = Command::new("psql")
                .args([
                    &admin_url(),
                    "-qc",
                    &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
                ])
                .output();
        }
    }
}

fn admin_url() -> String {
    std::env::var("PRESCORE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

impl Db {
    /// A database someone else owns (a private cluster's), at `url`; it drops nothing itself.
    pub fn at(name: &'static str, url: &str) -> Db {
        Db {
            name,
            url: url.to_string(),
            dir: tempfile::tempdir().unwrap(),
            pg_db: None,
        }
    }

    /// The same database under another URL (another role); it drops nothing itself.
    pub fn borrowed(db: &Db, url: &str) -> Db {
        Db {
            name: db.name,
            url: url.to_string(),
            dir: tempfile::tempdir().unwrap(),
            pg_db: None,
        }
    }
}

pub fn sqlite() -> Db {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("prescore.db").display());
    Db {
        name: "sqlite",
        url,
        dir,
        pg_db: None,
    }
}

/// Whether PostgreSQL tests must run (CI, or PRESCORE_REQUIRE_PG=1) rather than be skipped.
pub fn pg_required() -> bool {
    std::env::var("PRESCORE_REQUIRE_PG").as_deref() == Ok("1") || std::env::var("CI").is_ok()
}

/// A fresh, uniquely named PostgreSQL database, or None (skipped) off CI.
pub fn postgres(test: &str) -> Option<Db> {
    let admin = admin_url();
    let db = format!(
        "prescore_t_{}_{}_{}",
        test.chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(20)
            .collect::<String>()
            .to_lowercase(),
        std::process::id(),
        rand_suffix()
    );
    let created = Command::new("psql")
        .args([&admin, "-qc", &format!("CREATE DATABASE {db}")])
        .output();
    match created {
        Ok(o) if o.status.success() => {}
        other => {
            let why = match other {
                Ok(o) => String::from_utf8_lossy(&o.stderr).to_string(),
                Err(e) => e.to_string(),
            };
            if pg_required() {
                panic!("PostgreSQL is required (CI) but unreachable at {admin}: {why}");
            }
            eprintln!("\n!!!!! SKIPPING the PostgreSQL half of `{test}`: cannot create a database at {admin}: {why}\n!!!!! set PRESCORE_TEST_PG to a reachable server to run it\n");
            return None;
        }
    }
    let base = admin
        .rsplit_once('/')
        .map(|(b, _)| b.to_string())
        .unwrap_or(admin);
    Some(Db {
        name: "postgres",
        url: format!("{base}/{db}"),
        dir: tempfile::tempdir().unwrap(),
        pg_db: Some(db),
    })
}

fn rand_suffix() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{SystemTime, UNIX_EPOCH};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    nanos % 1_000_000 + N.fetch_add(1, Ordering::Relaxed) * 1_000_000
}

/// SQLite always, PostgreSQL when reachable.
pub fn backends(test: &str) -> Vec<Db> {
    let mut v = vec![sqlite()];
    v.extend(postgres(test));
    v
}

/// Runs the real binary.
pub fn prescore(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args)
        .current_dir(ROOT)
        .env_remove("DATABASE_URL")
        .env("NO_COLOR", "1");
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().expect("run prescore")
}

pub fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Seeds the demo datasets (`prescore demo --seed-only`) with extra flags.
pub fn seed(db: &Db, flags: &[&str]) {
    let mut args = vec!["demo", "--seed-only", "--warehouse", &db.url];
    args.extend_from_slice(flags);
    let o = prescore(&args, &[]);
    assert!(
        o.status.success(),
        "seed failed on {}: {}",
        db.name,
        text(&o)
    );
}

/// Seeds the churn dataset with `customers` customers.
/// The demo's energy data: `meters` meters over `days` days ending now, at a seed.
pub fn seed_energy(db: &Db, meters: usize, days: usize, seed_no: u64) {
    let (m, d, s) = (meters.to_string(), days.to_string(), seed_no.to_string());
    seed(
        db,
        &[
            "--customers",
            "100",
            "--meters",
            &m,
            "--days",
            &d,
            "--seed",
            &s,
        ],
    );
}

pub fn seed_churn(db: &Db, customers: usize) {
    seed(db, &["--customers", &customers.to_string()]);
}

/// Seeds `customers` customers, runs the churn job once, and returns its config and the
/// published rows (for before/after comparisons).
pub async fn published_churn(db: &Db, customers: usize) -> (PathBuf, Vec<Vec<String>>) {
    seed_churn(db, customers);
    let cfg = config(db, "configs/churn_daily.toml", &[]);
    let o = prescore(&["run", "--config", cfg.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}: {}", db.name, text(&o));
    (
        cfg,
        rows(db, "SELECT * FROM churn_scores ORDER BY customer_id").await,
    )
}

/// A config edit that switches a job to `output.write = "replace"`.
pub const WRITE_REPLACE: (&str, &str) = ("[output]\n", "[output]\nwrite = \"replace\"\n");

/// Writes a copy of a repo config into the test's directory, pointed at `db`, with its SQL
/// paths made absolute and each `(from, to)` text replacement applied.
pub fn config(db: &Db, repo_config: &str, edits: &[(&str, &str)]) -> PathBuf {
    let mut s = std::fs::read_to_string(Path::new(ROOT).join(repo_config)).unwrap();
    s = s.replace("${DATABASE_URL:-sqlite://prescore.db}", &db.url);
    s = s.replace("\"../sql/", &format!("\"{ROOT}/sql/"));
    for (from, to) in edits {
        assert!(s.contains(from), "config edit {from:?} does not apply");
        s = s.replace(from, to);
    }
    let n = std::fs::read_dir(db.dir.path())
        .map(|d| d.count())
        .unwrap_or(0);
    let path = db.dir.path().join(format!("job{n}.toml"));
    std::fs::write(&path, s).unwrap();
    path
}

/// Writes an SQL file into the test's directory and returns its path.
pub fn sql_file(db: &Db, name: &str, sql: &str) -> String {
    let p = db.dir.path().join(name);
    std::fs::write(&p, sql).unwrap();
    p.display().to_string()
}

pub async fn connect(db: &Db) -> Warehouse {
    Warehouse::connect(&db.url, 2).await.expect("connect")
}

/// Every row of a query, rendered as text (for exact before/after comparisons).
pub async fn rows(db: &Db, sql: &str) -> Vec<Vec<String>> {
    let wh = connect(db).await;
    let r = wh.fetch(sql, &[]).await.expect("query");
    wh.close().await;
    r.into_iter()
        .map(|row| row.iter().map(render).collect())
        .collect()
}

fn render(v: &Value) -> String {
    match v {
        Value::Float(Some(f)) => format!("{f:.12}"),
        other => other.display(),
    }
}

pub async fn count(db: &Db, table: &str) -> i64 {
    rows(db, &format!("SELECT COUNT(*) FROM {table}")).await[0][0]
        .parse()
        .unwrap()
}

/// The newest ledger row: (status, error).
pub async fn last_run(db: &Db) -> (String, String) {
    let r = rows(
        db,
        "SELECT status, error FROM prescore_runs ORDER BY started_at DESC, run_id DESC LIMIT 1",
    )
    .await;
    (r[0][0].clone(), r[0][1].clone())
}

/// Starts the binary in the background with `envs`, its output piped.
pub fn spawn(args: &[&str], envs: &[(&str, &str)]) -> std::process::Child {
    let mut c = Command::new(BIN);
    c.args(args)
        .current_dir(ROOT)
        .env_remove("DATABASE_URL")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in envs {
        c.env(k, v);
    }
    c.spawn().expect("start prescore")
}

/// Waits for every child: (exit code, stderr) each.
pub fn wait_all(children: Vec<std::process::Child>) -> Vec<(Option<i32>, String)> {
    children
        .into_iter()
        .map(|c| {
            let o = c.wait_with_output().unwrap();
            (
                o.status.code(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        })
        .collect()
}
