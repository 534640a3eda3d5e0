//! `registry_repair_passes` and `registry_repair_claims`: the fleet's passes over the projects.
//!
//! Per shard, one row holds the pass the fleet is in and its shared cursors: the walk above the
//! watermark, a sweep below it, a retry of the failed projects. A member reads the next projects
//! by moving a cursor inside a transaction that locks that row, and records what it took as a
//! claim: the span of ids it now answers for. So no two members read the same projects, and the
//! reads of the fleet are one at a time (one short transaction per read).
//!
//! A pass ends when its cursors are through and no claim of it is left: each member deletes its
//! claims once what it read is flushed. The member that finds the pass ended moves the watermark
//! up and starts the next one. A member that dies leaves its claims; once its heartbeat is older
//! than the timeout, the next member to read takes them over, span by span, and analyses what in
//! them still has no answer: only the dead member's unflushed work is done twice.

use std::sync::Arc;
use std::time::Duration;

use diesel::sql_types::{BigInt, Bool, Double, Nullable, Text};
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use futures_util::FutureExt;

use super::Member;
use crate::config::Shard;
use crate::db::projects::{
    count_unanswered, count_uncounted, estimate_unanswered, failed_ids, unanswered_ids,
    uncounted_ids, with_paths, Project, Span,
};
use crate::db::tracking::Replaces;
use crate::db::{Database, DbConn, DbError};

/// Ids a sweep reads per span: each span one range scan of the two primary keys, so no
/// statement runs long.
pub const SWEEP_SPAN: i64 = 100_000;

/// Which cursor a claim came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The walk above the watermark.
    Walk,
    /// The sweep below it.
    Sweep,
    /// The retry of projects recorded `failed` (`run --retry-failed`).
    Failed,
    /// The projects counted without their repositories (by a release before they were kept),
    /// analysed again to itemise them.
    Itemise,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Walk => "walk",
            Kind::Sweep => "sweep",
            Kind::Failed => "failed",
            Kind::Itemise => "itemise",
        }
    }

    fn parse(s: &str) -> Kind {
        match s {
            "sweep" => Kind::Sweep,
            "failed" => Kind::Failed,
            "itemise" => Kind::Itemise,
            _ => Kind::Walk,
        }
    }

    /// Which row already there the results of its projects replace.
    pub fn replaces(self) -> Replaces {
        match self {
            Kind::Walk | Kind::Sweep => Replaces::Nothing,
            Kind::Failed => Replaces::Failed,
            Kind::Itemise => Replaces::Uncounted,
        }
    }
}

/// What one read brought, and how far the fleet's pass is ([`PassProgress`]).
#[derive(Debug)]
pub struct Read {
    pub step: Step,
    pub progress: PassProgress,
}

/// What one read brought.
#[derive(Debug)]
pub enum Step {
    /// Projects to analyse (possibly none: a span with every project answered).
    Claimed {
        pass: i64,
        kind: Kind,
        projects: Vec<Project>,
        /// Taken over from a member that died or left.
        taken_from: Option<String>,
        /// This read finished the pass's sweep.
        swept: bool,
    },
    /// Every cursor of the pass is through: this member's part of it is read.
    PassRead { pass: i64 },
    /// The next pass starts only after this long (nothing was found, and nothing is due).
    NotBefore { pass: i64, wait: Duration },
}

/// How far the fleet's pass is, for progress and an ETA: one count of the work left per pass,
/// made by one member for the whole fleet ([`count_pass`]), and what the walk read since.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PassProgress {
    pub pass: i64,
    /// Projects without an answer above the watermark when counted, plus what the walk had read
    /// by then: `left_at_start - walked` are left. `None` until counted.
    pub left_at_start: Option<i64>,
    /// The count gave up within [`COUNT_TIMEOUT`] and the table statistics stand in.
    pub estimated: bool,
    /// Projects the pass's walk has read (claimed) so far, fleet-wide.
    pub walked: i64,
}

