//! Part 2/2: restoring the `container_repositories` rows GitLab lost, safely.
//!
//! - [`guards`]: the pure per-project decision (restore, skip, review, and why).
//! - [`output`]: the plan and the result as a table, JSON or CSV.
//! - [`cli`]: the `repair` subcommands (`plan`, `apply`, `verify`, `undo`, `runs`).
//! - [`verify`]: lists the registry again for a run's projects.
//! - [`run`]: `plan` and `apply` as a bounded-concurrency loop, until they move onto the
//!   Scheduler → Analyzers → Writer pipeline.
//!
//! The database side (candidates, facts, the index check, apply, undo, runs) is
//! [`crate::db::repair`].

pub mod cli;
pub mod guards;
pub mod output;
pub mod run;
pub mod verify;

pub use guards::{
    plan_project, Action, Inputs, PlannedRepository, ProjectFacts, ProjectPlan, Reason,
};
