//! PostgreSQL behind the seam: the real warehouse. Columns are typed by the server, so each
//! result column's type is checked against the contract once, before any row is decoded.
//! Publishing streams a binary `COPY` straight into an empty (or truncated) table, or into a
//! temporary staging table and then upserts from it in one statement. A `timestamp without
//! time zone` is read as UTC.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use futures_util::TryStreamExt;
use polars::prelude::DataFrame;
use sqlx::postgres::{PgArguments, PgPool, PgRow, PgTypeInfo};
use sqlx::{Column, Connection, Executor, Postgres, Row, TypeInfo};

use super::frame::{ColumnBuf, ColumnView};
use super::ident::Ident;
use super::pg_copy::copy_in;
use super::{ColumnType, Value, WarehouseError, WriteMode};

type Query<'q> = sqlx::query::Query<'q, Postgres, PgArguments>;

fn bind<'q>(mut q: Query<'q>, params: &[Value]) -> Query<'q> {
    for p in params {
        q = match p {
            Value::Int(v) => q.bind(*v),
            Value::Float(v) => q.bind(*v),
            Value::Text(v) => q.bind(v.clone()),
            Value::Bool(v) => q.bind(*v),
            Value::Ts(v) => q.bind(*v),
            Value::Bytes(v) => q.bind(v.clone()),
        };
    }
    q
}

pub(super) async fn execute<'c, E>(e: E, sql: &str, params: &[Value]) -> Result<u64, WarehouseError>
where
    E: Executor<'c, Database = Postgres>,
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
    E: Executor<'c, Database = Postgres>,
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

fn any_value(row: &PgRow, i: usize) -> Value {
    let ty = row.column(i).type_info().name().to_string();
    match ty.as_str() {
        "INT2" => Value::Int(
            row.try_get::<Option<i16>, _>(i)
                .ok()
                .flatten()
                .map(i64::from),
        ),
        "INT4" => Value::Int(
            row.try_get::<Option<i32>, _>(i)
                .ok()
                .flatten()
                .map(i64::from),
        ),
        "INT8" => Value::Int(row.try_get(i).ok().flatten()),
        "FLOAT4" => Value::Float(
            row.try_get::<Option<f32>, _>(i)
                .ok()
                .flatten()
                .map(f64::from),
        ),
        "FLOAT8" => Value::Float(row.try_get(i).ok().flatten()),
        "BOOL" => Value::Bool(row.try_get(i).ok().flatten()),
        "TIMESTAMPTZ" => Value::Ts(row.try_get(i).ok().flatten()),
        "TIMESTAMP" => Value::Ts(
            row.try_get::<Option<NaiveDateTime>, _>(i)
                .ok()
                .flatten()
                .map(|n| n.and_utc()),
        ),
        "BYTEA" => Value::Bytes(row.try_get(i).ok().flatten()),
        _ => Value::Text(row.try_get(i).ok().flatten()),
    }
}

pub(super) async fn describe(
    pool: &PgPool,
    sql: &str,
    params: &[Value],
) -> Result<Vec<(String, String)>, WarehouseError> {
    // Tell the server the parameters' types, as a run binds them: `:as_of - interval '1 h'`
    // must not be read as `unknown - interval`.
    let types: Vec<sqlx::postgres::PgTypeInfo> = params
        .iter()
        .map(|p| match p {
            Value::Int(_) => PgTypeInfo::with_name("INT8"),
            Value::Float(_) => PgTypeInfo::with_name("FLOAT8"),
            Value::Text(_) => PgTypeInfo::with_name("TEXT"),
            Value::Bool(_) => PgTypeInfo::with_name("BOOL"),
            Value::Ts(_) => PgTypeInfo::with_name("TIMESTAMPTZ"),
            Value::Bytes(_) => PgTypeInfo::with_name("BYTEA"),
        })
        .collect();
    let stmt = pool
        .prepare_with(sql, &types)
        .await
        .map_err(WarehouseError::query("prepare the job's SQL"))?;
    Ok(sqlx::Statement::columns(&stmt)
        .iter()
        .map(|c| (c.name().to_string(), c.type_info().name().to_string()))
        .collect())
}

