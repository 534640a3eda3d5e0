//! Fencing: a fleet member that could have lost its work acts on nothing until a heartbeat
//! confirms it. A member frozen (SIGSTOP) past the member timeout and thawed, one frozen for less,
//! and heartbeats that hang: the registry never sees more than the fleet's total, no project is
//! asked a third time, and every row is right.

use std::time::Duration;

use crate::common::process::{busy_world, service_env, spawn, Env, Running};
use crate::common::{self, assert_rows_match, eventually, TestApp, TestDb};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use registry_repair::analysis::Analysis;
use registry_repair::demo::seed::World;
use registry_repair::scheduler::{GetStatus, RunEnd, ServiceState};
use registry_repair::service::{self, Service, ServiceOptions};

const HEARTBEAT_MS: u64 = 200;
const TOTAL: usize = 6;

async fn prepare(world: &World, latency_ms: u64) -> TestApp {
    let app = TestApp::prepare(world).await;
    app.registry.set_latency(Duration::from_millis(latency_ms));
    app
}

fn member_env(app: &TestApp, timeout_ms: u64) -> Env {
    service_env(&app.db, &app.registry.url(), "127.0.0.1:0")
        .set("WORKER__MAX_CONCURRENCY", TOTAL.to_string())
        .set("FLEET__HEARTBEAT_INTERVAL_MS", HEARTBEAT_MS.to_string())
        .set("FLEET__MEMBER_TIMEOUT_MS", timeout_ms.to_string())
}

/// Every project asked at least once and none a third time.
fn assert_asked_at_most_twice(app: &TestApp, world: &World) -> usize {
    let asked = common::asked(&app.registry, world);
    let thrice: Vec<_> = asked.iter().filter(|(_, n)| **n > 2).collect();
    assert!(thrice.is_empty(), "asked more than twice: {thrice:?}");
    assert!(asked.values().all(|n| *n >= 1), "a project never asked");
    asked.values().filter(|n| **n == 2).count()
}

/// The `state` of the member row of the process `pid`.
async fn member_state(db: &TestDb, pid: i32) -> Option<String> {
    use diesel::sql_types::{Integer, Text};
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct State {
        #[diesel(sql_type = Text)]
        state: String,
    }
    let mut conn = db.database().conn().await.expect("a connection");
    diesel::sql_query("SELECT state FROM registry_repair_members WHERE pid = $1")
        .bind::<Integer, _>(pid)
        .get_results::<State>(&mut conn)
        .await
        .expect("the members")
        .pop()
        .map(|s| s.state)
}

/// Three members working, the first (returned apart) with a share and projects of its own.
async fn three_working(app: &TestApp, env: &Env) -> (Running, Vec<Running>) {
    let mut members: Vec<Running> = (0..3)
        .map(|_| spawn(&["run", "--until-done"], env))
        .collect();
    let victim = members.remove(0);
    assert!(
        victim
            .logs_within("share of the fleet's concurrency", Duration::from_secs(30))
            .await,
        "the first member never took a share"
    );
    assert!(app.db.wait_for_rows(150, Duration::from_secs(30)).await);
    (victim, members)
}

#[actix_rt::test]
async fn a_member_frozen_past_the_timeout_and_thawed_does_nothing_more() {
    const TIMEOUT_MS: u64 = 3000;
    let world = busy_world(1500);
    let app = prepare(&world, 40).await;
    let env = member_env(&app, TIMEOUT_MS);
    let (mut victim, others) = three_working(&app, &env).await;

    victim.signal(libc::SIGSTOP);
    // The others find it silent for the timeout, take it for gone and its work over, and their
    // shares grow to the whole total.
    let gone = eventually(Duration::from_secs(20), || async {
        member_state(&app.db, victim.pid()).await.as_deref() == Some("lost")
    })
    .await;
    assert!(gone, "the frozen member was never taken for gone");
    let full = eventually(Duration::from_secs(20), || async {
        app.registry.stats().in_flight == TOTAL
    })
    .await;
    let peak_frozen = app.registry.stats().max_in_flight;
    app.registry.reset_max_in_flight();
    victim.signal(libc::SIGCONT);

    let thawed = victim.wait(Duration::from_secs(30)).await;
    thawed
        .assert_exit(1)
        .assert_no_panic()
        .assert_stderr_has("took over its work");
    for mut member in others {
        member
            .wait(Duration::from_secs(120))
            .await
            .assert_exit(0)
            .assert_no_panic();
    }
    assert!(
        full,
        "the others never used the whole total while it was frozen"
    );
    assert!(
        peak_frozen <= TOTAL,
        "the registry saw {peak_frozen} at once before the thaw, over {TOTAL}"
    );
    let peak = app.registry.stats().max_in_flight;
    assert!(
        peak <= TOTAL,
        "the registry saw {peak} at once after the thaw, over {TOTAL}"
    );
    let twice = assert_asked_at_most_twice(&app, &world);
    eprintln!("asked twice: {twice} projects");
    assert_rows_match(&world, &app.db).await;
}

