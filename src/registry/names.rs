//! The names GitLab's database knows a project's registry repositories by: the registry lists
//! full paths, Rails stores `container_repositories.name`, the path with the project's path and
//! `/` removed (`''` for the project's root repository). Used alike by the analysis, the repair's
//! guards and `repair verify`.

use std::collections::HashSet;

use super::Entry;

/// The Rails names (`container_repositories.name`) of a page's entries, without duplicates, and
/// the entries that are neither the project path nor under it.
pub fn rails_names<'a>(path: &str, entries: &'a [Entry]) -> (Vec<String>, Vec<&'a Entry>) {
    let prefix = format!("{path}/");
    let mut seen: HashSet<&str> = HashSet::with_capacity(entries.len());
    let mut ordered = Vec::with_capacity(entries.len());
    let mut outside = Vec::new();
    for entry in entries {
        let name = if entry.path == path {
            Some("")
        } else {
            entry
                .path
                .strip_prefix(&prefix)
                .filter(|rest| !rest.is_empty())
        };
        match name {
            Some(name) => {
                if seen.insert(name) {
                    ordered.push(name.to_string());
                }
            }
            None => outside.push(entry),
        }
    }
    (ordered, outside)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str) -> Entry {
        Entry::at(path)
    }

    #[test]
    fn rails_names_strip_the_project_path() {
        let entries = [
            entry("g/p"),
            entry("g/p/a"),
            entry("g/p/a/b/c"),
            entry("g/p-other/x"),
            entry("g/pp"),
            entry("g"),
            entry("g/p/a"),
        ];
        let (names, outside) = rails_names("g/p", &entries);
        assert_eq!(names, vec!["", "a", "a/b/c"]);
        let outside: Vec<&str> = outside.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(outside, vec!["g/p-other/x", "g/pp", "g"]);
    }
}
