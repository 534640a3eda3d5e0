//! What the analysis keeps of each missing repository: its path, name, the registry's creation
//! time and its size (`size=self`, with tokens naming each repository exactly), written with its
//! project's tracking row and replaced with it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::common::{self, eventually, signer, trusted, TestApp, FIXTURE_KEY};
use registry_repair::analysis::Analysis;
use registry_repair::db::missing::{self, Damage, MissingRepository};
use registry_repair::db::tracking::TrackingStatus;
use registry_repair::demo::seed::World;
use registry_repair::registry::client::Size;
use registry_repair::registry::simulator::{created_at, size_of, RegistrySimulator};
use registry_repair::registry::RegistryClient;
use registry_repair::scheduler::RunEnd;
use registry_repair::service::{self, ServiceOptions};

/// Every repository of `world` without a row, as the table must hold it, by project.
fn expected(world: &World, sizes: bool) -> BTreeMap<i64, BTreeSet<Recorded>> {
    let mut out: BTreeMap<i64, BTreeSet<Recorded>> = BTreeMap::new();
    for p in &world.projects {
        let Some(full) = &p.full_path else { continue };
        let base = full.to_lowercase();
        for name in p.registry.iter().filter(|n| !p.rails.contains(n)) {
            let path = if name.is_empty() {
                base.clone()
            } else {
                format!("{base}/{name}")
            };
            out.entry(p.id).or_default().insert(Recorded {
                created: chrono::DateTime::parse_from_rfc3339(&created_at(&path))
                    .ok()
                    .map(|at| at.to_utc()),
                size: sizes.then(|| size_of(&path)),
                name: name.clone(),
                path,
            });
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Recorded {
    path: String,
    name: String,
    created: Option<chrono::DateTime<chrono::Utc>>,
    size: Option<i64>,
}

async fn recorded(app: &TestApp) -> BTreeMap<i64, BTreeSet<Recorded>> {
    let mut out: BTreeMap<i64, BTreeSet<Recorded>> = BTreeMap::new();
    for (project, r) in missing::all(&app.db.database()).await.expect("read") {
        let MissingRepository {
            registry_path,
            name,
            registry_created_at,
            size_bytes,
        } = r;
        out.entry(project).or_default().insert(Recorded {
            path: registry_path,
            name,
            created: registry_created_at,
            size: size_bytes,
        });
    }
    out
}

fn world() -> World {
    let mut w = World::new();
    let g = w.group(None, "Sized");
    let sub = w.group(Some(g), "Team-A");
    w.project(g, "Web", &["", "web", "api/v2", "known"], &["known"]);
    w.project(sub, "Many", &["a", "b", "c", "d/e"], &[]);
    w.project(sub, "Whole", &["x"], &["x"]);
    w.project(g, "Empty", &[], &[]);
    w
}

#[actix_rt::test]
async fn every_missing_repository_is_recorded_with_the_registrys_exact_size_and_date() {
    let world = world();
    let mut app = TestApp::prepare(&world).await;
    app.start(false).await;
    assert!(
        app.db
            .wait_for_rows(world.projects.len(), Duration::from_secs(30))
            .await
    );
    let want = expected(&world, true);
    let sum: i64 = want.values().flatten().filter_map(|r| r.size).sum();
    // The status counts what this process found; it settles once the rows are written.
    assert!(
        eventually(Duration::from_secs(10), || async {
            app.status().await.missing_bytes_found == sum as u64
        })
        .await,
        "missing_bytes_found {} != {sum}",
        app.status().await.missing_bytes_found
    );
    assert_eq!(app.status().await.sizes_unknown, 0);
    app.stop().await;

    assert_eq!(recorded(&app).await, want);
    let rows = app.rows_by_project().await;
    for (project, repositories) in &want {
        assert_eq!(rows[project].missing_count as usize, repositories.len());
    }
    let damage = missing::damage(&app.db.database()).await.expect("damage");
    assert_eq!(
        damage,
        Damage {
            projects: 2,
            repositories: 7,
            bytes: sum,
            unknown_sizes: 0,
        }
    );
    // One size request per missing repository, and no more.
    assert_eq!(app.registry.stats().size_requests, 7);
}

#[actix_rt::test]
async fn sizes_the_registry_does_not_give_stay_unknown_and_never_fail_a_project() {
    let world = world();
    let mut app = TestApp::prepare(&world).await;
    // A 500 on every try, a refusal, and (below) a registry too old to size anything.
    app.registry.refuse_size("sized/web/api/v2", 500);
    app.registry.refuse_size("sized/team-a/many/b", 403);
    assert_eq!(app.run_until_done().await, RunEnd::Done);
    let rows = app.rows_by_project().await;
    assert!(rows.values().all(|r| r.status == TrackingStatus::Completed));
    let mut want = expected(&world, true);
    for set in want.values_mut() {
        *set = std::mem::take(set)
            .into_iter()
            .map(|r| match r.path.as_str() {
                "sized/web/api/v2" | "sized/team-a/many/b" => Recorded { size: None, ..r },
                _ => r,
            })
            .collect();
    }
    assert_eq!(recorded(&app).await, want);
    let damage = missing::damage(&app.db.database()).await.expect("damage");
    assert_eq!(damage.unknown_sizes, 2);
    assert_eq!(
        damage.bytes,
        want.values().flatten().filter_map(|r| r.size).sum::<i64>()
    );

    let mut old = TestApp::prepare(&world).await;
    old.registry.set_sizes_given(false);
    assert_eq!(old.run_until_done().await, RunEnd::Done);
    assert_eq!(recorded(&old).await, expected(&world, false));
    let damage = missing::damage(&old.db.database()).await.expect("damage");
    assert_eq!((damage.repositories, damage.unknown_sizes), (7, 7));
}

#[actix_rt::test]
async fn with_sizes_off_no_size_is_asked_and_the_rest_is_recorded() {
    let world = world();
    let mut app = TestApp::prepare(&world).await;
    app.settings.analysis.sizes = false;
    assert_eq!(app.run_until_done().await, RunEnd::Done);
    assert_eq!(app.registry.stats().size_requests, 0);
    assert_eq!(recorded(&app).await, expected(&world, false));
}

#[actix_rt::test]
async fn a_size_needs_a_token_naming_the_repository_exactly() {
    let sim = RegistrySimulator::start(
        vec![
            "grp/app".into(),
            "grp/app/web".into(),
            "grp/app/web/x".into(),
        ],
        trusted(),
        0,
    )
    .expect("simulator");
    let signer = signer(FIXTURE_KEY);
    let client = RegistryClient::new(&sim.url(), 100, Duration::from_secs(5), 10, signer.clone())
        .expect("client");
    // The listing's token: pull on `grp/app` and the literal name `grp/app/*`.
    let listing = signer.mint("grp/app").expect("token");
    match client.repository_size("grp/app/web", &listing).await {
        Err(registry_repair::registry::RegistryError::Status { status: 401, .. }) => {}
        other => panic!("a listing token sized a repository below its path: {other:?}"),
    }
    let exact = signer.mint_exact(&["grp/app/web"]).expect("token");
    assert_eq!(
        client
            .repository_size("grp/app/web", &exact)
            .await
            .expect("size"),
        Size::Bytes(size_of("grp/app/web"))
    );
    let gone = signer.mint_exact(&["grp/app/gone"]).expect("token");
    assert_eq!(
        client
            .repository_size("grp/app/gone", &gone)
            .await
            .expect("answer"),
        Size::Gone
    );

    // As the registry's handler: no size unless asked; with descendants, `<path>/*` as well.
    let http = reqwest::Client::new();
    let get = |query: &'static str, token: String| {
        let request = http
            .get(format!(
                "{}/gitlab/v1/repositories/grp/app/web/{query}",
                sim.url()
            ))
            .bearer_auth(token);
        async move {
            let response = request.send().await.expect("answer");
            let status = response.status().as_u16();
            (
                status,
                response.json::<serde_json::Value>().await.expect("json"),
            )
        }
    };
    let (status, body) = get("", exact.bearer.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(body["path"], "grp/app/web");
    assert_eq!(body["created_at"], created_at("grp/app/web"));
    assert!(body.get("size_bytes").is_none(), "{body}");
    let (status, _) = get("?size=self_with_descendants", exact.bearer.clone()).await;
    assert_eq!(status, 401, "self_with_descendants without `grp/app/web/*`");
    let both = signer
        .mint_exact(&["grp/app/web", "grp/app/web/*"])
        .expect("token");
    let (status, body) = get("?size=self_with_descendants", both.bearer).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["size_bytes"],
        size_of("grp/app/web") + size_of("grp/app/web/x")
    );
    let (status, body) = get("?size=everything", exact.bearer).await;
    assert_eq!(status, 400);
    assert_eq!(body["errors"][0]["code"], "INVALID_QUERY_PARAMETER_VALUE");
}

#[actix_rt::test]
async fn a_project_analysed_again_replaces_its_entries_and_a_failed_one_has_none() {
    let mut w = World::new();
    let g = w.group(None, "Again");
    let kept = w.project(g, "Kept", &["a", "b"], &[]);
    let refused = w.project(g, "Refused", &["c"], &[]);
    let mut app = TestApp::prepare(&w).await;
    assert_eq!(app.run_until_done().await, RunEnd::Done);
    let before = recorded(&app).await;
    assert_eq!(before[&kept].len(), 2);
    assert_eq!(before[&refused].len(), 1);

    // `a` gets its row back (a repair), and the project is analysed again (`--retry-failed`
    // after a failure); the other project's row is deleted by hand and the registry now
    // refuses its path, so it ends `failed`.
    app.db
        .execute(&format!(
            "INSERT INTO container_repositories (project_id, name, created_at, updated_at) \
             VALUES ({kept}, 'a', now(), now()); \
             UPDATE container_registry_data_repair_details SET status = 2, missing_count = 0 \
             WHERE project_id = {kept}; \
             DELETE FROM container_registry_data_repair_details WHERE project_id = {refused};"
        ))
        .await;
    app.registry.refuse("again/refused", 400);
    let analysis = Analysis {
        until_done: true,
        retry_failed: true,
        from_start: true,
        ..Analysis::new(&app.settings)
    };
    let service = service::start(
        &app.settings,
        app.signer.clone(),
        analysis,
        ServiceOptions::default(),
    )
    .await
    .expect("starts");
    assert_eq!(common::run_to_end(service).await, RunEnd::Done);

    let rows = app.rows_by_project().await;
    assert_eq!(rows[&kept].status, TrackingStatus::Completed);
    assert_eq!(rows[&kept].missing_count, 1);
    assert_eq!(rows[&refused].status, TrackingStatus::Failed);
    let after = recorded(&app).await;
    let names: Vec<&str> = after[&kept].iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["b"]);
    assert!(
        !after.contains_key(&refused),
        "a failed project has entries"
    );
}

#[actix_rt::test]
async fn sizes_failing_while_the_registry_answers_nothing_else_wait_for_it_to_come_back() {
    let mut w = World::new();
    let g = w.group(None, "Outage");
    let hit = w.project(g, "Hit", &["a", "b"], &[]);
    let mut app = TestApp::prepare(&w).await;
    // The listing answers; then every size and the canary get 503: an outage, not sizes the
    // registry cannot give.
    for path in ["outage/hit/a", "outage/hit/b"] {
        app.registry.refuse_size(path, 503);
    }
    app.registry
        .refuse(registry_repair::analyzer::CANARY_PATH, 503);
    app.start(false).await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            app.status().await.deferred >= 1
        })
        .await,
        "{:?}",
        app.status().await
    );
    assert!(app.db.rows().await.is_empty(), "nothing recorded meanwhile");
    for path in [
        "outage/hit/a",
        "outage/hit/b",
        registry_repair::analyzer::CANARY_PATH,
    ] {
        app.registry.accept(path);
    }
    assert!(app.db.wait_for_rows(1, Duration::from_secs(60)).await);
    app.stop().await;
    let rows = app.rows_by_project().await;
    assert_eq!(rows[&hit].status, TrackingStatus::Completed);
    assert_eq!(recorded(&app).await, expected(&w, true));
}

#[actix_rt::test]
async fn after_three_sizes_fail_in_a_row_a_projects_other_sizes_are_not_asked() {
    let mut w = World::new();
    let g = w.group(None, "Slow");
    let names = ["a", "b", "c", "d", "e", "f"];
    let p = w.project(g, "Sizes", &names, &[]);
    let mut app = TestApp::prepare(&w).await;
    for name in names {
        app.registry.refuse_size(&format!("slow/sizes/{name}"), 500);
    }
    assert_eq!(app.run_until_done().await, RunEnd::Done);
    let rows = app.rows_by_project().await;
    assert_eq!(rows[&p].status, TrackingStatus::Completed);
    assert_eq!(rows[&p].missing_count, 6);
    // The registry answers the canary, so these are sizes it cannot give: three asked (each
    // tried 4 times), the other three not asked, all six recorded without a size.
    assert_eq!(
        app.registry.stats().size_requests,
        3 * registry_repair::registry::retry::ATTEMPTS as u64
    );
    let recorded = recorded(&app).await;
    assert_eq!(recorded[&p].len(), 6);
    assert!(recorded[&p].iter().all(|r| r.size.is_none()));
}
