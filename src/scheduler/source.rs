//! Where the Scheduler's projects come from, as one enum it asks: the analysis' passes over the
//! projects without a tracking row ([`Passes`], `walk.rs`), or a repair's one pass over its
//! candidates ([`Candidates`], `candidates.rs`). Each keeps its own cursor and state; the
//! Scheduler only asks for the next read, hands back what it brought, and asks what follows the
//! end of a pass. Neither needs the actor: a read is a future the Scheduler runs.

use std::time::Duration;

use futures_util::future::{self, BoxFuture};
use futures_util::FutureExt;

use super::candidates::Candidates;
use super::read::{NextPass, Read, Reading};
use super::walk::{PartEnd, Passes, Periodic};
use super::ServiceStatus;
use crate::analyzer::Job;
use crate::db::DbError;

/// What the end of a pass brought the source.
pub enum Ended {
    Analysis(PartEnd),
    Repair,
}

/// Where the projects come from.
pub enum Source {
    /// `run`: pass after pass over the projects without a tracking row.
    Analysis(Passes),
    /// `repair plan` / `repair apply`: one pass over the candidates in scope.
    Repair(Candidates),
}

impl Source {
    /// The next read to make, when one is due and none is under way.
    /// `want`: how many projects the analysis asks for (a repair reads its candidates in pages
    /// of its own).
    pub fn next_read(&mut self, want: i64) -> Option<Reading> {
        match self {
            Source::Analysis(passes) => passes.next_read(want),
            Source::Repair(candidates) => candidates.next_read(),
        }
    }

    /// Whether the projects come from the fleet's shared passes, which a member reads only as
    /// far as its share can work on them soon (a repair's candidates are its own).
    pub fn shared_with_the_fleet(&self) -> bool {
        matches!(self, Source::Analysis(_))
    }

    /// Takes in a read's answer: the jobs to queue, or why the read failed (the Scheduler tries
    /// again in a moment). An answer to a read made before a new pass began brings nothing.
    pub fn took(&mut self, read: Read) -> Result<Vec<Job>, DbError> {
        match self {
            Source::Analysis(passes) => passes.took(read),
            Source::Repair(candidates) => candidates.took(read),
        }
    }

    /// A read whose answer comes too late to be used (a shutdown began meanwhile).
    pub fn dropped(&mut self) {
        match self {
            Source::Analysis(passes) => passes.dropped(),
            Source::Repair(candidates) => candidates.dropped(),
        }
    }

    /// Whether every project of the pass has been read.
    pub fn pass_read(&self) -> bool {
        match self {
            Source::Analysis(passes) => passes.pass_read(),
            Source::Repair(candidates) => candidates.pass_read(),
        }
    }

    /// What to do once a pass is read, dispatched, back and flushed, before deciding what
    /// follows: the analysis ends this member's part of the fleet's pass (see [`Ended`]).
    pub fn after_flush(&self) -> BoxFuture<'static, Ended> {
        match self {
            Source::Analysis(passes) => passes.end_part().map(Ended::Analysis).boxed(),
            Source::Repair(_) => future::ready(Ended::Repair).boxed(),
        }
    }

    /// Takes in what [`Source::after_flush`] brought.
    pub fn ended(&mut self, ended: Ended) {
        if let (Source::Analysis(passes), Ended::Analysis(end)) = (self, ended) {
            passes.part_ended(end);
        }
    }

    /// What follows the pass that just ended.
    pub fn next_pass(&mut self) -> NextPass {
        match self {
            Source::Analysis(passes) => passes.next_pass(),
            Source::Repair(_) => NextPass::Done,
        }
    }

    /// The Scheduler has started: the analysis takes its first fence for the watermark.
    pub fn started(&self) {
        if let Source::Analysis(passes) = self {
            passes.take_fence();
        }
    }

    /// A new pass begins.
    pub fn start_pass(&mut self) {
        if let Source::Analysis(passes) = self {
            passes.start_pass();
        }
    }

    /// How many projects are left to do, counted in the background for progress and an ETA; the
    /// analysis counts for the whole fleet and brings the count with its reads (`None` here).
    pub fn count(&self) -> BoxFuture<'static, Result<Option<u64>, DbError>> {
        match self {
            Source::Analysis(passes) => passes.count(),
            Source::Repair(candidates) => candidates.count(),
        }
    }

    /// How often the source has duties of its own (the analysis: its watermark and its sweep).
    pub fn period(&self) -> Option<Duration> {
        match self {
            Source::Analysis(_) => Some(super::walk::WATERMARK_INTERVAL),
            Source::Repair(_) => None,
        }
    }

    /// The periodic duties (the analysis: the watermark moved up, a sweep started when due), as
    /// a future whose answer goes to [`Source::periodic_done`]; none while one is under way.
    pub fn periodic(&mut self) -> Option<BoxFuture<'static, Periodic>> {
        match self {
            Source::Analysis(passes) => passes.periodic(),
            Source::Repair(_) => None,
        }
    }

    /// Takes in what the periodic duties brought; whether a sweep began (the Scheduler then
    /// starts a pass if it was idle).
    pub fn periodic_done(&mut self, periodic: Periodic) -> bool {
        if let Source::Analysis(passes) = self {
            passes.periodic_done(&periodic);
        }
        periodic.swept
    }

    /// Where the walk is (for the log line of the first dispatch).
    pub fn cursor(&self) -> i64 {
        match self {
            Source::Analysis(passes) => passes.cursor(),
            Source::Repair(candidates) => candidates.cursor(),
        }
    }

    /// The source's part of `status`.
    pub fn status(&self, status: &mut ServiceStatus) {
        match self {
            Source::Analysis(passes) => passes.status(status),
            Source::Repair(candidates) => candidates.status(status),
        }
    }
}
