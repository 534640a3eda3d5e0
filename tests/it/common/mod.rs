//! Shared test support: a fresh PostgreSQL database per test, copied from a template that was
//! migrated once ([`TestDb`]); the simulated registry trusting the fixture key; and [`TestApp`],
//! which seeds a world into both and starts the whole service in-process against them.

pub mod chromium;
pub mod daemon;
pub mod distribution;
pub mod logs;
pub mod pgbouncer;
pub mod process;
pub mod tool;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use registry_repair::analysis::Analysis;
use registry_repair::config::Settings;
use registry_repair::db::tracking::TrackingStatus;
use registry_repair::db::tracking::{self, TrackingRow};
use registry_repair::db::{self, Database};
use registry_repair::demo::database::{database_url, load_gitlab_schema, GITLAB_SCHEMA};
use registry_repair::demo::seed::{Expected, World};
use registry_repair::faults::Faults;
use registry_repair::registry::simulator::{size_of, RegistrySimulator, TrustedIssuer};
use registry_repair::registry::TokenSigner;
use registry_repair::scheduler::{GetStatus, RunEnd, SchedulerAddr, ServiceStatus};
use registry_repair::service::{self, Service, ServiceOptions};
use registry_repair::work::Work;
use tokio::sync::OnceCell;

pub const FIXTURE_KEY: &str = include_str!("../../fixtures/registry.key");
pub const OTHER_KEY: &str = include_str!("../../fixtures/other.key");
pub const ISSUER: &str = "gitlab-issuer";
pub const AUDIENCE: &str = "container_registry";

/// The PostgreSQL server the tests use; `TEST_DATABASE_SERVER` overrides it.
pub fn server_url() -> String {
    std::env::var("TEST_DATABASE_SERVER")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn fixture_key_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/registry.key")
}

pub fn signer(pem: &str) -> Arc<TokenSigner> {
    Arc::new(
        TokenSigner::from_pem(pem, "fixture", ISSUER, AUDIENCE, Duration::from_secs(300))
            .expect("fixture key parses"),
    )
}

pub fn trusted() -> TrustedIssuer {
    let s = signer(FIXTURE_KEY);
    TrustedIssuer {
        public_key_pem: s.public_key_pem().to_string(),
        kid: s.kid().to_string(),
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
    }
}

pub async fn run_on(url: &str, sql: &str) {
    let mut conn = AsyncPgConnection::establish(url)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    conn.batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("running `{sql}`: {e}"));
}

/// The template's name changes whenever GitLab's schema or the migrations change.
fn template_name() -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    GITLAB_SCHEMA.hash(&mut h);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("migrations directory")
        .filter_map(Result::ok)
        .map(|e| e.path().join("up.sql"))
        .collect();
    files.sort();
    for file in files {
        file.hash(&mut h);
        std::fs::read_to_string(&file)
            .unwrap_or_default()
            .hash(&mut h);
    }
    format!("rr_tpl_{:012x}", h.finish() & 0xffff_ffff_ffff)
}

static TEMPLATE: OnceCell<String> = OnceCell::const_new();
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Creates the template once per machine (under an advisory lock, since test binaries run in
/// parallel) and sweeps databases left by test processes that no longer exist.
async fn template() -> String {
    TEMPLATE
        .get_or_init(|| async {
            let name = template_name();
            let server = server_url();
            let mut conn = AsyncPgConnection::establish(&server)
                .await
                .unwrap_or_else(|e| panic!("connecting to {server}: {e} (is PostgreSQL running?)"));
            conn.batch_execute("SELECT pg_advisory_lock(727274)")
                .await
                .expect("advisory lock");
            let exists = database_exists(&mut conn, &name).await;
            if !exists {
                let building = format!("{name}_building");
                for sql in [
                    format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)"),
                    format!("CREATE DATABASE {building}"),
                ] {
                    conn.batch_execute(&sql).await.expect("create template");
                }
                let url = database_url(&server, &building).expect("url");
                load_gitlab_schema(&url).await.expect("GitLab schema");
                db::migrate(&url, Duration::from_secs(10)).expect("migrations");
                conn.batch_execute(&format!("ALTER DATABASE {building} RENAME TO {name}"))
                    .await
                    .expect("rename template");
            }
            sweep_leftovers(&mut conn).await;
            conn.batch_execute("SELECT pg_advisory_unlock(727274)")
                .await
                .expect("advisory unlock");
            name
        })
        .await
        .clone()
}

