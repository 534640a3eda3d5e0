//! The Writer actor: the only owner of results not yet in the database. It buffers them and writes
//! them with one bulk statement when the buffer reaches `writer.batch_size`, every
//! `writer.flush_interval_ms`, at once when a project fails, and when asked to (shutdown, end of a
//! pass). A write that fails keeps its rows and is tried again; while the buffer is over its bound
//! the Scheduler is told to stop dispatching.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::db::tracking::{self, Status, TrackingRow};
use crate::db::Database;
use crate::faults::Faults;

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
    Requested,
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
    pub failed_writes: u64,
    pub full: bool,
    pub restarts: u64,
}

pub struct Writer {
    db: Database,
    batch_size: usize,
    flush_interval: Duration,
    /// Over this many buffered rows the Scheduler stops dispatching.
    high_water: usize,
    buffer: Vec<TrackingRow>,
    listener: Option<Recipient<WriterPressure>>,
    retry_delay: Duration,
    retry_after: Option<Instant>,
    stats: WriterStats,
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
            listener: None,
            retry_delay: RETRY_MIN,
            retry_after: None,
            stats: WriterStats::default(),
            faults: Arc::default(),
        }
    }

    /// Test-only fault injection.
    pub fn with_faults(mut self, faults: Arc<Faults>) -> Self {
        self.faults = faults;
        self
    }

    fn backing_off(&self) -> bool {
        self.retry_after.is_some_and(|t| Instant::now() < t)
    }

    /// Writes the whole buffer, `batch_size` rows per statement. While it runs the mailbox stays
    /// closed (`ctx.wait`/`AtomicResponse`), so writes never overlap and never reorder.
    fn write_out(
        &mut self,
        reason: FlushReason,
    ) -> impl ActorFuture<Self, Output = Result<usize, String>> {
        let rows = std::mem::take(&mut self.buffer);
        let db = self.db.clone();
        let batch_size = self.batch_size;
        let count = rows.len();
        let work = async move {
            let mut written = 0;
            let mut rest = rows;
            while !rest.is_empty() {
                let tail = rest.split_off(batch_size.min(rest.len()));
                let batch = dedupe(std::mem::replace(&mut rest, tail));
                let outcome =
                    tokio::time::timeout(WRITE_TIMEOUT, tracking::upsert(&db, &batch)).await;
                let error = match outcome {
                    Ok(Ok(_)) => {
                        written += batch.len();
                        continue;
                    }
                    Ok(Err(error)) => error.to_string(),
                    Err(_) => format!(
                        "writing {} rows took longer than {WRITE_TIMEOUT:?}",
                        batch.len()
                    ),
                };
                let mut unwritten = batch;
                unwritten.append(&mut rest);
                return (written, Err((error, unwritten)));
            }
            (written, Ok(()))
        };
        work.into_actor(self).map(move |(written, result), act, _ctx| {
            act.stats.rows_written += written as u64;
            match reason {
                FlushReason::Size => act.stats.flushes_size += 1,
                FlushReason::Timer => act.stats.flushes_timer += 1,
                FlushReason::Failure => act.stats.flushes_failure += 1,
                FlushReason::Requested => act.stats.flushes_requested += 1,
            }
            let outcome = match result {
                Ok(()) => {
                    if count > 0 {
                        tracing::debug!(rows = written, ?reason, "results flushed");
                    }
                    act.retry_delay = RETRY_MIN;
                    act.retry_after = None;
                    Ok(written)
                }
                Err((error, mut unwritten)) => {
                    act.stats.failed_writes += 1;
                    let kept = unwritten.len();
                    // Rows that arrived meanwhile go after the ones we failed to write.
                    unwritten.append(&mut act.buffer);
                    act.buffer = unwritten;
                    act.retry_after = Some(Instant::now() + act.retry_delay);
                    tracing::warn!(%error, kept, retry_in = ?act.retry_delay, "flush failed; results kept for the next attempt");
                    act.retry_delay = (act.retry_delay * 2).min(RETRY_MAX);
                    Err(error)
                }
            };
            act.update_pressure();
            outcome
        })
    }

    fn flush_in_background(&mut self, ctx: &mut Context<Self>, reason: FlushReason) {
        if self.buffer.is_empty() || self.backing_off() {
            return;
        }
        let work = self.write_out(reason).map(|_, _, _| ());
        ctx.wait(work);
    }

    fn update_pressure(&mut self) {
        let full = self.buffer.len() >= self.high_water;
        if full != self.stats.full {
            self.stats.full = full;
            if full {
                tracing::warn!(
                    buffered = self.buffer.len(),
                    "writer buffer full; dispatching stops until it drains"
                );
            } else {
                tracing::info!(
                    buffered = self.buffer.len(),
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
            act.flush_in_background(ctx, FlushReason::Timer);
        });
    }
}

impl Supervised for Writer {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
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
        let failed = row.status == Status::Failed;
        self.buffer.push(row);
        let checked = std::panic::catch_unwind(AssertUnwindSafe(|| self.faults.writer()));
        if checked.is_err() {
            // The Supervisor restarts us with the same struct: the buffer survives.
            tracing::error!(buffered = self.buffer.len(), "writer panicked; restarting");
            self.stats.restarts += 1;
            ctx.stop();
            return;
        }
        self.update_pressure();
        if failed {
            self.flush_in_background(ctx, FlushReason::Failure);
        } else if self.buffer.len() >= self.batch_size {
            self.flush_in_background(ctx, FlushReason::Size);
        }
    }
}

/// Write everything buffered now; answers how many rows were written, or why not.
#[derive(Message)]
#[rtype(result = "Result<usize, String>")]
pub struct Flush;

impl Handler<Flush> for Writer {
    type Result = AtomicResponse<Self, Result<usize, String>>;

    fn handle(&mut self, _msg: Flush, _ctx: &mut Context<Self>) -> Self::Result {
        AtomicResponse::new(Box::pin(self.write_out(FlushReason::Requested)))
    }
}

/// Who to tell when the buffer fills or drains.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetPressureListener(pub Recipient<WriterPressure>);

impl Handler<SetPressureListener> for Writer {
    type Result = ();

    fn handle(&mut self, msg: SetPressureListener, _ctx: &mut Context<Self>) {
        self.listener = Some(msg.0);
    }
}

#[derive(Message)]
#[rtype(result = "WriterStats")]
pub struct GetWriterStats;

impl Handler<GetWriterStats> for Writer {
    type Result = MessageResult<GetWriterStats>;

    fn handle(&mut self, _msg: GetWriterStats, _ctx: &mut Context<Self>) -> Self::Result {
        let mut stats = self.stats.clone();
        stats.buffered = self.buffer.len();
        MessageResult(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(project_id: i64, missing_count: i32) -> TrackingRow {
        TrackingRow {
            project_id,
            missing_count,
            status: Status::Completed,
        }
    }

    #[test]
    fn dedupe_keeps_the_latest_result_per_project_in_order() {
        let rows = vec![row(1, 1), row(2, 2), row(1, 3), row(3, 4)];
        assert_eq!(dedupe(rows), vec![row(2, 2), row(1, 3), row(3, 4)]);
    }
}
