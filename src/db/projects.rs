//! Reading GitLab's projects: the keyset walk over projects without a tracking row, and which
//! repository names GitLab's database knows for a project.

use std::collections::{HashMap, HashSet};

use diesel::dsl::{exists, not, sql};
use diesel::expression::SqlLiteral;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::sql_types::Bool;
use diesel_async::RunQueryDsl;

use super::schema::{
    container_registry_data_repair_details as tracking, container_repositories, projects,
    registry_repair_missing_repositories as missing, routes,
};
use super::tracking::{TrackingStatus, STALE_ONGOING_SQL};
use super::{Database, DbConn, DbError};
use crate::config::Shard;

/// `column % N = i`: the one definition of a shard, for the walk, the sweep, the watermark, the
/// count and the retry of failed projects (they must never disagree). `None` for the single shard,
/// which holds every project: then the statement has no predicate to plan, and stays one diesel
/// prepares once. Only the shard's two integers are spliced in.
fn in_shard(column: &str, shard: Shard) -> Option<SqlLiteral<Bool>> {
    (shard.count() > 1)
        .then(|| sql::<Bool>(&format!("{column} % {} = {}", shard.count(), shard.index())))
}

/// A project to analyse. `full_path` is its `routes.path` (mixed case); `None` when it has no route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    pub id: i64,
    pub full_path: Option<String>,
}

impl Project {
    /// The registry stores a project's repositories under its full path, lowercased.
    pub fn registry_path(&self) -> Option<String> {
        self.full_path.as_deref().map(str::to_lowercase)
    }
}

/// Where a walk looks: project ids above `after`, and up to `through` when given (a sweep's span).
#[derive(Debug, Clone, Copy)]
pub(in crate::db) struct Span {
    pub after: i64,
    pub through: Option<i64>,
}

/// Projects of `shard` in `span` with no tracking row at all: an anti-join whose bounds are
/// repeated inside the subquery, so that PostgreSQL reads only the slice of the tracking table's
/// primary key in the span (index-only, whatever share is analysed). A statement diesel builds,
/// so that it is prepared once per connection (planning would cost as much as running it).
fn without_row(span: Span, shard: Shard) -> projects::BoxedQuery<'static, Pg> {
    let mut query = projects::table
        .filter(projects::id.gt(span.after))
        .into_boxed();
    if let Some(in_shard) = in_shard("projects.id", shard) {
        query = query.filter(in_shard);
    }
    // The same subquery twice: a correlated one does not box.
    match span.through {
        Some(through) => query.filter(projects::id.le(through)).filter(not(exists(
            tracking::table
                .filter(tracking::project_id.eq(projects::id))
                .filter(tracking::project_id.gt(span.after))
                .filter(tracking::project_id.le(through)),
        ))),
        None => query.filter(not(exists(
            tracking::table
                .filter(tracking::project_id.eq(projects::id))
                .filter(tracking::project_id.gt(span.after)),
        ))),
    }
}

/// The stale `ongoing` rows of `shard` in `span`: rows, but no answer (GitLab's worker left them).
/// Found through the index on `status`; there are few.
fn stale_ongoing(span: Span, shard: Shard) -> tracking::BoxedQuery<'static, Pg> {
    tracking_rows(span, shard).filter(sql::<Bool>(STALE_ONGOING_SQL))
}

/// The tracking rows of `shard` in `span`, by the primary key.
fn tracking_rows(span: Span, shard: Shard) -> tracking::BoxedQuery<'static, Pg> {
    let mut query = tracking::table
        .filter(tracking::project_id.gt(span.after))
        .into_boxed();
    if let Some(through) = span.through {
        query = query.filter(tracking::project_id.le(through));
    }
    if let Some(in_shard) = in_shard("container_registry_data_repair_details.project_id", shard) {
        query = query.filter(in_shard);
    }
    query
}

