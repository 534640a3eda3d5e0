//! The report as one self-contained HTML page: no script, no external stylesheet, font or image,
//! so it opens on an air-gapped workstation and prints. Charts are inline SVG ([`super::svg`]),
//! each with a table of the same figures beside it; the layout collapses to one column on a narrow
//! screen, and `@media print` drops the colours behind the text and keeps rows and charts whole.
//!
//! Every figure of `--format json` is on the page in an element with `data-field` (its path in
//! the JSON, list indices as segments: `top_missing.0.missing_bytes`) and `data-value` (its exact
//! value; absent for `null`), so a program can check the page against the JSON. Bytes read in
//! binary units, with the exact figure in the element's `title` (and in full in the totals).

use std::fmt::Write as _;

use chrono::{DateTime, Datelike, NaiveDate, Utc};

use super::svg::{self, escape, Bar, Chart, Scale, Segment};
use super::text::NOT_RECORDED;
use super::units;
use super::Report;
use crate::db::failures::one_line;
use crate::db::report::{MissingProject, NamespaceTotals, UNKNOWN_MONTH};

const STYLE: &str = include_str!("report.css");

/// A figure for `data-value`.
enum Value<'a> {
    Int(i64),
    Text(Option<&'a str>),
    Bool(bool),
}

impl Value<'_> {
    /// ` data-field="…" data-value="…"`.
    fn attributes(&self, field: &str) -> String {
        let value = match self {
            Value::Int(n) => Some(n.to_string()),
            Value::Text(text) => text.map(escape),
            Value::Bool(b) => Some(b.to_string()),
        };
        match value {
            Some(value) => format!(" data-field=\"{}\" data-value=\"{value}\"", escape(field)),
            None => format!(" data-field=\"{}\"", escape(field)),
        }
    }
}

/// Bytes as people read them, the exact figure in the title.
fn bytes_html(bytes: i64) -> String {
    format!(
        "<span title=\"{} bytes\">{}</span>",
        units::grouped(bytes),
        units::bytes(bytes)
    )
}

/// A path, escaped, that a narrow screen may break after each `/`.
fn breakable(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 16);
    for c in path.chars() {
        out.push_str(&escape(c.encode_utf8(&mut [0; 4])));
        if c == '/' {
            out.push_str("<wbr>");
        }
    }
    out
}

/// A numeric cell holding `field`.
fn count_cell(field: &str, n: i64) -> String {
    format!(
        "<td class=\"num\"{}>{}</td>",
        Value::Int(n).attributes(field),
        units::grouped(n)
    )
}

fn bytes_cell(field: &str, n: i64) -> String {
    format!(
        "<td class=\"num\"{}>{}</td>",
        Value::Int(n).attributes(field),
        bytes_html(n)
    )
}

fn header_row(out: &mut String, columns: &[(&str, bool)]) {
    out.push_str("<thead><tr>");
    for (name, numeric) in columns {
        let _ = write!(
            out,
            "<th scope=\"col\"{}>{}</th>",
            if *numeric { " class=\"num\"" } else { "" },
            escape(name)
        );
    }
    out.push_str("</tr></thead>");
}

pub fn page(report: &Report, generated_at: DateTime<Utc>) -> String {
    let mut out = String::with_capacity(64 * 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Missing container repositories: registry-repair report</title>\n\
         <style>\n{STYLE}</style>\n</head>\n<body>\n\
         <header class=\"page\"><h1>Missing container repositories</h1>\
         <p class=\"meta\">registry-repair {version} report, generated \
         <time datetime=\"{iso}\">{shown}</time>. Sizes in binary units \
         (1 KiB = 1,024 bytes; 1 GiB = 1,024 MiB); point at a size for its exact bytes.</p></header>\n<main>\n",
        version = escape(env!("CARGO_PKG_VERSION")),
        iso = generated_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        shown = generated_at.format("%Y-%m-%d %H:%M UTC"),
    );
    cards(&mut out, report);
    progress(&mut out, report);
    failed(&mut out, report);
    namespaces(&mut out, report);
    months(&mut out, report);
    distribution(&mut out, report);
    projects(&mut out, report);
    totals(&mut out, report);
    notes(&mut out);
    out.push_str("</main>\n</body>\n</html>\n");
    out
}

fn card(out: &mut String, class: &str, label: &str, big: &str, sub: &str) {
    let _ = write!(
        out,
        "<div class=\"card {class}\"><p class=\"label\">{label}</p><p class=\"big\">{big}</p>\
         <p class=\"sub\">{sub}</p></div>",
    );
}

fn field(field: &str, value: Value, shown: &str) -> String {
    format!("<span{}>{shown}</span>", value.attributes(field))
}