impl PassProgress {
    /// The projects left, as far as the fleet's count says.
    pub fn left(&self) -> Option<u64> {
        self.left_at_start
            .map(|at_start| u64::try_from(at_start.saturating_sub(self.walked)).unwrap_or(0))
    }
}

/// How long the fleet's one count of the work left may run (a statement timeout): a count that
/// would take longer gives way to the table statistics' estimate, and a count is never left
/// running on the server by a member that died.
pub const COUNT_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the fleet stands once a member's part of a pass is flushed.
#[derive(Debug, Clone, PartialEq)]
pub enum PassState {
    /// Others still work on the pass (or their claims wait for a takeover): look again soon.
    Waiting,
    /// The next pass starts after this long.
    NotBefore(Duration),
    /// A pass is open to read now.
    Next,
    /// `--until-done`: the last pass found nothing, and a sweep that began after this member
    /// started was part of the passes since.
    Done,
}

#[derive(Debug, diesel::QueryableByName)]
struct PassRow {
    #[diesel(sql_type = BigInt)]
    pass: i64,
    #[diesel(sql_type = BigInt)]
    walk_after: i64,
    #[diesel(sql_type = Bool)]
    walk_done: bool,
    #[diesel(sql_type = Nullable<BigInt>)]
    sweep_after: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    sweep_through: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    failed_after: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    failed_through: Option<i64>,
    /// Seconds until the pass may be read (negative: it may).
    #[diesel(sql_type = Double)]
    wait_s: f64,
    #[diesel(sql_type = Nullable<BigInt>)]
    last_found: Option<i64>,
    /// A sweep that began after this member joined has ended with a pass.
    #[diesel(sql_type = Bool)]
    swept_since_joined: bool,
    /// A sweep began in this pass.
    #[diesel(sql_type = Bool)]
    sweep_started: bool,
    /// No claim of this pass is left.
    #[diesel(sql_type = Bool)]
    unclaimed: bool,
    #[diesel(sql_type = Nullable<BigInt>)]
    left_at_start: Option<i64>,
    #[diesel(sql_type = Bool)]
    left_estimated: bool,
    #[diesel(sql_type = BigInt)]
    walked: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    itemise_after: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    itemise_through: Option<i64>,
}

impl PassRow {
    fn through(&self) -> bool {
        self.walk_done
            && self.sweep_after.is_none()
            && self.failed_after.is_none()
            && self.itemise_after.is_none()
    }

    fn progress(&self) -> PassProgress {
        PassProgress {
            pass: self.pass,
            left_at_start: self.left_at_start,
            estimated: self.left_estimated,
            walked: self.walked,
        }
    }
}

async fn lock_pass(
    conn: &mut DbConn,
    shard: Shard,
    member: &Member,
) -> Result<Option<PassRow>, DbError> {
    Ok(diesel::sql_query(
        "SELECT p.pass, p.walk_after, p.walk_done, p.sweep_after, p.sweep_through, \
                p.failed_after, p.failed_through, \
                EXTRACT(EPOCH FROM p.not_before - now())::float8 AS wait_s, p.last_found, \
                COALESCE(p.last_sweep_started_at >= \
                    (SELECT started_at FROM registry_repair_members WHERE id = $2), false) \
                    AS swept_since_joined, \
                p.sweep_started_at IS NOT NULL AS sweep_started, \
                NOT EXISTS (SELECT 1 FROM registry_repair_claims c \
                            WHERE c.shard = p.shard AND c.pass = p.pass) AS unclaimed, \
                p.left_at_start, p.left_estimated, p.walked, p.itemise_after, p.itemise_through \
         FROM registry_repair_passes p WHERE p.shard = $1 FOR UPDATE OF p",
    )
    .bind::<Text, _>(shard.to_string())
    .bind::<Text, _>(&member.id)
    .get_results(conn)
    .await
    .map_err(DbError::query(format!(
        "locking the fleet's pass of shard {shard}"
    )))?
    .pop())
}

