//! The report's sections, each a pure function from what [`tables`] read to HTML: the header
//! with the key figures, runs over time, realized accuracy (score jobs: against labels, with
//! calibration), forecasts against actuals, drift
//! and the model history. A section without data says why in a sentence instead of drawing an
//! empty chart. Every text that came from a table goes through [`esc`] (the [`Cell`]s of a
//! table are escaped in one place).
//!
//! [`tables`]: super::tables

use chrono::{DateTime, Utc};

use super::svg::{self, esc, Band, Chart, Line, Rule, Style, XAxis};
use super::tables::{Calibration, Day, LabelDay, Lead, Run};
use super::Gathered;
use crate::config::KindTag;

const BLUE: &str = "#1f77b4";
const ORANGE: &str = "#e67e22";
const DARK: &str = "#222222";
const STAGE_COLORS: [&str; 10] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac",
];
/// Runs in the table of latest runs, and bars in the stage chart.
const RUNS_LISTED: usize = 12;
const RUNS_BARRED: usize = 60;
/// Rows of the other tables.
const ROWS_LISTED: usize = 30;

/// PSI rule of thumb: below 0.1 stable, 0.1 to 0.25 moving, above 0.25 shifted.
const PSI_MOVING: f64 = 0.1;
const PSI_SHIFTED: f64 = 0.25;

/// One cell of a table; the table escapes it.
enum Cell {
    Text(String),
    /// Right-aligned.
    Num(String),
    /// A run or model status, as a coloured badge.
    Status(String),
}

fn table(headers: &[&str], rows: Vec<Vec<Cell>>) -> String {
    let mut s = String::from("<table><thead><tr>");
    for h in headers {
        s.push_str(&format!("<th>{}</th>", esc(h)));
    }
    s.push_str("</tr></thead><tbody>");
    for row in rows {
        s.push_str("<tr>");
        for c in row {
            s.push_str(&match c {
                Cell::Text(t) => format!("<td>{}</td>", esc(&t)),
                Cell::Num(t) => format!("<td class=\"num\">{}</td>", esc(&t)),
                Cell::Status(t) => format!(
                    "<td><span class=\"badge {}\">{}</span></td>",
                    status_class(&t),
                    esc(&t)
                ),
            });
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table>");
    s
}

/// A CSS class from a fixed list, never from the table's text.
fn status_class(status: &str) -> &'static str {
    match status {
        "succeeded" | "champion" | "promoted" | "stable" => "ok",
        "failed" | "rejected" | "shifted" => "bad",
        "gated" | "moving" | "rolled_back" => "warn",
        _ => "other",
    }
}

fn status_color(status: &str) -> &'static str {
    match status {
        "succeeded" => "#2e7d32",
        "failed" => "#c62828",
        "gated" => "#ef6c00",
        "running" => "#1565c0",
        _ => "#757575",
    }
}

fn section(id: &str, title: &str, body: &str) -> String {
    format!(
        "<section id=\"{id}\"><h2>{}</h2>{body}</section>",
        esc(title)
    )
}

/// A sentence in place of a chart.
fn note(text: &str) -> String {
    format!("<p class=\"empty\">{}</p>", esc(text))
}

fn para(text: &str) -> String {
    format!("<p>{}</p>", esc(text))
}

fn when(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

fn num(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        _ => "-".into(),
    }
}

fn pct(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{:.1}%", v * 100.0),
        _ => "-".into(),
    }
}

