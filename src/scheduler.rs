//! The Scheduler actor: walks the projects that have no tracking row (keyset, in id order), keeps a
//! bounded queue of them, and hands each to an idle Analyzer while fewer than `limit` are in
//! flight. It alone decides what runs: concurrency, pause and resume, shutdown and the end of a
//! pass all arrive here as messages.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::analyzer::{Analyze, Analyzer, AnalyzerDeps, Job};
use crate::breaker::{Breaker, State as BreakerState, Transition};
use crate::config::Shard;
use crate::db::projects::{
    next_failed, next_unanalysed, remaining_unanalysed, unanalysed_between, Project,
};
use crate::db::tracking::{Status as RowStatus, TrackingRow};
use crate::db::watermark::{self, Fences};
use crate::db::Database;
use crate::registry::client::ApiProbe;
use crate::registry::grammar::is_addressable;
use crate::registry::token::SharedToken;
use crate::sweep::Sweep;
use crate::writer::{Flush, GetWriterStats, WriterPressure, WriterStats};

/// Projects read per keyset query; the queue is refilled when it falls below half of this.
pub const FETCH_BATCH: i64 = 1000;
/// How often the watermark is moved up.
const WATERMARK_INTERVAL: Duration = Duration::from_secs(5);
/// Projects that share one registry token at most (a token grants pull on each of their paths;
/// it is also bounded by its size).
pub const TOKEN_BATCH: usize = 16;
const RETRY_DB: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    pub limit: usize,
    pub enabled: bool,
    pub until_done: bool,
    pub rescan_interval: Duration,
    pub shutdown_timeout: Duration,
    /// Walk the projects recorded `failed` first, and analyse them again.
    pub retry_failed: bool,
    /// This instance's share of the projects.
    pub shard: Shard,
    /// Every project of the shard up to this id has a row (see `db::watermark`).
    pub watermark: i64,
    /// How often a progress line is logged.
    pub progress_interval: Duration,
    /// Why the registry's GitLab API is not confirmed yet (it did not answer at start): then
    /// nothing is dispatched until a probe answers, and an answer without the API ends the run.
    pub registry_unconfirmed: Option<String>,
    /// How often the projects below the watermark are swept for ones without an answer.
    pub sweep_interval: Duration,
    /// How long ago this shard was last swept (`None`: never).
    pub swept_ago: Option<Duration>,
}

/// Which projects a pass walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// Projects without a tracking row.
    Unanalysed,
    /// Projects recorded `failed` (`run --retry-failed`, first pass only).
    Failed,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    /// `--until-done`: every project has a row and everything is flushed.
    Done,
    /// Stopped by a signal; everything that finished in time is flushed.
    Stopped,
    /// Stopped, but the last flush failed: those projects will be analysed again next time.
    FlushFailed(String),
    /// The registry answered, but without GitLab's API, before anything was dispatched: no
    /// project can be analysed until its configuration changes.
    RegistryWithoutApi(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Walking projects and dispatching them.
    Running,
    /// The pass is over; waiting for the Writer to flush before the next pass.
    Flushing,
    /// Nothing was left to do; waiting `rescan_interval` before looking again.
    Idle,
    /// Shutting down: no new dispatch, in-flight projects finishing.
    Draining,
    Finished,
}

struct Slot {
    addr: Addr<Analyzer>,
    busy: Option<i64>,
    since: Instant,
}

pub struct Scheduler {
    db: Database,
    deps: Arc<AnalyzerDeps>,
    config: SchedulerConfig,
    slots: Vec<Slot>,
    queue: VecDeque<Job>,
    cursor: i64,
    exhausted: bool,
    fetching: bool,
    found_in_pass: u64,
    passes: u64,
    phase: Phase,
    writer_full: bool,
    breaker_reported_open: bool,
    breaker: Breaker,
    /// `GET /gitlab/v1/` has answered 200 or 401 once.
    registry_confirmed: bool,
    source: Source,
    advancing: bool,
    /// What caps the watermark: fences against transactions that commit late.
    fences: Arc<Fences>,
    sweep: Sweep,
    /// While a sweep runs, reads alternate between it and the walk above the watermark.
    sweep_turn: bool,
    timing: Timing,
    /// Projects left when last counted, and how many this process had analysed then.
    counted: Option<(u64, u64)>,
    counts: Counts,
    started_at: Instant,
    finished: Option<oneshot::Sender<RunEnd>>,
}

