//! The real binary pointed at PgBouncer in transaction pooling (`pool_mode = transaction`), as
//! GitLab's high-availability setups run it: few server connections shared by many clients, the
//! next transaction possibly on another server connection. Each test starts a PgBouncer of its own
//! (common/pgbouncer.rs) and skips with a notice where pgbouncer is not installed.

use crate::common::TestApp;
use std::time::Duration;

use crate::common::pgbouncer::PgBouncer;
use crate::common::process::{busy_world, cli, service_env, Env};
use crate::common::{assert_rows_match, TestDb};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

/// Server connections PgBouncer may open to the test database: fewer than the service's clients.
pub(crate) const SERVER_CONNECTIONS: u32 = 2;

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

/// Statement names another client leaves on every server connection: tokio-postgres's (`s0`,
/// `s1`, ...), the first ones any new process of the service prepares.
const LEFT_BEHIND: usize = 64;

/// Leaves `LEFT_BEHIND` prepared statements on each of `servers` server connections behind
/// `bouncer`, as a client of another process (or this service with prepared statements on) does:
/// `servers` clients hold a transaction each at once, so each holds a server connection of its
/// own, and prepare without deallocating.
pub(crate) async fn leave_statements_behind(bouncer: &PgBouncer, db: &TestDb, servers: u32) {
    let prepare: String = (0..LEFT_BEHIND)
        .map(|i| format!("PREPARE s{i} AS SELECT {i};"))
        .collect();
    let mut clients = Vec::new();
    let mut pids = std::collections::BTreeSet::new();
    for _ in 0..servers {
        let (client, connection) =
            tokio_postgres::connect(&bouncer.url(&db.name, ""), tokio_postgres::NoTls)
                .await
                .expect("connecting through pgbouncer");
        actix_rt::spawn(connection);
        let rows = client
            .simple_query(&format!(
                "BEGIN; DEALLOCATE ALL; {prepare} SELECT pg_backend_pid()"
            ))
            .await
            .expect("preparing statements and leaving them");
        pids.extend(rows.into_iter().filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        }));
        clients.push(client);
    }
    assert_eq!(pids.len(), servers as usize, "one server connection each");
    for client in &clients {
        client.batch_execute("COMMIT").await.expect("COMMIT");
    }
    let left = prepared_on_server(bouncer, db).await;
    assert!(
        left.iter().any(|s| s.starts_with("s0: ")),
        "left behind: {left:?}"
    );
}

/// Runs `run --until-done` through `bouncer` twice (a restart meets what the first run left on
/// the server connections) and checks every row, that nothing failed on the way, and that the
/// service's connections were shared. With `leftovers`, the tracking tables are dropped, and
/// another client's statements are left on every server connection before `migrate` (which then
/// creates them) and before each run.
async fn run_twice_through(bouncer: PgBouncer, query: &str, leftovers: bool) {
    let world = busy_world(600);
    let TestApp { db, registry, .. } = TestApp::prepare(&world).await;
    let env = service_env(&db, &registry.url(), "127.0.0.1:0")
        .set("DATABASE__URL", bouncer.url(&db.name, query))
        .set("DATABASE__POOL_SIZE", "8")
        .set("WORKER__MAX_CONCURRENCY", "16");
    // Without the flag, the service finds out for itself and says so.
    let mode = if query.is_empty() {
        "statement mode prepared_statements=false: a pooler"
    } else {
        "statement mode prepared_statements=false: prepared_statements=false in database.url"
    };
    if leftovers {
        TestDb::execute(
            &db,
            "DROP TABLE container_registry_data_repair_details; \
             DROP TABLE registry_repair_watermarks; DROP TABLE __diesel_schema_migrations",
        )
        .await;
        leave_statements_behind(&bouncer, &db, SERVER_CONNECTIONS).await;
        // `migrate` says how it talks to the database only at debug.
        let debug = env
            .clone()
            .set("LOG__LEVEL", "info,registry_repair::db=debug");
        cli(&["migrate"], &debug, Duration::from_secs(60))
            .await
            .assert_exit(0)
            .assert_no_panic()
            .assert_stdout_has("applied migration")
            .assert_stderr_has(mode);
    }

    let mut outs = Vec::new();
    let logged_before = bouncer.logged().len();
    for timeout in [120, 60] {
        if leftovers {
            leave_statements_behind(&bouncer, &db, SERVER_CONNECTIONS).await;
        }
        outs.push(cli(&["run", "--until-done"], &env, Duration::from_secs(timeout)).await);
    }
    let log = bouncer.stop();
    for out in &outs {
        out.assert_exit(0).assert_no_panic().assert_stderr_has(mode);
        assert!(
            !out.stderr.contains("WARN") && !out.stderr.contains("ERROR"),
            "nothing may fail through the pooler\n{}",
            out.dump()
        );
    }
    assert_rows_match(&world, &db).await;
    assert_eq!(
        registry.stats().list_requests,
        world.projects.len() as u64,
        "each project asked once: the second run had nothing to do"
    );
    // PgBouncer never opens more than `default_pool_size` server connections at once, and the
    // service's pool keeps its connections unless one breaks. Counted from the runs' logins on
    // (the planting clients take one each); the probe, without the flag, two more per run.
    let runs_log = log.get(logged_before..).unwrap_or_default();
    let clients = count(runs_log, "login attempt")
        - if leftovers {
            SERVER_CONNECTIONS as usize + 1
        } else {
            0
        };
    let probe = if query.is_empty() { 2 } else { 0 };
    assert!(
        (SERVER_CONNECTIONS as usize + 1..=2 * (8 + probe)).contains(&clients),
        "{clients} client connections: more than the {SERVER_CONNECTIONS} server connections, \
         and none dropped and made again\n{log}"
    );
}

