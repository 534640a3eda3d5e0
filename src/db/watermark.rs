//! The watermark: per shard, an id through which every project has a tracking row that answers
//! for it. Passes start there rather than at id 0, so a restart with millions of projects analysed
//! dispatches at once. It only ever moves up, and only as far as the database shows every project
//! below it answered *and* no transaction that could still add a project below it is running.
//!
//! Project ids come from a sequence, but transactions commit in any order: project 100 (a long
//! `Projects::CreateService` transaction) can become visible after project 101. So each move is
//! capped by a [`Fence`]: the highest visible id at some moment, and `xmax` of the snapshot then.
//! An invisible project below that id was being created by a transaction running at that moment
//! (its xid below `xmax`); once the oldest running transaction (`xmin` now) is past `xmax`, every
//! such transaction has committed or rolled back, and the ids up to the fence are final.
//!
//! What no fence can see (tracking rows deleted by hand, projects restored with their old id) the
//! sweep finds: see the Scheduler's `sweep`. This module also keeps when the shard was last swept.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use diesel::dsl::{max, sql};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable};
use diesel::upsert::excluded;
use diesel_async::RunQueryDsl;

use super::dsl::greatest;
use super::projects::{unanswered_ids, Span};
use super::schema::{projects, registry_repair_watermarks as watermarks};
use super::{Database, DbConn, DbError};
use crate::config::Shard;
use crate::sync::lock;

/// Ids probed per step when moving the watermark up.
const STEP: i64 = 100_000;
/// Steps per call: bounds the database time one call may take.
const STEPS_PER_CALL: usize = 20;
/// Fences kept while none is safe yet (a long transaction holds `xmin` back); the oldest, which
/// becomes safe first, and the newest are always kept.
const MAX_FENCES: usize = 64;

/// The highest visible project id at one moment, and the first transaction id not yet started
/// then: every transaction that could be adding a project below `max_id` has an id below `xmax`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    pub max_id: i64,
    pub xmax: i64,
}

/// The fences taken by earlier moves, not yet safe.
#[derive(Debug, Default)]
pub struct Fences(Mutex<VecDeque<Fence>>);

impl Fences {
    /// Adds `fence` (taken now) and returns the highest id below which no transaction can add a
    /// project any more, given `xmin`, the oldest transaction id still running. Safe fences are
    /// spent.
    pub fn ceiling(&self, fence: Fence, xmin: i64) -> Option<i64> {
        self.push(fence);
        let mut fences = lock(&self.0);
        let mut ceiling = None;
        while let Some(oldest) = fences.front().copied() {
            if oldest.xmax > xmin {
                break;
            }
            ceiling = Some(ceiling.map_or(oldest.max_id, |c: i64| c.max(oldest.max_id)));
            fences.pop_front();
        }
        ceiling
    }

    /// Adds a fence taken now.
    pub fn push(&self, fence: Fence) {
        let mut fences = lock(&self.0);
        if fences.back().is_some_and(|last| *last == fence) {
            return;
        }
        fences.push_back(fence);
        if fences.len() > MAX_FENCES {
            fences.remove(1);
        }
    }
}

#[derive(Queryable)]
struct Snapshot {
    max_id: Option<i64>,
    xmin: i64,
    xmax: i64,
}

async fn snapshot(conn: &mut DbConn) -> Result<Snapshot, DbError> {
    // Statements outside a transaction each take a snapshot of their own: one statement reads
    // the highest id and the snapshot's bounds together.
    diesel::select((
        projects::table.select(max(projects::id)).single_value(),
        sql::<BigInt>("pg_snapshot_xmin(pg_current_snapshot())::text::bigint"),
        sql::<BigInt>("pg_snapshot_xmax(pg_current_snapshot())::text::bigint"),
    ))
    .get_result(conn)
    .await
    .map_err(DbError::query(
        "reading the highest project id and the running transactions",
    ))
}

/// Takes a fence now, for a later [`advance`]: the Scheduler takes one as each pass starts, so
/// that by the pass's end it is likely safe.
pub async fn take_fence(db: &Database, fences: &Fences) -> Result<(), DbError> {
    let mut conn = db.conn().await?;
    let now = snapshot(&mut conn).await?;
    fences.push(Fence {
        max_id: now.max_id.unwrap_or(0),
        xmax: now.xmax,
    });
    Ok(())
}

/// The stored watermark of `shard` (0 when there is none), and how long ago the shard was last
/// swept (`None`: never).
pub async fn load(db: &Database, shard: Shard) -> Result<(i64, Option<Duration>), DbError> {
    let mut conn = db.conn().await?;
    let swept_ago_s = sql::<Nullable<diesel::sql_types::Double>>(
        "EXTRACT(EPOCH FROM now() - registry_repair_watermarks.swept_at)::float8",
    );
    let row: Option<(i64, Option<f64>)> = watermarks::table
        .find(shard.to_string())
        .select((watermarks::analysed_through, swept_ago_s))
        .get_result(&mut conn)
        .await
        .optional()
        .map_err(DbError::query("reading the watermark"))?;
    Ok(match row {
        Some((through, swept_ago_s)) => (
            through,
            swept_ago_s.map(|s| Duration::from_secs_f64(s.clamp(0.0, 1e9))),
        ),
        None => (0, None),
    })
}

