//! `repair plan` and `repair apply`, on the service's pipeline: a service started with the
//! [`Repair`] work, whose Scheduler walks the candidates in scope once, whose Analyzers plan each
//! project and whose Writer writes the plans (apply: one transaction per project, in batches, on
//! size, timer, failure and shutdown) or only collects them (plan). So they have what `run` has:
//! `worker.max_concurrency`, the feature flag with pause and resume, the breaker (a registry
//! outage waits instead of failing projects), the admin API (`status`, `concurrency`, `pause`,
//! `resume`, `/metrics`), progress, and draining on SIGTERM / SIGINT.
//!
//! An apply's run is recorded before the service starts and marked finished only when every
//! candidate was planned and flushed: a run stopped by a signal keeps `finished_at` NULL, and
//! `repair apply` again finishes the job.

use std::sync::Arc;

use anyhow::{anyhow, Context as _};

use super::lease::HeldLease;
use super::work::{Apply, NotPlanned, Repair};
use super::PlanArgs;
use crate::commands::Unfinished;
use crate::config::{ConfigError, Settings};
use crate::db::repair::lease;
use crate::db::repair::{
    self, discard_run, finish_apply, start_apply, RepairError, Scope, Written,
};
use crate::db::{Database, DbError};
use crate::format::Format;
use crate::registry::TokenSigner;
use crate::repair::guards::Consent;
use crate::repair::output::{announce_to_geo_line, refresh_statistics_line, Outcome};
use crate::repair::ProjectPlan;
use crate::scheduler::{RunEnd, Shutdown};
use crate::service::{self, Service, ServiceOptions, StartError};
use crate::signals::Signals;

/// What the repair does with its plans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `repair plan`: print them; write nothing.
    Plan,
    /// `repair apply`: write them, as a run.
    Apply,
}

impl Mode {
    fn command(self) -> &'static str {
        match self {
            Mode::Plan => "plan",
            Mode::Apply => "apply",
        }
    }
}

/// `repair plan` or `repair apply`, in the order it happens: the scope checked, the plans made
/// (and written) on the pipeline, the outcome printed with what to do next, and an exit status
/// that says whether projects were left as they are.
pub async fn execute(
    settings: &Settings,
    db: &Database,
    args: &PlanArgs,
    mode: Mode,
) -> anyhow::Result<()> {
    let scope = args.scope();
    // Before anything is held: a wrong argument takes no lease and records no run.
    check_namespace(db, &scope).await?;
    warn_if_the_index_is_unsafe(db).await?;
    let walked = walk(settings, db, args, mode).await?;
    // A lease taken away explains whatever else went wrong (the last writes refused).
    if let Some(lost) = walked.lease_lost {
        return Err(lost.into());
    }
    let mut outcome = outcome(&walked)?;
    outcome.stopped = walked.end == RunEnd::Stopped;
    print!("{}", outcome.render(args.format)?);
    // Notes go to standard error when standard output is JSON or CSV, so it stays parseable.
    let note = |text: String| {
        if args.format == Format::Table {
            println!("{text}");
        } else {
            eprintln!("{text}");
        }
    };
    if let Some(run) = walked.run {
        for text in apply_notes(db, run, args.scope().consent).await? {
            note(text);
        }
    }
    left_as_they_are(&walked, &outcome)?;
    if walked.end == RunEnd::Stopped {
        return Err(stopped(db, args, mode, &walked, &outcome).await);
    }
    Ok(())
}

