//! The repair against the real PostgreSQL and the simulated registry, one file per part: `plan`
//! (the guards on seeded projects, nothing written), `apply` (exactly the planned rows, once),
//! `undo_verify`, `binary` (the real binary's commands, exit codes and SIGKILL), `controls`
//! (the service's controls during a repair) and `lease` (one apply or undo at a time). The seeded
//! GitLab and the helpers they share are here.

mod apply;
mod beside;
mod binary;
mod controls;
mod ends;
mod lease;
mod ownership;
mod plan;
mod races;
mod undo_verify;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crate::common;
use crate::common::process::{cli, service_env};
use crate::common::{
    assert_in_flight_settles_at, settings_for, signer, status_becomes, TestApp, TestDb, FIXTURE_KEY,
};
use diesel::sql_types::Text;
use registry_repair::admin::AdminClient;
use registry_repair::commands::repair::plan::{self as pipeline, Mode, Repaired};
use registry_repair::commands::repair::verify::verify;
use registry_repair::config::Settings;
use registry_repair::db::repair::lease::{self as repair_lease, Claimant, Lease};
use registry_repair::db::repair::{self, RepairError, Scope, UndoOutcome, Written};
use registry_repair::db::tracking::{self, TrackingRow};
use registry_repair::db::Database;
use registry_repair::db::DbError;
use registry_repair::demo::seed::World;
use registry_repair::fence::Fence;
use registry_repair::registry::simulator::RegistrySimulator;
use registry_repair::registry::RegistryClient;
use registry_repair::repair::guards::Consent;
use registry_repair::repair::output::Outcome;
use registry_repair::repair::{Action, ProjectPlan, Reason};
use registry_repair::scheduler::{BreakerPosition, GetStatus, RunEnd, ServiceState};
use registry_repair::service::ServiceOptions;
use registry_repair::work::WorkName;

/// The seeded GitLab: projects by name, each with what the registry holds and Rails knows.
struct Seeded {
    db: TestDb,
    database: Database,
    registry: RegistrySimulator,
    client: RegistryClient,
    ids: HashMap<&'static str, i64>,
}

fn world() -> (World, HashMap<&'static str, i64>) {
    let mut w = World::new();
    let g = w.group(None, "Repair_Grp");
    let sub = w.group(Some(g), "Sub");
    let other = w.group(None, "Other");
    let mut ids = HashMap::new();
    // Root, nested and two-segment names missing; a deep name GitLab cannot address; a name Rails
    // has; a Rails-only row.
    ids.insert(
        "plain",
        w.project(
            sub,
            "Plain",
            &["", "a", "a/b", "deep/x/y", "known"],
            &["known", "rails-only"],
        ),
    );
    ids.insert("pending", w.project(g, "Pending", &["", "x"], &[]));
    ids.insert("marked", w.project(g, "Marked", &["y"], &[]));
    ids.insert("disabled", w.project(g, "Disabled", &["z"], &[]));
    ids.insert("no_features", w.project(g, "NoFeatures", &["z"], &[]));
    // Legacy routes that differ only in case: one registry path for two projects.
    ids.insert("twin", w.project(g, "Twin", &["t"], &[]));
    ids.insert("twin_upper", w.project(g, "TWIN", &["t"], &[]));
    // Created after the registry's repositories (mid-2023 to mid-2024): a reused path.
    ids.insert("reused", w.project(g, "Reused", &["old"], &[]));
    // An enabled cleanup policy: restored only with consent.
    ids.insert("policed", w.project(g, "Policed", &["p"], &[]));
    // Another top-level namespace, for the scope flags.
    ids.insert("elsewhere", w.project(other, "Elsewhere", &["e"], &[]));
    ids.insert("nothing_missing", w.project(other, "Fine", &["f"], &["f"]));
    (w, ids)
}

