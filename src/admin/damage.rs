//! `GET /damage`: the missing repositories every instance recorded so far
//! ([`missing::damage`]), kept for a few seconds.
//!
//! Why a cache: the totals scan the whole of `registry_repair_missing_repositories`, and the live
//! page asks every 2 s from every tab that has it open. A dozen tabs would otherwise run a dozen
//! scans every 2 s on GitLab's primary, for figures that move slowly. One answer (or one error)
//! is kept for [`FRESH_FOR`]; callers arriving while it is being read wait for that one read
//! instead of starting their own.

use std::time::{Duration, Instant};

use actix_rt::ArbiterHandle;
use tokio::sync::{oneshot, Mutex};

use crate::db::missing::{self, Damage};
use crate::db::Database;

/// How long one read of the totals answers for.
pub const FRESH_FOR: Duration = Duration::from_secs(5);

/// Why there are no totals to show.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DamageError {
    #[error("this service keeps no record of missing repositories (it has no database)")]
    NoDatabase,
    #[error("reading the damage from registry_repair_missing_repositories: {0}")]
    Database(String),
    #[error("reading the damage: the service is stopping")]
    Stopping,
}

pub struct DamageCache {
    db: Option<Database>,
    /// The actix System's arbiter, where the service's pool lives: a pool belongs to the runtime
    /// that uses it, and the admin API's worker runs on a runtime of its own, so the read is sent
    /// home rather than made here (a connection made on the worker's runtime would die with it).
    home: ArbiterHandle,
    last: Mutex<Option<(Instant, Result<Damage, DamageError>)>>,
}

impl DamageCache {
    /// Must be made inside the actix System (it keeps the current arbiter).
    pub fn new(db: Option<Database>) -> Self {
        Self {
            db,
            home: actix_rt::Arbiter::current(),
            last: Mutex::new(None),
        }
    }

    /// The totals, read at most once per [`FRESH_FOR`].
    pub async fn get(&self) -> Result<Damage, DamageError> {
        let Some(db) = &self.db else {
            return Err(DamageError::NoDatabase);
        };
        let mut last = self.last.lock().await;
        if let Some((at, answer)) = last.as_ref() {
            if at.elapsed() < FRESH_FOR {
                return answer.clone();
            }
        }
        let (tx, rx) = oneshot::channel();
        let db = db.clone();
        let sent = self.home.spawn(async move {
            let _ = tx.send(missing::damage(&db).await);
        });
        let answer = match (sent, rx.await) {
            (true, Ok(Ok(damage))) => Ok(damage),
            (true, Ok(Err(error))) => {
                let error = DamageError::Database(error.to_string());
                tracing::warn!(%error, "the live page's damage totals are unavailable");
                Err(error)
            }
            _ => Err(DamageError::Stopping),
        };
        *last = Some((Instant::now(), answer.clone()));
        answer
    }
}
