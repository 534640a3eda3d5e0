//! Operating it the GitLab way: GitLab's own switches steer it, Prometheus scrapes it, reports and
//! logs say what an operator needs and never a secret.

use std::collections::HashMap;
use std::time::Duration;

use crate::common;
use crate::common::process::{busy_world, cli, service_env};
use crate::common::{eventually, TestApp, TestDb};
use registry_repair::admin::{AdminClient, AdminError};
use registry_repair::analysis::Analysis;
use registry_repair::config::ControlSource;
use registry_repair::demo::seed::World;
use registry_repair::registry::simulator::RegistrySimulator;
use registry_repair::scheduler::RunEnd;

pub(crate) async fn set_gitlab_switches(db: &TestDb, max_concurrency: i32, flag_on: bool) {
    db.execute(&format!(
        "DELETE FROM application_settings; \
         INSERT INTO application_settings (container_registry_data_repair_detail_worker_max_concurrency) VALUES ({max_concurrency}); \
         DELETE FROM feature_gates; DELETE FROM features; \
         INSERT INTO features (key, created_at, updated_at) VALUES ('registry_data_repair_worker', now(), now())"
    ))
    .await;
    if flag_on {
        db.execute(
            "INSERT INTO feature_gates (feature_key, key, value, created_at, updated_at) \
             VALUES ('registry_data_repair_worker', 'boolean', 'true', now(), now())",
        )
        .await;
    }
}

#[actix_rt::test]
async fn gitlabs_application_setting_and_feature_flag_steer_the_service() {
    let world = busy_world(600);
    let mut app = TestApp::prepare(&world).await;
    set_gitlab_switches(&app.db, 2, true).await;
    app.registry.set_latency(Duration::from_millis(100));
    app.settings.control.source = ControlSource::Gitlab;
    app.settings.control.poll_interval = Duration::from_millis(200);
    // The configuration says otherwise; GitLab wins.
    app.settings.worker.max_concurrency = 9;
    app.start(false).await;
    let reg = &app.registry;
    common::assert_in_flight_settles_at(reg, 2, Duration::from_secs(5)).await;

    app.db
        .execute("UPDATE application_settings SET container_registry_data_repair_detail_worker_max_concurrency = 6")
        .await;
    // Two poll intervals and a request latency when the machine is idle; under load it takes
    // longer, and the bound only has to catch a switch that is never followed.
    assert!(
        eventually(Duration::from_secs(5), || async {
            reg.stats().in_flight == 6
        })
        .await,
        "6 in flight after the setting changed"
    );

    app.db.execute("DELETE FROM feature_gates").await;
    // No in-flight request is no proof by itself: the Scheduler may not have seen the flag yet.
    let scheduler = app.service().scheduler.clone();
    assert!(
        common::status_becomes(&scheduler, Duration::from_secs(5), |s| !s.enabled).await,
        "the flag off reaches the Scheduler"
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            reg.stats().in_flight == 0
        })
        .await
    );
    let before = reg.stats().list_requests;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        reg.stats().list_requests,
        before,
        "the flag off stops new requests"
    );

    // The admin API's switches say where the real ones live.
    let admin = AdminClient::new(app.service().admin_addr.expect("the admin API"), None);
    match admin.set_concurrency(3).await {
        Err(AdminError::Refused {
            status: 409,
            message,
            ..
        }) => {
            assert!(
                message.contains("container_registry_data_repair_detail_worker_max_concurrency"),
                "{message}"
            );
            assert!(message.contains("registry_data_repair_worker"), "{message}");
        }
        other => panic!("expected 409, got {other:?}"),
    }
    assert!(matches!(
        admin.set_enabled(true).await,
        Err(AdminError::Refused { status: 409, .. })
    ));
    assert!(admin
        .status()
        .await
        .is_ok_and(|s| !s.enabled && s.max_concurrency == 6));
    assert_eq!(app.stop().await, RunEnd::Stopped);
}

/// `name{labels}` → value, for every sample; panics on a line that is not Prometheus text.
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let words: Vec<&str> = comment.split_whitespace().collect();
            assert!(
                matches!(words.first(), Some(&"HELP") | Some(&"TYPE")),
                "comment: {line}"
            );
            if words[0] == "TYPE" {
                assert!(
                    matches!(
                        words.get(2),
                        Some(&"counter") | Some(&"gauge") | Some(&"histogram")
                    ),
                    "type: {line}"
                );
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("sample: {line}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "metric name: {line}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "labels: {line}");
        }
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value: {line}"));
        samples.insert(series.to_string(), value);
    }
    samples
}

