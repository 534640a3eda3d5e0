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
use diesel::sql_types::{BigInt, Bool, Double, Integer, Nullable, Text};
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use futures_util::FutureExt;
use serde::{Deserialize, Serialize};

use super::Member;
use crate::db::{Database, DbConn, DbError};
use crate::identity::ProcessIdentity;

/// Member rows whose heartbeat is older than this are deleted when another member joins: long
/// enough for `status` to show what died, short enough that the table stays small.
const FORGET_AFTER_S: i64 = 3600;

/// One member as the table has it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, diesel::QueryableByName)]
pub struct MemberRow {
    #[diesel(sql_type = Text)]
    pub id: String,
    #[diesel(sql_type = Text)]
    pub host: String,
    #[diesel(sql_type = Integer)]
    pub pid: i32,
    #[diesel(sql_type = Text)]
    pub shard: String,
    #[diesel(sql_type = diesel::sql_types::Timestamptz)]
    pub started_at: DateTime<Utc>,
    /// Seconds since its last heartbeat, by the database's clock.
    #[diesel(sql_type = Double)]
    pub heartbeat_age_s: f64,
    /// Its share of the fleet's concurrency.
    #[diesel(sql_type = Integer)]
    pub share: i32,
    #[diesel(sql_type = Integer)]
    pub in_flight: i32,
    /// It has projects to work on (or is looking for some).
    #[diesel(sql_type = Bool)]
    pub wants_work: bool,
    #[diesel(sql_type = Text)]
    pub state: String,
    /// What it does: `analyse`, `repair plan`, `repair apply (run N)`.
    #[serde(default)]
    #[diesel(sql_type = Text)]
    pub work: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub analysed: i64,
    /// Its heartbeat is younger than the timeout.
    #[diesel(sql_type = Bool)]
    pub live: bool,
}

/// The fleet's switches as the table has them (`control.source = "config"`).
#[derive(Debug, Clone, PartialEq, Eq, diesel::QueryableByName)]
pub struct FleetSwitches {
    #[diesel(sql_type = Integer)]
    pub max_concurrency: i32,
    #[diesel(sql_type = Bool)]
    pub enabled: bool,
    /// Grows with every write: a member adopts only what is newer than what it has.
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub version: i64,
    /// A control command (`pause`, `resume`, `concurrency N`) set them: they hold across restarts,
    /// over the configuration, until the next command.
    #[diesel(sql_type = Bool)]
    pub set_by_command: bool,
    #[diesel(sql_type = diesel::sql_types::Timestamptz)]
    pub updated_at: DateTime<Utc>,
}

/// The columns [`FleetSwitches`] is read with.
const SWITCHES: &str = "max_concurrency, enabled, version, set_by_command, updated_at";

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
    diesel::sql_query(
        "INSERT INTO registry_repair_fleet (id, max_concurrency, enabled, updated_by) \
         VALUES (1, $1, $2, $3) ON CONFLICT (id) DO NOTHING",
    )
    .bind::<Integer, _>(i32_of(joining.max_concurrency))
    .bind::<Bool, _>(joining.enabled)
    .bind::<Text, _>(&member.id)
    .execute(conn)
    .await
    .map_err(DbError::query("creating the fleet's row"))?;
    diesel::sql_query(format!(
        "SELECT {SWITCHES} FROM registry_repair_fleet WHERE id = 1 FOR UPDATE"
    ))
    .get_result(conn)
    .await
    .map_err(DbError::query("locking the fleet's row"))
}

