//! The vocabulary the warehouse seam speaks: the column types a contract declares, how a
//! publish writes a table, and which dialect a URL names. Config validation and the
//! connection both use these, so the config depends on the warehouse and never the reverse.

/// The embedded default warehouse: a SQLite file in the working directory.
pub const DEFAULT_URL: &str = "sqlite://prescore.db";

/// The declared type of an input column: the contract the job's SQL must keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    Int,
    Float,
    Text,
    Bool,
    Timestamp,
}

impl ColumnType {
    pub fn name(self) -> &'static str {
        match self {
            ColumnType::Int => "int",
            ColumnType::Float => "float",
            ColumnType::Text => "text",
            ColumnType::Bool => "bool",
            ColumnType::Timestamp => "timestamp",
        }
    }
}

/// How a publish writes the results table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteMode {
    /// Insert new keys, replace the rows of keys already there; rows of entities missing from
    /// this run stay. Readers are never blocked.
    #[default]
    Upsert,
    /// The table afterwards holds exactly this run's rows. On PostgreSQL a `TRUNCATE` and a
    /// `COPY` straight into the table, the fastest write; readers wait for the commit.
    Replace,
}

/// The database behind a URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// `sqlite:…` or `postgres://…` / `postgresql://…`; None for anything else.
    pub fn from_url(url: &str) -> Option<Dialect> {
        let url = url.trim();
        if url.starts_with("sqlite:") {
            Some(Dialect::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Dialect::Postgres)
        } else {
            None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialects_from_urls() {
        assert_eq!(Dialect::from_url(DEFAULT_URL), Some(Dialect::Sqlite));
        assert_eq!(Dialect::from_url("sqlite::memory:"), Some(Dialect::Sqlite));
        assert_eq!(
            Dialect::from_url("postgresql://u@h/db"),
            Some(Dialect::Postgres)
        );
        assert_eq!(Dialect::from_url("mysql://x"), None);
    }
}
