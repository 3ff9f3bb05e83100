//! PostgreSQL's binary `COPY`, both directions. Reading: a job's SQL runs as
//! `COPY (query) TO STDOUT (FORMAT binary)` and the binary fields are decoded straight into the
//! typed [`ColumnBuf`]s, with no per-row structs and no text parsing. Writing: a frame's
//! columns are encoded in place ([`ColumnView`]) and streamed with `COPY … FROM STDIN`. The caller has already checked each declared column's server
//! type against the contract (from `describe`) and says here how each field is decoded.
//!
//! `COPY` takes no bind parameters, so the positional parameters `$1..$n` are replaced by typed
//! literals formatted here from the typed [`Value`]s: text is always an escape string with its
//! quotes and backslashes doubled, so a value can never end its literal early.

use futures_util::TryStreamExt;
use polars::prelude::DataFrame;
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgPool;
use sqlx::Postgres;

use super::frame::{ColumnBuf, ColumnView};
use super::{ColumnType, Value, WarehouseError};

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;
const MICROS_PER_DAY: i64 = 86_400_000_000;
/// The 11-byte signature that starts every binary `COPY` stream.
const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// How one result field is decoded from its binary form, chosen from its server type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Field {
    I16,
    I32,
    I64,
    I16AsF64,
    I32AsF64,
    I64AsF64,
    F32,
    F64,
    /// text, varchar, bpchar, name: the bytes, UTF-8 (the session's client encoding).
    Text,
    Bool,
    /// timestamptz and timestamp: microseconds since 2000-01-01 (a timestamp is read as UTC).
    Timestamp,
    /// Days since 2000-01-01, read as midnight UTC.
    Date,
}

impl Field {
    fn pg_name(self) -> &'static str {
        match self {
            Field::I16 | Field::I16AsF64 => "int2",
            Field::I32 | Field::I32AsF64 => "int4",
            Field::I64 | Field::I64AsF64 => "int8",
            Field::F32 => "float4",
            Field::F64 => "float8",
            Field::Text => "text",
            Field::Bool => "bool",
            Field::Timestamp => "timestamp",
            Field::Date => "date",
        }
    }

    fn width(self) -> Option<usize> {
        match self {
            Field::I16 | Field::I16AsF64 => Some(2),
            Field::I32 | Field::I32AsF64 | Field::F32 | Field::Date => Some(4),
            Field::I64 | Field::I64AsF64 | Field::F64 | Field::Timestamp => Some(8),
            Field::Bool => Some(1),
            Field::Text => None,
        }
    }
}

/// A declared column: its position in the result, its name, and how to decode it into `ty`.
#[derive(Debug, Clone)]
pub(super) struct Wanted {
    pub index: usize,
    pub name: String,
    pub field: Field,
    pub ty: ColumnType,
}

/// Reads `sql` (with `$n` parameters) through binary `COPY`. `n_fields` is the number of columns
/// the SQL returns. `Ok(None)` means this server cannot run the SQL under `COPY` (it rejected
/// the `COPY` statement itself, before sending any row): the caller reads it another way.
pub(super) async fn read_frame(
    pool: &PgPool,
    sql: &str,
    params: &[Value],
    n_fields: usize,
    wanted: &[Wanted],
) -> Result<Option<DataFrame>, WarehouseError> {
    let statement = copy_statement(sql, params)?;
    let conn = pool
        .acquire()
        .await
        .map_err(WarehouseError::query("acquire a connection for COPY"))?;
    let mut guard = CloseUnlessDrained {
        conn,
        drained: false,
    };
    // The job's SQL runs in a READ ONLY transaction: it can never write. A connection whose
    // COPY did not finish is closed (the guard), which ends the transaction with it.
    sqlx::query("BEGIN READ ONLY")
        .execute(&mut *guard.conn)
        .await
        .map_err(WarehouseError::query("begin a read-only transaction"))?;
    let mut decoder = CopyDecoder::new(n_fields, wanted);
    {
        let mut stream = match guard.conn.copy_out_raw(&statement).await {
            Ok(s) => s,
            Err(e) if copy_unsupported(&e) => {
                tracing::warn!(error = %e, "the server refused binary COPY for the job's SQL; reading it row by row");
                return Ok(None);
            }
            Err(source) => {
                return Err(WarehouseError::Query {
                    context: "run the job's SQL (binary COPY)".into(),
                    source,
                })
            }
        };
        while let Some(chunk) = stream
            .try_next()
            .await
            .map_err(WarehouseError::query("run the job's SQL (binary COPY)"))?
        {
            decoder.feed(&chunk)?;
        }
    }
    sqlx::query("COMMIT")
        .execute(&mut *guard.conn)
        .await
        .map_err(WarehouseError::query("end the read-only transaction"))?;
    guard.drained = true;
    let (rows, columns) = decoder.finish()?;
    let columns = columns
        .into_iter()
        .zip(wanted)
        .map(|(buf, w)| buf.into_column(&w.name))
        .collect();
    DataFrame::new(rows, columns)
        .map(Some)
        .map_err(|e| WarehouseError::Decode {
            column: String::new(),
            row: 0,
            expected: "a frame",
            found: e.to_string(),
        })
}

