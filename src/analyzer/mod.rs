//! The Analyzer actor: one project at a time. For an analysis it walks the project's pages in the
//! registry, asks the database which of each page's names it knows, sends the result to the Writer
//! and tells the Scheduler it is free again; for a repair it plans the project instead (`repair`)
//! and sends the Writer the plan. Failures are classified alike for both (deferred, troubled,
//! failed). A panic stops the actor, and its Supervisor restarts it.

mod analysis;
mod finished;
mod repair;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use actix::prelude::*;
use futures_util::FutureExt;

use crate::db::failures::{Failure, FailureCause};
use crate::db::missing::MissingRepository;
use crate::db::projects::Project;
use crate::db::tracking::{Replaces, TrackingRow};
use crate::db::{Database, DbError};
use crate::faults::Faults;
use crate::registry::token::SharedToken;
use crate::registry::{Blame, RegistryClient, RegistryError};
use crate::repair::ProjectPlan;
use crate::writer::{NotPlanned, Record, RecordNotPlanned, RecordPlan, Writer};

pub use self::analysis::analyze;
pub use self::finished::{AnalyzerFinished, Disposition, Found};
pub use self::repair::RepairCandidate;

/// A project whose analysis panics this many times is recorded `failed` instead of retried.
pub const MAX_CRASHES: u32 = 3;
/// A project the registry refuses (401, 403, 429, a redirect, a bare 404) this many times, each
/// time while it answers the canary, is recorded `failed`: its own path is refused, not our key.
/// More than `MAX_TROUBLES`, since 429 is usually the registry's load rather than the project.
pub const MAX_DEFERRALS: u32 = 5;
/// A project whose analysis ends in unclear trouble (5xx, timeouts, broken answers after retries)
/// this many times, while the registry serves other projects, is recorded `failed`.
pub const MAX_TROUBLES: u32 = 3;

/// One project's work, and what befell its earlier attempts: analysed (its missing repositories
/// counted, a tracking row recorded), or, for a repair's candidate, planned (the plan written or
/// collected).
#[derive(Debug, Clone)]
pub struct Job {
    pub project: Project,
    pub crashes: u32,
    pub troubles: u32,
    /// Refusals while the registry answered the canary.
    pub deferrals: u32,
    /// Which row already there its result replaces: one still `failed` (`run --retry-failed`),
    /// or one counted without its repositories (itemising).
    pub replaces: Replaces,
    /// The token this project shares with the others of its dispatch batch.
    pub token: Option<Arc<SharedToken>>,
    /// A repair's candidate, with what its plan needs; `None`: the project is analysed.
    pub candidate: Option<Box<RepairCandidate>>,
}

impl Job {
    /// The analysis of `project`, not tried yet.
    pub fn new(project: Project) -> Self {
        Self {
            project,
            crashes: 0,
            troubles: 0,
            deferrals: 0,
            replaces: Replaces::Nothing,
            token: None,
            candidate: None,
        }
    }
}

/// Why a project was not analysed, this time or for good.
#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
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

impl AnalysisError {
    /// What kind of failure this is when it fails its project. Only no route, a 4xx of the
    /// project's own, too many pages and a hostile listing do so at once; the others are named by
    /// what they are, as the setbacks they otherwise are.
    fn failure_cause(&self) -> FailureCause {
        match self {
            AnalysisError::NoRoute => FailureCause::NoRoute,
            AnalysisError::Registry(RegistryError::TooManyPages { .. }) => {
                FailureCause::TooManyPages
            }
            AnalysisError::Registry(RegistryError::HostileName { .. }) => {
                FailureCause::HostileAnswer
            }
            AnalysisError::Registry(error) => match error.blame() {
                Blame::Project => FailureCause::RegistryRefusedPath,
                Blame::Unclear => FailureCause::Troubled,
                Blame::Registry => FailureCause::Refused,
            },
            AnalysisError::SizesUnavailable { .. } => FailureCause::Troubled,
            AnalysisError::Database(_) => FailureCause::Refused,
        }
    }
}

