//! The repair lease: one `repair apply` or `repair undo` at a time against a database.
//!
//! A row of `registry_repair_leases`, not a session-level advisory lock: behind PgBouncer in
//! transaction pooling mode a session is not the client's, so a session lock would be held by
//! whichever client the server connection serves next, or lost. Every statement here is one
//! transaction of its own, but for [`fence`], which runs inside a write's. Times are the database's (`now()`), so hosts with skewed clocks agree
//! on when a lease expires.
//!
//! A holder is known by its host, pid and the `acquired_at` its acquisition wrote (the same
//! host name and pid can come back in another container; the acquisition time cannot). Its
//! process identity (boot id, pid namespace, start time) lets an apply or undo of the same machine
//! take over at once the lease of one whose process is gone.
//!
//! Every write of a run checks, in its own transaction, that the lease row names that run
//! ([`fence`]): a run whose lease was taken over, or whose row is gone, writes nothing more, even
//! before its renewal notices. And it commits only while its renewals go through, by its own
//! monotonic clock ([`still_held`]): a run frozen past half the lease's life rolls back rather
//! than commit after another could have taken the lease.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::dsl::exists;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Double, Integer, Nullable, Text, Timestamptz};
use diesel_async::RunQueryDsl;

use super::RepairError;
use crate::db::dsl::{db_now, from_now};
use crate::db::schema::registry_repair_leases as leases;
use crate::db::{Database, DbConn, DbError};
use crate::fence::Fence;
use crate::identity::ProcessIdentity;

/// The lease's row: apply and undo share it.
pub(super) const NAME: &str = "repair";

/// How long a lease lasts without renewal: how long a run whose process died blocks the next.
pub const LEASE_TTL: Duration = Duration::from_secs(30);

/// How often a holder renews: several renewals may fail (a database restart) before it expires.
pub const RENEW_EVERY: Duration = Duration::from_secs(5);

/// Attempts at acquiring when the holder read after a refusal is already gone (it released
/// between the two statements).
const ATTEMPTS: usize = 3;

/// The lease row as read, with the database's clock at the read.
#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub struct Holder {
    pub boot_id: String,
    pub pid_ns: String,
    pub process_started: i64,
    /// The holder's run; `None` until it has created its run row.
    pub run_id: Option<i64>,
    /// `apply` or `undo`.
    pub kind: String,
    pub host: String,
    pub pid: i32,
    pub acquired_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// The database's `now()` when the row was read.
    pub read_at: DateTime<Utc>,
}

impl Holder {
    /// The holder's process.
    pub fn process(&self) -> ProcessIdentity {
        ProcessIdentity {
            host: self.host.clone(),
            boot_id: self.boot_id.clone(),
            pid_ns: self.pid_ns.clone(),
            pid: self.pid,
            started: self.process_started,
        }
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let run = self
            .run_id
            .map_or_else(|| "(run not recorded yet)".to_string(), |id| id.to_string());
        let age = (self.read_at - self.acquired_at).num_seconds().max(0);
        write!(
            f,
            "repair {} run {run} on host {}, pid {}, since {} ({age} s ago)",
            self.kind,
            self.host,
            self.pid,
            self.acquired_at.format("%Y-%m-%d %H:%M:%S UTC"),
        )
    }
}

/// Who asks for the lease: this process, about to run an `apply` or an `undo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimant {
    pub kind: &'static str,
    pub process: ProcessIdentity,
}

impl Claimant {
    pub fn this_process(kind: &'static str) -> Self {
        Self {
            kind,
            process: ProcessIdentity::this_process(),
        }
    }
}

/// The lease as this process holds it: which row is ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub kind: &'static str,
    pub host: String,
    pub pid: i32,
    pub acquired_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl Lease {
    /// The lease `claimant` took, as the database wrote it.
    fn taken_by(
        claimant: &Claimant,
        acquired_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Self {
        Self {
            kind: claimant.kind,
            host: claimant.process.host.clone(),
            pid: claimant.process.pid,
            acquired_at,
            expires_at,
        }
    }
}

/// A lease acquired, and the holder it replaced, if any, and why.
#[derive(Debug, Clone)]
pub struct Acquired {
    pub lease: Lease,
    pub taken_over: Option<(Holder, Takeover)>,
}

/// Why a holder's lease was taken over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Takeover {
    /// Its `expires_at` had passed: it stopped renewing.
    Expired,
    /// Its process, of this machine and pid namespace, is gone: no need to wait for the expiry.
    ProcessGone,
}

