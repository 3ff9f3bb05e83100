//! Named parameters in a job's SQL. Users write `:as_of`; prescore rewrites each to a
//! positional `$n` (which both SQLite and PostgreSQL accept) and binds the value, so values are
//! never pasted into SQL. String literals, quoted identifiers, comments and PostgreSQL's `::`
//! casts are left alone.

/// The parameters prescore binds, and what each means.
pub const KNOWN: &[(&str, &str)] = &[(
    "as_of",
    "the run's as-of time (UTC): read only what was known then",
)];

/// SQL with `:name` replaced by `$1, $2, …`, and the names in the order of their numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub sql: String,
    pub names: Vec<String>,
}

/// Rewrites named parameters. A repeated name reuses its number.
pub fn prepare(sql: &str) -> Prepared {
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut names: Vec<String> = Vec::new();
    let mut i = 0;
    let mut copied = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\'' | b'"' => {
                let q = bytes[i];
                i += 1;
                while i < bytes.len() {
                    if bytes[i] == q {
                        if i + 1 < bytes.len() && bytes[i + 1] == q {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < bytes.len() && !(bytes[i] == b'*' && bytes[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
            b':' if bytes.get(i + 1) == Some(&b':') => i += 2,
            b':' if bytes
                .get(i + 1)
                .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_') =>
            {
                let start = i + 1;
                let mut end = start;
                while end < bytes.len()
                    && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_')
                {
                    end += 1;
                }
                let name = &sql[start..end];
                let n = match names.iter().position(|x| x == name) {
                    Some(p) => p + 1,
                    None => {
                        names.push(name.to_string());
                        names.len()
                    }
                };
                out.push_str(&sql[copied..i]);
                out.push_str(&format!("${n}"));
                copied = end;
                i = end;
            }
            _ => i += 1,
        }
    }
    out.push_str(&sql[copied.min(sql.len())..]);
    Prepared { sql: out, names }
}

/// Checks that a job's SQL uses only parameters prescore binds; the error names the others.
pub fn check(sql: &str) -> Result<(), String> {
    let unknown: Vec<String> = prepare(sql)
        .names
        .into_iter()
        .filter(|n| !KNOWN.iter().any(|(k, _)| k == n))
        .map(|n| format!(":{n}"))
        .collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "uses {} which prescore does not bind (known: {})",
            unknown.join(", "),
            KNOWN
                .iter()
                .map(|(k, _)| format!(":{k}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

/// The SQL without a trailing `;`, so it can be wrapped as a subquery.
pub fn trim_statement(sql: &str) -> &str {
    sql.trim().trim_end_matches(';').trim_end()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_names_and_reuses_numbers() {
        let p = prepare("SELECT * FROM t WHERE a < :as_of AND b >= :as_of - 1");
        assert_eq!(p.sql, "SELECT * FROM t WHERE a < $1 AND b >= $1 - 1");
        assert_eq!(p.names, vec!["as_of"]);
    }

    #[test]
    fn leaves_literals_comments_and_casts_alone() {
        let sql = "SELECT ':x', \"a:b\", ts::date -- :y\n/* :z */ FROM t WHERE c = :as_of";
        let p = prepare(sql);
        assert_eq!(
            p.sql,
            "SELECT ':x', \"a:b\", ts::date -- :y\n/* :z */ FROM t WHERE c = $1"
        );
        assert_eq!(p.names, vec!["as_of"]);
    }

    #[test]
    fn unknown_parameters_are_named() {
        let err = check("SELECT 1 WHERE x = :tenant").unwrap_err();
        assert!(err.contains(":tenant"), "{err}");
        assert!(check("SELECT :as_of").is_ok());
    }
}