async fn seed() -> Seeded {
    let (world, ids) = world();
    let s = Seeded::from(&world, ids).await;
    s.db.execute(&format!(
        "UPDATE projects SET pending_delete = true WHERE id = {}; \
         UPDATE projects SET marked_for_deletion_at = current_date WHERE id = {}; \
         UPDATE project_features SET container_registry_access_level = 0 WHERE project_id = {}; \
         DELETE FROM project_features WHERE project_id = {}; \
         UPDATE projects SET created_at = '2025-01-01' WHERE id = {}; \
         INSERT INTO container_expiration_policies (project_id, created_at, updated_at, enabled) \
             VALUES ({}, now(), now(), true), ({}, now(), now(), false);",
        s.ids["pending"],
        s.ids["marked"],
        s.ids["disabled"],
        s.ids["no_features"],
        s.ids["reused"],
        s.ids["policed"],
        s.ids["plain"]
    ))
    .await;
    // Entries outside the project path on its first page: ignored.
    s.registry
        .add_foreign_entries("other/elsewhere", &["other/elsewhere-x/q"]);
    s
}

impl Seeded {
    /// `world` analysed (see [`analysed`]), its projects known by the names in `ids`, and a
    /// registry client that reads two entries per page.
    async fn from(world: &World, ids: HashMap<&'static str, i64>) -> Self {
        let (db, database, registry) = analysed(world).await;
        let client = RegistryClient::new(
            &registry.url(),
            2, // several pages per project
            Duration::from_secs(5),
            100,
            signer(FIXTURE_KEY),
        )
        .expect("client");
        Seeded {
            db,
            database,
            registry,
            client,
            ids,
        }
    }
}

/// Every row of `sql`'s result as JSON text, in the query's order: byte-exact comparisons.
async fn lines(database: &Database, sql: &str) -> Vec<String> {
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Line {
        #[diesel(sql_type = Text)]
        line: String,
    }
    let mut conn = database.conn().await.expect("connection");
    let rows: Vec<Line> = diesel::sql_query(format!(
        "SELECT row_to_json(t)::text AS line FROM ({sql}) t"
    ))
    .load(&mut conn)
    .await
    .unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.into_iter().map(|l| l.line).collect()
}

async fn repositories(database: &Database) -> Vec<String> {
    lines(database, "SELECT * FROM container_repositories ORDER BY id").await
}

async fn tracking_rows(database: &Database) -> Vec<String> {
    lines(
        database,
        "SELECT * FROM container_registry_data_repair_details ORDER BY project_id",
    )
    .await
}

async fn repair_tables(database: &Database) -> Vec<String> {
    lines(
        database,
        "SELECT (SELECT count(*) FROM registry_repair_runs) AS runs, \
                (SELECT count(*) FROM registry_repair_run_projects) AS projects, \
                (SELECT count(*) FROM registry_repair_restored) AS restored, \
                (SELECT count(*) FROM registry_repair_skipped) AS skipped, \
                (SELECT count(*) FROM registry_repair_watermarks) AS watermarks",
    )
    .await
}

/// (project id, name) → (action, reason) of every record.
type Decisions = BTreeMap<(i64, String), (Action, Option<Reason>)>;

fn decisions<'a>(plans: impl IntoIterator<Item = &'a ProjectPlan>) -> Decisions {
    plans
        .into_iter()
        .flat_map(|p| {
            p.repositories
                .iter()
                .map(move |r| ((p.project_id, r.name.clone()), (r.action, r.reason)))
        })
        .collect()
}

fn expected(ids: &HashMap<&'static str, i64>) -> Decisions {
    use Action::*;
    use Reason::*;
    let d = |project: &str, name: &str, action, reason| {
        ((ids[project], name.to_string()), (action, reason))
    };
    [
        d("plain", "", Restore, None),
        d("plain", "a", Restore, None),
        d("plain", "a/b", Restore, None),
        d("plain", "deep/x/y", Skip, Some(NameUnaddressable)),
        d("pending", "", Skip, Some(ProjectPendingDeletion)),
        d("pending", "x", Skip, Some(ProjectPendingDeletion)),
        d("marked", "y", Skip, Some(ProjectPendingDeletion)),
        d("disabled", "z", Skip, Some(RegistryDisabled)),
        d("no_features", "z", Skip, Some(RegistryDisabled)),
        d("twin", "t", Skip, Some(AmbiguousPath)),
        d("twin_upper", "t", Skip, Some(AmbiguousPath)),
        d("reused", "old", Review, Some(OlderThanProject)),
        d("policed", "p", Review, Some(CleanupPolicyEnabled)),
        d("elsewhere", "e", Restore, None),
    ]
    .into_iter()
    .collect()
}

