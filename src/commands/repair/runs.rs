//! `repair runs`: the apply and undo runs with their counts, as a table, JSON or CSV.

use std::fmt::Write as _;

use crate::db::repair::{self, RunRow};
use crate::db::Database;
use crate::format::{csv_field, Format};

pub async fn execute(db: &Database, format: Format) -> anyhow::Result<()> {
    let runs = repair::runs(db).await?;
    print!("{}", render_runs(&runs, format));
    Ok(())
}

/// `repair runs` in the chosen format. JSON: an array of runs; CSV: one line per run.
pub fn render_runs(runs: &[RunRow], format: Format) -> String {
    let undone = |r: &RunRow| {
        r.undone_by
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    };
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_default()
    };
    match format {
        Format::Json => {
            let mut text = serde_json::to_string_pretty(runs)
                .unwrap_or_else(|e| format!("{{\"error\": \"serialising the runs: {e}\"}}"));
            text.push('\n');
            text
        }
        Format::Csv => {
            let mut out = String::from(
                "id,kind,started_at,finished_at,scope,projects,restored,skipped,review,deleted,kept,undo_of,undone_by,path_changed\n",
            );
            for r in runs {
                let _ = writeln!(
                    out,
                    "{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                    r.id,
                    r.kind,
                    time(Some(r.started_at)),
                    time(r.finished_at),
                    csv_field(&r.scope),
                    r.projects,
                    r.restored,
                    r.skipped,
                    r.review,
                    r.deleted,
                    r.kept,
                    r.undo_of.map(|u| u.to_string()).unwrap_or_default(),
                    undone(r),
                    r.path_changed
                );
            }
            out
        }
        Format::Table => {
            if runs.is_empty() {
                return "No repair run yet.\n".into();
            }
            let mut out = format!(
                "{:>5}  {:<5}  {:<20}  {:<20}  {:>8}  {:>8}  {:>8}  {:>6}  {:>7}  {:>5}  NOTE\n",
                "RUN",
                "KIND",
                "STARTED",
                "FINISHED",
                "PROJECTS",
                "RESTORED",
                "SKIPPED",
                "REVIEW",
                "DELETED",
                "KEPT"
            );
            for r in runs {
                let mut note = match (r.undo_of, r.undone_by.is_empty()) {
                    (Some(of), _) => format!("undoes run {of}"),
                    (None, false) => format!("undone by {}", undone(r)),
                    (None, true) => r.scope.clone(),
                };
                if r.path_changed > 0 {
                    let changed = format!("{} projects not written: path changed", r.path_changed);
                    note = if note.is_empty() {
                        changed
                    } else {
                        format!("{changed}; {note}")
                    };
                }
                let finished = match r.finished_at {
                    Some(t) => time(Some(t)),
                    None => "(not finished)".into(),
                };
                let _ = writeln!(
                    out,
                    "{:>5}  {:<5}  {:<20}  {:<20}  {:>8}  {:>8}  {:>8}  {:>6}  {:>7}  {:>5}  {}",
                    r.id,
                    r.kind,
                    time(Some(r.started_at)),
                    finished,
                    r.projects,
                    r.restored,
                    r.skipped,
                    r.review,
                    r.deleted,
                    r.kept,
                    note
                );
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply_run(id: i64, path_changed: i32) -> RunRow {
        RunRow {
            id,
            kind: "apply".into(),
            started_at: chrono::DateTime::UNIX_EPOCH,
            finished_at: None,
            scope: "--project 7".into(),
            projects: 3,
            restored: 5,
            skipped: 1,
            review: 2,
            deleted: 0,
            kept: 0,
            path_changed,
            undo_of: None,
            undone_by: Vec::new(),
        }
    }

    #[test]
    fn runs_show_the_projects_a_moved_path_kept_from_the_write() {
        let runs = [apply_run(2, 1), apply_run(1, 0)];
        let table = render_runs(&runs, Format::Table);
        assert!(
            table.contains("1 projects not written: path changed; --project 7"),
            "{table}"
        );
        assert!(table.contains("(not finished)"));
        let csv = render_runs(&runs, Format::Csv);
        let lines: Vec<&str> = csv.lines().collect();
        assert!(lines[0].ends_with(",undone_by,path_changed"));
        assert!(lines[1].ends_with(",1"), "{}", lines[1]);
        assert!(lines[2].ends_with(",0"), "{}", lines[2]);
        let json: serde_json::Value =
            serde_json::from_str(&render_runs(&runs, Format::Json)).expect("JSON");
        assert_eq!(json[0]["path_changed"], 1);
    }
}
