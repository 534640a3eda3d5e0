//! The report's outputs read back as `figures`: every figure by its path in the JSON (list
//! indices as segments: `top_missing.0.missing_bytes`), `None` for `null` or an empty CSV field,
//! so that tests compare the formats whole rather than a figure here and there.

use std::collections::BTreeMap;

pub type Figures = BTreeMap<String, Option<String>>;

/// The JSON's figures.
pub fn json(text: &str) -> Figures {
    let value: serde_json::Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON: {e}\n{text}"));
    let mut out = Figures::new();
    leaves("", &value, &mut out);
    out
}

fn leaves(prefix: &str, value: &serde_json::Value, out: &mut Figures) {
    let at = |key: &str| {
        if prefix.is_empty() {
            key.to_string()
        } else {
            format!("{prefix}.{key}")
        }
    };
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                leaves(&at(key), value, out);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, value) in items.iter().enumerate() {
                leaves(&at(&i.to_string()), value, out);
            }
        }
        serde_json::Value::Null => {
            out.insert(prefix.to_string(), None);
        }
        serde_json::Value::String(s) => {
            out.insert(prefix.to_string(), Some(s.clone()));
        }
        other => {
            out.insert(prefix.to_string(), Some(other.to_string()));
        }
    }
}

/// One CSV line's fields (RFC 4180 quoting).
pub fn csv_line(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                fields.last_mut().expect("a field").push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(String::new()),
            (c, _) => fields.last_mut().expect("a field").push(c),
        }
    }
    fields
}

/// The lists of the CSV, block by block, in their documented order.
const CSV_BLOCKS: [&str; 9] = [
    "totals",
    "top_missing",
    "namespaces",
    "top_by_bytes",
    "namespaces_by_bytes",
    "by_month",
    "distribution",
    "failed_by_cause",
    "failed_projects",
];

/// The one figure of the CSV's `metric,value` block that is no total.
const NOT_A_TOTAL: &str = "failed_not_listed";

/// The report's CSV figures: the `metric,value` block as `totals.*` (and `failed_not_listed`),
/// each other block's rows by their column names.
pub fn csv(text: &str) -> Figures {
    let blocks: Vec<&str> = text.trim_end().split("\n\n").collect();
    assert_eq!(blocks.len(), CSV_BLOCKS.len(), "CSV blocks:\n{text}");
    let mut out = Figures::new();
    for (name, block) in CSV_BLOCKS.iter().zip(blocks) {
        let mut lines = block.lines();
        let header = csv_line(lines.next().expect("a header line"));
        for (i, line) in lines.enumerate() {
            let fields = csv_line(line);
            assert_eq!(fields.len(), header.len(), "{line}");
            if *name == "totals" {
                let path = if fields[0] == NOT_A_TOTAL {
                    NOT_A_TOTAL.to_string()
                } else {
                    format!("totals.{}", fields[0])
                };
                out.insert(path, Some(fields[1].clone()));
                continue;
            }
            for (column, value) in header.iter().zip(fields) {
                out.insert(
                    format!("{name}.{i}.{column}"),
                    (!value.is_empty()).then_some(value),
                );
            }
        }
    }
    out
}

/// Every `data-field` of an HTML page (or of the DOM Chromium dumps), with the `data-value` of
/// each element holding it (`None` where it has none).
pub fn html(text: &str) -> BTreeMap<String, Vec<Option<String>>> {
    let mut out: BTreeMap<String, Vec<Option<String>>> = BTreeMap::new();
    for (at, _) in text.match_indices(" data-field=\"") {
        let start = text[..at].rfind('<').expect("an element");
        let attributes = attributes(&text[start..]);
        let field = attributes
            .get("data-field")
            .cloned()
            .expect("the attribute just found");
        out.entry(field)
            .or_default()
            .push(attributes.get("data-value").cloned());
    }
    out
}

/// The attributes of the start tag `tag` begins with (double-quoted, as written and as
/// Chromium serialises them), unescaped.
fn attributes(tag: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let body = tag
        .trim_start_matches('<')
        .trim_start_matches(|c: char| c.is_ascii_alphanumeric());
    let mut rest = body;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() || rest.starts_with('>') || rest.starts_with("/>") {
            return out;
        }
        let name_end = rest
            .find(|c: char| c == '=' || c == '>' || c.is_whitespace())
            .unwrap_or(rest.len());
        let name = rest[..name_end].to_string();
        rest = &rest[name_end..];
        if let Some(after) = rest.strip_prefix("=\"") {
            let end = after.find('"').expect("a closing quote");
            out.insert(name, unescape(&after[..end]));
            rest = &after[end + 1..];
        } else {
            out.insert(name, String::new());
        }
    }
}

