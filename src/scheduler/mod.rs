//! The Scheduler actor: asks its work's [`Source`] for the projects to work on, keeps a bounded
//! queue of them, and hands each to an idle Analyzer while fewer than its share are in flight. It
//! alone decides what runs: concurrency, pause and resume, the end of a pass all arrive here as
//! messages, defined here beside the actor that receives them (`Shutdown` beside its handling);
//! the events it receives from below ([`AnalyzerFinished`], [`WriterPressure`]) are defined by
//! their senders. It is generic over the [`Work`], whose source it reads; everything else is its
//! own, the same for every work, split by concern: `pool` (the Analyzers and dispatching),
//! `outage` (the breaker and its probes), `share` (the Scheduler as a member of the fleet),
//! `shutdown` (draining), `accounting` (counts, status) and `addr` (its address, whatever its
//! work, for those who steer it).

mod accounting;
mod addr;
mod breaker;
mod outage;
mod pool;
mod share;
mod shutdown;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;

use self::accounting::Accounting;
pub use self::accounting::{BreakerPosition, ServiceState, ServiceStatus};
pub use self::addr::{SchedulerAddr, Takes};
use self::breaker::{Breaker, State as BreakerState};
use self::pool::Slot;
pub use self::share::{
    AdoptSwitches, FleetReport, MemberReport, MembershipConfirmed, SetShare, SwitchesChanged,
};
pub use self::shutdown::Shutdown;
use crate::analyzer::{AnalyzerDeps, AnalyzerFinished, Disposition};
use crate::registry::{NoGitlabApi, RegistryClient};
use crate::work::{Job, NextPass, Refused, Source, StepError, Work, WorkName, WriteError};
use crate::writer::{Flush, GetWriterStats, Writer, WriterPressure};

/// A work's Writer.
type WriterOf<W> = Writer<<W as Work>::Sink>;

/// Projects read per keyset query at most; the queue is refilled when it falls below half of a
/// read.
const FETCH_BATCH: i64 = 1000;
/// Projects read per query for each project this instance may have in flight: enough for a few
/// seconds of work at any latency worth having, and no more, so that in a fleet a member does not
/// hold projects that idle members could work on.
const READ_PER_SLOT: i64 = 25;
const RETRY_DB: Duration = Duration::from_secs(1);

/// How the Scheduler runs, whatever its work.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// `worker.max_concurrency` as this instance was told it (in a fleet, the fleet's total): at
    /// most this many projects in flight; 0 pauses.
    pub max_concurrency: usize,
    /// The feature flag.
    pub enabled: bool,
    /// On shutdown, how long in-flight projects may take.
    pub shutdown_timeout: Duration,
    /// How often a progress line is logged.
    pub progress_interval: Duration,
    /// Why the registry's GitLab API is not confirmed yet (it did not answer at start): then
    /// nothing is dispatched until a probe answers, and an answer without the API ends the run.
    pub registry_unconfirmed: Option<String>,
    /// What the service does, as `status` names it.
    pub work: WorkName,
}

/// How a run ended.
#[derive(Debug, PartialEq)]
pub enum RunEnd {
    /// The work's source said the run is over after a pass (every project it had was done or
    /// failed), and everything is flushed.
    Done,
    /// Stopped by a signal; everything that finished in time is flushed.
    Stopped,
    /// Stopped, but the last flush failed: those projects are done again next time.
    FlushFailed(WriteError),
    /// The registry answered, but without GitLab's API, before anything was dispatched: no
    /// project can be done until its configuration changes.
    RegistryWithoutApi(NoGitlabApi),
    /// The fleet took this instance for dead (its heartbeat stopped for longer than
    /// `fleet.member_timeout_ms`) and gave its work to others: it stopped at once.
    LostMembership,
    /// The database refused a statement for a reason no retry mends (a grant the role lacks): it
    /// stopped at once; what was done is flushed if the database takes it.
    Refused(Refused),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Walking projects and dispatching them.
    Running,
    /// The pass is over; waiting for the Writer to flush before the next pass.
    Flushing,
    /// Nothing was left to do; waiting before looking again.
    Idle,
    /// Shutting down: no new dispatch, in-flight projects finishing.
    Draining,
    Finished,
}