/// A connection in (or after a failed) `COPY OUT` still has the server's messages queued; one
/// that was not read to the end is closed instead of going back to the pool.
struct CloseUnlessDrained {
    conn: PoolConnection<Postgres>,
    drained: bool,
}

impl Drop for CloseUnlessDrained {
    fn drop(&mut self) {
        if !self.drained {
            self.conn.close_on_drop();
        }
    }
}

/// The server cannot run this SQL under `COPY` (a PostgreSQL-compatible server without binary
/// `COPY`, or a statement `COPY (…)` does not accept, such as `EXPLAIN`).
fn copy_unsupported(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => matches!(db.code().as_deref(), Some("0A000" | "42601")),
        _ => false,
    }
}

/// `COPY (sql) TO STDOUT (FORMAT binary)` with the parameters inlined. The newlines keep a
/// trailing `-- comment` in the SQL from swallowing the closing parenthesis.
pub(super) fn copy_statement(sql: &str, params: &[Value]) -> Result<String, WarehouseError> {
    let inlined = inline_params(sql, params).map_err(|m| WarehouseError::Query {
        context: "inline the job's parameters for COPY".into(),
        source: sqlx::Error::InvalidArgument(m),
    })?;
    Ok(format!("COPY (\n{inlined}\n) TO STDOUT (FORMAT binary)"))
}

/// A typed SQL literal for a parameter value, parenthesized so it is one operand wherever `$n`
/// stood (`a -$1` with -5 must not become the comment `a --5`).
pub(super) fn sql_literal(v: &Value) -> Result<String, String> {
    Ok(match v {
        Value::Int(None) => "(NULL::int8)".into(),
        Value::Float(None) => "(NULL::float8)".into(),
        Value::Text(None) => "(NULL::text)".into(),
        Value::Bool(None) => "(NULL::bool)".into(),
        Value::Ts(None) => "(NULL::timestamptz)".into(),
        Value::Bytes(None) => "(NULL::bytea)".into(),
        // Quoted, so i64::MIN parses (as a bare number its magnitude overflows int8).
        Value::Int(Some(i)) => format!("('{i}'::int8)"),
        Value::Float(Some(f)) => {
            let s = if f.is_nan() {
                "NaN".to_string()
            } else if f.is_infinite() {
                if *f > 0.0 { "Infinity" } else { "-Infinity" }.to_string()
            } else {
                // Debug is the shortest text that reads back as the same f64.
                format!("{f:?}")
            };
            format!("('{s}'::float8)")
        }
        Value::Bool(Some(b)) => format!("({b})"),
        Value::Ts(Some(t)) => {
            use chrono::Datelike;
            if !(1..=9999).contains(&t.year()) {
                return Err(format!("timestamp {t} is outside the years 1 to 9999"));
            }
            let fmt = if t.timestamp_subsec_micros() == 0 {
                "%Y-%m-%d %H:%M:%S+00"
            } else {
                "%Y-%m-%d %H:%M:%S%.6f+00"
            };
            format!("('{}'::timestamptz)", t.format(fmt))
        }
        Value::Text(Some(s)) => {
            if s.contains('\0') {
                return Err(
                    "a text parameter contains a NUL character, which PostgreSQL text cannot hold"
                        .into(),
                );
            }
            // An escape string means the same whatever standard_conforming_strings is.
            format!("(E'{}'::text)", s.replace('\\', "\\\\").replace('\'', "''"))
        }
        Value::Bytes(Some(b)) => {
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            format!("(E'\\\\x{hex}'::bytea)")
        }
    })
}

/// Replaces each positional parameter `$n` outside literals, quoted identifiers, comments and
/// dollar-quoted strings with the literal of `params[n - 1]`.
pub(super) fn inline_params(sql: &str, params: &[Value]) -> Result<String, String> {
    let mut out = String::with_capacity(sql.len() + 64);
    let mut copied = 0;
    for (start, end, p) in super::params::placeholders(sql) {
        let super::params::Placeholder::Positional(n) = p else {
            continue;
        };
        let value = n
            .checked_sub(1)
            .and_then(|k| params.get(k))
            .ok_or_else(|| {
                format!(
                    "the SQL uses ${n} but {} parameter(s) are bound",
                    params.len()
                )
            })?;
        out.push_str(&sql[copied..start]);
        out.push_str(&sql_literal(value)?);
        copied = end;
    }
    out.push_str(&sql[copied..]);
    Ok(out)
}

enum State {
    Header,
    Rows,
    Done,
}

