//! What the pipeline (Scheduler → Analyzers → Writer) is started to do: analyse the projects
//! without a tracking row (`run`), or repair the projects the analysis found missing
//! repositories in (`repair plan`, `repair apply`). One kind of work per service, chosen at start:
//! the Scheduler walks its source, each Analyzer does its per-project step, the Writer writes (or,
//! for a plan, only collects) what comes back.

use crate::db::repair::Scope;

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

/// A repair's scope and what becomes of its plans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repair {
    /// The scope flags (`--project`, `--namespace`, `--limit`, `--include-older`).
    pub scope: Scope,
    pub mode: RepairMode,
}

/// What the Writer does with a repair's plans.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RepairMode {
    /// `repair plan`: write nothing; collect the plans for the printed outcome.
    #[default]
    Plan,
    /// `repair apply`: write each plan in one transaction of its own, as run `run_id`.
    Apply { run_id: i64 },
}

impl Work {
    /// The repair, when this work is one.
    pub fn repair(&self) -> Option<&Repair> {
        match self {
            Work::Analysis => None,
            Work::Repair(repair) => Some(repair),
        }
    }
}

/// As `status` shows it.
impl std::fmt::Display for Work {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Work::Analysis => f.write_str("analyse"),
            Work::Repair(Repair {
                mode: RepairMode::Plan,
                ..
            }) => f.write_str("repair plan"),
            Work::Repair(Repair {
                mode: RepairMode::Apply { run_id },
                ..
            }) => write!(f, "repair apply (run {run_id})"),
        }
    }
}
