//! Inline SVG charts for the HTML report, drawn as text: a line chart (lines, dots, interval
//! bands, reference lines and markers) on a time, lead-time or plain axis, stacked bars and
//! horizontal bars. No script and no external file: the page opens anywhere, offline. Every
//! series is thinned to at most [`MAX_POINTS`] points, and coordinates are pixels rounded to
//! a tenth, so a chart's size is bounded and the data's own digits never appear in the page.

use chrono::{DateTime, Utc};

/// The most points one line, band or bar set draws.
pub const MAX_POINTS: usize = 600;

/// Width of every chart, in CSS pixels (the page is wider, so charts never scroll).
pub const WIDTH: f64 = 1080.0;

/// Text made safe for HTML and SVG, in element content and in quoted attributes.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// At most `max` items, evenly spaced, always keeping the first and the last.
pub fn thin<T: Clone>(items: &[T], max: usize) -> Vec<T> {
    match max {
        _ if items.len() <= max => items.to_vec(),
        0 => Vec::new(),
        1 => items[items.len() - 1..].to_vec(),
        _ => (0..max)
            .map(|i| items[i * (items.len() - 1) / (max - 1)].clone())
            .collect(),
    }
}

/// What the horizontal axis holds, which decides its tick labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XAxis {
    /// Unix seconds, labelled as UTC dates and times.
    Time,
    /// Steps ahead, labelled `+6`.
    Lead,
    /// A plain quantity, such as a mean score.
    Value,
}

/// How a line is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Solid,
    Dashed,
    /// Dots only, no path between them (events such as runs).
    Dots,
}

/// One series of a line chart.
#[derive(Debug, Clone)]
pub struct Line {
    pub label: String,
    pub color: &'static str,
    pub style: Style,
    pub points: Vec<(f64, f64)>,
}

/// A shaded interval: (x, low, high) per point.
#[derive(Debug, Clone)]
pub struct Band {
    pub label: String,
    pub color: &'static str,
    pub points: Vec<(f64, f64, f64)>,
}

/// A horizontal reference line, such as a PSI threshold.
#[derive(Debug, Clone)]
pub struct Rule {
    pub at: f64,
    pub label: String,
    pub color: &'static str,
}

/// A line chart; [`Chart::svg`] draws it.
#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    pub height: f64,
    pub width: f64,
    pub x: XAxis,
    pub y_label: String,
    pub lines: Vec<Line>,
    pub bands: Vec<Band>,
    pub rules: Vec<Rule>,
    /// Vertical markers: (x, label), e.g. the forecast's as-of time.
    pub marks: Vec<(f64, String)>,
    /// Start the vertical axis at zero (errors, seconds), not at the data's minimum.
    pub from_zero: bool,
}

impl Chart {
    pub fn new(title: &str, x: XAxis, y_label: &str) -> Self {
        Chart {
            title: title.to_string(),
            height: 260.0,
            width: WIDTH,
            x,
            y_label: y_label.to_string(),
            lines: Vec::new(),
            bands: Vec::new(),
            rules: Vec::new(),
            marks: Vec::new(),
            from_zero: false,
        }
    }

    pub fn svg(&self) -> String {
        let lines: Vec<Line> = self
            .lines
            .iter()
            .map(|l| Line {
                points: thin(&finite(&l.points), MAX_POINTS),
                ..l.clone()
            })
            .collect();
        let bands: Vec<Band> = self
            .bands
            .iter()
            .map(|b| Band {
                points: thin(
                    &b.points
                        .iter()
                        .copied()
                        .filter(|p| p.0.is_finite() && p.1.is_finite() && p.2.is_finite())
                        .collect::<Vec<_>>(),
                    MAX_POINTS,
                ),
                ..b.clone()
            })
            .collect();
        let xs = lines
            .iter()
            .flat_map(|l| l.points.iter().map(|p| p.0))
            .chain(bands.iter().flat_map(|b| b.points.iter().map(|p| p.0)))
            .chain(self.marks.iter().map(|m| m.0));
        let ys = lines
            .iter()
            .flat_map(|l| l.points.iter().map(|p| p.1))
            .chain(
                bands
                    .iter()
                    .flat_map(|b| b.points.iter().flat_map(|p| [p.1, p.2])),
            )
            .chain(self.rules.iter().map(|r| r.at));
        let x_pad = match self.x {
            XAxis::Time => 3600.0,
            XAxis::Lead => 1.0,
            XAxis::Value => 0.01,
        };
        let (mut x0, mut x1) = extent(xs, false, x_pad);
        // Dots at the very edge of the plot would be cut in half.
        if lines.iter().any(|l| l.style == Style::Dots) {
            let margin = (x1 - x0) * 0.03;
            (x0, x1) = (x0 - margin, x1 + margin);
        }
        let (y0, y1) = extent(ys, self.from_zero, 1.0);
        let plot = Plot::new(self.width, self.height, (x0, x1), (y0, y1));
        let mut s = plot.open(&self.title);
        s.push_str(&plot.y_axis(&self.y_label));
        s.push_str(&plot.x_axis(self.x, (self.width / 135.0) as usize));
        for b in &bands {
            s.push_str(&plot.band(b));
        }
        for r in &self.rules {
            s.push_str(&plot.rule(r));
        }
        for (x, label) in &self.marks {
            s.push_str(&plot.mark(*x, label));
        }
        for l in &lines {
            s.push_str(&plot.line(l));
        }
        let legend: Vec<(&str, &str, Swatch)> = bands
            .iter()
            .map(|b| (b.label.as_str(), b.color, Swatch::Area))
            .chain(
                lines
                    .iter()
                    .map(|l| (l.label.as_str(), l.color, Swatch::Line(l.style))),
            )
            .filter(|(label, ..)| !label.is_empty())
            .collect();
        s.push_str(&plot.legend(&legend));
        s.push_str("</svg>");
        s
    }
}

