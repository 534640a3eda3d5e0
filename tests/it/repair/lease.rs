//! One repair at a time: the real binary's `apply` and `undo` against one database, one holding
//! the repair lease while the other tries. An apply is held inside its work by starting it paused
//! (`worker.enabled = false`: it takes the lease, records its run and waits for `resume`), which
//! keeps no transaction open.

use super::*;
use crate::common::process::{free_port, spawn, Env, Running};
use registry_repair::identity::host_name;

/// How long a refusal may take: a process start and two statements, under load.
const AT_ONCE: Duration = Duration::from_secs(10);

/// The lease row, as `run_id|kind|host|pid|live` (or `expired`), if there is one.
async fn lease_row(database: &Database) -> Option<String> {
    lines(
        database,
        "SELECT concat_ws('|', coalesce(run_id::text, '-'), kind, host, pid, \
                CASE WHEN expires_at < now() THEN 'expired' ELSE 'live' END) AS lease FROM registry_repair_leases",
    )
    .await
    .first()
    .map(|line| {
        let row: serde_json::Value = serde_json::from_str(line).expect("a JSON row");
        row["lease"].as_str().expect("the lease as text").to_string()
    })
}

/// Four analysed projects, each missing three rows, and the binary's settings for them.
async fn four_projects() -> (World, TestDb, Database, RegistrySimulator, Env) {
    let (w, db, database, registry) = many(4, Duration::ZERO).await;
    let env = service_env(&db, &registry.url(), "127.0.0.1:0");
    (w, db, database, registry, env)
}

/// `repair apply` started paused, serving the admin API on `admin.listen`: it holds the lease
/// with its run recorded, and writes nothing until `resume`. Returns the child and its run id.
async fn paused_apply(database: &Database, env: &Env) -> (Running, i64) {
    let mut child = spawn(
        &["repair", "apply", "--admin"],
        &env.clone().set("WORKER__ENABLED", "false"),
    );
    let recorded = |lease: Option<String>| {
        lease.and_then(|l| l.split('|').next().and_then(|r| r.parse::<i64>().ok()))
    };
    let held = common::eventually(Duration::from_secs(30), || async {
        recorded(lease_row(database).await).is_some()
    })
    .await;
    let run = recorded(lease_row(database).await);
    if !held || run.is_none() || child.has_exited() {
        let out = child.wait(Duration::from_secs(10)).await;
        panic!("the paused apply never held the lease\n{}", out.dump());
    }
    (child, run.expect("a run"))
}

#[actix_rt::test]
async fn a_second_apply_while_one_runs_is_refused_at_once_naming_its_run_host_and_pid() {
    let (w, db, database, _registry, env) = four_projects().await;
    let (mut first, run) = paused_apply(&database, &env).await;

    let second = cli(&["repair", "apply"], &env, Duration::from_secs(60)).await;
    second
        .assert_exit(1)
        .assert_no_panic()
        .assert_stderr_has("cannot start repair apply: another repair is running")
        .assert_stderr_has(&format!("repair apply run {run} "))
        .assert_stderr_has(&format!("on host {}, pid {}", host_name(), first.pid()))
        .assert_stderr_has(" since ");
    assert!(
        second.elapsed < AT_ONCE,
        "refused only after {:?}",
        second.elapsed
    );
    assert_eq!(
        count(&database, "SELECT count(*) AS n FROM registry_repair_runs").await,
        1,
        "a refused apply records no run"
    );

    // SIGTERM: the first stops as the commands do (exit 3: stopped before its end), and gives the
    // lease back on the way out.
    first.signal(libc::SIGTERM);
    first.wait(Duration::from_secs(30)).await.assert_exit(3);
    assert_eq!(lease_row(&database).await, None, "released on SIGTERM");
    cli(&["repair", "apply"], &env, Duration::from_secs(60))
        .await
        .assert_exit(0);
    assert_all_restored_once(&w, &db, &database).await;
}

