//! The commands, one per file, on top of everything else: each reads what it needs from the
//! settings, starts what it needs (a runtime, the service's actors, a client of the admin API) and
//! prints its outcome. The command line ([`crate::cli`]) only parses and dispatches to them.
//!
//! - [`migrate`]: the tracking table and the service's own tables.
//! - [`run`]: the service: the analysis, until SIGTERM (or done).
//! - [`report`]: the damage found (totals, rankings by count and bytes, by month), as a table,
//!   JSON, CSV or an HTML page; and the missing repositories themselves.
//! - [`control`]: `status`, `concurrency N`, `pause` and `resume`, through the admin API.
//! - [`repair`]: `repair plan|apply`, `verify RUN`, `undo RUN`, `runs`; and the repair's work on
//!   the pipeline.
//! - `demo`: the first run (with the `simulator` feature).

pub mod control;
#[cfg(feature = "simulator")]
pub mod demo;
pub mod migrate;
pub mod repair;
pub mod report;
pub mod run;

use anyhow::Context as _;

/// A command that stopped before its end (a signal, a lost lease), or a check of a run that did:
/// exit status 3, and its message says how far it got and the command that finishes the job.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unfinished(pub String);

/// A runtime for the commands that only talk to the database or the admin API.
fn current_thread_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}
