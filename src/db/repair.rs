//! The repair's queries: which projects to repair (keyset-paged, with the scope flags), the facts
//! its guards need (in bulk per batch), whether GitLab's unique index can be trusted, the write of
//! a project's plan in one transaction, undo, and the runs.
//!
//! For the pipeline: the Scheduler pages [`candidates`] and reads [`project_facts`] and
//! [`index_health`] per page; the Analyzer reads the names GitLab has
//! ([`super::projects::existing_repository_names`]) and [`claimed_paths`], and calls
//! [`crate::repair::plan_project`]; the Writer calls [`apply_into`] with the plans of a run
//! started by [`start_apply`]; the command calls [`finish_run`] once the run is done.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::sql_types::{Array, BigInt, Bool, Integer, Nullable, Text, Timestamp, Timestamptz};
use diesel_async::RunQueryDsl;
use futures_util::FutureExt;
use serde::Serialize;

use super::{Database, DbConn, DbError};
use crate::repair::guards::{Action, ProjectFacts, ProjectPlan, Reason};

/// The unique index GitLab's upsert (and ours) relies on.
pub const UNIQUE_INDEX: &str = "index_container_repositories_on_project_id_and_name";

/// Errors a caller matches on: a run that does not exist or cannot be undone, tables missing.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    #[error("repair run {0} does not exist (`registry-repair repair runs` lists them)")]
    UnknownRun(i64),
    #[error("repair run {id} is an {kind} run; only apply runs can be {what}")]
    NotAnApplyRun {
        id: i64,
        kind: String,
        what: &'static str,
    },
    #[error("the repair's tables (registry_repair_runs and others) do not exist in {target}: run `registry-repair migrate` first")]
    NotMigrated { target: String },
    #[error("the database at {target} is a read-only standby (a Geo secondary or a replica): point database.url at the primary to write")]
    ReadOnly { target: String },
    #[error("no top-level group, subgroup or user has the path `{0}` (--namespace)")]
    UnknownNamespace(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Which projects a `plan` or `apply` looks at (the canary flags).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// `--project ID`, repeatable; empty: every project.
    pub projects: Vec<i64>,
    /// `--namespace PATH`: a group or user and everything below it (case-insensitive).
    pub namespace: Option<String>,
    /// `--limit N` projects at most.
    pub limit: Option<u64>,
    /// `--include-older`: restore repositories older than their project too.
    pub include_older: bool,
}

impl Scope {
    /// The flags as an operator would type them, for `registry_repair_runs.scope`.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .projects
            .iter()
            .map(|id| format!("--project {id}"))
            .collect();
        if let Some(ns) = &self.namespace {
            parts.push(format!("--namespace {ns}"));
        }
        if let Some(limit) = self.limit {
            parts.push(format!("--limit {limit}"));
        }
        if self.include_older {
            parts.push("--include-older".into());
        }
        parts.join(" ")
    }

    /// `lower(routes.path) LIKE` pattern for the namespace: its path and `/`, with LIKE's
    /// wildcards escaped (`_` is common in paths).
    fn namespace_pattern(&self) -> Option<String> {
        self.namespace.as_deref().map(|ns| {
            let ns = ns.trim_matches('/').to_lowercase();
            let mut escaped = String::with_capacity(ns.len() + 2);
            for c in ns.chars() {
                if matches!(c, '\\' | '%' | '_') {
                    escaped.push('\\');
                }
                escaped.push(c);
            }
            escaped.push_str("/%");
            escaped
        })
    }
}

/// A project whose tracking row is `completed` with `missing_count > 0`.
#[derive(Debug, Clone, PartialEq, Eq, diesel::QueryableByName)]
pub struct Candidate {
    #[diesel(sql_type = BigInt)]
    pub project_id: i64,
    #[diesel(sql_type = Text)]
    pub full_path: String,
    #[diesel(sql_type = Integer)]
    pub missing_count: i32,
}

