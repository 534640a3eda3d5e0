//! `demo`: a newcomer's first run. Seeds a throwaway GitLab-shaped database, serves a simulated
//! registry on loopback, runs the real service until every project has a row, prints the report
//! and checks every row against what was seeded; then plans the repair (a dry run, nothing
//! written) and checks the plan against what was seeded too. With `--serve`, it then keeps the
//! registry, the database and a `run` serving until SIGTERM or SIGINT, and writes the settings to
//! practise the repair with ([`practice`]).
//!
//! The database is the demo's only when the demo made it: it carries the demo's mark
//! ([`database::DEMO_MARK`]). Any other database of that name is refused, untouched.

mod practice;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use chrono::SecondsFormat;

use super::repair::plan::{self, Mode};
use crate::analysis::Analysis;
use crate::config::{ConfigError, Settings};
use crate::db::repair::Scope;
use crate::db::{self, missing, tracking, Database};
use crate::demo::database::DemoDatabaseError;
use crate::demo::seed::World;
use crate::demo::{database, DEMO_DATABASE, DEMO_KEY, DEMO_PROJECTS};
use crate::registry::simulator::{created_at, size_of, RegistrySimulator, TrustedIssuer};
use crate::registry::TokenSigner;
use crate::repair::guards::Consent;
use crate::repair::{Action, Reason};
use crate::report::{units, Listing, Report, ReportFormat};
use crate::scheduler::RunEnd;
use crate::service::{self, ServiceOptions};

/// Where the demo's practice steps are documented.
pub const PRACTICE_DOCS: &str = "docs/repair.md#practising-the-repair";

pub fn execute(
    settings: &Settings,
    projects: u32,
    database: &str,
    serve: bool,
) -> anyhow::Result<()> {
    if !database::valid_database_name(database) {
        return Err(ConfigError::new(
            "--database",
            format!("`{database}` is not a plain database name (lowercase letters, digits, _)"),
        )
        .into());
    }
    let started = Instant::now();
    let world = World::generate(projects, 2026);
    let mut run_settings = settings.clone();
    run_settings.admin.listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));

    actix_rt::System::new().block_on(async move {
        let server = settings.database.url.expose();
        // Held until the demo ends: no second demo drops the database meanwhile.
        let mut claim = database::claim_demo_database(server, database)
            .await
            .map_err(refused)?;
        let url = claim.recreate(server).await.map_err(refused)?;
        run_settings.database.url = url.parse()?;
        let db = seed(&url, &run_settings, database, &world).await?;
        let (signer, simulator) = simulate_registry(&mut run_settings, &world)?;
        analyse(&run_settings, signer.clone()).await?;
        let analysed = check_report(&db, &world).await;
        let planned = check_plan(&run_settings, signer.clone(), &db, &world).await;
        let stats = simulator.stats();
        println!(
            "\n{} registry requests ({} listings, {} sizes), {:.1} s in all. The database `{database}` is kept for you to inspect.",
            stats.list_requests + stats.size_requests,
            stats.list_requests,
            stats.size_requests,
            started.elapsed().as_secs_f64()
        );
        let checked = analysed.and(planned);
        let ended = match checked {
            Ok(()) if serve => {
                practice::serve(&run_settings, signer, database, &simulator).await
            }
            Ok(()) => {
                println!(
                    "To practise the repair on it: `{}` keeps the registry and the database serving ({PRACTICE_DOCS}).",
                    serve_command(projects, database)
                );
                Ok(())
            }
            Err(error) => Err(error),
        };
        simulator.stop().await;
        drop(claim);
        ended
    })
}

/// The demo's refusal of a database is the operator's to fix: another `--database` (exit 2).
fn refused(error: DemoDatabaseError) -> anyhow::Error {
    match error {
        DemoDatabaseError::Db(error) => {
            anyhow::Error::new(error).context("creating the demo's database")
        }
        refusal => ConfigError::new("--database", refusal.to_string()).into(),
    }
}

