//! GitLab's database: a connection pool, the migration, and one module per table family.
//! Connections are made in [`connect`] (libpq's `sslmode`/`sslrootcert`, TLS in [`tls`]).

pub mod connect;
pub mod projects;
pub mod schema;
pub mod switches;
mod tls;
pub mod tracking;
pub mod watermark;

use std::time::Duration;

use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::AsyncPgConnection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use futures_util::FutureExt;

pub use connect::Target;

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

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
    #[error("the tracking table container_registry_data_repair_details (or this version's registry_repair_watermarks) does not exist in {target}: run `registry-repair migrate` first")]
    NotMigrated { target: String },
    /// `database.url` cannot be used as it is (the cause names the key; exit status 2).
    #[error("reading the database settings")]
    Config(#[source] crate::config::ConfigError),
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
        let target = Target::parse(url).map_err(DbError::Config)?;
        let redacted = target.redacted().to_string();
        let mut manager_config = ManagerConfig::<AsyncPgConnection>::default();
        manager_config.custom_setup = Box::new(move |_url| {
            let target = target.clone();
            async move {
                connect::establish(&target)
                    .await
                    .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))
            }
            .boxed()
        });
        // The URL the manager keeps is only for show: `custom_setup` connects with `target`.
        let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(
            redacted.clone(),
            manager_config,
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .build()
            .map_err(|e| DbError::Connect {
                target: redacted.clone(),
                message: e.to_string(),
            })?;
        Ok(Self {
            pool,
            connect_timeout,
            target: redacted,
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
                    AND to_regclass('registry_repair_watermarks') IS NOT NULL AS present",
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

pub type DbConn = Object<AsyncPgConnection>;

/// Runs the pending migrations and returns their names. Gives up if no connection is made within
/// `connect_timeout`; the migration itself may take as long as it needs.
///
/// diesel's migration harness blocks on an async connection, which panics inside the actix System,
/// so it always runs on a thread of its own with a runtime of its own. All pending migrations run
/// in one transaction: through a pooler in transaction mode that keeps them on one server
/// connection, and anywhere it leaves nothing half-done.
pub fn migrate(url: &str, connect_timeout: Duration) -> Result<Vec<String>, DbError> {
    use diesel::Connection as _;
    use std::sync::mpsc;
    enum Progress {
        Connected,
        Done(Result<Vec<String>, String>),
    }
    let target = Target::parse(url).map_err(DbError::Config)?;
    let redacted = target.redacted().to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // A worker thread drives the connection while this thread blocks on the harness.
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                let _ = tx.send(Progress::Done(Err(format!("starting a runtime: {e}"))));
                return;
            }
        };
        let _entered = runtime.enter();
        let conn = match runtime.block_on(connect::establish(&target)) {
            Ok(conn) => conn,
            Err(e) => {
                let _ = tx.send(Progress::Done(Err(format!("connecting: {e}"))));
                return;
            }
        };
        // Inside the entered runtime the wrapper blocks on its handle, so the connection's driver
        // task keeps running on the worker thread.
        let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::from(conn);
        let _ = tx.send(Progress::Connected);
        let result = conn
            .transaction::<_, Box<dyn std::error::Error + Send + Sync>, _>(|conn| {
                Ok(conn
                    .run_pending_migrations(MIGRATIONS)?
                    .iter()
                    .map(|m| m.to_string())
                    .collect())
            })
            .map_err(|e| e.to_string());
        let _ = tx.send(Progress::Done(result));
    });
    let failed = |message: String| DbError::Migrate {
        target: redacted.clone(),
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
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "(unparsable database URL)".into(),
    }
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
