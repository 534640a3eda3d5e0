//! Undo of an apply run: deletes only the rows it restored that nobody changed since, project by
//! project, and lists the ones it kept; safe to run again after an interruption.

use std::sync::Arc;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use diesel_async::RunQueryDsl;
use futures_util::FutureExt;
use serde::Serialize;

use super::lease::{self, Lease};
use super::runs::{apply_run, restored_by};
use super::{count, RepairError, Restored, RestoredRow};
use crate::db::dsl::{coalesce, db_now};
use crate::db::schema::{
    container_registry_data_repair_details as tracking, registry_repair_restored as restored,
    registry_repair_runs as runs,
};
use crate::db::{Database, DbConn, DbError};
use crate::fence::Fence;

/// A restored row that undo left in place, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, diesel::QueryableByName)]
pub struct KeptRow {
    #[diesel(sql_type = BigInt)]
    pub project_id: i64,
    #[diesel(sql_type = BigInt)]
    pub repository_id: i64,
    #[diesel(sql_type = Text)]
    pub name: String,
    /// `gone` (deleted since), `moved` (another project or name now), `status N` (GitLab is
    /// deleting it), `deletion started`, `cleanup ran` (a cleanup policy worked on it, and may
    /// have deleted tags) or `updated since` (anything else GitLab saved).
    #[diesel(sql_type = Text)]
    pub why: String,
}

/// What `repair undo RUN` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UndoOutcome {
    /// The undo's own run id.
    pub run: i64,
    pub undo_of: i64,
    pub projects: usize,
    /// Rows deleted.
    pub deleted: Vec<RestoredRow>,
    /// Rows the run restored that changed since, left in place.
    pub kept: Vec<KeptRow>,
}

/// Projects per page of an undo's walk.
const UNDO_PAGE: i64 = 500;

/// Whether GitLab has deleted, scheduled, cleaned up or saved the row `c` since the apply wrote
/// it: its deletion and cleanup columns still as inserted, `updated_at` still `created_at` (the
/// apply writes both with one `now()`; a Rails save moves it). Columns that not every GitLab from
/// 15.10 on has are read through `to_jsonb`, where a missing one reads as NULL.
const DELETION_STARTED: &str = "(c.status IS NOT NULL \
     OR (to_jsonb(c) ->> 'delete_started_at') IS NOT NULL \
     OR (to_jsonb(c) ->> 'status_updated_at') IS NOT NULL \
     OR COALESCE((to_jsonb(c) ->> 'failed_deletion_count')::int, 0) <> 0 \
     OR (to_jsonb(c) ->> 'next_delete_attempt_at') IS NOT NULL)";
const CLEANUP_RAN: &str = "((to_jsonb(c) ->> 'expiration_policy_started_at') IS NOT NULL \
     OR (to_jsonb(c) ->> 'expiration_policy_completed_at') IS NOT NULL \
     OR COALESCE((to_jsonb(c) ->> 'expiration_policy_cleanup_status')::int, 0) <> 0 \
     OR (to_jsonb(c) ->> 'last_cleanup_deleted_tags_count') IS NOT NULL)";
const SAVED_SINCE: &str = "(c.updated_at IS DISTINCT FROM c.created_at)";

/// Deletes, holding the repair `lease` (its run is recorded as the lease's as soon as its row
/// exists, and each project's transaction checks it), exactly the rows run `undo_of` restored that
/// are unchanged since: same id, project and
/// name, and nothing GitLab did to it (no deletion scheduled or started, no cleanup started or
/// finished, no tags deleted, no save). Each project is one transaction that also marks the audit
/// rows undone and adds the deleted rows back to the tracking row's `missing_count`. Rows changed
/// since are left and listed with why. Recorded as a run of kind `undo`. Running it again (after a
/// SIGKILL, say) finishes the job and deletes nothing twice.
pub async fn undo(
    db: &Database,
    undo_of: i64,
    lease: &Lease,
    fence: &Arc<Fence>,
) -> Result<UndoOutcome, RepairError> {
    apply_run(db, undo_of, "undone").await?;
    let mut conn = db.conn().await?;
    let run: i64 = diesel::insert_into(runs::table)
        .values((
            runs::kind.eq("undo"),
            runs::scope.eq(format!("undo {undo_of}")),
            runs::undo_of.eq(undo_of),
        ))
        .returning(runs::id)
        .get_result(&mut conn)
        .await
        .map_err(DbError::query(format!(
            "recording the start of the undo of repair run {undo_of}"
        )))?;
    lease::record_run(db, lease, run).await?;
    let mut outcome = UndoOutcome {
        run,
        undo_of,
        projects: 0,
        deleted: Vec::new(),
        kept: Vec::new(),
    };
    let mut after = 0i64;
    loop {
        let page: Vec<i64> = restored_by(undo_of)
            .filter(restored::project_id.gt(after))
            .select(restored::project_id)
            .distinct()
            .order(restored::project_id)
            .limit(UNDO_PAGE)
            .load(&mut conn)
            .await
            .map_err(DbError::query(format!(
                "reading the projects repair run {undo_of} restored rows in, after id {after}"
            )))?;
        let Some(&last) = page.last() else { break };
        after = last;
        for project_id in page {
            let (deleted, kept) =
                undo_project(&mut conn, undo_of, outcome.run, fence, project_id).await?;
            outcome.projects += 1;
            outcome.deleted.extend(deleted);
            outcome.kept.extend(kept);
        }
    }
    finish_undo(db, outcome.run).await?;
    Ok(outcome)
}

