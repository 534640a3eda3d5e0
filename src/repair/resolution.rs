//! How GitLab finds the project a registry path belongs to (`ContainerRegistry::Path`), as pure
//! functions: which paths it can resolve at all, and the nodes it looks the project up by. The
//! guards ([`super::guards`]) ask them whether a restored row would be the project's, and whose
//! routes to look up.

use std::collections::HashSet;

use crate::registry::grammar::is_addressable;
use crate::registry::names::rails_names;
use crate::registry::Entry;

/// GitLab's `ContainerRegistry::Path::LEVELS_SUPPORTED`: the nodes of a repository path GitLab
/// looks its project up by, counted with the path itself.
pub const LEVELS_SUPPORTED: usize = 3;

/// A repository name has at most this many segments: the project's path must be one of the
/// [`LEVELS_SUPPORTED`] nodes.
pub const MAX_NAME_SEGMENTS: usize = LEVELS_SUPPORTED - 1;

/// GitLab's `Namespace::NUMBER_OF_ANCESTORS_ALLOWED`: `ContainerRegistry::Path#valid?` takes only
/// paths of fewer components.
pub const NUMBER_OF_ANCESTORS_ALLOWED: usize = 20;

/// Whether a Rails name is one GitLab can find its project from: at most
/// [`MAX_NAME_SEGMENTS`] segments, a full registry path of fewer than
/// [`NUMBER_OF_ANCESTORS_ALLOWED`] components, and one the registry's grammar allows.
pub fn name_is_addressable(name: &str, registry_path: &str) -> bool {
    (name.is_empty() || name.split('/').count() <= MAX_NAME_SEGMENTS)
        && registry_path.split('/').count() < NUMBER_OF_ANCESTORS_ALLOWED
        && is_addressable(registry_path)
}

/// The nodes GitLab's `ContainerRegistry::Path#repository_project` looks the project of
/// `registry_path` up by, longest first: the path, then without its last one and two segments
/// ([`LEVELS_SUPPORTED`]), never shorter than two segments. GitLab takes the lowest project id
/// whose route lowercases to any of them.
pub fn gitlab_nodes(registry_path: &str) -> impl Iterator<Item = &str> {
    let ends: Vec<usize> = registry_path
        .match_indices('/')
        .map(|(at, _)| at)
        .chain([registry_path.len()])
        .collect();
    let components = ends.len();
    let shortest = components.saturating_sub(LEVELS_SUPPORTED - 1).max(2);
    (shortest..=components)
        .rev()
        .map(move |k| &registry_path[..ends[k - 1]])
}

/// The registry paths whose owner must be looked up for
/// [`super::guards::Inputs::claimed_by_others`]: the
/// [`gitlab_nodes`] of the project's own path and of every listed repository under it, parents of
/// the project included. Lowercased, without duplicates, longest paths of each repository first.
pub fn claim_lookups(project_path: &str, entries: &[Entry]) -> Vec<String> {
    let project_path = project_path.to_lowercase();
    let (names, _) = rails_names(&project_path, entries);
    let mut seen: HashSet<String> = HashSet::new();
    let mut out = Vec::new();
    for name in std::iter::once(String::new()).chain(names) {
        let path = repository_path(&project_path, &name);
        for node in gitlab_nodes(&path) {
            if seen.insert(node.to_string()) {
                out.push(node.to_string());
            }
        }
    }
    out
}

/// The registry path of the repository `name` of the project at `project_path` (`''`: its root).
pub(super) fn repository_path(project_path: &str, name: &str) -> String {
    if name.is_empty() {
        project_path.to_string()
    } else {
        format!("{project_path}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str) -> Entry {
        Entry::at(path)
    }

    #[test]
    fn gitlab_tries_the_path_and_up_to_two_parents_never_shorter_than_two_segments() {
        fn nodes(path: &str) -> Vec<&str> {
            gitlab_nodes(path).collect()
        }
        assert_eq!(nodes("a/b/c/d/e"), vec!["a/b/c/d/e", "a/b/c/d", "a/b/c"]);
        assert_eq!(nodes("a/b/c"), vec!["a/b/c", "a/b"]);
        assert_eq!(nodes("a/b"), vec!["a/b"]);
        assert_eq!(nodes("a"), Vec::<&str>::new());
    }

    #[test]
    fn claim_lookups_cover_every_node_gitlab_tries_parents_included() {
        let entries = [
            entry("group/sub/proj"),
            entry("group/sub/proj/a"),
            entry("group/sub/proj/a/b"),
            entry("group/sub/proj/c/d/e"),
            entry("elsewhere/x"),
        ];
        assert_eq!(
            claim_lookups("Group/Sub/Proj", &entries),
            vec![
                "group/sub/proj",
                "group/sub",
                "group/sub/proj/a",
                "group/sub/proj/a/b",
                "group/sub/proj/c/d/e",
                "group/sub/proj/c/d",
                "group/sub/proj/c",
            ]
        );
    }

    #[test]
    fn names_gitlab_can_resolve() {
        assert!(name_is_addressable("", "g/p"));
        assert!(name_is_addressable("a/b", "g/p/a/b"));
        assert!(!name_is_addressable("a/b/c", "g/p/a/b/c"));
        assert!(!name_is_addressable("x-", "g/p/x-"));
        let nineteen = vec!["a"; 19].join("/");
        assert!(name_is_addressable("", &nineteen));
        assert!(!name_is_addressable("a", &format!("{nineteen}/a")));
    }
}
