//! How the Scheduler stops: on [`Shutdown`] (SIGTERM, SIGINT, or a test) it stops dispatching,
//! lets the projects in flight finish (at most `worker.shutdown_timeout_s`), has the Writer flush,
//! and reports `Stopped`. A database's lasting refusal stops it the same way without waiting, and
//! it reports `Refused`. Alike for every work.

use actix::prelude::*;

use super::{Phase, RunEnd, Scheduler};
use crate::work::{Work, WriteError};
use crate::writer::{Discard, Flush};

impl<W: Work> Scheduler<W> {
    /// The last step of a shutdown: flush what the Writer holds, then report. A member the fleet
    /// took for dead writes nothing more: what its Writer holds is dropped (others do it again).
    pub(super) fn finalize(&mut self, ctx: &mut Context<Self>) {
        if self.phase != Phase::Draining {
            return;
        }
        self.phase = Phase::Finished;
        if self.lost {
            let discard = self.writer.send(Discard);
            ctx.spawn(discard.into_actor(self).map(|dropped, act, _ctx| {
                tracing::warn!(
                    dropped = dropped.unwrap_or(0),
                    "results not written: the members that took this one's work over do it again"
                );
                if let Some(tx) = act.finished.take() {
                    let _ = tx.send(RunEnd::LostMembership);
                }
            }));
            return;
        }
        let abandoned = self.in_flight();
        if abandoned > 0 {
            match self.refused.is_some() {
                true => tracing::warn!(abandoned, "stopping without waiting for the projects in flight; they will be analysed again on the next start"),
                false => tracing::warn!(abandoned, "shutdown timeout reached; unfinished projects will be analysed again on the next start"),
            }
        }
        let flush = self.writer.send(Flush::Shutdown);
        ctx.spawn(flush.into_actor(self).map(|result, act, _ctx| {
            let end = match (act.refused.take(), result) {
                // The refusal, not the flush it may fail too, is what the operator must mend.
                (Some(refused), _) => RunEnd::Refused(refused),
                (None, Ok(Ok(_))) => RunEnd::Stopped,
                (None, Ok(Err(error))) => RunEnd::FlushFailed(error),
                (None, Err(_)) => RunEnd::FlushFailed(WriteError::WriterStopped),
            };
            if let Some(tx) = act.finished.take() {
                let _ = tx.send(end);
            }
        }));
    }
}

/// Stop dispatching, let in-flight projects finish (bounded), flush, then report `Stopped`.
#[derive(Message, Debug, Clone, Copy, PartialEq, Eq)]
#[rtype(result = "()")]
pub enum Shutdown {
    /// The first signal: wait for in-flight projects, at most `worker.shutdown_timeout_s`.
    Graceful,
    /// A second signal: stop waiting for in-flight projects; flush what is done.
    Now,
    /// The fleet took this instance for dead and gave its work to others: stop at once, flush
    /// what is done, and end as `LostMembership`.
    Lost,
}

impl<W: Work> Handler<Shutdown> for Scheduler<W> {
    type Result = ();

    fn handle(&mut self, msg: Shutdown, ctx: &mut Context<Self>) {
        if msg == Shutdown::Lost && self.phase != Phase::Finished {
            tracing::error!(
                in_flight = self.in_flight(),
                "the fleet took this instance for dead and gave its work to others; stopping"
            );
            self.lost = true;
            self.phase = Phase::Draining;
            self.queue.clear();
            self.finalize(ctx);
            return;
        }
        if self.phase == Phase::Draining && msg == Shutdown::Now {
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
