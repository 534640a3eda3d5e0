//! One project's analysis against a real database and the simulated registry: how registry paths
//! become Rails names and which count as missing.

use std::time::Duration;

use crate::common::{signer, trusted, TestDb, FIXTURE_KEY};
use registry_repair::analysis::{analyze, Listed};
use registry_repair::config::Shard;
use registry_repair::db::projects::{next_unanalysed, Project};
use registry_repair::demo::seed::World;
use registry_repair::registry::simulator::RegistrySimulator;
use registry_repair::registry::RegistryClient;
use registry_repair::work::Step;

struct Setup {
    _db: TestDb,
    database: registry_repair::db::Database,
    registry: RegistrySimulator,
    client: RegistryClient,
}

async fn setup(world: &World, page_size: u32) -> Setup {
    let db = TestDb::new().await;
    let database = db.database();
    world.insert(&database).await.expect("seed");
    let registry =
        RegistrySimulator::start(world.registry_paths(), trusted(), 0).expect("registry");
    let client = RegistryClient::new(
        &registry.url(),
        page_size,
        Duration::from_secs(5),
        100,
        signer(FIXTURE_KEY),
    )
    .expect("client");
    Setup {
        _db: db,
        database,
        registry,
        client,
    }
}

async fn project(s: &Setup, id: i64) -> Project {
    next_unanalysed(&s.database, id - 1, 1, Shard::ALL)
        .await
        .expect("query")
        .into_iter()
        .next()
        .filter(|p| p.id == id)
        .expect("project is unanalysed")
}

fn completed(missing: i32) -> impl Fn(&Step<Listed>) -> bool {
    move |a| matches!(a, Step::Done(Listed::Completed { missing: m, .. }) if m.len() as i32 == missing)
}

#[actix_rt::test]
async fn root_and_nested_names_in_a_mixed_case_project_are_counted_when_rails_lacks_them() {
    let mut w = World::new();
    let top = w.group(None, "Gitlab-Org");
    let sub = w.group(Some(top), "Build");
    // Registry: root, a, a/b, a/b/c, x. Rails: a/b (and a row the registry does not have).
    let p = w.project(
        sub,
        "CNG",
        &["", "a", "a/b", "a/b/c", "x"],
        &["a/b", "gone/long-ago"],
    );
    let s = setup(&w, 2).await;
    let proj = project(&s, p).await;
    assert_eq!(proj.full_path.as_deref(), Some("Gitlab-Org/Build/CNG"));
    let a = analyze(&s.client, &s.database, &proj, None, false).await;
    // 5 in the registry, 1 of them known to Rails; the Rails-only row does not count.
    assert!(completed(4)(&a), "{a:?}");
    // Three pages of two: 2 + 2 + 1.
    assert_eq!(s.registry.requests_for("gitlab-org/build/cng"), 3);
}

#[actix_rt::test]
async fn every_repository_known_to_rails_means_zero_missing() {
    let mut w = World::new();
    let g = w.group(None, "Acme");
    let p = w.project(
        g,
        "App",
        &["", "api", "tools/builder"],
        &["", "api", "tools/builder"],
    );
    let s = setup(&w, 1000).await;
    let a = analyze(&s.client, &s.database, &project(&s, p).await, None, false).await;
    assert!(completed(0)(&a), "{a:?}");
}

#[actix_rt::test]
async fn sibling_projects_sharing_a_prefix_do_not_leak_into_each_other() {
    let mut w = World::new();
    let g = w.group(None, "Grp");
    let app = w.project(g, "App", &["one"], &["one"]);
    let app_x = w.project(g, "App-X", &["", "two", "three"], &[]);
    let s = setup(&w, 1000).await;
    let a = analyze(&s.client, &s.database, &project(&s, app).await, None, false).await;
    assert!(completed(0)(&a), "{a:?}");
    let b = analyze(
        &s.client,
        &s.database,
        &project(&s, app_x).await,
        None,
        false,
    )
    .await;
    assert!(completed(3)(&b), "{b:?}");
}

#[actix_rt::test]
async fn entries_outside_the_project_path_are_ignored_and_counted() {
    let mut w = World::new();
    let g = w.group(None, "Grp");
    let p = w.project(g, "App", &["a"], &[]);
    let s = setup(&w, 1000).await;
    s.registry
        .add_foreign_entries("grp/app", &["grp/other/x", "grp/app-x/y", "elsewhere/z"]);
    match analyze(&s.client, &s.database, &project(&s, p).await, None, false).await {
        Step::Done(Listed::Completed {
            missing, ignored, ..
        }) => {
            assert_eq!(missing.len(), 1);
            assert_eq!(ignored, 3);
        }
        other => panic!("expected completed, got {other:?}"),
    }
}

#[actix_rt::test]
async fn an_unknown_namespace_is_completed_with_zero_and_no_route_is_failed() {
    let mut w = World::new();
    let known = w.group(None, "Known");
    w.project(known, "Has", &["a"], &[]);
    let quiet = w.group(None, "Quiet");
    let p = w.project(quiet, "Legacy", &[], &["old"]);
    let orphan = w.project_without_route(quiet, "Orphan");
    let s = setup(&w, 1000).await;
    let a = analyze(&s.client, &s.database, &project(&s, p).await, None, false).await;
    assert!(completed(0)(&a), "{a:?}");
    let before = s.registry.stats().list_requests;
    let b = analyze(
        &s.client,
        &s.database,
        &project(&s, orphan).await,
        None,
        false,
    )
    .await;
    assert!(matches!(b, Step::Failed { .. }), "{b:?}");
    assert_eq!(
        s.registry.stats().list_requests,
        before,
        "no request without a path"
    );
}

