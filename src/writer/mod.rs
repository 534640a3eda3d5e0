//! The Writer actor: the only owner of results not yet in the database. It buffers them and writes
//! them with one bulk statement when the buffer reaches `writer.batch_size`, every
//! `writer.flush_interval_ms`, at once when a project fails, and when asked to (shutdown, end of a
//! pass). One write runs at a time while results keep arriving; what arrived meanwhile goes into
//! the next statement (group commit), so statements grow with the load instead of queueing. A
//! write that fails keeps its rows and is tried again; while the buffer is over its bound the
//! Scheduler is told to stop dispatching. A panic anywhere in it becomes a supervised restart that
//! keeps every row.
//!
//! It is generic over the work's [`Sink`], which says what a project's record becomes and how a
//! batch is written; when to write (`policy.rs`) and what survives a failure or a restart are the
//! Writer's, the same for every sink.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;

mod policy;

pub use self::policy::FlushReason;
use self::policy::{FlushPolicy, FlushStep, Held};
use crate::faults::{Faults, WriterStep};
use crate::work::{Refused, Sink, WriteError};

/// Sent by the Writer whenever its buffer crosses its bound, either way: over it, the Scheduler
/// stops dispatching until it drains.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct WriterPressure {
    pub full: bool,
}

/// What the Writer has done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WriterStats {
    pub buffered: usize,
    pub rows_written: u64,
    pub flushes_size: u64,
    pub flushes_timer: u64,
    pub flushes_failure: u64,
    pub flushes_requested: u64,
    pub flushes_shutdown: u64,
    pub failed_writes: u64,
    pub full: bool,
    pub restarts: u64,
    /// Time spent in bulk writes, in milliseconds.
    pub write_ms_total: u64,
}

/// Someone waiting for the buffer to be written, and the rows written when they asked.
type Waiter = (u64, oneshot::Sender<Result<usize, WriteError>>);

pub struct Writer<S: Sink> {
    /// Where what it holds goes.
    sink: S,
    flush_interval: Duration,
    /// When to write, and when the Scheduler must hold back.
    policy: FlushPolicy,
    buffer: Vec<S::Row>,
    /// The rows of the write under way: put back if the actor restarts in the middle of it.
    writing: Option<Arc<Vec<S::Row>>>,
    waiters: Vec<Waiter>,
    listener: Option<Recipient<WriterPressure>>,
    /// Who ends the run when the database refuses a write for good.
    refusals: Option<Recipient<Refused>>,
    stats: WriterStats,
    faults: Arc<Faults>,
    /// This member lost its hold on its work ([`Discard`]): nothing more is written.
    discarded: bool,
}

impl<S: Sink> Writer<S> {
    pub fn new(sink: S, batch_size: usize, flush_interval: Duration) -> Self {
        Self {
            sink,
            flush_interval,
            policy: FlushPolicy::new(batch_size),
            buffer: Vec::new(),
            writing: None,
            waiters: Vec::new(),
            listener: None,
            refusals: None,
            stats: WriterStats::default(),
            faults: Arc::default(),
            discarded: false,
        }
    }

    /// Who to tell when the buffer fills or drains: the Scheduler, whose address exists before
    /// the Writer starts.
    pub fn reporting_pressure_to(mut self, listener: Recipient<WriterPressure>) -> Self {
        self.listener = Some(listener);
        self
    }

    /// Who to tell when the database refuses a write for a reason no retry mends: the Scheduler,
    /// which ends the run (the rows stay buffered, and are tried again until it does).
    pub fn reporting_refusals_to(mut self, refusals: Recipient<Refused>) -> Self {
        self.refusals = Some(refusals);
        self
    }

    /// The fault seam the service's tests arm (see [`Faults`]).
    pub fn with_faults(mut self, faults: Arc<Faults>) -> Self {
        self.faults = faults;
        self
    }

    /// What the policy decides on.
    fn holding(&self) -> Held {
        Held {
            buffered: self.buffer.len(),
            writing: self.writing.is_some(),
            waiters: !self.waiters.is_empty(),
        }
    }

