//! `report`: the damage the tracking table and the recorded missing repositories show (totals,
//! rankings, by month), in any format; `report --repositories`: the repositories themselves.

use anyhow::Context as _;

use super::current_thread_runtime;
use crate::config::{ConfigError, Settings};
use crate::db::failures::one_line;
use crate::db::repair::namespace_exists;
use crate::db::report::{self as queries, ProjectState, RepositoryFilter};
use crate::db::tracking::TrackingStatus;
use crate::db::Database;
use crate::format::Format;
use crate::report::advice;
use crate::report::repositories::Repositories;
use crate::report::{Listing, Report, ReportFormat};

pub fn execute(settings: &Settings, format: ReportFormat, listing: Listing) -> anyhow::Result<()> {
    let report = current_thread_runtime()?.block_on(async {
        let db = Database::for_settings(settings, 1)?;
        db.check_ready().await?;
        anyhow::Ok(Report::load(&db, listing).await?)
    })?;
    print!("{}", report.render(format, chrono::Utc::now())?);
    Ok(())
}

/// `report --repositories`: an unknown `--project` or `--namespace` is the operator's to fix
/// (exit 2); a project asked for with nothing listed gets a line saying why.
pub fn repositories(
    settings: &Settings,
    format: ReportFormat,
    filter: RepositoryFilter,
) -> anyhow::Result<()> {
    // The command line refuses `--repositories --format html`.
    let format = format
        .plain()
        .context("listing the missing repositories as HTML")?;
    let (listing, states) = current_thread_runtime()?.block_on(async {
        let db = Database::for_settings(settings, 1)?;
        db.check_ready().await?;
        if let Some(namespace) = &filter.namespace {
            if !namespace_exists(&db, namespace).await? {
                return Err(ConfigError::new(
                    "--namespace",
                    format!("no top-level group, subgroup or user has the path `{namespace}`"),
                )
                .into());
            }
        }
        let states = queries::project_states(&db, &filter.projects).await?;
        if let Some(unknown) = states.iter().find(|s| !s.exists) {
            return Err(ConfigError::new(
                "--project",
                format!("no project has the id {}", unknown.project_id),
            )
            .into());
        }
        anyhow::Ok((Repositories::load(&db, &filter).await?, states))
    })?;
    print!("{}", listing.render(format)?);
    // Notes go to standard error when standard output is JSON or CSV, so it stays parseable.
    let note = |text: String| {
        if format == Format::Table {
            println!("{text}");
        } else {
            eprintln!("{text}");
        }
    };
    for state in &states {
        if !listing
            .repositories
            .iter()
            .any(|r| r.project_id == state.project_id)
        {
            note(why_none(state));
        }
    }
    if listing.cut() {
        note(format!(
            "Listed {} of {} missing repositories: --limit N lists more, --limit 0 all.",
            listing.repositories.len(),
            listing.matched
        ));
    }
    Ok(())
}

/// Why a project asked for by `--project` has no repository listed.
fn why_none(state: &ProjectState) -> String {
    let id = state.project_id;
    let completed = Some(TrackingStatus::Completed as i16);
    let failed = Some(TrackingStatus::Failed as i16);
    match (state.status, state.missing_count.unwrap_or(0)) {
        (None, _) => format!("Project {id}: not analysed yet."),
        (status, _) if status == failed => {
            let why = match (&state.cause, &state.reason) {
                (Some(cause), Some(reason)) => {
                    format!(" ({}: {})", one_line(cause), one_line(reason))
                }
                _ => String::new(),
            };
            format!(
                "Project {id}: its analysis failed{why}; {}.",
                advice::for_cause(state.cause.as_deref())
            )
        }
        (status, 0) if status == completed => {
            format!("Project {id}: no missing repository.")
        }
        (status, n) if status == completed && state.recorded == 0 => format!(
            "Project {id}: {n} missing repositories counted, but not itemised (analysed by an \
             earlier version or by GitLab's own worker)."
        ),
        (status, _) if status == completed => format!(
            "Project {id}: every recorded missing repository has a container_repositories row \
             again."
        ),
        _ => format!("Project {id}: its analysis is under way (GitLab's worker)."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(status: Option<i16>, missing: i32, recorded: i64) -> ProjectState {
        ProjectState {
            project_id: 7,
            exists: true,
            status,
            missing_count: Some(missing),
            recorded,
            cause: None,
            reason: None,
        }
    }

    #[test]
    fn each_reason_for_an_empty_listing_is_told() {
        assert!(why_none(&state(None, 0, 0)).contains("not analysed"));
        assert_eq!(
            why_none(&state(Some(2), 0, 0)),
            "Project 7: its analysis failed; reason not recorded (GitLab's own worker or an \
             earlier release): `run --retry-failed` analyses it again, and records why if it fails \
             again."
        );
        let orphan = ProjectState {
            cause: Some("no_route".into()),
            reason: Some("the project has no route, so no registry path".into()),
            ..state(Some(2), 0, 0)
        };
        assert_eq!(
            why_none(&orphan),
            "Project 7: its analysis failed (no_route: the project has no route, so no registry \
             path); the project has no route in GitLab's database: an orphaned or half-deleted \
             project; check it in GitLab (its projects and routes rows); `run --retry-failed` \
             cannot help until it has a route."
        );
        assert!(why_none(&state(Some(1), 0, 0)).contains("no missing"));
        assert!(why_none(&state(Some(1), 3, 0))
            .contains("3 missing repositories counted, but not itemised"));
        assert!(why_none(&state(Some(1), 3, 3)).contains("again"));
        assert!(why_none(&state(Some(0), 0, 0)).contains("under way"));
    }
}
