//! What prescore prints for people: the run summary (rows, metrics next to their baseline,
//! seconds per stage, a query to look at the results) and plain aligned tables for `runs` and
//! `models`. Logs go to stderr; this goes to stdout.

use crate::config::KindTag;
use crate::pipeline::Report;

/// A plain text table with aligned columns.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(headers.iter().map(|h| h.to_string()).collect());
    out.push('\n');
    out.push_str(&line(widths.iter().map(|w| "-".repeat(*w)).collect()));
    for r in rows {
        out.push('\n');
        out.push_str(&line(r.clone()));
    }
    out
}

fn fmt_metric(name: &str, v: f64) -> String {
    match name {
        "smape" => format!("{v:.2}%"),
        _ => format!("{v:.4}"),
    }
}

/// The summary printed after `run`, `train` and `score`.
pub fn run_summary(r: &Report) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "prescore: job {} finished (run {})\n",
        r.job, r.run_id
    ));
    out.push_str(&format!("  rows read         {}\n", r.rows_read));
    if r.entities > 0 || r.rows_written > 0 {
        let what = match r.kind {
            KindTag::Score => "entities scored  ",
            KindTag::Forecast => "series forecast  ",
        };
        out.push_str(&format!("  {what} {}\n", r.entities));
        out.push_str(&format!(
            "  rows written      {} into {}\n",
            r.rows_written, r.table
        ));
    }
    if !r.skipped_entities.is_empty() {
        out.push_str(&format!(
            "  skipped           {} (e.g. {}: {})\n",
            r.skipped_entities.len(),
            r.skipped_entities[0].0,
            r.skipped_entities[0].1
        ));
    }
    if let Some(v) = r.model_version {
        out.push_str(&format!("  model version     v{v}\n"));
    }
    if let Some((feature, psi)) = &r.max_psi {
        out.push_str(&format!(
            "  drift             max PSI {psi:.3} ({feature}) against the training data\n"
        ));
    }
    if let Some(t) = &r.trained {
        match &t.backtest {
            Some(b) => out.push_str(&format!(
                "\n  trained {} v{} on {} rows; backtest: {} points, {b}\n",
                t.algorithm, t.version, t.rows_train, t.rows_holdout
            )),
            None => out.push_str(&format!(
                "\n  trained {} v{} on {} rows, held out {} (latest by time)\n",
                t.algorithm, t.version, t.rows_train, t.rows_holdout
            )),
        }
        let mut rows = Vec::new();
        for (k, v) in &t.metrics {
            let mut row = vec![k.clone(), fmt_metric(k, *v)];
            row.push(
                t.baseline
                    .get(k)
                    .map(|b| fmt_metric(k, *b))
                    .unwrap_or_default(),
            );
            if let Some(w) = &t.baseline_weekly {
                row.push(w.get(k).map(|b| fmt_metric(k, *b)).unwrap_or_default());
            }
            rows.push(row);
        }
        let headers: Vec<&str> = if t.baseline_weekly.is_some() {
            vec!["backtest", "published", "naive day", "naive week"]
        } else {
            vec!["holdout", "model", "baseline"]
        };
        out.push_str(&indent(&table(&headers, &rows)));
        if !t.per_horizon.is_empty() {
            out.push_str("\n  MAE per horizon step (published vs seasonal naive, one day back):\n");
            let rows: Vec<Vec<String>> = t
                .per_horizon
                .iter()
                .filter(|(h, _, _)| *h == 1 || h % 6 == 0 || *h == t.per_horizon.len())
                .map(|(h, m, b)| vec![format!("+{h}"), format!("{m:.3}"), format!("{b:.3}")])
                .collect();
            out.push_str(&indent(&table(&["step", "published", "naive"], &rows)));
        }
        if let Some(c) = t.coverage {
            let on = if t.backtest.is_some() {
                "the backtest"
            } else {
                "the holdout"
            };
            out.push_str(&format!(
                "\n  interval coverage on {on}: {:.1}%\n",
                c * 100.0
            ));
        }
        if let Some(i) = &t.interval {
            out.push_str(&format!("    ({i})\n"));
        }
        if !t.methods.is_empty() {
            let m: Vec<String> = t.methods.iter().map(|(k, n)| format!("{k} {n}")).collect();
            out.push_str(&format!("  series by method: {}\n", m.join(", ")));
        }
        if !t.top_features.is_empty() {
            let f: Vec<String> = t
                .top_features
                .iter()
                .map(|(n, v)| format!("{n} {:.0}%", v * 100.0))
                .collect();
            out.push_str(&format!("\n  top features: {}\n", f.join(", ")));
        }
        out.push_str(&format!("  gate: {}\n", t.verdict));
    }
    if !r.accuracy.is_empty() {
        out.push_str("\n  realized MAE of earlier forecasts, recent days (prescore_accuracy):\n");
        out.push_str(&accuracy_table(&r.accuracy));
    }
    if !r.labels.is_empty() {
        out.push_str(
            "\n  realized accuracy of scores issued in input.labels_window (prescore_label_accuracy):\n",
        );
        out.push_str(&label_table(&r.labels));
    }
    if !r.stage_seconds.is_empty() {
        let parts: Vec<String> = r
            .stage_seconds
            .iter()
            .map(|(s, t)| format!("{s} {t:.2}s"))
            .collect();
        out.push_str(&format!("\n  time per stage: {}\n", parts.join(", ")));
    }
    if r.rows_written > 0 {
        let q = match r.kind {
            KindTag::Score => format!("SELECT * FROM {} ORDER BY score DESC LIMIT 10;", r.table),
            KindTag::Forecast => format!(
                "SELECT * FROM {} ORDER BY series_id, target_ts LIMIT 24;",
                r.table
            ),
        };
        out.push_str(&format!("\n  look at the results:\n    {q}\n"));
    }
    out
}

