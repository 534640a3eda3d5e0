//! INTERIM: `repair plan` and `repair apply` as a plain loop with bounded concurrency, without the
//! actor pipeline. To be moved onto Scheduler → Analyzers → Writer next session (issue 10, point
//! 1), which adds the feature flag, pause/resume, the breaker, the admin API and progress; the
//! pieces stay: [`plan_one`] is what an Analyzer does per project, [`apply_batch`] what the Writer
//! does per batch.
//!
//! What it already does right: a keyset walk over the candidates (pages of [`PAGE`] projects),
//! the guards' facts read in bulk per page, the unique index checked per page (and again by each
//! write), every project listed again in the registry (the state may have changed since the
//! analysis), and each project written in one transaction.

use std::collections::{HashMap, HashSet};

use futures_util::stream::{self, StreamExt};

use super::guards::{candidate_claims, plan_project, Inputs, ProjectFacts, ProjectPlan};
use super::verify::list_all;
use crate::analyzer::rails_names;
use crate::db::projects::existing_repository_names;
use crate::db::repair::{
    apply_batch, candidates, claimed_paths, finish_run, index_health, project_facts, start_apply,
    Candidate, Scope, Written,
};
use crate::db::{Database, DbError};
use crate::registry::RegistryClient;

/// Projects per page of the walk (and per write batch).
pub const PAGE: i64 = 200;

/// Why one project could not be planned.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("project {project_id} ({path}): {source}")]
    Registry {
        project_id: i64,
        path: String,
        #[source]
        source: crate::registry::RegistryError,
    },
    #[error("project {project_id}: {source}")]
    Database {
        project_id: i64,
        #[source]
        source: DbError,
    },
}

/// Plans one project: lists the registry under its path again, looks up which names GitLab has
/// and which paths other projects claim, and applies the guards. What an Analyzer does.
pub async fn plan_one(
    db: &Database,
    registry: &RegistryClient,
    facts: &ProjectFacts,
    index_safe: bool,
    include_older: bool,
) -> Result<ProjectPlan, PlanError> {
    let path = facts.registry_path();
    let entries = list_all(registry, &path)
        .await
        .map_err(|source| PlanError::Registry {
            project_id: facts.id,
            path: path.clone(),
            source,
        })?;
    let database = |source| PlanError::Database {
        project_id: facts.id,
        source,
    };
    let (names, _) = rails_names(&path, &entries);
    let existing: HashSet<String> = existing_repository_names(db, facts.id, &names)
        .await
        .map_err(database)?;
    let claimed = claimed_paths(db, facts.id, &candidate_claims(&path, &entries))
        .await
        .map_err(database)?;
    Ok(plan_project(
        facts,
        &Inputs {
            entries: &entries,
            existing: &existing,
            claimed_by_others: &claimed,
            index_safe,
            include_older,
        },
    ))
}

/// What a walk produced: plans (for `plan`) or writes (for `apply`), and the projects that could
/// not be planned.
#[derive(Debug, Default)]
pub struct Walked {
    pub plans: Vec<ProjectPlan>,
    pub written: Vec<Written>,
    pub errors: Vec<PlanError>,
}

/// Walks the candidates in `scope`, planning `concurrency` projects at once; with `apply_run`,
/// writes each page's plans in that run.
pub async fn walk(
    db: &Database,
    registry: &RegistryClient,
    scope: &Scope,
    concurrency: usize,
    apply_run: Option<i64>,
) -> Result<Walked, DbError> {
    let mut walked = Walked::default();
    let mut after = 0i64;
    let mut left = scope.limit.unwrap_or(u64::MAX);
    while left > 0 {
        let want = i64::try_from(left.min(PAGE as u64)).unwrap_or(PAGE);
        let page: Vec<Candidate> = candidates(db, scope, after, want).await?;
        let Some(last) = page.last() else { break };
        after = last.project_id;
        left = left.saturating_sub(page.len() as u64);
        let facts: HashMap<i64, ProjectFacts> = project_facts(db, &page).await?;
        let index_safe = index_health(db).await?.is_safe();
        let mut planned: Vec<Result<ProjectPlan, PlanError>> =
            stream::iter(page.iter().filter_map(|c| facts.get(&c.project_id)))
                .map(|f| plan_one(db, registry, f, index_safe, scope.include_older))
                .buffered(concurrency.max(1))
                .collect()
                .await;
        let mut plans = Vec::with_capacity(planned.len());
        for result in planned.drain(..) {
            match result {
                Ok(plan) => plans.push(plan),
                Err(error) => {
                    tracing::warn!(%error, "project not planned");
                    walked.errors.push(error);
                }
            }
        }
        match apply_run {
            Some(run) => walked.written.extend(apply_batch(db, run, &plans).await?),
            None => walked.plans.extend(plans),
        }
    }
    Ok(walked)
}

/// `repair plan`: the plans, nothing written.
pub async fn plan(
    db: &Database,
    registry: &RegistryClient,
    scope: &Scope,
    concurrency: usize,
) -> Result<Walked, DbError> {
    walk(db, registry, scope, concurrency, None).await
}

/// `repair apply`: a run recorded, every page's plans written, the run's end recorded. Returns
/// the run id and what was written.
pub async fn apply(
    db: &Database,
    registry: &RegistryClient,
    scope: &Scope,
    concurrency: usize,
) -> Result<(i64, Walked), DbError> {
    let run = start_apply(db, scope).await?;
    let walked = walk(db, registry, scope, concurrency, Some(run)).await?;
    finish_run(db, run).await?;
    Ok((run, walked))
}
