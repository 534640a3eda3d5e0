//! An Analyzer's step for an analysis: walk the project's pages in the registry, and count the
//! names GitLab's database has no row for.

use std::sync::Arc;

use super::{Analysis, AnalysisError};
use crate::db::projects::{existing_repository_names, Project};
use crate::db::Database;
use crate::registry::client::PageStep;
use crate::registry::grammar::is_addressable;
use crate::registry::names::rails_names;
use crate::registry::token::SharedToken;
use crate::registry::RegistryClient;

/// Counts the repositories under the project's registry path that GitLab's database has no row
/// for. Reads every page, or records nothing.
pub async fn analyze(
    registry: &RegistryClient,
    db: &Database,
    project: &Project,
    token: Option<Arc<SharedToken>>,
) -> Analysis {
    let Some(path) = project.registry_path() else {
        return Analysis::Failed {
            reason: AnalysisError::NoRoute,
        };
    };
    if !is_addressable(&path) {
        return Analysis::Unaddressable;
    }
    let mut pages = registry.pages_sharing(&path, token);
    let (mut missing, mut ignored) = (0i64, 0u32);
    loop {
        let entries = match pages.next_page_retrying().await {
            Ok(PageStep::Page(entries)) => entries,
            Ok(PageStep::Done) => break,
            Ok(PageStep::Restarted) => {
                tracing::info!(project_id = project.id, %path, "the path vanished mid-walk; analysing it again from the first page");
                (missing, ignored) = (0, 0);
                continue;
            }
            Err(error) => return Analysis::registry_failed(error),
        };
        let (names, outside) = rails_names(&path, &entries);
        for entry in outside {
            tracing::warn!(project_id = project.id, %path, entry = %entry.path, "registry listed a repository outside the project path; ignored");
            ignored += 1;
        }
        let known = match existing_repository_names(db, project.id, &names).await {
            Ok(known) => known,
            Err(error) => {
                return Analysis::Deferred {
                    reason: error.into(),
                    refused: false,
                }
            }
        };
        missing += names.iter().filter(|n| !known.contains(*n)).count() as i64;
    }
    Analysis::Completed {
        missing: i32::try_from(missing).unwrap_or(i32::MAX),
        ignored,
        pages: pages.pages_fetched(),
    }
}
