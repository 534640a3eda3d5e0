//! `repair plan` and `apply` on the service's pipeline: the feature flag, signals, the concurrency
//! limit, registry outages, a project the registry refuses and one whose listing turned hostile.

use super::*;
use registry_repair::registry::simulator::Hostile;

#[actix_rt::test]
async fn apply_with_the_feature_flag_off_writes_nothing_until_resumed_through_the_admin_api() {
    let (w, db, database, registry) = many(40, Duration::from_millis(2)).await;
    let mut settings = many_settings(&db, &registry, 4);
    settings.worker.enabled = false;
    let before = repositories(&database).await;
    let repairing = start_repair(&settings, &database, Mode::Apply).await;
    let scheduler = repairing.service.scheduler.clone();
    // The walk ran and queued every candidate; none is dispatched while paused.
    assert!(
        status_becomes(&scheduler, Duration::from_secs(10), |s| s.state
            == ServiceState::Paused
            && s.queued == 40)
        .await,
        "the candidates are queued and held"
    );
    let status = scheduler.send(GetStatus).await.expect("status");
    assert_eq!((status.in_flight, status.completed), (0, 0), "{status:?}");
    let run = repairing.run.expect("an apply run");
    assert_eq!(status.work, WorkName::RepairApply { run });
    assert_eq!(registry.stats().list_requests, 0, "no project was listed");
    assert_eq!(written_projects(&database).await, 0);
    assert_eq!(repositories(&database).await, before, "nothing written");

    // `registry-repair resume` is this call.
    let admin = AdminClient::new(repairing.service.admin_addr.expect("the admin API"), None);
    let resumed = admin.set_enabled(true).await.expect("resume");
    assert!(resumed.enabled);
    let repaired = wait_repaired(repairing).await;
    assert_eq!(repaired.end, RunEnd::Done);
    assert_eq!(restored_names(&repaired.written).len(), 40 * NAMES.len());
    assert_all_restored_once(&w, &db, &database).await;
    let row = repair::run(&database, run)
        .await
        .expect("query")
        .expect("run");
    assert!(row.finished_at.is_some(), "a run that ended is finished");
}

#[actix_rt::test]
async fn sigterm_during_apply_drains_exits_3_and_a_rerun_completes() {
    const PROJECTS: usize = 150;
    for (name, signal) in [("SIGTERM", libc::SIGTERM), ("SIGINT", libc::SIGINT)] {
        let (w, db, database, registry) = many(PROJECTS, Duration::from_millis(20)).await;
        let env =
            service_env(&db, &registry.url(), "127.0.0.1:0").set("WORKER__MAX_CONCURRENCY", "2");
        let mut child = common::process::spawn(&["repair", "apply", "--format", "csv"], &env);
        // Busy: projects written, and two in flight.
        let busy = common::eventually(Duration::from_secs(60), || async {
            written_projects(&database).await >= 10 && registry.stats().in_flight >= 2
        })
        .await;
        assert!(busy, "{name}: the apply never got busy");
        let requests_at_signal = registry.stats().list_requests;
        child.signal(signal);
        let stopped = child.wait(Duration::from_secs(20)).await;
        stopped
            .assert_exit(3)
            .assert_no_panic()
            .assert_stderr_has("stopped before every project was written (run ")
            .assert_stderr_has("Run `registry-repair repair apply` to finish");
        assert!(
            stopped.stderr.contains(name),
            "{name}: the log names the signal\n{}",
            stopped.dump()
        );
        let written = written_projects(&database).await;
        eprintln!(
            "{name}: {written} of {PROJECTS} projects written; {} requests after the signal",
            registry.stats().list_requests - requests_at_signal
        );
        assert!(
            (written as usize) < PROJECTS,
            "{name}: the signal came after the end; nothing was proven"
        );
        // The in-flight projects were drained into the database: every project the registry
        // listed is written, and whole.
        assert_eq!(
            written as u64,
            registry.stats().list_requests,
            "{name}: a project listed but not written"
        );
        assert_eq!(torn_projects(&database).await, 0, "{name}");
        let runs = repair::runs(&database).await.expect("runs");
        assert!(
            runs[0].finished_at.is_none(),
            "a stopped run is not finished"
        );

        cli(&["repair", "apply"], &env, Duration::from_secs(120))
            .await
            .assert_exit(0);
        assert_all_restored_once(&w, &db, &database).await;
        registry.stop().await;
    }
}