fn int(v: Option<i64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

fn short(s: &str, max: usize) -> String {
    match s.chars().count() > max {
        true => format!("{}…", s.chars().take(max - 1).collect::<String>()),
        false => s.to_string(),
    }
}

fn secs(t: DateTime<Utc>) -> f64 {
    t.timestamp() as f64
}

fn config_hint(g: &Gathered) -> String {
    g.config.clone().unwrap_or_else(|| "F".into())
}

/// The title, what the report is made of, and the figures people look for first.
pub fn header(g: &Gathered) -> String {
    let kind = match g.kind {
        Some(KindTag::Score) => "score job",
        Some(KindTag::Forecast) => "forecast job",
        None => "job",
    };
    let mut s = format!(
        "<header><h1>prescore report: {}</h1><p class=\"meta\">{} on {}, generated {} UTC from \
         prescore's own tables (aggregates only: no input rows)</p>",
        esc(&g.job),
        kind,
        esc(g.warehouse),
        when(Some(g.generated))
    );
    let mut facts: Vec<(String, String)> = Vec::new();
    match g.runs.last() {
        Some(r) => facts.push((
            "latest run".into(),
            format!(
                "<span class=\"badge {}\">{}</span> {} <small>as of {}</small>",
                status_class(&r.status),
                esc(&r.status),
                esc(&r.id),
                when(r.as_of)
            ),
        )),
        None => facts.push(("latest run".into(), "none recorded".into())),
    }
    let ok = g.runs.iter().filter(|r| r.status == "succeeded").count();
    facts.push((
        "runs shown".into(),
        format!("{} ({ok} succeeded)", g.runs.len()),
    ));
    if let Some(last) = g.runs.iter().rev().find(|r| r.status == "succeeded") {
        facts.push(("last success".into(), when(last.finished)));
    }
    if let Some(m) = g.models.iter().find(|m| m.status == "champion") {
        let primary = primary_metric(&m.task);
        facts.push((
            "champion".into(),
            format!(
                "v{} {} <small>{primary} {}</small>",
                m.version,
                esc(&m.algorithm),
                num(m.metrics.get(primary).copied(), 4)
            ),
        ));
    }
    let labeled: i64 = g.label_days.iter().map(|d| d.n).sum();
    if labeled > 0 {
        let auc: f64 = g
            .label_days
            .iter()
            .filter_map(|d| Some(d.auc? * d.n as f64))
            .sum::<f64>()
            / labeled as f64;
        if g.label_days.iter().any(|d| d.auc.is_some()) {
            facts.push((
                "realized AUC".into(),
                format!("{auc:.3} <small>{labeled} labeled scores</small>"),
            ));
        }
    }
    if let Some((mae, naive, _)) = overall(&g.leads) {
        facts.push((
            "realized MAE".into(),
            format!(
                "{} <small>seasonal naive {}</small>",
                num(mae, 3),
                num(naive, 3)
            ),
        ));
    }
    if let Some(d) = &g.drift {
        if let Some((f, psi)) = d.features.first() {
            facts.push((
                "highest PSI".into(),
                format!("{psi:.3} <small>{}</small>", esc(f)),
            ));
        }
    }
    s.push_str("<dl class=\"facts\">");
    for (k, v) in facts {
        s.push_str(&format!("<div><dt>{}</dt><dd>{v}</dd></div>", esc(&k)));
    }
    s.push_str("</dl><nav>");
    for (id, title) in TOC {
        s.push_str(&format!("<a href=\"#{id}\">{}</a>", esc(title)));
    }
    s.push_str("</nav></header>");
    s
}

/// Section anchors and titles, in page order.
pub const TOC: [(&str, &str); 5] = [
    ("runs", "Runs"),
    ("accuracy", "Realized accuracy"),
    ("forecasts", "Forecasts and actuals"),
    ("drift", "Drift"),
    ("models", "Models"),
];

fn primary_metric(task: &str) -> &'static str {
    match task {
        "classification" => "auc",
        _ => "mae",
    }
}

/// Weighted MAE, seasonal naive's MAE and forecasts over every lead time.
fn overall(leads: &[Lead]) -> Option<(Option<f64>, Option<f64>, i64)> {
    let n: i64 = leads.iter().map(|l| l.n).sum();
    if n == 0 {
        return None;
    }
    let weighted = |f: fn(&Lead) -> Option<f64>| {
        let (sum, w) = leads
            .iter()
            .filter_map(|l| Some((f(l)? * l.n as f64, l.n as f64)))
            .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
        (w > 0.0).then(|| sum / w)
    };
    Some((weighted(|l| l.mae), weighted(|l| l.naive_mae), n))
}

