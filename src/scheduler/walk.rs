//! The analysis' source ([`Passes`]): the keyset walk above the watermark, the sweep below it,
//! and the passes they make up (a pass ends with a flush, then the watermark moves and the walk
//! starts again). It owns what it needs (the database, the shard, the watermark and its fences,
//! the sweep) and makes its reads as futures the Scheduler runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::read::{Batch, NextPass, Read, ReadKind, Reading};
use super::sweep::Sweep;
use super::{ServiceStatus, FETCH_BATCH};
use crate::analyzer::Job;
use crate::config::Shard;
use crate::db::projects::{
    next_failed, next_unanalysed, remaining_unanalysed, unanalysed_between, Project,
};
use crate::db::watermark::{self, Fences};
use crate::db::{Database, DbError};

/// How often the watermark is moved up.
pub const WATERMARK_INTERVAL: Duration = Duration::from_secs(5);

/// Which projects a pass walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    /// Projects without a tracking row.
    Unanalysed,
    /// Projects recorded `failed` (`run --retry-failed`, first pass only).
    Failed,
}

/// What the analysis is started with.
#[derive(Debug, Clone)]
pub struct AnalysisSettings {
    /// This instance's share of the projects.
    pub shard: Shard,
    /// Every project of the shard up to this id has a row (see `db::watermark`).
    pub watermark: i64,
    /// Stop once every project has a row and everything is flushed.
    pub until_done: bool,
    /// Walk the projects recorded `failed` first, and analyse them again.
    pub retry_failed: bool,
    /// How long to wait before looking again once a pass found nothing.
    pub rescan_interval: Duration,
    /// How often the projects below the watermark are swept for ones without an answer.
    pub sweep_interval: Duration,
    /// How long ago this shard was last swept (`None`: never).
    pub swept_ago: Option<Duration>,
}

/// Pass after pass over the projects without a tracking row.
pub struct Passes {
    db: Database,
    shard: Shard,
    until_done: bool,
    rescan_interval: Duration,
    watermark: i64,
    which: Which,
    cursor: i64,
    exhausted: bool,
    fetching: bool,
    /// Projects read in this pass.
    found: u64,
    passes: u64,
    /// A background move of the watermark is under way.
    advancing: bool,
    /// What caps the watermark: fences against transactions that commit late.
    fences: Arc<Fences>,
    sweep: Sweep,
    /// While a sweep runs, reads alternate between it and the walk above the watermark.
    sweep_turn: bool,
}

impl Passes {
    pub fn new(db: Database, settings: AnalysisSettings) -> Self {
        let which = match settings.retry_failed {
            true => Which::Failed,
            false => Which::Unanalysed,
        };
        let mut passes = Self {
            db,
            shard: settings.shard,
            until_done: settings.until_done,
            rescan_interval: settings.rescan_interval,
            watermark: settings.watermark,
            which,
            cursor: 0,
            exhausted: false,
            fetching: false,
            found: 0,
            passes: 1,
            advancing: false,
            fences: Arc::default(),
            sweep: Sweep::new(settings.sweep_interval, settings.swept_ago),
            sweep_turn: false,
        };
        passes.cursor = passes.pass_start();
        passes
    }

    /// Where a pass starts: past the watermark, unless it revisits failed projects.
    fn pass_start(&self) -> i64 {
        match self.which {
            Which::Unanalysed => self.watermark,
            Which::Failed => 0,
        }
    }

    pub(super) fn next_read(&mut self) -> Option<Reading> {
        if self.fetching {
            return None;
        }
        // No sweep while failed projects are revisited: that pass reads other rows.
        let span = self
            .sweep
            .next_span()
            .filter(|_| self.which == Which::Unanalysed);
        if let Some(span) = span {
            if self.exhausted || self.sweep_turn {
                self.sweep_turn = false;
                self.fetching = true;
                return Some(self.read_sweep(span));
            }
            self.sweep_turn = true;
        }
        if self.exhausted {
            return None;
        }
        self.fetching = true;
        let (db, after, which, shard) = (self.db.clone(), self.cursor, self.which, self.shard);
        Some(
            async move {
                let started = Instant::now();
                let result = match which {
                    Which::Unanalysed => next_unanalysed(&db, after, FETCH_BATCH, shard).await,
                    Which::Failed => next_failed(&db, after, FETCH_BATCH, shard).await,
                };
                let result = result.map(|projects| Batch {
                    read: projects.len() as u64,
                    last: projects.last().map(|p| p.id),
                    jobs: jobs(projects, which == Which::Failed),
                });
                Read {
                    took: started.elapsed(),
                    kind: ReadKind::Walk {
                        after,
                        want: FETCH_BATCH,
                        result,
                    },
                }
            }
            .boxed(),
        )
    }

    /// Reads the next span of the sweep under way (see [`Sweep`]).
    fn read_sweep(&self, (after, through): (i64, i64)) -> Reading {
        let (db, shard) = (self.db.clone(), self.shard);
        async move {
            let started = Instant::now();
            let result = unanalysed_between(&db, after, Some(through), FETCH_BATCH, shard)
                .await
                .map(|projects| jobs(projects, false));
            Read {
                took: started.elapsed(),
                kind: ReadKind::Sweep {
                    after,
                    through,
                    result,
                },
            }
        }
        .boxed()
    }

