//! The repair (issue 10) against the real PostgreSQL and the simulated registry: the guards on
//! seeded projects, plan writing nothing, apply writing exactly the planned rows once, undo, runs
//! and verify, and the real binary's `repair` commands and exit codes.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::common;
use crate::common::process::{cli, service_env};
use crate::common::{
    assert_in_flight_settles_at, settings_for, signer, status_becomes, trusted, TestDb, FIXTURE_KEY,
};
use diesel::sql_types::Text;
use registry_repair::admin::AdminClient;
use registry_repair::config::Settings;
use registry_repair::db::repair::{self, Scope, Written};
use registry_repair::db::tracking::{self, TrackingRow};
use registry_repair::db::Database;
use registry_repair::demo::seed::World;
use registry_repair::registry::simulator::RegistrySimulator;
use registry_repair::registry::RegistryClient;
use registry_repair::repair::pipeline::{self, Repaired};
use registry_repair::repair::verify::verify;
use registry_repair::repair::{Action, ProjectPlan, Reason};
use registry_repair::scheduler::{GetStatus, RunEnd};
use registry_repair::service::ServiceOptions;

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
    // Created after the registry's repositories (2024-01-01): a reused path.
    ids.insert("reused", w.project(g, "Reused", &["old"], &[]));
    // Another top-level namespace, for the scope flags.
    ids.insert("elsewhere", w.project(other, "Elsewhere", &["e"], &[]));
    ids.insert("nothing_missing", w.project(other, "Fine", &["f"], &["f"]));
    (w, ids)
}

