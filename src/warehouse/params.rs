//! Named parameters in a job's SQL. Users write `:as_of`; prescore rewrites each to a
//! positional `$n` (which both SQLite and PostgreSQL accept) and binds the value, so values are
//! never pasted into SQL. String literals, quoted identifiers, comments and PostgreSQL's `::`
//! casts are left alone.

/// The parameters prescore binds, and what each means.
pub const KNOWN: &[(&str, &str)] = &[
    (
        "as_of",
        "the run's as-of time (UTC): read only what was known then",
    ),
    (
        "shard_index",
        "this process's shard, 0..shard_count (0 when unsharded): read only its entities",
    ),
    ("shard_count", "the number of shards (1 when unsharded)"),
];

/// Whether `sql` reads one of the shard parameters: the SQL splits the entities itself.
pub fn uses_shard(sql: &str) -> bool {
    placeholders(sql)
        .iter()
        .any(|(_, _, p)| matches!(p, Placeholder::Named("shard_index" | "shard_count")))
}

/// SQL with `:name` replaced by `$1, $2, …`, and the names in the order of their numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub sql: String,
    pub names: Vec<String>,
}

/// A parameter in SQL text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Placeholder<'a> {
    /// `:name`, as users write them.
    Named(&'a str),
    /// `$n`, as the warehouse binds them.
    Positional(usize),
    /// A `;` that ends a statement (not one inside a literal or a comment).
    StatementEnd,
}