/// Realized accuracy per lead time (every sixth step, the first and the last), next to
/// seasonal naive's.
pub fn accuracy_table(per: &[(i64, i64, f64, Option<f64>)]) -> String {
    let last = per.iter().map(|p| p.0).max().unwrap_or(1);
    let rows: Vec<Vec<String>> = per
        .iter()
        .filter(|(h, ..)| *h == 1 || h % 6 == 0 || *h == last)
        .map(|(h, n, m, b)| {
            let naive = b.map(|b| format!("{b:.3}")).unwrap_or_else(|| "-".into());
            vec![format!("+{h}"), n.to_string(), format!("{m:.3}"), naive]
        })
        .collect();
    indent(&table(&["step", "n", "published", "naive"], &rows))
}

/// Realized accuracy of issued scores per issue day (the latest week), per model version.
pub fn label_table(groups: &[crate::monitor::labels::Group]) -> String {
    let f = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into());
    let classification = groups.iter().any(|g| g.auc.is_some());
    let rows: Vec<Vec<String>> = groups
        .iter()
        .rev()
        .take(7)
        .rev()
        .map(|g| {
            let day = crate::warehouse::frame::micros_to_utc(g.day_us);
            let mut row = vec![
                day.format("%Y-%m-%d").to_string(),
                format!("v{}", g.model_version),
                g.n.to_string(),
            ];
            row.extend(match classification {
                true => [g.auc, g.log_loss, g.brier, g.positive_rate].map(f),
                false => [g.mae, g.rmse, g.bias, Some(g.mean_score)].map(f),
            });
            row
        })
        .collect();
    let headers = match classification {
        true => [
            "issued",
            "model",
            "n",
            "AUC",
            "log loss",
            "Brier",
            "positive rate",
        ],
        false => ["issued", "model", "n", "MAE", "RMSE", "bias", "mean score"],
    };
    indent(&table(&headers, &rows))
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(&["a", "bb"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "a    bb\n---  --\nxxx  y");
    }
}
