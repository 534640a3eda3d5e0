//! The real binary's `repair` commands: exit codes, and a SIGKILL at any moment of an apply.
//! A killed apply's repair lease blocks the next until it expires (`lease`); these tests let its
//! 30 s pass at once.

use super::*;

#[actix_rt::test]
async fn the_binary_plans_applies_verifies_lists_and_undoes_with_the_right_exit_codes() {
    let s = seed().await;
    let env = service_env(&s.db, &s.registry.url(), "127.0.0.1:0");
    let long = Duration::from_secs(60);

    let planned = cli(&["repair", "plan", "--format", "json"], &env, long).await;
    planned.assert_exit(0).assert_no_panic();
    let value: serde_json::Value = serde_json::from_str(&planned.stdout).expect("JSON plan");
    assert_eq!(value["run"], serde_json::Value::Null);
    assert_eq!(value["totals"]["projects"], 10);
    assert_eq!(value["totals"]["restore"], 4);
    assert_eq!(value["totals"]["review"], 2);
    assert_eq!(value["totals"]["review_by_reason"]["older_than_project"], 1);
    assert_eq!(
        value["totals"]["review_by_reason"]["cleanup_policy_enabled"],
        1
    );
    assert_eq!(value["totals"]["review_by_reason"]["older_than_path"], 0);
    assert_eq!(value["totals"]["skip"]["project_pending_deletion"], 3);
    assert_eq!(value["totals"]["skip"]["ambiguous_path"], 2);
    assert_eq!(value["repositories"].as_array().map(Vec::len), Some(14));

    cli(&["repair", "plan", "--namespace", "nope"], &env, long)
        .await
        .assert_exit(2)
        .assert_stderr_has("--namespace");
    cli(&["repair", "plan", "--limit", "0"], &env, long)
        .await
        .assert_exit(2);

    let applied = cli(
        &["repair", "apply", "--project", &s.ids["plain"].to_string()],
        &env,
        long,
    )
    .await;
    applied
        .assert_exit(0)
        .assert_stdout_has("Repair run ")
        .assert_stdout_has("ProjectCacheWorker.perform_async(id, [], %w[container_registry_size])");
    assert!(
        !applied.stdout.contains("cleanup policy") && !applied.stdout.contains("Geo"),
        "no cleanup policy, no Geo here\n{}",
        applied.dump()
    );
    let runs = repair::runs(&s.database).await.expect("runs");
    let run = runs[0].id.to_string();

    cli(&["repair", "verify", &run], &env, long)
        .await
        .assert_exit(0)
        .assert_stdout_has("Every repository the run meant to restore has a row");
    s.db.execute(&format!(
        "DELETE FROM container_repositories WHERE project_id = {} AND name = ''",
        s.ids["plain"]
    ))
    .await;
    cli(&["repair", "verify", &run], &env, long)
        .await
        .assert_exit(1)
        .assert_stdout_has("still without a row");

    let listed = cli(&["repair", "runs", "--format", "json"], &env, long).await;
    listed.assert_exit(0);
    let value: serde_json::Value = serde_json::from_str(&listed.stdout).expect("JSON runs");
    assert_eq!(value[0]["restored"], 3);

    cli(&["repair", "undo", &run], &env, long)
        .await
        .assert_exit(0)
        .assert_stdout_has("2 rows deleted");
    cli(&["repair", "runs"], &env, long)
        .await
        .assert_exit(0)
        .assert_stdout_has(&format!("undoes run {run}"));
    cli(&["repair", "undo", "424242"], &env, long)
        .await
        .assert_exit(2)
        .assert_stderr_has("does not exist");

    // Consent is asked before the write: an enabled cleanup policy holds the project's
    // repositories for review until `--include-cleanup-policy`, after which the result warns what
    // the policy may do to them.
    let policed = s.ids["policed"].to_string();
    let held = cli(
        &["repair", "apply", "--project", &policed, "--format", "json"],
        &env,
        long,
    )
    .await;
    held.assert_exit(0);
    let value: serde_json::Value = serde_json::from_str(&held.stdout).expect("JSON result");
    assert_eq!(value["totals"]["restore"], 0);
    assert_eq!(
        value["totals"]["review_by_reason"]["cleanup_policy_enabled"],
        1
    );
    let consented = cli(
        &[
            "repair",
            "apply",
            "--project",
            &policed,
            "--include-cleanup-policy",
        ],
        &env,
        long,
    )
    .await;
    consented
        .assert_exit(0)
        .assert_stdout_has("restore           1")
        .assert_stdout_has("enabled cleanup policy (--include-cleanup-policy)");
    let row = &repair::runs(&s.database).await.expect("runs")[0];
    assert_eq!(
        (row.restored, row.scope.as_str()),
        (
            1,
            format!("--project {policed} --include-cleanup-policy").as_str()
        )
    );
}

