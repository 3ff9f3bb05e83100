//! SQLite behind the seam: the embedded default. Values are dynamically typed in SQLite, so
//! every cell is checked against the contract's type as it is decoded; timestamps are stored
//! as UTC text (`YYYY-MM-DD HH:MM:SS`), which sorts and compares correctly.

use std::collections::BTreeMap;

use futures_util::TryStreamExt;
use polars::prelude::DataFrame;
use sqlx::sqlite::{SqliteArguments, SqlitePool, SqliteRow, SqliteValueRef};
use sqlx::{Column, Decode, Executor, Row, Sqlite, TypeInfo, ValueRef};

use super::frame::{parse_timestamp, sqlite_ts, ColumnBuf, ColumnView};
use super::ident::Ident;
use super::{ColumnType, Value, WarehouseError, WriteMode};

type Query<'q> = sqlx::query::Query<'q, Sqlite, SqliteArguments<'q>>;

fn bind<'q>(mut q: Query<'q>, params: &[Value]) -> Query<'q> {
    for p in params {
        q = match p {
            Value::Int(v) => q.bind(*v),
            Value::Float(v) => q.bind(*v),
            Value::Text(v) => q.bind(v.clone()),
            Value::Bool(v) => q.bind(*v),
            Value::Ts(v) => q.bind(v.map(sqlite_ts)),
            Value::Bytes(v) => q.bind(v.clone()),
        };
    }
    q
}

pub(super) async fn execute<'c, E>(e: E, sql: &str, params: &[Value]) -> Result<u64, WarehouseError>
where
    E: Executor<'c, Database = Sqlite>,
{
    bind(sqlx::query(sql), params)
        .execute(e)
        .await
        .map(|r| r.rows_affected())
        .map_err(WarehouseError::query(first_line(sql)))
}

pub(super) async fn fetch<'c, E>(
    e: E,
    sql: &str,
    params: &[Value],
) -> Result<Vec<Vec<Value>>, WarehouseError>
where
    E: Executor<'c, Database = Sqlite>,
{
    let rows = bind(sqlx::query(sql), params)
        .fetch_all(e)
        .await
        .map_err(WarehouseError::query(first_line(sql)))?;
    Ok(rows
        .iter()
        .map(|r| (0..r.len()).map(|i| any_value(r, i)).collect())
        .collect())
}

fn any_value(row: &SqliteRow, i: usize) -> Value {
    let Ok(v) = row.try_get_raw(i) else {
        return Value::Text(None);
    };
    if v.is_null() {
        return Value::Text(None);
    }
    let kind = v.type_info().name().to_string();
    match kind.as_str() {
        "INTEGER" => Value::Int(<i64 as Decode<Sqlite>>::decode(v).ok()),
        "REAL" => Value::Float(<f64 as Decode<Sqlite>>::decode(v).ok()),
        "BLOB" => Value::Bytes(<Vec<u8> as Decode<Sqlite>>::decode(v).ok()),
        _ => Value::Text(<String as Decode<Sqlite>>::decode(v).ok()),
    }
}

pub(super) async fn describe(
    pool: &SqlitePool,
    sql: &str,
    _params: &[Value],
) -> Result<Vec<(String, String)>, WarehouseError> {
    let stmt = pool
        .prepare(sql)
        .await
        .map_err(WarehouseError::query("prepare the job's SQL"))?;
    Ok(sqlx::Statement::columns(&stmt)
        .iter()
        .map(|c| (c.name().to_string(), c.type_info().name().to_string()))
        .collect())
}

/// Reads on a connection switched to `PRAGMA query_only` for the read, so the job's SQL cannot
/// write; a connection that cannot be switched back is closed, never returned to the pool.
pub(super) async fn read_frame(
    pool: &SqlitePool,
    sql: &str,
    params: &[Value],
    contract: &BTreeMap<String, ColumnType>,
) -> Result<DataFrame, WarehouseError> {
    let mut conn = pool.acquire().await.map_err(WarehouseError::query(
        "acquire a connection for the job's SQL",
    ))?;
    execute(&mut *conn, "PRAGMA query_only = ON", &[]).await?;
    let read = read_rows(&mut conn, sql, params, contract).await;
    if execute(&mut *conn, "PRAGMA query_only = OFF", &[])
        .await
        .is_err()
    {
        conn.close_on_drop();
    }
    read
}