/// The first `limit` projects of `shard` in `span` that have no tracking row answering for them,
/// in id order: the walk, the sweep and the watermark all ask this.
pub(in crate::db) async fn unanswered_ids(
    conn: &mut DbConn,
    span: Span,
    limit: i64,
    shard: Shard,
) -> Result<Vec<i64>, DbError> {
    let what = || {
        format!(
            "reading the next {limit} unanalysed projects after id {}{}",
            span.after,
            span.through
                .map(|t| format!(" up to {t}"))
                .unwrap_or_default()
        )
    };
    let mut ids: Vec<i64> = without_row(span, shard)
        .order(projects::id.asc())
        .limit(limit)
        .select(projects::id)
        .load(conn)
        .await
        .map_err(DbError::query(what()))?;
    let stale: Vec<i64> = stale_ongoing(span, shard)
        .order(tracking::project_id.asc())
        .limit(limit)
        .select(tracking::project_id)
        .load(conn)
        .await
        .map_err(DbError::query(what()))?;
    if !stale.is_empty() {
        ids.extend(stale);
        ids.sort_unstable();
        ids.truncate(usize::try_from(limit).unwrap_or(0));
    }
    Ok(ids)
}

/// The next `limit` projects with id above `after` that have no tracking row, in id order: a
/// keyset walk, then their paths (see [`route_paths`]).
pub async fn next_unanalysed(
    db: &Database,
    after: i64,
    limit: i64,
    shard: Shard,
) -> Result<Vec<Project>, DbError> {
    unanalysed_between(db, after, None, limit, shard).await
}

/// As [`next_unanalysed`], only among ids up to `through` (a sweep's span).
pub async fn unanalysed_between(
    db: &Database,
    after: i64,
    through: Option<i64>,
    limit: i64,
    shard: Shard,
) -> Result<Vec<Project>, DbError> {
    let mut conn = db.conn().await?;
    let ids = unanswered_ids(&mut conn, Span { after, through }, limit, shard).await?;
    with_paths(&mut conn, ids).await
}

/// `ids` as projects, with their full paths.
pub(in crate::db) async fn with_paths(
    conn: &mut DbConn,
    ids: Vec<i64>,
) -> Result<Vec<Project>, DbError> {
    let mut paths = route_paths(conn, &ids).await?;
    Ok(ids
        .into_iter()
        .map(|id| Project {
            id,
            full_path: paths.remove(&id),
        })
        .collect())
}

/// The full paths of `ids` (ascending). When they lie close together, as projects above the
/// watermark do, one range scan of the routes index reads them in order (about 0.4 ms per 1,000
/// here); a probe per project costs six times that.
async fn route_paths(conn: &mut DbConn, ids: &[i64]) -> Result<HashMap<i64, String>, DbError> {
    let (Some(&first), Some(&last)) = (ids.first(), ids.last()) else {
        return Ok(HashMap::new());
    };
    let query = routes::table
        .filter(routes::source_type.eq("Project"))
        .select((routes::source_id, routes::path))
        .into_boxed();
    let dense = usize::try_from(last - first).unwrap_or(usize::MAX) <= 4 * ids.len();
    let query = if dense {
        query.filter(routes::source_id.between(first, last))
    } else {
        query.filter(routes::source_id.eq_any(ids))
    };
    let rows: Vec<(i64, String)> = query.load(conn).await.map_err(DbError::query(format!(
        "reading the full paths of projects {first} to {last}"
    )))?;
    Ok(rows.into_iter().collect())
}

/// Which of `names` have a `container_repositories` row for the project: one query per page.
pub async fn existing_repository_names(
    db: &Database,
    project_id: i64,
    names: &[String],
) -> Result<HashSet<String>, DbError> {
    if names.is_empty() {
        return Ok(HashSet::new());
    }
    let mut conn = db.conn().await?;
    let found: Vec<String> = container_repositories::table
        .filter(container_repositories::project_id.eq(project_id))
        .filter(container_repositories::name.eq_any(names))
        .select(container_repositories::name)
        .load(&mut conn)
        .await
        .map_err(DbError::query(format!(
            "looking up {} repository names of project {project_id}",
            names.len()
        )))?;
    Ok(found.into_iter().collect())
}

/// The `completed` rows of `shard` in `span` that count missing repositories none of which is
/// recorded: counted by a release before the repositories were kept. Read by the primary key,
/// each checked against the recorded repositories' key.
fn uncounted(span: Span, shard: Shard) -> tracking::BoxedQuery<'static, Pg> {
    tracking_rows(span, shard)
        .filter(tracking::status.eq(TrackingStatus::Completed as i16))
        .filter(tracking::missing_count.gt(0))
        .filter(not(exists(
            missing::table.filter(missing::project_id.eq(tracking::project_id)),
        )))
}

