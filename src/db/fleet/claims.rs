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

use chrono::{DateTime, Utc};
use diesel::dsl::{self, case_when, exists, max, not, now, sql};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Double};
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use futures_util::FutureExt;

use super::Member;
use crate::config::Shard;
use crate::db::dsl::{ago, coalesce, coalesce_nullable, db_now, from_now, least};
use crate::db::projects::{
    count_unanswered, count_uncounted, estimate_unanswered, failed_ids, unanswered_ids,
    uncounted_ids, with_paths, Project, Span,
};
use crate::db::schema::{
    container_registry_data_repair_details as tracking, projects, registry_repair_claims as claims,
    registry_repair_members as members, registry_repair_passes as passes,
    registry_repair_watermarks as watermarks,
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

/// The pass row as [`lock_pass`] reads it, in its order.
#[derive(Debug, Queryable)]
struct PassRow {
    pass: i64,
    walk_after: i64,
    walk_done: bool,
    sweep_after: Option<i64>,
    sweep_through: Option<i64>,
    failed_after: Option<i64>,
    failed_through: Option<i64>,
    /// Seconds until the pass may be read (negative: it may).
    wait_s: f64,
    last_found: Option<i64>,
    /// A sweep that began after this member joined has ended with a pass.
    swept_since_joined: bool,
    /// A sweep began in this pass.
    sweep_started: bool,
    /// No claim of this pass is left.
    unclaimed: bool,
    left_at_start: Option<i64>,
    left_estimated: bool,
    walked: i64,
    itemise_after: Option<i64>,
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
    let joined = members::table
        .filter(members::id.eq(member.id.clone()))
        .select(members::started_at)
        .single_value();
    let claimed = claims::table
        .filter(claims::shard.eq(passes::shard))
        .filter(claims::pass.eq(passes::pass));
    passes::table
        .filter(passes::shard.eq(shard.to_string()))
        .select((
            passes::pass,
            passes::walk_after,
            passes::walk_done,
            passes::sweep_after,
            passes::sweep_through,
            passes::failed_after,
            passes::failed_through,
            sql::<Double>("EXTRACT(EPOCH FROM registry_repair_passes.not_before - now())::float8"),
            passes::last_found,
            coalesce(passes::last_sweep_started_at.ge(joined), false),
            passes::sweep_started_at.is_not_null(),
            not(exists(claimed)),
            passes::left_at_start,
            passes::left_estimated,
            passes::walked,
            passes::itemise_after,
            passes::itemise_through,
        ))
        .for_update()
        .get_result(conn)
        .await
        .optional()
        .map_err(DbError::query(format!(
            "locking the fleet's pass of shard {shard}"
        )))
}

/// Creates the shard's pass row if there is none: the first pass walks from `watermark`.
pub async fn ensure_pass(db: &Database, shard: Shard, watermark: i64) -> Result<(), DbError> {
    let mut conn = db.conn().await?;
    diesel::insert_into(passes::table)
        .values((
            passes::shard.eq(shard.to_string()),
            passes::pass.eq(1),
            passes::walk_after.eq(watermark),
        ))
        .on_conflict(passes::shard)
        .do_nothing()
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
            let what = || DbError::query(format!("forgetting the fleet's pass of shard {shard}"));
            diesel::delete(claims::table.filter(claims::shard.eq(shard.to_string())))
                .execute(conn)
                .await
                .map_err(what())?;
            diesel::delete(passes::table.filter(passes::shard.eq(shard.to_string())))
                .execute(conn)
                .await
                .map_err(what())?;
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
    let last_project = projects::table.select(max(projects::id)).single_value();
    diesel::update(passes::table)
        .filter(passes::shard.eq(shard.to_string()))
        .filter(passes::failed_after.is_null())
        .set((
            passes::failed_after.eq(0),
            passes::failed_through.eq(coalesce(last_project, 0).nullable()),
            passes::not_before.eq(least(passes::not_before, db_now())),
        ))
        .execute(&mut conn)
        .await
        .map_err(DbError::query("starting a retry of the failed projects"))?;
    Ok(())
}

/// The pass's shard's watermark, as a subquery.
type WatermarkOfPass = dsl::SingleValue<
    dsl::Select<
        dsl::Filter<watermarks::table, dsl::Eq<watermarks::shard, passes::shard>>,
        watermarks::analysed_through,
    >,
>;

/// The pass's shard's watermark (0 without one): where a sweep below it ends.
fn watermark_of_pass() -> coalesce<BigInt, WatermarkOfPass, i64> {
    let through = watermarks::table
        .filter(watermarks::shard.eq(passes::shard))
        .select(watermarks::analysed_through)
        .single_value();
    coalesce(through, 0)
}

/// Starts a sweep below the watermark in the current pass when the last one is older than
/// `interval` and none began in this pass; whether it did.
pub async fn start_sweep_if_due(
    db: &Database,
    shard: Shard,
    interval: Duration,
) -> Result<bool, DbError> {
    let mut conn = db.conn().await?;
    let swept_lately = watermarks::table
        .filter(watermarks::shard.eq(passes::shard))
        .filter(watermarks::swept_at.gt(ago(interval.as_secs_f64()).nullable()));
    let started = diesel::update(passes::table)
        .filter(passes::shard.eq(shard.to_string()))
        .filter(passes::sweep_started_at.is_null())
        .filter(not(exists(swept_lately)))
        .set((
            passes::sweep_after.eq(0),
            passes::sweep_started_at.eq(now),
            passes::not_before.eq(least(passes::not_before, db_now())),
            passes::sweep_through.eq(watermark_of_pass().nullable()),
        ))
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
        let last_tracked = tracking::table
            .select(max(tracking::project_id))
            .single_value();
        diesel::update(passes::table)
            .filter(passes::shard.eq(shard.to_string()))
            .filter(passes::itemise_after.is_null())
            .set((
                passes::itemise_after.eq(0),
                passes::itemise_through.eq(coalesce(last_tracked, 0).nullable()),
                passes::not_before.eq(least(passes::not_before, db_now())),
            ))
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
    let shard = member.shard;
    let mut conn = db.conn().await?;
    let abandoned = passes::counting_since.lt(ago(COUNT_TIMEOUT.as_secs_f64() * 2.0).nullable());
    let counting: Option<(i64, i64, i64)> = diesel::update(passes::table)
        .filter(passes::shard.eq(shard.to_string()))
        .filter(passes::left_at_start.is_null())
        .filter(passes::counting_since.is_null().or(abandoned))
        .set(passes::counting_since.eq(now))
        .returning((passes::pass, passes::walk_after, passes::walked))
        .get_result(&mut conn)
        .await
        .optional()
        .map_err(DbError::query("taking the fleet's count of the work left"))?;
    let Some((pass, walk_after, walked)) = counting else {
        return Ok(None);
    };
    let timeout_ms = COUNT_TIMEOUT.as_millis();
    let counted = conn
        .transaction(|conn| {
            async move {
                conn.batch_execute(&format!("SET LOCAL statement_timeout = {timeout_ms}"))
                    .await
                    .map_err(DbError::query("bounding the count of the work left"))?;
                count_unanswered(conn, walk_after, shard).await
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
        .saturating_add(walked);
    diesel::update(passes::table)
        .filter(passes::shard.eq(shard.to_string()))
        .filter(passes::pass.eq(pass))
        .set((
            passes::left_at_start.eq(left_at_start),
            passes::left_estimated.eq(estimated),
            passes::counting_since.eq(None::<DateTime<Utc>>),
        ))
        .execute(&mut conn)
        .await
        .map_err(DbError::query(
            "recording the fleet's count of the work left",
        ))?;
    Ok(Some(PassProgress {
        pass,
        left_at_start: Some(left_at_start),
        estimated,
        walked,
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

/// A claim whose owner left it or died, as [`take_over`] reads it.
#[derive(Queryable)]
struct Orphan {
    id: i64,
    kind: String,
    after_id: i64,
    through_id: i64,
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
    let owner_live = members::table
        .filter(members::id.nullable().eq(claims::owner))
        .filter(members::state.ne("lost"))
        .filter(members::heartbeat_at.gt(ago(member.timeout_s())));
    let orphan: Option<Orphan> = claims::table
        .filter(claims::shard.eq(member.shard.to_string()))
        .filter(claims::pass.eq(pass.pass))
        .filter(claims::owner.is_distinct_from(&member.id))
        .filter(
            claims::owner.is_null().or(member
                .may_take_over()
                .into_sql::<Bool>()
                .and(not(exists(owner_live)))),
        )
        .order(claims::after_id)
        .select((
            claims::id,
            claims::kind,
            claims::after_id,
            claims::through_id,
            claims::owner,
        ))
        .first(conn)
        .await
        .optional()
        .map_err(DbError::query("looking for work a member left"))?;
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
    diesel::update(claims::table.find(orphan.id))
        .set((
            claims::owner.eq(&member.id),
            claims::taken_from.eq(&orphan.owner),
            claims::through_id.eq(through),
            claims::claimed_at.eq(now),
        ))
        .execute(conn)
        .await
        .map_err(DbError::query("taking over work a member left"))?;
    if let Some(owner) = &orphan.owner {
        // Its heartbeat tells it so, should it still be running: it must stop.
        diesel::update(members::table.find(owner))
            .set(members::state.eq("lost"))
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
    diesel::insert_into(claims::table)
        .values((
            claims::shard.eq(member.shard.to_string()),
            claims::pass.eq(pass),
            claims::kind.eq(kind.as_str()),
            claims::after_id.eq(after),
            claims::through_id.eq(through),
            claims::owner.eq(owner),
        ))
        .execute(conn)
        .await
        .map_err(DbError::query("recording a claim"))?;
    Ok(())
}

/// The bounded cursors of the pass row ([`bounded_step`]): `None` leaves one as it is,
/// `Some(None)` clears it (through).
#[derive(AsChangeset, Default)]
#[diesel(table_name = passes)]
struct Cursors {
    sweep_after: Option<Option<i64>>,
    failed_after: Option<Option<i64>>,
    itemise_after: Option<Option<i64>>,
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
    let read = ids.len() as i64;
    diesel::update(passes::table.find(member.shard.to_string()))
        .set((
            passes::walk_after.eq(after),
            passes::walk_done.eq(done),
            passes::walked.eq(passes::walked + read),
            passes::found.eq(passes::found + read),
        ))
        .execute(conn)
        .await
        .map_err(DbError::query("moving the fleet's cursor"))?;
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
    let through = to >= until;
    let next = Some((!through).then_some(to));
    let cursors = match kind {
        Kind::Sweep => Cursors {
            sweep_after: next,
            ..Cursors::default()
        },
        Kind::Failed => Cursors {
            failed_after: next,
            ..Cursors::default()
        },
        Kind::Itemise => Cursors {
            itemise_after: next,
            ..Cursors::default()
        },
        // The walk's cursor is unbounded: `walk_step` moves it.
        Kind::Walk => Cursors::default(),
    };
    diesel::update(passes::table.find(member.shard.to_string()))
        .set((cursors, passes::found.eq(passes::found + ids.len() as i64)))
        .execute(conn)
        .await
        .map_err(DbError::query("moving the fleet's cursor"))?;
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
        crate::db::watermark::swept_on(conn, member.shard).await?;
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
            let own = claims::table
                .filter(claims::shard.eq(shard.to_string()))
                .filter(claims::owner.eq(&member.id));
            diesel::delete(own)
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
    let none = None::<DateTime<Utc>>;
    // Nothing found and nothing swept: the next pass waits `rescan`.
    let idle = passes::found.eq(0).and(passes::sweep_started_at.is_null());
    diesel::update(passes::table.find(member.shard.to_string()))
        .set((
            passes::pass.eq(passes::pass + 1),
            passes::started_at.eq(now),
            passes::walk_after.eq(watermark.max(0)),
            passes::walk_done.eq(false),
            passes::last_found.eq(passes::found.nullable()),
            passes::found.eq(0),
            passes::last_sweep_started_at.eq(coalesce_nullable(
                passes::sweep_started_at,
                passes::last_sweep_started_at,
            )),
            passes::sweep_started_at.eq(none),
            passes::sweep_after.eq(None::<i64>),
            passes::sweep_through.eq(None::<i64>),
            passes::left_at_start.eq(None::<i64>),
            passes::left_estimated.eq(false),
            passes::counting_since.eq(none),
            passes::walked.eq(0),
            passes::not_before
                .eq(case_when(idle, from_now(rescan.as_secs_f64())).otherwise(db_now())),
        ))
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
    diesel::update(passes::table)
        .filter(passes::shard.eq(shard.to_string()))
        .filter(passes::sweep_started_at.is_null())
        .set((
            passes::sweep_after.eq(0),
            passes::sweep_started_at.eq(now),
            passes::not_before.eq(now),
            passes::sweep_through.eq(watermark_of_pass().nullable()),
        ))
        .execute(conn)
        .await
        .map_err(DbError::query("starting a sweep below the watermark"))?;
    Ok(())
}

/// Whether the shard's pass looks over fleet-wide (no lock: the caller then moves the watermark
/// before [`finish_part`] decides under the lock).
pub async fn pass_looks_over(db: &Database, member: &Member, pass: i64) -> Result<bool, DbError> {
    let mut conn = db.conn().await?;
    let others_claims = claims::table
        .filter(claims::shard.eq(passes::shard))
        .filter(claims::pass.eq(passes::pass))
        .filter(claims::owner.is_distinct_from(&member.id));
    let over: Option<bool> = passes::table
        .filter(passes::shard.eq(member.shard.to_string()))
        .filter(passes::pass.eq(pass))
        .select(
            passes::walk_done
                .and(passes::sweep_after.is_null())
                .and(passes::failed_after.is_null())
                .and(passes::itemise_after.is_null())
                .and(not(exists(others_claims))),
        )
        .get_result(&mut conn)
        .await
        .optional()
        .map_err(DbError::query("reading whether the fleet's pass is over"))?;
    Ok(over == Some(true))
}