#[actix_rt::test]
async fn run_until_done_through_pgbouncer_in_transaction_pooling_records_every_project() {
    let Some(bouncer) = PgBouncer::start(
        "run_until_done_through_pgbouncer_in_transaction_pooling_records_every_project",
        "transaction",
        SERVER_CONNECTIONS,
    ) else {
        return;
    };
    run_twice_through(bouncer, "prepared_statements=false", false).await;
}

#[actix_rt::test]
async fn migrate_and_run_through_pgbouncer_meet_other_clients_statements_and_find_the_pooler() {
    let Some(bouncer) = PgBouncer::start(
        "migrate_and_run_through_pgbouncer_meet_other_clients_statements_and_find_the_pooler",
        "transaction",
        SERVER_CONNECTIONS,
    ) else {
        return;
    };
    run_twice_through(bouncer, "", true).await;
}

#[actix_rt::test]
async fn migrate_and_run_through_pgbouncer_meet_other_clients_statements_with_the_flag() {
    let Some(bouncer) = PgBouncer::start(
        "migrate_and_run_through_pgbouncer_meet_other_clients_statements_with_the_flag",
        "transaction",
        SERVER_CONNECTIONS,
    ) else {
        return;
    };
    run_twice_through(bouncer, "prepared_statements=false", true).await;
}

#[actix_rt::test]
async fn the_probe_tells_postgresql_from_pgbouncer() {
    use registry_repair::db::probe::probe;
    use registry_repair::db::{Statements, Target};
    let db = TestDb::new().await;
    let found = |url: String| async move {
        let target = Target::parse(&url).expect("a valid URL");
        probe(&target).await.expect("probing")
    };
    // Over TLS too: the cancel key is read back through the TLS request.
    for query in ["sslmode=disable", "sslmode=require"] {
        let direct = found(format!("{}?{query}", db.url)).await;
        assert_eq!(
            direct.statements,
            Statements::Prepared,
            "{query}: {direct:?}"
        );
        assert!(direct.why.contains("PostgreSQL itself"), "{direct:?}");
    }
    // In session mode the first connection keeps its server connection: the second needs another.
    for (mode, servers) in [("transaction", 1), ("session", 2)] {
        let Some(bouncer) =
            PgBouncer::start("the_probe_tells_postgresql_from_pgbouncer", mode, servers)
        else {
            return;
        };
        let pooled = found(bouncer.url(&db.name, "")).await;
        assert_eq!(
            pooled.statements,
            Statements::PerTransaction,
            "{mode}: {pooled:?}"
        );
        // The cancel key alone tells: a busy pool, which gives the second connection another
        // server connection, is found as well.
        assert!(
            pooled.why.contains("cancel key does not name"),
            "{pooled:?}"
        );
    }
}
/// What a server connection behind `bouncer` holds: its prepared statements, read through
/// PgBouncer on a plain tokio-postgres connection (simple protocol, nothing prepared).
async fn prepared_on_server(bouncer: &PgBouncer, db: &TestDb) -> Vec<String> {
    let (client, connection) =
        tokio_postgres::connect(&bouncer.url(&db.name, ""), tokio_postgres::NoTls)
            .await
            .expect("connecting through pgbouncer");
    actix_rt::spawn(connection);
    client
        .simple_query("SELECT name || ': ' || statement FROM pg_prepared_statements")
        .await
        .expect("reading pg_prepared_statements")
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .collect()
}

