//! What the pipeline (Scheduler → Analyzers → Writer) is started to do: analyse the projects
//! without a tracking row (`run`), or repair the projects the analysis found missing
//! repositories in (`repair plan`, `repair apply`). One kind of work per service, chosen at start:
//! the Scheduler walks its source, each Analyzer does its per-project step, the Writer writes (or,
//! for a plan, only collects) what comes back.

use crate::db::repair::Scope;
use crate::writer::Sink;

/// The work a service does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Work {
    /// Analyse the projects without a tracking row, pass after pass (`run`).
    #[default]
    Analysis,
    /// One pass over the repair's candidates in `scope` (`repair plan` / `repair apply`); the
    /// service ends once every candidate was planned (or failed) and flushed.
    Repair(Repair),
}

/// A repair's scope and where its plans go: [`Sink::CollectPlans`] (`repair plan`) or
/// [`Sink::Apply`] (`repair apply`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repair {
    /// The scope flags (`--project`, `--namespace`, `--limit`, the `--include-*` consent).
    pub scope: Scope,
    pub sink: Sink,
}

impl Work {
    /// Where the Writer puts what it holds.
    pub fn sink(&self) -> Sink {
        match self {
            Work::Analysis => Sink::Tracking,
            Work::Repair(repair) => repair.sink,
        }
    }
}

/// As `status` shows it.
impl std::fmt::Display for Work {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Work::Analysis => f.write_str("analyse"),
            Work::Repair(Repair {
                sink: Sink::Apply { run_id },
                ..
            }) => write!(f, "repair apply (run {run_id})"),
            Work::Repair(_) => f.write_str("repair plan"),
        }
    }
}