/// How one result column is decoded, chosen once from its server type.
#[derive(Clone, Copy)]
enum Decoder {
    I16,
    I32,
    I64,
    F32,
    F64,
    IntAsF64,
    Text,
    Bool,
    TsTz,
    Ts,
    Date,
}

fn decoder_for(want: ColumnType, pg: &str) -> Option<Decoder> {
    use ColumnType::*;
    Some(match (want, pg) {
        (Int, "INT2") => Decoder::I16,
        (Int, "INT4") => Decoder::I32,
        (Int, "INT8") => Decoder::I64,
        (Float, "FLOAT4") => Decoder::F32,
        (Float, "FLOAT8") => Decoder::F64,
        (Float, "INT2" | "INT4" | "INT8") => Decoder::IntAsF64,
        (Text, "TEXT" | "VARCHAR" | "BPCHAR" | "NAME") => Decoder::Text,
        (Bool, "BOOL") => Decoder::Bool,
        (Timestamp, "TIMESTAMPTZ") => Decoder::TsTz,
        (Timestamp, "TIMESTAMP") => Decoder::Ts,
        (Timestamp, "DATE") => Decoder::Date,
        _ => return None,
    })
}

pub(super) async fn read_frame(
    pool: &PgPool,
    sql: &str,
    params: &[Value],
    contract: &BTreeMap<String, ColumnType>,
) -> Result<DataFrame, WarehouseError> {
    let returned = describe(pool, sql, params).await?;
    super::unique_declared(returned.iter().map(|(n, _)| n.as_str()), contract)?;
    let mut wanted = Vec::with_capacity(contract.len());
    for (name, ty) in contract {
        let Some(idx) = returned.iter().position(|(r, _)| r == name) else {
            return Err(WarehouseError::MissingColumn {
                column: name.clone(),
                returned: returned
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let pg = &returned[idx].1;
        // sqlx names blank-padded char(n) "CHAR" (and the one-byte "char" type `"CHAR"`).
        let pg_name = if pg == "CHAR" { "BPCHAR" } else { pg.as_str() };
        let dec = decoder_for(*ty, pg_name).ok_or_else(|| WarehouseError::Decode {
            column: name.clone(),
            row: 1,
            expected: ty.name(),
            found: format!(
                "PostgreSQL type {pg}{}",
                if pg == "NUMERIC" {
                    " (cast it to float8 in the SQL)"
                } else {
                    ""
                }
            ),
        })?;
        wanted.push((idx, name, dec, ColumnBuf::new(*ty, 1024)));
    }
    // The fast path: binary COPY decoded straight into column buffers.
    use super::pg_copy;
    let copy_cols: Vec<pg_copy::Wanted> = wanted
        .iter()
        .map(|(idx, name, dec, buf)| pg_copy::Wanted {
            index: *idx,
            name: name.to_string(),
            field: match dec {
                Decoder::I16 => pg_copy::Field::I16,
                Decoder::I32 => pg_copy::Field::I32,
                Decoder::I64 => pg_copy::Field::I64,
                Decoder::F32 => pg_copy::Field::F32,
                Decoder::F64 => pg_copy::Field::F64,
                Decoder::IntAsF64 => match returned[*idx].1.as_str() {
                    "INT2" => pg_copy::Field::I16AsF64,
                    "INT4" => pg_copy::Field::I32AsF64,
                    _ => pg_copy::Field::I64AsF64,
                },
                Decoder::Text => pg_copy::Field::Text,
                Decoder::Bool => pg_copy::Field::Bool,
                Decoder::TsTz | Decoder::Ts => pg_copy::Field::Timestamp,
                Decoder::Date => pg_copy::Field::Date,
            },
            ty: buf.column_type(),
        })
        .collect();
    if let Some(df) = pg_copy::read_frame(pool, sql, params, returned.len(), &copy_cols).await? {
        return Ok(df);
    }
    // The server refused COPY for this SQL (a PostgreSQL-compatible server without binary
    // COPY, or a statement COPY does not wrap): decode it row by row, read only as well. The
    // transaction only reads, so it is rolled back when it goes out of scope.
    let mut tx = pool
        .begin()
        .await
        .map_err(WarehouseError::query("begin a read-only transaction"))?;
    execute(&mut *tx, "SET TRANSACTION READ ONLY", &[]).await?;
    let mut rows = bind(sqlx::query(sql), params).fetch(&mut *tx);
    let mut n = 0usize;
    while let Some(row) = rows
        .try_next()
        .await
        .map_err(WarehouseError::query("run the job's SQL"))?
    {
        for (idx, name, dec, buf) in wanted.iter_mut() {
            push(&row, *idx, *dec, buf).map_err(|e| WarehouseError::Decode {
                column: name.to_string(),
                row: n + 1,
                expected: buf.column_type().name(),
                found: e.to_string(),
            })?;
        }
        n += 1;
    }
    DataFrame::new(
        n,
        wanted
            .into_iter()
            .map(|(_, name, _, buf)| buf.into_column(name))
            .collect(),
    )
    .map_err(|e| WarehouseError::Decode {
        column: String::new(),
        row: 0,
        expected: "a frame",
        found: e.to_string(),
    })
}

fn push(row: &PgRow, i: usize, dec: Decoder, buf: &mut ColumnBuf) -> Result<(), sqlx::Error> {
    match (dec, buf) {
        (Decoder::I16, ColumnBuf::Int(b)) => {
            b.push(row.try_get::<Option<i16>, _>(i)?.map(i64::from))
        }
        (Decoder::I32, ColumnBuf::Int(b)) => {
            b.push(row.try_get::<Option<i32>, _>(i)?.map(i64::from))
        }
        (Decoder::I64, ColumnBuf::Int(b)) => b.push(row.try_get::<Option<i64>, _>(i)?),
        (Decoder::F32, ColumnBuf::Float(b)) => {
            b.push(row.try_get::<Option<f32>, _>(i)?.map(f64::from))
        }
        (Decoder::F64, ColumnBuf::Float(b)) => b.push(row.try_get::<Option<f64>, _>(i)?),
        (Decoder::IntAsF64, ColumnBuf::Float(b)) => {
            let v = match row.column(i).type_info().name() {
                "INT2" => row.try_get::<Option<i16>, _>(i)?.map(f64::from),
                "INT4" => row.try_get::<Option<i32>, _>(i)?.map(f64::from),
                _ => row.try_get::<Option<i64>, _>(i)?.map(|v| v as f64),
            };
            b.push(v)
        }
        (Decoder::Text, ColumnBuf::Text(b)) => b.push(row.try_get::<Option<&str>, _>(i)?),
        (Decoder::Bool, ColumnBuf::Bool(b)) => b.push(row.try_get::<Option<bool>, _>(i)?),
        (Decoder::TsTz, ColumnBuf::Ts(b)) => b.push(
            row.try_get::<Option<DateTime<Utc>>, _>(i)?
                .map(|t| t.timestamp_micros()),
        ),
        (Decoder::Ts, ColumnBuf::Ts(b)) => b.push(
            row.try_get::<Option<NaiveDateTime>, _>(i)?
                .map(|t| t.and_utc().timestamp_micros()),
        ),
        (Decoder::Date, ColumnBuf::Ts(b)) => b.push(
            row.try_get::<Option<NaiveDate>, _>(i)?
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| t.and_utc().timestamp_micros()),
        ),
        _ => unreachable!("decoder chosen for the buffer's type"),
    }
    Ok(())
}

pub(super) async fn table_columns(
    pool: &PgPool,
    table: &Ident,
) -> Result<Vec<String>, WarehouseError> {
    let rows = fetch(
        pool,
        "SELECT a.attname::text FROM pg_attribute a \
         WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        &[Value::text(table.quoted())],
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

/// The PostgreSQL type prescore creates for a column type.
pub(super) fn pg_type(t: ColumnType) -> &'static str {
    match t {
        ColumnType::Int => "BIGINT",
        ColumnType::Float => "DOUBLE PRECISION",
        ColumnType::Text => "TEXT",
        ColumnType::Bool => "BOOLEAN",
        ColumnType::Timestamp => "TIMESTAMPTZ",
    }
}

/// One keyed write into a results table (see [`super::Tx::write_with`]).
pub(super) struct Write<'a> {
    pub table: &'a Ident,
    pub quoted: &'a [String],
    pub cols: &'a [ColumnView],
    pub conflict: &'a str,
    pub mode: WriteMode,
    pub concurrent: bool,
}

pub(super) async fn write(
    tx: &mut sqlx::Transaction<'static, Postgres>,
    w: Write<'_>,
) -> Result<u64, WarehouseError> {
    let Write {
        table,
        quoted,
        cols,
        conflict,
        mode,
        concurrent,
    } = w;
    let target = table.quoted();
    let col_list = quoted.join(", ");
    let started = std::time::Instant::now();
    let direct = match mode {
        WriteMode::Replace => {
            execute(&mut **tx, &format!("TRUNCATE {target}"), &[]).await?;
            true
        }
        // Shards write disjoint keys at once: no table lock, row locks keep them apart.
        WriteMode::Upsert if concurrent => false,
        WriteMode::Upsert => {
            // Writers wait (readers do not), so the table stays empty between the check and
            // the COPY.
            execute(
                &mut **tx,
                &format!("LOCK TABLE {target} IN SHARE ROW EXCLUSIVE MODE"),
                &[],
            )
            .await?;
            let rows = fetch(
                &mut **tx,
                &format!("SELECT EXISTS (SELECT 1 FROM {target})"),
                &[],
            )
            .await?;
            !matches!(
                rows.first().and_then(|r| r.first()),
                Some(Value::Bool(Some(true)))
            )
        }
    };
    if direct {
        // An empty table takes the rows as they are: one COPY, no staging, no key probes.
        // The keys are unique (the contract checked them); a duplicate would fail the COPY.
        let n = copy_in(tx, &target, &col_list, cols, "the results table").await?;
        tracing::debug!(
            rows = n,
            copy_s = started.elapsed().as_secs_f64(),
            ?mode,
            "copied into the table"
        );
        return Ok(n);
    }
    let stage = format!("\"prescore_stage_{}\"", table.base());
    let defs = quoted
        .iter()
        .zip(cols)
        .map(|(n, c)| format!("{n} {}", pg_type(c.column_type())))
        .collect::<Vec<_>>()
        .join(", ");
    execute(
        &mut **tx,
        &format!("CREATE TEMP TABLE {stage} ({defs}) ON COMMIT DROP"),
        &[],
    )
    .await?;
    copy_in(tx, &stage, &col_list, cols, "the staging table").await?;
    let copied = started.elapsed();
    let n = execute(
        &mut **tx,
        &format!("INSERT INTO {target} ({col_list}) SELECT {col_list} FROM {stage} {conflict}"),
        &[],
    )
    .await?;
    tracing::debug!(
        rows = n,
        copy_s = copied.as_secs_f64(),
        upsert_s = (started.elapsed() - copied).as_secs_f64(),
        "staged and upserted"
    );
    Ok(n)
}

/// Takes the job's session advisory lock on a connection of its own, which the run keeps.
pub(super) async fn lock(
    pool: &PgPool,
    job: &str,
    shard: &str,
) -> Result<sqlx::PgConnection, WarehouseError> {
    let conn = pool.acquire().await.map_err(WarehouseError::query(
        "acquire a connection for the job lock",
    ))?;
    let mut conn = conn.detach();
    let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
        .bind(format!("prescore:{job}:{shard}"))
        .fetch_one(&mut conn)
        .await
        .map_err(WarehouseError::query("take the job's advisory lock"))?;
    if !got {
        let _ = conn.close().await;
        return Err(WarehouseError::Locked {
            job: job.into(),
            shard: shard.into(),
            holder: "another session holds its advisory lock".into(),
        });
    }
    Ok(conn)
}

/// Releases the advisory lock explicitly (so the next run never races the server noticing
/// the closed session), then closes the session, which would release it anyway.
pub(super) async fn unlock(mut conn: sqlx::PgConnection) {
    if let Err(e) = sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(&mut conn)
        .await
    {
        tracing::warn!(error = %e, "could not release the advisory lock; closing its session releases it");
    }
    if let Err(e) = conn.close().await {
        tracing::warn!(error = %e, "closing the lock connection failed; the server releases the lock when the session ends");
    }
}

fn first_line(sql: &str) -> String {
    let line = sql.trim().lines().next().unwrap_or_default();
    let short: String = line.chars().take(60).collect();
    format!("SQL `{short}`")
}
