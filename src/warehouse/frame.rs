//! Typed column buffers between the warehouse and polars. Readers append decoded values to a
//! [`ColumnBuf`] per column (no per-row structs), which then becomes one polars column; writers
//! read a polars column in place through a [`ColumnView`].

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone as _, Utc};
use polars::prelude::*;

use super::ColumnType;

#[derive(Debug, Clone, PartialEq)]
pub enum ColumnBuf {
    Int(Nullable<i64>),
    Float(Nullable<f64>),
    Text(TextBuf),
    Bool(Nullable<bool>),
    /// Microseconds since the Unix epoch, UTC.
    Ts(Nullable<i64>),
}

/// Which values are present, kept only from the first NULL on: a column without NULLs pays
/// nothing for it.
#[derive(Debug, Clone, PartialEq, Default)]
struct Validity(Option<Vec<bool>>);

impl Validity {
    /// Records value number `index` (the one after all recorded so far) as present or NULL.
    #[inline]
    fn push(&mut self, index: usize, present: bool) {
        match &mut self.0 {
            Some(mask) => mask.push(present),
            None if !present => {
                let mut mask = vec![true; index];
                mask.push(false);
                self.0 = Some(mask);
            }
            None => {}
        }
    }

    fn is_present(&self, r: usize) -> bool {
        self.0.as_ref().is_none_or(|mask| mask[r])
    }
}

/// Values and their [`Validity`]: a column without NULLs costs exactly its values, and becomes
/// a polars array without being copied.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Nullable<T> {
    values: Vec<T>,
    valid: Validity,
}

impl<T: Copy + Default> Nullable<T> {
    pub fn with_capacity(n: usize) -> Self {
        Nullable {
            values: Vec::with_capacity(n),
            valid: Validity::default(),
        }
    }

    #[inline]
    pub fn push(&mut self, v: Option<T>) {
        self.valid.push(self.values.len(), v.is_some());
        self.values.push(v.unwrap_or_default());
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn get(&self, r: usize) -> Option<T> {
        self.valid.is_present(r).then(|| self.values[r])
    }

    fn iter(&self) -> impl Iterator<Item = Option<T>> + '_ {
        (0..self.len()).map(|r| self.get(r))
    }
}

impl<T: Copy + Default> From<Vec<Option<T>>> for Nullable<T> {
    fn from(v: Vec<Option<T>>) -> Self {
        let mut out = Nullable::with_capacity(v.len());
        for x in v {
            out.push(x);
        }
        out
    }
}

impl<T: Copy + Default> Nullable<T> {
    /// The polars array: the values moved in as they are when there is no NULL.
    fn into_chunked<P>(self, name: PlSmallStr) -> ChunkedArray<P>
    where
        P: PolarsNumericType<Native = T>,
    {
        match self.valid.0 {
            None => ChunkedArray::from_vec(name, self.values),
            Some(valid) => ChunkedArray::from_iter_options(
                name,
                self.values
                    .into_iter()
                    .zip(valid)
                    .map(|(v, ok)| ok.then_some(v)),
            ),
        }
    }
}

/// Text values packed into one byte buffer (no allocation per value).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TextBuf {
    bytes: Vec<u8>,
    ends: Vec<usize>,
    valid: Validity,
}

impl TextBuf {
    pub fn with_capacity(n: usize) -> Self {
        TextBuf {
            bytes: Vec::with_capacity(n * 8),
            ends: Vec::with_capacity(n),
            valid: Validity::default(),
        }
    }

    #[inline]
    pub fn push(&mut self, v: Option<&str>) {
        self.valid.push(self.ends.len(), v.is_some());
        self.bytes
            .extend_from_slice(v.unwrap_or_default().as_bytes());
        self.ends.push(self.bytes.len());
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn get(&self, r: usize) -> Option<&str> {
        if !self.valid.is_present(r) {
            return None;
        }
        let start = if r == 0 { 0 } else { self.ends[r - 1] };
        // Only whole `&str`s are pushed, so every slice is valid UTF-8.
        std::str::from_utf8(&self.bytes[start..self.ends[r]]).ok()
    }

    fn iter(&self) -> impl Iterator<Item = Option<&str>> + '_ {
        (0..self.len()).map(|r| self.get(r))
    }
}

impl From<Vec<Option<String>>> for TextBuf {
    fn from(v: Vec<Option<String>>) -> Self {
        let mut out = TextBuf::with_capacity(v.len());
        for x in &v {
            out.push(x.as_deref());
        }
        out
    }
}