/// Decodes a binary `COPY` stream fed in chunks of any size: a row (or the header) split across
/// chunks waits in `carry` until it is complete, and only complete rows reach the buffers.
struct CopyDecoder<'a> {
    n_fields: usize,
    wanted: &'a [Wanted],
    bufs: Vec<ColumnBuf>,
    state: State,
    carry: Vec<u8>,
    rows: usize,
    /// (offset, length or -1 for NULL) of each field of the row being decoded.
    spans: Vec<(usize, i32)>,
}

impl<'a> CopyDecoder<'a> {
    fn new(n_fields: usize, wanted: &'a [Wanted]) -> Self {
        CopyDecoder {
            n_fields,
            wanted,
            bufs: wanted.iter().map(|w| ColumnBuf::new(w.ty, 1024)).collect(),
            state: State::Header,
            carry: Vec::new(),
            rows: 0,
            spans: Vec::with_capacity(n_fields),
        }
    }

    fn feed(&mut self, chunk: &[u8]) -> Result<(), WarehouseError> {
        if self.carry.is_empty() {
            let used = self.consume(chunk)?;
            self.carry.extend_from_slice(&chunk[used..]);
        } else {
            let mut data = std::mem::take(&mut self.carry);
            data.extend_from_slice(chunk);
            let used = self.consume(&data)?;
            data.drain(..used);
            self.carry = data;
        }
        Ok(())
    }

    fn finish(self) -> Result<(usize, Vec<ColumnBuf>), WarehouseError> {
        match self.state {
            State::Done if self.carry.is_empty() => Ok((self.rows, self.bufs)),
            State::Done => {
                Err(self.stream_error("nothing after the end-of-data marker", "more data".into()))
            }
            _ => Err(self.stream_error(
                "a complete binary COPY stream",
                format!(
                    "it ended {} bytes into an incomplete row or header",
                    self.carry.len()
                ),
            )),
        }
    }

    fn stream_error(&self, expected: &'static str, found: String) -> WarehouseError {
        WarehouseError::Decode {
            column: String::new(),
            row: self.rows + 1,
            expected,
            found,
        }
    }

    /// Decodes every complete row at the start of `data`; returns the bytes used.
    fn consume(&mut self, data: &[u8]) -> Result<usize, WarehouseError> {
        let mut pos = 0;
        loop {
            match self.state {
                State::Header => {
                    if data.len() < 19 {
                        return Ok(0);
                    }
                    if &data[..11] != SIGNATURE {
                        return Err(self.stream_error(
                            "the binary COPY signature",
                            format!("{:?}", &data[..11]),
                        ));
                    }
                    let flags = be_u32(&data[11..15]);
                    if flags & (1 << 16) != 0 {
                        return Err(self.stream_error("no OID column", "rows with OIDs".into()));
                    }
                    let ext = be_u32(&data[15..19]) as usize;
                    if data.len() < 19 + ext {
                        return Ok(0);
                    }
                    pos = 19 + ext;
                    self.state = State::Rows;
                }
                State::Rows => {
                    let Some(count) = data.get(pos..pos + 2) else {
                        return Ok(pos);
                    };
                    let count = i16::from_be_bytes([count[0], count[1]]);
                    if count == -1 {
                        self.state = State::Done;
                        pos += 2;
                        continue;
                    }
                    if count < 0 || count as usize != self.n_fields {
                        return Err(self.stream_error(
                            "a row with as many fields as the SQL's columns",
                            format!("{count} fields, the SQL returns {}", self.n_fields),
                        ));
                    }
                    let mut p = pos + 2;
                    self.spans.clear();
                    for _ in 0..count {
                        let Some(len) = data.get(p..p + 4) else {
                            return Ok(pos);
                        };
                        let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
                        p += 4;
                        if len < -1 {
                            return Err(self.stream_error("a field length", format!("{len}")));
                        }
                        self.spans.push((p, len));
                        if len > 0 {
                            p += len as usize;
                            if p > data.len() {
                                return Ok(pos);
                            }
                        }
                    }
                    self.decode_row(data)?;
                    self.rows += 1;
                    pos = p;
                }
                State::Done => {
                    if pos < data.len() {
                        return Err(self.stream_error(
                            "nothing after the end-of-data marker",
                            format!("{} more bytes", data.len() - pos),
                        ));
                    }
                    return Ok(pos);
                }
            }
        }
    }