fn ttl_seconds() -> f64 {
    LEASE_TTL.as_secs_f64()
}

/// The lease's row by its name.
#[diesel::dsl::auto_type]
fn lease_row() -> _ {
    let name: &'static str = NAME;
    leases::table.filter(leases::name.eq(name))
}

/// The lease's row while the holder of this host, pid and acquisition time has it (another's
/// acquisition rewrites all three).
#[diesel::dsl::auto_type(no_type_alias)]
fn held_as<'a>(host: &'a str, pid: i32, acquired_at: DateTime<Utc>) -> _ {
    let row: lease_row = lease_row();
    row.filter(leases::host.eq(host))
        .filter(leases::pid.eq(pid))
        .filter(leases::acquired_at.eq(acquired_at))
}

/// Takes the lease for `claimant`, or refuses with [`RepairError::Busy`] naming the live holder.
/// One statement: it inserts the row, or replaces one whose `expires_at` has passed; a live row
/// is left as it is and nothing is returned. A live row whose holder is a process of this machine
/// that is gone (killed, its container restarted) is taken over at once.
pub async fn acquire(db: &Database, claimant: &Claimant) -> Result<Acquired, RepairError> {
    check_migrated(db).await?;
    for _ in 0..ATTEMPTS {
        if let Some(acquired) = insert_or_take_expired(db, claimant).await? {
            return Ok(acquired);
        }
        let Some(holder) = holder(db).await? else {
            continue; // released between the two statements: try again
        };
        if claimant.process.sees_alive(&holder.process()) == Some(false) {
            if let Some(lease) = take_from_gone(db, claimant, &holder).await? {
                return Ok(Acquired {
                    lease,
                    taken_over: Some((holder, Takeover::ProcessGone)),
                });
            }
            continue; // it changed hands meanwhile: look again
        }
        return Err(RepairError::Busy {
            wanted: claimant.kind,
            target: db.target().to_string(),
            holder: Box::new(holder),
        });
    }
    Err(RepairError::LeaseContended { attempts: ATTEMPTS })
}

/// The row inserted, or an expired one replaced: `None` when a live holder has it.
async fn insert_or_take_expired(
    db: &Database,
    claimant: &Claimant,
) -> Result<Option<Acquired>, RepairError> {
    #[derive(QueryableByName)]
    struct Taken {
        #[diesel(sql_type = Timestamptz)]
        acquired_at: DateTime<Utc>,
        #[diesel(sql_type = Timestamptz)]
        expires_at: DateTime<Utc>,
        #[diesel(sql_type = Timestamptz)]
        read_at: DateTime<Utc>,
        #[diesel(sql_type = Nullable<BigInt>)]
        previous_run_id: Option<i64>,
        #[diesel(sql_type = Nullable<Text>)]
        previous_kind: Option<String>,
        #[diesel(sql_type = Nullable<Text>)]
        previous_host: Option<String>,
        #[diesel(sql_type = Nullable<Integer>)]
        previous_pid: Option<i32>,
        #[diesel(sql_type = Nullable<Timestamptz>)]
        previous_acquired_at: Option<DateTime<Utc>>,
        #[diesel(sql_type = Nullable<Timestamptz>)]
        previous_expires_at: Option<DateTime<Utc>>,
    }
    let process = &claimant.process;
    let mut conn = db.conn().await?;
    // Raw: a CTE (`previous`) reads the row as it was before the upsert, the holder taken from.
    let taken: Option<Taken> = diesel::sql_query(
        "WITH previous AS ( \
             SELECT run_id, kind, host, pid, acquired_at, expires_at \
             FROM registry_repair_leases WHERE name = $1) \
         INSERT INTO registry_repair_leases AS l \
             (name, run_id, kind, host, pid, boot_id, pid_ns, process_started, acquired_at, expires_at) \
         VALUES ($1, NULL, $2, $3, $4, $6, $7, $8, now(), now() + $5 * interval '1 second') \
         ON CONFLICT (name) DO UPDATE \
             SET run_id = NULL, kind = EXCLUDED.kind, host = EXCLUDED.host, \
                 pid = EXCLUDED.pid, boot_id = EXCLUDED.boot_id, pid_ns = EXCLUDED.pid_ns, \
                 process_started = EXCLUDED.process_started, \
                 acquired_at = EXCLUDED.acquired_at, expires_at = EXCLUDED.expires_at \
             WHERE l.expires_at < now() \
         RETURNING l.acquired_at, l.expires_at, now() AS read_at, \
             (SELECT run_id FROM previous) AS previous_run_id, \
             (SELECT kind FROM previous) AS previous_kind, \
             (SELECT host FROM previous) AS previous_host, \
             (SELECT pid FROM previous) AS previous_pid, \
             (SELECT acquired_at FROM previous) AS previous_acquired_at, \
             (SELECT expires_at FROM previous) AS previous_expires_at",
    )
    .bind::<Text, _>(NAME)
    .bind::<Text, _>(claimant.kind)
    .bind::<Text, _>(&process.host)
    .bind::<Integer, _>(process.pid)
    .bind::<Double, _>(ttl_seconds())
    .bind::<Text, _>(&process.boot_id)
    .bind::<Text, _>(&process.pid_ns)
    .bind::<BigInt, _>(process.started)
    .get_result(&mut conn)
    .await
    .optional()
    .map_err(DbError::query(format!(
        "taking the repair lease for repair {} (host {}, pid {})",
        claimant.kind, process.host, process.pid
    )))?;
    let Some(taken) = taken else {
        return Ok(None);
    };
    let taken_over = match (
        taken.previous_kind,
        taken.previous_host,
        taken.previous_pid,
        taken.previous_acquired_at,
        taken.previous_expires_at,
    ) {
        // A row released between the snapshot and the insert was no takeover.
        (Some(kind), Some(host), Some(pid), Some(acquired_at), Some(expires_at))
            if expires_at < taken.read_at =>
        {
            Some((
                Holder {
                    boot_id: String::new(),
                    pid_ns: String::new(),
                    process_started: 0,
                    run_id: taken.previous_run_id,
                    kind,
                    host,
                    pid,
                    acquired_at,
                    expires_at,
                    read_at: taken.read_at,
                },
                Takeover::Expired,
            ))
        }
        _ => None,
    };
    Ok(Some(Acquired {
        lease: Lease::taken_by(claimant, taken.acquired_at, taken.expires_at),
        taken_over,
    }))
}

