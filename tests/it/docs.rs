//! The manual's links: every relative link between `README.md`, `BENCHMARKS.md` and `docs/*.md`
//! leads to a file that exists and, with an `#anchor`, to a heading of that file, so moving a
//! section cannot leave a dangling link behind.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

#[test]
fn relative_links_between_the_docs_resolve() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md"), root.join("BENCHMARKS.md")];
    let mut in_docs: Vec<PathBuf> = fs::read_dir(root.join("docs"))
        .expect("docs/ is readable")
        .map(|entry| entry.expect("a docs/ entry is readable").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    in_docs.sort();
    files.extend(in_docs);

    let mut slugs: BTreeMap<PathBuf, BTreeSet<String>> = BTreeMap::new();
    let mut broken = Vec::new();
    for file in &files {
        let text = read(file);
        let dir = file.parent().expect("a doc file has a folder");
        for (line, target) in links(&text) {
            if ["http://", "https://", "mailto:"]
                .iter()
                .any(|scheme| target.starts_with(scheme))
            {
                continue;
            }
            let (path, anchor) = match target.split_once('#') {
                Some((path, anchor)) => (path, Some(anchor)),
                None => (target.as_str(), None),
            };
            let linked = if path.is_empty() {
                file.clone()
            } else {
                dir.join(path)
            };
            let at = format!(
                "{}:{line}: ({target})",
                file.strip_prefix(root).unwrap_or(file).display()
            );
            if !linked.exists() {
                broken.push(format!("{at}: no file {}", linked.display()));
                continue;
            }
            let Some(anchor) = anchor else { continue };
            let known = slugs
                .entry(linked.clone())
                .or_insert_with(|| headings(&read(&linked)));
            if !known.contains(anchor) {
                broken.push(format!("{at}: no heading with the slug `{anchor}`"));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "{} broken link(s) in the docs:\n{}",
        broken.len(),
        broken.join("\n")
    );
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The text outside fenced code blocks, line for line (a fenced line becomes empty), so that
/// neither a `#` comment nor an example in a block counts.
fn prose(text: &str) -> Vec<&str> {
    let mut fenced = false;
    text.lines()
        .map(|line| {
            let trimmed = line.trim_start();
            if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
                fenced = !fenced;
                ""
            } else if fenced {
                ""
            } else {
                line
            }
        })
        .collect()
}

/// Blanks out inline code spans (a run of backticks up to the next run of the same length, across
/// lines too), keeping newlines, so that `[a](b)` in code is not a link and line numbers hold.
fn without_code_spans(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '`' {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let run = chars[i..].iter().take_while(|&&c| c == '`').count();
        let mut j = i + run;
        let mut close = None;
        while j < chars.len() {
            if chars[j] == '`' {
                let other = chars[j..].iter().take_while(|&&c| c == '`').count();
                if other == run {
                    close = Some(j);
                    break;
                }
                j += other;
            } else {
                j += 1;
            }
        }
        match close {
            Some(end) => {
                let span = &chars[i..end + run];
                out.extend(span.iter().map(|&c| if c == '\n' { '\n' } else { ' ' }));
                i = end + run;
            }
            // An unmatched run is literal text.
            None => {
                out.extend(&chars[i..i + run]);
                i += run;
            }
        }
    }
    out
}

/// Every `[text](target)` with its 1-based line. The text may wrap onto earlier lines, so the scan
/// looks for `](`; a title after the target (`(target "title")`) is dropped.
fn links(text: &str) -> Vec<(usize, String)> {
    let cleaned = without_code_spans(&prose(text).join("\n"));
    let mut found = Vec::new();
    for (index, line) in cleaned.lines().enumerate() {
        let mut rest = line;
        while let Some(start) = rest.find("](") {
            let after = &rest[start + 2..];
            let Some(end) = after.find(')') else { break };
            let target = after[..end].split_whitespace().next().unwrap_or("");
            if !target.is_empty() {
                found.push((index + 1, target.to_string()));
            }
            rest = &after[end + 1..];
        }
    }
    found
}

/// The anchors GitHub gives a file's headings: lowercased, spaces to `-`, every other character
/// but letters, digits, `-` and `_` dropped; a repeated slug gets `-1`, `-2`, ...
fn headings(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut slugs = BTreeSet::new();
    for line in prose(text) {
        let trimmed = line.trim_start();
        let level = trimmed.chars().take_while(|&c| c == '#').count();
        if level == 0 || level > 6 || line.len() - trimmed.len() > 3 {
            continue;
        }
        let title = &trimmed[level..];
        if !(title.is_empty() || title.starts_with(' ') || title.starts_with('\t')) {
            continue;
        }
        let title = title.trim().trim_end_matches('#').trim_end();
        let slug = slug(title);
        let count = seen.entry(slug.clone()).or_insert(0);
        if *count == 0 {
            slugs.insert(slug);
        } else {
            slugs.insert(format!("{slug}-{count}"));
        }
        *count += 1;
    }
    slugs
}

fn slug(title: &str) -> String {
    title
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .flat_map(char::to_lowercase)
        .collect()
}
