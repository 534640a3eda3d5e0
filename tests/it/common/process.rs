//! Running the real `registry-repair` binary as an operator does: configured only through
//! `REGISTRY_REPAIR__*` environment variables, its output drained by threads of its own, waited for
//! without blocking the test's runtime (the simulated registry runs inside the test process), and
//! killed if the test ends first. Shared by every module that runs the binary (cli, signals, ...).

use std::io::Read;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use registry_repair::demo::seed::World;

use super::{fixture_key_path, TestDb};

pub const BIN: &str = env!("CARGO_BIN_EXE_registry-repair");

// ---------------------------------------------------------------------------------------------
// Running the binary
// ---------------------------------------------------------------------------------------------

/// `REGISTRY_REPAIR__*` variables for one child; nothing else of the test's environment leaks in.
#[derive(Clone, Default)]
pub struct Env(Vec<(String, String)>);

impl Env {
    pub fn new() -> Self {
        Self::default()
    }

    /// `key` is `SECTION__KEY`, e.g. `DATABASE__URL`.
    pub fn set(mut self, key: &str, value: impl Into<String>) -> Self {
        let name = format!("REGISTRY_REPAIR__{key}");
        self.0.retain(|(k, _)| *k != name);
        self.0.push((name, value.into()));
        self
    }

    /// Any other variable, `name` as it is (e.g. `HOME`).
    pub fn var(mut self, name: &str, value: impl Into<String>) -> Self {
        self.0.retain(|(k, _)| k != name);
        self.0.push((name.to_string(), value.into()));
        self
    }

    pub fn unset(mut self, key: &str) -> Self {
        let name = format!("REGISTRY_REPAIR__{key}");
        self.0.retain(|(k, _)| *k != name);
        self
    }
}

/// Everything `run` needs against `db` and the registry at `registry_url`, tuned for quick tests.
pub fn service_env(db: &TestDb, registry_url: &str, admin_listen: &str) -> Env {
    Env::new()
        .set("DATABASE__URL", &db.url)
        .set("DATABASE__POOL_SIZE", "4")
        .set("REGISTRY__URL", registry_url)
        .set(
            "REGISTRY__KEY_PATH",
            fixture_key_path().to_string_lossy().into_owned(),
        )
        .set("REGISTRY__TIMEOUT_MS", "5000")
        .set("ADMIN__LISTEN", admin_listen)
        .set("WRITER__FLUSH_INTERVAL_MS", "50")
        .set("WORKER__RESCAN_INTERVAL_S", "1")
        .set("WORKER__SHUTDOWN_TIMEOUT_S", "10")
}

/// A port nothing listens on (at least right now).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    listener.local_addr().expect("local address").port()
}

/// A child process whose output is drained by threads of its own, so that it never blocks on a
/// full pipe, and which is killed if the test ends (or panics) before it does.
pub struct Running {
    what: String,
    child: Child,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
    /// What the child has written to stdout so far, while it runs.
    stdout_so_far: Arc<Mutex<Vec<u8>>>,
    /// What the child has written to stderr so far (its log), while it runs.
    stderr_so_far: Arc<Mutex<Vec<u8>>>,
    started: Instant,
}

/// How a child ended.
#[derive(Debug)]
pub struct Finished {
    pub what: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// Reads `pipe` to its end on a thread of its own, keeping what has arrived so far in `so_far`.
pub fn drain(
    mut pipe: impl Read + Send + 'static,
    so_far: Arc<Mutex<Vec<u8>>>,
) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => so_far
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(&chunk[..n]),
            }
        }
        let bytes = so_far.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

