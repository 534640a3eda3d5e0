//! The analysis' source ([`Passes`]): this member's part of the fleet's passes (the walk above the
//! watermark, the sweep below it, the retry of failed projects), read through claims on the
//! fleet's shared cursors. A part ends with a flush; then the member's claims end, and the member
//! that finds the pass over fleet-wide moves the watermark and starts the next. It owns what it
//! needs (the database, the member, the watermark and its fences) and makes its reads as futures
//! the Scheduler runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::LocalBoxFuture;
use futures_util::FutureExt;

use crate::db::fleet::claims::{self, Kind, PassProgress, PassState, Step};
use crate::db::fleet::Member;
use crate::db::projects::Project;
use crate::db::tracking::Replaces;
use crate::db::watermark::{self, Fences};
use crate::db::{Database, DbError};
use crate::work::{Job, NextPass, Remaining, Source, SourceStatus};

/// How often the watermark is moved up and a due sweep is started.
const WATERMARK_INTERVAL: Duration = Duration::from_secs(5);
/// How soon a member whose part of a pass is done looks again while others finish theirs.
const WAITING_POLL: Duration = Duration::from_secs(1);

/// What the analysis' passes are started with.
#[derive(Debug, Clone)]
pub(super) struct PassSettings {
    /// This instance as a member of the fleet (its shard among it).
    pub member: Arc<Member>,
    /// Every project of the shard up to this id has a row (see `db::watermark`).
    pub watermark: i64,
    /// Stop once every project has a row and everything is flushed.
    pub until_done: bool,
    /// How long to wait before looking again once a pass found nothing.
    pub rescan_interval: Duration,
    /// How often the projects below the watermark are swept for ones without an answer.
    pub sweep_interval: Duration,
}

/// What the end of this member's part of a pass brought: the watermark it moved up to (if it
/// did), and where the fleet stands.
pub struct PartEnd {
    watermark: Option<i64>,
    state: PassState,
}

/// What the periodic duties brought: the watermark moved up, a sweep began.
pub struct Periodic {
    through: Option<i64>,
    swept: bool,
}

/// This member's part of the fleet's passes over the projects without a tracking row: it reads
/// through claims on the fleet's shared cursors (`db::fleet::claims`), so that no two members
/// read the same projects.
pub struct Passes {
    db: Database,
    member: Arc<Member>,
    until_done: bool,
    rescan_interval: Duration,
    sweep_interval: Duration,
    watermark: i64,
    /// The fleet's pass this member last read in.
    pass: i64,
    /// This member's part of the pass is read.
    exhausted: bool,
    fetching: bool,
    /// Projects this member read in its part of the pass.
    found: u64,
    /// A background move of the watermark is under way.
    advancing: bool,
    /// What caps the watermark: fences against transactions that commit late.
    fences: Arc<Fences>,
    /// While a sweep runs, reads alternate between it and the walk above the watermark.
    prefer_sweep: bool,
    sweeping: bool,
    sweeps: u64,
    /// Where the fleet stood at the end of this member's last part.
    ended: PassState,
    /// How far the fleet's pass is, as the claims bring it.
    progress: Progress,
}

/// The fleet's pass as this member saw it: its count of the work left, and how fast the walk read
/// it (the whole fleet's pace, so the ETA is the fleet's).
#[derive(Debug, Default)]
struct Progress {
    last: Option<PassProgress>,
    /// The first sight of the walk of this pass since it was counted, and the latest.
    since: Option<(Instant, i64)>,
    now: Option<(Instant, i64)>,
}

impl Progress {
    fn observe(&mut self, progress: PassProgress) {
        let at = (Instant::now(), progress.walked);
        let same_count = self.last.is_some_and(|last| {
            last.pass == progress.pass && last.left_at_start == progress.left_at_start
        });
        if !same_count {
            self.since = progress.left_at_start.map(|_| at);
        }
        self.now = Some(at);
        self.last = Some(progress);
    }

    fn left(&self) -> Option<u64> {
        self.last.and_then(|progress| progress.left())
    }

    fn estimated(&self) -> bool {
        self.last.is_some_and(|progress| progress.estimated)
    }