#[actix_rt::test]
async fn undo_is_refused_while_an_apply_holds_the_lease() {
    let (_w, _db, database, _registry, env) = four_projects().await;
    let long = Duration::from_secs(60);
    let project = db_first_project(&database).await;
    cli(&["repair", "apply", "--project", &project], &env, long)
        .await
        .assert_exit(0);
    let applied = repair::runs(&database).await.expect("runs")[0].id;
    let restored_before = repositories(&database).await;

    let (mut holder, run) = paused_apply(&database, &env).await;
    let undo = cli(&["repair", "undo", &applied.to_string()], &env, long).await;
    undo.assert_exit(1)
        .assert_no_panic()
        .assert_stderr_has("cannot start repair undo: another repair is running")
        .assert_stderr_has(&format!(
            "repair apply run {run} on host {}, pid {}",
            host_name(),
            holder.pid()
        ));
    assert!(
        undo.elapsed < AT_ONCE,
        "refused only after {:?}",
        undo.elapsed
    );
    assert_eq!(
        repositories(&database).await,
        restored_before,
        "the refused undo deleted nothing"
    );
    assert_eq!(
        count(
            &database,
            "SELECT count(*) AS n FROM registry_repair_runs WHERE kind = 'undo'"
        )
        .await,
        0,
        "a refused undo records no run"
    );

    holder.signal(libc::SIGTERM);
    holder.wait(Duration::from_secs(30)).await.assert_exit(3);
    cli(&["repair", "undo", &applied.to_string()], &env, long)
        .await
        .assert_exit(0)
        .assert_stdout_has("3 rows deleted");
}

#[actix_rt::test]
async fn an_apply_killed_on_this_machine_is_taken_over_at_once_by_the_next() {
    let (w, db, database, _registry, env) = four_projects().await;
    let long = Duration::from_secs(60);
    let (mut killed, run) = paused_apply(&database, &env).await;
    let pid = killed.pid();
    killed.signal(libc::SIGKILL);
    killed.wait(Duration::from_secs(10)).await;

    // Nothing released it and it has not expired, but its process, of this machine, is gone.
    assert_eq!(
        lease_row(&database).await,
        Some(format!("{run}|apply|{}|{pid}|live", host_name()))
    );
    let taken = cli(&["repair", "apply"], &env, long).await;
    taken
        .assert_exit(0)
        .assert_no_panic()
        .assert_stderr_has(&format!(
            "took over the repair lease of repair apply run {run} on host {}, pid {pid}",
            host_name()
        ))
        .assert_stderr_has("held by a process of this machine that is gone");
    assert!(
        taken.elapsed < AT_ONCE,
        "taken over only after {:?}",
        taken.elapsed
    );
    assert_eq!(lease_row(&database).await, None, "released at the end");
    assert_all_restored_once(&w, &db, &database).await;
}

#[actix_rt::test]
async fn the_lease_of_an_apply_in_another_container_blocks_until_it_expires_then_is_taken_over() {
    let (w, db, database, _registry, env) = four_projects().await;
    let long = Duration::from_secs(60);
    let (mut killed, run) = paused_apply(&database, &env).await;
    let pid = killed.pid();
    killed.signal(libc::SIGKILL);
    killed.wait(Duration::from_secs(10)).await;
    // As a container of the same host name, kernel and pid numbers would have recorded it: its
    // pid is no process of this pid namespace, so only its expiry tells it gone.
    db.execute("UPDATE registry_repair_leases SET pid_ns = 'pid:[4026531836]-elsewhere'")
        .await;
    cli(&["repair", "apply"], &env, long)
        .await
        .assert_exit(1)
        .assert_stderr_has(&format!("pid {pid}"));

    // Its 30 s pass (the database's clock is what counts).
    db.execute("UPDATE registry_repair_leases SET expires_at = now() - interval '1 second'")
        .await;
    let taken = cli(&["repair", "apply"], &env, long).await;
    taken
        .assert_exit(0)
        .assert_stderr_has(&format!(
            "took over the repair lease of repair apply run {run} on host {}, pid {pid}",
            host_name()
        ))
        .assert_stderr_has("expired: its process stopped renewing it");
    assert_eq!(
        taken.stderr.matches("took over the repair lease").count(),
        1,
        "one line\n{}",
        taken.dump()
    );
    assert_eq!(lease_row(&database).await, None, "released at the end");
    assert_all_restored_once(&w, &db, &database).await;
}

