//! Scale-out and restarts at scale: shards split the work with no overlap and no gap; the watermark
//! lets a restart start past the analysed projects, and never passes one without a row.

use std::time::Duration;

use crate::common;
use crate::common::{assert_rows_match, TestApp, TestDb};
use registry_repair::analysis::Analysis;
use registry_repair::config::Shard;
use registry_repair::db::watermark::{self, Fences};
use registry_repair::demo::seed::World;
use registry_repair::scheduler::RunEnd;
use registry_repair::service::{self, ServiceOptions};

fn world(n: usize) -> World {
    let mut w = World::new();
    let a = w.group(None, "Scale-A");
    let b = w.group(None, "scale_b");
    for i in 0..n {
        let names = ["", "img", "a/b"];
        w.project(
            if i % 2 == 0 { a } else { b },
            &format!("P-{i}"),
            &names[..1 + i % 3],
            &names[..i % 2],
        );
    }
    w
}

#[actix_rt::test]
async fn two_instances_on_two_shards_split_the_work_with_no_overlap_and_no_gap() {
    let world = world(400);
    let app = TestApp::prepare(&world).await;
    let _watermark = common::needing_the_watermark_to_move().await;
    app.registry.set_latency(Duration::from_millis(5));
    let mut starts = Vec::new();
    for shard in ["0/2", "1/2"] {
        let mut settings = app.settings.clone();
        settings.worker.shard = shard.parse().expect("a shard");
        settings.worker.max_concurrency = 4;
        let analysis = Analysis {
            until_done: true,
            ..Analysis::new(&settings)
        };
        starts.push(
            service::start(
                &settings,
                app.signer.clone(),
                analysis,
                ServiceOptions::default(),
            )
            .await
            .expect("starts"),
        );
    }
    for service in starts {
        assert_eq!(common::run_to_end(service).await, RunEnd::Done);
    }
    assert_rows_match(&world, &app.db).await;
    // No overlap: every project's path was asked for exactly once (each has one page).
    for p in &world.projects {
        let path = p.full_path.as_deref().expect("route").to_lowercase();
        assert_eq!(app.registry.requests_for(&path), 1, "{path}");
    }
    assert_eq!(app.registry.stats().list_requests, 400);
    // Each shard remembers how far it got.
    let db = app.db.database();
    let max_id = world.projects.iter().map(|p| p.id).max().expect("projects");
    for index in 0..2 {
        let (through, _) = watermark::load(&db, Shard::new(index, 2).expect("a shard"))
            .await
            .expect("load");
        assert!(through >= max_id - 1, "shard {index}: {through}");
    }
}

#[actix_rt::test]
async fn a_restart_starts_past_the_watermark_and_from_start_walks_everything_again() {
    let world = world(120);
    let mut app = TestApp::prepare(&world).await;
    let _watermark = common::needing_the_watermark_to_move().await;
    assert_eq!(app.run_until_done().await, RunEnd::Done);
    let db = app.db.database();
    let max_id = world.projects.iter().map(|p| p.id).max().expect("projects");
    assert_eq!(
        watermark::load(&db, Shard::ALL).await.expect("load").0,
        max_id
    );

    // A new project appears above the watermark; delete an old row by hand, below it.
    app.db
        .execute(&format!(
            "INSERT INTO projects (id, name, path, namespace_id) VALUES ({id}, 'New', 'New', 1); \
             INSERT INTO routes (source_id, source_type, path) VALUES ({id}, 'Project', 'Scale-A/New')",
            id = max_id + 10
        ))
        .await;
    let first = world.projects[0].id;
    app.db
        .execute(&format!(
            "DELETE FROM container_registry_data_repair_details WHERE project_id = {first}"
        ))
        .await;
    let requests = app.registry.stats().list_requests;
    let first_path = world.projects[0]
        .full_path
        .as_deref()
        .expect("route")
        .to_lowercase();
    let first_requests = app.registry.requests_for(&first_path);
    assert_eq!(app.run_until_done().await, RunEnd::Done);
    // The walk starts past the watermark and finds the new project; `--until-done` ends only
    // after a sweep below the watermark, which finds the deleted row's project.
    assert_eq!(app.registry.stats().list_requests, requests + 2);
    assert_eq!(app.registry.requests_for(&first_path), first_requests + 1);
    assert!(app.rows_by_project().await.contains_key(&first));

    // `--from-start` walks everything again from id 0 (and finds the row deleted once more).
    app.db
        .execute(&format!(
            "DELETE FROM container_registry_data_repair_details WHERE project_id = {first}"
        ))
        .await;
    let analysis = Analysis {
        until_done: true,
        from_start: true,
        ..Analysis::new(&app.settings)
    };
    let service = service::start(
        &app.settings,
        app.signer.clone(),
        analysis,
        ServiceOptions::default(),
    )
    .await
    .expect("starts");
    assert_eq!(service.wait().await, RunEnd::Done);
    assert_eq!(app.registry.stats().list_requests, requests + 3);
    let rows = app.rows_by_project().await;
    assert_eq!(rows.len(), 121);
    assert_eq!(rows[&(max_id + 10)].missing_count, 0);
    for (id, e) in world.expected() {
        assert_eq!(
            (rows[&id].status, rows[&id].missing_count),
            (e.status, e.missing),
            "{id}"
        );
    }
}