/// Where the Scheduler's time goes.
#[derive(Default)]
struct Timing {
    /// Projects back from an Analyzer, and the time from dispatch to that.
    analyses: u64,
    analysis_total: Duration,
    fetches: u64,
    fetch_total: Duration,
    fetch_max: Duration,
    first_dispatch: Option<Duration>,
}

#[derive(Default)]
struct Counts {
    completed: u64,
    failed: u64,
    missing: u64,
    deferred: u64,
    crashes: u64,
    ignored_entries: u64,
    unaddressable: u64,
}

impl Scheduler {
    pub fn new(
        db: Database,
        deps: Arc<AnalyzerDeps>,
        config: SchedulerConfig,
        finished: oneshot::Sender<RunEnd>,
    ) -> Self {
        let retry_failed = config.retry_failed;
        let breaker = match &config.registry_unconfirmed {
            Some(reason) => Breaker::waiting_for_registry(reason.clone()),
            None => Breaker::default(),
        };
        let registry_confirmed = config.registry_unconfirmed.is_none();
        let cursor = if retry_failed { 0 } else { config.watermark };
        let sweep = Sweep::new(config.sweep_interval, config.swept_ago);
        Self {
            db,
            deps,
            config,
            slots: Vec::new(),
            queue: VecDeque::new(),
            cursor,
            exhausted: false,
            fetching: false,
            found_in_pass: 0,
            passes: 1,
            phase: Phase::Running,
            writer_full: false,
            breaker_reported_open: false,
            registry_confirmed,
            breaker,
            advancing: false,
            fences: Arc::default(),
            sweep,
            sweep_turn: false,
            timing: Timing::default(),
            counted: None,
            source: if retry_failed {
                Source::Failed
            } else {
                Source::Unanalysed
            },
            counts: Counts::default(),
            started_at: Instant::now(),
            finished: Some(finished),
        }
    }

    fn in_flight(&self) -> usize {
        self.slots.iter().filter(|s| s.busy.is_some()).count()
    }

