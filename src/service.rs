//! The service: the pipeline's actors, wired on the current actix System. `run`, `repair plan`,
//! `repair apply`, the demo and the tests start it this way, each with its [`Work`].
//!
//! Data flows one way: projects from the database to the Scheduler, to an Analyzer, to the
//! registry and back, to the Writer, to the database. Each actor defines the messages it
//! receives; an event it sends back up is defined by its sender and delivered through a
//! `Recipient`, so no actor's module imports the one above it.
//!
//! | actor | owns | receives | sends |
//! | --- | --- | --- | --- |
//! | [`Scheduler`], one | its [`Source`] (the analysis' passes, watermark and sweep, or a repair's candidates), the queue, the pool of Analyzers, the concurrency limit, the feature flag, the breaker, the accounting | `SetConcurrency`, `SetEnabled`, `GetStatus` and `Shutdown` (from the admin API, GitLab's switches' poller, signals); `FleetReport`, `SetShare`, `AdoptSwitches` (the Fleet); `AnalyzerFinished` (Analyzers); `WriterPressure` (the Writer) | `Analyze` to an Analyzer; `Flush`, `GetWriterStats` to the Writer |
//! | `Analyzer`, supervised, as many as the largest limit seen | one project at a time (its `Job`) | `Analyze` | `Record`, `RecordPlan`, `RecordNotPlanned` to the Writer; `AnalyzerFinished` up to the Scheduler |
//! | [`Writer`], one, supervised | every result and plan not yet written, the write under way, its [`Sink`](crate::writer::Sink) | `Record`, `RecordPlan`, `RecordNotPlanned`, `Flush`, `GetWriterStats`, `TakeCollected` | `WriterPressure` up to the Scheduler |
//! | [`Fleet`], one per `run` | the membership, the heartbeat, this instance's share of the fleet's concurrency | `SwitchesChanged` (Scheduler), `GetFleetStatus` (admin API), `Leave` | `FleetReport`, `SetShare`, `AdoptSwitches`, `Shutdown::Lost` to the Scheduler |
//!
//! Beside them, and no actors: the admin API (`admin`, actix-web) and GitLab's switches' poller
//! (`control`) send the Scheduler messages; the registry client is shared by the Analyzers and
//! the Scheduler (probes, tokens signed ahead of need); [`Faults`] is the one seam through which
//! tests make the Analyzers and the Writer panic.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::admin::{AdminDeps, AdminServer};
use crate::analyzer::AnalyzerDeps;
use crate::config::Settings;
use crate::control::GitlabControl;
use crate::db::fleet::members::{self, JoinError, Joining};
use crate::db::fleet::{claims, Member};
use crate::db::{switches, watermark, Database};
use crate::faults::Faults;
use crate::fence::Fence;
use crate::fleet::{Fleet, Leave, Switches as FleetSwitches};
use crate::registry::client::ApiProbe;
use crate::registry::{ClientSetupError, NoGitlabApi, RegistryClient, RegistryError, TokenSigner};
use crate::scheduler::{
    AnalysisSettings, Candidates, Passes, RunEnd, Scheduler, SchedulerConfig, Shutdown, Source,
};
use crate::work::Work;
use crate::writer::{Collected, TakeCollected, WriteError, Writer, WriterPressure};
use rustls::CertificateError;

#[derive(Default)]
pub struct ServiceOptions {
    /// Stop once every project has a row and everything is flushed.
    pub until_done: bool,
    /// Analyse the projects recorded `failed` again first.
    pub retry_failed: bool,
    /// Forget the watermark and walk from the first project.
    pub from_start: bool,
    /// Analyse (the default), or repair.
    pub work: Work,
    /// The seam through which tests make the Analyzers and the Writer panic (never armed
    /// otherwise).
    pub faults: Arc<Faults>,
    /// Where to serve the admin API: `run` serves it on `admin.listen`; a repair serves none
    /// unless asked, so that it runs beside a `run` with the same configuration.
    pub admin: AdminApi,
}

/// Whether and where a service serves the admin API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AdminApi {
    /// On `admin.listen`.
    #[default]
    Listen,
    /// On this address instead.
    At(SocketAddr),
    /// None.
    Off,
}

impl AdminApi {
    fn address(self, settings: &Settings) -> Option<SocketAddr> {
        match self {
            AdminApi::Listen => Some(settings.admin.listen),
            AdminApi::At(addr) => Some(addr),
            AdminApi::Off => None,
        }
    }
}

