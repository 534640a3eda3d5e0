//! Faults end in a correct table: flaky registries, outages, a rejected key, hostile answers, a
//! database that goes away, a Writer that panics, and failed projects analysed again.

use std::collections::HashMap;
use std::time::Duration;

use crate::common;
use crate::common::{
    assert_rows_match, eventually, registry_path, signer, status_becomes, TestApp, TestDb,
    OTHER_KEY,
};
use registry_repair::analysis::Analysis;
use registry_repair::db::failures::FailureCause;
use registry_repair::db::tracking::TrackingRow;
use registry_repair::db::tracking::TrackingStatus;
use registry_repair::demo::seed::{Expected, World};
use registry_repair::registry::simulator::{ApiMode, FaultMix, Hostile, RegistrySimulator};
use registry_repair::registry::token::MAX_TOKEN_BYTES;
use registry_repair::registry::{RegistryClient, RegistryError};
use registry_repair::scheduler::{BreakerPosition, GetStatus, RunEnd, ServiceState};
use registry_repair::service::{self, ServiceOptions};
use registry_repair::writer::{GetWriterStats, Record};

/// `n` projects in two groups; project `i` has `1 + i % 3` repositories, the first known to Rails.
fn world(n: usize) -> World {
    let mut w = World::new();
    let a = w.group(None, "Alpha-Group");
    let b = w.group(None, "Beta");
    for i in 0..n {
        let names = ["", "img", "tools/cache"];
        let k = 1 + i % 3;
        w.project(
            if i % 2 == 0 { a } else { b },
            &format!("Proj-{i}"),
            &names[..k],
            &names[..1],
        );
    }
    w
}

/// Rows must equal `expected`, project by project.
async fn assert_rows(app: &TestApp, expected: &HashMap<i64, Expected>) {
    let rows = app.rows_by_project().await;
    assert_eq!(rows.len(), expected.len(), "one row per project");
    for (id, e) in expected {
        let row = &rows[id];
        assert_eq!(
            (row.status, row.missing_count),
            (e.status, e.missing),
            "project {id}"
        );
    }
}

async fn failed_rows(app: &TestApp) -> usize {
    app.db
        .rows()
        .await
        .iter()
        .filter(|r| r.status == TrackingStatus::Failed)
        .count()
}

#[actix_rt::test]
async fn a_flaky_registry_still_gives_every_project_its_true_count_and_always_refused_ones_fail() {
    let world = world(600);
    let mut app = TestApp::prepare(&world).await;
    app.registry.set_fault_mix(
        FaultMix {
            server_errors: 0.05,
            hangs: 0.01,
            hang_for: Duration::from_millis(1500),
            resets: 0.02,
            malformed: 0.02,
        },
        7,
    );
    let refused = [world.projects[10].id, world.projects[333].id];
    for id in refused {
        app.registry.refuse(&registry_path(&world, id), 503);
    }
    app.settings.registry.timeout = Duration::from_millis(400);
    app.settings.worker.max_concurrency = 8;
    assert_eq!(app.run_until_done().await, RunEnd::Done);

    let mut expected = world.expected();
    for id in refused {
        expected.insert(id, Expected::FAILED);
    }
    assert_rows(&app, &expected).await;
}

#[actix_rt::test]
async fn a_registry_outage_mid_run_trips_the_breaker_and_produces_no_failed_row() {
    let world = world(300);
    let mut app = TestApp::prepare(&world).await;
    app.registry.set_latency(Duration::from_millis(10));
    app.settings.worker.max_concurrency = 4;
    app.start(true).await;
    let db = &app.db;
    assert!(db.wait_for_rows(50, Duration::from_secs(10)).await);

    app.registry.set_outage(true);
    let scheduler = app.service().scheduler.clone();
    assert!(
        status_becomes(&scheduler, Duration::from_secs(10), |s| s.breaker
            == BreakerPosition::Open)
        .await,
        "the breaker opens"
    );
    let during = app.status().await;
    assert_eq!(during.state, ServiceState::RegistryUnavailable);
    assert!(
        during
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("503")),
        "{during:?}"
    );
    // Projects in flight when it opened finish their retries; then nothing new is dispatched.
    assert!(status_becomes(&scheduler, Duration::from_secs(10), |s| s.in_flight == 0).await);
    let requests = app.registry.stats().list_requests;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        app.registry.stats().list_requests,
        requests,
        "no dispatching while the registry is down: only probes of /gitlab/v1/"
    );
    assert_eq!(failed_rows(&app).await, 0);
    app.registry.set_outage(false);

    assert_eq!(app.run_to_end().await, RunEnd::Done);
    assert_rows_match(&world, &app.db).await;
}

