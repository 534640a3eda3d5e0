//! The analysis' sink ([`Tracking`]): tracking rows, each batch one bulk upsert
//! ([`tracking::upsert`]), idempotent, with the rows' missing repositories and failures beside
//! them in the same transaction.

use std::sync::Arc;

use futures_util::future::LocalBoxFuture;
use futures_util::FutureExt;

use crate::db::missing::MissingRepository;
use crate::db::tracking::{self, TrackingRow, TrackingStatus};
use crate::db::Database;
use crate::work::{within, Sink, WriteError};

/// Tracking rows, written to GitLab's tracking table.
pub struct Tracking {
    db: Database,
}

impl Tracking {
    pub fn new(db: Database) -> Self {
        Self { db }
    }
}

impl Sink for Tracking {
    type Record = TrackingRow;
    type Row = TrackingRow;
    type Report = ();
    type Outcome = ();

    fn take(&mut self, row: TrackingRow) -> (Option<TrackingRow>, bool) {
        let failed = row.status == TrackingStatus::Failed;
        (Some(row), failed)
    }

    fn batch(rows: Vec<TrackingRow>) -> Vec<TrackingRow> {
        dedupe(rows)
    }

    fn write(
        &self,
        rows: Arc<Vec<TrackingRow>>,
    ) -> LocalBoxFuture<'static, (Result<(), WriteError>, ())> {
        let db = self.db.clone();
        async move { (within(rows.len(), tracking::upsert(&db, &rows)).await, ()) }.boxed_local()
    }

    fn outcome(&mut self) {}
}

/// Keeps the last result per project: one statement cannot update the same row twice.
fn dedupe(mut rows: Vec<TrackingRow>) -> Vec<TrackingRow> {
    let mut seen = std::collections::HashSet::with_capacity(rows.len());
    rows.reverse();
    rows.retain(|r| seen.insert(r.project_id));
    rows.reverse();
    rows
}

/// The sizes of a recorded row's missing repositories, for the status' counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Found {
    /// Their known sizes, summed.
    pub bytes: u64,
    /// How many have no known size.
    pub sizes_unknown: u64,
}

impl Found {
    pub fn of(repositories: &[MissingRepository]) -> Self {
        repositories
            .iter()
            .fold(Self::default(), |found, r| match r.size_bytes {
                Some(bytes) => Self {
                    bytes: found.bytes + u64::try_from(bytes).unwrap_or(0),
                    ..found
                },
                None => Self {
                    sizes_unknown: found.sizes_unknown + 1,
                    ..found
                },
            })
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

    #[test]
    fn found_sums_the_known_sizes_and_counts_the_unknown() {
        let repository = |size_bytes| MissingRepository {
            registry_path: "g/p/x".into(),
            name: "x".into(),
            registry_created_at: None,
            size_bytes,
        };
        assert_eq!(
            Found::of(&[repository(Some(5)), repository(None), repository(Some(7))]),
            Found {
                bytes: 12,
                sizes_unknown: 1
            }
        );
        assert_eq!(Found::of(&[]), Found::default());
    }
}
