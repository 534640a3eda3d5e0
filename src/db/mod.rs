//! GitLab's database: a connection pool, the migration, and one module per table family.
//! Connections are made in [`connect`] (libpq's `sslmode`/`sslrootcert`, TLS in [`tls`]).

pub mod connect;
pub(crate) mod dsl;
pub mod failures;
pub mod fleet;
pub mod missing;
pub mod probe;
pub mod projects;
pub mod repair;
pub mod report;
pub(crate) mod schema;
pub(crate) mod switches;
mod tls;
pub mod tracking;
pub mod watermark;

use std::ops::DerefMut;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::config::Settings;

use diesel::pg::Pg;
use diesel::query_builder::{AsQuery, QueryFragment, QueryId};
use diesel::QueryResult;
use diesel::{ExpressionMethods, QueryDsl};
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{
    AnsiTransactionManager, AsyncConnectionCore, AsyncPgConnection, SimpleAsyncConnection,
    TransactionManager,
};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::{FutureExt, StreamExt, TryStreamExt};

pub use connect::{StatementMode, Statements, Target};

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(
        "cannot connect to the database at {target}: {message} ({})",
        where_the_url_comes_from(target)
    )]
    Connect { target: String, message: String },
    #[error(
        "{what}: {error}{}{}",
        connect::pooler_hint(&error.to_string()),
        if refuses_for_good(error) { GRANTS_HINT } else { "" }
    )]
    Query {
        what: String,
        error: diesel::result::Error,
    },
    /// A statement (or a transaction) that must not last longer than `after` did.
    #[error("{what}: no answer within {after:?}")]
    TimedOut { what: String, after: Duration },
    #[error("migrating the database at {target}: {message}")]
    Migrate { target: String, message: String },
    /// Migrations of this release have not run on the database (by name, oldest first).
    #[error(
        "{}: run `registry-repair migrate` first",
        not_migrated(target, pending)
    )]
    NotMigrated {
        target: String,
        pending: Vec<String>,
    },
    /// A repair's write found another run holding the repair lease (its own expired and was
    /// taken over): nothing more is written.
    #[error("{what}: this run no longer holds the repair lease ({holder} holds it now); stopping without writing more")]
    LeaseLost { what: String, holder: String },
    /// A repair's write found its lease's renewals lapsed (its own clock): another run may hold
    /// the lease by now, so the write rolled back.
    #[error("{what}: this run's repair lease was not renewed within {} s (half its life), so another run may hold it now; rolled back, writing nothing more", after.as_secs())]
    LeaseLapsed { what: String, after: Duration },
    /// `database.url` cannot be used as it is (the cause names the key; exit status 2).
    #[error("reading the database settings")]
    Config(#[source] crate::config::ConfigError),
}

/// Where `database.url` is set, for a connection error: the operator's next step.
fn where_the_url_comes_from(target: &str) -> String {
    match target == crate::config::DEFAULT_DATABASE_URL {
        true => "database.url is not set, so its default is used: set it in the --config file \
                 ([database] url) or in REGISTRY_REPAIR__DATABASE__URL"
            .to_string(),
        false => "database.url comes from the --config file ([database] url) or \
                  REGISTRY_REPAIR__DATABASE__URL"
            .to_string(),
    }
}

/// What a database not migrated lacks: the migrations by name, unless none has run.
fn not_migrated(target: &str, pending: &[String]) -> String {
    let known = migration_names().map_or(0, |names| names.len());
    match pending.len() == known {
        true => format!("no migration of this release has run on the database at {target}"),
        false => format!(
            "the database at {target} lacks {} of this release's migrations ({})",
            pending.len(),
            pending.join(", ")
        ),
    }
}

