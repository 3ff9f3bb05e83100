//! Typed column buffers between the warehouse and polars. Readers append decoded values to a
//! [`ColumnBuf`] per column (no per-row structs), which then becomes one polars column; writers
//! take a polars column back into a buffer they can encode row by row.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone as _, Utc};
use polars::prelude::*;

use crate::config::ColumnType;

#[derive(Debug, Clone, PartialEq)]
pub enum ColumnBuf {
    Int(Vec<Option<i64>>),
    Float(Vec<Option<f64>>),
    Text(Vec<Option<String>>),
    Bool(Vec<Option<bool>>),
    /// Microseconds since the Unix epoch, UTC.
    Ts(Vec<Option<i64>>),
}

impl ColumnBuf {
    pub fn new(t: ColumnType, capacity: usize) -> Self {
        match t {
            ColumnType::Int => ColumnBuf::Int(Vec::with_capacity(capacity)),
            ColumnType::Float => ColumnBuf::Float(Vec::with_capacity(capacity)),
            ColumnType::Text => ColumnBuf::Text(Vec::with_capacity(capacity)),
            ColumnType::Bool => ColumnBuf::Bool(Vec::with_capacity(capacity)),
            ColumnType::Timestamp => ColumnBuf::Ts(Vec::with_capacity(capacity)),
        }
    }

    pub fn column_type(&self) -> ColumnType {
        match self {
            ColumnBuf::Int(_) => ColumnType::Int,
            ColumnBuf::Float(_) => ColumnType::Float,
            ColumnBuf::Text(_) => ColumnType::Text,
            ColumnBuf::Bool(_) => ColumnType::Bool,
            ColumnBuf::Ts(_) => ColumnType::Timestamp,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            ColumnBuf::Int(v) | ColumnBuf::Ts(v) => v.len(),
            ColumnBuf::Float(v) => v.len(),
            ColumnBuf::Text(v) => v.len(),
            ColumnBuf::Bool(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn push_null(&mut self) {
        match self {
            ColumnBuf::Int(v) | ColumnBuf::Ts(v) => v.push(None),
            ColumnBuf::Float(v) => v.push(None),
            ColumnBuf::Text(v) => v.push(None),
            ColumnBuf::Bool(v) => v.push(None),
        }
    }

    /// The polars column, with timestamps as `Datetime(µs, UTC)`.
    pub fn into_column(self, name: &str) -> Column {
        let name = PlSmallStr::from(name);
        match self {
            ColumnBuf::Int(v) => Int64Chunked::from_iter_options(name, v.into_iter()).into_column(),
            ColumnBuf::Float(v) => {
                Float64Chunked::from_iter_options(name, v.into_iter()).into_column()
            }
            ColumnBuf::Text(v) => {
                StringChunked::from_iter_options(name, v.into_iter()).into_column()
            }
            ColumnBuf::Bool(v) => {
                BooleanChunked::from_iter_options(name, v.into_iter()).into_column()
            }
            ColumnBuf::Ts(v) => Int64Chunked::from_iter_options(name, v.into_iter())
                .into_datetime(TimeUnit::Microseconds, Some(TimeZone::UTC))
                .into_column(),
        }
    }

    /// A polars column back into a buffer, for writing.
    pub fn from_column(c: &Column) -> PolarsResult<Self> {
        Ok(match c.dtype() {
            DataType::Int64 => ColumnBuf::Int(c.i64()?.iter().collect()),
            DataType::Int32 => ColumnBuf::Int(c.i32()?.iter().map(|v| v.map(i64::from)).collect()),
            DataType::Float64 => ColumnBuf::Float(c.f64()?.iter().collect()),
            DataType::String => {
                ColumnBuf::Text(c.str()?.iter().map(|v| v.map(str::to_string)).collect())
            }
            DataType::Boolean => ColumnBuf::Bool(c.bool()?.iter().collect()),
            DataType::Datetime(unit, _) => {
                let scale = match unit {
                    TimeUnit::Nanoseconds => 1_000,
                    TimeUnit::Microseconds => 1,
                    TimeUnit::Milliseconds => -1_000,
                };
                ColumnBuf::Ts(
                    c.datetime()?
                        .physical()
                        .iter()
                        .map(|v| v.map(|x| if scale > 0 { x / scale } else { x * -scale }))
                        .collect(),
                )
            }
            other => polars_bail!(ComputeError: "column {} has unsupported type {other}", c.name()),
        })
    }
}

/// The polars dtype a declared column type becomes.
pub fn polars_dtype(t: ColumnType) -> DataType {
    match t {
        ColumnType::Int => DataType::Int64,
        ColumnType::Float => DataType::Float64,
        ColumnType::Text => DataType::String,
        ColumnType::Bool => DataType::Boolean,
        ColumnType::Timestamp => DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC)),
    }
}

/// One cell as text, for keys in messages, hashing and uniqueness checks. Timestamps print as
/// UTC `YYYY-MM-DD HH:MM:SS` (polars itself would need its time-zone database for that).
pub fn cell_text(c: &Column, r: usize) -> String {
    match c.dtype() {
        DataType::Datetime(_, _) => c
            .datetime()
            .ok()
            .and_then(|d| d.physical().get(r))
            .map(|us| micros_to_utc(us).format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default(),
        _ => c
            .get(r)
            .map(|v| v.str_value().to_string())
            .unwrap_or_default(),
    }
}

/// Parses the timestamp spellings SQLite data commonly has: `2026-01-31 13:00:00`, with
/// fractions, `T` separators, a `Z` or `+hh:mm` offset, or a bare date. No offset means UTC.
pub fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%#z"] {
        if let Ok(dt) = DateTime::parse_from_str(s, fmt) {
            return Some(dt.with_timezone(&Utc));
        }
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(Utc.from_utc_datetime(&n));
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|n| Utc.from_utc_datetime(&n))
}

