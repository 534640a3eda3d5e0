//! `repair plan` and `repair apply` on the service's pipeline: a service started with
//! [`Work::Repair`], whose Scheduler walks the candidates in scope once, whose Analyzers plan each
//! project and whose Writer writes the plans (apply: one transaction per project, in batches, on
//! size, timer, failure and shutdown) or only collects them (plan). So they have what `run` has:
//! `worker.max_concurrency`, the feature flag with pause and resume, the breaker (a registry
//! outage waits instead of failing projects), the admin API (`status`, `concurrency`, `pause`,
//! `resume`, `/metrics`), progress, and draining on SIGTERM / SIGINT.
//!
//! An apply's run is recorded before the service starts and marked finished only when every
//! candidate was planned and flushed: a run stopped by a signal keeps `finished_at` NULL, and
//! `repair apply` again finishes the job.

use std::sync::Arc;

use crate::config::Settings;
use crate::db::repair::{discard_run, finish_apply, start_apply, Scope, Written};
use crate::db::{Database, DbError};
use crate::registry::TokenSigner;
use crate::repair::ProjectPlan;
use crate::scheduler::RunEnd;
use crate::service::{self, Service, ServiceOptions, StartError};
use crate::work::{Repair, RepairMode, Work};
use crate::writer::NotPlanned;

/// Why a repair could not run.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Database(#[from] DbError),
}

/// A repair under way.
pub struct Repairing {
    pub service: Service,
    /// The apply's run (`None` for a plan).
    pub run: Option<i64>,
    db: Database,
}

/// How a repair ended, and what it did.
#[derive(Debug)]
pub struct Repaired {
    pub end: RunEnd,
    pub run: Option<i64>,
    /// A plan's plans (empty for an apply).
    pub plans: Vec<ProjectPlan>,
    /// What an apply wrote, per project (empty for a plan).
    pub written: Vec<Written>,
    /// Projects that ended failed: nothing written for them.
    pub not_planned: Vec<NotPlanned>,
}

/// Starts a repair of `scope`: a plan, or (`apply`) a run that writes.
pub async fn start(
    settings: &Settings,
    signer: Arc<TokenSigner>,
    db: &Database,
    scope: Scope,
    apply: bool,
    options: ServiceOptions,
) -> Result<Repairing, PipelineError> {
    let run = match apply {
        true => Some(start_apply(db, &scope).await?),
        false => None,
    };
    let mode = run.map_or(RepairMode::Plan, |run_id| RepairMode::Apply { run_id });
    let options = ServiceOptions {
        work: Work::Repair(Repair { scope, mode }),
        ..options
    };
    let service = match service::start(settings, signer, options).await {
        Ok(service) => service,
        Err(error) => {
            // Nothing ran: no run to list (the admin port taken, the registry without its API).
            if let Some(run) = run {
                if let Err(discarding) = discard_run(db, run).await {
                    tracing::warn!(%discarding, run, "an apply run that never started stays listed");
                }
            }
            return Err(error.into());
        }
    };
    Ok(Repairing {
        service,
        run,
        db: db.clone(),
    })
}

impl Repairing {
    /// Waits for the repair to end (every candidate planned and flushed, or a shutdown), and
    /// records an apply's end when it is done.
    pub async fn wait(self) -> Result<Repaired, PipelineError> {
        let (end, collected) = self.service.wait_collected().await;
        match (&end, self.run) {
            (RunEnd::Done, Some(run)) => finish_apply(&self.db, run).await?,
            // Nothing was dispatched: no run to list.
            (RunEnd::RegistryWithoutApi(_), Some(run)) => discard_run(&self.db, run).await?,
            _ => {}
        }
        Ok(Repaired {
            end,
            run: self.run,
            plans: collected.plans,
            written: collected.written,
            not_planned: collected.not_planned,
        })
    }
}
