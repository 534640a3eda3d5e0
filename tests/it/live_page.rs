//! The live page (`GET /`) in headless Chromium against a real service and the simulator: the
//! figures it shows are the ones `status` and `damage` answer; logging in with HTTP Basic through
//! the URL when `admin.token` is set, and where Basic is refused; the damage's database error shown
//! instead of figures; the damage totals kept for a few seconds.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::chromium::Chromium;
use crate::common::{eventually, status_becomes, TestApp};
use registry_repair::db::missing::{self, Damage};
use registry_repair::demo::seed::World;
use registry_repair::scheduler::{
    BreakerPosition, RunEnd, ServiceState, ServiceStatus, SetConcurrency,
};

const TOKEN: &str = "Tok3n-for-the-page";
/// No second pass while a test compares the page with `status`: the state stays `idle`.
const QUIET: Duration = Duration::from_secs(600);
/// Enough virtual time for the page to fetch `status` and `damage` and fill the figures in.
const BUDGET_MS: u32 = 5000;

/// `n` projects in three groups: the registry holds `app` and `app/cache` under each, GitLab's
/// database only `app`.
fn world(n: usize) -> World {
    let mut w = World::new();
    let groups = [
        w.group(None, "Platform"),
        w.group(None, "Payments"),
        w.group(None, "Mobile"),
    ];
    for i in 0..n {
        w.project(
            groups[i % groups.len()],
            &format!("service-{i}"),
            &["app", "app/cache"],
            &["app"],
        );
    }
    w
}

/// Starts the service on `world`, with `admin.token` when given.
async fn started(world: &World, token: Option<&str>) -> TestApp {
    let mut app = TestApp::prepare(world).await;
    app.settings.admin.token = token.map(Into::into);
    app.settings.worker.max_concurrency = 4;
    app.settings.worker.rescan_interval = QUIET;
    app.start(false).await;
    app
}

/// Waits until every project has a row and the service sits idle with nothing left.
async fn finished(app: &TestApp, world: &World) -> ServiceStatus {
    assert!(
        app.db
            .wait_for_rows(world.projects.len(), Duration::from_secs(60))
            .await,
        "every project gets a row"
    );
    assert!(
        status_becomes(&app.service().scheduler, Duration::from_secs(30), |s| {
            s.state == ServiceState::Idle && s.in_flight == 0 && s.remaining == Some(0)
        })
        .await,
        "the service sits idle: {:?}",
        app.status().await
    );
    app.status().await
}

/// Records `sizes` as missing repositories of the first projects of `world` that have a row (one
/// repository each, round robin over three projects); `None` is a size not known.
async fn record_damage(app: &TestApp, world: &World, sizes: &[Option<i64>]) {
    let ids: Vec<i64> = world.projects.iter().take(3).map(|p| p.id).collect();
    let mut sql = String::new();
    for (i, size) in sizes.iter().enumerate() {
        let id = ids[i % ids.len()];
        let size = size.map_or("NULL".to_string(), |s| s.to_string());
        sql.push_str(&format!(
            "INSERT INTO registry_repair_missing_repositories \
               (project_id, registry_path, name, size_bytes) \
             VALUES ({id}, 'recorded/by-hand/{i}', 'by-hand/{i}', {size});"
        ));
    }
    app.db.execute(&sql).await;
}

async fn damage_in_db(app: &TestApp) -> Damage {
    missing::damage(&app.db.database())
        .await
        .expect("the damage totals")
}

