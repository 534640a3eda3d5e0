//! The service: the pipeline's actors, wired on the current actix System for one [`Work`]. `run`
//! (the analysis), `repair plan` and `repair apply` (the repair), the demo and the tests start it
//! this way.
//!
//! Data flows one way: projects from the database to the Scheduler, to an Analyzer, to the
//! registry and back, to the Writer, to the database. Each actor defines the messages it
//! receives; an event it sends back up is defined by its sender and delivered through a
//! `Recipient`, so no actor's module imports the one above it. The Scheduler, the Analyzers and
//! the Writer are generic over the work: its source, its per-project step and its sink (see
//! [`crate::work`]); the messages that carry a project's job or record are generic with them.
//!
//! | actor | owns | receives | sends |
//! | --- | --- | --- | --- |
//! | [`Scheduler`], one | the work's source (the analysis' passes, watermark and sweep; a repair's candidates), the queue, the pool of Analyzers, `max_concurrency` and this member's share of it, the feature flag, the breaker, the accounting | `SetConcurrency`, `SetEnabled`, `GetStatus` and `Shutdown` (from the admin API, GitLab's switches' poller, signals, through a [`SchedulerAddr`]); `FleetReport`, `SetShare`, `AdoptSwitches`, `MembershipConfirmed` (the Fleet); `AnalyzerFinished` (Analyzers); `WriterPressure`, `Refused` (the Writer; `Refused` also from the Fleet) | `Analyze` to an Analyzer; `Flush`, `GetWriterStats`, `Discard` to the Writer; `SwitchesChanged` up to the Fleet |
//! | `Analyzer`, supervised, as many as the largest share seen | one project at a time (its `Job`), the work's step | `Analyze` | `Record` (the work's record: a tracking row, a plan, a project not planned) to the Writer; `AnalyzerFinished` up to the Scheduler |
//! | [`Writer`], one, supervised | every record not yet written, the write under way, the work's sink | `Record`, `Flush`, `GetWriterStats`, `Discard`, `TakeOutcome` | `WriterPressure`, `Refused` up to the Scheduler |
//! | [`Fleet`], one per service | the membership, the heartbeat, this instance's share of the fleet's concurrency | `SwitchesChanged` (Scheduler), `GetFleetStatus` (admin API), `Leave` | `FleetReport`, `SetShare`, `AdoptSwitches`, `MembershipConfirmed`, `Shutdown::Lost`, `Refused` to the Scheduler |
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
use crate::db::fleet::members::{self, JoinError, Joining};
use crate::db::fleet::Member;
use crate::db::{switches, Database};
use crate::faults::Faults;
use crate::fence::Fence;
use crate::fleet::{Fleet, Leave, Steering};
use crate::gitlab_control::GitlabControl;
use crate::registry::client::ApiProbe;
use crate::registry::{ClientSetupError, NoGitlabApi, RegistryClient, RegistryError, TokenSigner};
use crate::scheduler::{RunEnd, Scheduler, SchedulerAddr, SchedulerConfig, Shutdown};
use crate::work::{Refused, Sink, Work, WorkName, WriteError};
use crate::writer::{Record, TakeOutcome, Writer, WriterPressure};
use rustls::CertificateError;

