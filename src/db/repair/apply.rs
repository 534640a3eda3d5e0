//! An apply run's writes: each project's plan in one transaction of its own (a SIGKILL leaves a
//! project fully repaired or untouched). The run itself is started and finished in `runs.rs`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Integer, Nullable, Text, Timestamp, Timestamptz};
use diesel_async::RunQueryDsl;
use futures_util::FutureExt;

use super::facts::{index_health_on, FactsRow, FACTS_COLUMNS};
use super::lease;
use super::{count, Restored};
use crate::db::schema::{
    registry_repair_restored as restored, registry_repair_run_projects as run_projects,
    registry_repair_skipped as skipped,
};
use crate::db::{Database, DbConn, DbError};
use crate::fence::Fence;
use crate::repair::guards::{Action, PlannedRepository, ProjectPlan, Reason};
use crate::repair::written::{RestoredRow, Written};

/// Writes a batch of plans of run `run_id`, each project in one transaction of its own (see
/// [`apply_project`]). The unique index is checked once per batch: while it is unsafe every
/// project's restores become `index_unsafe` skips. Projects written before an error stay written;
/// calling again with the same batch writes the rest and nothing twice.
pub async fn apply_batch(
    db: &Database,
    run_id: i64,
    lease: &Arc<Fence>,
    plans: &[ProjectPlan],
) -> Result<Vec<Written>, DbError> {
    let mut lanes = [Vec::with_capacity(plans.len())];
    apply_into(db, run_id, lease, plans, &mut lanes).await?;
    let [written] = lanes;
    Ok(written)
}

/// [`apply_batch`] on `lanes.len()` connections at once, each writing a contiguous share of
/// `plans` (in order) and pushing what each project's write did onto its lane as it commits:
/// after an error, or when the caller gives up on the future (a timeout), the lanes hold the
/// projects that are written. The projects' transactions touch disjoint rows (the run's counts are
/// summed from its projects' rows when it finishes), so they commit side by side. The Writer's way.
pub async fn apply_into(
    db: &Database,
    run_id: i64,
    lease: &Arc<Fence>,
    plans: &[ProjectPlan],
    lanes: &mut [Vec<Written>],
) -> Result<(), DbError> {
    if plans.is_empty() || lanes.is_empty() {
        return Ok(());
    }
    let share = plans.len().div_ceil(lanes.len());
    let writes = plans
        .chunks(share)
        .zip(lanes.iter_mut())
        .map(|(plans, written)| async move {
            let mut conn = db.conn().await?;
            let index_safe = index_health_on(&mut conn).await?.is_safe();
            for plan in plans {
                written
                    .push(apply_project(&mut conn, run_id, lease, plan.clone(), index_safe).await?);
            }
            Ok::<(), DbError>(())
        });
    futures_util::future::join_all(writes)
        .await
        .into_iter()
        .collect()
}