    /// Everything the Scheduler does after an event: refill, dispatch, end the pass.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        self.refill(ctx);
        self.dispatch(ctx);
        self.end_pass_if_done(ctx);
    }

    fn refill(&mut self, ctx: &mut Context<Self>) {
        if self.phase != Phase::Running
            || self.fetching
            || self.queue.len() as i64 >= FETCH_BATCH / 2
        {
            return;
        }
        // No sweep while failed projects are revisited: that pass reads other rows.
        let span = self
            .sweep
            .next_span()
            .filter(|_| self.source == Source::Unanalysed);
        if let Some(span) = span {
            if self.exhausted || self.sweep_turn {
                self.sweep_turn = false;
                self.refill_from_sweep(span, ctx);
                return;
            }
            self.sweep_turn = true;
        }
        if self.exhausted {
            return;
        }
        self.fetching = true;
        let db = self.db.clone();
        let after = self.cursor;
        let (source, shard) = (self.source, self.config.shard);
        let fetch = async move {
            let started = Instant::now();
            let result = match source {
                Source::Unanalysed => next_unanalysed(&db, after, FETCH_BATCH, shard).await,
                Source::Failed => next_failed(&db, after, FETCH_BATCH, shard).await,
            };
            (result, started.elapsed())
        };
        ctx.spawn(fetch.into_actor(self).map(move |(result, took), act, ctx| {
            act.fetched(took);
            match result {
                Ok(projects) => {
                    if act.phase != Phase::Running || act.cursor != after {
                        return; // a stale answer from before a shutdown or a new pass
                    }
                    act.exhausted = (projects.len() as i64) < FETCH_BATCH;
                    if let Some(last) = projects.last() {
                        act.cursor = last.id;
                    }
                    act.found_in_pass += projects.len() as u64;
                    let replaces_failed = act.source == Source::Failed;
                    act.enqueue(projects, replaces_failed);
                    act.tick(ctx);
                }
                Err(error) => {
                    tracing::warn!(%error, after, "reading projects failed; retrying");
                    ctx.run_later(RETRY_DB, |act, ctx| act.tick(ctx));
                }
            }
        }));
    }

    /// A read of projects came back after `took`.
    fn fetched(&mut self, took: Duration) {
        self.fetching = false;
        self.timing.fetches += 1;
        self.timing.fetch_total += took;
        self.timing.fetch_max = self.timing.fetch_max.max(took);
    }

    /// Reads the next span of the sweep under way (see [`Sweep`]).
    fn refill_from_sweep(&mut self, (after, through): (i64, i64), ctx: &mut Context<Self>) {
        self.fetching = true;
        let (db, shard) = (self.db.clone(), self.config.shard);
        let fetch = async move {
            let started = Instant::now();
            let result = unanalysed_between(&db, after, Some(through), FETCH_BATCH, shard).await;
            (result, started.elapsed())
        };
        ctx.spawn(fetch.into_actor(self).map(move |(result, took), act, ctx| {
            act.fetched(took);
            let projects = match result {
                Ok(projects) => projects,
                Err(error) => {
                    tracing::warn!(%error, after, "sweeping projects failed; retrying");
                    ctx.run_later(RETRY_DB, |act, ctx| act.tick(ctx));
                    return;
                }
            };
            if act.phase != Phase::Running
                || act.sweep.next_span().map(|(a, _)| a) != Some(after)
            {
                return; // a stale answer from before a shutdown
            }
            let to = match projects.last() {
                Some(last) if projects.len() as i64 >= FETCH_BATCH => last.id,
                _ => through,
            };
            if !projects.is_empty() {
                tracing::info!(
                    projects = projects.len(),
                    from = projects.first().map_or(0, |p| p.id),
                    to = projects.last().map_or(0, |p| p.id),
                    "sweep found projects without an answer below the watermark"
                );
            }
            act.found_in_pass += projects.len() as u64;
            act.enqueue(projects, false);
            if act.sweep.advanced(after, to) {
                tracing::info!(through, "sweep complete");
                let (db, shard) = (act.db.clone(), act.config.shard);
                actix_rt::spawn(async move {
                    if let Err(error) = watermark::swept(&db, shard).await {
                        tracing::warn!(%error, "recording the end of a sweep failed; the next start sweeps again");
                    }
                });
            }
            act.tick(ctx);
        }));
    }

    /// Starts a sweep when one is due (see [`Sweep`]); a service idle between passes starts one.
    fn sweep_if_due(&mut self, ctx: &mut Context<Self>) {
        if !self.sweep.due()
            || self.source != Source::Unanalysed
            || !matches!(self.phase, Phase::Running | Phase::Idle | Phase::Flushing)
        {
            return;
        }
        tracing::info!(
            through = self.config.watermark,
            "sweeping the projects below the watermark for ones without an answer"
        );
        self.sweep.start(self.config.watermark);
        if self.phase == Phase::Idle {
            self.start_pass(ctx);
        } else {
            self.tick(ctx);
        }
    }

    /// Queues `projects`, a token for each run of them that fits one (see
    /// [`TokenSigner::batch_lengths`](crate::registry::TokenSigner::batch_lengths)).
    /// `replaces_failed`: they are recorded `failed` and analysed again.
    fn enqueue(&mut self, projects: Vec<Project>, replaces_failed: bool) {
        // Paths the registry cannot hold are answered without a request: no token needed.
        let paths: Vec<Option<String>> = projects
            .iter()
            .map(|p| p.registry_path().filter(|path| is_addressable(path)))
            .collect();
        let refs: Vec<Option<&str>> = paths.iter().map(Option::as_deref).collect();
        let lengths = self
            .deps
            .registry
            .signer()
            .batch_lengths(&refs, TOKEN_BATCH);
        let mut projects = projects.into_iter();
        let mut paths = paths.into_iter();
        for len in lengths {
            let batch: Vec<Project> = projects.by_ref().take(len).collect();
            let token = Arc::new(SharedToken::new(
                paths.by_ref().take(len).flatten().collect(),
            ));
            self.queue.extend(batch.into_iter().map(|p| Job {
                replaces_failed,
                ..Job::new(p, Some(token.clone()))
            }));
        }
    }

    fn dispatch(&mut self, ctx: &mut Context<Self>) {
        if self.phase != Phase::Running || !self.config.enabled || self.writer_full {
            return;
        }
        let limit = self.breaker.allowed(self.config.limit);
        let mut in_flight = self.in_flight();
        while in_flight < limit {
            let Some(job) = self.queue.pop_front() else {
                break;
            };
            let slot = match self.slots.iter().position(|s| s.busy.is_none()) {
                Some(index) => index,
                None => {
                    let id = self.slots.len();
                    let deps = self.deps.clone();
                    let me = ctx.address().recipient();
                    let addr = actix::Supervisor::start(move |_| Analyzer::new(id, deps, me));
                    self.slots.push(Slot {
                        addr,
                        busy: None,
                        since: Instant::now(),
                    });
                    id
                }
            };
            self.slots[slot].busy = Some(job.project.id);
            self.slots[slot].since = Instant::now();
            if self.timing.first_dispatch.is_none() {
                let after = self.started_at.elapsed();
                self.timing.first_dispatch = Some(after);
                tracing::info!(
                    after_ms = after.as_millis() as u64,
                    cursor = self.cursor,
                    "first project dispatched"
                );
            }
            self.slots[slot].addr.do_send(Analyze(job));
            self.warm_next_token();
            in_flight += 1;
        }
    }

    /// The next queued project's batch token is signed now, on the blocking pool, while the
    /// projects ahead of it run.
    fn warm_next_token(&self) {
        let Some(next) = self.queue.front().and_then(|job| job.token.clone()) else {
            return;
        };
        if next.start_warming() {
            let registry = self.deps.registry.clone();
            actix_rt::spawn(async move {
                if let Err(error) = registry.warm(&next).await {
                    tracing::debug!(%error, "signing a batch token ahead failed; its projects will sign it");
                }
            });
        }
    }

    fn end_pass_if_done(&mut self, ctx: &mut Context<Self>) {
        if self.phase != Phase::Running
            || !self.exhausted
            || self.sweep.is_active()
            || self.fetching
            || !self.queue.is_empty()
            || self.in_flight() > 0
        {
            return;
        }
        // Flush before looking again, or projects whose results are still buffered would be
        // found without a row and analysed twice.
        // Then move the watermark, so that the next pass (or the next start) begins past it.
        self.phase = Phase::Flushing;
        let flush = self.deps.writer.send(Flush::PASS_END);
        let (db, shard, from) = (self.db.clone(), self.config.shard, self.config.watermark);
        let fences = self.fences.clone();
        let work = async move {
            let flushed = flush.await;
            let through = match flushed {
                Ok(Ok(_)) => watermark::advance(&db, shard, from, &fences).await.ok(),
                _ => None,
            };
            (flushed, through)
        };
        ctx.spawn(work.into_actor(self).map(|(result, through), act, ctx| {
            if let Some(through) = through {
                act.config.watermark = act.config.watermark.max(through);
            }
            if act.phase != Phase::Flushing {
                return;
            }
            match result {
                Ok(Ok(_)) => {
                    let found = act.found_in_pass;
                    tracing::info!(pass = act.passes, projects = found, source = ?act.source, "pass complete");
                    if act.source == Source::Failed {
                        // The failed projects had their second chance; now the usual walk.
                        act.source = Source::Unanalysed;
                        act.start_pass(ctx);
                    } else if found > 0 || act.sweep.is_active() {
                        act.start_pass(ctx);
                    } else if act.config.until_done && act.sweep.completed() == 0 {
                        // Done means every project has an answer, below the watermark too.
                        act.sweep.start(act.config.watermark);
                        act.start_pass(ctx);
                    } else if act.config.until_done {
                        act.finish(RunEnd::Done);
                    } else {
                        act.phase = Phase::Idle;
                        ctx.run_later(act.config.rescan_interval, |act, ctx| {
                            if act.phase == Phase::Idle {
                                act.start_pass(ctx);
                            }
                        });
                    }
                }
                other => {
                    let reason = match other {
                        Ok(Err(e)) => e,
                        Err(e) => e.to_string(),
                        Ok(Ok(_)) => String::new(),
                    };
                    tracing::warn!(%reason, "flush at the end of a pass failed; retrying");
                    act.phase = Phase::Running;
                    ctx.run_later(RETRY_DB, |act, ctx| act.tick(ctx));
                }
            }
        }));
    }

    /// Counts (or, on a large database, estimates) the projects left to analyse, in the
    /// background, so that progress has a total and an ETA.
    fn count_remaining(&mut self, ctx: &mut Context<Self>) {
        let (db, shard, after) = (self.db.clone(), self.config.shard, self.config.watermark);
        let count = async move { remaining_unanalysed(&db, after, shard).await };
        ctx.spawn(
            count
                .into_actor(self)
                .map(|result, act, _ctx| match result {
                    Ok(left) => act.counted = Some((left, act.analysed())),
                    Err(error) => tracing::debug!(%error, "counting the remaining projects failed"),
                }),
        );
    }

    fn analysed(&self) -> u64 {
        self.counts.completed + self.counts.failed
    }

    /// Projects recorded per second since the start.
    fn rate(&self) -> f64 {
        self.analysed() as f64 / self.started_at.elapsed().as_secs_f64().max(1e-3)
    }

    /// Projects left now (estimate), and when they will be done at the rate so far.
    fn remaining(&self) -> Option<(u64, Option<f64>)> {
        let (left, at) = self.counted?;
        let left = left.saturating_sub(self.analysed().saturating_sub(at));
        let rate = self.rate();
        Some((left, (rate > 0.0).then(|| left as f64 / rate)))
    }

    fn log_progress(&self) {
        if matches!(self.phase, Phase::Finished) {
            return;
        }
        let done = self.analysed();
        let rate = self.rate();
        match self.remaining() {
            Some((left, eta)) => tracing::info!(
                done,
                total = done + left,
                left,
                rate_per_s = format!("{rate:.1}"),
                eta_s = eta.map(|e| e.round() as u64),
                state = self.state_name(),
                "progress"
            ),
            None => tracing::info!(
                done,
                rate_per_s = format!("{rate:.1}"),
                state = self.state_name(),
                "progress"
            ),
        }
    }

    /// Where a pass starts: past the watermark, unless it revisits failed projects.
    fn pass_start(&self) -> i64 {
        match self.source {
            Source::Unanalysed => self.config.watermark,
            Source::Failed => 0,
        }
    }

    /// Moves the watermark up as far as the database shows every project has a row.
    fn advance_watermark(&mut self, ctx: &mut Context<Self>) {
        if self.advancing || self.phase == Phase::Finished {
            return;
        }
        self.advancing = true;
        let (db, shard, from) = (self.db.clone(), self.config.shard, self.config.watermark);
        let fences = self.fences.clone();
        let work = async move { watermark::advance(&db, shard, from, &fences).await };
        ctx.spawn(work.into_actor(self).map(|result, act, _ctx| {
            act.advancing = false;
            match result {
                Ok(through) => act.config.watermark = act.config.watermark.max(through),
                Err(error) => tracing::debug!(%error, "the watermark could not move"),
            }
        }));
    }

    /// A fence for the watermark, taken as a pass starts: by the pass's end the transactions
    /// running now have most likely ended, and the watermark can move up to it.
    fn take_fence(&self) {
        let (db, fences) = (self.db.clone(), self.fences.clone());
        actix_rt::spawn(async move {
            if let Err(error) = watermark::take_fence(&db, &fences).await {
                tracing::debug!(%error, "taking a fence for the watermark failed");
            }
        });
    }

    fn start_pass(&mut self, ctx: &mut Context<Self>) {
        self.take_fence();
        self.phase = Phase::Running;
        self.cursor = self.pass_start();
        self.exhausted = false;
        self.found_in_pass = 0;
        self.passes += 1;
        self.tick(ctx);
    }

    fn finish(&mut self, end: RunEnd) {
        self.phase = Phase::Finished;
        if let Some(tx) = self.finished.take() {
            let _ = tx.send(end);
        }
    }

    /// The last step of a shutdown: flush what the Writer holds, then report.
    fn finalize(&mut self, ctx: &mut Context<Self>) {
        if self.phase != Phase::Draining {
            return;
        }
        self.phase = Phase::Finished;
        let abandoned = self.in_flight();
        if abandoned > 0 {
            tracing::warn!(abandoned, "shutdown timeout reached; unfinished projects will be analysed again on the next start");
        }
        let flush = self.deps.writer.send(Flush::SHUTDOWN);
        ctx.spawn(flush.into_actor(self).map(|result, act, _ctx| {
            let end = match result {
                Ok(Ok(_)) => RunEnd::Stopped,
                Ok(Err(e)) => RunEnd::FlushFailed(e),
                Err(e) => RunEnd::FlushFailed(e.to_string()),
            };
            if let Some(tx) = act.finished.take() {
                let _ = tx.send(end);
            }
        }));
    }

    /// Logs a trip or a recovery (one line each) and schedules the next probe.
    fn on_breaker(&mut self, transition: Transition, ctx: &mut Context<Self>) {
        match transition {
            Transition::None => {}
            Transition::Opened { probe_in } => {
                let reason = self.breaker.last_error().unwrap_or_default();
                if self.breaker_reported_open {
                    tracing::debug!(%reason, ?probe_in, "registry still unavailable");
                } else {
                    self.breaker_reported_open = true;
                    tracing::warn!(%reason, in_flight = self.in_flight(), "registry unavailable: dispatching stopped; probing until it answers");
                }
                ctx.run_later(probe_in, |act, ctx| act.probe(ctx));
            }
            Transition::Closed { after } => {
                self.breaker_reported_open = false;
                tracing::info!(
                    outage_s = after.as_secs_f64(),
                    "registry available again: dispatching resumed"
                );
            }
        }
    }

    /// `GET /gitlab/v1/`: 200 or 401 means the registry is there to try one project.
    fn probe(&mut self, ctx: &mut Context<Self>) {
        if !self.breaker.probe_due() || self.phase == Phase::Finished {
            return;
        }
        let registry = self.deps.registry.clone();
        let probe = async move { registry.probe().await };
        ctx.spawn(probe.into_actor(self).map(|answer, act, ctx| {
            if act.phase == Phase::Finished {
                return;
            }
            let answer = match answer {
                ApiProbe::Available(_) => {
                    act.registry_confirmed = true;
                    Ok(())
                }
                absent @ ApiProbe::Absent { .. } => {
                    let message = absent
                        .absent_message(&act.deps.registry.display_url())
                        .unwrap_or_default();
                    if !act.registry_confirmed && act.in_flight() == 0 {
                        // Nothing was ever dispatched: stop before anything is recorded.
                        tracing::error!(%message, "the registry has no GitLab API");
                        act.phase = Phase::Finished;
                        act.finish(RunEnd::RegistryWithoutApi(message));
                        return;
                    }
                    // It served us before: a proxy or a deploy in between; keep probing.
                    Err(message)
                }
                ApiProbe::Unavailable(error) => Err(format!("probe of /gitlab/v1/: {error}")),
            };
            let transition = act.breaker.probed(answer);
            act.on_breaker(transition, ctx);
            act.tick(ctx);
        }));
    }

    fn state_name(&self) -> &'static str {
        match self.phase {
            Phase::Draining => "draining",
            Phase::Finished => "stopped",
            _ if !self.config.enabled => "paused",
            _ if self.config.limit == 0 => "paused (concurrency 0)",
            _ if self.breaker.state() != BreakerState::Closed => "registry unavailable",
            _ if self.writer_full => "waiting for the writer",
            Phase::Idle => "idle",
            Phase::Running | Phase::Flushing => "running",
        }
    }

    fn status(&self) -> Status {
        let remaining = self.remaining();
        Status {
            state: self.state_name().to_string(),
            enabled: self.config.enabled,
            max_concurrency: self.config.limit,
            in_flight: self.in_flight(),
            queued: self.queue.len(),
            analysed: self.analysed(),
            completed: self.counts.completed,
            failed: self.counts.failed,
            missing_found: self.counts.missing,
            deferred: self.counts.deferred,
            ignored_entries: self.counts.ignored_entries,
            unaddressable: self.counts.unaddressable,
            analyzer_restarts: self.counts.crashes,
            analyzers: self.slots.len(),
            pass: self.passes,
            rate_per_s: self.rate(),
            uptime_s: self.started_at.elapsed().as_secs_f64(),
            writer_full: self.writer_full,
            watermark: self.config.watermark,
            sweeping: self.sweep.is_active(),
            sweeps: self.sweep.completed(),
            fetches: self.timing.fetches,
            fetch_ms_avg: if self.timing.fetches > 0 {
                self.timing.fetch_total.as_secs_f64() * 1000.0 / self.timing.fetches as f64
            } else {
                0.0
            },
            fetch_ms_max: self.timing.fetch_max.as_secs_f64() * 1000.0,
            analysis_ms_avg: if self.timing.analyses > 0 {
                self.timing.analysis_total.as_secs_f64() * 1000.0 / self.timing.analyses as f64
            } else {
                0.0
            },
            first_dispatch_ms: self.timing.first_dispatch.map(|d| d.as_secs_f64() * 1000.0),
            peak_rss_kib: peak_rss_kib(),
            remaining: remaining.map(|(left, _)| left),
            eta_s: remaining.and_then(|(_, eta)| eta),
            writer: None,
            breaker: self.breaker.name().to_string(),
            breaker_trips: self.breaker.trips(),
            last_error: self.breaker.last_error().map(str::to_string),
        }
    }
}

