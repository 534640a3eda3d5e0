//! The `registry-repair` binary as an operator runs it: configured only through
//! `REGISTRY_REPAIR__*` environment variables (or `--config`), judged by its exit status, its
//! output and what it leaves in the database. The simulated registry runs inside the test process,
//! so every child is waited for without blocking the test's runtime.

use std::collections::HashMap;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use crate::common::process::{
    assert_written_rows_correct, busy_world, cli, free_port, service_env, spawn, Env,
};
use crate::common::{assert_rows_match, eventually, fixture_key_path, trusted, TestDb};
use diesel::query_builder::SqlQuery;
use diesel::sql_types::{BigInt, Integer, Nullable, SmallInt, Text};
use diesel_async::methods::LoadQuery;
use diesel_async::{AsyncConnection, AsyncPgConnection};
use registry_repair::db::tracking::Status;
use registry_repair::demo::seed::World;
use registry_repair::registry::simulator::{ApiMode, RegistrySimulator};

const TABLE: &str = "container_registry_data_repair_details";
const STATUS_INDEX: &str = "index_container_registry_data_repair_details_on_status";
/// A database nobody listens on.
const UNREACHABLE_DB: &str = "postgres://postgres@127.0.0.1:1/x";

/// GitLab's own DDL for the tracking table (db/structure.sql), as GitLab runs it: no IF NOT EXISTS.
const GITLAB_DDL: &str = "
CREATE TABLE container_registry_data_repair_details (
    missing_count integer DEFAULT 0,
    project_id bigint NOT NULL PRIMARY KEY REFERENCES projects(id) ON DELETE CASCADE,
    created_at timestamp with time zone NOT NULL,
    updated_at timestamp with time zone NOT NULL,
    status smallint DEFAULT 0 NOT NULL
);
CREATE INDEX index_container_registry_data_repair_details_on_status
    ON container_registry_data_repair_details USING btree (status);
";

// ---------------------------------------------------------------------------------------------
// Reading the database
// ---------------------------------------------------------------------------------------------

async fn query<T>(db: &TestDb, sql: &str) -> Vec<T>
where
    T: Send + 'static,
    for<'a> SqlQuery: LoadQuery<'a, AsyncPgConnection, T>,
{
    use diesel_async::RunQueryDsl;
    let mut conn = AsyncPgConnection::establish(&db.url)
        .await
        .expect("connecting to the test database");
    diesel::sql_query(sql)
        .load(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("`{sql}`: {e}"))
}

#[derive(Debug, PartialEq, Eq, diesel::QueryableByName)]
struct Column {
    #[diesel(sql_type = Text)]
    column_name: String,
    #[diesel(sql_type = Text)]
    data_type: String,
    #[diesel(sql_type = Text)]
    is_nullable: String,
    #[diesel(sql_type = Nullable<Text>)]
    column_default: Option<String>,
}

#[derive(Debug, PartialEq, Eq, diesel::QueryableByName)]
struct Constraint {
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    definition: String,
}

#[derive(Debug, PartialEq, Eq, diesel::QueryableByName)]
struct Index {
    #[diesel(sql_type = Text)]
    indexname: String,
    #[diesel(sql_type = Text)]
    indexdef: String,
}

#[derive(Debug, PartialEq, Eq, diesel::QueryableByName)]
struct RawRow {
    #[diesel(sql_type = BigInt)]
    project_id: i64,
    #[diesel(sql_type = Nullable<Integer>)]
    missing_count: Option<i32>,
    #[diesel(sql_type = SmallInt)]
    status: i16,
    #[diesel(sql_type = Text)]
    created_at: String,
    #[diesel(sql_type = Text)]
    updated_at: String,
}

async fn raw_rows(db: &TestDb) -> Vec<RawRow> {
    query(
        db,
        "SELECT project_id, missing_count, status, created_at::text AS created_at, \
                updated_at::text AS updated_at \
         FROM container_registry_data_repair_details ORDER BY project_id",
    )
    .await
}

