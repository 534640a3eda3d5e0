//! `migrate`: creates the tracking table where GitLab has not, and the service's own tables;
//! idempotent.

use crate::config::Settings;
use crate::db;

pub fn execute(settings: &Settings) -> anyhow::Result<()> {
    let applied = db::migrate(
        settings.database.url.expose(),
        settings.database.connect_timeout,
    )?;
    if applied.is_empty() {
        println!("tracking table up to date; nothing to do");
    } else {
        for name in applied {
            println!("applied migration {name}");
        }
    }
    Ok(())
}
