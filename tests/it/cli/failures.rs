//! Failures an operator must understand: control commands without a service, bad configuration
//! and arguments (exit 2), a database that is unreachable or never answers, a taken admin port.

use crate::common::TestApp;
use std::net::TcpListener;
use std::time::Duration;

use crate::common::fixture_key_path;
use crate::common::process::{cli, free_port, service_env, Env};
use registry_repair::demo::seed::World;

/// A database nobody listens on.
const UNREACHABLE_DB: &str = "postgres://postgres@127.0.0.1:1/x";

#[actix_rt::test]
async fn control_commands_without_a_service_say_so_and_exit_1() {
    let env = Env::new().set("ADMIN__LISTEN", format!("127.0.0.1:{}", free_port()));
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["pause"],
        &["resume"],
        &["concurrency", "3"],
    ] {
        cli(args, &env, Duration::from_secs(20))
            .await
            .assert_exit(1)
            .assert_stderr_has("no registry-repair service answers")
            .assert_no_panic();
    }
}

/// Settings for commands that must fail on the database (or on validation) before they touch a
/// registry: the registry's port is closed, the admin port free.
fn env_with_database(url: &str, connect_timeout_ms: u32) -> Env {
    Env::new()
        .set("DATABASE__URL", url)
        .set(
            "DATABASE__CONNECT_TIMEOUT_MS",
            connect_timeout_ms.to_string(),
        )
        .set("REGISTRY__URL", "http://127.0.0.1:1")
        .set(
            "REGISTRY__KEY_PATH",
            fixture_key_path().to_string_lossy().into_owned(),
        )
        .set("ADMIN__LISTEN", format!("127.0.0.1:{}", free_port()))
}

