//! The whole service in-process: Scheduler, supervised Analyzers and Writer against a real
//! database and the simulated registry.

use std::time::Duration;

use crate::common;
use crate::common::{assert_rows_match, eventually, TestApp};
use registry_repair::analyzer::MAX_CRASHES;
use registry_repair::db::tracking::TrackingStatus;
use registry_repair::demo::seed::World;
use registry_repair::registry::grammar::is_addressable;
use registry_repair::registry::simulator::RegistrySimulator;
use registry_repair::scheduler::{RunEnd, ServiceState, SetConcurrency, SetEnabled};

/// `n` projects in two groups, each with one repository the database lost.
fn busy_world(n: usize) -> World {
    let mut w = World::new();
    let a = w.group(None, "Alpha");
    let b = w.group(None, "Beta");
    for i in 0..n {
        w.project(
            if i % 2 == 0 { a } else { b },
            &format!("Proj-{i}"),
            &["img"],
            &[],
        );
    }
    w
}

/// In-flight requests finish and no new one starts for half a second; returns the request count.
async fn assert_quiet(reg: &RegistrySimulator) -> u64 {
    assert!(
        eventually(Duration::from_secs(2), || async {
            reg.stats().in_flight == 0
        })
        .await
    );
    let before = reg.stats().list_requests;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(reg.stats().list_requests, before, "no request while paused");
    before
}

async fn assert_resumes(reg: &RegistrySimulator, before: u64) {
    assert!(
        eventually(Duration::from_secs(5), || async {
            reg.stats().list_requests > before
        })
        .await,
        "requests start again"
    );
}

#[actix_rt::test]
async fn run_until_done_records_the_seeded_result_for_every_project_and_a_second_run_asks_nothing()
{
    let world = World::generate(500, 3);
    let mut app = TestApp::prepare(&world).await;
    assert_eq!(app.run_until_done().await, RunEnd::Done);
    assert_rows_match(&world, &app.db).await;
    let requests = app.registry.stats().list_requests;
    // 498 projects with a route the registry can hold (one has none, one a trailing dash), plus
    // the extra pages of the 2,345- and 1,000-repository projects.
    assert_eq!(requests, 498 + 2 + 1);
    // One token per batch of up to 16 projects that fits `MAX_TOKEN_BYTES` (6 KiB; none here
    // needs a second, every page of a project included); none for the paths the registry cannot hold.
    let mut projects: Vec<_> = world.projects.iter().collect();
    projects.sort_by_key(|p| p.id);
    let paths: Vec<Option<String>> = projects
        .iter()
        .map(|p| {
            p.full_path
                .as_ref()
                .map(|f| f.to_lowercase())
                .filter(|f| is_addressable(f))
        })
        .collect();
    let refs: Vec<Option<&str>> = paths.iter().map(Option::as_deref).collect();
    let batches = app.signer.batch_lengths(&refs, 16);
    assert!(batches.len() < 500 / 12, "{batches:?}");
    // And the sizes: per project with missing repositories, tokens naming each exactly.
    let size_tokens: usize = projects
        .iter()
        .filter_map(|p| {
            let path = p.full_path.as_ref()?.to_lowercase();
            let missing: Vec<String> = p
                .registry
                .iter()
                .filter(|name| !p.rails.contains(name))
                .map(|name| match name.as_str() {
                    "" => path.clone(),
                    name => format!("{path}/{name}"),
                })
                .collect();
            (is_addressable(&path) && !missing.is_empty())
                .then(|| app.signer.exact_batch_lengths(&missing).len())
        })
        .sum();
    assert!(size_tokens > 0);
    assert_eq!(app.signer.minted(), (batches.len() + size_tokens) as u64);
    assert_eq!(app.run_until_done().await, RunEnd::Done);
    assert_eq!(
        app.registry.stats().list_requests,
        requests,
        "a second run asks nothing"
    );
}