/// The service's settings for `db` and `registry`: two entries per page (several pages per
/// project), three projects in flight.
fn repair_settings(db: &TestDb, registry: &RegistrySimulator) -> Settings {
    let mut settings = settings_for(db, &registry.url());
    settings.registry.page_size = 2;
    settings.worker.max_concurrency = 3;
    settings
}

/// A plan or an apply on the pipeline, run to its end.
async fn repair_run(
    settings: &Settings,
    database: &Database,
    scope: &Scope,
    mode: Mode,
) -> Repaired {
    let repairing = pipeline::start(
        settings,
        signer(FIXTURE_KEY),
        database,
        scope.clone(),
        mode,
        ServiceOptions::default(),
    )
    .await
    .expect("the repair starts");
    let repaired = tokio::time::timeout(Duration::from_secs(60), repairing.wait())
        .await
        .expect("the repair ends within 60 s")
        .expect("the repair ends");
    assert_eq!(repaired.end, RunEnd::Done);
    assert!(
        repaired.not_planned.is_empty(),
        "{:?}",
        repaired.not_planned
    );
    repaired
}

async fn plan(s: &Seeded, scope: &Scope) -> Vec<ProjectPlan> {
    let settings = repair_settings(&s.db, &s.registry);
    let mut plans = repair_run(&settings, &s.database, scope, Mode::Plan)
        .await
        .plans;
    plans.sort_by_key(|p| p.project_id);
    plans
}

async fn apply(s: &Seeded, scope: &Scope) -> (i64, Vec<Written>) {
    let settings = repair_settings(&s.db, &s.registry);
    let repaired = repair_run(&settings, &s.database, scope, Mode::Apply).await;
    (repaired.run.expect("an apply run"), repaired.written)
}

/// The scope of one project.
fn only(project: i64) -> Scope {
    Scope {
        projects: vec![project],
        ..Scope::default()
    }
}

/// The plan of the seeded project `plain` alone.
async fn plain_plan(s: &Seeded) -> Vec<ProjectPlan> {
    plan(s, &only(s.ids["plain"])).await
}

/// The repair lease, as an apply or undo of this process takes it (each test has a database of
/// its own, so nobody else holds it).
async fn take_lease(database: &Database, kind: &'static str) -> Lease {
    repair_lease::acquire(database, &Claimant::this_process(kind))
        .await
        .expect("the repair lease")
        .lease
}

/// `plans` written as run `run`, holding the repair lease for it as an apply does: taken, the
/// run recorded in it, released after.
async fn apply_as(
    database: &Database,
    run: i64,
    plans: &[ProjectPlan],
) -> Result<Vec<Written>, DbError> {
    let lease = take_lease(database, "apply").await;
    repair_lease::record_run(database, &lease, run)
        .await
        .expect("the run recorded in the lease");
    let written = repair::apply_batch(database, run, &Arc::new(Fence::unbounded()), plans).await;
    repair_lease::release(database, &lease)
        .await
        .expect("released");
    written
}

/// `repair undo RUN` in-process, holding the repair lease as the command does.
async fn undo_as(database: &Database, run: i64) -> Result<UndoOutcome, RepairError> {
    let lease = take_lease(database, "undo").await;
    let undone = repair::undo(database, run, &lease, &Arc::new(Fence::unbounded())).await;
    repair_lease::release(database, &lease)
        .await
        .expect("released");
    undone
}

/// `plans` written as a new apply run, in one batch.
async fn write(s: &Seeded, plans: &[ProjectPlan]) -> (i64, Vec<Written>) {
    let run = repair::start_apply(&s.database, &Scope::default())
        .await
        .expect("run");
    let written = apply_as(&s.database, run, plans).await.expect("apply");
    (run, written)
}

fn restored_names(written: &[Written]) -> Vec<(i64, String)> {
    let mut out: Vec<(i64, String)> = written
        .iter()
        .flat_map(|w| match w {
            Written::Applied { plan, restored, .. } => restored
                .iter()
                .map(|r| (plan.project_id, r.name.clone()))
                .collect(),
            _ => Vec::new(),
        })
        .collect();
    out.sort();
    out
}