/// Moves the watermark of `shard` up from `from` as far as every project has an answer and
/// `fences` allow (at most `STEPS_PER_CALL` steps), stores it, and returns it.
pub async fn advance(
    db: &Database,
    shard: Shard,
    from: i64,
    fences: &Fences,
) -> Result<i64, DbError> {
    let mut conn = db.conn().await?;
    let now = snapshot(&mut conn).await?;
    let fence = Fence {
        max_id: now.max_id.unwrap_or(0),
        xmax: now.xmax,
    };
    let Some(max) = fences.ceiling(fence, now.xmin) else {
        return Ok(from); // a transaction from before every fence still runs
    };
    let mut through = from;
    for _ in 0..STEPS_PER_CALL {
        if through >= max {
            break;
        }
        let upper = (through + STEP).min(max);
        let span = Span {
            after: through,
            through: Some(upper),
        };
        let hole = unanswered_ids(&mut conn, span, 1, shard)
            .await?
            .into_iter()
            .next();
        match hole {
            Some(first_unanalysed) => {
                through = first_unanalysed - 1;
                break;
            }
            None => through = upper,
        }
    }
    if through > from {
        diesel::insert_into(watermarks::table)
            .values((
                watermarks::shard.eq(shard.to_string()),
                watermarks::analysed_through.eq(through),
                watermarks::updated_at.eq(diesel::dsl::now),
            ))
            .on_conflict(watermarks::shard)
            .do_update()
            .set((
                watermarks::analysed_through.eq(greatest(
                    watermarks::analysed_through,
                    excluded(watermarks::analysed_through),
                )),
                watermarks::updated_at.eq(diesel::dsl::now),
            ))
            .execute(&mut conn)
            .await
            .map_err(DbError::query("storing the watermark"))?;
    }
    Ok(through.max(from))
}

/// Records that `shard` finished a sweep now.
pub async fn swept(db: &Database, shard: Shard) -> Result<(), DbError> {
    swept_on(&mut db.conn().await?, shard).await
}

/// [`swept`], on `conn` (in the caller's transaction, if any).
pub(in crate::db) async fn swept_on(conn: &mut DbConn, shard: Shard) -> Result<(), DbError> {
    diesel::insert_into(watermarks::table)
        .values((
            watermarks::shard.eq(shard.to_string()),
            watermarks::analysed_through.eq(0),
            watermarks::updated_at.eq(diesel::dsl::now),
            watermarks::swept_at.eq(diesel::dsl::now),
        ))
        .on_conflict(watermarks::shard)
        .do_update()
        .set(watermarks::swept_at.eq(diesel::dsl::now))
        .execute(conn)
        .await
        .map_err(DbError::query("recording the end of a sweep"))?;
    Ok(())
}

/// Forgets the watermark of `shard` (`run --from-start`).
pub async fn reset(db: &Database, shard: Shard) -> Result<(), DbError> {
    let mut conn = db.conn().await?;
    diesel::delete(watermarks::table.find(shard.to_string()))
        .execute(&mut conn)
        .await
        .map_err(DbError::query("resetting the watermark"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fence_is_safe_once_every_transaction_running_when_it_was_taken_has_ended() {
        let fences = Fences::default();
        // A transaction (xid 100) is still running: the fence at id 500 must wait.
        assert_eq!(
            fences.ceiling(
                Fence {
                    max_id: 500,
                    xmax: 105
                },
                100
            ),
            None
        );
        assert_eq!(
            fences.ceiling(
                Fence {
                    max_id: 700,
                    xmax: 120
                },
                100
            ),
            None
        );
        // It ended; the oldest running is 110: the first fence is safe, the second not yet.
        assert_eq!(
            fences.ceiling(
                Fence {
                    max_id: 800,
                    xmax: 130
                },
                110
            ),
            Some(500)
        );
        // Nothing runs any more: everything up to the newest fence is final.
        assert_eq!(
            fences.ceiling(
                Fence {
                    max_id: 900,
                    xmax: 140
                },
                140
            ),
            Some(900)
        );
        assert_eq!(
            fences.ceiling(
                Fence {
                    max_id: 900,
                    xmax: 141
                },
                140
            ),
            None
        );
    }

    #[test]
    fn fences_stay_bounded_while_a_long_transaction_holds_xmin_back() {
        let fences = Fences::default();
        for i in 0..1000 {
            assert_eq!(
                fences.ceiling(
                    Fence {
                        max_id: i,
                        xmax: 10 + i
                    },
                    5
                ),
                None
            );
        }
        assert!(lock(&fences.0).len() <= MAX_FENCES + 1);
        // The oldest is kept: it becomes safe first.
        assert_eq!(
            fences.ceiling(
                Fence {
                    max_id: 2000,
                    xmax: 2000
                },
                11
            ),
            Some(0)
        );
    }
}