/// Runs over time: duration by status, seconds per stage, the latest runs.
pub fn runs(g: &Gathered) -> String {
    let (id, title) = TOC[0];
    if g.runs.is_empty() {
        return section(
            id,
            title,
            &note(&format!(
                "no runs recorded yet for job {}: `prescore run --config {}` records one in prescore_runs",
                g.job,
                config_hint(g)
            )),
        );
    }
    let mut statuses: Vec<&str> = Vec::new();
    for r in &g.runs {
        if !statuses.contains(&r.status.as_str()) {
            statuses.push(&r.status);
        }
    }
    let counts: Vec<String> = statuses
        .iter()
        .map(|s| format!("{} {s}", g.runs.iter().filter(|r| r.status == *s).count()))
        .collect();
    let mut body = para(&format!(
        "The job's {} newest runs in prescore_runs: {}.",
        g.runs.len(),
        counts.join(", ")
    ));
    let mut chart = Chart::new("Run duration over time, by status", XAxis::Time, "seconds");
    chart.from_zero = true;
    for s in &statuses {
        chart.lines.push(Line {
            label: s.to_string(),
            color: status_color(s),
            style: Style::Dots,
            points: g
                .runs
                .iter()
                .filter(|r| r.status == *s)
                .filter_map(|r| Some((secs(r.started?), r.seconds()?)))
                .collect(),
        });
    }
    body.push_str(&chart.svg());
    body.push_str(&stage_bars(&g.runs));
    let rows = g
        .runs
        .iter()
        .rev()
        .take(RUNS_LISTED)
        .map(|r| {
            vec![
                Cell::Text(r.id.clone()),
                Cell::Status(r.status.clone()),
                Cell::Text(r.command.clone()),
                Cell::Text(r.shard.clone()),
                Cell::Text(when(r.as_of)),
                Cell::Num(num(r.seconds(), 1)),
                Cell::Num(int(r.rows_read)),
                Cell::Num(int(r.rows_written)),
                Cell::Text(r.model_version.map(|v| format!("v{v}")).unwrap_or_default()),
                Cell::Text(short(r.error.as_deref().unwrap_or_default(), 140)),
            ]
        })
        .collect();
    body.push_str("<h3>Latest runs</h3>");
    body.push_str(&table(
        &[
            "run",
            "status",
            "command",
            "shard",
            "as of",
            "seconds",
            "rows read",
            "rows written",
            "model",
            "error",
        ],
        rows,
    ));
    section(id, title, &body)
}