fn cards(out: &mut String, report: &Report) {
    let t = &report.totals;
    out.push_str("<section class=\"cards\" aria-label=\"Summary\">");
    card(
        out,
        "count",
        "Missing repositories",
        &field(
            "totals.missing",
            Value::Int(t.missing),
            &units::grouped(t.missing),
        ),
        &format!(
            "in {} projects",
            field(
                "totals.projects_with_missing",
                Value::Int(t.projects_with_missing),
                &units::grouped(t.projects_with_missing)
            )
        ),
    );
    card(
        out,
        "bytes",
        "Missing bytes",
        &field(
            "totals.missing_bytes",
            Value::Int(t.missing_bytes),
            &units::bytes(t.missing_bytes),
        ),
        &format!(
            "{} bytes; {} sizes unknown",
            units::grouped(t.missing_bytes),
            field(
                "totals.missing_sizes_unknown",
                Value::Int(t.missing_sizes_unknown),
                &units::grouped(t.missing_sizes_unknown)
            )
        ),
    );
    card(
        out,
        "empty",
        "Shown as empty by GitLab",
        &format!(
            "{} <small>projects</small>",
            field(
                "totals.projects_shown_empty_by_gitlab",
                Value::Int(t.projects_shown_empty_by_gitlab),
                &units::grouped(t.projects_shown_empty_by_gitlab)
            )
        ),
        &format!(
            "{} missing, left out of their usage quota ({} bytes)",
            field(
                "totals.bytes_shown_empty_by_gitlab",
                Value::Int(t.bytes_shown_empty_by_gitlab),
                &units::bytes(t.bytes_shown_empty_by_gitlab)
            ),
            units::grouped(t.bytes_shown_empty_by_gitlab)
        ),
    );
    let percent = if t.projects > 0 {
        t.analysed as f64 * 100.0 / t.projects as f64
    } else {
        100.0
    };
    card(
        out,
        "progress",
        "Projects analysed",
        &format!("{percent:.1}%"),
        &format!(
            "{} of {} projects; {} pending",
            field(
                "totals.analysed",
                Value::Int(t.analysed),
                &units::grouped(t.analysed)
            ),
            field(
                "totals.projects",
                Value::Int(t.projects),
                &units::grouped(t.projects)
            ),
            field(
                "totals.pending",
                Value::Int(t.pending),
                &units::grouped(t.pending)
            ),
        ),
    );
    out.push_str("</section>\n");
}

fn panel_start(out: &mut String, id: &str, title: &str, lead: &str) {
    let _ = write!(
        out,
        "<section class=\"panel\" id=\"{id}\" aria-labelledby=\"{id}-title\">\
         <h2 id=\"{id}-title\">{title}</h2><p class=\"lead\">{lead}</p>"
    );
}

fn progress(out: &mut String, report: &Report) {
    let t = &report.totals;
    let ongoing = (t.analysed - t.completed - t.failed).max(0);
    panel_start(
        out,
        "progress",
        "Analysis progress",
        "Every project gets one row in GitLab's tracking table once analysed.",
    );
    let mut segments = vec![
        Segment {
            label: "Completed",
            value: t.completed,
            class: "completed",
        },
        Segment {
            label: "Failed",
            value: t.failed,
            class: "failed",
        },
    ];
    if ongoing > 0 {
        segments.push(Segment {
            label: "Ongoing (GitLab's worker)",
            value: ongoing,
            class: "ongoing",
        });
    }
    segments.push(Segment {
        label: "Pending",
        value: t.pending,
        class: "pending",
    });
    let description = format!(
        "Of {} projects, {} completed, {} failed, {} pending.",
        units::grouped(t.projects),
        units::grouped(t.completed),
        units::grouped(t.failed),
        units::grouped(t.pending)
    );
    out.push_str("<figure class=\"wide\">");
    out.push_str(&svg::stacked(
        &Chart {
            title: "Analysis progress",
            description: &description,
            class: "progress",
        },
        &segments,
    ));
    out.push_str("</figure><div class=\"scroll\"><table class=\"narrow\"><caption>Projects by state</caption>");
    header_row(
        out,
        &[("State", false), ("Projects", true), ("Share", true)],
    );
    out.push_str("<tbody>");
    let share = |n: i64| {
        if t.projects > 0 {
            format!("{:.1}%", n as f64 * 100.0 / t.projects as f64)
        } else {
            "–".to_string()
        }
    };
    let fields: [(&str, &str, i64); 5] = [
        ("analysed", "Analysed", t.analysed),
        ("completed", "Completed", t.completed),
        ("failed", "Failed", t.failed),
        ("pending", "Pending", t.pending),
        ("projects", "All projects", t.projects),
    ];
    for (i, (name, label, n)) in fields.iter().enumerate() {
        if i == 3 && ongoing > 0 {
            let _ = write!(
                out,
                "<tr><th scope=\"row\"><span class=\"swatch ongoing\"></span>Ongoing (GitLab's worker)</th>\
                 <td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                units::grouped(ongoing),
                share(ongoing)
            );
        }
        let swatch = if matches!(*name, "projects" | "analysed") {
            String::new()
        } else {
            format!("<span class=\"swatch {name}\"></span>")
        };
        // The failed projects are named below, each with why.
        let label = if *name == "failed" && *n > 0 {
            format!("<a href=\"#failed\">{label}</a>")
        } else {
            label.to_string()
        };
        let _ = write!(
            out,
            "<tr><th scope=\"row\">{swatch}{label}</th>{}<td class=\"num\">{}</td></tr>",
            count_cell(&format!("totals.{name}"), *n),
            share(*n)
        );
    }
    out.push_str("</tbody></table></div></section>\n");
}

