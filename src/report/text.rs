//! The report as a table for people: the totals (bytes exact, and in binary units), then each
//! list under its own heading, sizes in binary units.

use std::fmt::Write as _;

use super::units;
use super::Report;
use crate::db::report::{MissingProject, NamespaceTotals};

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
    let _ = writeln!(
        out,
        "\nSizes: binary units (1 KiB = 1024 bytes); each repository deduplicated on its own."
    );
    out
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
