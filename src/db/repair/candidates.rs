//! Which projects a repair looks at: the scope flags, and the candidates in scope walked by keyset
//! (a page costs the same at any depth) and counted (for progress).

use diesel::sql_types::{Array, BigInt, Integer, Nullable, Text};
use diesel_async::RunQueryDsl;

use crate::db::{Database, DbError, Present};
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
#[derive(Debug, Clone, PartialEq, Eq, diesel::QueryableByName)]
pub struct Candidate {
    #[diesel(sql_type = BigInt)]
    pub project_id: i64,
    #[diesel(sql_type = Text)]
    pub full_path: String,
    #[diesel(sql_type = Integer)]
    pub missing_count: i32,
}

/// Whether a group or user (a `Namespace` route) has `path`, ignoring case.
pub async fn namespace_exists(db: &Database, path: &str) -> Result<bool, DbError> {
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