/// The failed projects: how many per cause and what to do, then the most recent ones with why.
fn failed(out: &mut String, report: &Report) {
    let listed = report.failed_projects.len() as i64;
    let all = listed + report.failed_not_listed;
    panel_start(
        out,
        "failed",
        "Failed projects",
        "Projects whose analysis failed: GitLab's tracking table records them <code>failed</code> \
         with nothing counted. Why each failed is recorded with it; a project failed by GitLab's \
         own worker, or by an earlier release, has no reason recorded.",
    );
    if report.failed_by_cause.is_empty() && report.failed_projects.is_empty() {
        let _ = writeln!(
            out,
            "<p>No project failed.</p><span hidden{}></span></section>",
            Value::Int(report.failed_not_listed).attributes("failed_not_listed")
        );
        return;
    }
    out.push_str(
        "<div class=\"scroll\"><table class=\"causes\"><caption>By cause, and what to do</caption>",
    );
    header_row(
        out,
        &[("Cause", false), ("Projects", true), ("What to do", false)],
    );
    out.push_str("<tbody>");
    for (i, c) in report.failed_by_cause.iter().enumerate() {
        let at = |name: &str| format!("failed_by_cause.{i}.{name}");
        let _ = write!(
            out,
            "<tr><th scope=\"row\"{}>{}</th>{}<td class=\"advice\"{}>{}</td></tr>",
            Value::Text(c.cause.as_deref()).attributes(&at("cause")),
            c.cause.as_deref().map_or_else(
                || format!("<em>{NOT_RECORDED}</em>"),
                |w| format!("<code>{}</code>", escape(w))
            ),
            count_cell(&at("projects"), c.projects),
            Value::Text(Some(c.advice)).attributes(&at("advice")),
            code_spans(c.advice),
        );
    }
    out.push_str("</tbody></table></div>");
    let _ = write!(
        out,
        "<div class=\"scroll\"><table class=\"failed\"><caption>Most recent first ({} of {})</caption>",
        units::grouped(listed),
        units::grouped(all)
    );
    header_row(
        out,
        &[
            ("Project ID", true),
            ("Full path", false),
            ("Cause", false),
            ("Reason", false),
            ("Failed at (UTC)", false),
        ],
    );
    out.push_str("<tbody>");
    if report.failed_projects.is_empty() {
        out.push_str("<tr><td colspan=\"5\" class=\"none\">None listed.</td></tr>");
    }
    for (i, f) in report.failed_projects.iter().enumerate() {
        let at = |name: &str| format!("failed_projects.{i}.{name}");
        let path = match &f.full_path {
            Some(path) => breakable(path),
            None => "<em>(no route)</em>".to_string(),
        };
        let cause = f.cause.as_deref().map_or_else(
            || format!("<em>{NOT_RECORDED}</em>"),
            |w| format!("<code>{}</code>", escape(w)),
        );
        let reason = f.reason.as_deref().map_or_else(
            || "<em>not recorded</em>".to_string(),
            |r| escape(&one_line(r)),
        );
        let iso = f
            .failed_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let _ = write!(
            out,
            "<tr><td class=\"num\"{}>{}</td><td class=\"path\"{}>{path}</td><td{}>{cause}</td>\
             <td class=\"reason\"{}>{reason}</td><td{}><time datetime=\"{iso}\">{}</time></td></tr>",
            Value::Int(f.project_id).attributes(&at("project_id")),
            f.project_id,
            Value::Text(f.full_path.as_deref()).attributes(&at("full_path")),
            Value::Text(f.cause.as_deref()).attributes(&at("cause")),
            Value::Text(f.reason.as_deref()).attributes(&at("reason")),
            Value::Text(Some(&iso)).attributes(&at("failed_at")),
            f.failed_at.format("%Y-%m-%d %H:%M:%S"),
        );
    }
    out.push_str("</tbody></table></div>");
    let not_listed = field(
        "failed_not_listed",
        Value::Int(report.failed_not_listed),
        &units::grouped(report.failed_not_listed),
    );
    let _ = if report.failed_not_listed > 0 {
        write!(
            out,
            "<p class=\"note\">{not_listed} more not listed (<code>--top N</code> lists more).</p>"
        )
    } else {
        write!(
            out,
            "<p class=\"note\">All listed ({not_listed} left out).</p>"
        )
    };
    out.push_str("</section>\n");
}

