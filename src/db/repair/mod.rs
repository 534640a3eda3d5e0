//! The repair's queries: which projects to repair (keyset-paged, with the scope flags), the facts
//! its guards need (in bulk per batch), whether GitLab's unique index can be trusted, the write of
//! a project's plan in one transaction, undo, and the runs.
//!
//! For the pipeline: the Scheduler pages [`candidates()`] and reads [`project_facts`] and
//! [`index_health`] per page; the Analyzer reads the names GitLab has
//! ([`super::projects::existing_repository_names`]) and [`claimed_paths`], and calls
//! [`crate::repair::plan_project`]; the Writer calls [`apply_into`] with the plans of a run
//! started by [`start_apply`]; the command calls [`finish_apply`] once the run is done.
//!
//! By what they hold: `candidates.rs` (the scope and the projects in it), `facts.rs` (what the
//! guards read besides the registry), `apply.rs` (an apply's per-project write), `undo.rs`, and
//! `runs.rs` (the runs: whether the database can take one, their start, finish and records),
//! `lease.rs` (one apply or undo at a time).

mod apply;
mod candidates;
mod facts;
pub mod lease;
mod runs;
mod undo;

use diesel::sql_types::BigInt;

use super::DbError;

pub use crate::repair::written::{RestoredRow, Written};
pub use apply::{apply_batch, apply_into, apply_project};
pub use candidates::{candidates, count_candidates, namespace_exists, Candidate, Scope};
pub use facts::{claimed_paths, index_health, project_facts, IndexHealth, UNIQUE_INDEX};
pub use runs::{
    apply_run, check_primary, check_ready, discard_run, finish_apply, geo_secondaries,
    restored_projects, restored_repositories, run, run_projects, runs, start_apply,
    under_cleanup_policy, RunProject, RunRow, WriteOutcome,
};
pub use undo::{undo, KeptRow, UndoOutcome};

/// Errors a caller matches on: a run that does not exist or cannot be undone, tables missing.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    #[error("repair run {0} does not exist (`registry-repair repair runs` lists them)")]
    UnknownRun(i64),
    #[error("repair run {id} is an {kind} run; only apply runs can be {what}")]
    NotAnApplyRun {
        id: i64,
        kind: String,
        what: &'static str,
    },
    #[error("the database at {target} is a read-only standby (a Geo secondary or a replica): point database.url at the primary to write")]
    ReadOnly { target: String },
    #[error("no top-level group, subgroup or user has the path `{0}` (--namespace)")]
    UnknownNamespace(String),
    /// Another apply or undo holds the repair lease: this one must not start.
    #[error("cannot start repair {wanted}: another repair is running against {target}: {holder}; only one `repair apply` or `repair undo` may run at a time: wait for it to end. If its process is gone, its lease expires at {} (unless renewed), and the next apply or undo takes it over", holder.expires_at.format("%Y-%m-%d %H:%M:%S UTC"))]
    Busy {
        /// The command refused: `apply` or `undo`.
        wanted: &'static str,
        target: String,
        holder: Box<lease::Holder>,
    },
    #[error(
        "taking the repair lease: it changed hands {attempts} times while being read; try again"
    )]
    LeaseContended { attempts: usize },
    #[error(transparent)]
    Db(#[from] DbError),
}

/// A restored row as the statements that write, read back or undo one return it.
#[derive(diesel::QueryableByName)]
struct Restored {
    #[diesel(sql_type = BigInt)]
    repository_id: i64,
    #[diesel(sql_type = diesel::sql_types::Text)]
    name: String,
}

impl From<Restored> for RestoredRow {
    fn from(row: Restored) -> Self {
        RestoredRow {
            repository_id: row.repository_id,
            name: row.name,
        }
    }
}

/// A row count as the `integer` columns take it.
fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}
