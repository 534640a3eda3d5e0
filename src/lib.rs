//! registry-repair: finds container registry repositories that GitLab's database has lost, and
//! restores their rows.
//!
//! From the top down: [`cli`] parses the command line and dispatches to one of the [`commands`];
//! `run` starts the [`service`] with the [`analysis`], `repair plan` and `repair apply` with the
//! repair (`commands::repair::work`). The service's module documentation names every actor and
//! message: the [`scheduler`] feeds an [`analyzer`] per project, which asks the [`registry`] and
//! sends what it found to the [`writer`], which writes to the [`db`]; the three are generic over
//! the [`work`], the one seam through which a kind of work brings its source, its per-project
//! step and its sink. At the bottom, with no I/O: the [`repair`] domain (the guards, GitLab's
//! path resolution, the output formats), [`config`], [`format`](mod@format).
//!
//! Public are the modules the binary, the integration tests and the benchmark use; the rest is
//! the service's own business. `demo` and `registry::simulator` exist with the `simulator`
//! feature (on by default); [`faults`] can only be armed with the test-only `faults` feature.

pub mod admin;
pub mod analysis;
pub mod analyzer;
pub mod cli;
pub mod commands;
pub mod config;
pub mod db;
#[cfg(feature = "simulator")]
pub mod demo;
mod errors;
pub mod faults;
pub mod fence;
pub mod fleet;
pub mod format;
mod gitlab_control;
pub mod identity;
mod metrics;
mod progress;
mod redact;
pub mod registry;
pub mod repair;
pub mod report;
pub mod scheduler;
pub mod service;
pub mod signals;
mod sync;
mod telemetry;
pub mod work;
pub mod writer;