/// The pool's failure to connect in plain words: the connection's own error (the server's answer,
/// or why it could not be reached), without the pool's wrapping of it.
fn pool_failure(error: &diesel_async::pooled_connection::deadpool::PoolError) -> String {
    use diesel_async::pooled_connection::deadpool::PoolError as Pool;
    use diesel_async::pooled_connection::PoolError as Backend;
    match error {
        Pool::Backend(Backend::ConnectionError(diesel::ConnectionError::BadConnection(
            message,
        ))) => message.clone(),
        Pool::Backend(backend) => backend.to_string(),
        other => crate::errors::chain(other),
    }
}

/// What an operator does about a refusal no retry mends.
const GRANTS_HINT: &str = "; no retry mends this: check the database role's grants against \
                           docs/operations.md, \"Database grants\" (and docs/repair.md's for a \
                           repair)";

/// Whether PostgreSQL refused `error`'s statement for a reason that waiting does not mend: its
/// SQLSTATE class 42 (a privilege the role lacks, a table or column it cannot see). diesel keeps
/// the SQLSTATE of a few kinds only, and class 42 is not among them: it is told by PostgreSQL's
/// message, in English. A server whose `lc_messages` is another language has these retried.
fn refuses_for_good(error: &diesel::result::Error) -> bool {
    match error {
        diesel::result::Error::DatabaseError(kind, info) => lasting_refusal(kind, info.message()),
        _ => false,
    }
}

/// The messages of SQLSTATE 42501 (insufficient_privilege), 42P01 (undefined_table) and 42703
/// (undefined_column), for an error of a kind diesel does not name.
fn lasting_refusal(kind: &diesel::result::DatabaseErrorKind, message: &str) -> bool {
    let undefined = (message.starts_with("relation \"") || message.starts_with("column "))
        && message.ends_with(" does not exist");
    matches!(kind, diesel::result::DatabaseErrorKind::Unknown)
        && (message.starts_with("permission denied for ")
            || message.starts_with("must be owner of ")
            || undefined)
}

impl DbError {
    /// Whether the database refused a statement for a reason no retry mends: SQLSTATE class 42, a
    /// privilege the role lacks or a table or column it cannot see. A run that meets one ends
    /// instead of retrying it.
    pub fn lasts(&self) -> bool {
        match self {
            DbError::Query { error, .. } => refuses_for_good(error),
            _ => false,
        }
    }

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
    /// Where the pool connects, and the statement mode it settles on when it first does.
    connects_to: Target,
}

impl Database {
    /// The database `settings` name, with at most `pool_size` connections.
    pub fn for_settings(settings: &Settings, pool_size: usize) -> Result<Self, DbError> {
        Self::new(
            settings.database.url.expose(),
            pool_size,
            settings.database.connect_timeout,
        )
    }

    pub fn new(url: &str, pool_size: usize, connect_timeout: Duration) -> Result<Self, DbError> {
        let target = Target::parse(url).map_err(DbError::Config)?;
        Self::to_target(target, pool_size, connect_timeout)
    }

    /// A pool of `pool_size` connections of its own to the same database, with the statement mode
    /// this one settled on: for work that must never wait behind the others for a connection (a
    /// heartbeat, a lease's renewal).
    pub fn own_pool(&self, pool_size: usize) -> Result<Self, DbError> {
        Self::to_target(self.connects_to.clone(), pool_size, self.connect_timeout)
    }

