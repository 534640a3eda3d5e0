//! `registry_repair_members` and `registry_repair_fleet`: joining, the heartbeat, the shares of the
//! concurrency, the fleet's switches, leaving.
//!
//! The shares never add up to more than the fleet's total: a member lowers its own share at once
//! (and its row only once its in-flight work is below it), but raises it only inside a
//! transaction that holds the fleet row, so raises happen one at a time and each sees every other
//! member's share as it stands.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::dsl::{case_when, now, sql, sum};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::sql_types::Double;
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use futures_util::FutureExt;
use serde::{Deserialize, Serialize};

use super::Member;
use crate::db::dsl::{ago, greatest, least};
use crate::db::schema::{
    registry_repair_claims as claims, registry_repair_fleet as fleet,
    registry_repair_members as members,
};
use crate::db::{Database, DbConn, DbError};
use crate::identity::ProcessIdentity;

/// Member rows whose heartbeat is older than this are deleted when another member joins: long
/// enough for `status` to show what died, short enough that the table stays small.
const FORGET_AFTER_S: i64 = 3600;

/// One member as the table has it, in the order [`members`] reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Queryable)]
pub struct MemberRow {
    pub id: String,
    pub host: String,
    pub pid: i32,
    pub shard: String,
    pub started_at: DateTime<Utc>,
    /// Seconds since its last heartbeat, by the database's clock.
    pub heartbeat_age_s: f64,
    /// Its share of the fleet's concurrency.
    pub share: i32,
    pub in_flight: i32,
    /// It has projects to work on (or is looking for some).
    pub wants_work: bool,
    pub state: String,
    /// What it does: `analyse`, `repair plan`, `repair apply (run N)`.
    #[serde(default)]
    pub work: String,
    pub analysed: i64,
    /// Its heartbeat is younger than the timeout.
    pub live: bool,
}

/// The fleet's switches as the table has them (`control.source = "config"`).
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = fleet, check_for_backend(Pg))]
pub struct FleetSwitches {
    pub max_concurrency: i32,
    pub enabled: bool,
    /// Grows with every write: a member adopts only what is newer than what it has.
    pub version: i64,
    /// A control command (`pause`, `resume`, `concurrency N`) set them: they hold across restarts,
    /// over the configuration, until the next command.
    pub set_by_command: bool,
    pub updated_at: DateTime<Utc>,
}

/// What a member joins with.
#[derive(Debug, Clone, Copy)]
pub struct Joining {
    pub max_concurrency: usize,
    pub enabled: bool,
    /// The configuration steers: the fleet's switches are shared through the table. A member
    /// joining live members takes theirs; the first one of a fleet writes its own.
    pub shared_switches: bool,
}

/// What joining found.
#[derive(Debug, Clone)]
pub struct Joined {
    /// The fleet's switches as the table has them (written by this member if it is the first
    /// of a fleet that analyses).
    pub switches: FleetSwitches,
    /// Whether this member takes them: false for a repair while no member analyses, which keeps
    /// its own settings until one writes the fleet's.
    pub takes_them: bool,
}

/// What a heartbeat brought back.
#[derive(Debug, Clone)]
pub struct View {
    /// Another member took over claims of this one, or found it silent for longer than the
    /// timeout: it was taken for dead.
    pub taken_over: bool,
    /// Every member the table still has, live or not, in the order shares are given.
    pub members: Vec<MemberRow>,
    pub switches: Option<FleetSwitches>,
    /// The repair lease's holder (an apply or undo under way), as `status` shows it.
    pub repair: Option<String>,
    /// Members this heartbeat found silent for longer than the timeout and marked lost.
    pub marked_lost: Vec<String>,
}

/// What this member reports with each heartbeat.
#[derive(Debug, Clone)]
pub struct Beat {
    pub share: usize,
    pub in_flight: usize,
    pub wants_work: bool,
    pub state: String,
    pub analysed: u64,
}

