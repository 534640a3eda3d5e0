//! The distribution registry (Debian's `docker-registry`) of the test's own: token auth trusting
//! a certificate of the key the service signs with, storage in a directory of its own, on a free
//! port, killed when dropped. Where it is not installed, `start` prints a notice and returns
//! `None` (the test then passes without running), unless `REGISTRY_REPAIR_REQUIRE_DISTRIBUTION=1`
//! (as `.ci/run` sets), which fails it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{EncodePrivateKey, LineEnding};

use super::process::free_port;
use super::{AUDIENCE, ISSUER};

pub struct Distribution {
    child: Child,
    pub port: u16,
    dir: PathBuf,
    log: Arc<Mutex<String>>,
}

fn find_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin".into(), "/usr/local/bin".into()])
        .map(|dir| dir.join("docker-registry"))
        .find(|candidate| candidate.is_file())
}

/// A self-signed certificate of `key_pem` (PKCS#1, as GitLab's `registry.key` is): the registry
/// trusts the keys of the certificates in its `rootcertbundle`, looked up by the token's `kid`.
fn certificate_of(key_pem: &str) -> String {
    let pkcs8 = rsa::RsaPrivateKey::from_pkcs1_pem(key_pem)
        .expect("the fixture key is PKCS#1")
        .to_pkcs8_pem(LineEnding::LF)
        .expect("the key as PKCS#8");
    let key = rcgen::KeyPair::from_pem(&pkcs8).expect("rcgen reads the RSA key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("parameters");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, ISSUER);
    params
        .self_signed(&key)
        .expect("a self-signed certificate")
        .pem()
}

impl Distribution {
    /// A registry that trusts tokens signed with `key_pem` for `ISSUER` and `AUDIENCE`, holding
    /// one tag (`latest`) in each of `repositories`.
    pub fn start(test: &str, key_pem: &str, repositories: &[&str]) -> Option<Self> {
        let Some(binary) = find_binary() else {
            if std::env::var("REGISTRY_REPAIR_REQUIRE_DISTRIBUTION").as_deref() == Ok("1") {
                panic!("{test}: docker-registry is not installed, and REGISTRY_REPAIR_REQUIRE_DISTRIBUTION=1 requires it (apt-get install docker-registry)");
            }
            eprintln!(
                "SKIPPED {test}: docker-registry is not installed (apt-get install docker-registry \
                 to run it; REGISTRY_REPAIR_REQUIRE_DISTRIBUTION=1 makes this a failure)"
            );
            return None;
        };
        let dir =
            std::env::temp_dir().join(format!("rr-distribution-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("registry directory");
        write(&dir.join("gitlab.crt"), &certificate_of(key_pem));
        for repository in repositories {
            // The filesystem driver's layout: a tag is a directory under the repository's
            // `_manifests/tags`, which is all `tags/list` reads.
            let tag = dir
                .join("storage/docker/registry/v2/repositories")
                .join(repository)
                .join("_manifests/tags/latest/current");
            std::fs::create_dir_all(&tag).expect("tag directory");
            write(
                &tag.join("link"),
                "sha256:0000000000000000000000000000000000000000000000000000000000000000",
            );
        }
        // A port found free may be taken before the registry binds it: then it exits, and
        // another port is tried.
        for _ in 0..5 {
            let port = free_port();
            write(&dir.join("config.yml"), &config(&dir, port));
            let mut child = Command::new(&binary)
                .arg("serve")
                .arg(dir.join("config.yml"))
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
            let mut registry = Self {
                child,
                port,
                dir: dir.clone(),
                log,
            };
            if registry.wait_listening() {
                return Some(registry);
            }
        }
        panic!("docker-registry could not bind a free port in 5 tries");
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What it has logged so far.
    pub fn logged(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether it listens on its port (`false`: the port was taken); panics on any other failure.
    fn wait_listening(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(50));
                let log = self.logged();
                if log.contains("address already in use") {
                    return false;
                }
                panic!("docker-registry exited at start ({status}):\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on port {} within 30 s:\n{}",
                self.port,
                self.logged()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn config(dir: &Path, port: u16) -> String {
    format!(
        "version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: {storage}
http:
  addr: 127.0.0.1:{port}
  secret: not-a-secret-only-a-test
auth:
  token:
    realm: http://127.0.0.1:1/jwt/auth
    service: {AUDIENCE}
    issuer: {ISSUER}
    rootcertbundle: {certificate}
",
        storage = dir.join("storage").display(),
        certificate = dir.join("gitlab.crt").display(),
    )
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

impl Drop for Distribution {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
