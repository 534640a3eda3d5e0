//! The repair's decision for one project, as a pure function: given what the database says about
//! the project and what the registry lists under its path, which repositories without a
//! `container_repositories` row are restored, skipped, or left for review, and why.
//!
//! [`plan_project`] does no I/O: the Analyzer calls it once per project with facts read in bulk
//! ([`crate::db::repair`]), the registry's entries and the names GitLab already has; the Writer
//! asks the guards again in the project's write transaction ([`ProjectPlan::recheck`]) with the
//! facts it locked, and writes what still holds ([`crate::db::repair::apply_into`]).
//!
//! The guards, in the order they are asked (first match wins; [`Reason::ALL`]):
//! 1. `path_changed` (write time only): the project's route is not the path that was listed (a
//!    rename or transfer of it or of a parent group in between). Its rows would resolve under a
//!    path where the registry holds none of these images, so nothing is written for it.
//! 2. `project_pending_deletion`: `pending_delete` or `marked_for_deletion_at` is set. The
//!    deletion walks the project's rows to delete registry data; a row inserted meanwhile is lost
//!    with the project while the images stay.
//! 3. `registry_disabled`: `project_features.container_registry_access_level = 0`, or no
//!    `project_features` row at all (GitLab creates one with every project; without it GitLab's
//!    `project_feature&.container_registry_enabled?` is false, and a wrong row is worse than none).
//! 4. `ambiguous_path`: another project's route lowercases to one of the nodes GitLab's
//!    `ContainerRegistry::Path#repository_project` tries for the repository's path ([`gitlab_nodes`]:
//!    the path, then without its last one and two segments, parents of the project included).
//!    GitLab gives the repository to the lowest project id among them; the registry cannot say
//!    whose it is, so no project gets it.
//! 5. `name_unaddressable`: a name of three or more segments (GitLab looks for the project at the
//!    path and with one or two trailing segments removed, `LEVELS_SUPPORTED = 3`), a path of 20 or
//!    more components (`Path#valid?`, `NUMBER_OF_ANCESTORS_ALLOWED`), or a path that breaks the
//!    registry's grammar: GitLab could never find the project from the row.
//! 6. `index_unsafe`: the unique index `index_container_repositories_on_project_id_and_name` is
//!    missing or invalid, or the project already has duplicate `(project_id, name)` rows: `ON
//!    CONFLICT` is then no protection, so nothing is restored in the project.
//! 7. `older_than_project` (review; `--include-older`): the registry created the repository before
//!    the project (or either date is unknown): it may be a deleted project's, left under a path
//!    that was reused.
//! 8. `older_than_path` (review; `--include-older-than-path`): the project moved to its path
//!    (`routes.updated_at`, set by a rename or transfer of the project or of any parent group)
//!    after the registry created the repository: it may be the images of a project that moved
//!    away and left them behind, which GitLab allows once their rows are lost.
//! 9. `cleanup_policy_enabled` (review; `--include-cleanup-policy`): the project's cleanup policy
//!    is enabled. A restored row starts unscheduled, so the policy's next run acts on it and may
//!    delete the restored tags, which `undo` cannot bring back: consent is asked before the write.
//!
//! The order puts first what no operator action lifts for this project (its path changing under
//! the write, its deletion, its switched off registry, a path shared with another project, a name
//! GitLab cannot address), then what an operator can mend and rerun (the index), and last the
//! reasons a flag lifts (`review`): whose images they are before whether they may be cleaned up.
//! So the reason shown is the one that would still hold once everything after it is fixed.

use std::collections::HashSet;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Serialize;

use super::resolution::repository_path;
pub use super::resolution::{claim_lookups, gitlab_nodes, name_is_addressable};
use crate::registry::names::rails_names;
use crate::registry::Entry;

/// `project_features.container_registry_access_level` when the registry is off.
pub const REGISTRY_DISABLED: i32 = 0;

/// What happens to a repository the registry holds and GitLab has no row for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A row is written (in `apply`; `plan` says it would be).
    Restore,
    /// Never restored by this run (a reason says why).
    Skip,
    /// Restored only with the flag that lifts its reason ([`Reason::flag`]).
    Review,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Restore => "restore",
            Action::Skip => "skip",
            Action::Review => "review",
        }
    }

    /// The action as stored (`registry_repair_skipped.action`).
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "restore" => Some(Action::Restore),
            "skip" => Some(Action::Skip),
            "review" => Some(Action::Review),
            _ => None,
        }
    }
}