#[actix_rt::test]
async fn the_lease_is_released_after_a_normal_apply_and_the_next_goes_at_once() {
    let (w, db, database, _registry, env) = four_projects().await;
    let long = Duration::from_secs(60);
    let project = db_first_project(&database).await;
    let applied = cli(&["repair", "apply", "--project", &project], &env, long).await;
    applied.assert_exit(0);
    assert!(!applied.stderr.contains("took over"), "{}", applied.dump());
    assert_eq!(lease_row(&database).await, None, "released at the end");

    let next = cli(&["repair", "apply"], &env, long).await;
    next.assert_exit(0);
    assert!(
        !next.stderr.contains("took over") && !next.stderr.contains("another repair"),
        "{}",
        next.dump()
    );
    assert_eq!(lease_row(&database).await, None, "released at the end");
    assert_all_restored_once(&w, &db, &database).await;
    let run = repair::runs(&database).await.expect("runs")[0].id;
    cli(&["repair", "undo", &run.to_string()], &env, long)
        .await
        .assert_exit(0);
    assert_eq!(lease_row(&database).await, None, "undo releases it too");
}

#[actix_rt::test]
async fn an_apply_whose_lease_was_taken_stops_with_an_error_and_writes_nothing_more() {
    let (_w, _db, database, _registry, env) = four_projects().await;
    let env = env.set("ADMIN__LISTEN", format!("127.0.0.1:{}", free_port()));
    let (mut robbed, run) = paused_apply(&database, &env).await;
    let before = repositories(&database).await;

    // Another host takes the lease, as it may once the holder failed to renew for 30 s.
    database_execute(
        &database,
        "UPDATE registry_repair_leases SET host = 'other-host', pid = 4242, run_id = NULL, \
             acquired_at = now(), expires_at = now() + interval '30 seconds'",
    )
    .await;
    // Let the robbed apply try to write: each write checks the lease first.
    let resumed = common::eventually(Duration::from_secs(30), || async {
        cli(&["resume"], &env, Duration::from_secs(30)).await.code == Some(0)
    })
    .await;
    assert!(resumed, "the paused apply's admin API never answered");
    let stopped = robbed.wait(Duration::from_secs(30)).await;
    stopped
        .assert_exit(1)
        .assert_no_panic()
        .assert_stderr_has("no longer holds the repair lease")
        .assert_stderr_has("on host other-host, pid 4242");
    assert_eq!(
        repositories(&database).await,
        before,
        "nothing written once the lease was taken"
    );
    assert_eq!(
        count(
            &database,
            &format!("SELECT count(*) AS n FROM registry_repair_run_projects WHERE run_id = {run}")
        )
        .await,
        0
    );
    assert_eq!(
        lease_row(&database).await,
        Some("-|apply|other-host|4242|live".to_string()),
        "the new holder's lease is left alone"
    );
}

/// The lowest project id, as a command-line argument.
async fn db_first_project(database: &Database) -> String {
    count(database, "SELECT min(id) AS n FROM projects")
        .await
        .to_string()
}