/// Whether the repair's tables exist (the migration ran).
pub async fn check_ready(db: &Database) -> Result<(), RepairError> {
    #[derive(diesel::QueryableByName)]
    struct Present {
        #[diesel(sql_type = Bool)]
        present: bool,
    }
    let mut conn = db.conn().await?;
    let row: Present = diesel::sql_query(
        "SELECT to_regclass('registry_repair_runs') IS NOT NULL \
                AND to_regclass('registry_repair_run_projects') IS NOT NULL \
                AND to_regclass('registry_repair_restored') IS NOT NULL \
                AND to_regclass('registry_repair_skipped') IS NOT NULL AS present",
    )
    .get_result(&mut conn)
    .await
    .map_err(DbError::query("checking for the repair's tables"))?;
    if row.present {
        Ok(())
    } else {
        Err(RepairError::NotMigrated {
            target: db.target().to_string(),
        })
    }
}

/// Refuses a database that cannot be written: a standby or a Geo secondary (read-only), where
/// `apply` and `undo` would fail on their first write.
pub async fn check_primary(db: &Database) -> Result<(), RepairError> {
    #[derive(diesel::QueryableByName)]
    struct Recovery {
        #[diesel(sql_type = Bool)]
        standby: bool,
    }
    let mut conn = db.conn().await?;
    let row: Recovery = diesel::sql_query("SELECT pg_is_in_recovery() AS standby")
        .get_result(&mut conn)
        .await
        .map_err(DbError::query("asking whether the database is a standby"))?;
    if row.standby {
        Err(RepairError::ReadOnly {
            target: db.target().to_string(),
        })
    } else {
        Ok(())
    }
}

/// Whether a group or user (a `Namespace` route) has `path`, ignoring case.
pub async fn namespace_exists(db: &Database, path: &str) -> Result<bool, DbError> {
    #[derive(diesel::QueryableByName)]
    struct Present {
        #[diesel(sql_type = Bool)]
        present: bool,
    }
    let mut conn = db.conn().await?;
    let row: Present = diesel::sql_query(
        "SELECT EXISTS (SELECT 1 FROM routes WHERE source_type = 'Namespace' \
                        AND lower(path) = lower($1)) AS present",
    )
    .bind::<Text, _>(path.trim_matches('/'))
    .get_result(&mut conn)
    .await
    .map_err(DbError::query(format!("looking up the namespace `{path}`")))?;
    Ok(row.present)
}

/// The next `limit` projects in `scope` after project id `after`, in id order: tracking row
/// `completed` with `missing_count > 0`, and a route. A keyset walk over the tracking table's
/// primary key, so a page costs the same at any depth of millions of rows. `--limit` is the
/// caller's to count (it spans pages).
pub async fn candidates(
    db: &Database,
    scope: &Scope,
    after: i64,
    limit: i64,
) -> Result<Vec<Candidate>, DbError> {
    let mut conn = db.conn().await?;
    diesel::sql_query(
        "SELECT t.project_id, r.path AS full_path, t.missing_count \
         FROM container_registry_data_repair_details t \
         JOIN routes r ON r.source_type = 'Project' AND r.source_id = t.project_id \
         WHERE t.project_id > $1 AND t.status = 1 AND t.missing_count > 0 \
           AND (cardinality($2::bigint[]) = 0 OR t.project_id = ANY($2::bigint[])) \
           AND ($3::text IS NULL OR lower(r.path) LIKE $3::text ESCAPE '\\') \
         ORDER BY t.project_id \
         LIMIT $4",
    )
    .bind::<BigInt, _>(after)
    .bind::<Array<BigInt>, _>(&scope.projects)
    .bind::<Nullable<Text>, _>(scope.namespace_pattern())
    .bind::<BigInt, _>(limit)
    .load(&mut conn)
    .await
    .map_err(DbError::query(format!(
        "reading the next {limit} projects to repair after id {after}"
    )))
}

#[derive(diesel::QueryableByName)]
struct FactsRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Nullable<Timestamp>)]
    created_at: Option<NaiveDateTime>,
    #[diesel(sql_type = Bool)]
    pending_delete: bool,
    #[diesel(sql_type = Bool)]
    marked_for_deletion: bool,
    #[diesel(sql_type = Nullable<Integer>)]
    registry_access_level: Option<i32>,
    #[diesel(sql_type = Bool)]
    duplicate_rows: bool,
}