async fn members(conn: &mut DbConn, member: &Member) -> Result<Vec<MemberRow>, DbError> {
    diesel::sql_query(
        "SELECT id, host, pid, shard, started_at, \
                EXTRACT(EPOCH FROM now() - heartbeat_at)::float8 AS heartbeat_age_s, \
                share, in_flight, wants_work, state, work, analysed, \
                heartbeat_at > now() - make_interval(secs => $1) AS live \
         FROM registry_repair_members ORDER BY started_at, id",
    )
    .bind::<Double, _>(member.timeout_s())
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
                diesel::sql_query(
                    "DELETE FROM registry_repair_members \
                     WHERE heartbeat_at < now() - make_interval(secs => $1)",
                )
                .bind::<Double, _>(FORGET_AFTER_S as f64)
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
                diesel::sql_query(
                    "INSERT INTO registry_repair_members \
                     (id, host, pid, shard, boot_id, pid_ns, process_started, work) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind::<Text, _>(&member.id)
                .bind::<Text, _>(&member.process.host)
                .bind::<Integer, _>(member.process.pid)
                .bind::<Text, _>(member.shard.to_string())
                .bind::<Text, _>(&member.process.boot_id)
                .bind::<Text, _>(&member.process.pid_ns)
                .bind::<BigInt, _>(member.process.started)
                .bind::<Text, _>(&member.work)
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
    #[derive(diesel::QueryableByName)]
    struct Local {
        #[diesel(sql_type = Text)]
        id: String,
        #[diesel(sql_type = Text)]
        host: String,
        #[diesel(sql_type = Text)]
        boot_id: String,
        #[diesel(sql_type = Text)]
        pid_ns: String,
        #[diesel(sql_type = Integer)]
        pid: i32,
        #[diesel(sql_type = BigInt)]
        process_started: i64,
    }
    let me = &member.process;
    if me.boot_id.is_empty() || me.pid_ns.is_empty() {
        return Ok(());
    }
    let local: Vec<Local> = diesel::sql_query(
        "SELECT id, host, boot_id, pid_ns, pid, process_started FROM registry_repair_members \
         WHERE boot_id = $1 AND pid_ns = $2 AND id <> $3 AND state <> 'lost' \
           AND heartbeat_at > now() - make_interval(secs => $4)",
    )
    .bind::<Text, _>(&me.boot_id)
    .bind::<Text, _>(&me.pid_ns)
    .bind::<Text, _>(&member.id)
    .bind::<Double, _>(member.timeout_s())
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
        diesel::sql_query(
            "UPDATE registry_repair_members \
             SET state = 'lost', share = 0, in_flight = 0, \
                 heartbeat_at = LEAST(heartbeat_at, now() - make_interval(secs => $2)) \
             WHERE id = $1",
        )
        .bind::<Text, _>(&ghost.id)
        .bind::<Double, _>(member.timeout_s())
        .execute(conn)
        .await
        .map_err(DbError::query("marking a member of this machine gone"))?;
        diesel::sql_query(
            "UPDATE registry_repair_claims SET taken_from = owner, owner = NULL WHERE owner = $1",
        )
        .bind::<Text, _>(&ghost.id)
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
    diesel::sql_query(
        "UPDATE registry_repair_members SET state = 'lost' \
         WHERE id <> $1 AND heartbeat_at <= now() - make_interval(secs => $2)",
    )
    .bind::<Text, _>(&member.id)
    .bind::<Double, _>(member.timeout_s())
    .execute(conn)
    .await
    .map_err(DbError::query("marking the members gone from the fleet"))?;
    let claims = diesel::sql_query("DELETE FROM registry_repair_claims")
        .execute(conn)
        .await
        .map_err(DbError::query(
            "forgetting the claims of members gone from the fleet",
        ))?;
    diesel::sql_query("DELETE FROM registry_repair_passes")
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
    diesel::sql_query(format!(
        "UPDATE registry_repair_fleet \
         SET max_concurrency = $1, enabled = $2, version = version + 1, updated_at = now(), \
             updated_by = $3, set_by_command = $4 \
         WHERE id = 1 RETURNING {SWITCHES}"
    ))
    .bind::<Integer, _>(i32_of(max_concurrency))
    .bind::<Bool, _>(enabled)
    .bind::<Text, _>(&member.id)
    .bind::<Bool, _>(by_command)
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
    #[derive(diesel::QueryableByName)]
    struct Beaten {
        #[diesel(sql_type = Bool)]
        taken_over: bool,
    }
    #[derive(diesel::QueryableByName)]
    struct Lost {
        #[diesel(sql_type = Text)]
        id: String,
    }
    let mut conn = db.conn().await?;
    let (member, beat) = (member.clone(), beat.clone());
    conn.transaction(|conn| {
        async move {
            let member = &*member;
            bound_statements(conn, heartbeat_statement_timeout(member)).await?;
            let beaten: Option<Beaten> = diesel::sql_query(
                "UPDATE registry_repair_members \
                 SET heartbeat_at = now(), share = $2, in_flight = $3, wants_work = $4, analysed = $6, \
                     state = CASE WHEN state = 'lost' THEN state ELSE $5 END \
                 WHERE id = $1 \
                 RETURNING state = 'lost' AS taken_over",
            )
            .bind::<Text, _>(&member.id)
            .bind::<Integer, _>(i32_of(beat.share))
            .bind::<Integer, _>(i32_of(beat.in_flight))
            .bind::<Bool, _>(beat.wants_work)
            .bind::<Text, _>(&beat.state)
            .bind::<BigInt, _>(i64::try_from(beat.analysed).unwrap_or(i64::MAX))
            .get_results(conn)
            .await
            .map_err(DbError::query("recording this member's heartbeat"))?
            .pop();
            // Known gone: its own hold lapsed half a timeout ago, so nothing of it is in flight,
            // and its share may go to others. A row another session holds locked is left for
            // the next heartbeat rather than waited for.
            let marked_lost: Vec<Lost> = match member.may_take_over() {
                true => diesel::sql_query(
                    "UPDATE registry_repair_members SET state = 'lost', share = 0 \
                     WHERE id IN (SELECT id FROM registry_repair_members \
                                  WHERE id <> $1 AND state <> 'lost' \
                                    AND heartbeat_at <= now() - make_interval(secs => $2) \
                                  FOR UPDATE SKIP LOCKED) \
                     RETURNING id",
                )
                .bind::<Text, _>(&member.id)
                .bind::<Double, _>(member.timeout_s())
                .load(conn)
                .await
                .map_err(DbError::query("marking silent members lost"))?,
                false => Vec::new(),
            };
            let members = members(conn, member).await?;
            let switches: Option<FleetSwitches> = diesel::sql_query(format!(
                "SELECT {SWITCHES} FROM registry_repair_fleet WHERE id = 1"
            ))
            .get_results(conn)
            .await
            .map_err(DbError::query("reading the fleet's switches"))?
            .pop();
            let repair = crate::db::repair::lease::holder_on(conn)
                .await
                .map_err(DbError::query("reading the repair lease's holder"))?
                .filter(|holder| holder.expires_at > holder.read_at)
                .map(|holder| holder.to_string());
            Ok(View {
                // No row: it was forgotten after a long silence, which is a takeover too.
                taken_over: beaten.is_none_or(|b| b.taken_over),
                members,
                switches,
                repair,
                marked_lost: marked_lost.into_iter().map(|l| l.id).collect(),
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
    #[derive(diesel::QueryableByName)]
    struct Taken {
        #[diesel(sql_type = Nullable<diesel::sql_types::BigInt>)]
        taken: Option<i64>,
    }
    let mut conn = db.conn().await?;
    let member = member.clone();
    conn.transaction(|conn| {
        async move {
            let member = &*member;
            bound_statements(conn, heartbeat_statement_timeout(member)).await?;
            diesel::sql_query("SELECT 1 AS one FROM registry_repair_fleet WHERE id = 1 FOR UPDATE")
                .execute(conn)
                .await
                .map_err(DbError::query("locking the fleet's row"))?;
            // A member counts with the larger of its share and its in-flight work: one that has
            // lowered its share still has the requests it started under the old one. A silent
            // member counts until it is known gone (marked lost): its requests may still run.
            let others: Taken = diesel::sql_query(
                "SELECT sum(GREATEST(share, in_flight))::bigint AS taken FROM registry_repair_members \
                 WHERE id <> $1 AND state <> 'lost'",
            )
            .bind::<Text, _>(&member.id)
            .get_result(conn)
            .await
            .map_err(DbError::query("adding up the fleet's shares"))?;
            let taken = usize::try_from(others.taken.unwrap_or(0)).unwrap_or(usize::MAX);
            let granted = target.min(total.saturating_sub(taken)).max(current);
            if granted > current {
                diesel::sql_query("UPDATE registry_repair_members SET share = $2 WHERE id = $1")
                    .bind::<Text, _>(&member.id)
                    .bind::<Integer, _>(i32_of(granted))
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
            diesel::sql_query(
                "UPDATE registry_repair_claims SET owner = NULL, taken_from = NULL WHERE owner = $1",
            )
            .bind::<Text, _>(&member.id)
            .execute(conn)
            .await
            .map_err(DbError::query("handing this member's claims back to the fleet"))?;
            diesel::sql_query("DELETE FROM registry_repair_members WHERE id = $1")
                .bind::<Text, _>(&member.id)
                .execute(conn)
                .await
                .map_err(DbError::query("leaving the fleet"))?;
            Ok(())
        }
        .boxed()
    })
    .await
}