fn finite(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    points
        .iter()
        .copied()
        .filter(|p| p.0.is_finite() && p.1.is_finite())
        .collect()
}

/// How a legend entry shows its series.
#[derive(Debug, Clone, Copy)]
enum Swatch {
    Line(Style),
    /// A shaded interval.
    Area,
    /// A bar.
    Block,
}

/// The range of the values, widened by `pad` (or a tenth of the value, if larger) when it is
/// a single value; (0, 1) when there are none.
fn extent(values: impl Iterator<Item = f64>, from_zero: bool, pad: f64) -> (f64, f64) {
    let (mut lo, mut hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if from_zero {
        lo = lo.min(0.0);
        hi = hi.max(0.0);
    }
    if hi - lo < 1e-12 {
        let pad = if from_zero {
            pad.max(lo.abs() * 0.1)
        } else {
            pad
        };
        lo -= pad;
        hi += pad;
    }
    (lo, hi)
}

/// The plot area of a chart and the mapping from data to pixels.
struct Plot {
    w: f64,
    h: f64,
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
    x: (f64, f64),
    y: (f64, f64),
}

const TEXT: &str = "#333";
const GRID: &str = "#e3e3e3";

impl Plot {
    fn new(w: f64, h: f64, x: (f64, f64), y: (f64, f64)) -> Self {
        Plot {
            w,
            h,
            left: 64.0,
            right: w - 16.0,
            top: 44.0,
            bottom: h - 30.0,
            x,
            y,
        }
    }

    fn px(&self, v: f64) -> f64 {
        self.left + (v - self.x.0) / (self.x.1 - self.x.0) * (self.right - self.left)
    }

    fn py(&self, v: f64) -> f64 {
        self.bottom - (v - self.y.0) / (self.y.1 - self.y.0) * (self.bottom - self.top)
    }

    fn open(&self, title: &str) -> String {
        format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" width=\"{w}\" height=\"{h}\" \
             viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"12\">\
             <title>{t}</title><text x=\"{l}\" y=\"16\" font-size=\"14\" font-weight=\"bold\" \
             fill=\"{TEXT}\">{t}</text>",
            w = self.w,
            h = self.h,
            l = self.left,
            t = esc(title)
        )
    }

    fn y_axis(&self, label: &str) -> String {
        let mut s = String::new();
        for (v, text) in number_ticks(self.y.0, self.y.1, 5) {
            let y = self.py(v);
            s.push_str(&format!(
                "<line x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"{GRID}\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"{TEXT}\">{}</text>",
                self.left,
                self.right,
                self.left - 6.0,
                y + 4.0,
                esc(&text)
            ));
        }
        s.push_str(&format!(
            "<text x=\"12\" y=\"{:.1}\" transform=\"rotate(-90 12 {:.1})\" text-anchor=\"middle\" \
             fill=\"{TEXT}\">{}</text>",
            (self.top + self.bottom) / 2.0,
            (self.top + self.bottom) / 2.0,
            esc(label)
        ));
        s
    }

    fn x_axis(&self, axis: XAxis, n: usize) -> String {
        let ticks = match axis {
            XAxis::Time => time_ticks(self.x.0, self.x.1, n.clamp(2, 8)),
            XAxis::Lead => number_ticks(self.x.0, self.x.1, n.clamp(2, 12))
                .into_iter()
                .filter(|(v, _)| v.fract() == 0.0)
                .map(|(v, t)| (v, format!("+{t}")))
                .collect(),
            XAxis::Value => number_ticks(self.x.0, self.x.1, n.clamp(2, 10)),
        };
        let mut s = format!(
            "<line x1=\"{:.1}\" y1=\"{b:.1}\" x2=\"{:.1}\" y2=\"{b:.1}\" stroke=\"#999\"/>",
            self.left,
            self.right,
            b = self.bottom
        );
        for (v, text) in ticks {
            let x = self.px(v);
            // A label centred on a tick near the right edge would be cut off.
            let half = 3.5 * text.chars().count() as f64;
            let anchor = if x + half > self.w { "end" } else { "middle" };
            s.push_str(&format!(
                "<line x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#999\"/>\
                 <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\" fill=\"{TEXT}\">{}</text>",
                self.bottom,
                self.bottom + 4.0,
                self.bottom + 17.0,
                esc(&text)
            ));
        }
        s
    }

    fn line(&self, l: &Line) -> String {
        let pts: Vec<String> = l
            .points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", self.px(*x), self.py(*y)))
            .collect();
        match l.style {
            Style::Dots => pts
                .iter()
                .map(|p| {
                    let (x, y) = p.split_once(',').expect("formatted as x,y");
                    format!(
                        "<circle cx=\"{x}\" cy=\"{y}\" r=\"3.5\" fill=\"{}\"/>",
                        l.color
                    )
                })
                .collect(),
            Style::Solid | Style::Dashed => {
                let dash = if l.style == Style::Dashed {
                    " stroke-dasharray=\"6 4\""
                } else {
                    ""
                };
                format!(
                    "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.8\"{dash} points=\"{}\"/>",
                    l.color,
                    pts.join(" ")
                )
            }
        }
    }

    fn band(&self, b: &Band) -> String {
        let upper = b
            .points
            .iter()
            .map(|(x, _, hi)| format!("{:.1},{:.1}", self.px(*x), self.py(*hi)));
        let lower = b
            .points
            .iter()
            .rev()
            .map(|(x, lo, _)| format!("{:.1},{:.1}", self.px(*x), self.py(*lo)));
        let pts: Vec<String> = upper.chain(lower).collect();
        format!(
            "<polygon fill=\"{}\" fill-opacity=\"0.25\" stroke=\"none\" points=\"{}\"/>",
            b.color,
            pts.join(" ")
        )
    }

    fn rule(&self, r: &Rule) -> String {
        let y = self.py(r.at);
        format!(
            "<line x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"{c}\" \
             stroke-dasharray=\"4 3\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" \
             fill=\"{c}\">{}</text>",
            self.left,
            self.right,
            self.right - 4.0,
            y - 4.0,
            esc(&r.label),
            c = r.color
        )
    }

    fn mark(&self, x: f64, label: &str) -> String {
        let x = self.px(x);
        format!(
            "<line x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#555\" \
             stroke-dasharray=\"3 3\"/><text x=\"{:.1}\" y=\"{:.1}\" fill=\"#555\">{}</text>",
            self.top,
            self.bottom,
            x + 4.0,
            self.top + 12.0,
            esc(label)
        )
    }

    /// Swatches and labels in a row under the title.
    fn legend(&self, items: &[(&str, &str, Swatch)]) -> String {
        let mut x = self.left;
        let y = 34.0;
        let mut s = String::new();
        for (label, color, swatch) in items {
            let swatch = match swatch {
                Swatch::Line(Style::Dots) => format!(
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"{color}\"/>",
                    x + 7.0,
                    y - 4.0
                ),
                Swatch::Line(style) => format!(
                    "<line x1=\"{x:.1}\" y1=\"{y0:.1}\" x2=\"{:.1}\" y2=\"{y0:.1}\" stroke=\"{color}\" \
                     stroke-width=\"3\"{}/>",
                    x + 14.0,
                    if *style == Style::Dashed { " stroke-dasharray=\"4 2\"" } else { "" },
                    y0 = y - 4.0
                ),
                Swatch::Area => format!(
                    "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"14\" height=\"9\" fill=\"{color}\" \
                     fill-opacity=\"0.25\"/>",
                    y - 9.0
                ),
                Swatch::Block => format!(
                    "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"14\" height=\"9\" fill=\"{color}\"/>",
                    y - 9.0
                ),
            };
            s.push_str(&swatch);
            s.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{y:.1}\" fill=\"{TEXT}\">{}</text>",
                x + 18.0,
                esc(label)
            ));
            x += 30.0 + 7.0 * label.chars().count() as f64;
        }
        s
    }
}