/// Creates the shard's pass row if there is none: the first pass walks from `watermark`.
pub async fn ensure_pass(db: &Database, shard: Shard, watermark: i64) -> Result<(), DbError> {
    let mut conn = db.conn().await?;
    diesel::sql_query(
        "INSERT INTO registry_repair_passes (shard, pass, walk_after) VALUES ($1, 1, $2) \
         ON CONFLICT (shard) DO NOTHING",
    )
    .bind::<Text, _>(shard.to_string())
    .bind::<BigInt, _>(watermark)
    .execute(&mut conn)
    .await
    .map_err(DbError::query(format!(
        "creating the fleet's pass of shard {shard}"
    )))?;
    Ok(())
}

/// Forgets the shard's pass and claims (`run --from-start`): the next pass walks from id 0.
pub async fn reset(db: &Database, shard: Shard) -> Result<(), DbError> {
    let mut conn = db.conn().await?;
    conn.transaction(|conn| {
        async move {
            for table in ["registry_repair_claims", "registry_repair_passes"] {
                diesel::sql_query(format!("DELETE FROM {table} WHERE shard = $1"))
                    .bind::<Text, _>(shard.to_string())
                    .execute(conn)
                    .await
                    .map_err(DbError::query(format!(
                        "forgetting the fleet's pass of shard {shard}"
                    )))?;
            }
            Ok(())
        }
        .boxed()
    })
    .await
}

/// Starts a retry of the failed projects in the current pass (`run --retry-failed`), unless one
/// is under way.
pub async fn start_retry_failed(db: &Database, shard: Shard) -> Result<(), DbError> {
    let mut conn = db.conn().await?;
    diesel::sql_query(
        "UPDATE registry_repair_passes \
         SET failed_after = 0, failed_through = COALESCE((SELECT max(id) FROM projects), 0), \
             not_before = LEAST(not_before, now()) \
         WHERE shard = $1 AND failed_after IS NULL",
    )
    .bind::<Text, _>(shard.to_string())
    .execute(&mut conn)
    .await
    .map_err(DbError::query("starting a retry of the failed projects"))?;
    Ok(())
}

/// Starts a sweep below the watermark in the current pass when the last one is older than
/// `interval` and none began in this pass; whether it did.
pub async fn start_sweep_if_due(
    db: &Database,
    shard: Shard,
    interval: Duration,
) -> Result<bool, DbError> {
    let mut conn = db.conn().await?;
    let started = diesel::sql_query(
        "UPDATE registry_repair_passes p \
         SET sweep_after = 0, sweep_started_at = now(), not_before = LEAST(not_before, now()), \
             sweep_through = COALESCE((SELECT analysed_through FROM registry_repair_watermarks w \
                                       WHERE w.shard = p.shard), 0) \
         WHERE p.shard = $1 AND p.sweep_started_at IS NULL \
           AND NOT EXISTS (SELECT 1 FROM registry_repair_watermarks w \
                           WHERE w.shard = p.shard AND w.swept_at > now() - make_interval(secs => $2))",
    )
    .bind::<Text, _>(shard.to_string())
    .bind::<Double, _>(interval.as_secs_f64())
    .execute(&mut conn)
    .await
    .map_err(DbError::query("starting a sweep below the watermark"))?;
    Ok(started > 0)
}

/// Starts itemising, in the current pass, the projects counted without their repositories (by a
/// release before they were kept), unless it is under way or there are none; how many there are.
pub async fn start_itemise_if_needed(db: &Database, shard: Shard) -> Result<i64, DbError> {
    let mut conn = db.conn().await?;
    let uncounted = count_uncounted(&mut conn, shard).await?;
    if uncounted > 0 {
        diesel::sql_query(
            "UPDATE registry_repair_passes \
             SET itemise_after = 0, \
                 itemise_through = COALESCE((SELECT max(project_id) \
                                             FROM container_registry_data_repair_details), 0), \
                 not_before = LEAST(not_before, now()) \
             WHERE shard = $1 AND itemise_after IS NULL",
        )
        .bind::<Text, _>(shard.to_string())
        .execute(&mut conn)
        .await
        .map_err(DbError::query(
            "starting to itemise the projects counted without their repositories",
        ))?;
    }
    Ok(uncounted)
}

