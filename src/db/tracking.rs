//! The tracking table `container_registry_data_repair_details`: the service's only writes to it,
//! and every row read back (for the demo and the tests). The report's figures are
//! [`report`](super::report)'s.

use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Integer, SmallInt};
use diesel_async::RunQueryDsl;
use serde::Serialize;

use super::failures::{self, Failure, FailureCause};
use super::missing::{self, MissingRepository};
use super::schema::{
    container_registry_data_repair_details as tracking, registry_repair_failures as failed,
};
use super::{Database, DbError};

/// GitLab's enum for the `status` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TrackingStatus {
    Ongoing = 0,
    Completed = 1,
    Failed = 2,
}

/// After this long an `ongoing` row is no answer: GitLab's own worker left it when it crashed
/// mid-project, and GitLab's `ContainerRegistry::CleanupWorker` deletes it so that the project is
/// analysed again.
pub const STALE_ONGOING: &str = stale_ongoing!();
macro_rules! stale_ongoing {
    () => {
        "2 hours"
    };
}
use stale_ongoing;

/// A tracking row that is no answer for its project: `ongoing` and not updated for
/// [`STALE_ONGOING`]. One definition for the walk, the sweep, the watermark and the writes.
pub const STALE_ONGOING_SQL: &str = concat!(
    "(container_registry_data_repair_details.status = 0 \
      AND container_registry_data_repair_details.updated_at < now() - interval '",
    stale_ongoing!(),
    "')"
);

/// Which row already there a result replaces. Any other row an answer is already there for stays
/// as it is (GitLab's, or another instance's); a stale `ongoing` row (no answer) is always
/// replaced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Replaces {
    #[default]
    Nothing,
    /// A row still `failed`: the project analysed again (`run --retry-failed`).
    Failed,
    /// A `completed` row with missing repositories none of which is recorded (a release before
    /// they were kept counted it), while it still has none: the project analysed again to
    /// itemise them. Only by a `completed` result: a project failing now keeps its count.
    Uncounted,
}

/// One project's result, as the Writer stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackingRow {
    pub project_id: i64,
    pub missing_count: i32,
    pub status: TrackingStatus,
    /// Which row already there it replaces.
    pub replaces: Replaces,
    /// The repositories counted in `missing_count`, recorded with the row
    /// ([`missing`](super::missing)); none for a `failed` row.
    pub repositories: Vec<MissingRepository>,
    /// Why a `failed` row failed, recorded with it ([`failures`](super::failures)); `None` for
    /// a `completed` row, and for a `failed` one whose reason was not recorded (read back from
    /// GitLab's own worker's or an earlier release's).
    pub failure: Option<Failure>,
}

impl TrackingRow {
    pub fn completed(project_id: i64, missing_count: i32) -> Self {
        Self {
            project_id,
            missing_count,
            status: TrackingStatus::Completed,
            replaces: Replaces::Nothing,
            repositories: Vec::new(),
            failure: None,
        }
    }

    /// A completed row with the repositories it counts.
    pub fn completed_with(project_id: i64, repositories: Vec<MissingRepository>) -> Self {
        Self {
            repositories,
            ..Self::completed(project_id, 0)
        }
        .counted()
    }

    fn counted(self) -> Self {
        Self {
            missing_count: i32::try_from(self.repositories.len()).unwrap_or(i32::MAX),
            ..self
        }
    }

    /// A failed row, and why it failed. GitLab's model reads `missing_count` 0 for a failed
    /// project.
    pub fn failed(project_id: i64, failure: Failure) -> Self {
        Self {
            project_id,
            missing_count: 0,
            status: TrackingStatus::Failed,
            replaces: Replaces::Nothing,
            repositories: Vec::new(),
            failure: Some(failure),
        }
    }

    /// The same result, replacing the row already there that `replaces` says.
    pub fn replacing(self, replaces: Replaces) -> Self {
        Self { replaces, ..self }
    }
}

/// Writes `rows` and their missing repositories in one transaction, whatever their number:
/// whole columns are bound as arrays, so the 65,535 bind-parameter limit never applies. Rows of
/// projects deleted meanwhile are skipped rather than failing the batch on the foreign key.
///
/// A row already there is GitLab's answer (or another instance's) and stays as it is, with two
/// exceptions: a stale `ongoing` row (no answer; see [`STALE_ONGOING`]) is overwritten, and a
/// row is overwritten as [`TrackingRow::replaces`] says.
/// The recorded repositories and failure of every row written are replaced by the row's own (a
/// `completed` row has no failure left); those of a row left as it is stay as they are. Returns
/// the rows inserted or updated.
pub async fn upsert(db: &Database, rows: &[TrackingRow]) -> Result<usize, DbError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let mut columns = missing::Columns::default();
    let mut failed = failures::Columns::default();
    for row in rows {
        for repository in &row.repositories {
            columns.push(row.project_id, repository);
        }
        if let Some(failure) = &row.failure {
            failed.push(row.project_id, failure);
        }
    }
    let statement = UpsertRows::of(rows);
    let mut conn = db.conn().await?;
    conn.transaction(|conn| {
        Box::pin(async move {
            let written = statement.run(conn).await?;
            missing::replace(conn, &written, columns).await?;
            failures::replace(conn, &written, failed).await?;
            Ok(written.len())
        })
    })
    .await
}

