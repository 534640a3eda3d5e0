//! A work's [`Sink`]: what the Writer buffers and how it writes a batch of it. The Writer decides
//! when to write (size, timer, a failed project, a request) and keeps what is not written across
//! failures and restarts; the sink says what a project's record becomes and writes a batch.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::LocalBoxFuture;

use crate::db::DbError;

/// How long one write may take before it is abandoned and retried (every sink's writes are
/// idempotent).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// Where a work's results go.
pub trait Sink: Unpin + 'static {
    /// What the Writer is sent for one project.
    type Record: Send + 'static;
    /// What it buffers and writes in batches.
    type Row: Clone + Unpin + 'static;
    /// What writing a batch tells besides whether it succeeded.
    type Report: 'static;
    /// What it hands on once the run has ended.
    type Outcome: Default + Send + 'static;

    /// Takes one project's record: the row to buffer (`None`: nothing to write, the record is
    /// kept aside), and whether the project ended failed (then what is buffered is written at
    /// once).
    fn take(&mut self, record: Self::Record) -> (Option<Self::Row>, bool);

    /// The rows one write takes of those buffered, in order (the analysis keeps the last row per
    /// project: one statement cannot update a row twice).
    fn batch(rows: Vec<Self::Row>) -> Vec<Self::Row> {
        rows
    }

    /// Writes one batch, within [`WRITE_TIMEOUT`].
    fn write(
        &self,
        rows: Arc<Vec<Self::Row>>,
    ) -> LocalBoxFuture<'static, (Result<(), WriteError>, Self::Report)>;

    /// Takes in what a write told, whether it succeeded or not.
    fn written(&mut self, _report: Self::Report) {}

    /// A batch was written.
    fn flushed(&mut self, _rows: &[Self::Row]) {}

    /// Hands on what it kept, once the run has ended.
    fn outcome(&mut self) -> Self::Outcome;
}

/// Why the Writer's buffer was not written. Cloned to every waiter of the same write.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Database(Arc<DbError>),
    #[error("writing {rows} rows took longer than {after:?}")]
    TimedOut { rows: usize, after: Duration },
    #[error("the writer stopped before writing")]
    WriterStopped,
    /// The Scheduler went away before it asked for the last write.
    #[error("the scheduler stopped unexpectedly")]
    SchedulerStopped,
}

impl WriteError {
    /// The database's refusal of the write, if no retry mends it.
    pub fn refused(&self) -> Option<super::Refused> {
        match self {
            WriteError::Database(error) => super::Refused::lasting(error.clone()),
            _ => None,
        }
    }
}

/// Two failures are the same failure: the same database error (one write's, answered to all its
/// waiters), or the same kind of failure otherwise.
impl PartialEq for WriteError {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (WriteError::Database(a), WriteError::Database(b)) => Arc::ptr_eq(a, b),
            (
                WriteError::TimedOut { rows, after },
                WriteError::TimedOut {
                    rows: other_rows,
                    after: other_after,
                },
            ) => rows == other_rows && after == other_after,
            (WriteError::WriterStopped, WriteError::WriterStopped)
            | (WriteError::SchedulerStopped, WriteError::SchedulerStopped) => true,
            _ => false,
        }
    }
}

/// `write` of `rows` rows, bounded by [`WRITE_TIMEOUT`].
pub async fn within<T>(
    rows: usize,
    write: impl std::future::Future<Output = Result<T, DbError>>,
) -> Result<(), WriteError> {
    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(WriteError::Database(Arc::new(error))),
        Err(_) => Err(WriteError::TimedOut {
            rows,
            after: WRITE_TIMEOUT,
        }),
    }
}
