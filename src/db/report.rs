//! What the `report` command reads: totals of the tracking table and of the recorded missing
//! repositories ([`missing`](super::missing)), the projects and top-level namespaces missing most
//! (by count and by bytes), the missing repositories by the month the registry created them, how
//! many each project misses, and the repositories themselves.
//!
//! A recorded repository counts while it is still missing: its project's tracking row is
//! `completed`, and no `container_repositories` row of that project has its name (a row restored
//! by `repair apply`, or created by GitLab itself since, ends the loss).

use chrono::{DateTime, Utc};
use diesel::dsl::count_star;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Integer, Nullable, SmallInt, Text, Timestamptz};
use diesel_async::RunQueryDsl;
use serde::Serialize;

use super::dsl::{coalesce, date_trunc};
use super::missing::STILL_MISSING;
use super::schema::{
    container_registry_data_repair_details as tracking, registry_repair_failures as failures,
    routes,
};
use super::tracking::TrackingStatus;
use super::{Database, DbError};
use crate::registry::grammar::{MAX_PATH_BYTES, PATH_REGEX_SQL};

/// Per project, as the CTE `e` (after `m`): its repositories still missing, their known bytes,
/// and how many have no known size.
const PER_PROJECT: &str = "e AS (\
     SELECT project_id, count(*) AS itemised, COALESCE(sum(size_bytes), 0)::bigint AS bytes, \
            count(*) FILTER (WHERE size_bytes IS NULL) AS unknown \
     FROM m GROUP BY project_id)";

/// Whether GitLab shows the project whose id is the SQL expression `$project` as using no
/// registry storage: its usage quota reads 0 for a project without a single
/// `container_repositories` row.
macro_rules! shown_empty {
    ($project:literal) => {
        concat!(
            "NOT EXISTS (SELECT 1 FROM container_repositories c WHERE c.project_id = ",
            $project,
            ")"
        )
    };
}

/// The figures an operator asks for first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, diesel::QueryableByName)]
pub struct Totals {
    #[diesel(sql_type = BigInt)]
    pub projects: i64,
    #[diesel(sql_type = BigInt)]
    pub analysed: i64,
    #[diesel(sql_type = BigInt)]
    pub completed: i64,
    #[diesel(sql_type = BigInt)]
    pub failed: i64,
    #[diesel(sql_type = BigInt)]
    pub pending: i64,
    #[diesel(sql_type = BigInt)]
    pub projects_with_missing: i64,
    #[diesel(sql_type = BigInt)]
    pub missing: i64,
    /// Completed projects whose path breaks the registry's name grammar (recorded with 0).
    #[diesel(sql_type = BigInt)]
    pub unaddressable: i64,
    /// Recorded repositories still missing.
    #[diesel(sql_type = BigInt)]
    pub missing_itemised: i64,
    /// The sum of their known sizes, each repository deduplicated on its own.
    #[diesel(sql_type = BigInt)]
    pub missing_bytes: i64,
    /// Recorded repositories still missing whose size is not known.
    #[diesel(sql_type = BigInt)]
    pub missing_sizes_unknown: i64,
    /// Completed projects with `missing_count > 0` and no recorded repository.
    #[diesel(sql_type = BigInt)]
    pub projects_not_itemised: i64,
    /// Completed projects with `missing_count > 0` and no `container_repositories` row at all.
    #[diesel(sql_type = BigInt)]
    pub projects_shown_empty_by_gitlab: i64,
    /// The known bytes missing in those projects.
    #[diesel(sql_type = BigInt)]
    pub bytes_shown_empty_by_gitlab: i64,
}

