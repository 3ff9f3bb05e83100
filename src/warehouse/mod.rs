//! The one seam between prescore and a warehouse. [`Warehouse`] reads a query into a polars
//! frame, runs prescore's own statements (ledger, registry), takes the job lock, and opens a
//! [`Tx`] that bulk-upserts a frame. SQLite (the embedded default) and PostgreSQL differ only
//! inside this folder: no stage ever matches on the database kind.

pub mod frame;
pub mod ident;
pub mod lease;
pub mod params;
mod pg_copy;
mod postgres;
mod sqlite;
mod tls;
mod types;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use polars::prelude::DataFrame;
use sqlx::postgres::{PgPool, PgPoolOptions, PgSslMode};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::ConnectOptions;

use ident::Ident;
pub use types::{ColumnType, Dialect, WriteMode, DEFAULT_URL};

/// What can go wrong talking to a warehouse. `is_transient` says which are worth a retry.
#[derive(Debug, thiserror::Error)]
pub enum WarehouseError {
    /// `hint` says which setting to change (sslmode, sslrootcert, the password), when known.
    #[error("cannot connect to {url}: {source}{}", hint.as_deref().map(|h| format!("; {h}")).unwrap_or_default())]
    Connect {
        url: String,
        source: sqlx::Error,
        hint: Option<String>,
    },
    /// The URL's TLS settings are refused before connecting (an unknown sslmode, a sslrootcert
    /// that cannot be read).
    #[error("cannot connect to {url}: {problem}")]
    TlsSetup { url: String, problem: String },
    #[error("{context}: {source}")]
    Query {
        context: String,
        source: sqlx::Error,
    },
    #[error("column {column:?}, row {row}: expected {expected}, found {found}")]
    Decode {
        column: String,
        row: usize,
        expected: &'static str,
        found: String,
    },
    #[error("the SQL returned no column {column:?}, which the contract declares (it returned: {returned})")]
    MissingColumn { column: String, returned: String },
    #[error("the SQL returns column {column:?} more than once: rename or drop one (the contract reads each column by its name)")]
    DuplicateColumn { column: String },
    #[error("{file}: the job's SQL must only read, and this one writes (INSERT, UPDATE, DELETE, DDL or a data-modifying WITH); prescore runs it read-only and refused it")]
    SqlWrites { file: String },
    #[error("results table {table} exists but does not match this job: {problem}. Drop it or choose another output.table")]
    TableMismatch { table: String, problem: String },
    #[error("waited {waited} for a lock on {object}: another session holds it (raise job.lock_timeout, or find the session that holds it); nothing was published")]
    LockTimeout { object: String, waited: String },
    #[error("{object} ran longer than job.statement_timeout = {limit} and was cancelled; nothing was published")]
    StatementTimeout { object: String, limit: String },
    #[error("job {job} (shard {shard}) is already running: {holder}")]
    Locked {
        job: String,
        shard: String,
        holder: String,
    },
    #[error("run {run_id} no longer holds the lock of job {job} (shard {shard}): {taken_by} took it over (this run's lease lapsed, or a server restart dropped its lock); nothing was published")]
    Fenced {
        job: String,
        shard: String,
        run_id: String,
        taken_by: String,
    },
}

impl WarehouseError {
    pub(crate) fn query(context: impl Into<String>) -> impl FnOnce(sqlx::Error) -> Self {
        let context = context.into();
        move |source| WarehouseError::Query { context, source }
    }