    /// Starts writing the whole buffer in one statement, unless a write is under way (then the
    /// rows wait for the next one) or the database failed a moment ago (then the timer retries).
    fn flush(&mut self, ctx: &mut Context<Self>, reason: FlushReason) {
        if self.discarded {
            self.buffer.clear();
            self.answer_waiters(Ok(()));
            return;
        }
        match self.policy.flush(reason, self.holding(), Instant::now()) {
            FlushStep::Write => {}
            FlushStep::Later => return,
            FlushStep::Written => {
                self.answer_waiters(Ok(()));
                return;
            }
        }
        match reason {
            FlushReason::Size => self.stats.flushes_size += 1,
            FlushReason::Timer => self.stats.flushes_timer += 1,
            FlushReason::Failure => self.stats.flushes_failure += 1,
            FlushReason::Requested => self.stats.flushes_requested += 1,
            FlushReason::Shutdown => self.stats.flushes_shutdown += 1,
        }
        let batch = Arc::new(S::batch(std::mem::take(&mut self.buffer)));
        self.writing = Some(batch.clone());
        let write = self.sink.write(batch);
        let work = async move {
            let started = Instant::now();
            let (result, report) = write.await;
            (result, report, started.elapsed())
        };
        ctx.spawn(
            work.into_actor(self)
                .map(move |(result, report, took), act, ctx| {
                    act.guarded(ctx, "taking in a write's outcome", |act, ctx| {
                        act.sink.written(report);
                        act.write_done(ctx, reason, result, took)
                    });
                }),
        );
    }

    /// Something was buffered (`failed`: a project ended failed): flush if that makes a batch.
    fn buffered(&mut self, failed: bool, ctx: &mut Context<Self>) {
        self.update_pressure();
        if let Some(reason) = self.policy.after_record(failed, self.buffer.len()) {
            self.flush(ctx, reason);
        }
    }

    /// A bulk write has ended: count it, and on success write what arrived meanwhile if it is due;
    /// on failure put its rows back and back off.
    fn write_done(
        &mut self,
        ctx: &mut Context<Self>,
        reason: FlushReason,
        result: Result<(), WriteError>,
        took: Duration,
    ) {
        self.faults.writer(WriterStep::WriteDone);
        self.stats.write_ms_total += took.as_millis() as u64;
        match result {
            Ok(()) => {
                let batch = self.writing.take().unwrap_or_default();
                self.sink.flushed(&batch);
                let rows = batch.len();
                self.stats.rows_written += rows as u64;
                tracing::debug!(rows, ?reason, ?took, "results flushed");
                // What arrived meanwhile: write it now if it makes a batch or is awaited.
                if let Some(reason) = self.policy.written(self.holding()) {
                    self.flush(ctx, reason);
                }
            }
            Err(error) => {
                self.stats.failed_writes += 1;
                self.put_back();
                let retry_in = self.policy.write_failed(Instant::now());
                tracing::warn!(%error, kept = self.buffer.len(), ?retry_in, "flush failed; results kept for the next attempt");
                if let (Some(refused), Some(refusals)) = (error.refused(), &self.refusals) {
                    refusals.do_send(refused);
                }
                self.answer_waiters(Err(error));
            }
        }
        self.update_pressure();
    }

    /// Runs `step` of a handler. A panic anywhere in it (not only an injected one) is caught and
    /// turned into a stop, which the Supervisor answers with a restart on this same struct: the
    /// buffer, the waiters and the rows of the write under way (put back by `restarting`) survive.
    /// Uncaught, it would unwind through actix and take the System down with it.
    fn guarded<R>(
        &mut self,
        ctx: &mut Context<Self>,
        what: &str,
        step: impl FnOnce(&mut Self, &mut Context<Self>) -> R,
    ) -> Option<R> {
        match std::panic::catch_unwind(AssertUnwindSafe(|| step(&mut *self, &mut *ctx))) {
            Ok(value) => Some(value),
            Err(payload) => {
                let cause = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(no message)".into());
                tracing::error!(
                    during = what,
                    %cause,
                    buffered = self.unwritten(),
                    "writer panicked; restarting with its buffer"
                );
                self.stats.restarts += 1;
                ctx.stop();
                None
            }
        }
    }

    /// The rows of an unfinished write go back to the front of the buffer, before newer ones.
    fn put_back(&mut self) {
        if let Some(batch) = self.writing.take() {
            let batch = Arc::try_unwrap(batch).unwrap_or_else(|shared| shared.as_ref().clone());
            put_before(&mut self.buffer, batch);
        }
    }

    fn answer_waiters(&mut self, result: Result<(), WriteError>) {
        let written = self.stats.rows_written;
        for (since, waiter) in self.waiters.drain(..) {
            let answer = result
                .clone()
                .map(|()| usize::try_from(written - since).unwrap_or(usize::MAX));
            let _ = waiter.send(answer);
        }
    }

    /// Rows not yet in the database: buffered, or in the write under way.
    fn unwritten(&self) -> usize {
        self.buffer.len() + self.writing.as_ref().map_or(0, |rows| rows.len())
    }

    fn update_pressure(&mut self) {
        let Some(full) = self.policy.pressure(self.unwritten()) else {
            return;
        };
        self.stats.full = full;
        if full {
            tracing::warn!(
                buffered = self.unwritten(),
                "writer buffer full; dispatching stops until it drains"
            );
        } else {
            tracing::info!(
                buffered = self.unwritten(),
                "writer buffer drained; dispatching resumes"
            );
        }
        if let Some(listener) = &self.listener {
            listener.do_send(WriterPressure { full });
        }
    }
}

