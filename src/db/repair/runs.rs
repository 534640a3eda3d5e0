//! The runs recorded in `registry_repair_runs`: the checks before one may start (migrated, a
//! primary), an apply's start and finish, and what each run wrote (for `repair runs`, `verify`
//! and the result).

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use diesel::dsl::{exists, not};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Integer, Nullable, Text, Timestamptz};
use diesel_async::RunQueryDsl;
use serde::Serialize;

use super::{RepairError, Scope};
use crate::db::dsl::{has_table_privilege, pg_is_in_recovery, to_regclass};
use crate::db::schema::{
    container_expiration_policies as policies, registry_repair_restored as restored,
    registry_repair_run_projects as run_projects, registry_repair_runs as runs,
};
use crate::db::{Database, DbConn, DbError};

/// Whether the repair's tables exist: every migration ran ([`Database::check_ready`]).
pub async fn check_ready(db: &Database) -> Result<(), RepairError> {
    Ok(db.check_ready().await?)
}

/// Refuses a database that cannot be written: a standby or a Geo secondary (read-only), where
/// `apply` and `undo` would fail on their first write.
pub async fn check_primary(db: &Database) -> Result<(), RepairError> {
    let mut conn = db.conn().await?;
    let standby: bool = diesel::select(pg_is_in_recovery())
        .get_result(&mut conn)
        .await
        .map_err(DbError::query("asking whether the database is a standby"))?;
    if standby {
        Err(RepairError::ReadOnly {
            target: db.target().to_string(),
        })
    } else {
        Ok(())
    }
}

/// Records the start of an `apply` and returns its run id.
pub async fn start_apply(db: &Database, scope: &Scope) -> Result<i64, DbError> {
    let mut conn = db.conn().await?;
    diesel::insert_into(runs::table)
        .values((
            runs::kind.eq("apply"),
            runs::scope.eq(scope.describe()),
            runs::include_older.eq(scope.consent.older_than_project),
            runs::include_older_than_path.eq(scope.consent.older_than_path),
            runs::include_cleanup_policy.eq(scope.consent.cleanup_policy),
        ))
        .returning(runs::id)
        .get_result(&mut conn)
        .await
        .map_err(DbError::query("recording the start of a repair apply run"))
}

/// Forgets run `run_id` if it wrote nothing (its service did not start).
pub async fn discard_run(db: &Database, run_id: i64) -> Result<(), DbError> {
    let mut conn = db.conn().await?;
    let claimed = run_projects::table.filter(run_projects::run_id.eq(run_id));
    diesel::delete(runs::table.find(run_id).filter(not(exists(claimed))))
        .execute(&mut conn)
        .await
        .map_err(DbError::query(format!("discarding repair run {run_id}")))?;
    Ok(())
}

/// Records that apply run `run_id` ended, with its counts: the sums of its projects' rows.
pub async fn finish_apply(db: &Database, run_id: i64) -> Result<(), DbError> {
    let mut conn = db.conn().await?;
    // Raw: an UPDATE ... FROM an aggregate (with FILTER) over the run's projects.
    diesel::sql_query(
        "UPDATE registry_repair_runs r SET finished_at = now(), \
                projects = w.projects, restored = w.restored, skipped = w.skipped, \
                review = w.review, path_changed = w.path_changed \
         FROM (SELECT count(*) FILTER (WHERE p.outcome = 'written')::int AS projects, \
                      COALESCE(sum(p.restored), 0)::int AS restored, \
                      COALESCE(sum(p.skipped), 0)::int AS skipped, \
                      COALESCE(sum(p.review), 0)::int AS review, \
                      count(*) FILTER (WHERE p.outcome = 'path_changed')::int AS path_changed \
               FROM registry_repair_run_projects p WHERE p.run_id = $1) w \
         WHERE r.id = $1 AND r.kind = 'apply'",
    )
    .bind::<BigInt, _>(run_id)
    .execute(&mut conn)
    .await
    .map_err(DbError::query(format!(
        "recording the end of repair run {run_id}"
    )))?;
    Ok(())
}