async fn database_exists(conn: &mut AsyncPgConnection, name: &str) -> bool {
    use diesel::sql_types::{BigInt, Text};
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let c: Count = diesel::sql_query("SELECT count(*) AS n FROM pg_database WHERE datname = $1")
        .bind::<Text, _>(name)
        .get_result(conn)
        .await
        .expect("pg_database");
    c.n > 0
}

async fn sweep_leftovers(conn: &mut AsyncPgConnection) {
    use diesel::sql_types::Text;
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Name {
        #[diesel(sql_type = Text)]
        datname: String,
    }
    let names: Vec<Name> =
        diesel::sql_query("SELECT datname FROM pg_database WHERE datname LIKE 'rr_test_%'")
            .load(conn)
            .await
            .expect("list test databases");
    for Name { datname } in names {
        let pid = datname
            .split('_')
            .nth(2)
            .and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            let _ = conn
                .batch_execute(&format!("DROP DATABASE IF EXISTS {datname} WITH (FORCE)"))
                .await;
        }
    }
}

/// The cluster's oldest running transaction (`xmin`) holds back the watermark of every database on
/// it (src/db/watermark.rs), and the tests of all modules run at once in this process: while one
/// test keeps a transaction open, or creates or drops a database (each a transaction, with a
/// checkpoint: seconds under load), no other test's watermark moves. Those hold this exclusively
/// (`TestDb` does, around CREATE and DROP DATABASE); a test that needs its watermark to move holds
/// it shared. Either takes it once its databases exist, and declares the guard after them, so that
/// it is released before they are dropped.
static XMIN: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Held for as long as a test keeps a transaction open (see `XMIN`).
pub async fn keeping_a_transaction_open() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    XMIN.write().await
}

/// Held by a test that needs its watermark to move (see `XMIN`).
pub async fn needing_the_watermark_to_move() -> tokio::sync::RwLockReadGuard<'static, ()> {
    XMIN.read().await
}

/// A database of this test's own, with GitLab's tables and the tracking table; dropped on drop.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn new() -> Self {
        let db = Self::unborn();
        db.create().await;
        db
    }

    /// A fresh name and its URL, without the database (for a test whose binary makes it, as
    /// the demo does); dropped on drop all the same. `create` makes it from the template.
    pub fn unborn() -> Self {
        let name = format!(
            "rr_test_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let url = database_url(&server_url(), &name).expect("url");
        Self { name, url }
    }

    /// Creates the database from the migrated template.
    async fn create(&self) {
        let _xmin = XMIN.write().await;
        let template = template().await;
        let name = &self.name;
        run_on(
            &server_url(),
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        )
        .await;
        run_on(
            &server_url(),
            &format!("CREATE DATABASE {name} TEMPLATE {template}"),
        )
        .await;
    }

    /// A database outage: new connections are refused and the open ones are cut.
    pub async fn refuse_connections(&self) {
        let name = &self.name;
        run_on(
            &server_url(),
            &format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"),
        )
        .await;
        run_on(
            &server_url(),
            &format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
            ),
        )
        .await;
    }

    /// The end of the outage.
    pub async fn allow_connections(&self) {
        let name = &self.name;
        run_on(
            &server_url(),
            &format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"),
        )
        .await;
    }

    /// A database with GitLab's tables but without the tracking table (for migration tests).
    pub async fn without_tracking_table() -> Self {
        let db = Self::new().await;
        db.execute(
            "DROP TABLE container_registry_data_repair_details; DROP TABLE registry_repair_watermarks; \
             DROP TABLE __diesel_schema_migrations",
        )
        .await;
        db
    }

    pub fn database(&self) -> Database {
        Database::new(&self.url, 4, Duration::from_secs(5)).expect("pool")
    }

    pub async fn execute(&self, sql: &str) {
        run_on(&self.url, sql).await;
    }

    /// Whether the tracking table holds at least `at_least` rows within `within`.
    pub async fn wait_for_rows(&self, at_least: usize, within: Duration) -> bool {
        eventually(within, || async { self.rows().await.len() >= at_least }).await
    }

    pub async fn rows(&self) -> Vec<TrackingRow> {
        tracking::all_rows(&self.database()).await.expect("rows")
    }

    /// Every row of the service's `registry_repair_failures`, as `(project_id, cause, reason)`
    /// in project order, whatever its tracking row says now.
    pub async fn failure_rows(&self) -> Vec<(i64, String, String)> {
        use diesel::sql_types::{BigInt, Text};
        use diesel_async::RunQueryDsl;
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = BigInt)]
            project_id: i64,
            #[diesel(sql_type = Text)]
            cause: String,
            #[diesel(sql_type = Text)]
            reason: String,
        }
        let mut conn = AsyncPgConnection::establish(&self.url)
            .await
            .expect("connecting to the test database");
        let rows: Vec<Row> = diesel::sql_query(
            "SELECT project_id, cause, reason FROM registry_repair_failures ORDER BY project_id",
        )
        .load(&mut conn)
        .await
        .expect("reading registry_repair_failures");
        rows.into_iter()
            .map(|r| (r.project_id, r.cause, r.reason))
            .collect()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime: do the async work on a thread of its own.
        let _ = std::thread::spawn(move || {
            let _xmin = XMIN.blocking_write();
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(async {
                    if let Ok(mut conn) = AsyncPgConnection::establish(&server_url()).await {
                        let _ = conn
                            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                            .await;
                    }
                });
            }
        })
        .join();
    }
}

