//! The repair lease: one `repair apply` or `repair undo` at a time against a database.
//!
//! A row of `registry_repair_leases`, not a session-level advisory lock: behind PgBouncer in
//! transaction pooling mode a session is not the client's, so a session lock would be held by
//! whichever client the server connection serves next, or lost. Every statement here is one
//! transaction of its own, but for [`fence`], which runs inside a write's. Times are the database's (`now()`), so hosts with skewed clocks agree
//! on when a lease expires.
//!
//! A holder is known by its host, pid and the `acquired_at` its acquisition wrote (the same
//! host name and pid can come back in another container; the acquisition time cannot).

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Double, Integer, Nullable, Text, Timestamptz};
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;

use super::RepairError;
use crate::db::{Database, DbConn, DbError, Present};

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
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct Holder {
    /// The holder's run; `None` until it has created its run row.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub run_id: Option<i64>,
    /// `apply` or `undo`.
    #[diesel(sql_type = Text)]
    pub kind: String,
    #[diesel(sql_type = Text)]
    pub host: String,
    #[diesel(sql_type = Integer)]
    pub pid: i32,
    #[diesel(sql_type = Timestamptz)]
    pub acquired_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    pub expires_at: DateTime<Utc>,
    /// The database's `now()` when the row was read.
    #[diesel(sql_type = Timestamptz)]
    pub read_at: DateTime<Utc>,
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
    pub host: String,
    pub pid: i32,
}

impl Claimant {
    pub fn this_process(kind: &'static str) -> Self {
        Self {
            kind,
            host: host_name(),
            // Linux pids are at most 2^22.
            pid: i32::try_from(std::process::id()).unwrap_or(i32::MAX),
        }
    }
}

/// This host's name, as the kernel has it (a container's own), else `$HOSTNAME`.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|n| !n.is_empty()))
        .unwrap_or_else(|| "unknown-host".to_string())
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

/// A lease acquired, and the holder it replaced if that one's lease had expired.
#[derive(Debug, Clone)]
pub struct Acquired {
    pub lease: Lease,
    pub taken_over: Option<Holder>,
}

fn ttl_seconds() -> f64 {
    LEASE_TTL.as_secs_f64()
}

/// Takes the lease for `claimant`, or refuses with [`RepairError::Busy`] naming the live holder.
/// One statement: it inserts the row, or replaces one whose `expires_at` has passed; a live row
/// is left as it is and nothing is returned.
pub async fn acquire(db: &Database, claimant: &Claimant) -> Result<Acquired, RepairError> {
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
    check_migrated(db).await?;
    for _ in 0..ATTEMPTS {
        let mut conn = db.conn().await?;
        // `previous` reads the row as it was before this statement: the holder an expired lease
        // is taken from, for the log.
        let taken: Option<Taken> = optional(
            diesel::sql_query(
                "WITH previous AS ( \
                 SELECT run_id, kind, host, pid, acquired_at, expires_at \
                 FROM registry_repair_leases WHERE name = $1) \
             INSERT INTO registry_repair_leases AS l \
                 (name, run_id, kind, host, pid, acquired_at, expires_at) \
             VALUES ($1, NULL, $2, $3, $4, now(), now() + $5 * interval '1 second') \
             ON CONFLICT (name) DO UPDATE \
                 SET run_id = NULL, kind = EXCLUDED.kind, host = EXCLUDED.host, \
                     pid = EXCLUDED.pid, acquired_at = EXCLUDED.acquired_at, \
                     expires_at = EXCLUDED.expires_at \
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
            .bind::<Text, _>(&claimant.host)
            .bind::<Integer, _>(claimant.pid)
            .bind::<Double, _>(ttl_seconds())
            .get_result(&mut conn)
            .await,
        )
        .map_err(DbError::query(format!(
            "taking the repair lease for repair {} (host {}, pid {})",
            claimant.kind, claimant.host, claimant.pid
        )))?;
        drop(conn);
        if let Some(taken) = taken {
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
                    Some(Holder {
                        run_id: taken.previous_run_id,
                        kind,
                        host,
                        pid,
                        acquired_at,
                        expires_at,
                        read_at: taken.read_at,
                    })
                }
                _ => None,
            };
            return Ok(Acquired {
                lease: Lease {
                    kind: claimant.kind,
                    host: claimant.host.clone(),
                    pid: claimant.pid,
                    acquired_at: taken.acquired_at,
                    expires_at: taken.expires_at,
                },
                taken_over,
            });
        }
        if let Some(holder) = holder(db).await? {
            return Err(RepairError::Busy {
                wanted: claimant.kind,
                target: db.target().to_string(),
                holder: Box::new(holder),
            });
        }
        // Released between the two statements: try again.
    }
    Err(RepairError::LeaseContended { attempts: ATTEMPTS })
}

