//! The database grants docs/operations.md tells an operator to give, run as the doc has them: a
//! role given exactly that SQL block runs `run --until-done` and `report`, and cannot do what the
//! block does not grant; given docs/repair.md's block as well, it plans, applies, verifies and
//! undoes a repair. A grant missing from either doc fails here, naming what was denied.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use registry_repair::db::repair;
use registry_repair::demo::seed::World;

use crate::common::process::{cli, service_env, Env, Finished};
use crate::common::{assert_rows_match, run_on, TestApp};

const DOC: &str = "docs/operations.md";
/// Where its block begins in [`DOC`].
const DOC_STEP: &str = "**Database grants.**";

/// The repair's grants, on top of [`DOC`]'s.
const REPAIR_DOC: &str = "docs/repair.md";
const REPAIR_STEP: &str = "Write only on the primary";

/// The role name the doc grants to; each test run swaps in a name of its own.
const DOC_ROLE: &str = "registry_repair";

/// PostgreSQL's words for a statement the role lacks a privilege for.
const DENIED: &str = "permission denied";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The first ```sql block after `step` in `doc`.
fn grants_sql(doc: &str, step: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(doc);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let (_, after) = text
        .split_once(step)
        .unwrap_or_else(|| panic!("{doc} has no {step:?}"));
    let (_, block) = after
        .split_once("```sql\n")
        .unwrap_or_else(|| panic!("{doc} has no ```sql block after {step:?}"));
    let (sql, _) = block
        .split_once("```")
        .unwrap_or_else(|| panic!("{doc}'s grants block is not closed"));
    sql.to_string()
}

/// `sql` with the role `registry_repair` renamed to `role` where it stands as a name of its own,
/// not where it begins a table's name (`registry_repair_claims`).
fn with_role(sql: &str, role: &str) -> String {
    let part_of_a_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(at) = rest.find(DOC_ROLE) {
        let before = rest[..at].chars().next_back().or(out.chars().next_back());
        let after = rest[at + DOC_ROLE.len()..].chars().next();
        out.push_str(&rest[..at]);
        if before.is_some_and(part_of_a_name) || after.is_some_and(part_of_a_name) {
            out.push_str(DOC_ROLE);
        } else {
            out.push_str(role);
        }
        rest = &rest[at + DOC_ROLE.len()..];
    }
    out.push_str(rest);
    out
}

/// A LOGIN role of this test run's own: roles are the whole cluster's, and tests run in parallel.
/// Dropped on drop, the test's failure included, with the privileges it holds in `db_url`.
struct Role {
    name: String,
    db_url: String,
}

impl Role {
    fn named_for_this_run(db_url: &str) -> Self {
        let name = format!(
            "rr_grants_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        Self {
            name,
            db_url: db_url.to_string(),
        }
    }

    /// The test database's URL as this role (trust auth: no password).
    fn url(&self) -> String {
        let mut url = url::Url::parse(&self.db_url).expect("the test database's URL");
        url.set_username(&self.name)
            .expect("a database URL takes a user name");
        url.set_password(None)
            .expect("a database URL takes a password");
        url.to_string()
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        let (name, db_url) = (self.name.clone(), self.db_url.clone());
        // Drop runs inside the test's runtime: do the async work on a thread of its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(mut conn) = AsyncPgConnection::establish(&db_url).await {
                    // DROP OWNED BY fails for a role the doc's block never got to create.
                    let _ = conn
                        .batch_execute(&format!(
                            "DO $$ BEGIN \
                                 IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{name}') THEN \
                                     EXECUTE 'DROP OWNED BY {name}'; \
                                 END IF; \
                             END $$; \
                             DROP ROLE IF EXISTS {name}"
                        ))
                        .await;
                }
            });
        })
        .join();
    }
}

/// `out` ended well; if the database denied it something, the failure says what first, and whose
/// grants (`docs`) fell short.
fn assert_granted(out: &Finished, command: &str, docs: &str) {
    let denied: Vec<&str> = out
        .stderr
        .lines()
        .chain(out.stdout.lines())
        .filter(|l| l.contains(DENIED))
        .collect();
    assert!(
        denied.is_empty(),
        "the grants of {docs} are not enough for `{command}`:\n{}\n\n{}",
        denied.join("\n"),
        out.dump()
    );
    out.assert_exit(0).assert_no_panic();
}

/// Runs the binary with `args` to its end: a statement the database denies ends it at once.
async fn run_granted(args: &[&str], env: &Env, timeout: Duration, docs: &str) -> Finished {
    let out = cli(args, env, timeout).await;
    assert_granted(&out, &args.join(" "), docs);
    out
}

