//! An apply run: recorded first, then each project's plan written in one transaction of its own
//! (a SIGKILL leaves a project fully repaired or untouched), then finished with its counts.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, BigInt, Bool, Integer, Nullable, Text, Timestamptz};
// In scope for `#[diesel(embed)]`, which names the trait unqualified.
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use futures_util::FutureExt;
use serde::Serialize;

use super::facts::{index_health_on, FactsRow, FACTS_COLUMNS};
use super::{count, Id, Scope};
use crate::db::{Database, DbConn, DbError};
use crate::repair::guards::{Action, ProjectPlan, Reason};

/// Records the start of an `apply` and returns its run id.
pub async fn start_apply(db: &Database, scope: &Scope) -> Result<i64, DbError> {
    let mut conn = db.conn().await?;
    let row: Id = diesel::sql_query(
        "INSERT INTO registry_repair_runs (kind, scope, include_older) \
         VALUES ('apply', $1, $2) RETURNING id",
    )
    .bind::<Text, _>(scope.describe())
    .bind::<Bool, _>(scope.include_older)
    .get_result(&mut conn)
    .await
    .map_err(DbError::query("recording the start of a repair apply run"))?;
    Ok(row.id)
}

/// Forgets run `run_id` if it wrote nothing (its service did not start).
pub async fn discard_run(db: &Database, run_id: i64) -> Result<(), DbError> {
    let mut conn = db.conn().await?;
    diesel::sql_query(
        "DELETE FROM registry_repair_runs WHERE id = $1 \
         AND NOT EXISTS (SELECT 1 FROM registry_repair_run_projects WHERE run_id = $1)",
    )
    .bind::<BigInt, _>(run_id)
    .execute(&mut conn)
    .await
    .map_err(DbError::query(format!("discarding repair run {run_id}")))?;
    Ok(())
}

/// Records that apply run `run_id` ended, with its counts.
pub async fn finish_run(db: &Database, run_id: i64) -> Result<(), DbError> {
    let mut conn = db.conn().await?;
    diesel::sql_query(
        "UPDATE registry_repair_runs r SET finished_at = now(), \
                projects = w.projects, restored = w.restored, skipped = w.skipped, review = w.review \
         FROM (SELECT count(*)::int AS projects, COALESCE(sum(p.restored), 0)::int AS restored, \
                      COALESCE(sum(p.skipped), 0)::int AS skipped, \
                      COALESCE(sum(p.review), 0)::int AS review \
               FROM registry_repair_run_projects p WHERE p.run_id = $1) w \
         WHERE r.id = $1",
    )
        .bind::<BigInt, _>(run_id)
        .execute(&mut conn)
        .await
        .map_err(DbError::query(format!(
            "recording the end of repair run {run_id}"
        )))?;
    Ok(())
}

/// A row an apply inserted into `container_repositories`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, diesel::QueryableByName)]
pub struct RestoredRow {
    #[diesel(sql_type = BigInt)]
    pub repository_id: i64,
    #[diesel(sql_type = Text)]
    pub name: String,
}

/// What writing one project's plan did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Written {
    /// The plan as written (write-time guards may have turned restores into skips), the rows
    /// inserted, and the names a planned restore found present (Rails made them meanwhile).
    Applied {
        plan: ProjectPlan,
        restored: Vec<RestoredRow>,
        already_present: Vec<String>,
    },
    /// This run had written the project already (a retried batch): nothing was done again.
    AlreadyWritten { project_id: i64 },
    /// The project no longer exists: nothing was written.
    ProjectGone { project_id: i64 },
}

/// Writes a batch of plans of run `run_id`, each project in one transaction of its own (see
/// [`apply_project`]). The unique index is checked once per batch: while it is unsafe every
/// project's restores become `index_unsafe` skips. Projects written before an error stay written;
/// calling again with the same batch writes the rest and nothing twice.
pub async fn apply_batch(
    db: &Database,
    run_id: i64,
    plans: &[ProjectPlan],
) -> Result<Vec<Written>, DbError> {
    let mut lanes = [Vec::with_capacity(plans.len())];
    apply_into(db, run_id, plans, &mut lanes).await?;
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
                written.push(apply_project(&mut conn, run_id, plan.clone(), index_safe).await?);
            }
            Ok::<(), DbError>(())
        });
    futures_util::future::join_all(writes)
        .await
        .into_iter()
        .collect()
}