pub fn spawn(args: &[&str], env: &Env) -> Running {
    let mut cmd = Command::new(BIN);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if name.starts_with("REGISTRY_REPAIR__") || name == "RUST_LOG" {
            cmd.env_remove(name);
        }
    }
    cmd.args(args)
        .envs(env.0.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let what = format!(
        "`registry-repair {}` with {}",
        args.join(" "),
        env.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting {what}: {e}"));
    let stdout_so_far = Arc::new(Mutex::new(Vec::new()));
    let stderr_so_far = Arc::new(Mutex::new(Vec::new()));
    let stdout = child
        .stdout
        .take()
        .map(|pipe| drain(pipe, stdout_so_far.clone()));
    let stderr = child
        .stderr
        .take()
        .map(|pipe| drain(pipe, stderr_so_far.clone()));
    Running {
        what,
        child,
        stdout,
        stderr,
        stdout_so_far,
        stderr_so_far,
        started: Instant::now(),
    }
}

impl Running {
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits an i32")
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on a child of ours that has not been reaped yet.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "signalling {}", self.what);
    }

    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Whether the child's stderr (its log) mentions `needle` within `within`; it may still be
    /// running.
    pub async fn logs_within(&self, needle: &str, within: Duration) -> bool {
        super::eventually(within, || async {
            let so_far = self.stderr_so_far.lock().unwrap_or_else(|e| e.into_inner());
            String::from_utf8_lossy(&so_far).contains(needle)
        })
        .await
    }

    /// What the child has written to stdout so far; it may still be running.
    pub fn stdout_so_far(&self) -> String {
        let so_far = self.stdout_so_far.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&so_far).into_owned()
    }

    /// Whether the child's stdout shows `needle` within `within` (or it has exited); it may
    /// still be running.
    pub async fn prints_within(&mut self, needle: &str, within: Duration) -> bool {
        let mut printed = false;
        super::eventually(within, || {
            printed = self.stdout_so_far().contains(needle);
            let exited = printed || self.has_exited();
            async move { exited }
        })
        .await;
        printed || self.stdout_so_far().contains(needle)
    }

    fn collect(&mut self, code: Option<i32>) -> Finished {
        let stdout = self
            .stdout
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        let stderr = self
            .stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        Finished {
            what: self.what.clone(),
            code,
            stdout,
            stderr,
            elapsed: self.started.elapsed(),
        }
    }

    /// Waits (without blocking the runtime) for the child to exit; kills it and fails the test
    /// if it takes longer than `timeout`.
    pub async fn wait(&mut self, timeout: Duration) -> Finished {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return self.collect(status.code()),
                Ok(None) if Instant::now() >= deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    let out = self.collect(None);
                    panic!(
                        "{} did not exit within {timeout:?}\n--- stdout\n{}\n--- stderr\n{}",
                        out.what, out.stdout, out.stderr
                    );
                }
                Ok(None) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(e) => panic!("waiting for {}: {e}", self.what),
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs one command to its end (at most `timeout`).
pub async fn cli(args: &[&str], env: &Env, timeout: Duration) -> Finished {
    spawn(args, env).wait(timeout).await
}

impl Finished {
    pub fn dump(&self) -> String {
        format!(
            "{} exited with {:?} after {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.what, self.code, self.elapsed, self.stdout, self.stderr
        )
    }

    pub fn assert_exit(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "{}", self.dump());
        self
    }

    pub fn assert_stdout_has(&self, needle: &str) -> &Self {
        assert!(
            self.stdout.contains(needle),
            "stdout should mention {needle:?}\n{}",
            self.dump()
        );
        self
    }

    pub fn assert_stderr_has(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "stderr should mention {needle:?}\n{}",
            self.dump()
        );
        self
    }

    pub fn assert_no_panic(&self) -> &Self {
        assert!(
            !self.stdout.contains("panicked") && !self.stderr.contains("panicked"),
            "{}",
            self.dump()
        );
        self
    }
}

// ---------------------------------------------------------------------------------------------
// Worlds
// ---------------------------------------------------------------------------------------------

/// `n` projects in mixed-case nested groups, each with at least one registry repository (so that
/// each costs exactly one List request), a third of them with missing repositories.
pub fn busy_world(n: usize) -> World {
    let mut w = World::new();
    let top = w.group(None, "Busy-Org");
    let team_a = w.group(Some(top), "Team_A");
    let team_b = w.group(Some(top), "Team.B");
    for i in 0..n {
        let home = if i % 2 == 0 { team_a } else { team_b };
        match i % 3 {
            0 => w.project(home, &format!("Svc-{i}"), &["", "api"], &["api"]),
            1 => w.project(home, &format!("app_{i}"), &["web"], &["web"]),
            _ => w.project(home, &format!("Tool-{i}"), &["a/b", "c"], &[]),
        };
    }
    w
}

/// Rows written so far are exactly what the world says; returns how many there are.
pub async fn assert_written_rows_correct(world: &World, db: &TestDb) -> usize {
    let expected = world.expected();
    let rows = db.rows().await;
    for row in &rows {
        let e = expected
            .get(&row.project_id)
            .unwrap_or_else(|| panic!("a row for project {} not in the world", row.project_id));
        assert_eq!(
            (row.status, row.missing_count),
            (e.status, e.missing),
            "project {}",
            row.project_id
        );
    }
    rows.len()
}