/// Ticks at round numbers (1, 2, 2.5 or 5 times a power of ten), at most about `n`.
fn number_ticks(lo: f64, hi: f64, n: usize) -> Vec<(f64, String)> {
    let span = hi - lo;
    if span <= 0.0 || !span.is_finite() {
        return vec![(lo, fmt_number(lo, 0))];
    }
    let raw = span / n as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= n as f64)
        .unwrap_or(10.0 * mag);
    let decimals = (-step.log10().floor()).max(0.0) as usize + usize::from(step / mag == 2.5);
    let first = (lo / step).ceil() as i64;
    (first..)
        .map(|i| i as f64 * step)
        .take_while(|v| *v <= hi + step * 1e-9)
        .take(n + 2)
        .map(|v| (v, fmt_number(v, decimals)))
        .collect()
}

fn fmt_number(v: f64, decimals: usize) -> String {
    let v = if v.abs() < 1e-12 { 0.0 } else { v };
    format!("{v:.decimals$}")
}

/// Ticks at round times (hours, days, weeks, months) in UTC, at most about `n`.
fn time_ticks(lo: f64, hi: f64, n: usize) -> Vec<(f64, String)> {
    const STEPS: [i64; 14] = [
        60,
        300,
        900,
        1800,
        3600,
        3 * 3600,
        6 * 3600,
        12 * 3600,
        86_400,
        2 * 86_400,
        7 * 86_400,
        14 * 86_400,
        30 * 86_400,
        91 * 86_400,
    ];
    let span = hi - lo;
    let step = STEPS
        .iter()
        .copied()
        .find(|s| span / *s as f64 <= n as f64)
        .unwrap_or(365 * 86_400);
    let format = if step < 86_400 {
        "%m-%d %H:%M"
    } else {
        "%Y-%m-%d"
    };
    let mut t = (lo / step as f64).ceil() as i64 * step;
    let mut out = Vec::new();
    while (t as f64) <= hi && out.len() <= n + 1 {
        if let Some(at) = DateTime::<Utc>::from_timestamp(t, 0) {
            out.push((t as f64, at.format(format).to_string()));
        }
        t += step;
    }
    out
}