async fn scrape(addr: std::net::SocketAddr) -> HashMap<String, f64> {
    let response = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("scrape");
    assert_eq!(response.status(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    parse_prometheus(&response.text().await.expect("body"))
}

#[actix_rt::test]
async fn metrics_parse_as_prometheus_text_and_move_as_the_run_progresses() {
    let mut world = busy_world(400);
    // Last in id order: a project without a route (failed) and one with stray registry entries.
    let group = world.groups[0].id;
    let stray = world.project(group, "Stray", &["x"], &[]);
    world.project_without_route(group, "Orphan");
    let stray_path = world
        .projects
        .iter()
        .find(|p| p.id == stray)
        .and_then(|p| p.full_path.clone())
        .expect("route")
        .to_lowercase();
    let mut app = TestApp::prepare(&world).await;
    app.registry.add_foreign_entries(
        &stray_path,
        &["busy-org/elsewhere/a", "busy-org/elsewhere/b"],
    );
    app.registry.set_latency(Duration::from_millis(10));
    app.settings.writer.batch_size = 20;
    // Only size flushes write while it runs (and the end of the pass).
    app.settings.writer.flush_interval = Duration::from_millis(60_000);
    app.start(false).await;
    let addr = app.service().admin_addr.expect("the admin API");
    let db = &app.db;
    assert!(db.wait_for_rows(40, Duration::from_secs(10)).await);
    let first = scrape(addr).await;
    // The concurrency gauge follows a change.
    let admin = AdminClient::new(addr, None);
    admin.set_concurrency(3).await.expect("concurrency");
    assert!(db.wait_for_rows(402, Duration::from_secs(20)).await);
    let last = scrape(addr).await;

    let moved = [
        "registry_repair_projects_analysed_total{status=\"completed\"}",
        "registry_repair_missing_repositories_found_total",
        "registry_repair_registry_requests_total{code=\"200\"}",
        "registry_repair_registry_request_duration_seconds_count",
        "registry_repair_registry_request_duration_seconds_bucket{le=\"+Inf\"}",
        "registry_repair_writer_rows_written_total",
        "registry_repair_writer_flushes_total{reason=\"size\"}",
        "registry_repair_projects_analysed_total{status=\"failed\"}",
        "registry_repair_ignored_entries_total",
        "registry_repair_max_concurrency",
    ];
    for series in moved {
        let (a, b) = (first.get(series), last.get(series));
        assert!(
            matches!((a, b), (Some(a), Some(b)) if b > a),
            "{series}: {a:?} then {b:?}"
        );
    }
    assert_eq!(
        last["registry_repair_projects_analysed_total{status=\"completed\"}"],
        401.0
    );
    assert_eq!(
        last["registry_repair_projects_analysed_total{status=\"failed\"}"],
        1.0
    );
    assert_eq!(last["registry_repair_ignored_entries_total"], 2.0);
    let seeded: i32 = world.expected().values().map(|e| e.missing).sum();
    assert_eq!(
        last["registry_repair_missing_repositories_found_total"],
        f64::from(seeded)
    );
    for series in [
        "registry_repair_in_flight",
        "registry_repair_max_concurrency",
        "registry_repair_enabled",
        "registry_repair_writer_buffered",
        "registry_repair_breaker_open",
        "registry_repair_writer_flushes_total{reason=\"timer\"}",
        "registry_repair_writer_flushes_total{reason=\"failure\"}",
        "registry_repair_writer_flushes_total{reason=\"shutdown\"}",
    ] {
        assert!(last.contains_key(series), "{series} missing");
    }
    assert_eq!(last["registry_repair_max_concurrency"], 3.0);
    assert_eq!(last["registry_repair_enabled"], 1.0);
    assert_eq!(last["registry_repair_breaker_open"], 0.0);
    // Histogram buckets never decrease with `le`.
    let mut buckets: Vec<(f64, f64)> = last
        .iter()
        .filter_map(|(k, v)| {
            let le = k
                .strip_prefix("registry_repair_registry_request_duration_seconds_bucket{le=\"")?
                .strip_suffix("\"}")?;
            Some((le.parse::<f64>().unwrap_or(f64::INFINITY), *v))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
    assert_eq!(app.stop().await, RunEnd::Stopped);
}

#[derive(diesel::QueryableByName, Debug)]
struct DirectTotals {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    analysed: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    completed: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    failed: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    with_missing: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    missing: i64,
}

#[actix_rt::test]
async fn report_json_agrees_with_the_tracking_table_and_lists_namespaces_and_min_missing() {
    use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
    let world = World::generate(300, 5);
    let db = TestDb::new().await;
    world.insert(&db.database()).await.expect("seed");
    let registry =
        RegistrySimulator::start(world.registry_paths(), common::trusted(), 0).expect("registry");
    let admin = format!("127.0.0.1:{}", common::process::free_port());
    let env = service_env(&db, &registry.url(), &admin).set("WORKER__MAX_CONCURRENCY", "8");
    cli(&["run", "--until-done"], &env, Duration::from_secs(60))
        .await
        .assert_exit(0);

    let out = cli(
        &[
            "report",
            "--format",
            "json",
            "--top",
            "1000",
            "--namespaces",
            "100",
        ],
        &env,
        Duration::from_secs(20),
    )
    .await;
    out.assert_exit(0);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    let mut conn = AsyncPgConnection::establish(&db.url)
        .await
        .expect("connect");
    let direct: DirectTotals = diesel::sql_query(
        "SELECT count(*) AS analysed, count(*) FILTER (WHERE status = 1) AS completed, \
                count(*) FILTER (WHERE status = 2) AS failed, \
                count(*) FILTER (WHERE status = 1 AND missing_count > 0) AS with_missing, \
                COALESCE(sum(missing_count) FILTER (WHERE status = 1), 0)::bigint AS missing \
         FROM container_registry_data_repair_details",
    )
    .get_result(&mut conn)
    .await
    .expect("totals");
    let t = &report["totals"];
    assert_eq!(t["projects"], 300);
    assert_eq!(t["analysed"], direct.analysed);
    assert_eq!(t["completed"], direct.completed);
    assert_eq!(t["failed"], direct.failed);
    assert_eq!(t["pending"], 300 - direct.analysed);
    assert_eq!(t["projects_with_missing"], direct.with_missing);
    assert_eq!(t["missing"], direct.missing);
    let seeded: i64 = world
        .expected()
        .values()
        .map(|e| i64::from(e.missing))
        .sum();
    assert_eq!(direct.missing, seeded);

    // Only namespaces with something missing are ranked, and they add up to the missing total;
    // each project is under its own top-level group.
    let namespaces = report["namespaces"].as_array().expect("namespaces");
    let sum = |field: &str| -> i64 {
        namespaces
            .iter()
            .map(|n| n[field].as_i64().unwrap_or(0))
            .sum()
    };
    assert!(namespaces.iter().all(|n| n["missing"].as_i64() > Some(0)));
    assert!(
        sum("analysed") < direct.analysed,
        "namespaces with nothing missing are left out"
    );
    assert_eq!(sum("missing"), direct.missing);
    assert_eq!(sum("projects_with_missing"), direct.with_missing);
    assert!(namespaces.iter().any(|n| n["namespace"] == "Gitlab-Org"));
    let top = report["top_missing"].as_array().expect("top");
    assert_eq!(top.len() as i64, direct.with_missing);
    assert_eq!(top[0]["full_path"], "Gitlab-Org/Build/CNG-Mirror");
    assert_eq!(top[0]["missing_count"], 1000);

    let out = cli(
        &[
            "report",
            "--format",
            "json",
            "--min-missing",
            "5",
            "--top",
            "1000",
        ],
        &env,
        Duration::from_secs(20),
    )
    .await;
    let filtered: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    let listed = filtered["top_missing"].as_array().expect("top");
    let expected = world.expected().values().filter(|e| e.missing >= 5).count();
    assert_eq!(listed.len(), expected);
    assert!(listed
        .iter()
        .all(|p| p["missing_count"].as_i64() >= Some(5)));
    let csv = cli(
        &["report", "--format", "csv"],
        &env,
        Duration::from_secs(20),
    )
    .await;
    // The namespace block's first columns are the ones it always had.
    assert!(csv
        .stdout
        .contains("\nnamespace,analysed,completed,failed,projects_with_missing,missing,"));
}

#[actix_rt::test]
async fn json_logs_are_one_event_per_line_with_progress_and_never_a_secret() {
    let world = busy_world(150);
    let db = TestDb::new().await;
    world.insert(&db.database()).await.expect("seed");
    let registry =
        RegistrySimulator::start(world.registry_paths(), common::trusted(), 0).expect("registry");
    registry.set_latency(Duration::from_millis(15));
    let admin = format!("127.0.0.1:{}", common::process::free_port());
    // Trust authentication ignores the password; it must still never be printed.
    let url_with_password = db.url.replacen("postgres@", "postgres:pw-SECRET-456@", 1);
    let env = service_env(&db, &registry.url(), &admin)
        .set("DATABASE__URL", url_with_password)
        .set("ADMIN__TOKEN", "tok-SECRET-123")
        .set("LOG__FORMAT", "json")
        .set("LOG__LEVEL", "debug")
        .set("LOG__PROGRESS_INTERVAL_S", "1");
    let out = cli(&["run", "--until-done"], &env, Duration::from_secs(60)).await;
    out.assert_exit(0);
    let key = std::fs::read_to_string(common::fixture_key_path()).expect("key");
    let key_line = key.lines().nth(1).expect("key body");
    for line in out.stderr.lines().filter(|l| !l.trim().is_empty()) {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            event.get("level").is_some() && event.get("message").is_some(),
            "{line}"
        );
        for secret in ["SECRET", "eyJ", key_line] {
            assert!(!line.contains(secret), "a secret in the log: {line}");
        }
    }
    let progress: Vec<serde_json::Value> = out
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["message"] == "progress")
        .collect();
    assert!(
        !progress.is_empty(),
        "a progress line every second:\n{}",
        out.stderr
    );
    assert!(progress.iter().any(|e| e["total"] == 150), "{progress:?}");
    assert!(
        out.stderr.contains("postgres:***@"),
        "the URL is logged redacted"
    );
}

#[actix_rt::test]
async fn rows_gitlabs_own_worker_left_stay_but_stale_ongoing_ones_are_analysed_and_counts_itemised()
{
    let mut world = World::new();
    let g = world.group(None, "Where-Gitlab-Ran");
    let names = ["", "a", "b"];
    let ids: Vec<i64> = (0..6)
        .map(|i| world.project(g, &format!("P{i}"), &names, &names[..1]))
        .collect();
    let mut app = TestApp::prepare(&world).await;
    app.db
        .execute(&format!(
            "INSERT INTO container_registry_data_repair_details (project_id, missing_count, status, created_at, updated_at) VALUES \
             ({}, 5, 1, now(), now()), \
             ({}, 0, 2, now(), now()), \
             ({}, 0, 0, now() - interval '3 hours', now() - interval '3 hours'), \
             ({}, 0, 0, now() - interval '10 minutes', now() - interval '10 minutes')",
            ids[0], ids[1], ids[2], ids[3]
        ))
        .await;
    assert_eq!(app.run_until_done().await, RunEnd::Done);
    let rows = app.rows_by_project().await;
    let got = |id: i64| (rows[&id].status, rows[&id].missing_count);
    use registry_repair::db::tracking::TrackingStatus;
    assert_eq!(
        got(ids[0]),
        (TrackingStatus::Completed, 2),
        "GitLab's count without its repositories is listed again and itemised"
    );
    assert_eq!(
        got(ids[1]),
        (TrackingStatus::Failed, 0),
        "failed stays without --retry-failed"
    );
    assert_eq!(
        got(ids[2]),
        (TrackingStatus::Completed, 2),
        "a stale ongoing row is analysed again"
    );
    assert_eq!(
        got(ids[3]),
        (TrackingStatus::Ongoing, 0),
        "a young one may be GitLab at work"
    );
    assert_eq!(got(ids[4]), (TrackingStatus::Completed, 2));
    let path = |id: i64| {
        format!(
            "where-gitlab-ran/p{}",
            ids.iter().position(|&i| i == id).unwrap_or(99)
        )
    };
    for id in [ids[1], ids[3]] {
        assert_eq!(
            app.registry.requests_for(&path(id)),
            0,
            "project {id} not asked"
        );
    }
    assert_eq!(app.registry.requests_for(&path(ids[0])), 1, "itemised once");

    app.settings.worker.rescan_interval = Duration::from_secs(1);
    let analysis = Analysis {
        until_done: true,
        retry_failed: true,
        ..Analysis::new(&app.settings)
    };
    let service = registry_repair::service::start(
        &app.settings,
        app.signer.clone(),
        analysis,
        Default::default(),
    )
    .await
    .expect("starts");
    assert_eq!(common::run_to_end(service).await, RunEnd::Done);
    let rows = app.rows_by_project().await;
    assert_eq!(
        (rows[&ids[1]].status, rows[&ids[1]].missing_count),
        (TrackingStatus::Completed, 2),
        "--retry-failed replaces GitLab's failed row"
    );
    assert_eq!(
        rows[&ids[0]].missing_count, 2,
        "and nothing else: the itemised row stays"
    );
    assert_eq!(
        app.registry.requests_for(&path(ids[0])),
        1,
        "not listed again once itemised"
    );
}

#[actix_rt::test]
async fn a_project_whose_transaction_commits_late_is_analysed_once_it_commits() {
    use diesel::sql_types::BigInt;
    use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
    #[derive(diesel::QueryableByName)]
    struct Id {
        #[diesel(sql_type = BigInt)]
        id: i64,
    }
    let mut world = World::new();
    let g = world.group(None, "Busy");
    for i in 0..30 {
        world.project(g, &format!("P{i}"), &["", "img"], &[""]);
    }
    let mut app = TestApp::prepare(&world).await;
    // This test keeps a transaction open, which holds back every watermark of the cluster.
    let _open = common::keeping_a_transaction_open().await;
    app.registry.add_repository("busy/late/img");
    app.registry.add_repository("busy/later/img");
    app.start(false).await;
    assert!(app.db.wait_for_rows(30, Duration::from_secs(30)).await);

    // Project A: GitLab's Projects::CreateService takes its id, then its transaction stays open.
    let mut late = AsyncPgConnection::establish(&app.db.url)
        .await
        .expect("connects");
    late.batch_execute("BEGIN").await.expect("begin");
    let a: Id = diesel_async::RunQueryDsl::get_result(
        diesel::sql_query(format!(
            "INSERT INTO projects (name, path, namespace_id, created_at, updated_at) \
             VALUES ('Late', 'Late', {g}, now(), now()) RETURNING id"
        )),
        &mut late,
    )
    .await
    .expect("insert A");
    let a = a.id;
    late.batch_execute(&format!(
        "INSERT INTO routes (source_id, source_type, path) VALUES ({a}, 'Project', 'Busy/Late')"
    ))
    .await
    .expect("route A");
    // Project B comes after it and commits at once; it is analysed.
    app.db
        .execute(&format!(
            "INSERT INTO projects (name, path, namespace_id, created_at, updated_at) \
             VALUES ('Later', 'Later', {g}, now(), now()); \
             INSERT INTO routes (source_id, source_type, path) \
             VALUES (currval('projects_id_seq'), 'Project', 'Busy/Later')"
        ))
        .await;
    assert!(app.db.wait_for_rows(31, Duration::from_secs(30)).await);
    let rows = app.rows_by_project().await;
    assert!(!rows.contains_key(&a));
    let b = *rows.keys().max().expect("rows");
    assert!(b > a, "B ({b}) has a higher id than A ({a})");

    // Several rescans while A's transaction is open; each pass's end moves the watermark.
    let pass = app.status().await.pass;
    let scheduler = app.service().scheduler.clone();
    assert!(
        common::status_becomes(&scheduler, Duration::from_secs(30), |s| s.pass >= pass + 3).await
    );
    let status = app.status().await;
    assert!(
        status.watermark < a,
        "the watermark ({}) must not pass a project that may still commit ({a})",
        status.watermark
    );

    late.batch_execute("COMMIT").await.expect("commit");
    assert!(
        eventually(Duration::from_secs(30), || async {
            app.rows_by_project().await.contains_key(&a)
        })
        .await,
        "A is analysed after it commits"
    );
    let row = &app.rows_by_project().await[&a];
    assert_eq!(row.missing_count, 1);
    assert_eq!(app.stop().await, RunEnd::Stopped);
}
