//! A PgBouncer of the test's own: started on a free port with a configuration written to a
//! directory of its own, in front of the test server, and killed when dropped. Where pgbouncer is
//! not installed, `start` prints a notice and returns `None` (the test then passes without
//! running), unless `REGISTRY_REPAIR_REQUIRE_PGBOUNCER=1` (as `.ci/run` sets), which fails it.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::process::free_port;

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub struct PgBouncer {
    child: Child,
    pub port: u16,
    dir: PathBuf,
    /// What it has logged so far (one line per client login, server connection, ...).
    log: Arc<Mutex<String>>,
}

fn find_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|dir| dir.join("pgbouncer"))
        .find(|candidate| candidate.is_file())
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
        let Some(binary) = find_binary() else {
            if std::env::var("REGISTRY_REPAIR_REQUIRE_PGBOUNCER").as_deref() == Ok("1") {
                panic!("{test}: pgbouncer is not installed, and REGISTRY_REPAIR_REQUIRE_PGBOUNCER=1 requires it (apt-get install pgbouncer)");
            }
            eprintln!(
                "SKIPPED {test}: pgbouncer is not installed (apt-get install pgbouncer to run it; \
                 REGISTRY_REPAIR_REQUIRE_PGBOUNCER=1 makes this a failure)"
            );
            return None;
        };
        let dir = std::env::temp_dir().join(format!(
            "rr-pgbouncer-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).expect("pgbouncer directory");
        // A port found free may be taken before PgBouncer binds it (tests run in parallel): then
        // it exits at once, and another port is tried.
        for _ in 0..5 {
            let port = free_port();
            write_config(&dir, port, pool_mode, pool_size, tls_mode);
            let mut command = Command::new(&binary);
            // PgBouncer refuses to run as root; as root it is told to become an unprivileged user.
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } == 0 {
                command.args(["-u", unprivileged_user()]);
            }
            let mut child = command
                .arg(dir.join("pgbouncer.ini"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
            let log = Arc::new(Mutex::new(String::new()));
            if let Some(stderr) = child.stderr.take() {
                let log = log.clone();
                std::thread::spawn(move || {
                    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                        let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                        log.push_str(&line);
                        log.push('\n');
                    }
                });
            }
            let mut bouncer = Self {
                child,
                port,
                dir: dir.clone(),
                log,
            };
            if bouncer.wait_listening() {
                return Some(bouncer);
            }
        }
        panic!("pgbouncer could not bind a free port in 5 tries");
    }

    /// Whether it listens on its port (`false`: the port was taken); panics on any other failure.
    fn wait_listening(&mut self) -> bool {
        let listening = format!("listening on 127.0.0.1:{}", self.port);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.log().contains(&listening) {
                return true;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(50));
                let log = self.log();
                if log.contains("Address already in use") {
                    return false;
                }
                panic!("pgbouncer exited at start ({status}):\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "pgbouncer did not listen on port {} within 20 s:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The URL of database `name` through this PgBouncer, with `query` appended (if not empty).
    pub fn url(&self, name: &str, query: &str) -> String {
        let mut url = url::Url::parse(&super::server_url()).expect("TEST_DATABASE_SERVER is a URL");
        url.set_host(Some("127.0.0.1")).expect("host");
        url.set_port(Some(self.port)).expect("port");
        url.set_path(&format!("/{name}"));
        url.set_query((!query.is_empty()).then_some(query));
        url.to_string()
    }

    /// Stops it and returns what it logged.
    pub fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The reader thread sees the end of the pipe right after.
        std::thread::sleep(Duration::from_millis(50));
        self.log()
    }

    /// What it has logged so far.
    pub fn logged(&self) -> String {
        self.log()
    }

    fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
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
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
