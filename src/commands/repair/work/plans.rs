//! The repair's sink ([`Plans`]): what the Writer buffers and writes for a repair. Plans, each
//! project written in one transaction of its own ([`repair::apply_into`], on [`APPLY_LANES`]
//! connections at once) for `repair apply`, or only collected for `repair plan`; projects that
//! ended failed, reported, never written; and what became of each, the [`Collected`] outcome the
//! command prints at the end. A batch tried again writes nothing twice (the run's claim on each
//! project), so projects written before a failure are kept as written and the rest retried.

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::future::{self, LocalBoxFuture};
use futures_util::FutureExt;
use serde::Serialize;

use crate::db::repair::{self, Written};
use crate::db::Database;
use crate::fence::Fence;
use crate::repair::ProjectPlan;
use crate::work::{within, Sink, WriteError};

/// Connections one batch of plans is applied on at once (each project is a transaction of its
/// own; one connection alone gave about 250 projects/s on the benchmark's machine).
const APPLY_LANES: usize = 4;

/// What the Writer is sent for one candidate.
#[derive(Debug, Clone)]
pub enum PlanRecord {
    /// Its plan, to write (apply) or collect (plan).
    Planned(ProjectPlan),
    /// It could not be planned: reported, nothing written.
    NotPlanned(NotPlanned),
}

/// An apply's run: its id, and the repair lease's renewals, which every write checks.
#[derive(Debug, Clone)]
pub struct Apply {
    pub run_id: i64,
    pub lease: Arc<Fence>,
}

/// Plans, written as an apply run or collected for a plan.
pub struct Plans {
    db: Database,
    /// `None`: a plan, whose plans are collected and never written.
    apply: Option<Apply>,
    collected: Collected,
}

impl Plans {
    pub fn new(db: Database, apply: Option<Apply>) -> Self {
        Self {
            db,
            apply,
            collected: Collected::default(),
        }
    }
}

impl Sink for Plans {
    type Record = PlanRecord;
    type Row = ProjectPlan;
    /// What writing each project did, in a batch written or not.
    type Report = Vec<Written>;
    type Outcome = Collected;

    fn take(&mut self, record: PlanRecord) -> (Option<ProjectPlan>, bool) {
        match record {
            PlanRecord::Planned(plan) => (Some(plan), false),
            // Like a failed analysis: what is buffered is written now.
            PlanRecord::NotPlanned(project) => {
                self.collected.not_planned.push(project);
                (None, true)
            }
        }
    }

    fn write(
        &self,
        plans: Arc<Vec<ProjectPlan>>,
    ) -> LocalBoxFuture<'static, (Result<(), WriteError>, Vec<Written>)> {
        let Some(Apply { run_id, lease }) = self.apply.clone() else {
            return future::ready((Ok(()), Vec::new())).boxed_local();
        };
        let db = self.db.clone();
        async move {
            // Kept outside the timeout: what was written before it struck is told all the same.
            let mut lanes = vec![Vec::new(); APPLY_LANES];
            let result = within(
                plans.len(),
                repair::apply_into(&db, run_id, &lease, &plans, &mut lanes),
            )
            .await;
            (result, lanes.into_iter().flatten().collect())
        }
        .boxed_local()
    }

    fn written(&mut self, written: Vec<Written>) {
        self.collected.written(written);
    }

    /// A plan's flushed plans are collected as they are; an apply's tell what writing them did
    /// instead ([`Sink::written`]).
    fn flushed(&mut self, plans: &[ProjectPlan]) {
        if self.apply.is_none() {
            self.collected.plans.extend_from_slice(plans);
        }
    }

    fn outcome(&mut self) -> Collected {
        std::mem::take(&mut self.collected)
    }
}

/// A project a repair could not plan: the registry failed it on its own account (too many pages,
/// `NAME_INVALID`, trouble or refusals while the registry served others), or planning it
/// panicked too often. Nothing was written for it; `repair apply` again tries it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotPlanned {
    pub project_id: i64,
    pub full_path: String,
    pub reason: String,
}

/// What a repair's Writer handed on: every flushed plan (`repair plan`), what writing each
/// project did (`repair apply`), and the projects that ended failed.
#[derive(Debug, Clone, Default)]
pub struct Collected {
    pub plans: Vec<ProjectPlan>,
    pub written: Vec<Written>,
    pub not_planned: Vec<NotPlanned>,
    /// The projects in `written`.
    written_projects: HashSet<i64>,
}

impl Collected {
    /// Projects written, each counted once. A batch written again (its first write timed out, or
    /// the Writer restarted) answers for the projects its first write committed what that write
    /// did: kept if the first answer was lost on the way (a commit whose reply never came), and
    /// dropped if it was collected then.
    fn written(&mut self, written: Vec<Written>) {
        for project in written {
            if self.written_projects.insert(project.project_id()) {
                self.written.push(project);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repair::guards::Consent;

    fn applied(project_id: i64) -> Written {
        Written::Applied {
            plan: ProjectPlan {
                project_id,
                full_path: format!("g/p{project_id}"),
                repositories: Vec::new(),
                ignored: 0,
                consent: Consent::default(),
            },
            restored: Vec::new(),
            already_present: Vec::new(),
        }
    }

    #[test]
    fn a_project_written_again_is_counted_once_and_a_lost_first_answer_is_made_good() {
        let mut collected = Collected::default();
        // A first write that timed out: project 1's answer came back, project 2 committed but
        // its answer was lost with the timeout.
        collected.written(vec![applied(1)]);
        // The batch written again answers for both (read back), and for 3, written now.
        collected.written(vec![applied(1), applied(2), applied(3)]);
        let ids: Vec<i64> = collected.written.iter().map(Written::project_id).collect();
        assert_eq!(ids, vec![1, 2, 3]);
    }
}
