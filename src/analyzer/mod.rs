//! The Analyzer actor: one project at a time. It runs the work's step on the project (talking to
//! the registry, through its fence), sends what came of it to the Writer as the work's record,
//! and tells the Scheduler what became of the project. What the step found is the work's own;
//! what went wrong is classified alike for every work: deferred (the registry's or the
//! database's trouble), troubled (unclear, counted against the project only while the registry
//! serves others), failed, or handed back (the fence closed). A panic stops the actor, and its
//! Supervisor restarts it.

mod finished;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use actix::prelude::*;
use futures_util::FutureExt;

use crate::db::failures::{Failure, FailureCause};
use crate::db::projects::Project;
use crate::db::Database;
use crate::faults::Faults;
use crate::registry::{RegistryClient, RegistryError};
use crate::work::{Job, Sink, Step, StepError, Tally, Work};
use crate::writer::Record;

pub use self::finished::{AnalyzerFinished, Disposition};

/// A project whose step panics this many times is recorded failed instead of tried again.
pub const MAX_CRASHES: u32 = 3;
/// A project the registry refuses (401, 403, 429, a redirect, a bare 404) this many times, each
/// time while it answers the canary, is recorded failed: its own path is refused, not our key.
/// More than `MAX_TROUBLES`, since 429 is usually the registry's load rather than the project.
pub const MAX_DEFERRALS: u32 = 5;
/// A project whose step ends in unclear trouble (5xx, timeouts, broken answers after retries) this
/// many times, while the registry serves other projects, is recorded failed.
pub const MAX_TROUBLES: u32 = 3;

/// Why an attempt ended unrecorded, where it may be the project's own fault.
#[derive(Debug)]
enum Setback {
    /// 5xx, timeouts or broken answers after retries.
    Trouble(RegistryError),
    /// A refusal (401, 403, 429, a redirect, a bare 404), or the database.
    Refusal(StepError),
}

impl Setback {
    /// How often it happened to the project so far, and how often it may before it fails.
    fn count<'a, I>(&self, job: &'a mut Job<I>) -> (&'a mut u32, u32) {
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

/// The Writer's record of a work's projects.
type RecordOf<W> = <<W as Work>::Sink as Sink>::Record;

/// What every Analyzer shares.
pub struct AnalyzerDeps<W: Work> {
    /// The work whose step it runs.
    pub work: W,
    pub registry: RegistryClient,
    pub db: Database,
    pub writer: Recipient<Record<RecordOf<W>>>,
    pub faults: Arc<Faults>,
}

/// The canary: a top-level namespace no GitLab installation has. A registry that works answers
/// it 404 NAME_UNKNOWN, which it can only do after asking its metadata database; so an answer
/// shows the registry serves paths other than a troubled project's, from the first request of a
/// process on. (Should the namespace exist after all, its list is an answer just as good.)
pub const CANARY_PATH: &str = "registry-repair-canary";

pub struct Analyzer<W: Work> {
    id: usize,
    deps: Arc<AnalyzerDeps<W>>,
    scheduler: Recipient<AnalyzerFinished<W::Item>>,
    current: Option<Job<W::Item>>,
}

impl<W: Work> Analyzer<W> {
    pub fn new(
        id: usize,
        deps: Arc<AnalyzerDeps<W>>,
        scheduler: Recipient<AnalyzerFinished<W::Item>>,
    ) -> Self {
        Self {
            id,
            deps,
            scheduler,
            current: None,
        }
    }

    fn finish(&self, project_id: i64, disposition: Disposition<W::Item>) {
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
    fn setback(&self, mut job: Job<W::Item>, setback: Setback, others_served: bool) {
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

    /// What the step found goes to the Writer.
    fn done(&self, job: &Job<W::Item>, found: W::Found) {
        let (record, tally) = self.deps.work.done(job, found);
        self.deps.writer.do_send(Record(record));
        self.finish(job.project.id, Disposition::Recorded(tally));
    }

    /// The project ended failed: the Writer records it so, with why.
    fn fail(&self, job: &Job<W::Item>, failure: Failure) {
        self.deps
            .writer
            .do_send(Record(self.deps.work.failed(job, failure)));
        self.finish(job.project.id, Disposition::Recorded(Tally::failed()));
    }
}

impl<W: Work> Actor for Analyzer<W> {
    type Context = Context<Self>;
}

impl<W: Work> Supervised for Analyzer<W> {
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
            let failure = Failure::new(
                FailureCause::Crashed,
                format!("{} it panicked {crashes} times", W::STEP),
            );
            self.deps
                .writer
                .do_send(Record(self.deps.work.failed(&job, failure)));
            self.finish(job.project.id, Disposition::CrashedForGood);
        } else {
            self.finish(job.project.id, Disposition::Crashed(Job { crashes, ..job }));
        }
    }
}

/// Run the work's step on this project.
pub struct Analyze<I>(pub Job<I>);

impl<I: 'static> Message for Analyze<I> {
    type Result = ();
}

impl<W: Work> Handler<Analyze<W::Item>> for Analyzer<W> {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, Analyze(job): Analyze<W::Item>, _ctx: &mut Context<Self>) -> Self::Result {
        self.current = Some(job.clone());
        let deps = self.deps.clone();
        let running = job.clone();
        let work = async move {
            AssertUnwindSafe(async {
                let project = &running.project;
                deps.faults.analysis(project.id);
                let step = deps.work.step(&deps.registry, &deps.db, &running).await;
                // Whatever failed while the fence closed is void, not the registry's or the
                // project's trouble.
                let step = match step {
                    Step::Troubled { .. } | Step::Deferred { .. } if deps.registry.is_fenced() => {
                        Step::Fenced
                    }
                    step => step,
                };
                let others_served = match &step {
                    Step::Troubled { .. } | Step::Deferred { refused: true, .. } => {
                        registry_serves_others(&deps.registry, project).await
                    }
                    _ => false,
                };
                (step, others_served)
            })
            .catch_unwind()
            .await
        };
        Box::pin(work.into_actor(self).map(move |result, act, ctx| {
            let Ok((step, others_served)) = result else {
                tracing::error!(
                    analyzer = act.id,
                    project_id = job.project.id,
                    "the step panicked"
                );
                // The Supervisor restarts us; `restarting` hands the project back.
                ctx.stop();
                return;
            };
            act.current = None;
            let project_id = job.project.id;
            match step {
                Step::Done(found) => act.done(&job, found),
                Step::Failed { reason } => {
                    tracing::warn!(project_id, %reason, "project failed");
                    act.fail(
                        &job,
                        Failure::new(reason.failure_cause(), reason.to_string()),
                    );
                }
                Step::Deferred { reason, .. } => {
                    act.setback(job, Setback::Refusal(reason), others_served)
                }
                Step::Troubled { reason } => {
                    act.setback(job, Setback::Trouble(reason), others_served)
                }
                Step::Fenced => {
                    tracing::debug!(
                        project_id,
                        "project handed back: this member's hold on its work lapsed"
                    );
                    act.finish(project_id, Disposition::Fenced(job));
                }
            }
        }))
    }
}

/// Whether the registry answers for another path right now (the canary): one request, no retry.
async fn registry_serves_others(registry: &RegistryClient, project: &Project) -> bool {
    if project.registry_path().as_deref() == Some(CANARY_PATH) {
        return false;
    }
    canary_answers(registry).await
}

/// Whether the registry answers the canary right now: one request, no retry.
pub async fn canary_answers(registry: &RegistryClient) -> bool {
    registry.pages(CANARY_PATH).next_page().await.is_ok()
}
