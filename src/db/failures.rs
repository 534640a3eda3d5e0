//! The service's own record of why a project's analysis failed (`registry_repair_failures`):
//! written with the project's `failed` tracking row, in the same transaction, and replaced or
//! deleted with it; read back by the report. GitLab's tracking table has no room for a reason.

use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Text};
use diesel_async::RunQueryDsl;
use serde::Serialize;

use super::schema::registry_repair_failures as failures;
use super::{DbConn, DbError};

/// What kind of failure ended a project `failed`: a short word, stable across releases, stored in
/// `registry_repair_failures.cause` and shown by the report with its advice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureCause {
    /// The project has no route in GitLab's database, so no registry path.
    NoRoute,
    /// Its listing has more than `registry.max_pages` pages.
    TooManyPages,
    /// The registry refused this path itself: a 4xx of its own (400, a 404 with a registry error
    /// code such as `NAME_INVALID`).
    RegistryRefusedPath,
    /// The listing named a repository path the registry's own name grammar forbids.
    HostileAnswer,
    /// 5xx, timeouts or broken answers after the retries, while the registry served others.
    Troubled,
    /// 401, 403, 429, a redirect or a bare 404 after the retries, while the registry served
    /// others.
    Refused,
    /// Its analysis panicked, as many times as a project may.
    Crashed,
}

impl FailureCause {
    pub const ALL: [FailureCause; 7] = [
        FailureCause::NoRoute,
        FailureCause::TooManyPages,
        FailureCause::RegistryRefusedPath,
        FailureCause::HostileAnswer,
        FailureCause::Troubled,
        FailureCause::Refused,
        FailureCause::Crashed,
    ];

    /// The word stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureCause::NoRoute => "no_route",
            FailureCause::TooManyPages => "too_many_pages",
            FailureCause::RegistryRefusedPath => "registry_refused_path",
            FailureCause::HostileAnswer => "hostile_answer",
            FailureCause::Troubled => "troubled",
            FailureCause::Refused => "refused",
            FailureCause::Crashed => "crashed",
        }
    }

    /// The cause a stored word names; `None` for a word this release does not know (a later
    /// release's).
    pub fn parse(word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == word)
    }
}

impl std::fmt::Display for FailureCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The longest reason stored, in characters: an error message is far shorter, and a registry's
/// words inside one are already cut; this bounds the table whatever a message holds.
pub const MAX_REASON_CHARS: usize = 2000;

/// Why a project failed: its cause, and the message logged at the time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub cause: FailureCause,
    pub reason: String,
}

/// `text` on one line: control characters (a line break in a registry's words) shown escaped, as
/// Rust writes them, so that no text can forge a line of a log, a table or a CSV block.
pub fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

impl Failure {
    /// `reason` on one line ([`one_line`]), cut to [`MAX_REASON_CHARS`] with an ellipsis where it
    /// was cut.
    pub fn new(cause: FailureCause, reason: impl AsRef<str>) -> Self {
        let reason = one_line(reason.as_ref());
        let reason = if reason.chars().count() > MAX_REASON_CHARS {
            let mut cut: String = reason.chars().take(MAX_REASON_CHARS - 1).collect();
            cut.push('…');
            cut
        } else {
            reason
        };
        Self { cause, reason }
    }
}

/// The failures of a batch of tracking rows, as the columns one statement binds.
#[derive(Debug, Default)]
pub(super) struct Columns {
    project_ids: Vec<i64>,
    causes: Vec<String>,
    reasons: Vec<String>,
}

impl Columns {
    pub(super) fn push(&mut self, project_id: i64, failure: &Failure) {
        self.project_ids.push(project_id);
        self.causes.push(failure.cause.as_str().to_string());
        self.reasons.push(failure.reason.clone());
    }
}

/// Replaces the failures recorded for `written` (the projects whose tracking rows this
/// transaction wrote) with theirs in `columns`: a project written `completed` has none left, one
/// written `failed` has its new one. The entries of other projects in `columns` are not written
/// (their rows were left as they are, and keep their own). Runs on the caller's transaction.
pub(super) async fn replace(
    conn: &mut DbConn,
    written: &[i64],
    columns: Columns,
) -> Result<(), DbError> {
    if written.is_empty() {
        return Ok(());
    }
    diesel::delete(failures::table.filter(failures::project_id.eq_any(written)))
        .execute(conn)
        .await
        .map_err(DbError::query(format!(
            "replacing the recorded failures of {} projects",
            written.len()
        )))?;
    if columns.project_ids.is_empty() {
        return Ok(());
    }
    let count = columns.project_ids.len();
    // Raw: rows from UNNEST of bound arrays, which diesel's insert cannot take.
    diesel::sql_query(
        "INSERT INTO registry_repair_failures (project_id, cause, reason, failed_at) \
         SELECT u.project_id, u.cause, u.reason, now() \
         FROM UNNEST($1::bigint[], $2::text[], $3::text[]) AS u(project_id, cause, reason) \
         WHERE u.project_id = ANY($4::bigint[]) \
         ON CONFLICT (project_id) DO UPDATE \
         SET cause = EXCLUDED.cause, reason = EXCLUDED.reason, failed_at = EXCLUDED.failed_at",
    )
    .bind::<Array<BigInt>, _>(columns.project_ids)
    .bind::<Array<Text>, _>(columns.causes)
    .bind::<Array<Text>, _>(columns.reasons)
    .bind::<Array<BigInt>, _>(written)
    .execute(conn)
    .await
    .map_err(DbError::query(format!(
        "recording why {count} projects failed"
    )))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cause_reads_back_from_its_word() {
        for cause in FailureCause::ALL {
            assert_eq!(FailureCause::parse(cause.as_str()), Some(cause));
            assert_eq!(
                serde_json::to_value(cause).ok(),
                Some(serde_json::Value::String(cause.as_str().into()))
            );
        }
        assert_eq!(FailureCause::parse("a later release's"), None);
    }

    #[test]
    fn a_long_reason_is_cut() {
        let failure = Failure::new(FailureCause::Troubled, "x".repeat(MAX_REASON_CHARS + 5));
        assert_eq!(failure.reason.chars().count(), MAX_REASON_CHARS);
        assert!(failure.reason.ends_with('…'));
        assert_eq!(Failure::new(FailureCause::Crashed, "short").reason, "short");
        assert_eq!(
            Failure::new(FailureCause::HostileAnswer, "a\nb\t\u{7}c").reason,
            "a\\nb\\t\\u{7}c"
        );
    }
}