/// Writes one project's plan in one transaction, so that a SIGKILL at any moment leaves the
/// project fully repaired or untouched. The steps, in order:
/// 1. `lock_project`: the project row `FOR SHARE` with the guards' facts (a deletion, rename or
///    transfer that starts meanwhile waits for this transaction; one that committed first is
///    seen), and whether the repair lease's row names this run (else nothing is written:
///    `lease::fence`); then `lock_guarded`: the rows the guards read, `FOR SHARE` and as
///    they are once locked: its route (a rename of the project or of a parent group rewrites it),
///    its `project_features` row (the registry switched off) and its cleanup policy (enabled), so
///    that none changes between the check and the commit;
/// 2. the route compared with the path the plan was listed under: if it changed, the project is
///    claimed as `path_changed` and nothing else is written; otherwise the guards are asked again
///    with the locked facts ([`ProjectPlan::recheck`]);
/// 3. `claim`: the run's claim on the project; if this run holds it already (a batch written
///    again), what that write did is read back (`recorded`) and nothing else happens;
/// 4. `write_plan`, one statement: the restores as Rails' `find_or_create_from_path!` writes
///    them with one audit row per row actually inserted, the skipped and reviewed repositories, the
///    project's counts, and the tracking row's `missing_count` (what is still missing);
/// 5. before the commit, `lease` (the lease's renewals, on this process's monotonic clock) must
///    still be open: a run whose renewals lapsed for half the lease's life rolls back, so that it
///    never commits after another run could have taken the lease.
pub async fn apply_project(
    conn: &mut DbConn,
    run_id: i64,
    lease: &Arc<Fence>,
    plan: ProjectPlan,
    index_safe: bool,
) -> Result<Written, DbError> {
    let project_id = plan.project_id;
    let lease = lease.clone();
    let what = move |step: &str| format!("repair run {run_id}, project {project_id}: {step}");
    conn.transaction(|conn| {
        async move {
            let mut plan = plan;
            let locked = lock_project(conn, project_id, run_id)
                .await
                .map_err(DbError::query(what("locking the project row")))?;
            let Some(locked) = locked else {
                if !lease_held(conn, run_id).await {
                    return Err(lease::refused(conn, &what("writing the project")).await);
                }
                return Ok(Written::ProjectGone { project_id });
            };
            if !locked.lease_held {
                return Err(lease::refused(conn, &what("writing the project")).await);
            }
            let guarded = lock_guarded(conn, project_id)
                .await
                .map_err(DbError::query(what(
                    "locking the project's route, registry setting and cleanup policy",
                )))?;
            let path = match &guarded.path {
                Some(route) if route.to_lowercase() == plan.full_path.to_lowercase() => {
                    PathNow::AsListed
                }
                route => PathNow::Moved(route.clone()),
            };
            match &path {
                PathNow::Moved(_) => plan.path_changed(),
                PathNow::AsListed => {
                    let mut facts = locked.facts.into_facts(plan.full_path.clone());
                    facts.route_updated_at = guarded.updated_at;
                    facts.registry_access_level = guarded.registry_access_level;
                    facts.cleanup_policy = guarded.cleanup_policy;
                    plan.recheck(&facts, index_safe);
                }
            }

            let claimed = claim(conn, run_id, &plan, locked.missing_before, &path)
                .await
                .map_err(DbError::query(what("recording the project in the run")))?;
            if !claimed {
                return recorded(conn, run_id, plan)
                    .await
                    .map_err(DbError::query(what("reading back what this run wrote")));
            }
            if let PathNow::Moved(now) = path {
                return Ok(Written::PathChanged { plan, now });
            }

            let restored = write_plan(conn, run_id, &plan)
                .await
                .map_err(DbError::query(what(
                    "writing the rows, the audit, the counts and the tracking row",
                )))?;
            lease::still_held(&lease, &what("committing"))?;
            let inserted: HashSet<&str> = restored.iter().map(|r| r.name.as_str()).collect();
            let already_present: Vec<String> = plan
                .with_action(Action::Restore)
                .filter(|r| !inserted.contains(r.name.as_str()))
                .map(|r| r.name.clone())
                .collect();
            Ok(Written::Applied {
                plan,
                restored,
                already_present,
            })
        }
        .boxed()
    })
    .await
}

/// The project row, locked, with the guards' facts and its tracking row's count (NULL: no row).
#[derive(QueryableByName)]
struct LockedProject {
    #[diesel(embed)]
    facts: FactsRow,
    #[diesel(sql_type = Nullable<Integer>)]
    missing_before: Option<i32>,
    /// The repair lease names this run. Read here rather than by a statement of its own: a round
    /// trip per project is most of the cost.
    #[diesel(sql_type = Bool)]
    lease_held: bool,
}

