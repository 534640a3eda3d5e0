//! The repair's decision for one project, as a pure function: given what the database says about
//! the project and what the registry lists under its path, which repositories without a
//! `container_repositories` row are restored, skipped, or left for review, and why.
//!
//! [`plan_project`] does no I/O: the Analyzer calls it once per project with facts read in bulk
//! ([`crate::db::repair`]), the registry's entries and the names GitLab already has; the Writer
//! applies the [`ProjectPlan`] it returns ([`crate::db::repair::apply_into`]).
//!
//! Every guard (issue 10, point 3) and the order in which they are asked, first match wins:
//! 1. `project_pending_deletion`: `pending_delete` or `marked_for_deletion_at` is set. The
//!    deletion walks the project's rows to delete registry data; a row inserted meanwhile is lost
//!    with the project while the images stay.
//! 2. `registry_disabled`: `project_features.container_registry_access_level = 0`, or no
//!    `project_features` row at all (GitLab creates one with every project; without it GitLab's
//!    `project_feature&.container_registry_enabled?` is false, and a wrong row is worse than none).
//! 3. `ambiguous_path`: another project's route lowercases to the repository path, or to the path
//!    with segments removed down to this project's path (legacy routes that differ only in case):
//!    the registry cannot tell whose the repository is, so neither project gets it.
//! 4. `name_unaddressable`: a name of three or more segments (GitLab's `ContainerRegistry::Path`
//!    looks for the project at the path and with one or two trailing segments removed,
//!    `LEVELS_SUPPORTED = 3`), or a path that breaks the registry's grammar.
//! 5. `index_unsafe`: the unique index `index_container_repositories_on_project_id_and_name` is
//!    missing or invalid, or the project already has duplicate `(project_id, name)` rows: `ON
//!    CONFLICT` is then no protection, so nothing is restored in the project.
//! 6. `older_than_project` (action `review`): the registry created the repository before the
//!    project (or either date is unknown): it may be a deleted project's, left under a path that
//!    was reused. Restored only with `--include-older`.
//!
//! The order puts first what no operator action lifts for this project (its deletion, its switched
//! off registry, a path shared with another project, a name GitLab cannot address), then what an
//! operator can mend and rerun (the index), and last the one reason a flag lifts (`review`), so
//! that the reason shown is the one that would still hold once everything after it is fixed.

use std::collections::HashSet;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Serialize;

use crate::registry::grammar::is_addressable;
use crate::registry::names::rails_names;
use crate::registry::Entry;

/// GitLab's `ContainerRegistry::Path::LEVELS_SUPPORTED`, counted with the project itself: a
/// repository name has at most this many segments less one.
pub const MAX_NAME_SEGMENTS: usize = 2;

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
    /// Older than the project: restored only with `--include-older`.
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

/// Why a repository is not restored. The names are stable (JSON, CSV, the audit table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    ProjectPendingDeletion,
    RegistryDisabled,
    AmbiguousPath,
    NameUnaddressable,
    IndexUnsafe,
    OlderThanProject,
}

impl Reason {
    /// Every reason, in the order the guards are asked.
    pub const ALL: [Reason; 6] = [
        Reason::ProjectPendingDeletion,
        Reason::RegistryDisabled,
        Reason::AmbiguousPath,
        Reason::NameUnaddressable,
        Reason::IndexUnsafe,
        Reason::OlderThanProject,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ProjectPendingDeletion => "project_pending_deletion",
            Reason::RegistryDisabled => "registry_disabled",
            Reason::AmbiguousPath => "ambiguous_path",
            Reason::NameUnaddressable => "name_unaddressable",
            Reason::IndexUnsafe => "index_unsafe",
            Reason::OlderThanProject => "older_than_project",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Reason::ALL.into_iter().find(|r| r.as_str() == text)
    }