/// `GET path` of the admin API with `auth` applied.
async fn get(
    addr: SocketAddr,
    path: &str,
    auth: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
) -> reqwest::Response {
    auth(reqwest::Client::new().get(format!("http://{addr}{path}")))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

async fn status_over_http(addr: SocketAddr, token: Option<&str>) -> ServiceStatus {
    get(addr, "/status", |r| match token {
        Some(token) => r.bearer_auth(token),
        None => r,
    })
    .await
    .json()
    .await
    .expect("status is JSON")
}

async fn damage_over_http(addr: SocketAddr) -> Damage {
    let answer = get(addr, "/damage", |r| r).await;
    assert_eq!(answer.status(), 200);
    answer.json().await.expect("damage is JSON")
}

/// The text of the element with `id` in `dom` (its first text node), and its `title`.
fn element(dom: &str, id: &str) -> (String, Option<String>) {
    let marker = format!("id=\"{id}\"");
    let at = dom
        .find(&marker)
        .unwrap_or_else(|| panic!("no element #{id} in the page:\n{dom}"));
    let tag_end = at + dom[at..].find('>').expect("the tag closes");
    let tag = &dom[at..tag_end];
    let title = tag.find("title=\"").map(|t| {
        let rest = &tag[t + "title=\"".len()..];
        unescape(&rest[..rest.find('"').unwrap_or(rest.len())])
    });
    let rest = &dom[tag_end + 1..];
    let text = unescape(&rest[..rest.find('<').unwrap_or(rest.len())]);
    (text, title)
}

fn text(dom: &str, id: &str) -> String {
    element(dom, id).0
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// A count as the page writes it (en-US grouping: `1,234`).
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Whether the element `id` is hidden (its tag carries `hidden`).
fn hidden(dom: &str, id: &str) -> bool {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no element #{id}"));
    let start = dom[..at].rfind('<').expect("a tag");
    let end = at + dom[at..].find('>').expect("the tag closes");
    dom[start..end].contains(" hidden")
}

/// The page's DOM, read while the service's state stays as it was before and after (a few tries),
/// and the status read after it.
async fn steady_page(
    chromium: &Arc<Chromium>,
    page: &str,
    addr: SocketAddr,
) -> (String, ServiceStatus) {
    for _ in 0..5 {
        let before = status_over_http(addr, None).await;
        let dom = dom_of(chromium, page, BUDGET_MS).await;
        let after = status_over_http(addr, None).await;
        if before.state == after.state {
            return (dom, after);
        }
    }
    panic!("the service's state never held still while the page was read");
}

/// The page shows `s` (`/status`) and `d` (`/damage`).
fn assert_page_shows(dom: &str, s: &ServiceStatus, d: &Damage) {
    assert_eq!(text(dom, "state"), s.state.to_string());
    assert_eq!(text(dom, "analysed"), grouped(s.analysed));
    let remaining = s.remaining.expect("counted");
    assert_eq!(text(dom, "total"), grouped(s.analysed + remaining));
    assert_eq!(text(dom, "remaining"), grouped(remaining));
    assert_eq!(
        text(dom, "progress-text"),
        format!(
            "{} of {} projects analysed (100.0 %)",
            grouped(s.analysed),
            grouped(s.analysed + remaining)
        )
    );
    assert!(
        dom.contains(&format!("max=\"{}\"", s.analysed + remaining))
            && dom.contains(&format!("value=\"{}\"", s.analysed)),
        "the progress bar holds the figures"
    );
    assert_eq!(text(dom, "eta"), "done");
    assert_eq!(text(dom, "completed"), grouped(s.completed));
    assert_eq!(text(dom, "failed"), grouped(s.failed));
    assert_eq!(text(dom, "deferred"), grouped(s.deferred));
    assert_eq!(
        text(dom, "max-concurrency"),
        grouped(s.max_concurrency as u64)
    );
    assert_eq!(text(dom, "in-flight"), grouped(s.in_flight as u64));
    assert_eq!(text(dom, "queued"), grouped(s.queued as u64));
    assert_eq!(text(dom, "breaker"), s.breaker.to_string());
    assert_eq!(text(dom, "breaker-trips"), grouped(s.breaker_trips));
    assert_eq!(
        text(dom, "last-error"),
        s.last_error.clone().unwrap_or_else(|| "none".into())
    );
    assert!(
        text(dom, "connection").starts_with("Updated "),
        "{}",
        text(dom, "connection")
    );
    assert!(hidden(dom, "fleet"), "one member: no fleet table");
    assert!(hidden(dom, "damage-error"));
    assert_eq!(text(dom, "damage-projects"), grouped(d.projects as u64));
    assert_eq!(
        text(dom, "damage-repositories"),
        grouped(d.repositories as u64)
    );
    assert_eq!(text(dom, "damage-unknown"), grouped(d.unknown_sizes as u64));
    let (bytes, exact) = element(dom, "damage-bytes");
    assert_eq!(bytes, binary_units(d.bytes));
    assert_eq!(exact, Some(format!("{} bytes", grouped(d.bytes as u64))));
}

/// A size as the page writes it: binary units, one decimal.
fn binary_units(bytes: i64) -> String {
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    let units = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    while value >= 1024.0 && unit < units.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", units[unit])
}

/// The rate the page shows, in projects per second.
fn rate(dom: &str) -> f64 {
    let shown = text(dom, "rate");
    shown
        .strip_suffix(" projects/s")
        .and_then(|r| r.replace(',', "").parse().ok())
        .unwrap_or_else(|| panic!("a rate: {shown}"))
}

/// The DOM of `url` after `budget_ms` of the page's time. Chromium runs off this thread: the
/// test's thread is the actix System's, which answers the page's calls.
async fn dom_of(chromium: &Arc<Chromium>, url: &str, budget_ms: u32) -> String {
    let (chromium, url) = (chromium.clone(), url.to_string());
    tokio::task::spawn_blocking(move || chromium.dump_dom(&url, budget_ms))
        .await
        .expect("chromium ran")
}

const GIB: i64 = 1024 * 1024 * 1024;
const MIB: i64 = 1024 * 1024;

#[actix_rt::test]
async fn the_page_shows_the_figures_status_and_damage_answer() {
    let Some(chromium) = Chromium::find("the_page_shows_the_figures_status_and_damage_answer")
    else {
        return;
    };
    let chromium = Arc::new(chromium);
    let world = world(240);
    let mut app = TestApp::prepare(&world).await;
    app.settings.worker.max_concurrency = 4;
    app.settings.worker.rescan_interval = QUIET;
    app.registry.set_latency(Duration::from_millis(20));
    // One project the registry keeps answering 503 for: it ends `failed`.
    let refused = world.projects[7].full_path.clone().expect("a route");
    app.registry.refuse(&refused.to_lowercase(), 503);
    app.start(false).await;
    let addr = app.service().admin_addr.expect("the admin API");
    let page = format!("http://{addr}/");

    // Part way, slowed down: the picture for the docs.
    let scheduler = app.service().scheduler.clone();
    assert!(
        status_becomes(&scheduler, Duration::from_secs(30), |s| s.analysed >= 100).await,
        "the run gets going"
    );
    // A short outage: the breaker trips and closes again, and leaves its last error.
    app.registry.set_outage(true);
    assert!(
        status_becomes(&scheduler, Duration::from_secs(20), |s| s.breaker
            == BreakerPosition::Open)
        .await,
        "the breaker opens"
    );
    app.registry.set_outage(false);
    scheduler.send(SetConcurrency(1)).await.expect("send");
    app.registry.set_latency(Duration::from_millis(400));
    assert!(
        status_becomes(&scheduler, Duration::from_secs(20), |s| s.breaker
            == BreakerPosition::Closed)
        .await,
        "the breaker closes"
    );
    record_damage(
        &app,
        &world,
        &[
            Some(GIB),
            Some(2 * GIB),
            Some(512 * MIB),
            None,
            Some(300 * MIB),
        ],
    )
    .await;
    let picture = std::env::temp_dir().join(format!("rr-live-page-{}.png", std::process::id()));
    let shot = (chromium.clone(), page.clone(), picture.clone());
    tokio::task::spawn_blocking(move || shot.0.screenshot(&shot.1, &shot.2, 1000, 700))
        .await
        .expect("chromium ran");
    let png = std::fs::read(&picture).expect("the screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    // `REGISTRY_REPAIR_UPDATE_SCREENSHOTS=1` refreshes the docs' picture.
    if std::env::var("REGISTRY_REPAIR_UPDATE_SCREENSHOTS").as_deref() == Ok("1") {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/live-page.png");
        std::fs::write(&docs, &png).expect("docs/live-page.png");
    }
    let _ = std::fs::remove_file(&picture);

    // Finished: a run that stands still is stable to compare.
    app.registry.set_latency(Duration::ZERO);
    scheduler.send(SetConcurrency(4)).await.expect("send");
    let before = finished(&app, &world).await;
    assert_eq!(before.failed, 1, "the refused project");
    assert!(
        before
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("503"))
            && before.breaker_trips == 1,
        "{before:?}"
    );
    let damage = damage_in_db(&app).await;
    assert!(damage.repositories >= 5 && damage.unknown_sizes >= 1);
    // The analysis recorded more since the page was pictured: the kept answer gives way to the
    // table's within its 5 s.
    assert!(
        eventually(Duration::from_secs(15), || async {
            damage_over_http(addr).await == damage
        })
        .await,
        "GET /damage never caught up with the table: {damage:?}"
    );

    // An idle service looks again for work every few seconds, running for a moment: the page is
    // read between two equal states.
    let (dom, after) = steady_page(&chromium, &page, addr).await;
    assert_page_shows(&dom, &after, &damage);
    // The rate falls while the service idles: the page's is between the two reads'.
    let shown = rate(&dom);
    assert!(
        after.rate_per_s - 0.05 <= shown && shown <= before.rate_per_s + 0.05,
        "rate {shown} between {} and {}",
        after.rate_per_s,
        before.rate_per_s
    );
    assert_eq!(app.stop().await, RunEnd::Stopped);
}

#[actix_rt::test]
async fn with_admin_token_the_page_logs_in_with_basic_through_the_url() {
    let Some(chromium) =
        Chromium::find("with_admin_token_the_page_logs_in_with_basic_through_the_url")
    else {
        return;
    };
    let chromium = Arc::new(chromium);
    let world = world(30);
    let mut app = started(&world, Some(TOKEN)).await;
    let addr = app.service().admin_addr.expect("the admin API");
    finished(&app, &world).await;
    record_damage(&app, &world, &[Some(3 * MIB), Some(5 * GIB)]).await;
    let damage = damage_in_db(&app).await;

    // The page's own calls to /status and /damage carry the login too: without it they would
    // be refused and no figure filled in.
    let port = addr.port();
    let url = format!("http://operator:{TOKEN}@127.0.0.1:{port}/");
    let dom = dom_of(&chromium, &url, BUDGET_MS).await;
    let s = status_over_http(addr, Some(TOKEN)).await;
    assert_page_shows(&dom, &s, &damage);

    // A wrong password, or none, shows no page.
    for url in [
        format!("http://operator:wrong-{TOKEN}@127.0.0.1:{port}/"),
        format!("http://127.0.0.1:{port}/"),
    ] {
        let dom = dom_of(&chromium, &url, 2000).await;
        assert!(
            !dom.contains("id=\"analysed\""),
            "{url} shows the page: {dom}"
        );
    }
    assert_eq!(app.stop().await, RunEnd::Stopped);
}

#[actix_rt::test]
async fn basic_is_accepted_on_the_reads_and_refused_on_the_controls() {
    let world = world(5);
    let mut app = started(&world, Some(TOKEN)).await;
    let addr = app.service().admin_addr.expect("the admin API");
    let basic = |password: &'static str| {
        move |r: reqwest::RequestBuilder| r.basic_auth("anyone", Some(password))
    };

    for path in ["/", "/status", "/damage", "/metrics"] {
        let answer = get(addr, path, basic(TOKEN)).await;
        assert_eq!(answer.status(), 200, "GET {path} with Basic");
        let answer = get(addr, path, basic("not-the-token")).await;
        assert_eq!(answer.status(), 401, "GET {path} with a wrong password");
        let answer = get(addr, path, |r| r.bearer_auth(TOKEN)).await;
        assert_eq!(answer.status(), 200, "GET {path} with the bearer token");
    }
    let page = get(addr, "/", basic(TOKEN)).await;
    assert!(page
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/html")));
    assert!(page.text().await.expect("the page").contains("<progress"));

    // The page challenges a browser to log in; the JSON calls answer as they always did.
    let anonymous = get(addr, "/", |r| r).await;
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        anonymous
            .headers()
            .get("www-authenticate")
            .map(|v| v.as_bytes()),
        Some(&b"Basic realm=\"registry-repair\""[..])
    );
    let anonymous = get(addr, "/status", |r| r).await;
    assert_eq!(anonymous.status(), 401);
    assert!(anonymous.headers().get("www-authenticate").is_none());

    // Never on the controls, even with the right token: a browser would send it cross-site.
    for path in ["/pause", "/resume", "/concurrency"] {
        let answer = reqwest::Client::new()
            .post(format!("http://{addr}{path}"))
            .basic_auth("anyone", Some(TOKEN))
            .json(&serde_json::json!({"max_concurrency": 1}))
            .send()
            .await
            .expect("the admin API answers");
        assert_eq!(answer.status(), 401, "POST {path} with Basic");
        assert!(answer.headers().get("www-authenticate").is_none());
        let body: serde_json::Value = answer.json().await.expect("JSON");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("only on the read-only GET calls")),
            "{body}"
        );
    }
    let s = app.status().await;
    assert!(
        s.enabled && s.max_concurrency == 4,
        "nothing changed: {s:?}"
    );
    assert_eq!(app.stop().await, RunEnd::Stopped);
}

