//! `repair plan` and `repair apply` beside a running `run` with the same configuration: they open
//! no admin API of their own (the port is the service's), their registry requests count in the
//! fleet's total, and the running service's `status` shows the repair under way.

use super::*;
use crate::common::process::{free_port, spawn};
use registry_repair::db::tracking::TrackingStatus;

#[actix_rt::test]
async fn plan_and_apply_run_beside_run_with_the_same_configuration_within_the_fleets_total() {
    const TOTAL: usize = 4;
    let mut w = World::new();
    let lost = w.group(None, "Many-Grp");
    for i in 0..60 {
        w.project(lost, &format!("P{i}"), &NAMES, &[]);
    }
    let busy = w.group(None, "Busy-Grp");
    for i in 0..2000 {
        w.project(busy, &format!("B{i}"), &["x"], &["x"]);
    }
    let app = TestApp::prepare(&w).await;
    let database = app.db.database();
    // The lost projects were analysed; the busy ones are what `run` works on meanwhile.
    let analysed: Vec<TrackingRow> = w
        .expected()
        .into_iter()
        .filter(|(_, e)| e.missing > 0)
        .map(|(id, e)| TrackingRow::completed(id, e.missing))
        .collect();
    assert_eq!(analysed.len(), 60);
    tracking::upsert(&database, &analysed)
        .await
        .expect("tracking rows");
    app.registry.set_latency(Duration::from_millis(50));
    let admin = format!("127.0.0.1:{}", free_port());
    let env = service_env(&app.db, &app.registry.url(), &admin)
        .set("WORKER__MAX_CONCURRENCY", TOTAL.to_string())
        .set("FLEET__HEARTBEAT_INTERVAL_MS", "200")
        .set("FLEET__MEMBER_TIMEOUT_MS", "3000");

    let mut run = spawn(&["run"], &env);
    assert!(
        run.logs_within("share of the fleet's concurrency", Duration::from_secs(30))
            .await,
        "the service never took its share"
    );
    assert!(app.db.wait_for_rows(200, Duration::from_secs(30)).await);

    // A plan beside it: no second door on the same port, nothing written.
    let plan = cli(&["repair", "plan"], &env, Duration::from_secs(120)).await;
    plan.assert_exit(0)
        .assert_no_panic()
        .assert_stdout_has("projects          60");
    assert!(
        !plan.stderr.contains("Address already in use"),
        "{}",
        plan.dump()
    );
    assert_eq!(written_projects(&database).await, 0);

    // An apply beside it: the service's status shows it while it runs.
    let mut apply = spawn(&["repair", "apply"], &env);
    let shown = common::eventually(Duration::from_secs(60), || async {
        let status = cli(&["status"], &env, Duration::from_secs(10)).await;
        status.stdout.contains("repair apply (run ") && status.stdout.contains(" under way on ")
    })
    .await;
    let applied = apply.wait(Duration::from_secs(120)).await;
    applied.assert_exit(0).assert_no_panic();
    assert!(!applied.stderr.contains("Address already in use"));
    assert!(shown, "the running service's status never showed the apply");
    let restored = count(
        &database,
        "SELECT count(*) AS n FROM registry_repair_restored",
    )
    .await;
    assert_eq!(restored, (60 * NAMES.len()) as i64, "every lost row once");
    assert_eq!(
        count(
            &database,
            "SELECT count(*) AS n FROM registry_repair_run_projects WHERE restored <> 3"
        )
        .await,
        0,
        "each project written whole"
    );

    // Through it all, the registry never saw more than the fleet's total at once.
    let peak = app.registry.stats().max_in_flight;
    assert!(
        peak <= TOTAL,
        "the registry saw {peak} at once, over {TOTAL}"
    );
    run.signal(libc::SIGTERM);
    run.wait(Duration::from_secs(60)).await.assert_exit(0);
    // The service's rows are right, and the apply's restores show in the lost ones' counts.
    let rows = app.db.rows().await;
    assert!(rows.len() > 200, "the service analysed meanwhile");
    assert!(
        rows.iter()
            .all(|r| r.status == TrackingStatus::Completed && r.missing_count == 0),
        "every row completed with nothing missing now"
    );
}
