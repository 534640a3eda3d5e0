//! The Writer actor: the only owner of results not yet in the database. It buffers them and writes
//! them with one bulk statement when the buffer reaches `writer.batch_size`, every
//! `writer.flush_interval_ms`, at once when a project fails, and when asked to (shutdown, end of a
//! pass). One write runs at a time while results keep arriving; what arrived meanwhile goes into
//! the next statement (group commit), so statements grow with the load instead of queueing. A
//! write that fails keeps its rows and is tried again; while the buffer is over its bound the
//! Scheduler is told to stop dispatching. A panic anywhere in it becomes a supervised restart that
//! keeps every row.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::db::tracking::{self, Status, TrackingRow};
use crate::db::Database;
#[cfg(feature = "faults")]
use crate::faults::{Faults, WriterStep};

/// How long one bulk write may take before it is abandoned and retried (the upsert is idempotent).
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// Why a flush happened; counted per reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushReason {
    Size,
    Timer,
    Failure,
    /// Asked for at the end of a pass.
    Requested,
    /// Asked for on shutdown.
    Shutdown,
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
type Waiter = (u64, oneshot::Sender<Result<usize, String>>);

pub struct Writer {
    db: Database,
    batch_size: usize,
    flush_interval: Duration,
    /// Over this many buffered rows the Scheduler stops dispatching.
    high_water: usize,
    buffer: Vec<TrackingRow>,
    /// The rows of the write under way: put back if the actor restarts in the middle of it.
    writing: Option<Arc<Vec<TrackingRow>>>,
    /// A failed project arrived while writing: write again as soon as the current write ends.
    urgent: bool,
    waiters: Vec<Waiter>,
    listener: Option<Recipient<WriterPressure>>,
    retry_delay: Duration,
    retry_after: Option<Instant>,
    stats: WriterStats,
    #[cfg(feature = "faults")]
    faults: Arc<Faults>,
}

impl Writer {
    pub fn new(db: Database, batch_size: usize, flush_interval: Duration) -> Self {
        Self {
            db,
            batch_size,
            flush_interval,
            high_water: batch_size.saturating_mul(4).max(64),
            buffer: Vec::new(),
            writing: None,
            urgent: false,
            waiters: Vec::new(),
            listener: None,
            retry_delay: RETRY_MIN,
            retry_after: None,
            stats: WriterStats::default(),
            #[cfg(feature = "faults")]
            faults: Arc::default(),
        }
    }

    /// Test-only fault injection.
    #[cfg(feature = "faults")]
    pub fn with_faults(mut self, faults: Arc<Faults>) -> Self {
        self.faults = faults;
        self
    }

    fn backing_off(&self) -> bool {
        self.retry_after.is_some_and(|t| Instant::now() < t)
    }

