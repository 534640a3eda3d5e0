//! `report`: totals and the projects missing most, in every format (here, from a real run);
//! the damage the recorded missing repositories show ([`damage`], on a world whose sizes and
//! creation times are known); `--repositories` ([`repositories`]); the HTML page, rendered in
//! headless Chromium ([`html`]).

mod damage;
mod fixture;
mod html;
mod parse;
mod repositories;

use crate::common::TestApp;
use std::collections::HashMap;
use std::time::Duration;

use crate::common::assert_rows_match;
use crate::common::process::{cli, service_env, Env};
use registry_repair::db::tracking::TrackingStatus;
use registry_repair::demo::seed::World;

#[actix_rt::test]
async fn report_shows_totals_and_the_projects_missing_most_in_every_format() {
    let mut world = World::new();
    let top = world.group(None, "Top-Group");
    let sub = world.group(Some(top), "Sub_Team");
    let other = world.group(None, "Other.Org");
    let web = world.project(top, "Web-App", &["", "api", "api/v2"], &["api"]);
    let deep = world.project(sub, "Deep.Project", &["", "a/b/c", "x"], &[]);
    world.project(other, "Clean", &["one"], &["one"]);
    world.project(other, "Rails-Only", &[], &["gone"]);
    world.project(other, "Dash-", &[], &[]);
    let orphan = world.project_without_route(top, "Orphan");

    let TestApp { db, registry, .. } = TestApp::prepare(&world).await;
    let env = service_env(&db, &registry.url(), "127.0.0.1:0");
    let run = cli(&["run", "--until-done"], &env, Duration::from_secs(30)).await;
    run.assert_exit(0).assert_no_panic();
    // `run` says how it talks to the database, once, at start.
    assert_eq!(
        run.stderr
            .matches(" INFO statement mode prepared_statements=true: PostgreSQL itself")
            .count(),
        1,
        "{}",
        run.dump()
    );
    assert_rows_match(&world, &db).await;

    let expected = world.expected();
    let completed = expected
        .values()
        .filter(|e| e.status == TrackingStatus::Completed)
        .count() as i64;
    let failed = expected
        .values()
        .filter(|e| e.status == TrackingStatus::Failed)
        .count() as i64;
    let with_missing = expected.values().filter(|e| e.missing > 0).count() as i64;
    let missing: i64 = expected.values().map(|e| i64::from(e.missing)).sum();
    assert_eq!(
        (completed, failed, with_missing, missing),
        (5, 1, 2, 5),
        "the world is as this test thinks"
    );

    let report_env = Env::new().set("DATABASE__URL", &db.url);
    let json = cli(
        &["report", "--format", "json"],
        &report_env,
        Duration::from_secs(20),
    )
    .await;
    json.assert_exit(0).assert_no_panic();
    let report: serde_json::Value = serde_json::from_str(&json.stdout)
        .unwrap_or_else(|e| panic!("report --format json is not JSON: {e}\n{}", json.dump()));
    let totals: HashMap<&str, i64> = [
        "projects",
        "analysed",
        "completed",
        "failed",
        "pending",
        "projects_with_missing",
        "missing",
        "unaddressable",
    ]
    .into_iter()
    .map(|k| {
        (
            k,
            report["totals"][k]
                .as_i64()
                .unwrap_or_else(|| panic!("totals.{k} is missing: {report}")),
        )
    })
    .collect();
    let n = world.projects.len() as i64;
    let want: HashMap<&str, i64> = [
        ("projects", n),
        ("analysed", n),
        ("completed", completed),
        ("failed", failed),
        ("pending", 0),
        ("projects_with_missing", with_missing),
        ("missing", missing),
        ("unaddressable", 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(totals, want, "{report}");

    // The project without a route is named, with the cause the run recorded and what to do.
    assert_eq!(
        report["failed_projects"],
        serde_json::json!([{
            "project_id": orphan,
            "full_path": null,
            "cause": "no_route",
            "reason": "the project has no route, so no registry path",
            "failed_at": report["failed_projects"][0]["failed_at"],
        }]),
        "{report}"
    );
    assert_eq!(report["failed_by_cause"][0]["cause"], "no_route");
    assert!(report["failed_by_cause"][0]["advice"]
        .as_str()
        .is_some_and(|a| a.contains("cannot help until it has a route")));
    assert_eq!(report["failed_not_listed"], 0);
    // Namespaces with nothing missing are not ranked.
    let ranked: Vec<&str> = report["namespaces"]
        .as_array()
        .unwrap_or_else(|| panic!("namespaces is not a list: {report}"))
        .iter()
        .filter_map(|n| n["namespace"].as_str())
        .collect();
    assert_eq!(ranked, ["Top-Group"], "{report}");

    let top_missing: Vec<(i64, String, i64)> = report["top_missing"]
        .as_array()
        .unwrap_or_else(|| panic!("top_missing is not a list: {report}"))
        .iter()
        .map(|p| {
            (
                p["project_id"].as_i64().expect("project_id"),
                p["full_path"].as_str().expect("full_path").to_string(),
                p["missing_count"].as_i64().expect("missing_count"),
            )
        })
        .collect();
    assert_eq!(
        top_missing,
        vec![
            (deep, "Top-Group/Sub_Team/Deep.Project".to_string(), 3),
            (web, "Top-Group/Web-App".to_string(), 2),
        ],
        "{report}"
    );

    let csv = cli(
        &["report", "--format", "csv"],
        &report_env,
        Duration::from_secs(20),
    )
    .await;
    csv.assert_exit(0).assert_no_panic();
    let lines: Vec<&str> = csv.stdout.lines().collect();
    let header = lines
        .iter()
        .position(|l| {
            *l == "project_id,full_path,missing_count,missing_itemised,missing_bytes,\
                   missing_sizes_unknown,shown_empty_by_gitlab"
        })
        .unwrap_or_else(|| panic!("no CSV header line\n{}", csv.dump()));
    // The project block ends at the blank line before the namespace block. Its first columns
    // are the ones it always had; what follows depends on what the analysis itemised.
    let block: Vec<String> = lines[header + 1..]
        .iter()
        .take_while(|l| !l.is_empty())
        .map(|l| l.splitn(4, ',').take(3).collect::<Vec<_>>().join(","))
        .collect();
    assert_eq!(
        block,
        vec![
            format!("{deep},Top-Group/Sub_Team/Deep.Project,3"),
            format!("{web},Top-Group/Web-App,2"),
        ],
        "{}",
        csv.dump()
    );
    assert!(
        csv.stdout
            .contains("\nnamespace,analysed,completed,failed,projects_with_missing,missing,missing_bytes,missing_sizes_unknown\n"),
        "{}",
        csv.dump()
    );

    let table = cli(
        &["report", "--format", "table"],
        &report_env,
        Duration::from_secs(20),
    )
    .await;
    table
        .assert_exit(0)
        .assert_stdout_has("Top-Group/Sub_Team/Deep.Project")
        .assert_stdout_has(&format!(
            "{orphan:>12}  {:<20}  no_route               (no route)\n\
             {:14}why: the project has no route, so no registry path\n",
            report["failed_projects"][0]["failed_at"]
                .as_str()
                .unwrap_or_default(),
            ""
        ))
        .assert_no_panic();
    let default = cli(&["report"], &report_env, Duration::from_secs(20)).await;
    default.assert_exit(0);
    assert_eq!(
        default.stdout, table.stdout,
        "the default format is the table"
    );
    // A plain report says nothing on standard error at the default level: the statement mode
    // is `run`'s to say.
    for out in [&default, &json, &csv] {
        assert!(
            !out.stderr.contains(" INFO ") && !out.stderr.contains("statement mode"),
            "a plain report logged at info:\n{}",
            out.dump()
        );
    }
}