    pub(super) fn took(&mut self, read: Read) -> Result<Vec<Job>, DbError> {
        self.fetching = false;
        match read.kind {
            ReadKind::Walk {
                after,
                want,
                result,
            } => {
                let batch = result?;
                if self.cursor != after {
                    return Ok(Vec::new()); // an answer from before a new pass
                }
                self.exhausted = (batch.read as i64) < want;
                if let Some(last) = batch.last {
                    self.cursor = last;
                }
                self.found += batch.read;
                Ok(batch.jobs)
            }
            ReadKind::Sweep {
                after,
                through,
                result,
            } => {
                let jobs = result?;
                if self.sweep.next_span().map(|(a, _)| a) != Some(after) {
                    return Ok(Vec::new());
                }
                let to = match jobs.last() {
                    Some(last) if jobs.len() as i64 >= FETCH_BATCH => last.project.id,
                    _ => through,
                };
                if !jobs.is_empty() {
                    tracing::info!(
                        projects = jobs.len(),
                        from = jobs.first().map_or(0, |j| j.project.id),
                        to = jobs.last().map_or(0, |j| j.project.id),
                        "sweep found projects without an answer below the watermark"
                    );
                }
                self.found += jobs.len() as u64;
                if self.sweep.advanced(after, to) {
                    tracing::info!(through, "sweep complete");
                    let (db, shard) = (self.db.clone(), self.shard);
                    actix_rt::spawn(async move {
                        if let Err(error) = watermark::swept(&db, shard).await {
                            tracing::warn!(%error, "recording the end of a sweep failed; the next start sweeps again");
                        }
                    });
                }
                Ok(jobs)
            }
        }
    }

    pub(super) fn dropped(&mut self) {
        self.fetching = false;
    }

    pub(super) fn pass_read(&self) -> bool {
        self.exhausted && !self.sweep.is_active() && !self.fetching
    }

    /// Moves the watermark up as far as the database shows every project has a row.
    pub(super) fn advance(&self) -> BoxFuture<'static, Option<i64>> {
        let (db, shard, from) = (self.db.clone(), self.shard, self.watermark);
        let fences = self.fences.clone();
        async move {
            match watermark::advance(&db, shard, from, &fences).await {
                Ok(through) => Some(through),
                Err(error) => {
                    tracing::debug!(%error, "the watermark could not move");
                    None
                }
            }
        }
        .boxed()
    }

    pub(super) fn advanced(&mut self, through: i64) {
        self.watermark = self.watermark.max(through);
    }

    /// [`Passes::advance`], unless one is under way already.
    pub(super) fn advance_in_background(&mut self) -> Option<BoxFuture<'static, Option<i64>>> {
        if self.advancing {
            return None;
        }
        self.advancing = true;
        Some(self.advance())
    }

    pub(super) fn background_advanced(&mut self, through: Option<i64>) {
        self.advancing = false;
        if let Some(through) = through {
            self.advanced(through);
        }
    }

    /// Starts a sweep when one is due (see [`Sweep`]); whether it did.
    pub(super) fn sweep_if_due(&mut self) -> bool {
        if !self.sweep.due() || self.which != Which::Unanalysed {
            return false;
        }
        tracing::info!(
            through = self.watermark,
            "sweeping the projects below the watermark for ones without an answer"
        );
        self.sweep.start(self.watermark);
        true
    }

    /// A pass is over and flushed: walk again now, later, or end the run.
    pub(super) fn next_pass(&mut self) -> NextPass {
        let found = self.found;
        tracing::info!(pass = self.passes, projects = found, source = ?self.which, "pass complete");
        if self.which == Which::Failed {
            // The failed projects had their second chance; now the usual walk.
            self.which = Which::Unanalysed;
            NextPass::Now
        } else if found > 0 || self.sweep.is_active() {
            NextPass::Now
        } else if self.until_done && self.sweep.completed() == 0 {
            // Done means every project has an answer, below the watermark too.
            self.sweep.start(self.watermark);
            NextPass::Now
        } else if self.until_done {
            NextPass::Done
        } else {
            NextPass::After(self.rescan_interval)
        }
    }

    pub(super) fn start_pass(&mut self) {
        self.take_fence();
        self.cursor = self.pass_start();
        self.exhausted = false;
        self.found = 0;
        self.passes += 1;
    }

    /// A fence for the watermark, taken as a pass starts: by the pass's end the transactions
    /// running now have most likely ended, and the watermark can move up to it.
    pub(super) fn take_fence(&self) {
        let (db, fences) = (self.db.clone(), self.fences.clone());
        actix_rt::spawn(async move {
            if let Err(error) = watermark::take_fence(&db, &fences).await {
                tracing::debug!(%error, "taking a fence for the watermark failed");
            }
        });
    }

    /// Counts (or, on a large database, estimates) the projects left to analyse.
    pub(super) fn count(&self) -> BoxFuture<'static, Result<u64, DbError>> {
        let (db, shard, after) = (self.db.clone(), self.shard, self.watermark);
        async move { remaining_unanalysed(&db, after, shard).await }.boxed()
    }

    pub(super) fn cursor(&self) -> i64 {
        self.cursor
    }

    pub(super) fn status(&self, status: &mut ServiceStatus) {
        status.pass = self.passes;
        status.watermark = self.watermark;
        status.sweeping = self.sweep.is_active();
        status.sweeps = self.sweep.completed();
    }
}

/// The projects read, as jobs (`replaces_failed`: they are recorded `failed` and analysed again).
fn jobs(projects: Vec<Project>, replaces_failed: bool) -> Vec<Job> {
    projects
        .into_iter()
        .map(|project| Job {
            replaces_failed,
            ..Job::new(project)
        })
        .collect()
}