#[actix_rt::test]
async fn in_flight_never_exceeds_max_concurrency_and_set_concurrency_moves_it_while_running() {
    let world = busy_world(600);
    let mut app = TestApp::prepare(&world).await;
    app.registry.set_latency(Duration::from_millis(50));
    app.settings.worker.max_concurrency = 2;
    app.start(false).await;
    let reg = &app.registry;

    common::assert_in_flight_settles_at(reg, 2, Duration::from_secs(5)).await;

    let s = app
        .service()
        .scheduler
        .send(SetConcurrency(6))
        .await
        .expect("send");
    assert_eq!(s.max_concurrency, 6);
    // The bounds below are for a change never followed; under load it takes longer than on an
    // idle machine.
    common::assert_in_flight_settles_at(reg, 6, Duration::from_secs(5)).await;

    app.service()
        .scheduler
        .send(SetConcurrency(1))
        .await
        .expect("send");
    // The projects in flight, not the requests: a project asks its listing, then its missing
    // repositories' sizes, with a moment between them when none of its requests is in flight.
    assert!(
        eventually(Duration::from_secs(5), || async {
            app.status().await.in_flight <= 1 && reg.stats().in_flight <= 1
        })
        .await,
        "lowered"
    );
    reg.reset_max_in_flight();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        reg.stats().max_in_flight <= 1,
        "never more than 1 in flight: {:?}",
        reg.stats()
    );
    assert!(
        app.status().await.analyzers <= 6,
        "the pool grows only to the limit"
    );

    assert_eq!(app.stop().await, RunEnd::Stopped);
    let expected = world.expected();
    let rows = app.db.rows().await;
    assert!(!rows.is_empty());
    for row in rows {
        assert_eq!(
            row.missing_count, expected[&row.project_id].missing,
            "{row:?}"
        );
    }
}

#[actix_rt::test]
async fn pause_and_concurrency_zero_stop_new_requests_and_resume_restarts_them() {
    let world = busy_world(400);
    let mut app = TestApp::prepare(&world).await;
    app.registry.set_latency(Duration::from_millis(30));
    app.settings.worker.max_concurrency = 3;
    app.start(false).await;
    let reg = &app.registry;
    let scheduler = app.service().scheduler.clone();
    assert!(
        eventually(Duration::from_secs(5), || async {
            reg.stats().list_requests > 5
        })
        .await
    );

    // The feature flag.
    let paused = scheduler.send(SetEnabled(false)).await.expect("send");
    assert_eq!(paused.state, ServiceState::Paused);
    let before = assert_quiet(reg).await;
    scheduler.send(SetEnabled(true)).await.expect("send");
    assert_resumes(reg, before).await;

    // Concurrency 0.
    let paused = scheduler.send(SetConcurrency(0)).await.expect("send");
    assert_eq!(paused.state, ServiceState::PausedByConcurrency);
    let before = assert_quiet(reg).await;
    scheduler.send(SetConcurrency(3)).await.expect("send");
    assert_resumes(reg, before).await;

    assert_eq!(app.stop().await, RunEnd::Stopped);
}

#[actix_rt::test]
async fn a_panicking_analyzer_is_restarted_and_its_project_is_analysed_again() {
    let world = busy_world(40);
    let once = world.projects[5].id;
    let always = world.projects[9].id;
    let mut app = TestApp::prepare(&world).await;
    app.faults.panic_once_on(once);
    app.faults.panic_always_on(always);
    app.settings.worker.max_concurrency = 2;
    app.start(false).await;
    let db = &app.db;
    assert!(db.wait_for_rows(40, Duration::from_secs(20)).await);

    let rows = app.rows_by_project().await;
    assert_eq!(
        (rows[&once].status, rows[&once].missing_count),
        (TrackingStatus::Completed, 1)
    );
    assert_eq!(
        rows[&always].status,
        TrackingStatus::Failed,
        "recorded failed after {MAX_CRASHES} crashes"
    );
    for p in &world.projects {
        if p.id != always {
            assert_eq!(
                (rows[&p.id].status, rows[&p.id].missing_count),
                (TrackingStatus::Completed, 1)
            );
        }
    }
    let s = app.status().await;
    assert_eq!(s.analyzer_restarts, 1 + u64::from(MAX_CRASHES));
    assert_eq!(s.in_flight, 0);
    // The restarted analyzers keep serving: the pool is still the two it started with.
    assert_eq!(s.analyzers, 2);
    assert_eq!(app.stop().await, RunEnd::Stopped);
}

