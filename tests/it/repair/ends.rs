//! Ends that tell the truth, through the real binary: an apply or plan stopped before its end
//! says how far it got and exits 3 with the command, and the scope, that finishes the job; verify
//! of such a run says it did not finish; `runs` shows it stopped; `status` of a repair speaks of
//! the repair; a run named wrongly exits 2 before any lease is taken.

use super::*;
use crate::common::process::{free_port, spawn, Env};

/// Four analysed projects, each missing three rows, and the binary's settings (admin API on a
/// port of its own, for `--admin`).
async fn four() -> (TestDb, Database, RegistrySimulator, Env, Vec<i64>) {
    let (w, db, database, registry) = many(4, Duration::ZERO).await;
    let env = service_env(&db, &registry.url(), &format!("127.0.0.1:{}", free_port()));
    let mut ids: Vec<i64> = w.projects.iter().map(|p| p.id).collect();
    ids.sort();
    (db, database, registry, env, ids)
}

#[actix_rt::test]
async fn an_apply_stopped_before_anything_says_so_exits_3_and_verify_and_runs_agree() {
    let (_db, database, registry, env, ids) = four().await;
    let (first, second) = (ids[0].to_string(), ids[1].to_string());
    // Paused (worker.enabled = false): it takes the lease, records its run, and waits.
    let paused = env.clone().set("WORKER__ENABLED", "false");
    let mut apply = spawn(
        &[
            "repair",
            "apply",
            "--admin",
            "--project",
            &first,
            "--project",
            &second,
        ],
        &paused,
    );
    let shown = common::eventually(Duration::from_secs(30), || async {
        let status = cli(&["status"], &env, Duration::from_secs(10)).await;
        status.code == Some(0) && status.stdout.contains("repair apply (run ")
    })
    .await;
    assert!(shown, "the apply's admin API never answered");
    // Its status speaks of the repair, not of an analysis.
    let status = cli(&["status"], &env, Duration::from_secs(10)).await;
    status
        .assert_exit(0)
        .assert_stdout_has("paused")
        .assert_stdout_has("planned for writing")
        .assert_stdout_has("without a row in their plans");
    assert!(
        !status
            .stdout
            .lines()
            .any(|l| l.starts_with("analysed") || l.starts_with("missing found")),
        "{}",
        status.dump()
    );

    apply.signal(libc::SIGTERM);
    let stopped = apply.wait(Duration::from_secs(30)).await;
    stopped
        .assert_exit(3)
        .assert_no_panic()
        .assert_stdout_has("Nothing was done before it stopped.")
        .assert_stderr_has("stopped before every project was written (run ")
        .assert_stderr_has("0 projects written, 2 left")
        .assert_stderr_has(&format!(
            "Run `registry-repair repair apply --project {first} --project {second}` to finish"
        ));
    assert!(
        !stopped.stdout.contains("No repository without a row"),
        "{}",
        stopped.dump()
    );
    assert_eq!(registry.stats().list_requests, 0, "nothing was listed");
    let run = repair::runs(&database).await.expect("runs")[0]
        .id
        .to_string();

    let verified = cli(&["repair", "verify", &run], &env, Duration::from_secs(60)).await;
    verified
        .assert_exit(3)
        .assert_stderr_has(&format!("repair run {run} did not finish"))
        .assert_stderr_has(&format!(
            "`registry-repair repair apply --project {first} --project {second}` finishes the job"
        ));
    assert!(
        !verified
            .stdout
            .contains("Every repository the run meant to restore has a row"),
        "{}",
        verified.dump()
    );
    let runs = cli(&["repair", "runs"], &env, Duration::from_secs(60)).await;
    runs.assert_exit(0)
        .assert_stdout_has("(stopped)")
        .assert_stdout_has(&format!(
            "stopped before its end: `repair apply --project {first} --project {second}` finishes the job"
        ));

    // Finishing it: the command the hint gave.
    cli(
        &["repair", "apply", "--project", &first, "--project", &second],
        &env,
        Duration::from_secs(60),
    )
    .await
    .assert_exit(0);
    let runs = cli(
        &["repair", "runs", "--format", "json"],
        &env,
        Duration::from_secs(60),
    )
    .await;
    let listed: serde_json::Value = serde_json::from_str(&runs.stdout).expect("JSON runs");
    assert_eq!(listed[0]["state"], "finished");
    assert_eq!(listed[1]["state"], "stopped");
}

#[actix_rt::test]
async fn a_run_named_wrongly_exits_2_and_takes_no_lease() {
    let (_db, database, _registry, env, _ids) = four().await;
    for args in [
        &["repair", "undo", "999999"][..],
        &["repair", "verify", "999999"],
    ] {
        cli(args, &env, Duration::from_secs(60))
            .await
            .assert_exit(2)
            .assert_no_panic()
            .assert_stderr_has("repair run 999999 does not exist");
    }
    assert_eq!(
        count(
            &database,
            "SELECT count(*) AS n FROM registry_repair_leases"
        )
        .await,
        0,
        "no lease taken"
    );
    assert_eq!(
        count(&database, "SELECT count(*) AS n FROM registry_repair_runs").await,
        0,
        "no run recorded"
    );
}