/// `registry-repair demo --serve`, with the arguments this run was given.
fn serve_command(projects: u32, database: &str) -> String {
    let mut command = "registry-repair demo --serve".to_string();
    if projects != DEMO_PROJECTS {
        command.push_str(&format!(" --projects {projects}"));
    }
    if database != DEMO_DATABASE {
        command.push_str(&format!(" --database {database}"));
    }
    command
}

/// GitLab's tables, the migrations, and `world`, in the demo's fresh database at `url`.
async fn seed(
    url: &str,
    run_settings: &Settings,
    database: &str,
    world: &World,
) -> anyhow::Result<Database> {
    database::load_gitlab_schema(url).await?;
    db::migrate(url, run_settings.database.connect_timeout)?;
    let db = Database::new(url, 2, run_settings.database.connect_timeout)?;
    world.insert(&db).await?;
    println!(
        "Seeded {} projects in {} groups into database `{database}`; the simulated registry holds {} repositories.",
        world.projects.len(),
        world.groups.len(),
        world.registry_paths().len()
    );
    Ok(db)
}

/// The simulated registry serving `world`, trusting the demo's own key; `settings` point at it.
fn simulate_registry(
    settings: &mut Settings,
    world: &World,
) -> anyhow::Result<(Arc<TokenSigner>, RegistrySimulator)> {
    let signer = Arc::new(TokenSigner::from_pem(
        DEMO_KEY,
        "the built-in demo key",
        &settings.registry.issuer,
        &settings.registry.audience,
        Duration::from_secs(300),
    )?);
    let simulator = RegistrySimulator::start(
        world.registry_paths(),
        TrustedIssuer {
            public_key_pem: signer.public_key_pem().to_string(),
            kid: signer.kid().to_string(),
            issuer: settings.registry.issuer.clone(),
            audience: settings.registry.audience.clone(),
        },
        0,
    )?;
    settings.registry.url = simulator.url().parse()?;
    println!(
        "Simulated registry on {}; analysing with max_concurrency {}...",
        simulator.url(),
        settings.worker.max_concurrency
    );
    Ok((signer, simulator))
}

/// The real service, until every project has a row.
async fn analyse(settings: &Settings, signer: Arc<TokenSigner>) -> anyhow::Result<()> {
    let analysis = Analysis {
        until_done: true,
        ..Analysis::new(settings)
    };
    let service = service::start(settings, signer, analysis, ServiceOptions::default()).await?;
    let bar = crate::progress::spawn(service.scheduler.clone());
    let end = service.wait().await;
    crate::progress::finish(bar);
    if let RunEnd::FlushFailed(reason) = end {
        bail!("the demo run could not write its results: {reason}");
    }
    Ok(())
}

/// Prints the report, and checks every tracking row against what was seeded.
async fn check_report(db: &Database, world: &World) -> anyhow::Result<()> {
    let listing = Listing {
        top: 10,
        min_missing: 1,
        namespaces: 10,
    };
    let report = Report::load(db, listing).await?;
    println!();
    print!(
        "{}",
        report.render(ReportFormat::Table, chrono::Utc::now())?
    );

    let expected = world.expected();
    let rows = tracking::all_rows(db).await?;
    let wrong = rows
        .iter()
        .filter(|row| {
            !expected
                .get(&row.project_id)
                .is_some_and(|e| e.status == row.status && e.missing == row.missing_count)
        })
        .count();
    let unrecorded = expected.len().saturating_sub(rows.len());
    let seeded_missing: i64 = expected.values().map(|e| i64::from(e.missing)).sum();
    if wrong != 0 || unrecorded != 0 {
        bail!(
            "check failed: {wrong} rows differ from what was seeded and {unrecorded} projects have no row"
        )
    }
    let bytes = check_recorded(db, world).await?;
    println!(
        "\nCheck: every one of the {} projects has exactly the row seeded ({seeded_missing} missing repositories in all), \
         and each missing repository is recorded with the registry's size and creation time ({} in all).",
        expected.len(),
        units::bytes(bytes)
    );
    Ok(())
}