#[actix_rt::test]
async fn plan_and_apply_keep_to_the_concurrency_limit_as_it_changes() {
    for mode in [Mode::Plan, Mode::Apply] {
        let (_w, db, database, registry) = many(400, Duration::from_millis(20)).await;
        let settings = many_settings(&db, &registry, 3);
        let repairing = start_repair(&settings, &database, mode).await;
        assert_in_flight_settles_at(&registry, 3, Duration::from_secs(10)).await;
        // `registry-repair concurrency 6` is this call.
        let admin = AdminClient::new(repairing.service.admin_addr.expect("the admin API"), None);
        let status = admin.set_concurrency(6).await.expect("concurrency");
        assert_eq!(status.max_concurrency, 6);
        assert_in_flight_settles_at(&registry, 6, Duration::from_secs(10)).await;
        let metrics = reqwest::get(format!(
            "http://{}/metrics",
            repairing.service.admin_addr.expect("the admin API")
        ))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("a body");
        assert!(
            metrics.contains("registry_repair_max_concurrency 6"),
            "{metrics}"
        );
        let repaired = wait_repaired(repairing).await;
        assert_eq!(repaired.end, RunEnd::Done);
        assert!(
            registry.stats().max_in_flight <= 6,
            "{:?}",
            registry.stats()
        );
        let done = if mode == Mode::Apply {
            repaired.written.len()
        } else {
            repaired.plans.len()
        };
        assert_eq!(done, 400, "{mode:?}");
        registry.stop().await;
    }
}

#[actix_rt::test]
async fn a_registry_outage_during_apply_writes_nothing_for_the_projects_it_hits_and_completes_after(
) {
    let (w, db, database, registry) = many(300, Duration::from_millis(10)).await;
    let settings = many_settings(&db, &registry, 4);
    let repairing = start_repair(&settings, &database, Mode::Apply).await;
    let scheduler = repairing.service.scheduler.clone();
    assert!(
        common::eventually(Duration::from_secs(30), || async {
            written_projects(&database).await >= 20
        })
        .await
    );
    registry.set_outage(true);
    assert!(
        status_becomes(&scheduler, Duration::from_secs(20), |s| s.breaker
            == BreakerPosition::Open
            && s.in_flight == 0
            && s.writer.as_ref().is_some_and(|w| w.buffered == 0))
        .await,
        "the breaker opens, in-flight projects end, the Writer drains"
    );
    let during = written_projects(&database).await;
    let status = scheduler.send(GetStatus).await.expect("status");
    assert_eq!(status.state, ServiceState::RegistryUnavailable);
    assert_eq!(status.failed, 0, "an outage fails no project");
    assert_eq!(torn_projects(&database).await, 0);
    // While it lasts nothing is written (status polled until the breaker has probed again).
    let trips = status.breaker_trips;
    assert!(
        status_becomes(&scheduler, Duration::from_secs(20), |s| s
            .last_error
            .is_some()
            && s.breaker_trips >= trips)
        .await
    );
    assert_eq!(written_projects(&database).await, during);
    registry.set_outage(false);

    let repaired = wait_repaired(repairing).await;
    assert_eq!(repaired.end, RunEnd::Done);
    assert!(
        repaired.not_planned.is_empty(),
        "{:?}",
        repaired.not_planned
    );
    assert_eq!(restored_names(&repaired.written).len(), 300 * NAMES.len());
    assert_all_restored_once(&w, &db, &database).await;
}

#[actix_rt::test]
async fn a_plan_started_during_a_registry_outage_waits_and_plans_every_project_after() {
    let (_w, db, database, registry) = many(60, Duration::from_millis(2)).await;
    registry.set_outage(true);
    let settings = many_settings(&db, &registry, 4);
    let before = (
        repositories(&database).await,
        tracking_rows(&database).await,
        repair_tables(&database).await,
    );
    let repairing = start_repair(&settings, &database, Mode::Plan).await;
    let scheduler = repairing.service.scheduler.clone();
    assert!(
        status_becomes(&scheduler, Duration::from_secs(10), |s| s.state
            == ServiceState::RegistryUnavailable
            && s.queued == 60)
        .await
    );
    assert_eq!(
        registry.stats().list_requests,
        0,
        "nothing listed while down"
    );
    registry.set_outage(false);
    let repaired = wait_repaired(repairing).await;
    assert_eq!(repaired.end, RunEnd::Done);
    assert!(
        repaired.not_planned.is_empty(),
        "{:?}",
        repaired.not_planned
    );
    assert_eq!(repaired.plans.len(), 60);
    assert!(repaired
        .plans
        .iter()
        .all(|p| p.repositories.len() == NAMES.len()
            && p.repositories.iter().all(|r| r.action == Action::Restore)));
    let after = (
        repositories(&database).await,
        tracking_rows(&database).await,
        repair_tables(&database).await,
    );
    assert_eq!(before, after, "a plan writes nothing");
}

