//! `repair verify RUN`: lists the registry again for the projects an apply run claimed and reports
//! what the run left undone or wrong: every repository still without a `container_repositories`
//! row that the run did not hold back (skip or review); every row it restored that names no
//! repository the registry holds under the project's path now (the project renamed or moved
//! since, or the images gone); and every project it did not write because its path changed
//! between the listing and the write, until a later apply writes it. Exit 1 when there is any;
//! exit 3 for a run that did not finish (what it wrote is checked, the rest is not yet written).

use std::collections::HashSet;

use anyhow::anyhow;
use futures_util::stream::{self, StreamExt};
use serde::Serialize;

use crate::commands::Unfinished;
use crate::config::Settings;
use crate::db::projects::existing_repository_names;
use crate::db::repair::{self, run_projects, RepairError, RunProject, WriteOutcome};
use crate::db::Database;
use crate::registry::names::rails_names;
use crate::registry::{RegistryClient, TokenSigner};

pub async fn execute(settings: &Settings, db: &Database, run: i64) -> anyhow::Result<()> {
    let signer = TokenSigner::from_settings(settings)?;
    let registry = RegistryClient::from_settings(settings, signer)?;
    // At most this many projects listed at once, as the service would.
    let concurrency = settings.worker.max_concurrency.max(1);
    let found = verify(db, &registry, run, concurrency).await?;
    println!(
        "Repair run {run}: {} projects listed again ({} gone since)",
        found.projects, found.gone
    );
    // An unfinished run wrote only part of its scope: what it wrote is checked, and no verdict
    // is given on the rest.
    let unfinished = match repair::run(db, run).await? {
        Some(row) if row.state == "under way" => Some(format!(
            "repair run {run} is still under way: this checked only the {} projects it has written so far; verify it again once it ends",
            found.projects
        )),
        Some(row) if !row.finished() => Some(format!(
            "repair run {run} did not finish (it stopped before every project was written): this checked only the {} projects it wrote; `registry-repair repair apply{}{}` finishes the job",
            found.projects,
            if row.scope.is_empty() { "" } else { " " },
            row.scope
        )),
        _ => None,
    };
    let shown = |path: &str, name: &str| {
        if name.is_empty() {
            path.to_string()
        } else {
            format!("{path}/{name}")
        }
    };
    for u in &found.unrestored {
        println!(
            "  still without a row: project {} {}",
            u.project_id,
            shown(&u.full_path, &u.name)
        );
    }
    for d in &found.dangling {
        let since = match &d.listed_path {
            Some(listed) => format!(" (the project was at {listed} when the run wrote it)"),
            None => String::new(),
        };
        println!(
            "  restored row names nothing the registry holds: project {} {}{since}",
            d.project_id,
            shown(&d.full_path, &d.name)
        );
    }
    for n in &found.not_written {
        let now = n.path_at_write.as_deref().unwrap_or("(no route)");
        match n.written_later_by {
            Some(later) => println!(
                "  project {} ({}): its path changed to {now} before this run wrote it; run {later} wrote it (verify that run)",
                n.project_id, n.listed_path
            ),
            None => println!(
                "  not written: project {} ({}): its path changed to {now} between the listing and the write; run `registry-repair repair apply --project {}` again",
                n.project_id, n.listed_path, n.project_id
            ),
        }
    }
    for (project, error) in &found.errors {
        println!("  not verified: project {project}: {error}");
    }
    if found.is_clean() {
        if let Some(unfinished) = unfinished {
            println!("Every repository it wrote has its row, and every row it restored names a repository the registry holds; it did not finish.");
            return Err(Unfinished(unfinished).into());
        }
        println!("Every repository the run meant to restore has a row, and every row it restored names a repository the registry holds.");
        Ok(())
    } else {
        if let Some(unfinished) = &unfinished {
            eprintln!("registry-repair: {unfinished}");
        }
        Err(anyhow!(
            "repair run {run}: {} repositories still without a row, {} restored rows naming nothing the registry holds, {} projects not written, {} projects not verified",
            found.unrestored.len(),
            found.dangling.len(),
            found.not_written.iter().filter(|n| n.written_later_by.is_none()).count(),
            found.errors.len()
        ))
    }
}

/// Projects read from the database per page.
const PAGE: i64 = 500;

/// A repository the registry holds that still has no row, and that the run did not hold back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unrestored {
    pub project_id: i64,
    pub full_path: String,
    pub name: String,
}