#[actix_rt::test]
async fn the_keyset_walk_skips_projects_with_a_row_and_returns_paths_in_id_order() {
    let mut w = World::new();
    let g = w.group(None, "G");
    let ids: Vec<i64> = (0..10)
        .map(|i| w.project(g, &format!("P{i}"), &[], &[]))
        .collect();
    let s = setup(&w, 1000).await;
    s._db
        .execute(&format!(
            "INSERT INTO container_registry_data_repair_details (project_id, status, missing_count, created_at, updated_at) \
             VALUES ({}, 1, 0, now(), now()), ({}, 2, 0, now(), now())",
            ids[2], ids[5]
        ))
        .await;
    let first = next_unanalysed(&s.database, 0, 4, Shard::ALL)
        .await
        .expect("query");
    let got: Vec<i64> = first.iter().map(|p| p.id).collect();
    assert_eq!(got, vec![ids[0], ids[1], ids[3], ids[4]]);
    assert_eq!(first[0].full_path.as_deref(), Some("G/P0"));
    let rest = next_unanalysed(&s.database, ids[4], 100, Shard::ALL)
        .await
        .expect("query");
    let got: Vec<i64> = rest.iter().map(|p| p.id).collect();
    assert_eq!(got, vec![ids[6], ids[7], ids[8], ids[9]]);
}

#[actix_rt::test]
async fn paths_come_right_whether_the_unanalysed_projects_lie_close_together_or_far_apart() {
    let mut w = World::new();
    let g = w.group(None, "Spread");
    let ids: Vec<i64> = (0..60)
        .map(|i| w.project(g, &format!("Proj-{i}"), &[], &[]))
        .collect();
    let s = setup(&w, 1000).await;
    // Far apart: only three projects left, spread over the whole range.
    let keep = [ids[0], ids[31], ids[59]];
    s._db
        .execute(&format!(
            "INSERT INTO container_registry_data_repair_details (project_id, status, missing_count, created_at, updated_at) \
             SELECT id, 1, 0, now(), now() FROM projects WHERE id NOT IN ({}, {}, {})",
            keep[0], keep[1], keep[2]
        ))
        .await;
    let spread = next_unanalysed(&s.database, 0, 10, Shard::ALL)
        .await
        .expect("query");
    let got: Vec<(i64, Option<String>)> = spread.into_iter().map(|p| (p.id, p.full_path)).collect();
    assert_eq!(
        got,
        vec![
            (keep[0], Some("Spread/Proj-0".to_string())),
            (keep[1], Some("Spread/Proj-31".to_string())),
            (keep[2], Some("Spread/Proj-59".to_string())),
        ]
    );
    // Close together, with analysed ones between them, and one without a route.
    s._db
        .execute(&format!(
            "DELETE FROM container_registry_data_repair_details WHERE project_id IN ({}, {}, {}); \
             DELETE FROM routes WHERE source_type = 'Project' AND source_id = {}",
            ids[10], ids[12], ids[13], ids[12]
        ))
        .await;
    let close = next_unanalysed(&s.database, ids[5], 10, Shard::ALL)
        .await
        .expect("query");
    let got: Vec<(i64, Option<String>)> = close.into_iter().map(|p| (p.id, p.full_path)).collect();
    assert_eq!(
        got,
        vec![
            (ids[10], Some("Spread/Proj-10".to_string())),
            (ids[12], None),
            (ids[13], Some("Spread/Proj-13".to_string())),
            (keep[1], Some("Spread/Proj-31".to_string())),
            (keep[2], Some("Spread/Proj-59".to_string())),
        ]
    );
}

#[actix_rt::test]
async fn paths_the_registry_cannot_hold_are_completed_with_zero_without_a_request() {
    let mut w = World::new();
    let g = w.group(None, "Grp");
    // GitLab allows these project paths; the registry's name grammar does not.
    let odd: Vec<i64> = ["Trailing-", "Trailing_", "_Leading", "Two..Dots"]
        .iter()
        .map(|path| w.project(g, path, &[], &[]))
        .collect();
    let fine = w.project(g, "Fine-Name", &["a"], &[]);
    let s = setup(&w, 1000).await;
    for id in odd {
        let a = analyze(&s.client, &s.database, &project(&s, id).await, None, false).await;
        assert!(
            matches!(a, Step::Done(Listed::Unaddressable)),
            "project {id}: {a:?}"
        );
    }
    assert_eq!(s.registry.stats().list_requests, 0, "nothing asked");
    let a = analyze(
        &s.client,
        &s.database,
        &project(&s, fine).await,
        None,
        false,
    )
    .await;
    assert!(completed(1)(&a), "{a:?}");
}

#[actix_rt::test]
async fn a_path_that_vanishes_after_the_first_page_is_analysed_again_from_the_first_page() {
    let mut w = World::new();
    let g = w.group(None, "Moving");
    // Five repositories, none known to Rails: two pages of two would count 2 before the path
    // vanished.
    let p = w.project(g, "App", &["", "a", "b", "c", "d"], &[]);
    let s = setup(&w, 2).await;
    s.registry.vanish_after_first_page("moving/app");
    let a = analyze(&s.client, &s.database, &project(&s, p).await, None, false).await;
    // Gone now: the registry has nothing under the path, and the first page's two do not count.
    assert!(completed(0)(&a), "{a:?}");
    // The first page, the second (NAME_UNKNOWN), the first again (NAME_UNKNOWN).
    assert_eq!(s.registry.requests_for("moving/app"), 3);
}
