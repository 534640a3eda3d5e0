//! The repair's domain: which lost `container_repositories` rows may be restored, and why not.
//!
//! - [`guards`]: the pure per-project decision (restore, skip, review, and why).
//! - [`resolution`]: how GitLab finds a registry path's project (pure), which the guards ask.
//! - [`output`]: the plan and the result as a table, JSON or CSV.
//! - [`written`]: what writing one project's plan did.
//!
//! This is the pure domain: no I/O. The database side (candidates, facts, the index check,
//! apply, undo, runs) is [`crate::db::repair`], which builds on it; the repair's work on the
//! pipeline (its source, its per-project step, its sink) is [`crate::commands::repair::work`],
//! beside the commands `plan`, `apply`, `verify`, `undo` and `runs` ([`crate::commands::repair`]).

pub mod guards;
pub mod output;
pub mod resolution;
pub mod written;

pub use guards::{
    plan_project, Action, Inputs, PlannedRepository, ProjectFacts, ProjectPlan, Reason,
};