/// The first `limit` projects of `shard` in `span` counted without their repositories, in id
/// order (itemising them).
pub(in crate::db) async fn uncounted_ids(
    conn: &mut DbConn,
    span: Span,
    limit: i64,
    shard: Shard,
) -> Result<Vec<i64>, DbError> {
    uncounted(span, shard)
        .order(tracking::project_id.asc())
        .limit(limit)
        .select(tracking::project_id)
        .load(conn)
        .await
        .map_err(DbError::query(format!(
            "reading the next {limit} projects counted without their repositories after id {}",
            span.after
        )))
}

/// How many projects of `shard` are counted without their repositories (the report's figure to
/// do, and whether an itemising pass is due).
pub(in crate::db) async fn count_uncounted(
    conn: &mut DbConn,
    shard: Shard,
) -> Result<i64, DbError> {
    let span = Span {
        after: 0,
        through: None,
    };
    uncounted(span, shard)
        .count()
        .get_result(conn)
        .await
        .map_err(DbError::query(
            "counting the projects counted without their repositories",
        ))
}

/// The first `limit` projects of `shard` in `span` recorded `failed`, in id order
/// (`run --retry-failed`).
pub(in crate::db) async fn failed_ids(
    conn: &mut DbConn,
    span: Span,
    limit: i64,
    shard: Shard,
) -> Result<Vec<i64>, DbError> {
    tracking_rows(span, shard)
        .filter(tracking::status.eq(TrackingStatus::Failed as i16))
        .order(tracking::project_id.asc())
        .limit(limit)
        .select(tracking::project_id)
        .load(conn)
        .await
        .map_err(DbError::query(format!(
            "reading the next {limit} failed projects after id {}",
            span.after
        )))
}

/// How many projects of `shard` above `after` have no answer: the work left, exactly. One count
/// scans what is left of the projects' and the tracking table's keys: run it bounded (see
/// `fleet::claims::count_pass`).
pub(in crate::db) async fn count_unanswered(
    conn: &mut DbConn,
    after: i64,
    shard: Shard,
) -> Result<u64, DbError> {
    let span = Span {
        after,
        through: None,
    };
    let without: i64 = without_row(span, shard)
        .count()
        .get_result(conn)
        .await
        .map_err(DbError::query("counting the projects left to analyse"))?;
    let stale: i64 = stale_ongoing(span, shard)
        .count()
        .get_result(conn)
        .await
        .map_err(DbError::query("counting the stale ongoing rows"))?;
    Ok(u64::try_from(without + stale).unwrap_or(0))
}

/// The work left of `shard` as PostgreSQL's table statistics put it: projects less tracking rows
/// (`reltuples`, as of the last `ANALYZE` or autovacuum), shared evenly among the shards. Off by
/// whatever was written or deleted since the statistics were taken, and by the rows of projects
/// below the watermark without an answer; a guess that costs nothing.
pub(in crate::db) async fn estimate_unanswered(
    conn: &mut DbConn,
    shard: Shard,
) -> Result<u64, DbError> {
    #[derive(diesel::QueryableByName)]
    struct Estimate {
        #[diesel(sql_type = diesel::sql_types::Double)]
        projects: f64,
        #[diesel(sql_type = diesel::sql_types::Double)]
        tracked: f64,
    }
    // Raw: the planner's statistics in the catalog (`pg_class`), no table of the schema.
    let estimate: Estimate = diesel::sql_query(
        "SELECT (SELECT reltuples FROM pg_class WHERE oid = 'projects'::regclass)::float8 AS projects, \
                (SELECT reltuples FROM pg_class \
                 WHERE oid = 'container_registry_data_repair_details'::regclass)::float8 AS tracked",
    )
    .get_result(conn)
    .await
    .map_err(DbError::query("reading the table statistics"))?;
    let left = (estimate.projects.max(0.0) - estimate.tracked.max(0.0)).max(0.0)
        / f64::from(shard.count());
    Ok(left as u64)
}