/// The registry as the Scheduler sees it: the breaker, and whether it is known to have GitLab's
/// API.
struct Outage {
    breaker: Breaker,
    /// The breaker's opening was logged (one warning line per outage).
    reported_open: bool,
    /// `GET /gitlab/v1/` has answered 200 or 401 once.
    confirmed: bool,
}

pub struct Scheduler<W: Work> {
    /// Probes, and signs batch tokens ahead of need.
    registry: RegistryClient,
    /// Flushes at the end of a pass and on shutdown.
    writer: Addr<WriterOf<W>>,
    /// What each Analyzer the pool grows by is started with.
    analyzer_deps: Arc<AnalyzerDeps<W>>,
    config: SchedulerConfig,
    source: W::Source,
    slots: Vec<Slot<W>>,
    queue: VecDeque<Job<W::Item>>,
    phase: Phase,
    writer_full: bool,
    outage: Outage,
    accounting: Accounting,
    finished: Option<oneshot::Sender<RunEnd>>,
    /// In a fleet: this instance's share of the fleet's concurrency, as the Fleet gave it
    /// (`None`: alone, all of it); `share()` never lets it exceed `max_concurrency`.
    share: Option<usize>,
    /// In a fleet: told when this instance is given a new concurrency or flag.
    switches_listener: Option<Recipient<SwitchesChanged>>,
    /// The fleet gave this instance's work to others: the run ends as `LostMembership`.
    lost: bool,
    /// The database refused what no retry mends: the run ends as `Refused`.
    refused: Option<Refused>,
}

impl<W: Work> Scheduler<W> {
    pub fn new(
        registry: RegistryClient,
        writer: Addr<WriterOf<W>>,
        analyzer_deps: Arc<AnalyzerDeps<W>>,
        config: SchedulerConfig,
        source: W::Source,
        finished: oneshot::Sender<RunEnd>,
    ) -> Self {
        let outage = Outage {
            breaker: match &config.registry_unconfirmed {
                Some(reason) => Breaker::waiting_for_registry(reason.clone()),
                None => Breaker::default(),
            },
            reported_open: false,
            confirmed: config.registry_unconfirmed.is_none(),
        };
        Self {
            registry,
            writer,
            analyzer_deps,
            config,
            source,
            slots: Vec::new(),
            queue: VecDeque::new(),
            phase: Phase::Running,
            writer_full: false,
            outage,
            accounting: Accounting::new(),
            finished: Some(finished),
            share: None,
            switches_listener: None,
            lost: false,
            refused: None,
        }
    }

    /// As a member of a fleet: no project is dispatched until the fleet gives this instance a
    /// share, and `listener` is told what this instance is told to use.
    pub fn in_fleet(mut self, listener: Recipient<SwitchesChanged>) -> Self {
        self.share = Some(0);
        self.switches_listener = Some(listener);
        self
    }