/// Settings pointing at `db` and `registry`, tuned for quick tests.
pub fn settings_for(db: &TestDb, registry_url: &str) -> Settings {
    let mut s = Settings::default();
    s.database.url = db.url.clone().parse().expect("a database URL");
    s.database.pool_size = 4;
    s.registry.url = registry_url.parse().expect("a registry URL");
    s.registry.key_path = Some(fixture_key_path());
    s.registry.timeout = Duration::from_millis(5000);
    s.admin.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    s.writer.flush_interval = Duration::from_millis(50);
    s.worker.rescan_interval = Duration::from_secs(1);
    s.worker.shutdown_timeout = Duration::from_secs(10);
    s
}

/// The world seeded into a fresh database, a simulated registry serving it, and the service.
pub struct TestApp {
    pub db: TestDb,
    pub registry: RegistrySimulator,
    pub settings: Settings,
    pub faults: Arc<Faults>,
    /// Signs the service's tokens; counts them.
    pub signer: Arc<TokenSigner>,
    pub service: Option<Service<Analysis>>,
}

impl TestApp {
    /// Seeds `world` and starts the registry, but not the service.
    pub async fn prepare(world: &World) -> Self {
        let db = TestDb::new().await;
        world.insert(&db.database()).await.expect("seeding");
        let registry =
            RegistrySimulator::start(world.registry_paths(), trusted(), 0).expect("registry");
        let settings = settings_for(&db, &registry.url());
        Self {
            db,
            registry,
            settings,
            faults: Arc::new(Faults::default()),
            signer: signer(FIXTURE_KEY),
            service: None,
        }
    }

    pub async fn start(&mut self, until_done: bool) {
        let analysis = Analysis {
            until_done,
            ..Analysis::new(&self.settings)
        };
        let options = ServiceOptions {
            faults: self.faults.clone(),
            ..ServiceOptions::default()
        };
        let service = service::start(&self.settings, self.signer.clone(), analysis, options)
            .await
            .expect("service starts");
        self.service = Some(service);
    }

    pub fn service(&self) -> &Service<Analysis> {
        self.service.as_ref().expect("service started")
    }

    /// Asks the running service to stop (as SIGTERM does) and waits for it to end.
    pub async fn stop(&mut self) -> RunEnd {
        let service = self.service.take().expect("service started");
        service.shutdown();
        service.wait().await
    }

    /// Waits for the running service to end by itself (within 60 s).
    pub async fn run_to_end(&mut self) -> RunEnd {
        run_to_end(self.service.take().expect("service started")).await
    }

    /// Runs the service until every project has a row (or 60 s pass).
    pub async fn run_until_done(&mut self) -> RunEnd {
        self.start(true).await;
        self.run_to_end().await
    }

    /// The running service's status.
    pub async fn status(&self) -> ServiceStatus {
        self.service()
            .scheduler
            .send(GetStatus)
            .await
            .expect("the scheduler answers")
    }

    /// Rows keyed by project.
    pub async fn rows_by_project(&self) -> HashMap<i64, TrackingRow> {
        self.db
            .rows()
            .await
            .into_iter()
            .map(|r| (r.project_id, r))
            .collect()
    }
}

