//! What the Writer holds unwritten, of either kind of work: analysis results (tracking rows) and
//! repair plans; and how one batch of them is written. A service does one kind of work, so a
//! batch holds one kind in practice; each is written its own way:
//! - rows: one bulk upsert ([`tracking::upsert`]), idempotent;
//! - plans, `repair apply`: each project in one transaction of its own
//!   ([`repair::apply_into`], on [`APPLY_LANES`] connections at once); a batch tried again writes nothing twice (the run's claim on each
//!   project), so projects written before a failure are kept as written and the rest retried;
//! - plans, `repair plan`: nothing is written; the flushed plans go to the outcome.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Sink;
use super::WriteError;
use crate::db::repair::{self, Written};
use crate::db::tracking::{self, TrackingRow};
use crate::db::Database;
use crate::repair::ProjectPlan;

/// Connections one batch of plans is applied on at once (each project is a transaction of its
/// own; one connection alone gave about 250 projects/s on the benchmark's machine).
const APPLY_LANES: usize = 4;

/// How long one write may take before it is abandoned and retried (both kinds are idempotent).
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// Results and plans not yet written.
#[derive(Debug, Clone, Default)]
pub struct Pending {
    pub rows: Vec<TrackingRow>,
    pub plans: Vec<ProjectPlan>,
}

impl Pending {
    pub fn len(&self) -> usize {
        self.rows.len() + self.plans.len()
    }

    /// Everything, as one batch: the last result per project (one statement cannot update the
    /// same row twice), every plan.
    pub fn take(&mut self) -> Pending {
        Pending {
            rows: dedupe(std::mem::take(&mut self.rows)),
            plans: std::mem::take(&mut self.plans),
        }
    }

    /// `earlier` (an unfinished write's batch) goes back in front of what arrived since.
    pub fn put_before(&mut self, mut earlier: Pending) {
        earlier.rows.append(&mut self.rows);
        earlier.plans.append(&mut self.plans);
        *self = earlier;
    }
}

/// What writing a batch did: the outcome, and the plans written before it ended (all of them on
/// success; those before the failure otherwise).
pub struct BatchWritten {
    pub result: Result<(), WriteError>,
    pub written: Vec<Written>,
    pub took: Duration,
}

/// Writes `batch` into `sink`.
pub async fn write(db: Database, sink: Sink, batch: Arc<Pending>) -> BatchWritten {
    let started = Instant::now();
    let mut written = Vec::new();
    let mut result = Ok(());
    if !batch.rows.is_empty() {
        result = within(batch.len(), tracking::upsert(&db, &batch.rows)).await;
    }
    if let (Ok(()), Sink::Apply { run_id, lease }, false) = (&result, sink, batch.plans.is_empty())
    {
        let mut lanes = vec![Vec::new(); APPLY_LANES];
        result = within(
            batch.len(),
            repair::apply_into(&db, run_id, &lease, &batch.plans, &mut lanes),
        )
        .await;
        written = lanes.into_iter().flatten().collect();
    }
    BatchWritten {
        result,
        written,
        took: started.elapsed(),
    }
}

async fn within<T>(
    rows: usize,
    write: impl std::future::Future<Output = Result<T, crate::db::DbError>>,
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

/// Keeps the last result per project: one statement cannot update the same row twice.
fn dedupe(mut rows: Vec<TrackingRow>) -> Vec<TrackingRow> {
    let mut seen = std::collections::HashSet::with_capacity(rows.len());
    rows.reverse();
    rows.retain(|r| seen.insert(r.project_id));
    rows.reverse();
    rows
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

    #[test]
    fn an_unfinished_batch_goes_back_before_what_arrived_since() {
        let mut pending = Pending {
            rows: vec![row(3, 0)],
            plans: Vec::new(),
        };
        pending.put_before(Pending {
            rows: vec![row(1, 0), row(2, 0)],
            plans: Vec::new(),
        });
        assert_eq!(pending.rows, vec![row(1, 0), row(2, 0), row(3, 0)]);
        assert_eq!(pending.take().len(), 3);
        assert_eq!(pending.len(), 0);
    }
}
