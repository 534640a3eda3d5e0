//! The `repair` subcommands: `plan`, `apply`, `verify RUN`, `undo RUN`, `runs`. Each reads the
//! same configuration as the other commands (`--config`).
//!
//! `plan` and `apply` run the service's pipeline ([`super::pipeline`]): the admin API, pause and
//! resume, the breaker, progress and SIGTERM / SIGINT apply to them as to `run`.

use std::sync::Arc;

use anyhow::{anyhow, Context as _};
use clap::{Args, Subcommand};

use super::guards::Consent;
use super::output::{announce_to_geo_line, refresh_statistics_line, Outcome};
use super::pipeline::{self, Repaired};
use super::verify::verify;
use crate::config::{ConfigError, Settings};
use crate::db::repair::{self, RepairError, RunRow, Scope};
use crate::db::Database;
use crate::registry::{RegistryClient, TokenSigner};
use crate::report::{csv_field, Format};
use crate::scheduler::RunEnd;
use crate::service::ServiceOptions;
use crate::signals::Signals;

#[derive(Debug, Subcommand)]
pub enum RepairCommand {
    /// Dry run: list the registry again for the projects with missing repositories and print what
    /// `apply` would restore, skip or leave for review, and why. Writes nothing.
    Plan(PlanArgs),
    /// Restore the missing rows (each project in one transaction), recorded as a run that `undo`
    /// can take back.
    Apply(PlanArgs),
    /// List the registry again for a run's projects; exit 1 if a repository the run did not skip
    /// still has no row.
    Verify {
        /// The apply run's id (`repair runs`)
        #[arg(value_name = "RUN")]
        run: i64,
    },
    /// Delete the rows an apply run restored that are unchanged since; list the others.
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
}