    fn decode_row(&mut self, data: &[u8]) -> Result<(), WarehouseError> {
        for (w, buf) in self.wanted.iter().zip(self.bufs.iter_mut()) {
            let (start, len) = self.spans[w.index];
            if len < 0 {
                buf.push_null();
                continue;
            }
            let bytes = &data[start..start + len as usize];
            decode(w.field, bytes, buf).map_err(|found| WarehouseError::Decode {
                column: w.name.clone(),
                row: self.rows + 1,
                expected: w.ty.name(),
                found,
            })?;
        }
        Ok(())
    }
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// One non-NULL field into its buffer.
fn decode(field: Field, bytes: &[u8], buf: &mut ColumnBuf) -> Result<(), String> {
    if let Some(w) = field.width() {
        if bytes.len() != w {
            return Err(format!(
                "a {}-byte value where {} takes {w}",
                bytes.len(),
                field.pg_name()
            ));
        }
    }
    let arr = |b: &[u8]| -> [u8; 8] {
        let mut a = [0u8; 8];
        a[..b.len()].copy_from_slice(b);
        a
    };
    let i16v = || i16::from_be_bytes([bytes[0], bytes[1]]);
    let i32v = || i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let i64v = || i64::from_be_bytes(arr(bytes));
    match (field, buf) {
        (Field::I16, ColumnBuf::Int(b)) => b.push(Some(i64::from(i16v()))),
        (Field::I32, ColumnBuf::Int(b)) => b.push(Some(i64::from(i32v()))),
        (Field::I64, ColumnBuf::Int(b)) => b.push(Some(i64v())),
        (Field::I16AsF64, ColumnBuf::Float(b)) => b.push(Some(f64::from(i16v()))),
        (Field::I32AsF64, ColumnBuf::Float(b)) => b.push(Some(f64::from(i32v()))),
        (Field::I64AsF64, ColumnBuf::Float(b)) => b.push(Some(i64v() as f64)),
        (Field::F32, ColumnBuf::Float(b)) => b.push(Some(f64::from(f32::from_bits(i32v() as u32)))),
        (Field::F64, ColumnBuf::Float(b)) => b.push(Some(f64::from_bits(i64v() as u64))),
        (Field::Text, ColumnBuf::Text(b)) => match std::str::from_utf8(bytes) {
            Ok(s) => b.push(Some(s)),
            Err(e) => return Err(format!("text that is not UTF-8 ({e})")),
        },
        (Field::Bool, ColumnBuf::Bool(b)) => b.push(Some(bytes[0] != 0)),
        (Field::Timestamp, ColumnBuf::Ts(b)) => {
            let us = i64v();
            if us == i64::MAX || us == i64::MIN {
                return Err(format!(
                    "timestamp '{}infinity', which has no time",
                    if us < 0 { "-" } else { "" }
                ));
            }
            let unix = us
                .checked_add(PG_EPOCH_OFFSET_US)
                .ok_or_else(|| format!("a timestamp out of range ({us} µs after 2000-01-01)"))?;
            b.push(Some(unix))
        }
        (Field::Date, ColumnBuf::Ts(b)) => {
            let days = i32v();
            if days == i32::MAX || days == i32::MIN {
                return Err(format!(
                    "date '{}infinity', which has no time",
                    if days < 0 { "-" } else { "" }
                ));
            }
            let unix = i64::from(days)
                .checked_mul(MICROS_PER_DAY)
                .and_then(|us| us.checked_add(PG_EPOCH_OFFSET_US))
                .ok_or_else(|| format!("a date out of range ({days} days after 2000-01-01)"))?;
            b.push(Some(unix))
        }
        (f, b) => {
            return Err(format!(
                "{} cannot be decoded into a {} column",
                f.pg_name(),
                b.column_type().name()
            ))
        }
    }
    Ok(())
}

// ---- COPY FROM STDIN (FORMAT binary): the publish direction ----

/// Encodes rows `start..end` in PostgreSQL's binary COPY format.
fn encode_rows(cols: &[ColumnView], start: usize, end: usize, out: &mut Vec<u8>) {
    for r in start..end {
        out.extend_from_slice(&(cols.len() as i16).to_be_bytes());
        for c in cols {
            macro_rules! field {
                ($opt:expr, $bytes:expr) => {
                    match $opt {
                        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                        Some(v) => {
                            #[allow(clippy::redundant_closure_call)]
                            let b = $bytes(v);
                            out.extend_from_slice(&(b.len() as i32).to_be_bytes());
                            out.extend_from_slice(&b);
                        }
                    }
                };
            }
            match c {
                ColumnView::Int(v) => field!(v.get(r), |x: i64| x.to_be_bytes()),
                ColumnView::Float(v) => field!(v.get(r), |x: f64| x.to_bits().to_be_bytes()),
                ColumnView::Bool(v) => field!(v.get(r), |x: bool| [x as u8]),
                ColumnView::Ts(v, unit) => {
                    field!(ColumnView::micros(v, *unit, r), |x: i64| (x
                        - PG_EPOCH_OFFSET_US)
                        .to_be_bytes())
                }
                ColumnView::Text(v) => match v.get(r) {
                    None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                    Some(s) => {
                        out.extend_from_slice(&(s.len() as i32).to_be_bytes());
                        out.extend_from_slice(s.as_bytes());
                    }
                },
            }
        }
    }
}

/// Streams `cols` into `target` with one binary `COPY`, in chunks of encoded rows.
pub(super) async fn copy_in(
    tx: &mut sqlx::Transaction<'static, Postgres>,
    target: &str,
    col_list: &str,
    cols: &[ColumnView],
    what: &str,
) -> Result<u64, WarehouseError> {
    let n_rows = cols.first().map(ColumnView::len).unwrap_or(0);
    let mut copy = tx
        .copy_in_raw(&format!(
            "COPY {target} ({col_list}) FROM STDIN (FORMAT binary)"
        ))
        .await
        .map_err(WarehouseError::query(format!("start COPY into {what}")))?;
    let mut buf = Vec::with_capacity(1 << 20);
    buf.extend_from_slice(SIGNATURE);
    buf.extend_from_slice(&0i32.to_be_bytes());
    buf.extend_from_slice(&0i32.to_be_bytes());
    const CHUNK: usize = 16_384;
    let mut start = 0;
    while start < n_rows {
        let end = (start + CHUNK).min(n_rows);
        encode_rows(cols, start, end, &mut buf);
        copy.send(std::mem::take(&mut buf))
            .await
            .map_err(WarehouseError::query(format!("COPY into {what}")))?;
        buf = Vec::with_capacity(1 << 20);
        start = end;
    }
    buf.extend_from_slice(&(-1i16).to_be_bytes());
    copy.send(buf)
        .await
        .map_err(WarehouseError::query(format!("COPY into {what}")))?;
    copy.finish()
        .await
        .map_err(WarehouseError::query(format!("finish COPY into {what}")))
}

#[cfg(test)]
mod tests {
    use super::super::tests::live_postgres;
    use super::*;
    use crate::warehouse::frame::{ColumnView, Nullable, TextBuf};
    use chrono::{TimeZone, Utc};
    use std::collections::BTreeMap;