pub async fn totals(db: &Database) -> Result<Totals, DbError> {
    let mut conn = db.conn().await?;
    // Raw: CTEs (the still-missing repositories, per project, and five totals) in one row.
    diesel::sql_query(format!(
        "WITH {STILL_MISSING}, {PER_PROJECT}, \
              p AS (SELECT count(*) AS n FROM projects), \
              t AS (SELECT count(*) AS analysed, \
                           count(*) FILTER (WHERE status = 1) AS completed, \
                           count(*) FILTER (WHERE status = 2) AS failed, \
                           count(*) FILTER (WHERE status = 1 AND missing_count > 0) AS with_missing, \
                           COALESCE(sum(missing_count) FILTER (WHERE status = 1), 0)::bigint AS missing \
                    FROM container_registry_data_repair_details), \
              u AS (SELECT count(*) AS unaddressable \
                    FROM container_registry_data_repair_details t \
                    JOIN routes r ON r.source_type = 'Project' AND r.source_id = t.project_id \
                    WHERE t.status = 1 \
                      AND NOT (lower(r.path) ~ '{regex}' AND octet_length(lower(r.path)) <= {max})), \
              d AS (SELECT COALESCE(sum(itemised), 0)::bigint AS itemised, \
                           COALESCE(sum(bytes), 0)::bigint AS bytes, \
                           COALESCE(sum(unknown), 0)::bigint AS unknown FROM e), \
              w AS (SELECT count(*) FILTER (WHERE NOT EXISTS ( \
                               SELECT 1 FROM registry_repair_missing_repositories r \
                               WHERE r.project_id = t.project_id)) AS not_itemised, \
                           count(*) FILTER (WHERE {empty}) AS shown_empty, \
                           COALESCE(sum(e.bytes) FILTER (WHERE {empty}), 0)::bigint AS shown_empty_bytes \
                    FROM container_registry_data_repair_details t \
                    LEFT JOIN e ON e.project_id = t.project_id \
                    WHERE t.status = 1 AND t.missing_count > 0) \
         SELECT p.n AS projects, t.analysed, t.completed, t.failed, \
                GREATEST(p.n - t.analysed, 0) AS pending, \
                t.with_missing AS projects_with_missing, t.missing, u.unaddressable, \
                d.itemised AS missing_itemised, d.bytes AS missing_bytes, \
                d.unknown AS missing_sizes_unknown, w.not_itemised AS projects_not_itemised, \
                w.shown_empty AS projects_shown_empty_by_gitlab, \
                w.shown_empty_bytes AS bytes_shown_empty_by_gitlab \
         FROM p, t, u, d, w",
        regex = PATH_REGEX_SQL,
        max = MAX_PATH_BYTES,
        empty = shown_empty!("t.project_id"),
    ))
    .get_result(&mut conn)
    .await
    .map_err(DbError::query("reading the report's totals"))
}

/// How a list of projects or namespaces is ordered: by missing repositories, or by missing bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ranking {
    Missing,
    Bytes,
}

/// A project with missing repositories, for the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, diesel::QueryableByName)]
pub struct MissingProject {
    #[diesel(sql_type = BigInt)]
    pub project_id: i64,
    #[diesel(sql_type = Nullable<Text>)]
    pub full_path: Option<String>,
    #[diesel(sql_type = Integer)]
    pub missing_count: i32,
    /// Its recorded repositories still missing (0: not itemised).
    #[diesel(sql_type = BigInt)]
    pub missing_itemised: i64,
    #[diesel(sql_type = BigInt)]
    pub missing_bytes: i64,
    #[diesel(sql_type = BigInt)]
    pub missing_sizes_unknown: i64,
    /// No `container_repositories` row at all: GitLab's usage quota reads 0 for it.
    #[diesel(sql_type = Bool)]
    pub shown_empty_by_gitlab: bool,
}

