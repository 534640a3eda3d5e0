//! An Analyzer's step for a repair (`repair plan`, `repair apply`): list the project's registry
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

use super::Analysis;
use crate::db::projects::existing_repository_names;
use crate::db::repair::claimed_paths;
use crate::db::Database;
use crate::registry::names::rails_names;
use crate::registry::token::SharedToken;
use crate::registry::RegistryClient;
use crate::repair::guards::{claim_lookups, plan_project, Consent, Inputs, ProjectFacts};

/// A candidate with what its plan needs besides the registry: the guards' facts (read in bulk
/// per page of candidates), the unique index's health when the page was read, the review reasons
/// the operator lifted.
#[derive(Debug, Clone)]
pub struct RepairCandidate {
    pub facts: ProjectFacts,
    pub index_safe: bool,
    pub consent: Consent,
}

/// Plans one project: every registry entry under its path, the names GitLab has, the projects
/// GitLab could resolve its repositories' paths to, and the guards.
pub(super) async fn plan(
    registry: &RegistryClient,
    db: &Database,
    candidate: &RepairCandidate,
    token: Option<Arc<SharedToken>>,
) -> Analysis {
    let facts = &candidate.facts;
    let path = facts.registry_path();
    let entries = match registry.list_all(&path, token).await {
        Ok(entries) => entries,
        Err(error) => return Analysis::registry_failed(error),
    };
    let deferred = |error: crate::db::DbError| Analysis::Deferred {
        reason: error.into(),
        refused: false,
    };
    let (names, _) = rails_names(&path, &entries);
    let existing: HashSet<String> = match existing_repository_names(db, facts.id, &names).await {
        Ok(existing) => existing,
        Err(error) => return deferred(error),
    };
    let claimed = match claimed_paths(db, facts.id, &claim_lookups(&path, &entries)).await {
        Ok(claimed) => claimed,
        Err(error) => return deferred(error),
    };
    Analysis::Planned(Box::new(plan_project(
        facts,
        &Inputs {
            entries: &entries,
            existing: &existing,
            claimed_by_others: &claimed,
            index_safe: candidate.index_safe,
            consent: candidate.consent,
        },
    )))
}
