//! The repair lease as `repair apply` and `repair undo` hold it: taken before anything is written
//! (a refusal leaves no trace), renewed in the background while the command runs, and released
//! when it ends, whatever the end. `plan`, `verify` and `runs` only read, and take none.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::db::repair::lease::{self, Claimant, Lease, Renewed, Takeover, LEASE_TTL, RENEW_EVERY};
use crate::db::repair::RepairError;
use crate::db::{Database, DbError};
use crate::fence::Fence;

/// How long after a renewal was sent this process may still commit a write: half the lease's
/// life, so that it never commits after the lease expired by the database's clock.
const HOLD: Duration = Duration::from_secs(LEASE_TTL.as_secs() / 2);

/// The lease, held by this process until [`HeldLease::release`].
pub struct HeldLease {
    /// A pool of its own (one connection), so that renewals never wait behind the writers for a
    /// connection while the lease runs out.
    db: Database,
    lease: Lease,
    /// Open while the renewals go through: each confirms it for half the lease's life from when
    /// it was sent. Every write checks it before its commit.
    fence: Arc<Fence>,
    renewer: actix_rt::task::JoinHandle<()>,
    /// Who took the lease away, once a renewal found it no longer ours.
    lost: watch::Receiver<Option<String>>,
}

impl HeldLease {
    /// Takes the lease for a `repair {kind}`, or refuses ([`RepairError::Busy`]) while another
    /// apply or undo holds it. Logs the holder of an expired lease it takes over.
    pub async fn acquire(db: &Database, kind: &'static str) -> Result<HeldLease, RepairError> {
        let db = db.own_pool(1)?;
        let claimant = Claimant::this_process(kind);
        let sent = Instant::now();
        let acquired = lease::acquire(&db, &claimant).await?;
        let fence = Arc::new(Fence::until(sent + HOLD));
        if let Some((previous, why)) = &acquired.taken_over {
            let why = match why {
                Takeover::Expired => "expired: its process stopped renewing it",
                Takeover::ProcessGone => "held by a process of this machine that is gone",
            };
            tracing::warn!(
                previous_run = previous.run_id,
                previous_kind = %previous.kind,
                previous_host = %previous.host,
                previous_pid = previous.pid,
                previous_since = %previous.acquired_at,
                expired_at = %previous.expires_at,
                "took over the repair lease of {previous}: {why}"
            );
        }
        let lease = acquired.lease;
        tracing::info!(
            kind,
            host = %lease.host,
            pid = lease.pid,
            expires_at = %lease.expires_at,
            "holding the repair lease"
        );
        let (tell, lost) = watch::channel(None);
        let renewer = actix_rt::spawn(renew(db.clone(), lease.clone(), fence.clone(), tell));
        Ok(HeldLease {
            db,
            lease,
            fence,
            renewer,
            lost,
        })
    }

    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// Open while the renewals go through (see [`lease::still_held`]).
    pub fn fence(&self) -> &Arc<Fence> {
        &self.fence
    }

    /// Resolves once a renewal has found the lease taken by another run; never otherwise.
    pub fn lost(&self) -> impl Future<Output = RepairError> + 'static {
        let mut lost = self.lost.clone();
        async move {
            loop {
                let holder = lost.borrow_and_update().clone();
                if let Some(holder) = holder {
                    return lost_error(holder);
                }
                if lost.changed().await.is_err() {
                    // The renewer ended without losing the lease (released).
                    return std::future::pending().await;
                }
            }
        }
    }

    /// The loss, if a renewal found the lease taken.
    pub fn lost_now(&self) -> Option<RepairError> {
        self.lost.borrow().clone().map(lost_error)
    }

    /// Stops renewing and deletes the lease row if it is still ours. A failure is logged, not
    /// returned: the command's own outcome matters more, and the lease expires by itself.
    pub async fn release(self) {
        self.renewer.abort();
        match lease::release(&self.db, &self.lease).await {
            Ok(true) => tracing::info!(kind = self.lease.kind, "released the repair lease"),
            Ok(false) => tracing::warn!(
                kind = self.lease.kind,
                "the repair lease was no longer this process's when it ended; left to its holder"
            ),
            Err(error) => tracing::warn!(
                %error,
                expires_in_s = LEASE_TTL.as_secs(),
                "could not release the repair lease; it expires by itself"
            ),
        }
    }
}

fn lost_error(holder: String) -> RepairError {
    DbError::LeaseLost {
        what: "renewing the repair lease".to_string(),
        holder,
    }
    .into()
}

/// Renews `lease` every `RENEW_EVERY` until aborted, or until a renewal finds it no longer ours,
/// which it tells on `lost`. A failed renewal is retried at the next tick: the lease lasts several.
async fn renew(db: Database, lease: Lease, fence: Arc<Fence>, lost: watch::Sender<Option<String>>) {
    let mut ticks = tokio::time::interval(RENEW_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is at once: the lease was just taken.
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let sent = Instant::now();
        match tokio::time::timeout(RENEW_EVERY, lease::renew(&db, &lease)).await {
            Ok(Ok(Renewed::Until(expires_at))) => {
                fence.confirm(sent, HOLD);
                tracing::debug!(%expires_at, "renewed the repair lease");
            }
            Ok(Ok(Renewed::Lost(holder))) => {
                fence.close();
                let holder = holder.map_or_else(
                    || "nobody (its row was deleted)".to_string(),
                    |h| h.to_string(),
                );
                tracing::error!(
                    kind = lease.kind,
                    now_held_by = %holder,
                    "the repair lease is no longer this process's: stopping without writing more"
                );
                let _ = lost.send(Some(holder));
                return;
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "could not renew the repair lease; trying again");
            }
            Err(_) => {
                tracing::warn!(
                    after = ?RENEW_EVERY,
                    "renewing the repair lease timed out; trying again"
                );
            }
        }
    }
}
