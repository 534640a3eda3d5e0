//! The damage in the report: exact sums of the recorded sizes, unknown sizes counted, projects
//! not itemised, the projects GitLab shows as empty, the rankings by count and by bytes (only
//! namespaces with something missing), the months, the distribution, the failed projects with why
//! and what to do; and the table, JSON, CSV and HTML page agreeing on every figure.

use super::fixture::{damaged, GIB, HOSTILE_REASON};
use super::parse::{self, Figures};

fn figure(figures: &Figures, path: &str) -> String {
    figures
        .get(path)
        .unwrap_or_else(|| panic!("no {path}"))
        .clone()
        .unwrap_or_else(|| "null".into())
}

/// The values of `field` along list `list`, in order.
fn column(figures: &Figures, list: &str, field: &str) -> Vec<String> {
    (0..)
        .map_while(|i| {
            figures
                .get(&format!("{list}.{i}.{field}"))
                .map(|v| v.clone().unwrap_or_else(|| "null".into()))
        })
        .collect()
}

#[actix_rt::test]
async fn the_damage_is_summed_exactly_and_every_format_shows_the_same_figures() {
    let world = damaged().await;
    let ids = world.ids;
    let json = world.report(&["--format", "json"]).await;
    json.assert_exit(0);
    let figures = parse::json(&json.stdout);

    let totals: Vec<(&str, i64)> = vec![
        ("projects", 11),
        ("analysed", 11),
        ("completed", 7),
        ("failed", 4),
        ("pending", 0),
        ("projects_with_missing", 5),
        ("missing", 10),
        ("unaddressable", 0),
        // web 2, deep 3, lonely 2; the restored one no longer counts.
        ("missing_itemised", 7),
        // 100 MiB + 1,000,001 + 3 GiB + 12,345 + 5 GiB.
        ("missing_bytes", 8_695_804_538),
        ("missing_sizes_unknown", 2),
        ("projects_not_itemised", 1),
        ("projects_shown_empty_by_gitlab", 2),
        // deep's 3 GiB + 12,345 and lonely's 5 GiB.
        ("bytes_shown_empty_by_gitlab", 8_589_946_937),
    ];
    for (name, want) in &totals {
        assert_eq!(
            figure(&figures, &format!("totals.{name}")),
            want.to_string(),
            "totals.{name}\n{}",
            json.stdout
        );
    }
    assert_eq!(
        8_695_804_538,
        (100 << 20) + 1_000_001 + 3 * GIB + 12_345 + 5 * GIB
    );

    let id = |ids: &[i64]| ids.iter().map(i64::to_string).collect::<Vec<_>>();
    assert_eq!(
        column(&figures, "top_missing", "project_id"),
        id(&[ids.deep, ids.web, ids.legacy, ids.lonely, ids.restored]),
        "most missing first, then by id"
    );
    assert_eq!(
        column(&figures, "top_missing", "missing_itemised"),
        ["3", "2", "0", "2", "0"]
    );
    assert_eq!(
        column(&figures, "top_missing", "missing_bytes"),
        ["3221237817", "105857601", "0", "5368709120", "0"]
    );
    assert_eq!(
        column(&figures, "top_missing", "missing_sizes_unknown"),
        ["1", "0", "0", "1", "0"]
    );
    assert_eq!(
        column(&figures, "top_missing", "shown_empty_by_gitlab"),
        ["true", "false", "false", "true", "false"]
    );
    assert_eq!(
        column(&figures, "top_by_bytes", "project_id"),
        id(&[ids.lonely, ids.deep, ids.web]),
        "most bytes first, only projects with known bytes"
    );
    // Only namespaces with something missing: not `Quiet-NS` (a project with nothing missing)
    // nor `(no route)` (a failed one); by bytes, only those with known bytes.
    assert_eq!(
        column(&figures, "namespaces", "namespace"),
        ["Top-Group", "Other.Org", "Empty-NS"]
    );
    assert_eq!(
        column(&figures, "namespaces", "missing_bytes"),
        ["3327095418", "0", "5368709120"]
    );
    assert_eq!(column(&figures, "namespaces", "failed"), ["2", "1", "0"]);
    assert_eq!(
        column(&figures, "namespaces_by_bytes", "namespace"),
        ["Empty-NS", "Top-Group"]
    );
    assert_eq!(
        column(&figures, "by_month", "month"),
        ["2023-01", "2024-05", "2025-07", "unknown"],
        "oldest first in UTC, unknown last"
    );
    assert_eq!(
        column(&figures, "by_month", "missing"),
        ["2", "2", "1", "2"]
    );
    assert_eq!(
        column(&figures, "by_month", "missing_bytes"),
        ["105857601", "3221225472", "5368709120", "12345"]
    );
    assert_eq!(
        column(&figures, "by_month", "missing_sizes_unknown"),
        ["0", "1", "0", "1"]
    );
    assert_eq!(
        column(&figures, "distribution", "bucket"),
        ["1", "2-5", "6-20", "21-100", "101-1000", ">1000"]
    );
    assert_eq!(
        column(&figures, "distribution", "projects"),
        ["1", "4", "0", "0", "0", "0"]
    );
    assert_eq!(
        column(&figures, "distribution", "missing"),
        ["1", "9", "0", "0", "0", "0"]
    );

    // The failed projects: by cause with what to do, then the most recent first, with why.
    assert_eq!(
        column(&figures, "failed_by_cause", "cause"),
        ["hostile_answer", "no_route", "too_many_pages", "null"],
        "most projects first, then by cause; not recorded last"
    );
    assert_eq!(
        column(&figures, "failed_by_cause", "projects"),
        ["1", "1", "1", "1"]
    );
    let advice = column(&figures, "failed_by_cause", "advice");
    for (i, says) in [
        "check the registry's metadata database",
        "cannot help until it has a route",
        "raise registry.max_pages, then `run --retry-failed`",
        "reason not recorded (GitLab's own worker or an earlier release): `run --retry-failed`",
    ]
    .iter()
    .enumerate()
    {
        assert!(advice[i].contains(says), "{}: {}", i, advice[i]);
    }
    assert!(
        !advice[1].contains("then `run --retry-failed`"),
        "{}",
        advice[1]
    );
    assert_eq!(
        column(&figures, "failed_projects", "project_id"),
        id(&[ids.hostile, ids.huge, ids.orphan, ids.old]),
        "most recent first"
    );
    assert_eq!(
        column(&figures, "failed_projects", "full_path"),
        [
            "Other.Org/Hostile",
            "Top-Group/Huge",
            "null",
            "Top-Group/Old-Worker"
        ]
    );
    assert_eq!(
        column(&figures, "failed_projects", "cause"),
        ["hostile_answer", "too_many_pages", "no_route", "null"]
    );
    assert_eq!(
        column(&figures, "failed_projects", "reason"),
        [
            HOSTILE_REASON,
            "listing top-group/huge: more than 10000 pages; giving up on this project",
            "the project has no route, so no registry path",
            "null"
        ]
    );
    assert_eq!(
        column(&figures, "failed_projects", "failed_at"),
        [
            "2026-12-05T09:30:00Z",
            "2026-12-04T23:59:59Z",
            "2026-12-03T08:00:00Z",
            "2025-01-02T03:04:05Z"
        ],
        "UTC to the second, GitLab's row by its updated_at"
    );
    assert_eq!(figure(&figures, "failed_not_listed"), "0");

    let csv = world.report(&["--format", "csv"]).await;
    csv.assert_exit(0);
    assert_eq!(parse::csv(&csv.stdout), figures, "CSV and JSON differ");

    let table = world.report(&[]).await;
    table.assert_exit(0);
    assert_eq!(
        parse::table(&table.stdout),
        parse::as_the_table_shows(&figures),
        "the table and JSON differ\n{}",
        table.stdout
    );

    let html = world.report(&["--format", "html"]).await;
    html.assert_exit(0);
    parse::assert_page_agrees(&figures, &parse::html(&html.stdout));
    // The hostile reason is text on the page, never markup.
    assert!(!html.stdout.contains("<script"), "{}", html.stdout);
    assert!(!html.stdout.contains(" & <b>"));
    assert!(parse::visible_text(&html.stdout).contains(HOSTILE_REASON));
}