/// Seconds per stage of the latest runs, stacked (`prescore_runs.stage_seconds`).
fn stage_bars(runs: &[Run]) -> String {
    let recent = &runs[runs.len().saturating_sub(RUNS_BARRED)..];
    let mut names: Vec<String> = Vec::new();
    for r in recent {
        for (stage, _) in &r.stages {
            if !names.contains(stage) {
                names.push(stage.clone());
            }
        }
    }
    if names.is_empty() {
        return note("no stage timings recorded for these runs");
    }
    let stacks: Vec<(String, &'static str)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), STAGE_COLORS[i % STAGE_COLORS.len()]))
        .collect();
    let labels: Vec<String> = recent
        .iter()
        .map(|r| {
            r.started
                .map(|t| t.format("%m-%d %H:%M").to_string())
                .unwrap_or_default()
        })
        .collect();
    let values: Vec<Vec<f64>> = recent
        .iter()
        .map(|r| {
            names
                .iter()
                .map(|n| r.stages.iter().find(|s| &s.0 == n).map_or(0.0, |s| s.1))
                .collect()
        })
        .collect();
    let title = format!("Seconds per stage, latest {} runs", recent.len());
    svg::stacked_bars(&title, "seconds", &labels, &stacks, &values)
}

/// Realized accuracy by lead time and by day, next to seasonal naive.
pub fn accuracy(g: &Gathered) -> String {
    let (id, title) = TOC[1];
    if g.kind == Some(KindTag::Score) {
        return section(id, title, &labels(g));
    }
    let Some((mae, naive, n)) = overall(&g.leads) else {
        return section(
            id,
            title,
            &note(&format!(
                "no realized accuracy yet: actuals arrive after the forecast's target times. Each \
                 forecast run records the accuracy of earlier forecasts whose actuals have \
                 arrived in prescore_accuracy, and `prescore evaluate --config {}` does it for \
                 any range of days",
                config_hint(g)
            )),
        );
    };
    let ratio = match (mae, naive) {
        (Some(m), Some(b)) if b > 0.0 => format!(" (ratio {:.3}: below 1 beats naive)", m / b),
        _ => String::new(),
    };
    let mut body = para(&format!(
        "{n} issued forecasts with an actual: MAE {}, seasonal naive on the same targets {}{ratio}. \
         From prescore_accuracy (the view prescore_accuracy_by_lead).",
        num(mae, 4),
        num(naive, 4)
    ));
    // A lead time with a handful of forecasts (the newest targets, whose actuals are only
    // starting to arrive) would draw a spike that is noise: it is listed, not drawn.
    let mut ns: Vec<i64> = g.leads.iter().map(|l| l.n).collect();
    ns.sort_unstable();
    let enough = (ns[ns.len() / 2] / 10).max(1);
    let drawn: Vec<&Lead> = g.leads.iter().filter(|l| l.n >= enough).collect();
    let mut chart = Chart::new("MAE by lead time", XAxis::Lead, "MAE");
    chart.from_zero = true;
    chart.lines.push(Line {
        label: "published".into(),
        color: BLUE,
        style: Style::Solid,
        points: drawn
            .iter()
            .filter_map(|l| Some((l.horizon as f64, l.mae?)))
            .collect(),
    });
    chart.lines.push(Line {
        label: "seasonal naive".into(),
        color: ORANGE,
        style: Style::Dashed,
        points: drawn
            .iter()
            .filter_map(|l| Some((l.horizon as f64, l.naive_mae?)))
            .collect(),
    });
    body.push_str(&chart.svg());
    let few: Vec<String> = g
        .leads
        .iter()
        .filter(|l| l.n < enough)
        .map(|l| format!("+{} ({})", l.horizon, l.n))
        .collect();
    if !few.is_empty() {
        body.push_str(&para(&format!(
            "Not drawn, too few forecasts with an actual yet (under a tenth of the median              lead time's {}): {}.",
            ns[ns.len() / 2],
            few.join(", ")
        )));
    }
    let last = g.leads.iter().map(|l| l.horizon).max().unwrap_or(1);
    let rows = g
        .leads
        .iter()
        .filter(|l| {
            g.leads.len() <= 12 || l.horizon == 1 || l.horizon % 6 == 0 || l.horizon == last
        })
        .take(ROWS_LISTED)
        .map(|l| {
            vec![
                Cell::Text(format!("+{}", l.horizon)),
                Cell::Num(l.n.to_string()),
                Cell::Num(num(l.mae, 4)),
                Cell::Num(num(l.naive_mae, 4)),
                Cell::Num(num(l.bias, 4)),
                Cell::Num(pct(l.coverage)),
            ]
        })
        .collect();
    body.push_str(&table(
        &["lead", "n", "MAE", "naive MAE", "bias", "interval coverage"],
        rows,
    ));
    body.push_str(&days(&g.days));
    section(id, title, &body)
}

fn days(days: &[Day]) -> String {
    if days.len() < 2 {
        return note("accuracy over days: one target day evaluated so far, no trend to draw yet");
    }
    let mut chart = Chart::new("MAE by target day", XAxis::Time, "MAE");
    chart.from_zero = true;
    let points = |f: fn(&Day) -> Option<f64>| {
        days.iter()
            .filter_map(|d| Some((secs(d.day), f(d)?)))
            .collect()
    };
    chart.lines.push(Line {
        label: "published".into(),
        color: BLUE,
        style: Style::Solid,
        points: points(|d| d.mae),
    });
    chart.lines.push(Line {
        label: "seasonal naive".into(),
        color: ORANGE,
        style: Style::Dashed,
        points: points(|d| d.naive_mae),
    });
    let rows = days
        .iter()
        .rev()
        .take(14)
        .map(|d| {
            vec![
                Cell::Text(d.day.format("%Y-%m-%d").to_string()),
                Cell::Num(d.n.to_string()),
                Cell::Num(num(d.mae, 4)),
                Cell::Num(num(d.naive_mae, 4)),
                Cell::Num(pct(d.coverage)),
            ]
        })
        .collect();
    format!(
        "{}<h3>Latest days</h3>{}",
        chart.svg(),
        table(&["day", "n", "MAE", "naive MAE", "interval coverage"], rows)
    )
}

/// One figure of an issue day, such as its AUC.
type Figure = fn(&LabelDay) -> Option<f64>;

/// Score jobs: the issued scores against the labels that arrived, by issue day, and their
/// calibration by score decile.
fn labels(g: &Gathered) -> String {
    let days = &g.label_days;
    let n: i64 = days.iter().map(|d| d.n).sum();
    if n == 0 {
        return note(&format!(
            "no realized accuracy yet: it is measured once the labels of issued scores arrive. \
             With input.labels_sql and output.keep_history, each run records the AUC, log loss \
             and calibration of the scores issued in input.labels_window whose labels have \
             arrived in prescore_label_accuracy and prescore_calibration, and `prescore evaluate \
             --config {}` does it for any range of issue days",
            config_hint(g)
        ));
    }
    let weighted = |f: Figure| {
        let (sum, w) = days
            .iter()
            .filter_map(|d| Some((f(d)? * d.n as f64, d.n as f64)))
            .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
        (w > 0.0).then(|| sum / w)
    };
    let classification = days.iter().any(|d| d.auc.is_some());
    // (title, figure) of the two charts and the headline.
    let figures: [(&str, Figure); 2] = match classification {
        true => [("AUC", |d| d.auc), ("log loss", |d| d.log_loss)],
        false => [("MAE", |d| d.mae), ("bias", |d| d.bias)],
    };
    let mut body = para(&format!(
        "{n} issued scores with a label over {} issue days: {} {}, {} {} (weighted by the \
         labeled scores of each day). From prescore_label_accuracy; each day's scores are \
         joined with the labels the job's labels SQL returns for the time they were issued.",
        days.len(),
        figures[0].0,
        num(weighted(figures[0].1), 4),
        figures[1].0,
        num(weighted(figures[1].1), 4),
    ));
    if days.len() >= 2 {
        body.push_str("<div class=\"grid\">");
        for (label, f) in figures {
            let mut chart = Chart::new(&format!("{label} by issue day"), XAxis::Time, label);
            chart.width = 530.0;
            chart.from_zero = label != "AUC";
            chart.lines.push(Line {
                label: "issued scores".into(),
                color: BLUE,
                style: Style::Solid,
                points: days
                    .iter()
                    .filter_map(|d| Some((secs(d.day), f(d)?)))
                    .collect(),
            });
            body.push_str(&chart.svg());
        }
        body.push_str("</div>");
    } else {
        body.push_str(&note(
            "one issue day evaluated so far, no trend to draw yet",
        ));
    }
    let rows = days
        .iter()
        .rev()
        .take(14)
        .map(|d| {
            let mut row = vec![
                Cell::Text(d.day.format("%Y-%m-%d").to_string()),
                Cell::Num(d.n.to_string()),
            ];
            let figures = match classification {
                true => vec![
                    num(d.auc, 4),
                    num(d.log_loss, 4),
                    num(d.brier, 4),
                    pct(d.positive_rate),
                ],
                false => vec![num(d.mae, 4), num(d.bias, 4)],
            };
            row.extend(figures.into_iter().map(Cell::Num));
            row.push(Cell::Num(num(d.mean_score, 4)));
            row
        })
        .collect();
    let headers: &[&str] = match classification {
        true => &[
            "issued",
            "n",
            "AUC",
            "log loss",
            "Brier",
            "positive rate",
            "mean score",
        ],
        false => &["issued", "n", "MAE", "bias", "mean score"],
    };
    body.push_str(&format!(
        "<h3>Latest issue days</h3>{}",
        table(headers, rows)
    ));
    if let Some(c) = &g.calibration {
        body.push_str(&calibration(c, classification));
    }
    body
}

/// Mean label against mean score per score decile: on the diagonal, the scores mean what they
/// say.
fn calibration(c: &Calibration, classification: bool) -> String {
    let observed = if classification {
        "observed rate"
    } else {
        "mean actual"
    };
    let mut chart = Chart::new(
        &format!(
            "{} against mean score, by score decile (model v{})",
            if classification {
                "Observed rate"
            } else {
                "Mean actual"
            },
            c.model_version
        ),
        XAxis::Value,
        observed,
    );
    chart.from_zero = true;
    let top = c
        .deciles
        .iter()
        .flat_map(|d| [d.2, d.3])
        .fold(0.0f64, f64::max);
    chart.lines.push(Line {
        label: "perfect calibration".into(),
        color: ORANGE,
        style: Style::Dashed,
        points: vec![(0.0, 0.0), (top, top)],
    });
    chart.lines.push(Line {
        label: observed.into(),
        color: BLUE,
        style: Style::Solid,
        points: c.deciles.iter().map(|d| (d.2, d.3)).collect(),
    });
    let rows = c
        .deciles
        .iter()
        .map(|(decile, n, score, label)| {
            vec![
                Cell::Text(decile.to_string()),
                Cell::Num(n.to_string()),
                Cell::Num(format!("{score:.4}")),
                Cell::Num(format!("{label:.4}")),
            ]
        })
        .collect();
    format!(
        "<h3>Calibration</h3>{}{}{}",
        para(&format!(
            "Issued scores of model v{} over its latest {} evaluated issue days in ten groups by \
             score (lowest first), from prescore_calibration: the mean score next to the {observed}.",
            c.model_version, c.days
        )),
        chart.svg(),
        table(&["decile", "n", "mean score", observed], rows)
    )
}

/// A few series: actuals, the latest forecast issued for each time and its interval.
pub fn forecasts(g: &Gathered) -> String {
    let (id, title) = TOC[2];
    let samples = match &g.samples {
        Ok(s) => s,
        Err(why) => return section(id, title, &note(why)),
    };
    let mut body = para(&format!(
        "{} series of the latest forecast (as of {} UTC), spread evenly over the series keys: \
         the actuals the job's history SQL returns, and for each time the latest forecast issued \
         for it (from {}) with its prediction interval.",
        samples.series.len(),
        when(Some(samples.as_of)),
        samples.history
    ));
    body.push_str("<div class=\"grid\">");
    for s in &samples.series {
        let name = match s.method.is_empty() {
            true => format!("series {}", s.key),
            false => format!("series {} ({})", s.key, s.method),
        };
        let mut chart = Chart::new(&name, XAxis::Time, "");
        chart.width = 530.0;
        chart.height = 240.0;
        chart.bands.push(Band {
            label: "interval".into(),
            color: BLUE,
            points: s.forecast.iter().map(|f| (f.0 as f64, f.2, f.3)).collect(),
        });
        chart.lines.push(Line {
            label: "actual".into(),
            color: DARK,
            style: Style::Solid,
            points: s.actual.iter().map(|a| (a.0 as f64, a.1)).collect(),
        });
        chart.lines.push(Line {
            label: "forecast".into(),
            color: BLUE,
            style: Style::Solid,
            points: s.forecast.iter().map(|f| (f.0 as f64, f.1)).collect(),
        });
        chart.marks.push((secs(samples.as_of), "as of".into()));
        body.push_str(&chart.svg());
    }
    body.push_str("</div>");
    if samples.series.iter().all(|s| s.actual.is_empty()) {
        body.push_str(&note(
            "none of these series has actuals in the window yet: the history SQL returned none",
        ));
    }
    section(id, title, &body)
}

fn psi_flag(psi: f64) -> &'static str {
    if psi > PSI_SHIFTED {
        "shifted"
    } else if psi >= PSI_MOVING {
        "moving"
    } else {
        "stable"
    }
}

