//! Part 2/2: restoring the `container_repositories` rows GitLab lost, safely.
//!
//! - [`guards`]: the pure per-project decision (restore, skip, review, and why).
//! - [`output`]: the plan and the result as a table, JSON or CSV.
//!
//! The database side (candidates, facts, the index check, apply, undo, runs) is
//! [`crate::db::repair`].

pub mod guards;
pub mod output;

pub use guards::{plan_project, Action, Inputs, PlannedRepository, ProjectFacts, ProjectPlan, Reason};