impl Actor for Scheduler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        tracing::info!(
            max_concurrency = self.config.limit,
            enabled = self.config.enabled,
            until_done = self.config.until_done,
            shard = %self.config.shard,
            watermark = self.config.watermark,
            "scheduler started"
        );
        if let Some(reason) = &self.config.registry_unconfirmed {
            tracing::warn!(%reason, "the registry does not answer yet; nothing is dispatched until it does");
            self.breaker_reported_open = true;
            ctx.run_later(self.breaker.probe_delay(), |act, ctx| act.probe(ctx));
        }
        ctx.run_interval(WATERMARK_INTERVAL, |act, ctx| {
            act.advance_watermark(ctx);
            act.sweep_if_due(ctx);
        });
        ctx.run_interval(self.config.progress_interval, |act, _ctx| {
            act.log_progress()
        });
        self.count_remaining(ctx);
        self.take_fence();
        self.tick(ctx);
    }
}

/// The running service's state, as `status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub state: String,
    pub enabled: bool,
    pub max_concurrency: usize,
    pub in_flight: usize,
    pub queued: usize,
    /// Projects recorded by this process (completed + failed).
    pub analysed: u64,
    pub completed: u64,
    pub failed: u64,
    pub missing_found: u64,
    /// Attempts that ended unrecorded (registry or database trouble), to be tried again.
    pub deferred: u64,
    /// Registry entries outside the project path, ignored.
    pub ignored_entries: u64,
    /// Projects whose path breaks the registry's name grammar: recorded with 0, nothing asked.
    #[serde(default)]
    pub unaddressable: u64,
    pub analyzer_restarts: u64,
    pub analyzers: usize,
    pub pass: u64,
    pub rate_per_s: f64,
    pub uptime_s: f64,
    pub writer_full: bool,
    /// Every project of this shard up to this id has a row; passes start here.
    pub watermark: i64,
    /// A sweep below the watermark is under way.
    #[serde(default)]
    pub sweeping: bool,
    /// Sweeps this process finished.
    #[serde(default)]
    pub sweeps: u64,
    /// Scheduling batches read from the database, and the database time they took.
    pub fetches: u64,
    pub fetch_ms_avg: f64,
    pub fetch_ms_max: f64,
    /// From dispatching a project to its Analyzer reporting back, on average.
    pub analysis_ms_avg: f64,
    /// From the Scheduler's start to its first dispatch.
    pub first_dispatch_ms: Option<f64>,
    /// Projects without a row yet (estimate: counted at start, less those analysed since).
    pub remaining: Option<u64>,
    /// When `remaining` will be done at the rate so far.
    pub eta_s: Option<f64>,
    /// The process's peak resident memory (VmHWM).
    pub peak_rss_kib: Option<u64>,
    pub writer: Option<WriterStats>,
    /// `closed` (dispatching), `open` (the registry fails as a whole; probing) or `half-open`.
    pub breaker: String,
    pub breaker_trips: u64,
    pub last_error: Option<String>,
}

