//! The `repair` subcommands, one per file: `plan` and `apply` ([`plan`]), `verify RUN`
//! ([`verify`]), `undo RUN` ([`undo`]) and `runs` ([`runs`]). Each reads the same configuration as
//! the other commands (`--config`) and refuses a database the repair's migration has not reached.
//! `apply` and `undo` hold the repair lease while they run ([`lease`]): one at a time. `plan` and
//! `apply` run the repair's [`work`] on the service's pipeline.

pub mod lease;
pub mod plan;
pub mod runs;
pub mod undo;
pub mod verify;
pub mod work;

use clap::{Args, Subcommand};

use crate::config::Settings;
use crate::db::repair::{self, Scope};
use crate::db::Database;
use crate::format::Format;
use crate::repair::guards::Consent;
use crate::service::AdminApi;

#[derive(Debug, Subcommand)]
pub enum RepairCommand {
    /// Dry run: list the registry again for the projects with missing repositories and print what
    /// `apply` would restore, skip or leave for review, and why. Writes nothing.
    Plan(PlanArgs),
    /// Restore the missing rows (each project in one transaction), recorded as a run that `undo`
    /// can take back.
    Apply(PlanArgs),
    /// List the registry again for a run's projects; exit 1 if a repository the run did not skip
    /// still has no row, or a row it restored names nothing the registry holds.
    Verify {
        /// The apply run's id (`repair runs`)
        #[arg(value_name = "RUN")]
        run: i64,
    },
    /// Delete the rows an apply run restored that GitLab has not touched since; list the others.
    Undo {
        /// The apply run's id (`repair runs`)
        #[arg(value_name = "RUN")]
        run: i64,
    },
    /// List the apply and undo runs with their counts.
    Runs {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

#[derive(Debug, Clone, Args)]
pub struct PlanArgs {
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Only this project (repeatable)
    #[arg(long = "project", value_name = "ID", value_parser = clap::value_parser!(i64).range(1..))]
    pub projects: Vec<i64>,
    /// Only projects in this group or user namespace and everything below it
    #[arg(long, value_name = "PATH")]
    pub namespace: Option<String>,
    /// At most N projects
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    /// Restore repositories the registry created before their project (review reason
    /// `older_than_project`)
    #[arg(long)]
    pub include_older: bool,
    /// Restore repositories the registry created before their project moved to its path by a
    /// rename or transfer (review reason `older_than_path`)
    #[arg(long)]
    pub include_older_than_path: bool,
    /// Restore in projects whose cleanup policy is enabled, whose next run may delete the
    /// restored tags (review reason `cleanup_policy_enabled`)
    #[arg(long)]
    pub include_cleanup_policy: bool,
    /// Serve the admin API (status, concurrency, pause, resume) while it runs: on ADDR, or on
    /// admin.listen without one. None by default, so that it runs beside `run`.
    #[arg(long, value_name = "ADDR", num_args = 0..=1)]
    pub admin: Option<Option<std::net::SocketAddr>>,
}

impl PlanArgs {
    /// Where the admin API is served, if asked.
    pub fn admin_api(&self) -> AdminApi {
        match self.admin {
            None => AdminApi::Off,
            Some(None) => AdminApi::Listen,
            Some(Some(addr)) => AdminApi::At(addr),
        }
    }

    pub fn scope(&self) -> Scope {
        Scope {
            projects: self.projects.clone(),
            namespace: self.namespace.clone(),
            limit: self.limit,
            consent: Consent {
                older_than_project: self.include_older,
                older_than_path: self.include_older_than_path,
                cleanup_policy: self.include_cleanup_policy,
            },
        }
    }
}

/// Runs one `repair` subcommand, inside an actix System (`plan` and `apply` run the service's
/// actors).
pub fn execute(settings: &Settings, command: RepairCommand) -> anyhow::Result<()> {
    actix_rt::System::new().block_on(async {
        let db = Database::for_settings(settings, settings.database.pool_size)?;
        db.check_ready().await?;
        repair::check_ready(&db).await?;
        match command {
            RepairCommand::Plan(args) => {
                plan::execute(settings, &db, &args, plan::Mode::Plan).await
            }
            RepairCommand::Apply(args) => {
                repair::check_primary(&db).await?;
                plan::execute(settings, &db, &args, plan::Mode::Apply).await
            }
            RepairCommand::Verify { run } => verify::execute(settings, &db, run).await,
            RepairCommand::Undo { run } => {
                repair::check_primary(&db).await?;
                undo::execute(&db, run).await
            }
            RepairCommand::Runs { format } => runs::execute(&db, format).await,
        }
    })
}
