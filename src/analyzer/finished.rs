//! What an Analyzer tells the Scheduler when it is done with a project: the event it emits, through
//! the `Recipient<AnalyzerFinished>` it was started with. Defined here, by its sender, so that
//! the Analyzer needs nothing of the Scheduler.

use actix::prelude::*;

use super::{AnalysisError, Job};
use crate::db::tracking::TrackingRow;
use crate::registry::RegistryError;

/// What became of a project an Analyzer was given.
#[derive(Debug)]
pub enum Disposition {
    /// Its result went to the Writer; `ignored` registry entries were outside its path;
    /// `unaddressable`: its path breaks the registry's name grammar, so nothing was asked.
    Recorded {
        row: TrackingRow,
        ignored: u32,
        unaddressable: bool,
    },
    /// It could not be analysed for a reason outside it; analyse it again later.
    /// `others_served`: the registry refused it but answered the canary right after.
    Deferred {
        job: Job,
        reason: AnalysisError,
        others_served: bool,
    },
    /// 5xx, timeouts or broken answers; analyse it again later. `others_served`: the registry
    /// answered for another project right after, so this was the project's trouble alone.
    Troubled {
        job: Job,
        reason: RegistryError,
        others_served: bool,
    },
    /// The Analyzer panicked on it and was restarted; analyse it again.
    Crashed(Job),
    /// The Analyzer panicked on it once too often; it was recorded `failed` (a repair: reported
    /// failed, nothing written).
    CrashedForGood,
    /// A repair's plan went to the Writer; `ignored` registry entries were outside its path.
    Planned { ignored: u32, repositories: usize },
    /// A repair could not plan the project on its own account: reported failed, nothing written.
    NotPlanned,
}

#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct AnalyzerFinished {
    pub analyzer: usize,
    pub project_id: i64,
    pub disposition: Disposition,
}
