//! What the guards need besides the registry, read in bulk per batch: the projects' facts,
//! whether GitLab's unique index can be trusted, and the paths other projects claim.

use std::collections::{HashMap, HashSet};

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Integer, Nullable, Text, Timestamp};
use diesel_async::RunQueryDsl;
use serde::Serialize;

use super::Candidate;
use crate::db::dsl::lower;
use crate::db::schema::routes;
use crate::db::{Database, DbConn, DbError};
use crate::repair::guards::ProjectFacts;

/// The unique index GitLab's upsert (and ours) relies on.
pub const UNIQUE_INDEX: &str = "index_container_repositories_on_project_id_and_name";

/// One project's guard facts as [`FACTS_COLUMNS`] reads them.
#[derive(diesel::QueryableByName)]
pub(super) struct FactsRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Nullable<Timestamp>)]
    created_at: Option<NaiveDateTime>,
    #[diesel(sql_type = Nullable<Timestamp>)]
    route_updated_at: Option<NaiveDateTime>,
    #[diesel(sql_type = Bool)]
    pending_delete: bool,
    #[diesel(sql_type = Bool)]
    marked_for_deletion: bool,
    #[diesel(sql_type = Nullable<Integer>)]
    registry_access_level: Option<i32>,
    #[diesel(sql_type = Bool)]
    duplicate_rows: bool,
    #[diesel(sql_type = Bool)]
    cleanup_policy: bool,
}

/// The guards' facts of project `p`: one definition for the bulk read and the write-time check
/// (which locks the route row itself and takes its `updated_at` from there).
pub(super) const FACTS_COLUMNS: &str = "p.id, p.created_at, \
        (SELECT r.updated_at FROM routes r \
         WHERE r.source_type = 'Project' AND r.source_id = p.id) AS route_updated_at, \
        COALESCE(p.pending_delete, false) AS pending_delete, \
        p.marked_for_deletion_at IS NOT NULL AS marked_for_deletion, \
        (SELECT f.container_registry_access_level FROM project_features f \
         WHERE f.project_id = p.id LIMIT 1) AS registry_access_level, \
        EXISTS (SELECT 1 FROM container_repositories c WHERE c.project_id = p.id \
                GROUP BY c.name HAVING count(*) > 1) AS duplicate_rows, \
        EXISTS (SELECT 1 FROM container_expiration_policies e \
                WHERE e.project_id = p.id AND e.enabled) AS cleanup_policy";

impl FactsRow {
    pub(super) fn into_facts(self, full_path: String) -> ProjectFacts {
        ProjectFacts {
            id: self.id,
            full_path,
            created_at: self.created_at,
            route_updated_at: self.route_updated_at,
            pending_delete: self.pending_delete,
            marked_for_deletion: self.marked_for_deletion,
            registry_access_level: self.registry_access_level,
            duplicate_rows: self.duplicate_rows,
            cleanup_policy: self.cleanup_policy,
        }
    }
}

/// The guards' facts for a batch of candidates, in one statement: creation and route times,
/// deletion columns, `project_features`, duplicate `(project_id, name)` rows, the cleanup policy.
/// A project deleted meanwhile is absent from the map.
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
    // Raw: FACTS_COLUMNS is also the write's, whose lock (FOR SHARE OF p) the builder cannot say.
    let rows: Vec<FactsRow> = diesel::sql_query(format!(
        "SELECT {FACTS_COLUMNS} FROM projects p WHERE p.id = ANY($1)"
    ))
    .bind::<Array<BigInt>, _>(&ids)
    .load(&mut conn)
    .await
    .map_err(DbError::query(format!(
        "reading the guards' facts (dates, deletion, registry setting, duplicates, cleanup policy) of {} projects",
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

pub(super) async fn index_health_on(conn: &mut DbConn) -> Result<IndexHealth, DbError> {
    // Raw: PostgreSQL's catalog pg_index, found through to_regclass, is no table of the schema.
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

/// Which of `paths` (lowercased registry paths, see [`crate::repair::guards::claim_lookups`]) are
/// the lowercased route of a project other than `project_id`, as GitLab's `where_full_path_in`
/// matches them: through the index on `lower(routes.path)`.
pub async fn claimed_paths(
    db: &Database,
    project_id: i64,
    paths: &[String],
) -> Result<HashSet<String>, DbError> {
    if paths.is_empty() {
        return Ok(HashSet::new());
    }
    let mut conn = db.conn().await?;
    let claimed: Vec<String> = routes::table
        .filter(routes::source_type.eq("Project"))
        .filter(lower(routes::path).eq_any(paths))
        .filter(routes::source_id.ne(project_id))
        .select(lower(routes::path))
        .distinct()
        .load(&mut conn)
        .await
        .map_err(DbError::query(format!(
            "looking up other projects under the path of project {project_id}"
        )))?;
    Ok(claimed.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

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
