//! The `registry-repair` binary as an operator runs it: configured only through
//! `REGISTRY_REPAIR__*` environment variables (or `--config`), judged by its exit status, its
//! output and what it leaves in the database. The simulated registry runs inside the test process,
//! so every child is waited for without blocking the test's runtime.
//!
//! One module per section: `migrate`, `run` (to the end, and against a registry without GitLab's
//! API), `control` (commands on a running service), `failures` an operator must understand,
//! `report`, and `demo` (only on a database of its own; `--serve` and the practice steps).

mod control;
mod demo;
mod failures;
mod migrate;
mod report;
mod run;
