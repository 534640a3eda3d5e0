//! GitLab's own switches for this work, read as GitLab reads them: the application setting
//! `container_registry_data_repair_detail_worker_max_concurrency` and the Flipper feature flag
//! `registry_data_repair_worker` (on only with a `boolean` gate set to `true`, off by default).

use diesel::sql_types::{Bool, Integer, Nullable};
use diesel_async::RunQueryDsl;

use super::{Database, DbError};

pub const FEATURE_FLAG: &str = "registry_data_repair_worker";
pub const SETTING: &str = "container_registry_data_repair_detail_worker_max_concurrency";

/// What GitLab says right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GitlabSwitches {
    /// `None` when `application_settings` has no row yet.
    pub max_concurrency: Option<i32>,
    pub enabled: bool,
}

#[derive(diesel::QueryableByName)]
struct Row {
    #[diesel(sql_type = Nullable<Integer>)]
    max_concurrency: Option<i32>,
    #[diesel(sql_type = Bool)]
    enabled: bool,
}

pub async fn read(db: &Database) -> Result<GitlabSwitches, DbError> {
    let mut conn = db.conn().await?;
    let row: Row = diesel::sql_query(
        "SELECT (SELECT container_registry_data_repair_detail_worker_max_concurrency \
                 FROM application_settings ORDER BY id DESC LIMIT 1) AS max_concurrency, \
                EXISTS (SELECT 1 FROM feature_gates \
                        WHERE feature_key = 'registry_data_repair_worker' \
                          AND key = 'boolean' AND value = 'true') AS enabled",
    )
    .get_result(&mut conn)
    .await
    .map_err(DbError::query(
        "reading GitLab's application setting and feature flag",
    ))?;
    Ok(GitlabSwitches {
        max_concurrency: row.max_concurrency,
        enabled: row.enabled,
    })
}
