//! A GitLab-shaped world: groups, projects with mixed-case paths, the repositories the registry
//! holds and the `container_repositories` rows GitLab kept, and the result each project must get.
//! Built by hand (tests) or generated (demo), then written to a database and served by the
//! simulated registry.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::NaiveDateTime;
use diesel::dsl::{max, now};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Nullable, Text, Timestamp};
use diesel_async::RunQueryDsl;

use crate::db::dsl::{db_now, greatest, setval, unnest};
use crate::db::schema::{
    container_expiration_policies as policies, container_repositories as repositories, namespaces,
    project_features, projects, routes,
};
use crate::db::tracking::TrackingStatus;
use crate::db::{Database, DbError};
use crate::registry::grammar::is_addressable;
use crate::registry::simulator::created_at;
use crate::repair::guards::{gitlab_nodes, name_is_addressable, Consent};
use crate::repair::{Action, Reason};

/// When seeded projects were created, and their routes (and their groups') last written: before
/// every repository the simulated registry lists (July 2023 to May 2024, see
/// [`created_at`](crate::registry::simulator::created_at)), so that the repair's
/// `older_than_project` and `older_than_path` guards hold only where a test moves a project's
/// `created_at` or its route's `updated_at` later.
pub const PROJECTS_CREATED_AT: NaiveDateTime = midnight(2020, 1, 1);

/// A moment after every repository the simulated registry lists: a project created, or moved to
/// its path, then is younger than the images under it (the repair's `older_than_project` and
/// `older_than_path`).
pub const AFTER_THE_REPOSITORIES: NaiveDateTime = midnight(2025, 1, 1);

const fn midnight(year: i32, month: u32, day: u32) -> NaiveDateTime {
    match chrono::NaiveDate::from_ymd_opt(year, month, day) {
        Some(date) => match date.and_hms_opt(0, 0, 0) {
            Some(at) => at,
            None => NaiveDateTime::MIN,
        },
        None => NaiveDateTime::MIN,
    }
}

#[derive(Debug, Clone)]
pub struct Group {
    pub id: i64,
    pub parent_id: Option<i64>,
    pub path: String,
    pub full_path: String,
}

#[derive(Debug, Clone)]
pub struct SeedProject {
    pub id: i64,
    pub namespace_id: i64,
    pub path: String,
    /// `None`: the project has no `routes` row.
    pub full_path: Option<String>,
    /// Names of repositories the registry holds under the project (`""` is the root repository).
    pub registry: Vec<String>,
    /// Names GitLab's `container_repositories` has for the project.
    pub rails: Vec<String>,
    /// `projects.created_at`.
    pub created_at: NaiveDateTime,
    /// `routes.updated_at` of the project's route: when it last moved (GitLab sets it on a rename
    /// or transfer of the project or of a parent group).
    pub route_updated_at: NaiveDateTime,
    /// `projects.pending_delete`: GitLab is deleting the project.
    pub pending_delete: bool,
    /// `project_features.container_registry_access_level` is 0 (off) rather than 20 (enabled).
    pub registry_disabled: bool,
    /// The project has an enabled cleanup policy (`container_expiration_policies`).
    pub cleanup_policy: bool,
}

/// What the tracking table must say about a project.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    pub status: TrackingStatus,
    pub missing: i32,
}

impl Expected {
    /// A failed project: its row says failed and counts nothing.
    pub const FAILED: Expected = Expected {
        status: TrackingStatus::Failed,
        missing: 0,
    };
}

#[derive(Debug, Clone, Default)]
pub struct World {
    pub groups: Vec<Group>,
    pub projects: Vec<SeedProject>,
    /// Registry paths that belong to no project of this world.
    pub stray_registry_paths: Vec<String>,
    next_id: i64,
}

impl World {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many projects [`World::generate`] makes before its random ones.
    pub const SPECIAL_PROJECTS: u32 = 13;

