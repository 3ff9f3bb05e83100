//! The metrics file checked by the exposition format's own rules, with a small parser written
//! from the format's description (not from the renderer).

use std::collections::{BTreeMap, HashSet};

use super::*;

/// A parsed sample: family name, labels (unescaped), value.
type Sample = (String, BTreeMap<String, String>, f64);

fn is_metric_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
        && !s.starts_with("__")
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "NaN" => Ok(f64::NAN),
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => s.parse().map_err(|_| format!("bad value {s:?}")),
    }
}

/// `{a="x",b="y"}` (after the name) into labels and the rest of the line.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let Some(mut rest) = s.strip_prefix('{') else {
        return Ok((labels, s));
    };
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let eq = rest.find('=').ok_or("label without =")?;
        let name = &rest[..eq];
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        let mut chars = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("unquoted label value")?
            .char_indices();
        let mut value = String::new();
        let end = loop {
            match chars.next().ok_or("unterminated label value")? {
                (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    'n' => value.push('\n'),
                    other => return Err(format!("bad escape \\{other}")),
                },
                (_, '\n') => return Err("raw line feed in a label value".into()),
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name} twice"));
        }
        rest = &rest[eq + 1..][1 + end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// Parses a text-format exposition, enforcing: valid names, one TYPE (and HELP) per family,
/// before its samples, samples of a family together, no series twice, a final line feed.
fn parse(text: &str) -> Result<Vec<Sample>, String> {
    if !text.ends_with('\n') {
        return Err("no final line feed".into());
    }
    let (mut typed, mut helped, mut closed) = (HashSet::new(), HashSet::new(), HashSet::new());
    let (mut current, mut seen, mut samples) = (String::new(), HashSet::new(), Vec::new());
    for line in text.lines() {
        if let Some(c) = line.strip_prefix("# ") {
            let mut parts = c.splitn(3, ' ');
            let (kind, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            if !is_metric_name(name) {
                return Err(format!("bad name in {line:?}"));
            }
            let first = match kind {
                "TYPE" => {
                    let t = parts.next().unwrap_or("");
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&t) {
                        return Err(format!("bad type {t:?}"));
                    }
                    if samples.iter().any(|(n, _, _): &Sample| n == name) {
                        return Err(format!("TYPE of {name} after its samples"));
                    }
                    typed.insert(name.to_string())
                }
                "HELP" => helped.insert(name.to_string()),
                _ => true,
            };
            if !first {
                return Err(format!("{kind} of {name} twice"));
            }
            continue;
        }
        let end = line
            .find(['{', ' '])
            .ok_or(format!("no value in {line:?}"))?;
        let name = &line[..end];
        if !is_metric_name(name) {
            return Err(format!("bad metric name {name:?}"));
        }
        let (labels, rest) = parse_labels(&line[end..])?;
        let mut fields = rest.split_whitespace();
        let value = parse_value(fields.next().ok_or("no value")?)?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .map_err(|_| format!("bad timestamp {ts:?}"))?;
        }
        if name != current {
            if closed.contains(name) {
                return Err(format!("samples of {name} are not together"));
            }
            closed.insert(current.clone());
            current = name.to_string();
        }
        if !seen.insert(format!("{name}{labels:?}")) {
            return Err(format!("series {name}{labels:?} twice"));
        }
        samples.push((name.to_string(), labels, value));
    }
    Ok(samples)
}

fn example() -> RunMetrics {
    RunMetrics {
        job: "we\"ird\\job\nname".into(),
        status: "gated".into(),
        exit_code: 4,
        finished_at: DateTime::from_timestamp(1_764_460_800, 0).unwrap(),
        last_success: Some(1_764_457_200.0),
        stage_seconds: vec![("read".into(), 1.25), ("train".into(), 0.5)],
        rows_read: 5000,
        rows_scored: 0,
        rows_written: 0,
        gate_passed: Some(false),
        skipped_entities: 3,
        model_version: Some(7),
        mae: Some(0.8125),
        realized_mae: Some(0.75),
        realized_auc: Some(0.71),
        psi_max: None,
    }
}

#[test]
fn the_metrics_file_follows_the_exposition_format() {
    let m = example();
    let text = render(&m);
    let samples = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let get = |name: &str, extra: &[(&str, &str)]| {
        samples
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && extra
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.2)
    };
    // Every sample carries the job, escaped and back again exactly.
    assert!(samples.iter().all(|(_, l, _)| l["job"] == m.job), "{text}");
    assert_eq!(
        get("prescore_last_success_timestamp_seconds", &[]),
        Some(1_764_457_200.0)
    );
    assert_eq!(
        get("prescore_run_status", &[("status", "gated")]),
        Some(1.0)
    );
    assert_eq!(
        get("prescore_run_status", &[("status", "succeeded")]),
        Some(0.0)
    );
    assert_eq!(
        get("prescore_stage_seconds", &[("stage", "read")]),
        Some(1.25)
    );
    assert_eq!(get("prescore_rows", &[("kind", "read")]), Some(5000.0));
    assert_eq!(get("prescore_rows", &[("kind", "written")]), Some(0.0));
    assert_eq!(get("prescore_gate_passed", &[]), Some(0.0));
    assert_eq!(get("prescore_skipped_entities", &[]), Some(3.0));
    assert_eq!(get("prescore_holdout_mae", &[]), Some(0.8125));
    assert_eq!(get("prescore_realized_auc", &[]), Some(0.71));
    // Every family is typed and described.
    let families: HashSet<&str> = samples.iter().map(|s| s.0.as_str()).collect();
    for f in families {
        assert!(text.contains(&format!("# TYPE {f} gauge\n")), "{f}");
        assert!(text.contains(&format!("# HELP {f} ")), "{f}");
    }
    // Unknown figures are left out, not written as zero.
    let bare = RunMetrics {
        gate_passed: None,
        mae: None,
        model_version: None,
        ..example()
    };
    let text = render(&bare);
    parse(&text).unwrap();
    assert!(!text.contains("prescore_gate_passed") && !text.contains("prescore_holdout_mae"));
}

#[test]
fn the_parser_refuses_what_the_format_forbids() {
    for bad in [
        "9metric 1\n",
        "m{a=\"x\\q\"} 1\n",
        "m{a=\"x\"} 1\nm{a=\"x\"} 2\n",
        "# TYPE m gauge\n# TYPE m gauge\nm 1\n",
        "m 1\nn 1\nm 2\n",
        "m one\n",
        "m 1",
    ] {
        assert!(parse(bad).is_err(), "accepted {bad:?}");
    }
}

#[test]
fn a_failed_run_keeps_the_last_success_of_the_file_it_replaces() {
    let old = render(&example());
    assert_eq!(
        previous_last_success(&old, &example().job),
        Some(1_764_457_200.0)
    );
    assert_eq!(previous_last_success(&old, "other_job"), None);
    let plain = RunMetrics {
        job: "churn_daily".into(),
        ..example()
    };
    assert_eq!(
        previous_job(&render(&plain)).as_deref(),
        Some("churn_daily")
    );
    let never = RunMetrics {
        last_success: None,
        ..plain
    };
    assert_eq!(previous_last_success(&render(&never), "churn_daily"), None);
}

#[test]
fn the_file_is_replaced_whole_and_no_temporary_file_stays() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prescore.prom");
    write_atomic(&path, "a 1\n").unwrap();
    write_atomic(&path, "b 2\n").unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "b 2\n");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("prescore.prom")]);
    let missing = dir.path().join("no/such/dir/x.prom");
    assert!(write_atomic(&missing, "a 1\n").is_err());
}