/// Why a repository is not restored. The names are stable (JSON, CSV, the audit table); the
/// declaration order is the order the guards are asked in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    PathChanged,
    ProjectPendingDeletion,
    RegistryDisabled,
    AmbiguousPath,
    NameUnaddressable,
    IndexUnsafe,
    OlderThanProject,
    OlderThanPath,
    CleanupPolicyEnabled,
}

impl Reason {
    /// Every reason, in the order the guards are asked.
    pub const ALL: [Reason; 9] = [
        Reason::PathChanged,
        Reason::ProjectPendingDeletion,
        Reason::RegistryDisabled,
        Reason::AmbiguousPath,
        Reason::NameUnaddressable,
        Reason::IndexUnsafe,
        Reason::OlderThanProject,
        Reason::OlderThanPath,
        Reason::CleanupPolicyEnabled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::PathChanged => "path_changed",
            Reason::ProjectPendingDeletion => "project_pending_deletion",
            Reason::RegistryDisabled => "registry_disabled",
            Reason::AmbiguousPath => "ambiguous_path",
            Reason::NameUnaddressable => "name_unaddressable",
            Reason::IndexUnsafe => "index_unsafe",
            Reason::OlderThanProject => "older_than_project",
            Reason::OlderThanPath => "older_than_path",
            Reason::CleanupPolicyEnabled => "cleanup_policy_enabled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Reason::ALL.into_iter().find(|r| r.as_str() == text)
    }

    /// The action a repository held back for this reason gets.
    pub fn action(self) -> Action {
        match self.flag() {
            Some(_) => Action::Review,
            None => Action::Skip,
        }
    }

    /// The `repair plan|apply` flag that lifts a review reason.
    pub fn flag(self) -> Option<&'static str> {
        match self {
            Reason::OlderThanProject => Some("--include-older"),
            Reason::OlderThanPath => Some("--include-older-than-path"),
            Reason::CleanupPolicyEnabled => Some("--include-cleanup-policy"),
            _ => None,
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The review reasons the operator lifted, each with its flag ([`Reason::flag`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Consent {
    /// `--include-older`: repositories older than their project are restored.
    pub older_than_project: bool,
    /// `--include-older-than-path`: repositories older than the project's move to its path are
    /// restored.
    pub older_than_path: bool,
    /// `--include-cleanup-policy`: projects with an enabled cleanup policy are restored.
    pub cleanup_policy: bool,
}

impl Consent {
    /// Whether a flag lifts `reason`.
    pub fn lifts(self, reason: Reason) -> bool {
        match reason {
            Reason::OlderThanProject => self.older_than_project,
            Reason::OlderThanPath => self.older_than_path,
            Reason::CleanupPolicyEnabled => self.cleanup_policy,
            _ => false,
        }
    }

    /// The flags given, as an operator types them.
    pub fn flags(self) -> Vec<&'static str> {
        Reason::ALL
            .into_iter()
            .filter(|r| self.lifts(*r))
            .filter_map(Reason::flag)
            .collect()
    }
}

/// What the database says about one project, read in bulk per batch ([`crate::db::repair`]), and
/// again under lock when its plan is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectFacts {
    pub id: i64,
    /// `routes.path`, mixed case.
    pub full_path: String,
    /// `projects.created_at` (UTC, stored without time zone); `None` when NULL.
    pub created_at: Option<NaiveDateTime>,
    /// `routes.updated_at` of the project's route (UTC): set whenever the path changes, by a
    /// rename or transfer of the project or of a parent group; `None` when NULL (old rows).
    pub route_updated_at: Option<NaiveDateTime>,
    pub pending_delete: bool,
    /// `marked_for_deletion_at` is set.
    pub marked_for_deletion: bool,
    /// `project_features.container_registry_access_level`; `None`: the project has no row there.
    pub registry_access_level: Option<i32>,
    /// The project has two or more `container_repositories` rows with the same name.
    pub duplicate_rows: bool,
    /// The project's `container_expiration_policies` row is enabled.
    pub cleanup_policy: bool,
}

impl ProjectFacts {
    /// The registry path: the full path, lowercased.
    pub fn registry_path(&self) -> String {
        self.full_path.to_lowercase()
    }

    /// When the project arrived at its path, if that was after it was created: its route's
    /// `updated_at` when later than `created_at` (or when `created_at` is unknown). `None` when it
    /// has been where it is since it was created, as far as the database can tell.
    pub fn moved_in_at(&self) -> Option<NaiveDateTime> {
        let moved = self.route_updated_at?;
        match self.created_at {
            Some(created) if moved <= created => None,
            _ => Some(moved),
        }
    }
}

/// Everything [`plan_project`] decides on, besides the project's facts.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    /// The registry's entries under the project path (every page), as listed.
    pub entries: &'a [Entry],
    /// The names GitLab's `container_repositories` has for the project (at least those of
    /// `entries`).
    pub existing: &'a HashSet<String>,
    /// Lowercased paths among [`claim_lookups`] that are another project's route lowercased
    /// ([`crate::db::repair::claimed_paths`]).
    pub claimed_by_others: &'a HashSet<String>,
    /// `index_container_repositories_on_project_id_and_name` exists, is valid and ready.
    pub index_safe: bool,
    /// The review reasons the operator lifted.
    pub consent: Consent,
}

/// One registry repository without a row, and what the repair does about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedRepository {
    /// The Rails name (`''` for the project's root repository).
    pub name: String,
    /// The registry path as listed.
    pub registry_path: String,
    pub action: Action,
    /// `None` exactly when `action` is `restore`.
    pub reason: Option<Reason>,
    /// `created_at` as the registry listed it.
    pub registry_created_at: Option<String>,
}