/// Polls `check` every 10 ms until it holds or `timeout` passes; returns whether it held.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The registry sees `n` requests in flight within `within`, and never more than `n` over the
/// next 400 ms.
pub async fn assert_in_flight_settles_at(registry: &RegistrySimulator, n: usize, within: Duration) {
    assert!(
        eventually(within, || async { registry.stats().in_flight == n }).await,
        "in flight did not reach {n} within {within:?}: {:?}",
        registry.stats()
    );
    registry.reset_max_in_flight();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let stats = registry.stats();
    assert!(
        stats.max_in_flight <= n,
        "more than {n} in flight: {stats:?}"
    );
}

/// Waits for `service` to end by itself (within 60 s).
pub async fn run_to_end<W: Work>(service: Service<W>) -> RunEnd {
    tokio::time::timeout(Duration::from_secs(60), service.wait())
        .await
        .expect("the run ends within 60 s")
}

/// Whether the Scheduler's status satisfies `check` within `within`.
pub async fn status_becomes(
    scheduler: &SchedulerAddr,
    within: Duration,
    check: impl Fn(&ServiceStatus) -> bool,
) -> bool {
    eventually(within, || async {
        scheduler.send(GetStatus).await.is_ok_and(|s| check(&s))
    })
    .await
}

/// How many times the registry was asked for each project of `w`'s path.
pub fn asked(registry: &RegistrySimulator, w: &World) -> HashMap<i64, u64> {
    w.projects
        .iter()
        .map(|p| (p.id, registry.requests_for(&registry_path(w, p.id))))
        .collect()
}

/// The registry path of project `id` of `w` (its full path, lowercased).
pub fn registry_path(w: &World, id: i64) -> String {
    w.projects
        .iter()
        .find(|p| p.id == id)
        .and_then(|p| p.full_path.clone())
        .expect("project with a route")
        .to_lowercase()
}

/// Asserts that every project of `world` has exactly the row it must have.
pub async fn assert_rows_match(world: &World, db: &TestDb) {
    let rows: HashMap<i64, TrackingRow> = db
        .rows()
        .await
        .into_iter()
        .map(|r| (r.project_id, r))
        .collect();
    let expected = world.expected();
    assert_eq!(rows.len(), expected.len(), "one row per project");
    for (id, e) in expected {
        let row = rows
            .get(&id)
            .unwrap_or_else(|| panic!("project {id} has no row"));
        assert_eq!(
            (row.status, row.missing_count),
            (e.status, e.missing),
            "project {id}"
        );
    }
    assert_missing_recorded(world, db).await;
}

/// Asserts that the recorded missing repositories are exactly the ones `world` lost, of its
/// completed projects, each with the simulator's size or none (a size it did not give).
pub async fn assert_missing_recorded(world: &World, db: &TestDb) {
    assert_missing_recorded_for(world, &world.expected(), db).await
}

/// As [`assert_missing_recorded`], where `expected` says how each project ends: a test that makes
/// some of `world`'s projects fail says so there, and a failed project must have none recorded.
pub async fn assert_missing_recorded_for(
    world: &World,
    expected: &HashMap<i64, Expected>,
    db: &TestDb,
) {
    let paths: HashMap<i64, String> = world
        .projects
        .iter()
        .filter_map(|p| Some((p.id, p.full_path.as_ref()?.to_lowercase())))
        .collect();
    let completed: std::collections::HashSet<i64> = expected
        .iter()
        .filter(|(_, e)| e.status == TrackingStatus::Completed)
        .map(|(id, _)| *id)
        .collect();
    let mut want: Vec<(i64, String)> = world
        .lost_repositories()
        .into_iter()
        .filter(|(project, _)| completed.contains(project))
        .map(|(project, name)| {
            let base = &paths[&project];
            let path = if name.is_empty() {
                base.clone()
            } else {
                format!("{base}/{name}")
            };
            (project, path)
        })
        .collect();
    want.sort();
    let recorded = db::missing::all(&db.database()).await.expect("read");
    let mut got: Vec<(i64, String)> = recorded
        .iter()
        .map(|(project, r)| (*project, r.registry_path.clone()))
        .collect();
    got.sort();
    assert_eq!(got, want, "the recorded missing repositories");
    for (project, r) in &recorded {
        assert!(
            r.size_bytes
                .is_none_or(|size| size == size_of(&r.registry_path)),
            "project {project}: {r:?}"
        );
    }
}
