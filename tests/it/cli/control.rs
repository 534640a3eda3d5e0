//! `status`, `concurrency`, `pause` and `resume` on a running service, and SIGTERM stopping it.

use crate::common::TestApp;
use std::time::{Duration, Instant};

use crate::common::eventually;
use crate::common::process::{
    assert_written_rows_correct, busy_world, cli, free_port, service_env, spawn, Env,
};

async fn status_json(env: &Env) -> serde_json::Value {
    let out = cli(&["status", "--json"], env, Duration::from_secs(15)).await;
    out.assert_exit(0).assert_no_panic();
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("status --json is not JSON: {e}\n{}", out.dump()))
}

#[actix_rt::test]
async fn control_commands_steer_a_running_service_and_sigterm_stops_it_cleanly() {
    let world = busy_world(400);
    let TestApp { db, registry, .. } = TestApp::prepare(&world).await;
    registry.set_latency(Duration::from_millis(100));
    let listen = format!("127.0.0.1:{}", free_port());
    let env = service_env(&db, &registry.url(), &listen).set("WORKER__MAX_CONCURRENCY", "1");
    let control = Env::new().set("ADMIN__LISTEN", &listen);

    let mut service = spawn(&["run"], &env);

    // The service is up once `status` answers.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(
            !service.has_exited(),
            "the service exited early:\n{}",
            service.wait(Duration::from_secs(1)).await.dump()
        );
        let out = cli(&["status"], &control, Duration::from_secs(15)).await;
        if out.code == Some(0) {
            out.assert_stdout_has("max_concurrency");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "`status` never succeeded:\n{}",
            out.dump()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = &registry;
    assert!(
        eventually(Duration::from_secs(5), || async move {
            r.stats().list_requests > 0
        })
        .await,
        "the service asks the registry"
    );
    assert!(
        registry.stats().max_in_flight <= 1,
        "max_concurrency 1 means one request at a time: {:?}",
        registry.stats()
    );

    // Raise the concurrency: four requests at once, soon, and never more.
    cli(&["concurrency", "4"], &control, Duration::from_secs(15))
        .await
        .assert_exit(0)
        .assert_stdout_has("4")
        .assert_no_panic();
    assert!(
        eventually(Duration::from_secs(5), || async move {
            r.stats().in_flight >= 4
        })
        .await,
        "in flight should reach 4: {:?}",
        registry.stats()
    );
    assert!(
        registry.stats().max_in_flight <= 4,
        "{:?}",
        registry.stats()
    );
    registry.reset_max_in_flight();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let window = registry.stats();
    assert!(
        window.max_in_flight <= 4,
        "never more than 4 in flight: {window:?}"
    );
    assert!(window.max_in_flight >= 3, "still busy: {window:?}");

    // Pause: in-flight projects finish, nothing new starts.
    cli(&["pause"], &control, Duration::from_secs(15))
        .await
        .assert_exit(0)
        .assert_no_panic();
    assert!(
        eventually(Duration::from_secs(3), || async move {
            r.stats().in_flight == 0
        })
        .await,
        "in-flight requests finish after a pause: {:?}",
        registry.stats()
    );
    let paused_at = registry.stats().list_requests;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        registry.stats().list_requests,
        paused_at,
        "a paused service asks the registry nothing"
    );
    let paused = status_json(&control).await;
    assert_eq!(paused["enabled"], serde_json::json!(false), "{paused}");
    assert_eq!(paused["max_concurrency"], serde_json::json!(4), "{paused}");
    assert_eq!(paused["in_flight"], serde_json::json!(0), "{paused}");

    // Resume: work starts again.
    cli(&["resume"], &control, Duration::from_secs(15))
        .await
        .assert_exit(0)
        .assert_no_panic();
    assert!(
        eventually(Duration::from_secs(2), || async move {
            r.stats().list_requests > paused_at + 4
        })
        .await,
        "a resumed service asks the registry again: {:?}",
        registry.stats()
    );
    let resumed = status_json(&control).await;
    assert_eq!(resumed["enabled"], serde_json::json!(true), "{resumed}");
    assert_eq!(
        resumed["max_concurrency"],
        serde_json::json!(4),
        "{resumed}"
    );
    let analysed_before_stop = resumed["analysed"].as_u64().expect("analysed is a number");
    assert!(analysed_before_stop > 0, "{resumed}");
    assert!(
        analysed_before_stop < world.projects.len() as u64,
        "the world must outlast the test: {resumed}"
    );

    // SIGTERM: in-flight projects finish, results are flushed, exit 0.
    service.signal(libc::SIGTERM);
    let stopped = service.wait(Duration::from_secs(15)).await;
    stopped.assert_exit(0).assert_no_panic();
    let written = assert_written_rows_correct(&world, &db).await;
    assert!(
        written as u64 >= analysed_before_stop,
        "every project analysed before the signal was written ({written} rows, {analysed_before_stop} analysed)\n{}",
        stopped.dump()
    );
    assert!(written < world.projects.len(), "stopped before the end");
}