pub struct Service {
    pub scheduler: Addr<Scheduler>,
    pub writer: Addr<Writer>,
    /// Where the admin API answers, if it is served.
    pub admin_addr: Option<SocketAddr>,
    /// How statements reach the database (and why), as its first connection settled it.
    pub statement_mode: Option<crate::db::StatementMode>,
    admin: Option<AdminServer>,
    /// This instance as a member of the fleet.
    fleet: Addr<Fleet>,
    finished: oneshot::Receiver<RunEnd>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Database(#[from] crate::db::DbError),
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    #[error(transparent)]
    Admin(#[from] crate::admin::AdminError),
    #[error(transparent)]
    RegistryWithoutApi(NoGitlabApi),
    #[error("the registry at {url} presents a TLS certificate this host does not trust ({reason}): {}",
        if matches!(reason, CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }) {
            "registry.url must name a host the certificate is for"
        } else {
            "set registry.ca_file to the PEM file of the CA that signed it"
        })]
    UntrustedRegistry {
        url: String,
        reason: CertificateError,
    },
    #[error(transparent)]
    Fleet(#[from] JoinError),
}

impl From<ClientSetupError> for StartError {
    fn from(error: ClientSetupError) -> Self {
        match error {
            ClientSetupError::Config(error) => StartError::Config(error),
            ClientSetupError::Registry(error) => StartError::Registry(error),
        }
    }
}

/// Starts the service inside the current actix System, in the order a failure is best found:
/// the registry client (a bad `registry.ca_file` first), the admin port, the database, where the
/// walk starts, the registry's GitLab API, the switches, the membership of the fleet; then the
/// actors, bottom up (the Writer, then the Scheduler with its Analyzers, then the Fleet), GitLab's
/// switches' poller and the admin API.
pub async fn start(
    settings: &Settings,
    signer: Arc<TokenSigner>,
    options: ServiceOptions,
) -> Result<Service, StartError> {
    let member = Arc::new(Member::new(
        options.work.to_string(),
        settings.worker.shard,
        settings.fleet.member_timeout,
    ));
    // Nothing is held before the membership: the probe at start may go out meanwhile.
    let fence = Arc::new(Fence::until(Instant::now() + member.hold()).with_grace(member.grace()));
    let registry = RegistryClient::from_settings(settings, signer)?.fenced_by(fence.clone());
    let listener = options
        .admin
        .address(settings)
        .map(crate::admin::bind)
        .transpose()?;
    let db = Database::for_settings(settings, settings.database.pool_size)?;
    db.check_ready().await?;
    let registry_unconfirmed = confirm_gitlab_api(&registry).await?;
    let switches = gitlab_switches(settings, &db).await?;
    let (source, membership) = source(settings, &db, &options, member, &fence).await?;

    // The Scheduler's address exists before the Writer starts, so the Writer knows whom to tell
    // when its buffer fills; the Scheduler itself runs once it has the Writer's.
    let scheduler_context = Context::<Scheduler>::new();
    let writer = start_writer(
        settings,
        &db,
        &options,
        scheduler_context.address().recipient(),
    );
    let deps = Arc::new(AnalyzerDeps {
        registry: registry.clone(),
        db: db.clone(),
        writer: writer.clone(),
        faults: options.faults.clone(),
        sizes: settings.analysis.sizes,
    });
    let mut config = scheduler_config(
        settings,
        switches.as_ref(),
        registry_unconfirmed,
        options.work.clone(),
    );
    if membership.takes_them {
        config.max_concurrency = usize::try_from(membership.switches.max_concurrency).unwrap_or(0);
        config.enabled = membership.switches.enabled;
    }
    let registry_metrics = registry.metrics();
    let (finished_tx, finished) = oneshot::channel();
    // The Fleet's address exists before the Scheduler starts, so the Scheduler can tell it what
    // it is told; the Fleet itself runs once it has the Scheduler's.
    let fleet_context = Context::<Fleet>::new();
    let scheduler = Scheduler::new(registry, writer.clone(), deps, config, source, finished_tx)
        .in_fleet(fleet_context.address().recipient());
    let scheduler = scheduler_context.run(scheduler);
    let heartbeat_db = db.own_pool(1)?;
    let fleet = fleet_context.run(Fleet::new(
        heartbeat_db,
        db.clone(),
        membership.member,
        fence,
        scheduler.clone(),
        settings.fleet.heartbeat_interval,
        match (settings.follows_gitlab(), membership.takes_them) {
            (true, _) => FleetSwitches::Gitlab,
            (false, true) => FleetSwitches::Shared {
                version: membership.switches.version,
            },
            (false, false) => FleetSwitches::Own {
                version: membership.switches.version,
            },
        },
    ));
    if let Some(initial) = switches {
        GitlabControl::new(
            db.clone(),
            scheduler.clone(),
            settings.control.poll_interval,
            initial,
        )
        .start();
    }
    let admin = match listener {
        Some(listener) => Some(AdminServer::start(
            listener,
            AdminDeps {
                scheduler: scheduler.clone(),
                fleet: Some(fleet.clone()),
                token: settings.admin.token.clone(),
                allowed_hosts: settings.admin.allowed_hosts.clone(),
                registry_metrics,
                follows_gitlab: settings.follows_gitlab(),
                db: Some(db.clone()),
            },
        )?),
        None => None,
    };
    let admin_addr = admin.as_ref().map(|admin| admin.addr);
    tracing::info!(
        database = db.target(),
        registry = %settings.registry.url,
        admin = %admin_addr.map_or_else(|| "none".to_string(), |addr| addr.to_string()),
        work = %options.work,
        "service started"
    );
    Ok(Service {
        scheduler,
        writer,
        admin_addr,
        statement_mode: db.statement_mode().cloned(),
        admin,
        fleet,
        finished,
    })
}