#[derive(diesel::QueryableByName)]
struct Written {
    #[diesel(sql_type = BigInt)]
    project_id: i64,
}

/// The tracking rows' statement, with its columns.
struct UpsertRows {
    ids: Vec<i64>,
    missing: Vec<i32>,
    status: Vec<i16>,
    retried: Vec<i64>,
    itemised: Vec<i64>,
}

impl UpsertRows {
    fn of(rows: &[TrackingRow]) -> Self {
        Self {
            ids: rows.iter().map(|r| r.project_id).collect(),
            missing: rows.iter().map(|r| r.missing_count).collect(),
            status: rows.iter().map(|r| r.status as i16).collect(),
            retried: Self::replacing(rows, Replaces::Failed),
            itemised: Self::replacing(rows, Replaces::Uncounted),
        }
    }

    fn replacing(rows: &[TrackingRow], replaces: Replaces) -> Vec<i64> {
        rows.iter()
            .filter(|r| r.replaces == replaces)
            .map(|r| r.project_id)
            .collect()
    }

    /// Returns the projects whose row it inserted or updated.
    async fn run(self, conn: &mut super::DbConn) -> Result<Vec<i64>, DbError> {
        let count = self.ids.len();
        // Raw: rows from UNNEST of bound arrays, which diesel's insert cannot take.
        let written: Vec<Written> = diesel::sql_query(format!(
            "INSERT INTO container_registry_data_repair_details \
                 (project_id, missing_count, status, created_at, updated_at) \
             SELECT u.project_id, u.missing_count, u.status, now(), now() \
             FROM UNNEST($1::bigint[], $2::integer[], $3::smallint[]) AS u(project_id, missing_count, status) \
             WHERE EXISTS (SELECT 1 FROM projects p WHERE p.id = u.project_id) \
             ON CONFLICT (project_id) DO UPDATE \
             SET missing_count = EXCLUDED.missing_count, status = EXCLUDED.status, \
                 updated_at = EXCLUDED.updated_at \
             WHERE {STALE_ONGOING_SQL} \
                OR (container_registry_data_repair_details.status = 2 \
                    AND container_registry_data_repair_details.project_id = ANY($4::bigint[])) \
                OR (container_registry_data_repair_details.status = 1 AND EXCLUDED.status = 1 \
                    AND container_registry_data_repair_details.project_id = ANY($5::bigint[]) \
                    AND NOT EXISTS (SELECT 1 FROM registry_repair_missing_repositories m \
                        WHERE m.project_id = container_registry_data_repair_details.project_id)) \
             RETURNING project_id"
        ))
        .bind::<Array<BigInt>, _>(self.ids)
        .bind::<Array<Integer>, _>(self.missing)
        .bind::<Array<SmallInt>, _>(self.status)
        .bind::<Array<BigInt>, _>(self.retried)
        .bind::<Array<BigInt>, _>(self.itemised)
        .load(conn)
        .await
        .map_err(DbError::query(format!(
            "writing {count} rows to container_registry_data_repair_details"
        )))?;
        Ok(written.into_iter().map(|w| w.project_id).collect())
    }
}

/// Every row, in project order, with the failure recorded for a `failed` one. For the demo and
/// the tests: it reads the whole table.
pub async fn all_rows(db: &Database) -> Result<Vec<TrackingRow>, DbError> {
    let mut conn = db.conn().await?;
    let why = failed::project_id
        .eq(tracking::project_id)
        .and(tracking::status.eq(TrackingStatus::Failed as i16));
    // Project, count, status, and the recorded failure's cause and reason.
    type Raw = (i64, Option<i32>, i16, Option<(String, String)>);
    let raw: Vec<Raw> = tracking::table
        .left_join(failed::table.on(why))
        .order(tracking::project_id)
        .select((
            tracking::project_id,
            tracking::missing_count,
            tracking::status,
            (failed::cause, failed::reason).nullable(),
        ))
        .load(&mut conn)
        .await
        .map_err(DbError::query("reading the tracking table"))?;
    Ok(raw
        .into_iter()
        .map(|(project_id, missing_count, status, failure)| TrackingRow {
            project_id,
            missing_count: missing_count.unwrap_or(0),
            status: match status {
                1 => TrackingStatus::Completed,
                2 => TrackingStatus::Failed,
                _ => TrackingStatus::Ongoing,
            },
            replaces: Replaces::Nothing,
            repositories: Vec::new(),
            // A cause a later release wrote, which this one cannot name, reads as not recorded.
            failure: failure.and_then(|(cause, reason)| {
                FailureCause::parse(&cause).map(|cause| Failure { cause, reason })
            }),
        })
        .collect())
}