#[derive(Message)]
#[rtype(result = "Status")]
pub struct GetStatus;

impl Handler<GetStatus> for Scheduler {
    type Result = ResponseActFuture<Self, Status>;

    fn handle(&mut self, _msg: GetStatus, _ctx: &mut Context<Self>) -> Self::Result {
        let writer = self.deps.writer.send(GetWriterStats);
        Box::pin(writer.into_actor(self).map(|stats, act, _ctx| {
            let mut status = act.status();
            status.writer = stats.ok();
            status
        }))
    }
}

/// The process's peak resident set size, from /proc (Linux).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Use at most this many projects in flight from now on; 0 pauses.
#[derive(Message)]
#[rtype(result = "Status")]
pub struct SetConcurrency(pub usize);

impl Handler<SetConcurrency> for Scheduler {
    type Result = MessageResult<SetConcurrency>;

    fn handle(
        &mut self,
        SetConcurrency(limit): SetConcurrency,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        if limit != self.config.limit {
            tracing::info!(
                from = self.config.limit,
                to = limit,
                "max concurrency changed"
            );
            self.config.limit = limit;
        }
        // Lowering takes effect as in-flight projects finish: none is interrupted.
        self.tick(ctx);
        MessageResult(self.status())
    }
}

/// Switch the feature flag: off stops dispatching, in-flight projects finish and are recorded.
#[derive(Message)]
#[rtype(result = "Status")]
pub struct SetEnabled(pub bool);