    fn to_target(
        target: Target,
        pool_size: usize,
        connect_timeout: Duration,
    ) -> Result<Self, DbError> {
        let connects_to = target.clone();
        let redacted = target.redacted().to_string();
        let mut manager_config = ManagerConfig::<AsyncPgConnection>::default();
        // The first connection the pool makes settles the statement mode (probing for a pooler
        // unless `prepared_statements` says), and the others wait for it.
        manager_config.custom_setup = Box::new(move |_url| {
            let target = target.clone();
            async move {
                connect::establish(&target)
                    .await
                    .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))
            }
            .boxed()
        });
        // The default check prepares `SELECT 1`; the simple protocol prepares nothing, which
        // suits either mode (and the mode is not known before the first connection).
        manager_config.recycling_method = RecyclingMethod::CustomFunction(Box::new(|conn| {
            conn.batch_execute("SELECT 1").boxed()
        }));
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
            connects_to,
        })
    }

    /// Where this pool points, without a password: safe to log.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The statement mode its connections use, once the first one settled it.
    pub fn statement_mode(&self) -> Option<&StatementMode> {
        self.connects_to.statement_mode()
    }

    /// A pooled connection, or an error once `connect_timeout` has passed.
    pub async fn conn(&self) -> Result<DbConn, DbError> {
        match tokio::time::timeout(self.connect_timeout, self.pool.get()).await {
            Ok(Ok(conn)) => {
                // Settled when `conn` was made: this does not wait.
                let statements =
                    self.connects_to
                        .statements()
                        .await
                        .map_err(|e| DbError::Connect {
                            target: self.target.clone(),
                            message: e.to_string(),
                        })?;
                Ok(DbConn::new(conn, statements))
            }
            Ok(Err(e)) => Err(DbError::Connect {
                target: self.target.clone(),
                message: pool_failure(&e),
            }),
            Err(_) => Err(DbError::Connect {
                target: self.target.clone(),
                message: format!("no connection within {:?}", self.connect_timeout),
            }),
        }
    }

    /// The migrations of this release that have not run on the database, by name, oldest first:
    /// those diesel's table of what ran (`__diesel_schema_migrations`) does not name. Read, not
    /// as diesel's migration harness would: it creates that table first, which a standby, a
    /// read-only role or one without CREATE on the schema refuses.
    pub async fn pending_migrations(&self) -> Result<Vec<String>, DbError> {
        use diesel_async::RunQueryDsl;

        let mut conn = self.conn().await?;
        let what = "reading which migrations have run";
        let ran: Vec<String> = match diesel::select(dsl::to_regclass(RAN).is_not_null())
            .get_result(&mut conn)
            .await
            .map_err(DbError::query(what))?
        {
            true => schema_migrations::table
                .select(schema_migrations::version)
                .load(&mut conn)
                .await
                .map_err(DbError::query(what))?,
            false => Vec::new(),
        };
        let known = migration_names().map_err(|message| DbError::Migrate {
            target: self.target.clone(),
            message,
        })?;
        Ok(known
            .into_iter()
            .filter(|(version, _)| !ran.contains(version))
            .map(|(_, name)| name)
            .collect())
    }

    /// Checks that every migration of this release ran, so that a command fails early and
    /// clearly, naming what to run.
    pub async fn check_ready(&self) -> Result<(), DbError> {
        let pending = self.pending_migrations().await?;
        match pending.is_empty() {
            true => Ok(()),
            false => Err(DbError::NotMigrated {
                target: self.target.clone(),
                pending,
            }),
        }
    }
}

/// diesel's table of the migrations that ran, as `run_pending_migrations` keeps it.
const RAN: &str = "__diesel_schema_migrations";

diesel::table! {
    #[sql_name = "__diesel_schema_migrations"]
    schema_migrations (version) {
        version -> VarChar,
    }
}

/// This release's migrations as `(version, name)`, oldest first: diesel's table of what ran
/// records versions (`20261125000000`); people know them by name.
fn migration_names() -> Result<Vec<(String, String)>, String> {
    let mut known: Vec<(String, String)> =
        diesel::migration::MigrationSource::<Pg>::migrations(&MIGRATIONS)
            .map_err(|e| format!("reading this release's migrations: {e}"))?
            .iter()
            .map(|m| (m.name().version().to_string(), m.name().to_string()))
            .collect();
    known.sort();
    Ok(known)
}

type PgRow = <AsyncPgConnection as AsyncConnectionCore>::Row<'static, 'static>;
type RowStream = BoxStream<'static, QueryResult<PgRow>>;

/// How long a transaction of [`DbConn::transaction`] may sit idle between its statements before
/// the server ends the session: ours send theirs back to back, so only a process that stopped
/// (frozen, swapped out, killed by the kernel without its socket closing) leaves one idle, and
/// the rows it locked (the fleet's pass, its switches) must not stay locked for ever. Set with
/// the BEGIN, in the same round trip, for that transaction only (a pooler's server connection
/// keeps no trace of it).
const IDLE_BOUND: &str = "SET LOCAL idle_in_transaction_session_timeout = '5s'";

