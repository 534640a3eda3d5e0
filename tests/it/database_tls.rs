//! TLS to PostgreSQL as libpq's `sslmode` and `sslrootcert` in `database.url` ask for, against
//! this machine's PostgreSQL (`ssl = on` with a self-signed certificate, Debian's snakeoil for
//! `localhost`), through the pool, the real binary's `run`, `migrate` and `report`. Where the
//! server has `ssl = off` the tests that need it print a notice and pass.
//!
//! The modes that need a server refusing plaintext, or one whose certificate is `CA:TRUE`, run
//! against a PgBouncer of their own with the fixture certificate (skipped without pgbouncer).

use crate::common::TestApp;
use std::path::PathBuf;
use std::time::Duration;

use crate::common::pgbouncer::PgBouncer;
use crate::common::process::{busy_world, cli, service_env, spawn, Env};
use crate::common::{assert_rows_match, server_url, TestDb};
use diesel::sql_types::{BigInt, Bool, Nullable, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use registry_repair::db::Database;

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

#[derive(diesel::QueryableByName)]
struct Setting {
    #[diesel(sql_type = Text)]
    value: String,
}

async fn show(setting: &str) -> String {
    let mut conn = AsyncPgConnection::establish(&server_url())
        .await
        .expect("connecting to the test server");
    let row: Setting = diesel::sql_query(format!("SELECT current_setting('{setting}') AS value"))
        .get_result(&mut conn)
        .await
        .expect("reading a setting");
    row.value
}

/// The server's certificate file when the server speaks TLS and the file is readable here (it is
/// self-signed on a stock Debian server, so it is its own root); `None`, after a notice, if not.
async fn server_certificate(test: &str) -> Option<String> {
    if show("ssl").await != "on" {
        eprintln!("SKIPPED {test}: the test server has ssl = off");
        return None;
    }
    let file = show("ssl_cert_file").await;
    if std::fs::read(&file).is_err() {
        eprintln!("SKIPPED {test}: the server's certificate {file} is not readable here");
        return None;
    }
    Some(file)
}

/// `url` with `query` as its query string and `host` as its host.
fn with(url: &str, host: &str, query: &str) -> String {
    let mut u = url::Url::parse(url).expect("a URL");
    u.set_host(Some(host)).expect("host");
    u.set_query(Some(query));
    u.to_string()
}

#[derive(diesel::QueryableByName, Debug)]
struct Ssl {
    #[diesel(sql_type = Bool)]
    ssl: bool,
    #[diesel(sql_type = Nullable<Text>)]
    version: Option<String>,
}

/// Whether the pool's own connection is encrypted, as PostgreSQL sees it.
async fn pool_connection_ssl(url: &str) -> Result<Ssl, String> {
    let db = Database::new(url, 1, Duration::from_secs(10)).map_err(|e| e.to_string())?;
    let mut conn = db.conn().await.map_err(|e| e.to_string())?;
    diesel::sql_query("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .get_result(&mut conn)
        .await
        .map_err(|e| e.to_string())
}

#[actix_rt::test]
async fn each_sslmode_encrypts_or_not_as_libpq_does() {
    let test = "each_sslmode_encrypts_or_not_as_libpq_does";
    let Some(cert) = server_certificate(test).await else {
        return;
    };
    let db = TestDb::new().await;
    // Without sslrootcert libpq (and this service) verifies with ~/.postgresql/root.crt if there
    // is one; these cases expect there is none.
    let default_root = std::env::home_dir().map(|h| h.join(".postgresql/root.crt"));
    let has_default_root = default_root.as_ref().is_some_and(|p| p.exists());
    for (host, query, encrypted) in [
        ("127.0.0.1", "sslmode=disable".to_string(), false),
        // libpq's default: encrypted when the server offers it.
        ("127.0.0.1", String::new(), true),
        ("127.0.0.1", "sslmode=prefer".into(), true),
        ("127.0.0.1", "sslmode=require".into(), true),
        ("127.0.0.1", "ssl=true".into(), true),
        (
            "127.0.0.1",
            format!("sslmode=verify-ca&sslrootcert={cert}"),
            true,
        ),
        (
            "localhost",
            format!("sslmode=verify-full&sslrootcert={cert}"),
            true,
        ),
        // The whole query string is passed on: other parameters still reach tokio-postgres.
        (
            "localhost",
            format!(
                "application_name=rr_tls&sslmode=verify-full&sslrootcert={cert}&connect_timeout=10"
            ),
            true,
        ),
    ] {
        if has_default_root && !query.contains("sslrootcert") {
            eprintln!("{test}: not trying `{query}`: {default_root:?} exists");
            continue;
        }
        let url = with(&db.url, host, &query);
        let ssl = pool_connection_ssl(&url)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(ssl.ssl, encrypted, "{url}: {ssl:?}");
        if encrypted {
            assert!(
                ssl.version
                    .as_deref()
                    .is_some_and(|v| v.starts_with("TLSv1.")),
                "{url}: {ssl:?}"
            );
        }
    }
}

#[actix_rt::test]
async fn a_certificate_that_does_not_check_out_is_refused_as_libpq_refuses_it() {
    let test = "a_certificate_that_does_not_check_out_is_refused_as_libpq_refuses_it";
    let Some(cert) = server_certificate(test).await else {
        return;
    };
    let db = TestDb::new().await;
    let other = fixture("other-ca.pem");
    for (mode, root, refused_because) in [
        (
            "verify-ca",
            &other,
            "not signed by any certificate in sslrootcert",
        ),
        // With a root certificate, require verifies the chain like verify-ca.
        (
            "require",
            &other,
            "not signed by any certificate in sslrootcert",
        ),
        // verify-full checks the host name too; the certificate names localhost only.
        ("verify-full", &cert, "does not name the host `127.0.0.1`"),
    ] {
        let url = with(
            &db.url,
            "127.0.0.1",
            &format!("sslmode={mode}&sslrootcert={root}"),
        );
        let error = pool_connection_ssl(&url)
            .await
            .err()
            .unwrap_or_else(|| panic!("{url} must be refused"));
        assert!(error.contains(refused_because), "{url}: {error}");
        assert!(
            error.contains(&format!("sslmode={mode}, sslrootcert={root}")),
            "{url}: the message says what was asked for: {error}"
        );
    }
    // Without a root certificate, require encrypts and trusts whatever the server presents.
    let url = with(
        &db.url,
        "127.0.0.1",
        "sslmode=require&sslrootcert=/nonexistent/root.crt",
    );
    assert!(
        pool_connection_ssl(&url)
            .await
            .expect("require without a root")
            .ssl
    );
}

#[derive(diesel::QueryableByName, Debug)]
struct Backends {
    #[diesel(sql_type = BigInt)]
    total: i64,
    #[diesel(sql_type = BigInt)]
    encrypted: i64,
}

#[actix_rt::test]
async fn the_service_runs_over_verified_tls_and_its_own_backends_are_encrypted() {
    let test = "the_service_runs_over_verified_tls_and_its_own_backends_are_encrypted";
    let Some(cert) = server_certificate(test).await else {
        return;
    };
    let world = busy_world(300);
    let TestApp { db, registry, .. } = TestApp::prepare(&world).await;
    let name = format!("rr_tls_{}", std::process::id());
    let url = with(
        &db.url,
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={cert}&application_name={name}"),
    );
    let env = service_env(&db, &registry.url(), "127.0.0.1:0").set("DATABASE__URL", &url);

    cli(&["migrate"], &env, Duration::from_secs(30))
        .await
        .assert_exit(0)
        .assert_no_panic()
        .assert_stdout_has("nothing to do");
    let mut service = spawn(&["run"], &env);
    assert!(
        db.wait_for_rows(world.projects.len(), Duration::from_secs(60))
            .await,
        "every project analysed within 60 s"
    );
    let mut conn = AsyncPgConnection::establish(&server_url())
        .await
        .expect("connecting to the test server");
    let backends: Backends = diesel::sql_query(
        "SELECT count(*) AS total, count(*) FILTER (WHERE s.ssl) AS encrypted \
         FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = $1",
    )
    .bind::<Text, _>(&name)
    .get_result(&mut conn)
    .await
    .expect("reading pg_stat_ssl");
    assert!(
        backends.total >= 1,
        "the service is connected: {backends:?}"
    );
    assert_eq!(backends.encrypted, backends.total, "{backends:?}");
    service.signal(libc::SIGTERM);
    service
        .wait(Duration::from_secs(30))
        .await
        .assert_exit(0)
        .assert_no_panic();
    assert_rows_match(&world, &db).await;

    let report = cli(
        &["report", "--format", "json"],
        &env,
        Duration::from_secs(30),
    )
    .await;
    report.assert_exit(0).assert_no_panic();
}

#[actix_rt::test]
async fn verify_ca_without_the_right_root_certificate_fails_with_what_to_do() {
    let test = "verify_ca_without_the_right_root_certificate_fails_with_what_to_do";
    if server_certificate(test).await.is_none() {
        return;
    }
    let db = TestDb::new().await;
    // A home without ~/.postgresql/root.crt: libpq's default root certificate is missing.
    let home = std::env::temp_dir().join(format!("rr-tls-empty-home-{}", std::process::id()));
    std::fs::create_dir_all(&home).expect("home");
    let home_str = home.to_string_lossy().into_owned();
    let base = Env::new()
        .var("HOME", &home_str)
        .set("DATABASE__CONNECT_TIMEOUT_MS", "10000");

    let no_root = base.clone().set(
        "DATABASE__URL",
        with(&db.url, "127.0.0.1", "sslmode=verify-ca"),
    );
    for command in ["migrate", "report"] {
        let out = cli(&[command], &no_root, Duration::from_secs(30)).await;
        out.assert_exit(2)
            .assert_no_panic()
            .assert_stderr_has("database.url")
            .assert_stderr_has(&format!(
                "root certificate file \"{home_str}/.postgresql/root.crt\" does not exist"
            ))
            .assert_stderr_has("set sslrootcert=FILE");
    }

    let wrong_root = base.clone().set(
        "DATABASE__URL",
        with(
            &db.url,
            "127.0.0.1",
            &format!("sslmode=verify-ca&sslrootcert={}", fixture("other-ca.pem")),
        ),
    );
    for command in ["migrate", "report"] {
        let out = cli(&[command], &wrong_root, Duration::from_secs(30)).await;
        out.assert_exit(1)
            .assert_no_panic()
            .assert_stderr_has("not signed by any certificate in sslrootcert")
            .assert_stderr_has("other-ca.pem");
    }
    let _ = std::fs::remove_dir_all(&home);
}

#[actix_rt::test]
async fn ssl_parameters_that_are_not_supported_are_refused_naming_database_url() {
    let db = TestDb::new().await;
    for (query, needle) in [
        ("sslmode=verify", "sslmode `verify` is not one of"),
        ("sslcert=/c.pem&sslkey=/k.pem", "`sslcert` is not supported"),
        (
            "sslmode=require&sslrootcert=system",
            "weak sslmode \"require\"",
        ),
        ("prepared_statements=no", "prepared_statements `no`"),
        ("no_such_option=1", "no_such_option"),
    ] {
        let env = Env::new()
            .set("DATABASE__URL", with(&db.url, "127.0.0.1", query))
            .set("ADMIN__LISTEN", "127.0.0.1:0");
        for command in ["migrate", "report"] {
            cli(&[command], &env, Duration::from_secs(30))
                .await
                .assert_exit(2)
                .assert_no_panic()
                .assert_stderr_has("database.url")
                .assert_stderr_has(needle);
        }
    }
}

/// Whether a pool through `bouncer` to `db` with `query` connects.
async fn connects(bouncer: &PgBouncer, host: &str, db: &TestDb, query: &str) -> Result<(), String> {
    let url = with(&bouncer.url(&db.name, ""), host, query);
    let database = Database::new(&url, 1, Duration::from_secs(10)).map_err(|e| e.to_string())?;
    database.check_ready().await.map_err(|e| e.to_string())
}

#[actix_rt::test]
async fn a_self_signed_ca_certificate_is_its_own_root_and_allow_and_prefer_fall_back_as_libpq_does()
{
    let db = TestDb::new().await;
    let own = fixture("tls-self-signed.pem");
    let other = fixture("other-ca.pem");
    // PgBouncer refusing clients without TLS, presenting a self-signed certificate with CA:TRUE
    // (as `openssl req -x509` makes them), which webpki alone would refuse as a server's.
    let Some(tls_only) = PgBouncer::start_with_tls(
        "a_self_signed_ca_certificate_is_its_own_root",
        "session",
        2,
        Some("require"),
    ) else {
        return;
    };
    connects(
        &tls_only,
        "localhost",
        &db,
        &format!("sslmode=verify-full&sslrootcert={own}"),
    )
    .await
    .expect("verify-full with the server's own certificate as root");
    connects(
        &tls_only,
        "127.0.0.1",
        &db,
        &format!("sslmode=verify-full&sslrootcert={own}"),
    )
    .await
    .expect("the certificate names 127.0.0.1 too");
    // allow: plaintext first; the server refuses it; then TLS.
    connects(&tls_only, "127.0.0.1", &db, "sslmode=allow")
        .await
        .expect("allow falls back to TLS");
    let error = connects(&tls_only, "127.0.0.1", &db, "sslmode=disable")
        .await
        .expect_err("disable is refused by a TLS-only server");
    assert!(!error.contains("TLS handshake"), "{error}");
    drop(tls_only);

    // prefer: a failed handshake (here: a certificate not signed by sslrootcert) falls back to
    // plaintext where the server accepts it; require does not.
    let Some(either) = PgBouncer::start_with_tls(
        "prefer_falls_back_to_plaintext",
        "session",
        2,
        Some("allow"),
    ) else {
        return;
    };
    connects(
        &either,
        "127.0.0.1",
        &db,
        &format!("sslmode=prefer&sslrootcert={other}"),
    )
    .await
    .expect("prefer falls back to plaintext");
    let error = connects(
        &either,
        "127.0.0.1",
        &db,
        &format!("sslmode=require&sslrootcert={other}"),
    )
    .await
    .expect_err("require does not fall back");
    assert!(
        error.contains("not signed by any certificate in sslrootcert"),
        "{error}"
    );
}