/// What analysing one project found.
#[derive(Debug)]
pub enum Analysis {
    /// The project's registry path breaks the registry's name grammar: no repository can exist
    /// under it, so nothing was asked and nothing is missing.
    Unaddressable,
    /// Every page was read: `missing` are the repositories GitLab has no row for.
    Completed {
        missing: Vec<MissingRepository>,
        ignored: u32,
        pages: u32,
    },
    /// A repair's plan for the project (nothing written yet).
    Planned(Box<ProjectPlan>),
    /// The project cannot be analysed on its own account.
    Failed { reason: AnalysisError },
    /// Something outside this project failed (registry unreachable or rejecting us, database
    /// down): the project must be analysed again later, and nothing recorded now. `refused`: the
    /// registry answered this project's request with a refusal (401, 403, 429, a redirect, a bare
    /// 404), which is the project's own if the registry serves others meanwhile.
    Deferred {
        reason: AnalysisError,
        refused: bool,
    },
    /// 5xx, timeouts or broken answers after retries: the project's fault only if the registry
    /// serves others meanwhile.
    Troubled { reason: RegistryError },
    /// This process's hold on its work lapsed mid-project ([`crate::fence`]): what was asked is
    /// void, nobody's fault; the project goes back.
    Fenced,
}

impl Analysis {
    /// A registry request failed after its retries: whose fault it is decides what follows.
    fn registry_failed(error: RegistryError) -> Self {
        if let RegistryError::Fenced { .. } = error {
            return Analysis::Fenced;
        }
        match error.blame() {
            Blame::Registry => Analysis::Deferred {
                refused: matches!(error, RegistryError::Status { .. }),
                reason: error.into(),
            },
            Blame::Unclear => Analysis::Troubled { reason: error },
            Blame::Project => Analysis::Failed {
                reason: error.into(),
            },
        }
    }
}

/// Why an attempt ended unrecorded, where it may be the project's own fault.
#[derive(Debug)]
enum Setback {
    /// 5xx, timeouts or broken answers after retries.
    Trouble(RegistryError),
    /// A refusal (401, 403, 429, a redirect, a bare 404), or the database.
    Refusal(AnalysisError),
}

impl Setback {
    /// How often it happened to the project so far, and how often it may before it fails.
    fn count<'a>(&self, job: &'a mut Job) -> (&'a mut u32, u32) {
        match self {
            Setback::Trouble(_) => (&mut job.troubles, MAX_TROUBLES),
            Setback::Refusal(_) => (&mut job.deferrals, MAX_DEFERRALS),
        }
    }

    /// As the log shows it.
    fn kind(&self) -> &'static str {
        match self {
            Setback::Trouble(_) => "Trouble",
            Setback::Refusal(_) => "Refusal",
        }
    }

    /// The failure it ends in once it happened `count` times while the registry served others.
    fn failure(&self, count: u32) -> Failure {
        let cause = match self {
            Setback::Trouble(_) => FailureCause::Troubled,
            Setback::Refusal(_) => FailureCause::Refused,
        };
        Failure::new(
            cause,
            format!("{self} ({count} times, each while the registry answered other paths)"),
        )
    }
}

impl std::fmt::Display for Setback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Setback::Trouble(reason) => reason.fmt(f),
            Setback::Refusal(reason) => reason.fmt(f),
        }
    }
}

/// What every Analyzer shares.
pub struct AnalyzerDeps {
    pub registry: RegistryClient,
    pub db: Database,
    pub writer: Addr<Writer>,
    pub faults: Arc<Faults>,
    /// `analysis.sizes`: ask the size of every missing repository.
    pub sizes: bool,
}

/// The canary: a top-level namespace no GitLab installation has. A registry that works answers
/// it 404 NAME_UNKNOWN, which it can only do after asking its metadata database; so an answer
/// shows the registry serves paths other than a troubled project's, from the first request of a
/// process on. (Should the namespace exist after all, its list is an answer just as good.)
pub const CANARY_PATH: &str = "registry-repair-canary";

pub struct Analyzer {
    id: usize,
    deps: Arc<AnalyzerDeps>,
    scheduler: Recipient<AnalyzerFinished>,
    current: Option<Job>,
}

impl Analyzer {
    pub fn new(id: usize, deps: Arc<AnalyzerDeps>, scheduler: Recipient<AnalyzerFinished>) -> Self {
        Self {
            id,
            deps,
            scheduler,
            current: None,
        }
    }