impl Handler<SetEnabled> for Scheduler {
    type Result = MessageResult<SetEnabled>;

    fn handle(&mut self, SetEnabled(enabled): SetEnabled, ctx: &mut Context<Self>) -> Self::Result {
        if enabled != self.config.enabled {
            tracing::info!(enabled, "feature flag switched");
            self.config.enabled = enabled;
        }
        self.tick(ctx);
        MessageResult(self.status())
    }
}

/// Stop dispatching, let in-flight projects finish (bounded), flush, then report `Stopped`.
/// `Shutdown::NOW` (a second signal) stops waiting for in-flight projects.
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
pub struct Shutdown {
    pub now: bool,
}

impl Shutdown {
    pub const GRACEFUL: Shutdown = Shutdown { now: false };
    pub const NOW: Shutdown = Shutdown { now: true };
}

impl Handler<Shutdown> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: Shutdown, ctx: &mut Context<Self>) {
        if self.phase == Phase::Draining && msg.now {
            self.finalize(ctx);
            return;
        }
        if matches!(self.phase, Phase::Draining | Phase::Finished) {
            return;
        }
        let in_flight = self.in_flight();
        tracing::info!(in_flight, "shutting down: waiting for in-flight projects");
        self.phase = Phase::Draining;
        self.queue.clear();
        if in_flight == 0 {
            self.finalize(ctx);
        } else {
            ctx.run_later(self.config.shutdown_timeout, |act, ctx| act.finalize(ctx));
        }
    }
}