/// The `limit` completed projects with at least `min_missing` (>= 1) missing repositories, most
/// missing repositories first, or most missing bytes first (those with known bytes only).
pub async fn top_projects(
    db: &Database,
    ranking: Ranking,
    limit: i64,
    min_missing: i32,
) -> Result<Vec<MissingProject>, DbError> {
    let (order, only) = match ranking {
        Ranking::Missing => ("missing_count DESC, project_id", ""),
        Ranking::Bytes => (
            "bytes DESC, missing_count DESC, project_id",
            "AND e.bytes > 0",
        ),
    };
    let mut conn = db.conn().await?;
    // Raw: CTEs; the few projects listed are chosen first and only they are looked up further.
    diesel::sql_query(format!(
        "WITH {STILL_MISSING}, {PER_PROJECT}, \
              top AS (SELECT t.project_id, t.missing_count, COALESCE(e.itemised, 0) AS itemised, \
                             COALESCE(e.bytes, 0) AS bytes, COALESCE(e.unknown, 0) AS unknown \
                      FROM container_registry_data_repair_details t \
                      LEFT JOIN e ON e.project_id = t.project_id \
                      WHERE t.status = 1 AND t.missing_count >= $2 {only} \
                      ORDER BY {order} LIMIT $1) \
         SELECT top.project_id, r.path AS full_path, top.missing_count, \
                top.itemised AS missing_itemised, top.bytes AS missing_bytes, \
                top.unknown AS missing_sizes_unknown, {empty} AS shown_empty_by_gitlab \
         FROM top \
         LEFT JOIN routes r ON r.source_type = 'Project' AND r.source_id = top.project_id \
         ORDER BY {order}",
        empty = shown_empty!("top.project_id"),
    ))
    .bind::<BigInt, _>(limit)
    .bind::<Integer, _>(min_missing.max(1))
    .load(&mut conn)
    .await
    .map_err(DbError::query(match ranking {
        Ranking::Missing => "reading the projects with the most missing repositories",
        Ranking::Bytes => "reading the projects with the most missing bytes",
    }))
}

/// Totals of one top-level namespace (the first segment of the projects' full paths).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, diesel::QueryableByName)]
pub struct NamespaceTotals {
    #[diesel(sql_type = Text)]
    pub namespace: String,
    #[diesel(sql_type = BigInt)]
    pub analysed: i64,
    #[diesel(sql_type = BigInt)]
    pub completed: i64,
    #[diesel(sql_type = BigInt)]
    pub failed: i64,
    #[diesel(sql_type = BigInt)]
    pub projects_with_missing: i64,
    #[diesel(sql_type = BigInt)]
    pub missing: i64,
    #[diesel(sql_type = BigInt)]
    pub missing_bytes: i64,
    #[diesel(sql_type = BigInt)]
    pub missing_sizes_unknown: i64,
}

/// The `limit` top-level namespaces missing most, by `ranking`: only those with missing
/// repositories (by count), or with known missing bytes (by bytes), as the projects' rankings.
/// Projects without a route count under `(no route)`.
pub async fn namespaces(
    db: &Database,
    ranking: Ranking,
    limit: i64,
) -> Result<Vec<NamespaceTotals>, DbError> {
    let (order, only) = match ranking {
        Ranking::Missing => ("missing DESC, namespace", "missing > 0"),
        Ranking::Bytes => (
            "missing_bytes DESC, missing DESC, namespace",
            "missing_bytes > 0",
        ),
    };
    let mut conn = db.conn().await?;
    // Raw: CTEs over the still-missing repositories, grouped by a path segment.
    diesel::sql_query(format!(
        "WITH {STILL_MISSING}, {PER_PROJECT} \
         SELECT * FROM ( \
             SELECT COALESCE(split_part(r.path, '/', 1), '(no route)') AS namespace, \
                    count(*) AS analysed, \
                    count(*) FILTER (WHERE t.status = 1) AS completed, \
                    count(*) FILTER (WHERE t.status = 2) AS failed, \
                    count(*) FILTER (WHERE t.status = 1 AND t.missing_count > 0) AS projects_with_missing, \
                    COALESCE(sum(t.missing_count) FILTER (WHERE t.status = 1), 0)::bigint AS missing, \
                    COALESCE(sum(e.bytes), 0)::bigint AS missing_bytes, \
                    COALESCE(sum(e.unknown), 0)::bigint AS missing_sizes_unknown \
             FROM container_registry_data_repair_details t \
             LEFT JOIN routes r ON r.source_type = 'Project' AND r.source_id = t.project_id \
             LEFT JOIN e ON e.project_id = t.project_id \
             GROUP BY 1) n \
         WHERE {only} \
         ORDER BY {order} \
         LIMIT $1"
    ))
    .bind::<BigInt, _>(limit)
    .load(&mut conn)
    .await
    .map_err(DbError::query(
        "totalling the tracking table by top-level namespace",
    ))
}

