//! The distribution name grammar a repository path must match: per `/`-separated segment
//! `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, the whole at most 255 bytes. GitLab allows project and
//! user paths that break it (a trailing `-` or `_`, a leading `_`, `..`); the registry can hold no
//! repository under such a path, so a project there is answered without asking.

/// The longest repository path the registry accepts.
pub const MAX_PATH_BYTES: usize = 255;

/// The same grammar as a PostgreSQL regular expression, for reports that count such projects.
pub const PATH_REGEX_SQL: &str =
    "^[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*(/[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*)*$";

/// Whether the registry can hold repositories at or under `path` (already lowercased).
pub fn is_addressable(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= MAX_PATH_BYTES
        && path.split('/').all(|s| segment_is_valid(s.as_bytes()))
}

fn segment_is_valid(segment: &[u8]) -> bool {
    let alphanumeric = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let mut i = 0;
    loop {
        let start = i;
        while i < segment.len() && alphanumeric(segment[i]) {
            i += 1;
        }
        if i == start {
            return false; // empty, or a separator where a letter or digit must be
        }
        if i == segment.len() {
            return true;
        }
        match segment[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if segment.get(i) == Some(&b'_') {
                    i += 1;
                }
            }
            b'-' => {
                while segment.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_the_registry_accepts() {
        for path in [
            "a",
            "gitlab-org/build/cng",
            "a.b/c_d/e__f/g---h",
            "0/1/2",
            "x-y.z_w",
        ] {
            assert!(is_addressable(path), "{path}");
        }
    }

    #[test]
    fn paths_gitlab_allows_but_the_registry_does_not() {
        for path in [
            "",
            "group/project-",
            "group/project_",
            "group/_project",
            "group/../x",
            "group/./x",
            "group/a..b",
            "group/a___b",
            "group/a._b",
            "group//x",
            "Group/x",
            "group/x/",
            "grüppe/x",
        ] {
            assert!(!is_addressable(path), "{path}");
        }
        let long = format!("g/{}", "a".repeat(254));
        assert!(!is_addressable(&long));
        assert!(is_addressable(&long[..255]));
    }
}