/// This instance in the fleet: who it is, the fleet's switches, and whether it takes them
/// (`control.source = "config"`, and for a repair only while the analysis runs).
struct Membership {
    member: Arc<Member>,
    switches: members::FleetSwitches,
    takes_them: bool,
}

/// Where the Scheduler's projects come from, once this instance has joined the fleet: the
/// analysis, from the fleet's pass and the watermark (both forgotten with `--from-start`); or a
/// repair's candidates.
async fn source(
    settings: &Settings,
    db: &Database,
    options: &ServiceOptions,
    member: Arc<Member>,
    fence: &Fence,
) -> Result<(Source, Membership), StartError> {
    let sent = Instant::now();
    let joined = members::join(
        db,
        &member,
        Joining {
            max_concurrency: settings.worker.max_concurrency,
            enabled: settings.worker.enabled,
            shared_switches: !settings.follows_gitlab(),
        },
    )
    .await?;
    fence.confirm(sent, member.hold());
    if joined.takes_them && !settings.follows_gitlab() {
        say_whose_switches(settings, &joined.switches);
    }
    let membership = |member| Membership {
        member,
        switches: joined.switches.clone(),
        takes_them: joined.takes_them && !settings.follows_gitlab(),
    };
    let Work::Repair(repair) = &options.work else {
        let shard = settings.worker.shard;
        if options.from_start {
            watermark::reset(db, shard).await?;
            claims::reset(db, shard).await?;
        }
        let (watermark, _) = watermark::load(db, shard).await?;
        claims::ensure_pass(db, shard, watermark).await?;
        if options.retry_failed {
            claims::start_retry_failed(db, shard).await?;
        }
        claims::start_sweep_if_due(db, shard, settings.worker.sweep_interval).await?;
        itemise_if_needed(db, shard).await?;
        let source = Source::Analysis(Passes::new(
            db.clone(),
            AnalysisSettings {
                member: member.clone(),
                watermark,
                until_done: options.until_done,
                rescan_interval: settings.worker.rescan_interval,
                sweep_interval: settings.worker.sweep_interval,
            },
        ));
        return Ok((source, membership(member)));
    };
    Ok((
        Source::Repair(Candidates::new(db.clone(), repair.scope.clone())),
        membership(member),
    ))
}

/// Says, when this instance takes the fleet's switches over its own configuration, whose they
/// are: a command's (held across restarts: a paused fleet stays paused), or the members' before.
fn say_whose_switches(settings: &Settings, fleet: &members::FleetSwitches) {
    let total = usize::try_from(fleet.max_concurrency).unwrap_or(0);
    let own = (settings.worker.max_concurrency, settings.worker.enabled);
    let set_at = fleet.updated_at.format("%Y-%m-%d %H:%M:%S UTC");
    if fleet.set_by_command && !fleet.enabled {
        tracing::warn!(
            %set_at,
            "the fleet is paused, as `registry-repair pause` left it: nothing is dispatched until `registry-repair resume` (a pause holds across restarts, over worker.enabled)"
        );
    }
    if (total, fleet.enabled) == own {
        return;
    }
    match fleet.set_by_command {
        true => tracing::warn!(
            fleet_max_concurrency = total,
            fleet_enabled = fleet.enabled,
            worker_max_concurrency = own.0,
            worker_enabled = own.1,
            %set_at,
            "the fleet's switches, as a control command set them, hold over this instance's configuration: `registry-repair concurrency N`, `pause` and `resume` change them"
        ),
        false => tracing::info!(
            fleet_max_concurrency = total,
            fleet_enabled = fleet.enabled,
            worker_max_concurrency = own.0,
            worker_enabled = own.1,
            "this instance takes the fleet's switches over its own worker.max_concurrency and worker.enabled"
        ),
    }
}