/// `text` escaped, its `backquoted` spans as code.
fn code_spans(text: &str) -> String {
    text.split('`')
        .enumerate()
        .map(|(i, part)| {
            if i % 2 == 1 {
                format!("<code>{}</code>", escape(part))
            } else {
                escape(part)
            }
        })
        .collect()
}

fn totals(out: &mut String, report: &Report) {
    let t = &report.totals;
    panel_start(
        out,
        "totals",
        "Totals",
        "Every figure of the report's totals, with its name in <code>--format json</code> and \
         <code>csv</code>.",
    );
    let rows: [(&str, &str, i64, bool); 14] = [
        ("projects", "Projects in GitLab", t.projects, false),
        ("analysed", "Projects analysed", t.analysed, false),
        ("completed", "Analysis completed", t.completed, false),
        ("failed", "Analysis failed", t.failed, false),
        ("pending", "Not analysed yet", t.pending, false),
        (
            "unaddressable",
            "Paths the registry cannot hold (completed with 0)",
            t.unaddressable,
            false,
        ),
        (
            "projects_with_missing",
            "Projects with missing repositories",
            t.projects_with_missing,
            false,
        ),
        (
            "missing",
            "Missing repositories (tracking table)",
            t.missing,
            false,
        ),
        (
            "missing_itemised",
            "Missing repositories recorded one by one",
            t.missing_itemised,
            false,
        ),
        ("missing_bytes", "Their known sizes", t.missing_bytes, true),
        (
            "missing_sizes_unknown",
            "Their sizes not known",
            t.missing_sizes_unknown,
            false,
        ),
        (
            "projects_not_itemised",
            "Projects counted without their repositories, still to itemise (run lists them again)",
            t.projects_not_itemised,
            false,
        ),
        (
            "projects_shown_empty_by_gitlab",
            "Projects GitLab shows as using no registry storage",
            t.projects_shown_empty_by_gitlab,
            false,
        ),
        (
            "bytes_shown_empty_by_gitlab",
            "Missing bytes in those projects",
            t.bytes_shown_empty_by_gitlab,
            true,
        ),
    ];
    out.push_str(
        "<div class=\"scroll\"><table class=\"totals\"><caption class=\"sr\">Totals</caption>",
    );
    header_row(out, &[("Figure", false), ("Value", true), ("Field", false)]);
    out.push_str("<tbody>");
    for (name, label, value, is_bytes) in rows {
        let path = format!("totals.{name}");
        let shown = if is_bytes {
            format!(
                "{} <span class=\"exact\">({} bytes)</span>",
                units::bytes(value),
                units::grouped(value)
            )
        } else {
            units::grouped(value)
        };
        let _ = write!(
            out,
            "<tr><th scope=\"row\">{label}</th><td class=\"num\"{}>{shown}</td>\
             <td><code>{name}</code></td></tr>",
            Value::Int(value).attributes(&path),
        );
    }
    out.push_str("</tbody></table></div></section>\n");
}

fn namespace_bars(list: &[NamespaceTotals], by_bytes: bool) -> Vec<Bar> {
    list.iter()
        .map(|n| {
            let (value, shown) = if by_bytes {
                (n.missing_bytes, units::bytes(n.missing_bytes))
            } else {
                (n.missing, units::grouped(n.missing))
            };
            Bar {
                label: n.namespace.clone(),
                value,
                shown,
                tick: None,
            }
        })
        .collect()
}

fn namespace_table(out: &mut String, caption: &str, key: &str, list: &[NamespaceTotals]) {
    let _ = write!(
        out,
        "<div class=\"scroll\"><table><caption>{}</caption>",
        escape(caption)
    );
    header_row(
        out,
        &[
            ("Namespace", false),
            ("Missing", true),
            ("Bytes", true),
            ("Size unknown", true),
            ("Projects with missing", true),
            ("Analysed", true),
            ("Completed", true),
            ("Failed", true),
        ],
    );
    out.push_str("<tbody>");
    for (i, n) in list.iter().enumerate() {
        let at = |name: &str| format!("{key}.{i}.{name}");
        let _ = write!(
            out,
            "<tr><th scope=\"row\" class=\"path\"{}>{}</th>{}{}{}{}{}{}{}</tr>",
            Value::Text(Some(&n.namespace)).attributes(&at("namespace")),
            escape(&n.namespace),
            count_cell(&at("missing"), n.missing),
            bytes_cell(&at("missing_bytes"), n.missing_bytes),
            count_cell(&at("missing_sizes_unknown"), n.missing_sizes_unknown),
            count_cell(&at("projects_with_missing"), n.projects_with_missing),
            count_cell(&at("analysed"), n.analysed),
            count_cell(&at("completed"), n.completed),
            count_cell(&at("failed"), n.failed),
        );
    }
    out.push_str("</tbody></table></div>");
}