/// Microseconds since the epoch to a UTC time.
pub fn micros_to_utc(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

/// The text form SQLite stores timestamps in (sorts and compares correctly as text).
pub fn sqlite_ts(t: DateTime<Utc>) -> String {
    if t.timestamp_subsec_micros() == 0 {
        t.format("%Y-%m-%d %H:%M:%S").to_string()
    } else {
        t.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_timestamp_spellings_as_utc() {
        let want = Utc.with_ymd_and_hms(2026, 1, 31, 13, 0, 0).unwrap();
        for s in [
            "2026-01-31 13:00:00",
            "2026-01-31T13:00:00Z",
            "2026-01-31T14:00:00+01:00",
            "2026-01-31 13:00:00.000",
            "2026-01-31 13:00",
        ] {
            assert_eq!(parse_timestamp(s), Some(want), "{s}");
        }
        assert_eq!(
            parse_timestamp("2026-01-31"),
            Some(Utc.with_ymd_and_hms(2026, 1, 31, 0, 0, 0).unwrap())
        );
        assert_eq!(parse_timestamp("yesterday"), None);
    }

    #[test]
    fn buffers_round_trip_through_polars() {
        let cols = [
            ColumnBuf::Int(vec![Some(1), None]),
            ColumnBuf::Float(vec![Some(0.5), None]),
            ColumnBuf::Text(vec![None, Some("a".into())]),
            ColumnBuf::Bool(vec![Some(true), None]),
            ColumnBuf::Ts(vec![Some(1_700_000_000_000_000), None]),
        ];
        for c in cols {
            let t = c.column_type();
            let col = c.clone().into_column("x");
            assert_eq!(col.dtype(), &polars_dtype(t));
            assert_eq!(ColumnBuf::from_column(&col).unwrap(), c);
        }
    }

    #[test]
    fn sqlite_timestamps_compare_as_text() {
        let a = Utc.with_ymd_and_hms(2026, 1, 31, 13, 0, 0).unwrap();
        assert_eq!(sqlite_ts(a), "2026-01-31 13:00:00");
        assert!(sqlite_ts(a) < sqlite_ts(a + chrono::Duration::microseconds(5)));
    }
}
