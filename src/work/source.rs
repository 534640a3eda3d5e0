//! A work's [`Source`]: where the Scheduler's projects come from. It keeps its own cursor and
//! state; the Scheduler only asks it for the next read, hands back what the read brought, and asks
//! what ends a pass and what follows it. It needs no actor: each read is a future the Scheduler
//! runs.

use std::time::Duration;

use futures_util::future::LocalBoxFuture;

use super::Job;
use crate::db::DbError;

/// Where the projects come from, read a batch at a time, pass after pass.
pub trait Source: Unpin + 'static {
    /// What a job carries besides its project (the work's [`Work::Item`](super::Work::Item)).
    type Item;
    /// What one read brings back.
    type Read: 'static;
    /// What ending a pass brought.
    type PassEnd: 'static;
    /// What the periodic duties brought.
    type Periodic: 'static;

    /// The next read to make, when one is due and none is under way. `want`: how many projects
    /// this member can work on soon (a source may read pages of its own instead).
    fn next_read(&mut self, want: i64) -> Option<LocalBoxFuture<'static, Self::Read>>;

    /// Takes in a read's answer: the jobs to queue, or why the read failed (the Scheduler tries
    /// again in a moment). An answer to a read made before a new pass began brings nothing.
    fn took(&mut self, read: Self::Read) -> Result<Vec<Job<Self::Item>>, DbError>;

    /// A read whose answer comes too late to be used (a shutdown began meanwhile).
    fn dropped(&mut self);

    /// Whether every project of the pass has been read.
    fn pass_read(&self) -> bool;

    /// Whether the projects are the fleet's to share, so that a member reads only as many as its
    /// share can work on soon (or its own, read whole).
    fn shared_with_the_fleet(&self) -> bool;

    /// Ends a pass once it was read, dispatched, back and flushed (the analysis: this member's
    /// part of the fleet's pass).
    fn end_pass(&self) -> LocalBoxFuture<'static, Self::PassEnd>;

    /// Takes in what ending the pass brought, and says what follows.
    fn pass_ended(&mut self, end: Self::PassEnd) -> NextPass;

    /// The Scheduler has started.
    fn started(&self) {}

    /// A new pass begins.
    fn start_pass(&mut self) {}

    /// How many projects are left to do, counted in the background for progress and an ETA
    /// (`None`: the source tells it with its status instead).
    fn count(&self) -> LocalBoxFuture<'static, Result<Option<u64>, DbError>>;

    /// How often the source has duties of its own, if it has any.
    fn period(&self) -> Option<Duration> {
        None
    }

    /// The periodic duties, as a future whose answer goes to [`Source::periodic_done`]; none
    /// while one is under way.
    fn periodic(&mut self) -> Option<LocalBoxFuture<'static, Self::Periodic>> {
        None
    }

    /// Takes in what the periodic duties brought; whether a new pass began with them (the
    /// Scheduler then starts one if it was idle).
    fn periodic_done(&mut self, periodic: Self::Periodic) -> bool;

    /// Where the walk is (for the log lines of the start and the first dispatch).
    fn cursor(&self) -> i64;

    /// The source's part of `status`; `unanswered`: the projects this member holds, queued or in
    /// flight.
    fn status(&self, unanswered: u64) -> SourceStatus;
}

/// What follows a pass that has ended and been flushed.
pub enum NextPass {
    /// Walk again at once.
    Now,
    /// Walk again after this long.
    After(Duration),
    /// The run is over.
    Done,
}

/// A source's part of `status`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SourceStatus {
    pub pass: u64,
    /// Every project up to this id has an answer; passes start here.
    pub watermark: i64,
    /// A sweep below the watermark is under way.
    pub sweeping: bool,
    /// Sweeps this process finished.
    pub sweeps: u64,
    /// What is left, when the source knows it better than the Scheduler's count.
    pub remaining: Option<Remaining>,
}

/// The projects left, as a source knows them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Remaining {
    pub left: u64,
    /// From the table statistics, not a count.
    pub estimated: bool,
    /// When they will be done at the pace so far.
    pub eta_s: Option<f64>,
}