    /// The database's SQLSTATE (PostgreSQL) or result code (SQLite), when it gave one.
    pub fn sqlstate(&self) -> Option<String> {
        match self {
            WarehouseError::Connect { source, .. } | WarehouseError::Query { source, .. } => {
                match source {
                    sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// A lock wait or statement that ran out of time (PostgreSQL 55P03 `lock_timeout`, 57014
    /// `statement_timeout`; SQLite busy past its busy timeout) becomes
    /// [`WarehouseError::LockTimeout`] or [`WarehouseError::StatementTimeout`] naming `object`,
    /// what it waited for. `lock` and `statement` are the limits the session runs with.
    pub fn waited_on(self, object: &str, lock: Duration, statement: Duration) -> Self {
        let code = self.sqlstate();
        let object = object.to_string();
        match code.as_deref() {
            Some("55P03") => WarehouseError::LockTimeout {
                object,
                waited: humantime::format_duration(lock).to_string(),
            },
            Some("57014") => WarehouseError::StatementTimeout {
                object,
                limit: humantime::format_duration(statement).to_string(),
            },
            Some(c) if self.is_sqlite_busy(c) => WarehouseError::LockTimeout {
                object,
                waited: humantime::format_duration(sqlite::BUSY_TIMEOUT).to_string(),
            },
            _ => self,
        }
    }

    /// SQLite's SQLITE_BUSY (5) or one of its extended codes (5 + 256 × n).
    fn is_sqlite_busy(&self, code: &str) -> bool {
        let WarehouseError::Query {
            source: sqlx::Error::Database(db),
            ..
        } = self
        else {
            return false;
        };
        db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some()
            && code.parse::<i64>().is_ok_and(|c| c & 0xff == 5)
    }

    /// Whether this is a bounded wait that ran out (exit 7).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            WarehouseError::LockTimeout { .. } | WarehouseError::StatementTimeout { .. }
        ) || matches!(self.sqlstate().as_deref(), Some("55P03" | "57014"))
    }

    /// A query error that says the job's SQL tried to write becomes [`WarehouseError::SqlWrites`]
    /// naming `file`; `run` and `check` meet the same refusal through this one function.
    fn refine_writes(self, file: &str) -> Self {
        match &self {
            WarehouseError::Query {
                source: sqlx::Error::Database(db),
                ..
            } if writes(db.as_ref()) => WarehouseError::SqlWrites { file: file.into() },
            _ => self,
        }
    }

    /// Connection drops, pool time-outs, server restarts, serialization failures and a busy
    /// SQLite file are transient; everything else (syntax, constraints, permissions) is not.
    pub fn is_transient(&self) -> bool {
        let source = match self {
            WarehouseError::Connect { source, .. } | WarehouseError::Query { source, .. } => source,
            _ => return false,
        };
        match source {
            // A refused certificate or failed handshake fails the same way again.
            sqlx::Error::Io(_) if tls::is_tls_failure(source) => false,
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(db) => {
                let code = db.code().unwrap_or_default();
                // PostgreSQL: 08 connection exception, 57P01-03 shutdown/restart, 40001
                // serialization, 40P01 deadlock, 53300 too many connections.
                // SQLite: 5 SQLITE_BUSY, 6 SQLITE_LOCKED (and extended codes of those).
                code.starts_with("08")
                    || matches!(
                        &*code,
                        "57P01" | "57P02" | "57P03" | "40001" | "40P01" | "53300"
                    )
                    || matches!(code.parse::<i32>(), Ok(c) if c & 0xff == 5 || c & 0xff == 6)
            }
            _ => false,
        }
    }
}

/// PostgreSQL: a write in a READ ONLY transaction (25006), or a data-modifying WITH where only
/// a query may stand (0A000). SQLite: a write on a `query_only` connection (SQLITE_READONLY).
fn writes(db: &dyn sqlx::error::DatabaseError) -> bool {
    let code = db.code().unwrap_or_default();
    code == "25006"
        || (code == "0A000" && db.message().contains("data-modifying"))
        || matches!(code.parse::<i32>(), Ok(c) if c & 0xff == 8)
}

/// Every column of `contract` must appear once among the `returned` names: with two, which
/// one the contract reads would be an accident of column order.
pub fn unique_declared<'a>(
    returned: impl IntoIterator<Item = &'a str>,
    contract: &BTreeMap<String, ColumnType>,
) -> Result<(), WarehouseError> {
    let mut seen = std::collections::BTreeSet::new();
    for name in returned {
        if contract.contains_key(name) && !seen.insert(name) {
            return Err(WarehouseError::DuplicateColumn {
                column: name.to_string(),
            });
        }
    }
    Ok(())
}

/// A parameter value, typed so that a NULL still has a type PostgreSQL accepts.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(Option<i64>),
    Float(Option<f64>),
    Text(Option<String>),
    Bool(Option<bool>),
    Ts(Option<DateTime<Utc>>),
    Bytes(Option<Vec<u8>>),
}

impl Value {
    pub fn text(s: impl Into<String>) -> Self {
        Value::Text(Some(s.into()))
    }
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(v) => *v,
            Value::Float(v) => v.map(|f| f as i64),
            Value::Text(Some(s)) => s.parse().ok(),
            _ => None,
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(v) => *v,
            Value::Int(v) => v.map(|i| i as f64),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(v) => v.as_deref(),
            _ => None,
        }
    }
    /// Timestamps come back as text from SQLite and as timestamps from PostgreSQL.
    pub fn as_ts(&self) -> Option<DateTime<Utc>> {
        match self {
            Value::Ts(v) => *v,
            Value::Text(Some(s)) => frame::parse_timestamp(s),
            _ => None,
        }
    }
    pub fn into_bytes(self) -> Option<Vec<u8>> {
        match self {
            Value::Bytes(v) => v,
            Value::Text(v) => v.map(String::into_bytes),
            _ => None,
        }
    }
    /// A short human form for tables printed on a terminal.
    pub fn display(&self) -> String {
        match self {
            Value::Int(Some(v)) => v.to_string(),
            Value::Float(Some(v)) => format!("{v:.4}"),
            Value::Text(Some(v)) => v.clone(),
            Value::Bool(Some(v)) => v.to_string(),
            Value::Ts(Some(v)) => v.format("%Y-%m-%d %H:%M:%S").to_string(),
            Value::Bytes(Some(v)) => format!("<{} bytes>", v.len()),
            _ => String::new(),
        }
    }
}