impl PlannedRepository {
    /// `registry_created_at`, parsed (RFC 3339); `None` when absent or unreadable.
    pub fn registry_created_at_parsed(&self) -> Option<DateTime<Utc>> {
        parse_time(self.registry_created_at.as_deref())
    }

    fn decided(&mut self, reason: Option<Reason>) {
        self.action = reason.map_or(Action::Restore, Reason::action);
        self.reason = reason;
    }
}

/// The plan for one project: one record per registry repository without a row, in registry order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProjectPlan {
    pub project_id: i64,
    /// The route the project was listed under (mixed case).
    pub full_path: String,
    pub repositories: Vec<PlannedRepository>,
    /// Listed entries that are neither the project path nor under it (ignored, as in analysis).
    pub ignored: u32,
    /// The review reasons the operator lifted: the write asks the guards again with the same.
    #[serde(skip)]
    pub consent: Consent,
}

impl ProjectPlan {
    /// The records with this action.
    pub fn with_action(&self, action: Action) -> impl Iterator<Item = &PlannedRepository> {
        self.repositories.iter().filter(move |r| r.action == action)
    }

    /// How many repositories stay without a row if every `restore` is written: the tracking
    /// row's `missing_count` after `apply`.
    pub fn still_missing(&self) -> i32 {
        let n = self
            .repositories
            .iter()
            .filter(|r| r.action != Action::Restore)
            .count();
        i32::try_from(n).unwrap_or(i32::MAX)
    }

    /// The write's second look, with the project's facts as its transaction locked them: every
    /// repository's guards are asked again. The plan only ever holds back more: a reason that held
    /// when it was made stays, unless one earlier in the order holds now.
    pub fn recheck(&mut self, facts: &ProjectFacts, index_safe: bool) {
        for repository in &mut self.repositories {
            let seen = Seen {
                name: &repository.name,
                registry_path: &repository.registry_path,
                created_at: repository.registry_created_at_parsed(),
                claimed: repository.reason == Some(Reason::AmbiguousPath),
            };
            let now = decide(facts, &seen, index_safe, self.consent);
            let reason = match (repository.reason, now) {
                (Some(then), Some(now)) => Some(then.min(now)),
                (then, now) => then.or(now),
            };
            repository.decided(reason);
        }
    }

    /// Every record held back: the project's path changed between the listing and the write.
    pub fn path_changed(&mut self) {
        for repository in &mut self.repositories {
            repository.decided(Some(Reason::PathChanged));
        }
    }
}

fn parse_time(text: Option<&str>) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// One repository as the guards see it.
struct Seen<'a> {
    name: &'a str,
    registry_path: &'a str,
    created_at: Option<DateTime<Utc>>,
    /// Another project's route is one of the repository path's [`gitlab_nodes`].
    claimed: bool,
}