async fn undo_project(
    conn: &mut DbConn,
    undo_of: i64,
    run: i64,
    fence: &Arc<Fence>,
    project_id: i64,
) -> Result<(Vec<RestoredRow>, Vec<KeptRow>), DbError> {
    let fence = fence.clone();
    let what =
        move |step: &str| format!("undoing repair run {undo_of}, project {project_id}: {step}");
    conn.transaction(|conn| {
        async move {
            lease::fence(conn, run, &what("deleting")).await?;
            // Raw: a DELETE in a CTE, whose rows the UPDATE marks undone in the same statement.
            let deleted: Vec<RestoredRow> = diesel::sql_query(format!(
                "WITH mine AS ( \
                     SELECT repository_id, name FROM registry_repair_restored \
                     WHERE run_id = $1 AND project_id = $2 AND undone_at IS NULL \
                     FOR UPDATE), \
                 gone AS ( \
                     DELETE FROM container_repositories c USING mine \
                     WHERE c.id = mine.repository_id AND c.project_id = $2 \
                       AND c.name = mine.name AND NOT {DELETION_STARTED} \
                       AND NOT {CLEANUP_RAN} AND NOT {SAVED_SINCE} \
                     RETURNING c.id) \
                 UPDATE registry_repair_restored r SET undone_by = $3, undone_at = now() \
                 FROM gone \
                 WHERE r.run_id = $1 AND r.project_id = $2 AND r.repository_id = gone.id \
                 RETURNING r.repository_id, r.name"
            ))
            .bind::<BigInt, _>(undo_of)
            .bind::<BigInt, _>(project_id)
            .bind::<BigInt, _>(run)
            .load::<Restored>(conn)
            .await
            .map_err(DbError::query(what("deleting the unchanged restored rows")))?
            .into_iter()
            .map(RestoredRow::from)
            .collect();
            // Raw: columns not every GitLab release has are read through to_jsonb(c).
            let kept: Vec<KeptRow> = diesel::sql_query(format!(
                "SELECT r.project_id, r.repository_id, r.name, \
                        CASE WHEN c.id IS NULL THEN 'gone' \
                             WHEN c.project_id <> r.project_id OR c.name <> r.name THEN 'moved' \
                             WHEN c.status IS NOT NULL THEN 'status ' || c.status \
                             WHEN {DELETION_STARTED} THEN 'deletion started' \
                             WHEN {CLEANUP_RAN} THEN 'cleanup ran' \
                             ELSE 'updated since' END AS why \
                 FROM registry_repair_restored r \
                 LEFT JOIN container_repositories c ON c.id = r.repository_id \
                 WHERE r.run_id = $1 AND r.project_id = $2 AND r.undone_at IS NULL \
                 ORDER BY r.repository_id"
            ))
            .bind::<BigInt, _>(undo_of)
            .bind::<BigInt, _>(project_id)
            .load(conn)
            .await
            .map_err(DbError::query(what("listing the rows changed since")))?;
            if !deleted.is_empty() {
                let missing = coalesce(tracking::missing_count, 0) + count(deleted.len());
                diesel::update(tracking::table.find(project_id))
                    .set((
                        tracking::missing_count.eq(missing.nullable()),
                        tracking::updated_at.eq(db_now()),
                    ))
                    .execute(conn)
                    .await
                    .map_err(DbError::query(what(
                        "restoring the tracking row's missing_count",
                    )))?;
            }
            diesel::update(runs::table.find(run))
                .set((
                    runs::projects.eq(runs::projects + 1),
                    runs::deleted.eq(runs::deleted + count(deleted.len())),
                    runs::kept.eq(runs::kept + count(kept.len())),
                ))
                .execute(conn)
                .await
                .map_err(DbError::query(what("counting the undo's work")))?;
            lease::still_held(&fence, &what("committing"))?;
            Ok((deleted, kept))
        }
        .boxed()
    })
    .await
}

/// Records that undo run `run` ended. Its counts were raised project by project as it went.
async fn finish_undo(db: &Database, run: i64) -> Result<(), DbError> {
    let mut conn = db.conn().await?;
    diesel::update(runs::table.find(run).filter(runs::kind.eq("undo")))
        .set(runs::finished_at.eq(db_now().nullable()))
        .execute(&mut conn)
        .await
        .map_err(DbError::query(format!(
            "recording the end of undo run {run}"
        )))?;
    Ok(())
}
