//! `repair undo RUN`: deletes the rows an apply run restored that GitLab has not touched since,
//! and lists the others with why, holding the repair lease.

use anyhow::Context as _;

use super::lease::HeldLease;
use crate::commands::Unfinished;
use crate::db::repair;
use crate::db::Database;
use crate::signals::Signals;

/// Holds the repair lease while it runs: refused at once while another apply or undo runs, and
/// stopped as soon as a renewal finds the lease taken, or on SIGTERM / SIGINT (releasing it).
pub async fn execute(db: &Database, run: i64) -> anyhow::Result<()> {
    // Listen first, so that no signal finds its default (killing) action while the lease is held.
    let mut signals = Signals::listen().context("listening for SIGTERM and SIGINT")?;
    // A run that cannot be undone is refused before the lease is taken.
    repair::apply_run(db, run, "undone").await?;
    let held = HeldLease::acquire(db, "undo").await?;
    // Dropping the undo mid-project rolls that project's transaction back: each project is
    // undone whole or not at all, and `repair undo RUN` again finishes the job.
    let undone = tokio::select! {
        undone = repair::undo(db, run, held.lease(), held.fence()) => undone.map_err(anyhow::Error::from),
        lost = held.lost() => Err(lost.into()),
        signal = signals.next() => Err(Unfinished(format!(
            "undo of repair run {run} stopped by {signal}; each project is undone whole or untouched: run `registry-repair repair undo {run}` again to finish"
        )).into()),
    };
    held.release().await;
    let outcome = undone?;
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
