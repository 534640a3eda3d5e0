//! Wires the actors together: one Writer, one Scheduler with its supervised Analyzers, and the admin
//! API, all on the current actix System. `run`, `repair plan`, `repair apply`, `demo` and the tests
//! start the service this way, each with its [`Work`].

use std::net::SocketAddr;
use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::admin::{AdminDeps, AdminServer};
use crate::analyzer::AnalyzerDeps;
use crate::config::Settings;
use crate::control::GitlabControl;
use crate::db::{switches, watermark, Database};
#[cfg(feature = "faults")]
use crate::faults::Faults;
use crate::registry::client::ApiProbe;
use crate::registry::{ClientSetupError, NoGitlabApi, RegistryClient, RegistryError, TokenSigner};
use crate::scheduler::{RunEnd, Scheduler, SchedulerConfig, Shutdown};
use crate::work::{RepairMode, Work};
use crate::writer::{Collected, TakeCollected, WriteError, Writer};
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
    /// Fault injection; only tests set it.
    #[cfg(feature = "faults")]
    pub faults: Arc<Faults>,
}

pub struct Service {
    pub scheduler: Addr<Scheduler>,
    pub writer: Addr<Writer>,
    pub admin_addr: SocketAddr,
    admin: AdminServer,
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
}

impl From<ClientSetupError> for StartError {
    fn from(error: ClientSetupError) -> Self {
        match error {
            ClientSetupError::Config(error) => StartError::Config(error),
            ClientSetupError::Registry(error) => StartError::Registry(error),
        }
    }
}

/// Starts the service inside the current actix System.
pub async fn start(
    settings: &Settings,
    signer: Arc<TokenSigner>,
    options: ServiceOptions,
) -> Result<Service, StartError> {
    // A bad `registry.ca_file` is the operator's to fix, whatever else is wrong.
    let registry = RegistryClient::from_settings(settings, signer)?;
    let listener = crate::admin::bind(settings.admin.listen)?;
    let db = Database::for_settings(settings, settings.database.pool_size)?;
    db.check_ready().await?;
    let shard = settings.worker.shard;
    if options.from_start && options.work == Work::Analysis {
        watermark::reset(&db, shard).await?;
    }
    let (watermark, swept_ago) = watermark::load(&db, shard).await?;
    let registry_url = crate::redact::registry_url(&settings.registry.url);
    // GitLab's own worker never ran unless the API answered: a registry without it (or a wrong
    // URL) would otherwise fail every project.
    let probe = registry.probe().await;
    let registry_unconfirmed = match &probe {
        ApiProbe::Available(status) => {
            tracing::info!(registry = %registry_url, status, "registry answers with GitLab's API");
            None
        }
        ApiProbe::Absent { status, location } => {
            return Err(StartError::RegistryWithoutApi(NoGitlabApi {
                registry_url,
                status: *status,
                location: location.clone(),
            }));
        }
        // No retry mends a certificate this host does not trust.
        ApiProbe::Unavailable(RegistryError::UntrustedCertificate { reason, .. }) => {
            return Err(StartError::UntrustedRegistry {
                url: registry_url,
                reason: reason.clone(),
            });
        }
        ApiProbe::Unavailable(error) => Some(error.to_string()),
    };

    let writer_db = db.clone();
    let plan_mode = options
        .work
        .repair()
        .map_or(RepairMode::Plan, |repair| repair.mode);
    let batch_size = settings.writer.batch_size;
    let flush_interval = settings.writer.flush_interval;
    #[cfg(feature = "faults")]
    let writer_faults = options.faults.clone();
    // The Scheduler's address exists before the Writer starts, so the Writer knows whom to tell
    // when its buffer fills; the Scheduler itself runs once it has the Writer's.
    let scheduler_context = Context::<Scheduler>::new();
    let pressure = scheduler_context.address().recipient();
    let writer = Supervisor::start(move |_| {
        let writer = Writer::new(writer_db, batch_size, flush_interval)
            .reporting_pressure_to(pressure)
            .handling_plans(plan_mode);
        #[cfg(feature = "faults")]
        let writer = writer.with_faults(writer_faults);
        writer
    });
    let registry_metrics = registry.metrics();
    let deps = Arc::new(AnalyzerDeps {
        registry: registry.clone(),
        db: db.clone(),
        writer: writer.clone(),
        #[cfg(feature = "faults")]
        faults: options.faults.clone(),
    });
    let (finished_tx, finished) = oneshot::channel();
    // GitLab's switches, when they steer, decide from the first dispatch on.
    let gitlab_switches = if settings.follows_gitlab() {
        Some(switches::read(&db).await?)
    } else {
        None
    };
    let (limit, enabled) = match gitlab_switches {
        Some(s) => (
            s.max_concurrency
                .and_then(|c| usize::try_from(c).ok())
                .unwrap_or(settings.worker.max_concurrency),
            s.enabled,
        ),
        None => (settings.worker.max_concurrency, settings.worker.enabled),
    };
    let config = SchedulerConfig {
        limit,
        enabled,
        until_done: options.until_done,
        rescan_interval: settings.worker.rescan_interval,
        shutdown_timeout: settings.worker.shutdown_timeout,
        retry_failed: options.retry_failed,
        shard,
        watermark,
        progress_interval: settings.log.progress_interval,
        registry_unconfirmed,
        sweep_interval: settings.worker.sweep_interval,
        swept_ago,
        work: options.work,
    };
    let scheduler = scheduler_context.run(Scheduler::new(
        db.clone(),
        registry,
        writer.clone(),
        deps,
        config,
        finished_tx,
    ));
    if let Some(initial) = gitlab_switches {
        GitlabControl::new(
            db.clone(),
            scheduler.clone(),
            settings.control.poll_interval,
            initial,
        )
        .start();
    }
    let admin = AdminServer::start(
        listener,
        AdminDeps {
            scheduler: scheduler.clone(),
            token: settings.admin.token.clone(),
            registry_metrics,
            follows_gitlab: settings.follows_gitlab(),
        },
    )?;
    tracing::info!(
        database = db.target(),
        registry = %registry_url,
        admin = %admin.addr,
        "service started"
    );
    Ok(Service {
        scheduler,
        writer,
        admin_addr: admin.addr,
        admin,
        finished,
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
        let collected = self.writer.send(TakeCollected).await.unwrap_or_default();
        self.admin.stop().await;
        (end, collected)
    }
}
