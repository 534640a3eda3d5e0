//! The analysis (`run`): the [`Work`] that finds, for every project without a tracking row, the
//! container repositories the registry holds and GitLab's database has no row for, and records a
//! tracking row for each project. Pass after pass, so that new projects are picked up.
//!
//! - `passes.rs`, its source ([`Passes`]): this member's part of the fleet's passes (the walk
//!   above the watermark, the sweep below it, the retry of failed projects), with the watermark.
//! - `listing.rs`, its step ([`analyze`]): the project's pages in the registry, one database
//!   lookup per page, and the sizes of what is missing.
//! - `tracking.rs`, its sink ([`Tracking`]): the tracking rows, a bulk upsert per batch.

mod listing;
mod passes;
mod tracking;

use std::sync::Arc;

pub use self::listing::{analyze, Listed};
use self::passes::PassSettings;
pub use self::passes::Passes;
use self::tracking::Found;
pub use self::tracking::Tracking;
use crate::config::{Settings, Shard};
use crate::db::failures::Failure;
use crate::db::fleet::{claims, Member};
use crate::db::tracking::{Replaces, TrackingRow};
use crate::db::{watermark, Database, DbError};
use crate::registry::RegistryClient;
use crate::work::{Job, Step, Tally, Work, WorkName};

/// The analysis, as `run` asks for it.
#[derive(Debug, Clone)]
pub struct Analysis {
    /// Stop once every project has a row and everything is flushed (`--until-done`).
    pub until_done: bool,
    /// Analyse the projects recorded `failed` again first (`--retry-failed`).
    pub retry_failed: bool,
    /// Forget the watermark and walk from the first project (`--from-start`).
    pub from_start: bool,
    /// Ask the size of every missing repository (`analysis.sizes`).
    pub sizes: bool,
}

impl Analysis {
    /// The analysis as the settings have it: pass after pass, from the watermark.
    pub fn new(settings: &Settings) -> Self {
        Self {
            until_done: false,
            retry_failed: false,
            from_start: false,
            sizes: settings.analysis.sizes,
        }
    }
}

impl Work for Analysis {
    type Item = Replaces;
    type Found = Listed;
    type Source = Passes;
    type Sink = Tracking;

    const STEP: &'static str = "analysing";

    fn name(&self) -> WorkName {
        WorkName::Analysis
    }

    /// The fleet's pass and the watermark (both forgotten with `--from-start`), the failed
    /// projects to retry, a sweep when one is due, the projects to itemise.
    async fn open(
        &self,
        settings: &Settings,
        db: &Database,
        member: &Arc<Member>,
    ) -> Result<Passes, DbError> {
        let shard = settings.worker.shard;
        if self.from_start {
            watermark::reset(db, shard).await?;
            claims::reset(db, shard).await?;
        }
        let (watermark, _) = watermark::load(db, shard).await?;
        claims::ensure_pass(db, shard, watermark).await?;
        if self.retry_failed {
            claims::start_retry_failed(db, shard).await?;
        }
        claims::start_sweep_if_due(db, shard, settings.worker.sweep_interval).await?;
        itemise_if_needed(db, shard).await?;
        Ok(Passes::new(
            db.clone(),
            PassSettings {
                member: member.clone(),
                watermark,
                until_done: self.until_done,
                rescan_interval: settings.worker.rescan_interval,
                sweep_interval: settings.worker.sweep_interval,
            },
        ))
    }

    fn sink(&self, db: &Database) -> Tracking {
        Tracking::new(db.clone())
    }

    async fn step(
        &self,
        registry: &RegistryClient,
        db: &Database,
        job: &Job<Replaces>,
    ) -> Step<Listed> {
        analyze(registry, db, &job.project, job.token.clone(), self.sizes).await
    }

    fn done(&self, job: &Job<Replaces>, listed: Listed) -> (TrackingRow, Tally) {
        let project_id = job.project.id;
        match listed {
            Listed::Completed {
                missing,
                ignored,
                pages,
            } => {
                tracing::debug!(
                    project_id,
                    missing = missing.len(),
                    ignored,
                    pages,
                    "project analysed"
                );
                let found = Found::of(&missing);
                let row = TrackingRow::completed_with(project_id, missing).replacing(job.item);
                let tally = Tally {
                    missing: u64::try_from(row.missing_count).unwrap_or(0),
                    missing_bytes: found.bytes,
                    sizes_unknown: found.sizes_unknown,
                    ignored,
                    ..Tally::default()
                };
                (row, tally)
            }
            Listed::Unaddressable => {
                tracing::info!(
                    project_id,
                    path = job.project.full_path.as_deref().unwrap_or_default(),
                    "the registry cannot hold repositories under this path; recorded with 0 missing"
                );
                let row = TrackingRow::completed(project_id, 0).replacing(job.item);
                let tally = Tally {
                    unaddressable: true,
                    ..Tally::default()
                };
                (row, tally)
            }
        }
    }

    /// A `failed` row, with why.
    fn failed(&self, job: &Job<Replaces>, failure: Failure) -> TrackingRow {
        TrackingRow::failed(job.project.id, failure).replacing(job.item)
    }
}

/// Projects counted without their repositories (by a release before they were kept) are analysed
/// again, in the fleet's pass, to itemise them: the registry is asked for those alone.
async fn itemise_if_needed(db: &Database, shard: Shard) -> Result<(), DbError> {
    let uncounted = claims::start_itemise_if_needed(db, shard).await?;
    if uncounted > 0 {
        tracing::info!(
            projects = uncounted,
            "projects counted without their repositories (by an earlier release): listing them again to itemise them"
        );
    }
    Ok(())
}