/// Counts the work left for the whole fleet, once per pass: the member that gets to (the first
/// to ask while nobody counts) counts the projects without an answer above the walk's cursor,
/// bounded by [`COUNT_TIMEOUT`], and records it in the pass row, where every member reads it with
/// its claims. A count that gives up is replaced by the table statistics' estimate, marked so.
/// `None`: the pass is counted already, or another member counts it.
pub async fn count_pass(db: &Database, member: &Member) -> Result<Option<PassProgress>, DbError> {
    #[derive(diesel::QueryableByName)]
    struct Counting {
        #[diesel(sql_type = BigInt)]
        pass: i64,
        #[diesel(sql_type = BigInt)]
        walk_after: i64,
        #[diesel(sql_type = BigInt)]
        walked: i64,
    }
    let shard = member.shard;
    let mut conn = db.conn().await?;
    let counting: Option<Counting> = diesel::sql_query(
        "UPDATE registry_repair_passes SET counting_since = now() \
         WHERE shard = $1 AND left_at_start IS NULL \
           AND (counting_since IS NULL OR counting_since < now() - make_interval(secs => $2)) \
         RETURNING pass, walk_after, walked",
    )
    .bind::<Text, _>(shard.to_string())
    .bind::<Double, _>(COUNT_TIMEOUT.as_secs_f64() * 2.0)
    .get_results(&mut conn)
    .await
    .map_err(DbError::query("taking the fleet's count of the work left"))?
    .pop();
    let Some(counting) = counting else {
        return Ok(None);
    };
    let timeout_ms = COUNT_TIMEOUT.as_millis();
    let counted = conn
        .transaction(|conn| {
            async move {
                conn.batch_execute(&format!("SET LOCAL statement_timeout = {timeout_ms}"))
                    .await
                    .map_err(DbError::query("bounding the count of the work left"))?;
                count_unanswered(conn, counting.walk_after, shard).await
            }
            .boxed()
        })
        .await;
    let (left, estimated) = match counted {
        Ok(left) => (left, false),
        Err(error) => {
            tracing::info!(%error, timeout_s = COUNT_TIMEOUT.as_secs(), "the work left was not counted in time; the table statistics' estimate stands in");
            (estimate_unanswered(&mut conn, shard).await?, true)
        }
    };
    let left_at_start = i64::try_from(left)
        .unwrap_or(i64::MAX)
        .saturating_add(counting.walked);
    diesel::sql_query(
        "UPDATE registry_repair_passes \
         SET left_at_start = $3, left_estimated = $4, counting_since = NULL \
         WHERE shard = $1 AND pass = $2",
    )
    .bind::<Text, _>(shard.to_string())
    .bind::<BigInt, _>(counting.pass)
    .bind::<BigInt, _>(left_at_start)
    .bind::<Bool, _>(estimated)
    .execute(&mut conn)
    .await
    .map_err(DbError::query(
        "recording the fleet's count of the work left",
    ))?;
    Ok(Some(PassProgress {
        pass: counting.pass,
        left_at_start: Some(left_at_start),
        estimated,
        walked: counting.walked,
    }))
}