async fn lock_project(
    conn: &mut DbConn,
    project_id: i64,
    run_id: i64,
) -> QueryResult<Option<LockedProject>> {
    // Raw: FOR SHARE OF p locks the project row alone (the tracking row is outer-joined).
    diesel::sql_query(format!(
        "WITH lease AS ({}) \
         SELECT {FACTS_COLUMNS}, t.missing_count AS missing_before, \
                EXISTS (SELECT 1 FROM lease) AS lease_held \
         FROM projects p \
         LEFT JOIN container_registry_data_repair_details t ON t.project_id = p.id \
         WHERE p.id = $3 \
         FOR SHARE OF p",
        lease::HELD_BY_RUN
    ))
    .bind::<Text, _>(lease::NAME)
    .bind::<BigInt, _>(run_id)
    .bind::<BigInt, _>(project_id)
    .get_result(conn)
    .await
    .optional()
}

/// Whether the repair lease names run `run_id` (for a project found deleted).
async fn lease_held(conn: &mut DbConn, run_id: i64) -> bool {
    lease::fence(conn, run_id, "").await.is_ok()
}

/// What the guards read besides the project row, locked `FOR SHARE` after it (as GitLab's rename,
/// transfer and settings updates lock them: no lock order inverted) and read as they are once
/// locked: a change under way is waited for and seen.
#[derive(QueryableByName)]
struct Guarded {
    /// The project's route (`None`: it has none).
    #[diesel(sql_type = Nullable<Text>)]
    path: Option<String>,
    #[diesel(sql_type = Nullable<Timestamp>)]
    updated_at: Option<NaiveDateTime>,
    #[diesel(sql_type = Nullable<Integer>)]
    registry_access_level: Option<i32>,
    #[diesel(sql_type = Bool)]
    cleanup_policy: bool,
}

async fn lock_guarded(conn: &mut DbConn, project_id: i64) -> QueryResult<Guarded> {
    // Raw: locking CTEs, so each row is read as it is once locked (after a change it waited for).
    diesel::sql_query(
        "WITH route AS ( \
             SELECT path, updated_at FROM routes \
             WHERE source_type = 'Project' AND source_id = $1 FOR SHARE), \
         feature AS ( \
             SELECT container_registry_access_level AS level FROM project_features \
             WHERE project_id = $1 FOR SHARE), \
         policy AS ( \
             SELECT enabled FROM container_expiration_policies \
             WHERE project_id = $1 FOR SHARE) \
         SELECT (SELECT path FROM route LIMIT 1) AS path, \
                (SELECT updated_at FROM route LIMIT 1) AS updated_at, \
                (SELECT level FROM feature LIMIT 1) AS registry_access_level, \
                COALESCE((SELECT bool_or(enabled) FROM policy), false) AS cleanup_policy",
    )
    .bind::<BigInt, _>(project_id)
    .get_result(conn)
    .await
}

/// The project's route at write time, against the path its plan was listed under.
enum PathNow {
    AsListed,
    /// Renamed or moved since the listing, to this route (`None`: the project has no route).
    Moved(Option<String>),
}

/// This run's claim on the project: whether it is new (false: this run wrote the project already,
/// and the claim of that write stands).
async fn claim(
    conn: &mut DbConn,
    run_id: i64,
    plan: &ProjectPlan,
    missing_before: Option<i32>,
    path: &PathNow,
) -> QueryResult<bool> {
    let held = |action| count(plan.with_action(action).count());
    let (outcome, skipped, review, missing_after, path_at_write) = match path {
        PathNow::AsListed => (
            "written",
            held(Action::Skip),
            held(Action::Review),
            plan.still_missing(),
            None,
        ),
        // Nothing is written: the tracking row keeps its count.
        PathNow::Moved(to) => (
            "path_changed",
            0,
            0,
            missing_before.unwrap_or(0),
            to.as_deref(),
        ),
    };
    let claimed = diesel::insert_into(run_projects::table)
        .values((
            run_projects::run_id.eq(run_id),
            run_projects::project_id.eq(plan.project_id),
            run_projects::full_path.eq(&plan.full_path),
            run_projects::restored.eq(0),
            run_projects::already_present.eq(0),
            run_projects::skipped.eq(skipped),
            run_projects::review.eq(review),
            run_projects::missing_before.eq(missing_before),
            run_projects::missing_after.eq(missing_after),
            run_projects::outcome.eq(outcome),
            run_projects::path_at_write.eq(path_at_write),
        ))
        .on_conflict((run_projects::run_id, run_projects::project_id))
        .do_nothing()
        .execute(conn)
        .await?;
    Ok(claimed == 1)
}

