//! Where the Scheduler's projects come from: the keyset walk above the watermark, the sweep below
//! it, and the passes they make up (a pass ends with a flush, then the watermark moves and the walk
//! starts again). The actor's other concerns live in `mod.rs`.

use std::time::Instant;

use actix::prelude::*;

use super::{Phase, RunEnd, Scheduler, FETCH_BATCH, RETRY_DB};
use crate::analyzer::Job;
use crate::db::projects::{
    next_failed, next_unanalysed, remaining_unanalysed, unanalysed_between, Project,
};
use crate::db::watermark;
use crate::writer::{Flush, WriteError};

/// Which projects a pass walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// Projects without a tracking row.
    Unanalysed,
    /// Projects recorded `failed` (`run --retry-failed`, first pass only).
    Failed,
}

impl Scheduler {
    pub(super) fn refill(&mut self, ctx: &mut Context<Self>) {
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
            act.fetching = false;
            act.accounting.fetched(took);
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

    /// Reads the next span of the sweep under way (see [`Sweep`](super::sweep::Sweep)).
    fn refill_from_sweep(&mut self, (after, through): (i64, i64), ctx: &mut Context<Self>) {
        self.fetching = true;
        let (db, shard) = (self.db.clone(), self.config.shard);
        let fetch = async move {
            let started = Instant::now();
            let result = unanalysed_between(&db, after, Some(through), FETCH_BATCH, shard).await;
            (result, started.elapsed())
        };
        ctx.spawn(fetch.into_actor(self).map(move |(result, took), act, ctx| {
            act.fetching = false;
            act.accounting.fetched(took);
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

    /// Starts a sweep when one is due (see [`Sweep`](super::sweep::Sweep)); a service idle
    /// between passes starts one.
    pub(super) fn sweep_if_due(&mut self, ctx: &mut Context<Self>) {
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

    /// Queues `projects`, each with the token its dispatch batch shares (see
    /// [`RegistryClient::share_tokens`](crate::registry::RegistryClient::share_tokens)).
    /// `replaces_failed`: they are recorded `failed` and analysed again.
    fn enqueue(&mut self, projects: Vec<Project>, replaces_failed: bool) {
        let tokens = self
            .registry
            .share_tokens(projects.iter().map(Project::registry_path).collect());
        self.queue.extend(
            projects
                .into_iter()
                .zip(tokens)
                .map(|(project, token)| Job {
                    replaces_failed,
                    ..Job::new(project, Some(token))
                }),
        );
    }

    pub(super) fn end_pass_if_done(&mut self, ctx: &mut Context<Self>) {
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
        let flush = self.writer.send(Flush::PassEnd);
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
                Ok(Ok(_)) => act.next_pass(ctx),
                Ok(Err(reason)) => act.pass_flush_failed(&reason, ctx),
                Err(_) => act.pass_flush_failed(&WriteError::WriterStopped, ctx),
            }
        }));
    }

    /// The flush that ends a pass failed: keep walking, and try to end the pass again.
    pub(super) fn pass_flush_failed(&mut self, reason: &WriteError, ctx: &mut Context<Self>) {
        tracing::warn!(%reason, "flush at the end of a pass failed; retrying");
        self.phase = Phase::Running;
        ctx.run_later(RETRY_DB, |act, ctx| act.tick(ctx));
    }

    /// A pass is over and flushed: walk again now, later, or end the run.
    fn next_pass(&mut self, ctx: &mut Context<Self>) {
        let found = self.found_in_pass;
        tracing::info!(pass = self.passes, projects = found, source = ?self.source, "pass complete");
        if self.source == Source::Failed {
            // The failed projects had their second chance; now the usual walk.
            self.source = Source::Unanalysed;
            self.start_pass(ctx);
        } else if found > 0 || self.sweep.is_active() {
            self.start_pass(ctx);
        } else if self.config.until_done && self.sweep.completed() == 0 {
            // Done means every project has an answer, below the watermark too.
            self.sweep.start(self.config.watermark);
            self.start_pass(ctx);
        } else if self.config.until_done {
            self.finish(RunEnd::Done);
        } else {
            self.phase = Phase::Idle;
            ctx.run_later(self.config.rescan_interval, |act, ctx| {
                if act.phase == Phase::Idle {
                    act.start_pass(ctx);
                }
            });
        }
    }

    /// Counts (or, on a large database, estimates) the projects left to analyse, in the
    /// background, so that progress has a total and an ETA.
    pub(super) fn count_remaining(&mut self, ctx: &mut Context<Self>) {
        let (db, shard, after) = (self.db.clone(), self.config.shard, self.config.watermark);
        let count = async move { remaining_unanalysed(&db, after, shard).await };
        ctx.spawn(
            count
                .into_actor(self)
                .map(|result, act, _ctx| match result {
                    Ok(left) => act.accounting.counted(left),
                    Err(error) => tracing::debug!(%error, "counting the remaining projects failed"),
                }),
        );
    }

    /// Where a pass starts: past the watermark, unless it revisits failed projects.
    fn pass_start(&self) -> i64 {
        match self.source {
            Source::Unanalysed => self.config.watermark,
            Source::Failed => 0,
        }
    }

    /// Moves the watermark up as far as the database shows every project has a row.
    pub(super) fn advance_watermark(&mut self, ctx: &mut Context<Self>) {
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
    pub(super) fn take_fence(&self) {
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
}