/// Every `:name` and `$n` outside string literals (including `E'…'` with backslash escapes),
/// quoted identifiers, comments (block comments nest) and dollar-quoted strings, with its
/// byte range. `::` casts are not parameters. This is the one SQL scanner: rewriting names to
/// numbers and inlining values for `COPY` both use it.
pub(crate) fn placeholders(sql: &str) -> Vec<(usize, usize, Placeholder<'_>)> {
    let b = sql.as_bytes();
    let is_ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80;
    let mut found = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\'' => {
                let escapes =
                    i > 0 && matches!(b[i - 1], b'E' | b'e') && (i < 2 || !is_ident(b[i - 2]));
                i += 1;
                while i < b.len() {
                    if escapes && b[i] == b'\\' {
                        i += 2;
                    } else if b[i] == b'\'' {
                        if b.get(i + 1) == Some(&b'\'') {
                            i += 2;
                        } else {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                i += 1;
            }
            b'"' => {
                i += 1;
                while i < b.len() {
                    if b[i] == b'"' {
                        if b.get(i + 1) == Some(&b'"') {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => i = block_comment_end(b, i),
            b';' => {
                found.push((i, i + 1, Placeholder::StatementEnd));
                i += 1;
            }
            b':' if b.get(i + 1) == Some(&b':') => i += 2,
            b':' if b
                .get(i + 1)
                .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_') =>
            {
                let mut end = i + 1;
                while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
                    end += 1;
                }
                found.push((i, end, Placeholder::Named(&sql[i + 1..end])));
                i = end;
            }
            b'$' if i > 0 && is_ident(b[i - 1]) => i += 1,
            b'$' if b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                let mut end = i + 1;
                while end < b.len() && b[end].is_ascii_digit() {
                    end += 1;
                }
                let n = sql[i + 1..end].parse().unwrap_or(0);
                found.push((i, end, Placeholder::Positional(n)));
                i = end;
            }
            b'$' => {
                // A dollar quote $tag$…$tag$ (the tag may be empty), or a lone `$`.
                let mut end = i + 1;
                while end < b.len()
                    && (b[end].is_ascii_alphanumeric() || b[end] == b'_' || b[end] >= 0x80)
                {
                    end += 1;
                }
                if b.get(end) == Some(&b'$') {
                    let tag = &sql[i..=end];
                    i = match sql[end + 1..].find(tag) {
                        Some(p) => end + 1 + p + tag.len(),
                        None => b.len(),
                    };
                } else {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    found
}

/// Rewrites named parameters. A repeated name reuses its number.
pub fn prepare(sql: &str) -> Prepared {
    let mut out = String::with_capacity(sql.len());
    let mut names: Vec<String> = Vec::new();
    let mut copied = 0;
    for (start, end, p) in placeholders(sql) {
        let Placeholder::Named(name) = p else {
            continue;
        };
        let n = match names.iter().position(|x| x == name) {
            Some(p) => p + 1,
            None => {
                names.push(name.to_string());
                names.len()
            }
        };
        out.push_str(&sql[copied..start]);
        out.push_str(&format!("${n}"));
        copied = end;
    }
    out.push_str(&sql[copied..]);
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

/// Checks that a job's SQL is exactly one query: it starts with `SELECT`, `WITH`, `VALUES`,
/// `TABLE` or `(`, and nothing but comments follows its first `;`. A second statement would
/// run too (SQLite runs every statement it is given), and a job's SQL only reads.
pub fn check_single_query(sql: &str) -> Result<(), String> {
    if let Some((_, end, _)) = placeholders(sql)
        .into_iter()
        .find(|(_, _, p)| *p == Placeholder::StatementEnd)
    {
        let rest = skip_comments(&sql[end..]);
        if !rest
            .trim_start_matches([';', ' ', '\t', '\r', '\n'])
            .is_empty()
        {
            return Err(
                "holds more than one statement: the job's SQL must be exactly one query".into(),
            );
        }
    }
    let body = skip_comments(sql);
    let word: String = body
        .chars()
        .take_while(char::is_ascii_alphabetic)
        .collect::<String>()
        .to_ascii_lowercase();
    if body.starts_with('(') || matches!(word.as_str(), "select" | "with" | "values" | "table") {
        return Ok(());
    }
    // Name the first word only when it is a statement keyword: a path that points at the
    // wrong file (a secret) must not have its content quoted.
    let why = if STATEMENTS.contains(&word.as_str()) {
        format!("starts with {}", word.to_ascii_uppercase())
    } else {
        "does not start with a query".to_string()
    };
    Err(format!(
        "{why}, not SELECT, WITH or VALUES: the job's SQL must be one query that only reads"
    ))
}

/// Statements that are not queries, named when a job's SQL starts with one.
const STATEMENTS: &[&str] = &[
    "insert",
    "update",
    "delete",
    "merge",
    "upsert",
    "replace",
    "create",
    "drop",
    "alter",
    "truncate",
    "attach",
    "detach",
    "pragma",
    "vacuum",
    "analyze",
    "reindex",
    "grant",
    "revoke",
    "copy",
    "call",
    "do",
    "lock",
    "set",
    "reset",
    "begin",
    "commit",
    "rollback",
    "savepoint",
    "release",
    "explain",
    "show",
    "declare",
    "execute",
    "prepare",
    "deallocate",
    "comment",
    "refresh",
    "cluster",
    "listen",
    "notify",
    "load",
    "import",
    "discard",
    "checkpoint",
];

/// Where the block comment opening at `b[start..]` ends (past its `*/`, or the end of the
/// text): block comments nest, in PostgreSQL as in this scanner.
fn block_comment_end(b: &[u8], start: usize) -> usize {
    let (mut depth, mut i) = (0usize, start);
    while i < b.len() {
        if b[i..].starts_with(b"/*") {
            depth += 1;
            i += 2;
        } else if b[i..].starts_with(b"*/") {
            depth -= 1;
            i += 2;
            if depth == 0 {
                break;
            }
        } else {
            i += 1;
        }
    }
    i
}

/// `sql` from its first character that is neither white space nor in a comment.
fn skip_comments(mut sql: &str) -> &str {
    loop {
        sql = sql.trim_start();
        if let Some(rest) = sql.strip_prefix("--") {
            sql = rest.split_once('\n').map_or("", |(_, after)| after);
        } else if sql.starts_with("/*") {
            sql = &sql[block_comment_end(sql.as_bytes(), 0).min(sql.len())..];
        } else {
            return sql;
        }
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
    fn escaped_strings_and_dollar_quotes_are_not_scanned() {
        let sql = "SELECT E'it\\'s :x', $q$ :y $q$, /* a /* :z */ */ :as_of";
        let p = prepare(sql);
        assert_eq!(p.names, vec!["as_of"]);
        assert!(p.sql.ends_with("*/ $1"), "{}", p.sql);
    }

    #[test]
    fn one_query_only() {
        assert!(check_single_query("SELECT 1;").is_ok());
        assert!(check_single_query(
            "-- lead\n/* a /* b */ */ WITH x AS (SELECT 1) SELECT * FROM x; -- end"
        )
        .is_ok());
        assert!(check_single_query("SELECT ';' AS a, \"b;\" -- ;\n FROM t").is_ok());
        assert!(check_single_query("(SELECT 1)").is_ok());
        let two = check_single_query("SELECT 1; DELETE FROM t").unwrap_err();
        assert!(two.contains("more than one statement"), "{two}");
        let del = check_single_query("/* x */ DELETE FROM t RETURNING *").unwrap_err();
        assert!(del.contains("starts with DELETE"), "{del}");
        assert!(check_single_query("ATTACH 'x.db' AS x").is_err());
        let secret = check_single_query("hunter2\n").unwrap_err();
        assert!(
            !secret.contains("HUNTER") && !secret.contains("hunter"),
            "{secret}"
        );
    }

    #[test]
    fn unknown_parameters_are_named() {
        let err = check("SELECT 1 WHERE x = :tenant").unwrap_err();
        assert!(err.contains(":tenant"), "{err}");
        assert!(check("SELECT :as_of").is_ok());
    }
}