/// The missing repositories the registry created in one month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, diesel::QueryableByName)]
pub struct MonthTotals {
    /// `YYYY-MM` (UTC), or `unknown` where the registry gave no creation time.
    #[diesel(sql_type = Text)]
    pub month: String,
    #[diesel(sql_type = BigInt)]
    pub missing: i64,
    #[diesel(sql_type = BigInt)]
    pub missing_bytes: i64,
    #[diesel(sql_type = BigInt)]
    pub missing_sizes_unknown: i64,
}

/// The word for repositories without a creation time in [`by_month`].
pub const UNKNOWN_MONTH: &str = "unknown";

/// The recorded repositories still missing by the month the registry created them, oldest first,
/// [`UNKNOWN_MONTH`] last. Months without any are left out.
pub async fn by_month(db: &Database) -> Result<Vec<MonthTotals>, DbError> {
    let mut conn = db.conn().await?;
    // Raw: a CTE over the still-missing repositories, grouped by a to_char of their month.
    diesel::sql_query(format!(
        "WITH {STILL_MISSING} \
         SELECT * FROM ( \
             SELECT COALESCE(to_char(registry_created_at AT TIME ZONE 'UTC', 'YYYY-MM'), \
                             '{UNKNOWN_MONTH}') AS month, \
                    count(*) AS missing, COALESCE(sum(size_bytes), 0)::bigint AS missing_bytes, \
                    count(*) FILTER (WHERE size_bytes IS NULL) AS missing_sizes_unknown \
             FROM m GROUP BY 1) b \
         ORDER BY b.month = '{UNKNOWN_MONTH}', b.month"
    ))
    .load(&mut conn)
    .await
    .map_err(DbError::query(
        "totalling the missing repositories by month created",
    ))
}

/// The projects whose missing repositories number within one bucket of [`BUCKETS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bucket {
    /// `1`, `2-5`, ..., `>1000`.
    pub bucket: &'static str,
    /// Completed projects missing that many.
    pub projects: i64,
    /// Their missing repositories in all.
    pub missing: i64,
}

/// The buckets of [`distribution`]: the least each holds, and its label (each holds up to the
/// next one's least).
pub const BUCKETS: [(i32, &str); 6] = [
    (1, "1"),
    (2, "2-5"),
    (6, "6-20"),
    (21, "21-100"),
    (101, "101-1000"),
    (1001, ">1000"),
];

/// How many completed projects miss 1, 2 to 5, ... repositories: every bucket of [`BUCKETS`], in
/// order, empty ones too.
pub async fn distribution(db: &Database) -> Result<Vec<Bucket>, DbError> {
    let mut conn = db.conn().await?;
    // How many projects miss each count; the buckets are summed here.
    let counts: Vec<(Option<i32>, i64)> = tracking::table
        .filter(tracking::status.eq(TrackingStatus::Completed as i16))
        .filter(tracking::missing_count.gt(0))
        .group_by(tracking::missing_count)
        .select((tracking::missing_count, count_star()))
        .load(&mut conn)
        .await
        .map_err(DbError::query(
            "counting the projects by how many repositories they miss",
        ))?;
    let mut buckets: Vec<Bucket> = BUCKETS
        .iter()
        .map(|(_, label)| Bucket {
            bucket: label,
            projects: 0,
            missing: 0,
        })
        .collect();
    for (missing, projects) in counts {
        let missing = missing.unwrap_or(0);
        // Bucket i holds missing_count >= BUCKETS[i].0: the last such bucket.
        if let Some(bucket) = BUCKETS
            .iter()
            .rposition(|(least, _)| missing >= *least)
            .and_then(|i| buckets.get_mut(i))
        {
            bucket.projects += projects;
            bucket.missing += i64::from(missing) * projects;
        }
    }
    Ok(buckets)
}