/// What this run's earlier write of the project did, from its claim, its audit rows and its
/// skipped rows, laid over `plan` (the plan as the Writer holds it): the answer a batch written
/// again gives, so that the run's printed result counts every project once.
async fn recorded(conn: &mut DbConn, run_id: i64, mut plan: ProjectPlan) -> QueryResult<Written> {
    let (outcome, path_at_write): (String, Option<String>) = run_projects::table
        .find((run_id, plan.project_id))
        .select((run_projects::outcome, run_projects::path_at_write))
        .get_result(conn)
        .await?;
    if outcome == "path_changed" {
        plan.path_changed();
        return Ok(Written::PathChanged {
            plan,
            now: path_at_write,
        });
    }
    let restored: Vec<RestoredRow> = restored::table
        .filter(restored::run_id.eq(run_id))
        .filter(restored::project_id.eq(plan.project_id))
        .select((restored::repository_id, restored::name))
        .order(restored::repository_id)
        .load::<(i64, String)>(conn)
        .await?
        .into_iter()
        .map(|(repository_id, name)| RestoredRow {
            repository_id,
            name,
        })
        .collect();
    let held: HashMap<String, (Option<Action>, Option<Reason>)> = skipped::table
        .filter(skipped::run_id.eq(run_id))
        .filter(skipped::project_id.eq(plan.project_id))
        .select((skipped::name, skipped::action, skipped::reason))
        .load::<(String, String, String)>(conn)
        .await?
        .into_iter()
        .map(|(name, action, reason)| (name, (Action::parse(&action), Reason::parse(&reason))))
        .collect();
    let inserted: HashSet<&str> = restored.iter().map(|r| r.name.as_str()).collect();
    let mut already_present = Vec::new();
    for repository in &mut plan.repositories {
        if let Some((Some(action), reason)) = held.get(&repository.name) {
            repository.action = *action;
            repository.reason = *reason;
        } else if inserted.contains(repository.name.as_str()) {
            repository.action = Action::Restore;
            repository.reason = None;
        } else if repository.action == Action::Restore {
            already_present.push(repository.name.clone());
        }
    }
    Ok(Written::Applied {
        plan,
        restored,
        already_present,
    })
}

