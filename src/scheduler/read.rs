//! What a source's reads bring back, and what follows a pass: the words the Scheduler and its
//! sources (`walk.rs`, `candidates.rs`) share.

use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::analyzer::Job;
use crate::db::fleet::claims;
use crate::db::DbError;

/// A read from the database, under way.
pub type Reading = BoxFuture<'static, Read>;

/// What a read brought back, for the source that asked for it.
pub struct Read {
    pub took: Duration,
    pub(super) kind: ReadKind,
}

/// Which read it was, with its answer.
pub(super) enum ReadKind {
    /// The next `want` projects after `after`.
    Walk {
        after: i64,
        want: i64,
        result: Result<Batch, DbError>,
    },
    /// The next claim on the fleet's cursors (the analysis), with how far the fleet's pass is.
    Claim(Result<claims::Read, DbError>),
}

/// A page of the walk: how many rows were read, the last id, and the jobs made of them (fewer
/// when a project was deleted meanwhile).
pub(super) struct Batch {
    pub read: u64,
    pub last: Option<i64>,
    pub jobs: Vec<Job>,
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