/// Projects counted without their repositories (by a release before they were kept) are analysed
/// again, in the fleet's pass, to itemise them: the registry is asked for those alone.
async fn itemise_if_needed(db: &Database, shard: crate::config::Shard) -> Result<(), StartError> {
    let uncounted = claims::start_itemise_if_needed(db, shard).await?;
    if uncounted > 0 {
        tracing::info!(
            projects = uncounted,
            "projects counted without their repositories (by an earlier release): listing them again to itemise them"
        );
    }
    Ok(())
}

/// `GET /gitlab/v1/`, as GitLab's own worker asked before it ran: a registry without the API (or
/// a wrong URL) would otherwise fail every project. `Some(why)` when the registry did not answer
/// yet: the Scheduler then waits for it. A certificate this host does not trust, or an answer
/// without the API, ends the start.
async fn confirm_gitlab_api(registry: &RegistryClient) -> Result<Option<String>, StartError> {
    let registry_url = registry.display_url();
    match registry.probe().await {
        ApiProbe::Available(status) => {
            tracing::info!(registry = %registry_url, status, "registry answers with GitLab's API");
            Ok(None)
        }
        ApiProbe::Absent { status, location } => Err(StartError::RegistryWithoutApi(NoGitlabApi {
            registry_url,
            status,
            location,
        })),
        // No retry mends a certificate this host does not trust.
        ApiProbe::Unavailable(RegistryError::UntrustedCertificate { reason, .. }) => {
            Err(StartError::UntrustedRegistry {
                url: registry_url,
                reason,
            })
        }
        ApiProbe::Unavailable(error) => Ok(Some(error.to_string())),
    }
}

/// GitLab's own setting and feature flag, when they steer (`control.source = "gitlab"`): read
/// before the first dispatch, so that they decide from it on.
async fn gitlab_switches(
    settings: &Settings,
    db: &Database,
) -> Result<Option<switches::Switches>, StartError> {
    Ok(match settings.follows_gitlab() {
        true => Some(switches::read(db).await?),
        false => None,
    })
}

/// How the Scheduler starts: GitLab's switches, when they steer, or the settings' concurrency
/// and feature flag.
fn scheduler_config(
    settings: &Settings,
    switches: Option<&switches::Switches>,
    registry_unconfirmed: Option<String>,
    work: Work,
) -> SchedulerConfig {
    let (max_concurrency, enabled) = match switches {
        Some(s) => (
            s.max_concurrency
                .and_then(|c| usize::try_from(c).ok())
                .unwrap_or(settings.worker.max_concurrency),
            s.enabled,
        ),
        None => (settings.worker.max_concurrency, settings.worker.enabled),
    };
    SchedulerConfig {
        max_concurrency,
        enabled,
        shutdown_timeout: settings.worker.shutdown_timeout,
        progress_interval: settings.log.progress_interval,
        registry_unconfirmed,
        work,
    }
}

/// The supervised Writer, telling `pressure` (the Scheduler) when its buffer fills and drains.
fn start_writer(
    settings: &Settings,
    db: &Database,
    options: &ServiceOptions,
    pressure: Recipient<WriterPressure>,
) -> Addr<Writer> {
    let (db, sink) = (db.clone(), options.work.sink());
    let (batch_size, flush_interval) = (settings.writer.batch_size, settings.writer.flush_interval);
    let faults = options.faults.clone();
    Supervisor::start(move |_| {
        Writer::new(db, sink, batch_size, flush_interval)
            .reporting_pressure_to(pressure)
            .with_faults(faults)
    })
}

impl Service {
    /// Asks the service to stop: no new dispatch, in-flight projects finish, the Writer flushes.
    pub fn shutdown(&self) {
        self.scheduler.do_send(Shutdown::Graceful);
    }

    /// Waits until the run ends, then stops the admin API.
    pub async fn wait(self) -> RunEnd {
        self.wait_collected().await.0
    }

    /// Waits until the run ends, then takes what a repair's Writer collected (empty for an
    /// analysis) and stops the admin API.
    pub async fn wait_collected(self) -> (RunEnd, Collected) {
        let end = self
            .finished
            .await
            .unwrap_or(RunEnd::FlushFailed(WriteError::SchedulerStopped));
        let _ = self.fleet.send(Leave).await;
        let collected = self.writer.send(TakeCollected).await.unwrap_or_default();
        if let Some(admin) = &self.admin {
            admin.stop().await;
        }
        (end, collected)
    }
}
