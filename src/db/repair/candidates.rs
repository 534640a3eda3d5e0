//! Which projects a repair looks at: the scope flags, and the candidates in scope walked by keyset
//! (a page costs the same at any depth) and counted (for progress).

use diesel::dsl::{exists, IntoBoxed};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::db::dsl::lower;
use crate::db::schema::{container_registry_data_repair_details as tracking, routes};
use crate::db::tracking::TrackingStatus;
use crate::db::{Database, DbError};
use crate::repair::guards::Consent;

/// Which projects a `plan` or `apply` looks at (the canary flags).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// `--project ID`, repeatable; empty: every project.
    pub projects: Vec<i64>,
    /// `--namespace PATH`: a group or user and everything below it (case-insensitive).
    pub namespace: Option<String>,
    /// `--limit N` projects at most.
    pub limit: Option<u64>,
    /// The review reasons lifted by `--include-older`, `--include-older-than-path` and
    /// `--include-cleanup-policy`.
    pub consent: Consent,
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
        parts.extend(self.consent.flags().into_iter().map(String::from));
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
#[derive(Debug, Clone, PartialEq, Eq, diesel::Queryable)]
pub struct Candidate {
    pub project_id: i64,
    pub full_path: String,
    pub missing_count: i32,
}

/// Whether a group or user (a `Namespace` route) has `path`, ignoring case.
pub async fn namespace_exists(db: &Database, path: &str) -> Result<bool, DbError> {
    let mut conn = db.conn().await?;
    diesel::select(exists(
        routes::table.filter(
            routes::source_type
                .eq("Namespace")
                .and(lower(routes::path).eq(lower(path.trim_matches('/')))),
        ),
    ))
    .get_result(&mut conn)
    .await
    .map_err(DbError::query(format!("looking up the namespace `{path}`")))
}

/// The tracking rows joined to their projects' routes (a project without one is left out).
#[diesel::dsl::auto_type]
fn tracked_with_route() -> _ {
    tracking::table.inner_join(
        routes::table.on(routes::source_type
            .eq("Project")
            .and(routes::source_id.eq(tracking::project_id))),
    )
}

/// The tracking rows of `scope`'s projects: `completed` with `missing_count > 0`, and a route.
fn in_scope(scope: &Scope) -> IntoBoxed<'static, tracked_with_route, Pg> {
    let mut query = tracked_with_route()
        .filter(tracking::status.eq(TrackingStatus::Completed as i16))
        .filter(tracking::missing_count.gt(0))
        .into_boxed();
    if !scope.projects.is_empty() {
        query = query.filter(tracking::project_id.eq_any(scope.projects.clone()));
    }
    if let Some(pattern) = scope.namespace_pattern() {
        query = query.filter(lower(routes::path).like(pattern).escape('\\'));
    }
    query
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
    in_scope(scope)
        .filter(tracking::project_id.gt(after))
        .select((
            tracking::project_id,
            routes::path,
            tracking::missing_count.assume_not_null(),
        ))
        .order(tracking::project_id)
        .limit(limit)
        .load(&mut conn)
        .await
        .map_err(DbError::query(format!(
            "reading the next {limit} projects to repair after id {after}"
        )))
}

/// How many candidates `scope` holds (for progress: a total and an ETA).
pub async fn count_candidates(db: &Database, scope: &Scope) -> Result<u64, DbError> {
    let mut conn = db.conn().await?;
    let n: i64 = in_scope(scope)
        .count()
        .get_result(&mut conn)
        .await
        .map_err(DbError::query("counting the projects to repair"))?;
    let n = u64::try_from(n).unwrap_or(0);
    Ok(scope.limit.map_or(n, |limit| n.min(limit)))
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
            consent: Consent {
                older_than_project: true,
                older_than_path: true,
                cleanup_policy: true,
            },
        };
        assert_eq!(
            scope.describe(),
            "--project 3 --project 5 --namespace Gitlab-Org --limit 10 --include-older \
             --include-older-than-path --include-cleanup-policy"
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
}