pub fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// The text a page shows: without its tags, style sheet and entities, blanks collapsed.
pub fn visible_text(html: &str) -> String {
    let mut text = String::new();
    let mut rest = html;
    while let Some(start) = rest.find("<style") {
        text.push_str(&rest[..start]);
        let end = rest[start..]
            .find("</style>")
            .map_or(rest.len(), |e| start + e + 8);
        rest = &rest[end..];
    }
    text.push_str(rest);
    let mut out = String::new();
    let mut in_tag = false;
    for c in text.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    unescape(&out)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The label each line of the table's totals starts with, and the figure it shows.
const TABLE_TOTALS: [(&str, &str); 14] = [
    ("Projects with missing > 0", "projects_with_missing"),
    ("Projects not itemised", "projects_not_itemised"),
    (
        "Projects GitLab shows empty",
        "projects_shown_empty_by_gitlab",
    ),
    ("Projects", "projects"),
    ("Analysed", "analysed"),
    ("  completed", "completed"),
    ("  failed", "failed"),
    ("Pending", "pending"),
    ("Missing repositories in all", "missing"),
    ("Paths the registry cannot hold", "unaddressable"),
    ("Missing repositories itemised", "missing_itemised"),
    ("  known sizes in all, bytes", "missing_bytes"),
    ("  size unknown", "missing_sizes_unknown"),
    ("  their missing bytes", "bytes_shown_empty_by_gitlab"),
];

/// The table's figures. Sizes in the lists are as the table shows them (binary units); the
/// totals' are exact.
pub fn table(text: &str) -> Figures {
    let mut out = Figures::new();
    let mut sections = text.split("\n\n");
    for line in sections.next().expect("the totals").lines() {
        let (label, field) = TABLE_TOTALS
            .iter()
            .find(|(label, _)| line.starts_with(label))
            .unwrap_or_else(|| panic!("an unknown totals line: {line:?}"));
        let value = line[label.len()..]
            .split_whitespace()
            .next()
            .expect("a figure");
        out.insert(format!("totals.{field}"), Some(value.to_string()));
    }
    // The table leaves out the line of paths the registry cannot hold when there are none, and
    // says how many failed projects it leaves out only when it leaves some out.
    out.entry("totals.unaddressable".into())
        .or_insert_with(|| Some("0".into()));
    out.insert(NOT_A_TOTAL.into(), Some("0".into()));
    for section in sections {
        let mut lines = section.lines();
        let heading = lines.next().unwrap_or_default();
        if heading.starts_with("Failed projects by cause") {
            lines.next(); // the column headers
            for (i, line) in lines.enumerate() {
                let cause = columns_of(line, 10, 31);
                out.insert(
                    format!("failed_by_cause.{i}.projects"),
                    Some(columns_of(line, 0, 8)),
                );
                out.insert(
                    format!("failed_by_cause.{i}.cause"),
                    (cause != "(not recorded)").then_some(cause),
                );
                out.insert(
                    format!("failed_by_cause.{i}.advice"),
                    Some(columns_of(line, 33, usize::MAX)),
                );
            }
            continue;
        }
        if heading.starts_with("Failed projects, most recent first") {
            // `(1 of 4; --top N lists more)`
            if let Some((listed, all)) = heading
                .split_once(" (")
                .and_then(|(_, rest)| rest.split_once(';'))
                .and_then(|(counts, _)| counts.split_once(" of "))
            {
                let not_listed =
                    all.parse::<i64>().expect("a count") - listed.parse::<i64>().expect("a count");
                out.insert(NOT_A_TOTAL.into(), Some(not_listed.to_string()));
            }
            lines.next(); // the column headers
            let mut i = None;
            for line in lines {
                if let Some(reason) = line.strip_prefix(&format!("{:14}why: ", "")) {
                    let i: usize = i.expect("a reason after its project");
                    out.insert(
                        format!("failed_projects.{i}.reason"),
                        Some(reason.to_string()),
                    );
                    continue;
                }
                let at = i.map_or(0, |i| i + 1);
                i = Some(at);
                let cause = columns_of(line, 36, 57);
                let path = columns_of(line, 59, usize::MAX);
                for (column, value) in [
                    ("project_id", Some(columns_of(line, 0, 12))),
                    ("failed_at", Some(columns_of(line, 14, 34))),
                    ("cause", (cause != "(not recorded)").then_some(cause)),
                    ("full_path", (path != "(no route)").then_some(path)),
                    ("reason", None),
                ] {
                    out.insert(format!("failed_projects.{at}.{column}"), value);
                }
            }
            continue;
        }
        let list = if heading.starts_with("Top-level namespaces by missing repositories") {
            "namespaces"
        } else if heading.starts_with("Top-level namespaces by missing bytes") {
            "namespaces_by_bytes"
        } else if heading.ends_with("projects by missing repositories") {
            "top_missing"
        } else if heading.ends_with("projects by missing bytes") {
            "top_by_bytes"
        } else if heading.starts_with("Missing repositories by the month") {
            "by_month"
        } else if heading.starts_with("Projects by how many") {
            "distribution"
        } else {
            continue;
        };
        lines.next(); // the column headers
        for (i, line) in lines.enumerate() {
            let tokens: Vec<&str> = line.split_whitespace().collect();
            let columns: Vec<(&str, Option<String>)> = match list {
                "top_missing" | "top_by_bytes" => {
                    let starred = tokens.last() == Some(&"*");
                    let path_end = tokens.len() - usize::from(starred);
                    let path = tokens[6..path_end].join(" ");
                    vec![
                        ("project_id", Some(tokens[0].into())),
                        ("missing_count", Some(tokens[1].into())),
                        ("missing_itemised", Some(tokens[2].into())),
                        (
                            "missing_bytes",
                            Some(format!("{} {}", tokens[3], tokens[4])),
                        ),
                        ("missing_sizes_unknown", Some(tokens[5].into())),
                        ("full_path", (path != "(no route)").then_some(path)),
                        ("shown_empty_by_gitlab", Some(starred.to_string())),
                    ]
                }
                "namespaces" | "namespaces_by_bytes" => vec![
                    ("analysed", Some(tokens[0].into())),
                    ("completed", Some(tokens[1].into())),
                    ("failed", Some(tokens[2].into())),
                    ("projects_with_missing", Some(tokens[3].into())),
                    ("missing", Some(tokens[4].into())),
                    (
                        "missing_bytes",
                        Some(format!("{} {}", tokens[5], tokens[6])),
                    ),
                    ("missing_sizes_unknown", Some(tokens[7].into())),
                    ("namespace", Some(tokens[8..].join(" "))),
                ],
                "by_month" => vec![
                    ("month", Some(tokens[0].into())),
                    ("missing", Some(tokens[1].into())),
                    (
                        "missing_bytes",
                        Some(format!("{} {}", tokens[2], tokens[3])),
                    ),
                    ("missing_sizes_unknown", Some(tokens[4].into())),
                ],
                _ => vec![
                    ("bucket", Some(tokens[0].into())),
                    ("projects", Some(tokens[1].into())),
                    ("missing", Some(tokens[2].into())),
                ],
            };
            for (column, value) in columns {
                out.insert(format!("{list}.{i}.{column}"), value);
            }
        }
    }
    out
}

/// The characters `from..to` of a table's line, without the blanks around them.
fn columns_of(line: &str, from: usize, to: usize) -> String {
    line.chars()
        .skip(from)
        .take(to.saturating_sub(from))
        .collect::<String>()
        .trim()
        .to_string()
}

/// `figures` with the sizes of the lists as the table shows them.
pub fn as_the_table_shows(figures: &Figures) -> Figures {
    figures
        .iter()
        .map(|(path, value)| {
            let shown = if !path.starts_with("totals.") && path.ends_with(".missing_bytes") {
                value.as_deref().map(|v| {
                    registry_repair::report::units::bytes(v.parse().expect("a byte count"))
                })
            } else {
                value.clone()
            };
            (path.clone(), shown)
        })
        .collect()
}

/// Asserts that every figure of `json` is on the `html` page with the same value, in every
/// element holding it, and that the page holds no figure the JSON has not.
pub fn assert_page_agrees(json: &Figures, html: &BTreeMap<String, Vec<Option<String>>>) {
    for (path, value) in json {
        let found = html
            .get(path)
            .unwrap_or_else(|| panic!("the page has no data-field=\"{path}\""));
        for shown in found {
            assert_eq!(shown, value, "data-field=\"{path}\"");
        }
    }
    let extra: Vec<&String> = html.keys().filter(|k| !json.contains_key(*k)).collect();
    assert!(extra.is_empty(), "figures the JSON has not: {extra:?}");
}
