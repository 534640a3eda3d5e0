//! Small holes closed: a Writer that panics anywhere (not only where the old fault was injected)
//! is restarted with every row; an answer body is read only up to its bound, so one huge answer
//! neither takes the memory nor counts as a page; no password of a database or registry URL ever
//! reaches a log line, an error or `status`; with `admin.token` set every admin call needs it.

use std::time::{Duration, Instant};

use crate::common::process::{busy_world, cli, free_port, service_env, spawn, Env, Finished};
use crate::common::{
    assert_rows_match, eventually, registry_path, signer, trusted, TestApp, TestDb, FIXTURE_KEY,
};
use registry_repair::db::tracking::TrackingRow;
use registry_repair::demo::seed::Expected;
use registry_repair::faults::WriterStep;
use registry_repair::registry::simulator::{Hostile, RegistrySimulator};
use registry_repair::registry::{RegistryClient, RegistryError};
use registry_repair::scheduler::RunEnd;
use registry_repair::writer::{GetWriterStats, Record};

// ---------------------------------------------------------------------------------------------
// The Writer
// ---------------------------------------------------------------------------------------------

#[actix_rt::test]
async fn a_writer_panic_in_any_handler_restarts_it_and_every_row_lands() {
    for step in [WriterStep::Timer, WriterStep::Flush, WriterStep::WriteDone] {
        // Each project costs one List request: a row lost in the restart would be found missing
        // by the next pass and asked for again.
        let world = busy_world(40);
        let mut app = TestApp::prepare(&world).await;
        app.faults.panic_writer_once_at(step);
        app.start(true).await;
        let writer = app.service().writer.clone();
        assert_eq!(app.run_to_end().await, RunEnd::Done, "{step:?}");
        assert_rows_match(&world, &app.db).await;
        assert_eq!(
            app.registry.stats().list_requests,
            40,
            "{step:?}: nothing lost, so nothing asked twice"
        );
        let stats = writer
            .send(GetWriterStats)
            .await
            .expect("the writer answers");
        assert_eq!(stats.restarts, 1, "{step:?}: the panic happened: {stats:?}");
    }
}

#[actix_rt::test]
async fn the_rows_of_a_failed_write_survive_a_panic_as_it_ends() {
    let world = busy_world(12);
    let mut app = TestApp::prepare(&world).await;
    // Nothing is analysed: the rows come from the test.
    app.settings.worker.enabled = false;
    app.settings.database.connect_timeout = Duration::from_millis(300);
    app.start(false).await;
    let writer = app.service().writer.clone();
    app.db.refuse_connections().await;
    app.faults.panic_writer_once_at(WriterStep::WriteDone);
    for project in &world.projects {
        writer.do_send(Record(TrackingRow::completed(project.id, 7)));
    }
    // The write fails (the database is away) and the Writer panics taking in that failure: the
    // rows were in neither the buffer nor the database, only in the write under way.
    let w = &writer;
    assert!(
        eventually(Duration::from_secs(20), || async move {
            w.send(GetWriterStats).await.is_ok_and(|s| s.restarts == 1)
        })
        .await,
        "the Writer panics and is restarted"
    );
    let stats = writer.send(GetWriterStats).await.expect("stats");
    assert_eq!(stats.rows_written, 0, "{stats:?}");
    assert_eq!(stats.buffered, 12, "the rows are held again: {stats:?}");
    app.db.allow_connections().await;
    assert!(app.db.wait_for_rows(12, Duration::from_secs(30)).await);
    let rows = app.db.rows().await;
    assert!(rows.iter().all(|r| r.missing_count == 7), "{rows:?}");
    assert_eq!(app.stop().await, RunEnd::Stopped);
}

// ---------------------------------------------------------------------------------------------
// Answer bodies
// ---------------------------------------------------------------------------------------------

const HUGE: u64 = 200 * 1024 * 1024;

