//! The report as one self-contained HTML page: no script, no external stylesheet, font or image,
//! so it opens on an air-gapped workstation and prints. Charts are inline SVG ([`super::svg`]),
//! each with a table of the same figures beside it; the layout collapses to one column on a narrow
//! screen, and `@media print` drops the colours behind the text and keeps rows and charts whole.
//!
//! Every figure of `--format json` is on the page in an element with `data-field` (its path in
//! the JSON, list indices as segments: `top_missing.0.missing_bytes`) and `data-value` (its exact
//! value; absent for `null`), so a program can check the page against the JSON. Bytes read in
//! binary units, with the exact figure in the element's `title` (and in full in the totals).
//!
//! The page is maud templates, one per section: [`summary`] (the cards, the progress and the
//! totals), [`failed`], [`namespaces`], [`months`], [`projects`] (how many each misses, and the
//! lists) and the notes below. maud escapes every text and attribute it splices; only the
//! stylesheet goes in as it is.

mod failed;
mod months;
mod namespaces;
mod projects;
mod summary;

use chrono::{DateTime, Utc};
use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::units;
use super::Report;

const STYLE: &str = include_str!("../report.css");

pub fn page(report: &Report, generated_at: DateTime<Utc>) -> String {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Missing container repositories: registry-repair report" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                (header(generated_at))
                main {
                    (summary::cards(report))
                    (summary::progress(report))
                    (failed::failed(report))
                    (namespaces::namespaces(report))
                    (months::months(report))
                    (projects::distribution(report))
                    (projects::projects(report))
                    (summary::totals(report))
                    (notes())
                }
            }
        }
    };
    // A file that ends its last line.
    let mut page = page.into_string();
    page.push('\n');
    page
}

fn header(generated_at: DateTime<Utc>) -> Markup {
    html! {
        header.page {
            h1 { "Missing container repositories" }
            p.meta {
                "registry-repair " (env!("CARGO_PKG_VERSION")) " report, generated "
                time datetime=(generated_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)) {
                    (generated_at.format("%Y-%m-%d %H:%M UTC"))
                }
                ". Sizes in binary units (1 KiB = 1,024 bytes; 1 GiB = 1,024 MiB); point at a size \
                 for its exact bytes."
            }
        }
    }
}

/// A section of the page: `id` for links to it, its title, a sentence saying what it shows, and
/// `body`.
fn panel(id: &str, title: &str, lead: Markup, body: Markup) -> Markup {
    html! {
        section.panel id=(id) aria-labelledby={ (id) "-title" } {
            h2 id={ (id) "-title" } { (title) }
            p.lead { (lead) }
            (body)
        }
    }
}

/// A table's header row: each column's name, and whether it holds numbers.
fn columns(columns: &[(&str, bool)]) -> Markup {
    html! {
        thead {
            tr {
                @for (name, numeric) in columns {
                    th scope="col" class=[numeric.then_some("num")] { (name) }
                }
            }
        }
    }
}

/// Bytes as people read them, the exact figure in the title.
fn bytes(bytes: i64) -> Markup {
    html! {
        span title={ (units::grouped(bytes)) " bytes" } { (units::bytes(bytes)) }
    }
}

/// A count in running text, holding `field`.
fn figure(field: &str, n: i64, shown: &str) -> Markup {
    html! { span data-field=(field) data-value=(n) { (shown) } }
}

/// A numeric cell holding `field`.
fn count_cell(field: &str, n: i64) -> Markup {
    html! { td.num data-field=(field) data-value=(n) { (units::grouped(n)) } }
}

fn bytes_cell(field: &str, n: i64) -> Markup {
    html! { td.num data-field=(field) data-value=(n) { (bytes(n)) } }
}

/// A project's path that a narrow screen may break after each `/`; a project without one says so.
fn project_path(path: Option<&str>) -> Markup {
    html! {
        @match path {
            Some(path) => {
                @for (i, part) in path.split('/').enumerate() {
                    @if i > 0 { "/" wbr; }
                    (part)
                }
            }
            None => em { "(no route)" },
        }
    }
}

fn notes() -> Markup {
    html! {
        section.panel id="notes" aria-labelledby="notes-title" {
            h2 id="notes-title" { "How to read these figures" }
            dl.notes {
                dt { "Bytes" }
                dd {
                    "The registry's deduplicated size of each missing repository on its own. \
                     Layers shared between repositories are counted once per repository, so the \
                     sum can exceed the storage they take together. A size the registry did not \
                     give (or that was not asked) is " em { "unknown" } " and adds nothing to the \
                     sums."
                }
                dt { "GitLab's usage quota" }
                dd {
                    "GitLab shows a project's registry usage as the registry's size of its whole \
                     path, missing repositories included, as long as the project has at least one "
                    code { "container_repositories" } " row. A project without any shows 0: its \
                     missing bytes are invisible in GitLab (" em { "shown as empty" } ")."
                }
                dt { "Itemised" }
                dd {
                    "Repositories recorded one by one by the analysis. Projects analysed by an \
                     earlier version or by GitLab's own worker have a count but no list ("
                    em { "not itemised" } "), and no bytes."
                }
                dt { "Restored" }
                dd {
                    "A recorded repository that has a " code { "container_repositories" }
                    " row again (restored by " code { "repair apply" } ", or by GitLab) no longer \
                     counts."
                }
            }
        }
    }
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
    fn paths_and_namespaces_holding_markup_are_text_everywhere() {
        let hostile = "Ev\"il&<script>";
        let escaped = "Ev&quot;il&amp;&lt;script&gt;";
        let mut report = sample::report();
        let path = format!("{hostile}/app");
        report.top_missing[0].full_path = Some(path.clone());
        report.top_by_bytes[0].full_path = Some(path.clone());
        report.failed_projects[0].full_path = Some(path);
        report.namespaces[0].namespace = hostile.into();
        report.namespaces_by_bytes[0].namespace = hostile.into();
        let html = page(&report, at());
        for marker in [
            // In the tables: the attribute holding the exact value, the cell the text.
            format!("data-field=\"namespaces.0.namespace\" data-value=\"{escaped}\">{escaped}</th>"),
            format!(
                "data-field=\"namespaces_by_bytes.0.namespace\" data-value=\"{escaped}\">{escaped}</th>"
            ),
            format!(
                "data-field=\"top_missing.0.full_path\" data-value=\"{escaped}/app\">{escaped}/<wbr>app</td>"
            ),
            format!("data-field=\"top_by_bytes.0.full_path\" data-value=\"{escaped}/app\">"),
            format!("data-field=\"failed_projects.0.full_path\" data-value=\"{escaped}/app\">"),
            // In the charts: each bar's title and label.
            format!("<title>{escaped}: 1,200</title><text class=\"label\" x=\"0\" y=\"16.0\">{escaped}</text>"),
            format!("<title>{escaped}: 4.00 GiB</title>"),
        ] {
            assert!(html.contains(&marker), "no {marker}");
        }
        // Nothing of it is markup, and no attribute ends early.
        assert!(!html.contains("<script"));
        assert!(!html.contains("Ev\""));
    }
}
