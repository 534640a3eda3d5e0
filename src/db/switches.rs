//! GitLab's own switches for this work, read as GitLab reads them: the application setting
//! `container_registry_data_repair_detail_worker_max_concurrency` and the Flipper feature flag
//! `registry_data_repair_worker` (on only with a `boolean` gate set to `true`, off by default).

use diesel::dsl::exists;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::schema::{application_settings as settings, feature_gates as gates};
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

pub async fn read(db: &Database) -> Result<GitlabSwitches, DbError> {
    let mut conn = db.conn().await?;
    let newest = settings::table
        .order(settings::id.desc())
        .select(settings::container_registry_data_repair_detail_worker_max_concurrency)
        .limit(1)
        .single_value();
    let on = gates::table
        .filter(gates::feature_key.eq(FEATURE_FLAG))
        .filter(gates::key.eq("boolean"))
        .filter(gates::value.eq("true"));
    let (max_concurrency, enabled) = diesel::select((newest, exists(on)))
        .get_result(&mut conn)
        .await
        .map_err(DbError::query(
            "reading GitLab's application setting and feature flag",
        ))?;
    Ok(GitlabSwitches {
        max_concurrency,
        enabled,
    })
}
