//! The report's page: one HTML document with its CSS inline, the run's
//! summary, the comparison with a baseline, and the building blocks the
//! suite sections are made of (tables, notices, figures holding a chart).
//! Nothing is loaded from anywhere: no links, no scripts, no images but
//! the inline SVG.

use std::fmt::Write;

use crate::gate::compare::{Comparison, FigureDiff, FigureStatus, Verdict};
use crate::gate::record::RunRecord;

const CSS: &str = "
body { font-family: sans-serif; margin: 24px auto; max-width: 1500px; color: #222; padding: 0 16px; }
h1 { font-size: 1.5em; margin-bottom: 4px; }
h2 { font-size: 1.25em; margin-top: 36px; border-bottom: 2px solid #ccc; padding-bottom: 4px; }
h3 { font-size: 1.05em; margin-top: 20px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.regressed td, tr.failed td { background: #fde2e2; color: #900; }
tr.improved td { background: #e3f5e3; }
tr.skipped td { color: #777; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 4px; font-size: 0.8em; margin-left: 8px; vertical-align: middle; }
.passed { background: #d8f0d8; color: #14601c; }
.failed { background: #f8d0d0; color: #900; }
.skipped, .missing { background: #eee; color: #555; }
.notice { background: #f6f6f6; border-left: 4px solid #aaa; padding: 8px 12px; margin: 8px 0; }
.notice.bad { border-left-color: #c00; background: #fdeeee; }
figure.chart { margin: 12px 0; display: table; }
figure.chart figcaption { font-size: 0.85em; color: #555; display: table-caption; caption-side: bottom; }
.charts { display: flex; flex-wrap: wrap; gap: 8px 24px; align-items: flex-start; }
code { background: #f3f3f3; padding: 0 3px; }
ul.diffs li { font-family: monospace; }
";

/// Text for HTML element content or a quoted attribute.
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

/// A figure as the tables show it: whole numbers above 100, three
/// significant digits below.
pub fn number(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let a = v.abs();
    if a >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// A table cell: text, or a number aligned right.
pub enum Cell {
    Text(String),
    Num(f64),
    /// Already HTML (a badge, code).
    Html(String),
}

impl Cell {
    fn html(&self) -> String {
        match self {
            Cell::Text(t) => format!("<td>{}</td>", esc(t)),
            Cell::Num(v) => format!("<td class=\"num\">{}</td>", number(*v)),
            Cell::Html(h) => format!("<td>{h}</td>"),
        }
    }
}

/// A table (no header row when every heading is empty); each row may
/// carry a class (`regressed`, `failed`, ...).
pub fn table(head: &[&str], rows: &[(Option<&str>, Vec<Cell>)]) -> String {
    let mut out = String::from("<table>");
    if head.iter().any(|h| !h.is_empty()) {
        out.push_str("<thead><tr>");
        for h in head {
            let _ = write!(out, "<th>{}</th>", esc(h));
        }
        out.push_str("</tr></thead>");
    }
    out.push_str("<tbody>");
    for (class, cells) in rows {
        match class {
            Some(c) => {
                let _ = write!(out, "<tr class=\"{c}\">");
            }
            None => out.push_str("<tr>"),
        }
        for c in cells {
            out.push_str(&c.html());
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    out
}

/// A plain statement in place of a chart or table (a suite not run,
/// skipped, or with nothing of that kind recorded).
pub fn notice(text: &str) -> String {
    format!("<p class=\"notice\">{}</p>", esc(text))
}

/// A notice of something that went wrong.
pub fn bad_notice(text: &str) -> String {
    format!("<p class=\"notice bad\">{}</p>", esc(text))
}

/// A drawn chart with its caption; `id` names it for the reader's links
/// and the browser test.
pub fn chart_figure(id: &str, svg: &str, caption: &str) -> String {
    format!(
        "<figure class=\"chart\" id=\"{}\">{svg}<figcaption>{}</figcaption></figure>",
        esc(id),
        esc(caption)
    )
}

/// A verdict badge.
pub fn badge(class: &str, text: &str) -> String {
    format!("<span class=\"badge {class}\">{}</span>", esc(text))
}

/// The run's summary: what it ran on and its suites at a glance.
pub fn summary(record: &RunRecord) -> String {
    let e = &record.environment;
    let mut rows = vec![
        ("run id", record.run_id.clone()),
        ("lab", record.lab.clone()),
        ("started", record.started.clone()),
        ("guest kernel", e.kernel.clone()),
        (
            "topology",
            format!("{} (sha256 {})", e.topology.origin, e.topology.sha256),
        ),
        ("image", e.image_key.clone()),
        ("QEMU", e.qemu.clone()),
        ("lab version", e.lab.clone()),
        ("accelerator", e.accel.clone()),
    ];
    for (k, v) in &record.boot {
        rows.push((k.as_str(), format!("{} ms", number(*v))));
    }
    let rows: Vec<(Option<&str>, Vec<Cell>)> = rows
        .into_iter()
        .map(|(k, v)| (None, vec![Cell::Text(k.into()), Cell::Text(v)]))
        .collect();
    table(&["", ""], &rows)
}

/// The comparison with a baseline: its verdict, why it could not be made
/// or what it noticed, the digest fields that differ and the figures
/// beyond tolerance (the worse way in red).
pub fn comparison(c: &Comparison) -> String {
    let mut out = String::from("<h2 id=\"comparison\">Compared with the baseline</h2>");
    let _ = write!(
        out,
        "<p>Base <code>{}</code>, new <code>{}</code>: ",
        esc(&c.base),
        esc(&c.new)
    );
    out.push_str(&match c.verdict {
        Verdict::Equal => badge("passed", "EQUAL"),
        Verdict::Regression => badge("failed", "REGRESSION"),
        Verdict::NotComparable => badge("skipped", "NOT COMPARABLE"),
    });
    out.push_str("</p>");
    for r in &c.reasons {
        out.push_str(&bad_notice(&format!("Not comparable: {r}")));
    }
    if !c.notes.is_empty() {
        out.push_str("<ul>");
        for n in &c.notes {
            let _ = write!(out, "<li>{}</li>", esc(n));
        }
        out.push_str("</ul>");
    }
    if c.verdict == Verdict::NotComparable {
        return out;
    }
    if c.digests.is_empty() {
        out.push_str(&notice("Behaviour (the digests) is the same."));
    } else {
        let _ = write!(
            out,
            "<h3>Behaviour that differs ({} digest field(s))</h3><ul class=\"diffs\" id=\"digest-diffs\">",
            c.digests.len()
        );
        for d in &c.digests {
            let _ = write!(
                out,
                "<li>{} {}: {} -&gt; {}</li>",
                esc(&d.suite),
                esc(&d.field),
                esc(&d.old.to_string()),
                esc(&d.new.to_string())
            );
        }
        out.push_str("</ul>");
    }
    let moved: Vec<&FigureDiff> = c
        .figures
        .iter()
        .filter(|f| f.status != FigureStatus::Within)
        .collect();
    if moved.is_empty() {
        out.push_str(&notice(&format!(
            "All {} compared figures are within their tolerance.",
            c.figures.len()
        )));
    } else {
        out.push_str("<h3>Figures beyond their tolerance</h3>");
        let rows: Vec<_> = moved.iter().map(|f| figure_diff_row(f, true)).collect();
        out.push_str(&table(
            &[
                "suite",
                "figure",
                "old",
                "new",
                "unit",
                "change",
                "better",
                "tolerance",
                "",
            ],
            &rows,
        ));
    }
    out
}

/// A compared figure as a table row, red when it regressed (or is
/// missing), green when it improved beyond tolerance.
pub fn figure_diff_row(f: &FigureDiff, with_suite: bool) -> (Option<&'static str>, Vec<Cell>) {
    let class = match f.status {
        FigureStatus::Regressed | FigureStatus::Missing => Some("regressed"),
        FigureStatus::Improved => Some("improved"),
        FigureStatus::Within | FigureStatus::Worse => None,
    };
    let change = match f.new {
        Some(n) if f.old != 0.0 => format!("{:+.0} %", (n / f.old - 1.0) * 100.0),
        _ => "-".into(),
    };
    let status = match f.status {
        FigureStatus::Within => "within",
        FigureStatus::Improved => "improved",
        FigureStatus::Regressed => "REGRESSED",
        FigureStatus::Worse => "worse (does not gate)",
        FigureStatus::Missing => "MISSING",
    };
    let mut cells = Vec::new();
    if with_suite {
        cells.push(Cell::Text(f.suite.clone()));
    }
    cells.extend([
        Cell::Text(f.field.clone()),
        Cell::Num(f.old),
        f.new.map_or(Cell::Text("-".into()), Cell::Num),
        Cell::Text(f.unit.clone()),
        Cell::Text(change),
        Cell::Text(format!("{:?}", f.better).to_lowercase()),
        Cell::Text(match f.load_scale {
            Some(k) => format!("{:.0} % (QEMU's CPU share {k:.2}x)", f.tolerance * 100.0),
            None => format!("{:.0} %", f.tolerance * 100.0),
        }),
        Cell::Text(status.into()),
    ]);
    (class, cells)
}

/// The whole document around the sections.
pub fn document(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{CSS}</style></head>\n<body>\n{body}\n</body></html>\n",
        esc(title)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn numbers_keep_what_matters() {
        assert_eq!(number(17655.172414), "17655");
        assert_eq!(number(73.037), "73.0");
        assert_eq!(number(1.3201), "1.32");
        assert_eq!(number(0.7452), "0.745");
        assert_eq!(number(8.0), "8");
        assert_eq!(number(f64::NAN), "-");
    }
}