    /// Everything the Scheduler does after an event: refill, dispatch, end the pass. Nothing while
    /// the fence is closed: this member's hold on its work lapsed, and until a heartbeat confirms
    /// it again it reads, asks and ends nothing.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.registry.is_fenced() {
            return;
        }
        self.refill(ctx);
        self.dispatch(ctx);
        self.end_pass_if_done(ctx);
    }

    /// Asks the source for the next read when the queue runs low.
    fn refill(&mut self, ctx: &mut Context<Self>) {
        let Some(want) = self.read_size() else {
            return;
        };
        if self.phase != Phase::Running || self.queue.len() as i64 >= want / 2 {
            return;
        }
        let Some(reading) = self.source.next_read(want) else {
            return;
        };
        let reading = async move {
            let started = Instant::now();
            let read = reading.await;
            (read, started.elapsed())
        };
        ctx.spawn(reading.into_actor(self).map(|(read, took), act, ctx| {
            act.accounting.fetched(took);
            if act.phase != Phase::Running {
                act.source.dropped(); // an answer from before a shutdown
                return;
            }
            match act.source.took(read) {
                Ok(jobs) => {
                    act.enqueue(jobs);
                    act.tick(ctx);
                }
                Err(error) if error.lasts() => act.refuse(Refused(Arc::new(error)), ctx),
                Err(error) => {
                    tracing::warn!(%error, "reading projects failed; retrying");
                    ctx.run_later(RETRY_DB, |act, ctx| act.tick(ctx));
                }
            }
        }));
    }

    /// How many projects one read asks for: a full batch while this instance's share is the whole
    /// of `max_concurrency`; in a fleet, as many as its share can work on soon, and none while it
    /// has no share (it asks for one: it has a pass to read). A source of its own is read whole.
    fn read_size(&self) -> Option<i64> {
        if !self.source.shared_with_the_fleet() {
            return Some(FETCH_BATCH);
        }
        match self.share {
            Some(0) => None,
            Some(share) if share < self.config.max_concurrency => Some(
                i64::try_from(share)
                    .unwrap_or(i64::MAX)
                    .saturating_mul(READ_PER_SLOT)
                    .clamp(READ_PER_SLOT, FETCH_BATCH),
            ),
            _ => Some(FETCH_BATCH),
        }
    }

    /// Queues `jobs`, each with the token its dispatch batch shares (see
    /// [`RegistryClient::share_tokens`]).
    fn enqueue(&mut self, jobs: Vec<Job<W::Item>>) {
        let tokens = self
            .registry
            .share_tokens(jobs.iter().map(|job| job.project.registry_path()).collect());
        self.queue
            .extend(jobs.into_iter().zip(tokens).map(|(job, token)| Job {
                token: Some(token),
                ..job
            }));
    }

    /// Every project of the pass was read, dispatched and came back: have the Writer flush, then
    /// ask the source what follows. Flushing first matters: projects whose results are still
    /// buffered would be found without a row and analysed twice.
    fn end_pass_if_done(&mut self, ctx: &mut Context<Self>) {
        if self.phase != Phase::Running
            || !self.source.pass_read()
            || !self.queue.is_empty()
            || self.in_flight() > 0
        {
            return;
        }
        self.phase = Phase::Flushing;
        let flush = self.writer.send(Flush::PassEnd);
        let end = self.source.end_pass();
        let work = async move {
            let flushed = flush.await;
            let ended = match flushed {
                Ok(Ok(_)) => Some(end.await),
                _ => None,
            };
            (flushed, ended)
        };
        ctx.spawn(work.into_actor(self).map(|(flushed, ended), act, ctx| {
            let next = ended.map(|end| act.source.pass_ended(end));
            if act.phase != Phase::Flushing {
                return;
            }
            match (flushed, next) {
                (Ok(Ok(_)), Some(next)) => act.next_pass(next, ctx),
                (Ok(Err(reason)), _) => act.pass_flush_failed(&reason, ctx),
                _ => act.pass_flush_failed(&WriteError::WriterStopped, ctx),
            }
        }));
    }

    /// The flush that ends a pass failed: keep walking, and try to end the pass again.
    fn pass_flush_failed(&mut self, reason: &WriteError, ctx: &mut Context<Self>) {
        if let Some(refused) = reason.refused() {
            self.refuse(refused, ctx);
            return;
        }
        tracing::warn!(%reason, "flush at the end of a pass failed; retrying");
        self.phase = Phase::Running;
        ctx.run_later(RETRY_DB, |act, ctx| act.tick(ctx));
    }

    fn next_pass(&mut self, next: NextPass, ctx: &mut Context<Self>) {
        match next {
            NextPass::Now => self.start_pass(ctx),
            NextPass::After(wait) => {
                self.phase = Phase::Idle;
                ctx.run_later(wait, |act, ctx| {
                    if act.phase == Phase::Idle {
                        act.start_pass(ctx);
                    }
                });
            }
            NextPass::Done => {
                tracing::info!("every project was done and flushed");
                self.finish(RunEnd::Done);
            }
        }
    }

    fn start_pass(&mut self, ctx: &mut Context<Self>) {
        self.source.start_pass();
        self.phase = Phase::Running;
        self.count(ctx);
        self.tick(ctx);
    }

    /// Counts the work left in the background, for progress and an ETA.
    fn count(&mut self, ctx: &mut Context<Self>) {
        let count = self.source.count();
        ctx.spawn(
            count
                .into_actor(self)
                .map(|counted, act, _ctx| match counted {
                    Ok(Some(left)) => act.accounting.counted(left),
                    Ok(None) => {}
                    Err(error) => tracing::debug!(%error, "counting the projects left failed"),
                }),
        );
    }

    /// The source's duties of its own (a watermark to move, a sweep to start), every few seconds.
    fn periodic(&mut self, ctx: &mut Context<Self>) {
        if self.phase == Phase::Finished || self.registry.is_fenced() {
            return;
        }
        let Some(duties) = self.source.periodic() else {
            return;
        };
        ctx.spawn(duties.into_actor(self).map(|periodic, act, ctx| {
            if act.source.periodic_done(periodic) {
                match act.phase {
                    Phase::Idle => act.start_pass(ctx),
                    Phase::Running | Phase::Flushing => act.tick(ctx),
                    Phase::Draining | Phase::Finished => {}
                }
            }
        }));
    }

    /// The database refused what no retry mends: stop at once, as a shutdown does without waiting
    /// for the projects in flight (they are done again next time), and end as `Refused`. The one
    /// place every retry of the pipeline turns to when [`crate::db::DbError::lasts`] says so.
    fn refuse(&mut self, refused: Refused, ctx: &mut Context<Self>) {
        if self.refused.is_some() || matches!(self.phase, Phase::Finished) {
            return;
        }
        tracing::error!(error = %refused, in_flight = self.in_flight(), "the database refuses this service what no retry mends; stopping");
        self.refused = Some(refused);
        self.phase = Phase::Draining;
        self.queue.clear();
        self.finalize(ctx);
    }

    fn finish(&mut self, end: RunEnd) {
        self.phase = Phase::Finished;
        if let Some(tx) = self.finished.take() {
            let _ = tx.send(end);
        }
    }

    fn state(&self) -> ServiceState {
        match self.phase {
            Phase::Draining => ServiceState::Draining,
            Phase::Finished => ServiceState::Stopped,
            _ if self.registry.is_fenced() => ServiceState::Fenced,
            _ if !self.config.enabled => ServiceState::Paused,
            _ if self.config.max_concurrency == 0 => ServiceState::PausedByConcurrency,
            _ if self.share == Some(0) => ServiceState::WaitingForAShare,
            _ if self.outage.breaker.state() != BreakerState::Closed => {
                ServiceState::RegistryUnavailable
            }
            _ if self.writer_full => ServiceState::WaitingForTheWriter,
            Phase::Idle => ServiceState::Idle,
            Phase::Running | Phase::Flushing => ServiceState::Running,
        }
    }

    fn status(&self) -> ServiceStatus {
        let status = ServiceStatus {
            state: self.state(),
            work: self.config.work,
            enabled: self.config.enabled,
            max_concurrency: self.config.max_concurrency,
            share: self.share,
            in_flight: self.in_flight(),
            queued: self.queue.len(),
            analyzers: self.slots.len(),
            writer_full: self.writer_full,
            writer: None,
            breaker: self.outage.breaker.position(),
            breaker_trips: self.outage.breaker.trips(),
            last_error: self.outage.breaker.last_error().map(str::to_string),
            ..self.accounting.status()
        };
        let unanswered = (status.queued + status.in_flight) as u64;
        let source = self.source.status(unanswered);
        let remaining = source.remaining;
        ServiceStatus {
            pass: source.pass,
            watermark: source.watermark,
            sweeping: source.sweeping,
            sweeps: source.sweeps,
            remaining: remaining.map_or(status.remaining, |r| Some(r.left)),
            remaining_estimated: remaining.is_some_and(|r| r.estimated),
            eta_s: remaining.map_or(status.eta_s, |r| r.eta_s),
            ..status
        }
    }
}