fn psi_rules(max_psi: Option<f64>) -> Vec<Rule> {
    let mut rules = vec![
        Rule {
            at: PSI_MOVING,
            label: "0.1 moving".into(),
            color: "#ef6c00",
        },
        Rule {
            at: PSI_SHIFTED,
            label: "0.25 shifted".into(),
            color: "#c62828",
        },
    ];
    if let Some(m) = max_psi {
        rules.push(Rule {
            at: m,
            label: format!("gate.max_psi {m}"),
            color: "#6a1b9a",
        });
    }
    rules
}

/// PSI per feature of the latest run, flagged, and the highest PSI over runs.
pub fn drift(g: &Gathered) -> String {
    let (id, title) = TOC[3];
    let Some(d) = &g.drift else {
        return section(
            id,
            title,
            &note(
                "no drift recorded yet: each run records the PSI of every feature (forecasts: the \
                 target and each covariate over the latest week) and of the scores or forecasts \
                 against its model's training data in prescore_drift (a model trained before \
                 drift references were stored records none)",
            ),
        );
    };
    let mut body = para(&format!(
        "Population stability index of run {} (model {}, {} UTC) against the model's training \
         data, from prescore_drift: below 0.1 stable, 0.1 to 0.25 moving, above 0.25 shifted.",
        d.run_id,
        d.model_version.map(|v| format!("v{v}")).unwrap_or_default(),
        when(d.at)
    ));
    let bars: Vec<(String, f64, &'static str)> = d
        .features
        .iter()
        .take(ROWS_LISTED)
        .map(|(f, psi)| {
            let color = match psi_flag(*psi) {
                "shifted" => "#c62828",
                "moving" => "#ef6c00",
                _ => "#2e7d32",
            };
            (f.clone(), *psi, color)
        })
        .collect();
    body.push_str(&svg::horizontal_bars(
        "PSI per feature, latest run",
        &bars,
        &psi_rules(g.max_psi),
    ));
    let rows = d
        .features
        .iter()
        .take(ROWS_LISTED)
        .map(|(f, psi)| {
            vec![
                Cell::Text(f.clone()),
                Cell::Num(format!("{psi:.4}")),
                Cell::Status(psi_flag(*psi).into()),
            ]
        })
        .collect();
    body.push_str(&table(&["feature", "PSI", "flag"], rows));
    if d.features.len() > ROWS_LISTED {
        body.push_str(&para(&format!(
            "and {} more features, all with a lower PSI",
            d.features.len() - ROWS_LISTED
        )));
    }
    if g.drift_runs.len() >= 2 {
        let mut chart = Chart::new("Highest PSI of each run", XAxis::Time, "PSI");
        chart.from_zero = true;
        chart.rules = psi_rules(g.max_psi);
        chart.lines.push(Line {
            label: "highest PSI".into(),
            color: BLUE,
            style: Style::Solid,
            points: g.drift_runs.iter().map(|(t, p)| (secs(*t), *p)).collect(),
        });
        body.push_str(&chart.svg());
    }
    section(id, title, &body)
}

/// The registry and its history.
pub fn models(g: &Gathered) -> String {
    let (id, title) = TOC[4];
    if g.models.is_empty() && g.events.is_empty() {
        return section(
            id,
            title,
            &note(&format!(
                "no model trained yet for job {}: `prescore train --config {}` (or a run) registers one",
                g.job,
                config_hint(g)
            )),
        );
    }
    let primary = g.models.first().map_or("mae", |m| primary_metric(&m.task));
    let rows = g
        .models
        .iter()
        .map(|m| {
            vec![
                Cell::Text(format!("v{}", m.version)),
                Cell::Status(m.status.clone()),
                Cell::Text(m.algorithm.clone()),
                Cell::Text(when(m.trained_at)),
                Cell::Num(m.rows_train.to_string()),
                Cell::Num(num(m.metrics.get(primary).copied(), 4)),
                Cell::Num(num(m.baseline.get(primary).copied(), 4)),
                Cell::Num(pct(m.metrics.get("coverage").copied())),
                Cell::Text(short(m.status_reason.as_deref().unwrap_or_default(), 140)),
            ]
        })
        .collect();
    let base = format!("baseline {primary}");
    let mut body = para(&format!(
        "The job's {} newest models in prescore_models ({primary} on the holdout, or the \
         backtest for forecasts), and the model history from prescore_model_events, newest first.",
        g.models.len()
    ));
    body.push_str(&table(
        &[
            "version",
            "status",
            "algorithm",
            "trained at",
            "rows",
            primary,
            &base,
            "coverage",
            "why",
        ],
        rows,
    ));
    let rows = g
        .events
        .iter()
        .rev()
        .map(|e| {
            vec![
                Cell::Text(when(e.at)),
                Cell::Text(format!("v{}", e.version)),
                Cell::Status(e.event.clone()),
                Cell::Text(e.command.clone()),
                Cell::Text(e.run_id.clone().unwrap_or_else(|| "by hand".into())),
                Cell::Text(short(e.reason.as_deref().unwrap_or_default(), 140)),
            ]
        })
        .collect();
    body.push_str("<h3>Model history</h3>");
    body.push_str(&table(
        &["at", "version", "event", "command", "run", "reason"],
        rows,
    ));
    section(id, title, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_cells_are_escaped_and_badges_use_fixed_classes() {
        let t = table(
            &["a<b"],
            vec![vec![Cell::Status("\"><script>x</script>".into())]],
        );
        assert!(t.contains("a&lt;b"));
        assert!(!t.contains("<script>"));
        assert!(t.contains("class=\"badge other\""));
    }

    #[test]
    fn psi_flags_follow_the_rule_of_thumb() {
        assert_eq!(psi_flag(0.05), "stable");
        assert_eq!(psi_flag(0.1), "moving");
        assert_eq!(psi_flag(0.3), "shifted");
    }

    #[test]
    fn overall_accuracy_weighs_lead_times_by_their_forecasts() {
        let leads = [
            Lead {
                horizon: 1,
                n: 3,
                mae: Some(1.0),
                naive_mae: Some(2.0),
                ..Lead::default()
            },
            Lead {
                horizon: 2,
                n: 1,
                mae: Some(5.0),
                naive_mae: None,
                ..Lead::default()
            },
        ];
        let (mae, naive, n) = overall(&leads).unwrap();
        assert_eq!((mae, naive, n), (Some(2.0), Some(2.0), 4));
        assert!(overall(&[]).is_none());
    }
}