/// One row of `registry_repair_runs`, with the undo runs that undid it (for `repair runs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, diesel::QueryableByName)]
pub struct RunRow {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub kind: String,
    #[diesel(sql_type = Timestamptz)]
    pub started_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub finished_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Text)]
    pub scope: String,
    #[diesel(sql_type = Integer)]
    pub projects: i32,
    #[diesel(sql_type = Integer)]
    pub restored: i32,
    #[diesel(sql_type = Integer)]
    pub skipped: i32,
    #[diesel(sql_type = Integer)]
    pub review: i32,
    #[diesel(sql_type = Integer)]
    pub deleted: i32,
    #[diesel(sql_type = Integer)]
    pub kept: i32,
    /// Projects not written because their path changed between the listing and the write.
    #[diesel(sql_type = Integer)]
    pub path_changed: i32,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub undo_of: Option<i64>,
    /// The undo runs of this apply run, oldest first.
    #[diesel(sql_type = Array<BigInt>)]
    pub undone_by: Vec<i64>,
    /// `finished`; `under way` (the repair lease names it, unexpired); or `stopped` before its
    /// end (a signal, a kill, a lost lease): run the same command again to finish it.
    #[diesel(sql_type = Text)]
    pub state: String,
}

impl RunRow {
    pub fn finished(&self) -> bool {
        self.finished_at.is_some()
    }
}

/// An apply run's counts are the sums of its `registry_repair_run_projects` rows, each written in
/// the same transaction as its project's rows (so exact after a SIGKILL too); `finish_apply` also
/// stores them in the run's row. An undo run's are in its row, raised project by project.
const RUNS_SQL: &str = "SELECT r.id, r.kind, r.started_at, r.finished_at, r.scope, \
        CASE WHEN r.kind = 'apply' THEN w.projects ELSE r.projects END AS projects, \
        CASE WHEN r.kind = 'apply' THEN w.restored ELSE r.restored END AS restored, \
        CASE WHEN r.kind = 'apply' THEN w.skipped ELSE r.skipped END AS skipped, \
        CASE WHEN r.kind = 'apply' THEN w.review ELSE r.review END AS review, \
        r.deleted, r.kept, \
        CASE WHEN r.kind = 'apply' THEN w.path_changed ELSE r.path_changed END AS path_changed, \
        r.undo_of, \
        ARRAY(SELECT u.id FROM registry_repair_runs u WHERE u.undo_of = r.id ORDER BY u.id) \
            AS undone_by, \
        CASE WHEN r.finished_at IS NOT NULL THEN 'finished' \
             WHEN EXISTS (SELECT 1 FROM registry_repair_leases l \
                          WHERE l.run_id = r.id AND l.expires_at > now()) THEN 'under way' \
             ELSE 'stopped' END AS state \
     FROM registry_repair_runs r \
     CROSS JOIN LATERAL (SELECT count(*) FILTER (WHERE p.outcome = 'written')::int AS projects, \
            COALESCE(sum(p.restored), 0)::int AS restored, \
            COALESCE(sum(p.skipped), 0)::int AS skipped, \
            COALESCE(sum(p.review), 0)::int AS review, \
            count(*) FILTER (WHERE p.outcome = 'path_changed')::int AS path_changed \
        FROM registry_repair_run_projects p WHERE p.run_id = r.id) w";

/// Every run, newest first.
pub async fn runs(db: &Database) -> Result<Vec<RunRow>, DbError> {
    let mut conn = db.conn().await?;
    load_runs(&mut conn, None)
        .await
        .map_err(DbError::query("reading registry_repair_runs"))
}

/// One run.
pub async fn run(db: &Database, id: i64) -> Result<Option<RunRow>, DbError> {
    let mut conn = db.conn().await?;
    let mut rows = load_runs(&mut conn, Some(id))
        .await
        .map_err(DbError::query(format!("reading repair run {id}")))?;
    Ok(rows.pop())
}