impl<W: Work> Actor for Scheduler<W> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        tracing::info!(
            max_concurrency = self.config.max_concurrency,
            enabled = self.config.enabled,
            work = %self.config.work,
            from = self.source.cursor(),
            "scheduler started"
        );
        if let Some(reason) = &self.config.registry_unconfirmed {
            tracing::warn!(%reason, "the registry does not answer yet; nothing is dispatched until it does");
            self.outage.reported_open = true;
            ctx.run_later(self.outage.breaker.probe_delay(), |act, ctx| act.probe(ctx));
        }
        self.source.started();
        if let Some(every) = self.source.period() {
            ctx.run_interval(every, |act, ctx| act.periodic(ctx));
        }
        self.count(ctx);
        ctx.run_interval(self.config.progress_interval, |act, _ctx| {
            if act.phase != Phase::Finished {
                Accounting::log_progress(&act.status());
            }
        });
        self.tick(ctx);
    }
}

#[derive(Message)]
#[rtype(result = "ServiceStatus")]
pub struct GetStatus;

impl<W: Work> Handler<GetStatus> for Scheduler<W> {
    type Result = ResponseActFuture<Self, ServiceStatus>;

    fn handle(&mut self, _msg: GetStatus, _ctx: &mut Context<Self>) -> Self::Result {
        let writer = self.writer.send(GetWriterStats);
        Box::pin(writer.into_actor(self).map(|stats, act, _ctx| {
            let mut status = act.status();
            status.writer = stats.ok();
            status
        }))
    }
}