fn namespaces(out: &mut String, report: &Report) {
    panel_start(
        out,
        "namespaces",
        "Top-level namespaces",
        "Groups and users at the top of the projects' paths, ranked by missing repositories and \
         by missing bytes.",
    );
    if report.namespaces.is_empty() && report.namespaces_by_bytes.is_empty() {
        out.push_str("<p>No namespace listed (<code>--namespaces 0</code>, or nothing analysed).</p></section>\n");
        return;
    }
    out.push_str("<div class=\"pair\">");
    for (list, by_bytes, title, class) in [
        (
            &report.namespaces,
            false,
            "Missing repositories by top-level namespace",
            "count",
        ),
        (
            &report.namespaces_by_bytes,
            true,
            "Missing bytes by top-level namespace",
            "bytes",
        ),
    ] {
        let _ = write!(out, "<figure><figcaption>{}</figcaption>", escape(title));
        let description = format!(
            "{} namespaces, most {} first.",
            list.len(),
            if by_bytes { "bytes" } else { "repositories" }
        );
        out.push_str(&svg::bars(
            &Chart {
                title,
                description: &description,
                class,
            },
            &namespace_bars(list, by_bytes),
        ));
        out.push_str("</figure>");
    }
    out.push_str("</div>");
    namespace_table(
        out,
        "Ranked by missing repositories",
        "namespaces",
        &report.namespaces,
    );
    namespace_table(
        out,
        "Ranked by missing bytes",
        "namespaces_by_bytes",
        &report.namespaces_by_bytes,
    );
    out.push_str("</section>\n");
}

fn distribution(out: &mut String, report: &Report) {
    panel_start(
        out,
        "distribution",
        "Projects by how many repositories they miss",
        "Completed projects with at least one missing repository, by how many they miss.",
    );
    let bars: Vec<Bar> = report
        .distribution
        .iter()
        .map(|b| Bar {
            label: b.bucket.replace('-', "–"),
            value: b.projects,
            shown: units::grouped(b.projects),
            tick: Some(b.bucket.replace('-', "–")),
        })
        .collect();
    out.push_str("<div class=\"pair\"><figure>");
    out.push_str(&svg::columns(
        &Chart {
            title: "Projects by missing repositories",
            description: "How many projects miss 1, 2 to 5, 6 to 20, 21 to 100, 101 to 1000, \
                          and more than 1000 repositories.",
            class: "count",
        },
        &bars,
        Scale::Count,
    ));
    out.push_str(
        "</figure><div class=\"scroll\"><table><caption>Projects by missing repositories</caption>",
    );
    header_row(
        out,
        &[
            ("Missing per project", false),
            ("Projects", true),
            ("Missing in all", true),
        ],
    );
    out.push_str("<tbody>");
    for (i, b) in report.distribution.iter().enumerate() {
        let _ = write!(
            out,
            "<tr><th scope=\"row\"{}>{}</th>{}{}</tr>",
            Value::Text(Some(b.bucket)).attributes(&format!("distribution.{i}.bucket")),
            escape(&b.bucket.replace('-', "–")),
            count_cell(&format!("distribution.{i}.projects"), b.projects),
            count_cell(&format!("distribution.{i}.missing"), b.missing),
        );
    }
    out.push_str("</tbody></table></div></div></section>\n");
}

/// `YYYY-MM` as the first day of that month.
fn month_start(month: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(&format!("{month}-01"), "%Y-%m-%d").ok()
}

/// Every month from the first to the last of `months` (`YYYY-MM`, sorted), with its figures, 0
/// where none: the chart's axis runs in time, gaps included.
fn continuous_months(months: &[(&str, i64, i64)]) -> Vec<(String, i64, i64)> {
    let dated: Vec<(NaiveDate, i64, i64)> = months
        .iter()
        .filter_map(|(m, n, b)| month_start(m).map(|d| (d, *n, *b)))
        .collect();
    let (Some(first), Some(last)) = (dated.first(), dated.last()) else {
        return Vec::new();
    };
    let index = |d: NaiveDate| i64::from(d.year()) * 12 + i64::from(d.month0());
    let (from, to) = (index(first.0), index(last.0));
    (from..=to)
        .map(|i| {
            let (year, month) = (i.div_euclid(12), i.rem_euclid(12) + 1);
            let found = dated.iter().find(|(d, _, _)| index(*d) == i);
            (
                format!("{year:04}-{month:02}"),
                found.map_or(0, |f| f.1),
                found.map_or(0, |f| f.2),
            )
        })
        .collect()
}

