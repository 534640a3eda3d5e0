//! `repair runs`: the apply and undo runs with their counts, as a table, JSON or CSV.

use std::fmt::Write as _;

use crate::db::repair::{self, RunRow};
use crate::db::Database;
use crate::format::{CsvBlock, Format};

pub async fn execute(db: &Database, format: Format) -> anyhow::Result<()> {
    let runs = repair::runs(db).await?;
    print!("{}", render_runs(&runs, format)?);
    Ok(())
}

/// `repair runs` in the chosen format. JSON: an array of runs; CSV: one line per run; the table:
/// one line per run, its scope or what undid it in the last column.
pub fn render_runs(runs: &[RunRow], format: Format) -> anyhow::Result<String> {
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(runs)? + "\n",
        Format::Csv => runs_csv(runs),
        Format::Table => runs_table(runs),
    })
}

/// The counts the CSV and the table both show, in their order.
fn counts(r: &RunRow) -> [i32; 6] {
    [
        r.projects, r.restored, r.skipped, r.review, r.deleted, r.kept,
    ]
}

fn time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn undone_by(r: &RunRow) -> String {
    let runs: Vec<String> = r.undone_by.iter().map(i64::to_string).collect();
    runs.join(" ")
}

fn runs_csv(runs: &[RunRow]) -> String {
    let mut block = CsvBlock::new(
        "id,kind,started_at,finished_at,scope,projects,restored,skipped,review,deleted,kept,undo_of,undone_by,path_changed,state",
    );
    for r in runs {
        let mut cells = vec![
            r.id.to_string(),
            r.kind.to_string(),
            time(r.started_at),
            r.finished_at.map(time).unwrap_or_default(),
            r.scope.clone(),
        ];
        cells.extend(counts(r).iter().map(i32::to_string));
        cells.extend([
            r.undo_of.map(|u| u.to_string()).unwrap_or_default(),
            undone_by(r),
            r.path_changed.to_string(),
            r.state.to_string(),
        ]);
        block.row(cells);
    }
    block.finish()
}

fn runs_table(runs: &[RunRow]) -> String {
    if runs.is_empty() {
        return "No repair run yet.\n".into();
    }
    let line = |out: &mut String, first: [&str; 4], counts: [String; 6], note: &str| {
        let [run, kind, started, finished] = first;
        let [projects, restored, skipped, review, deleted, kept] = counts;
        let _ = writeln!(
            out,
            "{run:>5}  {kind:<5}  {started:<20}  {finished:<20}  {projects:>8}  {restored:>8}  {skipped:>8}  {review:>6}  {deleted:>7}  {kept:>5}  {note}"
        );
    };
    let mut out = String::new();
    let headers = [
        "PROJECTS", "RESTORED", "SKIPPED", "REVIEW", "DELETED", "KEPT",
    ];
    line(
        &mut out,
        ["RUN", "KIND", "STARTED", "FINISHED"],
        headers.map(String::from),
        "NOTE",
    );
    for r in runs {
        let finished = r.finished_at.map_or_else(|| format!("({})", r.state), time);
        line(
            &mut out,
            [&r.id.to_string(), &r.kind, &time(r.started_at), &finished],
            counts(r).map(|n| n.to_string()),
            &note(r),
        );
    }
    out
}

/// What the table says of a run besides its counts: what it undoes or what undid it (else its
/// scope), and the projects it left because their path changed.
fn note(r: &RunRow) -> String {
    let note = match (r.undo_of, r.undone_by.is_empty()) {
        (Some(of), _) => format!("undoes run {of}"),
        (None, false) => format!("undone by {}", undone_by(r)),
        (None, true) => r.scope.clone(),
    };
    let note = match (r.state.as_str(), r.undo_of) {
        ("stopped", Some(of)) => {
            format!("stopped before its end: `repair undo {of}` finishes it; {note}")
        }
        ("stopped", None) => format!(
            "stopped before its end: `repair apply{}{}` finishes the job",
            if r.scope.is_empty() { "" } else { " " },
            r.scope
        ),
        _ => note,
    };
    match (r.path_changed, note.is_empty()) {
        (0, _) => note,
        (n, true) => format!("{n} projects not written: path changed"),
        (n, false) => format!("{n} projects not written: path changed; {note}"),
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
            state: "under way".into(),
        }
    }

    #[test]
    fn runs_show_the_projects_a_moved_path_kept_from_the_write() {
        let runs = [apply_run(2, 1), apply_run(1, 0)];
        let table = render_runs(&runs, Format::Table).expect("a table");
        assert!(
            table.contains("1 projects not written: path changed; --project 7"),
            "{table}"
        );
        assert!(table.contains("(under way)"));
        let csv = render_runs(&runs, Format::Csv).expect("CSV");
        let lines: Vec<&str> = csv.lines().collect();
        assert!(lines[0].ends_with(",undone_by,path_changed,state"));
        assert!(lines[1].ends_with(",1,under way"), "{}", lines[1]);
        assert!(lines[2].ends_with(",0,under way"), "{}", lines[2]);
        let json: serde_json::Value =
            serde_json::from_str(&render_runs(&runs, Format::Json).expect("JSON text"))
                .expect("JSON");
        assert_eq!(json[0]["path_changed"], 1);
    }

    #[test]
    fn a_run_stopped_before_its_end_says_so_and_what_finishes_it() {
        let stopped = RunRow {
            state: "stopped".into(),
            ..apply_run(3, 0)
        };
        let table = render_runs(&[stopped], Format::Table).expect("a table");
        assert!(table.contains("(stopped)"), "{table}");
        assert!(
            table.contains("stopped before its end: `repair apply --project 7` finishes the job"),
            "{table}"
        );
    }
}