/// The `run` process, up once `status` answers.
async fn running(env: &Env) -> crate::common::process::Running {
    let service = spawn(&["run"], env);
    let up = eventually(Duration::from_secs(30), || async {
        cli(&["status"], env, Duration::from_secs(10)).await.code == Some(0)
    })
    .await;
    assert!(up, "`status` never answered");
    service
}

#[actix_rt::test]
async fn a_pause_and_a_concurrency_set_by_command_hold_across_a_restart_until_resumed() {
    let world = busy_world(400);
    let TestApp { db, registry, .. } = TestApp::prepare(&world).await;
    registry.set_latency(Duration::from_millis(50));
    let env = service_env(&db, &registry.url(), &format!("127.0.0.1:{}", free_port()))
        .set("WORKER__MAX_CONCURRENCY", "2");

    let mut service = running(&env).await;
    cli(&["concurrency", "3"], &env, Duration::from_secs(15))
        .await
        .assert_exit(0);
    cli(&["pause"], &env, Duration::from_secs(15))
        .await
        .assert_exit(0);
    service.signal(libc::SIGTERM);
    service.wait(Duration::from_secs(30)).await.assert_exit(0);

    // A restart (a reboot, a deploy) with the same configuration: still paused, at 3.
    let asked_before = registry.stats().list_requests;
    let mut service = running(&env).await;
    let status = status_json(&env).await;
    assert_eq!(status["enabled"], false, "{status}");
    assert_eq!(status["max_concurrency"], 3, "{status}");
    assert!(
        service
            .logs_within(
                "the fleet is paused, as `registry-repair pause` left it",
                Duration::from_secs(10)
            )
            .await,
        "the restart says loudly that it stays paused"
    );
    // Nothing is asked while paused (a short quiet spell).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        registry.stats().list_requests,
        asked_before,
        "asked while paused"
    );

    cli(&["resume"], &env, Duration::from_secs(15))
        .await
        .assert_exit(0);
    let r = &registry;
    assert!(
        eventually(Duration::from_secs(10), || async move {
            r.stats().list_requests > asked_before
        })
        .await,
        "resumed: the registry is asked again"
    );
    service.signal(libc::SIGTERM);
    service.wait(Duration::from_secs(30)).await.assert_exit(0);

    // Resumed by command, it starts resumed; the commanded total still holds, and it says so.
    let mut service = running(&env).await;
    let status = status_json(&env).await;
    assert_eq!(status["enabled"], true, "{status}");
    assert_eq!(status["max_concurrency"], 3, "{status}");
    assert!(
        service
            .logs_within(
                "as a control command set them, hold over this instance's configuration",
                Duration::from_secs(10)
            )
            .await
    );
    service.signal(libc::SIGTERM);
    service.wait(Duration::from_secs(30)).await.assert_exit(0);
    assert_written_rows_correct(&world, &db).await;
}