/// Everything the write of a claimed project puts in the database, in one statement (a round trip
/// per project is most of an apply's time):
/// - `inserted`: the restores as Rails' `find_or_create_from_path!` writes them: `project_id`,
///   `name`, `created_at` and `updated_at` (UTC `now()`, whatever the session's `TimeZone`), every
///   other column its default (valid on every GitLab from 15.10, `migration_*` columns included),
///   `ON CONFLICT (project_id, name) DO NOTHING`;
/// - `audit`: an audit row for each row actually inserted (what the statement returns);
/// - `held`: the repositories held back (skip and review), with their reasons;
/// - `counted`: the project's counts, restored and already present (a planned restore that found
///   a row Rails made meanwhile); the run's counts are their sums (see `RUNS_SQL`), so that no row
///   is updated by every project's transaction, which would serialize their commits;
/// - the tracking row's `missing_count`: what is still missing, the repositories held back.
async fn write_plan(
    conn: &mut DbConn,
    run_id: i64,
    plan: &ProjectPlan,
) -> QueryResult<Vec<RestoredRow>> {
    let restore: Vec<_> = plan.with_action(Action::Restore).collect();
    let held: Vec<_> = plan
        .repositories
        .iter()
        .filter(|r| r.action != Action::Restore)
        .collect();
    let names = |list: &[&PlannedRepository]| -> Vec<String> {
        list.iter().map(|r| r.name.clone()).collect()
    };
    let paths = |list: &[&PlannedRepository]| -> Vec<String> {
        list.iter().map(|r| r.registry_path.clone()).collect()
    };
    let created = |list: &[&PlannedRepository]| -> Vec<Option<DateTime<Utc>>> {
        list.iter()
            .map(|r| r.registry_created_at_parsed())
            .collect()
    };
    let actions: Vec<&str> = held.iter().map(|r| r.action.as_str()).collect();
    let reasons: Vec<&str> = held
        .iter()
        .map(|r| r.reason.map_or("", Reason::as_str))
        .collect();
    // Without restores the INSERT is left out: `ON CONFLICT (project_id, name)` is refused at
    // planning time when the unique index is gone, which is when every restore is held back.
    let restores = if restore.is_empty() {
        "audit AS (SELECT NULL::bigint AS repository_id, NULL::text AS name WHERE false)"
    } else {
        "inserted AS ( \
             INSERT INTO container_repositories (project_id, name, created_at, updated_at) \
             SELECT $2, wanted.name, now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC' \
             FROM wanted \
             ON CONFLICT (project_id, name) DO NOTHING \
             RETURNING id, name), \
         audit AS ( \
             INSERT INTO registry_repair_restored \
                 (run_id, project_id, repository_id, name, registry_path, registry_created_at) \
             SELECT $1, $2, inserted.id, inserted.name, wanted.registry_path, \
                    wanted.registry_created_at \
             FROM inserted JOIN wanted ON wanted.name = inserted.name \
             RETURNING repository_id, name)"
    };
    // Raw: one statement of data-modifying CTEs over UNNEST'ed arrays: a round trip per project.
    diesel::sql_query(format!(
        "WITH wanted AS ( \
             SELECT * FROM UNNEST($3::text[], $4::text[], $5::timestamptz[]) \
                 AS u(name, registry_path, registry_created_at)), \
         {restores}, \
         held AS ( \
             INSERT INTO registry_repair_skipped \
                 (run_id, project_id, name, registry_path, action, reason, registry_created_at) \
             SELECT $1, $2, h.name, h.registry_path, h.action, h.reason, h.created_at \
             FROM UNNEST($6::text[], $7::text[], $8::text[], $9::text[], $10::timestamptz[]) \
                 AS h(name, registry_path, action, reason, created_at) \
             ON CONFLICT DO NOTHING), \
         counted AS ( \
             UPDATE registry_repair_run_projects \
             SET restored = (SELECT count(*) FROM audit), \
                 already_present = (SELECT count(*) FROM wanted) - (SELECT count(*) FROM audit) \
             WHERE run_id = $1 AND project_id = $2), \
         tracked AS ( \
             UPDATE container_registry_data_repair_details \
             SET missing_count = $11, updated_at = now() WHERE project_id = $2) \
         SELECT repository_id, name FROM audit ORDER BY repository_id"
    ))
    .bind::<BigInt, _>(run_id)
    .bind::<BigInt, _>(plan.project_id)
    .bind::<Array<Text>, _>(names(&restore))
    .bind::<Array<Text>, _>(paths(&restore))
    .bind::<Array<Nullable<Timestamptz>>, _>(created(&restore))
    .bind::<Array<Text>, _>(names(&held))
    .bind::<Array<Text>, _>(paths(&held))
    .bind::<Array<Text>, _>(&actions)
    .bind::<Array<Text>, _>(&reasons)
    .bind::<Array<Nullable<Timestamptz>>, _>(created(&held))
    .bind::<Integer, _>(plan.still_missing())
    .load::<Restored>(conn)
    .await
    .map(|rows| rows.into_iter().map(RestoredRow::from).collect())
}
