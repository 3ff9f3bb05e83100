//! Identifiers from the config (tables, columns) are checked against a strict pattern and
//! always quoted, so a config can never smuggle SQL into a statement. Values are never pasted:
//! they are bound parameters.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ident(String);

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0:?} is not a valid identifier: use letters, digits and `_` (optionally `schema.table`), starting with a letter or `_`, at most 63 characters")]
pub struct BadIdent(pub String);

impl Ident {
    /// Accepts `name` or `schema.name`; each part `[A-Za-z_][A-Za-z0-9_]{0,62}`.
    pub fn new(s: &str) -> Result<Self, BadIdent> {
        let parts: Vec<&str> = s.split('.').collect();
        let ok = (1..=2).contains(&parts.len())
            && parts.iter().all(|p| {
                let mut c = p.chars();
                matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_')
                    && p.len() <= 63
                    && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
            });
        if ok {
            Ok(Ident(s.to_string()))
        } else {
            Err(BadIdent(s.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name quoted for SQL: `"schema"."table"`. Both dialects accept double quotes.
    pub fn quoted(&self) -> String {
        self.0
            .split('.')
            .map(|p| format!("\"{p}\""))
            .collect::<Vec<_>>()
            .join(".")
    }

    /// The last part, for naming indexes and staging tables.
    pub fn base(&self) -> &str {
        self.0.rsplit('.').next().unwrap_or(&self.0)
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_and_schema_names() {
        assert_eq!(
            Ident::new("churn_scores").unwrap().quoted(),
            "\"churn_scores\""
        );
        assert_eq!(
            Ident::new("ml.scores").unwrap().quoted(),
            "\"ml\".\"scores\""
        );
    }

    #[test]
    fn rejects_injection_attempts() {
        for bad in [
            "scores; DROP TABLE users",
            "scores\"--",
            "a.b.c",
            "",
            "1abc",
            "x'y",
            "robert'); drop table students;--",
        ] {
            assert!(Ident::new(bad).is_err(), "{bad} accepted");
        }
    }
}