/// A connection from the pool. Queries run on it as on an `AsyncPgConnection`.
///
/// With [`Statements::PerTransaction`] every statement runs inside a transaction, so that the
/// statement tokio-postgres prepares for it is prepared, bound and closed on one server connection
/// even behind a pooler that hands out a server connection per transaction:
/// - BEGIN goes out with the first statement, with DEALLOCATE ALL ([`connect::BEGIN_CLEAN`]) for
///   what other clients left on the server connection;
/// - a write (`execute`, or one with `RETURNING`) commits at once, and its error is the caller's;
/// - after a read the transaction stays open: the rows returned still hold the prepared
///   statement, which is closed when they are dropped, so COMMIT follows when this connection
///   goes back to the pool (or at the next write), after the close. A read-only transaction
///   has nothing to lose if that COMMIT fails, and the next user's messages queue behind it.
pub struct DbConn<C = Object<AsyncPgConnection>>
where
    C: DerefMut<Target = AsyncPgConnection> + Send + Sync,
{
    inner: C,
    statements: Statements,
    /// BEGIN sent, no COMMIT or ROLLBACK since.
    open: AtomicBool,
    /// A statement or transaction command whose answer has not been read (or that failed).
    unsettled: AtomicBool,
}

/// A connection of its own, outside the pool (tools, the demo's set-up), with the same statement
/// mode.
pub type SingleConn = DbConn<Box<AsyncPgConnection>>;

impl<C> DbConn<C>
where
    C: DerefMut<Target = AsyncPgConnection> + Send + Sync,
{
    fn new(inner: C, statements: Statements) -> Self {
        Self {
            inner,
            statements,
            open: AtomicBool::new(false),
            unsettled: AtomicBool::new(false),
        }
    }

    fn in_own_transactions(&mut self) -> bool {
        self.statements == Statements::PerTransaction
            // Inside a diesel transaction the statement already shares one.
            && matches!(
                AnsiTransactionManager::transaction_manager_status_mut(&mut *self.inner)
                    .transaction_depth(),
                Ok(None)
            )
    }

    /// Runs `work` (whose first poll sends its first message) inside the transaction, opening it
    /// with a BEGIN sent just before `work`'s first message if none is open; ends it with
    /// ROLLBACK on error, or COMMIT when `commit`.
    async fn transacted<R>(
        &self,
        work: impl std::future::Future<Output = QueryResult<R>>,
        commit: bool,
    ) -> QueryResult<R> {
        let conn: &AsyncPgConnection = &self.inner;
        self.unsettled.store(true, Ordering::SeqCst);
        let result = if self.open.load(Ordering::SeqCst) {
            work.await
        } else {
            let mut begin_on = conn;
            let (begun, result) =
                futures_util::future::join(begin_on.batch_execute(connect::BEGIN_CLEAN), work)
                    .await;
            // If BEGIN failed, `work` ran outside a transaction (if at all): `unsettled` stays
            // set and the connection is not used again.
            begun?;
            self.open.store(true, Ordering::SeqCst);
            result
        };
        let end = match (&result, commit) {
            (Err(_), _) => Some("ROLLBACK"),
            (Ok(_), true) => Some("COMMIT"),
            (Ok(_), false) => None,
        };
        if let Some(end) = end {
            let mut end_on = conn;
            // A failed COMMIT or ROLLBACK leaves `unsettled` set: the connection is not reused.
            end_on.batch_execute(end).await?;
            self.open.store(false, Ordering::SeqCst);
        }
        self.unsettled.store(false, Ordering::SeqCst);
        result
    }
}