/// A column of a table prescore creates.
#[derive(Debug, Clone)]
pub struct ColumnDef {
    pub name: String,
    pub ty: ColumnType,
}

/// Results-table columns added after the first release: a table without them gets them.
const ADDED_LATER: &[&str] = &["method", "score_lo", "score_hi"];

/// A connected warehouse.
#[derive(Clone, Debug)]
pub enum Warehouse {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The URL with every form of password replaced by `***`, for logs and errors: the user info
/// (`user:pw@`, where the password may hold raw `/`, `?` or `@`: everything up to the last
/// `@` counts) and `password=`/`sslpassword=` query parameters. When in doubt it hides more.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let (scheme, rest) = url.split_at(scheme_end + 3);
    let (userinfo, host_on) = match rest.rfind('@') {
        Some(at) if rest[..at].contains(':') => {
            let user = rest[..at].split(':').next().unwrap_or("");
            (format!("{user}:***@"), &rest[at + 1..])
        }
        _ => (String::new(), rest),
    };
    format!("{scheme}{userinfo}{}", redact_query(host_on))
}

/// `password` and `sslpassword` query parameter values replaced by `***`.
fn redact_query(s: &str) -> String {
    let Some((head, query)) = s.split_once('?') else {
        return s.to_string();
    };
    let params: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _))
                if ["password", "sslpassword"].contains(&k.to_ascii_lowercase().as_str()) =>
            {
                format!("{k}=***")
            }
            _ => kv.to_string(),
        })
        .collect();
    format!("{head}?{}", params.join("&"))
}

