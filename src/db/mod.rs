//! GitLab's database: a connection pool, the migration, and one module per table family.

pub mod projects;
pub mod schema;
pub mod switches;
pub mod tracking;
pub mod watermark;

use std::time::Duration;

use diesel::Connection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::AsyncPgConnection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

pub type DbConn = Object<AsyncPgConnection>;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("connecting to the database at {target}: {message}")]
    Connect { target: String, message: String },
    #[error("{what}: {error}")]
    Query {
        what: String,
        error: diesel::result::Error,
    },
    #[error("migrating the database at {target}: {message}")]
    Migrate { target: String, message: String },
    #[error("the tracking table container_registry_data_repair_details (or this version's registry_repair_watermarks) does not exist or is not up to date in {target}: run `registry-repair migrate` first")]
    NotMigrated { target: String },
}

impl DbError {
    pub fn query(what: impl Into<String>) -> impl FnOnce(diesel::result::Error) -> DbError {
        let what = what.into();
        move |error| DbError::Query { what, error }
    }
}

/// A pool of connections to GitLab's database. Cheap to clone; belongs to the runtime that uses it.
#[derive(Clone)]
pub struct Database {
    pool: Pool<AsyncPgConnection>,
    connect_timeout: Duration,
    target: String,
}

impl Database {
    pub fn new(url: &str, pool_size: usize, connect_timeout: Duration) -> Result<Self, DbError> {
        let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(url);
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .build()
            .map_err(|e| DbError::Connect {
                target: redact(url),
                message: e.to_string(),
            })?;
        Ok(Self {
            pool,
            connect_timeout,
            target: redact(url),
        })
    }

    /// Where this pool points, without a password: safe to log.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// A pooled connection, or an error once `connect_timeout` has passed.
    pub async fn conn(&self) -> Result<DbConn, DbError> {
        match tokio::time::timeout(self.connect_timeout, self.pool.get()).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(DbError::Connect {
                target: self.target.clone(),
                message: crate::errors::chain(&e),
            }),
            Err(_) => Err(DbError::Connect {
                target: self.target.clone(),
                message: format!("no connection within {:?}", self.connect_timeout),
            }),
        }
    }

    /// Connects once and checks that the migrations ran, so `run` fails early and clearly.
    pub async fn check_ready(&self) -> Result<(), DbError> {
        use diesel::sql_types::Bool;
        use diesel_async::RunQueryDsl;

        #[derive(diesel::QueryableByName)]
        struct Exists {
            #[diesel(sql_type = Bool)]
            present: bool,
        }
        let mut conn = self.conn().await?;
        let row: Exists = diesel::sql_query(
            "SELECT to_regclass('container_registry_data_repair_details') IS NOT NULL \
                    AND to_regclass('registry_repair_watermarks') IS NOT NULL \
                    AND EXISTS (SELECT 1 FROM pg_attribute \
                                WHERE attrelid = to_regclass('registry_repair_watermarks') \
                                  AND attname = 'swept_at' AND NOT attisdropped) AS present",
        )
        .get_result(&mut conn)
        .await
        .map_err(DbError::query("checking for the tracking table"))?;
        if row.present {
            Ok(())
        } else {
            Err(DbError::NotMigrated {
                target: self.target.clone(),
            })
        }
    }
}

/// Runs the pending migrations and returns their names. Gives up if no connection is made within
/// `connect_timeout`; the migration itself may take as long as it needs.
///
/// diesel's migration harness blocks on an async connection, which panics inside the actix System,
/// so it always runs on a thread of its own with a runtime of its own.
pub fn migrate(url: &str, connect_timeout: Duration) -> Result<Vec<String>, DbError> {
    use std::sync::mpsc;
    enum Progress {
        Connected,
        Done(Result<Vec<String>, String>),
    }
    let target = redact(url);
    let url = url.to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut conn = match AsyncConnectionWrapper::<AsyncPgConnection>::establish(&url) {
            Ok(conn) => conn,
            Err(e) => {
                let _ = tx.send(Progress::Done(Err(format!(
                    "connecting: {}",
                    crate::errors::chain(&e)
                ))));
                return;
            }
        };
        let _ = tx.send(Progress::Connected);
        let result = conn
            .run_pending_migrations(MIGRATIONS)
            .map(|applied| applied.iter().map(|m| m.to_string()).collect())
            .map_err(|e| e.to_string());
        let _ = tx.send(Progress::Done(result));
    });
    let failed = |message: String| DbError::Migrate {
        target: target.clone(),
        message,
    };
    match rx.recv_timeout(connect_timeout) {
        Ok(Progress::Connected) => {}
        Ok(Progress::Done(result)) => return result.map_err(failed),
        Err(mpsc::RecvTimeoutError::Timeout) => {
            return Err(failed(format!("no connection within {connect_timeout:?}")))
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            return Err(failed("the migration thread panicked".into()))
        }
    }
    match rx.recv() {
        Ok(Progress::Done(result)) => result.map_err(failed),
        _ => Err(failed("the migration thread panicked".into())),
    }
}

/// A database URL without its password, for messages and logs.
pub fn redact(url: &str) -> String {
    crate::redact::url(url).unwrap_or_else(|| "(unparsable database URL)".into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn redact_hides_passwords_only() {
        assert_eq!(
            super::redact("postgres://u:secret@db:5432/x"),
            "postgres://u:***@db:5432/x"
        );
        assert_eq!(super::redact("postgres://u@db/x"), "postgres://u@db/x");
    }
}
