//! An upgrade mid-run: the previous release (before the missing repositories were recorded)
//! analysed part of the projects and was stopped; this release migrates over its tables and runs
//! to the end. The projects it had counted are itemised: listed again, those alone, once.

use std::time::Duration;

use crate::common::process::{busy_world, cli, service_env};
use crate::common::{self, assert_rows_match, TestApp};
use registry_repair::db::tracking::TrackingStatus;

/// The migrations the previous release did not have, newest first: undone with their own
/// `down.sql`, and forgotten by diesel's table of what ran.
const NEWER: [(&str, &str); 3] = [
    (
        "20261207000000",
        include_str!("../../migrations/2026-12-07-000000_failure_reasons/down.sql"),
    ),
    (
        "20261206000000",
        include_str!("../../migrations/2026-12-06-000000_fencing/down.sql"),
    ),
    (
        "20261205000000",
        include_str!("../../migrations/2026-12-05-000000_missing_repositories/down.sql"),
    ),
];

#[actix_rt::test]
async fn counts_the_previous_release_left_without_their_repositories_are_itemised_by_run() {
    let world = busy_world(300);
    let app = TestApp::prepare(&world).await;
    for (version, down) in NEWER {
        app.db.execute(down).await;
        app.db
            .execute(&format!(
                "DELETE FROM __diesel_schema_migrations WHERE version = '{version}'"
            ))
            .await;
    }
    // What the previous release left: the first half counted (its rows, nothing else of them),
    // its member row, pass and a claim of a process killed mid-run.
    let expected = world.expected();
    let mut counted: Vec<i64> = expected.keys().copied().collect();
    counted.sort();
    counted.truncate(150);
    let values: Vec<String> = counted
        .iter()
        .map(|id| {
            let e = &expected[id];
            format!("({id}, {}, {}, now(), now())", e.missing, e.status as i16)
        })
        .collect();
    app.db
        .execute(&format!(
            "INSERT INTO container_registry_data_repair_details \
             (project_id, missing_count, status, created_at, updated_at) VALUES {}; \
             INSERT INTO registry_repair_members (id, host, pid, shard, heartbeat_at, share, state) \
             VALUES ('old-host:4242:00000000', 'old-host', 4242, '0/1', now() - interval '1 minute', 2, 'running'); \
             INSERT INTO registry_repair_passes (shard, pass, walk_after) VALUES ('0/1', 1, {}); \
             INSERT INTO registry_repair_claims (shard, pass, kind, after_id, through_id, owner) \
             VALUES ('0/1', 1, 'walk', {}, {}, 'old-host:4242:00000000')",
            values.join(", "),
            counted[149],
            counted[149],
            counted[149] + 40,
        ))
        .await;
    let to_itemise: Vec<i64> = counted
        .iter()
        .copied()
        .filter(|id| expected[id].missing > 0)
        .collect();
    assert!(to_itemise.len() > 50, "{} to itemise", to_itemise.len());

    let env = service_env(&app.db, &app.registry.url(), "127.0.0.1:0");
    cli(&["migrate"], &env, Duration::from_secs(60))
        .await
        .assert_exit(0);
    let report = cli(
        &["report", "--format", "json"],
        &env,
        Duration::from_secs(60),
    )
    .await;
    report.assert_exit(0);
    let totals: serde_json::Value = serde_json::from_str(&report.stdout).expect("JSON");
    assert_eq!(
        totals["totals"]["projects_not_itemised"],
        to_itemise.len(),
        "the report says how many are to itemise\n{}",
        report.stdout
    );

    let run = cli(&["run", "--until-done"], &env, Duration::from_secs(120)).await;
    run.assert_exit(0)
        .assert_no_panic()
        .assert_stderr_has("projects counted without their repositories");
    // Every row right, and every missing repository of a completed project recorded: the counted
    // ones too.
    assert_rows_match(&world, &app.db).await;
    for project in &world.projects {
        let asked = app
            .registry
            .requests_for(&common::registry_path(&world, project.id));
        let want = match counted.binary_search(&project.id) {
            // Counted before: listed again only to itemise it.
            Ok(_) if expected[&project.id].missing > 0 => 1,
            Ok(_) => 0,
            Err(_) => 1,
        };
        assert_eq!(
            asked, want,
            "project {} ({:?})",
            project.id, expected[&project.id]
        );
    }
    let report = cli(
        &["report", "--format", "json"],
        &env,
        Duration::from_secs(60),
    )
    .await;
    let totals: serde_json::Value = serde_json::from_str(&report.stdout).expect("JSON");
    assert_eq!(totals["totals"]["projects_not_itemised"], 0);
    assert_eq!(
        totals["totals"]["missing"],
        world
            .expected()
            .values()
            .filter(|e| e.status == TrackingStatus::Completed)
            .map(|e| i64::from(e.missing))
            .sum::<i64>()
    );
}
