//! The page's summary: the cards at its top, the analysis' progress, and every total with its
//! name in the JSON.

use maud::{html, Markup};

use super::super::svg::{self, Chart, Segment};
use super::super::{units, Report};
use super::{count_cell, figure, panel};

fn card(class: &str, label: &str, big: Markup, sub: Markup) -> Markup {
    html! {
        div class={ "card " (class) } {
            p.label { (label) }
            p.big { (big) }
            p.sub { (sub) }
        }
    }
}

/// The totals' figure `name` in running text.
fn total(name: &str, n: i64) -> Markup {
    figure(&format!("totals.{name}"), n, &units::grouped(n))
}

pub(super) fn cards(report: &Report) -> Markup {
    let t = &report.totals;
    let percent = if t.projects > 0 {
        t.analysed as f64 * 100.0 / t.projects as f64
    } else {
        100.0
    };
    html! {
        section.cards aria-label="Summary" {
            (card(
                "count",
                "Missing repositories",
                total("missing", t.missing),
                html! { "in " (total("projects_with_missing", t.projects_with_missing)) " projects" },
            ))
            (card(
                "bytes",
                "Missing bytes",
                figure("totals.missing_bytes", t.missing_bytes, &units::bytes(t.missing_bytes)),
                html! {
                    (units::grouped(t.missing_bytes)) " bytes; "
                    (total("missing_sizes_unknown", t.missing_sizes_unknown)) " sizes unknown"
                },
            ))
            (card(
                "empty",
                "Shown as empty by GitLab",
                html! {
                    (total("projects_shown_empty_by_gitlab", t.projects_shown_empty_by_gitlab))
                    " " small { "projects" }
                },
                html! {
                    (figure(
                        "totals.bytes_shown_empty_by_gitlab",
                        t.bytes_shown_empty_by_gitlab,
                        &units::bytes(t.bytes_shown_empty_by_gitlab),
                    ))
                    " missing, left out of their usage quota ("
                    (units::grouped(t.bytes_shown_empty_by_gitlab)) " bytes)"
                },
            ))
            (card(
                "progress",
                "Projects analysed",
                html! { (format!("{percent:.1}%")) },
                html! {
                    (total("analysed", t.analysed)) " of " (total("projects", t.projects))
                    " projects; " (total("pending", t.pending)) " pending"
                },
            ))
        }
    }
}

pub(super) fn progress(report: &Report) -> Markup {
    let t = &report.totals;
    let ongoing = (t.analysed - t.completed - t.failed).max(0);
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
    let chart = Chart {
        title: "Analysis progress",
        description: &description,
        class: "progress",
    };
    let share = |n: i64| {
        if t.projects > 0 {
            format!("{:.1}%", n as f64 * 100.0 / t.projects as f64)
        } else {
            "–".to_string()
        }
    };
    let states = [
        ("analysed", "Analysed", t.analysed),
        ("completed", "Completed", t.completed),
        ("failed", "Failed", t.failed),
        ("pending", "Pending", t.pending),
        ("projects", "All projects", t.projects),
    ];
    let table = html! {
        div.scroll {
            table.narrow {
                caption { "Projects by state" }
                (super::columns(&[("State", false), ("Projects", true), ("Share", true)]))
                tbody {
                    @for (name, label, n) in states {
                        @if name == "pending" && ongoing > 0 {
                            tr {
                                th scope="row" {
                                    span.swatch.ongoing {} "Ongoing (GitLab's worker)"
                                }
                                td.num { (units::grouped(ongoing)) }
                                td.num { (share(ongoing)) }
                            }
                        }
                        tr {
                            th scope="row" {
                                @if !matches!(name, "projects" | "analysed") {
                                    span class={ "swatch " (name) } {}
                                }
                                // The failed projects are named below, each with why.
                                @if name == "failed" && n > 0 {
                                    a href="#failed" { (label) }
                                } @else {
                                    (label)
                                }
                            }
                            (count_cell(&format!("totals.{name}"), n))
                            td.num { (share(n)) }
                        }
                    }
                }
            }
        }
    };
    panel(
        "progress",
        "Analysis progress",
        html! { "Every project gets one row in GitLab's tracking table once analysed." },
        html! {
            figure.wide { (svg::stacked(&chart, &segments)) }
            (table)
        },
    )
}

pub(super) fn totals(report: &Report) -> Markup {
    let t = &report.totals;
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
    panel(
        "totals",
        "Totals",
        html! {
            "Every figure of the report's totals, with its name in " code { "--format json" }
            " and " code { "csv" } "."
        },
        html! {
            div.scroll {
                table.totals {
                    caption.sr { "Totals" }
                    (super::columns(&[("Figure", false), ("Value", true), ("Field", false)]))
                    tbody {
                        @for (name, label, value, is_bytes) in rows {
                            tr {
                                th scope="row" { (label) }
                                td.num data-field={ "totals." (name) } data-value=(value) {
                                    @if is_bytes {
                                        (units::bytes(value)) " "
                                        span.exact { "(" (units::grouped(value)) " bytes)" }
                                    } @else {
                                        (units::grouped(value))
                                    }
                                }
                                td { code { (name) } }
                            }
                        }
                    }
                }
            }
        },
    )
}