    fn finish(&self, project_id: i64, disposition: Disposition) {
        self.scheduler.do_send(AnalyzerFinished {
            analyzer: self.id,
            project_id,
            disposition,
        });
    }

    /// An attempt that ended unrecorded for a reason that may be the project's own: unclear
    /// trouble (5xx, timeouts, broken answers) or a refusal (401, 403, 429, a redirect, a bare
    /// 404; or the database). It counts against the project only when the registry answered the
    /// canary right after (`others_served`); the project fails once it has had its share, so that
    /// one path cannot hold up a pass for ever. Until then it goes back to the queue unrecorded.
    fn setback(&self, mut job: Job, setback: Setback, others_served: bool) {
        let project_id = job.project.id;
        let (count, max) = setback.count(&mut job);
        if others_served {
            *count += 1;
        }
        let count = *count;
        let (kind, reason) = (setback.kind(), &setback);
        if count >= max {
            tracing::warn!(project_id, %kind, count, %reason, "project failed: the registry serves others but not it");
            self.fail(&job, setback.failure(count));
            return;
        }
        tracing::info!(project_id, %kind, count, %reason, "project not analysed this time; it will be tried again");
        let disposition = match setback {
            Setback::Trouble(reason) => Disposition::Troubled {
                job,
                reason,
                others_served,
            },
            Setback::Refusal(reason) => Disposition::Deferred {
                job,
                reason,
                others_served,
            },
        };
        self.finish(project_id, disposition);
    }

    /// Sends the result to the Writer; `ignored` entries outside the path are counted in status.
    fn record(&self, job: &Job, row: TrackingRow, ignored: u32) {
        let mut row = row.replacing(job.replaces);
        let project_id = row.project_id;
        let found = Found::of(&row.repositories);
        let repositories = std::mem::take(&mut row.repositories);
        self.deps.writer.do_send(Record(TrackingRow {
            repositories,
            ..row.clone()
        }));
        self.finish(
            project_id,
            Disposition::Recorded {
                row,
                found,
                ignored,
                unaddressable: false,
            },
        );
    }

    /// The project ended failed: an analysis records a `failed` row, with why; a repair writes
    /// nothing for it and reports it failed in the plan or result, with the reason.
    fn fail(&self, job: &Job, failure: Failure) {
        let project_id = job.project.id;
        match &job.candidate {
            None => self.record(job, TrackingRow::failed(project_id, failure), 0),
            Some(candidate) => {
                self.deps.writer.do_send(RecordNotPlanned(NotPlanned {
                    project_id,
                    full_path: candidate.facts.full_path.clone(),
                    reason: failure.reason,
                }));
                self.finish(project_id, Disposition::NotPlanned);
            }
        }
    }

    /// A repair's plan goes to the Writer.
    fn planned(&self, plan: ProjectPlan) {
        let project_id = plan.project_id;
        let disposition = Disposition::Planned {
            ignored: plan.ignored,
            repositories: plan.repositories.len(),
        };
        self.deps.writer.do_send(RecordPlan(plan));
        self.finish(project_id, disposition);
    }

    fn record_unaddressable(&self, job: &Job) {
        let project_id = job.project.id;
        let row = TrackingRow::completed(project_id, 0).replacing(job.replaces);
        self.deps.writer.do_send(Record(row.clone()));
        self.finish(
            project_id,
            Disposition::Recorded {
                row,
                found: Found::default(),
                ignored: 0,
                unaddressable: true,
            },
        );
    }
}

impl Actor for Analyzer {
    type Context = Context<Self>;
}