impl ColumnBuf {
    pub fn new(t: ColumnType, capacity: usize) -> Self {
        match t {
            ColumnType::Int => ColumnBuf::Int(Nullable::with_capacity(capacity)),
            ColumnType::Float => ColumnBuf::Float(Nullable::with_capacity(capacity)),
            ColumnType::Text => ColumnBuf::Text(TextBuf::with_capacity(capacity)),
            ColumnType::Bool => ColumnBuf::Bool(Nullable::with_capacity(capacity)),
            ColumnType::Timestamp => ColumnBuf::Ts(Nullable::with_capacity(capacity)),
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

    /// Row `r` as text, for tests.
    #[cfg(test)]
    pub fn cell_debug(&self, r: usize) -> String {
        match self {
            ColumnBuf::Int(v) | ColumnBuf::Ts(v) => format!("{:?}", v.get(r)),
            ColumnBuf::Float(v) => format!("{:?}", v.get(r)),
            ColumnBuf::Text(v) => format!("{:?}", v.get(r)),
            ColumnBuf::Bool(v) => format!("{:?}", v.get(r)),
        }
    }

    /// The polars column, with timestamps as `Datetime(µs, UTC)`. Numeric columns without
    /// NULLs are moved, not copied.
    pub fn into_column(self, name: &str) -> Column {
        let name = PlSmallStr::from(name);
        match self {
            ColumnBuf::Int(v) => v.into_chunked::<Int64Type>(name).into_column(),
            ColumnBuf::Float(v) => v.into_chunked::<Float64Type>(name).into_column(),
            ColumnBuf::Text(v) => StringChunked::from_iter_options(name, v.iter()).into_column(),
            ColumnBuf::Bool(v) => BooleanChunked::from_iter_options(name, v.iter()).into_column(),
            ColumnBuf::Ts(v) => v
                .into_chunked::<Int64Type>(name)
                .into_datetime(TimeUnit::Microseconds, Some(TimeZone::UTC))
                .into_column(),
        }
    }
}

/// A polars column as typed values for writing: the frame's own arrays (rechunked to one
/// chunk when they are not already), read in place rather than copied out row by row.
pub enum ColumnView {
    Int(Int64Chunked),
    Float(Float64Chunked),
    Text(StringChunked),
    Bool(BooleanChunked),
    /// Physical datetime values and their unit; [`ColumnView::micros`] reads them as UTC µs.
    Ts(Int64Chunked, TimeUnit),
}

impl ColumnView {
    pub fn of(c: &Column) -> PolarsResult<Self> {
        Ok(match c.dtype() {
            DataType::Int64 => ColumnView::Int(c.i64()?.rechunk().into_owned()),
            DataType::Int32 => {
                ColumnView::Int(c.cast(&DataType::Int64)?.i64()?.rechunk().into_owned())
            }
            DataType::Float64 => ColumnView::Float(c.f64()?.rechunk().into_owned()),
            DataType::String => ColumnView::Text(c.str()?.rechunk().into_owned()),
            DataType::Boolean => ColumnView::Bool(c.bool()?.rechunk().into_owned()),
            DataType::Datetime(unit, _) => {
                ColumnView::Ts(c.datetime()?.physical().rechunk().into_owned(), *unit)
            }
            other => polars_bail!(ComputeError: "column {} has unsupported type {other}", c.name()),
        })
    }

    pub fn len(&self) -> usize {
        match self {
            ColumnView::Int(v) | ColumnView::Ts(v, _) => v.len(),
            ColumnView::Float(v) => v.len(),
            ColumnView::Text(v) => v.len(),
            ColumnView::Bool(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn column_type(&self) -> ColumnType {
        match self {
            ColumnView::Int(_) => ColumnType::Int,
            ColumnView::Float(_) => ColumnType::Float,
            ColumnView::Text(_) => ColumnType::Text,
            ColumnView::Bool(_) => ColumnType::Bool,
            ColumnView::Ts(..) => ColumnType::Timestamp,
        }
    }

    /// Row `r` of a timestamp column as microseconds since the Unix epoch, UTC.
    #[inline]
    pub fn micros(v: &Int64Chunked, unit: TimeUnit, r: usize) -> Option<i64> {
        v.get(r).map(|x| match unit {
            TimeUnit::Nanoseconds => x.div_euclid(1_000),
            TimeUnit::Microseconds => x,
            TimeUnit::Milliseconds => x * 1_000,
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
    fn buffers_round_trip_through_polars_and_views() {
        let cols = [
            ColumnBuf::Int(Nullable::from(vec![Some(1), None])),
            ColumnBuf::Float(Nullable::from(vec![Some(0.5), None])),
            ColumnBuf::Text(TextBuf::from(vec![None, Some("a".into())])),
            ColumnBuf::Bool(Nullable::from(vec![Some(true), None])),
            ColumnBuf::Ts(Nullable::from(vec![Some(1_700_000_000_000_000), None])),
        ];
        for c in cols {
            let t = c.column_type();
            let col = c.clone().into_column("x");
            assert_eq!(col.dtype(), &polars_dtype(t));
            let view = ColumnView::of(&col).unwrap();
            assert_eq!(view.column_type(), t);
            assert_eq!(view_cells(&view), buf_cells(&c));
        }
    }

    fn buf_cells(c: &ColumnBuf) -> Vec<String> {
        (0..c.len()).map(|r| c.cell_debug(r)).collect()
    }

    fn view_cells(c: &ColumnView) -> Vec<String> {
        (0..c.len())
            .map(|r| match c {
                ColumnView::Int(v) => format!("{:?}", v.get(r)),
                ColumnView::Ts(v, unit) => format!("{:?}", ColumnView::micros(v, *unit, r)),
                ColumnView::Float(v) => format!("{:?}", v.get(r)),
                ColumnView::Text(v) => format!("{:?}", v.get(r)),
                ColumnView::Bool(v) => format!("{:?}", v.get(r)),
            })
            .collect()
    }

    #[test]
    fn sqlite_timestamps_compare_as_text() {
        let a = Utc.with_ymd_and_hms(2026, 1, 31, 13, 0, 0).unwrap();
        assert_eq!(sqlite_ts(a), "2026-01-31 13:00:00");
        assert!(sqlite_ts(a) < sqlite_ts(a + chrono::Duration::microseconds(5)));
    }
}
