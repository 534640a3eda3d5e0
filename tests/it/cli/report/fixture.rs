//! A world whose damage is known to the byte: tracking rows as an analysis leaves them, the
//! missing repositories it records, with sizes and creation times, and why the failed projects
//! failed, written straight to the tables (so the figures do not depend on the analysis): one
//! project of each kind the report tells apart.

use crate::common::process::{cli, Env, Finished};
use crate::common::TestDb;
use registry_repair::db::tracking::TrackingStatus;
use registry_repair::demo::seed::World;
use std::time::Duration;

/// The projects of [`damaged`], by what they show.
#[derive(Debug, Clone, Copy)]
pub struct Ids {
    /// `Top-Group/Web-App`: 2 missing, itemised with sizes, a `container_repositories` row.
    pub web: i64,
    /// `Top-Group/Sub_Team/Deep.Project`: 3 missing, one size unknown, one creation time
    /// unknown, no `container_repositories` row (shown empty).
    pub deep: i64,
    /// `Other.Org/Clean`: nothing missing.
    pub clean: i64,
    /// `Other.Org/Legacy`: 2 missing, not itemised.
    pub legacy: i64,
    /// `Other.Org/Restored`: 1 missing recorded, since restored (a `container_repositories` row).
    pub restored: i64,
    /// `Empty-NS/Lonely`: 2 missing (5 GiB and an unknown size), shown empty.
    pub lonely: i64,
    /// No route: `failed`, recorded `no_route`, on 2026-12-03.
    pub orphan: i64,
    /// `Other.Org/Hostile`: `failed`, recorded `hostile_answer` with a reason full of markup
    /// ([`HOSTILE_REASON`]), on 2026-12-05: the most recent.
    pub hostile: i64,
    /// `Top-Group/Huge`: `failed`, recorded `too_many_pages`, on 2026-12-04.
    pub huge: i64,
    /// `Top-Group/Old-Worker`: `failed` by GitLab's own worker on 2025-01-02: no reason recorded.
    pub old: i64,
    /// `Quiet-NS/Calm`: completed, nothing missing, in a namespace with nothing missing.
    pub calm: i64,
}

/// A recorded reason with everything an HTML page must escape.
pub const HOSTILE_REASON: &str = "listing other.org/hostile: the registry listed the repository \
     path \"other.org/hostile/<script>alert('x')</script> & <b>\", which breaks the registry's \
     name grammar";

pub struct Damaged {
    /// Dropped with the world.
    _db: TestDb,
    pub env: Env,
    pub ids: Ids,
}

impl Damaged {
    /// `registry-repair report ARGS` against the world.
    pub async fn report(&self, args: &[&str]) -> Finished {
        let mut all = vec!["report"];
        all.extend_from_slice(args);
        let out = cli(&all, &self.env, Duration::from_secs(30)).await;
        out.assert_no_panic();
        out
    }
}

pub const GIB: i64 = 1 << 30;

/// Sizes and creation times of what [`damaged`] records, `(project, name, created, size)`.
fn recorded(ids: &Ids) -> Vec<(i64, &'static str, Option<&'static str>, Option<i64>)> {
    vec![
        (ids.web, "", Some("2023-01-15T10:00:00Z"), Some(100 << 20)),
        // The last second of January in UTC: still January, whatever the session's time zone.
        (
            ids.web,
            "api/v2",
            Some("2023-01-31T23:59:59Z"),
            Some(1_000_001),
        ),
        (
            ids.deep,
            "",
            Some("2024-05-02T08:00:00+02:00"),
            Some(3 * GIB),
        ),
        (ids.deep, "a/b/c", Some("2024-05-20T12:00:00Z"), None),
        (ids.deep, "x", None, Some(12_345)),
        (ids.restored, "img", Some("2022-12-01T00:00:00Z"), Some(777)),
        (ids.lonely, "", Some("2025-07-04T00:00:00Z"), Some(5 * GIB)),
        (ids.lonely, "cache", None, None),
    ]
}

