//! `${VAR}` expansion for config strings. Secrets such as the warehouse URL live in the
//! environment, never in the file: `${VAR}` takes a variable, `${VAR:-default}` falls back to a
//! default, and when `VAR` is unset but `VAR_FILE` names a file (the Docker/Kubernetes secrets
//! convention) the file's trimmed contents are used. `$$` writes a literal `$`.

use std::collections::HashMap;

/// Where variables come from: the process environment in production, a map in tests.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
    fn read_file(&self, path: &str) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// Expands every `${...}` in `input`. The error is a sentence naming the variable.
pub fn expand(input: &str, env: &dyn Env) -> Result<String, String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
            continue;
        }
        let Some(body_and_rest) = after.strip_prefix('{') else {
            out.push('$');
            rest = after;
            continue;
        };
        let Some(end) = body_and_rest.find('}') else {
            return Err(format!("unclosed `${{` in {input:?}"));
        };
        let body = &body_and_rest[..end];
        let (name, default) = match body.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (body, None),
        };
        if !is_var_name(name) {
            return Err(format!(
                "`${{{body}}}` is not a valid variable reference (use ${{NAME}} or ${{NAME:-default}})"
            ));
        }
        // As in the shell: `${V}` takes V even when empty; `${V:-d}` takes d when V is unset
        // or empty. `V_FILE` stands in for an unset or empty V.
        let direct = env.var(name);
        let value = match direct.clone().filter(|v| !v.is_empty()) {
            Some(v) => v,
            None => match env.var(&format!("{name}_FILE")).filter(|v| !v.is_empty()) {
                Some(path) => env
                    .read_file(&path)
                    .map(|s| s.trim().to_string())
                    .map_err(|e| format!("{name}_FILE points at {path:?}, which cannot be read: {e}"))?,
                None => match (default, direct) {
                    (Some(d), _) => d.to_string(),
                    (None, Some(empty)) => empty,
                    (None, None) => {
                        return Err(format!(
                            "environment variable {name} is not set (nor {name}_FILE), and `${{{name}}}` has no `:-default`"
                        ))
                    }
                },
            },
        };
        out.push_str(&value);
        rest = &body_and_rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn expands_set_variables_and_defaults() {
        let e = env(&[("DB", "postgres://x")]);
        assert_eq!(expand("${DB}", &e).unwrap(), "postgres://x");
        assert_eq!(
            expand("a ${MISSING:-sqlite://p.db} b", &e).unwrap(),
            "a sqlite://p.db b"
        );
        assert_eq!(expand("${DB:-other}", &e).unwrap(), "postgres://x");
        assert_eq!(expand("cost $$5 and $x", &e).unwrap(), "cost $5 and $x");
    }

    #[test]
    fn missing_variable_names_it() {
        let err = expand("${NOPE}", &env(&[])).unwrap_err();
        assert!(err.contains("NOPE"), "{err}");
        assert!(expand("${BAD NAME}", &env(&[]))
            .unwrap_err()
            .contains("not a valid"));
        assert!(expand("${OPEN", &env(&[]))
            .unwrap_err()
            .contains("unclosed"));
    }

    #[test]
    fn reads_secret_files() {
        let dir = std::env::temp_dir().join(format!("prescore-expand-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("url");
        std::fs::write(&file, "postgres://secret\n").unwrap();
        let e = env(&[("DB_FILE", file.to_str().unwrap())]);
        assert_eq!(expand("${DB}", &e).unwrap(), "postgres://secret");
    }

    /// Property: text without `$` is unchanged, and a variable's value is inserted verbatim
    /// (even when it contains `$`, braces or quotes), on 2,000 seeded random cases.
    #[test]
    fn expansion_properties_hold_on_random_input() {
        use rand::{Rng, SeedableRng};
        let alphabet: Vec<char> = "ab{}:-_ 9\"'\\é\n=#[]".chars().collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let word = |rng: &mut rand::rngs::StdRng, dollars: bool| -> String {
            (0..rng.gen_range(0..30))
                .map(|_| {
                    if dollars && rng.gen_bool(0.1) {
                        '$'
                    } else {
                        alphabet[rng.gen_range(0..alphabet.len())]
                    }
                })
                .collect()
        };
        for _ in 0..2000 {
            let plain = word(&mut rng, false);
            let value = word(&mut rng, true);
            let e = env(&[("V", value.as_str())]);
            assert_eq!(expand(&plain, &e).unwrap(), plain);
            assert_eq!(
                expand(&format!("{plain}${{V}}{plain}"), &e).unwrap(),
                format!("{plain}{value}{plain}")
            );
            // Arbitrary input never panics.
            let _ = expand(&word(&mut rng, true), &e);
        }
    }
}