/// The guards' facts of project `p`: one definition for the bulk read and the write-time check.
const FACTS_COLUMNS: &str = "p.id, p.created_at, \
        COALESCE(p.pending_delete, false) AS pending_delete, \
        p.marked_for_deletion_at IS NOT NULL AS marked_for_deletion, \
        (SELECT f.container_registry_access_level FROM project_features f \
         WHERE f.project_id = p.id LIMIT 1) AS registry_access_level, \
        EXISTS (SELECT 1 FROM container_repositories c WHERE c.project_id = p.id \
                GROUP BY c.name HAVING count(*) > 1) AS duplicate_rows";

impl FactsRow {
    fn into_facts(self, full_path: String) -> ProjectFacts {
        ProjectFacts {
            id: self.id,
            full_path,
            created_at: self.created_at,
            pending_delete: self.pending_delete,
            marked_for_deletion: self.marked_for_deletion,
            registry_access_level: self.registry_access_level,
            duplicate_rows: self.duplicate_rows,
        }
    }
}

/// The guards' facts for a batch of candidates, in one statement: deletion columns,
/// `project_features`, duplicate `(project_id, name)` rows. A project deleted meanwhile is absent
/// from the map.
pub async fn project_facts(
    db: &Database,
    candidates: &[Candidate],
) -> Result<HashMap<i64, ProjectFacts>, DbError> {
    if candidates.is_empty() {
        return Ok(HashMap::new());
    }
    let ids: Vec<i64> = candidates.iter().map(|c| c.project_id).collect();
    let mut paths: HashMap<i64, &str> = candidates
        .iter()
        .map(|c| (c.project_id, c.full_path.as_str()))
        .collect();
    let mut conn = db.conn().await?;
    let rows: Vec<FactsRow> = diesel::sql_query(format!(
        "SELECT {FACTS_COLUMNS} FROM projects p WHERE p.id = ANY($1)"
    ))
    .bind::<Array<BigInt>, _>(&ids)
    .load(&mut conn)
    .await
    .map_err(DbError::query(format!(
        "reading the deletion state, registry setting and duplicates of {} projects",
        ids.len()
    )))?;
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            let path = paths.remove(&row.id)?.to_string();
            Some((row.id, row.into_facts(path)))
        })
        .collect())
}

/// The state of [`UNIQUE_INDEX`] in `pg_index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, diesel::QueryableByName)]
pub struct IndexHealth {
    #[diesel(sql_type = Bool)]
    pub present: bool,
    #[diesel(sql_type = Bool)]
    pub unique: bool,
    #[diesel(sql_type = Bool)]
    pub valid: bool,
    #[diesel(sql_type = Bool)]
    pub ready: bool,
    #[diesel(sql_type = Bool)]
    pub live: bool,
}

impl IndexHealth {
    /// `ON CONFLICT (project_id, name)` protects only while the index is there, unique, valid,
    /// ready and live.
    pub fn is_safe(&self) -> bool {
        self.present && self.unique && self.valid && self.ready && self.live
    }

    /// What is wrong, for the plan's notes.
    pub fn describe(&self) -> String {
        if !self.present {
            format!("{UNIQUE_INDEX} does not exist")
        } else if self.is_safe() {
            format!("{UNIQUE_INDEX} is valid")
        } else {
            format!(
                "{UNIQUE_INDEX} is not usable (unique {}, valid {}, ready {}, live {}); REINDEX it",
                self.unique, self.valid, self.ready, self.live
            )
        }
    }
}

/// Whether GitLab's unique index on `container_repositories (project_id, name)` can be trusted.
pub async fn index_health(db: &Database) -> Result<IndexHealth, DbError> {
    let mut conn = db.conn().await?;
    index_health_on(&mut conn).await
}

async fn index_health_on(conn: &mut DbConn) -> Result<IndexHealth, DbError> {
    diesel::sql_query(
        "SELECT i.indexrelid IS NOT NULL AS present, \
                COALESCE(i.indisunique, false) AS unique, \
                COALESCE(i.indisvalid, false) AS valid, \
                COALESCE(i.indisready, false) AS ready, \
                COALESCE(i.indislive, false) AS live \
         FROM (SELECT to_regclass($1) AS oid) c \
         LEFT JOIN pg_index i ON i.indexrelid = c.oid \
              AND i.indrelid = to_regclass('container_repositories')",
    )
    .bind::<Text, _>(UNIQUE_INDEX)
    .get_result(conn)
    .await
    .map_err(DbError::query(format!(
        "checking {UNIQUE_INDEX} in pg_index"
    )))
}