/// The first guard that holds for one repository and that the operator did not lift, in the order
/// of [`Reason::ALL`] (`path_changed` is the write's own, decided before the guards are asked).
fn decide(
    facts: &ProjectFacts,
    repository: &Seen<'_>,
    index_safe: bool,
    consent: Consent,
) -> Option<Reason> {
    let project_created = facts.created_at.map(|t| t.and_utc());
    // An age that cannot be compared is not proof of the repository's owner.
    let older_than = |moment: Option<DateTime<Utc>>| match (repository.created_at, moment) {
        (Some(repository), Some(moment)) => repository < moment,
        _ => true,
    };
    let moved_in_at = facts.moved_in_at().map(|t| t.and_utc());
    let guards = [
        (
            Reason::ProjectPendingDeletion,
            facts.pending_delete || facts.marked_for_deletion,
        ),
        (
            Reason::RegistryDisabled,
            facts
                .registry_access_level
                .is_none_or(|level| level == REGISTRY_DISABLED),
        ),
        (Reason::AmbiguousPath, repository.claimed),
        (
            Reason::NameUnaddressable,
            !name_is_addressable(repository.name, repository.registry_path),
        ),
        (Reason::IndexUnsafe, !index_safe || facts.duplicate_rows),
        (Reason::OlderThanProject, older_than(project_created)),
        (
            Reason::OlderThanPath,
            moved_in_at.is_some() && older_than(moved_in_at),
        ),
        (Reason::CleanupPolicyEnabled, facts.cleanup_policy),
    ];
    guards
        .into_iter()
        .find(|(reason, holds)| *holds && !consent.lifts(*reason))
        .map(|(reason, _)| reason)
}