    /// The action a repository held back for this reason gets.
    pub fn action(self) -> Action {
        match self {
            Reason::OlderThanProject => Action::Review,
            _ => Action::Skip,
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the database says about one project, read in bulk per batch ([`crate::db::repair`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectFacts {
    pub id: i64,
    /// `routes.path`, mixed case.
    pub full_path: String,
    /// `projects.created_at` (UTC, stored without time zone); `None` when NULL.
    pub created_at: Option<NaiveDateTime>,
    pub pending_delete: bool,
    /// `marked_for_deletion_at` is set.
    pub marked_for_deletion: bool,
    /// `project_features.container_registry_access_level`; `None`: the project has no row there.
    pub registry_access_level: Option<i32>,
    /// The project has two or more `container_repositories` rows with the same name.
    pub duplicate_rows: bool,
}

impl ProjectFacts {
    /// The registry path: the full path, lowercased.
    pub fn registry_path(&self) -> String {
        self.full_path.to_lowercase()
    }

    /// The reason that holds for the whole project, if any (guards 1, 2 and the project's part of 5).
    pub fn project_reason(&self, index_safe: bool) -> Option<Reason> {
        if self.pending_delete || self.marked_for_deletion {
            Some(Reason::ProjectPendingDeletion)
        } else if self
            .registry_access_level
            .is_none_or(|level| level == REGISTRY_DISABLED)
        {
            Some(Reason::RegistryDisabled)
        } else if !index_safe || self.duplicate_rows {
            Some(Reason::IndexUnsafe)
        } else {
            None
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
    /// Lowercased paths at or under the project's registry path that are another project's
    /// route lowercased ([`crate::db::repair::claimed_paths`]; see [`candidate_claims`]).
    pub claimed_by_others: &'a HashSet<String>,
    /// `index_container_repositories_on_project_id_and_name` exists, is valid and ready.
    pub index_safe: bool,
    /// `--include-older`: repositories older than the project are restored instead of reviewed.
    pub include_older: bool,
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
}

/// The plan for one project: one record per registry repository without a row, in registry order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProjectPlan {
    pub project_id: i64,
    pub full_path: String,
    pub repositories: Vec<PlannedRepository>,
    /// Listed entries that are neither the project path nor under it (ignored, as in analysis).
    pub ignored: u32,
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

    /// Every `restore` turned into a skip for `reason` (a guard that failed at write time).
    pub fn hold_back(&mut self, reason: Reason) {
        for repository in &mut self.repositories {
            if repository.action == Action::Restore
                || (repository.action == Action::Review && reason != Reason::OlderThanProject)
            {
                repository.action = reason.action();
                repository.reason = Some(reason);
            }
        }
    }
}

fn parse_time(text: Option<&str>) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Whether a Rails name is one GitLab can find its project from: at most
/// [`MAX_NAME_SEGMENTS`] segments, and a full registry path the registry's grammar allows.
pub fn name_is_addressable(name: &str, registry_path: &str) -> bool {
    (name.is_empty() || name.split('/').count() <= MAX_NAME_SEGMENTS)
        && is_addressable(registry_path)
}

/// The registry paths whose owner must be looked up for [`Inputs::claimed_by_others`]: the
/// project's own, and each entry's path with zero or more trailing segments removed down to (not
/// including) the project's, for names GitLab could address. Lowercased, without duplicates.
pub fn candidate_claims(project_path: &str, entries: &[Entry]) -> Vec<String> {
    let project_path = project_path.to_lowercase();
    let (names, _) = rails_names(&project_path, entries);
    let mut seen: HashSet<String> = HashSet::new();
    let mut out = vec![project_path.clone()];
    seen.insert(project_path.clone());
    for name in names {
        if name.is_empty() || name.split('/').count() > MAX_NAME_SEGMENTS {
            continue;
        }
        let mut prefix = project_path.clone();
        for segment in name.split('/') {
            prefix.push('/');
            prefix.push_str(segment);
            if seen.insert(prefix.clone()) {
                out.push(prefix.clone());
            }
        }
    }
    out
}

/// Whether `path` (lowercased) or a shorter path down to the project's is another project's.
fn is_claimed(project_path: &str, path: &str, claimed: &HashSet<String>) -> bool {
    if claimed.is_empty() {
        return false;
    }
    let mut at = path;
    loop {
        if claimed.contains(at) {
            return true;
        }
        if at.len() <= project_path.len() {
            return false;
        }
        match at.rfind('/') {
            Some(cut) => at = &at[..cut],
            None => return false,
        }
    }
}

/// The plan for one project: every registry repository under its path that GitLab has no row
/// for, with the action and reason the guards give it (see the module documentation).
pub fn plan_project(facts: &ProjectFacts, inputs: &Inputs<'_>) -> ProjectPlan {
    let path = facts.registry_path();
    let (names, outside) = rails_names(&path, inputs.entries);
    let project_reason = facts.project_reason(inputs.index_safe);
    let mut repositories = Vec::new();
    for name in names {
        if inputs.existing.contains(&name) {
            continue;
        }
        let registry_path = if name.is_empty() {
            path.clone()
        } else {
            format!("{path}/{name}")
        };
        // `rails_names` keeps the first entry of each name.
        let entry = inputs.entries.iter().find(|e| e.path == registry_path);
        let registry_created_at = entry.and_then(|e| e.created_at.clone());
        let reason = match project_reason {
            Some(reason @ (Reason::ProjectPendingDeletion | Reason::RegistryDisabled)) => {
                Some(reason)
            }
            _ if is_claimed(&path, &registry_path, inputs.claimed_by_others) => {
                Some(Reason::AmbiguousPath)
            }
            _ if !name_is_addressable(&name, &registry_path) => Some(Reason::NameUnaddressable),
            Some(reason) => Some(reason),
            None => {
                let older = match (
                    parse_time(registry_created_at.as_deref()),
                    facts.created_at.map(|t| t.and_utc()),
                ) {
                    (Some(repository), Some(project)) => repository < project,
                    // An age that cannot be compared is not proof of the repository's owner.
                    _ => true,
                };
                (older && !inputs.include_older).then_some(Reason::OlderThanProject)
            }
        };
        repositories.push(PlannedRepository {
            name,
            registry_path,
            action: reason.map_or(Action::Restore, Reason::action),
            reason,
            registry_created_at,
        });
    }
    ProjectPlan {
        project_id: facts.id,
        full_path: facts.full_path.clone(),
        repositories,
        ignored: u32::try_from(outside.len()).unwrap_or(u32::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, created_at: &str) -> Entry {
        Entry {
            name: path.rsplit('/').next().unwrap_or(path).to_string(),
            path: path.to_string(),
            created_at: Some(created_at.to_string()),
            updated_at: None,
        }
    }

    const NEW: &str = "2024-06-01T00:00:00Z";
    const OLD: &str = "2019-01-01T00:00:00Z";

    fn facts() -> ProjectFacts {
        ProjectFacts {
            id: 7,
            full_path: "Group/Sub/Proj".into(),
            created_at: NaiveDateTime::parse_from_str("2020-01-01 00:00:00", "%Y-%m-%d %H:%M:%S")
                .ok(),
            pending_delete: false,
            marked_for_deletion: false,
            registry_access_level: Some(20),
            duplicate_rows: false,
        }
    }

    struct Case {
        facts: ProjectFacts,
        entries: Vec<Entry>,
        existing: HashSet<String>,
        claimed: HashSet<String>,
        index_safe: bool,
        include_older: bool,
    }

    impl Case {
        fn new(paths: &[&str]) -> Self {
            Self {
                facts: facts(),
                entries: paths.iter().map(|p| entry(p, NEW)).collect(),
                existing: HashSet::new(),
                claimed: HashSet::new(),
                index_safe: true,
                include_older: false,
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
                    include_older: self.include_older,
                },
            )
        }

        /// (name, action, reason) of every record.
        fn decisions(&self) -> Vec<(String, Action, Option<Reason>)> {
            self.plan()
                .repositories
                .into_iter()
                .map(|r| (r.name, r.action, r.reason))
                .collect()
        }
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
        let decisions = case.decisions();
        assert_eq!(
            decisions,
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
        case.include_older = true;
        all(&case, Action::Restore, None);
        case.include_older = false;
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
    fn precedence_deletion_then_registry_then_ambiguity_then_name_then_index_then_age() {
        let mut case = Case::new(&[]);
        case.entries.push(entry("group/sub/proj/a/b/c", OLD));
        case.facts.pending_delete = true;
        case.facts.registry_access_level = Some(0);
        case.claimed.insert("group/sub/proj".into());
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
        case.include_older = true;
        expect(&case, Reason::IndexUnsafe);
        case.include_older = false;
        case.index_safe = true;
        expect(&case, Reason::OlderThanProject);
    }

    #[test]
    fn candidate_claims_cover_the_project_and_each_addressable_prefix() {
        let entries = [
            entry("group/sub/proj", NEW),
            entry("group/sub/proj/a", NEW),
            entry("group/sub/proj/a/b", NEW),
            entry("group/sub/proj/c/d", NEW),
            entry("group/sub/proj/e/f/g", NEW),
            entry("elsewhere/x", NEW),
        ];
        assert_eq!(
            candidate_claims("Group/Sub/Proj", &entries),
            vec![
                "group/sub/proj",
                "group/sub/proj/a",
                "group/sub/proj/a/b",
                "group/sub/proj/c",
                "group/sub/proj/c/d",
            ]
        );
    }

    #[test]
    fn hold_back_turns_every_restore_into_a_skip() {
        let mut case = Case::new(&["group/sub/proj/a"]);
        case.entries.push(entry("group/sub/proj/old", OLD));
        let mut plan = case.plan();
        plan.hold_back(Reason::ProjectPendingDeletion);
        assert!(plan
            .repositories
            .iter()
            .all(|r| r.action == Action::Skip && r.reason == Some(Reason::ProjectPendingDeletion)));
        assert_eq!(plan.still_missing(), 2);
    }

    #[test]
    fn reasons_and_actions_read_back_as_written() {
        for reason in Reason::ALL {
            assert_eq!(Reason::parse(reason.as_str()), Some(reason));
        }
        for action in [Action::Restore, Action::Skip, Action::Review] {
            assert_eq!(Action::parse(action.as_str()), Some(action));
        }
        assert_eq!(Reason::parse("nope"), None);
    }
}
