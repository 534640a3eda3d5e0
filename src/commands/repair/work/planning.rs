//! The repair's step, as an Analyzer runs it for one candidate: list the project's registry
//! path again (the state may have changed since the analysis), look up which names GitLab has and
//! which paths other projects claim, and apply the guards ([`crate::repair::guards`]). Nothing is
//! written here: the plan goes to the Writer, which writes it in one transaction (apply) or only
//! collects it (plan).
//!
//! A failure is classified as an analysis' is: a registry that refuses or fails as a whole
//! defers the project (nothing written for it, planned again when the breaker closes); trouble of
//! the project's own, counted as for the analysis, ends it failed, and a project-level registry
//! error (too many pages, `NAME_INVALID`) fails it at once. A failed project is reported in the
//! plan or result, never written.

use std::collections::HashSet;
use std::sync::Arc;

use super::Candidate;
use crate::db::projects::existing_repository_names;
use crate::db::repair::claimed_paths;
use crate::db::Database;
use crate::registry::names::rails_names;
use crate::registry::token::SharedToken;
use crate::registry::RegistryClient;
use crate::repair::guards::{claim_lookups, plan_project, Inputs};
use crate::repair::ProjectPlan;
use crate::work::Step;

/// Plans one project: every registry entry under its path, the names GitLab has, the projects
/// GitLab could resolve its repositories' paths to, and the guards.
pub(super) async fn plan(
    registry: &RegistryClient,
    db: &Database,
    candidate: &Candidate,
    token: Option<Arc<SharedToken>>,
) -> Step<ProjectPlan> {
    let facts = &candidate.facts;
    let path = facts.registry_path();
    let entries = match registry.list_all(&path, token).await {
        Ok(entries) => entries,
        Err(error) => return Step::registry_failed(error),
    };
    let (names, _) = rails_names(&path, &entries);
    let existing: HashSet<String> = match existing_repository_names(db, facts.id, &names).await {
        Ok(existing) => existing,
        Err(error) => return Step::database_failed(error),
    };
    let claimed = match claimed_paths(db, facts.id, &claim_lookups(&path, &entries)).await {
        Ok(claimed) => claimed,
        Err(error) => return Step::database_failed(error),
    };
    Step::Done(plan_project(
        facts,
        &Inputs {
            entries: &entries,
            existing: &existing,
            claimed_by_others: &claimed,
            index_safe: candidate.index_safe,
            consent: candidate.consent,
        },
    ))
}