/// A plan or apply stopped before every candidate was done (SIGTERM, SIGINT): how far it got,
/// and the command, with the scope it was given, that finishes the job.
async fn stopped(
    db: &Database,
    args: &PlanArgs,
    mode: Mode,
    walked: &Repaired,
    outcome: &Outcome,
) -> anyhow::Error {
    let scope = args.scope();
    let (done, each) = match mode {
        Mode::Plan => ("planned", "planned"),
        Mode::Apply => ("written", "fully written"),
    };
    // An apply's written projects are no candidates any more; a plan's still are.
    let left = repair::count_candidates(db, &scope)
        .await
        .map(|n| match mode {
            Mode::Plan => n.saturating_sub(outcome.totals.projects),
            Mode::Apply => n,
        });
    let left = match left {
        Ok(left) => format!("{left} left"),
        Err(error) => format!("how many are left could not be counted: {error}"),
    };
    let run = walked
        .run
        .map(|run| format!(" (run {run} stays unfinished)"))
        .unwrap_or_default();
    let again = format!(
        "registry-repair repair {}{}{}",
        mode.command(),
        if scope.describe().is_empty() { "" } else { " " },
        scope.describe()
    );
    Unfinished(format!(
        "stopped before every project was {done}{run}: {} projects {done}, {left}; each project is {each} or untouched. Run `{again}` to finish",
        outcome.totals.projects,
    ))
    .into()
}

/// An unknown `--namespace` is the operator's to fix.
async fn check_namespace(db: &Database, scope: &Scope) -> anyhow::Result<()> {
    match &scope.namespace {
        Some(namespace) if !repair::namespace_exists(db, namespace).await? => {
            Err(ConfigError::new(
                "--namespace",
                RepairError::UnknownNamespace(namespace.clone()).to_string(),
            )
            .into())
        }
        _ => Ok(()),
    }
}

async fn warn_if_the_index_is_unsafe(db: &Database) -> anyhow::Result<()> {
    let index = repair::index_health(db).await?;
    if !index.is_safe() {
        eprintln!(
            "registry-repair: warning: {}; nothing will be restored (reason index_unsafe)",
            index.describe()
        );
    }
    Ok(())
}

/// The pipeline, from start to end, with signals forwarded and a progress bar.
async fn walk(
    settings: &Settings,
    db: &Database,
    args: &PlanArgs,
    mode: Mode,
) -> anyhow::Result<Repaired> {
    let signer = TokenSigner::from_settings(settings)?;
    // Listen before anything starts, so that no signal finds its default (killing) action.
    let signals = Signals::listen().context("listening for SIGTERM and SIGINT")?;
    let options = ServiceOptions {
        admin: args.admin_api(),
        ..ServiceOptions::default()
    };
    let repairing = start(settings, signer, db, args.scope(), mode, options)
        .await
        .context("starting the repair")?;
    let scheduler = repairing.service.scheduler.clone();
    let bar = crate::progress::spawn(scheduler.clone());
    if let Some(held) = &repairing.held {
        // A lease taken away stops the run at once: nothing more is dispatched, and the writes
        // still to come are refused by their transactions' check of the lease.
        let lost = held.lost();
        let scheduler = scheduler.clone();
        actix_rt::spawn(async move {
            lost.await;
            scheduler.do_send(Shutdown::Now);
        });
    }
    signals.forward_to(scheduler);
    let walked = repairing.wait().await?;
    crate::progress::finish(bar);
    Ok(walked)
}

/// What the plans say, or what writing them did; an error when the run could not finish.
fn outcome(walked: &Repaired) -> anyhow::Result<Outcome> {
    match &walked.end {
        RunEnd::Done | RunEnd::Stopped => {}
        RunEnd::LostMembership => {
            return Err(anyhow!(
                "stopped: the fleet took this repair for dead (no heartbeat went through for fleet.member_timeout_ms) and it wrote nothing more; each project is fully written or untouched: run again"
            ))
        }
        RunEnd::RegistryWithoutApi(message) => return Err(anyhow!(message.clone())),
        RunEnd::Refused(refused) => return Err(anyhow!(refused.clone())),
        RunEnd::FlushFailed(reason) => {
            return Err(anyhow!(
                "stopped, but the last plans could not be written ({reason}); their projects are untouched: run again"
            ))
        }
    }
    let mut outcome = Outcome::new(walked.run);
    for plan in &walked.plans {
        outcome.add_plan(plan);
    }
    for written in &walked.written {
        outcome.add_written(written);
    }
    Ok(outcome)
}