#[actix_rt::test]
async fn a_body_past_its_bound_is_malformed_whether_or_not_its_length_was_declared() {
    let sim = RegistrySimulator::start(
        vec!["g/chunked/a".to_string(), "g/declared/a".to_string()],
        trusted(),
        0,
    )
    .expect("registry");
    for (path, declared) in [("g/chunked", false), ("g/declared", true)] {
        sim.set_hostile(
            path,
            Hostile::HugeBody {
                bytes: HUGE,
                declared,
            },
        );
    }
    let client = RegistryClient::new(
        &sim.url(),
        10,
        Duration::from_secs(30),
        10,
        signer(FIXTURE_KEY),
    )
    .expect("client");
    for path in ["g/chunked", "g/declared"] {
        let token = client.signer().mint(path).expect("token");
        let started = Instant::now();
        match client.list_page(path, None, &token).await {
            Err(RegistryError::Malformed { reason, .. }) => {
                // 10 entries: 10 KiB and 64 KiB of headroom.
                assert!(
                    reason.contains("longer than the 75776 bytes a page of 10 entries may take"),
                    "{path}: {reason}"
                );
                assert_eq!(reason.contains(&HUGE.to_string()), path == "g/declared");
            }
            other => panic!("{path}: expected a malformed answer, got {other:?}"),
        }
        // 200 MB over loopback would take seconds; the bound is met within the first chunks.
        assert!(started.elapsed() < Duration::from_secs(5), "{path}");
    }
    // A body within the bound is read as before.
    let token = client.signer().mint("g/other").expect("token");
    assert!(client.list_page("g/other", None, &token).await.is_ok());
}

#[actix_rt::test]
async fn a_registry_answering_one_project_with_200_mb_fails_that_project_and_memory_stays_bounded()
{
    let mut world = busy_world(60);
    let group = world.groups[0].id;
    let chunked = world.project(group, "Huge-Chunked", &["", "a"], &[]);
    let declared = world.project(group, "Huge-Declared", &["", "a"], &["a"]);
    let TestApp { db, registry, .. } = TestApp::prepare(&world).await;
    for (id, declared) in [(chunked, false), (declared, true)] {
        registry.set_hostile(
            &registry_path(&world, id),
            Hostile::HugeBody {
                bytes: HUGE,
                declared,
            },
        );
    }
    let admin = format!("127.0.0.1:{}", free_port());
    let env = service_env(&db, &registry.url(), &admin).set("WORKER__MAX_CONCURRENCY", "4");
    let mut service = spawn(&["run"], &env);
    let total = world.projects.len();
    let rows_done = db.wait_for_rows(total, Duration::from_secs(120)).await;
    if !rows_done || service.has_exited() {
        service.signal(libc::SIGTERM);
        panic!(
            "every project gets a row within 120 s\n{}",
            service.wait(Duration::from_secs(30)).await.dump()
        );
    }

    let status = cli(
        &["status", "--json"],
        &Env::new().set("ADMIN__LISTEN", &admin),
        Duration::from_secs(15),
    )
    .await;
    status.assert_exit(0);
    let status: serde_json::Value = serde_json::from_str(&status.stdout).expect("status JSON");
    service.signal(libc::SIGTERM);
    let out = service.wait(Duration::from_secs(30)).await;
    out.assert_exit(0).assert_no_panic();

    let mut expected = world.expected();
    expected.insert(chunked, Expected::FAILED);
    expected.insert(declared, Expected::FAILED);
    let rows = db.rows().await;
    assert_eq!(rows.len(), expected.len());
    for row in rows {
        let e = &expected[&row.project_id];
        assert_eq!(
            (row.status, row.missing_count),
            (e.status, e.missing),
            "project {}",
            row.project_id
        );
    }
    // As the faults table says of malformed answers: retried, then troubled, then failed.
    for id in [chunked, declared] {
        let asked = registry.requests_for(&registry_path(&world, id));
        assert!(asked >= 5, "project {id} was retried: {asked} requests");
    }
    assert!(
        out.stderr.contains("bytes a page of 1000 entries may take"),
        "the reason is logged\n{}",
        out.dump()
    );
    // Read whole, one 200 MB answer would have taken the service past 200 MiB.
    let peak = status["peak_rss_kib"].as_u64().expect("peak_rss_kib");
    assert!(peak < 100 * 1024, "peak RSS {peak} KiB\n{status}");
}

// ---------------------------------------------------------------------------------------------
// Secrets in URLs
// ---------------------------------------------------------------------------------------------

/// Every secret the tests put into URLs contains this.
const SECRET: &str = "SECRET";

fn assert_no_secret(out: &Finished) {
    for (stream, text) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        for line in text.lines() {
            assert!(
                !line.contains(SECRET) && !line.contains("reg-user"),
                "a secret on {stream}: {line}"
            );
        }
    }
}

/// `db`'s URL with a password in its userinfo and another in its query string (libpq reads
/// both; trust authentication ignores them).
fn url_with_passwords(db_url: &str) -> String {
    format!(
        "{}?sslmode=prefer&password=pw-{SECRET}-query",
        db_url.replacen("postgres@", &format!("postgres:pw-{SECRET}-userinfo@"), 1)
    )
}