#[actix_rt::test]
async fn a_member_frozen_for_less_than_the_timeout_waits_for_a_heartbeat_then_goes_on() {
    const TIMEOUT_MS: u64 = 5000;
    let world = busy_world(1500);
    let app = prepare(&world, 40).await;
    let env = member_env(&app, TIMEOUT_MS);
    let (victim, others) = three_working(&app, &env).await;

    // Past half the timeout (its hold on its work lapses), well short of the whole.
    victim.signal(libc::SIGSTOP);
    tokio::time::sleep(Duration::from_millis(TIMEOUT_MS * 3 / 5)).await;
    victim.signal(libc::SIGCONT);
    assert!(
        victim
            .logs_within(
                "a heartbeat confirmed this member again",
                Duration::from_secs(10)
            )
            .await,
        "the thawed member never said it acts again"
    );

    let mut members = others;
    members.push(victim);
    for mut member in members {
        let out = member.wait(Duration::from_secs(120)).await;
        out.assert_exit(0).assert_no_panic();
        assert!(
            !out.stderr.contains("taken for gone"),
            "nobody is taken for gone\n{}",
            out.dump()
        );
    }
    let peak = app.registry.stats().max_in_flight;
    assert!(
        peak <= TOTAL,
        "the registry saw {peak} at once, over {TOTAL}"
    );
    assert_asked_at_most_twice(&app, &world);
    assert_rows_match(&world, &app.db).await;
}

async fn start_member(app: &TestApp) -> Service<Analysis> {
    let analysis = Analysis {
        until_done: true,
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

#[actix_rt::test]
async fn members_whose_heartbeats_hang_stop_asking_then_go_on_when_they_go_through() {
    const TIMEOUT_MS: u64 = 3000;
    let world = busy_world(1500);
    let mut app = prepare(&world, 40).await;
    app.settings.worker.max_concurrency = TOTAL;
    app.settings.fleet.heartbeat_interval = Duration::from_millis(HEARTBEAT_MS);
    app.settings.fleet.member_timeout = Duration::from_millis(TIMEOUT_MS);
    let members = [start_member(&app).await, start_member(&app).await];
    assert!(app.db.wait_for_rows(150, Duration::from_secs(30)).await);
    assert!(app.registry.stats().in_flight > 0, "nothing in flight");

    // Every heartbeat hangs on a lock (a long ALTER, VACUUM FULL, a stuck session), neither
    // failing nor going through: the statement timeout fails it, and the members stop acting
    // half a timeout after their last heartbeat went through.
    let _xmin = common::keeping_a_transaction_open().await;
    let mut lock = AsyncPgConnection::establish(&app.db.url)
        .await
        .expect("a connection of the test's own");
    lock.batch_execute("BEGIN; LOCK TABLE registry_repair_members IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("the lock");
    for member in &members {
        assert!(
            common::status_becomes(&member.scheduler, Duration::from_secs(10), |s| {
                s.state == ServiceState::Fenced
            })
            .await,
            "a member never stopped acting"
        );
    }
    common::assert_in_flight_settles_at(&app.registry, 0, Duration::from_millis(TIMEOUT_MS)).await;
    let handed_back: u64 = {
        let mut n = 0;
        for member in &members {
            n += member
                .scheduler
                .send(GetStatus)
                .await
                .expect("status")
                .handed_back;
        }
        n
    };
    // Hung past the whole timeout: nobody could judge anybody dead (nobody's heartbeat went
    // through), and nothing is asked meanwhile.
    app.registry.reset_max_in_flight();
    tokio::time::sleep(Duration::from_millis(TIMEOUT_MS)).await;
    assert_eq!(app.registry.stats().max_in_flight, 0, "asked while fenced");
    lock.batch_execute("ROLLBACK")
        .await
        .expect("the lock released");
    drop(_xmin);

    for member in members {
        let end = tokio::time::timeout(Duration::from_secs(120), member.wait())
            .await
            .expect("the member's run ends");
        assert_eq!(end, RunEnd::Done);
    }
    let peak = app.registry.stats().max_in_flight;
    assert!(
        peak <= TOTAL,
        "the registry saw {peak} at once, over {TOTAL}"
    );
    let twice = assert_asked_at_most_twice(&app, &world);
    assert!(
        twice as u64 <= handed_back,
        "{twice} asked twice, {handed_back} handed back"
    );
    assert_rows_match(&world, &app.db).await;
}
