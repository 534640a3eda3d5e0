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
const SERVER_CONNECTIONS: u32 = 2;

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

/// Runs `run --until-done` through `bouncer` twice (a restart meets what the first run left on
/// the server connections) and checks every row, that nothing failed on the way, and that the
/// service's connections were shared.
async fn run_twice_through(bouncer: PgBouncer, query: &str) {
    let world = busy_world(600);
    let TestApp { db, registry, .. } = TestApp::prepare(&world).await;
    let env = service_env(&db, &registry.url(), "127.0.0.1:0")
        .set("DATABASE__URL", bouncer.url(&db.name, query))
        .set("DATABASE__POOL_SIZE", "8")
        .set("WORKER__MAX_CONCURRENCY", "16");

    let first = cli(&["run", "--until-done"], &env, Duration::from_secs(120)).await;
    let second = cli(&["run", "--until-done"], &env, Duration::from_secs(60)).await;
    let log = bouncer.stop();
    for out in [&first, &second] {
        out.assert_exit(0).assert_no_panic();
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
    // service's pool keeps its connections unless one breaks.
    let clients = count(&log, "login attempt");
    assert!(
        (SERVER_CONNECTIONS as usize + 1..=2 * 8).contains(&clients),
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
    run_twice_through(bouncer, "prepared_statements=false").await;
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
                tracking::totals(&database).await.expect("totals");
                projects::remaining_unanalysed(&database, 0, Shard::ALL)
                    .await
                    .expect("remaining");
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
async fn a_prepared_statement_clash_says_what_to_do() {
    // What the service meets through a transaction pooler without prepared_statements=false (or
    // after another client left statements behind): tokio-postgres's next statement name is
    // taken on the server connection.
    let Some(bouncer) = PgBouncer::start(
        "a_prepared_statement_clash_says_what_to_do",
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
    for query in ["", "prepared_statements=false"] {
        // s0 and s1 are diesel-async's SET statements at connect; s2 is the first query. Planted
        // again each time: PgBouncer closes a server connection whose client left mid-exchange.
        client
            .batch_execute("DEALLOCATE ALL; PREPARE s2 AS SELECT 1")
            .await
            .expect("leaving a statement behind");
        let env = Env::new().set("DATABASE__URL", bouncer.url(&db.name, query));
        cli(&["report"], &env, Duration::from_secs(60))
            .await
            .assert_exit(1)
            .assert_no_panic()
            .assert_stderr_has("prepared statement \"s2\" already exists")
            .assert_stderr_has("add prepared_statements=false to database.url")
            .assert_stderr_has("RECONNECT");
    }
}