/// The registry's URL with credentials in its userinfo.
fn registry_url_with_userinfo(url: &str) -> String {
    url.replacen(
        "http://",
        &format!("http://reg-user:pw-{SECRET}-registry@"),
        1,
    )
}

#[actix_rt::test]
async fn passwords_in_database_and_registry_urls_never_reach_a_log_line_or_an_error() {
    let world = busy_world(80);
    let TestApp { db, registry, .. } = TestApp::prepare(&world).await;
    let env = service_env(&db, &registry.url(), "127.0.0.1:0")
        .set("DATABASE__URL", url_with_passwords(&db.url))
        .set("REGISTRY__URL", registry_url_with_userinfo(&registry.url()))
        .set("LOG__FORMAT", "json")
        .set("LOG__LEVEL", "debug");

    // A whole run: every line is JSON, none holds a secret, and the credentials in registry.url
    // are not sent (the registry accepted every token).
    let out = cli(&["run", "--until-done"], &env, Duration::from_secs(60)).await;
    out.assert_exit(0).assert_no_panic();
    assert_no_secret(&out);
    for line in out.stderr.lines().filter(|l| !l.trim().is_empty()) {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
    assert!(out.stderr.contains("password=***"), "{}", out.dump());
    assert!(
        out.stderr.contains("http://***@127.0.0.1"),
        "{}",
        out.dump()
    );
    assert_rows_match(&world, &db).await;
    assert_eq!(registry.stats().unauthorized, 0);

    // Errors that name the database: a database that does not exist, for each command.
    let missing = url_with_passwords(&db.url).replacen(&db.name, "rr_no_such_database", 1);
    let env = env.set("DATABASE__URL", missing);
    for args in [&["run"][..], &["migrate"], &["report"]] {
        let out = cli(args, &env, Duration::from_secs(30)).await;
        out.assert_exit(1).assert_no_panic();
        assert!(
            out.stderr.contains("rr_no_such_database"),
            "the error names the database\n{}",
            out.dump()
        );
        assert_no_secret(&out);
    }
}

#[actix_rt::test]
async fn a_registry_url_with_credentials_stays_hidden_in_status_and_errors_while_it_fails() {
    let world = busy_world(10);
    let db = TestDb::new().await;
    world.insert(&db.database()).await.expect("seeding");
    // Nothing listens there: every request fails, and `last_error` says why.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let token = format!("tok-{SECRET}-admin");
    let env = service_env(&db, &dead, &admin)
        .set("DATABASE__URL", url_with_passwords(&db.url))
        .set("REGISTRY__URL", registry_url_with_userinfo(&dead))
        .set("ADMIN__TOKEN", &token)
        .set("LOG__FORMAT", "json");
    let operator = Env::new()
        .set("ADMIN__LISTEN", &admin)
        .set("ADMIN__TOKEN", &token);
    let mut service = spawn(&["run"], &env);

    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let out = cli(&["status", "--json"], &operator, Duration::from_secs(15)).await;
        if out.code == Some(0) {
            assert_no_secret(&out);
            let status: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
            if status["last_error"].is_string() {
                break out;
            }
        }
        assert!(
            Instant::now() < deadline && !service.has_exited(),
            "`status` never showed the registry's error:\n{}",
            out.dump()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(status.stdout.contains("127.0.0.1"), "{}", status.dump());

    // The token is needed for every admin call, `status` and `/metrics` included.
    let anonymous = Env::new().set("ADMIN__LISTEN", &admin);
    let refused = cli(&["status"], &anonymous, Duration::from_secs(15)).await;
    refused
        .assert_exit(1)
        .assert_no_panic()
        .assert_stderr_has("admin.token");
    assert_no_secret(&refused);
    let metrics = format!("http://{admin}/metrics");
    let http = reqwest::Client::new();
    let bare = http.get(&metrics).send().await.expect("metrics answers");
    assert_eq!(bare.status(), 401);
    let scraped = http
        .get(&metrics)
        .bearer_auth(&token)
        .send()
        .await
        .expect("metrics answers");
    assert_eq!(scraped.status(), 200);
    assert!(scraped
        .text()
        .await
        .expect("body")
        .contains("registry_repair_breaker_open 1"));

    service.signal(libc::SIGTERM);
    let out = service.wait(Duration::from_secs(30)).await;
    out.assert_exit(0).assert_no_panic();
    assert_no_secret(&out);
}
