//! The top-level namespaces, ranked by missing repositories and by missing bytes: a bar chart of
//! each ranking, then both as tables.

use maud::{html, Markup};

use super::super::svg::{self, Bar, Chart};
use super::super::{units, Report};
use super::{bytes_cell, columns, count_cell, panel};
use crate::db::report::NamespaceTotals;

pub(super) fn namespaces(report: &Report) -> Markup {
    let lead = html! {
        "Groups and users at the top of the projects' paths, ranked by missing repositories and by \
         missing bytes."
    };
    let body = if report.namespaces.is_empty() && report.namespaces_by_bytes.is_empty() {
        html! {
            p { "No namespace listed (" code { "--namespaces 0" } ", or nothing analysed)." }
        }
    } else {
        html! {
            div.pair {
                (chart(
                    &report.namespaces,
                    false,
                    "Missing repositories by top-level namespace",
                    "count",
                ))
                (chart(
                    &report.namespaces_by_bytes,
                    true,
                    "Missing bytes by top-level namespace",
                    "bytes",
                ))
            }
            (table("Ranked by missing repositories", "namespaces", &report.namespaces))
            (table("Ranked by missing bytes", "namespaces_by_bytes", &report.namespaces_by_bytes))
        }
    };
    panel("namespaces", "Top-level namespaces", lead, body)
}

/// One ranking as bars, by bytes or by count.
fn chart(list: &[NamespaceTotals], by_bytes: bool, title: &str, class: &str) -> Markup {
    let description = format!(
        "{} namespaces, most {} first.",
        list.len(),
        if by_bytes { "bytes" } else { "repositories" }
    );
    let bars: Vec<Bar> = list
        .iter()
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
        .collect();
    let chart = Chart {
        title,
        description: &description,
        class,
    };
    html! {
        figure {
            figcaption { (title) }
            (svg::bars(&chart, &bars))
        }
    }
}

/// One ranking as a table, its figures under `key`.
fn table(caption: &str, key: &str, list: &[NamespaceTotals]) -> Markup {
    html! {
        div.scroll {
            table {
                caption { (caption) }
                (columns(&[
                    ("Namespace", false),
                    ("Missing", true),
                    ("Bytes", true),
                    ("Size unknown", true),
                    ("Projects with missing", true),
                    ("Analysed", true),
                    ("Completed", true),
                    ("Failed", true),
                ]))
                tbody {
                    @for (i, n) in list.iter().enumerate() {
                        @let at = |name: &str| format!("{key}.{i}.{name}");
                        tr {
                            th scope="row" class="path" data-field=(at("namespace"))
                                data-value=(n.namespace) { (n.namespace) }
                            (count_cell(&at("missing"), n.missing))
                            (bytes_cell(&at("missing_bytes"), n.missing_bytes))
                            (count_cell(&at("missing_sizes_unknown"), n.missing_sizes_unknown))
                            (count_cell(&at("projects_with_missing"), n.projects_with_missing))
                            (count_cell(&at("analysed"), n.analysed))
                            (count_cell(&at("completed"), n.completed))
                            (count_cell(&at("failed"), n.failed))
                        }
                    }
                }
            }
        }
    }
}