/// `earlier` (an unfinished write's rows) goes back in front of what arrived since.
fn put_before<R>(buffer: &mut Vec<R>, mut earlier: Vec<R>) {
    earlier.append(buffer);
    *buffer = earlier;
}

impl<S: Sink> Actor for Writer<S> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Runs again after a supervised restart, which cancels the old timer: the buffer survives.
        ctx.run_interval(self.flush_interval, |act, ctx| {
            act.guarded(ctx, "the flush timer", |act, ctx| {
                act.faults.writer(WriterStep::Timer);
                act.flush(ctx, FlushReason::Timer);
            });
        });
    }
}

impl<S: Sink> Supervised for Writer<S> {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        // A restart cancels the write under way: its rows are written again (the upsert is
        // idempotent, so rows the database did take are not doubled).
        self.put_back();
        tracing::warn!(
            buffered = self.buffer.len(),
            "writer restarting; buffer kept"
        );
    }
}

/// One project's record, of the sink's kind.
#[derive(Debug, Clone)]
pub struct Record<R>(pub R);

impl<R: 'static> Message for Record<R> {
    type Result = ();
}

impl<S: Sink> Handler<Record<S::Record>> for Writer<S> {
    type Result = ();

    fn handle(&mut self, Record(record): Record<S::Record>, ctx: &mut Context<Self>) {
        self.guarded(ctx, "recording a result", |act, ctx| {
            let (row, failed) = act.sink.take(record);
            act.buffer.extend(row);
            act.faults.writer(WriterStep::Record);
            act.buffered(failed, ctx);
        });
    }
}

/// Write everything buffered now; answers how many rows were written, or why not.
#[derive(Message, Debug, Clone, Copy, PartialEq, Eq)]
#[rtype(result = "Result<usize, WriteError>")]
pub enum Flush {
    /// At the end of a pass, before looking for projects again.
    PassEnd,
    /// On shutdown, the last write.
    Shutdown,
}

impl<S: Sink> Handler<Flush> for Writer<S> {
    type Result = ResponseFuture<Result<usize, WriteError>>;

    fn handle(&mut self, msg: Flush, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        let reason = match msg {
            Flush::PassEnd => FlushReason::Requested,
            Flush::Shutdown => FlushReason::Shutdown,
        };
        // The waiter goes in first: after a panic the restarted Writer answers it.
        self.guarded(ctx, "a flush request", |act, ctx| {
            act.waiters.push((act.stats.rows_written, tx));
            act.faults.writer(WriterStep::Flush);
            act.flush(ctx, reason);
        });
        Box::pin(async move { rx.await.unwrap_or_else(|_| Err(WriteError::WriterStopped)) })
    }
}

/// This member lost its hold on its work: the fleet gave it to others, who do it again. Drop what
/// is buffered and write nothing more (a write under way ends as it would). Answers how many
/// results were dropped.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "usize")]
pub struct Discard;

impl<S: Sink> Handler<Discard> for Writer<S> {
    type Result = MessageResult<Discard>;

    fn handle(&mut self, _msg: Discard, _ctx: &mut Context<Self>) -> Self::Result {
        self.discarded = true;
        let dropped = self.buffer.len();
        self.buffer.clear();
        self.answer_waiters(Ok(()));
        MessageResult(dropped)
    }
}

#[derive(Message)]
#[rtype(result = "WriterStats")]
pub struct GetWriterStats;

impl<S: Sink> Handler<GetWriterStats> for Writer<S> {
    type Result = MessageResult<GetWriterStats>;

    fn handle(&mut self, _msg: GetWriterStats, ctx: &mut Context<Self>) -> Self::Result {
        let stats = self.guarded(ctx, "reporting its stats", |act, _| {
            let mut stats = act.stats.clone();
            stats.buffered = act.unwritten();
            stats
        });
        // After a panic here the counters are the ones it had; restarts counts this one.
        MessageResult(stats.unwrap_or_else(|| self.stats.clone()))
    }
}

/// Hand over what the sink kept (once the run has ended and the last flush is done).
#[derive(Debug)]
pub struct TakeOutcome<O>(std::marker::PhantomData<fn() -> O>);

impl<O> Default for TakeOutcome<O> {
    fn default() -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<O: 'static> Message for TakeOutcome<O> {
    type Result = O;
}

impl<S: Sink> Handler<TakeOutcome<S::Outcome>> for Writer<S> {
    type Result = MessageResult<TakeOutcome<S::Outcome>>;

    fn handle(&mut self, _msg: TakeOutcome<S::Outcome>, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.sink.outcome())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unfinished_batch_goes_back_before_what_arrived_since() {
        let mut buffer = vec![3];
        put_before(&mut buffer, vec![1, 2]);
        assert_eq!(buffer, vec![1, 2, 3]);
    }
}
