//! registry-repair: finds container registry repositories that GitLab's database has lost.
//!
//! Data flows one way: projects from the database to the [`scheduler`], to an [`analyzer`], to the
//! [`registry`] and back, to the [`writer`], to the database. [`service`] wires them together for
//! one kind of [`work`]: the analysis (`run`) or the [`repair`] (`repair plan`, `repair apply`);
//! [`cli`] is the command line; [`admin`] the HTTP API that steers a running service; [`signals`]
//! SIGTERM and SIGINT.
//!
//! Public are the modules the binary, the integration tests and the benchmark use; the rest is
//! the service's own business. `demo` and `registry::simulator` exist with the `simulator`
//! feature (on by default), `faults` with the test-only `faults` feature.

pub mod admin;
pub mod analyzer;
pub mod cli;
pub mod commands;
pub mod config;
mod control;
pub mod db;
#[cfg(feature = "simulator")]
pub mod demo;
mod errors;
#[cfg(feature = "faults")]
pub mod faults;
pub mod format;
mod metrics;
mod progress;
mod redact;
pub mod registry;
pub mod repair;
mod report;
pub mod scheduler;
pub mod service;
pub mod signals;
mod sync;
mod telemetry;
pub mod work;
pub mod writer;