    #[test]
    fn literals_are_typed_and_text_cannot_escape_its_quotes() {
        let ts = Utc.with_ymd_and_hms(2026, 11, 1, 6, 0, 0).unwrap();
        let cases = [
            (
                Value::Ts(Some(ts)),
                "('2026-11-01 06:00:00+00'::timestamptz)",
            ),
            (
                Value::Ts(Some(ts + chrono::Duration::microseconds(1500))),
                "('2026-11-01 06:00:00.001500+00'::timestamptz)",
            ),
            (Value::Ts(None), "(NULL::timestamptz)"),
            (Value::Int(Some(42)), "('42'::int8)"),
            (Value::Int(Some(i64::MIN)), "('-9223372036854775808'::int8)"),
            (Value::Float(Some(0.1)), "('0.1'::float8)"),
            (Value::Float(Some(-1e300)), "('-1e300'::float8)"),
            (Value::Float(Some(f64::NAN)), "('NaN'::float8)"),
            (
                Value::Float(Some(f64::NEG_INFINITY)),
                "('-Infinity'::float8)",
            ),
            (Value::Bool(Some(true)), "(true)"),
            (Value::text("O'Brien"), "(E'O''Brien'::text)"),
            (
                Value::text("'; DROP TABLE t; --"),
                "(E'''; DROP TABLE t; --'::text)",
            ),
            (Value::text("a\\'b"), "(E'a\\\\''b'::text)"),
            (Value::Text(None), "(NULL::text)"),
            (Value::Bytes(Some(vec![0, 0xab])), "(E'\\\\x00ab'::bytea)"),
        ];
        for (v, want) in cases {
            assert_eq!(sql_literal(&v).unwrap(), want, "{v:?}");
        }
        assert!(sql_literal(&Value::text("a\0b")).is_err());
    }

    #[test]
    fn inlines_parameters_only_outside_literals_comments_and_quotes() {
        let ts = Utc.with_ymd_and_hms(2026, 11, 1, 6, 0, 0).unwrap();
        let params = [Value::Ts(Some(ts)), Value::Int(Some(-5))];
        let sql = "SELECT '$1', \"a$1\", x$1, $q$ $1 $q$, E'\\' $1', $$ $2 $$ -- $1\n\
                   /* $1 /* $2 */ $1 */ FROM t WHERE a < $1 AND b = c -$2 AND d = $1";
        let got = inline_params(sql, &params).unwrap();
        let lit = "('2026-11-01 06:00:00+00'::timestamptz)";
        assert_eq!(
            got,
            format!(
                "SELECT '$1', \"a$1\", x$1, $q$ $1 $q$, E'\\' $1', $$ $2 $$ -- $1\n\
                 /* $1 /* $2 */ $1 */ FROM t WHERE a < {lit} AND b = c -('-5'::int8) AND d = {lit}"
            )
        );
        assert!(inline_params("SELECT $3", &params)
            .unwrap_err()
            .contains("$3"));
        assert!(inline_params("SELECT $10", &params).is_err());
        // A trailing comment cannot swallow the end of the COPY statement.
        let stmt = copy_statement("SELECT 1 -- done", &[]).unwrap();
        assert_eq!(
            stmt,
            "COPY (\nSELECT 1 -- done\n) TO STDOUT (FORMAT binary)"
        );
    }