impl Warehouse {
    /// Opens a pool. SQLite files are created when missing and run in WAL mode with a busy
    /// timeout, so a reader (a dashboard) never blocks a publish for long.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, WarehouseError> {
        Self::open(url, max_connections, false, None).await
    }

    /// [`Warehouse::connect`] for a run: PostgreSQL sessions get `lock_timeout = lock` and
    /// `statement_timeout = statement`, so no statement waits for a lock, or runs, unbounded.
    pub async fn connect_bounded(
        url: &str,
        max_connections: u32,
        lock: Duration,
        statement: Duration,
    ) -> Result<Self, WarehouseError> {
        Self::open(url, max_connections, false, Some((lock, statement))).await
    }

    /// Opens a pool that cannot write: a SQLite file must exist and is opened read-only, and
    /// PostgreSQL sessions default to read-only transactions. `prescore check` uses it.
    pub async fn connect_read_only(url: &str) -> Result<Self, WarehouseError> {
        Self::open(url, 2, true, None).await
    }

    #[tracing::instrument(skip_all, fields(url = %redact(url), read_only))]
    async fn open(
        url: &str,
        max_connections: u32,
        read_only: bool,
        limits: Option<(Duration, Duration)>,
    ) -> Result<Self, WarehouseError> {
        let connect_err = |source| WarehouseError::Connect {
            url: redact(url),
            source,
            hint: None,
        };
        if Dialect::from_url(url) == Some(Dialect::Sqlite) {
            let mut opts = SqliteConnectOptions::from_str(url)
                .map_err(connect_err)?
                .create_if_missing(!read_only)
                .read_only(read_only)
                .busy_timeout(sqlite::BUSY_TIMEOUT)
                .foreign_keys(true)
                .log_statements(log::LevelFilter::Trace)
                .log_slow_statements(log::LevelFilter::Debug, Duration::from_secs(10));
            if !read_only {
                opts = opts.journal_mode(SqliteJournalMode::Wal);
            }
            let pool = SqlitePoolOptions::new()
                .max_connections(max_connections.max(1))
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(opts)
                .await
                .map_err(connect_err)?;
            Ok(Warehouse::Sqlite(pool))
        } else {
            let (opts, tls) = tls::options(url, &redact(url))?;
            let mut opts = opts
                .application_name("prescore")
                .log_statements(log::LevelFilter::Trace)
                .log_slow_statements(log::LevelFilter::Debug, Duration::from_secs(10));
            if read_only {
                opts = opts.options([("default_transaction_read_only", "on")]);
            }
            if let Some((lock, statement)) = limits {
                let ms = |d: Duration| d.as_millis().max(1).to_string();
                opts = opts.options([
                    ("lock_timeout", ms(lock)),
                    ("statement_timeout", ms(statement)),
                ]);
            }
            let pool = |opts| {
                PgPoolOptions::new()
                    .max_connections(max_connections.max(2))
                    .acquire_timeout(Duration::from_secs(15))
                    .connect_with(opts)
            };
            let connected = match pool(opts.clone()).await {
                // libpq's `prefer`: when the TLS handshake fails, try without TLS (sqlx
                // does not; an old server's TLS that rustls cannot speak would stop the run).
                Err(e) if matches!(tls.mode, PgSslMode::Prefer) && tls::is_tls_failure(&e) => {
                    tracing::warn!(error = %e, "the TLS handshake failed under sslmode=prefer: connecting without TLS (set sslmode=require to refuse that)");
                    pool(opts.ssl_mode(PgSslMode::Disable)).await
                }
                other => other,
            };
            let pool = connected.map_err(|source| WarehouseError::Connect {
                hint: tls::explain(&source, &tls),
                url: redact(url),
                source,
            })?;
            Ok(Warehouse::Postgres(pool))
        }
    }

    pub fn dialect(&self) -> Dialect {
        match self {
            Warehouse::Sqlite(_) => Dialect::Sqlite,
            Warehouse::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Creates prescore's own tables if they are missing (idempotent). When `prescore_schema`
    /// already records this version's script, nothing runs: no DDL, no lock, so the migration
    /// every command starts with cannot wait for, or deadlock with, a concurrent publish
    /// (`CREATE INDEX IF NOT EXISTS` locks its table even when the index exists). A deadlock
    /// or another transient error is retried.
    #[tracing::instrument(skip_all)]
    pub async fn migrate(&self) -> Result<(), WarehouseError> {
        let script = match self {
            Warehouse::Sqlite(_) => include_str!("../../sql/migrations/sqlite.sql"),
            Warehouse::Postgres(_) => include_str!("../../sql/migrations/postgres.sql"),
        };
        let views = match self {
            Warehouse::Sqlite(_) => include_str!("../../sql/migrations/sqlite_views.sql"),
            Warehouse::Postgres(_) => include_str!("../../sql/migrations/postgres_views.sql"),
        };
        let version = schema_version(&format!("{script}{views}"));
        if self.schema_is(&version).await {
            tracing::debug!(%version, "schema is current; no migration");
            return Ok(());
        }
        retry("migrate", 3, Duration::from_millis(200), || {
            self.run_migration(script, &version)
        })
        .await?;
        self.create_views(views).await;
        Ok(())
    }

    /// Whether `prescore_schema` records `version` (false when the table is missing).
    async fn schema_is(&self, version: &str) -> bool {
        let rows = self
            .fetch("SELECT version FROM prescore_schema WHERE id = 1", &[])
            .await;
        matches!(rows.as_deref(), Ok([row]) if row[0].as_str() == Some(version))
    }

    /// Runs the migration script and records its version, in one transaction.
    async fn run_migration(&self, script: &str, version: &str) -> Result<(), WarehouseError> {
        // One transaction, and on PostgreSQL a lock, so two processes migrating at once
        // cannot trip over each other's CREATE TABLE.
        let mut tx = self.begin().await?;
        if let Tx::Postgres(_) = tx {
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended('prescore:migrate', 0))",
                &[],
            )
            .await?;
        }
        for stmt in script.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            tx.execute(stmt, &[]).await?;
        }
        tx.execute(
            "INSERT INTO prescore_schema (id, version) VALUES (1, $1) \
             ON CONFLICT (id) DO UPDATE SET version = excluded.version",
            &[Value::text(version)],
        )
        .await?;
        tx.commit().await
    }

    /// The dashboard views and, on PostgreSQL, the tables' comments. Best effort, one
    /// statement at a time: a role that does not own prescore's tables (they were created by
    /// an administrator) cannot comment on them, and that must not stop a run.
    async fn create_views(&self, script: &str) {
        for stmt in script.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            if let Err(e) = self.execute(stmt, &[]).await {
                let head: String = stmt
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .chars()
                    .take(60)
                    .collect();
                tracing::warn!(error = %e, statement = %head, "could not create a dashboard view or comment");
            }
        }
    }

    /// Runs a job's SQL (from `file`, named in errors) with its named parameters bound, read
    /// only, and decodes the declared columns into a polars frame with their contract types.
    /// Undeclared columns are dropped.
    #[tracing::instrument(skip_all)]
    pub async fn read_frame(
        &self,
        sql: &str,
        file: &str,
        params: &BTreeMap<&str, Value>,
        contract: &BTreeMap<String, ColumnType>,
    ) -> Result<DataFrame, WarehouseError> {
        let prepared = params::prepare(params::trim_statement(sql));
        let values: Vec<Value> = prepared
            .names
            .iter()
            .map(|n| params.get(n.as_str()).cloned().unwrap_or(Value::Text(None)))
            .collect();
        match self {
            Warehouse::Sqlite(pool) => {
                sqlite::read_frame(pool, &prepared.sql, &values, contract).await
            }
            Warehouse::Postgres(pool) => {
                postgres::read_frame(pool, &prepared.sql, &values, contract).await
            }
        }
        .map_err(|e| e.refine_writes(file))
    }

    /// The column names (and server types) a job's SQL returns, from preparing it: nothing
    /// runs. Not wrapped in a subquery, where SQLite would rename a repeated column.
    pub async fn describe(
        &self,
        sql: &str,
        file: &str,
        params: &BTreeMap<&str, Value>,
    ) -> Result<Vec<(String, String)>, WarehouseError> {
        let prepared = params::prepare(params::trim_statement(sql));
        let values: Vec<Value> = prepared
            .names
            .iter()
            .map(|n| params.get(n.as_str()).cloned().unwrap_or(Value::Text(None)))
            .collect();
        match self {
            Warehouse::Sqlite(pool) => sqlite::describe(pool, &prepared.sql, &values).await,
            Warehouse::Postgres(pool) => postgres::describe(pool, &prepared.sql, &values).await,
        }
        .map_err(|e| e.refine_writes(file))
    }

    /// Runs one of prescore's own statements (`$1`-style parameters).
    pub async fn execute(&self, sql: &str, params: &[Value]) -> Result<u64, WarehouseError> {
        match self {
            Warehouse::Sqlite(pool) => sqlite::execute(pool, sql, params).await,
            Warehouse::Postgres(pool) => postgres::execute(pool, sql, params).await,
        }
    }

    /// Fetches rows of one of prescore's own queries as loosely typed values.
    pub async fn fetch(
        &self,
        sql: &str,
        params: &[Value],
    ) -> Result<Vec<Vec<Value>>, WarehouseError> {
        match self {
            Warehouse::Sqlite(pool) => sqlite::fetch(pool, sql, params).await,
            Warehouse::Postgres(pool) => postgres::fetch(pool, sql, params).await,
        }
    }

    /// Creates a table if missing; if it exists, checks it has these columns. Tables whose
    /// rows are `updated` in place (results tables written by upsert) leave room on
    /// PostgreSQL pages so that an update can stay on its page (a HOT update).
    pub async fn ensure_table(
        &self,
        table: &Ident,
        columns: &[ColumnDef],
        key: &[&str],
        updated: bool,
    ) -> Result<(), WarehouseError> {
        let cols = columns
            .iter()
            .map(|c| format!("\"{}\" {}", c.name, self.sql_type(c.ty)))
            .collect::<Vec<_>>()
            .join(", ");
        let pk = key
            .iter()
            .map(|k| format!("\"{k}\""))
            .collect::<Vec<_>>()
            .join(", ");
        // PostgreSQL: leave half of each page free, so that the next run's update of a row
        // can stay on its page (a HOT update) without a new index entry.
        let storage = match self {
            Warehouse::Postgres(_) if updated => " WITH (fillfactor = 50)",
            _ => "",
        };
        let mut existing = self.table_columns(table).await?;
        if existing.is_empty() {
            // IF NOT EXISTS for a concurrent creator; checked first so that the usual case
            // does not log the server's "already exists" notice.
            let created = self
                .execute(
                    &format!(
                        "CREATE TABLE IF NOT EXISTS {} ({cols}, PRIMARY KEY ({pk})){storage}",
                        table.quoted()
                    ),
                    &[],
                )
                .await;
            // Two shards creating the table at once: PostgreSQL's IF NOT EXISTS can still
            // fail the second, with a unique violation on its catalog (23505) or "type …
            // already exists" (42710, its row type) or "relation … already exists" (42P07),
            // depending on where the two meet; the table is there.
            match created {
                Err(e) if matches!(e.sqlstate().as_deref(), Some("23505" | "42710" | "42P07")) => {
                    tracing::debug!(table = %table, "created concurrently by another run");
                }
                other => other.map(drop)?,
            }
            existing = self.table_columns(table).await?;
        }
        let missing: Vec<&ColumnDef> = columns
            .iter()
            .filter(|c| !existing.contains(&c.name))
            .collect();
        // Columns a later prescore added to its results tables are added to a table an earlier
        // one made; any other difference means the table is not this job's.
        if !missing.is_empty()
            && missing
                .iter()
                .all(|c| ADDED_LATER.contains(&c.name.as_str()))
        {
            for c in &missing {
                self.execute(
                    &format!(
                        "ALTER TABLE {} ADD COLUMN \"{}\" {}",
                        table.quoted(),
                        c.name,
                        self.sql_type(c.ty)
                    ),
                    &[],
                )
                .await?;
                tracing::info!(table = %table, column = %c.name, "added a column this version writes");
            }
            return Ok(());
        }
        let missing: Vec<&str> = missing.iter().map(|c| c.name.as_str()).collect();
        if !missing.is_empty() {
            return Err(WarehouseError::TableMismatch {
                table: table.to_string(),
                problem: format!(
                    "it lacks column(s) {} (it has: {})",
                    missing.join(", "),
                    existing.join(", ")
                ),
            });
        }
        Ok(())
    }

    pub(crate) async fn table_columns(&self, table: &Ident) -> Result<Vec<String>, WarehouseError> {
        match self {
            Warehouse::Sqlite(pool) => sqlite::table_columns(pool, table).await,
            Warehouse::Postgres(pool) => postgres::table_columns(pool, table).await,
        }
    }

    fn sql_type(&self, t: ColumnType) -> &'static str {
        match (self, t) {
            (Warehouse::Sqlite(_), ColumnType::Int | ColumnType::Bool) => "INTEGER",
            (Warehouse::Sqlite(_), ColumnType::Float) => "REAL",
            (Warehouse::Sqlite(_), ColumnType::Text | ColumnType::Timestamp) => "TEXT",
            (Warehouse::Postgres(_), t) => postgres::pg_type(t),
        }
    }

    /// Takes the job's lock: one run per job and shard at a time, held by a lease row (see
    /// [`lease`]) that a heartbeat renews until the lock is released. PostgreSQL also takes a
    /// session advisory lock (released by the server if the process dies); on SQLite the lease
    /// row is the lock, taken over once its holder's lease lapses or its process is gone.
    pub async fn lock(
        &self,
        job: &str,
        shard: &str,
        run_id: &str,
        lease_for: std::time::Duration,
    ) -> Result<JobLock, WarehouseError> {
        let session = match self {
            Warehouse::Sqlite(_) => None,
            Warehouse::Postgres(pool) => Some(postgres::lock(pool, job, shard).await?),
        };
        let taken = async {
            let mut tx = self.begin().await?;
            let exclusive = session.is_some();
            let token = lease::take(&mut tx, job, shard, run_id, lease_for, exclusive).await?;
            tx.commit().await?;
            Ok(token)
        }
        .await;
        let token = match taken {
            Ok(token) => token,
            Err(e) => {
                if let Some(conn) = session {
                    postgres::unlock(conn).await;
                }
                return Err(sqlite::busy_as_locked(e, job, shard));
            }
        };
        let fence = lease::Fence {
            job: job.into(),
            shard: shard.into(),
            run_id: run_id.into(),
            token,
        };
        let heartbeat = lease::heartbeat(self.clone(), fence.clone(), lease_for);
        Ok(JobLock {
            wh: self.clone(),
            fence,
            session,
            heartbeat,
        })
    }

    /// Releases the job lock of `run_id` without its [`JobLock`], for a process about to exit
    /// on a signal: deletes its lease row (PostgreSQL's advisory lock ends with the session
    /// when the process exits).
    pub async fn release_lock_of(&self, job: &str, shard: &str, run_id: &str) {
        lease::release(self, job, shard, run_id).await;
    }

    /// Opens a transaction for prescore's own writes. SQLite: `BEGIN IMMEDIATE`, which waits
    /// (`busy_timeout`) for the file's write lock up front; a deferred `BEGIN` that reads and
    /// then writes fails at once with SQLITE_BUSY when another process wrote in between.
    pub async fn begin(&self) -> Result<Tx, WarehouseError> {
        Ok(match self {
            Warehouse::Sqlite(pool) => Tx::Sqlite(
                pool.begin_with("BEGIN IMMEDIATE")
                    .await
                    .map_err(WarehouseError::query("begin transaction"))?,
            ),
            Warehouse::Postgres(pool) => Tx::Postgres(
                pool.begin()
                    .await
                    .map_err(WarehouseError::query("begin transaction"))?,
            ),
        })
    }

    pub async fn close(&self) {
        match self {
            Warehouse::Sqlite(p) => p.close().await,
            Warehouse::Postgres(p) => p.close().await,
        }
    }
}