/// What the role tries that the doc does not grant, and what the database must answer.
async fn assert_denied(role_url: &str, sql: &str, answer: &str) {
    let mut conn = AsyncPgConnection::establish(role_url)
        .await
        .unwrap_or_else(|e| panic!("connecting as the granted role: {e}"));
    match conn.batch_execute(sql).await {
        Ok(()) => {
            panic!("the role given {DOC}'s grants could run `{sql}`, which they do not grant")
        }
        Err(e) => assert!(
            e.to_string().contains(answer),
            "`{sql}` as the granted role: expected {answer:?}, got: {e}"
        ),
    }
}

/// `world` in a database migrated as the doc orders it (`migrate` as a privileged role, then the
/// block), and a role of its own given operations.md's grants block. The role is dropped first.
async fn with_documented_role(world: &World) -> (TestApp, Env, Role) {
    let app = TestApp::prepare(world).await;
    let privileged = service_env(&app.db, &app.registry.url(), "127.0.0.1:0");
    cli(&["migrate"], &privileged, Duration::from_secs(60))
        .await
        .assert_exit(0)
        .assert_no_panic();
    let role = Role::named_for_this_run(&app.db.url);
    run_on(
        &app.db.url,
        &with_role(&grants_sql(DOC, DOC_STEP), &role.name),
    )
    .await;
    (app, privileged, role)
}

#[actix_rt::test]
async fn a_role_with_exactly_the_documented_grants_runs_and_reports() {
    let world = World::generate(40, 17);
    let (app, privileged, role) = with_documented_role(&world).await;
    let db = &app.db;

    let as_role = privileged
        .clone()
        .set("DATABASE__URL", role.url())
        .set("WORKER__MAX_CONCURRENCY", "4");
    run_granted(
        &["run", "--until-done"],
        &as_role,
        Duration::from_secs(120),
        DOC,
    )
    .await;
    assert_rows_match(&world, db).await;
    let report = run_granted(&["report"], &as_role, Duration::from_secs(60), DOC).await;
    assert!(!report.stdout.trim().is_empty(), "{}", report.dump());

    // GitLab's own tables stay read-only, and the tracking table's rows are never deleted.
    assert_denied(
        &role.url(),
        "INSERT INTO projects (id, namespace_id) VALUES (999999, 1)",
        "permission denied for table projects",
    )
    .await;
    assert_denied(
        &role.url(),
        "DELETE FROM container_registry_data_repair_details",
        "permission denied for table container_registry_data_repair_details",
    )
    .await;
}

/// GitLab's `container_repositories` rows, `(project_id, name)` sorted: what an operator looks at
/// before and after a repair.
async fn repository_rows(db_url: &str) -> Vec<(i64, String)> {
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        project_id: i64,
        #[diesel(sql_type = diesel::sql_types::Text)]
        name: String,
    }
    let mut conn = AsyncPgConnection::establish(db_url)
        .await
        .unwrap_or_else(|e| panic!("connecting to {db_url}: {e}"));
    let rows: Vec<Row> =
        diesel::sql_query("SELECT project_id, name::text FROM container_repositories")
            .load(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("reading container_repositories: {e}"));
    // Sorted here, not by the database's collation: compared with lists sorted in Rust.
    let mut rows: Vec<(i64, String)> = rows.into_iter().map(|r| (r.project_id, r.name)).collect();
    rows.sort();
    rows
}