/// The axis' labels under `axis`'s months: about eight at most, on round months (every quarter,
/// half year, or year, labelled by the year alone).
fn month_ticks(axis: &[(String, i64, i64)]) -> Vec<Option<String>> {
    let step: i64 = [1, 2, 3, 6, 12, 24, 60, 120, 240]
        .into_iter()
        .find(|step| (axis.len() as i64 + step - 1) / step <= 8)
        .unwrap_or(480);
    axis.iter()
        .map(|(month, _, _)| {
            let date = month_start(month)?;
            let index = i64::from(date.year()) * 12 + i64::from(date.month0());
            if index.rem_euclid(step) != 0 {
                None
            } else if step >= 12 {
                Some(date.year().to_string())
            } else {
                Some(month.clone())
            }
        })
        .collect()
}

fn months(out: &mut String, report: &Report) {
    panel_start(
        out,
        "months",
        "When the registry created the missing repositories",
        "By the month of the registry's <code>created_at</code> (UTC): when the lost \
         repositories were first pushed, which dates the loss.",
    );
    let known: Vec<(&str, i64, i64)> = report
        .by_month
        .iter()
        .filter(|m| m.month != UNKNOWN_MONTH)
        .map(|m| (m.month.as_str(), m.missing, m.missing_bytes))
        .collect();
    let axis = continuous_months(&known);
    if axis.is_empty() {
        out.push_str("<p>No missing repository with a creation time recorded.</p>");
    } else {
        let ticks = month_ticks(&axis);
        let description = format!(
            "From {} to {}, one column per month.",
            axis.first().map_or("", |m| m.0.as_str()),
            axis.last().map_or("", |m| m.0.as_str())
        );
        out.push_str("<div class=\"pair\">");
        for (title, class, scale) in [
            (
                "Missing repositories by month created",
                "count",
                Scale::Count,
            ),
            ("Missing bytes by month created", "bytes", Scale::Bytes),
        ] {
            let bars: Vec<Bar> = axis
                .iter()
                .zip(&ticks)
                .map(|((month, n, b), tick)| {
                    let value = if scale == Scale::Bytes { *b } else { *n };
                    Bar {
                        label: month.clone(),
                        value,
                        shown: if scale == Scale::Bytes {
                            units::bytes(value)
                        } else {
                            units::grouped(value)
                        },
                        tick: tick.clone(),
                    }
                })
                .collect();
            let _ = write!(
                out,
                "<figure><figcaption>{}</figcaption>{}</figure>",
                escape(title),
                svg::columns(
                    &Chart {
                        title,
                        description: &description,
                        class,
                    },
                    &bars,
                    scale,
                )
            );
        }
        out.push_str("</div>");
    }
    if let Some(unknown) = report.by_month.iter().find(|m| m.month == UNKNOWN_MONTH) {
        let _ = write!(
            out,
            "<p class=\"note\">{} missing repositories ({}) have no creation time from the \
             registry: the row <em>unknown</em> below, not on the charts.</p>",
            units::grouped(unknown.missing),
            units::bytes(unknown.missing_bytes)
        );
    }
    out.push_str("<div class=\"scroll tall\"><table><caption>Missing repositories by month created</caption>");
    header_row(
        out,
        &[
            ("Month", false),
            ("Missing", true),
            ("Bytes", true),
            ("Size unknown", true),
        ],
    );
    out.push_str("<tbody>");
    for (i, m) in report.by_month.iter().enumerate() {
        let at = |name: &str| format!("by_month.{i}.{name}");
        let _ = write!(
            out,
            "<tr><th scope=\"row\"{}>{}</th>{}{}{}</tr>",
            Value::Text(Some(&m.month)).attributes(&at("month")),
            escape(&m.month),
            count_cell(&at("missing"), m.missing),
            bytes_cell(&at("missing_bytes"), m.missing_bytes),
            count_cell(&at("missing_sizes_unknown"), m.missing_sizes_unknown),
        );
    }
    out.push_str("</tbody></table></div></section>\n");
}

