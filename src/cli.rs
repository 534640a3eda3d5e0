//! The command line: parses arguments, loads the settings, hands them to one command
//! ([`crate::commands`]), and turns its outcome into an exit status (0 success, 2 bad usage or
//! configuration, 3 stopped before the end, 1 anything else).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::analysis::Analysis;
use crate::commands::{self, repair::RepairCommand};
use crate::config::{ConfigError, Settings};
use crate::db::repair::RepairError;
use crate::db::report::RepositoryFilter;
use crate::demo::{DEMO_DATABASE, DEMO_PROJECTS};
use crate::registry::ClientSetupError;
use crate::report::{Listing, ReportFormat};
use crate::service::StartError;

#[derive(Debug, Parser)]
#[command(
    name = "registry-repair",
    version,
    about = "Finds container registry repositories that GitLab's database has lost",
    long_about = "Finds container registry repositories that GitLab's database has lost.\n\n\
        Configuration: built-in defaults, then --config FILE (TOML), then \
        REGISTRY_REPAIR__{SECTION}__{KEY} environment variables, later winning."
)]
pub struct Cli {
    /// TOML configuration file
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or update the tracking table (idempotent; safe where GitLab already created it)
    Migrate,
    /// Run the service: analyse every project without a row, keep looking for new ones, serve the admin API
    Run {
        /// Exit 0 once every project has a row and everything is flushed
        #[arg(long)]
        until_done: bool,
        /// First analyse again the projects recorded `failed`, and update their rows
        #[arg(long)]
        retry_failed: bool,
        /// Forget the watermark and walk every project from the first (after tracking rows were
        /// deleted by hand, for example)
        #[arg(long)]
        from_start: bool,
    },
    /// Print totals, the projects and namespaces missing most (by count and by bytes), when the
    /// missing repositories were created and the failed projects with why; --repositories lists
    /// the missing repositories
    Report {
        /// Output format
        #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
        format: ReportFormat,
        /// How many projects to list in each ranking (most missing repositories, most missing
        /// bytes) and of the failed projects
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(0..=1_000_000), conflicts_with = "repositories")]
        top: u32,
        /// List only projects with at least this many missing repositories
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=1_000_000), conflicts_with = "repositories")]
        min_missing: i32,
        /// How many top-level namespaces to list in each ranking (0: none)
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=1_000_000), conflicts_with = "repositories")]
        namespaces: u32,
        /// List the missing repositories themselves (project, registry path, created, size), in
        /// registry path order, instead of the summary; table, json or csv
        #[arg(long)]
        repositories: bool,
        /// With --repositories: only this project (repeatable)
        #[arg(long = "project", value_name = "ID", value_parser = clap::value_parser!(i64).range(1..), requires = "repositories")]
        projects: Vec<i64>,
        /// With --repositories: only projects in this group or user namespace, top-level or
        /// nested, and below it (case-insensitive)
        #[arg(long, value_name = "PATH", requires = "repositories")]
        namespace: Option<String>,
        /// With --repositories: list at most N (default 1000; 0: all)
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(0..=i64::MAX as u64), requires = "repositories")]
        limit: Option<u64>,
    },
    /// Show the running service's state (through its admin API)
    Status {
        /// Print the raw JSON
        #[arg(long)]
        json: bool,
    },
    /// Tell the running service to keep at most N projects in flight (0 pauses)
    Concurrency {
        /// The new maximum, 0 or more
        #[arg(value_parser = clap::value_parser!(u32))]
        n: u32,
    },
    /// Switch the running service's feature flag off: in-flight projects finish, no new ones start
    Pause,
    /// Switch the running service's feature flag back on
    Resume,
    /// Restore the missing rows: plan (dry run), apply, verify, undo, runs
    Repair {
        #[command(subcommand)]
        command: RepairCommand,
    },
    /// First run: seed a throwaway GitLab-shaped database, simulate a registry, analyse, report,
    /// plan the repair (needs the `simulator` feature, on by default)
    Demo {
        /// Projects to seed (at least 20: room for every special case)
        #[arg(long, default_value_t = DEMO_PROJECTS, value_parser = clap::value_parser!(u32).range(20..=1_000_000))]
        projects: u32,
        /// Name of the throwaway database on the configured server: created and marked as the
        /// demo's, or dropped and re-created if the demo made it; any other database is refused
        #[arg(long, default_value = DEMO_DATABASE)]
        database: String,
        /// Afterwards, keep the simulated registry, the database and a `run` serving until
        /// SIGTERM or Ctrl-C, to practise the repair on (prints the settings to use)
        #[arg(long)]
        serve: bool,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse().and_then(Cli::checked) {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version land here too, with exit status 0.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match execute(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("registry-repair: {error:#}");
            ExitCode::from(exit_status(&error))
        }
    }
}