/// The plan for one project: every registry repository under its path that GitLab has no row
/// for, with the action and reason the guards give it (see the module documentation).
pub fn plan_project(facts: &ProjectFacts, inputs: &Inputs<'_>) -> ProjectPlan {
    let path = facts.registry_path();
    let (names, outside) = rails_names(&path, inputs.entries);
    let mut repositories = Vec::new();
    for name in names {
        if inputs.existing.contains(&name) {
            continue;
        }
        let registry_path = repository_path(&path, &name);
        // `rails_names` keeps the first entry of each name.
        let entry = inputs.entries.iter().find(|e| e.path == registry_path);
        let registry_created_at = entry.and_then(|e| e.created_at.clone());
        let seen = Seen {
            name: &name,
            registry_path: &registry_path,
            created_at: parse_time(registry_created_at.as_deref()),
            claimed: gitlab_nodes(&registry_path).any(|n| inputs.claimed_by_others.contains(n)),
        };
        let reason = decide(facts, &seen, inputs.index_safe, inputs.consent);
        repositories.push(PlannedRepository {
            action: reason.map_or(Action::Restore, Reason::action),
            reason,
            name,
            registry_path,
            registry_created_at,
        });
    }
    ProjectPlan {
        project_id: facts.id,
        full_path: facts.full_path.clone(),
        repositories,
        ignored: u32::try_from(outside.len()).unwrap_or(u32::MAX),
        consent: inputs.consent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, created_at: &str) -> Entry {
        Entry {
            created_at: Some(created_at.to_string()),
            ..Entry::at(path)
        }
    }

    const NEW: &str = "2024-06-01T00:00:00Z";
    const OLD: &str = "2019-01-01T00:00:00Z";

    fn at(text: &str) -> Option<NaiveDateTime> {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").ok()
    }

    fn facts() -> ProjectFacts {
        ProjectFacts {
            id: 7,
            full_path: "Group/Sub/Proj".into(),
            created_at: at("2020-01-01 00:00:00"),
            route_updated_at: at("2020-01-01 00:00:00"),
            pending_delete: false,
            marked_for_deletion: false,
            registry_access_level: Some(20),
            duplicate_rows: false,
            cleanup_policy: false,
        }
    }

    struct Case {
        facts: ProjectFacts,
        entries: Vec<Entry>,
        existing: HashSet<String>,
        claimed: HashSet<String>,
        index_safe: bool,
        consent: Consent,
    }

    impl Case {
        fn new(paths: &[&str]) -> Self {
            Self {
                facts: facts(),
                entries: paths.iter().map(|p| entry(p, NEW)).collect(),
                existing: HashSet::new(),
                claimed: HashSet::new(),
                index_safe: true,
                consent: Consent::default(),
            }
        }

        fn plan(&self) -> ProjectPlan {
            plan_project(
                &self.facts,
                &Inputs {
                    entries: &self.entries,
                    existing: &self.existing,
                    claimed_by_others: &self.claimed,
                    index_safe: self.index_safe,
                    consent: self.consent,
                },
            )
        }

        /// (name, action, reason) of every record.
        fn decisions(&self) -> Vec<(String, Action, Option<Reason>)> {
            decisions(&self.plan())
        }
    }

    fn decisions(plan: &ProjectPlan) -> Vec<(String, Action, Option<Reason>)> {
        plan.repositories
            .iter()
            .map(|r| (r.name.clone(), r.action, r.reason))
            .collect()
    }

    fn all(case: &Case, action: Action, reason: Option<Reason>) {
        let decisions = case.decisions();
        assert!(!decisions.is_empty());
        for (name, a, r) in decisions {
            assert_eq!((a, r), (action, reason), "{name:?}");
        }
    }

    #[test]
    fn missing_names_are_restored_and_known_ones_left_out() {
        let mut case = Case::new(&[
            "group/sub/proj",
            "group/sub/proj/a",
            "group/sub/proj/a/b",
            "group/sub/proj/known",
            "group/sub/proj-other/x",
        ]);
        case.existing.insert("known".into());
        case.existing.insert("rails-only".into());
        let plan = case.plan();
        assert_eq!(
            case.decisions(),
            vec![
                ("".to_string(), Action::Restore, None),
                ("a".to_string(), Action::Restore, None),
                ("a/b".to_string(), Action::Restore, None),
            ]
        );
        assert_eq!(plan.ignored, 1);
        assert_eq!(plan.still_missing(), 0);
        assert_eq!(plan.repositories[2].registry_path, "group/sub/proj/a/b");
        assert_eq!(
            plan.repositories[0].registry_created_at.as_deref(),
            Some(NEW)
        );
    }

    #[test]
    fn a_project_being_deleted_restores_nothing() {
        let mut case = Case::new(&["group/sub/proj", "group/sub/proj/a"]);
        case.facts.pending_delete = true;
        all(&case, Action::Skip, Some(Reason::ProjectPendingDeletion));
        case.facts.pending_delete = false;
        case.facts.marked_for_deletion = true;
        all(&case, Action::Skip, Some(Reason::ProjectPendingDeletion));
    }

    #[test]
    fn a_project_with_its_registry_off_or_without_features_restores_nothing() {
        let mut case = Case::new(&["group/sub/proj/a"]);
        case.facts.registry_access_level = Some(0);
        all(&case, Action::Skip, Some(Reason::RegistryDisabled));
        case.facts.registry_access_level = None;
        all(&case, Action::Skip, Some(Reason::RegistryDisabled));
        for level in [10, 20, 30] {
            case.facts.registry_access_level = Some(level);
            all(&case, Action::Restore, None);
        }
    }

    #[test]
    fn names_of_three_segments_or_off_the_grammar_are_unaddressable() {
        let case = Case::new(&[
            "group/sub/proj/a/b",
            "group/sub/proj/a/b/c",
            "group/sub/proj/a/b/c/d",
            "group/sub/proj/a..b",
            "group/sub/proj/x-",
        ]);
        assert_eq!(
            case.decisions(),
            vec![
                ("a/b".into(), Action::Restore, None),
                (
                    "a/b/c".into(),
                    Action::Skip,
                    Some(Reason::NameUnaddressable)
                ),
                (
                    "a/b/c/d".into(),
                    Action::Skip,
                    Some(Reason::NameUnaddressable)
                ),
                ("a..b".into(), Action::Skip, Some(Reason::NameUnaddressable)),
                ("x-".into(), Action::Skip, Some(Reason::NameUnaddressable)),
            ]
        );
        let long = format!("group/sub/proj/{}", "a".repeat(250));
        let case = Case::new(&[&long]);
        all(&case, Action::Skip, Some(Reason::NameUnaddressable));
    }

    #[test]
    fn paths_of_twenty_components_or_more_are_unaddressable() {
        // A project 18 groups deep: its path has 19 components, the most GitLab resolves.
        let groups: Vec<String> = (1..=18).map(|i| format!("g{i}")).collect();
        let project = format!("{}/proj", groups.join("/"));
        let mut case = Case::new(&[]);
        case.facts.full_path = project.clone();
        case.entries = vec![
            entry(&project, NEW),
            entry(&format!("{project}/a"), NEW),
            entry(&format!("{project}/a/b"), NEW),
        ];
        assert_eq!(
            case.decisions(),
            vec![
                ("".into(), Action::Restore, None),
                ("a".into(), Action::Skip, Some(Reason::NameUnaddressable)),
                ("a/b".into(), Action::Skip, Some(Reason::NameUnaddressable)),
            ]
        );
        assert!(name_is_addressable("", &project));
        assert!(!name_is_addressable("a", &format!("{project}/a")));
    }

    #[test]
    fn a_path_another_project_shares_in_lowercase_is_ambiguous() {
        let mut case = Case::new(&["group/sub/proj", "group/sub/proj/a"]);
        case.claimed.insert("group/sub/proj".into());
        all(&case, Action::Skip, Some(Reason::AmbiguousPath));
    }

    #[test]
    fn a_name_another_project_could_own_is_ambiguous_and_only_that_name() {
        // Project `Group/Sub/Proj/Deep` exists in a group `Group/Sub/Proj` whose path only
        // differs in case from this project's: its repositories list under ours too.
        let mut case = Case::new(&[
            "group/sub/proj/a",
            "group/sub/proj/deep",
            "group/sub/proj/deep/x",
        ]);
        case.claimed.insert("group/sub/proj/deep".into());
        assert_eq!(
            case.decisions(),
            vec![
                ("a".into(), Action::Restore, None),
                ("deep".into(), Action::Skip, Some(Reason::AmbiguousPath)),
                ("deep/x".into(), Action::Skip, Some(Reason::AmbiguousPath)),
            ]
        );
    }

    #[test]
    fn a_project_at_a_parent_path_claims_the_root_and_one_segment_names_not_two() {
        // A legacy project whose route lowercases to this project's parent group: GitLab tries
        // `group/sub` for the root repository and for one-segment names, and would give them to
        // that project if its id is lower.
        let mut case = Case::new(&["group/sub/proj", "group/sub/proj/a", "group/sub/proj/a/b"]);
        case.claimed.insert("group/sub".into());
        assert_eq!(
            case.decisions(),
            vec![
                ("".into(), Action::Skip, Some(Reason::AmbiguousPath)),
                ("a".into(), Action::Skip, Some(Reason::AmbiguousPath)),
                ("a/b".into(), Action::Restore, None),
            ]
        );
        // The grandparent counts for the root repository of a project three groups deep.
        let mut case = Case::new(&[]);
        case.facts.full_path = "Top/Mid/Group/Proj".into();
        case.entries = vec![
            entry("top/mid/group/proj", NEW),
            entry("top/mid/group/proj/a", NEW),
        ];
        case.claimed.insert("top/mid".into());
        assert_eq!(
            case.decisions(),
            vec![
                ("".into(), Action::Skip, Some(Reason::AmbiguousPath)),
                ("a".into(), Action::Restore, None),
            ]
        );
    }

    #[test]
    fn an_unsafe_index_or_duplicates_restore_nothing_in_the_project() {
        let mut case = Case::new(&["group/sub/proj", "group/sub/proj/a"]);
        case.index_safe = false;
        all(&case, Action::Skip, Some(Reason::IndexUnsafe));
        case.index_safe = true;
        case.facts.duplicate_rows = true;
        all(&case, Action::Skip, Some(Reason::IndexUnsafe));
    }

    #[test]
    fn repositories_older_than_the_project_are_for_review_unless_included() {
        let mut case = Case::new(&["group/sub/proj/new"]);
        case.entries.push(entry("group/sub/proj/old", OLD));
        case.entries.push(Entry {
            created_at: None,
            ..entry("group/sub/proj/undated", NEW)
        });
        case.entries
            .push(entry("group/sub/proj/garbled", "yesterday"));
        assert_eq!(
            case.decisions(),
            vec![
                ("new".into(), Action::Restore, None),
                ("old".into(), Action::Review, Some(Reason::OlderThanProject)),
                (
                    "undated".into(),
                    Action::Review,
                    Some(Reason::OlderThanProject)
                ),
                (
                    "garbled".into(),
                    Action::Review,
                    Some(Reason::OlderThanProject)
                ),
            ]
        );
        assert_eq!(case.plan().still_missing(), 3);
        case.consent.older_than_project = true;
        all(&case, Action::Restore, None);
        case.consent.older_than_project = false;
        case.facts.created_at = None;
        all(&case, Action::Review, Some(Reason::OlderThanProject));
    }

    #[test]
    fn the_same_moment_as_the_project_is_not_older() {
        let mut case = Case::new(&[]);
        case.entries
            .push(entry("group/sub/proj/a", "2020-01-01T00:00:00Z"));
        case.entries
            .push(entry("group/sub/proj/b", "2020-01-01T01:00:00+02:00"));
        assert_eq!(
            case.decisions(),
            vec![
                ("a".into(), Action::Restore, None),
                ("b".into(), Action::Review, Some(Reason::OlderThanProject)),
            ]
        );
    }

    #[test]
    fn repositories_from_before_the_project_moved_to_its_path_are_for_review() {
        // Created in 2020, renamed (or a parent group renamed) into its path in 2025: the 2024
        // repository was pushed by whoever was here before.
        let mut case = Case::new(&["group/sub/proj/before"]);
        case.entries
            .push(entry("group/sub/proj/after", "2025-06-01T00:00:00Z"));
        case.facts.route_updated_at = at("2025-01-01 00:00:00");
        assert_eq!(
            case.facts.moved_in_at(),
            at("2025-01-01 00:00:00"),
            "the later of the two"
        );
        assert_eq!(
            case.decisions(),
            vec![
                ("before".into(), Action::Review, Some(Reason::OlderThanPath)),
                ("after".into(), Action::Restore, None),
            ]
        );
        case.consent.older_than_path = true;
        all(&case, Action::Restore, None);
        case.consent.older_than_path = false;
        // No timestamp on the route (old rows): the project's creation alone decides.
        case.facts.route_updated_at = None;
        assert_eq!(case.facts.moved_in_at(), None);
        all(&case, Action::Restore, None);
        // A route written with the project, or before it: not a move.
        case.facts.route_updated_at = at("2019-06-01 00:00:00");
        all(&case, Action::Restore, None);
    }

    #[test]
    fn older_than_the_project_shows_first_and_the_move_still_holds_once_it_is_lifted() {
        let mut case = Case::new(&[]);
        case.entries.push(entry("group/sub/proj/old", OLD));
        case.facts.route_updated_at = at("2025-01-01 00:00:00");
        all(&case, Action::Review, Some(Reason::OlderThanProject));
        case.consent.older_than_project = true;
        all(&case, Action::Review, Some(Reason::OlderThanPath));
        case.consent.older_than_path = true;
        all(&case, Action::Restore, None);
    }

    #[test]
    fn an_enabled_cleanup_policy_is_for_review_until_consented_after_the_ages() {
        let mut case = Case::new(&["group/sub/proj", "group/sub/proj/a"]);
        case.entries.push(entry("group/sub/proj/old", OLD));
        case.facts.cleanup_policy = true;
        assert_eq!(
            case.decisions(),
            vec![
                (
                    "".into(),
                    Action::Review,
                    Some(Reason::CleanupPolicyEnabled)
                ),
                (
                    "a".into(),
                    Action::Review,
                    Some(Reason::CleanupPolicyEnabled)
                ),
                ("old".into(), Action::Review, Some(Reason::OlderThanProject)),
            ]
        );
        case.consent.cleanup_policy = true;
        assert_eq!(
            case.decisions(),
            vec![
                ("".into(), Action::Restore, None),
                ("a".into(), Action::Restore, None),
                ("old".into(), Action::Review, Some(Reason::OlderThanProject)),
            ]
        );
    }

    #[test]
    fn precedence_follows_the_order_of_the_reasons() {
        let mut case = Case::new(&[]);
        case.entries.push(entry("group/sub/proj/a/b/c", OLD));
        case.facts.pending_delete = true;
        case.facts.registry_access_level = Some(0);
        case.facts.route_updated_at = at("2025-01-01 00:00:00");
        case.facts.cleanup_policy = true;
        // GitLab would resolve `group/sub/proj/a/b/c` to a project at `group/sub/proj/a`.
        case.claimed.insert("group/sub/proj/a".into());
        case.index_safe = false;
        let expect = |case: &Case, reason: Reason| {
            all(case, reason.action(), Some(reason));
        };
        expect(&case, Reason::ProjectPendingDeletion);
        case.facts.pending_delete = false;
        expect(&case, Reason::RegistryDisabled);
        case.facts.registry_access_level = Some(20);
        expect(&case, Reason::AmbiguousPath);
        case.claimed.clear();
        expect(&case, Reason::NameUnaddressable);
        case.entries = vec![entry("group/sub/proj/a", OLD)];
        expect(&case, Reason::IndexUnsafe);
        case.consent = Consent {
            older_than_project: true,
            older_than_path: true,
            cleanup_policy: true,
        };
        expect(&case, Reason::IndexUnsafe);
        case.consent = Consent::default();
        case.index_safe = true;
        expect(&case, Reason::OlderThanProject);
        case.consent.older_than_project = true;
        expect(&case, Reason::OlderThanPath);
        case.consent.older_than_path = true;
        expect(&case, Reason::CleanupPolicyEnabled);
        case.consent.cleanup_policy = true;
        all(&case, Action::Restore, None);
        let ordered: Vec<Reason> = {
            let mut all = Reason::ALL.to_vec();
            all.sort();
            all
        };
        assert_eq!(
            ordered,
            Reason::ALL,
            "declaration order is the guards' order"
        );
    }

    #[test]
    fn the_write_asks_again_and_only_ever_holds_back_more() {
        let mut case = Case::new(&["group/sub/proj/a", "group/sub/proj/deep/x/y"]);
        case.entries.push(entry("group/sub/proj/old", OLD));
        case.entries.push(entry("group/sub/proj/twin", NEW));
        case.claimed.insert("group/sub/proj/twin".into());
        let planned = case.plan();
        let before = decisions(&planned);

        // Nothing changed: the same decisions.
        let mut same = planned.clone();
        same.recheck(&case.facts, true);
        assert_eq!(decisions(&same), before);

        // A deletion started: every record is held back for it, whatever it had.
        let mut deleting = planned.clone();
        let mut facts = case.facts.clone();
        facts.pending_delete = true;
        deleting.recheck(&facts, true);
        assert!(deleting
            .repositories
            .iter()
            .all(|r| r.reason == Some(Reason::ProjectPendingDeletion)));

        // A cleanup policy enabled meanwhile: restores become reviews; skips stay skips, and a
        // review for age keeps its reason.
        let mut policed = planned.clone();
        let mut facts = case.facts.clone();
        facts.cleanup_policy = true;
        policed.recheck(&facts, true);
        assert_eq!(
            decisions(&policed),
            vec![
                (
                    "a".into(),
                    Action::Review,
                    Some(Reason::CleanupPolicyEnabled)
                ),
                (
                    "deep/x/y".into(),
                    Action::Skip,
                    Some(Reason::NameUnaddressable)
                ),
                ("old".into(), Action::Review, Some(Reason::OlderThanProject)),
                ("twin".into(), Action::Skip, Some(Reason::AmbiguousPath)),
            ]
        );

        // What the plan held back is never restored at write time.
        let mut lifted = planned.clone();
        let mut facts = case.facts.clone();
        facts.created_at = at("2010-01-01 00:00:00");
        lifted.recheck(&facts, true);
        assert_eq!(decisions(&lifted), before);
        assert_eq!(lifted.still_missing(), 3);
    }

    #[test]
    fn a_changed_path_holds_back_every_record() {
        let mut plan = Case::new(&["group/sub/proj", "group/sub/proj/a"]).plan();
        plan.path_changed();
        assert!(plan
            .repositories
            .iter()
            .all(|r| r.action == Action::Skip && r.reason == Some(Reason::PathChanged)));
        assert_eq!(plan.still_missing(), 2);
    }

    #[test]
    fn reasons_actions_and_flags_read_back_as_written() {
        for reason in Reason::ALL {
            assert_eq!(Reason::parse(reason.as_str()), Some(reason));
            assert_eq!(reason.action() == Action::Review, reason.flag().is_some());
        }
        for action in [Action::Restore, Action::Skip, Action::Review] {
            assert_eq!(Action::parse(action.as_str()), Some(action));
        }
        assert_eq!(Reason::parse("nope"), None);
        let consent = Consent {
            older_than_project: true,
            older_than_path: false,
            cleanup_policy: true,
        };
        assert_eq!(
            consent.flags(),
            vec!["--include-older", "--include-cleanup-policy"]
        );
    }
}
