//! The repair's source ([`Candidates`]): one keyset walk over the candidates in scope (tracking
//! row `completed` with `missing_count > 0`), each page with the guards' facts read in bulk and
//! the unique index checked. A finite pass, like `run --until-done`: once every candidate was
//! read, dispatched, back and flushed, the run ends.

use futures_util::future::{self, LocalBoxFuture};
use futures_util::FutureExt;

use super::Candidate;
use crate::db::projects::Project;
use crate::db::repair::{candidates, count_candidates, index_health, project_facts, Scope};
use crate::db::{Database, DbError};
use crate::work::{Job, NextPass, Source, SourceStatus};

/// Candidates read per page at most.
const PAGE: i64 = 1000;

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
}

/// One page of candidates read: where it started, how many it asked for, and what it brought.
pub struct Read {
    after: i64,
    want: i64,
    result: Result<Page, DbError>,
}

/// A page of the walk: how many rows were read, the last id, and the jobs made of them (fewer
/// when a project was deleted meanwhile).
struct Page {
    read: u64,
    last: Option<i64>,
    jobs: Vec<Job<Candidate>>,
}

impl Source for Candidates {
    type Item = Candidate;
    type Read = Read;
    type PassEnd = ();
    type Periodic = ();

    /// The next page, of its own size (the candidates are this repair's, read whole).
    fn next_read(&mut self, _want: i64) -> Option<LocalBoxFuture<'static, Read>> {
        if self.fetching || self.exhausted {
            return None;
        }
        let want = match self.left {
            Some(0) => {
                self.exhausted = true;
                return None;
            }
            Some(left) => i64::try_from(left).map_or(PAGE, |l| l.min(PAGE)),
            None => PAGE,
        };
        self.fetching = true;
        let (db, scope, after) = (self.db.clone(), self.scope.clone(), self.cursor);
        Some(
            async move {
                let result = read_page(&db, &scope, after, want).await;
                Read {
                    after,
                    want,
                    result,
                }
            }
            .boxed_local(),
        )
    }

    fn took(&mut self, read: Read) -> Result<Vec<Job<Candidate>>, DbError> {
        self.fetching = false;
        let Read {
            after,
            want,
            result,
        } = read;
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

    fn dropped(&mut self) {
        self.fetching = false;
    }

    fn pass_read(&self) -> bool {
        self.exhausted && !self.fetching
    }

    fn shared_with_the_fleet(&self) -> bool {
        false
    }

    /// One pass, and the run is over.
    fn end_pass(&self) -> LocalBoxFuture<'static, ()> {
        future::ready(()).boxed_local()
    }

    fn pass_ended(&mut self, _end: ()) -> NextPass {
        NextPass::Done
    }

    /// How many candidates the scope holds.
    fn count(&self) -> LocalBoxFuture<'static, Result<Option<u64>, DbError>> {
        let (db, scope) = (self.db.clone(), self.scope.clone());
        async move { count_candidates(&db, &scope).await.map(Some) }.boxed_local()
    }

    fn periodic_done(&mut self, _periodic: ()) -> bool {
        false
    }

    fn cursor(&self) -> i64 {
        self.cursor
    }

    fn status(&self, _unanswered: u64) -> SourceStatus {
        SourceStatus {
            pass: 1,
            ..SourceStatus::default()
        }
    }
}

/// One page of the walk, with the guards' facts of the projects that still exist.
async fn read_page(db: &Database, scope: &Scope, after: i64, want: i64) -> Result<Page, DbError> {
    let page = candidates(db, scope, after, want).await?;
    let mut facts = project_facts(db, &page).await?;
    let index_safe = index_health(db).await?.is_safe();
    Ok(Page {
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
                Job::new(
                    project,
                    Candidate {
                        facts,
                        index_safe,
                        consent: scope.consent,
                    },
                )
            })
            .collect(),
    })
}
