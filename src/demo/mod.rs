//! `registry-repair demo`: a newcomer's first run. Seeds a throwaway GitLab-shaped database, serves
//! a simulated registry on loopback, runs the real service until every project has a row, prints
//! the report and checks every row against what was seeded.

pub mod database;
pub mod seed;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::config::{ConfigError, Settings};
use crate::db::{self, tracking, Database};
use crate::registry::simulator::{RegistrySimulator, TrustedIssuer};
use crate::registry::TokenSigner;
use crate::report::{Format, Listing, Report};
use crate::scheduler::RunEnd;
use crate::service::{self, ServiceOptions};

use seed::World;

/// A key made for the demo alone; it signs tokens only the demo's simulated registry trusts.
pub const DEMO_KEY: &str = include_str!("demo_registry.key");

pub fn run(settings: &Settings, projects: u32, database: &str) -> anyhow::Result<()> {
    if !database::valid_database_name(database) {
        return Err(ConfigError::new(
            "--database",
            format!("`{database}` is not a plain database name (lowercase letters, digits, _)"),
        )
        .into());
    }
    let started = Instant::now();
    let world = World::generate(projects, 2026);
    let url = database::database_url(settings.database.url.expose(), database)?;
    let mut run_settings = settings.clone();
    run_settings.database.url = url.parse()?;
    run_settings.admin.listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));

    let system = actix_rt::System::new();
    system.block_on(async move {
        database::recreate_database(settings.database.url.expose(), database, None)
            .await
            .context("creating the demo database")?;
        database::load_gitlab_schema(&url).await?;
        db::migrate(&url, run_settings.connect_timeout())?;
        let db = Database::new(&url, 2, run_settings.connect_timeout())?;
        world.insert(&db).await?;
        let paths = world.registry_paths();
        println!(
            "Seeded {} projects in {} groups into database `{database}`; the simulated registry holds {} repositories.",
            world.projects.len(),
            world.groups.len(),
            paths.len()
        );

        let signer = Arc::new(TokenSigner::from_pem(
            DEMO_KEY,
            "the built-in demo key",
            &run_settings.registry.issuer,
            &run_settings.registry.audience,
            Duration::from_secs(300),
        )?);
        let simulator = RegistrySimulator::start(
            paths,
            TrustedIssuer {
                public_key_pem: signer.public_key_pem().to_string(),
                kid: signer.kid().to_string(),
                issuer: run_settings.registry.issuer.clone(),
                audience: run_settings.registry.audience.clone(),
            },
            0,
        )?;
        run_settings.registry.url = simulator.url();
        println!(
            "Simulated registry on {}; analysing with max_concurrency {}...",
            simulator.url(),
            run_settings.worker.max_concurrency
        );

        let options = ServiceOptions {
            until_done: true,
            ..ServiceOptions::default()
        };
        let service = service::start(&run_settings, signer, options).await?;
        let bar = crate::progress::spawn(service.scheduler.clone());
        let end = service.wait().await;
        crate::progress::finish(bar);
        let requests = simulator.stats().list_requests;
        simulator.stop().await;
        if let RunEnd::FlushFailed(reason) = end {
            bail!("the demo run could not write its results: {reason}");
        }

        let listing = Listing {
            top: 10,
            min_missing: 1,
            namespaces: 10,
        };
        let report = Report::load(&db, listing).await?;
        println!();
        print!("{}", report.render(Format::Table));

        let expected = world.expected();
        let rows = tracking::all_rows(&db).await?;
        let mut wrong = 0;
        for row in &rows {
            match expected.get(&row.project_id) {
                Some(e) if e.status == row.status && e.missing == row.missing_count => {}
                _ => wrong += 1,
            }
        }
        let unrecorded = expected.len().saturating_sub(rows.len());
        let seeded_missing: i64 = expected.values().map(|e| i64::from(e.missing)).sum();
        println!();
        println!(
            "{} registry requests, {:.1} s in all.",
            requests,
            started.elapsed().as_secs_f64()
        );
        if wrong == 0 && unrecorded == 0 {
            println!(
                "Check: every one of the {} projects has exactly the row seeded ({} missing repositories in all). \
                 The database `{database}` is kept for you to inspect.",
                expected.len(),
                seeded_missing
            );
            Ok(())
        } else {
            bail!(
                "check failed: {wrong} rows differ from what was seeded and {unrecorded} projects have no row"
            )
        }
    })
}
