//! The repair: restoring the `container_repositories` rows GitLab lost, safely.
//!
//! - [`guards`]: the pure per-project decision (restore, skip, review, and why).
//! - [`resolution`]: how GitLab finds a registry path's project (pure), which the guards ask.
//! - [`output`]: the plan and the result as a table, JSON or CSV.
//! - [`cli`]: the `repair` subcommands (`plan`, `apply`, `verify`, `undo`, `runs`).
//! - [`verify`]: lists the registry again for a run's projects.
//! - [`pipeline`]: `plan` and `apply` as a service on the Scheduler → Analyzers → Writer
//!   pipeline ([`crate::work::Work::Repair`]); the Analyzer's per-project step is
//!   `analyzer/repair.rs`, the Writer's per-batch write `writer/pending.rs`.
//!
//! The database side (candidates, facts, the index check, apply, undo, runs) is
//! [`crate::db::repair`].

pub mod cli;
pub mod guards;
pub mod output;
pub mod pipeline;
pub mod resolution;
pub mod verify;

pub use guards::{
    plan_project, Action, Inputs, PlannedRepository, ProjectFacts, ProjectPlan, Reason,
};
