//! The report as CSV: one block per list, separated by a blank line, always in the same order and
//! each with its header line, empty or not (docs/operations.md, "Report fields"):
//! totals (`metric,value`, ending with `failed_not_listed`), `top_missing`, `namespaces`,
//! `top_by_bytes`, `namespaces_by_bytes`, `by_month`, `distribution`, `failed_by_cause`,
//! `failed_projects`. Bytes are exact.

use std::fmt::Write as _;

use super::Report;
use crate::db::failures::one_line;
use crate::db::report::{MissingProject, NamespaceTotals};
use crate::format::csv_field;

pub const PROJECT_HEADER: &str = "project_id,full_path,missing_count,missing_itemised,missing_bytes,missing_sizes_unknown,shown_empty_by_gitlab";
pub const NAMESPACE_HEADER: &str = "namespace,analysed,completed,failed,projects_with_missing,missing,missing_bytes,missing_sizes_unknown";
pub const MONTH_HEADER: &str = "month,missing,missing_bytes,missing_sizes_unknown";
pub const BUCKET_HEADER: &str = "bucket,projects,missing";
pub const CAUSE_HEADER: &str = "cause,projects,advice";
pub const FAILED_HEADER: &str = "project_id,full_path,cause,reason,failed_at";

pub fn report(report: &Report) -> String {
    let t = &report.totals;
    let mut out = String::from("metric,value\n");
    for (name, value) in [
        ("projects", t.projects),
        ("analysed", t.analysed),
        ("completed", t.completed),
        ("failed", t.failed),
        ("pending", t.pending),
        ("projects_with_missing", t.projects_with_missing),
        ("missing", t.missing),
        ("unaddressable", t.unaddressable),
        ("missing_itemised", t.missing_itemised),
        ("missing_bytes", t.missing_bytes),
        ("missing_sizes_unknown", t.missing_sizes_unknown),
        ("projects_not_itemised", t.projects_not_itemised),
        (
            "projects_shown_empty_by_gitlab",
            t.projects_shown_empty_by_gitlab,
        ),
        ("bytes_shown_empty_by_gitlab", t.bytes_shown_empty_by_gitlab),
        // Not a total: how many failed projects the block below leaves out.
        ("failed_not_listed", report.failed_not_listed),
    ] {
        let _ = writeln!(out, "{name},{value}");
    }
    projects(&mut out, &report.top_missing);
    namespaces(&mut out, &report.namespaces);
    projects(&mut out, &report.top_by_bytes);
    namespaces(&mut out, &report.namespaces_by_bytes);
    let _ = writeln!(out, "\n{MONTH_HEADER}");
    for m in &report.by_month {
        let _ = writeln!(
            out,
            "{},{},{},{}",
            m.month, m.missing, m.missing_bytes, m.missing_sizes_unknown
        );
    }
    let _ = writeln!(out, "\n{BUCKET_HEADER}");
    for b in &report.distribution {
        let _ = writeln!(out, "{},{},{}", b.bucket, b.projects, b.missing);
    }
    let _ = writeln!(out, "\n{CAUSE_HEADER}");
    for c in &report.failed_by_cause {
        let _ = writeln!(
            out,
            "{},{},{}",
            csv_field(c.cause.as_deref().unwrap_or("")),
            c.projects,
            csv_field(c.advice)
        );
    }
    let _ = writeln!(out, "\n{FAILED_HEADER}");
    for f in &report.failed_projects {
        let _ = writeln!(
            out,
            "{},{},{},{},{}",
            f.project_id,
            csv_field(f.full_path.as_deref().unwrap_or("")),
            csv_field(f.cause.as_deref().unwrap_or("")),
            // One line, as every row of a block: a blank line ends the block.
            csv_field(&one_line(f.reason.as_deref().unwrap_or(""))),
            f.failed_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
    }
    out
}

fn projects(out: &mut String, list: &[MissingProject]) {
    let _ = writeln!(out, "\n{PROJECT_HEADER}");
    for p in list {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{}",
            p.project_id,
            csv_field(p.full_path.as_deref().unwrap_or("")),
            p.missing_count,
            p.missing_itemised,
            p.missing_bytes,
            p.missing_sizes_unknown,
            p.shown_empty_by_gitlab
        );
    }
}

fn namespaces(out: &mut String, list: &[NamespaceTotals]) {
    let _ = writeln!(out, "\n{NAMESPACE_HEADER}");
    for n in list {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{}",
            csv_field(&n.namespace),
            n.analysed,
            n.completed,
            n.failed,
            n.projects_with_missing,
            n.missing,
            n.missing_bytes,
            n.missing_sizes_unknown
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::sample;
    use super::*;

    #[test]
    fn every_block_is_there_in_order_with_its_header() {
        let text = report(&sample::report());
        let blocks: Vec<&str> = text.split("\n\n").collect();
        let headers: Vec<&str> = blocks
            .iter()
            .map(|b| b.lines().next().unwrap_or_default())
            .collect();
        assert_eq!(
            headers,
            vec![
                "metric,value",
                PROJECT_HEADER,
                NAMESPACE_HEADER,
                PROJECT_HEADER,
                NAMESPACE_HEADER,
                MONTH_HEADER,
                BUCKET_HEADER,
                CAUSE_HEADER,
                FAILED_HEADER
            ]
        );
        assert!(blocks[0].contains("\nmissing_bytes,5368709127\n"));
        assert!(blocks[0].ends_with("\nfailed_not_listed,0"));
        assert!(blocks[1]
            .contains("\n4,Acme/Big <Images>,1200,1200,4294967296,1,true\n7,,10,10,0,1,false"));
        assert!(blocks[6].ends_with(">1000,5,50"));
        assert!(blocks[7].contains("\nno_route,1,the project has no route"));
        assert!(blocks[7].contains("\n,1,\"reason not recorded (GitLab's own worker"));
        assert!(
            blocks[8].contains(
                "\n9,Acme/<b>Hostile</b>,hostile_answer,\"hostile_answer: listing \"\"x <script>\"\"\\nERROR forged\",2026-12-01T10:00:00Z\n"
            ),
            "{}",
            blocks[8]
        );
        assert!(blocks[8].ends_with("\n12,Acme/Old,,,2026-12-01T10:00:00Z\n"));
    }
}