impl<C> DbConn<C>
where
    C: DerefMut<Target = AsyncPgConnection> + Send + Sync,
{
    /// Runs `work` in one transaction of its own: BEGIN, `work`'s statements, then COMMIT, or
    /// ROLLBACK when it fails. Every statement of `work` shares the transaction, in either
    /// [`Statements`] mode (so behind a pooler in transaction mode too). A cancelled or failed
    /// transaction leaves the connection marked broken, so the pool never hands it out again.
    pub async fn transaction<R, F>(&mut self, work: F) -> Result<R, DbError>
    where
        F: for<'r> FnOnce(&'r mut Self) -> BoxFuture<'r, Result<R, DbError>>,
    {
        if *self.open.get_mut() {
            // A read of `Statements::PerTransaction` left its transaction open: end it first.
            self.inner
                .batch_execute("COMMIT")
                .await
                .map_err(DbError::query("ending the previous read's transaction"))?;
            *self.open.get_mut() = false;
        }
        *self.unsettled.get_mut() = true;
        let begin = match self.statements {
            Statements::Prepared => format!("BEGIN; {IDLE_BOUND}"),
            Statements::PerTransaction => format!("{}; {IDLE_BOUND}", connect::BEGIN_CLEAN),
        };
        let begun = AnsiTransactionManager::begin_transaction_sql(&mut *self.inner, &begin).await;
        begun.map_err(DbError::query("beginning a transaction"))?;
        let result = work(self).await;
        match result {
            Ok(value) => {
                AnsiTransactionManager::commit_transaction(&mut *self.inner)
                    .await
                    .map_err(DbError::query("committing a transaction"))?;
                *self.unsettled.get_mut() = false;
                Ok(value)
            }
            Err(error) => {
                if AnsiTransactionManager::rollback_transaction(&mut *self.inner)
                    .await
                    .is_ok()
                {
                    *self.unsettled.get_mut() = false;
                }
                Err(error)
            }
        }
    }
}

impl<C> Drop for DbConn<C>
where
    C: DerefMut<Target = AsyncPgConnection> + Send + Sync,
{
    fn drop(&mut self) {
        if *self.unsettled.get_mut() {
            // A cancelled or failed statement: what the session holds is unknown (a statement
            // prepared but never closed, a transaction), so the pool must not hand it out again.
            AnsiTransactionManager::transaction_manager_status_mut(&mut *self.inner).set_in_error();
        } else if *self.open.get_mut() {
            // Only reads since the last write: queue the COMMIT without waiting for its answer.
            // tokio-postgres writes a request to its queue on the first poll, so it goes out
            // before anything the next user of this connection sends.
            let mut conn: &AsyncPgConnection = &self.inner;
            let _ = conn.batch_execute("COMMIT").now_or_never();
        }
    }
}

impl<C> SimpleAsyncConnection for DbConn<C>
where
    C: DerefMut<Target = AsyncPgConnection> + Send + Sync,
{
    // The simple query protocol prepares nothing: safe behind any pooler as it is.
    async fn batch_execute(&mut self, query: &str) -> QueryResult<()> {
        self.inner.batch_execute(query).await
    }
}