/// The tracking table is exactly GitLab's: columns, types, nullability, defaults, keys, index.
async fn assert_gitlab_shape(db: &TestDb) {
    let columns: Vec<Column> = query(
        db,
        "SELECT column_name::text AS column_name, data_type::text AS data_type, \
                is_nullable::text AS is_nullable, column_default::text AS column_default \
         FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name = 'container_registry_data_repair_details' \
         ORDER BY ordinal_position",
    )
    .await;
    let col = |name: &str, ty: &str, nullable: &str, default: Option<&str>| Column {
        column_name: name.into(),
        data_type: ty.into(),
        is_nullable: nullable.into(),
        column_default: default.map(str::to_string),
    };
    assert_eq!(
        columns,
        vec![
            col("missing_count", "integer", "YES", Some("0")),
            col("project_id", "bigint", "NO", None),
            col("created_at", "timestamp with time zone", "NO", None),
            col("updated_at", "timestamp with time zone", "NO", None),
            col("status", "smallint", "NO", Some("0")),
        ],
        "the tracking table's columns must be GitLab's"
    );

    let constraints: Vec<Constraint> = query(
        db,
        "SELECT contype::text AS kind, conname::text AS name, \
                pg_get_constraintdef(oid) AS definition \
         FROM pg_constraint \
         WHERE conrelid = 'public.container_registry_data_repair_details'::regclass \
         ORDER BY contype",
    )
    .await;
    let primary: Vec<&Constraint> = constraints.iter().filter(|c| c.kind == "p").collect();
    assert_eq!(primary.len(), 1, "one primary key: {constraints:?}");
    assert_eq!(primary[0].definition, "PRIMARY KEY (project_id)");
    let foreign: Vec<&Constraint> = constraints.iter().filter(|c| c.kind == "f").collect();
    assert_eq!(foreign.len(), 1, "one foreign key: {constraints:?}");
    assert_eq!(
        foreign[0].definition,
        "FOREIGN KEY (project_id) REFERENCES projects(id) ON DELETE CASCADE"
    );
    assert_eq!(
        constraints.len(),
        2,
        "no constraint GitLab lacks: {constraints:?}"
    );

    let indexes: Vec<Index> = query(
        db,
        "SELECT indexname::text AS indexname, indexdef \
         FROM pg_indexes WHERE schemaname = 'public' \
           AND tablename = 'container_registry_data_repair_details' \
         ORDER BY indexname",
    )
    .await;
    let status_index = indexes
        .iter()
        .find(|i| i.indexname == STATUS_INDEX)
        .unwrap_or_else(|| panic!("{STATUS_INDEX} is missing: {indexes:?}"));
    assert_eq!(
        status_index.indexdef,
        format!("CREATE INDEX {STATUS_INDEX} ON public.{TABLE} USING btree (status)")
    );
    assert_eq!(
        indexes.len(),
        2,
        "the primary key's index and the status index only: {indexes:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 1, 2: migrate
// ---------------------------------------------------------------------------------------------

#[actix_rt::test]
async fn migrate_creates_gitlabs_table_once_then_has_nothing_to_do() {
    let db = TestDb::without_tracking_table().await;
    let env = Env::new().set("DATABASE__URL", &db.url);

    // Before the migration, `run` and `report` say what to do instead of failing obscurely.
    let run_env = service_env(&db, "http://127.0.0.1:1", "127.0.0.1:0");
    for (args, env) in [
        (&["run", "--until-done"][..], &run_env),
        (&["report"], &env),
    ] {
        cli(args, env, Duration::from_secs(20))
            .await
            .assert_exit(1)
            .assert_stderr_has("registry-repair migrate")
            .assert_no_panic();
    }

    let first = cli(&["migrate"], &env, Duration::from_secs(30)).await;
    first
        .assert_exit(0)
        .assert_stdout_has("applied migration")
        .assert_no_panic();
    let second = cli(&["migrate"], &env, Duration::from_secs(30)).await;
    second
        .assert_exit(0)
        .assert_stdout_has("nothing to do")
        .assert_no_panic();
    assert!(
        !second.stdout.contains("applied migration"),
        "{}",
        second.dump()
    );

    assert_gitlab_shape(&db).await;
}

#[actix_rt::test]
async fn migrate_where_gitlab_already_created_the_table_changes_nothing() {
    let db = TestDb::without_tracking_table().await;
    db.execute(GITLAB_DDL).await;
    let mut world = World::new();
    let group = world.group(None, "Existing-Group");
    let project = world.project(group, "Kept", &[], &[]);
    world.insert(&db.database()).await.expect("seeding");
    db.execute(&format!(
        "INSERT INTO {TABLE} (missing_count, project_id, created_at, updated_at, status) \
         VALUES (7, {project}, '2023-05-06 07:08:09.123456+00', '2023-05-07 01:02:03+00', 1)"
    ))
    .await;
    let before = raw_rows(&db).await;
    assert_eq!(before.len(), 1);

    let env = Env::new().set("DATABASE__URL", &db.url);
    cli(&["migrate"], &env, Duration::from_secs(30))
        .await
        .assert_exit(0)
        .assert_no_panic();

    assert_eq!(
        raw_rows(&db).await,
        before,
        "GitLab's row must be untouched"
    );
    assert_eq!(before[0].missing_count, Some(7));
    assert_eq!(before[0].status, 1);
    assert_gitlab_shape(&db).await;

    cli(&["migrate"], &env, Duration::from_secs(30))
        .await
        .assert_exit(0)
        .assert_stdout_has("nothing to do");
}

// ---------------------------------------------------------------------------------------------
// 3: run --until-done
// ---------------------------------------------------------------------------------------------

#[actix_rt::test]
async fn run_until_done_records_every_project_and_a_second_run_asks_the_registry_nothing() {
    let world = World::generate(400, 11);
    let db = TestDb::new().await;
    world.insert(&db.database()).await.expect("seeding");
    let registry =
        RegistrySimulator::start(world.registry_paths(), trusted(), 0).expect("registry");
    let env = service_env(&db, &registry.url(), "127.0.0.1:0").set("WORKER__MAX_CONCURRENCY", "8");

    let first = cli(&["run", "--until-done"], &env, Duration::from_secs(60)).await;
    first.assert_exit(0).assert_no_panic();
    assert_rows_match(&world, &db).await;
    let asked = registry.stats();
    assert!(
        asked.list_requests >= world.projects.len() as u64 - 1,
        "every routed project was asked for: {asked:?}"
    );
    assert_eq!(asked.unauthorized, 0, "every token was accepted");

    let second = cli(&["run", "--until-done"], &env, Duration::from_secs(30)).await;
    second.assert_exit(0).assert_no_panic();
    assert_eq!(
        registry.stats().list_requests,
        asked.list_requests,
        "a second run must not ask the registry anything\n{}",
        second.dump()
    );
    assert_rows_match(&world, &db).await;
}

#[actix_rt::test]
async fn a_registry_without_gitlabs_api_stops_run_before_anything_is_recorded() {
    let world = World::generate(60, 5);
    let db = TestDb::new().await;
    world.insert(&db.database()).await.expect("seeding");
    let registry =
        RegistrySimulator::start(world.registry_paths(), trusted(), 0).expect("registry");
    let cases = [
        // Debian's docker-registry, or GitLab's without its metadata database.
        (ApiMode::Distribution, registry.url(), "answered 404"),
        // A path prefix the registry does not serve.
        (
            ApiMode::Gitlab,
            format!("{}/registry", registry.url()),
            "answered 404",
        ),
        // http:// to a registry that redirects to https://.
        (ApiMode::RedirectToHttps, registry.url(), "answered 301"),
    ];
    for (mode, url, answered) in cases {
        registry.set_api_mode(mode);
        let env = service_env(&db, &url, "127.0.0.1:0");
        let out = cli(&["run", "--until-done"], &env, Duration::from_secs(30)).await;
        out.assert_exit(1)
            .assert_stderr_has("registry.url")
            .assert_stderr_has(&url)
            .assert_stderr_has(answered)
            .assert_no_panic();
        if answered.ends_with("404") {
            out.assert_stderr_has("metadata database");
        } else {
            out.assert_stderr_has("https://");
        }
        assert!(
            out.elapsed < Duration::from_secs(10),
            "{mode:?} must stop at once:\n{}",
            out.dump()
        );
        assert_eq!(
            registry.stats().list_requests,
            0,
            "{mode:?}: nothing listed"
        );
        assert!(db.rows().await.is_empty(), "{mode:?}: nothing recorded");
    }
}

// ---------------------------------------------------------------------------------------------
// 4: control commands on a running service
// ---------------------------------------------------------------------------------------------

async fn status_json(env: &Env) -> serde_json::Value {
    let out = cli(&["status", "--json"], env, Duration::from_secs(15)).await;
    out.assert_exit(0).assert_no_panic();
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("status --json is not JSON: {e}\n{}", out.dump()))
}

#[actix_rt::test]
async fn control_commands_steer_a_running_service_and_sigterm_stops_it_cleanly() {
    let world = busy_world(400);
    let db = TestDb::new().await;
    world.insert(&db.database()).await.expect("seeding");
    let registry =
        RegistrySimulator::start(world.registry_paths(), trusted(), 0).expect("registry");
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
        eventually(Duration::from_secs(1), || async move {
            r.stats().in_flight >= 4
        })
        .await,
        "in flight should reach 4 within 1 s: {:?}",
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

// ---------------------------------------------------------------------------------------------
// 5, 6, 7: failures an operator must understand
// ---------------------------------------------------------------------------------------------

#[actix_rt::test]
async fn control_commands_without_a_service_say_so_and_exit_1() {
    let env = Env::new().set("ADMIN__LISTEN", format!("127.0.0.1:{}", free_port()));
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["pause"],
        &["resume"],
        &["concurrency", "3"],
    ] {
        cli(args, &env, Duration::from_secs(20))
            .await
            .assert_exit(1)
            .assert_stderr_has("no registry-repair service answers")
            .assert_no_panic();
    }
}

/// Settings for commands that must fail on the database (or on validation) before they touch a
/// registry: the registry's port is closed, the admin port free.
fn env_with_database(url: &str, connect_timeout_ms: u32) -> Env {
    Env::new()
        .set("DATABASE__URL", url)
        .set(
            "DATABASE__CONNECT_TIMEOUT_MS",
            connect_timeout_ms.to_string(),
        )
        .set("REGISTRY__URL", "http://127.0.0.1:1")
        .set(
            "REGISTRY__KEY_PATH",
            fixture_key_path().to_string_lossy().into_owned(),
        )
        .set("ADMIN__LISTEN", format!("127.0.0.1:{}", free_port()))
}

#[actix_rt::test]
async fn bad_configuration_and_arguments_exit_2_naming_what_to_fix() {
    // If validation let something through, the command fails fast here instead of touching a
    // real database or port.
    let base = env_with_database(UNREACHABLE_DB, 1000);
    let cargo_toml = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let dir = std::env::temp_dir().join(format!("rr-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let unknown_key = dir.join("unknown-key.toml");
    std::fs::write(&unknown_key, "[worker]\nspeed = 3\n").expect("writing a config file");
    let unknown_key = unknown_key.to_string_lossy().into_owned();

    let cases: Vec<(Vec<&str>, Env, &str)> = vec![
        (
            vec!["run"],
            base.clone().set("WORKER__MAX_CONCURRENCY", "-1"),
            "worker.max_concurrency",
        ),
        (
            vec!["run"],
            base.clone().set("REGISTRY__PAGE_SIZE", "5000"),
            "registry.page_size",
        ),
        (
            vec!["run"],
            base.clone().unset("REGISTRY__KEY_PATH"),
            "registry.key_path",
        ),
        (
            vec!["run"],
            base.clone().set(
                "REGISTRY__KEY_PATH",
                cargo_toml.to_string_lossy().into_owned(),
            ),
            "registry.key_path",
        ),
        (
            vec!["run"],
            base.clone()
                .set("REGISTRY__KEY_PATH", "/nonexistent/registry.key"),
            "registry.key_path",
        ),
        (
            vec!["--config", "/nonexistent.toml", "status"],
            base.clone(),
            "--config",
        ),
        (
            vec!["--config", &unknown_key, "status"],
            base.clone(),
            "speed",
        ),
        (vec!["--config", &unknown_key, "run"], base.clone(), "speed"),
        (vec!["concurrency", "-1"], base.clone(), ""),
        (vec!["concurrency", "abc"], base.clone(), "abc"),
        (vec!["report", "--format", "xml"], base.clone(), "xml"),
        (vec!["frobnicate"], base.clone(), "frobnicate"),
    ];
    for (args, env, names) in &cases {
        let out = cli(args, env, Duration::from_secs(20)).await;
        out.assert_exit(2).assert_no_panic();
        if !names.is_empty() {
            out.assert_stderr_has(names);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[actix_rt::test]
async fn an_unreachable_database_fails_run_and_report_quickly_naming_it() {
    let env = env_with_database(UNREACHABLE_DB, 2000);
    for args in [
        &["run"][..],
        &["run", "--until-done"],
        &["report"],
        &["migrate"],
    ] {
        let out = cli(args, &env, Duration::from_secs(20)).await;
        out.assert_exit(1)
            .assert_stderr_has("127.0.0.1:1")
            .assert_no_panic();
        assert!(
            out.elapsed < Duration::from_secs(10),
            "must give up within 10 s:\n{}",
            out.dump()
        );
    }
}

/// A "database server" that accepts connections but never answers (overloaded, or a proxy whose
/// backend is gone): only `database.connect_timeout_ms` ends the wait.
fn silent_server() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a silent server");
    let addr = listener.local_addr().expect("local address");
    (listener, format!("postgres://postgres@{addr}/x"))
}

#[actix_rt::test]
async fn a_database_that_never_answers_fails_run_and_report_after_the_connect_timeout() {
    let (_listener, url) = silent_server();
    let env = env_with_database(&url, 2000);
    let host = url
        .trim_start_matches("postgres://postgres@")
        .trim_end_matches("/x");
    for args in [&["run"][..], &["report"]] {
        let out = cli(args, &env, Duration::from_secs(20)).await;
        out.assert_exit(1).assert_stderr_has(host).assert_no_panic();
        assert!(
            out.elapsed < Duration::from_secs(10),
            "must give up after the connect timeout:\n{}",
            out.dump()
        );
    }
}

/// Known bug: `migrate` connects without `database.connect_timeout_ms` (src/db/mod.rs, `migrate`
/// establishes its connection with no timeout, and src/cli.rs passes it only the URL), so it hangs
/// for as long as the server keeps the connection open.
#[actix_rt::test]
async fn migrate_against_a_database_that_never_answers_gives_up_after_the_connect_timeout() {
    let (_listener, url) = silent_server();
    let env = Env::new()
        .set("DATABASE__URL", &url)
        .set("DATABASE__CONNECT_TIMEOUT_MS", "2000");
    let out = cli(&["migrate"], &env, Duration::from_secs(10)).await;
    out.assert_exit(1).assert_no_panic();
}

/// Known bug: when `admin.listen` is taken, `service::start` fails after it started the Writer and
/// the Scheduler; dropping the actix System then polls the never-started Writer outside the
/// runtime (`Writer::started` calls `run_interval`), which panics ("there is no reactor running").
#[actix_rt::test]
async fn run_with_admin_listen_already_taken_exits_1_naming_it_without_a_panic() {
    let mut world = World::new();
    let g = world.group(None, "Port-Group");
    world.project(g, "App", &["api"], &[]);
    let db = TestDb::new().await;
    world.insert(&db.database()).await.expect("seeding");
    let registry =
        RegistrySimulator::start(world.registry_paths(), trusted(), 0).expect("registry");
    let taken = TcpListener::bind("127.0.0.1:0").expect("taking a port");
    let listen = taken.local_addr().expect("local address").to_string();
    let env = service_env(&db, &registry.url(), &listen);
    cli(&["run"], &env, Duration::from_secs(20))
        .await
        .assert_exit(1)
        .assert_stderr_has("admin.listen")
        .assert_stderr_has(&listen)
        .assert_no_panic();
}

// ---------------------------------------------------------------------------------------------
// 8: report
// ---------------------------------------------------------------------------------------------

#[actix_rt::test]
async fn report_shows_totals_and_the_projects_missing_most_in_every_format() {
    let mut world = World::new();
    let top = world.group(None, "Top-Group");
    let sub = world.group(Some(top), "Sub_Team");
    let other = world.group(None, "Other.Org");
    let web = world.project(top, "Web-App", &["", "api", "api/v2"], &["api"]);
    let deep = world.project(sub, "Deep.Project", &["", "a/b/c", "x"], &[]);
    world.project(other, "Clean", &["one"], &["one"]);
    world.project(other, "Rails-Only", &[], &["gone"]);
    world.project(other, "Dash-", &[], &[]);
    world.project_without_route(top, "Orphan");

    let db = TestDb::new().await;
    world.insert(&db.database()).await.expect("seeding");
    let registry =
        RegistrySimulator::start(world.registry_paths(), trusted(), 0).expect("registry");
    let env = service_env(&db, &registry.url(), "127.0.0.1:0");
    cli(&["run", "--until-done"], &env, Duration::from_secs(30))
        .await
        .assert_exit(0)
        .assert_no_panic();
    assert_rows_match(&world, &db).await;

    let expected = world.expected();
    let completed = expected
        .values()
        .filter(|e| e.status == Status::Completed)
        .count() as i64;
    let failed = expected
        .values()
        .filter(|e| e.status == Status::Failed)
        .count() as i64;
    let with_missing = expected.values().filter(|e| e.missing > 0).count() as i64;
    let missing: i64 = expected.values().map(|e| i64::from(e.missing)).sum();
    assert_eq!(
        (completed, failed, with_missing, missing),
        (5, 1, 2, 5),
        "the world is as this test thinks"
    );

    let report_env = Env::new().set("DATABASE__URL", &db.url);
    let json = cli(
        &["report", "--format", "json"],
        &report_env,
        Duration::from_secs(20),
    )
    .await;
    json.assert_exit(0).assert_no_panic();
    let report: serde_json::Value = serde_json::from_str(&json.stdout)
        .unwrap_or_else(|e| panic!("report --format json is not JSON: {e}\n{}", json.dump()));
    let totals: HashMap<&str, i64> = [
        "projects",
        "analysed",
        "completed",
        "failed",
        "pending",
        "projects_with_missing",
        "missing",
        "unaddressable",
    ]
    .into_iter()
    .map(|k| {
        (
            k,
            report["totals"][k]
                .as_i64()
                .unwrap_or_else(|| panic!("totals.{k} is missing: {report}")),
        )
    })
    .collect();
    let n = world.projects.len() as i64;
    let want: HashMap<&str, i64> = [
        ("projects", n),
        ("analysed", n),
        ("completed", completed),
        ("failed", failed),
        ("pending", 0),
        ("projects_with_missing", with_missing),
        ("missing", missing),
        ("unaddressable", 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(totals, want, "{report}");

    let top_missing: Vec<(i64, String, i64)> = report["top_missing"]
        .as_array()
        .unwrap_or_else(|| panic!("top_missing is not a list: {report}"))
        .iter()
        .map(|p| {
            (
                p["project_id"].as_i64().expect("project_id"),
                p["full_path"].as_str().expect("full_path").to_string(),
                p["missing_count"].as_i64().expect("missing_count"),
            )
        })
        .collect();
    assert_eq!(
        top_missing,
        vec![
            (deep, "Top-Group/Sub_Team/Deep.Project".to_string(), 3),
            (web, "Top-Group/Web-App".to_string(), 2),
        ],
        "{report}"
    );

    let csv = cli(
        &["report", "--format", "csv"],
        &report_env,
        Duration::from_secs(20),
    )
    .await;
    csv.assert_exit(0).assert_no_panic();
    let lines: Vec<&str> = csv.stdout.lines().collect();
    let header = lines
        .iter()
        .position(|l| *l == "project_id,full_path,missing_count")
        .unwrap_or_else(|| panic!("no CSV header line\n{}", csv.dump()));
    // The project block ends at the blank line before the namespace block.
    let block: Vec<&str> = lines[header + 1..]
        .iter()
        .take_while(|l| !l.is_empty())
        .copied()
        .collect();
    assert_eq!(
        block,
        vec![
            format!("{deep},Top-Group/Sub_Team/Deep.Project,3"),
            format!("{web},Top-Group/Web-App,2"),
        ],
        "{}",
        csv.dump()
    );
    assert!(
        csv.stdout
            .contains("\nnamespace,analysed,completed,failed,projects_with_missing,missing\n"),
        "{}",
        csv.dump()
    );

    let table = cli(
        &["report", "--format", "table"],
        &report_env,
        Duration::from_secs(20),
    )
    .await;
    table
        .assert_exit(0)
        .assert_stdout_has("Top-Group/Sub_Team/Deep.Project")
        .assert_no_panic();
    let default = cli(&["report"], &report_env, Duration::from_secs(20)).await;
    default.assert_exit(0);
    assert_eq!(
        default.stdout, table.stdout,
        "the default format is the table"
    );
}
