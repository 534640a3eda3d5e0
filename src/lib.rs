//! registry-repair: finds container registry repositories that GitLab's database has lost.
//!
//! Data flows one way: projects from the database to the [`scheduler`], to an [`analyzer`], to the
//! [`registry`] and back, to the [`writer`], to the database. [`service`] wires them together;
//! [`cli`] is the command line; [`admin`] the HTTP API that steers a running service.

pub mod admin;
pub mod analyzer;
pub mod breaker;
pub mod cli;
pub mod config;
pub mod control;
pub mod db;
pub mod demo;
pub mod errors;
pub mod faults;
pub mod metrics;
pub mod progress;
pub mod redact;
pub mod registry;
pub mod repair;
pub mod report;
pub mod scheduler;
pub mod service;
pub mod sweep;
mod sync;
pub mod telemetry;
pub mod writer;