/// Which of `paths` (lowercased registry paths, see [`crate::repair::guards::candidate_claims`])
/// are the lowercased route of a project other than `project_id`: through the index on
/// `lower(routes.path)`.
pub async fn claimed_paths(
    db: &Database,
    project_id: i64,
    paths: &[String],
) -> Result<HashSet<String>, DbError> {
    #[derive(diesel::QueryableByName)]
    struct Claim {
        #[diesel(sql_type = Text)]
        path: String,
    }
    if paths.is_empty() {
        return Ok(HashSet::new());
    }
    let mut conn = db.conn().await?;
    let rows: Vec<Claim> = diesel::sql_query(
        "SELECT DISTINCT lower(path) AS path FROM routes \
         WHERE source_type = 'Project' AND lower(path) = ANY($1::text[]) AND source_id <> $2",
    )
    .bind::<Array<Text>, _>(paths)
    .bind::<BigInt, _>(project_id)
    .load(&mut conn)
    .await
    .map_err(DbError::query(format!(
        "looking up other projects under the path of project {project_id}"
    )))?;
    Ok(rows.into_iter().map(|c| c.path).collect())
}

#[derive(diesel::QueryableByName)]
struct Id {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

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
/// projects that are written. The projects' transactions touch disjoint rows but the run's, which
/// each updates last, just before its commit. The Writer's way.
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

/// How many candidates `scope` holds (for progress: a total and an ETA).
pub async fn count_candidates(db: &Database, scope: &Scope) -> Result<u64, DbError> {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let mut conn = db.conn().await?;
    let row: Count = diesel::sql_query(
        "SELECT count(*) AS n \
         FROM container_registry_data_repair_details t \
         JOIN routes r ON r.source_type = 'Project' AND r.source_id = t.project_id \
         WHERE t.status = 1 AND t.missing_count > 0 \
           AND (cardinality($1::bigint[]) = 0 OR t.project_id = ANY($1::bigint[])) \
           AND ($2::text IS NULL OR lower(r.path) LIKE $2::text ESCAPE '\\')",
    )
    .bind::<Array<BigInt>, _>(&scope.projects)
    .bind::<Nullable<Text>, _>(scope.namespace_pattern())
    .get_result(&mut conn)
    .await
    .map_err(DbError::query("counting the projects to repair"))?;
    let n = u64::try_from(row.n).unwrap_or(0);
    Ok(scope.limit.map_or(n, |limit| n.min(limit)))
}

#[derive(diesel::QueryableByName)]
struct Locked {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Nullable<Timestamp>)]
    created_at: Option<NaiveDateTime>,
    #[diesel(sql_type = Bool)]
    pending_delete: bool,
    #[diesel(sql_type = Bool)]
    marked_for_deletion: bool,
    #[diesel(sql_type = Nullable<Integer>)]
    registry_access_level: Option<i32>,
    #[diesel(sql_type = Bool)]
    duplicate_rows: bool,
    #[diesel(sql_type = Nullable<Integer>)]
    missing_before: Option<i32>,
    #[diesel(sql_type = Bool)]
    tracked: bool,
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
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
            let facts = ProjectFacts {
                id: locked.id,
                full_path: plan.full_path.clone(),
                created_at: locked.created_at,
                pending_delete: locked.pending_delete,
                marked_for_deletion: locked.marked_for_deletion,
                registry_access_level: locked.registry_access_level,
                duplicate_rows: locked.duplicate_rows,
            };
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
    #[diesel(sql_type = Nullable<BigInt>)]
    pub undo_of: Option<i64>,
    /// The undo runs of this apply run, oldest first.
    #[diesel(sql_type = Array<BigInt>)]
    pub undone_by: Vec<i64>,
}

