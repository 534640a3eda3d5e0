//! `run --until-done` records every project and a second run asks nothing; a registry without
//! GitLab's API stops `run` at once, before anything is recorded. (The demo's own tests are in
//! `demo`.)

use crate::common::TestApp;
use std::time::Duration;

use crate::common::assert_rows_match;
use crate::common::process::{cli, service_env};
use registry_repair::demo::seed::World;
use registry_repair::registry::simulator::ApiMode;

#[actix_rt::test]
async fn run_until_done_records_every_project_and_a_second_run_asks_the_registry_nothing() {
    let world = World::generate(400, 11);
    let TestApp { db, registry, .. } = TestApp::prepare(&world).await;
    let env = service_env(&db, &registry.url(), "127.0.0.1:0").set("WORKER__MAX_CONCURRENCY", "8");

    let first = cli(&["run", "--until-done"], &env, Duration::from_secs(60)).await;
    first.assert_exit(0).assert_no_panic();
    assert_rows_match(&world, &db).await;
    let asked = registry.stats();
    assert!(
        asked.list_requests >= world.projects.len() as u64 - 1,
        "every routed project was asked for: {asked:?}"
    );
    assert_eq!(asked.unauthorized, 0, "every token was accepted");

    let second = cli(&["run", "--until-done"], &env, Duration::from_secs(30)).await;
    second.assert_exit(0).assert_no_panic();
    assert_eq!(
        registry.stats().list_requests,
        asked.list_requests,
        "a second run must not ask the registry anything\n{}",
        second.dump()
    );
    assert_rows_match(&world, &db).await;
}

#[actix_rt::test]
async fn a_registry_without_gitlabs_api_stops_run_before_anything_is_recorded() {
    let world = World::generate(60, 5);
    let TestApp { db, registry, .. } = TestApp::prepare(&world).await;
    let cases = [
        // Debian's docker-registry, or GitLab's without its metadata database.
        (ApiMode::Distribution, registry.url(), "answered 404"),
        // A path prefix the registry does not serve.
        (
            ApiMode::Gitlab,
            format!("{}/registry", registry.url()),
            "answered 404",
        ),
        // http:// to a registry that redirects to https://.
        (ApiMode::RedirectToHttps, registry.url(), "answered 301"),
    ];
    for (mode, url, answered) in cases {
        registry.set_api_mode(mode);
        let env = service_env(&db, &url, "127.0.0.1:0");
        let out = cli(&["run", "--until-done"], &env, Duration::from_secs(30)).await;
        out.assert_exit(1)
            .assert_stderr_has("registry.url")
            .assert_stderr_has(&url)
            .assert_stderr_has(answered)
            .assert_no_panic();
        if answered.ends_with("404") {
            out.assert_stderr_has("metadata database");
        } else {
            out.assert_stderr_has("https://");
        }
        assert!(
            out.elapsed < Duration::from_secs(10),
            "{mode:?} must stop at once:\n{}",
            out.dump()
        );
        assert_eq!(
            registry.stats().list_requests,
            0,
            "{mode:?}: nothing listed"
        );
        assert!(db.rows().await.is_empty(), "{mode:?}: nothing recorded");
    }
}
