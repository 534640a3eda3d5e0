//! The analysis' step, as an Analyzer runs it for one project: walk the project's pages in the
//! registry, keep the repositories GitLab's database has no row for, and ask the registry their
//! sizes.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::analyzer::canary_answers;
use crate::db::missing::MissingRepository;
use crate::db::projects::{existing_repository_names, Project};
use crate::db::Database;
use crate::registry::client::{PageStep, Sizes};
use crate::registry::grammar::is_addressable;
use crate::registry::names::rails_names;
use crate::registry::token::SharedToken;
use crate::registry::{RegistryClient, RegistryError};
use crate::work::{Step, StepError};

/// What listing a project found.
#[derive(Debug)]
pub enum Listed {
    /// The project's registry path breaks the registry's name grammar: no repository can exist
    /// under it, so nothing was asked and nothing is missing.
    Unaddressable,
    /// Every page was read: `missing` are the repositories GitLab has no row for.
    Completed {
        missing: Vec<MissingRepository>,
        ignored: u32,
        pages: u32,
    },
}

/// Finds the repositories under the project's registry path that GitLab's database has no row
/// for. Reads every page, or records nothing. With `sizes`, asks the size of each it found.
pub async fn analyze(
    registry: &RegistryClient,
    db: &Database,
    project: &Project,
    token: Option<Arc<SharedToken>>,
    sizes: bool,
) -> Step<Listed> {
    let Some(path) = project.registry_path() else {
        return Step::Failed {
            reason: StepError::NoRoute,
        };
    };
    if !is_addressable(&path) {
        return Step::Done(Listed::Unaddressable);
    }
    let mut pages = registry.pages_sharing(&path, token);
    let mut missing: Vec<MissingRepository> = Vec::new();
    let mut ignored = 0u32;
    loop {
        let entries = match pages.next_page_retrying().await {
            Ok(PageStep::Page(entries)) => entries,
            Ok(PageStep::Done) => break,
            Ok(PageStep::Restarted) => {
                tracing::info!(project_id = project.id, %path, "the path vanished mid-walk; analysing it again from the first page");
                (missing, ignored) = (Vec::new(), 0);
                continue;
            }
            Err(error) => return Step::registry_failed(error),
        };
        let (names, outside) = rails_names(&path, &entries);
        for entry in outside {
            tracing::warn!(project_id = project.id, %path, entry = %entry.path, "registry listed a repository outside the project path; ignored");
            ignored += 1;
        }
        let known = match existing_repository_names(db, project.id, &names).await {
            Ok(known) => known,
            Err(error) => return Step::database_failed(error),
        };
        let created: HashMap<&str, Option<&str>> = entries
            .iter()
            .map(|e| (e.path.as_str(), e.created_at.as_deref()))
            .collect();
        for name in names.into_iter().filter(|n| !known.contains(n)) {
            let registry_path = if name.is_empty() {
                path.clone()
            } else {
                format!("{path}/{name}")
            };
            let registry_created_at = created
                .get(registry_path.as_str())
                .copied()
                .flatten()
                .and_then(|at| parse_created(project.id, &registry_path, at));
            missing.push(MissingRepository {
                registry_path,
                name,
                registry_created_at,
                size_bytes: None,
            });
        }
    }
    let pages = pages.pages_fetched();
    if sizes && !missing.is_empty() {
        let paths: Vec<String> = missing.iter().map(|m| m.registry_path.clone()).collect();
        match registry.sizes(&paths).await {
            // 5xx or timeouts on sizes while the registry answers nothing else either (the
            // canary) is an outage, not sizes it cannot give: analysed again once it is over.
            Ok(Sizes {
                unclear,
                last_unclear: Some(last),
                ..
            }) if !canary_answers(registry).await => {
                return Step::Deferred {
                    reason: StepError::SizesUnavailable {
                        path: path.clone(),
                        unclear,
                        last,
                    },
                    refused: false,
                };
            }
            Ok(sizes) => {
                for (repository, size) in missing.iter_mut().zip(sizes.sizes) {
                    repository.size_bytes = size;
                }
            }
            Err(RegistryError::Fenced { .. }) => return Step::Fenced,
            // Out of reach after the listing: analysed again later, never failed for it.
            Err(error) => {
                return Step::Deferred {
                    reason: error.into(),
                    refused: false,
                }
            }
        }
    }
    Step::Done(Listed::Completed {
        missing,
        ignored,
        pages,
    })
}

/// The registry's `created_at` (RFC 3339); one it cannot mean is logged and left unknown.
fn parse_created(project_id: i64, registry_path: &str, at: &str) -> Option<DateTime<Utc>> {
    match DateTime::parse_from_rfc3339(at) {
        Ok(at) => Some(at.with_timezone(&Utc)),
        Err(error) => {
            tracing::warn!(project_id, repository = %registry_path, created_at = %at, %error, "the registry's created_at is no RFC 3339 time; recorded as unknown");
            None
        }
    }
}