/// An apply run's counts are the sums of its `registry_repair_run_projects` rows, each written in
/// the same transaction as its project's rows (so exact after a SIGKILL too); `finish_run` also
/// stores them in the run's row. An undo run's are in its row.
const RUNS_SQL: &str = "SELECT r.id, r.kind, r.started_at, r.finished_at, r.scope, \
        CASE WHEN r.kind = 'apply' THEN w.projects ELSE r.projects END AS projects, \
        CASE WHEN r.kind = 'apply' THEN w.restored ELSE r.restored END AS restored, \
        CASE WHEN r.kind = 'apply' THEN w.skipped ELSE r.skipped END AS skipped, \
        CASE WHEN r.kind = 'apply' THEN w.review ELSE r.review END AS review, \
        r.deleted, r.kept, r.undo_of, \
        ARRAY(SELECT u.id FROM registry_repair_runs u WHERE u.undo_of = r.id ORDER BY u.id) \
            AS undone_by \
     FROM registry_repair_runs r \
     CROSS JOIN LATERAL (SELECT count(*)::int AS projects, \
            COALESCE(sum(p.restored), 0)::int AS restored, \
            COALESCE(sum(p.skipped), 0)::int AS skipped, \
            COALESCE(sum(p.review), 0)::int AS review \
        FROM registry_repair_run_projects p WHERE p.run_id = r.id) w";

/// Every run, newest first.
pub async fn runs(db: &Database) -> Result<Vec<RunRow>, DbError> {
    let mut conn = db.conn().await?;
    diesel::sql_query(format!("{RUNS_SQL} ORDER BY r.id DESC"))
        .load(&mut conn)
        .await
        .map_err(DbError::query("reading registry_repair_runs"))
}

/// One run.
pub async fn run(db: &Database, id: i64) -> Result<Option<RunRow>, DbError> {
    let mut conn = db.conn().await?;
    let mut rows: Vec<RunRow> = diesel::sql_query(format!("{RUNS_SQL} WHERE r.id = $1"))
        .bind::<BigInt, _>(id)
        .load(&mut conn)
        .await
        .map_err(DbError::query(format!("reading repair run {id}")))?;
    Ok(rows.pop())
}

