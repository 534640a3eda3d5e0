//! `repair undo RUN`: deletes the rows an apply run restored that GitLab has not touched since,
//! and lists the others with why.

use crate::db::repair;
use crate::db::Database;

pub async fn execute(db: &Database, run: i64) -> anyhow::Result<()> {
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