/// A project recorded `failed`, and why where it was recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, diesel::Queryable)]
pub struct FailedProject {
    pub project_id: i64,
    /// The project's route, mixed case; `None` for a project without one.
    pub full_path: Option<String>,
    /// The recorded cause's word ([`FailureCause`](super::failures::FailureCause)); `None`: not
    /// recorded (GitLab's own worker's row, or an earlier release's).
    pub cause: Option<String>,
    /// The message recorded when it failed.
    pub reason: Option<String>,
    /// When it failed (the recorded failure's time, else the tracking row's `updated_at`), to
    /// the second.
    pub failed_at: DateTime<Utc>,
}

/// The failed projects' tracking rows with their recorded failures (if any).
#[diesel::dsl::auto_type]
fn failed() -> _ {
    let failed: i16 = TrackingStatus::Failed as i16;
    tracking::table
        .left_join(failures::table.on(failures::project_id.eq(tracking::project_id)))
        .filter(tracking::status.eq(failed))
}

/// The `limit` projects failed most recently (ties by id), with why where it was recorded.
pub async fn failed_projects(db: &Database, limit: i64) -> Result<Vec<FailedProject>, DbError> {
    let mut conn = db.conn().await?;
    let failed_at = date_trunc(
        "second",
        coalesce(failures::failed_at.nullable(), tracking::updated_at),
    );
    failed()
        .left_join(
            routes::table.on(routes::source_type
                .eq("Project")
                .and(routes::source_id.eq(tracking::project_id))),
        )
        .select((
            tracking::project_id,
            routes::path.nullable(),
            failures::cause.nullable(),
            failures::reason.nullable(),
            failed_at,
        ))
        .order((failed_at.desc(), tracking::project_id))
        .limit(limit)
        .load(&mut conn)
        .await
        .map_err(DbError::query("reading the failed projects"))
}

/// How many failed projects have one recorded cause.
#[derive(Debug, Clone, PartialEq, Eq, diesel::Queryable)]
pub struct CauseCount {
    /// `None`: their cause was not recorded.
    pub cause: Option<String>,
    pub projects: i64,
}

/// Every failed project counted by its recorded cause: most projects first, then by cause, those
/// without one last.
pub async fn failed_by_cause(db: &Database) -> Result<Vec<CauseCount>, DbError> {
    let mut conn = db.conn().await?;
    failed()
        .group_by(failures::cause)
        .select((failures::cause.nullable(), count_star()))
        .order((
            failures::cause.is_null(),
            count_star().desc(),
            failures::cause,
        ))
        .load(&mut conn)
        .await
        .map_err(DbError::query("counting the failed projects by cause"))
}

/// One recorded repository still missing, with its project's path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, diesel::QueryableByName)]
pub struct ListedRepository {
    #[diesel(sql_type = BigInt)]
    pub project_id: i64,
    /// The project's route, mixed case; `None` for a project without one.
    #[diesel(sql_type = Nullable<Text>)]
    pub full_path: Option<String>,
    #[diesel(sql_type = Text)]
    pub registry_path: String,
    #[diesel(sql_type = Text)]
    pub name: String,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub registry_created_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub size_bytes: Option<i64>,
    /// How many repositories the filter matched in all (the same on every row).
    #[serde(skip)]
    #[diesel(sql_type = BigInt)]
    pub matched: i64,
}

/// Which recorded repositories `report --repositories` lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepositoryFilter {
    /// Only these projects; empty: every project.
    pub projects: Vec<i64>,
    /// Only projects in this group or user namespace or below it (case-insensitive).
    pub namespace: Option<String>,
    /// At most this many; `None`: all.
    pub limit: Option<i64>,
}