/// How a service runs, whatever its work.
#[derive(Default)]
pub struct ServiceOptions {
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

pub struct Service<W: Work> {
    pub scheduler: SchedulerAddr,
    pub writer: Addr<Writer<W::Sink>>,
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
pub async fn start<W: Work>(
    settings: &Settings,
    signer: Arc<TokenSigner>,
    work: W,
    options: ServiceOptions,
) -> Result<Service<W>, StartError> {
    let name = work.name();
    let member = Arc::new(Member::new(
        name.to_string(),
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
    let membership = join(settings, &db, member, &fence).await?;
    let source = work.open(settings, &db, &membership.member).await?;

    // The Scheduler's address exists before the Writer starts, so the Writer knows whom to tell
    // when its buffer fills; the Scheduler itself runs once it has the Writer's.
    let scheduler_context = Context::<Scheduler<W>>::new();
    let writer = start_writer(
        settings,
        work.sink(&db),
        &options,
        scheduler_context.address().recipient(),
        scheduler_context.address().recipient(),
    );
    let deps = Arc::new(AnalyzerDeps {
        work,
        registry: registry.clone(),
        db: db.clone(),
        writer: writer
            .clone()
            .recipient::<Record<<W::Sink as Sink>::Record>>(),
        faults: options.faults.clone(),
    });
    let mut config = scheduler_config(settings, switches.as_ref(), registry_unconfirmed, name);
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
    let scheduler = SchedulerAddr::from(scheduler_context.run(scheduler));
    let heartbeat_db = db.own_pool(1)?;
    let fleet = fleet_context.run(Fleet::new(
        heartbeat_db,
        db.clone(),
        membership.member,
        fence,
        scheduler.clone(),
        settings.fleet.heartbeat_interval,
        match (settings.follows_gitlab(), membership.takes_them) {
            (true, _) => Steering::Gitlab,
            (false, true) => Steering::Shared {
                version: membership.switches.version,
            },
            (false, false) => Steering::Own {
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
        work = %name,
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

/// This instance joins the fleet: the fleet's switches, and whether it takes them.
async fn join(
    settings: &Settings,
    db: &Database,
    member: Arc<Member>,
    fence: &Fence,
) -> Result<Membership, StartError> {
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
    Ok(Membership {
        member,
        takes_them: joined.takes_them && !settings.follows_gitlab(),
        switches: joined.switches,
    })
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
) -> Result<Option<switches::GitlabSwitches>, StartError> {
    Ok(match settings.follows_gitlab() {
        true => Some(switches::read(db).await?),
        false => None,
    })
}

/// How the Scheduler starts: GitLab's switches, when they steer, or the settings' concurrency
/// and feature flag.
fn scheduler_config(
    settings: &Settings,
    switches: Option<&switches::GitlabSwitches>,
    registry_unconfirmed: Option<String>,
    work: WorkName,
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

/// The supervised Writer, telling `pressure` (the Scheduler) when its buffer fills and drains, and
/// `refusals` (the Scheduler too) when the database refuses its writes for good.
fn start_writer<S: Sink>(
    settings: &Settings,
    sink: S,
    options: &ServiceOptions,
    pressure: Recipient<WriterPressure>,
    refusals: Recipient<Refused>,
) -> Addr<Writer<S>> {
    let (batch_size, flush_interval) = (settings.writer.batch_size, settings.writer.flush_interval);
    let faults = options.faults.clone();
    Supervisor::start(move |_| {
        Writer::new(sink, batch_size, flush_interval)
            .reporting_pressure_to(pressure)
            .reporting_refusals_to(refusals.clone())
            .with_faults(faults)
    })
}

impl<W: Work> Service<W> {
    /// Asks the service to stop: no new dispatch, in-flight projects finish, the Writer flushes.
    pub fn shutdown(&self) {
        self.scheduler.do_send(Shutdown::Graceful);
    }

    /// Waits until the run ends, then stops the admin API.
    pub async fn wait(self) -> RunEnd {
        self.wait_outcome().await.0
    }

    /// Waits until the run ends, then takes what the Writer's sink kept (a repair's plans and
    /// what writing them did; nothing for the analysis) and stops the admin API.
    pub async fn wait_outcome(self) -> (RunEnd, <W::Sink as Sink>::Outcome) {
        let end = self
            .finished
            .await
            .unwrap_or(RunEnd::FlushFailed(WriteError::SchedulerStopped));
        let _ = self.fleet.send(Leave).await;
        let outcome = self
            .writer
            .send(TakeOutcome::default())
            .await
            .unwrap_or_default();
        if let Some(admin) = &self.admin {
            admin.stop().await;
        }
        (end, outcome)
    }
}