async fn database_execute(database: &Database, sql: &str) {
    use diesel_async::RunQueryDsl;
    let mut conn = database.conn().await.expect("connection");
    diesel::sql_query(sql)
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

#[actix_rt::test]
async fn the_lease_holds_through_pgbouncer_in_transaction_pooling_mode() {
    use crate::common::pgbouncer::PgBouncer;
    let test = "the_lease_holds_through_pgbouncer_in_transaction_pooling_mode";
    // Two server connections for every client: a session-level lock would not survive this.
    let Some(bouncer) = PgBouncer::start(test, "transaction", 2) else {
        return;
    };
    let (w, db, database, _registry, env) = four_projects().await;
    let env = env.set(
        "DATABASE__URL",
        bouncer.url(&db.name, "prepared_statements=false"),
    );
    let long = Duration::from_secs(60);
    let (mut first, run) = paused_apply(&database, &env).await;
    cli(&["repair", "apply"], &env, long)
        .await
        .assert_exit(1)
        .assert_no_panic()
        .assert_stderr_has(&format!("repair apply run {run} on host"));

    first.signal(libc::SIGTERM);
    first.wait(Duration::from_secs(30)).await.assert_exit(3);
    assert_eq!(lease_row(&database).await, None, "released on SIGTERM");
    cli(&["repair", "apply"], &env, long)
        .await
        .assert_exit(0)
        .assert_no_panic();
    assert_eq!(lease_row(&database).await, None, "released at the end");
    assert_all_restored_once(&w, &db, &database).await;
}

#[actix_rt::test]
async fn an_undo_stopped_by_sigterm_releases_the_lease_and_a_rerun_finishes() {
    use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
    let (w, db, database, _registry, env) = four_projects().await;
    let long = Duration::from_secs(60);
    cli(&["repair", "apply"], &env, long).await.assert_exit(0);
    assert_all_restored_once(&w, &db, &database).await;
    let run = repair::runs(&database).await.expect("runs")[0]
        .id
        .to_string();

    // A gate: the undo's DELETE waits inside its first project's transaction.
    let _xmin = common::keeping_a_transaction_open().await;
    let mut gate = AsyncPgConnection::establish(&db.url).await.expect("gate");
    gate.batch_execute("BEGIN; LOCK TABLE container_repositories IN SHARE ROW EXCLUSIVE MODE")
        .await
        .expect("gate");
    let mut undo = spawn(&["repair", "undo", &run], &env);
    let waiting = common::eventually(Duration::from_secs(30), || async {
        count(
            &database,
            "SELECT count(*) AS n FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock' \
               AND query LIKE 'WITH mine%'",
        )
        .await
            >= 1
    })
    .await;
    assert!(waiting, "the undo never reached its first project");
    assert!(lease_row(&database)
        .await
        .is_some_and(|l| l.contains("|undo|")));

    undo.signal(libc::SIGTERM);
    undo.wait(Duration::from_secs(30))
        .await
        .assert_exit(3)
        .assert_stderr_has("stopped by SIGTERM");
    assert_eq!(lease_row(&database).await, None, "released on SIGTERM");
    gate.batch_execute("ROLLBACK").await.expect("open the gate");

    cli(&["repair", "undo", &run], &env, long)
        .await
        .assert_exit(0)
        .assert_stdout_has("12 rows deleted");
    assert_eq!(
        count(
            &database,
            "SELECT count(*) AS n FROM container_repositories"
        )
        .await,
        0
    );
}

#[actix_rt::test]
async fn a_running_apply_renews_its_lease_on_the_databases_clock() {
    let (_w, _db, database, _registry, env) = four_projects().await;
    let (mut running, _run) = paused_apply(&database, &env).await;
    let expiry = || async {
        count(
            &database,
            "SELECT (extract(epoch FROM expires_at) * 1000)::bigint AS n \
             FROM registry_repair_leases",
        )
        .await
    };
    let first = expiry().await;
    // Renewed every 5 s, each time to 30 s from the database's now().
    let renewed =
        common::eventually(Duration::from_secs(15), || async { expiry().await > first }).await;
    assert!(renewed, "the lease was not renewed within 15 s");
    assert_eq!(
        count(
            &database,
            "SELECT (expires_at - now() > interval '20 seconds')::int AS n \
             FROM registry_repair_leases",
        )
        .await,
        1,
        "renewed to about 30 s ahead"
    );
    running.signal(libc::SIGTERM);
    running.wait(Duration::from_secs(30)).await.assert_exit(3);
    assert_eq!(lease_row(&database).await, None);
}