/// Projects the run could not list in the registry, or whose path changed under the write: named
/// on standard error, and exit 1 (run again).
fn left_as_they_are(walked: &Repaired, outcome: &Outcome) -> anyhow::Result<()> {
    for moved in &outcome.path_changed {
        eprintln!(
            "registry-repair: not written: project {} ({}): its path changed to {} between the listing and the write; nothing was written for it",
            moved.project_id,
            moved.listed_path,
            moved.path_now.as_deref().unwrap_or("(no route)")
        );
    }
    for failed in &walked.not_planned {
        eprintln!(
            "registry-repair: not planned: project {} ({}): {}",
            failed.project_id, failed.full_path, failed.reason
        );
    }
    if !walked.not_planned.is_empty() {
        return Err(anyhow!(
            "{} projects could not be listed in the registry and were left as they are; run again",
            walked.not_planned.len()
        ));
    }
    if !outcome.path_changed.is_empty() {
        let projects: Vec<String> = outcome
            .path_changed
            .iter()
            .map(|moved| format!("--project {}", moved.project_id))
            .collect();
        return Err(anyhow!(
            "{} projects were renamed or moved while the run listed them and were left as they are; run `registry-repair repair apply {}` again",
            outcome.path_changed.len(),
            projects.join(" ")
        ));
    }
    Ok(())
}

/// What to do after apply run `run`: the lines that do what GitLab does on its own when it
/// creates a row (storage statistics; Geo, where it has secondaries), the cleanup policies the
/// operator accepted, and how to check or take back the run.
async fn apply_notes(db: &Database, run: i64, consent: Consent) -> anyhow::Result<Vec<String>> {
    let mut notes = Vec::new();
    let projects = repair::restored_projects(db, run).await?;
    if !projects.is_empty() {
        let listed = if projects.len() <= 100 {
            let ids: Vec<String> = projects.iter().map(i64::to_string).collect();
            format!(": {}", ids.join(" "))
        } else {
            String::new()
        };
        notes.push(format!(
            "\nRestored rows in {} projects{listed}\nRefresh their storage statistics (GitLab does not on its own):\n  {}",
            projects.len(),
            refresh_statistics_line(run, &projects)
        ));
        let geo = repair::geo_secondaries(db).await?;
        if geo != Some(false) {
            let repositories = repair::restored_repositories(db, run).await?;
            notes.push(format!(
                "\n{}, announce the restored rows to them (GitLab's own callbacks do this for a row it creates):\n  {}",
                match geo {
                    Some(_) => "This GitLab has Geo secondary sites",
                    None => "If this GitLab has Geo secondary sites (geo_nodes could not be read)",
                },
                announce_to_geo_line(run, &repositories)
            ));
        }
    }
    if consent.cleanup_policy {
        let policed = repair::under_cleanup_policy(db, run).await?;
        if policed > 0 {
            notes.push(format!(
                "\nWarning: {policed} restored repositories are in projects with an enabled cleanup policy \
                 (--include-cleanup-policy); its next run may delete their tags, which undo cannot bring back."
            ));
        }
    }
    notes.push(format!(
        "\nCheck with `registry-repair repair verify {run}`; take back with `registry-repair repair undo {run}`."
    ));
    Ok(notes)
}

/// Why a repair could not run.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Database(#[from] DbError),
    #[error(transparent)]
    Repair(#[from] RepairError),
}

/// A repair under way.
pub struct Repairing {
    pub service: Service<Repair>,
    /// The apply's run (`None` for a plan).
    pub run: Option<i64>,
    /// The repair lease an apply holds while it runs.
    pub held: Option<HeldLease>,
    db: Database,
}