impl Supervised for Analyzer {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        let Some(job) = self.current.take() else {
            return;
        };
        let crashes = job.crashes + 1;
        tracing::warn!(
            analyzer = self.id,
            project_id = job.project.id,
            crashes,
            "analyzer restarted after a panic"
        );
        if crashes >= MAX_CRASHES {
            match &job.candidate {
                None => self.deps.writer.do_send(Record(
                    TrackingRow::failed(
                        job.project.id,
                        Failure::new(
                            FailureCause::Crashed,
                            format!("analysing it panicked {crashes} times"),
                        ),
                    )
                    .replacing(job.replaces),
                )),
                Some(candidate) => self.deps.writer.do_send(RecordNotPlanned(NotPlanned {
                    project_id: job.project.id,
                    full_path: candidate.facts.full_path.clone(),
                    reason: format!("planning it panicked {crashes} times"),
                })),
            }
            self.finish(job.project.id, Disposition::CrashedForGood);
        } else {
            self.finish(job.project.id, Disposition::Crashed(Job { crashes, ..job }));
        }
    }
}

/// Analyse this project (or plan its repair).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Analyze(pub Job);

impl Handler<Analyze> for Analyzer {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, Analyze(job): Analyze, _ctx: &mut Context<Self>) -> Self::Result {
        self.current = Some(job.clone());
        let deps = self.deps.clone();
        let project = job.project.clone();
        let token = job.token.clone();
        let candidate = job.candidate.clone();
        let work = async move {
            AssertUnwindSafe(async {
                deps.faults.analysis(project.id);
                let analysis = match &candidate {
                    None => analyze(&deps.registry, &deps.db, &project, token, deps.sizes).await,
                    Some(candidate) => {
                        repair::plan(&deps.registry, &deps.db, candidate, token).await
                    }
                };
                // Whatever failed while the fence closed is void, not the registry's or the
                // project's trouble.
                let analysis = match analysis {
                    Analysis::Troubled { .. } | Analysis::Deferred { .. }
                        if deps.registry.is_fenced() =>
                    {
                        Analysis::Fenced
                    }
                    analysis => analysis,
                };
                let others_served = match &analysis {
                    Analysis::Troubled { .. } | Analysis::Deferred { refused: true, .. } => {
                        registry_serves_others(&deps, &project).await
                    }
                    _ => false,
                };
                (analysis, others_served)
            })
            .catch_unwind()
            .await
        };
        Box::pin(work.into_actor(self).map(move |result, act, ctx| {
            let Ok((analysis, others_served)) = result else {
                tracing::error!(
                    analyzer = act.id,
                    project_id = job.project.id,
                    "analysis panicked"
                );
                // The Supervisor restarts us; `restarting` hands the project back.
                ctx.stop();
                return;
            };
            act.current = None;
            let project_id = job.project.id;
            match analysis {
                Analysis::Completed {
                    missing,
                    ignored,
                    pages,
                } => {
                    tracing::debug!(project_id, missing = missing.len(), ignored, pages, "project analysed");
                    act.record(&job, TrackingRow::completed_with(project_id, missing), ignored);
                }
                Analysis::Unaddressable => {
                    tracing::info!(
                        project_id,
                        path = job.project.full_path.as_deref().unwrap_or_default(),
                        "the registry cannot hold repositories under this path; recorded with 0 missing"
                    );
                    act.record_unaddressable(&job);
                }
                Analysis::Planned(plan) => {
                    tracing::debug!(project_id, repositories = plan.repositories.len(), "project planned");
                    act.planned(*plan);
                }
                Analysis::Failed { reason } => {
                    tracing::warn!(project_id, %reason, "project failed");
                    act.fail(&job, Failure::new(reason.failure_cause(), reason.to_string()));
                }
                Analysis::Deferred { reason, .. } => {
                    act.setback(job, Setback::Refusal(reason), others_served)
                }
                Analysis::Troubled { reason } => {
                    act.setback(job, Setback::Trouble(reason), others_served)
                }
                Analysis::Fenced => {
                    tracing::debug!(project_id, "project handed back: this member's hold on its work lapsed");
                    act.finish(project_id, Disposition::Fenced(job));
                }
            }
        }))
    }
}

/// Whether the registry answers for another path right now (the canary): one request, no retry.
async fn registry_serves_others(deps: &AnalyzerDeps, project: &Project) -> bool {
    if project.registry_path().as_deref() == Some(CANARY_PATH) {
        return false;
    }
    canary_answers(&deps.registry).await
}

/// Whether the registry answers the canary right now: one request, no retry.
async fn canary_answers(registry: &RegistryClient) -> bool {
    registry.pages(CANARY_PATH).next_page().await.is_ok()
}