/// A row the run restored that names no repository the registry lists under the project's path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dangling {
    pub project_id: i64,
    /// The project's route now.
    pub full_path: String,
    pub name: String,
    /// The route the run listed the project under, when it is not `full_path`.
    pub listed_path: Option<String>,
}

/// A project the run did not write because its route changed between the listing and the write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotWritten {
    pub project_id: i64,
    pub listed_path: String,
    /// The route the write found (`None`: no route).
    pub path_at_write: Option<String>,
    /// The later apply run that wrote the project, if one did: then this run's verify does not
    /// fail for it.
    pub written_later_by: Option<i64>,
}

/// What `verify` found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub run: i64,
    pub projects: usize,
    /// Projects whose route is gone (deleted since): nothing to check.
    pub gone: usize,
    pub unrestored: Vec<Unrestored>,
    pub dangling: Vec<Dangling>,
    pub not_written: Vec<NotWritten>,
    /// Projects the registry could not be listed for, with the error.
    pub errors: Vec<(i64, String)>,
}

impl Verification {
    /// Whether the run left nothing behind that it meant to restore, and restored nothing the
    /// registry does not hold where GitLab looks.
    pub fn is_clean(&self) -> bool {
        self.unrestored.is_empty()
            && self.dangling.is_empty()
            && self.errors.is_empty()
            && self
                .not_written
                .iter()
                .all(|n| n.written_later_by.is_some())
    }
}

enum Checked {
    Gone,
    Listed(Vec<Unrestored>, Vec<Dangling>),
    NotWritten(NotWritten),
    Error(i64, String),
}

async fn check(db: &Database, registry: &RegistryClient, project: RunProject) -> Checked {
    if let WriteOutcome::PathChanged {
        at_write,
        written_later_by,
    } = project.written
    {
        return Checked::NotWritten(NotWritten {
            project_id: project.project_id,
            listed_path: project.listed_path,
            path_at_write: at_write,
            written_later_by,
        });
    }
    let Some(full_path) = project.full_path else {
        return Checked::Gone;
    };
    let path = full_path.to_lowercase();
    let entries = match registry.list_all(&path, None).await {
        Ok(entries) => entries,
        Err(error) => return Checked::Error(project.project_id, error.to_string()),
    };
    let (names, _) = rails_names(&path, &entries);
    let existing: HashSet<String> =
        match existing_repository_names(db, project.project_id, &names).await {
            Ok(existing) => existing,
            Err(error) => return Checked::Error(project.project_id, error.to_string()),
        };
    let unrestored = names
        .iter()
        .filter(|n| !existing.contains(*n) && !project.held_back.contains(*n))
        .map(|name| Unrestored {
            project_id: project.project_id,
            full_path: full_path.clone(),
            name: name.clone(),
        })
        .collect();
    let listed: HashSet<&String> = names.iter().collect();
    let moved = (project.listed_path.to_lowercase() != path).then_some(project.listed_path);
    let dangling = project
        .restored
        .into_iter()
        .filter(|name| !listed.contains(name))
        .map(|name| Dangling {
            project_id: project.project_id,
            full_path: full_path.clone(),
            name,
            listed_path: moved.clone(),
        })
        .collect();
    Checked::Listed(unrestored, dangling)
}

/// Lists the registry again for every project run `run` claimed, `concurrency` projects at once.
pub async fn verify(
    db: &Database,
    registry: &RegistryClient,
    run: i64,
    concurrency: usize,
) -> Result<Verification, RepairError> {
    let mut outcome = Verification {
        run,
        ..Verification::default()
    };
    let mut after = 0;
    loop {
        let page = run_projects(db, run, after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.project_id;
        outcome.projects += page.len();
        let mut checked = stream::iter(page)
            .map(|project| check(db, registry, project))
            .buffer_unordered(concurrency.max(1));
        while let Some(result) = checked.next().await {
            match result {
                Checked::Gone => outcome.gone += 1,
                Checked::Listed(unrestored, dangling) => {
                    outcome.unrestored.extend(unrestored);
                    outcome.dangling.extend(dangling);
                }
                Checked::NotWritten(project) => outcome.not_written.push(project),
                Checked::Error(id, error) => outcome.errors.push((id, error)),
            }
        }
    }
    outcome
        .unrestored
        .sort_by(|a, b| (a.project_id, &a.name).cmp(&(b.project_id, &b.name)));
    outcome
        .dangling
        .sort_by(|a, b| (a.project_id, &a.name).cmp(&(b.project_id, &b.name)));
    outcome.not_written.sort_by_key(|n| n.project_id);
    outcome.errors.sort();
    Ok(outcome)
}