/// How a repair ended, and what it did.
#[derive(Debug)]
pub struct Repaired {
    pub end: RunEnd,
    pub run: Option<i64>,
    /// A plan's plans (empty for an apply).
    pub plans: Vec<ProjectPlan>,
    /// What an apply wrote, per project (empty for a plan).
    pub written: Vec<Written>,
    /// Projects that ended failed: nothing written for them.
    pub not_planned: Vec<NotPlanned>,
    /// The apply's lease was taken by another run while it ran: it wrote nothing more.
    pub lease_lost: Option<RepairError>,
}

/// Starts a repair of `scope`: a plan, or (`apply`) a run that writes, holding the repair lease.
///
/// The lease is taken before the run row exists and the run's id recorded in it right after:
/// a refused apply then leaves no run behind for `repair runs` to list, and the lease names its
/// run before the first write (each write checks that the lease names it).
pub async fn start(
    settings: &Settings,
    signer: Arc<TokenSigner>,
    db: &Database,
    scope: Scope,
    mode: Mode,
    options: ServiceOptions,
) -> Result<Repairing, PipelineError> {
    let held = match mode {
        Mode::Apply => Some(HeldLease::acquire(db, "apply").await?),
        Mode::Plan => None,
    };
    match begin(settings, signer, db, scope, options, held.as_ref()).await {
        Ok((service, run)) => Ok(Repairing {
            service,
            run,
            held,
            db: db.clone(),
        }),
        Err(error) => {
            if let Some(held) = held {
                held.release().await;
            }
            Err(error)
        }
    }
}

/// The run recorded (an apply holding `lease`), and the service started.
async fn begin(
    settings: &Settings,
    signer: Arc<TokenSigner>,
    db: &Database,
    scope: Scope,
    options: ServiceOptions,
    held: Option<&HeldLease>,
) -> Result<(Service<Repair>, Option<i64>), PipelineError> {
    let run = match held {
        Some(_) => Some(start_apply(db, &scope).await?),
        None => None,
    };
    if let (Some(held), Some(run)) = (held, run) {
        if let Err(error) = lease::record_run(db, held.lease(), run).await {
            discard(db, run).await;
            return Err(error.into());
        }
    }
    let apply = match (held, run) {
        (Some(held), Some(run_id)) => Some(Apply {
            run_id,
            lease: held.fence().clone(),
        }),
        _ => None,
    };
    match service::start(settings, signer, Repair { scope, apply }, options).await {
        Ok(service) => Ok((service, run)),
        Err(error) => {
            // Nothing ran: no run to list (the admin port taken, the registry without its API).
            if let Some(run) = run {
                discard(db, run).await;
            }
            Err(error.into())
        }
    }
}

/// Forgets apply run `run`, which never started.
async fn discard(db: &Database, run: i64) {
    if let Err(discarding) = discard_run(db, run).await {
        tracing::warn!(%discarding, run, "an apply run that never started stays listed");
    }
}

impl Repairing {
    /// Waits for the repair to end (every candidate planned and flushed, or a shutdown), records
    /// an apply's end when it is done, and releases the lease.
    pub async fn wait(self) -> Result<Repaired, PipelineError> {
        let (end, collected) = self.service.wait_outcome().await;
        let lease_lost = self.held.as_ref().and_then(HeldLease::lost_now);
        let recorded = match (&end, self.run, &lease_lost) {
            (RunEnd::Done, Some(run), None) => finish_apply(&self.db, run).await,
            // Nothing was dispatched: no run to list.
            (RunEnd::RegistryWithoutApi(_), Some(run), _) => discard_run(&self.db, run).await,
            _ => Ok(()),
        };
        if let Some(held) = self.held {
            held.release().await;
        }
        recorded?;
        Ok(Repaired {
            end,
            run: self.run,
            plans: collected.plans,
            written: collected.written,
            not_planned: collected.not_planned,
            lease_lost,
        })
    }
}
