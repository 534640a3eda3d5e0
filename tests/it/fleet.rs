//! A fleet: several instances of `run` against one database, with no shard setting, share the
//! projects and the concurrency through it. In-process instances where the test needs their
//! status; processes where one must die by SIGKILL.

use std::time::Duration;

use crate::common::process::{busy_world, service_env, spawn, Running};
use crate::common::{self, assert_rows_match, eventually, TestApp};
use crate::operate::set_gitlab_switches;
use registry_repair::admin::AdminClient;
use registry_repair::analysis::Analysis;
use registry_repair::config::ControlSource;
use registry_repair::demo::seed::World;
use registry_repair::scheduler::{GetStatus, RunEnd, SetConcurrency, SetEnabled};
use registry_repair::service::{self, Service, ServiceOptions};

/// Short enough that a takeover fits a test; three heartbeats fit the timeout many times over.
const HEARTBEAT_MS: u64 = 200;
const TIMEOUT_MS: u64 = 2000;
/// For the members started in-process, none of which dies: a timeout a loaded machine cannot
/// outlast, so that no member fences itself (its projects would rightly be asked again).
const STEADY_TIMEOUT: Duration = Duration::from_secs(20);

async fn prepare(world: &World, max_concurrency: usize, latency_ms: u64) -> TestApp {
    let mut app = TestApp::prepare(world).await;
    app.registry.set_latency(Duration::from_millis(latency_ms));
    app.settings.worker.max_concurrency = max_concurrency;
    app.settings.fleet.heartbeat_interval = Duration::from_millis(HEARTBEAT_MS);
    app.settings.fleet.member_timeout = STEADY_TIMEOUT;
    app
}

async fn start(app: &TestApp, until_done: bool) -> Service<Analysis> {
    let analysis = Analysis {
        until_done,
        ..Analysis::new(&app.settings)
    };
    service::start(
        &app.settings,
        app.signer.clone(),
        analysis,
        ServiceOptions::default(),
    )
    .await
    .expect("a member starts")
}

/// Waits for a member to end by itself: longer than one instance's runs get, since a slow
/// machine slows three at once.
async fn finish(member: Service<Analysis>) -> RunEnd {
    tokio::time::timeout(Duration::from_secs(180), member.wait())
        .await
        .expect("the member's run ends within 180 s")
}

async fn analysed(member: &Service<Analysis>) -> u64 {
    member
        .scheduler
        .send(GetStatus)
        .await
        .map_or(0, |s| s.analysed)
}

#[actix_rt::test]
async fn three_instances_without_shards_give_every_row_right_and_ask_each_project_once() {
    let world = busy_world(1500);
    let app = prepare(&world, 6, 5).await;
    let _watermark = common::needing_the_watermark_to_move().await;
    let mut members = Vec::new();
    for _ in 0..3 {
        members.push(start(&app, true).await);
    }
    // Every member works, not just the first to read.
    let mut everyone_worked = true;
    for member in &members {
        everyone_worked &= eventually(Duration::from_secs(20), || async {
            analysed(member).await > 0
        })
        .await;
    }
    for member in members {
        assert_eq!(finish(member).await, RunEnd::Done);
    }
    assert!(everyone_worked, "a member never analysed anything");
    assert_rows_match(&world, &app.db).await;
    let asked = common::asked(&app.registry, &world);
    let not_once: Vec<_> = asked.iter().filter(|(_, n)| **n != 1).collect();
    assert!(not_once.is_empty(), "asked other than once: {not_once:?}");
    assert!(app.registry.stats().max_in_flight <= 6);
}

#[actix_rt::test]
async fn the_registry_never_sees_more_than_gitlabs_setting_from_the_whole_fleet() {
    let world = busy_world(1200);
    let mut app = prepare(&world, 2, 10).await;
    set_gitlab_switches(&app.db, 4, true).await;
    app.settings.control.source = ControlSource::Gitlab;
    app.settings.control.poll_interval = Duration::from_millis(200);
    let mut members = Vec::new();
    for _ in 0..3 {
        members.push(start(&app, true).await);
    }
    for member in members {
        assert_eq!(finish(member).await, RunEnd::Done);
    }
    assert_rows_match(&world, &app.db).await;
    let peak = app.registry.stats().max_in_flight;
    // Each instance on its own would have used GitLab's 4: 12 in all.
    assert!(peak <= 4, "peak {peak} over GitLab's setting of 4");
    assert!(
        peak >= 3,
        "the fleet never came near its total: peak {peak}"
    );
}