/// Takes the lease from `holder`, whose process is gone: only if the row is still that holder's.
async fn take_from_gone(
    db: &Database,
    claimant: &Claimant,
    holder: &Holder,
) -> Result<Option<Lease>, RepairError> {
    let process = &claimant.process;
    let mut conn = db.conn().await?;
    let taken: Option<(DateTime<Utc>, DateTime<Utc>)> =
        diesel::update(held_as(&holder.host, holder.pid, holder.acquired_at))
            .set((
                leases::run_id.eq(None::<i64>),
                leases::kind.eq(claimant.kind),
                leases::host.eq(&process.host),
                leases::pid.eq(process.pid),
                leases::boot_id.eq(&process.boot_id),
                leases::pid_ns.eq(&process.pid_ns),
                leases::process_started.eq(process.started),
                leases::acquired_at.eq(db_now()),
                leases::expires_at.eq(from_now(ttl_seconds())),
            ))
            .returning((leases::acquired_at, leases::expires_at))
            .get_result(&mut conn)
            .await
            .optional()
            .map_err(DbError::query(format!(
                "taking over the repair lease of {holder}, whose process is gone"
            )))?;
    Ok(taken.map(|(acquired_at, expires_at)| Lease::taken_by(claimant, acquired_at, expires_at)))
}

async fn check_migrated(db: &Database) -> Result<(), RepairError> {
    Ok(db.check_ready().await?)
}

/// The lease's holder now, expired or not; `None` when nobody holds it.
pub async fn holder(db: &Database) -> Result<Option<Holder>, DbError> {
    let mut conn = db.conn().await?;
    holder_on(&mut conn)
        .await
        .map_err(DbError::query("reading the repair lease's holder"))
}

pub(crate) async fn holder_on(conn: &mut DbConn) -> diesel::QueryResult<Option<Holder>> {
    lease_row()
        .select((
            leases::boot_id,
            leases::pid_ns,
            leases::process_started,
            leases::run_id,
            leases::kind,
            leases::host,
            leases::pid,
            leases::acquired_at,
            leases::expires_at,
            db_now(),
        ))
        .get_result(conn)
        .await
        .optional()
}