#[actix_rt::test]
async fn top_and_min_missing_bound_both_rankings() {
    let world = damaged().await;
    let ids = world.ids;
    let out = world.report(&["--format", "json", "--top", "1"]).await;
    out.assert_exit(0);
    let figures = parse::json(&out.stdout);
    assert_eq!(
        column(&figures, "top_missing", "project_id"),
        [ids.deep.to_string()]
    );
    assert_eq!(
        column(&figures, "top_by_bytes", "project_id"),
        [ids.lonely.to_string()]
    );
    // The failed projects too, saying how many more there are, in every format.
    assert_eq!(
        column(&figures, "failed_projects", "project_id"),
        [ids.hostile.to_string()]
    );
    assert_eq!(figure(&figures, "failed_not_listed"), "3");
    assert_eq!(column(&figures, "failed_by_cause", "projects").len(), 4);
    let csv = world.report(&["--format", "csv", "--top", "1"]).await;
    assert_eq!(parse::csv(&csv.stdout), figures, "CSV and JSON differ");
    let table = world.report(&["--top", "1"]).await;
    table
        .assert_exit(0)
        .assert_stdout_has("Failed projects, most recent first (1 of 4; --top N lists more)");
    assert_eq!(
        parse::table(&table.stdout),
        parse::as_the_table_shows(&figures),
        "the table and JSON differ\n{}",
        table.stdout
    );
    let html = world.report(&["--format", "html", "--top", "1"]).await;
    parse::assert_page_agrees(&figures, &parse::html(&html.stdout));
    assert!(parse::visible_text(&html.stdout).contains("Most recent first (1 of 4)"));
    // (The visible text puts a blank where each tag was.)
    assert!(parse::visible_text(&html.stdout).contains("3 more not listed ( --top N lists more)."));

    let out = world
        .report(&[
            "--format",
            "json",
            "--min-missing",
            "3",
            "--namespaces",
            "1",
        ])
        .await;
    out.assert_exit(0);
    let figures = parse::json(&out.stdout);
    assert_eq!(
        column(&figures, "top_by_bytes", "project_id"),
        [ids.deep.to_string()],
        "lonely misses only 2"
    );
    assert_eq!(column(&figures, "namespaces", "namespace"), ["Top-Group"]);
    assert_eq!(
        column(&figures, "namespaces_by_bytes", "namespace"),
        ["Empty-NS"]
    );
    // The totals, months and buckets are the whole database's, whatever the lists show.
    assert_eq!(figure(&figures, "totals.missing_bytes"), "8695804538");
    assert_eq!(column(&figures, "by_month", "month").len(), 4);
}
