//! What an Analyzer tells the Scheduler when it is done with a project: the event it emits, through
//! the `Recipient<AnalyzerFinished>` it was started with. Defined here, by its sender, so that
//! the Analyzer needs nothing of the Scheduler.

use actix::prelude::*;

use super::{AnalysisError, Job};
use crate::db::missing::MissingRepository;
use crate::db::tracking::TrackingRow;
use crate::registry::RegistryError;

/// What became of a project an Analyzer was given.
#[derive(Debug)]
pub enum Disposition {
    /// Its result went to the Writer; `row` is that result without its missing repositories,
    /// which only the Writer needs, and `found` what they weigh; `ignored` registry entries were
    /// outside its path; `unaddressable`: its path breaks the registry's name grammar, so nothing
    /// was asked.
    Recorded {
        row: TrackingRow,
        found: Found,
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
    /// This process's hold on its work lapsed while it ran ([`crate::fence`]): nothing of it
    /// counts; it goes back as it was.
    Fenced(Job),
    /// The Analyzer panicked on it once too often; it was recorded `failed` (a repair: reported
    /// failed, nothing written).
    CrashedForGood,
    /// A repair's plan went to the Writer; `ignored` registry entries were outside its path.
    Planned { ignored: u32, repositories: usize },
    /// A repair could not plan the project on its own account: reported failed, nothing written.
    NotPlanned,
}

/// The sizes of a recorded row's missing repositories, for the status' counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Found {
    /// Their known sizes, summed.
    pub bytes: u64,
    /// How many have no known size.
    pub sizes_unknown: u64,
}

impl Found {
    pub fn of(repositories: &[MissingRepository]) -> Self {
        repositories
            .iter()
            .fold(Self::default(), |found, r| match r.size_bytes {
                Some(bytes) => Self {
                    bytes: found.bytes + u64::try_from(bytes).unwrap_or(0),
                    ..found
                },
                None => Self {
                    sizes_unknown: found.sizes_unknown + 1,
                    ..found
                },
            })
    }
}

#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct AnalyzerFinished {
    pub analyzer: usize,
    pub project_id: i64,
    pub disposition: Disposition,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn found_sums_the_known_sizes_and_counts_the_unknown() {
        let repository = |size_bytes| MissingRepository {
            registry_path: "g/p/x".into(),
            name: "x".into(),
            registry_created_at: None,
            size_bytes,
        };
        assert_eq!(
            Found::of(&[repository(Some(5)), repository(None), repository(Some(7))]),
            Found {
                bytes: 12,
                sizes_unknown: 1
            }
        );
        assert_eq!(Found::of(&[]), Found::default());
    }
}