    /// Starts writing the whole buffer in one statement, unless a write is under way (then the
    /// rows wait for the next one) or the database failed a moment ago (then the timer retries).
    fn flush(&mut self, ctx: &mut Context<Self>, reason: FlushReason) {
        if self.writing.is_some() {
            self.urgent |= reason == FlushReason::Failure;
            return;
        }
        if self.buffer.is_empty() {
            self.answer_waiters(Ok(()));
            return;
        }
        let asked = matches!(reason, FlushReason::Requested | FlushReason::Shutdown);
        if !asked && self.backing_off() {
            return;
        }
        match reason {
            FlushReason::Size => self.stats.flushes_size += 1,
            FlushReason::Timer => self.stats.flushes_timer += 1,
            FlushReason::Failure => self.stats.flushes_failure += 1,
            FlushReason::Requested => self.stats.flushes_requested += 1,
            FlushReason::Shutdown => self.stats.flushes_shutdown += 1,
        }
        self.urgent = false;
        let rows = Arc::new(dedupe(std::mem::take(&mut self.buffer)));
        self.writing = Some(rows.clone());
        let db = self.db.clone();
        let work = async move {
            let started = Instant::now();
            let outcome = tokio::time::timeout(WRITE_TIMEOUT, tracking::upsert(&db, &rows)).await;
            let result = match outcome {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(error)) => Err(error.to_string()),
                Err(_) => Err(format!(
                    "writing {} rows took longer than {WRITE_TIMEOUT:?}",
                    rows.len()
                )),
            };
            (result, started.elapsed())
        };
        ctx.spawn(work.into_actor(self).map(move |(result, took), act, ctx| {
            act.guarded(ctx, "taking in a write's outcome", |act, ctx| {
                act.write_done(ctx, reason, result, took)
            });
        }));
    }

    /// A bulk write has ended: count it, and on success write what arrived meanwhile if it is due;
    /// on failure put its rows back and back off.
    fn write_done(
        &mut self,
        ctx: &mut Context<Self>,
        reason: FlushReason,
        result: Result<(), String>,
        took: Duration,
    ) {
        #[cfg(feature = "faults")]
        self.faults.writer(WriterStep::WriteDone);
        self.stats.write_ms_total += took.as_millis() as u64;
        match result {
            Ok(()) => {
                let rows = self.writing.take().map_or(0, |rows| rows.len());
                self.stats.rows_written += rows as u64;
                tracing::debug!(rows, ?reason, ?took, "results flushed");
                self.retry_delay = RETRY_MIN;
                self.retry_after = None;
                // What arrived meanwhile: write it now if it makes a batch or is awaited.
                if self.buffer.is_empty() {
                    self.answer_waiters(Ok(()));
                } else if !self.waiters.is_empty() {
                    self.flush(ctx, FlushReason::Requested);
                } else if self.urgent {
                    self.flush(ctx, FlushReason::Failure);
                } else if self.buffer.len() >= self.batch_size {
                    self.flush(ctx, FlushReason::Size);
                }
            }
            Err(error) => {
                self.stats.failed_writes += 1;
                self.put_back();
                self.retry_after = Some(Instant::now() + self.retry_delay);
                tracing::warn!(%error, kept = self.buffer.len(), retry_in = ?self.retry_delay, "flush failed; results kept for the next attempt");
                self.retry_delay = (self.retry_delay * 2).min(RETRY_MAX);
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
                    buffered = self.held(),
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
        if let Some(rows) = self.writing.take() {
            let mut rows = Arc::try_unwrap(rows).unwrap_or_else(|shared| shared.as_ref().clone());
            rows.append(&mut self.buffer);
            self.buffer = rows;
        }
    }

    fn answer_waiters(&mut self, result: Result<(), String>) {
        let written = self.stats.rows_written;
        for (since, waiter) in self.waiters.drain(..) {
            let answer = result
                .clone()
                .map(|()| usize::try_from(written - since).unwrap_or(usize::MAX));
            let _ = waiter.send(answer);
        }
    }

    /// Rows not yet in the database: buffered, or in the write under way.
    fn held(&self) -> usize {
        self.buffer.len() + self.writing.as_ref().map_or(0, |rows| rows.len())
    }

    fn update_pressure(&mut self) {
        let full = self.held() >= self.high_water;
        if full != self.stats.full {
            self.stats.full = full;
            if full {
                tracing::warn!(
                    buffered = self.held(),
                    "writer buffer full; dispatching stops until it drains"
                );
            } else {
                tracing::info!(
                    buffered = self.held(),
                    "writer buffer drained; dispatching resumes"
                );
            }
            if let Some(listener) = &self.listener {
                listener.do_send(WriterPressure { full });
            }
        }
    }
}

/// Keeps the last result per project: one statement cannot update the same row twice.
fn dedupe(mut rows: Vec<TrackingRow>) -> Vec<TrackingRow> {
    let mut seen = std::collections::HashSet::with_capacity(rows.len());
    rows.reverse();
    rows.retain(|r| seen.insert(r.project_id));
    rows.reverse();
    rows
}

impl Actor for Writer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Runs again after a supervised restart, which cancels the old timer: the buffer survives.
        ctx.run_interval(self.flush_interval, |act, ctx| {
            act.guarded(ctx, "the flush timer", |act, ctx| {
                #[cfg(feature = "faults")]
                act.faults.writer(WriterStep::Timer);
                act.flush(ctx, FlushReason::Timer);
            });
        });
    }
}

