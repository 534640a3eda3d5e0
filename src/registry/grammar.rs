//! The distribution name grammar a repository path must match: per `/`-separated segment
//! `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, the whole at most 255 bytes. GitLab allows project and
//! user paths that break it (a trailing `-` or `_`, a leading `_`, `..`); the registry can hold no
//! repository under such a path, so a project there is answered without asking. A listing that
//! names a path breaking it is a hostile answer (see `client::check_names`), shown only through
//! [`shown`].

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

/// The most characters of an untrusted name [`shown`] keeps.
pub const SHOWN_CHARS: usize = 200;

/// An untrusted name (a registry's answer) as a log line or an error may show it: Rust's `{:?}`
/// escaping (quoted; line breaks, control and invisible characters escaped, so it can neither
/// break a log line nor forge one), its first [`SHOWN_CHARS`] characters only, followed by `…`
/// and its length when it is longer (so it cannot flood one either).
pub fn shown(name: &str) -> String {
    match name.char_indices().nth(SHOWN_CHARS) {
        None => format!("{name:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes in all)", &name[..cut], name.len()),
    }
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

    #[test]
    fn an_untrusted_name_is_shown_escaped_and_cut_short() {
        assert_eq!(shown("g/p/x <script> y"), r#""g/p/x <script> y""#);
        let forged = "g/p/x\nERROR forged line\r\u{1b}[31m\u{202e}";
        assert_eq!(
            shown(forged),
            r#""g/p/x\nERROR forged line\r\u{1b}[31m\u{202e}""#
        );
        assert!(!shown(forged).contains(['\n', '\r', '\u{1b}', '\u{202e}']));
        let flood = format!("g/p/{}", "é".repeat(100_000));
        let cut = shown(&flood);
        assert!(cut.starts_with("\"g/p/éé"), "{cut}");
        assert!(cut.ends_with("\"… (200004 bytes in all)"), "{cut}");
        assert_eq!(cut.chars().filter(|c| *c == 'é').count(), SHOWN_CHARS - 4);
    }
}