impl<C> AsyncConnectionCore for DbConn<C>
where
    C: DerefMut<Target = AsyncPgConnection> + Send + Sync,
{
    type ExecuteFuture<'conn, 'query> = BoxFuture<'conn, QueryResult<usize>>;
    type LoadFuture<'conn, 'query> = BoxFuture<'conn, QueryResult<RowStream>>;
    type Stream<'conn, 'query> = RowStream;
    type Row<'conn, 'query> = PgRow;
    type Backend = Pg;

    fn load<'conn, 'query, T>(&'conn mut self, source: T) -> Self::LoadFuture<'conn, 'query>
    where
        T: AsQuery + 'query,
        T::Query: QueryFragment<Self::Backend> + QueryId + 'query,
    {
        if !self.in_own_transactions() {
            return AsyncConnectionCore::load(&mut *self.inner, source);
        }
        let query = source.as_query();
        // A write that returns rows (`RETURNING`) commits before it returns, as `execute` does:
        // a later statement on another connection must see it. Its statement is closed after
        // the COMMIT, which is harmless: every transaction of ours deallocates at BEGIN.
        let commit = match writes(&query) {
            Ok(commit) => commit,
            Err(error) => return futures_util::future::ready(Err(error)).boxed(),
        };
        let this: &'conn Self = self;
        let mut shared: &'conn AsyncPgConnection = &this.inner;
        let query = AsyncConnectionCore::load(&mut shared, query);
        let read = async move {
            // Every row is read while the statement is known to be in flight.
            let rows: Vec<PgRow> = query.await?.try_collect().await?;
            Ok(futures_util::stream::iter(rows.into_iter().map(Ok)).boxed())
        };
        this.transacted(read, commit).boxed()
    }

    fn execute_returning_count<'conn, 'query, T>(
        &'conn mut self,
        source: T,
    ) -> Self::ExecuteFuture<'conn, 'query>
    where
        T: QueryFragment<Self::Backend> + QueryId + 'query,
    {
        if !self.in_own_transactions() {
            return AsyncConnectionCore::execute_returning_count(&mut *self.inner, source);
        }
        let this: &'conn Self = self;
        let mut shared: &'conn AsyncPgConnection = &this.inner;
        let execute = AsyncConnectionCore::execute_returning_count(&mut shared, source);
        // The statement is closed when `execute` returns, before the COMMIT.
        this.transacted(execute, true).boxed()
    }
}

/// Whether `query` may write: anything but a plain `SELECT` (a `WITH` may hold a write).
fn writes(query: &impl QueryFragment<Pg>) -> QueryResult<bool> {
    let mut sql = diesel::pg::PgQueryBuilder::default();
    query.to_sql(&mut sql, &Pg)?;
    let sql = diesel::query_builder::QueryBuilder::finish(sql);
    let first = sql.split_whitespace().next().unwrap_or_default();
    Ok(!first.eq_ignore_ascii_case("SELECT"))
}

/// The tracking table GitLab's 15.10 to 19.0 create themselves.
pub const TRACKING_TABLE: &str = "container_registry_data_repair_details";
/// The migration that creates it where GitLab has not.
pub const TRACKING_MIGRATION: &str = "2026-11-25-000000_create_tracking_table";

/// What [`migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    /// The migrations it ran, by name, oldest first.
    pub applied: Vec<String>,
    /// The migrations this release has in all.
    pub known: usize,
    /// Whether GitLab's tracking table was there before it ran.
    pub tracking_table_was_there: bool,
}