#[actix_rt::test]
async fn a_member_that_joins_mid_run_takes_a_share_and_work() {
    let world = busy_world(2000);
    let app = prepare(&world, 8, 10).await;
    let mut members = Vec::new();
    for _ in 0..3 {
        members.push(start(&app, true).await);
    }
    assert!(app.db.wait_for_rows(300, Duration::from_secs(30)).await);
    let late = start(&app, true).await;
    let took_a_share = common::status_becomes(&late.scheduler, Duration::from_secs(20), |s| {
        s.share.is_some_and(|share| share > 0) && s.analysed > 0
    })
    .await;
    members.push(late);
    for member in members {
        assert_eq!(finish(member).await, RunEnd::Done);
    }
    assert!(
        took_a_share,
        "the fourth member never took a share and work"
    );
    assert_rows_match(&world, &app.db).await;
    assert!(common::asked(&app.registry, &world)
        .values()
        .all(|n| *n == 1));
    assert!(app.registry.stats().max_in_flight <= 8);
}

#[actix_rt::test]
async fn concurrency_pause_and_resume_sent_to_one_member_act_on_the_whole_fleet() {
    // Requests slow enough that the work outlasts every step on a loaded machine: at 6 in flight
    // the 3000 projects take 100 s, and the last step needs projects left to reach 6 again.
    let world = busy_world(3000);
    let app = prepare(&world, 2, 200).await;
    let a = start(&app, false).await;
    let b = start(&app, false).await;
    common::assert_in_flight_settles_at(&app.registry, 2, Duration::from_secs(20)).await;
    a.scheduler
        .send(SetConcurrency(6))
        .await
        .expect("the scheduler answers");
    assert!(
        common::status_becomes(&b.scheduler, Duration::from_secs(10), |s| {
            s.max_concurrency == 6
        })
        .await,
        "the other member never took the new total"
    );
    common::assert_in_flight_settles_at(&app.registry, 6, Duration::from_secs(20)).await;
    app.registry.reset_max_in_flight();
    // Either member's status shows the whole fleet.
    let shown = eventually(Duration::from_secs(20), || async {
        let status = AdminClient::new(b.admin_addr.expect("the admin API"), None)
            .status()
            .await
            .expect("status");
        status.fleet.is_some_and(|fleet| {
            fleet.live == 2
                && fleet.total == 6
                && fleet.shares == 6
                && fleet.members.iter().all(|m| m.live && m.share >= 1)
                && fleet.members.iter().any(|m| m.id == fleet.me)
        })
    })
    .await;
    assert!(shown, "status does not show both members and their shares");
    assert!(app.registry.stats().max_in_flight <= 6);
    // Pause sent to one member pauses both; resume sent to the other resumes both.
    a.scheduler
        .send(SetEnabled(false))
        .await
        .expect("the scheduler answers");
    assert!(
        common::status_becomes(&b.scheduler, Duration::from_secs(10), |s| !s.enabled).await,
        "the other member never paused"
    );
    common::assert_in_flight_settles_at(&app.registry, 0, Duration::from_secs(10)).await;
    b.scheduler
        .send(SetEnabled(true))
        .await
        .expect("the scheduler answers");
    assert!(
        common::status_becomes(&a.scheduler, Duration::from_secs(10), |s| s.enabled).await,
        "the first member never resumed"
    );
    common::assert_in_flight_settles_at(&app.registry, 6, Duration::from_secs(20)).await;
    for member in [a, b] {
        member.shutdown();
        assert_eq!(member.wait().await, RunEnd::Stopped);
    }
}

