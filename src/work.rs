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
            Work::Repair(repair) => repair.sink.clone(),
        }
    }
}

/// What a service does, as `status` names it: `analyse`, `repair plan` or `repair apply (run N)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Doing {
    #[default]
    Analysis,
    RepairPlan,
    RepairApply {
        run: i64,
    },
}

impl Work {
    pub fn doing(&self) -> Doing {
        match self {
            Work::Analysis => Doing::Analysis,
            Work::Repair(Repair {
                sink: Sink::Apply { run_id, .. },
                ..
            }) => Doing::RepairApply { run: *run_id },
            Work::Repair(_) => Doing::RepairPlan,
        }
    }
}

impl std::fmt::Display for Work {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.doing().fmt(f)
    }
}

impl std::fmt::Display for Doing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Doing::Analysis => f.write_str("analyse"),
            Doing::RepairPlan => f.write_str("repair plan"),
            Doing::RepairApply { run } => write!(f, "repair apply (run {run})"),
        }
    }
}

impl From<Doing> for String {
    fn from(doing: Doing) -> String {
        doing.to_string()
    }
}

impl TryFrom<String> for Doing {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let run = text
            .strip_prefix("repair apply (run ")
            .and_then(|rest| rest.strip_suffix(')'))
            .and_then(|run| run.parse().ok());
        match (text.as_str(), run) {
            // An older service, before `work` was reported, said nothing.
            ("analyse" | "", _) => Ok(Doing::Analysis),
            ("repair plan", _) => Ok(Doing::RepairPlan),
            (_, Some(run)) => Ok(Doing::RepairApply { run }),
            _ => Err(format!("`{text}` is no work this service does")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_service_does_reads_back_as_written() {
        for doing in [
            Doing::Analysis,
            Doing::RepairPlan,
            Doing::RepairApply { run: 42 },
        ] {
            assert_eq!(Doing::try_from(doing.to_string()), Ok(doing));
        }
        assert_eq!(
            serde_json::to_string(&Doing::RepairApply { run: 7 })
                .ok()
                .as_deref(),
            Some("\"repair apply (run 7)\"")
        );
        assert!(Doing::try_from("dancing".to_string()).is_err());
        // The fleet tells the members that analyse by it.
        assert_eq!(Doing::Analysis.to_string(), crate::db::fleet::ANALYSIS);
    }
}