/// The job lock; released at the end of the run.
pub struct JobLock {
    wh: Warehouse,
    fence: lease::Fence,
    /// PostgreSQL: the session holding the advisory lock.
    session: Option<sqlx::PgConnection>,
    heartbeat: tokio::task::JoinHandle<()>,
}

impl JobLock {
    /// What the run's publish proves it still holds.
    pub fn fence(&self) -> &lease::Fence {
        &self.fence
    }

    pub async fn release(self) {
        self.heartbeat.abort();
        let f = &self.fence;
        lease::release(&self.wh, &f.job, &f.shard, &f.run_id).await;
        if let Some(conn) = self.session {
            postgres::unlock(conn).await;
        }
    }
}

/// How a keyed write treats the rows already there.
#[derive(Debug, Clone, Copy, Default)]
pub struct Guard<'a> {
    /// An existing row is replaced only by a row whose `newer_by` column is at least as new
    /// (a backfill never overwrites a fresher row).
    pub newer_by: Option<&'a str>,
    /// Other writers (the job's other shards) write disjoint keys of the same table at the
    /// same time: PostgreSQL then takes no table lock (and so skips the empty-table `COPY`),
    /// row locks keep the upserts apart.
    pub concurrent: bool,
}

/// An open transaction: everything a publish writes commits together or not at all.
pub enum Tx {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

impl Tx {
    pub async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, WarehouseError> {
        match self {
            Tx::Sqlite(tx) => sqlite::execute(&mut **tx, sql, params).await,
            Tx::Postgres(tx) => postgres::execute(&mut **tx, sql, params).await,
        }
    }