/// Run `id`, or every run (`None`), newest first.
async fn load_runs(conn: &mut DbConn, id: Option<i64>) -> QueryResult<Vec<RunRow>> {
    // Raw: a LATERAL aggregate with FILTER, an ARRAY subquery and a CASE over EXISTS.
    diesel::sql_query(format!(
        "{RUNS_SQL} WHERE $1::bigint IS NULL OR r.id = $1 ORDER BY r.id DESC"
    ))
    .bind::<Nullable<BigInt>, _>(id)
    .load(conn)
    .await
}

/// Apply run `id`, or why it cannot be `what` (verified, undone): it does not exist, or it is no
/// apply run.
pub async fn apply_run(db: &Database, id: i64, what: &'static str) -> Result<RunRow, RepairError> {
    let run = run(db, id).await?.ok_or(RepairError::UnknownRun(id))?;
    if run.kind != "apply" {
        return Err(RepairError::NotAnApplyRun {
            id,
            kind: run.kind,
            what,
        });
    }
    Ok(run)
}

/// A project an apply run claimed, as `verify` checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunProject {
    pub project_id: i64,
    /// The route the run listed the project under.
    pub listed_path: String,
    /// The project's route now; `None` when the project or its route is gone.
    pub full_path: Option<String>,
    pub written: WriteOutcome,
    /// The names the run held back (skip or review).
    pub held_back: HashSet<String>,
    /// The names of the rows the run restored that are still there, unchanged in project and name
    /// and not undone.
    pub restored: Vec<String>,
}

/// What the run's write of a project did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    Written,
    /// The route was `at_write` (`None`: no route), not the listed path: nothing was written.
    /// `written_later_by`: the first later apply run that wrote the project.
    PathChanged {
        at_write: Option<String>,
        written_later_by: Option<i64>,
    },
}

/// The projects run `run_id` claimed, in id order, `limit` after project id `after`.
pub async fn run_projects(
    db: &Database,
    run_id: i64,
    after: i64,
    limit: i64,
) -> Result<Vec<RunProject>, RepairError> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        project_id: i64,
        #[diesel(sql_type = Text)]
        listed_path: String,
        #[diesel(sql_type = Nullable<Text>)]
        full_path: Option<String>,
        #[diesel(sql_type = Text)]
        outcome: String,
        #[diesel(sql_type = Nullable<Text>)]
        path_at_write: Option<String>,
        #[diesel(sql_type = Nullable<BigInt>)]
        written_later_by: Option<i64>,
        #[diesel(sql_type = Array<Text>)]
        held_back: Vec<String>,
        #[diesel(sql_type = Array<Text>)]
        restored: Vec<String>,
    }
    if after == 0 {
        apply_run(db, run_id, "verified").await?;
    }
    let mut conn = db.conn().await?;
    // Raw: correlated ARRAY subqueries, one of them joining container_repositories.
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT rp.project_id, rp.full_path AS listed_path, r.path AS full_path, rp.outcome, \
                rp.path_at_write, \
                CASE WHEN rp.outcome = 'path_changed' THEN \
                    (SELECT min(l.run_id) FROM registry_repair_run_projects l \
                     WHERE l.project_id = rp.project_id AND l.run_id > rp.run_id \
                       AND l.outcome = 'written') END AS written_later_by, \
                ARRAY(SELECT s.name FROM registry_repair_skipped s \
                      WHERE s.run_id = rp.run_id AND s.project_id = rp.project_id) AS held_back, \
                ARRAY(SELECT x.name FROM registry_repair_restored x \
                      JOIN container_repositories c ON c.id = x.repository_id \
                           AND c.project_id = x.project_id AND c.name = x.name \
                      WHERE x.run_id = rp.run_id AND x.project_id = rp.project_id \
                        AND x.undone_at IS NULL ORDER BY x.name) AS restored \
         FROM registry_repair_run_projects rp \
         LEFT JOIN routes r ON r.source_type = 'Project' AND r.source_id = rp.project_id \
         WHERE rp.run_id = $1 AND rp.project_id > $2 \
         ORDER BY rp.project_id LIMIT $3",
    )
    .bind::<BigInt, _>(run_id)
    .bind::<BigInt, _>(after)
    .bind::<BigInt, _>(limit)
    .load(&mut conn)
    .await
    .map_err(DbError::query(format!(
        "reading the projects of repair run {run_id} after id {after}"
    )))?;
    Ok(rows
        .into_iter()
        .map(|r| RunProject {
            project_id: r.project_id,
            listed_path: r.listed_path,
            full_path: r.full_path,
            written: match r.outcome.as_str() {
                "path_changed" => WriteOutcome::PathChanged {
                    at_write: r.path_at_write,
                    written_later_by: r.written_later_by,
                },
                _ => WriteOutcome::Written,
            },
            held_back: r.held_back.into_iter().collect(),
            restored: r.restored,
        })
        .collect())
}