/// How many repositories `report --repositories` lists without `--limit`.
const REPOSITORIES_LIMIT: u64 = 1000;

impl Cli {
    /// The combinations clap cannot say are wrong.
    fn checked(self) -> Result<Self, clap::Error> {
        use clap::CommandFactory as _;
        if let Command::Report {
            format: ReportFormat::Html,
            repositories: true,
            ..
        } = self.command
        {
            return Err(Self::command().error(
                clap::error::ErrorKind::ArgumentConflict,
                "--repositories lists as table, json or csv; --format html is the summary page \
                 (drop --repositories for it)",
            ));
        }
        Ok(self)
    }
}

/// 2 for anything the operator must fix in the configuration or arguments, 3 for a command
/// that stopped before its end (run it again to finish), 1 otherwise.
pub fn exit_status(error: &anyhow::Error) -> u8 {
    if error
        .chain()
        .any(|cause| cause.is::<commands::Unfinished>())
    {
        return 3;
    }
    let config_error = error.chain().any(|cause| {
        cause.is::<ConfigError>()
            || matches!(
                cause.downcast_ref::<StartError>(),
                Some(StartError::Config(_))
            )
            || matches!(
                cause.downcast_ref::<ClientSetupError>(),
                Some(ClientSetupError::Config(_))
            )
            // A run named on the command line that does not exist, or cannot be undone.
            || matches!(
                cause.downcast_ref::<RepairError>(),
                Some(
                    RepairError::UnknownRun(_)
                        | RepairError::NotAnApplyRun { .. }
                        | RepairError::UnknownNamespace(_)
                )
            )
    });
    if config_error {
        2
    } else {
        1
    }
}

fn execute(cli: Cli) -> anyhow::Result<()> {
    let settings = Settings::load(cli.config.as_deref())?;
    if let Ok(filter) = std::env::var("RUST_LOG") {
        // It wins over log.level: checked as strictly.
        crate::config::log_filter("RUST_LOG", filter)?;
    }
    let mut log = settings.log.clone();
    if matches!(cli.command, Command::Demo { .. }) && log.level == "info" {
        // The demo prints its own story; the service's info lines would drown it.
        log.level = "warn".into();
    }
    crate::telemetry::init(&log);
    match cli.command {
        Command::Migrate => commands::migrate::execute(&settings),
        Command::Run {
            until_done,
            retry_failed,
            from_start,
        } => {
            let analysis = Analysis {
                until_done,
                retry_failed,
                from_start,
                ..Analysis::new(&settings)
            };
            commands::run::execute(settings, analysis)
        }
        Command::Report {
            format,
            top,
            min_missing,
            namespaces,
            repositories,
            projects,
            namespace,
            limit,
        } => {
            if repositories {
                commands::report::repositories(
                    &settings,
                    format,
                    RepositoryFilter {
                        projects,
                        namespace,
                        limit: match limit.unwrap_or(REPOSITORIES_LIMIT) {
                            0 => None,
                            n => Some(i64::try_from(n).unwrap_or(i64::MAX)),
                        },
                    },
                )
            } else {
                commands::report::execute(
                    &settings,
                    format,
                    Listing {
                        top: i64::from(top),
                        min_missing,
                        namespaces: i64::from(namespaces),
                    },
                )
            }
        }
        Command::Status { json } => commands::control::status(&settings, json),
        Command::Concurrency { n } => commands::control::concurrency(&settings, n),
        Command::Pause => commands::control::set_enabled(&settings, false),
        Command::Resume => commands::control::set_enabled(&settings, true),
        Command::Repair { command } => commands::repair::execute(&settings, command),
        #[cfg(feature = "simulator")]
        Command::Demo {
            projects,
            database,
            serve,
        } => commands::demo::execute(&settings, projects, &database, serve),
        #[cfg(not(feature = "simulator"))]
        Command::Demo { .. } => Err(anyhow::anyhow!(
            "this registry-repair was built without the `simulator` feature, which `demo` needs \
             (a default `cargo build` has it)"
        )),
    }
}
