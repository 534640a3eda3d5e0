//! `migrate`: creates the tracking table where GitLab has not, and the service's own tables;
//! idempotent. It says which migrations it ran, and whether the tracking table was GitLab's.

use crate::config::Settings;
use crate::db::{self, Migrated, TRACKING_MIGRATION, TRACKING_TABLE};

pub fn execute(settings: &Settings) -> anyhow::Result<()> {
    let migrated = db::migrate(
        settings.database.url.expose(),
        settings.database.connect_timeout,
    )?;
    print!("{}", said(&migrated));
    Ok(())
}

/// What `migrate` prints.
fn said(migrated: &Migrated) -> String {
    let Migrated {
        applied,
        known,
        tracking_table_was_there,
    } = migrated;
    if applied.is_empty() {
        return format!("nothing to do: all {known} migrations had run\n");
    }
    let mut out: String = applied
        .iter()
        .map(|name| format!("applied migration {name}\n"))
        .collect();
    let tracking = if !applied.iter().any(|name| name == TRACKING_MIGRATION) {
        "already there (an earlier migrate made it, or GitLab)"
    } else if *tracking_table_was_there {
        "already there (GitLab 15.10 to 19.0 create it), left as it is"
    } else {
        "created, as GitLab defines it"
    };
    out.push_str(&format!("{TRACKING_TABLE}: {tracking}\n"));
    out.push_str(&format!(
        "{} of {known} migrations applied; all have run now\n",
        applied.len()
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn migrated(applied: &[&str], there: bool) -> Migrated {
        Migrated {
            applied: applied.iter().map(|s| s.to_string()).collect(),
            known: 10,
            tracking_table_was_there: there,
        }
    }

    #[test]
    fn it_says_what_it_applied_and_whose_table_it_found() {
        assert_eq!(
            said(&migrated(&[], true)),
            "nothing to do: all 10 migrations had run\n"
        );
        assert_eq!(
            said(&migrated(&[TRACKING_MIGRATION, "b"], false)),
            "applied migration 2026-11-25-000000_create_tracking_table\napplied migration b\n\
             container_registry_data_repair_details: created, as GitLab defines it\n\
             2 of 10 migrations applied; all have run now\n"
        );
        assert!(said(&migrated(&[TRACKING_MIGRATION], true)).contains(
            "container_registry_data_repair_details: already there (GitLab 15.10 to 19.0 create \
             it), left as it is\n"
        ));
        assert!(said(&migrated(&["later"], true))
            .contains("container_registry_data_repair_details: already there (an earlier"));
    }
}