    /// When `left` will be done at the pace the fleet's walk has read projects since the count.
    fn eta_s(&self, left: u64) -> Option<f64> {
        let ((since, walked_then), (now, walked_now)) = (self.since?, self.now?);
        let seconds = now.duration_since(since).as_secs_f64();
        let rate = (walked_now - walked_then) as f64 / seconds;
        (seconds > 0.0 && rate > 0.0).then(|| left as f64 / rate)
    }
}

impl Passes {
    pub(super) fn new(db: Database, settings: PassSettings) -> Self {
        Self {
            db,
            member: settings.member,
            until_done: settings.until_done,
            rescan_interval: settings.rescan_interval,
            sweep_interval: settings.sweep_interval,
            watermark: settings.watermark,
            pass: 0,
            exhausted: false,
            fetching: false,
            found: 0,
            advancing: false,
            fences: Arc::default(),
            prefer_sweep: false,
            sweeping: false,
            sweeps: 0,
            ended: PassState::Next,
            progress: Progress::default(),
        }
    }

    /// Moves the watermark up as far as the database shows every project has a row.
    fn advance(&self) -> LocalBoxFuture<'static, Option<i64>> {
        let (db, shard, from) = (self.db.clone(), self.member.shard, self.watermark);
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
        .boxed_local()
    }

    /// A fence for the watermark, taken as a pass starts: by the pass's end the transactions
    /// running now have most likely ended, and the watermark can move up to it.
    fn take_fence(&self) {
        let (db, fences) = (self.db.clone(), self.fences.clone());
        actix_rt::spawn(async move {
            if let Err(error) = watermark::take_fence(&db, &fences).await {
                tracing::debug!(%error, "taking a fence for the watermark failed");
            }
        });
    }
}

impl Source for Passes {
    /// Which row already there a project's result replaces: one still `failed` (`run
    /// --retry-failed`), or one counted without its repositories (itemising).
    type Item = Replaces;
    /// The next claim on the fleet's cursors, with how far the fleet's pass is.
    type Read = Result<claims::Read, DbError>;
    type PassEnd = PartEnd;
    type Periodic = Periodic;