    /// Ids are shared by groups and projects so that no two rows of either look alike.
    fn take_id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }

    pub fn group(&mut self, parent: Option<i64>, path: &str) -> i64 {
        let full_path = match parent.and_then(|p| self.groups.iter().find(|g| g.id == p)) {
            Some(parent) => format!("{}/{path}", parent.full_path),
            None => path.to_string(),
        };
        let id = self.take_id();
        self.groups.push(Group {
            id,
            parent_id: parent,
            path: path.to_string(),
            full_path,
        });
        id
    }

    /// A project in `group`, with the repository names the registry holds and those Rails knows.
    pub fn project(&mut self, group: i64, path: &str, registry: &[&str], rails: &[&str]) -> i64 {
        let full_path = self
            .groups
            .iter()
            .find(|g| g.id == group)
            .map(|g| format!("{}/{path}", g.full_path));
        let id = self.take_id();
        self.projects.push(SeedProject {
            id,
            namespace_id: group,
            path: path.to_string(),
            full_path,
            registry: registry.iter().map(|s| s.to_string()).collect(),
            rails: rails.iter().map(|s| s.to_string()).collect(),
            created_at: PROJECTS_CREATED_AT,
            route_updated_at: PROJECTS_CREATED_AT,
            pending_delete: false,
            registry_disabled: false,
            cleanup_policy: false,
        });
        id
    }

    /// Changes project `id` (its dates, deletion, registry switch, cleanup policy) before the
    /// world is inserted.
    pub fn amend(&mut self, id: i64, change: impl FnOnce(&mut SeedProject)) {
        if let Some(project) = self.projects.iter_mut().find(|p| p.id == id) {
            change(project);
        }
    }

    /// A project whose `routes` row is missing: it cannot be analysed and must end `failed`.
    pub fn project_without_route(&mut self, group: i64, path: &str) -> i64 {
        let id = self.project(group, path, &[], &[]);
        if let Some(p) = self.projects.last_mut() {
            p.full_path = None;
        }
        id
    }

    /// Every repository path the registry holds, lowercased as the registry stores them.
    pub fn registry_paths(&self) -> Vec<String> {
        let mut paths: BTreeSet<String> = self.stray_registry_paths.iter().cloned().collect();
        for p in &self.projects {
            let Some(full) = &p.full_path else { continue };
            let base = full.to_lowercase();
            for name in &p.registry {
                paths.insert(if name.is_empty() {
                    base.clone()
                } else {
                    format!("{base}/{name}")
                });
            }
        }
        paths.into_iter().collect()
    }

    /// The row each project must end with, from how the world was built.
    pub fn expected(&self) -> HashMap<i64, Expected> {
        self.projects
            .iter()
            .map(|p| {
                let addressable = p
                    .full_path
                    .as_deref()
                    .map(|f| is_addressable(&f.to_lowercase()));
                let expected = if addressable.is_none() {
                    Expected::FAILED
                } else if addressable == Some(false) {
                    // Nothing can live there: completed with 0, without asking the registry.
                    Expected {
                        status: TrackingStatus::Completed,
                        missing: 0,
                    }
                } else {
                    let rails: BTreeSet<&str> = p.rails.iter().map(String::as_str).collect();
                    let registry: BTreeSet<&str> = p.registry.iter().map(String::as_str).collect();
                    Expected {
                        status: TrackingStatus::Completed,
                        missing: registry.difference(&rails).count() as i32,
                    }
                };
                (p.id, expected)
            })
            .collect()
    }

    /// The repositories the registry holds and GitLab lost, `(project id, Rails name)`: what a
    /// repair plan lists, for every project the analysis can count (a route, a path the registry
    /// can hold).
    pub fn lost_repositories(&self) -> Vec<(i64, String)> {
        let mut lost = Vec::new();
        for p in &self.projects {
            let Some(full) = &p.full_path else { continue };
            if !is_addressable(&full.to_lowercase()) {
                continue;
            }
            let rails: BTreeSet<&str> = p.rails.iter().map(String::as_str).collect();
            let registry: BTreeSet<&str> = p.registry.iter().map(String::as_str).collect();
            lost.extend(
                registry
                    .difference(&rails)
                    .map(|name| (p.id, name.to_string())),
            );
        }
        lost
    }

    /// What a repair plan must decide for each of [`World::lost_repositories`], `(project id,
    /// Rails name)` → (action, reason), derived from how the world was built: the project's
    /// deletion, registry switch, other projects' routes at the nodes GitLab resolves the path by,
    /// the name's depth, the simulated registry's creation date against the project's creation
    /// and last move, and its cleanup policy, the first that holds in the guards' order and is not
    /// lifted by `consent`. (The index is always sound here, and nothing moves under the write.)
    pub fn expected_plan(
        &self,
        consent: Consent,
    ) -> BTreeMap<(i64, String), (Action, Option<Reason>)> {
        let mut routes: HashMap<String, Vec<i64>> = HashMap::new();
        for p in &self.projects {
            if let Some(full) = &p.full_path {
                routes.entry(full.to_lowercase()).or_default().push(p.id);
            }
        }
        let projects: HashMap<i64, &SeedProject> =
            self.projects.iter().map(|p| (p.id, p)).collect();
        let mut plan = BTreeMap::new();
        for (id, name) in self.lost_repositories() {
            let Some(p) = projects.get(&id) else { continue };
            let Some(full) = &p.full_path else { continue };
            let base = full.to_lowercase();
            let path = if name.is_empty() {
                base
            } else {
                format!("{base}/{name}")
            };
            let listed = chrono::DateTime::parse_from_rfc3339(&created_at(&path))
                .ok()
                .map(|at| at.naive_utc());
            // A date that cannot be compared proves nothing: held back, as the guard does.
            let older = |moment: NaiveDateTime| listed.is_none_or(|at| at < moment);
            let moved_in = (p.route_updated_at > p.created_at).then_some(p.route_updated_at);
            let claimed = gitlab_nodes(&path).any(|node| {
                routes
                    .get(node)
                    .is_some_and(|ids| ids.iter().any(|o| *o != id))
            });
            let holds = [
                (Reason::ProjectPendingDeletion, p.pending_delete),
                (Reason::RegistryDisabled, p.registry_disabled),
                (Reason::AmbiguousPath, claimed),
                (
                    Reason::NameUnaddressable,
                    !name_is_addressable(&name, &path),
                ),
                (Reason::OlderThanProject, older(p.created_at)),
                (Reason::OlderThanPath, moved_in.is_some_and(older)),
                (Reason::CleanupPolicyEnabled, p.cleanup_policy),
            ];
            let reason = holds
                .into_iter()
                .find(|(reason, holds)| *holds && !consent.lifts(*reason))
                .map(|(reason, _)| reason);
            plan.insert(
                (id, name),
                (reason.map_or(Action::Restore, Reason::action), reason),
            );
        }
        plan
    }

    /// Writes groups, projects (their dates and deletion), their `project_features`, routes,
    /// enabled cleanup policies and `container_repositories` rows, in bulk: a statement per
    /// table, each column bound as one array and unnested into rows.
    pub async fn insert(&self, db: &Database) -> Result<(), DbError> {
        let mut conn = db.conn().await?;
        let gid: Vec<i64> = self.groups.iter().map(|g| g.id).collect();
        let gparent: Vec<Option<i64>> = self.groups.iter().map(|g| g.parent_id).collect();
        let gpath: Vec<&str> = self.groups.iter().map(|g| g.path.as_str()).collect();
        let gfull: Vec<&str> = self.groups.iter().map(|g| g.full_path.as_str()).collect();
        diesel::insert_into(namespaces::table)
            .values(diesel::select((
                unnest(&gid),
                unnest(&gpath),
                unnest(&gpath),
                "Group".into_sql::<Text>(),
                unnest(&gparent),
                now.nullable(),
                now.nullable(),
            )))
            .into_columns((
                namespaces::id,
                namespaces::name,
                namespaces::path,
                namespaces::type_,
                namespaces::parent_id,
                namespaces::created_at,
                namespaces::updated_at,
            ))
            .execute(&mut conn)
            .await
            .map_err(DbError::query("seeding namespaces"))?;
        let created = PROJECTS_CREATED_AT.into_sql::<Timestamp>().nullable();
        diesel::insert_into(routes::table)
            .values(diesel::select((
                unnest(&gid),
                "Namespace".into_sql::<Text>(),
                unnest(&gfull),
                unnest::<Text, _>(&gfull).nullable(),
                created,
                created,
            )))
            .into_columns(ROUTE_COLUMNS)
            .execute(&mut conn)
            .await
            .map_err(DbError::query("seeding namespace routes"))?;

        let pid: Vec<i64> = self.projects.iter().map(|p| p.id).collect();
        let pns: Vec<i64> = self.projects.iter().map(|p| p.namespace_id).collect();
        let ppath: Vec<&str> = self.projects.iter().map(|p| p.path.as_str()).collect();
        let pcreated: Vec<NaiveDateTime> = self.projects.iter().map(|p| p.created_at).collect();
        let pdeleting: Vec<bool> = self.projects.iter().map(|p| p.pending_delete).collect();
        // GitLab's levels: 0 off, 20 enabled.
        let plevel: Vec<i32> = self
            .projects
            .iter()
            .map(|p| if p.registry_disabled { 0 } else { 20 })
            .collect();
        diesel::insert_into(projects::table)
            .values(diesel::select((
                unnest(&pid),
                unnest::<Text, _>(&ppath).nullable(),
                unnest::<Text, _>(&ppath).nullable(),
                unnest(&pns),
                unnest::<Timestamp, _>(&pcreated).nullable(),
                now.nullable(),
                unnest::<Bool, _>(&pdeleting).nullable(),
            )))
            .into_columns((
                projects::id,
                projects::name,
                projects::path,
                projects::namespace_id,
                projects::created_at,
                projects::updated_at,
                projects::pending_delete,
            ))
            .execute(&mut conn)
            .await
            .map_err(DbError::query("seeding projects"))?;
        // GitLab creates every project with its project_features row.
        diesel::insert_into(project_features::table)
            .values(diesel::select((unnest(&pid), unnest(&plevel), now, now)))
            .into_columns((
                project_features::project_id,
                project_features::container_registry_access_level,
                project_features::created_at,
                project_features::updated_at,
            ))
            .execute(&mut conn)
            .await
            .map_err(DbError::query("seeding project_features"))?;
        // Projects without a route have no row.
        let routed: Vec<&SeedProject> = self
            .projects
            .iter()
            .filter(|p| p.full_path.is_some())
            .collect();
        let rid: Vec<i64> = routed.iter().map(|p| p.id).collect();
        let rfull: Vec<&str> = routed
            .iter()
            .filter_map(|p| p.full_path.as_deref())
            .collect();
        let rcreated: Vec<NaiveDateTime> = routed.iter().map(|p| p.created_at).collect();
        let rmoved: Vec<NaiveDateTime> = routed.iter().map(|p| p.route_updated_at).collect();
        diesel::insert_into(routes::table)
            .values(diesel::select((
                unnest(&rid),
                "Project".into_sql::<Text>(),
                unnest(&rfull),
                unnest::<Text, _>(&rfull).nullable(),
                unnest::<Timestamp, _>(&rcreated).nullable(),
                unnest::<Timestamp, _>(&rmoved).nullable(),
            )))
            .into_columns(ROUTE_COLUMNS)
            .execute(&mut conn)
            .await
            .map_err(DbError::query("seeding project routes"))?;
        let policed: Vec<i64> = self
            .projects
            .iter()
            .filter(|p| p.cleanup_policy)
            .map(|p| p.id)
            .collect();
        diesel::insert_into(policies::table)
            .values(diesel::select((
                unnest(&policed),
                db_now(),
                db_now(),
                true.into_sql::<Bool>(),
            )))
            .into_columns((
                policies::project_id,
                policies::created_at,
                policies::updated_at,
                policies::enabled,
            ))
            .execute(&mut conn)
            .await
            .map_err(DbError::query("seeding container_expiration_policies"))?;

        let (cid, cname): (Vec<i64>, Vec<&str>) = self
            .projects
            .iter()
            .flat_map(|p| p.rails.iter().map(move |n| (p.id, n.as_str())))
            .unzip();
        diesel::insert_into(repositories::table)
            .values(diesel::select((unnest(&cid), unnest(&cname), now, now)))
            .into_columns((
                repositories::project_id,
                repositories::name,
                repositories::created_at,
                repositories::updated_at,
            ))
            .execute(&mut conn)
            .await
            .map_err(DbError::query("seeding container_repositories"))?;

        // Later inserts (new projects during a run) must not collide with the seeded ids.
        let highest = greatest(
            greatest(
                projects::table.select(max(projects::id)).single_value(),
                namespaces::table.select(max(namespaces::id)).single_value(),
            ),
            1i64.into_sql::<Nullable<BigInt>>(),
        )
        .assume_not_null();
        diesel::select((
            setval("projects_id_seq", highest),
            setval("namespaces_id_seq", highest),
        ))
        .execute(&mut conn)
        .await
        .map_err(DbError::query("advancing id sequences"))?;
        Ok(())
    }

    /// A deterministic world of `projects` projects in nested groups with mixed-case paths: most
    /// with no repositories, some with every repository known to Rails, some with root or nested
    /// repositories missing, Rails-only rows, a group the registry has never heard of (404), a
    /// project with three pages and one with exactly one full page, sibling paths sharing a prefix,
    /// one project without a route, and a project (two for a shared path) for each guard of the
    /// repair a shared database can show ([`World::expected_plan`]): being deleted, its registry
    /// off, routes that differ only in case, created after its repositories, moved to its path
    /// after them, an enabled cleanup policy. Every special case is there from
    /// [`World::SPECIAL_PROJECTS`] projects on; a smaller `projects` still gets them all.
    pub fn generate(projects: u32, seed: u64) -> Self {
        const TOP: [&str; 5] = [
            "Gitlab-Org",
            "Acme-Corp",
            "Data-Science",
            "Mobile_Team",
            "Quiet-Group",
        ];
        const SUB: [&str; 3] = ["Build", "Platform", "Tools"];
        const LEAF: [&str; 2] = ["Images", "Services"];
        const NAMES: [&str; 9] = [
            "",
            "api",
            "web",
            "worker",
            "tools/builder",
            "tools/builder/cache",
            "base/alpine",
            "base/alpine/3.19",
            "ci-cache",
        ];

        let mut rng = SplitMix64(seed);
        let mut world = World::new();
        let mut homes = Vec::new();
        for top in TOP {
            let t = world.group(None, top);
            homes.push(t);
            for sub in SUB {
                let s = world.group(Some(t), sub);
                homes.push(s);
                for leaf in LEAF {
                    homes.push(world.group(Some(s), leaf));
                }
            }
        }
        let quiet_root = world
            .groups
            .iter()
            .find(|g| g.path == "Quiet-Group")
            .map(|g| g.id);
        let in_quiet = |world: &World, gid: i64| {
            world
                .groups
                .iter()
                .find(|g| g.id == gid)
                .is_some_and(|g| g.full_path.starts_with("Quiet-Group"))
        };

        // The special cases first, so that a small world still has every one of them.
        let build = homes[1];
        let big: Vec<String> = (0..2345).map(|i| format!("images/img-{i:05}")).collect();
        let big_refs: Vec<&str> = big.iter().map(String::as_str).collect();
        world.project(build, "CNG", &big_refs, &big_refs[..2000]);
        let full: Vec<String> = (0..1000).map(|i| format!("layer-{i:04}")).collect();
        let full_refs: Vec<&str> = full.iter().map(String::as_str).collect();
        world.project(build, "CNG-Mirror", &full_refs, &[]);
        world.project(build, "CNG-Mirror-Old", &["", "api"], &["api"]);
        world.project_without_route(build, "Orphan");
        // GitLab allows a trailing dash; the registry's name grammar does not.
        world.project(build, "Trailing-", &[], &[]);
        if let Some(quiet) = quiet_root {
            world.project(quiet, "Legacy", &[], &["", "old/image"]);
        }
        // One project (two for the shared path) per guard a practice database can show: the
        // repair holds their lost repositories back, each for its reason.
        let group = |world: &World, full_path: &str| {
            world
                .groups
                .iter()
                .find(|g| g.full_path == full_path)
                .map_or(build, |g| g.id)
        };
        let acme_platform = group(&world, "Acme-Corp/Platform");
        let acme_tools = group(&world, "Acme-Corp/Tools");
        let science_build = group(&world, "Data-Science/Build");
        let science_platform = group(&world, "Data-Science/Platform");
        let mobile_build = group(&world, "Mobile_Team/Build");
        let deleting = world.project(acme_platform, "Being-Deleted", &["", "api"], &[]);
        world.amend(deleting, |p| p.pending_delete = true);
        let switched_off = world.project(acme_platform, "Registry-Off", &["web"], &[]);
        world.amend(switched_off, |p| p.registry_disabled = true);
        // Legacy routes that differ only in case: GitLab cannot say whose the images are.
        world.project(acme_tools, "Legacy-Twin", &["app"], &[]);
        world.project(acme_tools, "LEGACY-TWIN", &["app"], &[]);
        // Created after the registry dated its repositories: a reused path.
        let reborn = world.project(science_build, "Reborn", &["", "model"], &[]);
        world.amend(reborn, |p| {
            p.created_at = AFTER_THE_REPOSITORIES;
            p.route_updated_at = AFTER_THE_REPOSITORIES;
        });
        // Renamed into its path after the images were pushed there.
        let moved_in = world.project(science_platform, "Moved-In", &["notebook"], &[]);
        world.amend(moved_in, |p| p.route_updated_at = AFTER_THE_REPOSITORIES);
        let policed = world.project(mobile_build, "Cleaned-Up", &["ios", "android"], &[]);
        world.amend(policed, |p| p.cleanup_policy = true);

        let mut n = world.projects.len() as u32;
        while n < projects {
            let home = homes[(rng.next() % homes.len() as u64) as usize];
            let path = match rng.next() % 3 {
                0 => format!("Service-{n}"),
                1 => format!("app_{n}"),
                _ => format!("Web.App-{n}"),
            };
            let pick = |rng: &mut SplitMix64, k: u64| -> Vec<&str> {
                let mut chosen: Vec<&str> = (0..k)
                    .map(|_| NAMES[(rng.next() % NAMES.len() as u64) as usize])
                    .collect();
                chosen.sort_unstable();
                chosen.dedup();
                chosen
            };
            let roll = rng.next() % 100;
            if in_quiet(&world, home) || roll < 55 {
                world.project(home, &path, &[], &[]);
            } else if roll < 70 {
                let k = 1 + rng.next() % 4;
                let names = pick(&mut rng, k);
                world.project(home, &path, &names, &names);
            } else if roll < 85 {
                let k = 2 + rng.next() % 5;
                let registry = pick(&mut rng, k);
                let keep = (rng.next() % registry.len() as u64) as usize;
                world.project(home, &path, &registry, &registry[..keep]);
            } else if roll < 95 {
                let k = 1 + rng.next() % 3;
                let registry = pick(&mut rng, k);
                let mut rails: Vec<&str> = registry[..registry.len() / 2].to_vec();
                rails.push("deleted/long-ago");
                world.project(home, &path, &registry, &rails);
            } else {
                world.project(home, &path, &["", "api"], &["api"]);
            }
            n += 1;
        }
        world
    }
}