#[actix_rt::test]
async fn a_key_the_registry_rejects_records_nothing_and_says_why() {
    let world = world(50);
    let app = TestApp::prepare(&world).await;
    let service = service::start(
        &app.settings,
        signer(OTHER_KEY),
        Analysis::new(&app.settings),
        ServiceOptions::default(),
    )
    .await
    .expect("starts");
    let scheduler = service.scheduler.clone();
    assert!(
        status_becomes(&scheduler, Duration::from_secs(10), |s| s.breaker_trips
            >= 1)
        .await
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = scheduler.send(GetStatus).await.expect("status");
    assert_ne!(s.breaker, BreakerPosition::Closed);
    assert!(
        s.last_error.as_deref().is_some_and(|e| e.contains("401")),
        "{s:?}"
    );
    assert_eq!(app.db.rows().await.len(), 0, "nothing recorded");
    // The breaker keeps it from hammering the registry: a few projects, then probes and trials.
    assert!(
        app.registry.stats().unauthorized < 40,
        "{:?}",
        app.registry.stats()
    );
    service.shutdown();
    assert_eq!(service.wait().await, RunEnd::Stopped);
    assert_eq!(app.db.rows().await.len(), 0);
}

/// `world` seeded, and the service started with `--until-done` against a port where no registry
/// listens yet; returns once its breaker is open (nothing dispatched).
async fn start_before_the_registry(world: &World) -> (TestDb, u16, service::Service<Analysis>) {
    let db = TestDb::new().await;
    world.insert(&db.database()).await.expect("seed");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let settings = common::settings_for(&db, &format!("http://127.0.0.1:{port}"));
    let analysis = Analysis {
        until_done: true,
        ..Analysis::new(&settings)
    };
    let service = service::start(
        &settings,
        signer(common::FIXTURE_KEY),
        analysis,
        ServiceOptions::default(),
    )
    .await
    .expect("starts without a registry");
    let scheduler = service.scheduler.clone();
    assert!(
        status_becomes(&scheduler, Duration::from_secs(10), |s| s.breaker
            == BreakerPosition::Open)
        .await
    );
    (db, port, service)
}

#[actix_rt::test]
async fn a_registry_that_refuses_connections_at_start_is_waited_for() {
    let world = world(40);
    let (db, port, service) = start_before_the_registry(&world).await;
    assert_eq!(db.rows().await.len(), 0);
    let registry = RegistrySimulator::start(world.registry_paths(), common::trusted(), port)
        .expect("registry");
    assert_eq!(common::run_to_end(service).await, RunEnd::Done);
    assert_rows_match(&world, &db).await;
    assert!(registry.stats().list_requests >= 40);
}

#[actix_rt::test]
async fn hostile_answers_fail_their_project_or_are_read_correctly_and_never_leak_the_token() {
    let mut w = world(60);
    let g = w.groups[0].id;
    let names = ["a", "b", "c", "d", "e"];
    let oversized = w.project(g, "Oversized", &names, &[]);
    let no_last = w.project(g, "No-Last", &names, &[]);
    let other_host = w.project(g, "Other-Host", &names, &["a"]);
    let endless = w.project(g, "Endless", &names, &[]);
    // Nothing of its own: with the two strays its first page is exactly `n` long.
    let foreign = w.project(g, "Foreign", &[], &[]);
    let mut app = TestApp::prepare(&w).await;
    app.settings.registry.page_size = 2;
    app.settings.registry.max_pages = 6;
    app.registry
        .set_hostile(&registry_path(&w, oversized), Hostile::OversizedPage);
    app.registry
        .set_hostile(&registry_path(&w, no_last), Hostile::LinkWithoutLast);
    let elsewhere = RegistrySimulator::start(w.registry_paths(), common::trusted(), 0)
        .expect("second registry");
    app.registry.set_hostile(
        &registry_path(&w, other_host),
        Hostile::LinkToOtherHost(elsewhere.addr().port()),
    );
    app.registry
        .set_hostile(&registry_path(&w, endless), Hostile::EndlessPages);
    app.registry.add_foreign_entries(
        &registry_path(&w, foreign),
        &["alpha-group/other/x", "alpha-group/foreign-x/y"],
    );
    app.start(false).await;
    let total = w.projects.len();
    let db = &app.db;
    assert!(db.wait_for_rows(total, Duration::from_secs(30)).await);

    let mut expected = w.expected();
    for id in [oversized, no_last, endless] {
        expected.insert(id, Expected::FAILED);
    }
    assert_rows(&app, &expected).await;
    // The other host's `last` was used against the registry itself: all three pages were read
    // there (its count above is right), and the other server never saw a request (nor the
    // token). A troubled project's canary may have asked for its path once more, having been
    // the last one served.
    assert!(app.registry.requests_for(&registry_path(&w, other_host)) >= 3);
    assert_eq!(elsewhere.stats().list_requests, 0);
    assert_eq!(
        app.registry.requests_for(&registry_path(&w, endless)),
        6,
        "stopped at max_pages"
    );
    assert_eq!(app.status().await.ignored_entries, 2);
    assert_eq!(app.registry.stats().unauthorized, 0);
    assert_eq!(app.stop().await, RunEnd::Stopped);
}

/// A repository name no registry can hold: markup, spaces, and a line break that would forge a
/// log line of its own if it were logged raw.
const UNGRAMMATICAL: &str = "x <script> y\nERROR forged line";

#[actix_rt::test]
async fn a_listed_path_that_breaks_the_name_grammar_fails_its_project_records_none_of_it_and_is_logged_escaped(
) {
    let logs = common::logs::Logs::capture();
    let mut w = world(40);
    let g = w.groups[0].id;
    // Pages of two: the hostile entry sorts after `b`, on the second page, so the first page's
    // lost repositories were read before it.
    let hostile = w.project(g, "Hostile", &["", "a", "b", "z"], &[]);
    // One of its own and a stray with a broken name outside its path: a page of exactly `n`.
    let stray = w.project(g, "Stray", &[""], &[]);
    let mut app = TestApp::prepare(&w).await;
    app.settings.registry.page_size = 2;
    let hostile_path = registry_path(&w, hostile);
    let stray_path = registry_path(&w, stray);
    app.registry
        .set_hostile(&hostile_path, Hostile::UngrammaticalEntry(UNGRAMMATICAL));
    app.registry
        .add_foreign_entries(&stray_path, &["alpha-group/<b>elsewhere</b> x"]);
    assert_eq!(app.run_until_done().await, RunEnd::Done);

    let mut expected = w.expected();
    for id in [hostile, stray] {
        expected.insert(id, Expected::FAILED);
    }
    assert_rows(&app, &expected).await;
    // Nothing of either project is recorded missing; every other project's repositories are.
    common::assert_missing_recorded_for(&w, &expected, &app.db).await;
    assert_eq!(
        app.registry.requests_for(&hostile_path),
        2,
        "the walk ends at the page that names it, and is not tried again"
    );
    assert_eq!(app.registry.requests_for(&stray_path), 1);

    let logged = logs.text();
    for (path, entry) in [
        (
            &hostile_path,
            r#""alpha-group/hostile/x <script> y\nERROR forged line""#,
        ),
        (&stray_path, r#""alpha-group/<b>elsewhere</b> x""#),
    ] {
        let line = logged
            .lines()
            .find(|l| l.contains("project failed") && l.contains(&format!("listing {path}:")))
            .unwrap_or_else(|| panic!("no line says {path} failed:\n{logged}"));
        assert!(line.contains(entry), "{line}");
        assert!(
            line.contains("breaks the registry's name grammar"),
            "{line}"
        );
        assert!(
            line.contains("nothing of this project was recorded"),
            "{line}"
        );
    }
    assert!(
        !logged.lines().any(|l| l.starts_with("ERROR forged")),
        "the entry's line break forged a log line:\n{logged}"
    );
    assert_eq!(app.registry.stats().unauthorized, 0);
}

#[actix_rt::test]
async fn a_page_naming_a_path_that_breaks_the_grammar_ends_the_walk_there_without_a_retry() {
    let paths = ["g/p", "g/p/a", "g/p/b", "g/p/z"].map(String::from);
    let sim = RegistrySimulator::start(paths, common::trusted(), 0).expect("registry");
    sim.set_hostile("g/p", Hostile::UngrammaticalEntry(UNGRAMMATICAL));
    let client = RegistryClient::new(
        &sim.url(),
        2,
        Duration::from_secs(2),
        10,
        signer(common::FIXTURE_KEY),
    )
    .expect("client");
    let mut pages = client.pages("g/p");
    let first = pages.next_page_retrying().await.expect("the first page");
    assert_eq!(
        first.into_entries().map(|e| e.len()),
        Some(2),
        "pages stay `n` long"
    );
    match pages.next_page_retrying().await {
        Err(e @ RegistryError::HostileName { .. }) => {
            assert!(!e.is_transient());
            assert!(
                e.to_string()
                    .contains(r#""g/p/x <script> y\nERROR forged line""#),
                "{e}"
            );
        }
        other => panic!("expected a hostile name, got {other:?}"),
    }
    assert_eq!(sim.requests_for("g/p"), 2, "not tried again");
    // Every listing passes the same check: the whole walk of the repair and verify fails alike.
    match client.list_all("g/p", None).await {
        Err(RegistryError::HostileName { path, .. }) => assert_eq!(path, "g/p"),
        other => panic!("expected a hostile name, got {other:?}"),
    }
    sim.accept("g/p");
    assert_eq!(
        client.list_all("g/p", None).await.expect("healthy").len(),
        4
    );
}

#[actix_rt::test]
async fn broken_bodies_are_malformed_answers_and_retried_not_taken_for_empty_pages() {
    let sim = RegistrySimulator::start(vec!["g/p/a".to_string()], common::trusted(), 0)
        .expect("registry");
    let client = RegistryClient::new(
        &sim.url(),
        10,
        Duration::from_secs(2),
        10,
        signer(common::FIXTURE_KEY),
    )
    .expect("client");
    for (mix, what) in [
        (
            FaultMix {
                resets: 1.0,
                ..FaultMix::default()
            },
            "reset",
        ),
        (
            FaultMix {
                malformed: 1.0,
                ..FaultMix::default()
            },
            "malformed",
        ),
    ] {
        sim.set_fault_mix(mix, 1);
        for _ in 0..6 {
            match client.pages("g/p").next_page().await {
                Err(e @ RegistryError::Malformed { .. }) => assert!(e.is_transient()),
                other => panic!("{what}: expected a malformed answer, got {other:?}"),
            }
        }
    }
    sim.set_fault_mix(FaultMix::default(), 1);
    let page = client
        .pages("g/p")
        .next_page()
        .await
        .expect("healthy again");
    assert_eq!(page.into_entries().map(|p| p.len()), Some(1));
}

#[actix_rt::test]
async fn a_database_outage_mid_run_loses_and_duplicates_nothing() {
    let world = world(300);
    let mut app = TestApp::prepare(&world).await;
    app.registry.set_latency(Duration::from_millis(10));
    app.settings.worker.max_concurrency = 4;
    app.settings.database.connect_timeout = Duration::from_millis(500);
    app.start(true).await;
    let db = &app.db;
    assert!(db.wait_for_rows(40, Duration::from_secs(10)).await);

    let before = app.status().await;
    let failed_before = before.writer.as_ref().map_or(0, |w| w.failed_writes);
    app.db.refuse_connections().await;
    // The outage lasts until it is felt where rows could be lost: the Writer fails a write (and
    // must keep its rows), or analyses end unrecorded while the Writer holds nothing.
    let felt = status_becomes(&app.service().scheduler, Duration::from_secs(20), |s| {
        let writer = s.writer.as_ref();
        writer.is_some_and(|w| w.failed_writes > failed_before)
            || (s.deferred > before.deferred && writer.is_some_and(|w| w.buffered == 0))
    })
    .await;
    let during = app.status().await;
    app.db.allow_connections().await;
    assert!(felt, "the outage was felt: {during:?}");
    eprintln!(
        "DEBUG deferred {} writer {:?}",
        during.deferred, during.writer
    );

    assert_eq!(app.run_to_end().await, RunEnd::Done);
    assert_rows_match(&world, &app.db).await;
}

#[actix_rt::test]
async fn a_panicking_writer_is_restarted_with_its_buffer() {
    let world = world(30);
    let mut app = TestApp::prepare(&world).await;
    app.settings.writer.flush_interval = Duration::from_millis(300);
    // No second pass: its pass-end flush would write the lone result below before the timer could.
    app.settings.worker.rescan_interval = Duration::from_secs(3600);
    app.faults.panic_writer_once();
    app.start(false).await;
    let db = &app.db;
    assert!(db.wait_for_rows(30, Duration::from_secs(15)).await);
    assert_rows_match(&world, &app.db).await;
    // Nothing was lost in the restart: had the buffered result gone, a later pass would have
    // found its project without a row and asked the registry again (each has one page).
    assert_eq!(app.registry.stats().list_requests, 30);
    let writer = app.service().writer.clone();
    let stats = writer
        .send(GetWriterStats)
        .await
        .expect("the writer answers");
    assert_eq!(stats.restarts, 1);
    let scheduler = app.service().scheduler.clone();
    assert!(
        status_becomes(&scheduler, Duration::from_secs(5), |status| status.state
            == ServiceState::Idle)
        .await,
        "the pass ends and its flush is done"
    );
    // Its timer runs again after the restart: a lone result is written without a size flush.
    let first = world.projects[0].id;
    // (A project without a row: a row already there is an answer, never overwritten.)
    app.db
        .execute(&format!(
            "DELETE FROM container_registry_data_repair_details WHERE project_id = {first}"
        ))
        .await;
    writer.do_send(Record(TrackingRow::completed(first, 99)));
    assert!(
        eventually(Duration::from_secs(5), || async {
            app.rows_by_project()
                .await
                .get(&first)
                .is_some_and(|r| r.missing_count == 99)
        })
        .await
    );
    let stats = writer
        .send(GetWriterStats)
        .await
        .expect("the writer answers");
    assert!(stats.flushes_timer >= 1, "{stats:?}");
    assert_eq!(app.stop().await, RunEnd::Stopped);
}

#[actix_rt::test]
async fn retry_failed_analyses_failed_projects_again_and_nothing_else() {
    let world = world(30);
    let victim = world.projects[7].id;
    let path = registry_path(&world, victim);
    let mut app = TestApp::prepare(&world).await;
    app.registry.refuse(&path, 500);
    assert_eq!(app.run_until_done().await, RunEnd::Done);
    assert_eq!(
        app.rows_by_project().await[&victim].status,
        TrackingStatus::Failed
    );

    app.registry.accept(&path);
    let before = app.registry.stats().list_requests;
    let victim_before = app.registry.requests_for(&path);
    let analysis = Analysis {
        until_done: true,
        retry_failed: true,
        ..Analysis::new(&app.settings)
    };
    let service = service::start(
        &app.settings,
        signer(common::FIXTURE_KEY),
        analysis,
        ServiceOptions::default(),
    )
    .await
    .expect("starts");
    assert_eq!(service.wait().await, RunEnd::Done);
    assert_rows_match(&world, &app.db).await;
    assert_eq!(app.registry.requests_for(&path), victim_before + 1);
    assert_eq!(
        app.registry.stats().list_requests,
        before + 1,
        "only the failed project"
    );
}

#[actix_rt::test]
async fn every_way_a_project_fails_records_its_cause_and_reason_with_its_row_until_a_retry_completes(
) {
    let mut w = world(30);
    let g = w.groups[0].id;
    let orphan = w.project_without_route(g, "Orphan");
    let endless = w.project(g, "Endless", &["a", "b", "c"], &[]);
    let own_4xx = w.project(g, "Own-4xx", &[""], &[]);
    let troubled = w.project(g, "Troubled", &[""], &[]);
    let refused = w.project(g, "Refused", &[""], &[]);
    let hostile = w.project(g, "Hostile", &["", "a"], &[]);
    let crashing = w.project(g, "Crashing", &[""], &[]);
    let mut app = TestApp::prepare(&w).await;
    app.settings.registry.page_size = 2;
    app.settings.registry.max_pages = 6;
    let path = |id| registry_path(&w, id);
    app.registry
        .set_hostile(&path(endless), Hostile::EndlessPages);
    app.registry.refuse(&path(own_4xx), 400);
    app.registry.refuse(&path(troubled), 500);
    app.registry.refuse(&path(refused), 403);
    app.registry
        .set_hostile(&path(hostile), Hostile::UngrammaticalEntry(UNGRAMMATICAL));
    app.faults.panic_always_on(crashing);
    assert_eq!(app.run_until_done().await, RunEnd::Done);

    let causes: [(i64, FailureCause, &[&str]); 7] = [
        (
            orphan,
            FailureCause::NoRoute,
            &["the project has no route, so no registry path"],
        ),
        (
            endless,
            FailureCause::TooManyPages,
            &["more than 6 pages; giving up on this project"],
        ),
        (
            own_4xx,
            FailureCause::RegistryRefusedPath,
            &["the registry answered 400 (UNKNOWN)"],
        ),
        (
            troubled,
            FailureCause::Troubled,
            &[
                "the registry answered 500",
                "(3 times, each while the registry answered other paths)",
            ],
        ),
        (
            refused,
            FailureCause::Refused,
            &[
                "the registry answered 403",
                "(5 times, each while the registry answered other paths)",
            ],
        ),
        (
            hostile,
            FailureCause::HostileAnswer,
            // As logged: escaped, on one line.
            &[
                r#"the repository path "alpha-group/hostile/x <script> y\nERROR forged line", which breaks"#,
            ],
        ),
        (
            crashing,
            FailureCause::Crashed,
            &["analysing it panicked 3 times"],
        ),
    ];
    let rows = app.rows_by_project().await;
    for (id, cause, said) in causes {
        let row = &rows[&id];
        assert_eq!(row.status, TrackingStatus::Failed, "project {id}");
        let failure = row
            .failure
            .as_ref()
            .unwrap_or_else(|| panic!("project {id}: no reason recorded"));
        assert_eq!(failure.cause, cause, "project {id}: {failure:?}");
        for words in said {
            assert!(
                failure.reason.contains(words),
                "project {id} ({cause}): {words:?} not in {:?}",
                failure.reason
            );
        }
        assert!(!failure.reason.contains('\n'), "one line: {failure:?}");
    }
    let failed: Vec<i64> = causes.iter().map(|c| c.0).collect();
    for row in rows.values() {
        if !failed.contains(&row.project_id) {
            assert_eq!(
                (row.status, &row.failure),
                (TrackingStatus::Completed, &None),
                "project {}",
                row.project_id
            );
        }
    }

    // Mended (and the faults gone with the process that armed them): a retry completes all but
    // the project without a route, whose reason is recorded anew; nothing else is left.
    for id in [endless, own_4xx, troubled, refused, hostile] {
        app.registry.accept(&path(id));
    }
    let analysis = Analysis {
        until_done: true,
        retry_failed: true,
        ..Analysis::new(&app.settings)
    };
    let service = service::start(
        &app.settings,
        signer(common::FIXTURE_KEY),
        analysis,
        ServiceOptions::default(),
    )
    .await
    .expect("starts");
    assert_eq!(service.wait().await, RunEnd::Done);
    let rows = app.rows_by_project().await;
    assert_eq!(
        rows[&orphan].failure.as_ref().map(|f| f.cause),
        Some(FailureCause::NoRoute)
    );
    let left: Vec<(i64, String)> = app
        .db
        .failure_rows()
        .await
        .into_iter()
        .map(|(id, cause, _)| (id, cause))
        .collect();
    assert_eq!(left, vec![(orphan, "no_route".to_string())]);
    let mut expected = w.expected();
    expected.insert(orphan, Expected::FAILED);
    for id in [endless, own_4xx, troubled, refused, hostile, crashing] {
        assert_eq!(rows[&id].status, TrackingStatus::Completed, "project {id}");
        assert_eq!(
            rows[&id].missing_count, expected[&id].missing,
            "project {id}"
        );
    }
}

/// `n` projects whose full paths are about 194 characters long (eleven nested groups).
fn long_path_world(n: usize) -> World {
    let mut w = World::new();
    let mut parent = None;
    for level in 0..11 {
        parent = Some(w.group(parent, &format!("Nested-Group-{level:03}")));
    }
    let home = parent.expect("eleven groups");
    for i in 0..n {
        w.project(home, &format!("P-{i:03}"), &["", "img"], &["img"]);
    }
    w
}

#[actix_rt::test]
async fn long_paths_behind_a_proxy_with_nginx_header_limits_are_all_analysed() {
    let world = long_path_world(48);
    assert!(world.projects[0]
        .full_path
        .as_ref()
        .is_some_and(|p| p.len() > 190));
    let mut app = TestApp::prepare(&world).await;
    // nginx's default: one header line must fit in 8 KiB.
    app.registry.set_header_limit(Some(8192));
    assert_eq!(app.run_until_done().await, RunEnd::Done);
    assert_rows_match(&world, &app.db).await;
    assert_eq!(
        app.registry.stats().headers_too_large,
        0,
        "no token too long"
    );
}

#[actix_rt::test]
async fn a_shared_token_a_proxy_refuses_is_retried_with_a_token_for_the_project_alone() {
    let world = long_path_world(32);
    let mut app = TestApp::prepare(&world).await;
    // Tighter than any token of several long paths, wide enough for one path's token.
    app.registry.set_header_limit(Some(2000));
    assert_eq!(app.run_until_done().await, RunEnd::Done);
    assert_rows_match(&world, &app.db).await;
    // The first refusals teach the service the proxy's limit: later batches fit under it.
    let refused = app.registry.stats().headers_too_large;
    assert!(
        refused > 0 && refused < 16,
        "the first shared tokens were refused, later ones not: {:?}",
        app.registry.stats()
    );
    assert!(app.signer.max_token_bytes() < MAX_TOKEN_BYTES);
}

#[actix_rt::test]
async fn a_fresh_process_with_only_troubled_projects_left_records_them_failed_and_ends() {
    let world = world(20);
    let mut app = TestApp::prepare(&world).await;
    // An earlier process analysed everything but two projects, which the registry answers 500
    // for every time: this process has served no project when they get in trouble.
    let troubled: Vec<i64> = world.projects.iter().take(2).map(|p| p.id).collect();
    app.db
        .execute(&format!(
            "INSERT INTO container_registry_data_repair_details (project_id, missing_count, status, created_at, updated_at) \
             SELECT id, 0, 1, now(), now() FROM projects WHERE id NOT IN ({}, {})",
            troubled[0], troubled[1]
        ))
        .await;
    for &id in &troubled {
        app.registry.refuse(&registry_path(&world, id), 500);
    }
    assert_eq!(app.run_until_done().await, RunEnd::Done);
    let rows = app.rows_by_project().await;
    for id in troubled {
        assert_eq!(rows[&id].status, TrackingStatus::Failed, "project {id}");
    }
}

#[actix_rt::test]
async fn a_registry_that_loses_its_api_mid_run_fails_no_project_and_is_waited_for() {
    let world = world(300);
    let mut app = TestApp::prepare(&world).await;
    app.registry.set_latency(Duration::from_millis(5));
    app.start(true).await;
    assert!(app.db.wait_for_rows(20, Duration::from_secs(30)).await);
    // A deploy brings the registry back without its metadata database, then with it.
    app.registry.set_api_mode(ApiMode::Distribution);
    let scheduler = app.service().scheduler.clone();
    assert!(
        status_becomes(&scheduler, Duration::from_secs(20), |s| s.breaker
            == BreakerPosition::Open)
        .await
    );
    assert_eq!(
        failed_rows(&app).await,
        0,
        "a bare 404 is no project's fault"
    );
    app.registry.set_api_mode(ApiMode::Gitlab);
    assert_eq!(app.run_to_end().await, RunEnd::Done);
    assert_rows_match(&world, &app.db).await;
}

#[actix_rt::test]
async fn a_registry_that_comes_up_without_gitlabs_api_ends_the_run_with_nothing_recorded() {
    let world = world(20);
    let (db, port, service) = start_before_the_registry(&world).await;
    let registry = RegistrySimulator::start(world.registry_paths(), common::trusted(), port)
        .expect("registry");
    registry.set_api_mode(ApiMode::Distribution);
    match common::run_to_end(service).await {
        RunEnd::RegistryWithoutApi(absent) => {
            let message = absent.to_string();
            assert!(message.contains("answered 404"), "{message}");
            assert!(message.contains(&port.to_string()), "{message}");
        }
        other => panic!("expected the run to end for want of the API, got {other:?}"),
    }
    assert_eq!(registry.stats().list_requests, 0);
    assert!(db.rows().await.is_empty());
}

#[actix_rt::test]
async fn a_project_the_registry_keeps_refusing_is_recorded_failed_and_the_run_ends() {
    let world = world(30);
    let mut app = TestApp::prepare(&world).await;
    // The last three projects: once the others are done, only they are left.
    let refused: Vec<(i64, u16)> = world
        .projects
        .iter()
        .rev()
        .take(3)
        .zip([401, 403, 429])
        .map(|(p, status)| (p.id, status))
        .collect();
    for &(id, status) in &refused {
        app.registry.refuse(&registry_path(&world, id), status);
    }
    assert_eq!(app.run_until_done().await, RunEnd::Done);
    let mut expected = world.expected();
    for &(id, _) in &refused {
        expected.insert(id, Expected::FAILED);
    }
    assert_rows(&app, &expected).await;
}
