//! A repair's source ([`Candidates`], `repair plan` and `repair apply`): one keyset walk over the
//! candidates in scope (tracking row `completed` with `missing_count > 0`), each page with the
//! guards' facts read in bulk and the unique index checked. A finite pass, like
//! `run --until-done`: once every candidate was read, dispatched, back and flushed, the run ends.

use std::time::Instant;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::read::{Batch, Read, ReadKind, Reading};
use super::{ServiceStatus, FETCH_BATCH};
use crate::analyzer::{Job, RepairCandidate};
use crate::db::projects::Project;
use crate::db::repair::{candidates, count_candidates, index_health, project_facts, Scope};
use crate::db::{Database, DbError};

/// The candidates in scope, read a page at a time.
pub struct Candidates {
    db: Database,
    scope: Scope,
    cursor: i64,
    exhausted: bool,
    fetching: bool,
    /// `--limit`: candidates still to read (`None`: no limit).
    left: Option<u64>,
}

impl Candidates {
    pub fn new(db: Database, scope: Scope) -> Self {
        Self {
            db,
            left: scope.limit,
            scope,
            cursor: 0,
            exhausted: false,
            fetching: false,
        }
    }

    pub(super) fn next_read(&mut self) -> Option<Reading> {
        if self.fetching || self.exhausted {
            return None;
        }
        let want = match self.left {
            Some(0) => {
                self.exhausted = true;
                return None;
            }
            Some(left) => i64::try_from(left).map_or(FETCH_BATCH, |l| l.min(FETCH_BATCH)),
            None => FETCH_BATCH,
        };
        self.fetching = true;
        let (db, scope, after) = (self.db.clone(), self.scope.clone(), self.cursor);
        Some(
            async move {
                let started = Instant::now();
                let result = read_page(&db, &scope, after, want).await;
                Read {
                    took: started.elapsed(),
                    kind: ReadKind::Walk {
                        after,
                        want,
                        result,
                    },
                }
            }
            .boxed(),
        )
    }

    pub(super) fn took(&mut self, read: Read) -> Result<Vec<Job>, DbError> {
        self.fetching = false;
        let ReadKind::Walk {
            after,
            want,
            result,
        } = read.kind
        else {
            return Ok(Vec::new());
        };
        let batch = result?;
        if self.cursor != after {
            return Ok(Vec::new());
        }
        self.exhausted = (batch.read as i64) < want;
        if let Some(last) = batch.last {
            self.cursor = last;
        }
        self.left = self.left.map(|left| left.saturating_sub(batch.read));
        Ok(batch.jobs)
    }

    pub(super) fn dropped(&mut self) {
        self.fetching = false;
    }

    pub(super) fn pass_read(&self) -> bool {
        self.exhausted && !self.fetching
    }

    /// How many candidates the scope holds.
    pub(super) fn count(&self) -> BoxFuture<'static, Result<Option<u64>, DbError>> {
        let (db, scope) = (self.db.clone(), self.scope.clone());
        async move { count_candidates(&db, &scope).await.map(Some) }.boxed()
    }

    pub(super) fn cursor(&self) -> i64 {
        self.cursor
    }

    pub(super) fn status(&self, status: &mut ServiceStatus) {
        status.pass = 1;
    }
}

/// One page of the walk, with the guards' facts of the projects that still exist.
async fn read_page(db: &Database, scope: &Scope, after: i64, want: i64) -> Result<Batch, DbError> {
    let page = candidates(db, scope, after, want).await?;
    let mut facts = project_facts(db, &page).await?;
    let index_safe = index_health(db).await?.is_safe();
    Ok(Batch {
        read: page.len() as u64,
        last: page.last().map(|c| c.project_id),
        jobs: page
            .iter()
            .filter_map(|c| facts.remove(&c.project_id))
            .map(|facts| {
                let project = Project {
                    id: facts.id,
                    full_path: Some(facts.full_path.clone()),
                };
                Job {
                    candidate: Some(Box::new(RepairCandidate {
                        facts,
                        index_safe,
                        consent: scope.consent,
                    })),
                    ..Job::new(project)
                }
            })
            .collect(),
    })
}