#[actix_rt::test]
async fn apply_killed_at_any_moment_then_run_again_ends_as_an_uninterrupted_run() {
    const PROJECTS: usize = 120;
    let names = NAMES;
    for written_before_kill in [1i64, 30, 60] {
        let (w, db, database, registry) = many(PROJECTS, Duration::from_millis(5)).await;
        let env =
            service_env(&db, &registry.url(), "127.0.0.1:0").set("WORKER__MAX_CONCURRENCY", "2");

        let mut child = common::process::spawn(&["repair", "apply", "--format", "csv"], &env);
        let reached = common::eventually(Duration::from_secs(60), || async {
            count(
                &database,
                "SELECT count(*) AS n FROM registry_repair_run_projects",
            )
            .await
                >= written_before_kill
        })
        .await;
        assert!(
            reached,
            "the apply never wrote {written_before_kill} projects"
        );
        child.signal(libc::SIGKILL);
        child.wait(Duration::from_secs(10)).await;
        let at_kill = count(
            &database,
            "SELECT count(*) AS n FROM registry_repair_run_projects",
        )
        .await;
        eprintln!("killed after {at_kill} of {PROJECTS} projects written");
        assert!(
            (at_kill as usize) < PROJECTS,
            "the kill came after the end; nothing was proven"
        );

        // Every project the killed run touched is whole: its three rows and their audit rows.
        assert_eq!(
            torn_projects(&database).await,
            0,
            "killed after {written_before_kill}: a project half written"
        );

        // The killed run's lease is taken over at once: its process, of this machine, is gone.
        cli(&["repair", "apply"], &env, Duration::from_secs(120))
            .await
            .assert_exit(0);
        // The same final tables as an uninterrupted run: every name once, restored once, nothing
        // missing.
        let got = lines(
            &database,
            "SELECT project_id, name, status FROM container_repositories ORDER BY project_id, name",
        )
        .await;
        let mut want: Vec<String> = w
            .projects
            .iter()
            .flat_map(|p| {
                let mut sorted = names.to_vec();
                sorted.sort();
                sorted.into_iter().map(move |n| {
                    format!(
                        "{{\"project_id\":{},\"name\":\"{n}\",\"status\":null}}",
                        p.id
                    )
                })
            })
            .collect();
        want.sort_by_key(|l| {
            let id: i64 = l[14..]
                .split(',')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            (id, l.clone())
        });
        assert_eq!(got, want, "killed after {written_before_kill}");
        assert_eq!(
            count(
                &database,
                "SELECT count(*) AS n FROM registry_repair_restored"
            )
            .await,
            (PROJECTS * names.len()) as i64,
            "each row restored exactly once"
        );
        assert!(db.rows().await.iter().all(|r| r.missing_count == 0));
        registry.stop().await;
    }
}