#[actix_rt::test]
async fn a_role_with_the_documented_repair_grants_plans_applies_verifies_and_undoes() {
    let mut world = World::new();
    let group = world.group(None, "Grants-Grp");
    world.project(group, "Lost", &["", "api", "api/web"], &["api"]);
    world.project(group, "Also-Lost", &["tools"], &[]);
    world.project(group, "Whole", &["app"], &["app"]);
    let lost = world.lost_repositories();
    assert_eq!(lost.len(), 3, "the world loses three repositories");
    let (app, privileged, role) = with_documented_role(&world).await;
    let db = &app.db;
    let repair_grants = with_role(&grants_sql(REPAIR_DOC, REPAIR_STEP), &role.name);
    // GitLab CE has no geo_nodes: the block runs there all the same.
    run_on(&db.url, &repair_grants).await;
    // EE's table, with a secondary site; the block run again grants it too.
    run_on(
        &db.url,
        "CREATE TABLE geo_nodes (id bigserial PRIMARY KEY, \"primary\" boolean DEFAULT false, \
                                 name varchar NOT NULL); \
         INSERT INTO geo_nodes (\"primary\", name) VALUES (true, 'primary'), (false, 'secondary')",
    )
    .await;
    run_on(&db.url, &repair_grants).await;
    let docs = format!("{DOC} and {REPAIR_DOC}");
    let as_role = privileged.clone().set("DATABASE__URL", role.url());
    let long = Duration::from_secs(60);

    // The operator's order: `run` finds the lost repositories, then the repair's steps.
    run_granted(&["run", "--until-done"], &as_role, long, &docs).await;
    let before = repository_rows(&db.url).await;

    let plan = run_granted(
        &["repair", "plan", "--format", "json"],
        &as_role,
        long,
        &docs,
    )
    .await;
    let value: serde_json::Value = serde_json::from_str(&plan.stdout)
        .unwrap_or_else(|e| panic!("the plan is not JSON ({e})\n{}", plan.dump()));
    assert_eq!(value["totals"]["restore"], 3, "{}", plan.dump());
    assert_eq!(
        repository_rows(&db.url).await,
        before,
        "`repair plan` writes nothing"
    );

    let applied = run_granted(&["repair", "apply"], &as_role, long, &docs).await;
    applied.assert_stdout_has("Repair run ");
    // Read, geo_nodes says for certain that the rows must be announced to a secondary.
    assert!(
        applied
            .stdout
            .contains("This GitLab has Geo secondary sites"),
        "the grants of {docs} do not let `repair apply` read geo_nodes\n{}",
        applied.dump()
    );
    let mut restored = before.clone();
    restored.extend(lost);
    restored.sort();
    assert_eq!(
        repository_rows(&db.url).await,
        restored,
        "after `repair apply` every lost repository has its row\n{}",
        applied.dump()
    );

    let runs = repair::runs(&db.database())
        .await
        .expect("the repair's runs");
    let run = runs
        .first()
        .unwrap_or_else(|| panic!("`repair apply` recorded no run\n{}", applied.dump()))
        .id
        .to_string();
    run_granted(&["repair", "verify", &run], &as_role, long, &docs)
        .await
        .assert_stdout_has("Every repository the run meant to restore has a row");

    run_granted(&["repair", "undo", &run], &as_role, long, &docs)
        .await
        .assert_stdout_has("3 rows deleted");
    assert_eq!(
        repository_rows(&db.url).await,
        before,
        "after `repair undo` container_repositories is as it was before the apply"
    );
}

/// `run --until-done` as a role given the doc's grants, then `revoke` (`{role}` for its name):
/// the database refuses it something no retry mends, so it ends by itself, well within the
/// bound, with exit 1 and a last line naming what was refused, `expected`, and the grants.
async fn assert_refused_at_once(revoke: &str, expected: &str) {
    let world = World::generate(10, 23);
    let (app, privileged, role) = with_documented_role(&world).await;
    let db = &app.db;
    run_on(&db.url, &revoke.replace("{role}", &role.name)).await;

    let as_role = privileged.set("DATABASE__URL", role.url());
    let out = cli(&["run", "--until-done"], &as_role, Duration::from_secs(60)).await;
    out.assert_exit(1).assert_no_panic();
    let last = out.stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains(expected) && last.contains("grants") && last.contains("Database grants"),
        "the last line should name what was refused ({expected:?}) and the grants to check\n{}",
        out.dump()
    );
    assert!(db.rows().await.is_empty(), "{}", out.dump());
}

#[actix_rt::test]
async fn a_role_without_usage_on_the_sequences_stops_at_once_naming_it() {
    // The first claim of projects takes an id from its sequence.
    assert_refused_at_once(
        "DO $$ BEGIN \
             EXECUTE format('REVOKE USAGE ON ALL SEQUENCES IN SCHEMA %I FROM {role}', current_schema()); \
         END $$",
        "permission denied for sequence registry_repair_claims_id_seq",
    )
    .await;
}

#[actix_rt::test]
async fn a_role_that_may_not_insert_tracking_rows_stops_at_once_naming_it() {
    // Projects are claimed and listed; the Writer's first write is refused.
    assert_refused_at_once(
        "REVOKE INSERT ON container_registry_data_repair_details FROM {role}",
        "permission denied for table container_registry_data_repair_details",
    )
    .await;
}

#[test]
fn the_role_is_renamed_only_where_it_stands_alone() {
    let sql = "GRANT SELECT ON registry_repair_claims TO registry_repair;\n\
               LIKE 'registry\\_repair\\_%' ... TO registry_repair', r.x";
    assert_eq!(
        with_role(sql, "rr_x"),
        "GRANT SELECT ON registry_repair_claims TO rr_x;\n\
         LIKE 'registry\\_repair\\_%' ... TO rr_x', r.x"
    );
}
