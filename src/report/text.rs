//! The report as a table for people: the totals (bytes exact, and in binary units), then each
//! list under its own heading, sizes in binary units.

use std::fmt::Write as _;

use super::units;
use super::{FailedCause, Report};
use crate::db::failures::one_line;
use crate::db::report::{FailedProject, MissingProject, NamespaceTotals};

/// Marks a project GitLab shows as using no registry storage.
const SHOWN_EMPTY: &str = " *";

pub fn report(report: &Report) -> String {
    let t = &report.totals;
    let mut out = String::new();
    let line = |out: &mut String, label: &str, value: i64| {
        let _ = writeln!(out, "{label:<30}{value:>12}");
    };
    let bytes = |out: &mut String, label: &str, value: i64| {
        let _ = writeln!(out, "{label:<30}{value:>12}  ({})", units::bytes(value));
    };
    line(&mut out, "Projects", t.projects);
    line(&mut out, "Analysed", t.analysed);
    line(&mut out, "  completed", t.completed);
    line(&mut out, "  failed", t.failed);
    line(&mut out, "Pending", t.pending);
    line(
        &mut out,
        "Projects with missing > 0",
        t.projects_with_missing,
    );
    line(&mut out, "Missing repositories in all", t.missing);
    if t.unaddressable > 0 {
        let _ = writeln!(
            out,
            "Paths the registry cannot hold {:>11}  (completed with 0, nothing asked)",
            t.unaddressable
        );
    }
    line(
        &mut out,
        "Missing repositories itemised",
        t.missing_itemised,
    );
    bytes(&mut out, "  known sizes in all, bytes", t.missing_bytes);
    line(&mut out, "  size unknown", t.missing_sizes_unknown);
    let _ = writeln!(
        out,
        "{:<30}{:>12}  (counted without their repositories: still to itemise; `run` lists them again)",
        "Projects not itemised", t.projects_not_itemised
    );
    let _ = writeln!(
        out,
        "{:<30}{:>12}  (no container_repositories row: GitLab's usage quota reads 0)",
        "Projects GitLab shows empty", t.projects_shown_empty_by_gitlab
    );
    bytes(
        &mut out,
        "  their missing bytes",
        t.bytes_shown_empty_by_gitlab,
    );

    if report.top_missing.is_empty() {
        let _ = writeln!(out, "\nNo project has missing repositories.");
    } else {
        projects(
            &mut out,
            &format!(
                "Top {} projects by missing repositories",
                report.top_missing.len()
            ),
            &report.top_missing,
        );
    }
    if !report.top_by_bytes.is_empty() {
        projects(
            &mut out,
            &format!(
                "Top {} projects by missing bytes",
                report.top_by_bytes.len()
            ),
            &report.top_by_bytes,
        );
    }
    if report
        .top_missing
        .iter()
        .chain(&report.top_by_bytes)
        .any(|p| p.shown_empty_by_gitlab)
    {
        let _ = writeln!(
            out,
            "\n{} no container_repositories row: GitLab shows the project as using no registry storage",
            SHOWN_EMPTY.trim()
        );
    }
    namespaces(
        &mut out,
        "Top-level namespaces by missing repositories",
        &report.namespaces,
    );
    namespaces(
        &mut out,
        "Top-level namespaces by missing bytes",
        &report.namespaces_by_bytes,
    );
    if !report.by_month.is_empty() {
        let _ = writeln!(
            out,
            "\nMissing repositories by the month the registry created them (UTC)"
        );
        let _ = writeln!(
            out,
            "{:<8}  {:>8}  {:>10}  {:>12}",
            "MONTH", "MISSING", "BYTES", "SIZE UNKNOWN"
        );
        for m in &report.by_month {
            let _ = writeln!(
                out,
                "{:<8}  {:>8}  {:>10}  {:>12}",
                m.month,
                m.missing,
                units::bytes(m.missing_bytes),
                m.missing_sizes_unknown
            );
        }
    }
    if report.distribution.iter().any(|b| b.projects > 0) {
        let _ = writeln!(out, "\nProjects by how many repositories they miss");
        let _ = writeln!(out, "{:<8}  {:>8}  {:>8}", "MISSING", "PROJECTS", "IN ALL");
        for b in &report.distribution {
            let _ = writeln!(out, "{:<8}  {:>8}  {:>8}", b.bucket, b.projects, b.missing);
        }
    }
    failed(&mut out, report);
    let _ = writeln!(
        out,
        "\nSizes: binary units (1 KiB = 1024 bytes); each repository deduplicated on its own."
    );
    out
}

/// What the table shows for a failed project without a recorded cause.
pub const NOT_RECORDED: &str = "(not recorded)";