fn project_table(out: &mut String, caption: &str, key: &str, list: &[MissingProject]) {
    let _ = write!(
        out,
        "<div class=\"scroll\"><table class=\"projects\"><caption>{}</caption>",
        escape(caption)
    );
    header_row(
        out,
        &[
            ("Project ID", true),
            ("Full path", false),
            ("Missing", true),
            ("Itemised", true),
            ("Bytes", true),
            ("Size unknown", true),
            ("GitLab's usage quota", false),
        ],
    );
    out.push_str("<tbody>");
    if list.is_empty() {
        out.push_str("<tr><td colspan=\"7\" class=\"none\">None.</td></tr>");
    }
    for (i, p) in list.iter().enumerate() {
        let at = |name: &str| format!("{key}.{i}.{name}");
        let path = match &p.full_path {
            Some(path) => breakable(path),
            None => "<em>(no route)</em>".to_string(),
        };
        let quota = if p.shown_empty_by_gitlab {
            "<span class=\"tag\">shows 0</span>"
        } else {
            "counts them"
        };
        let _ = write!(
            out,
            "<tr><td class=\"num\"{}>{}</td><td class=\"path\"{}>{path}</td>{}{}{}{}<td{}>{quota}</td></tr>",
            Value::Int(p.project_id).attributes(&at("project_id")),
            p.project_id,
            Value::Text(p.full_path.as_deref()).attributes(&at("full_path")),
            count_cell(&at("missing_count"), i64::from(p.missing_count)),
            count_cell(&at("missing_itemised"), p.missing_itemised),
            bytes_cell(&at("missing_bytes"), p.missing_bytes),
            count_cell(&at("missing_sizes_unknown"), p.missing_sizes_unknown),
            Value::Bool(p.shown_empty_by_gitlab).attributes(&at("shown_empty_by_gitlab")),
        );
    }
    out.push_str("</tbody></table></div>");
}

fn projects(out: &mut String, report: &Report) {
    panel_start(
        out,
        "projects",
        "Projects missing most",
        "A project whose usage quota <em>shows 0</em> has no <code>container_repositories</code> \
         row at all: GitLab shows it as using no registry storage, its missing bytes included.",
    );
    project_table(
        out,
        "By missing repositories",
        "top_missing",
        &report.top_missing,
    );
    project_table(
        out,
        "By missing bytes",
        "top_by_bytes",
        &report.top_by_bytes,
    );
    out.push_str("</section>\n");
}

fn notes(out: &mut String) {
    out.push_str(
        "<section class=\"panel\" id=\"notes\" aria-labelledby=\"notes-title\">\
         <h2 id=\"notes-title\">How to read these figures</h2><dl class=\"notes\">\
         <dt>Bytes</dt><dd>The registry's deduplicated size of each missing repository on its own. \
         Layers shared between repositories are counted once per repository, so the sum can \
         exceed the storage they take together. A size the registry did not give (or that was \
         not asked) is <em>unknown</em> and adds nothing to the sums.</dd>\
         <dt>GitLab's usage quota</dt><dd>GitLab shows a project's registry usage as the \
         registry's size of its whole path, missing repositories included, as long as the \
         project has at least one <code>container_repositories</code> row. A project without any \
         shows 0: its missing bytes are invisible in GitLab (<em>shown as empty</em>).</dd>\
         <dt>Itemised</dt><dd>Repositories recorded one by one by the analysis. Projects analysed \
         by an earlier version or by GitLab's own worker have a count but no list (<em>not \
         itemised</em>), and no bytes.</dd>\
         <dt>Restored</dt><dd>A recorded repository that has a <code>container_repositories</code> \
         row again (restored by <code>repair apply</code>, or by GitLab) no longer counts.</dd>\
         </dl></section>\n",
    );
}

#[cfg(test)]
mod tests {
    use super::super::sample;
    use super::*;

    fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-03T15:27:00Z")
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn the_page_is_self_contained() {
        let html = page(&sample::report(), at());
        assert!(html.starts_with("<!DOCTYPE html>"));
        for external in [
            "<script", "<link", "src=", "@import", "url(", "http://", "https://",
        ] {
            let outside_svg_namespace = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
            assert!(
                !outside_svg_namespace.contains(external),
                "the page refers to something outside it: {external}"
            );
        }
        assert!(html.contains("@media print"));
        assert!(html.contains("@media screen and (max-width"));
        assert!(html.contains("2026-12-03 15:27 UTC"));
    }

    #[test]
    fn every_figure_carries_its_field_and_exact_value() {
        let html = page(&sample::report(), at());
        for marker in [
            "data-field=\"totals.missing_bytes\" data-value=\"5368709127\"",
            "data-field=\"totals.bytes_shown_empty_by_gitlab\" data-value=\"3145728\"",
            "data-field=\"top_missing.0.full_path\" data-value=\"Acme/Big &lt;Images&gt;\"",
            "data-field=\"top_missing.0.project_id\" data-value=\"4\"",
            "data-field=\"top_missing.1.shown_empty_by_gitlab\" data-value=\"false\"",
            "data-field=\"namespaces_by_bytes.0.missing_bytes\" data-value=\"4294967296\"",
            "data-field=\"by_month.2.month\" data-value=\"unknown\"",
            "data-field=\"distribution.5.bucket\" data-value=\"&gt;1000\"",
        ] {
            assert!(html.contains(marker), "no {marker}");
        }
        // A project without a route: the field is there, with no value (JSON null).
        assert!(html.contains("data-field=\"top_missing.1.full_path\">"));
        // Text is escaped everywhere.
        assert!(!html.contains("<Images>"));
    }