async fn seed() -> Seeded {
    let (world, ids) = world();
    let db = TestDb::new().await;
    let database = db.database();
    world.insert(&database).await.expect("seeding");
    // The analysis' answer for every project, as `run` records it.
    let rows: Vec<TrackingRow> = world
        .expected()
        .into_iter()
        .map(|(id, e)| TrackingRow::completed(id, e.missing))
        .collect();
    tracking::upsert(&database, &rows)
        .await
        .expect("tracking rows");
    db.execute(&format!(
        "UPDATE projects SET pending_delete = true WHERE id = {}; \
         UPDATE projects SET marked_for_deletion_at = current_date WHERE id = {}; \
         UPDATE project_features SET container_registry_access_level = 0 WHERE project_id = {}; \
         DELETE FROM project_features WHERE project_id = {}; \
         UPDATE projects SET created_at = '2025-01-01' WHERE id = {}; \
         INSERT INTO container_expiration_policies (project_id, created_at, updated_at, enabled) \
             VALUES ({}, now(), now(), true);",
        ids["pending"],
        ids["marked"],
        ids["disabled"],
        ids["no_features"],
        ids["reused"],
        ids["plain"]
    ))
    .await;
    let registry =
        RegistrySimulator::start(world.registry_paths(), trusted(), 0).expect("registry");
    // Entries outside the project path on its first page: ignored.
    registry.add_foreign_entries("other/elsewhere", &["other/elsewhere-x/q"]);
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
    apply: bool,
) -> Repaired {
    let repairing = pipeline::start(
        settings,
        signer(FIXTURE_KEY),
        database,
        scope.clone(),
        apply,
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
    let mut plans = repair_run(&settings, &s.database, scope, false).await.plans;
    plans.sort_by_key(|p| p.project_id);
    plans
}

async fn apply(s: &Seeded, scope: &Scope) -> (i64, Vec<Written>) {
    let settings = repair_settings(&s.db, &s.registry);
    let repaired = repair_run(&settings, &s.database, scope, true).await;
    (repaired.run.expect("an apply run"), repaired.written)
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

#[actix_rt::test]
async fn the_dry_run_writes_nothing_and_plans_exactly_the_missing_names_with_their_reasons() {
    let s = seed().await;
    let before = (
        repositories(&s.database).await,
        tracking_rows(&s.database).await,
        repair_tables(&s.database).await,
    );
    let plans = plan(&s, &Scope::default()).await;
    assert_eq!(decisions(&plans), expected(&s.ids));
    let plain = plans
        .iter()
        .find(|p| p.project_id == s.ids["plain"])
        .expect("plain planned");
    let elsewhere = plans
        .iter()
        .find(|p| p.project_id == s.ids["elsewhere"])
        .expect("elsewhere planned");
    assert_eq!(elsewhere.ignored, 1, "the entry outside the project path");
    assert_eq!(
        plain.repositories[0].registry_created_at.as_deref(),
        Some("2024-01-01T00:00:00.000Z")
    );
    let after = (
        repositories(&s.database).await,
        tracking_rows(&s.database).await,
        repair_tables(&s.database).await,
    );
    assert_eq!(before, after, "plan wrote something");
    // --include-older turns the review into a restore.
    let older = plan(
        &s,
        &Scope {
            projects: vec![s.ids["reused"]],
            include_older: true,
            ..Scope::default()
        },
    )
    .await;
    assert_eq!(
        decisions(&older),
        [(
            (s.ids["reused"], "old".to_string()),
            (Action::Restore, None)
        )]
        .into_iter()
        .collect::<Decisions>()
    );
}

#[actix_rt::test]
async fn the_scope_flags_pick_projects_by_id_namespace_and_count() {
    let s = seed().await;
    let projects = |plans: &[ProjectPlan]| -> Vec<i64> {
        let mut ids: Vec<i64> = plans.iter().map(|p| p.project_id).collect();
        ids.sort();
        ids
    };
    let by_id = plan(
        &s,
        &Scope {
            projects: vec![s.ids["plain"], s.ids["elsewhere"]],
            ..Scope::default()
        },
    )
    .await;
    assert_eq!(projects(&by_id), vec![s.ids["plain"], s.ids["elsewhere"]]);
    // Case-insensitive, everything below, and `_` is not a wildcard.
    let by_namespace = plan(
        &s,
        &Scope {
            namespace: Some("other".into()),
            ..Scope::default()
        },
    )
    .await;
    assert_eq!(projects(&by_namespace), vec![s.ids["elsewhere"]]);
    let below = plan(
        &s,
        &Scope {
            namespace: Some("REPAIR_GRP/sub".into()),
            ..Scope::default()
        },
    )
    .await;
    assert_eq!(projects(&below), vec![s.ids["plain"]]);
    let wildcard = plan(
        &s,
        &Scope {
            namespace: Some("Repair-Grp".into()),
            ..Scope::default()
        },
    )
    .await;
    assert!(wildcard.is_empty());
    assert!(repair::namespace_exists(&s.database, "repair_grp/SUB")
        .await
        .expect("query"));
    assert!(!repair::namespace_exists(&s.database, "nope")
        .await
        .expect("query"));
    let limited = plan(
        &s,
        &Scope {
            limit: Some(3),
            ..Scope::default()
        },
    )
    .await;
    assert_eq!(limited.len(), 3);
    let mut all = projects(&plan(&s, &Scope::default()).await);
    all.truncate(3);
    assert_eq!(projects(&limited), all, "the first three by id");
}

#[actix_rt::test]
async fn apply_writes_exactly_the_planned_rows_once_and_a_second_apply_restores_nothing() {
    let s = seed().await;
    let before = repositories(&s.database).await;
    let (run, written) = apply(&s, &Scope::default()).await;
    let mut wanted: Vec<(i64, String)> = expected(&s.ids)
        .into_iter()
        .filter(|(_, (action, _))| *action == Action::Restore)
        .map(|(key, _)| key)
        .collect();
    wanted.sort();
    assert_eq!(restored_names(&written), wanted);

    // Exactly those rows are new; every row there before is byte-identical.
    let after = repositories(&s.database).await;
    assert_eq!(&after[..before.len()], &before[..]);
    let new = lines(
        &s.database,
        &format!(
            "SELECT project_id, name, status, expiration_policy_cleanup_status, failed_deletion_count, \
                    created_at = updated_at AS same_times, \
                    abs(extract(epoch FROM (now() AT TIME ZONE 'UTC') - created_at)) < 60 AS utc_now \
             FROM container_repositories WHERE id > (SELECT max(id) FROM container_repositories) - {} \
             ORDER BY project_id, name",
            after.len() - before.len()
        ),
    )
    .await;
    assert_eq!(new.len(), wanted.len());
    for line in &new {
        assert!(
            line.contains("\"status\":null")
                && line.contains("\"expiration_policy_cleanup_status\":0")
                && line.contains("\"same_times\":true")
                && line.contains("\"utc_now\":true"),
            "{line}"
        );
    }
    // The audit holds one row per restored row, the skipped ones with their reasons.
    let audit = lines(
        &s.database,
        &format!(
            "SELECT r.project_id, r.name, r.registry_path, r.registry_created_at IS NOT NULL AS dated \
             FROM registry_repair_restored r JOIN container_repositories c ON c.id = r.repository_id \
             WHERE r.run_id = {run} ORDER BY r.project_id, r.name"
        ),
    )
    .await;
    assert_eq!(audit.len(), wanted.len());
    assert!(audit
        .iter()
        .any(|l| l.contains("\"registry_path\":\"repair_grp/sub/plain/a/b\"")));
    let skipped = lines(
        &s.database,
        &format!("SELECT project_id, name, action, reason FROM registry_repair_skipped WHERE run_id = {run}"),
    )
    .await;
    assert_eq!(skipped.len(), expected(&s.ids).len() - wanted.len());
    assert!(skipped
        .iter()
        .any(|l| l.contains("\"name\":\"deep/x/y\"") && l.contains("name_unaddressable")));

    // The tracking rows say what is still missing.
    let missing: HashMap<i64, i32> =
        s.db.rows()
            .await
            .into_iter()
            .map(|r| (r.project_id, r.missing_count))
            .collect();
    assert_eq!(missing[&s.ids["plain"]], 1, "the deep name");
    assert_eq!(missing[&s.ids["elsewhere"]], 0);
    assert_eq!(missing[&s.ids["pending"]], 2);
    assert_eq!(missing[&s.ids["reused"]], 1);

    // The run is recorded with its counts; GitLab's statistics and cleanup policies are named.
    let row = repair::run(&s.database, run)
        .await
        .expect("query")
        .expect("run");
    assert_eq!(
        (
            row.kind.as_str(),
            row.projects,
            row.restored,
            row.skipped,
            row.review
        ),
        ("apply", 9, wanted.len() as i32, 8, 1)
    );
    assert!(row.finished_at.is_some());
    assert_eq!(
        repair::restored_projects(&s.database, run)
            .await
            .expect("query"),
        vec![s.ids["plain"], s.ids["elsewhere"]]
    );
    assert_eq!(
        repair::under_cleanup_policy(&s.database, run)
            .await
            .expect("query"),
        3
    );

    // Again: the restored projects have nothing missing any more (no longer candidates), the
    // others are planned again and nothing is restored twice.
    let (second, written) = apply(&s, &Scope::default()).await;
    assert!(restored_names(&written).is_empty());
    assert_eq!(repositories(&s.database).await, after);
    let row = repair::run(&s.database, second)
        .await
        .expect("query")
        .expect("run");
    assert_eq!(row.restored, 0);
    assert_eq!(row.projects, 8, "elsewhere has nothing missing now");
    let runs = repair::runs(&s.database).await.expect("runs");
    assert_eq!(
        runs.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![second, run]
    );
}

#[actix_rt::test]
async fn a_retried_batch_writes_nothing_twice_and_a_restore_rails_made_meanwhile_is_present() {
    let s = seed().await;
    let plans = plan(
        &s,
        &Scope {
            projects: vec![s.ids["plain"]],
            ..Scope::default()
        },
    )
    .await;
    // Rails creates one of the planned rows between the plan and the write.
    s.db.execute(&format!(
        "INSERT INTO container_repositories (project_id, name, created_at, updated_at) \
         VALUES ({}, 'a', now(), now())",
        s.ids["plain"]
    ))
    .await;
    let run = repair::start_apply(&s.database, &Scope::default())
        .await
        .expect("run");
    let first = repair::apply_batch(&s.database, run, &plans)
        .await
        .expect("apply");
    let Written::Applied {
        restored,
        already_present,
        ..
    } = &first[0]
    else {
        panic!("{first:?}");
    };
    assert_eq!(
        restored.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        vec!["", "a/b"]
    );
    assert_eq!(already_present, &vec!["a".to_string()]);
    let after = repositories(&s.database).await;
    let tables = repair_tables(&s.database).await;
    let again = repair::apply_batch(&s.database, run, &plans)
        .await
        .expect("apply again");
    assert_eq!(
        again,
        vec![Written::AlreadyWritten {
            project_id: s.ids["plain"]
        }]
    );
    assert_eq!(repositories(&s.database).await, after);
    assert_eq!(repair_tables(&s.database).await, tables);
    let row = repair::run(&s.database, run)
        .await
        .expect("query")
        .expect("run");
    assert_eq!((row.projects, row.restored), (1, 2));
}

#[actix_rt::test]
async fn a_project_whose_deletion_starts_after_the_plan_gets_nothing() {
    let s = seed().await;
    let plans = plan(
        &s,
        &Scope {
            projects: vec![s.ids["plain"]],
            ..Scope::default()
        },
    )
    .await;
    s.db.execute(&format!(
        "UPDATE projects SET pending_delete = true WHERE id = {}",
        s.ids["plain"]
    ))
    .await;
    let before = repositories(&s.database).await;
    let run = repair::start_apply(&s.database, &Scope::default())
        .await
        .expect("run");
    let written = repair::apply_batch(&s.database, run, &plans)
        .await
        .expect("apply");
    assert_eq!(repositories(&s.database).await, before);
    let Written::Applied { plan, restored, .. } = &written[0] else {
        panic!("{written:?}");
    };
    assert!(restored.is_empty());
    assert!(plan.repositories.iter().all(|r| r.action == Action::Skip));
}

#[actix_rt::test]
async fn a_missing_or_invalid_unique_index_restores_nothing_anywhere() {
    for breakage in [
        "DROP INDEX index_container_repositories_on_project_id_and_name",
        "UPDATE pg_index SET indisvalid = false \
         WHERE indexrelid = 'index_container_repositories_on_project_id_and_name'::regclass",
    ] {
        let s = seed().await;
        s.db.execute(breakage).await;
        let health = repair::index_health(&s.database).await.expect("query");
        assert!(!health.is_safe(), "{breakage}: {health:?}");
        let before = (
            repositories(&s.database).await,
            tracking_rows(&s.database).await,
        );
        let plans = plan(&s, &Scope::default()).await;
        let got = decisions(&plans);
        for (key, (action, reason)) in expected(&s.ids) {
            let want = match reason {
                None | Some(Reason::OlderThanProject) => (Action::Skip, Some(Reason::IndexUnsafe)),
                other => (action, other),
            };
            assert_eq!(got[&key], want, "{breakage}: {key:?}");
        }
        let (_, written) = apply(&s, &Scope::default()).await;
        assert!(restored_names(&written).is_empty());
        assert_eq!(repositories(&s.database).await, before.0, "{breakage}");
    }
}

#[actix_rt::test]
async fn duplicate_rows_behind_a_corrupt_index_hold_back_only_their_project() {
    let s = seed().await;
    // A corrupt index (as after a collation change): valid and unique on paper, holding an
    // entry for each of two rows with the same name that got in while it did not enforce.
    s.db.execute(&format!(
        "UPDATE pg_index SET indisunique = false \
         WHERE indexrelid = 'index_container_repositories_on_project_id_and_name'::regclass; \
         INSERT INTO container_repositories (project_id, name, created_at, updated_at) \
             VALUES ({p}, 'known', now(), now()); \
         UPDATE pg_index SET indisunique = true \
         WHERE indexrelid = 'index_container_repositories_on_project_id_and_name'::regclass;",
        p = s.ids["plain"]
    ))
    .await;
    assert!(repair::index_health(&s.database)
        .await
        .expect("query")
        .is_safe());
    let plans = plan(&s, &Scope::default()).await;
    let got = decisions(&plans);
    for name in ["", "a", "a/b"] {
        assert_eq!(
            got[&(s.ids["plain"], name.to_string())],
            (Action::Skip, Some(Reason::IndexUnsafe)),
            "{name:?}"
        );
    }
    assert_eq!(
        got[&(s.ids["plain"], "deep/x/y".to_string())],
        (Action::Skip, Some(Reason::NameUnaddressable))
    );
    assert_eq!(
        got[&(s.ids["elsewhere"], "e".to_string())],
        (Action::Restore, None)
    );
    let (_, written) = apply(&s, &Scope::default()).await;
    assert_eq!(
        restored_names(&written),
        vec![(s.ids["elsewhere"], "e".to_string())]
    );
}

#[actix_rt::test]
async fn undo_returns_the_table_to_its_state_before_except_rows_changed_since() {
    let s = seed().await;
    let before = (
        repositories(&s.database).await,
        tracking_rows(&s.database).await,
    );
    let (run, _) = apply(&s, &Scope::default()).await;
    // Since the apply: GitLab schedules one restored row for deletion.
    s.db.execute(&format!(
        "UPDATE container_repositories SET status = 0 WHERE project_id = {} AND name = 'a'",
        s.ids["plain"]
    ))
    .await;
    let outcome = repair::undo(&s.database, run).await.expect("undo");
    assert_eq!(outcome.deleted.len(), 3);
    assert_eq!(outcome.kept.len(), 1);
    assert_eq!(
        (outcome.kept[0].name.as_str(), outcome.kept[0].why.as_str()),
        ("a", "status 0")
    );
    let after = repositories(&s.database).await;
    let kept: Vec<&String> = after.iter().filter(|r| !before.0.contains(r)).collect();
    assert_eq!(kept.len(), 1, "only the changed row stays: {kept:?}");
    assert!(kept[0].contains("\"name\":\"a\"") && kept[0].contains("\"status\":0"));
    assert_eq!(after.len(), before.0.len() + 1);
    // The tracking rows say what is missing again: the same as before where nothing changed.
    let missing = |rows: &[String], id: i64| -> String {
        rows.iter()
            .find(|r| r.contains(&format!("\"project_id\":{id},")))
            .and_then(|r| r.split("\"missing_count\":").nth(1))
            .and_then(|r| r.split(',').next())
            .expect("row")
            .to_string()
    };
    let tracking_after = tracking_rows(&s.database).await;
    assert_eq!(
        missing(&tracking_after, s.ids["elsewhere"]),
        missing(&before.1, s.ids["elsewhere"])
    );
    assert_eq!(missing(&tracking_after, s.ids["plain"]), "3", "a stays");

    // The undo is a run; a second undo deletes nothing and lists the changed row again.
    let again = repair::undo(&s.database, run).await.expect("undo again");
    assert!(again.deleted.is_empty());
    assert_eq!(again.kept.len(), 1);
    assert_eq!(repositories(&s.database).await, after);
    let runs = repair::runs(&s.database).await.expect("runs");
    let apply_row = runs.iter().find(|r| r.id == run).expect("apply run");
    assert_eq!(apply_row.undone_by, vec![outcome.run, again.run]);
    let undo_row = runs.iter().find(|r| r.id == outcome.run).expect("undo run");
    assert_eq!(
        (
            undo_row.kind.as_str(),
            undo_row.undo_of,
            undo_row.deleted,
            undo_row.kept
        ),
        ("undo", Some(run), 3, 1)
    );
    // Only apply runs can be undone, and only runs that exist.
    assert!(matches!(
        repair::undo(&s.database, outcome.run).await,
        Err(repair::RepairError::NotAnApplyRun { .. })
    ));
    assert!(matches!(
        repair::undo(&s.database, 999_999).await,
        Err(repair::RepairError::UnknownRun(999_999))
    ));
}

#[actix_rt::test]
async fn verify_reports_nothing_after_apply_and_a_row_lost_since() {
    let s = seed().await;
    let (run, _) = apply(&s, &Scope::default()).await;
    let clean = verify(&s.database, &s.client, run, 2)
        .await
        .expect("verify");
    assert!(clean.is_clean(), "{clean:?}");
    assert_eq!(clean.projects, 9);
    s.db.execute(&format!(
        "DELETE FROM container_repositories WHERE project_id = {} AND name = 'a/b'",
        s.ids["plain"]
    ))
    .await;
    let found = verify(&s.database, &s.client, run, 2)
        .await
        .expect("verify");
    assert_eq!(
        found
            .unrestored
            .iter()
            .map(|u| (u.project_id, u.name.as_str()))
            .collect::<Vec<_>>(),
        vec![(s.ids["plain"], "a/b")]
    );
}

#[actix_rt::test]
async fn the_binary_plans_applies_verifies_lists_and_undoes_with_the_right_exit_codes() {
    let s = seed().await;
    let env = service_env(&s.db, &s.registry.url(), "127.0.0.1:0");
    let long = Duration::from_secs(60);

    let planned = cli(&["repair", "plan", "--format", "json"], &env, long).await;
    planned.assert_exit(0).assert_no_panic();
    let value: serde_json::Value = serde_json::from_str(&planned.stdout).expect("JSON plan");
    assert_eq!(value["run"], serde_json::Value::Null);
    assert_eq!(value["totals"]["projects"], 9);
    assert_eq!(value["totals"]["restore"], 4);
    assert_eq!(value["totals"]["review"], 1);
    assert_eq!(value["totals"]["skip"]["project_pending_deletion"], 3);
    assert_eq!(value["totals"]["skip"]["ambiguous_path"], 2);
    assert_eq!(value["repositories"].as_array().map(Vec::len), Some(13));

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
        .assert_stdout_has("ProjectCacheWorker.perform_async(id, [], %w[container_registry_size])")
        .assert_stdout_has("enabled cleanup policy");
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
        .assert_exit(1)
        .assert_stderr_has("does not exist");
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
    let db = TestDb::new().await;
    let database = db.database();
    w.insert(&database).await.expect("seeding");
    let rows: Vec<TrackingRow> = w
        .expected()
        .into_iter()
        .map(|(id, e)| TrackingRow::completed(id, e.missing))
        .collect();
    tracking::upsert(&database, &rows)
        .await
        .expect("tracking rows");
    let registry = RegistrySimulator::start(w.registry_paths(), trusted(), 0).expect("registry");
    registry.set_latency(latency);
    (w, db, database, registry)
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
        let torn = count(
            &database,
            "SELECT count(*) AS n FROM registry_repair_run_projects rp \
             WHERE rp.restored <> 3 \
                OR (SELECT count(*) FROM registry_repair_restored r \
                    WHERE r.run_id = rp.run_id AND r.project_id = rp.project_id) <> 3 \
                OR (SELECT count(*) FROM container_repositories c \
                    WHERE c.project_id = rp.project_id) <> 3",
        )
        .await;
        assert_eq!(torn, 0, "killed after {written_before_kill}");
        let partial = count(
            &database,
            "SELECT count(*) AS n FROM (SELECT project_id FROM container_repositories \
             GROUP BY project_id HAVING count(*) <> 3) t",
        )
        .await;
        assert_eq!(partial, 0, "a project half written");

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
async fn apply_and_undo_work_alike_with_prepared_statements_off() {
    // What a pooler in transaction mode needs: every statement in a transaction, and the
    // per-project transaction around them.
    let s = seed().await;
    let before = repositories(&s.database).await;
    let url = format!("{}?prepared_statements=false", s.db.url);
    let pooled = Database::new(&url, 2, Duration::from_secs(5)).expect("pool");
    repair::check_primary(&pooled).await.expect("a primary");
    let mut settings = repair_settings(&s.db, &s.registry);
    settings.database.url = url.parse().expect("a database URL");
    let walked = repair_run(&settings, &pooled, &Scope::default(), true).await;
    let run = walked.run.expect("an apply run");
    assert_eq!(restored_names(&walked.written).len(), 4);
    assert_eq!(repositories(&s.database).await.len(), before.len() + 4);
    let undone = repair::undo(&pooled, run).await.expect("undo");
    assert_eq!((undone.deleted.len(), undone.kept.len()), (4, 0));
    assert_eq!(repositories(&s.database).await, before);
}

/// Settings for an in-process repair of [`many`]'s projects.
fn many_settings(db: &TestDb, registry: &RegistrySimulator, concurrency: usize) -> Settings {
    let mut settings = settings_for(db, &registry.url());
    settings.worker.max_concurrency = concurrency;
    settings
}

async fn start_repair(
    settings: &Settings,
    database: &Database,
    apply: bool,
) -> pipeline::Repairing {
    pipeline::start(
        settings,
        signer(FIXTURE_KEY),
        database,
        Scope::default(),
        apply,
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

#[actix_rt::test]
async fn apply_with_the_feature_flag_off_writes_nothing_until_resumed_through_the_admin_api() {
    let (w, db, database, registry) = many(40, Duration::from_millis(2)).await;
    let mut settings = many_settings(&db, &registry, 4);
    settings.worker.enabled = false;
    let before = repositories(&database).await;
    let repairing = start_repair(&settings, &database, true).await;
    let scheduler = repairing.service.scheduler.clone();
    // The walk ran and queued every candidate; none is dispatched while paused.
    assert!(
        status_becomes(&scheduler, Duration::from_secs(10), |s| s.state == "paused"
            && s.queued == 40)
        .await,
        "the candidates are queued and held"
    );
    let status = scheduler.send(GetStatus).await.expect("status");
    assert_eq!((status.in_flight, status.completed), (0, 0), "{status:?}");
    let run = repairing.run.expect("an apply run");
    assert_eq!(status.work, format!("repair apply (run {run})"));
    assert_eq!(registry.stats().list_requests, 0, "no project was listed");
    assert_eq!(written_projects(&database).await, 0);
    assert_eq!(repositories(&database).await, before, "nothing written");

    // `registry-repair resume` is this call.
    let admin = AdminClient::new(repairing.service.admin_addr, None);
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
async fn sigterm_during_apply_drains_exits_0_and_a_rerun_completes() {
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
        stopped.assert_exit(0).assert_no_panic();
        assert!(
            stopped.stderr.contains(name)
                && stopped.stderr.contains("Stopped before every project"),
            "{name}: the log names the signal, the notes the stop\n{}",
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
    for apply in [false, true] {
        let (_w, db, database, registry) = many(400, Duration::from_millis(20)).await;
        let settings = many_settings(&db, &registry, 3);
        let repairing = start_repair(&settings, &database, apply).await;
        assert_in_flight_settles_at(&registry, 3, Duration::from_secs(10)).await;
        // `registry-repair concurrency 6` is this call.
        let admin = AdminClient::new(repairing.service.admin_addr, None);
        let status = admin.set_concurrency(6).await.expect("concurrency");
        assert_eq!(status.max_concurrency, 6);
        assert_in_flight_settles_at(&registry, 6, Duration::from_secs(10)).await;
        let metrics = reqwest::get(format!("http://{}/metrics", repairing.service.admin_addr))
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
        let done = if apply {
            repaired.written.len()
        } else {
            repaired.plans.len()
        };
        assert_eq!(done, 400, "apply {apply}");
        registry.stop().await;
    }
}

#[actix_rt::test]
async fn a_registry_outage_during_apply_writes_nothing_for_the_projects_it_hits_and_completes_after(
) {
    let (w, db, database, registry) = many(300, Duration::from_millis(10)).await;
    let settings = many_settings(&db, &registry, 4);
    let repairing = start_repair(&settings, &database, true).await;
    let scheduler = repairing.service.scheduler.clone();
    assert!(
        common::eventually(Duration::from_secs(30), || async {
            written_projects(&database).await >= 20
        })
        .await
    );
    registry.set_outage(true);
    assert!(
        status_becomes(&scheduler, Duration::from_secs(20), |s| s.breaker == "open"
            && s.in_flight == 0
            && s.writer.as_ref().is_some_and(|w| w.buffered == 0))
        .await,
        "the breaker opens, in-flight projects end, the Writer drains"
    );
    let during = written_projects(&database).await;
    let status = scheduler.send(GetStatus).await.expect("status");
    assert_eq!(status.state, "registry unavailable");
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
    let repairing = start_repair(&settings, &database, false).await;
    let scheduler = repairing.service.scheduler.clone();
    assert!(
        status_becomes(&scheduler, Duration::from_secs(10), |s| s.state
            == "registry unavailable"
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
    for apply in [false, true] {
        let repaired = wait_repaired(start_repair(&settings, &database, apply).await).await;
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
        let done: Vec<i64> = if apply {
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
