//! `repair verify RUN`: lists the registry again for the projects an apply run wrote and reports
//! every repository still without a `container_repositories` row that the run did not hold back
//! (skip or review). Also the registry walk an Analyzer plans a repair with.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use rand::Rng;
use serde::Serialize;

use crate::db::projects::existing_repository_names;
use crate::db::repair::{run_projects, RepairError, RunProject};
use crate::db::Database;
use crate::registry::client::Step;
use crate::registry::grammar::is_addressable;
use crate::registry::names::rails_names;
use crate::registry::token::SharedToken;
use crate::registry::{Entry, RegistryClient, RegistryError};

/// Attempts per registry request before its error counts (transient errors only).
const ATTEMPTS: u32 = 4;
const RETRY_BASE: Duration = Duration::from_millis(100);
/// Projects read from the database per page.
const PAGE: i64 = 500;

/// Every entry the registry lists under `path` (every page; a walk the registry restarts starts
/// the list again), retrying transient errors with exponential backoff and jitter. A path the
/// registry's grammar cannot hold has no entries and is not asked.
/// `token`: the one the project shares with its dispatch batch, if any.
pub async fn list_all(
    registry: &RegistryClient,
    path: &str,
    token: Option<Arc<SharedToken>>,
) -> Result<Vec<Entry>, RegistryError> {
    if !is_addressable(path) {
        return Ok(Vec::new());
    }
    let mut pages = registry.pages_sharing(path, token);
    let mut entries = Vec::new();
    let mut attempt = 0u32;
    loop {
        match pages.next_page().await {
            Ok(Step::Page(page)) => {
                attempt = 0;
                entries.extend(page);
            }
            Ok(Step::Restarted) => entries.clear(),
            Ok(Step::Done) => return Ok(entries),
            Err(error) if error.is_transient() && attempt + 1 < ATTEMPTS => {
                let ceiling = RETRY_BASE.saturating_mul(1 << attempt).as_millis() as u64;
                let pause = rand::thread_rng().gen_range(ceiling / 2..=ceiling);
                tokio::time::sleep(Duration::from_millis(pause)).await;
                attempt += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

/// A repository the registry holds that still has no row, and that the run did not hold back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unrestored {
    pub project_id: i64,
    pub full_path: String,
    pub name: String,
}

/// What `verify` found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub run: i64,
    pub projects: usize,
    /// Projects whose route is gone (deleted since): nothing to check.
    pub gone: usize,
    pub unrestored: Vec<Unrestored>,
    /// Projects the registry could not be listed for, with the error.
    pub errors: Vec<(i64, String)>,
}

impl Verification {
    /// Whether the run left nothing behind that it meant to restore.
    pub fn is_clean(&self) -> bool {
        self.unrestored.is_empty() && self.errors.is_empty()
    }
}

enum Checked {
    Gone,
    Unrestored(Vec<Unrestored>),
    Error(i64, String),
}

async fn check(db: &Database, registry: &RegistryClient, project: RunProject) -> Checked {
    let Some(full_path) = project.full_path else {
        return Checked::Gone;
    };
    let path = full_path.to_lowercase();
    let entries = match list_all(registry, &path, None).await {
        Ok(entries) => entries,
        Err(error) => return Checked::Error(project.project_id, error.to_string()),
    };
    let (names, _) = rails_names(&path, &entries);
    let existing: HashSet<String> =
        match existing_repository_names(db, project.project_id, &names).await {
            Ok(existing) => existing,
            Err(error) => return Checked::Error(project.project_id, error.to_string()),
        };
    Checked::Unrestored(
        names
            .into_iter()
            .filter(|n| !existing.contains(n) && !project.held_back.contains(n))
            .map(|name| Unrestored {
                project_id: project.project_id,
                full_path: full_path.clone(),
                name,
            })
            .collect(),
    )
}

/// Lists the registry again for every project run `run` wrote, `concurrency` projects at once.
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
                Checked::Unrestored(list) => outcome.unrestored.extend(list),
                Checked::Error(id, error) => outcome.errors.push((id, error)),
            }
        }
    }
    outcome
        .unrestored
        .sort_by(|a, b| (a.project_id, &a.name).cmp(&(b.project_id, &b.name)));
    outcome.errors.sort();
    Ok(outcome)
}
