//! The integration tests, as one binary: one module per area, linked once against actix, diesel and
//! reqwest instead of once per file. `cargo test --test it cli::` runs one module's tests.
//!
//! The tests share one process and run on parallel threads: nothing here may set an environment
//! variable, install a process-wide default or assume a process id of its own (the databases they
//! create are named by the process id and a counter, see `common::TestDb`). They share the
//! PostgreSQL cluster's oldest running transaction too, which holds back every watermark: a test
//! that keeps a transaction open or needs its watermark to move says so (`common::XMIN`).

mod common;

mod admin_doors;
mod analysis;
mod cli;
mod contrib;
mod database_tls;
mod distribution;
mod docs;
mod faults;
mod fencing;
mod fleet;
mod grants;
mod hardening;
mod live_page;
mod operate;
mod pgbouncer;
mod registry_api;
mod registry_tls;
mod repair;
mod scale;
mod service;
mod signals;
mod sizes;
mod structure;
mod upgrade;
mod writer;