impl Supervised for Writer {
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

/// Sent by the Writer whenever its buffer crosses its bound, either way.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct WriterPressure {
    pub full: bool,
}

/// One project's result.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Record(pub TrackingRow);

impl Handler<Record> for Writer {
    type Result = ();

    fn handle(&mut self, Record(row): Record, ctx: &mut Context<Self>) {
        self.guarded(ctx, "recording a result", |act, ctx| {
            let failed = row.status == Status::Failed;
            act.buffer.push(row);
            #[cfg(feature = "faults")]
            act.faults.writer(WriterStep::Record);
            act.update_pressure();
            if failed {
                act.flush(ctx, FlushReason::Failure);
            } else if act.buffer.len() >= act.batch_size {
                act.flush(ctx, FlushReason::Size);
            }
        });
    }
}

/// Write everything buffered now; answers how many rows were written, or why not.
#[derive(Message, Clone, Copy)]
#[rtype(result = "Result<usize, String>")]
pub struct Flush {
    pub shutdown: bool,
}

impl Flush {
    /// At the end of a pass, before looking for projects again.
    pub const PASS_END: Flush = Flush { shutdown: false };
    /// On shutdown, the last write.
    pub const SHUTDOWN: Flush = Flush { shutdown: true };
}

impl Handler<Flush> for Writer {
    type Result = ResponseFuture<Result<usize, String>>;

    fn handle(&mut self, msg: Flush, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        let reason = if msg.shutdown {
            FlushReason::Shutdown
        } else {
            FlushReason::Requested
        };
        // The waiter goes in first: after a panic the restarted Writer answers it.
        self.guarded(ctx, "a flush request", |act, ctx| {
            act.waiters.push((act.stats.rows_written, tx));
            #[cfg(feature = "faults")]
            act.faults.writer(WriterStep::Flush);
            act.flush(ctx, reason);
        });
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err("the writer stopped before writing".into()))
        })
    }
}

/// Who to tell when the buffer fills or drains.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetPressureListener(pub Recipient<WriterPressure>);

impl Handler<SetPressureListener> for Writer {
    type Result = ();

    fn handle(&mut self, msg: SetPressureListener, ctx: &mut Context<Self>) {
        self.guarded(ctx, "setting the pressure listener", |act, _| {
            act.listener = Some(msg.0);
        });
    }
}

#[derive(Message)]
#[rtype(result = "WriterStats")]
pub struct GetWriterStats;

impl Handler<GetWriterStats> for Writer {
    type Result = MessageResult<GetWriterStats>;

    fn handle(&mut self, _msg: GetWriterStats, ctx: &mut Context<Self>) -> Self::Result {
        let stats = self.guarded(ctx, "reporting its stats", |act, _| {
            let mut stats = act.stats.clone();
            stats.buffered = act.held();
            stats
        });
        // After a panic here the counters are the ones it had; restarts counts this one.
        MessageResult(stats.unwrap_or_else(|| self.stats.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(project_id: i64, missing_count: i32) -> TrackingRow {
        TrackingRow::completed(project_id, missing_count)
    }

    #[test]
    fn dedupe_keeps_the_latest_result_per_project_in_order() {
        let rows = vec![row(1, 1), row(2, 2), row(1, 3), row(3, 4)];
        assert_eq!(dedupe(rows), vec![row(2, 2), row(1, 3), row(3, 4)]);
    }
}
