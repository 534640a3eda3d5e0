//! The repair (`repair plan`, `repair apply`): the [`Work`] that plans, for every candidate in
//! scope, which of its lost `container_repositories` rows may be restored, and collects the plans
//! or writes them as an apply run. One pass, then the service ends.
//!
//! - `candidates.rs`, its source ([`Candidates`]): the candidates in scope, a page at a time, with
//!   the guards' facts read in bulk and the unique index checked.
//! - `planning.rs`, its step: the project's registry path listed again, the names GitLab has and
//!   the paths other projects claim, and the guards ([`crate::repair::guards`], pure).
//! - `plans.rs`, its sink ([`Plans`]): the plans written, each project in one transaction of its
//!   own, or collected; what became of each ([`Collected`]).
//!
//! It lives with the commands that run it, above the service: the repair's domain below
//! ([`crate::repair`]) stays pure, and the database builds on it.

mod candidates;
mod planning;
mod plans;

use std::sync::Arc;

pub use self::candidates::Candidates;
pub use self::plans::{Apply, Collected, NotPlanned, PlanRecord, Plans};
use crate::config::Settings;
use crate::db::failures::Failure;
use crate::db::fleet::Member;
use crate::db::repair::Scope;
use crate::db::{Database, DbError};
use crate::registry::RegistryClient;
use crate::repair::guards::{Consent, ProjectFacts};
use crate::repair::ProjectPlan;
use crate::work::{Job, Step, Tally, Work, WorkName};

/// A repair: its scope, and for an apply, its run.
#[derive(Debug, Clone)]
pub struct Repair {
    /// The scope flags (`--project`, `--namespace`, `--limit`, the `--include-*` consent).
    pub scope: Scope,
    /// `repair apply`'s run; `None` for `repair plan`, which writes nothing.
    pub apply: Option<Apply>,
}

/// A candidate with what its plan needs besides the registry: the guards' facts (read in bulk
/// per page of candidates), the unique index's health when the page was read, the review reasons
/// the operator lifted.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub facts: ProjectFacts,
    pub index_safe: bool,
    pub consent: Consent,
}

impl Work for Repair {
    type Item = Candidate;
    type Found = ProjectPlan;
    type Source = Candidates;
    type Sink = Plans;

    const STEP: &'static str = "planning";

    fn name(&self) -> WorkName {
        match &self.apply {
            None => WorkName::RepairPlan,
            Some(apply) => WorkName::RepairApply { run: apply.run_id },
        }
    }

    async fn open(
        &self,
        _settings: &Settings,
        db: &Database,
        _member: &Arc<Member>,
    ) -> Result<Candidates, DbError> {
        Ok(Candidates::new(db.clone(), self.scope.clone()))
    }

    fn sink(&self, db: &Database) -> Plans {
        Plans::new(db.clone(), self.apply.clone())
    }

    async fn step(
        &self,
        registry: &RegistryClient,
        db: &Database,
        job: &Job<Candidate>,
    ) -> Step<ProjectPlan> {
        planning::plan(registry, db, &job.item, job.token.clone()).await
    }

    fn done(&self, job: &Job<Candidate>, plan: ProjectPlan) -> (PlanRecord, Tally) {
        tracing::debug!(
            project_id = job.project.id,
            repositories = plan.repositories.len(),
            "project planned"
        );
        let tally = Tally {
            missing: plan.repositories.len() as u64,
            ignored: plan.ignored,
            ..Tally::default()
        };
        (PlanRecord::Planned(plan), tally)
    }

    /// Nothing is written for it: it is reported failed in the plan or the result, with why.
    fn failed(&self, job: &Job<Candidate>, failure: Failure) -> PlanRecord {
        PlanRecord::NotPlanned(NotPlanned {
            project_id: job.project.id,
            full_path: job.item.facts.full_path.clone(),
            reason: failure.reason,
        })
    }
}