#[derive(diesel::QueryableByName, Debug)]
struct State {
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    state: Option<String>,
}

#[actix_rt::test]
async fn no_prepared_statement_or_transaction_outlives_a_unit_of_work() {
    use registry_repair::config::Shard;
    use registry_repair::db::fleet::{claims, Member};
    use registry_repair::db::tracking::{self, TrackingRow};
    use registry_repair::db::{projects, watermark, Database};
    // One server connection: everything every client did happened on it, so what is left on it
    // is what the service would leave for the next client.
    let Some(bouncer) = PgBouncer::start(
        "no_prepared_statement_or_transaction_outlives_a_unit_of_work",
        "transaction",
        1,
    ) else {
        return;
    };
    let world = busy_world(200);
    let db = TestDb::new().await;
    world.insert(&db.database()).await.expect("seeding");
    let database = Database::new(
        &bouncer.url(&db.name, "prepared_statements=false"),
        6,
        Duration::from_secs(30),
    )
    .expect("pool");
    // Every kind of unit the service runs, 6 clients at once over one server connection.
    let mut tasks = Vec::new();
    for worker in 0..6i64 {
        let database = database.clone();
        tasks.push(actix_rt::spawn(async move {
            let member = Member::new(
                registry_repair::db::fleet::ANALYSIS.to_string(),
                Shard::ALL,
                Duration::from_secs(10),
            );
            for round in 0..20i64 {
                let after = (worker * 20 + round) % 150;
                let batch = projects::next_unanalysed(&database, after, 10, Shard::ALL)
                    .await
                    .expect("next_unanalysed");
                let names = vec!["api".to_string(), "web".to_string()];
                for p in &batch {
                    projects::existing_repository_names(&database, p.id, &names)
                        .await
                        .expect("existing_repository_names");
                }
                let rows: Vec<TrackingRow> = batch
                    .iter()
                    .map(|p| TrackingRow::completed(p.id, 1))
                    .collect();
                tracking::upsert(&database, &rows).await.expect("upsert");
                registry_repair::db::report::totals(&database)
                    .await
                    .expect("totals");
                // The fleet's count: a transaction with a statement timeout of its own.
                claims::ensure_pass(&database, Shard::ALL, 0)
                    .await
                    .expect("the pass");
                claims::count_pass(&database, &member)
                    .await
                    .expect("the count of the work left");
                let fences = watermark::Fences::default();
                watermark::take_fence(&database, &fences)
                    .await
                    .expect("fence");
                watermark::advance(&database, Shard::ALL, 0, &fences)
                    .await
                    .expect("watermark");
                watermark::load(&database, Shard::ALL)
                    .await
                    .expect("load the watermark");
                watermark::swept(&database, Shard::ALL)
                    .await
                    .expect("record a sweep");
                projects::unanalysed_between(&database, 0, Some(after), 10, Shard::ALL)
                    .await
                    .expect("a sweep's span");
            }
        }));
    }
    for task in tasks {
        task.await.expect("a worker panicked");
    }
    database.check_ready().await.expect("check_ready");
    let analysed = tracking::all_rows(&database).await.expect("rows").len();
    assert!(
        analysed >= 150,
        "the upserts were committed: {analysed} rows"
    );
    drop(database);

    let left = prepared_on_server(&bouncer, &db).await;
    assert!(
        left.is_empty(),
        "prepared statements left on the server connection: {left:?}"
    );
    // And the server connection is idle, not idle in a transaction someone forgot.
    let mut direct = AsyncPgConnection::establish(&db.url).await.expect("direct");
    let states: Vec<State> = diesel::sql_query(
        "SELECT state FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .load(&mut direct)
    .await
    .expect("pg_stat_activity");
    assert!(
        states.iter().all(|s| s.state.as_deref() == Some("idle")),
        "{states:?}"
    );
}

#[derive(diesel::QueryableByName, Debug)]
struct Name {
    #[diesel(sql_type = diesel::sql_types::Text)]
    name: String,
}

/// The number tokio-postgres gave the statement that reads it (`s17`: 17). The counter is this
/// process's, so the names the next statements get follow it.
async fn own_statement_number(database: &registry_repair::db::Database) -> usize {
    let mut conn = database.conn().await.expect("a connection");
    let names: Vec<Name> = diesel::sql_query(
        "SELECT name FROM pg_prepared_statements WHERE statement LIKE '%pg_prepared_statements%'",
    )
    .load(&mut conn)
    .await
    .expect("reading pg_prepared_statements");
    names
        .iter()
        .filter_map(|n| n.name.strip_prefix('s')?.parse().ok())
        .max()
        .unwrap_or_else(|| panic!("no statement of tokio-postgres's among {names:?}"))
}

#[actix_rt::test]
async fn statements_another_client_leaves_while_the_service_runs_are_dropped_first() {
    use registry_repair::config::Shard;
    use registry_repair::db::tracking::{self, TrackingRow};
    use registry_repair::db::{projects, Database, DbError};
    // One server connection, and names taken on it after the service's connection was set up:
    // only the DEALLOCATE ALL that opens every transaction (a read's, a write's, an explicit
    // one) keeps them from clashing.
    let Some(bouncer) = PgBouncer::start(
        "statements_another_client_leaves_while_the_service_runs_are_dropped_first",
        "transaction",
        1,
    ) else {
        return;
    };
    let world = busy_world(20);
    let db = TestDb::new().await;
    world.insert(&db.database()).await.expect("seeding");
    let (client, connection) =
        tokio_postgres::connect(&bouncer.url(&db.name, ""), tokio_postgres::NoTls)
            .await
            .expect("connecting through pgbouncer");
    actix_rt::spawn(connection);
    for query in ["", "prepared_statements=false"] {
        let database =
            Database::new(&bouncer.url(&db.name, query), 1, Duration::from_secs(30)).expect("pool");
        for unit in ["read", "write", "transaction"] {
            // Other tests of this process prepare statements too: a wide range of names.
            let next = own_statement_number(&database).await + 1;
            let prepare: String = (next..next + 2000)
                .map(|i| format!("PREPARE s{i} AS SELECT {i};"))
                .collect();
            client
                .batch_execute(&format!("BEGIN; DEALLOCATE ALL; {prepare} COMMIT"))
                .await
                .expect("leaving statements behind");
            let done: Result<(), DbError> = match unit {
                "read" => projects::next_unanalysed(&database, 0, 10, Shard::ALL)
                    .await
                    .map(drop),
                "write" => {
                    let ids = projects::next_unanalysed(&database, 0, 1, Shard::ALL).await;
                    match ids {
                        Ok(ids) => {
                            let rows: Vec<TrackingRow> = ids
                                .iter()
                                .map(|p| TrackingRow::completed(p.id, 0))
                                .collect();
                            tracking::upsert(&database, &rows).await.map(drop)
                        }
                        Err(e) => Err(e),
                    }
                }
                _ => match database.conn().await {
                    Ok(mut conn) => {
                        conn.transaction(|conn| {
                            Box::pin(async move {
                                diesel::sql_query("SELECT 'in a transaction' AS state")
                                    .load::<State>(conn)
                                    .await
                                    .map(drop)
                                    .map_err(DbError::query("reading in a transaction"))
                            })
                        })
                        .await
                    }
                    Err(e) => Err(e),
                },
            };
            if let Err(e) = done {
                panic!("{query:?}, {unit}: {e}");
            }
        }
    }
}

#[actix_rt::test]
async fn migrate_and_report_work_through_pgbouncer() {
    let Some(bouncer) = PgBouncer::start(
        "migrate_and_report_work_through_pgbouncer",
        "transaction",
        SERVER_CONNECTIONS,
    ) else {
        return;
    };
    let db = TestDb::without_tracking_table().await;
    let env = Env::new().set(
        "DATABASE__URL",
        bouncer.url(&db.name, "prepared_statements=false"),
    );
    cli(&["migrate"], &env, Duration::from_secs(60))
        .await
        .assert_exit(0)
        .assert_no_panic()
        .assert_stdout_has("applied migration");
    cli(&["migrate"], &env, Duration::from_secs(60))
        .await
        .assert_exit(0)
        .assert_stdout_has("nothing to do");
    cli(
        &["report", "--format", "json"],
        &env,
        Duration::from_secs(60),
    )
    .await
    .assert_exit(0)
    .assert_no_panic()
    .assert_stdout_has("\"projects\"");
    assert!(prepared_on_server(&bouncer, &db).await.is_empty());
}

#[actix_rt::test]
async fn a_statement_left_behind_clashes_only_with_prepared_statements_forced_on() {
    // Another client left `s2` on the only server connection: tokio-postgres's third name, which
    // the service's first query takes (`s0` and `s1` are diesel-async's SET statements at
    // connect). Found out or set to false, the service drops it first; forced on, it clashes.
    let Some(bouncer) = PgBouncer::start(
        "a_statement_left_behind_clashes_only_with_prepared_statements_forced_on",
        "transaction",
        1,
    ) else {
        return;
    };
    let db = TestDb::new().await;
    let (client, connection) =
        tokio_postgres::connect(&bouncer.url(&db.name, ""), tokio_postgres::NoTls)
            .await
            .expect("connecting through pgbouncer");
    actix_rt::spawn(connection);
    for (query, clashes) in [
        ("", false),
        ("prepared_statements=false", false),
        ("prepared_statements=true", true),
    ] {
        // Planted again each time: PgBouncer closes a server connection whose client left
        // mid-exchange.
        client
            .batch_execute("DEALLOCATE ALL; PREPARE s2 AS SELECT 1")
            .await
            .expect("leaving a statement behind");
        let env = Env::new().set("DATABASE__URL", bouncer.url(&db.name, query));
        let out = cli(&["report"], &env, Duration::from_secs(60)).await;
        out.assert_no_panic();
        if clashes {
            out.assert_exit(1)
                .assert_stderr_has("prepared statement \"s2\" already exists")
                .assert_stderr_has("set prepared_statements=false in database.url")
                .assert_stderr_has("max_prepared_statements");
        } else {
            out.assert_exit(0);
        }
    }
}

#[actix_rt::test]
async fn a_write_returning_rows_is_committed_before_it_returns_with_prepared_statements_off() {
    use registry_repair::db::Database;
    // A pooler's mode, straight to PostgreSQL: what matters is when the COMMIT goes out.
    let db = TestDb::new().await;
    let database = Database::new(
        &format!("{}?prepared_statements=false", db.url),
        2,
        Duration::from_secs(10),
    )
    .expect("pool");
    let mut writer = database.conn().await.expect("a connection");
    let written: Vec<State> = diesel::sql_query(
        "INSERT INTO registry_repair_watermarks (shard, analysed_through, updated_at) \
         VALUES ('0/1', 7, now()) RETURNING shard AS state",
    )
    .load(&mut writer)
    .await
    .expect("the write");
    assert_eq!(written.len(), 1);
    // The writer's connection is still held: another sees the row only if it was committed.
    let mut reader = database.conn().await.expect("a second connection");
    let seen: Vec<State> = diesel::sql_query(
        "SELECT shard AS state FROM registry_repair_watermarks WHERE analysed_through = 7",
    )
    .load(&mut reader)
    .await
    .expect("the read");
    assert_eq!(
        seen.len(),
        1,
        "the write was not committed when it returned"
    );
    drop(writer);
}