async fn read_rows(
    conn: &mut sqlx::SqliteConnection,
    sql: &str,
    params: &[Value],
    contract: &BTreeMap<String, ColumnType>,
) -> Result<DataFrame, WarehouseError> {
    let returned: Vec<String> = sqlx::Statement::columns(
        &(&mut *conn)
            .prepare(sql)
            .await
            .map_err(WarehouseError::query("prepare the job's SQL"))?,
    )
    .iter()
    .map(|c| c.name().to_string())
    .collect();
    super::unique_declared(returned.iter().map(String::as_str), contract)?;
    let mut wanted: Vec<(usize, &String, ColumnBuf)> = Vec::with_capacity(contract.len());
    for (name, ty) in contract {
        let idx = returned.iter().position(|r| r == name).ok_or_else(|| {
            WarehouseError::MissingColumn {
                column: name.clone(),
                returned: returned.join(", "),
            }
        })?;
        wanted.push((idx, name, ColumnBuf::new(*ty, 1024)));
    }
    let mut rows = bind(sqlx::query(sql), params).fetch(&mut *conn);
    let mut n = 0usize;
    while let Some(row) = rows
        .try_next()
        .await
        .map_err(WarehouseError::query("run the job's SQL"))?
    {
        for (idx, name, buf) in wanted.iter_mut() {
            let v = row
                .try_get_raw(*idx)
                .map_err(WarehouseError::query("read a row"))?;
            push(buf, v).map_err(|found| WarehouseError::Decode {
                column: name.to_string(),
                row: n + 1,
                expected: buf.column_type().name(),
                found,
            })?;
        }
        n += 1;
    }
    DataFrame::new(
        n,
        wanted
            .into_iter()
            .map(|(_, name, buf)| buf.into_column(name))
            .collect(),
    )
    .map_err(|e| WarehouseError::Decode {
        column: String::new(),
        row: 0,
        expected: "a frame",
        found: e.to_string(),
    })
}

/// Appends one SQLite value to a typed buffer; the error describes what was found instead.
fn push(buf: &mut ColumnBuf, v: SqliteValueRef<'_>) -> Result<(), String> {
    if v.is_null() {
        buf.push_null();
        return Ok(());
    }
    let storage = v.type_info().name().to_string();
    let text = |v| <String as Decode<Sqlite>>::decode(v).map_err(|e| e.to_string());
    let int = |v| <i64 as Decode<Sqlite>>::decode(v).map_err(|e| e.to_string());
    let real = |v| <f64 as Decode<Sqlite>>::decode(v).map_err(|e| e.to_string());
    match (buf, storage.as_str()) {
        (ColumnBuf::Int(b), "INTEGER") => b.push(Some(int(v)?)),
        (ColumnBuf::Float(b), "REAL") => b.push(Some(real(v)?)),
        (ColumnBuf::Float(b), "INTEGER") => b.push(Some(int(v)? as f64)),
        (ColumnBuf::Text(b), "TEXT") => b.push(Some(&text(v)?)),
        (ColumnBuf::Text(b), "INTEGER") => b.push(Some(&int(v)?.to_string())),
        (ColumnBuf::Bool(b), "INTEGER") => match int(v)? {
            0 => b.push(Some(false)),
            1 => b.push(Some(true)),
            other => return Err(format!("integer {other}")),
        },
        (ColumnBuf::Bool(b), "TEXT") => match text(v)?.to_ascii_lowercase().as_str() {
            "true" | "t" | "1" => b.push(Some(true)),
            "false" | "f" | "0" => b.push(Some(false)),
            other => return Err(format!("text {other:?}")),
        },
        (ColumnBuf::Ts(b), "TEXT") => {
            let s = text(v)?;
            let t = parse_timestamp(&s).ok_or_else(|| format!("text {s:?} (not a timestamp)"))?;
            b.push(Some(t.timestamp_micros()));
        }
        // Integers in a timestamp column are Unix seconds.
        (ColumnBuf::Ts(b), "INTEGER") => b.push(Some(int(v)?.saturating_mul(1_000_000))),
        (_, "TEXT") => return Err(format!("text {:?}", truncate(&text(v)?))),
        (_, "REAL") => return Err(format!("real {}", real(v)?)),
        (_, other) => return Err(other.to_lowercase()),
    }
    Ok(())
}