/// Why a member may not join.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(
        "another instance of registry-repair runs against this database with worker.shard = {theirs} \
         (host {host}, pid {pid}), and this one has worker.shard = {ours}: their projects would \
         overlap. Give every instance the same worker.shard count (or none, and let the fleet \
         share the work)"
    )]
    ShardOverlap {
        ours: String,
        theirs: String,
        host: String,
        pid: i32,
    },
    #[error(transparent)]
    Db(#[from] DbError),
}

fn i32_of(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

async fn lock_switches(
    conn: &mut DbConn,
    member: &Member,
    joining: Joining,
) -> Result<FleetSwitches, DbError> {
    diesel::insert_into(fleet::table)
        .values((
            fleet::id.eq(1),
            fleet::max_concurrency.eq(i32_of(joining.max_concurrency)),
            fleet::enabled.eq(joining.enabled),
            fleet::updated_by.eq(&member.id),
        ))
        .on_conflict(fleet::id)
        .do_nothing()
        .execute(conn)
        .await
        .map_err(DbError::query("creating the fleet's row"))?;
    fleet::table
        .find(1)
        .select(FleetSwitches::as_select())
        .for_update()
        .get_result(conn)
        .await
        .map_err(DbError::query("locking the fleet's row"))
}

async fn members(conn: &mut DbConn, member: &Member) -> Result<Vec<MemberRow>, DbError> {
    members::table
        .order((members::started_at, members::id))
        .select((
            members::id,
            members::host,
            members::pid,
            members::shard,
            members::started_at,
            sql::<Double>(
                "EXTRACT(EPOCH FROM now() - registry_repair_members.heartbeat_at)::float8",
            ),
            members::share,
            members::in_flight,
            members::wants_work,
            members::state,
            members::work,
            members::analysed,
            members::heartbeat_at.gt(ago(member.timeout_s())),
        ))
        .load(conn)
        .await
        .map_err(DbError::query("reading the fleet's members"))
}

/// Adds `member` to the fleet, with no share yet (its first heartbeat asks for one). Refuses a
/// shard setting that overlaps a live member's. In `config` mode the first member of a fleet that
/// analyses writes its switches, a later one takes the fleet's; a repair takes them only while
/// the analysis runs, and never writes them on joining.
pub async fn join(
    db: &Database,
    member: &Arc<Member>,
    joining: Joining,
) -> Result<Joined, JoinError> {
    let mut conn = db.conn().await?;
    let member = member.clone();
    let joined = conn
        .transaction(|conn| {
            async move {
                let member = &*member;
                let mut switches = lock_switches(conn, member, joining).await?;
                diesel::delete(members::table)
                    .filter(members::heartbeat_at.lt(ago(FORGET_AFTER_S as f64)))
                    .execute(conn)
                    .await
                    .map_err(DbError::query("forgetting members long dead"))?;
                bury_own_ghosts(conn, member).await?;
                let analysing: Vec<MemberRow> = members(conn, member)
                    .await?
                    .into_iter()
                    .filter(|m| m.live && m.work == super::ANALYSIS)
                    .collect();
                if let Some(other) = analysing.iter().find(|m| {
                    member.analyses() && !same_partition(&m.shard, &member.shard.to_string())
                }) {
                    return Ok(Err(JoinError::ShardOverlap {
                        ours: member.shard.to_string(),
                        theirs: other.shard.clone(),
                        host: other.host.clone(),
                        pid: other.pid,
                    }));
                }
                let first = analysing.is_empty();
                if first && member.analyses() {
                    // A restart must not wait out the timeout of the members before it.
                    start_afresh(conn, member).await?;
                    // What a command set holds; what a configuration wrote gives way to this one.
                    if joining.shared_switches && !switches.set_by_command {
                        switches = write_switches(
                            conn,
                            member,
                            joining.max_concurrency,
                            joining.enabled,
                            false,
                        )
                        .await?;
                    }
                }
                let process = &member.process;
                diesel::insert_into(members::table)
                    .values((
                        members::id.eq(&member.id),
                        members::host.eq(&process.host),
                        members::pid.eq(process.pid),
                        members::shard.eq(member.shard.to_string()),
                        members::boot_id.eq(&process.boot_id),
                        members::pid_ns.eq(&process.pid_ns),
                        members::process_started.eq(process.started),
                        members::work.eq(&member.work),
                    ))
                    .execute(conn)
                    .await
                    .map_err(DbError::query("joining the fleet"))?;
                Ok(Ok(Joined {
                    switches,
                    takes_them: member.analyses() || !first,
                }))
            }
            .boxed()
        })
        .await?;
    joined
}

/// Members of this machine and pid namespace whose process is gone: an instance killed and started
/// again (systemd's `Restart=always`, a container's restart) must not wait out the timeout of its
/// own previous run. Their work is handed back at once and they stop counting as live.
async fn bury_own_ghosts(conn: &mut DbConn, member: &Member) -> Result<(), DbError> {
    #[derive(Queryable)]
    struct Local {
        id: String,
        host: String,
        boot_id: String,
        pid_ns: String,
        pid: i32,
        process_started: i64,
    }
    let me = &member.process;
    if me.boot_id.is_empty() || me.pid_ns.is_empty() {
        return Ok(());
    }
    let local: Vec<Local> = members::table
        .filter(members::boot_id.eq(&me.boot_id))
        .filter(members::pid_ns.eq(&me.pid_ns))
        .filter(members::id.ne(&member.id))
        .filter(members::state.ne("lost"))
        .filter(members::heartbeat_at.gt(ago(member.timeout_s())))
        .select((
            members::id,
            members::host,
            members::boot_id,
            members::pid_ns,
            members::pid,
            members::process_started,
        ))
        .load(conn)
        .await
        .map_err(DbError::query("reading the members of this machine"))?;
    for ghost in local.into_iter().filter(|m| {
        me.sees_alive(&ProcessIdentity {
            host: m.host.clone(),
            boot_id: m.boot_id.clone(),
            pid_ns: m.pid_ns.clone(),
            pid: m.pid,
            started: m.process_started,
        }) == Some(false)
    }) {
        diesel::update(members::table.find(&ghost.id))
            .set((
                members::state.eq("lost"),
                members::share.eq(0),
                members::in_flight.eq(0),
                members::heartbeat_at.eq(least(members::heartbeat_at, ago(member.timeout_s()))),
            ))
            .execute(conn)
            .await
            .map_err(DbError::query("marking a member of this machine gone"))?;
        diesel::update(claims::table.filter(claims::owner.eq(&ghost.id)))
            .set((
                claims::taken_from.eq(claims::owner),
                claims::owner.eq(None::<String>),
            ))
            .execute(conn)
            .await
            .map_err(DbError::query(
                "handing back the work of a member of this machine gone",
            ))?;
        tracing::info!(
            member = %ghost.id,
            pid = ghost.pid,
            "a member of this machine whose process is gone: its work and share are free at once"
        );
    }
    Ok(())
}

/// The first member of a fleet that analyses starts afresh: the passes and claims of members that
/// are gone are forgotten (the next pass walks from the watermark, which covers what they left),
/// and their rows are marked lost, so that one that was only cut off stops when it comes back.
/// A repair that is live is left as it is.
async fn start_afresh(conn: &mut DbConn, member: &Member) -> Result<(), DbError> {
    diesel::update(members::table)
        .filter(members::id.ne(&member.id))
        .filter(members::heartbeat_at.le(ago(member.timeout_s())))
        .set(members::state.eq("lost"))
        .execute(conn)
        .await
        .map_err(DbError::query("marking the members gone from the fleet"))?;
    let claims = diesel::delete(claims::table)
        .execute(conn)
        .await
        .map_err(DbError::query(
            "forgetting the claims of members gone from the fleet",
        ))?;
    diesel::delete(crate::db::schema::registry_repair_passes::table)
        .execute(conn)
        .await
        .map_err(DbError::query(
            "forgetting the passes of members gone from the fleet",
        ))?;
    if claims > 0 {
        tracing::info!(
            claims,
            "no other member is live: what the members before left unfinished is walked again from the watermark"
        );
    }
    Ok(())
}

/// Whether two `worker.shard` settings split the projects the same way: the same count, so that
/// the shards are either the same (shared by its members) or disjoint.
fn same_partition(theirs: &str, ours: &str) -> bool {
    let count = |s: &str| s.split_once('/').map(|(_, n)| n.trim().to_string());
    count(theirs) == count(ours)
}

async fn write_switches(
    conn: &mut DbConn,
    member: &Member,
    max_concurrency: usize,
    enabled: bool,
    by_command: bool,
) -> Result<FleetSwitches, DbError> {
    diesel::update(fleet::table.find(1))
        .set((
            fleet::max_concurrency.eq(i32_of(max_concurrency)),
            fleet::enabled.eq(enabled),
            fleet::version.eq(fleet::version + 1),
            fleet::updated_at.eq(now),
            fleet::updated_by.eq(&member.id),
            fleet::set_by_command.eq(by_command),
        ))
        .returning(FleetSwitches::as_returning())
        .get_result(conn)
        .await
        .map_err(DbError::query("writing the fleet's switches"))
}

/// Sets the fleet's switches as a control command did (`concurrency`, `pause`, `resume` sent to
/// this member): they hold across restarts.
pub async fn set_switches(
    db: &Database,
    member: &Member,
    max_concurrency: usize,
    enabled: bool,
) -> Result<FleetSwitches, DbError> {
    let mut conn = db.conn().await?;
    write_switches(&mut conn, member, max_concurrency, enabled, true).await
}

/// How long a heartbeat's statements may run before the server cancels them: a statement that
/// hangs (a lock, an overloaded server) must fail, not keep the member believing it beats. A
/// quarter of the timeout leaves room for a second try before the member's hold lapses.
pub fn heartbeat_statement_timeout(member: &Member) -> Duration {
    (member.timeout / 4).max(Duration::from_millis(100))
}

/// Bounds every statement of the current transaction by `timeout` (a lock wait too).
async fn bound_statements(conn: &mut DbConn, timeout: Duration) -> Result<(), DbError> {
    let ms = timeout.as_millis().max(1);
    conn.batch_execute(&format!(
        "SET LOCAL statement_timeout = {ms}; SET LOCAL lock_timeout = {ms}"
    ))
    .await
    .map_err(DbError::query("bounding the heartbeat's statements"))
}

/// The heartbeat: records what this member does, marks lost the members silent for longer than
/// the timeout (once this member may judge them), and reads the fleet. One transaction, each
/// statement bounded by [`heartbeat_statement_timeout`]; `db` is a pool of the heartbeat's own.
pub async fn beat(db: &Database, member: &Arc<Member>, beat: &Beat) -> Result<View, DbError> {
    let mut conn = db.conn().await?;
    let (member, beat) = (member.clone(), beat.clone());
    conn.transaction(|conn| {
        async move {
            let member = &*member;
            bound_statements(conn, heartbeat_statement_timeout(member)).await?;
            let lost = members::state.eq("lost");
            let taken_over: Option<bool> = diesel::update(members::table.find(&member.id))
                .set((
                    members::heartbeat_at.eq(now),
                    members::share.eq(i32_of(beat.share)),
                    members::in_flight.eq(i32_of(beat.in_flight)),
                    members::wants_work.eq(beat.wants_work),
                    members::analysed.eq(i64::try_from(beat.analysed).unwrap_or(i64::MAX)),
                    members::state.eq(case_when(lost, members::state).otherwise(&beat.state)),
                ))
                .returning(lost)
                .get_result(conn)
                .await
                .optional()
                .map_err(DbError::query("recording this member's heartbeat"))?;
            // Known gone: its own hold lapsed half a timeout ago, so nothing of it is in flight,
            // and its share may go to others. A row another session holds locked is left for
            // the next heartbeat rather than waited for.
            let marked_lost: Vec<String> = match member.may_take_over() {
                true => {
                    let other = diesel::alias!(members as other);
                    let silent = other
                        .filter(other.field(members::id).ne(&member.id))
                        .filter(other.field(members::state).ne("lost"))
                        .filter(
                            other
                                .field(members::heartbeat_at)
                                .le(ago(member.timeout_s())),
                        )
                        .select(other.field(members::id))
                        .for_update()
                        .skip_locked();
                    diesel::update(members::table)
                        .filter(members::id.eq_any(silent))
                        .set((members::state.eq("lost"), members::share.eq(0)))
                        .returning(members::id)
                        .load(conn)
                        .await
                        .map_err(DbError::query("marking silent members lost"))?
                }
                false => Vec::new(),
            };
            let members = members(conn, member).await?;
            let switches: Option<FleetSwitches> = fleet::table
                .find(1)
                .select(FleetSwitches::as_select())
                .get_result(conn)
                .await
                .optional()
                .map_err(DbError::query("reading the fleet's switches"))?;
            let repair = crate::db::repair::lease::holder_on(conn)
                .await
                .map_err(DbError::query("reading the repair lease's holder"))?
                .filter(|holder| holder.expires_at > holder.read_at)
                .map(|holder| holder.to_string());
            Ok(View {
                // No row: it was forgotten after a long silence, which is a takeover too.
                taken_over: taken_over.unwrap_or(true),
                members,
                switches,
                repair,
                marked_lost,
            })
        }
        .boxed()
    })
    .await
}

/// Raises this member's share towards `target`, as far as the live members' shares leave room
/// under `total`; returns the share it may use (never less than `current`).
pub async fn raise(
    db: &Database,
    member: &Arc<Member>,
    current: usize,
    target: usize,
    total: usize,
) -> Result<usize, DbError> {
    let mut conn = db.conn().await?;
    let member = member.clone();
    conn.transaction(|conn| {
        async move {
            let member = &*member;
            bound_statements(conn, heartbeat_statement_timeout(member)).await?;
            fleet::table
                .find(1)
                .select(fleet::id)
                .for_update()
                .execute(conn)
                .await
                .map_err(DbError::query("locking the fleet's row"))?;
            // A member counts with the larger of its share and its in-flight work: one that has
            // lowered its share still has the requests it started under the old one. A silent
            // member counts until it is known gone (marked lost): its requests may still run.
            let others: Option<i64> = members::table
                .filter(members::id.ne(&member.id))
                .filter(members::state.ne("lost"))
                .select(sum(greatest(members::share, members::in_flight)))
                .get_result(conn)
                .await
                .map_err(DbError::query("adding up the fleet's shares"))?;
            let taken = usize::try_from(others.unwrap_or(0)).unwrap_or(usize::MAX);
            let granted = target.min(total.saturating_sub(taken)).max(current);
            if granted > current {
                diesel::update(members::table.find(&member.id))
                    .set(members::share.eq(i32_of(granted)))
                    .execute(conn)
                    .await
                    .map_err(DbError::query("raising this member's share"))?;
            }
            Ok(granted)
        }
        .boxed()
    })
    .await
}

/// Leaves the fleet: this member's claims go back to the others (its queued projects were never
/// analysed), and its row is deleted.
pub async fn leave(db: &Database, member: &Arc<Member>) -> Result<(), DbError> {
    let mut conn = db.conn().await?;
    let member = member.clone();
    conn.transaction(|conn| {
        async move {
            let member = &*member;
            diesel::update(claims::table.filter(claims::owner.eq(&member.id)))
                .set((
                    claims::owner.eq(None::<String>),
                    claims::taken_from.eq(None::<String>),
                ))
                .execute(conn)
                .await
                .map_err(DbError::query(
                    "handing this member's claims back to the fleet",
                ))?;
            diesel::delete(members::table.find(&member.id))
                .execute(conn)
                .await
                .map_err(DbError::query("leaving the fleet"))?;
            Ok(())
        }
        .boxed()
    })
    .await
}
