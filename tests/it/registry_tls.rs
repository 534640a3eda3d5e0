//! A registry behind a private CA: the real binary against the simulated registry served over TLS
//! with a CA and a server certificate made here, at test time. With `registry.ca_file` every row
//! is right; without it (or with another CA, or a certificate for another name) the service stops
//! at start with one line that says the certificate is not trusted and names `registry.ca_file`;
//! a file that is missing, unreadable or holds no usable certificate is a configuration error.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::common::process::{cli, service_env, Env};
use crate::common::{assert_rows_match, fixture_key_path, trusted, TestDb};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use registry_repair::demo::seed::World;
use registry_repair::registry::simulator::{RegistrySimulator, TlsIdentity};

/// A private CA: its certificate (PEM) and what signs with it.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        Self {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA certificate"),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `names` (DNS names or IP addresses), signed by this CA.
    fn server(&self, names: &[&str]) -> TlsIdentity {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, "registry.test");
        let key = KeyPair::generate().expect("server key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("server certificate");
        TlsIdentity {
            cert_chain_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A directory of this test's own under the system's temporary directory; removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "rr-tls-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).expect("scratch directory");
        Self(dir)
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("writing a scratch file");
        path
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn path_text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

#[actix_rt::test]
async fn with_the_private_ca_in_ca_file_every_row_is_right_over_tls() {
    let ca = Ca::new("registry-repair test CA");
    let world = World::generate(300, 23);
    let db = TestDb::new().await;
    world.insert(&db.database()).await.expect("seeding");
    let registry = RegistrySimulator::start_tls(
        world.registry_paths(),
        trusted(),
        0,
        &ca.server(&["localhost", "127.0.0.1"]),
    )
    .expect("TLS registry");
    assert!(registry.url().starts_with("https://127.0.0.1:"));
    let scratch = Scratch::new();
    // A bundle: an unrelated CA first, then the one that signed; every certificate counts.
    let bundle = format!("{}{}", Ca::new("another CA").pem(), ca.pem());
    let ca_file = scratch.write("ca.pem", &bundle);
    let env = service_env(&db, &registry.url(), "127.0.0.1:0")
        .set("WORKER__MAX_CONCURRENCY", "8")
        .set("REGISTRY__CA_FILE", path_text(&ca_file));

    let out = cli(&["run", "--until-done"], &env, Duration::from_secs(90)).await;
    out.assert_exit(0).assert_no_panic();
    assert_rows_match(&world, &db).await;
    let stats = registry.stats();
    assert!(
        stats.list_requests >= world.projects.len() as u64 - 1,
        "every routed project was asked for over TLS: {stats:?}"
    );
    assert_eq!(stats.unauthorized, 0);
}

#[actix_rt::test]
async fn a_certificate_this_host_does_not_trust_stops_the_service_at_start_with_one_clear_line() {
    let ca = Ca::new("registry-repair test CA");
    let world = World::generate(20, 5);
    let db = TestDb::new().await;
    world.insert(&db.database()).await.expect("seeding");
    let scratch = Scratch::new();
    let other_ca = scratch.write("other-ca.pem", &Ca::new("another CA").pem());
    let right_ca = scratch.write("ca.pem", &ca.pem());

    let good = RegistrySimulator::start_tls(
        world.registry_paths(),
        trusted(),
        0,
        &ca.server(&["localhost", "127.0.0.1"]),
    )
    .expect("TLS registry");
    // Signed by the trusted CA, but for another name than the one in registry.url.
    let misnamed = RegistrySimulator::start_tls(
        world.registry_paths(),
        trusted(),
        0,
        &ca.server(&["registry.elsewhere.test"]),
    )
    .expect("TLS registry");

    let cases = [
        (
            "no ca_file",
            &good,
            None,
            "UnknownIssuer",
            "registry.ca_file",
        ),
        (
            "another CA",
            &good,
            Some(&other_ca),
            "UnknownIssuer",
            "registry.ca_file",
        ),
        (
            "another name",
            &misnamed,
            Some(&right_ca),
            "not valid for name",
            "registry.url must name a host the certificate is for",
        ),
    ];
    for (case, registry, ca_file, reason, hint) in cases {
        let mut env = service_env(&db, &registry.url(), "127.0.0.1:0");
        if let Some(file) = ca_file {
            env = env.set("REGISTRY__CA_FILE", path_text(file));
        }
        // Not an endless retry: well within the generous bound, and at once in practice.
        let out = cli(&["run", "--until-done"], &env, Duration::from_secs(60)).await;
        out.assert_exit(1).assert_no_panic();
        // One line, and nothing else: no retry, no second error from the TLS library.
        let said: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(said.len(), 1, "{case}: one line\n{}", out.dump());
        let line = said[0];
        assert!(line.contains("does not trust"), "{case}: {line:?}");
        for needle in ["TLS certificate", reason, hint, &registry.url()] {
            assert!(line.contains(needle), "{case}: {needle:?} in {line:?}");
        }
        assert_eq!(registry.stats().list_requests, 0, "{case}: nothing listed");
    }
    assert!(db.rows().await.is_empty(), "nothing recorded");
}

#[actix_rt::test]
async fn a_ca_file_that_is_missing_unreadable_or_without_a_certificate_exits_2_naming_it() {
    let scratch = Scratch::new();
    let key_only = std::fs::read_to_string(fixture_key_path()).expect("fixture key");
    let cases: Vec<(&str, PathBuf)> = vec![
        ("missing", scratch.path().join("nowhere.pem")),
        // Root reads any file whatever its mode; a directory cannot be read as one.
        ("unreadable", scratch.path().to_path_buf()),
        ("empty", scratch.write("empty.pem", "")),
        ("a key, no certificate", scratch.write("key.pem", &key_only)),
        (
            "not a certificate inside",
            scratch.write(
                "garbage.pem",
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            ),
        ),
    ];
    for (case, file) in cases {
        // The file is checked before anything is reached: no database or registry is needed.
        let env = Env::new()
            .set("DATABASE__URL", "postgres://postgres@127.0.0.1:1/x")
            .set("REGISTRY__URL", "https://127.0.0.1:1")
            .set("REGISTRY__KEY_PATH", path_text(&fixture_key_path()))
            .set("REGISTRY__CA_FILE", path_text(&file))
            .set("ADMIN__LISTEN", "127.0.0.1:0");
        let out = cli(&["run", "--until-done"], &env, Duration::from_secs(30)).await;
        out.assert_exit(2)
            .assert_no_panic()
            .assert_stderr_has("registry.ca_file");
        assert!(
            !out.stderr.contains("connecting to the database"),
            "{case}: the file is checked first\n{}",
            out.dump()
        );
    }
}
