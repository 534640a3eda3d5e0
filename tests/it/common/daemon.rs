//! A server a test starts on a free port (PgBouncer, the distribution registry): its stderr kept,
//! another port tried where the one found free was taken before it bound (tests run in parallel),
//! killed when dropped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::process::free_port;

pub struct Daemon {
    child: Child,
    pub port: u16,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    /// Runs `command(port)` on free ports until it listens, as `listening` tells, within `within`;
    /// panics naming `name` with its log if it fails otherwise than on a taken port.
    pub fn start(
        name: &str,
        within: Duration,
        mut command: impl FnMut(u16) -> Command,
        listening: impl Fn(&Daemon) -> bool,
    ) -> Daemon {
        for _ in 0..5 {
            let port = free_port();
            let mut child = command(port)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("starting {name}: {e}"));
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
            let mut daemon = Daemon { child, port, log };
            if daemon.wait_listening(name, within, &listening) {
                return daemon;
            }
        }
        panic!("{name} could not bind a free port in 5 tries");
    }

    /// What it has logged so far.
    pub fn logged(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Stops it and returns what it logged.
    pub fn stop(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The reader thread sees the end of the pipe right after.
        std::thread::sleep(Duration::from_millis(50));
        self.logged()
    }

    /// Whether it listens (`false`: its port was taken); panics on any other failure.
    fn wait_listening(
        &mut self,
        name: &str,
        within: Duration,
        listening: &impl Fn(&Daemon) -> bool,
    ) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if listening(self) {
                return true;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(50));
                let log = self.logged();
                if log.to_lowercase().contains("address already in use") {
                    return false;
                }
                panic!("{name} exited at start ({status}):\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not listen on port {} within {within:?}:\n{}",
                self.port,
                self.logged()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