#[derive(QueryableByName)]
struct Locked {
    #[diesel(embed)]
    facts: FactsRow,
    #[diesel(sql_type = Nullable<Integer>)]
    missing_before: Option<i32>,
    #[diesel(sql_type = Bool)]
    tracked: bool,
}

/// Writes one project's plan in one transaction, so that a SIGKILL at any moment leaves the
/// project fully repaired or untouched:
/// 1. the run's claim on the project (`registry_repair_run_projects`; if this run wrote it
///    already, nothing else happens);
/// 2. the project row is locked `FOR SHARE` and the project-level guards asked again (deletion,
///    registry setting, duplicates; a deletion that starts meanwhile waits for this transaction);
/// 3. the restores as Rails' `find_or_create_from_path!` writes them: `project_id`, `name`,
///    `created_at`, `updated_at` (UTC `now()`), `ON CONFLICT (project_id, name) DO NOTHING`, with
///    one audit row per row actually inserted;
/// 4. the skipped and reviewed repositories, the tracking row's `missing_count` (what is still
///    missing), and the run's counts.
pub async fn apply_project(
    conn: &mut DbConn,
    run_id: i64,
    plan: ProjectPlan,
    index_safe: bool,
) -> Result<Written, DbError> {
    let project_id = plan.project_id;
    let what = move |step: &str| format!("repair run {run_id}, project {project_id}: {step}");
    conn.transaction(|conn| {
        async move {
            let mut plan = plan;
            let locked: Option<Locked> = diesel::sql_query(format!(
                "SELECT {FACTS_COLUMNS}, \
                        t.missing_count AS missing_before, t.project_id IS NOT NULL AS tracked \
                 FROM projects p \
                 LEFT JOIN container_registry_data_repair_details t ON t.project_id = p.id \
                 WHERE p.id = $1 \
                 FOR SHARE OF p"
            ))
            .bind::<BigInt, _>(project_id)
            .get_result(conn)
            .await
            .map(Some)
            .or_else(|e| match e {
                diesel::result::Error::NotFound => Ok(None),
                e => Err(e),
            })
            .map_err(DbError::query(what("locking the project row")))?;
            let Some(locked) = locked else {
                return Ok(Written::ProjectGone { project_id });
            };
            let facts = locked.facts.into_facts(plan.full_path.clone());
            if let Some(reason) = facts.project_reason(index_safe) {
                plan.hold_back(reason);
            }

            let restore: Vec<_> = plan.with_action(Action::Restore).cloned().collect();
            let names: Vec<String> = restore.iter().map(|r| r.name.clone()).collect();
            let paths: Vec<String> = restore.iter().map(|r| r.registry_path.clone()).collect();
            let created: Vec<Option<DateTime<Utc>>> = restore
                .iter()
                .map(|r| r.registry_created_at_parsed())
                .collect();
            let held: Vec<_> = plan
                .repositories
                .iter()
                .filter(|r| r.action != Action::Restore)
                .collect();
            let skipped = count(held.iter().filter(|r| r.action == Action::Skip).count());
            let review = count(held.iter().filter(|r| r.action == Action::Review).count());

            // 1. This run's claim on the project: a retried batch finds it and stops here.
            let claimed = diesel::sql_query(
                "INSERT INTO registry_repair_run_projects \
                     (run_id, project_id, full_path, restored, already_present, skipped, review, \
                      missing_before, missing_after) \
                 VALUES ($1, $2, $3, 0, 0, $4, $5, $6, $7) \
                 ON CONFLICT (run_id, project_id) DO NOTHING",
            )
            .bind::<BigInt, _>(run_id)
            .bind::<BigInt, _>(project_id)
            .bind::<Text, _>(&plan.full_path)
            .bind::<Integer, _>(skipped)
            .bind::<Integer, _>(review)
            .bind::<Nullable<Integer>, _>(locked.missing_before)
            .bind::<Integer, _>(plan.still_missing())
            .execute(conn)
            .await
            .map_err(DbError::query(what("recording the project in the run")))?;
            if claimed == 0 {
                return Ok(Written::AlreadyWritten { project_id });
            }

            // 3. The rows, as Rails writes them, and an audit row for each one inserted.
            let restored: Vec<RestoredRow> = if names.is_empty() {
                Vec::new()
            } else {
                diesel::sql_query(
                    "WITH wanted AS ( \
                         SELECT * FROM UNNEST($2::text[], $3::text[], $4::timestamptz[]) \
                             AS u(name, registry_path, registry_created_at)), \
                     inserted AS ( \
                         INSERT INTO container_repositories (project_id, name, created_at, updated_at) \
                         SELECT $1, wanted.name, now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC' \
                         FROM wanted \
                         ON CONFLICT (project_id, name) DO NOTHING \
                         RETURNING id, name) \
                     INSERT INTO registry_repair_restored \
                         (run_id, project_id, repository_id, name, registry_path, registry_created_at) \
                     SELECT $5, $1, inserted.id, inserted.name, wanted.registry_path, \
                            wanted.registry_created_at \
                     FROM inserted JOIN wanted ON wanted.name = inserted.name \
                     RETURNING repository_id, name",
                )
                .bind::<BigInt, _>(project_id)
                .bind::<Array<Text>, _>(&names)
                .bind::<Array<Text>, _>(&paths)
                .bind::<Array<Nullable<Timestamptz>>, _>(&created)
                .bind::<BigInt, _>(run_id)
                .load(conn)
                .await
                .map_err(DbError::query(what(&format!(
                    "inserting {} container_repositories rows",
                    names.len()
                ))))?
            };
            let inserted: HashSet<&str> = restored.iter().map(|r| r.name.as_str()).collect();
            let already_present: Vec<String> = names
                .iter()
                .filter(|n| !inserted.contains(n.as_str()))
                .cloned()
                .collect();

            // 4. What was held back, the tracking row, the counts.
            if !held.is_empty() {
                let names: Vec<&str> = held.iter().map(|r| r.name.as_str()).collect();
                let paths: Vec<&str> = held.iter().map(|r| r.registry_path.as_str()).collect();
                let actions: Vec<&str> = held.iter().map(|r| r.action.as_str()).collect();
                let reasons: Vec<&str> = held
                    .iter()
                    .map(|r| r.reason.map_or("", Reason::as_str))
                    .collect();
                let created: Vec<Option<DateTime<Utc>>> = held
                    .iter()
                    .map(|r| r.registry_created_at_parsed())
                    .collect();
                diesel::sql_query(
                    "INSERT INTO registry_repair_skipped \
                         (run_id, project_id, name, registry_path, action, reason, registry_created_at) \
                     SELECT $1, $2, u.name, u.registry_path, u.action, u.reason, u.created_at \
                     FROM UNNEST($3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[]) \
                         AS u(name, registry_path, action, reason, created_at) \
                     ON CONFLICT DO NOTHING",
                )
                .bind::<BigInt, _>(run_id)
                .bind::<BigInt, _>(project_id)
                .bind::<Array<Text>, _>(&names)
                .bind::<Array<Text>, _>(&paths)
                .bind::<Array<Text>, _>(&actions)
                .bind::<Array<Text>, _>(&reasons)
                .bind::<Array<Nullable<Timestamptz>>, _>(&created)
                .execute(conn)
                .await
                .map_err(DbError::query(what("recording the skipped repositories")))?;
            }
            let n_restored = count(restored.len());
            let n_present = count(already_present.len());
            diesel::sql_query(
                "UPDATE registry_repair_run_projects SET restored = $3, already_present = $4 \
                 WHERE run_id = $1 AND project_id = $2",
            )
            .bind::<BigInt, _>(run_id)
            .bind::<BigInt, _>(project_id)
            .bind::<Integer, _>(n_restored)
            .bind::<Integer, _>(n_present)
            .execute(conn)
            .await
            .map_err(DbError::query(what("counting the restored rows")))?;
            if locked.tracked {
                diesel::sql_query(
                    "UPDATE container_registry_data_repair_details \
                     SET missing_count = $2, updated_at = now() WHERE project_id = $1",
                )
                .bind::<BigInt, _>(project_id)
                .bind::<Integer, _>(plan.still_missing())
                .execute(conn)
                .await
                .map_err(DbError::query(what("updating the tracking row")))?;
            }
            // The run's counts are the sums of its projects' rows (see `RUNS_SQL`): no row that
            // every project's transaction updates, which would serialize their commits.
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