/// Stacked vertical bars: one bar per label, one stack per (name, colour), `values[bar][stack]`.
pub fn stacked_bars(
    title: &str,
    y_label: &str,
    labels: &[String],
    stacks: &[(String, &'static str)],
    values: &[Vec<f64>],
) -> String {
    let bars = thin(
        &labels
            .iter()
            .cloned()
            .zip(values.iter().cloned())
            .collect::<Vec<_>>(),
        MAX_POINTS,
    );
    let total = |v: &[f64]| v.iter().filter(|x| x.is_finite()).sum::<f64>();
    let top = bars.iter().map(|(_, v)| total(v)).fold(0.0, f64::max);
    let y = extent([0.0, top].into_iter(), true, 1.0);
    let plot = Plot::new(WIDTH, 260.0, (0.0, bars.len().max(1) as f64), y);
    let mut s = plot.open(title);
    s.push_str(&plot.y_axis(y_label));
    s.push_str(&format!(
        "<line x1=\"{:.1}\" y1=\"{b:.1}\" x2=\"{:.1}\" y2=\"{b:.1}\" stroke=\"#999\"/>",
        plot.left,
        plot.right,
        b = plot.bottom
    ));
    let slot = (plot.right - plot.left) / bars.len().max(1) as f64;
    let width = (slot * 0.75).clamp(1.0, 40.0);
    let every = bars.len().div_ceil(10).max(1);
    for (i, (label, v)) in bars.iter().enumerate() {
        let x = plot.left + slot * i as f64 + (slot - width) / 2.0;
        let mut base = 0.0;
        for ((name, color), secs) in stacks.iter().zip(v) {
            if !secs.is_finite() || *secs <= 0.0 {
                continue;
            }
            let (y_top, y_base) = (plot.py(base + secs), plot.py(base));
            s.push_str(&format!(
                "<rect x=\"{x:.1}\" y=\"{y_top:.1}\" width=\"{width:.1}\" height=\"{:.1}\" \
                 fill=\"{color}\"><title>{}: {}</title></rect>",
                (y_base - y_top).max(0.1),
                esc(label),
                esc(&format!("{name} {secs:.2}"))
            ));
            base += secs;
        }
        if i % every == 0 {
            s.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"{TEXT}\">{}</text>",
                x + width / 2.0,
                plot.bottom + 17.0,
                esc(label)
            ));
        }
    }
    let legend: Vec<(&str, &str, Swatch)> = stacks
        .iter()
        .map(|(n, c)| (n.as_str(), *c, Swatch::Block))
        .collect();
    s.push_str(&plot.legend(&legend));
    s.push_str("</svg>");
    s
}