#[actix_rt::test]
async fn apply_killed_inside_its_projects_transactions_leaves_them_untouched_and_a_rerun_completes()
{
    use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
    let (w, db, database, registry) = many(12, Duration::ZERO).await;
    let _xmin = common::keeping_a_transaction_open().await;
    let before = (
        repositories(&database).await,
        lines(
            &database,
            "SELECT * FROM container_registry_data_repair_details ORDER BY project_id",
        )
        .await,
    );
    let env = service_env(&db, &registry.url(), "127.0.0.1:0")
        .set(
            "DATABASE__URL",
            format!("{}?application_name=rr_killed_apply", db.url),
        )
        .set("WORKER__MAX_CONCURRENCY", "4");
    let backends = |state: &'static str| {
        let database = database.clone();
        async move {
            count(
                &database,
                &format!(
                    "SELECT count(*) AS n FROM pg_stat_activity \
                     WHERE application_name = 'rr_killed_apply' {state}"
                ),
            )
            .await
        }
    };

    // A gate: every project's INSERT waits inside its transaction, after the project, its route
    // and the run's claim on it.
    let mut gate = AsyncPgConnection::establish(&db.url).await.expect("gate");
    gate.batch_execute("BEGIN; LOCK TABLE container_repositories IN SHARE ROW EXCLUSIVE MODE")
        .await
        .expect("gate");
    let mut child = common::process::spawn(&["repair", "apply"], &env);
    assert!(
        common::eventually(Duration::from_secs(30), || async {
            backends(
                "AND wait_event_type = 'Lock' AND xact_start IS NOT NULL \
                 AND query LIKE 'WITH wanted%'",
            )
            .await
                >= 1
        })
        .await,
        "the apply's writes wait inside their transactions"
    );
    child.signal(libc::SIGKILL);
    child.wait(Duration::from_secs(10)).await;
    gate.batch_execute("ROLLBACK").await.expect("open the gate");
    // The killed process's backends notice it is gone once their statement ends, and roll back.
    assert!(
        common::eventually(Duration::from_secs(30), || async {
            backends("").await == 0
        })
        .await,
        "the killed apply's sessions end"
    );
    let after = (
        repositories(&database).await,
        lines(
            &database,
            "SELECT * FROM container_registry_data_repair_details ORDER BY project_id",
        )
        .await,
    );
    assert_eq!(
        after, before,
        "no row, no tracking change: every transaction rolled back"
    );
    assert_eq!(written_projects(&database).await, 0, "no claim survives");

    cli(&["repair", "apply"], &env, Duration::from_secs(60))
        .await
        .assert_exit(0);
    assert_all_restored_once(&w, &db, &database).await;
}

#[actix_rt::test]
async fn apply_says_how_to_announce_the_restored_rows_to_geo_secondaries() {
    let s = seed().await;
    let env = service_env(&s.db, &s.registry.url(), "127.0.0.1:0");
    let long = Duration::from_secs(60);
    // EE's table, with a primary only: no Geo line.
    s.db.execute(
        "CREATE TABLE geo_nodes (id bigserial PRIMARY KEY, \"primary\" boolean DEFAULT false, \
                                 name varchar NOT NULL); \
         INSERT INTO geo_nodes (\"primary\", name) VALUES (true, 'primary')",
    )
    .await;
    let elsewhere = s.ids["elsewhere"].to_string();
    let alone = cli(&["repair", "apply", "--project", &elsewhere], &env, long).await;
    alone.assert_exit(0);
    assert!(!alone.stdout.contains("Geo"), "{}", alone.dump());

    // A secondary: the line names the restored rows, by their container_repositories ids.
    s.db.execute("INSERT INTO geo_nodes (\"primary\", name) VALUES (false, 'secondary')")
        .await;
    let plain = s.ids["plain"].to_string();
    let applied = cli(&["repair", "apply", "--project", &plain], &env, long).await;
    applied.assert_exit(0);
    let run = repair::runs(&s.database).await.expect("runs")[0].id;
    let ids = lines(
        &s.database,
        &format!(
            "SELECT string_agg(repository_id::text, ', ' ORDER BY repository_id) AS ids \
             FROM registry_repair_restored WHERE run_id = {run}"
        ),
    )
    .await;
    let ids = ids[0]
        .trim_start_matches("{\"ids\":\"")
        .trim_end_matches("\"}");
    applied.assert_stdout_has(&format!(
        "gitlab-rails runner 'ContainerRepository.where(id: [{ids}]).find_each {{ |r| r.try(:save_verification_details); r.try(:geo_handle_after_create) }}'"
    ));
}