/// The columns of a seeded route.
const ROUTE_COLUMNS: (
    routes::source_id,
    routes::source_type,
    routes::path,
    routes::name,
    routes::created_at,
    routes::updated_at,
) = (
    routes::source_id,
    routes::source_type,
    routes::path,
    routes::name,
    routes::created_at,
    routes::updated_at,
);

/// A small, fast, deterministic generator: the demo must seed the same world every time.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_counts_registry_names_missing_from_rails_only() {
        let mut w = World::new();
        let g = w.group(None, "Top");
        let p = w.project(g, "Proj", &["", "a", "a/b"], &["a", "gone"]);
        let orphan = w.project_without_route(g, "Orphan");
        let e = w.expected();
        assert_eq!(
            e[&p],
            Expected {
                status: TrackingStatus::Completed,
                missing: 2
            }
        );
        assert_eq!(e[&orphan], Expected::FAILED);
        assert_eq!(
            w.registry_paths(),
            vec!["top/proj", "top/proj/a", "top/proj/a/b"]
        );
    }

    #[test]
    fn generated_worlds_are_deterministic_and_cover_the_special_cases() {
        let a = World::generate(300, 7);
        let b = World::generate(300, 7);
        assert_eq!(a.projects.len(), 300);
        assert_eq!(a.registry_paths(), b.registry_paths());
        let expected = a.expected();
        assert!(expected
            .values()
            .any(|e| e.status == TrackingStatus::Failed));
        assert!(expected.values().any(|e| e.missing == 1000));
        assert!(expected.values().any(|e| e.missing == 345));
        assert!(a.projects.iter().any(|p| p
            .full_path
            .as_deref()
            .is_some_and(|f| !is_addressable(&f.to_lowercase()))));
        assert!(a.projects.iter().any(|p| p
            .full_path
            .as_deref()
            .is_some_and(|f| f != f.to_lowercase())));
    }

    #[test]
    fn generated_worlds_hold_back_repositories_for_every_guard_a_shared_database_can_show() {
        // `demo --projects` starts at 20: room for every special project.
        assert_eq!(
            World::generate(1, 7).projects.len(),
            World::SPECIAL_PROJECTS as usize
        );
        const { assert!(World::SPECIAL_PROJECTS <= 20) };
        let w = World::generate(40, 2026);
        let plan = w.expected_plan(Consent::default());
        let lost: BTreeSet<(i64, String)> = w.lost_repositories().into_iter().collect();
        assert_eq!(plan.keys().cloned().collect::<BTreeSet<_>>(), lost);
        let count = |reason: Option<Reason>| plan.values().filter(|(_, r)| *r == reason).count();
        for (reason, n) in [
            (Reason::ProjectPendingDeletion, 2),
            (Reason::RegistryDisabled, 1),
            (Reason::AmbiguousPath, 2),
            (Reason::OlderThanProject, 2),
            (Reason::OlderThanPath, 1),
            (Reason::CleanupPolicyEnabled, 2),
        ] {
            assert_eq!(count(Some(reason)), n, "{reason}");
        }
        assert!(count(Some(Reason::NameUnaddressable)) > 0);
        assert!(count(None) > 0);
        // Each flag lifts its own reason, and the reviews then restore.
        let all = Consent {
            older_than_project: true,
            older_than_path: true,
            cleanup_policy: true,
        };
        let lifted = w.expected_plan(all);
        assert_eq!(
            lifted
                .values()
                .filter(|(a, _)| *a == Action::Restore)
                .count(),
            count(None) + 5
        );
        assert!(lifted.values().all(|(a, _)| *a != Action::Review));
    }
}