#[actix_rt::test]
async fn a_database_error_shows_on_the_page_instead_of_the_damage() {
    let world = world(10);
    let mut app = started(&world, None).await;
    let addr = app.service().admin_addr.expect("the admin API");
    finished(&app, &world).await;
    app.db
        .execute("ALTER TABLE registry_repair_missing_repositories RENAME TO moved_away")
        .await;

    let answer = get(addr, "/damage", |r| r).await;
    assert_eq!(answer.status(), 503);
    let body: serde_json::Value = answer.json().await.expect("JSON");
    let error = body["error"].as_str().expect("an error").to_string();
    assert!(
        error.contains("registry_repair_missing_repositories")
            && error.contains("totalling the recorded missing repositories"),
        "{error}"
    );

    if let Some(chromium) =
        Chromium::find("a_database_error_shows_on_the_page_instead_of_the_damage")
    {
        let dom = dom_of(&Arc::new(chromium), &format!("http://{addr}/"), BUDGET_MS).await;
        assert!(!hidden(&dom, "damage-error"));
        assert!(hidden(&dom, "damage-figures"));
        assert_eq!(text(&dom, "damage-error"), format!("No figures: {error}"));
        // The status is still shown.
        assert_eq!(text(&dom, "state"), "idle");
    }
    assert_eq!(app.stop().await, RunEnd::Stopped);
}