fn member_env(app: &TestApp) -> crate::common::process::Env {
    service_env(&app.db, &app.registry.url(), "127.0.0.1:0")
        .set("WORKER__MAX_CONCURRENCY", "6")
        .set("FLEET__HEARTBEAT_INTERVAL_MS", HEARTBEAT_MS.to_string())
        .set("FLEET__MEMBER_TIMEOUT_MS", TIMEOUT_MS.to_string())
}

#[actix_rt::test]
async fn a_member_killed_early_and_never_restarted_leaves_its_work_to_the_others() {
    let world = busy_world(1500);
    let app = prepare(&world, 6, 10).await;
    let env = member_env(&app);
    let mut members: Vec<Running> = (0..3)
        .map(|_| spawn(&["run", "--until-done"], &env))
        .collect();
    // The victim has work of its own before it dies: a share, and projects in flight.
    let victim = members.remove(0);
    assert!(
        victim
            .logs_within("share of the fleet's concurrency", Duration::from_secs(30))
            .await
    );
    assert!(app.db.wait_for_rows(200, Duration::from_secs(30)).await);
    victim.signal(libc::SIGKILL);
    let mut took_over = false;
    for mut member in members {
        let finished = member.wait(Duration::from_secs(90)).await;
        finished.assert_exit(0).assert_no_panic();
        took_over |= finished
            .stderr
            .contains("took over the work of a member whose heartbeat stopped");
    }
    assert!(took_over, "no member took over the victim's work");
    assert_rows_match(&world, &app.db).await;
    let asked = common::asked(&app.registry, &world);
    assert!(asked.values().all(|n| *n >= 1));
    // Only what the victim had in flight or not yet written is asked again.
    let again = asked.values().filter(|n| **n > 1).count();
    assert!(again <= 6 + 100, "{again} projects asked twice");
}

#[actix_rt::test]
async fn a_member_whose_shard_count_differs_is_refused_naming_the_one_it_would_overlap() {
    let world = busy_world(50);
    let mut app = prepare(&world, 2, 0).await;
    app.settings.worker.shard = "0/2".parse().expect("a shard");
    let first = start(&app, false).await;
    app.settings.worker.shard = "0/3".parse().expect("a shard");
    let refused = service::start(
        &app.settings,
        app.signer.clone(),
        Analysis::new(&app.settings),
        ServiceOptions::default(),
    )
    .await
    .err()
    .expect("a member with another shard count is refused");
    let message = refused.to_string();
    assert!(
        message.contains("worker.shard = 0/2") && message.contains("worker.shard = 0/3"),
        "{message}"
    );
    first.shutdown();
    assert_eq!(first.wait().await, RunEnd::Stopped);
}

#[actix_rt::test]
async fn a_fleet_works_through_pgbouncer_after_another_client_left_statements_behind() {
    use crate::common::pgbouncer::PgBouncer;
    use crate::pgbouncer::{leave_statements_behind, SERVER_CONNECTIONS};
    let Some(bouncer) = PgBouncer::start(
        "a_fleet_works_through_pgbouncer_after_another_client_left_statements_behind",
        "transaction",
        SERVER_CONNECTIONS,
    ) else {
        return;
    };
    let world = busy_world(900);
    let app = prepare(&world, 6, 5).await;
    // No prepared_statements in the URL: each member finds the pooler itself.
    let env = member_env(&app).set("DATABASE__URL", bouncer.url(&app.db.name, ""));
    leave_statements_behind(&bouncer, &app.db, SERVER_CONNECTIONS).await;
    let members: Vec<Running> = (0..3)
        .map(|_| spawn(&["run", "--until-done"], &env))
        .collect();
    for mut member in members {
        let out = member.wait(Duration::from_secs(120)).await;
        out.assert_exit(0).assert_no_panic();
        assert!(
            !out.stderr.contains("ERROR") && !out.stderr.contains("prepared statement"),
            "nothing may fail through the pooler\n{}",
            out.dump()
        );
    }
    bouncer.stop();
    assert_rows_match(&world, &app.db).await;
    assert!(common::asked(&app.registry, &world)
        .values()
        .all(|n| *n == 1));
    assert!(app.registry.stats().max_in_flight <= 6);
}
