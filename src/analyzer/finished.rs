//! What an Analyzer tells the Scheduler when it is done with a project: the event it emits, through
//! the `Recipient<AnalyzerFinished>` it was started with. Defined here, by its sender, so that
//! the Analyzer needs nothing of the Scheduler.

use actix::prelude::*;

use crate::registry::RegistryError;
use crate::work::{Job, StepError, Tally};

/// What became of a project an Analyzer was given.
#[derive(Debug)]
pub enum Disposition<I> {
    /// Its record went to the Writer (the step's result, or its failure); `Tally` is what it
    /// counts for.
    Recorded(Tally),
    /// It could not be done for a reason outside it; do it again later.
    /// `others_served`: the registry refused it but answered the canary right after.
    Deferred {
        job: Job<I>,
        reason: StepError,
        others_served: bool,
    },
    /// 5xx, timeouts or broken answers; do it again later. `others_served`: the registry
    /// answered for another project right after, so this was the project's trouble alone.
    Troubled {
        job: Job<I>,
        reason: RegistryError,
        others_served: bool,
    },
    /// The Analyzer panicked on it and was restarted; do it again.
    Crashed(Job<I>),
    /// This process's hold on its work lapsed while it ran ([`crate::fence`]): nothing of it
    /// counts; it goes back as it was.
    Fenced(Job<I>),
    /// The Analyzer panicked on it once too often; it was recorded failed.
    CrashedForGood,
}

/// An Analyzer is done with a project: it is free again, and this is what became of it.
#[derive(Debug)]
pub struct AnalyzerFinished<I> {
    pub analyzer: usize,
    pub project_id: i64,
    pub disposition: Disposition<I>,
}

impl<I: 'static> Message for AnalyzerFinished<I> {
    type Result = ();
}