    fn field(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
        match bytes {
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(b) => {
                out.extend_from_slice(&(b.len() as i32).to_be_bytes());
                out.extend_from_slice(b);
            }
        }
    }

    /// A binary COPY stream of 7 columns, as PostgreSQL sends it: id int4, skipped text,
    /// name text, score float8, flag bool, at timestamptz, day date.
    fn stream() -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&3u32.to_be_bytes()); // a header extension, to be skipped
        out.extend_from_slice(b"xyz");
        let ts_2026 = 1_793_512_800_000_000i64 - PG_EPOCH_OFFSET_US; // 2026-11-01 06:00:00 UTC
        let rows: [[Option<Vec<u8>>; 7]; 3] = [
            [
                Some(7i32.to_be_bytes().to_vec()),
                Some(b"ignored".to_vec()),
                Some("O'Brien é".as_bytes().to_vec()),
                Some(0.25f64.to_be_bytes().to_vec()),
                Some(vec![1]),
                Some(ts_2026.to_be_bytes().to_vec()),
                Some(9800i32.to_be_bytes().to_vec()),
            ],
            [None, None, None, None, None, None, None],
            [
                Some((-3i32).to_be_bytes().to_vec()),
                Some(Vec::new()),
                Some(Vec::new()),
                Some((-1.5f64).to_be_bytes().to_vec()),
                Some(vec![0]),
                Some((-1i64).to_be_bytes().to_vec()),
                Some((-1i32).to_be_bytes().to_vec()),
            ],
        ];
        for row in &rows {
            out.extend_from_slice(&7i16.to_be_bytes());
            for f in row {
                field(&mut out, f.as_deref());
            }
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }

    fn wanted() -> Vec<Wanted> {
        let w = |index, name: &str, field, ty| Wanted {
            index,
            name: name.into(),
            field,
            ty,
        };
        vec![
            w(0, "id", Field::I32, ColumnType::Int),
            w(2, "name", Field::Text, ColumnType::Text),
            w(3, "score", Field::F64, ColumnType::Float),
            w(4, "flag", Field::Bool, ColumnType::Bool),
            w(5, "at", Field::Timestamp, ColumnType::Timestamp),
            w(6, "day", Field::Date, ColumnType::Timestamp),
            // The same int4 read again as a float column.
            w(0, "id_f", Field::I32AsF64, ColumnType::Float),
        ]
    }

    fn decode_in_chunks(
        data: &[u8],
        cuts: &[usize],
    ) -> Result<(usize, Vec<ColumnBuf>), WarehouseError> {
        let wanted = wanted();
        let mut d = CopyDecoder::new(7, &wanted);
        let mut start = 0;
        for &cut in cuts.iter().chain([data.len()].iter()) {
            d.feed(&data[start..cut])?;
            start = cut;
        }
        d.finish()
    }

    #[test]
    fn decodes_a_binary_copy_stream_split_at_awkward_boundaries() {
        let data = stream();
        let want = vec![
            ColumnBuf::Int(Nullable::from(vec![Some(7), None, Some(-3)])),
            ColumnBuf::Text(TextBuf::from(vec![
                Some("O'Brien é".into()),
                None,
                Some(String::new()),
            ])),
            ColumnBuf::Float(Nullable::from(vec![Some(0.25), None, Some(-1.5)])),
            ColumnBuf::Bool(Nullable::from(vec![Some(true), None, Some(false)])),
            ColumnBuf::Ts(Nullable::from(vec![
                Some(1_793_512_800_000_000),
                None,
                Some(PG_EPOCH_OFFSET_US - 1),
            ])),
            ColumnBuf::Ts(Nullable::from(vec![
                Some(
                    Utc.with_ymd_and_hms(2026, 10, 31, 0, 0, 0)
                        .unwrap()
                        .timestamp_micros(),
                ),
                None,
                Some(
                    Utc.with_ymd_and_hms(1999, 12, 31, 0, 0, 0)
                        .unwrap()
                        .timestamp_micros(),
                ),
            ])),
            ColumnBuf::Float(Nullable::from(vec![Some(7.0), None, Some(-3.0)])),
        ];
        // Whole; one byte at a time; inside the signature, the header extension, a field count,
        // a length prefix, a multi-byte UTF-8 character, and the end-of-data marker.
        let one_byte: Vec<usize> = (1..data.len()).collect();
        let e_acute = data.windows(2).position(|w| w == "é".as_bytes()).unwrap() + 1;
        let splits: Vec<Vec<usize>> = vec![
            vec![],
            one_byte,
            vec![5, 17, 20, 23, 24, 40, e_acute, data.len() - 1],
            vec![3, 21, 22, e_acute, e_acute + 3, data.len() - 2],
            vec![0, 0, 19, 19, 90],
        ];
        for cuts in splits {
            let (rows, cols) = decode_in_chunks(&data, &cuts).unwrap();
            assert_eq!(rows, 3, "cuts {cuts:?}");
            assert_eq!(cols, want, "cuts {cuts:?}");
        }
        // Every single cut point.
        for cut in 0..=data.len() {
            let (_, cols) = decode_in_chunks(&data, &[cut]).unwrap();
            assert_eq!(cols, want, "cut at {cut}");
        }
    }

