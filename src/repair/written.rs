//! What writing one project's plan did: the rows inserted, the names found present, or why
//! nothing was written. The database side returns it ([`crate::db::repair::apply_project`]); the
//! outcome the commands print is made of it ([`super::output`]).

use serde::Serialize;

use super::guards::ProjectPlan;

/// A row an apply inserted into `container_repositories`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestoredRow {
    /// `container_repositories.id`.
    pub repository_id: i64,
    pub name: String,
}

/// What writing one project's plan did. A batch written again (after a timeout, or a Writer
/// restarted in the middle of it) answers for a project this run wrote already what that write
/// did, read back from the run's tables: nothing is written twice, and nothing is left uncounted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Written {
    /// The plan as written (write-time guards may have held back more), the rows inserted, and
    /// the names a planned restore found present (Rails made them meanwhile).
    Applied {
        plan: ProjectPlan,
        restored: Vec<RestoredRow>,
        already_present: Vec<String>,
    },
    /// The project's route was no longer the path it was listed under: nothing was written for it
    /// and its tracking row is as it was. Every record of `plan` is a `path_changed` skip; `now`
    /// is the route found at write time (`None`: no route).
    PathChanged {
        plan: ProjectPlan,
        now: Option<String>,
    },
    /// The project no longer exists: nothing was written.
    ProjectGone { project_id: i64 },
}

impl Written {
    pub fn project_id(&self) -> i64 {
        match self {
            Written::Applied { plan, .. } | Written::PathChanged { plan, .. } => plan.project_id,
            Written::ProjectGone { project_id } => *project_id,
        }
    }
}
