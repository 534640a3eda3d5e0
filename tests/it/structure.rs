//! The code's dependencies run one way: no top-level module of `src/` reaches, through its `crate::`
//! paths, a module that reaches back to it (the commands above the service, the service above
//! the actors, the actors above `db` and `registry`, the repair's domain at the bottom). Read
//! from the source text: every `crate::name` outside comments and unit tests is an arrow from
//! the file's top-level module to `name`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file: without its unit tests (from `#[cfg(test)]` on) and its comments.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::name` of `code`.
fn crate_paths(code: &str) -> BTreeSet<String> {
    code.match_indices("crate::")
        .filter(|(at, _)| {
            // `registry_repair::crate` is no such path; a `$crate` in a macro is none either.
            !code[..*at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == '$')
        })
        .map(|(at, _)| {
            code[at + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect::<String>()
        })
        .filter(|name| !name.is_empty())
        .collect()
}

fn graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut graph = Graph::new();
    for file in files {
        let relative = file.strip_prefix(src).expect("under src");
        let first = relative
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .expect("a file name");
        let module = first.trim_end_matches(".rs").to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("a source file");
        for target in crate_paths(&code(&text)) {
            if target != module {
                graph
                    .entry(module.clone())
                    .or_default()
                    .entry(target)
                    .or_default()
                    .insert(relative.display().to_string());
            }
        }
    }
    graph
}

/// A path of arrows from `from` back to itself, if there is one.
fn circle(graph: &Graph, from: &str) -> Option<Vec<String>> {
    let mut stack = vec![(from.to_string(), vec![from.to_string()])];
    let mut seen = BTreeSet::new();
    while let Some((at, path)) = stack.pop() {
        for next in graph
            .get(&at)
            .into_iter()
            .flat_map(|targets| targets.keys())
        {
            if next == from {
                let mut circle = path.clone();
                circle.push(next.clone());
                return Some(circle);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push((next.clone(), longer));
            }
        }
    }
    None
}

#[test]
fn no_top_level_module_imports_one_that_imports_it_back() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = graph(&src);
    assert!(
        graph.contains_key("commands") && graph.contains_key("scheduler"),
        "the source was read: {:?}",
        graph.keys().collect::<Vec<_>>()
    );
    let circles: Vec<String> = graph
        .keys()
        .filter_map(|module| circle(&graph, module))
        .map(|circle| {
            let arrows: Vec<String> = circle
                .windows(2)
                .map(|pair| {
                    format!(
                        "{} -> {} ({:?})",
                        pair[0], pair[1], graph[&pair[0]][&pair[1]]
                    )
                })
                .collect();
            arrows.join("; ")
        })
        .collect();
    assert!(
        circles.is_empty(),
        "import circles:\n{}",
        circles.join("\n")
    );
}

#[test]
fn the_check_sees_a_circle_when_there_is_one() {
    let mut graph = Graph::new();
    for (from, to) in [("writer", "db"), ("db", "repair"), ("repair", "writer")] {
        graph
            .entry(from.into())
            .or_default()
            .insert(to.into(), BTreeSet::new());
    }
    assert_eq!(
        circle(&graph, "writer"),
        Some(vec![
            "writer".into(),
            "db".into(),
            "repair".into(),
            "writer".into()
        ])
    );
    graph.remove("repair");
    assert_eq!(circle(&graph, "writer"), None);
    assert_eq!(
        crate_paths("use crate::db::repair;\nlet x = crate::registry::grammar::ok; $crate::x"),
        ["db", "registry"].into_iter().map(String::from).collect()
    );
}