impl RepositoryFilter {
    /// `lower(routes.path) LIKE` pattern for the namespace: its path and `/`, with LIKE's
    /// wildcards escaped (`_` is common in paths).
    fn namespace_pattern(&self) -> Option<String> {
        self.namespace.as_deref().map(|ns| {
            let mut escaped = String::with_capacity(ns.len() + 2);
            for c in ns.trim_matches('/').to_lowercase().chars() {
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

/// The recorded repositories still missing that `filter` matches, in registry path order (which
/// groups them by project), and how many it matched in all.
pub async fn repositories(
    db: &Database,
    filter: &RepositoryFilter,
) -> Result<Vec<ListedRepository>, DbError> {
    let mut conn = db.conn().await?;
    // Raw: a CTE over the still-missing repositories, a window count and a COLLATE "C" order.
    diesel::sql_query(format!(
        "WITH {STILL_MISSING} \
         SELECT m.project_id, r.path AS full_path, m.registry_path, m.name, \
                m.registry_created_at, m.size_bytes, count(*) OVER () AS matched \
         FROM m \
         LEFT JOIN routes r ON r.source_type = 'Project' AND r.source_id = m.project_id \
         WHERE (cardinality($1::bigint[]) = 0 OR m.project_id = ANY($1::bigint[])) \
           AND ($2::text IS NULL OR lower(r.path) LIKE $2::text ESCAPE '\\') \
         ORDER BY m.registry_path COLLATE \"C\", m.project_id \
         LIMIT $3"
    ))
    .bind::<Array<BigInt>, _>(&filter.projects)
    .bind::<Nullable<Text>, _>(filter.namespace_pattern())
    .bind::<Nullable<BigInt>, _>(filter.limit)
    .load(&mut conn)
    .await
    .map_err(DbError::query("listing the missing repositories"))
}

/// What the database says about a project asked for by id (`report --repositories --project`).
#[derive(Debug, Clone, PartialEq, Eq, diesel::QueryableByName)]
pub struct ProjectState {
    #[diesel(sql_type = BigInt)]
    pub project_id: i64,
    /// A row in `projects`.
    #[diesel(sql_type = Bool)]
    pub exists: bool,
    /// The tracking row's `status`, if it has one.
    #[diesel(sql_type = Nullable<SmallInt>)]
    pub status: Option<i16>,
    #[diesel(sql_type = Nullable<Integer>)]
    pub missing_count: Option<i32>,
    /// Its recorded repositories, still missing or not.
    #[diesel(sql_type = BigInt)]
    pub recorded: i64,
    /// A `failed` row's recorded cause's word, if one was recorded.
    #[diesel(sql_type = Nullable<Text>)]
    pub cause: Option<String>,
    /// And its recorded reason.
    #[diesel(sql_type = Nullable<Text>)]
    pub reason: Option<String>,
}

/// The state of each project of `ids`, in the order given.
pub async fn project_states(db: &Database, ids: &[i64]) -> Result<Vec<ProjectState>, DbError> {
    let mut conn = db.conn().await?;
    // Raw: UNNEST ... WITH ORDINALITY keeps the order the ids were given in.
    diesel::sql_query(
        "SELECT q.id AS project_id, EXISTS (SELECT 1 FROM projects p WHERE p.id = q.id) AS exists, \
                t.status, t.missing_count, \
                (SELECT count(*) FROM registry_repair_missing_repositories r \
                 WHERE r.project_id = q.id) AS recorded, \
                x.cause, x.reason \
         FROM UNNEST($1::bigint[]) WITH ORDINALITY AS q(id, n) \
         LEFT JOIN container_registry_data_repair_details t ON t.project_id = q.id \
         LEFT JOIN registry_repair_failures x ON x.project_id = q.id AND t.status = 2 \
         ORDER BY q.n",
    )
    .bind::<Array<BigInt>, _>(ids)
    .load(&mut conn)
    .await
    .map_err(DbError::query(format!("looking up the projects {ids:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_pattern_is_a_lowercase_prefix_with_like_wildcards_escaped() {
        let filter = RepositoryFilter {
            namespace: Some("/My_Group%/Sub/".into()),
            ..RepositoryFilter::default()
        };
        assert_eq!(
            filter.namespace_pattern().as_deref(),
            Some("my\\_group\\%/sub/%")
        );
        assert_eq!(RepositoryFilter::default().namespace_pattern(), None);
    }

    #[test]
    fn buckets_grow() {
        assert_eq!(BUCKETS[0].0, 1);
        assert!(BUCKETS.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