/// Checks the recorded missing repositories against the lost ones seeded, with the sizes and
/// dates the simulated registry gives; returns their bytes.
async fn check_recorded(db: &Database, world: &World) -> anyhow::Result<i64> {
    let paths: BTreeMap<i64, String> = world
        .projects
        .iter()
        .filter_map(|p| Some((p.id, p.full_path.as_ref()?.to_lowercase())))
        .collect();
    let want: BTreeSet<(i64, String, Option<i64>, Option<String>)> = world
        .lost_repositories()
        .into_iter()
        .filter_map(|(project, name)| {
            let base = paths.get(&project)?;
            let path = if name.is_empty() {
                base.clone()
            } else {
                format!("{base}/{name}")
            };
            Some((
                project,
                path.clone(),
                Some(size_of(&path)),
                Some(created_at(&path)),
            ))
        })
        .collect();
    let got: BTreeSet<(i64, String, Option<i64>, Option<String>)> = missing::all(db)
        .await?
        .into_iter()
        .map(|(project, r)| {
            let created = r
                .registry_created_at
                .map(|at| at.to_rfc3339_opts(SecondsFormat::Millis, true));
            (project, r.registry_path, r.size_bytes, created)
        })
        .collect();
    if got != want {
        bail!(
            "check failed: {} recorded missing repositories differ from the {} seeded as lost (path, size or creation time)",
            got.symmetric_difference(&want).count(),
            want.len()
        );
    }
    Ok(want.iter().filter_map(|(_, _, size, _)| *size).sum())
}

/// `repair plan` on the seeded world (a dry run: nothing is written), checked against the
/// repositories seeded as lost: each restored, unless a guard holds it back for the reason the
/// world was built with ([`World::expected_plan`]).
async fn check_plan(
    settings: &Settings,
    signer: Arc<TokenSigner>,
    db: &Database,
    world: &World,
) -> anyhow::Result<()> {
    println!("\nPlanning the repair (repair plan: a dry run, nothing is written)...");
    let repairing = plan::start(
        settings,
        signer,
        db,
        Scope::default(),
        Mode::Plan,
        ServiceOptions::default(),
    )
    .await?;
    let bar = crate::progress::spawn(repairing.service.scheduler.clone());
    let planned = repairing.wait().await?;
    crate::progress::finish(bar);
    let mut got: BTreeMap<(i64, String), (Action, Option<Reason>)> = BTreeMap::new();
    for plan in &planned.plans {
        for r in &plan.repositories {
            got.insert((plan.project_id, r.name.clone()), (r.action, r.reason));
        }
    }
    let count = |action: Action, reason: Option<Reason>| {
        got.values()
            .filter(|(a, r)| *a == action && *r == reason)
            .count()
    };
    let counted = |action: Action| -> Vec<String> {
        Reason::ALL
            .into_iter()
            .filter(|r| r.action() == action)
            .filter_map(|r| match count(action, Some(r)) {
                0 => None,
                n => Some(format!("{r} {n}")),
            })
            .collect()
    };
    let restore = count(Action::Restore, None);
    let (skips, reviews) = (counted(Action::Skip), counted(Action::Review));
    let summary: Vec<String> = std::iter::once(format!("restore {restore}"))
        .chain(skips.iter().cloned())
        .chain(reviews.iter().cloned())
        .collect();
    println!(
        "Repair plan for {} projects: {}.",
        planned.plans.len(),
        summary.join(", ")
    );
    let want = world.expected_plan(Consent::default());
    if planned.end == RunEnd::Done && planned.not_planned.is_empty() && got == want {
        let held = got.len() - restore;
        println!(
            "Check: the plan restores exactly the {restore} lost repositories GitLab can give their projects, and holds back the other {held}, each for the reason it was seeded with: skip {}; review {}.",
            skips.join(", "),
            reviews.join(", ")
        );
        Ok(())
    } else {
        let differ = want.iter().filter(|(k, v)| got.get(*k) != Some(*v)).count()
            + got.keys().filter(|k| !want.contains_key(*k)).count();
        bail!(
            "check failed: the repair plan ended {:?} with {} projects not planned, and {differ} repositories differ from what was seeded",
            planned.end,
            planned.not_planned.len()
        )
    }
}