/// Reads the next projects for `member`: first a span a dead or departed member left, then the
/// retry of failed projects, the sweep (every other read when `prefer_sweep` is false and the
/// walk is not through) and the walk.
pub async fn claim(
    db: &Database,
    member: &Arc<Member>,
    prefer_sweep: bool,
    limit: i64,
) -> Result<Read, DbError> {
    let mut conn = db.conn().await?;
    let member = member.clone();
    conn.transaction(|conn| {
        async move {
            let member = &*member;
            let shard = member.shard;
            let Some(pass) = lock_pass(conn, shard, member).await? else {
                return Err(DbError::query(format!(
                    "reading the fleet's pass of shard {shard} (registry_repair_passes)"
                ))(diesel::result::Error::NotFound));
            };
            let progress = pass.progress();
            let read = |step| Ok(Read { step, progress });
            if pass.wait_s > 0.0 {
                return read(Step::NotBefore {
                    pass: pass.pass,
                    wait: Duration::from_secs_f64(pass.wait_s),
                });
            }
            if let Some(step) = take_over(conn, member, &pass, limit).await? {
                return read(step);
            }
            let sweep_first = prefer_sweep || pass.walk_done;
            let to_the_end = [
                (Kind::Failed, pass.failed_after, pass.failed_through),
                (Kind::Itemise, pass.itemise_after, pass.itemise_through),
            ]
            .into_iter()
            .find_map(|(kind, after, through)| after.map(|after| (kind, after, through)));
            let (kind, ids, swept) = if let Some((kind, after, through)) = to_the_end {
                let ids = to_the_end_step(conn, member, &pass, kind, after, through, limit).await?;
                (kind, ids, false)
            } else if let Some(after) = pass.sweep_after.filter(|_| sweep_first) {
                let (ids, swept) = sweep_step(conn, member, &pass, after, limit).await?;
                (Kind::Sweep, ids, swept)
            } else if !pass.walk_done {
                (
                    Kind::Walk,
                    walk_step(conn, member, &pass, limit).await?,
                    false,
                )
            } else {
                return read(Step::PassRead { pass: pass.pass });
            };
            read(Step::Claimed {
                pass: pass.pass,
                kind,
                projects: with_paths(conn, ids).await?,
                taken_from: None,
                swept,
            })
        }
        .boxed()
    })
    .await
}

#[derive(diesel::QueryableByName)]
struct Orphan {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = BigInt)]
    after_id: i64,
    #[diesel(sql_type = BigInt)]
    through_id: i64,
    #[diesel(sql_type = Nullable<Text>)]
    owner: Option<String>,
}

/// Takes the first span of the pass whose owner left it (owner NULL), or, once this member may
/// judge others dead, whose owner's heartbeat is older than the timeout. A span with more than
/// `limit` projects left is split: the rest stays unowned for the next read.
async fn take_over(
    conn: &mut DbConn,
    member: &Member,
    pass: &PassRow,
    limit: i64,
) -> Result<Option<Step>, DbError> {
    let orphan: Option<Orphan> = diesel::sql_query(
        "SELECT c.id, c.kind, c.after_id, c.through_id, c.owner FROM registry_repair_claims c \
         WHERE c.shard = $1 AND c.pass = $2 AND c.owner IS DISTINCT FROM $3 AND (c.owner IS NULL OR \
               ($4 AND NOT EXISTS (SELECT 1 FROM registry_repair_members m WHERE m.id = c.owner \
                   AND m.state <> 'lost' AND m.heartbeat_at > now() - make_interval(secs => $5)))) \
         ORDER BY c.after_id LIMIT 1",
    )
    .bind::<Text, _>(member.shard.to_string())
    .bind::<BigInt, _>(pass.pass)
    .bind::<Text, _>(&member.id)
    .bind::<Bool, _>(member.may_take_over())
    .bind::<Double, _>(member.timeout_s())
    .get_results(conn)
    .await
    .map_err(DbError::query("looking for work a member left"))?
    .pop();
    let Some(orphan) = orphan else {
        return Ok(None);
    };
    let kind = Kind::parse(&orphan.kind);
    let span = Span {
        after: orphan.after_id,
        through: Some(orphan.through_id),
    };
    let ids = ids_of(conn, kind, span, limit, member.shard).await?;
    let through = match ids.last() {
        Some(&last) if ids.len() as i64 >= limit && last < orphan.through_id => {
            insert_claim(conn, member, pass.pass, kind, last, orphan.through_id, None).await?;
            last
        }
        _ => orphan.through_id,
    };
    diesel::sql_query(
        "UPDATE registry_repair_claims SET owner = $2, taken_from = $3, through_id = $4, \
                claimed_at = now() WHERE id = $1",
    )
    .bind::<BigInt, _>(orphan.id)
    .bind::<Text, _>(&member.id)
    .bind::<Nullable<Text>, _>(&orphan.owner)
    .bind::<BigInt, _>(through)
    .execute(conn)
    .await
    .map_err(DbError::query("taking over work a member left"))?;
    if let Some(owner) = &orphan.owner {
        // Its heartbeat tells it so, should it still be running: it must stop.
        diesel::sql_query("UPDATE registry_repair_members SET state = 'lost' WHERE id = $1")
            .bind::<Text, _>(owner)
            .execute(conn)
            .await
            .map_err(DbError::query("marking a member lost"))?;
        tracing::warn!(
            from = %owner,
            after = orphan.after_id,
            through,
            projects = ids.len(),
            "took over the work of a member whose heartbeat stopped"
        );
    }
    Ok(Some(Step::Claimed {
        pass: pass.pass,
        kind,
        projects: with_paths(conn, ids).await?,
        taken_from: orphan.owner,
        swept: false,
    }))
}