    fn next_read(&mut self, want: i64) -> Option<LocalBoxFuture<'static, Self::Read>> {
        if self.fetching || self.exhausted {
            return None;
        }
        self.fetching = true;
        self.prefer_sweep = !self.prefer_sweep;
        let (db, member, prefer_sweep) = (self.db.clone(), self.member.clone(), self.prefer_sweep);
        Some(async move { claims::claim(&db, &member, prefer_sweep, want).await }.boxed_local())
    }

    fn took(&mut self, read: Self::Read) -> Result<Vec<Job<Replaces>>, DbError> {
        self.fetching = false;
        let claims::Read { step, progress } = read?;
        self.progress.observe(progress);
        match step {
            Step::Claimed {
                pass,
                kind,
                projects,
                swept,
                ..
            } => {
                self.pass = pass;
                self.found += projects.len() as u64;
                self.sweeping = kind == Kind::Sweep && !swept;
                self.sweeps += u64::from(swept);
                Ok(jobs(projects, kind.replaces()))
            }
            Step::PassRead { pass } | Step::NotBefore { pass, .. } => {
                self.pass = pass;
                self.sweeping = false;
                self.exhausted = true;
                Ok(Vec::new())
            }
        }
    }

    fn dropped(&mut self) {
        self.fetching = false;
    }

    fn pass_read(&self) -> bool {
        self.exhausted && !self.fetching
    }

    /// The fleet's passes are shared: a member reads only as far as its share works soon.
    fn shared_with_the_fleet(&self) -> bool {
        true
    }

    /// This member's part of the pass is flushed: its claims end and, if the pass is over for
    /// the whole fleet, the watermark moves up and the next pass starts from it.
    fn end_pass(&self) -> LocalBoxFuture<'static, PartEnd> {
        let (db, member, pass, from) = (
            self.db.clone(),
            self.member.clone(),
            self.pass,
            self.watermark,
        );
        let (until_done, rescan) = (self.until_done, self.rescan_interval);
        let advance = self.advance();
        async move {
            let over = claims::pass_looks_over(&db, &member, pass).await;
            let moved = match over {
                Ok(true) => advance.await,
                _ => None,
            };
            let through = moved.unwrap_or(from).max(from);
            let state = claims::finish_part(&db, &member, pass, through, until_done, rescan)
                .await
                .unwrap_or_else(|error| {
                    tracing::warn!(%error, "ending this member's part of the pass failed; looking again");
                    PassState::Waiting
                });
            PartEnd {
                watermark: moved,
                state,
            }
        }
        .boxed_local()
    }

    /// This member's part of a pass is over and flushed: read again now, later, or end the run.
    fn pass_ended(&mut self, end: PartEnd) -> NextPass {
        if let Some(through) = end.watermark {
            self.watermark = self.watermark.max(through);
        }
        self.ended = end.state;
        tracing::debug!(pass = self.pass, projects = self.found, fleet = ?self.ended, "part of the pass complete");
        match self.ended {
            PassState::Waiting => NextPass::After(WAITING_POLL),
            PassState::NotBefore(wait) => NextPass::After(wait.min(WATERMARK_INTERVAL)),
            PassState::Next => NextPass::Now,
            PassState::Done => NextPass::Done,
        }
    }

    /// The Scheduler has started: the first fence for the watermark.
    fn started(&self) {
        self.take_fence();
    }

    fn start_pass(&mut self) {
        self.take_fence();
        self.exhausted = false;
        self.found = 0;
    }

    /// The watermark and the sweep, every few seconds.
    fn period(&self) -> Option<Duration> {
        Some(WATERMARK_INTERVAL)
    }

    /// The periodic duties: the watermark, and a sweep when one is due (unless one is under way).
    fn periodic(&mut self) -> Option<LocalBoxFuture<'static, Periodic>> {
        if self.advancing {
            return None;
        }
        self.advancing = true;
        let advance = self.advance();
        let (db, shard, interval) = (self.db.clone(), self.member.shard, self.sweep_interval);
        Some(
            async move {
                let through = advance.await;
                let swept = claims::start_sweep_if_due(&db, shard, interval)
                    .await
                    .unwrap_or_else(|error| {
                        tracing::debug!(%error, "starting a due sweep failed");
                        false
                    });
                if swept {
                    tracing::info!(
                        through,
                        "sweeping the projects below the watermark for ones without an answer"
                    );
                    // Looked for again with each sweep, like the rows the sweep looks for.
                    if let Err(error) = claims::start_itemise_if_needed(&db, shard).await {
                        tracing::debug!(%error, "starting to itemise failed");
                    }
                }
                Periodic { through, swept }
            }
            .boxed_local(),
        )
    }

    fn periodic_done(&mut self, periodic: Periodic) -> bool {
        self.advancing = false;
        if let Some(through) = periodic.through {
            self.watermark = self.watermark.max(through);
        }
        periodic.swept
    }

    /// Makes sure the fleet's pass is counted: by this member if none does (see
    /// [`claims::count_pass`]); every member reads the count with its claims.
    fn count(&self) -> LocalBoxFuture<'static, Result<Option<u64>, DbError>> {
        let (db, member) = (self.db.clone(), self.member.clone());
        async move {
            if let Some(counted) = claims::count_pass(&db, &member).await? {
                tracing::info!(
                    pass = counted.pass,
                    left = counted.left().unwrap_or(0),
                    estimated = counted.estimated,
                    "counted the work left for the fleet"
                );
            }
            Ok(None)
        }
        .boxed_local()
    }

    fn cursor(&self) -> i64 {
        self.watermark
    }

    fn status(&self, unanswered: u64) -> SourceStatus {
        SourceStatus {
            pass: u64::try_from(self.pass).unwrap_or(0),
            watermark: self.watermark,
            sweeping: self.sweeping,
            sweeps: self.sweeps,
            // What this member took but has not answered yet is left too.
            remaining: self.progress.left().map(|left| {
                let left = left + unanswered;
                Remaining {
                    left,
                    estimated: self.progress.estimated(),
                    eta_s: self.progress.eta_s(left),
                }
            }),
        }
    }
}

/// The projects read, as jobs whose results replace the rows `replaces` says.
fn jobs(projects: Vec<Project>, replaces: Replaces) -> Vec<Job<Replaces>> {
    projects
        .into_iter()
        .map(|project| Job::new(project, replaces))
        .collect()
}