/// Records `run_id` as the run holding `lease`; an error naming the holder when the lease is no
/// longer ours.
pub async fn record_run(db: &Database, lease: &Lease, run_id: i64) -> Result<(), RepairError> {
    let what = format!("recording run {run_id} as the repair lease's holder");
    let mut conn = db.conn().await?;
    let updated = diesel::update(held_as(&lease.host, lease.pid, lease.acquired_at))
        .set(leases::run_id.eq(run_id))
        .execute(&mut conn)
        .await
        .map_err(DbError::query(what.clone()))?;
    if updated == 1 {
        return Ok(());
    }
    let holder = holder_on(&mut conn)
        .await
        .map_err(DbError::query("reading who holds the repair lease now"))?;
    Err(DbError::LeaseLost {
        what,
        holder: holder.map_or_else(|| "nobody".to_string(), |h| h.to_string()),
    }
    .into())
}

/// What a renewal found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewed {
    /// Still ours, now until this time (the database's clock).
    Until(DateTime<Utc>),
    /// No longer ours: this holder has it (`None`: the row is gone).
    Lost(Option<Holder>),
}

/// Pushes `lease`'s expiry to `LEASE_TTL` from now, if the lease is still ours (expired or not:
/// nobody took it).
pub async fn renew(db: &Database, lease: &Lease) -> Result<Renewed, DbError> {
    let mut conn = db.conn().await?;
    let renewed: Option<DateTime<Utc>> =
        diesel::update(held_as(&lease.host, lease.pid, lease.acquired_at))
            .set(leases::expires_at.eq(from_now(ttl_seconds())))
            .returning(leases::expires_at)
            .get_result(&mut conn)
            .await
            .optional()
            .map_err(DbError::query("renewing the repair lease"))?;
    match renewed {
        Some(expires_at) => Ok(Renewed::Until(expires_at)),
        None => Ok(Renewed::Lost(holder_on(&mut conn).await.map_err(
            DbError::query("reading who holds the repair lease now"),
        )?)),
    }
}

/// Deletes the lease row if it is still ours; true when it was.
pub async fn release(db: &Database, lease: &Lease) -> Result<bool, DbError> {
    let mut conn = db.conn().await?;
    let deleted = diesel::delete(held_as(&lease.host, lease.pid, lease.acquired_at))
        .execute(&mut conn)
        .await
        .map_err(DbError::query("releasing the repair lease"))?;
    Ok(deleted == 1)
}

/// Inside a write's transaction: refuses to write for run `run_id` unless the lease row names
/// that run. So a run whose lease was taken over (or whose row was deleted) writes nothing more,
/// even before its renewal notices. No row lock: a write that waits for a lock (GitLab's own
/// transactions) would hold the lease row with it, and an apply stopped meanwhile could not
/// release it; the commit is fenced on the holder's clock instead ([`still_held`]).
pub(super) async fn fence(conn: &mut DbConn, run_id: i64, what: &str) -> Result<(), DbError> {
    let held: bool = diesel::select(exists(lease_row().filter(leases::run_id.eq(run_id))))
        .get_result(conn)
        .await
        .map_err(DbError::query(format!(
            "{what}: checking that this run still holds the repair lease"
        )))?;
    match held {
        true => Ok(()),
        false => Err(refused(conn, what).await),
    }
}

/// The lease row of run `$2` (lease name `$1`); no row when another run holds the lease or
/// nobody does. For a CTE of a write's first statement (`fence` says the same with the builder).
pub(super) const HELD_BY_RUN: &str =
    "SELECT 1 FROM registry_repair_leases WHERE name = $1 AND run_id = $2";

/// Right before a write commits: its run's renewals must have gone through within half the
/// lease's life, by this process's monotonic clock (`fence`, confirmed by each renewal). Others
/// take a lease over only once it expired by the database's clock, a whole life after the last
/// renewal: a commit that passes this check comes before any takeover, whatever froze the
/// process before it.
pub(super) fn still_held(fence: &Fence, what: &str) -> Result<(), DbError> {
    match fence.is_open() {
        true => Ok(()),
        false => Err(DbError::LeaseLapsed {
            what: what.to_string(),
            after: LEASE_TTL / 2,
        }),
    }
}

/// The error of a write whose run no longer holds the lease, naming who holds it now.
pub(super) async fn refused(conn: &mut DbConn, what: &str) -> DbError {
    let holder = match holder_on(conn).await {
        Ok(Some(holder)) => holder.to_string(),
        Ok(None) => "nobody: its row was deleted".to_string(),
        Err(error) => format!("(who, could not be read: {error})"),
    };
    DbError::LeaseLost {
        what: what.to_string(),
        holder,
    }
}