    #[test]
    fn charts_are_accessible_and_tables_have_headers() {
        let html = page(&sample::report(), at());
        let charts = html.matches("<svg ").count();
        assert_eq!(charts, 6, "progress, 2 namespaces, distribution, 2 months");
        assert_eq!(html.matches("role=\"img\" aria-label=").count(), charts);
        assert_eq!(
            html.matches("<svg ").count(),
            html.matches("</title><desc>").count()
        );
        assert!(html.contains("<th scope=\"col\" class=\"num\">Bytes</th>"));
    }

    #[test]
    fn failed_projects_are_named_escaped_with_why_and_what_to_do() {
        let html = page(&sample::report(), at());
        for marker in [
            "<section class=\"panel\" id=\"failed\"",
            "<a href=\"#failed\">Failed</a>",
            "data-field=\"failed_by_cause.0.cause\" data-value=\"hostile_answer\"",
            "data-field=\"failed_by_cause.2.cause\"><em>(not recorded)</em>",
            "data-field=\"failed_projects.0.full_path\" data-value=\"Acme/&lt;b&gt;Hostile&lt;/b&gt;\"",
            ">Acme/<wbr>&lt;b&gt;Hostile&lt;/<wbr>b&gt;</td>",
            // The exact value in the attribute; on one line where it shows.
            "data-field=\"failed_projects.0.reason\" data-value=\"hostile_answer: listing &quot;x \
             &lt;script&gt;&quot;\nERROR forged\">hostile_answer: listing &quot;x &lt;script&gt;&quot;\\nERROR forged</td>",
            "data-field=\"failed_projects.0.failed_at\" data-value=\"2026-12-01T10:00:00Z\">\
             <time datetime=\"2026-12-01T10:00:00Z\">2026-12-01 10:00:00</time>",
            "data-field=\"failed_projects.2.reason\"><em>not recorded</em>",
            "data-field=\"failed_not_listed\" data-value=\"0\"",
            "cannot help until it has a route",
        ] {
            assert!(html.contains(marker), "no {marker}");
        }
        assert!(!html.contains("<b>Hostile"));
        assert!(!html.contains("<script"));

        assert!(html.contains("All listed (<span data-field=\"failed_not_listed\" data-value=\"0\">0</span> left out)."));
        assert!(html.contains("routes rows); <code>run --retry-failed</code> cannot help"));

        let mut none = sample::report();
        none.failed_by_cause.clear();
        none.failed_projects.clear();
        let html = page(&none, at());
        assert!(html.contains(
            "<p>No project failed.</p><span hidden data-field=\"failed_not_listed\" data-value=\"0\"></span>"
        ));
        assert!(!html.contains("Most recent first"));
    }

    #[test]
    fn a_database_without_damage_renders_a_page_that_says_so() {
        let mut report = sample::report();
        report.top_missing.clear();
        report.top_by_bytes.clear();
        report.namespaces.clear();
        report.namespaces_by_bytes.clear();
        report.by_month.clear();
        for bucket in &mut report.distribution {
            bucket.projects = 0;
            bucket.missing = 0;
        }
        let html = page(&report, at());
        assert!(html.contains("No namespace listed"));
        assert!(html.contains("No missing repository with a creation time recorded."));
        assert_eq!(html.matches("class=\"none\">None.</td>").count(), 2);
        assert!(html.ends_with("</html>\n"));
    }

    #[test]
    fn months_run_continuously_through_gaps() {
        let axis = continuous_months(&[("2023-11", 3, 30), ("2024-02", 5, 50)]);
        let labels: Vec<&str> = axis.iter().map(|m| m.0.as_str()).collect();
        assert_eq!(labels, vec!["2023-11", "2023-12", "2024-01", "2024-02"]);
        assert_eq!(axis[1].1, 0);
        assert_eq!(axis[3], ("2024-02".to_string(), 5, 50));
        assert!(continuous_months(&[]).is_empty());
        let ticks = month_ticks(&axis);
        assert_eq!(
            ticks.iter().flatten().count(),
            4,
            "few months: each labelled"
        );
        let long: Vec<(String, i64, i64)> = (0..40)
            .map(|i| {
                (
                    format!("{}-{:02}", 2020 + (i + 4) / 12, (i + 4) % 12 + 1),
                    1,
                    1,
                )
            })
            .collect();
        let ticks: Vec<String> = month_ticks(&long).into_iter().flatten().collect();
        assert_eq!(
            ticks,
            vec!["2020-07", "2021-01", "2021-07", "2022-01", "2022-07", "2023-01", "2023-07"]
        );
    }
}
