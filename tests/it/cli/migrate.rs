//! `migrate`: it creates GitLab's tracking table with GitLab's own shape, once, and has nothing to
//! do where GitLab already created it; it says which migrations it ran and whose table it found,
//! and logs nothing at the default level; `run` and `report` before it say what to do.

use std::time::Duration;

use crate::common::process::{cli, service_env, Env};
use crate::common::TestDb;
use diesel::query_builder::SqlQuery;
use diesel::sql_types::{BigInt, Integer, Nullable, SmallInt, Text};
use diesel_async::methods::LoadQuery;
use diesel_async::{AsyncConnection, AsyncPgConnection};
use registry_repair::demo::seed::World;

const TABLE: &str = "container_registry_data_repair_details";
const STATUS_INDEX: &str = "index_container_registry_data_repair_details_on_status";

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

/// Every migration's name, oldest first (the directories under `migrations/`).
fn migration_names() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("the migrations directory")
        .filter_map(Result::ok)
        .filter(|e| e.path().join("up.sql").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// What `migrate` prints once all have run.
fn nothing_to_do() -> String {
    format!(
        "nothing to do: all {} migrations had run\n",
        migration_names().len()
    )
}

/// `migrate` logs nothing at the default level (the statement mode is `run`'s to say).
fn assert_quiet(out: &crate::common::process::Finished) {
    assert!(
        !out.stderr.contains(" INFO ") && !out.stderr.contains("statement mode"),
        "migrate logged at info:\n{}",
        out.dump()
    );
}

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
    first.assert_exit(0).assert_no_panic();
    let names = migration_names();
    let applied: String = names
        .iter()
        .map(|name| format!("applied migration {name}\n"))
        .collect();
    assert_eq!(
        first.stdout,
        format!(
            "{applied}container_registry_data_repair_details: created, as GitLab defines it\n\
             {n} of {n} migrations applied; all have run now\n",
            n = names.len()
        ),
        "{}",
        first.dump()
    );
    assert!(applied.contains("applied migration 2026-12-07-000000_failure_reasons\n"));
    assert_quiet(&first);
    let second = cli(&["migrate"], &env, Duration::from_secs(30)).await;
    second.assert_exit(0).assert_no_panic();
    assert_eq!(second.stdout, nothing_to_do(), "{}", second.dump());
    assert_quiet(&second);

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
    let first = cli(&["migrate"], &env, Duration::from_secs(30)).await;
    first
        .assert_exit(0)
        .assert_stdout_has("applied migration 2026-11-25-000000_create_tracking_table\n")
        .assert_stdout_has(
            "\ncontainer_registry_data_repair_details: already there (GitLab 15.10 to 19.0 \
             create it), left as it is\n",
        )
        .assert_no_panic();
    assert_quiet(&first);

    assert_eq!(
        raw_rows(&db).await,
        before,
        "GitLab's row must be untouched"
    );
    assert_eq!(before[0].missing_count, Some(7));
    assert_eq!(before[0].status, 1);
    assert_gitlab_shape(&db).await;

    let second = cli(&["migrate"], &env, Duration::from_secs(30)).await;
    second.assert_exit(0);
    assert_eq!(second.stdout, nothing_to_do(), "{}", second.dump());
}

#[actix_rt::test]
async fn migrate_after_an_upgrade_names_only_the_migrations_it_ran() {
    // A database an earlier release migrated: everything but the table of failure reasons.
    let db = TestDb::new().await;
    db.execute(
        "DROP TABLE registry_repair_failures; \
         DELETE FROM __diesel_schema_migrations WHERE version = '20261207000000'",
    )
    .await;
    let env = Env::new().set("DATABASE__URL", &db.url);
    // `report` refuses a database this release has not migrated, and says what to do.
    cli(&["report"], &env, Duration::from_secs(20))
        .await
        .assert_exit(1)
        .assert_stderr_has("registry-repair migrate");
    let out = cli(&["migrate"], &env, Duration::from_secs(30)).await;
    out.assert_exit(0).assert_no_panic();
    assert_eq!(
        out.stdout,
        format!(
            "applied migration 2026-12-07-000000_failure_reasons\n\
             container_registry_data_repair_details: already there (an earlier migrate made it, \
             or GitLab)\n1 of {} migrations applied; all have run now\n",
            migration_names().len()
        ),
        "{}",
        out.dump()
    );
    assert_quiet(&out);
    cli(&["report"], &env, Duration::from_secs(20))
        .await
        .assert_exit(0);
}