async fn apply_run(db: &Database, id: i64, what: &'static str) -> Result<RunRow, RepairError> {
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

/// A restored row that undo left in place, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, diesel::QueryableByName)]
pub struct KeptRow {
    #[diesel(sql_type = BigInt)]
    pub project_id: i64,
    #[diesel(sql_type = BigInt)]
    pub repository_id: i64,
    #[diesel(sql_type = Text)]
    pub name: String,
    /// `gone` (deleted since), `status N` (GitLab is deleting it), `moved` (another project or
    /// name now).
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

/// Deletes exactly the rows run `undo_of` restored that are unchanged since (same id, project and
/// name, `status` still NULL), each project in one transaction that also marks the audit rows
/// undone and adds the deleted rows back to the tracking row's `missing_count`. Rows changed since
/// are left and listed. Recorded as a run of kind `undo`. Running it again (after a SIGKILL, say)
/// finishes the job and deletes nothing twice.
pub async fn undo(db: &Database, undo_of: i64) -> Result<UndoOutcome, RepairError> {
    apply_run(db, undo_of, "undone").await?;
    let mut conn = db.conn().await?;
    let run: Id = diesel::sql_query(
        "INSERT INTO registry_repair_runs (kind, scope, undo_of) \
         VALUES ('undo', 'undo ' || $1, $1) RETURNING id",
    )
    .bind::<BigInt, _>(undo_of)
    .get_result(&mut conn)
    .await
    .map_err(DbError::query(format!(
        "recording the start of the undo of repair run {undo_of}"
    )))?;
    let mut outcome = UndoOutcome {
        run: run.id,
        undo_of,
        projects: 0,
        deleted: Vec::new(),
        kept: Vec::new(),
    };
    let mut after = 0i64;
    loop {
        #[derive(diesel::QueryableByName)]
        struct ProjectId {
            #[diesel(sql_type = BigInt)]
            project_id: i64,
        }
        let page: Vec<ProjectId> = diesel::sql_query(
            "SELECT DISTINCT project_id FROM registry_repair_restored \
             WHERE run_id = $1 AND project_id > $2 AND undone_at IS NULL \
             ORDER BY project_id LIMIT $3",
        )
        .bind::<BigInt, _>(undo_of)
        .bind::<BigInt, _>(after)
        .bind::<BigInt, _>(UNDO_PAGE)
        .load(&mut conn)
        .await
        .map_err(DbError::query(format!(
            "reading the projects repair run {undo_of} restored rows in, after id {after}"
        )))?;
        let Some(last) = page.last() else { break };
        after = last.project_id;
        for ProjectId { project_id } in page {
            let (deleted, kept) = undo_project(&mut conn, undo_of, outcome.run, project_id).await?;
            outcome.projects += 1;
            outcome.deleted.extend(deleted);
            outcome.kept.extend(kept);
        }
    }
    finish_run(db, outcome.run).await?;
    Ok(outcome)
}

async fn undo_project(
    conn: &mut DbConn,
    undo_of: i64,
    run: i64,
    project_id: i64,
) -> Result<(Vec<RestoredRow>, Vec<KeptRow>), DbError> {
    let what =
        move |step: &str| format!("undoing repair run {undo_of}, project {project_id}: {step}");
    conn.transaction(|conn| {
        async move {
            let deleted: Vec<RestoredRow> = diesel::sql_query(
                "WITH mine AS ( \
                     SELECT repository_id, name FROM registry_repair_restored \
                     WHERE run_id = $1 AND project_id = $2 AND undone_at IS NULL \
                     FOR UPDATE), \
                 gone AS ( \
                     DELETE FROM container_repositories c USING mine \
                     WHERE c.id = mine.repository_id AND c.project_id = $2 \
                       AND c.name = mine.name AND c.status IS NULL \
                     RETURNING c.id) \
                 UPDATE registry_repair_restored r SET undone_by = $3, undone_at = now() \
                 FROM gone \
                 WHERE r.run_id = $1 AND r.project_id = $2 AND r.repository_id = gone.id \
                 RETURNING r.repository_id, r.name",
            )
            .bind::<BigInt, _>(undo_of)
            .bind::<BigInt, _>(project_id)
            .bind::<BigInt, _>(run)
            .load(conn)
            .await
            .map_err(DbError::query(what("deleting the unchanged restored rows")))?;
            let kept: Vec<KeptRow> = diesel::sql_query(
                "SELECT r.project_id, r.repository_id, r.name, \
                        CASE WHEN c.id IS NULL THEN 'gone' \
                             WHEN c.project_id <> r.project_id OR c.name <> r.name THEN 'moved' \
                             ELSE 'status ' || c.status END AS why \
                 FROM registry_repair_restored r \
                 LEFT JOIN container_repositories c ON c.id = r.repository_id \
                 WHERE r.run_id = $1 AND r.project_id = $2 AND r.undone_at IS NULL \
                 ORDER BY r.repository_id",
            )
            .bind::<BigInt, _>(undo_of)
            .bind::<BigInt, _>(project_id)
            .load(conn)
            .await
            .map_err(DbError::query(what("listing the rows changed since")))?;
            if !deleted.is_empty() {
                diesel::sql_query(
                    "UPDATE container_registry_data_repair_details \
                     SET missing_count = COALESCE(missing_count, 0) + $2, updated_at = now() \
                     WHERE project_id = $1",
                )
                .bind::<BigInt, _>(project_id)
                .bind::<Integer, _>(count(deleted.len()))
                .execute(conn)
                .await
                .map_err(DbError::query(what(
                    "restoring the tracking row's missing_count",
                )))?;
            }
            diesel::sql_query(
                "UPDATE registry_repair_runs \
                 SET projects = projects + 1, deleted = deleted + $2, kept = kept + $3 \
                 WHERE id = $1",
            )
            .bind::<BigInt, _>(run)
            .bind::<Integer, _>(count(deleted.len()))
            .bind::<Integer, _>(count(kept.len()))
            .execute(conn)
            .await
            .map_err(DbError::query(what("counting the undo's work")))?;
            Ok((deleted, kept))
        }
        .boxed()
    })
    .await
}

/// A project an apply run wrote, and the names it held back (skip or review): what `verify` does
/// not report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunProject {
    pub project_id: i64,
    /// The project's route now (the registry moves repositories with a rename); `None` when the
    /// project or its route is gone.
    pub full_path: Option<String>,
    pub held_back: HashSet<String>,
}

/// The projects run `run_id` wrote, in id order, `limit` after project id `after`.
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
        #[diesel(sql_type = Nullable<Text>)]
        full_path: Option<String>,
        #[diesel(sql_type = Array<Text>)]
        held_back: Vec<String>,
    }
    if after == 0 {
        apply_run(db, run_id, "verified").await?;
    }
    let mut conn = db.conn().await?;
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT rp.project_id, r.path AS full_path, \
                ARRAY(SELECT s.name FROM registry_repair_skipped s \
                      WHERE s.run_id = rp.run_id AND s.project_id = rp.project_id) AS held_back \
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
            full_path: r.full_path,
            held_back: r.held_back.into_iter().collect(),
        })
        .collect())
}