#[actix_rt::test]
async fn bad_configuration_and_arguments_exit_2_naming_what_to_fix() {
    // If validation let something through, the command fails fast here instead of touching a
    // real database or port.
    let base = env_with_database(UNREACHABLE_DB, 1000);
    let cargo_toml = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let dir = std::env::temp_dir().join(format!("rr-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let unknown_key = dir.join("unknown-key.toml");
    std::fs::write(&unknown_key, "[worker]\nspeed = 3\n").expect("writing a config file");
    let unknown_key = unknown_key.to_string_lossy().into_owned();

    let cases: Vec<(Vec<&str>, Env, &str)> = vec![
        (
            vec!["run"],
            base.clone().set("WORKER__MAX_CONCURRENCY", "-1"),
            "worker.max_concurrency",
        ),
        (
            vec!["run"],
            base.clone().set("REGISTRY__PAGE_SIZE", "5000"),
            "registry.page_size",
        ),
        (
            vec!["run"],
            base.clone().unset("REGISTRY__KEY_PATH"),
            "registry.key_path",
        ),
        (
            vec!["run"],
            base.clone().set(
                "REGISTRY__KEY_PATH",
                cargo_toml.to_string_lossy().into_owned(),
            ),
            "registry.key_path",
        ),
        (
            vec!["run"],
            base.clone()
                .set("REGISTRY__KEY_PATH", "/nonexistent/registry.key"),
            "registry.key_path",
        ),
        (
            vec!["--config", "/nonexistent.toml", "status"],
            base.clone(),
            "--config",
        ),
        (
            vec!["--config", &unknown_key, "status"],
            base.clone(),
            "speed",
        ),
        (vec!["--config", &unknown_key, "run"], base.clone(), "speed"),
        (vec!["concurrency", "-1"], base.clone(), ""),
        (vec!["concurrency", "abc"], base.clone(), "abc"),
        (vec!["report", "--format", "xml"], base.clone(), "xml"),
        (vec!["frobnicate"], base.clone(), "frobnicate"),
        // A level mistyped would be a target to `tracing`, silencing everything else.
        (
            vec!["report"],
            base.clone().set("LOG__LEVEL", "inof"),
            "`inof` is not a level (trace, debug, info, warn, error, off). Did you mean `info`?",
        ),
        (
            vec!["report"],
            base.clone().set("LOG__LEVEL", "info,registry_repair=debgu"),
            "`registry_repair=debgu`: `debgu` is not a level",
        ),
        (
            vec!["report"],
            base.clone().set("LOG__LEVEL", "verbose"),
            "configuration `log.level`",
        ),
        (
            vec!["report"],
            base.clone().var("RUST_LOG", "warning"),
            "configuration `RUST_LOG`: `warning` is not a level (trace, debug, info, warn, error, off). Did you mean `warn`?",
        ),
        (
            vec!["report"],
            base.clone().set(
                "DATABASE__URL",
                "postgres://postgres@127.0.0.1:1/x?sslmod=require",
            ),
            "`sslmod` is not a parameter of a PostgreSQL URL: did you mean `sslmode`?",
        ),
        (
            vec!["report"],
            base.clone().set(
                "DATABASE__URL",
                "postgres://postgres@127.0.0.1:1/x?aplication_name=rr",
            ),
            "did you mean `application_name`?",
        ),
        (
            vec!["run"],
            base.clone().set("REGISTRY__URL", "registry.internal:5000"),
            "`registry.internal:5000` has no scheme: write it as https://registry.internal:5000",
        ),
        (
            vec!["run"],
            base.clone().set("ADMIN__LISTEN", "no-such-host.invalid:9393"),
            "`no-such-host.invalid:9393` does not resolve",
        ),
        (
            vec!["run"],
            base.clone().set("ADMIN__LISTEN", "localhost:http"),
            "has no port number",
        ),
    ];
    for (args, env, names) in &cases {
        let out = cli(args, env, Duration::from_secs(20)).await;
        out.assert_exit(2).assert_no_panic();
        if !names.is_empty() {
            out.assert_stderr_has(names);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[actix_rt::test]
async fn a_database_that_refuses_is_named_in_plain_words_with_where_its_url_comes_from() {
    let server = crate::common::server_url();
    let missing = match server.rsplit_once('/') {
        Some((base, _)) => format!("{base}/rr_no_such_database"),
        None => panic!("a server URL with a database: {server}"),
    };
    let env = env_with_database(&missing, 5000);
    let out = cli(&["report"], &env, Duration::from_secs(20)).await;
    out.assert_exit(1)
        .assert_no_panic()
        .assert_stderr_has("cannot connect to the database at ")
        .assert_stderr_has("rr_no_such_database")
        .assert_stderr_has("the server answered: database \"rr_no_such_database\" does not exist")
        .assert_stderr_has("REGISTRY_REPAIR__DATABASE__URL");
    assert!(
        !out.stderr
            .contains("Error occurred while creating a new object")
            && !out.stderr.contains("db error"),
        "the pool's wording is gone:\n{}",
        out.dump()
    );
    // With nothing set, the default is named as such.
    let defaulted = cli(
        &["report"],
        &env.clone().unset("DATABASE__URL"),
        Duration::from_secs(20),
    )
    .await;
    defaulted.assert_exit(1).assert_stderr_has(
        "database.url is not set, so its default is used: set it in the --config file",
    );
    let refused = cli(
        &["report"],
        &env_with_database(UNREACHABLE_DB, 5000),
        Duration::from_secs(20),
    )
    .await;
    refused
        .assert_exit(1)
        .assert_stderr_has("cannot reach the server: Connection refused");
}

#[actix_rt::test]
async fn an_admin_listen_given_as_localhost_serves_and_answers_the_control_commands() {
    let mut world = World::new();
    let g = world.group(None, "Named-Group");
    world.project(g, "App", &["api"], &[]);
    let TestApp { db, registry, .. } = TestApp::prepare(&world).await;
    let listen = format!("localhost:{}", free_port());
    let env = service_env(&db, &registry.url(), &listen);
    let mut run = crate::common::process::spawn(&["run"], &env);
    assert!(
        crate::common::eventually(Duration::from_secs(30), || async {
            cli(&["status"], &env, Duration::from_secs(10)).await.code == Some(0)
        })
        .await,
        "status never answered on {listen}"
    );
    run.signal(libc::SIGTERM);
    run.wait(Duration::from_secs(30)).await.assert_exit(0);
}

#[actix_rt::test]
async fn an_unreachable_database_fails_run_and_report_quickly_naming_it() {
    let env = env_with_database(UNREACHABLE_DB, 2000);
    for args in [
        &["run"][..],
        &["run", "--until-done"],
        &["report"],
        &["migrate"],
    ] {
        let out = cli(args, &env, Duration::from_secs(20)).await;
        out.assert_exit(1)
            .assert_stderr_has("127.0.0.1:1")
            .assert_no_panic();
        assert!(
            out.elapsed < Duration::from_secs(10),
            "must give up within 10 s:\n{}",
            out.dump()
        );
    }
}

/// A "database server" that accepts connections but never answers (overloaded, or a proxy whose
/// backend is gone): only `database.connect_timeout_ms` ends the wait.
fn silent_server() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a silent server");
    let addr = listener.local_addr().expect("local address");
    (listener, format!("postgres://postgres@{addr}/x"))
}

#[actix_rt::test]
async fn a_database_that_never_answers_fails_run_and_report_after_the_connect_timeout() {
    let (_listener, url) = silent_server();
    let env = env_with_database(&url, 2000);
    let host = url
        .trim_start_matches("postgres://postgres@")
        .trim_end_matches("/x");
    for args in [&["run"][..], &["report"]] {
        let out = cli(args, &env, Duration::from_secs(20)).await;
        out.assert_exit(1).assert_stderr_has(host).assert_no_panic();
        assert!(
            out.elapsed < Duration::from_secs(10),
            "must give up after the connect timeout:\n{}",
            out.dump()
        );
    }
}

/// `migrate` honours `database.connect_timeout_ms` as `run` and `report` do (src/cli.rs passes
/// it to `db::migrate`, which waits that long for the connection): against a server that never
/// answers it exits 1 well within the harness's 10 s, rather than hanging for as long as the
/// server keeps the connection open.
#[actix_rt::test]
async fn migrate_against_a_database_that_never_answers_gives_up_after_the_connect_timeout() {
    let (_listener, url) = silent_server();
    let env = Env::new()
        .set("DATABASE__URL", &url)
        .set("DATABASE__CONNECT_TIMEOUT_MS", "2000");
    let out = cli(&["migrate"], &env, Duration::from_secs(10)).await;
    out.assert_exit(1).assert_no_panic();
}

/// `admin.listen` already taken: `service::start` binds it before it starts any actor
/// (`admin::bind`), so `run` exits 1 with a line naming `admin.listen` and the address, and
/// nothing panics on the way out (no half-started Writer or Scheduler is left to drop).
#[actix_rt::test]
async fn run_with_admin_listen_already_taken_exits_1_naming_it_without_a_panic() {
    let mut world = World::new();
    let g = world.group(None, "Port-Group");
    world.project(g, "App", &["api"], &[]);
    let TestApp { db, registry, .. } = TestApp::prepare(&world).await;
    let taken = TcpListener::bind("127.0.0.1:0").expect("taking a port");
    let listen = taken.local_addr().expect("local address").to_string();
    let env = service_env(&db, &registry.url(), &listen);
    cli(&["run"], &env, Duration::from_secs(20))
        .await
        .assert_exit(1)
        .assert_stderr_has("admin.listen")
        .assert_stderr_has(&listen)
        .assert_no_panic();
}
