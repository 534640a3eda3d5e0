//! The Scheduler's pool of Analyzers: which slot is busy with which project, dispatching queued
//! projects to idle slots within this member's share, growing the pool, and putting projects back
//! in the queue. The pool grows to the largest share seen; a slot's Analyzer is supervised.

use std::time::Instant;

use actix::prelude::*;

use super::{Phase, Scheduler};
use crate::analyzer::{Analyze, Analyzer};
use crate::work::{Job, Source, Work};

pub(super) struct Slot<W: Work> {
    addr: Addr<Analyzer<W>>,
    busy: Option<i64>,
    since: Instant,
}

impl<W: Work> Scheduler<W> {
    pub(super) fn in_flight(&self) -> usize {
        self.slots.iter().filter(|s| s.busy.is_some()).count()
    }

    /// Hands queued projects to idle Analyzers while fewer than this member's share (the
    /// breaker's, when it is not closed) are in flight; none while paused, draining or held back
    /// by the Writer.
    pub(super) fn dispatch(&mut self, ctx: &mut Context<Self>) {
        if self.phase != Phase::Running || !self.config.enabled || self.writer_full {
            return;
        }
        let allowed = self.outage.breaker.allowed(self.share());
        let mut in_flight = self.in_flight();
        while in_flight < allowed {
            let Some(job) = self.queue.pop_front() else {
                break;
            };
            let slot = match self.slots.iter().position(|s| s.busy.is_none()) {
                Some(index) => index,
                None => self.grow_pool(ctx),
            };
            self.slots[slot].busy = Some(job.project.id);
            self.slots[slot].since = Instant::now();
            if let Some(after) = self.accounting.dispatched() {
                tracing::info!(
                    after_ms = after.as_millis() as u64,
                    cursor = self.source.cursor(),
                    "first project dispatched"
                );
            }
            self.slots[slot].addr.do_send(Analyze(job));
            // The next batch's token is signed while the projects ahead of it run.
            if let Some(next) = self.queue.front().and_then(|job| job.token.as_ref()) {
                self.registry.sign_ahead(next);
            }
            in_flight += 1;
        }
    }

    /// Starts one more supervised Analyzer; returns its slot.
    fn grow_pool(&mut self, ctx: &mut Context<Self>) -> usize {
        let id = self.slots.len();
        let deps = self.analyzer_deps.clone();
        let me = ctx.address().recipient();
        let addr = actix::Supervisor::start(move |_| Analyzer::new(id, deps, me));
        self.slots.push(Slot {
            addr,
            busy: None,
            since: Instant::now(),
        });
        id
    }

    /// The Analyzer of `slot` is free again, done with `project_id`.
    pub(super) fn freed(&mut self, slot: usize, project_id: i64) {
        if let Some(slot) = self.slots.get_mut(slot) {
            if slot.busy == Some(project_id) {
                slot.busy = None;
                self.accounting.back(slot.since.elapsed());
            }
        }
    }

    /// A project goes back to the queue: `first` in line, or to the back. Not once draining.
    pub(super) fn requeue(&mut self, job: Job<W::Item>, first: bool) {
        if self.phase != Phase::Running {
            return;
        }
        if first {
            self.queue.push_front(job);
        } else {
            self.queue.push_back(job);
        }
    }
}