pub async fn damaged() -> Damaged {
    let mut world = World::new();
    let top = world.group(None, "Top-Group");
    let sub = world.group(Some(top), "Sub_Team");
    let other = world.group(None, "Other.Org");
    let empty = world.group(None, "Empty-NS");
    let quiet = world.group(None, "Quiet-NS");
    let ids = Ids {
        web: world.project(top, "Web-App", &["", "api", "api/v2"], &["api"]),
        deep: world.project(sub, "Deep.Project", &["", "a/b/c", "x"], &[]),
        clean: world.project(other, "Clean", &["one"], &["one"]),
        legacy: world.project(other, "Legacy", &["old", "older"], &["kept"]),
        restored: world.project(other, "Restored", &["img"], &[]),
        lonely: world.project(empty, "Lonely", &["", "cache"], &[]),
        orphan: world.project_without_route(top, "Orphan"),
        hostile: world.project(other, "Hostile", &[], &[]),
        huge: world.project(top, "Huge", &[], &[]),
        old: world.project(top, "Old-Worker", &[], &[]),
        calm: world.project(quiet, "Calm", &[], &[]),
    };
    let db = TestDb::new().await;
    world.insert(&db.database()).await.expect("seeding");

    let rows: Vec<String> = world
        .expected()
        .into_iter()
        .map(|(id, e)| {
            let status = match e.status {
                TrackingStatus::Completed => 1,
                TrackingStatus::Failed => 2,
                TrackingStatus::Ongoing => 0,
            };
            format!("({id}, {}, {status}, now(), now())", e.missing)
        })
        .collect();
    db.execute(&format!(
        "INSERT INTO container_registry_data_repair_details \
             (project_id, missing_count, status, created_at, updated_at) VALUES {}",
        rows.join(", ")
    ))
    .await;

    let path = |id: i64| {
        world
            .projects
            .iter()
            .find(|p| p.id == id)
            .and_then(|p| p.full_path.clone())
            .expect("a routed project")
            .to_lowercase()
    };
    let entries: Vec<String> = recorded(&ids)
        .into_iter()
        .map(|(id, name, created, size)| {
            let registry_path = if name.is_empty() {
                path(id)
            } else {
                format!("{}/{name}", path(id))
            };
            format!(
                "({id}, '{registry_path}', '{name}', {}, {})",
                created.map_or("NULL".into(), |c| format!("'{c}'")),
                size.map_or("NULL".into(), |s| s.to_string())
            )
        })
        .collect();
    // Whatever the analysis may have recorded is replaced by what this test knows.
    db.execute(&format!(
        "DELETE FROM registry_repair_missing_repositories; \
         INSERT INTO registry_repair_missing_repositories \
             (project_id, registry_path, name, registry_created_at, size_bytes) VALUES {}; \
         INSERT INTO container_repositories (project_id, name, created_at, updated_at) \
             VALUES ({}, 'img', now(), now())",
        entries.join(", "),
        ids.restored
    ))
    .await;
    // Failed projects: three with the reason this service records, one of GitLab's own worker
    // without one (its time is the tracking row's).
    db.execute(&format!(
        "UPDATE container_registry_data_repair_details SET status = 2, missing_count = 0, \
             updated_at = '2025-01-02T03:04:05.678Z' \
         WHERE project_id IN ({hostile}, {huge}, {old}); \
         INSERT INTO registry_repair_failures (project_id, cause, reason, failed_at) VALUES \
             ({orphan}, 'no_route', 'the project has no route, so no registry path', \
              '2026-12-03T08:00:00.250Z'), \
             ({hostile}, 'hostile_answer', '{reason}', '2026-12-05T09:30:00Z'), \
             ({huge}, 'too_many_pages', \
              'listing top-group/huge: more than 10000 pages; giving up on this project', \
              '2026-12-04T23:59:59.999Z')",
        hostile = ids.hostile,
        huge = ids.huge,
        old = ids.old,
        orphan = ids.orphan,
        reason = HOSTILE_REASON.replace('\'', "''"),
    ))
    .await;
    // A database whose default time zone is 14 hours ahead of UTC: months are UTC's all the same.
    db.execute(&format!(
        "ALTER DATABASE {} SET timezone = 'Pacific/Kiritimati'",
        db.name
    ))
    .await;
    let env = Env::new().set("DATABASE__URL", &db.url);
    Damaged { _db: db, env, ids }
}
