//! The projects: how many miss how many repositories, and the ones missing most, by count and by
//! bytes.

use maud::{html, Markup};

use super::super::svg::{self, Bar, Chart, Scale};
use super::super::{units, Report};
use super::{bytes_cell, columns, count_cell, panel, project_path};
use crate::db::report::MissingProject;

pub(super) fn distribution(report: &Report) -> Markup {
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
    let chart = Chart {
        title: "Projects by missing repositories",
        description: "How many projects miss 1, 2 to 5, 6 to 20, 21 to 100, 101 to 1000, and more \
                      than 1000 repositories.",
        class: "count",
    };
    let body = html! {
        div.pair {
            figure { (svg::columns(&chart, &bars, Scale::Count)) }
            div.scroll {
                table {
                    caption { "Projects by missing repositories" }
                    (columns(&[
                        ("Missing per project", false),
                        ("Projects", true),
                        ("Missing in all", true),
                    ]))
                    tbody {
                        @for (i, b) in report.distribution.iter().enumerate() {
                            tr {
                                th scope="row" data-field={ "distribution." (i) ".bucket" }
                                    data-value=(b.bucket) { (b.bucket.replace('-', "–")) }
                                (count_cell(&format!("distribution.{i}.projects"), b.projects))
                                (count_cell(&format!("distribution.{i}.missing"), b.missing))
                            }
                        }
                    }
                }
            }
        }
    };
    panel(
        "distribution",
        "Projects by how many repositories they miss",
        html! { "Completed projects with at least one missing repository, by how many they miss." },
        body,
    )
}

pub(super) fn projects(report: &Report) -> Markup {
    let lead = html! {
        "A project whose usage quota " em { "shows 0" } " has no "
        code { "container_repositories" } " row at all: GitLab shows it as using no registry \
         storage, its missing bytes included."
    };
    let body = html! {
        (table("By missing repositories", "top_missing", &report.top_missing))
        (table("By missing bytes", "top_by_bytes", &report.top_by_bytes))
    };
    panel("projects", "Projects missing most", lead, body)
}

/// One ranking of projects, its figures under `key`.
fn table(caption: &str, key: &str, list: &[MissingProject]) -> Markup {
    html! {
        div.scroll {
            table.projects {
                caption { (caption) }
                (columns(&[
                    ("Project ID", true),
                    ("Full path", false),
                    ("Missing", true),
                    ("Itemised", true),
                    ("Bytes", true),
                    ("Size unknown", true),
                    ("GitLab's usage quota", false),
                ]))
                tbody {
                    @if list.is_empty() {
                        tr { td colspan="7" class="none" { "None." } }
                    }
                    @for (i, p) in list.iter().enumerate() {
                        @let at = |name: &str| format!("{key}.{i}.{name}");
                        tr {
                            td.num data-field=(at("project_id")) data-value=(p.project_id) {
                                (p.project_id)
                            }
                            td.path data-field=(at("full_path"))
                                data-value=[p.full_path.as_deref()] {
                                (project_path(p.full_path.as_deref()))
                            }
                            (count_cell(&at("missing_count"), i64::from(p.missing_count)))
                            (count_cell(&at("missing_itemised"), p.missing_itemised))
                            (bytes_cell(&at("missing_bytes"), p.missing_bytes))
                            (count_cell(&at("missing_sizes_unknown"), p.missing_sizes_unknown))
                            td data-field=(at("shown_empty_by_gitlab"))
                                data-value=(p.shown_empty_by_gitlab) {
                                @if p.shown_empty_by_gitlab {
                                    span.tag { "shows 0" }
                                } @else {
                                    "counts them"
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