/// The failed projects: how many per cause and what to do, then the most recent ones with why.
fn failed(out: &mut String, report: &Report) {
    if report.failed_by_cause.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nFailed projects by cause, and what to do");
    let _ = writeln!(out, "{:>8}  {:<21}  WHAT TO DO", "PROJECTS", "CAUSE");
    for FailedCause {
        cause,
        projects,
        advice,
    } in &report.failed_by_cause
    {
        let _ = writeln!(
            out,
            "{projects:>8}  {:<21}  {advice}",
            cause.as_deref().map_or(NOT_RECORDED.to_string(), one_line)
        );
    }
    let listed = report.failed_projects.len();
    let _ = write!(out, "\nFailed projects, most recent first");
    if report.failed_not_listed > 0 {
        let _ = write!(
            out,
            " ({listed} of {}; --top N lists more)",
            listed as i64 + report.failed_not_listed
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:>12}  {:<20}  {:<21}  FULL PATH",
        "PROJECT ID", "FAILED AT", "CAUSE"
    );
    for FailedProject {
        project_id,
        full_path,
        cause,
        reason,
        failed_at,
    } in &report.failed_projects
    {
        let _ = writeln!(
            out,
            "{project_id:>12}  {:<20}  {:<21}  {}",
            failed_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            cause.as_deref().map_or(NOT_RECORDED.to_string(), one_line),
            full_path
                .as_deref()
                .map_or("(no route)".to_string(), one_line),
        );
        if let Some(reason) = reason {
            let _ = writeln!(out, "{:>12}  why: {}", "", one_line(reason));
        }
    }
}

fn projects(out: &mut String, heading: &str, list: &[MissingProject]) {
    let _ = writeln!(out, "\n{heading}");
    let _ = writeln!(
        out,
        "{:>12}  {:>8}  {:>8}  {:>10}  {:>12}  FULL PATH",
        "PROJECT ID", "MISSING", "ITEMISED", "BYTES", "SIZE UNKNOWN"
    );
    for p in list {
        let _ = writeln!(
            out,
            "{:>12}  {:>8}  {:>8}  {:>10}  {:>12}  {}{}",
            p.project_id,
            p.missing_count,
            p.missing_itemised,
            units::bytes(p.missing_bytes),
            p.missing_sizes_unknown,
            p.full_path.as_deref().unwrap_or("(no route)"),
            if p.shown_empty_by_gitlab {
                SHOWN_EMPTY
            } else {
                ""
            }
        );
    }
}

fn namespaces(out: &mut String, heading: &str, list: &[NamespaceTotals]) {
    if list.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n{heading}");
    let _ = writeln!(
        out,
        "{:>10}  {:>10}  {:>8}  {:>12}  {:>8}  {:>10}  {:>12}  NAMESPACE",
        "ANALYSED", "COMPLETED", "FAILED", "WITH MISSING", "MISSING", "BYTES", "SIZE UNKNOWN"
    );
    for n in list {
        let _ = writeln!(
            out,
            "{:>10}  {:>10}  {:>8}  {:>12}  {:>8}  {:>10}  {:>12}  {}",
            n.analysed,
            n.completed,
            n.failed,
            n.projects_with_missing,
            n.missing,
            units::bytes(n.missing_bytes),
            n.missing_sizes_unknown,
            n.namespace
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::sample;

    #[test]
    fn the_table_shows_exact_bytes_in_the_totals_and_marks_projects_shown_empty() {
        let text = super::report(&sample::report());
        assert!(
            text.contains("  known sizes in all, bytes     5368709127  (5.00 GiB)"),
            "{text}"
        );
        assert!(text.contains("Top 2 projects by missing repositories"));
        assert!(text.contains("Top 1 projects by missing bytes"));
        assert!(text.contains("Acme/Big <Images> *\n"), "{text}");
        assert!(text.contains("(no route)\n"), "{text}");
        assert!(
            text.contains("unknown          7         0 B             1"),
            "{text}"
        );
        assert!(text.contains(">1000            5        50"), "{text}");
    }

    #[test]
    fn failed_projects_are_named_with_why_and_what_to_do_on_lines_of_their_own() {
        let text = super::report(&sample::report());
        assert!(
            text.contains("\nFailed projects by cause, and what to do\n"),
            "{text}"
        );
        assert!(
            text.contains("       1  no_route               the project has no route"),
            "{text}"
        );
        assert!(
            text.contains("       1  (not recorded)         reason not recorded"),
            "{text}"
        );
        assert!(
            text.contains("\nFailed projects, most recent first\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "           9  2026-12-01T10:00:00Z  hostile_answer         Acme/<b>Hostile</b>\n\
                 \x20             why: hostile_answer: listing \"x <script>\"\\nERROR forged\n"
            ),
            "{text}"
        );
        assert!(!text.contains("\nERROR forged"), "no forged line: {text}");
        assert!(text
            .contains("          11  2026-12-01T10:00:00Z  no_route               (no route)\n"));
        // Without a recorded reason, no `why` line.
        assert!(
            text.contains("(not recorded)         Acme/Old\n\nSizes"),
            "{text}"
        );

        let mut cut = sample::report();
        cut.failed_projects.truncate(1);
        cut.failed_not_listed = 2;
        let text = super::report(&cut);
        assert!(
            text.contains("Failed projects, most recent first (1 of 3; --top N lists more)\n"),
            "{text}"
        );
        cut.failed_by_cause.clear();
        cut.failed_projects.clear();
        cut.failed_not_listed = 0;
        assert!(!super::report(&cut).contains("Failed projects"));
    }

    #[test]
    fn a_report_without_damage_says_so() {
        let mut report = sample::report();
        report.top_missing.clear();
        report.top_by_bytes.clear();
        report.by_month.clear();
        let text = super::report(&report);
        assert!(text.contains("No project has missing repositories."));
        assert!(!text.contains("by missing bytes\n  PROJECT"));
        assert!(!text.contains("MONTH"));
    }
}