/// `get_result` of a statement that may return no row: `Ok(None)` for none.
fn optional<T>(
    result: Result<T, diesel::result::Error>,
) -> Result<Option<T>, diesel::result::Error> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(diesel::result::Error::NotFound) => Ok(None),
        Err(error) => Err(error),
    }
}

async fn check_migrated(db: &Database) -> Result<(), RepairError> {
    let mut conn = db.conn().await?;
    let row: Present =
        diesel::sql_query("SELECT to_regclass('registry_repair_leases') IS NOT NULL AS present")
            .get_result(&mut conn)
            .await
            .map_err(DbError::query("checking for the repair lease's table"))?;
    if row.present {
        Ok(())
    } else {
        Err(RepairError::NotMigrated {
            target: db.target().to_string(),
        })
    }
}

/// The lease's holder now, expired or not; `None` when nobody holds it.
pub async fn holder(db: &Database) -> Result<Option<Holder>, DbError> {
    let mut conn = db.conn().await?;
    holder_on(&mut conn)
        .await
        .map_err(DbError::query("reading the repair lease's holder"))
}

async fn holder_on(conn: &mut DbConn) -> diesel::QueryResult<Option<Holder>> {
    optional(
        diesel::sql_query(
            "SELECT run_id, kind, host, pid, acquired_at, expires_at, now() AS read_at \
             FROM registry_repair_leases WHERE name = $1",
        )
        .bind::<Text, _>(NAME)
        .get_result(conn)
        .await,
    )
}

/// Records `run_id` as the run holding `lease`; an error naming the holder when the lease is no
/// longer ours.
pub async fn record_run(db: &Database, lease: &Lease, run_id: i64) -> Result<(), RepairError> {
    let what = format!("recording run {run_id} as the repair lease's holder");
    let mut conn = db.conn().await?;
    let updated = diesel::sql_query(
        "UPDATE registry_repair_leases SET run_id = $5 \
         WHERE name = $1 AND host = $2 AND pid = $3 AND acquired_at = $4",
    )
    .bind::<Text, _>(NAME)
    .bind::<Text, _>(&lease.host)
    .bind::<Integer, _>(lease.pid)
    .bind::<Timestamptz, _>(lease.acquired_at)
    .bind::<BigInt, _>(run_id)
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
    #[derive(QueryableByName)]
    struct Expiry {
        #[diesel(sql_type = Timestamptz)]
        expires_at: DateTime<Utc>,
    }
    let mut conn = db.conn().await?;
    let renewed: Option<Expiry> = optional(
        diesel::sql_query(
            "UPDATE registry_repair_leases SET expires_at = now() + $5 * interval '1 second' \
         WHERE name = $1 AND host = $2 AND pid = $3 AND acquired_at = $4 \
         RETURNING expires_at",
        )
        .bind::<Text, _>(NAME)
        .bind::<Text, _>(&lease.host)
        .bind::<Integer, _>(lease.pid)
        .bind::<Timestamptz, _>(lease.acquired_at)
        .bind::<Double, _>(ttl_seconds())
        .get_result(&mut conn)
        .await,
    )
    .map_err(DbError::query("renewing the repair lease"))?;
    match renewed {
        Some(expiry) => Ok(Renewed::Until(expiry.expires_at)),
        None => Ok(Renewed::Lost(holder_on(&mut conn).await.map_err(
            DbError::query("reading who holds the repair lease now"),
        )?)),
    }
}

/// Deletes the lease row if it is still ours; true when it was.
pub async fn release(db: &Database, lease: &Lease) -> Result<bool, DbError> {
    let mut conn = db.conn().await?;
    let deleted = diesel::sql_query(
        "DELETE FROM registry_repair_leases \
         WHERE name = $1 AND host = $2 AND pid = $3 AND acquired_at = $4",
    )
    .bind::<Text, _>(NAME)
    .bind::<Text, _>(&lease.host)
    .bind::<Integer, _>(lease.pid)
    .bind::<Timestamptz, _>(lease.acquired_at)
    .execute(&mut conn)
    .await
    .map_err(DbError::query("releasing the repair lease"))?;
    Ok(deleted == 1)
}

/// Inside a write's transaction: refuses to write for run `run_id` while another run holds the
/// lease, so that a run whose lease was taken over writes nothing more, even before its renewal
/// notices. A plain read, no row lock: a lock here would make the next holder's acquisition wait
/// for this run's transactions instead of being refused at once. No row (a run started without a
/// lease, as the in-process tests do) or our own run's row (expired or not) lets the write go on.
pub(super) async fn fence(conn: &mut DbConn, run_id: i64, what: &str) -> Result<(), DbError> {
    let holder = holder_on(conn).await.map_err(DbError::query(format!(
        "{what}: checking that this run still holds the repair lease"
    )))?;
    match holder {
        Some(holder) if holder.run_id != Some(run_id) => Err(DbError::LeaseLost {
            what: what.to_string(),
            holder: holder.to_string(),
        }),
        _ => Ok(()),
    }
}