#[actix_rt::test]
async fn projects_created_while_running_are_picked_up_on_the_next_scan() {
    let world = busy_world(10);
    let mut app = TestApp::prepare(&world).await;
    app.start(false).await;
    let db = &app.db;
    assert!(db.wait_for_rows(10, Duration::from_secs(10)).await);

    app.db
        .execute(
            "INSERT INTO projects (id, name, path, namespace_id) VALUES (9001, 'Late', 'Late', 1); \
             INSERT INTO routes (source_id, source_type, path) VALUES (9001, 'Project', 'Alpha/Late'); \
             INSERT INTO container_repositories (project_id, name, created_at, updated_at) VALUES (9001, 'kept', now(), now())",
        )
        .await;
    app.registry.add_repository("alpha/late");
    app.registry.add_repository("alpha/late/kept");
    app.registry.add_repository("alpha/late/lost/one");
    assert!(
        db.wait_for_rows(11, Duration::from_secs(10)).await,
        "the new project gets a row"
    );
    let rows = app.rows_by_project().await;
    assert_eq!(
        (rows[&9001].status, rows[&9001].missing_count),
        (TrackingStatus::Completed, 2)
    );
    assert_eq!(app.stop().await, RunEnd::Stopped);
}

#[actix_rt::test]
async fn shutdown_lets_in_flight_projects_finish_and_flushes_them() {
    let world = busy_world(100);
    let mut app = TestApp::prepare(&world).await;
    app.registry.set_latency(Duration::from_millis(300));
    app.settings.worker.max_concurrency = 4;
    app.settings.writer.flush_interval = Duration::from_millis(60_000);
    app.start(false).await;
    let reg = &app.registry;
    assert!(
        eventually(Duration::from_secs(5), || async {
            reg.stats().in_flight == 4
        })
        .await
    );
    app.service().shutdown();
    let end = tokio::time::timeout(
        Duration::from_secs(10),
        app.service.take().expect("service").wait(),
    )
    .await
    .expect("stops within the shutdown timeout");
    assert_eq!(end, RunEnd::Stopped);
    // Every project the registry was asked about finished and was flushed; nothing else was.
    let rows = app.db.rows().await;
    assert_eq!(rows.len() as u64, app.registry.stats().list_requests);
    assert!(rows.len() >= 4);
    assert!(rows
        .iter()
        .all(|r| r.status == TrackingStatus::Completed && r.missing_count == 1));
}

#[actix_rt::test]
async fn with_admin_token_set_every_admin_call_needs_it_status_and_metrics_included() {
    use registry_repair::admin::{AdminClient, AdminError};
    let world = busy_world(3);
    let mut app = TestApp::prepare(&world).await;
    app.settings.admin.token = Some("s3cret-admin-token".into());
    app.start(false).await;
    let addr = app.service().admin_addr.expect("the admin API");

    let anonymous = AdminClient::new(addr, None);
    // `last_error` names private project paths: status is no more public than control.
    match anonymous.status().await {
        Err(AdminError::Refused { status: 401, .. }) => {}
        other => panic!("expected 401, got {other:?}"),
    }
    let metrics = format!("http://{addr}/metrics");
    let scrape = |token: Option<&'static str>| {
        let request = reqwest::Client::new().get(&metrics);
        let request = match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        async move { request.send().await.expect("metrics answers").status() }
    };
    assert_eq!(scrape(None).await, 401);
    assert_eq!(scrape(Some("s3cret-admin-tokeX")).await, 401);
    assert_eq!(scrape(Some("s3cret-admin-token")).await, 200);
    match anonymous.set_concurrency(5).await {
        Err(AdminError::Refused { status: 401, .. }) => {}
        other => panic!("expected 401, got {other:?}"),
    }
    let wrong = AdminClient::new(addr, Some("s3cret-admin-tokeX".into()));
    assert!(matches!(
        wrong.set_enabled(false).await,
        Err(AdminError::Refused { status: 401, .. })
    ));
    assert_eq!(app.status().await.max_concurrency, 2, "nothing changed");
    assert!(app.status().await.enabled);

    let operator = AdminClient::new(addr, Some("s3cret-admin-token".into()));
    assert_eq!(operator.status().await.expect("allowed").max_concurrency, 2);
    assert_eq!(
        operator
            .set_concurrency(5)
            .await
            .expect("allowed")
            .max_concurrency,
        5
    );
    assert!(!operator.set_enabled(false).await.expect("allowed").enabled);
    match operator.set_concurrency(-1).await {
        Err(AdminError::Refused {
            status: 400,
            message,
            ..
        }) => {
            assert!(message.contains("max_concurrency"), "{message}")
        }
        other => panic!("expected 400, got {other:?}"),
    }
    assert_eq!(app.stop().await, RunEnd::Stopped);
}