    #[test]
    fn errors_name_the_column_and_row() {
        let mut data = stream();
        // The third row's int4 id as 3 bytes: rewrite its length prefix and drop one byte.
        let row3 = {
            let at = data.len() - 2; // before the end marker
            let mut p = 0;
            let mut starts = Vec::new();
            let mut i = 22; // after signature, flags, extension length and "xyz"
            while i < at {
                starts.push(i);
                i += 2;
                for _ in 0..7 {
                    let len = i32::from_be_bytes(data[i..i + 4].try_into().unwrap());
                    i += 4 + len.max(0) as usize;
                }
                p += 1;
            }
            assert_eq!(p, 3);
            starts[2]
        };
        data[row3 + 2..row3 + 6].copy_from_slice(&3i32.to_be_bytes());
        data.remove(row3 + 6);
        match decode_in_chunks(&data, &[row3 + 3]) {
            Err(WarehouseError::Decode {
                column,
                row,
                expected,
                found,
            }) => {
                assert_eq!((column.as_str(), row, expected), ("id", 3, "int"));
                assert!(found.contains("3-byte"), "{found}");
            }
            other => panic!("{other:?}"),
        }
        // A stream cut short is an error, not a short frame.
        let data = stream();
        let err = decode_in_chunks(&data[..data.len() - 5], &[10]).unwrap_err();
        assert!(err.to_string().contains("row 3"), "{err}");
        // Infinity has no time.
        let mut buf = ColumnBuf::Ts(Nullable::default());
        let err = decode(Field::Timestamp, &i64::MAX.to_be_bytes(), &mut buf).unwrap_err();
        assert!(err.contains("infinity"), "{err}");
    }

    #[tokio::test]
    async fn literals_mean_the_same_as_bound_parameters_on_the_server() {
        let Some(wh) = live_postgres("the COPY read path", 2).await else {
            return;
        };
        let ts = Utc.with_ymd_and_hms(2026, 11, 1, 6, 0, 0).unwrap();
        let values = [
            Value::Ts(Some(ts)),
            Value::Ts(Some(ts + chrono::Duration::microseconds(123_456))),
            Value::Ts(None),
            Value::Int(Some(i64::MIN)),
            Value::Int(Some(-5)),
            Value::Float(Some(0.1)),
            Value::Float(Some(-1e300)),
            Value::Float(Some(f64::NAN)),
            Value::Float(Some(f64::INFINITY)),
            Value::Bool(Some(false)),
            Value::text("O'Brien"),
            Value::text("a\\'b \\\\ '' ; -- /* é"),
            Value::text(""),
            Value::Text(None),
            Value::Bytes(Some(vec![0, 1, 0xff])),
        ];
        for v in values {
            let lit = sql_literal(&v).unwrap();
            let rows = wh
                .fetch(
                    &format!("SELECT {lit} IS NOT DISTINCT FROM $1"),
                    std::slice::from_ref(&v),
                )
                .await
                .unwrap();
            assert_eq!(rows[0][0], Value::Bool(Some(true)), "{v:?} as {lit}");
        }
        // A negative number after a minus stays a subtraction, not a `--` comment.
        let sql = inline_params("SELECT 10 -$1", &[Value::Int(Some(-5))]).unwrap();
        assert_eq!(
            wh.fetch(&sql, &[]).await.unwrap()[0][0],
            Value::Int(Some(15))
        );
        wh.close().await;
    }