async fn insert_claim(
    conn: &mut DbConn,
    member: &Member,
    pass: i64,
    kind: Kind,
    after: i64,
    through: i64,
    owner: Option<&str>,
) -> Result<(), DbError> {
    diesel::sql_query(
        "INSERT INTO registry_repair_claims (shard, pass, kind, after_id, through_id, owner) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind::<Text, _>(member.shard.to_string())
    .bind::<BigInt, _>(pass)
    .bind::<Text, _>(kind.as_str())
    .bind::<BigInt, _>(after)
    .bind::<BigInt, _>(through)
    .bind::<Nullable<Text>, _>(owner)
    .execute(conn)
    .await
    .map_err(DbError::query("recording a claim"))?;
    Ok(())
}

/// Moves one cursor of the pass row, and counts what it found.
async fn move_cursor(
    conn: &mut DbConn,
    member: &Member,
    set: &str,
    found: usize,
) -> Result<(), DbError> {
    diesel::sql_query(format!(
        "UPDATE registry_repair_passes SET {set}, found = found + $2 WHERE shard = $1"
    ))
    .bind::<Text, _>(member.shard.to_string())
    .bind::<BigInt, _>(found as i64)
    .execute(conn)
    .await
    .map_err(DbError::query("moving the fleet's cursor"))?;
    Ok(())
}

async fn walk_step(
    conn: &mut DbConn,
    member: &Member,
    pass: &PassRow,
    limit: i64,
) -> Result<Vec<i64>, DbError> {
    let span = Span {
        after: pass.walk_after,
        through: None,
    };
    let ids = unanswered_ids(conn, span, limit, member.shard).await?;
    let done = (ids.len() as i64) < limit;
    let after = ids.last().copied().unwrap_or(pass.walk_after);
    if let Some(&last) = ids.last() {
        insert_claim(
            conn,
            member,
            pass.pass,
            Kind::Walk,
            pass.walk_after,
            last,
            Some(&member.id),
        )
        .await?;
    }
    move_cursor(
        conn,
        member,
        &format!(
            "walk_after = {after}, walk_done = {done}, walked = walked + {}",
            ids.len()
        ),
        ids.len(),
    )
    .await?;
    Ok(ids)
}

/// The projects of `span` a claim of `kind` answers for: the failed ones for a retry, the ones
/// counted without their repositories for itemising, else those without an answer.
async fn ids_of(
    conn: &mut DbConn,
    kind: Kind,
    span: Span,
    limit: i64,
    shard: Shard,
) -> Result<Vec<i64>, DbError> {
    match kind {
        Kind::Failed => failed_ids(conn, span, limit, shard).await,
        Kind::Itemise => uncounted_ids(conn, span, limit, shard).await,
        Kind::Walk | Kind::Sweep => unanswered_ids(conn, span, limit, shard).await,
    }
}

/// One read of a cursor that ends at `until` (the sweep's, the retry's): the projects after
/// `after` up to `span_end`, claimed, and the cursor moved past them, or cleared when it reached
/// `until`. Returns the ids and whether the cursor is through.
#[allow(clippy::too_many_arguments)]
async fn bounded_step(
    conn: &mut DbConn,
    member: &Member,
    pass: i64,
    kind: Kind,
    after: i64,
    span_end: i64,
    until: i64,
    limit: i64,
) -> Result<(Vec<i64>, bool), DbError> {
    let span = Span {
        after,
        through: Some(span_end),
    };
    let ids = ids_of(conn, kind, span, limit, member.shard).await?;
    let to = match ids.last() {
        Some(&last) if ids.len() as i64 >= limit => last,
        _ => span_end,
    };
    if !ids.is_empty() {
        insert_claim(conn, member, pass, kind, after, to, Some(&member.id)).await?;
    }
    let cursor = format!("{}_after", kind.as_str());
    let through = to >= until;
    let set = match through {
        true => format!("{cursor} = NULL"),
        false => format!("{cursor} = {to}"),
    };
    move_cursor(conn, member, &set, ids.len()).await?;
    Ok((ids, through))
}

async fn sweep_step(
    conn: &mut DbConn,
    member: &Member,
    pass: &PassRow,
    after: i64,
    limit: i64,
) -> Result<(Vec<i64>, bool), DbError> {
    let until = pass.sweep_through.unwrap_or(after);
    let span_end = after.saturating_add(SWEEP_SPAN).min(until);
    let (ids, swept) = bounded_step(
        conn,
        member,
        pass.pass,
        Kind::Sweep,
        after,
        span_end,
        until,
        limit,
    )
    .await?;
    if !ids.is_empty() {
        tracing::info!(
            projects = ids.len(),
            from = ids.as_slice().first().copied().unwrap_or(0),
            to = ids.last().copied().unwrap_or(0),
            "sweep found projects without an answer below the watermark"
        );
    }
    if swept {
        tracing::info!(through = until, "sweep complete");
        diesel::sql_query(
            "INSERT INTO registry_repair_watermarks (shard, analysed_through, updated_at, swept_at) \
             VALUES ($1, 0, now(), now()) ON CONFLICT (shard) DO UPDATE SET swept_at = now()",
        )
        .bind::<Text, _>(member.shard.to_string())
        .execute(conn)
        .await
        .map_err(DbError::query("recording the end of a sweep"))?;
    }
    Ok((ids, swept))
}

/// One read of a cursor that goes to its end in one span (the retry's, the itemising): the
/// projects after `after` up to `through`.
#[allow(clippy::too_many_arguments)]
async fn to_the_end_step(
    conn: &mut DbConn,
    member: &Member,
    pass: &PassRow,
    kind: Kind,
    after: i64,
    through: Option<i64>,
    limit: i64,
) -> Result<Vec<i64>, DbError> {
    let until = through.unwrap_or(after);
    let (ids, _) = bounded_step(conn, member, pass.pass, kind, after, until, until, limit).await?;
    Ok(ids)
}

/// This member's part of `pass` is read, analysed and flushed: its claims go, and, if the pass
/// is over fleet-wide, the next one starts from `watermark` (already moved up by the caller).
pub async fn finish_part(
    db: &Database,
    member: &Arc<Member>,
    pass: i64,
    watermark: i64,
    until_done: bool,
    rescan: Duration,
) -> Result<PassState, DbError> {
    let mut conn = db.conn().await?;
    let member = member.clone();
    conn.transaction(|conn| {
        async move {
            let member = &*member;
            let shard = member.shard;
            diesel::sql_query("DELETE FROM registry_repair_claims WHERE shard = $1 AND owner = $2")
                .bind::<Text, _>(shard.to_string())
                .bind::<Text, _>(&member.id)
                .execute(conn)
                .await
                .map_err(DbError::query("ending this member's claims"))?;
            let Some(mut row) = lock_pass(conn, shard, member).await? else {
                return Ok(PassState::Next); // forgotten (`--from-start` elsewhere): start again
            };
            if row.pass == pass {
                if row.wait_s > 0.0 {
                    // Not begun yet: nothing to wait for but its start.
                    return Ok(PassState::NotBefore(Duration::from_secs_f64(row.wait_s)));
                }
                if !(row.through() && row.unclaimed) {
                    return Ok(PassState::Waiting);
                }
                row = next_pass(conn, member, watermark, rescan).await?;
            }
            if until_done && row.last_found == Some(0) {
                if row.swept_since_joined {
                    return Ok(PassState::Done);
                }
                if !row.sweep_started {
                    // Done means every project has an answer, below the watermark too.
                    start_sweep_now(conn, shard).await?;
                    return Ok(PassState::Next);
                }
            }
            Ok(match row.wait_s > 0.0 {
                true => PassState::NotBefore(Duration::from_secs_f64(row.wait_s)),
                false => PassState::Next,
            })
        }
        .boxed()
    })
    .await
}

/// Ends the locked pass and starts the next from `watermark`: at once when it found projects or
/// swept, else after `rescan`.
async fn next_pass(
    conn: &mut DbConn,
    member: &Member,
    watermark: i64,
    rescan: Duration,
) -> Result<PassRow, DbError> {
    diesel::sql_query(
        "UPDATE registry_repair_passes SET pass = pass + 1, started_at = now(), \
             walk_after = GREATEST($2, 0), walk_done = false, \
             last_found = found, found = 0, \
             last_sweep_started_at = COALESCE(sweep_started_at, last_sweep_started_at), \
             sweep_started_at = NULL, sweep_after = NULL, sweep_through = NULL, \
             left_at_start = NULL, left_estimated = false, counting_since = NULL, walked = 0, \
             not_before = CASE WHEN found = 0 AND sweep_started_at IS NULL \
                               THEN now() + make_interval(secs => $3) ELSE now() END \
         WHERE shard = $1",
    )
    .bind::<Text, _>(member.shard.to_string())
    .bind::<BigInt, _>(watermark)
    .bind::<Double, _>(rescan.as_secs_f64())
    .execute(conn)
    .await
    .map_err(DbError::query("starting the fleet's next pass"))?;
    let row = lock_pass(conn, member.shard, member)
        .await?
        .ok_or_else(|| {
            DbError::query("reading the fleet's pass after it was started")(
                diesel::result::Error::NotFound,
            )
        })?;
    tracing::info!(
        pass = row.pass - 1,
        projects = row.last_found.unwrap_or(0),
        watermark,
        "pass complete"
    );
    Ok(row)
}

async fn start_sweep_now(conn: &mut DbConn, shard: Shard) -> Result<(), DbError> {
    diesel::sql_query(
        "UPDATE registry_repair_passes p \
         SET sweep_after = 0, sweep_started_at = now(), not_before = now(), \
             sweep_through = COALESCE((SELECT analysed_through FROM registry_repair_watermarks w \
                                       WHERE w.shard = p.shard), 0) \
         WHERE p.shard = $1 AND p.sweep_started_at IS NULL",
    )
    .bind::<Text, _>(shard.to_string())
    .execute(conn)
    .await
    .map_err(DbError::query("starting a sweep below the watermark"))?;
    Ok(())
}

/// Whether the shard's pass looks over fleet-wide (no lock: the caller then moves the watermark
/// before [`finish_part`] decides under the lock).
pub async fn pass_looks_over(db: &Database, member: &Member, pass: i64) -> Result<bool, DbError> {
    #[derive(diesel::QueryableByName)]
    struct Over {
        #[diesel(sql_type = Bool)]
        over: bool,
    }
    let mut conn = db.conn().await?;
    let over: Option<Over> = diesel::sql_query(
        "SELECT p.walk_done AND p.sweep_after IS NULL AND p.failed_after IS NULL \
                AND p.itemise_after IS NULL AND \
                NOT EXISTS (SELECT 1 FROM registry_repair_claims c WHERE c.shard = p.shard \
                            AND c.pass = p.pass AND c.owner IS DISTINCT FROM $3) AS over \
         FROM registry_repair_passes p WHERE p.shard = $1 AND p.pass = $2",
    )
    .bind::<Text, _>(member.shard.to_string())
    .bind::<BigInt, _>(pass)
    .bind::<Text, _>(&member.id)
    .get_results(&mut conn)
    .await
    .map_err(DbError::query("reading whether the fleet's pass is over"))?
    .pop();
    Ok(over.is_some_and(|o| o.over))
}