/// Runs the pending migrations and says which, and whether the tracking table was there before.
/// Gives up if no connection is made within `connect_timeout`; the migration itself may take as
/// long as it needs.
///
/// diesel's migration harness blocks on an async connection, which panics inside the actix System,
/// so it always runs on a thread of its own with a runtime of its own. All pending migrations run
/// in one transaction: through a pooler in transaction mode that keeps them on one server
/// connection, and anywhere it leaves nothing half-done. The statement mode is settled first, as
/// for the pool; in [`Statements::PerTransaction`] the transaction starts with DEALLOCATE ALL.
pub fn migrate(url: &str, connect_timeout: Duration) -> Result<Migrated, DbError> {
    use diesel::Connection as _;
    use diesel::RunQueryDsl as _;
    use std::sync::mpsc;
    enum Progress {
        Connected,
        Done(Result<Migrated, String>),
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
        let connected = runtime.block_on(async {
            let conn = connect::establish(&target).await?;
            Ok::<_, connect::ConnectError>((conn, target.statements().await?))
        });
        let (conn, statements) = match connected {
            Ok(connected) => connected,
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
                if statements == Statements::PerTransaction {
                    // As `connect::BEGIN_CLEAN` does, right after diesel's BEGIN.
                    diesel::connection::SimpleConnection::batch_execute(conn, "DEALLOCATE ALL")?;
                }
                // In the same transaction as the migrations: what they found, not a guess.
                let there: bool = diesel::select(dsl::to_regclass(TRACKING_TABLE).is_not_null())
                    .get_result(conn)?;
                let names: std::collections::HashMap<String, String> =
                    migration_names()?.into_iter().collect();
                let applied = conn.run_pending_migrations(MIGRATIONS)?;
                Ok(Migrated {
                    applied: applied
                        .iter()
                        .map(|version| {
                            let version = version.to_string();
                            names.get(&version).cloned().unwrap_or(version)
                        })
                        .collect(),
                    known: names.len(),
                    tracking_table_was_there: there,
                })
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
    crate::redact::url(url).unwrap_or_else(|| "(unparsable database URL)".into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_class_42_refusals_last() {
        use diesel::result::DatabaseErrorKind as Kind;
        let lasts = [
            "permission denied for sequence registry_repair_claims_id_seq",
            "permission denied for table __diesel_schema_migrations",
            "must be owner of table registry_repair_claims",
            "relation \"registry_repair_claims\" does not exist",
            "column \"pass\" of relation \"registry_repair_claims\" does not exist",
            "column registry_repair_claims.pass does not exist",
        ];
        for message in lasts {
            assert!(super::lasting_refusal(&Kind::Unknown, message), "{message}");
        }
        let passes = [
            (
                Kind::Unknown,
                "terminating connection due to administrator command",
            ),
            (
                Kind::Unknown,
                "canceling statement due to statement timeout",
            ),
            (Kind::Unknown, "deadlock detected"),
            (
                Kind::Unknown,
                "could not open file \"base/1/2\": Permission denied",
            ),
            (
                Kind::SerializationFailure,
                "could not serialize access due to concurrent update",
            ),
            (
                Kind::ReadOnlyTransaction,
                "cannot execute INSERT in a read-only transaction",
            ),
            (Kind::ClosedConnection, "connection closed"),
            (Kind::UnableToSendCommand, "permission denied for table x"),
        ];
        for (kind, message) in passes {
            assert!(!super::lasting_refusal(&kind, message), "{message}");
        }
    }

    #[test]
    fn a_lasting_refusal_says_to_check_the_grants() {
        let refused = super::DbError::Query {
            what: "claiming projects".into(),
            error: diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::Unknown,
                Box::new(
                    "permission denied for sequence registry_repair_claims_id_seq".to_string(),
                ),
            ),
        };
        assert!(refused.lasts());
        let message = refused.to_string();
        assert!(
            message.starts_with(
                "claiming projects: permission denied for sequence registry_repair_claims_id_seq; \
                 no retry mends this: check the database role's grants"
            ),
            "{message}"
        );
        assert!(message.contains("\"Database grants\""), "{message}");
        let lost = super::DbError::Query {
            what: "claiming projects".into(),
            error: diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::ClosedConnection,
                Box::new("connection closed".to_string()),
            ),
        };
        assert!(!lost.lasts());
        assert!(!lost.to_string().contains("grants"));
    }

    #[test]
    fn redact_hides_passwords_only() {
        assert_eq!(
            super::redact("postgres://u:secret@db:5432/x"),
            "postgres://u:***@db:5432/x"
        );
        assert_eq!(super::redact("postgres://u@db/x"), "postgres://u@db/x");
    }

    #[test]
    fn not_migrated_names_the_migrations_missing_unless_none_ran() {
        let names: Vec<String> = super::migration_names()
            .expect("this release's migrations")
            .into_iter()
            .map(|(_, name)| name)
            .collect();
        let error = |pending: &[String]| {
            super::DbError::NotMigrated {
                target: "postgres://db/x".into(),
                pending: pending.to_vec(),
            }
            .to_string()
        };
        assert_eq!(
            error(&names),
            "no migration of this release has run on the database at postgres://db/x: run \
             `registry-repair migrate` first"
        );
        let last = &names[names.len() - 1..];
        assert_eq!(
            error(last),
            format!(
                "the database at postgres://db/x lacks 1 of this release's migrations ({}): run \
                 `registry-repair migrate` first",
                last[0]
            )
        );
    }
}
