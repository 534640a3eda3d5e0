//! The pipeline's one seam: a kind of [`Work`]. The Scheduler, the Analyzers and the Writer are
//! generic over it and know nothing of what it is; a service does one work, chosen when it
//! starts:
//!
//! - the analysis (`run`, [`crate::analysis`]): the projects without a tracking row, pass after
//!   pass; each listed in the registry; a tracking row for each;
//! - the repair (`repair plan` and `repair apply`, `commands::repair::work`): one pass over the
//!   candidates in scope; each planned by the guards; the plans collected or written.
//!
//! A work brings three things, each for one actor: its [`Source`] (what the Scheduler reads next:
//! projects, and what ends a pass), its per-project step (what an Analyzer does with one [`Job`],
//! talking to the registry: a [`Step`]), and its [`Sink`] (what the Writer buffers, and how it
//! writes a batch). Concurrency, the feature flag, pause and resume, the breaker, back-pressure,
//! supervision, progress, shutdown and fencing stay in the actors, the same for every work.
//!
//! This module holds the words the actors and the works share (`job.rs`: a project's job and what
//! its step brings; `source.rs`, `sink.rs`: the two ends), and imports none of the actors.

mod job;
mod sink;
mod source;

use std::future::Future;
use std::sync::Arc;

pub use self::job::{Job, Step, StepError, Tally};
pub use self::sink::{within, Sink, WriteError, WRITE_TIMEOUT};
pub use self::source::{NextPass, Remaining, Source, SourceStatus};
use crate::config::Settings;
use crate::db::failures::Failure;
use crate::db::fleet::Member;
use crate::db::{Database, DbError};
use crate::registry::RegistryClient;

/// The database refused a statement for a reason no retry mends ([`DbError::lasts`]): the run
/// ends instead of retrying. The Scheduler meets it in its reads, its flushes and the Analyzers'
/// deferrals; the Writer and the Fleet send it up.
#[derive(actix::Message, Debug, Clone, thiserror::Error)]
#[rtype(result = "()")]
#[error(transparent)]
pub struct Refused(pub Arc<DbError>);

impl Refused {
    /// `error` as a refusal, if it is one that lasts.
    pub fn lasting(error: Arc<DbError>) -> Option<Self> {
        error.lasts().then_some(Refused(error))
    }
}

/// The same refusal: one error, passed on.
impl PartialEq for Refused {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// A kind of work the pipeline does.
pub trait Work: Unpin + 'static {
    /// What a project's step needs besides the project, from the source to the step (the
    /// analysis: which row its result replaces; a repair: the candidate's facts).
    type Item: Clone + std::fmt::Debug + Send + Unpin + 'static;
    /// What the step found when it ended well (the analysis: the repositories without a row; a
    /// repair: the plan).
    type Found;
    /// Where the projects come from.
    type Source: Source<Item = Self::Item>;
    /// Where the results go.
    type Sink: Sink;

    /// What the step does, as the reason of a project whose step panicked too often says it
    /// (`analysing it panicked 3 times`).
    const STEP: &'static str;

    /// What this service does, as `status` and the fleet name it.
    fn name(&self) -> WorkName;

    /// Opens the source, once this instance has joined the fleet as `member`.
    fn open(
        &self,
        settings: &Settings,
        db: &Database,
        member: &Arc<Member>,
    ) -> impl Future<Output = Result<Self::Source, DbError>>;

    /// The Writer's sink.
    fn sink(&self, db: &Database) -> Self::Sink;

    /// One project's step, as an Analyzer runs it: whatever it asks the registry goes through
    /// `registry` (and its fence); nothing is written here.
    fn step(
        &self,
        registry: &RegistryClient,
        db: &Database,
        job: &Job<Self::Item>,
    ) -> impl Future<Output = Step<Self::Found>>;

    /// What the step found, as the Writer's record, and what it counts for in `status`.
    fn done(
        &self,
        job: &Job<Self::Item>,
        found: Self::Found,
    ) -> (<Self::Sink as Sink>::Record, Tally);

    /// A project that ended failed, as the Writer's record.
    fn failed(&self, job: &Job<Self::Item>, failure: Failure) -> <Self::Sink as Sink>::Record;
}

/// What a service does, as `status` and the fleet's members table name it: `analyse`, `repair
/// plan` or `repair apply (run N)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum WorkName {
    #[default]
    Analysis,
    RepairPlan,
    RepairApply {
        run: i64,
    },
}

impl std::fmt::Display for WorkName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkName::Analysis => f.write_str("analyse"),
            WorkName::RepairPlan => f.write_str("repair plan"),
            WorkName::RepairApply { run } => write!(f, "repair apply (run {run})"),
        }
    }
}

impl From<WorkName> for String {
    fn from(name: WorkName) -> String {
        name.to_string()
    }
}

impl TryFrom<String> for WorkName {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let run = text
            .strip_prefix("repair apply (run ")
            .and_then(|rest| rest.strip_suffix(')'))
            .and_then(|run| run.parse().ok());
        match (text.as_str(), run) {
            ("analyse", _) => Ok(WorkName::Analysis),
            ("repair plan", _) => Ok(WorkName::RepairPlan),
            (_, Some(run)) => Ok(WorkName::RepairApply { run }),
            _ => Err(format!("`{text}` is no work this service does")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_service_does_reads_back_as_written() {
        for name in [
            WorkName::Analysis,
            WorkName::RepairPlan,
            WorkName::RepairApply { run: 42 },
        ] {
            assert_eq!(WorkName::try_from(name.to_string()), Ok(name));
        }
        assert_eq!(
            serde_json::to_string(&WorkName::RepairApply { run: 7 })
                .ok()
                .as_deref(),
            Some("\"repair apply (run 7)\"")
        );
        assert!(WorkName::try_from("dancing".to_string()).is_err());
        assert!(WorkName::try_from(String::new()).is_err());
        // The fleet tells the members that analyse by it.
        assert_eq!(WorkName::Analysis.to_string(), crate::db::fleet::ANALYSIS);
    }
}
