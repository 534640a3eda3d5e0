//! A PgBouncer of the test's own: started on a free port with a configuration written to a
//! directory of its own, in front of the test server, and killed when dropped. Where pgbouncer is
//! not installed, `start` prints a notice and returns `None` (the test then passes without
//! running), unless `REGISTRY_REPAIR_REQUIRE_PGBOUNCER=1` (as `.ci/run` sets), which fails it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::daemon::Daemon;
use super::tool;

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub struct PgBouncer {
    /// Its log holds a line per client login, server connection, ...
    daemon: Daemon,
    dir: PathBuf,
}

impl PgBouncer {
    /// PgBouncer with `pool_mode` and `pool_size` server connections per database and user, in
    /// front of the test server (`TEST_DATABASE_SERVER`'s host and port), trusting every client.
    pub fn start(test: &str, pool_mode: &str, pool_size: u32) -> Option<Self> {
        Self::start_with_tls(test, pool_mode, pool_size, None)
    }

    /// The same, with `client_tls_sslmode = tls_mode` (`allow`, `require`, ...) and the fixture's
    /// self-signed certificate (`CA:TRUE`, for `localhost` and 127.0.0.1) towards clients.
    pub fn start_with_tls(
        test: &str,
        pool_mode: &str,
        pool_size: u32,
        tls_mode: Option<&str>,
    ) -> Option<Self> {
        let binary = tool::find(
            test,
            &["pgbouncer"],
            &["/usr/sbin", "/usr/local/sbin"],
            "pgbouncer",
            "REGISTRY_REPAIR_REQUIRE_PGBOUNCER",
        )?;
        let dir = std::env::temp_dir().join(format!(
            "rr-pgbouncer-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).expect("pgbouncer directory");
        let ini = dir.join("pgbouncer.ini");
        let daemon = Daemon::start(
            "pgbouncer",
            Duration::from_secs(20),
            |port| {
                write_config(&dir, port, pool_mode, pool_size, tls_mode);
                let mut command = Command::new(&binary);
                // PgBouncer refuses to run as root; as root it is told to become an unprivileged
                // user.
                // SAFETY: geteuid has no preconditions.
                if unsafe { libc::geteuid() } == 0 {
                    command.args(["-u", unprivileged_user()]);
                }
                command.arg(&ini);
                command
            },
            |daemon| {
                daemon
                    .logged()
                    .contains(&format!("listening on 127.0.0.1:{}", daemon.port))
            },
        );
        Some(Self { daemon, dir })
    }

    /// The URL of database `name` through this PgBouncer, with `query` appended (if not empty).
    pub fn url(&self, name: &str, query: &str) -> String {
        let mut url = url::Url::parse(&super::server_url()).expect("TEST_DATABASE_SERVER is a URL");
        url.set_host(Some("127.0.0.1")).expect("host");
        url.set_port(Some(self.daemon.port)).expect("port");
        url.set_path(&format!("/{name}"));
        url.set_query((!query.is_empty()).then_some(query));
        url.to_string()
    }

    /// Stops it and returns what it logged.
    pub fn stop(mut self) -> String {
        self.daemon.stop()
    }

    /// What it has logged so far.
    pub fn logged(&self) -> String {
        self.daemon.logged()
    }
}

fn write_config(dir: &Path, port: u16, pool_mode: &str, pool_size: u32, tls_mode: Option<&str>) {
    let server = url::Url::parse(&super::server_url()).expect("TEST_DATABASE_SERVER is a URL");
    let (host, server_port) = (
        server.host_str().unwrap_or("127.0.0.1").to_string(),
        server.port().unwrap_or(5432),
    );
    let user = server.username().to_string();
    let mut ini = format!(
        "[databases]\n\
         * = host={host} port={server_port}\n\
         [pgbouncer]\n\
         listen_addr = 127.0.0.1\n\
         listen_port = {port}\n\
         unix_socket_dir =\n\
         auth_type = trust\n\
         auth_file = {users}\n\
         pool_mode = {pool_mode}\n\
         default_pool_size = {pool_size}\n\
         min_pool_size = 0\n\
         reserve_pool_size = 0\n\
         max_client_conn = 200\n\
         admin_users = {user}\n",
        users = dir.join("users.txt").display(),
    );
    if let Some(mode) = tls_mode {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        for file in ["tls-self-signed.pem", "tls-self-signed.key"] {
            std::fs::copy(fixtures.join(file), dir.join(file)).expect("TLS fixture");
        }
        ini.push_str(&format!(
            "client_tls_sslmode = {mode}\n\
             client_tls_cert_file = {}\n\
             client_tls_key_file = {}\n",
            dir.join("tls-self-signed.pem").display(),
            dir.join("tls-self-signed.key").display(),
        ));
    }
    write(&dir.join("pgbouncer.ini"), &ini);
    write(&dir.join("users.txt"), &format!("\"{user}\" \"\"\n"));
}

fn unprivileged_user() -> &'static str {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    if passwd.lines().any(|l| l.starts_with("postgres:")) {
        "postgres"
    } else {
        "nobody"
    }
}

fn write(path: &Path, text: &str) {
    let mut file =
        std::fs::File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    file.write_all(text.as_bytes()).expect("writing");
}

impl Drop for PgBouncer {
    // The daemon is killed as it drops, right after.
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