/// Rows run `run_id` restored (and not undone) in projects whose cleanup policy is enabled: the
/// policy's next run may delete their tags.
pub async fn under_cleanup_policy(db: &Database, run_id: i64) -> Result<i64, DbError> {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let mut conn = db.conn().await?;
    let row: Count = diesel::sql_query(
        "SELECT count(*) AS n FROM registry_repair_restored r \
         JOIN container_expiration_policies p ON p.project_id = r.project_id AND p.enabled \
         WHERE r.run_id = $1 AND r.undone_at IS NULL",
    )
    .bind::<BigInt, _>(run_id)
    .get_result(&mut conn)
    .await
    .map_err(DbError::query(format!(
        "counting the rows of repair run {run_id} under an enabled cleanup policy"
    )))?;
    Ok(row.n)
}

/// The projects run `run_id` restored rows in (not undone), in id order: whose statistics to
/// refresh.
pub async fn restored_projects(db: &Database, run_id: i64) -> Result<Vec<i64>, DbError> {
    #[derive(diesel::QueryableByName)]
    struct ProjectId {
        #[diesel(sql_type = BigInt)]
        project_id: i64,
    }
    let mut conn = db.conn().await?;
    let rows: Vec<ProjectId> = diesel::sql_query(
        "SELECT DISTINCT project_id FROM registry_repair_restored \
         WHERE run_id = $1 AND undone_at IS NULL ORDER BY project_id",
    )
    .bind::<BigInt, _>(run_id)
    .load(&mut conn)
    .await
    .map_err(DbError::query(format!(
        "reading the projects repair run {run_id} restored rows in"
    )))?;
    Ok(rows.into_iter().map(|r| r.project_id).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_describes_itself_as_flags() {
        let scope = Scope {
            projects: vec![3, 5],
            namespace: Some("Gitlab-Org".into()),
            limit: Some(10),
            include_older: true,
        };
        assert_eq!(
            scope.describe(),
            "--project 3 --project 5 --namespace Gitlab-Org --limit 10 --include-older"
        );
        assert_eq!(Scope::default().describe(), "");
    }

    #[test]
    fn namespace_pattern_escapes_like_wildcards() {
        let scope = Scope {
            namespace: Some("/My_Group%/".into()),
            ..Scope::default()
        };
        assert_eq!(
            scope.namespace_pattern().as_deref(),
            Some("my\\_group\\%/%")
        );
        assert_eq!(Scope::default().namespace_pattern(), None);
    }

    #[test]
    fn the_index_is_safe_only_when_everything_holds() {
        let good = IndexHealth {
            present: true,
            unique: true,
            valid: true,
            ready: true,
            live: true,
        };
        assert!(good.is_safe());
        for broken in [
            IndexHealth {
                present: false,
                ..good
            },
            IndexHealth {
                unique: false,
                ..good
            },
            IndexHealth {
                valid: false,
                ..good
            },
            IndexHealth {
                ready: false,
                ..good
            },
            IndexHealth {
                live: false,
                ..good
            },
        ] {
            assert!(!broken.is_safe(), "{broken:?}");
            assert!(broken.describe().contains(UNIQUE_INDEX));
        }
    }
}
