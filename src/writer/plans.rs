//! What the Writer receives and keeps for a repair (`repair plan`, `repair apply`): plans to write
//! (or, for a plan, only to collect), projects that ended failed (reported, never written), and
//! what became of each: the [`Collected`] outcome the command prints at the end.

use std::collections::HashSet;

use actix::prelude::*;
use serde::Serialize;

use super::Sink;
use super::Writer;
use crate::db::repair::Written;
use crate::repair::ProjectPlan;

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
    /// A flushed batch of plans: collected as they are for a plan; for an apply, what writing
    /// them did arrives through [`Collected::written`] instead.
    pub(super) fn flushed(&mut self, sink: &Sink, plans: &[ProjectPlan]) {
        if *sink == Sink::CollectPlans {
            self.plans.extend_from_slice(plans);
        }
    }

    /// Projects written, each counted once. A batch written again (its first write timed out, or
    /// the Writer restarted) answers for the projects its first write committed what that write
    /// did: kept if the first answer was lost on the way (a commit whose reply never came), and
    /// dropped if it was collected then.
    pub(super) fn written(&mut self, written: Vec<Written>) {
        for project in written {
            if self.written_projects.insert(project.project_id()) {
                self.written.push(project);
            }
        }
    }
}

/// One project's repair plan.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct RecordPlan(pub ProjectPlan);

impl Handler<RecordPlan> for Writer {
    type Result = ();

    fn handle(&mut self, RecordPlan(plan): RecordPlan, ctx: &mut Context<Self>) {
        self.guarded(ctx, "recording a plan", |act, ctx| {
            act.buffer.plans.push(plan);
            act.buffered(false, ctx);
        });
    }
}

/// A project a repair could not plan; nothing is written for it.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct RecordNotPlanned(pub NotPlanned);

impl Handler<RecordNotPlanned> for Writer {
    type Result = ();

    fn handle(&mut self, RecordNotPlanned(project): RecordNotPlanned, ctx: &mut Context<Self>) {
        self.guarded(ctx, "recording a project not planned", |act, ctx| {
            act.collected.not_planned.push(project);
            // Like a failed analysis: what is buffered is written now.
            act.buffered(true, ctx);
        });
    }
}

/// Hand over what was collected (once the run has ended and the last flush is done).
#[derive(Message)]
#[rtype(result = "Collected")]
pub struct TakeCollected;

impl Handler<TakeCollected> for Writer {
    type Result = MessageResult<TakeCollected>;

    fn handle(&mut self, _msg: TakeCollected, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(std::mem::take(&mut self.collected))
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