/// How many rows `sql` (a count) returns.
async fn count(database: &Database, sql: &str) -> i64 {
    lines(database, sql)
        .await
        .first()
        .and_then(|l| l.split(':').nth(1))
        .and_then(|n| n.trim_end_matches('}').parse().ok())
        .unwrap_or_else(|| panic!("{sql}: not a count"))
}

/// The names every project of [`many`] lost.
const NAMES: [&str; 3] = ["", "a", "b/c"];

/// `n` analysed projects in one group, each missing the three [`NAMES`], and a registry answering
/// after `latency`.
async fn many(n: usize, latency: Duration) -> (World, TestDb, Database, RegistrySimulator) {
    let mut w = World::new();
    let g = w.group(None, "Many-Grp");
    for i in 0..n {
        w.project(g, &format!("P{i}"), &NAMES, &[]);
    }
    let (db, database, registry) = analysed(&w).await;
    registry.set_latency(latency);
    (w, db, database, registry)
}

/// `w` seeded into a fresh database with the tracking row the analysis gives each project, and a
/// registry holding its repositories.
async fn analysed(w: &World) -> (TestDb, Database, RegistrySimulator) {
    let TestApp { db, registry, .. } = TestApp::prepare(w).await;
    let database = db.database();
    let rows: Vec<TrackingRow> = w
        .expected()
        .into_iter()
        .map(|(id, e)| TrackingRow::completed(id, e.missing))
        .collect();
    tracking::upsert(&database, &rows)
        .await
        .expect("tracking rows");
    (db, database, registry)
}

/// Projects written by an apply whose rows, audit rows or counts are not all three: none may be.
async fn torn_projects(database: &Database) -> i64 {
    count(
        database,
        "SELECT count(*) AS n FROM registry_repair_run_projects rp \
         WHERE rp.restored <> 3 \
            OR (SELECT count(*) FROM registry_repair_restored r \
                WHERE r.run_id = rp.run_id AND r.project_id = rp.project_id) <> 3 \
            OR (SELECT count(*) FROM container_repositories c \
                WHERE c.project_id = rp.project_id) <> 3",
    )
    .await
        + count(
            database,
            "SELECT count(*) AS n FROM (SELECT project_id FROM container_repositories \
             GROUP BY project_id HAVING count(*) <> 3) t",
        )
        .await
}

/// Every project of `w` has its three rows, each restored exactly once, nothing missing.
async fn assert_all_restored_once(w: &World, db: &TestDb, database: &Database) {
    let got = count(
        database,
        "SELECT count(*) AS n FROM container_repositories WHERE status IS NULL",
    )
    .await;
    assert_eq!(got, (w.projects.len() * NAMES.len()) as i64);
    assert_eq!(torn_projects(database).await, 0);
    assert_eq!(
        count(
            database,
            "SELECT count(*) AS n FROM registry_repair_restored"
        )
        .await,
        (w.projects.len() * NAMES.len()) as i64,
        "each row restored exactly once"
    );
    assert!(db.rows().await.iter().all(|r| r.missing_count == 0));
}

async fn written_projects(database: &Database) -> i64 {
    count(
        database,
        "SELECT count(*) AS n FROM registry_repair_run_projects",
    )
    .await
}

/// Settings for an in-process repair of [`many`]'s projects.
fn many_settings(db: &TestDb, registry: &RegistrySimulator, concurrency: usize) -> Settings {
    let mut settings = settings_for(db, &registry.url());
    settings.worker.max_concurrency = concurrency;
    settings
}

async fn start_repair(settings: &Settings, database: &Database, mode: Mode) -> pipeline::Repairing {
    pipeline::start(
        settings,
        signer(FIXTURE_KEY),
        database,
        Scope::default(),
        mode,
        ServiceOptions::default(),
    )
    .await
    .expect("the repair starts")
}

async fn wait_repaired(repairing: pipeline::Repairing) -> Repaired {
    tokio::time::timeout(Duration::from_secs(60), repairing.wait())
        .await
        .expect("the repair ends within 60 s")
        .expect("the repair ends")
}