/// Horizontal bars, one per (label, value, colour), with vertical reference lines.
pub fn horizontal_bars(
    title: &str,
    bars: &[(String, f64, &'static str)],
    rules: &[Rule],
) -> String {
    let bars: Vec<_> = bars.iter().take(MAX_POINTS / 10).collect();
    let row = 20.0;
    let h = 60.0 + row * bars.len() as f64;
    let top = bars
        .iter()
        .map(|b| b.1)
        .chain(rules.iter().map(|r| r.at))
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max)
        .max(1e-9)
        * 1.08;
    let left = 220.0;
    let right = WIDTH - 80.0;
    let px = |v: f64| left + v.max(0.0) / top * (right - left);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" width=\"{WIDTH}\" height=\"{h}\" \
         viewBox=\"0 0 {WIDTH} {h}\" font-family=\"sans-serif\" font-size=\"12\"><title>{t}</title>\
         <text x=\"{left}\" y=\"16\" font-size=\"14\" font-weight=\"bold\" fill=\"{TEXT}\">{t}</text>",
        t = esc(title)
    );
    for (i, (label, v, color)) in bars.iter().enumerate() {
        let y = 34.0 + row * i as f64;
        let label: String = if label.chars().count() > 30 {
            format!("{}…", label.chars().take(29).collect::<String>())
        } else {
            label.clone()
        };
        s.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"{TEXT}\">{}</text>\
             <rect x=\"{left}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{color}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" fill=\"{TEXT}\">{v:.3}</text>",
            left - 8.0,
            y + 12.0,
            esc(&label),
            (px(*v) - left).max(0.5),
            row - 6.0,
            px(*v) + 4.0,
            y + 12.0
        ));
    }
    let bottom = 34.0 + row * bars.len() as f64;
    for r in rules {
        let x = px(r.at);
        s.push_str(&format!(
            "<line x1=\"{x:.1}\" y1=\"28\" x2=\"{x:.1}\" y2=\"{bottom:.1}\" stroke=\"{c}\" \
             stroke-dasharray=\"4 3\"/><text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" \
             fill=\"{c}\">{}</text>",
            bottom + 16.0,
            esc(&r.label),
            c = r.color
        ));
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc(r#"<script>alert("x") & 'y'</script>"#),
            "&lt;script&gt;alert(&quot;x&quot;) &amp; &#39;y&#39;&lt;/script&gt;"
        );
    }

    #[test]
    fn thinning_keeps_the_ends_and_bounds_the_count() {
        let v: Vec<i32> = (0..10_000).collect();
        let t = thin(&v, 600);
        assert_eq!(t.len(), 600);
        assert_eq!((t[0], t[599]), (0, 9_999));
        assert_eq!(thin(&v[..5], 600), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn ticks_are_round() {
        let t: Vec<String> = number_ticks(0.0, 1.0, 5).into_iter().map(|t| t.1).collect();
        assert_eq!(t, ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]);
        let t = time_ticks(0.0, 3.0 * 86_400.0, 8);
        assert_eq!(t[1].1, "01-01 12:00");
    }

    #[test]
    fn a_chart_of_many_points_draws_a_bounded_number_and_escapes_its_labels() {
        let mut c = Chart::new("<b>title</b>", XAxis::Time, "kWh");
        c.lines.push(Line {
            label: "a & b".into(),
            color: "#000",
            style: Style::Solid,
            points: (0..100_000)
                .map(|i| (i as f64 * 60.0, (i % 7) as f64))
                .collect(),
        });
        let svg = c.svg();
        assert!(svg.contains("&lt;b&gt;title&lt;/b&gt;") && svg.contains("a &amp; b"));
        assert!(!svg.contains("<b>"));
        let points = svg
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(points.split(' ').count(), MAX_POINTS);
        assert!(svg.len() < 40_000, "{} bytes", svg.len());
    }

    #[test]
    fn an_empty_or_flat_chart_still_draws() {
        let c = Chart::new("empty", XAxis::Lead, "MAE");
        assert!(c.svg().ends_with("</svg>"));
        let mut c = Chart::new("flat", XAxis::Lead, "MAE");
        c.lines.push(Line {
            label: String::new(),
            color: "#000",
            style: Style::Dots,
            points: vec![(1.0, 2.0)],
        });
        assert!(!c.svg().contains("NaN"));
    }
}
