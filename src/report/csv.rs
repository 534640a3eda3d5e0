//! The report as CSV: one block per list, separated by a blank line, always in the same order and
//! each with its header line, empty or not (docs/operations.md, "Report fields"):
//! totals (`metric,value`, ending with `failed_not_listed`), `top_missing`, `namespaces`,
//! `top_by_bytes`, `namespaces_by_bytes`, `by_month`, `distribution`, `failed_by_cause`,
//! `failed_projects`. Bytes are exact.

use super::Report;
use crate::db::failures::one_line;
use crate::db::report::{MissingProject, NamespaceTotals};
use crate::format::{csv_blocks, CsvBlock};

pub const PROJECT_HEADER: &str = "project_id,full_path,missing_count,missing_itemised,missing_bytes,missing_sizes_unknown,shown_empty_by_gitlab";
pub const NAMESPACE_HEADER: &str = "namespace,analysed,completed,failed,projects_with_missing,missing,missing_bytes,missing_sizes_unknown";
pub const MONTH_HEADER: &str = "month,missing,missing_bytes,missing_sizes_unknown";
pub const BUCKET_HEADER: &str = "bucket,projects,missing";
pub const CAUSE_HEADER: &str = "cause,projects,advice";
pub const FAILED_HEADER: &str = "project_id,full_path,cause,reason,failed_at";

pub fn report(report: &Report) -> String {
    let t = &report.totals;
    let mut totals = CsvBlock::new("metric,value");
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
        totals.row([name.to_string(), value.to_string()]);
    }
    let mut months = CsvBlock::new(MONTH_HEADER);
    for m in &report.by_month {
        months.row([
            m.month.clone(),
            m.missing.to_string(),
            m.missing_bytes.to_string(),
            m.missing_sizes_unknown.to_string(),
        ]);
    }
    let mut buckets = CsvBlock::new(BUCKET_HEADER);
    for b in &report.distribution {
        buckets.row([
            b.bucket.to_string(),
            b.projects.to_string(),
            b.missing.to_string(),
        ]);
    }
    let mut causes = CsvBlock::new(CAUSE_HEADER);
    for c in &report.failed_by_cause {
        causes.row([
            c.cause.clone().unwrap_or_default(),
            c.projects.to_string(),
            c.advice.to_string(),
        ]);
    }
    let mut failed = CsvBlock::new(FAILED_HEADER);
    for f in &report.failed_projects {
        failed.row([
            f.project_id.to_string(),
            f.full_path.clone().unwrap_or_default(),
            f.cause.clone().unwrap_or_default(),
            // One line, as every row of a block: a blank line ends the block.
            one_line(f.reason.as_deref().unwrap_or("")),
            f.failed_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ]);
    }
    csv_blocks([
        totals,
        projects(&report.top_missing),
        namespaces(&report.namespaces),
        projects(&report.top_by_bytes),
        namespaces(&report.namespaces_by_bytes),
        months,
        buckets,
        causes,
        failed,
    ])
}

fn projects(list: &[MissingProject]) -> CsvBlock {
    let mut block = CsvBlock::new(PROJECT_HEADER);
    for p in list {
        block.row([
            p.project_id.to_string(),
            p.full_path.clone().unwrap_or_default(),
            p.missing_count.to_string(),
            p.missing_itemised.to_string(),
            p.missing_bytes.to_string(),
            p.missing_sizes_unknown.to_string(),
            p.shown_empty_by_gitlab.to_string(),
        ]);
    }
    block
}

fn namespaces(list: &[NamespaceTotals]) -> CsvBlock {
    let mut block = CsvBlock::new(NAMESPACE_HEADER);
    for n in list {
        block.row([
            n.namespace.clone(),
            n.analysed.to_string(),
            n.completed.to_string(),
            n.failed.to_string(),
            n.projects_with_missing.to_string(),
            n.missing.to_string(),
            n.missing_bytes.to_string(),
            n.missing_sizes_unknown.to_string(),
        ]);
    }
    block
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

    #[test]
    fn a_path_or_reason_a_spreadsheet_would_run_is_neutralised() {
        let mut sample = sample::report();
        sample.top_missing[0].full_path = Some("=HYPERLINK(\"http://evil\")".into());
        sample.failed_projects[0].reason = Some("@SUM(1)".into());
        let text = report(&sample);
        assert!(
            text.contains("\n4,\"'=HYPERLINK(\"\"http://evil\"\")\",1200,"),
            "{text}"
        );
        assert!(text.contains(",'@SUM(1),"), "{text}");
        assert!(!text.contains(",=") && !text.contains(",@"), "{text}");
    }
}