fn truncate(s: &str) -> String {
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(40).collect::<String>())
    } else {
        s.to_string()
    }
}

pub(super) async fn table_columns(
    pool: &SqlitePool,
    table: &Ident,
) -> Result<Vec<String>, WarehouseError> {
    let rows = fetch(
        pool,
        "SELECT name FROM pragma_table_info($1)",
        &[Value::text(table.base())],
    )
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            r.into_iter()
                .next()
                .and_then(|v| v.as_str().map(str::to_string))
        })
        .collect())
}

/// Multi-row inserts, as many rows per statement as SQLite's parameter limit allows.
pub(super) async fn write(
    tx: &mut sqlx::Transaction<'static, Sqlite>,
    table: &Ident,
    quoted: &[String],
    cols: &[ColumnView],
    conflict: &str,
    mode: WriteMode,
) -> Result<u64, WarehouseError> {
    if mode == WriteMode::Replace {
        execute(&mut **tx, &format!("DELETE FROM {}", table.quoted()), &[]).await?;
    }
    let n_rows = cols.first().map(ColumnView::len).unwrap_or(0);
    let width = cols.len().max(1);
    // Anonymous `?` placeholders: sqlx resolves numbered ones by name, which is quadratic in
    // the number of parameters of a statement.
    let per_stmt = (8_000 / width).clamp(1, 500);
    let row_placeholder = |_offset: usize| format!("({})", vec!["?"; width].join(", "));
    let head = format!(
        "INSERT INTO {} ({}) VALUES ",
        table.quoted(),
        quoted.join(", ")
    );
    let mut written = 0u64;
    let mut full_sql: Option<String> = None;
    let mut start = 0;
    while start < n_rows {
        let end = (start + per_stmt).min(n_rows);
        let rows = end - start;
        let build = || {
            let values = (0..rows)
                .map(|r| row_placeholder(r * width))
                .collect::<Vec<_>>()
                .join(", ");
            format!("{head}{values} {conflict}")
        };
        let sql = if rows == per_stmt {
            full_sql.get_or_insert_with(build).clone()
        } else {
            build()
        };
        let mut q: Query<'_> = sqlx::query(&sql);
        for r in start..end {
            for c in cols {
                q = match c {
                    ColumnView::Int(v) => q.bind(v.get(r)),
                    ColumnView::Float(v) => q.bind(v.get(r)),
                    ColumnView::Text(v) => q.bind(v.get(r)),
                    ColumnView::Bool(v) => q.bind(v.get(r)),
                    ColumnView::Ts(v, unit) => q.bind(
                        ColumnView::micros(v, *unit, r)
                            .map(|us| sqlite_ts(super::frame::micros_to_utc(us))),
                    ),
                };
            }
        }
        written += q
            .execute(&mut **tx)
            .await
            .map_err(WarehouseError::query(format!("upsert into {table}")))?
            .rows_affected();
        start = end;
    }
    Ok(written)
}

/// A lock transaction that found the file busy for the whole busy timeout: another process
/// holds the file, which is reported as [`WarehouseError::Locked`] (exit 5), never as a failure.
pub(super) fn busy_as_locked(e: WarehouseError, job: &str, shard: &str) -> WarehouseError {
    match e {
        WarehouseError::Query { source, .. } if is_busy(&source) => WarehouseError::Locked {
            job: job.into(),
            shard: shard.into(),
            holder: format!(
                "the SQLite file stayed busy with another writer for the whole busy timeout ({}s)",
                BUSY_TIMEOUT.as_secs()
            ),
        },
        other => other,
    }
}

/// How long a statement waits for another process's write lock on the file.
pub(super) const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// SQLITE_BUSY or SQLITE_LOCKED, with any extended code.
fn is_busy(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => matches!(
            db.code().unwrap_or_default().parse::<i32>(),
            Ok(c) if c & 0xff == 5 || c & 0xff == 6
        ),
        _ => false,
    }
}

fn first_line(sql: &str) -> String {
    let line = sql.trim().lines().next().unwrap_or_default();
    format!("SQL `{}`", truncate(line))
}