/// What became of a project an Analyzer was given.
#[derive(Debug, Clone)]
pub enum Disposition {
    /// Its result went to the Writer; `ignored` registry entries were outside its path;
    /// `unaddressable`: its path breaks the registry's name grammar, so nothing was asked.
    Recorded {
        row: TrackingRow,
        ignored: u32,
        unaddressable: bool,
    },
    /// It could not be analysed for a reason outside it; analyse it again later.
    /// `others_served`: the registry refused it but answered the canary right after.
    Deferred {
        job: Job,
        reason: String,
        others_served: bool,
    },
    /// 5xx, timeouts or broken answers; analyse it again later. `others_served`: the registry
    /// answered for another project right after, so this was the project's trouble alone.
    Troubled {
        job: Job,
        reason: String,
        others_served: bool,
    },
    /// The Analyzer panicked on it and was restarted; analyse it again.
    Crashed(Job),
    /// The Analyzer panicked on it once too often; it was recorded `failed`.
    CrashedForGood,
}

#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct AnalyzerFinished {
    pub analyzer: usize,
    pub project_id: i64,
    pub disposition: Disposition,
}

impl Handler<AnalyzerFinished> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: AnalyzerFinished, ctx: &mut Context<Self>) {
        if let Some(slot) = self.slots.get_mut(msg.analyzer) {
            if slot.busy == Some(msg.project_id) {
                slot.busy = None;
                self.timing.analyses += 1;
                self.timing.analysis_total += slot.since.elapsed();
            }
        }
        match msg.disposition {
            Disposition::Recorded {
                row,
                ignored,
                unaddressable,
            } => match row.status {
                RowStatus::Failed => self.counts.failed += 1,
                _ if unaddressable => {
                    self.counts.completed += 1;
                    self.counts.unaddressable += 1;
                }
                _ => {
                    self.counts.ignored_entries += u64::from(ignored);
                    self.counts.completed += 1;
                    self.counts.missing += u64::try_from(row.missing_count).unwrap_or(0);
                    let transition = self.breaker.success();
                    self.on_breaker(transition, ctx);
                }
            },
            Disposition::Deferred {
                job,
                reason,
                others_served,
            } => {
                self.counts.deferred += 1;
                if others_served {
                    // The registry refuses this path only: to the back, as trouble goes.
                    if self.phase == Phase::Running {
                        self.queue.push_back(job);
                    }
                } else {
                    let transition = self.breaker.trouble(&reason);
                    self.on_breaker(transition, ctx);
                    // First in line when the registry is back.
                    if self.phase == Phase::Running {
                        self.queue.push_front(job);
                    }
                }
            }
            Disposition::Troubled {
                job,
                reason,
                others_served,
            } => {
                self.counts.deferred += 1;
                if !others_served {
                    let transition = self.breaker.trouble(&reason);
                    self.on_breaker(transition, ctx);
                }
                // To the back: other projects show meanwhile whether the registry serves.
                if self.phase == Phase::Running {
                    self.queue.push_back(job);
                }
            }
            Disposition::CrashedForGood => {
                self.counts.crashes += 1;
                self.counts.failed += 1;
            }
            Disposition::Crashed(job) => {
                self.counts.crashes += 1;
                if self.phase == Phase::Running {
                    self.queue.push_front(job);
                }
            }
        }
        if self.phase == Phase::Draining && self.in_flight() == 0 {
            self.finalize(ctx);
            return;
        }
        self.tick(ctx);
    }
}

impl Handler<WriterPressure> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: WriterPressure, ctx: &mut Context<Self>) {
        self.writer_full = msg.full;
        self.tick(ctx);
    }
}