    #[tokio::test]
    async fn reads_every_type_through_copy_and_keeps_the_pool_usable() {
        let Some(wh) = live_postgres("the COPY read path", 2).await else {
            return;
        };
        let ts = Utc.with_ymd_and_hms(2026, 11, 1, 6, 0, 0).unwrap();
        let params = BTreeMap::from([
            ("as_of", Value::Ts(Some(ts))),
            ("who", Value::text("O'Brien \\ x")),
        ]);
        let sql =
            "SELECT g::int4 AS i4, (g % 30000)::int2 AS i2, (g * 1000000000000)::int8 AS i8, \
                   (g / 4.0)::float4 AS f4, (g / 8.0)::float8 AS f8, g::int8 AS i8f, \
                   CASE WHEN g % 3 = 0 THEN NULL ELSE 'row ' || g || ' it''s é' END AS t, \
                   ('v' || g)::varchar(10) AS vc, 'ab'::char(4) AS bp, 'nm'::name AS nm, \
                   g % 2 = 0 AS b, :as_of::timestamptz - g * interval '1 second' AS tstz, \
                   timestamp '2026-01-01 00:00:00' + g * interval '1 day' AS ts, \
                   date '1999-12-30' + g AS d, 'extra' AS skipped, :who AS who \
                   FROM generate_series(1, 50000) g WHERE :as_of > timestamptz '2000-01-01' \
                   -- a trailing comment";
        use ColumnType::*;
        let contract: BTreeMap<String, ColumnType> = [
            ("i4", Int),
            ("i2", Int),
            ("i8", Int),
            ("f4", Float),
            ("f8", Float),
            ("i8f", Float),
            ("t", Text),
            ("vc", Text),
            ("bp", Text),
            ("nm", Text),
            ("b", Bool),
            ("tstz", Timestamp),
            ("ts", Timestamp),
            ("d", Timestamp),
            ("who", Text),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let df = wh
            .read_frame(sql, "test.sql", &params, &contract)
            .await
            .unwrap();
        assert_eq!(df.height(), 50000);
        assert_eq!(df.width(), contract.len());
        let col = |n: &str| ColumnView::of(df.column(n).unwrap()).unwrap();
        let at = |n: &str, r: usize| match col(n) {
            ColumnView::Int(v) => format!("{:?}", v.get(r)),
            ColumnView::Ts(v, unit) => format!("{:?}", ColumnView::micros(&v, unit, r)),
            ColumnView::Float(v) => format!("{:?}", v.get(r)),
            ColumnView::Text(v) => format!("{:?}", v.get(r)),
            ColumnView::Bool(v) => format!("{:?}", v.get(r)),
        };
        let us = |y, m, d, h, mi, s| {
            Utc.with_ymd_and_hms(y, m, d, h, mi, s)
                .unwrap()
                .timestamp_micros()
        };
        assert_eq!(at("i4", 0), "Some(1)");
        assert_eq!(at("i2", 49_999), "Some(20000)");
        assert_eq!(at("i8", 49_999), "Some(50000000000000000)");
        assert_eq!(at("f4", 0), "Some(0.25)");
        assert_eq!(at("f8", 2), "Some(0.375)");
        assert_eq!(at("i8f", 6), "Some(7.0)");
        assert_eq!(at("t", 0), "Some(\"row 1 it's é\")");
        assert_eq!(at("t", 2), "None");
        assert_eq!(at("vc", 9), "Some(\"v10\")");
        assert_eq!(at("bp", 0), "Some(\"ab  \")");
        assert_eq!(at("nm", 0), "Some(\"nm\")");
        assert_eq!(at("b", 1), "Some(true)");
        assert_eq!(
            at("tstz", 0),
            format!("Some({})", us(2026, 11, 1, 5, 59, 59))
        );
        assert_eq!(at("ts", 0), format!("Some({})", us(2026, 1, 2, 0, 0, 0)));
        assert_eq!(at("d", 0), format!("Some({})", us(1999, 12, 31, 0, 0, 0)));
        assert_eq!(at("who", 0), "Some(\"O'Brien \\\\ x\")");

        // A decode error mid-stream names the column and row, and the connection it leaves in
        // the middle of a COPY is closed rather than reused: the pool still answers.
        let bad = "SELECT CASE WHEN g = 2 THEN 'infinity'::timestamptz ELSE now() END AS at \
                   FROM generate_series(1, 100000) g";
        let contract = BTreeMap::from([("at".to_string(), Timestamp)]);
        for _ in 0..3 {
            let err = wh
                .read_frame(bad, "test.sql", &BTreeMap::new(), &contract)
                .await
                .unwrap_err();
            assert!(
                matches!(&err, WarehouseError::Decode { column, row: 2, .. } if column == "at"),
                "{err}"
            );
            let ok = wh.fetch("SELECT 1::int8", &[]).await.unwrap();
            assert_eq!(ok[0][0], Value::Int(Some(1)));
        }
        // The type check still runs first, with its hint.
        let err = wh
            .read_frame(
                "SELECT 1.5::numeric AS at",
                "test.sql",
                &BTreeMap::new(),
                &contract,
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("NUMERIC"), "{err}");
        // A statement COPY cannot wrap is read row by row instead.
        let plan = BTreeMap::from([("QUERY PLAN".to_string(), Text)]);
        let df = wh
            .read_frame("EXPLAIN SELECT 1", "test.sql", &BTreeMap::new(), &plan)
            .await
            .unwrap();
        assert!(df.height() >= 1);
        wh.close().await;
    }
}
