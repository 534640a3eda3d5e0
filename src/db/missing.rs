//! The service's own record of the repositories the analysis found missing
//! (`registry_repair_missing_repositories`): written with each project's tracking row, in the
//! same transaction, and replaced with it; read back by the report and the live page.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Nullable, Text, Timestamptz};
use diesel_async::RunQueryDsl;
use serde::Serialize;

use super::schema::registry_repair_missing_repositories as missing;
use super::{Database, DbConn, DbError};

/// One repository the registry holds under a project's path, with no `container_repositories`
/// row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MissingRepository {
    /// The registry's path, as it lists it.
    pub registry_path: String,
    /// The `container_repositories.name` it would have (`''` for the project's root repository).
    pub name: String,
    /// When the registry created it, where it says.
    pub registry_created_at: Option<DateTime<Utc>>,
    /// Its deduplicated size alone (`size=self`); `None`: not asked or not answered.
    pub size_bytes: Option<i64>,
}

/// The missing repositories of a batch of tracking rows, as the columns one statement binds.
#[derive(Debug, Default)]
pub(super) struct Columns {
    project_ids: Vec<i64>,
    paths: Vec<String>,
    names: Vec<String>,
    created: Vec<Option<DateTime<Utc>>>,
    sizes: Vec<Option<i64>>,
}

impl Columns {
    pub(super) fn push(&mut self, project_id: i64, repository: &MissingRepository) {
        self.project_ids.push(project_id);
        self.paths.push(repository.registry_path.clone());
        self.names.push(repository.name.clone());
        self.created.push(repository.registry_created_at);
        self.sizes.push(repository.size_bytes);
    }
}

/// Replaces the recorded repositories of `written` (the projects whose tracking rows this
/// transaction wrote) with theirs in `columns`; the entries of other projects in `columns` are
/// not written. Runs on the caller's transaction: the entries change with their tracking rows or
/// not at all.
pub(super) async fn replace(
    conn: &mut DbConn,
    written: &[i64],
    columns: Columns,
) -> Result<(), DbError> {
    if written.is_empty() {
        return Ok(());
    }
    diesel::delete(missing::table.filter(missing::project_id.eq_any(written)))
        .execute(conn)
        .await
        .map_err(DbError::query(format!(
            "replacing the missing repositories of {} projects",
            written.len()
        )))?;
    if columns.project_ids.is_empty() {
        return Ok(());
    }
    let count = columns.project_ids.len();
    // Raw: rows from UNNEST of bound arrays, which diesel's insert cannot take.
    // ON CONFLICT: a registry that listed one path twice across pages stores it once.
    diesel::sql_query(
        "INSERT INTO registry_repair_missing_repositories \
             (project_id, registry_path, name, registry_created_at, size_bytes) \
         SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::timestamptz[], $5::bigint[]) \
                AS u(project_id, registry_path, name, registry_created_at, size_bytes) \
         WHERE u.project_id = ANY($6::bigint[]) \
         ON CONFLICT (project_id, registry_path) DO NOTHING",
    )
    .bind::<Array<BigInt>, _>(columns.project_ids)
    .bind::<Array<Text>, _>(columns.paths)
    .bind::<Array<Text>, _>(columns.names)
    .bind::<Array<Nullable<Timestamptz>>, _>(columns.created)
    .bind::<Array<Nullable<BigInt>>, _>(columns.sizes)
    .bind::<Array<BigInt>, _>(written)
    .execute(conn)
    .await
    .map_err(DbError::query(format!(
        "recording up to {count} missing repositories"
    )))?;
    Ok(())
}

/// The recorded repositories still missing, as the CTE `m`: their project's tracking row is
/// `completed`, and no `container_repositories` row of that project has their name (a row
/// restored by `repair apply`, or created by GitLab itself since, ends the loss).
pub(super) const STILL_MISSING: &str = "m AS (\
     SELECT r.project_id, r.registry_path, r.name, r.registry_created_at, r.size_bytes \
     FROM registry_repair_missing_repositories r \
     JOIN container_registry_data_repair_details t ON t.project_id = r.project_id AND t.status = 1 \
     WHERE NOT EXISTS (SELECT 1 FROM container_repositories c \
                       WHERE c.project_id = r.project_id AND c.name = r.name))";

/// The damage recorded so far, by every instance, and still missing: what the live page shows.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize, diesel::QueryableByName,
)]
pub struct Damage {
    /// Projects with at least one recorded missing repository.
    #[diesel(sql_type = BigInt)]
    pub projects: i64,
    #[diesel(sql_type = BigInt)]
    pub repositories: i64,
    /// The sum of the known sizes (each repository deduplicated on its own).
    #[diesel(sql_type = BigInt)]
    pub bytes: i64,
    /// Repositories whose size is not known.
    #[diesel(sql_type = BigInt)]
    pub unknown_sizes: i64,
}

pub async fn damage(db: &Database) -> Result<Damage, DbError> {
    let mut conn = db.conn().await?;
    // Raw: the CTE the report shares (`STILL_MISSING`), which diesel cannot say.
    diesel::sql_query(format!(
        "WITH {STILL_MISSING} \
         SELECT count(DISTINCT project_id) AS projects, count(*) AS repositories, \
                COALESCE(sum(size_bytes), 0)::bigint AS bytes, \
                count(*) FILTER (WHERE size_bytes IS NULL) AS unknown_sizes \
         FROM m"
    ))
    .get_result(&mut conn)
    .await
    .map_err(DbError::query(
        "totalling the recorded missing repositories",
    ))
}

/// A recorded repository as [`all`] reads it.
#[derive(Queryable, Selectable)]
#[diesel(table_name = missing, check_for_backend(diesel::pg::Pg))]
struct Row {
    project_id: i64,
    registry_path: String,
    name: String,
    registry_created_at: Option<DateTime<Utc>>,
    size_bytes: Option<i64>,
}

/// Every recorded repository as `(project_id, repository)`, in project and path order. For the
/// demo and the tests: it reads the whole table.
pub async fn all(db: &Database) -> Result<Vec<(i64, MissingRepository)>, DbError> {
    let mut conn = db.conn().await?;
    let rows: Vec<Row> = missing::table
        .order((missing::project_id, missing::registry_path))
        .select(Row::as_select())
        .load(&mut conn)
        .await
        .map_err(DbError::query("reading the recorded missing repositories"))?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.project_id,
                MissingRepository {
                    registry_path: r.registry_path,
                    name: r.name,
                    registry_created_at: r.registry_created_at,
                    size_bytes: r.size_bytes,
                },
            )
        })
        .collect())
}