#[actix_rt::test]
async fn the_watermark_stops_below_the_first_project_without_a_row() {
    let world = world(50);
    let db = TestDb::new().await;
    let _watermark = common::needing_the_watermark_to_move().await;
    let database = db.database();
    world.insert(&database).await.expect("seed");
    let hole = world.projects[20].id;
    db.execute(&format!(
        "INSERT INTO container_registry_data_repair_details (project_id, missing_count, status, created_at, updated_at) \
         SELECT id, 0, 1, now(), now() FROM projects WHERE id <> {hole}"
    ))
    .await;
    // The fences wait for every transaction of the cluster that was running when they were
    // taken (other tests' too) to end: ask until one is safe.
    let fences = Fences::default();
    let advance = |from: i64| {
        let (database, fences) = (&database, &fences);
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                let through = watermark::advance(database, Shard::ALL, from, fences)
                    .await
                    .expect("advance");
                if through > from || std::time::Instant::now() > deadline {
                    return through;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert_eq!(advance(0).await, hole - 1);
    assert_eq!(
        watermark::load(&database, Shard::ALL)
            .await
            .expect("load")
            .0,
        hole - 1
    );
    // Once the hole has its row, it moves on to the last project.
    db.execute(&format!(
        "INSERT INTO container_registry_data_repair_details (project_id, missing_count, status, created_at, updated_at) \
         VALUES ({hole}, 0, 1, now(), now())"
    ))
    .await;
    let max_id = world.projects.iter().map(|p| p.id).max().expect("projects");
    assert_eq!(advance(hole - 1).await, max_id);
    assert_eq!(
        watermark::load(&database, Shard::ALL)
            .await
            .expect("load")
            .0,
        max_id
    );
}

#[actix_rt::test]
async fn rows_deleted_by_hand_and_projects_restored_below_the_watermark_are_found_by_the_sweep() {
    let world = world(60);
    let mut app = TestApp::prepare(&world).await;
    let _watermark = common::needing_the_watermark_to_move().await;
    app.settings.worker.sweep_interval = Duration::from_secs(1);
    app.start(false).await;
    let max_id = world.projects.iter().map(|p| p.id).max().expect("projects");
    let scheduler = app.service().scheduler.clone();
    assert!(
        common::status_becomes(&scheduler, Duration::from_secs(30), |s| s.watermark
            == max_id)
        .await,
        "every project analysed and the watermark past them"
    );
    let (deleted, restored) = (world.projects[3].id, world.projects[5].id);
    app.db
        .execute(&format!(
            "DELETE FROM container_registry_data_repair_details WHERE project_id = {deleted}; \
             CREATE TEMP TABLE gone AS SELECT * FROM projects WHERE id = {restored}; \
             DELETE FROM projects WHERE id = {restored}; \
             INSERT INTO projects SELECT * FROM gone"
        ))
        .await;
    assert!(
        common::eventually(Duration::from_secs(30), || async {
            let rows = app.rows_by_project().await;
            rows.contains_key(&deleted) && rows.contains_key(&restored)
        })
        .await,
        "the sweep finds both: {:?}",
        app.status().await
    );
    assert!(app.status().await.sweeps >= 1);
    assert_eq!(app.stop().await, RunEnd::Stopped);
    assert_rows_match(&world, &app.db).await;
}