#[actix_rt::test]
async fn the_damage_is_read_once_for_a_few_seconds_and_then_again() {
    let world = world(6);
    let mut app = started(&world, None).await;
    let addr = app.service().admin_addr.expect("the admin API");
    finished(&app, &world).await;
    let first = damage_over_http(addr).await;
    let read_at = Instant::now();
    record_damage(&app, &world, &[Some(4096)]).await;
    let again = damage_over_http(addr).await;
    // Kept for 5 s: only a machine this slow would see the new figures already.
    if read_at.elapsed() < Duration::from_secs(4) {
        assert_eq!(again, first, "the totals are kept, not read again");
    }
    let now = damage_in_db(&app).await;
    assert_eq!(now.repositories, first.repositories + 1);
    assert!(
        eventually(Duration::from_secs(15), || async {
            damage_over_http(addr).await == now
        })
        .await,
        "the totals are read again once old"
    );
    assert_eq!(app.stop().await, RunEnd::Stopped);
}

/// A last error naming a project path that holds markup, as a registry's answer could make it.
const HOSTILE_ERROR: &str = "registry request for ev\"il&<script>alert(1)</script>/<b>app</b>: \
     the registry answered 503";

#[actix_rt::test]
async fn a_last_error_naming_a_path_that_holds_markup_shows_as_text() {
    let Some(chromium) =
        Chromium::find("a_last_error_naming_a_path_that_holds_markup_shows_as_text")
    else {
        return;
    };
    let world = world(3);
    let mut app = started(&world, None).await;
    let addr = app.service().admin_addr.expect("the admin API");
    finished(&app, &world).await;
    // The page the service serves, beside its own `status` with that error and its `damage`,
    // served from here: no registry names such a path, since the service asks for none.
    let page = get(addr, "/", |r| r).await.text().await.expect("the page");
    let mut status: serde_json::Value = get(addr, "/status", |r| r)
        .await
        .json()
        .await
        .expect("status is JSON");
    status["last_error"] = HOSTILE_ERROR.into();
    let damage: serde_json::Value = get(addr, "/damage", |r| r)
        .await
        .json()
        .await
        .expect("damage is JSON");
    let server = actix_web::HttpServer::new(move || {
        let (page, status, damage) = (page.clone(), status.clone(), damage.clone());
        actix_web::App::new()
            .route(
                "/",
                actix_web::web::get().to(move || {
                    let page = page.clone();
                    async move {
                        actix_web::HttpResponse::Ok()
                            .content_type("text/html; charset=utf-8")
                            .body(page)
                    }
                }),
            )
            .route(
                "/status",
                actix_web::web::get().to(move || {
                    let status = status.clone();
                    async move { actix_web::HttpResponse::Ok().json(status) }
                }),
            )
            .route(
                "/damage",
                actix_web::web::get().to(move || {
                    let damage = damage.clone();
                    async move { actix_web::HttpResponse::Ok().json(damage) }
                }),
            )
    })
    .workers(1)
    .disable_signals()
    .bind(("127.0.0.1", 0))
    .expect("a port for the page");
    let served = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(server);

    let dom = dom_of(&Arc::new(chromium), &format!("http://{served}/"), BUDGET_MS).await;
    assert_eq!(text(&dom, "last-error"), HOSTILE_ERROR, "{dom}");
    assert!(
        dom.contains("ev\"il&amp;&lt;script&gt;alert(1)&lt;/script&gt;/&lt;b&gt;app&lt;/b&gt;"),
        "the error is one text node: {dom}"
    );
    // The page's own script is its only one, and no element came of the error.
    assert_eq!(dom.matches("<script").count(), 1, "{dom}");
    assert!(!dom.contains("<b>"), "{dom}");
    assert!(text(&dom, "connection").starts_with("Updated "));
    handle.stop(true).await;
    assert_eq!(app.stop().await, RunEnd::Stopped);
}