impl PlanArgs {
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

/// Runs one `repair` subcommand.
pub fn execute(settings: &Settings, command: RepairCommand) -> anyhow::Result<()> {
    // An actix System: `plan` and `apply` run the service's actors.
    actix_rt::System::new().block_on(async {
        let db = Database::for_settings(settings, settings.database.pool_size)?;
        db.check_ready().await?;
        repair::check_ready(&db).await?;
        match command {
            RepairCommand::Plan(args) => plan_or_apply(settings, &db, &args, false).await,
            RepairCommand::Apply(args) => {
                repair::check_primary(&db).await?;
                plan_or_apply(settings, &db, &args, true).await
            }
            RepairCommand::Verify { run } => verify_run(settings, &db, run).await,
            RepairCommand::Undo { run } => {
                repair::check_primary(&db).await?;
                undo(&db, run).await
            }
            RepairCommand::Runs { format } => {
                let runs = repair::runs(&db).await?;
                print!("{}", render_runs(&runs, format));
                Ok(())
            }
        }
    })
}

fn registry_client(settings: &Settings) -> anyhow::Result<RegistryClient> {
    let path = settings.key_path()?;
    let lifetime = settings.registry.token_lifetime;
    let signer = TokenSigner::from_pem_file(
        path,
        &settings.registry.issuer,
        &settings.registry.audience,
        lifetime,
    )
    .map_err(|e| ConfigError::new("registry.key_path", e.to_string()))?;
    Ok(RegistryClient::with_ca(
        &settings.registry.url,
        settings.registry.page_size,
        settings.registry_timeout(),
        settings.registry.max_pages,
        Arc::new(signer),
        settings.registry_ca()?,
    )?)
}

/// At most this many projects listed at once by `verify`.
fn concurrency(settings: &Settings) -> usize {
    settings.worker.max_concurrency.max(1)
}

async fn plan_or_apply(
    settings: &Settings,
    db: &Database,
    args: &PlanArgs,
    write: bool,
) -> anyhow::Result<()> {
    let scope = args.scope();
    if let Some(namespace) = &scope.namespace {
        if !repair::namespace_exists(db, namespace).await? {
            return Err(ConfigError::new(
                "--namespace",
                RepairError::UnknownNamespace(namespace.clone()).to_string(),
            )
            .into());
        }
    }
    let signer = crate::cli::load_signer(settings)?;
    let index = repair::index_health(db).await?;
    if !index.is_safe() {
        eprintln!(
            "registry-repair: warning: {}; nothing will be restored (reason index_unsafe)",
            index.describe()
        );
    }
    // Listen before anything starts, so that no signal finds its default (killing) action.
    let signals = Signals::listen().context("listening for SIGTERM and SIGINT")?;
    let repairing = pipeline::start(
        settings,
        signer,
        db,
        scope,
        write,
        ServiceOptions::default(),
    )
    .await
    .context("starting the repair")?;
    let scheduler = repairing.service.scheduler.clone();
    let bar = crate::progress::spawn(scheduler.clone());
    signals.forward_to(scheduler);
    let walked: Repaired = repairing.wait().await?;
    crate::progress::finish(bar);
    let run = walked.run;
    match &walked.end {
        RunEnd::Done | RunEnd::Stopped => {}
        RunEnd::RegistryWithoutApi(message) => return Err(anyhow!(message.clone())),
        RunEnd::FlushFailed(reason) => {
            return Err(anyhow!(
                "stopped, but the last plans could not be written ({reason}); their projects are untouched: run again"
            ))
        }
    }
    let mut outcome = Outcome::new(run);
    for plan in &walked.plans {
        outcome.add_plan(plan);
    }
    for written in &walked.written {
        outcome.add_written(written);
    }
    print!("{}", outcome.render(args.format));
    // Notes go to standard error when standard output is JSON or CSV, so it stays parseable.
    let note = |text: String| {
        if args.format == Format::Table {
            println!("{text}");
        } else {
            eprintln!("{text}");
        }
    };
    if let Some(run) = run {
        for text in apply_notes(db, run, args.scope().consent).await? {
            note(text);
        }
    }
    if walked.end == RunEnd::Stopped {
        note(format!(
            "\nStopped before every project was {}: {} projects done; each is {} or untouched. Run `registry-repair repair {}` again to finish.",
            if write { "written" } else { "planned" },
            outcome.totals.projects,
            if write { "fully written" } else { "planned" },
            if write { "apply" } else { "plan" },
        ));
    }
    for moved in &outcome.path_changed {
        eprintln!(
            "registry-repair: not written: project {} ({}): its path changed to {} between the listing and the write; nothing was written for it",
            moved.project_id,
            moved.listed_path,
            moved.path_now.as_deref().unwrap_or("(no route)")
        );
    }
    if !walked.not_planned.is_empty() {
        for failed in &walked.not_planned {
            eprintln!(
                "registry-repair: not planned: project {} ({}): {}",
                failed.project_id, failed.full_path, failed.reason
            );
        }
        return Err(anyhow!(
            "{} projects could not be listed in the registry and were left as they are; run again",
            walked.not_planned.len()
        ));
    }
    if !outcome.path_changed.is_empty() {
        return Err(anyhow!(
            "{} projects were renamed or moved while the run listed them and were left as they are; run `registry-repair repair apply` again",
            outcome.path_changed.len()
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

async fn verify_run(settings: &Settings, db: &Database, run: i64) -> anyhow::Result<()> {
    let registry = registry_client(settings)?;
    let found = verify(db, &registry, run, concurrency(settings)).await?;
    println!(
        "Repair run {run}: {} projects listed again ({} gone since)",
        found.projects, found.gone
    );
    let shown = |path: &str, name: &str| {
        if name.is_empty() {
            path.to_string()
        } else {
            format!("{path}/{name}")
        }
    };
    for u in &found.unrestored {
        println!(
            "  still without a row: project {} {}",
            u.project_id,
            shown(&u.full_path, &u.name)
        );
    }
    for d in &found.dangling {
        let since = match &d.listed_path {
            Some(listed) => format!(" (the project was at {listed} when the run wrote it)"),
            None => String::new(),
        };
        println!(
            "  restored row names nothing the registry holds: project {} {}{since}",
            d.project_id,
            shown(&d.full_path, &d.name)
        );
    }
    for n in &found.not_written {
        let now = n.path_at_write.as_deref().unwrap_or("(no route)");
        match n.written_later_by {
            Some(later) => println!(
                "  project {} ({}): its path changed to {now} before this run wrote it; run {later} wrote it (verify that run)",
                n.project_id, n.listed_path
            ),
            None => println!(
                "  not written: project {} ({}): its path changed to {now} between the listing and the write; run `registry-repair repair apply --project {}` again",
                n.project_id, n.listed_path, n.project_id
            ),
        }
    }
    for (project, error) in &found.errors {
        println!("  not verified: project {project}: {error}");
    }
    if found.is_clean() {
        println!("Every repository the run meant to restore has a row, and every row it restored names a repository the registry holds.");
        Ok(())
    } else {
        Err(anyhow!(
            "repair run {run}: {} repositories still without a row, {} restored rows naming nothing the registry holds, {} projects not written, {} projects not verified",
            found.unrestored.len(),
            found.dangling.len(),
            found.not_written.iter().filter(|n| n.written_later_by.is_none()).count(),
            found.errors.len()
        ))
    }
}

async fn undo(db: &Database, run: i64) -> anyhow::Result<()> {
    let outcome = repair::undo(db, run).await?;
    println!(
        "Undo run {} of repair run {run}: {} rows deleted in {} projects; {} left because they changed since",
        outcome.run,
        outcome.deleted.len(),
        outcome.projects,
        outcome.kept.len()
    );
    for kept in &outcome.kept {
        println!(
            "  left: project {} repository {} name {:?} ({})",
            kept.project_id, kept.repository_id, kept.name, kept.why
        );
    }
    Ok(())
}

/// `repair runs` in the chosen format. JSON: an array of runs; CSV: one line per run.
pub fn render_runs(runs: &[RunRow], format: Format) -> String {
    use std::fmt::Write as _;
    let undone = |r: &RunRow| {
        r.undone_by
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    };
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_default()
    };
    match format {
        Format::Json => {
            let mut text = serde_json::to_string_pretty(runs)
                .unwrap_or_else(|e| format!("{{\"error\": \"serialising the runs: {e}\"}}"));
            text.push('\n');
            text
        }
        Format::Csv => {
            let mut out = String::from(
                "id,kind,started_at,finished_at,scope,projects,restored,skipped,review,deleted,kept,undo_of,undone_by,path_changed\n",
            );
            for r in runs {
                let _ = writeln!(
                    out,
                    "{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                    r.id,
                    r.kind,
                    time(Some(r.started_at)),
                    time(r.finished_at),
                    csv_field(&r.scope),
                    r.projects,
                    r.restored,
                    r.skipped,
                    r.review,
                    r.deleted,
                    r.kept,
                    r.undo_of.map(|u| u.to_string()).unwrap_or_default(),
                    undone(r),
                    r.path_changed
                );
            }
            out
        }
        Format::Table => {
            if runs.is_empty() {
                return "No repair run yet.\n".into();
            }
            let mut out = format!(
                "{:>5}  {:<5}  {:<20}  {:<20}  {:>8}  {:>8}  {:>8}  {:>6}  {:>7}  {:>5}  NOTE\n",
                "RUN",
                "KIND",
                "STARTED",
                "FINISHED",
                "PROJECTS",
                "RESTORED",
                "SKIPPED",
                "REVIEW",
                "DELETED",
                "KEPT"
            );
            for r in runs {
                let mut note = match (r.undo_of, r.undone_by.is_empty()) {
                    (Some(of), _) => format!("undoes run {of}"),
                    (None, false) => format!("undone by {}", undone(r)),
                    (None, true) => r.scope.clone(),
                };
                if r.path_changed > 0 {
                    let changed = format!("{} projects not written: path changed", r.path_changed);
                    note = if note.is_empty() {
                        changed
                    } else {
                        format!("{changed}; {note}")
                    };
                }
                let finished = match r.finished_at {
                    Some(t) => time(Some(t)),
                    None => "(not finished)".into(),
                };
                let _ = writeln!(
                    out,
                    "{:>5}  {:<5}  {:<20}  {:<20}  {:>8}  {:>8}  {:>8}  {:>6}  {:>7}  {:>5}  {}",
                    r.id,
                    r.kind,
                    time(Some(r.started_at)),
                    finished,
                    r.projects,
                    r.restored,
                    r.skipped,
                    r.review,
                    r.deleted,
                    r.kept,
                    note
                );
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply_run(id: i64, path_changed: i32) -> RunRow {
        RunRow {
            id,
            kind: "apply".into(),
            started_at: chrono::DateTime::UNIX_EPOCH,
            finished_at: None,
            scope: "--project 7".into(),
            projects: 3,
            restored: 5,
            skipped: 1,
            review: 2,
            deleted: 0,
            kept: 0,
            path_changed,
            undo_of: None,
            undone_by: Vec::new(),
        }
    }

    #[test]
    fn runs_show_the_projects_a_moved_path_kept_from_the_write() {
        let runs = [apply_run(2, 1), apply_run(1, 0)];
        let table = render_runs(&runs, Format::Table);
        assert!(
            table.contains("1 projects not written: path changed; --project 7"),
            "{table}"
        );
        assert!(table.contains("(not finished)"));
        let csv = render_runs(&runs, Format::Csv);
        let lines: Vec<&str> = csv.lines().collect();
        assert!(lines[0].ends_with(",undone_by,path_changed"));
        assert!(lines[1].ends_with(",1"), "{}", lines[1]);
        assert!(lines[2].ends_with(",0"), "{}", lines[2]);
        let json: serde_json::Value =
            serde_json::from_str(&render_runs(&runs, Format::Json)).expect("JSON");
        assert_eq!(json[0]["path_changed"], 1);
    }
}
