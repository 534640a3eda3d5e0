//! One project's way through the pipeline, whatever the work: the [`Job`] the Scheduler queues
//! and an Analyzer is given, what the work's step brings back ([`Step`]), why a step did not end
//! well ([`StepError`]), and what a result counts for in `status` ([`Tally`]).

use std::sync::Arc;

use crate::db::failures::FailureCause;
use crate::db::projects::Project;
use crate::db::DbError;
use crate::registry::token::SharedToken;
use crate::registry::{Blame, RegistryError};

/// One project's job, and what befell its earlier attempts.
#[derive(Debug, Clone)]
pub struct Job<I> {
    pub project: Project,
    /// What the work's step needs besides the project.
    pub item: I,
    pub crashes: u32,
    pub troubles: u32,
    /// Refusals while the registry answered the canary.
    pub deferrals: u32,
    /// The token this project shares with the others of its dispatch batch.
    pub token: Option<Arc<SharedToken>>,
}

impl<I> Job<I> {
    /// `project`'s job, not tried yet.
    pub fn new(project: Project, item: I) -> Self {
        Self {
            project,
            item,
            crashes: 0,
            troubles: 0,
            deferrals: 0,
            token: None,
        }
    }
}

/// What one project's step brought.
#[derive(Debug)]
pub enum Step<F> {
    /// It ended well: what it found goes to the Writer.
    Done(F),
    /// The project cannot be done on its own account.
    Failed { reason: StepError },
    /// Something outside this project failed (registry unreachable or rejecting us, database
    /// down): the project must be done again later, and nothing recorded now. `refused`: the
    /// registry answered this project's request with a refusal (401, 403, 429, a redirect, a bare
    /// 404), which is the project's own if the registry serves others meanwhile.
    Deferred { reason: StepError, refused: bool },
    /// 5xx, timeouts or broken answers after retries: the project's fault only if the registry
    /// serves others meanwhile.
    Troubled { reason: RegistryError },
    /// This process's hold on its work lapsed mid-project ([`crate::fence`]): what was asked is
    /// void, nobody's fault; the project goes back.
    Fenced,
}

impl<F> Step<F> {
    /// A registry request failed after its retries: whose fault it is decides what follows.
    pub fn registry_failed(error: RegistryError) -> Self {
        if let RegistryError::Fenced { .. } = error {
            return Step::Fenced;
        }
        match error.blame() {
            Blame::Registry => Step::Deferred {
                refused: matches!(error, RegistryError::Status { .. }),
                reason: error.into(),
            },
            Blame::Unclear => Step::Troubled { reason: error },
            Blame::Project => Step::Failed {
                reason: error.into(),
            },
        }
    }

    /// The database failed: the project is done again later.
    pub fn database_failed(error: DbError) -> Self {
        Step::Deferred {
            reason: error.into(),
            refused: false,
        }
    }
}

/// Why a project's step did not end well, this time or for good.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("the project has no route, so no registry path")]
    NoRoute,
    #[error("asking the sizes of {path}'s missing repositories: {unclear} failed (the last: {last}), and the registry answers no other path either; analysed again later")]
    SizesUnavailable {
        path: String,
        unclear: u32,
        last: RegistryError,
    },
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Database(#[from] DbError),
}

impl StepError {
    /// What kind of failure this is when it fails its project. Only no route, a 4xx of the
    /// project's own, too many pages and a hostile listing do so at once; the others are named by
    /// what they are, as the setbacks they otherwise are.
    pub fn failure_cause(&self) -> FailureCause {
        match self {
            StepError::NoRoute => FailureCause::NoRoute,
            StepError::Registry(RegistryError::TooManyPages { .. }) => FailureCause::TooManyPages,
            StepError::Registry(RegistryError::HostileName { .. }) => FailureCause::HostileAnswer,
            StepError::Registry(error) => match error.blame() {
                Blame::Project => FailureCause::RegistryRefusedPath,
                Blame::Unclear => FailureCause::Troubled,
                Blame::Registry => FailureCause::Refused,
            },
            StepError::SizesUnavailable { .. } => FailureCause::Troubled,
            StepError::Database(_) => FailureCause::Refused,
        }
    }
}

/// What one project's result counts for in `status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// It ended failed: recorded so, or reported so.
    pub failed: bool,
    /// Its path breaks the registry's name grammar: nothing was asked, nothing is missing.
    pub unaddressable: bool,
    /// Repositories without a row it found.
    pub missing: u64,
    /// Their known sizes, summed.
    pub missing_bytes: u64,
    /// How many of them have no known size.
    pub sizes_unknown: u64,
    /// Registry entries outside its path, ignored.
    pub ignored: u32,
}

impl Tally {
    /// A project that ended failed.
    pub fn failed() -> Self {
        Self {
            failed: true,
            ..Self::default()
        }
    }

    /// Whether the registry served the project: what the breaker counts as a success.
    pub fn served(&self) -> bool {
        !self.failed && !self.unaddressable
    }
}