#[actix_rt::test]
async fn a_project_the_registry_fails_on_its_own_is_reported_not_planned_and_nothing_is_written_for_it(
) {
    let (w, db, database, registry) = many(20, Duration::ZERO).await;
    let mut ids: Vec<i64> = w.projects.iter().map(|p| p.id).collect();
    ids.sort();
    let refused = ids[7];
    // A 400 of its own: the project's fault, failed at once (see the README's Faults).
    registry.refuse(&common::registry_path(&w, refused), 400);
    let settings = many_settings(&db, &registry, 4);
    for mode in [Mode::Plan, Mode::Apply] {
        let repaired = wait_repaired(start_repair(&settings, &database, mode).await).await;
        assert_eq!(
            repaired.end,
            RunEnd::Done,
            "a failed project does not hold up the run"
        );
        assert_eq!(
            repaired
                .not_planned
                .iter()
                .map(|p| p.project_id)
                .collect::<Vec<_>>(),
            vec![refused]
        );
        let done: Vec<i64> = if mode == Mode::Apply {
            repaired
                .written
                .iter()
                .filter_map(|w| match w {
                    Written::Applied { plan, .. } => Some(plan.project_id),
                    _ => None,
                })
                .collect()
        } else {
            repaired.plans.iter().map(|p| p.project_id).collect()
        };
        assert_eq!(done.len(), 19);
        assert!(!done.contains(&refused));
    }
    assert_eq!(
        count(
            &database,
            &format!(
                "SELECT count(*) AS n FROM container_repositories WHERE project_id = {refused}"
            )
        )
        .await,
        0,
        "nothing written for it"
    );
    assert_eq!(
        count(
            &database,
            &format!(
                "SELECT count(*) AS n FROM registry_repair_run_projects WHERE project_id = {refused}"
            )
        )
        .await,
        0
    );
    // Its tracking row is as the analysis left it: a candidate for the next apply.
    let rows = db.rows().await;
    let row = rows
        .iter()
        .find(|r| r.project_id == refused)
        .expect("its row");
    assert_eq!(row.missing_count, NAMES.len() as i32);
}

#[actix_rt::test]
async fn a_project_whose_listing_turned_hostile_after_the_analysis_is_not_planned_and_nothing_is_written_for_it(
) {
    let (w, db, database, registry) = many(12, Duration::ZERO).await;
    let mut ids: Vec<i64> = w.projects.iter().map(|p| p.id).collect();
    ids.sort();
    // Analysed with three missing; its listing now also names a path no registry can hold.
    let hostile = ids[5];
    let hostile_path = common::registry_path(&w, hostile);
    registry.set_hostile(&hostile_path, Hostile::UngrammaticalEntry("x <script> y"));
    let shown = format!("\"{hostile_path}/x <script> y\"");
    let settings = many_settings(&db, &registry, 4);
    let mut run = None;
    for mode in [Mode::Plan, Mode::Apply] {
        let repaired = wait_repaired(start_repair(&settings, &database, mode).await).await;
        assert_eq!(repaired.end, RunEnd::Done, "{mode:?}");
        let [not_planned] = repaired.not_planned.as_slice() else {
            panic!("{mode:?}: {:?}", repaired.not_planned);
        };
        assert_eq!(not_planned.project_id, hostile);
        for needed in [
            shown.as_str(),
            "breaks the registry's name grammar",
            "nothing of this project was recorded",
        ] {
            assert!(
                not_planned.reason.contains(needed),
                "{mode:?}: {}",
                not_planned.reason
            );
        }
        let done: Vec<i64> = match mode {
            Mode::Plan => repaired.plans.iter().map(|p| p.project_id).collect(),
            _ => repaired
                .written
                .iter()
                .filter_map(|w| match w {
                    Written::Applied { plan, .. } => Some(plan.project_id),
                    _ => None,
                })
                .collect(),
        };
        assert_eq!(done.len(), ids.len() - 1, "{mode:?}");
        assert!(!done.contains(&hostile), "{mode:?}");
        run = repaired.run.or(run);
    }
    for table in [
        "container_repositories",
        "registry_repair_run_projects",
        "registry_repair_restored",
        "registry_repair_skipped",
    ] {
        assert_eq!(
            count(
                &database,
                &format!("SELECT count(*) AS n FROM {table} WHERE project_id = {hostile}")
            )
            .await,
            0,
            "nothing of it in {table}"
        );
    }
    let rows = db.rows().await;
    let row = rows
        .iter()
        .find(|r| r.project_id == hostile)
        .expect("its row");
    assert_eq!(
        row.missing_count,
        NAMES.len() as i32,
        "its tracking row as the analysis left it"
    );

    // `repair verify` lists through the same check: a written project whose listing turned
    // hostile since is one it could not check, named escaped.
    let run = run.expect("an apply run");
    let turned = ids[2];
    let turned_path = common::registry_path(&w, turned);
    registry.set_hostile(&turned_path, Hostile::UngrammaticalEntry("y\n<i>"));
    let client = RegistryClient::new(
        &registry.url(),
        100,
        Duration::from_secs(5),
        100,
        signer(FIXTURE_KEY),
    )
    .expect("client");
    let found = verify(&database, &client, run, 2).await.expect("verify");
    assert!(!found.is_clean());
    let [(project, error)] = found.errors.as_slice() else {
        panic!("{:?}", found.errors);
    };
    assert_eq!(*project, turned);
    assert!(
        error.contains(&format!(r#""{turned_path}/y\n<i>""#)),
        "{error}"
    );
    assert!(found.unrestored.is_empty() && found.dangling.is_empty());
}
