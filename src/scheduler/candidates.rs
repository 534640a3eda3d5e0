//! Where a repair's projects come from (`repair plan`, `repair apply`): one keyset walk over the
//! candidates in scope (tracking row `completed` with `missing_count > 0`, see
//! [`candidates`]), each page with the guards' facts read in bulk and the unique index checked. A
//! finite pass, like `run --until-done`: once every candidate was dispatched, came back and the
//! Writer flushed, the run ends `Done`. Projects deferred by a registry outage wait in the queue
//! until the breaker closes, as in an analysis.

use std::time::Instant;

use actix::prelude::*;

use super::{Phase, RunEnd, Scheduler, FETCH_BATCH, RETRY_DB};
use crate::analyzer::{Job, RepairTask, Task};
use crate::db::projects::Project;
use crate::db::repair::{candidates, count_candidates, index_health, project_facts, Scope};
use crate::db::{Database, DbError};
use crate::writer::{Flush, WriteError};

/// One page of the walk: how many candidates were read, the last id, and the projects that still
/// exist with their facts (in id order).
struct Page {
    read: u64,
    last: Option<i64>,
    tasks: Vec<RepairTask>,
}

async fn read_page(db: &Database, scope: &Scope, after: i64, want: i64) -> Result<Page, DbError> {
    let page = candidates(db, scope, after, want).await?;
    let mut facts = project_facts(db, &page).await?;
    let index_safe = index_health(db).await?.is_safe();
    Ok(Page {
        read: page.len() as u64,
        last: page.last().map(|c| c.project_id),
        tasks: page
            .iter()
            .filter_map(|c| facts.remove(&c.project_id))
            .map(|facts| RepairTask {
                facts,
                index_safe,
                consent: scope.consent,
            })
            .collect(),
    })
}

impl Scheduler {
    /// Reads the next page of candidates when the queue runs low.
    pub(super) fn refill_candidates(&mut self, ctx: &mut Context<Self>) {
        let Some(repair) = self.config.work.repair() else {
            return;
        };
        if self.phase != Phase::Running
            || self.fetching
            || self.exhausted
            || self.queue.len() as i64 >= FETCH_BATCH / 2
        {
            return;
        }
        let want = match self.candidates_left {
            Some(0) => {
                self.exhausted = true;
                return;
            }
            Some(left) => i64::try_from(left).map_or(FETCH_BATCH, |l| l.min(FETCH_BATCH)),
            None => FETCH_BATCH,
        };
        self.fetching = true;
        let (db, scope, after) = (self.db.clone(), repair.scope.clone(), self.cursor);
        let fetch = async move {
            let started = Instant::now();
            let result = read_page(&db, &scope, after, want).await;
            (result, started.elapsed())
        };
        ctx.spawn(fetch.into_actor(self).map(move |(result, took), act, ctx| {
            act.fetching = false;
            act.accounting.fetched(took);
            match result {
                Ok(page) => {
                    if act.phase != Phase::Running || act.cursor != after {
                        return; // a stale answer from before a shutdown
                    }
                    act.exhausted = (page.read as i64) < want;
                    if let Some(last) = page.last {
                        act.cursor = last;
                    }
                    act.candidates_left = act.candidates_left.map(|l| l.saturating_sub(page.read));
                    act.found_in_pass += page.read;
                    act.enqueue_candidates(page.tasks);
                    act.tick(ctx);
                }
                Err(error) => {
                    tracing::warn!(%error, after, "reading projects to repair failed; retrying");
                    ctx.run_later(RETRY_DB, |act, ctx| act.tick(ctx));
                }
            }
        }));
    }

    /// Queues the candidates, each with the token its dispatch batch shares.
    fn enqueue_candidates(&mut self, tasks: Vec<RepairTask>) {
        let tokens = self.registry.share_tokens(
            tasks
                .iter()
                .map(|t| Some(t.facts.registry_path()))
                .collect(),
        );
        self.queue
            .extend(tasks.into_iter().zip(tokens).map(|(task, token)| {
                let project = Project {
                    id: task.facts.id,
                    full_path: Some(task.facts.full_path.clone()),
                };
                Job {
                    task: Task::Repair(Box::new(task)),
                    ..Job::new(project, Some(token))
                }
            }));
    }

    /// Every candidate was dispatched and came back: have the Writer flush, then end the run.
    pub(super) fn end_repair_if_done(&mut self, ctx: &mut Context<Self>) {
        if self.phase != Phase::Running
            || !self.exhausted
            || self.fetching
            || !self.queue.is_empty()
            || self.in_flight() > 0
        {
            return;
        }
        self.phase = Phase::Flushing;
        let flush = self.writer.send(Flush::PassEnd);
        ctx.spawn(flush.into_actor(self).map(|result, act, ctx| {
            if act.phase != Phase::Flushing {
                return;
            }
            match result {
                Ok(Ok(_)) => {
                    tracing::info!(
                        projects = act.found_in_pass,
                        "every project to repair was planned and flushed"
                    );
                    act.finish(RunEnd::Done);
                }
                Ok(Err(reason)) => act.pass_flush_failed(&reason, ctx),
                Err(_) => act.pass_flush_failed(&WriteError::WriterStopped, ctx),
            }
        }));
    }

    /// Counts the candidates in the background, so that progress has a total and an ETA.
    pub(super) fn count_candidates(&mut self, ctx: &mut Context<Self>) {
        let Some(repair) = self.config.work.repair() else {
            return;
        };
        let (db, scope) = (self.db.clone(), repair.scope.clone());
        let count = async move { count_candidates(&db, &scope).await };
        ctx.spawn(
            count
                .into_actor(self)
                .map(|result, act, _ctx| match result {
                    Ok(left) => act.accounting.counted(left),
                    Err(error) => tracing::debug!(%error, "counting the projects to repair failed"),
                }),
        );
    }
}
