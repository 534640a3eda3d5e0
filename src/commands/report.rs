//! `report`: totals and the projects with the most missing repositories, from the tracking table.

use super::current_thread_runtime;
use crate::config::Settings;
use crate::db::Database;
use crate::format::Format;
use crate::report::{Listing, Report};

pub fn execute(settings: &Settings, format: Format, listing: Listing) -> anyhow::Result<()> {
    let report = current_thread_runtime()?.block_on(async {
        let db = Database::for_settings(settings, 1)?;
        db.check_ready().await?;
        anyhow::Ok(Report::load(&db, listing).await?)
    })?;
    print!("{}", report.render(format)?);
    Ok(())
}