    pub async fn fetch(
        &mut self,
        sql: &str,
        params: &[Value],
    ) -> Result<Vec<Vec<Value>>, WarehouseError> {
        match self {
            Tx::Sqlite(tx) => sqlite::fetch(&mut **tx, sql, params).await,
            Tx::Postgres(tx) => postgres::fetch(&mut **tx, sql, params).await,
        }
    }

    /// Writes every row of `frame` into `table`. [`WriteMode::Upsert`] replaces rows with the
    /// same `key` and keeps the others; [`WriteMode::Replace`] leaves exactly `frame`'s rows.
    /// SQLite: prepared multi-row `INSERT … ON CONFLICT DO UPDATE` (after a `DELETE` to
    /// replace). PostgreSQL: binary `COPY` straight into the table when it is empty or being
    /// replaced (after a `TRUNCATE`), else into a temporary staging table and one
    /// `INSERT … SELECT … ON CONFLICT DO UPDATE`.
    pub async fn write(
        &mut self,
        table: &Ident,
        key: &[&str],
        frame: &DataFrame,
        mode: WriteMode,
    ) -> Result<u64, WarehouseError> {
        self.write_with(table, key, frame, mode, Guard::default())
            .await
    }

    /// [`Tx::write`] with a [`Guard`]: which existing rows may be replaced, and whether other
    /// writers (shards) write the same table at the same time.
    pub async fn write_with(
        &mut self,
        table: &Ident,
        key: &[&str],
        frame: &DataFrame,
        mode: WriteMode,
        guard: Guard<'_>,
    ) -> Result<u64, WarehouseError> {
        let Guard {
            newer_by,
            concurrent,
        } = guard;
        let names: Vec<String> = frame
            .get_column_names()
            .iter()
            .map(|s| s.to_string())
            .collect();
        let cols: Vec<frame::ColumnView> = frame
            .columns()
            .iter()
            .map(frame::ColumnView::of)
            .collect::<Result<_, _>>()
            .map_err(|e| WarehouseError::TableMismatch {
                table: table.to_string(),
                problem: e.to_string(),
            })?;
        let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
        let updates = names
            .iter()
            .filter(|n| !key.contains(&n.as_str()))
            .map(|n| format!("\"{n}\" = excluded.\"{n}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let mut conflict = format!(
            "ON CONFLICT ({}) DO UPDATE SET {updates}",
            key.iter()
                .map(|k| format!("\"{k}\""))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if let Some(c) = newer_by {
            // Both dialects name the existing row by its table's (unqualified) name.
            conflict.push_str(&format!(
                " WHERE \"{}\".\"{c}\" <= excluded.\"{c}\"",
                table.base()
            ));
        }
        match self {
            Tx::Sqlite(tx) => sqlite::write(tx, table, &quoted, &cols, &conflict, mode).await,
            Tx::Postgres(tx) => {
                let w = postgres::Write {
                    table,
                    quoted: &quoted,
                    cols: &cols,
                    conflict: &conflict,
                    mode,
                    concurrent,
                };
                postgres::write(tx, w).await
            }
        }
    }

    pub async fn commit(self) -> Result<(), WarehouseError> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await,
            Tx::Postgres(tx) => tx.commit().await,
        }
        .map_err(WarehouseError::query("commit"))
    }
}

/// The version of a migration script: its FNV-1a hash, so any change to the script runs it.
fn schema_version(script: &str) -> String {
    let hash = script.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// Runs `op` until it succeeds, fails permanently, or `attempts` are used; the back-off
/// doubles after each transient failure.
pub async fn retry<T, F, Fut>(
    what: &str,
    attempts: u32,
    backoff: Duration,
    mut op: F,
) -> Result<T, WarehouseError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, WarehouseError>>,
{
    let mut delay = backoff;
    let mut attempt = 1;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_transient() && attempt < attempts => {
                tracing::warn!(what, attempt, attempts, error = %e, retry_in = ?delay, "transient warehouse error, retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// This host and process, as recorded in lock rows and the ledger.
pub use lease::holder_id;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A live server (PRESCORE_TEST_PG, default the local one) for a test of `what`; skipped
    /// loudly when unreachable, except on CI (PRESCORE_REQUIRE_PG=1 or CI set).
    pub(crate) async fn live_postgres(what: &str, connections: u32) -> Option<Warehouse> {
        let url = std::env::var("PRESCORE_TEST_PG")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        match Warehouse::connect(&url, connections).await {
            Ok(wh) => Some(wh),
            Err(e)
                if std::env::var("PRESCORE_REQUIRE_PG").as_deref() == Ok("1")
                    || std::env::var("CI").is_ok() =>
            {
                panic!("PostgreSQL is required but unreachable: {e}")
            }
            Err(e) => {
                eprintln!("!!!!! SKIPPING a PostgreSQL test of {what}: {e}");
                None
            }
        }
    }

    /// Shards of a first run start together and each creates the results and history tables:
    /// whichever way PostgreSQL's concurrent `CREATE TABLE IF NOT EXISTS` fails the losers
    /// (a catalog unique violation, "type already exists", "relation already exists"), every
    /// one of them must go on. A race: each round gives it another chance to show.
    #[tokio::test]
    async fn tables_created_by_several_runs_at_once_are_created_once_and_nobody_fails() {
        let Some(wh) = live_postgres("concurrent table creation", 8).await else {
            return;
        };
        let schema = format!(
            "race_{}_{}",
            std::process::id(),
            Utc::now().timestamp_micros()
        );
        wh.execute(&format!("CREATE SCHEMA {schema}"), &[])
            .await
            .unwrap();
        let columns = [
            ColumnDef {
                name: "series_id".into(),
                ty: ColumnType::Int,
            },
            ColumnDef {
                name: "yhat".into(),
                ty: ColumnType::Float,
            },
        ];
        for round in 0..60 {
            let table = Ident::new(&format!("{schema}.t{round}")).unwrap();
            let runs = (0..6).map(|_| {
                let (wh, table, columns) = (wh.clone(), table.clone(), columns.clone());
                tokio::spawn(async move {
                    wh.ensure_table(&table, &columns, &["series_id"], true)
                        .await
                })
            });
            for run in futures_util::future::join_all(runs).await {
                run.unwrap()
                    .unwrap_or_else(|e| panic!("round {round}: a concurrent creator failed: {e}"));
            }
            assert_eq!(
                wh.table_columns(&table).await.unwrap().len(),
                2,
                "round {round}"
            );
        }
        wh.execute(&format!("DROP SCHEMA {schema} CASCADE"), &[])
            .await
            .unwrap();
        wh.close().await;
    }

    #[tokio::test]
    async fn retries_transient_errors_and_fails_fast_on_permanent_ones() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let io = || WarehouseError::Query {
            context: "read".into(),
            source: sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "reset",
            )),
        };
        let calls = AtomicU32::new(0);
        let r = retry("read", 3, Duration::from_millis(1), || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 2 {
                    Err(io())
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(r.unwrap(), 2);
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = retry("read", 5, Duration::from_millis(1), || {
            calls.fetch_add(1, Ordering::SeqCst);
            async {
                Err(WarehouseError::Query {
                    context: "read".into(),
                    source: sqlx::Error::RowNotFound,
                })
            }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "a permanent error is not retried"
        );
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = retry("read", 3, Duration::from_millis(1), || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(io()) }
        })
        .await;
        assert!(r.unwrap_err().is_transient());
        assert_eq!(calls.load(Ordering::SeqCst), 3, "attempts are bounded");
    }

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/wh?sslmode=require"),
            "postgres://app:***@db:5432/wh?sslmode=require"
        );
        assert_eq!(redact("postgres://app@db/wh"), "postgres://app@db/wh");
        assert_eq!(redact("sqlite://prescore.db"), "sqlite://prescore.db");
        assert_eq!(redact("postgres://u:p@ss@h/d"), "postgres://u:***@h/d");
    }

    #[test]
    fn redacts_every_form_of_password() {
        for (url, want) in [
            (
                "postgres://u@h/d?password=S3&x=1",
                "postgres://u@h/d?password=***&x=1",
            ),
            (
                "postgres://u@h/d?sslmode=require&PASSWORD=S3",
                "postgres://u@h/d?sslmode=require&PASSWORD=***",
            ),
            ("postgres://u:a/S3@h:5432/d", "postgres://u:***@h:5432/d"),
            ("postgres://u:a?S3@h/d", "postgres://u:***@h/d"),
            (
                "postgres://u:a/b?c@S3@h/d?sslpassword=S3",
                "postgres://u:***@h/d?sslpassword=***",
            ),
            ("postgres://u:a%2FS3@h/d", "postgres://u:***@h/d"),
        ] {
            assert_eq!(redact(url), want, "{url}");
            assert!(!redact(url).contains("S3"), "{url}");
        }
    }
}
