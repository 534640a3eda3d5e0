//! The command line: parses arguments, loads configuration, runs one command, and turns its outcome
//! into an exit status (0 success, 2 bad usage or configuration, 1 anything else).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, Context as _};
use clap::{Parser, Subcommand};

use crate::admin::AdminClient;
use crate::config::{ConfigError, Settings};
use crate::db::{self, Database};
use crate::registry::TokenSigner;
use crate::report::{Format, Listing, Report};
use crate::scheduler::{RunEnd, ServiceStatus};
use crate::service::{self, ServiceOptions};
use crate::signals::Signals;

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
    /// Print totals and the projects with the most missing repositories
    Report {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// How many projects to list, most missing first
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
        top: u32,
        /// List only projects with at least this many missing repositories
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=1_000_000))]
        min_missing: i32,
        /// How many top-level namespaces to list, most missing first (0: none)
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
        namespaces: u32,
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
        command: crate::repair::cli::RepairCommand,
    },
    /// First run: seed a throwaway GitLab-shaped database, simulate a registry, analyse, report
    /// (needs the `simulator` feature, on by default)
    Demo {
        /// Projects to seed
        #[arg(long, default_value_t = 3000, value_parser = clap::value_parser!(u32).range(10..=1_000_000))]
        projects: u32,
        /// Name of the throwaway database (dropped and re-created on the configured server)
        #[arg(long, default_value = "registry_repair_demo")]
        database: String,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
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

/// 2 for anything the operator must fix in the configuration or arguments, 1 otherwise.
pub fn exit_status(error: &anyhow::Error) -> u8 {
    let config_error = error.chain().any(|cause| {
        cause.is::<ConfigError>()
            || matches!(
                cause.downcast_ref::<service::StartError>(),
                Some(service::StartError::Config(_))
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
    let mut log = settings.log.clone();
    if matches!(cli.command, Command::Demo { .. }) && log.level == "info" {
        // The demo prints its own story; the service's info lines would drown it.
        log.level = "warn".into();
    }
    crate::telemetry::init(&log);
    match cli.command {
        Command::Migrate => migrate(&settings),
        // Test builds (feature `faults`) give `ServiceOptions` one more field.
        #[cfg_attr(not(feature = "faults"), allow(clippy::needless_update))]
        Command::Run {
            until_done,
            retry_failed,
            from_start,
        } => run(
            settings,
            ServiceOptions {
                until_done,
                retry_failed,
                from_start,
                ..ServiceOptions::default()
            },
        ),
        Command::Report {
            format,
            top,
            min_missing,
            namespaces,
        } => report(
            &settings,
            format,
            Listing {
                top: i64::from(top),
                min_missing,
                namespaces: i64::from(namespaces),
            },
        ),
        Command::Status { json } => control(&settings, |client| async move {
            let status = client.status().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print_status(&status);
            }
            Ok(())
        }),
        Command::Concurrency { n } => control(&settings, |client| async move {
            let status = client.set_concurrency(i64::from(n)).await?;
            println!(
                "max_concurrency is now {} ({} in flight{})",
                status.max_concurrency,
                status.in_flight,
                if n == 0 { "; 0 pauses new work" } else { "" }
            );
            Ok(())
        }),
        Command::Pause => control(&settings, |client| async move {
            let status = client.set_enabled(false).await?;
            println!(
                "paused: no new project is dispatched; {} in flight will finish and be recorded",
                status.in_flight
            );
            Ok(())
        }),
        Command::Resume => control(&settings, |client| async move {
            let status = client.set_enabled(true).await?;
            println!(
                "resumed: dispatching up to {} projects at once",
                status.max_concurrency
            );
            Ok(())
        }),
        Command::Repair { command } => crate::repair::cli::execute(&settings, command),
        #[cfg(feature = "simulator")]
        Command::Demo { projects, database } => crate::demo::run(&settings, projects, &database),
        #[cfg(not(feature = "simulator"))]
        Command::Demo { .. } => Err(anyhow!(
            "this registry-repair was built without the `simulator` feature, which `demo` needs \
             (a default `cargo build` has it)"
        )),
    }
}

fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let applied = db::migrate(settings.database.url.expose(), settings.connect_timeout())?;
    if applied.is_empty() {
        println!("tracking table up to date; nothing to do");
    } else {
        for name in applied {
            println!("applied migration {name}");
        }
    }
    Ok(())
}

pub(crate) fn load_signer(settings: &Settings) -> Result<Arc<TokenSigner>, ConfigError> {
    let path = settings.key_path()?;
    TokenSigner::from_pem_file(
        path,
        &settings.registry.issuer,
        &settings.registry.audience,
        settings.registry.token_lifetime,
    )
    .map(Arc::new)
    .map_err(|e| ConfigError::new("registry.key_path", e.to_string()))
}

fn run(settings: Settings, options: ServiceOptions) -> anyhow::Result<()> {
    let signer = load_signer(&settings)?;
    let system = actix_rt::System::new();
    system.block_on(async move {
        let options_until_done = options.until_done;
        // Listen before anything starts, so that no signal finds its default (killing) action.
        let mut signals = Signals::listen().context("listening for SIGTERM and SIGINT")?;
        let service = tokio::select! {
            started = service::start(&settings, signer, options) => {
                started.context("starting the service")?
            }
            name = signals.next() => {
                tracing::info!(signal = name, "signal received while starting; nothing to stop");
                return Ok(());
            }
        };
        let scheduler = service.scheduler.clone();
        let bar = options_until_done.then(|| crate::progress::spawn(scheduler.clone())).flatten();
        signals.forward_to(scheduler);
        let end = service.wait().await;
        crate::progress::finish(bar);
        match end {
            RunEnd::Done => {
                tracing::info!("every project has a row; done");
                Ok(())
            }
            RunEnd::Stopped => {
                tracing::info!("stopped");
                Ok(())
            }
            RunEnd::RegistryWithoutApi(message) => Err(anyhow!(message)),
            RunEnd::FlushFailed(reason) => Err(anyhow!(
                "stopped, but the last results could not be written ({reason}); their projects will be analysed again on the next start"
            )),
        }
    })
}

fn current_thread_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn report(settings: &Settings, format: Format, listing: Listing) -> anyhow::Result<()> {
    let rt = current_thread_runtime()?;
    let report = rt.block_on(async {
        let db = Database::for_settings(settings, 1)?;
        db.check_ready().await?;
        anyhow::Ok(Report::load(&db, listing).await?)
    })?;
    print!("{}", report.render(format));
    Ok(())
}

fn control<F, Fut>(settings: &Settings, call: F) -> anyhow::Result<()>
where
    F: FnOnce(AdminClient) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let client = AdminClient::new(settings.admin.listen, settings.admin.token.clone());
    current_thread_runtime()?.block_on(call(client))
}

fn print_status(s: &ServiceStatus) {
    println!("state            {}", s.state);
    if !s.work.is_empty() {
        println!("work             {}", s.work);
    }
    println!("enabled          {}", s.enabled);
    println!("max_concurrency  {}", s.max_concurrency);
    println!("in flight        {}", s.in_flight);
    println!("queued           {}", s.queued);
    println!(
        "analysed         {} ({} completed, {} failed) in {:.0} s",
        s.analysed, s.completed, s.failed, s.uptime_s
    );
    println!("missing found    {}", s.missing_found);
    println!("rate             {:.1} projects/s", s.rate_per_s);
    println!("progress         {}", crate::progress::line(s));
    println!("deferred         {}", s.deferred);
    println!("ignored entries  {}", s.ignored_entries);
    println!("unaddressable    {}", s.unaddressable);
    println!("breaker          {} ({} trips)", s.breaker, s.breaker_trips);
    println!("analyzer restarts {}", s.analyzer_restarts);
    if let Some(error) = &s.last_error {
        println!("last error       {error}");
    }
}