/// Use at most this many projects in flight from now on; 0 pauses.
#[derive(Message)]
#[rtype(result = "ServiceStatus")]
pub struct SetConcurrency(pub usize);

impl<W: Work> Handler<SetConcurrency> for Scheduler<W> {
    type Result = MessageResult<SetConcurrency>;

    fn handle(
        &mut self,
        SetConcurrency(max_concurrency): SetConcurrency,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        if max_concurrency != self.config.max_concurrency {
            tracing::info!(
                from = self.config.max_concurrency,
                to = max_concurrency,
                "max concurrency changed"
            );
            self.config.max_concurrency = max_concurrency;
            self.switches_changed();
        }
        // Lowering takes effect as in-flight projects finish: none is interrupted.
        self.tick(ctx);
        MessageResult(self.status())
    }
}

/// Switch the feature flag: off stops dispatching, in-flight projects finish and are recorded.
#[derive(Message)]
#[rtype(result = "ServiceStatus")]
pub struct SetEnabled(pub bool);

impl<W: Work> Handler<SetEnabled> for Scheduler<W> {
    type Result = MessageResult<SetEnabled>;

    fn handle(&mut self, SetEnabled(enabled): SetEnabled, ctx: &mut Context<Self>) -> Self::Result {
        if enabled != self.config.enabled {
            tracing::info!(enabled, "feature flag switched");
            self.config.enabled = enabled;
            self.switches_changed();
        }
        self.tick(ctx);
        MessageResult(self.status())
    }
}

impl<W: Work> Handler<AnalyzerFinished<W::Item>> for Scheduler<W> {
    type Result = ();

    fn handle(&mut self, msg: AnalyzerFinished<W::Item>, ctx: &mut Context<Self>) {
        self.freed(msg.analyzer, msg.project_id);
        self.accounting.record(&msg.disposition);
        match msg.disposition {
            Disposition::Deferred {
                reason: StepError::Database(error),
                ..
            } if error.lasts() => {
                self.refuse(Refused(Arc::new(error)), ctx);
                return;
            }
            Disposition::Recorded(tally) if tally.served() => self.registry_served(ctx),
            Disposition::Recorded(_) | Disposition::CrashedForGood => {}
            // The registry refuses this path only: to the back, as trouble goes.
            Disposition::Deferred {
                job,
                others_served: true,
                ..
            } => self.requeue(job, false),
            // The registry refuses every path: first in line when it is back.
            Disposition::Deferred { job, reason, .. } => {
                self.registry_troubled(&reason.to_string(), ctx);
                self.requeue(job, true);
            }
            // To the back: other projects show meanwhile whether the registry serves.
            Disposition::Troubled {
                job,
                reason,
                others_served,
            } => {
                if !others_served {
                    self.registry_troubled(&reason.to_string(), ctx);
                }
                self.requeue(job, false);
            }
            Disposition::Crashed(job) | Disposition::Fenced(job) => self.requeue(job, true),
        }
        if self.phase == Phase::Draining && self.in_flight() == 0 {
            self.finalize(ctx);
            return;
        }
        self.tick(ctx);
    }
}

impl<W: Work> Handler<WriterPressure> for Scheduler<W> {
    type Result = ();

    fn handle(&mut self, msg: WriterPressure, ctx: &mut Context<Self>) {
        self.writer_full = msg.full;
        self.tick(ctx);
    }
}

impl<W: Work> Handler<Refused> for Scheduler<W> {
    type Result = ();

    fn handle(&mut self, refused: Refused, ctx: &mut Context<Self>) {
        self.refuse(refused, ctx);
    }
}
