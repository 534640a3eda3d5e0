//! The distribution registry (Debian's `docker-registry`) of the test's own: token auth trusting
//! a certificate of the key the service signs with, storage in a directory of its own, on a free
//! port, killed when dropped. Where it is not installed, `start` prints a notice and returns
//! `None` (the test then passes without running), unless `REGISTRY_REPAIR_REQUIRE_DISTRIBUTION=1`
//! (as `.ci/run` sets), which fails it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{EncodePrivateKey, LineEnding};

use super::daemon::Daemon;
use super::tool;
use super::{AUDIENCE, ISSUER};

pub struct Distribution {
    daemon: Daemon,
    dir: PathBuf,
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
        let binary = tool::find(
            test,
            &["docker-registry"],
            &["/usr/bin", "/usr/local/bin"],
            "docker-registry",
            "REGISTRY_REPAIR_REQUIRE_DISTRIBUTION",
        )?;
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
        let config = dir.join("config.yml");
        let daemon = Daemon::start(
            "docker-registry",
            Duration::from_secs(30),
            |port| {
                write(&config, &config_text(&dir, port));
                let mut command = Command::new(&binary);
                command.arg("serve").arg(&config);
                command
            },
            |daemon| std::net::TcpStream::connect(("127.0.0.1", daemon.port)).is_ok(),
        );
        Some(Self { daemon, dir })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.daemon.port)
    }

    /// What it has logged so far.
    pub fn logged(&self) -> String {
        self.daemon.logged()
    }
}

fn config_text(dir: &Path, port: u16) -> String {
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
    // The daemon is killed as it drops, right after.
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