/// Rows run `run_id` restored (and not undone) in projects whose cleanup policy is enabled: the
/// policy's next run may delete their tags.
pub async fn under_cleanup_policy(db: &Database, run_id: i64) -> Result<i64, DbError> {
    let mut conn = db.conn().await?;
    restored::table
        .inner_join(
            policies::table.on(policies::project_id
                .eq(restored::project_id)
                .and(policies::enabled)),
        )
        .filter(restored::run_id.eq(run_id))
        .filter(restored::undone_at.is_null())
        .count()
        .get_result(&mut conn)
        .await
        .map_err(DbError::query(format!(
            "counting the rows of repair run {run_id} under an enabled cleanup policy"
        )))
}

// GitLab EE's Geo sites; CE has no such table (so it is not in the schema).
diesel::table! {
    geo_nodes (id) {
        id -> Int4,
        primary -> Bool,
    }
}

/// Whether GitLab's Geo has a secondary site here (EE's `geo_nodes`; empty, or absent, without
/// Geo): the restored rows must then be announced to it. `None` when the table is there but this
/// role may not read it: unknown.
pub async fn geo_secondaries(db: &Database) -> Result<Option<bool>, DbError> {
    let mut conn = db.conn().await?;
    let readable: Option<bool> =
        diesel::select(has_table_privilege(to_regclass("geo_nodes"), "SELECT"))
            .get_result(&mut conn)
            .await
            .map_err(DbError::query("looking for GitLab's geo_nodes table"))?;
    match readable {
        None => return Ok(Some(false)),
        Some(false) => return Ok(None),
        Some(true) => {}
    }
    let secondaries = geo_nodes::table.filter(not(geo_nodes::primary));
    let present: bool = diesel::select(exists(secondaries))
        .get_result(&mut conn)
        .await
        .map_err(DbError::query("reading GitLab's geo_nodes"))?;
    Ok(Some(present))
}

/// The rows run `run_id` restored and not undone.
#[diesel::dsl::auto_type]
pub(super) fn restored_by(run_id: i64) -> _ {
    restored::table
        .filter(restored::run_id.eq(run_id))
        .filter(restored::undone_at.is_null())
}

/// The `container_repositories` ids run `run_id` restored (not undone), in order: the rows to
/// announce to Geo.
pub async fn restored_repositories(db: &Database, run_id: i64) -> Result<Vec<i64>, DbError> {
    let mut conn = db.conn().await?;
    restored_by(run_id)
        .select(restored::repository_id)
        .order(restored::repository_id)
        .load(&mut conn)
        .await
        .map_err(DbError::query(format!(
            "reading the rows repair run {run_id} restored"
        )))
}

/// The projects run `run_id` restored rows in (not undone), in id order: whose statistics to
/// refresh.
pub async fn restored_projects(db: &Database, run_id: i64) -> Result<Vec<i64>, DbError> {
    let mut conn = db.conn().await?;
    restored_by(run_id)
        .select(restored::project_id)
        .distinct()
        .order(restored::project_id)
        .load(&mut conn)
        .await
        .map_err(DbError::query(format!(
            "reading the projects repair run {run_id} restored rows in"
        )))
}
