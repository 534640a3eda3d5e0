//! The failed projects: how many per cause and what to do, then the most recent ones with why.

use maud::{html, Markup};

use super::super::text::NOT_RECORDED;
use super::super::{units, Report};
use super::{columns, count_cell, figure, panel, project_path};
use crate::db::failures::one_line;

pub(super) fn failed(report: &Report) -> Markup {
    let lead = html! {
        "Projects whose analysis failed: GitLab's tracking table records them " code { "failed" }
        " with nothing counted. Why each failed is recorded with it; a project failed by GitLab's \
         own worker, or by an earlier release, has no reason recorded."
    };
    let not_listed = figure(
        "failed_not_listed",
        report.failed_not_listed,
        &units::grouped(report.failed_not_listed),
    );
    let body = if report.failed_by_cause.is_empty() && report.failed_projects.is_empty() {
        html! {
            p { "No project failed." }
            span hidden data-field="failed_not_listed" data-value=(report.failed_not_listed) {}
        }
    } else {
        html! {
            (by_cause(report))
            (most_recent(report))
            p.note {
                @if report.failed_not_listed > 0 {
                    (not_listed) " more not listed (" code { "--top N" } " lists more)."
                } @else {
                    "All listed (" (not_listed) " left out)."
                }
            }
        }
    };
    panel("failed", "Failed projects", lead, body)
}

/// A recorded cause as code, or that none was recorded.
fn cause(cause: Option<&str>) -> Markup {
    html! {
        @match cause {
            Some(word) => code { (word) },
            None => em { (NOT_RECORDED) },
        }
    }
}

fn by_cause(report: &Report) -> Markup {
    html! {
        div.scroll {
            table.causes {
                caption { "By cause, and what to do" }
                (columns(&[("Cause", false), ("Projects", true), ("What to do", false)]))
                tbody {
                    @for (i, c) in report.failed_by_cause.iter().enumerate() {
                        tr {
                            th scope="row" data-field={ "failed_by_cause." (i) ".cause" }
                                data-value=[c.cause.as_deref()] { (cause(c.cause.as_deref())) }
                            (count_cell(&format!("failed_by_cause.{i}.projects"), c.projects))
                            td.advice data-field={ "failed_by_cause." (i) ".advice" }
                                data-value=(c.advice) { (code_spans(c.advice)) }
                        }
                    }
                }
            }
        }
    }
}

fn most_recent(report: &Report) -> Markup {
    let listed = report.failed_projects.len() as i64;
    let all = listed + report.failed_not_listed;
    html! {
        div.scroll {
            table.failed {
                caption {
                    "Most recent first (" (units::grouped(listed)) " of " (units::grouped(all)) ")"
                }
                (columns(&[
                    ("Project ID", true),
                    ("Full path", false),
                    ("Cause", false),
                    ("Reason", false),
                    ("Failed at (UTC)", false),
                ]))
                tbody {
                    @if report.failed_projects.is_empty() {
                        tr { td colspan="5" class="none" { "None listed." } }
                    }
                    @for (i, f) in report.failed_projects.iter().enumerate() {
                        @let at = |name: &str| format!("failed_projects.{i}.{name}");
                        @let iso = f.failed_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                        tr {
                            td.num data-field=(at("project_id")) data-value=(f.project_id) {
                                (f.project_id)
                            }
                            td.path data-field=(at("full_path"))
                                data-value=[f.full_path.as_deref()] {
                                (project_path(f.full_path.as_deref()))
                            }
                            td data-field=(at("cause")) data-value=[f.cause.as_deref()] {
                                (cause(f.cause.as_deref()))
                            }
                            // The exact reason in the attribute; on one line where it shows.
                            td.reason data-field=(at("reason")) data-value=[f.reason.as_deref()] {
                                @match &f.reason {
                                    Some(reason) => (one_line(reason)),
                                    None => em { "not recorded" },
                                }
                            }
                            td data-field=(at("failed_at")) data-value=(iso) {
                                time datetime=(iso) { (f.failed_at.format("%Y-%m-%d %H:%M:%S")) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `text` with its `backquoted` spans as code.
fn code_spans(text: &str) -> Markup {
    html! {
        @for (i, part) in text.split('`').enumerate() {
            @if i % 2 == 1 { code { (part) } } @else { (part) }
        }
    }
}
