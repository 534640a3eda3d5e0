//! `repair undo` and `repair verify` after an apply.

use super::*;

#[actix_rt::test]
async fn undo_returns_the_table_to_its_state_before_except_rows_changed_since() {
    let s = seed().await;
    let before = (
        repositories(&s.database).await,
        tracking_rows(&s.database).await,
    );
    let (run, _) = apply(&s, &Scope::default()).await;
    // Since the apply: GitLab schedules one restored row for deletion.
    s.db.execute(&format!(
        "UPDATE container_repositories SET status = 0 WHERE project_id = {} AND name = 'a'",
        s.ids["plain"]
    ))
    .await;
    let outcome = undo_as(&s.database, run).await.expect("undo");
    assert_eq!(outcome.deleted.len(), 3);
    assert_eq!(outcome.kept.len(), 1);
    assert_eq!(
        (outcome.kept[0].name.as_str(), outcome.kept[0].why.as_str()),
        ("a", "status 0")
    );
    let after = repositories(&s.database).await;
    let kept: Vec<&String> = after.iter().filter(|r| !before.0.contains(r)).collect();
    assert_eq!(kept.len(), 1, "only the changed row stays: {kept:?}");
    assert!(kept[0].contains("\"name\":\"a\"") && kept[0].contains("\"status\":0"));
    assert_eq!(after.len(), before.0.len() + 1);
    // The tracking rows say what is missing again: the same as before where nothing changed.
    let missing = |rows: &[String], id: i64| -> String {
        rows.iter()
            .find(|r| r.contains(&format!("\"project_id\":{id},")))
            .and_then(|r| r.split("\"missing_count\":").nth(1))
            .and_then(|r| r.split(',').next())
            .expect("row")
            .to_string()
    };
    let tracking_after = tracking_rows(&s.database).await;
    assert_eq!(
        missing(&tracking_after, s.ids["elsewhere"]),
        missing(&before.1, s.ids["elsewhere"])
    );
    assert_eq!(missing(&tracking_after, s.ids["plain"]), "3", "a stays");

    // The undo is a run; a second undo deletes nothing and lists the changed row again.
    let again = undo_as(&s.database, run).await.expect("undo again");
    assert!(again.deleted.is_empty());
    assert_eq!(again.kept.len(), 1);
    assert_eq!(repositories(&s.database).await, after);
    let runs = repair::runs(&s.database).await.expect("runs");
    let apply_row = runs.iter().find(|r| r.id == run).expect("apply run");
    assert_eq!(apply_row.undone_by, vec![outcome.run, again.run]);
    let undo_row = runs.iter().find(|r| r.id == outcome.run).expect("undo run");
    assert_eq!(
        (
            undo_row.kind.as_str(),
            undo_row.undo_of,
            undo_row.deleted,
            undo_row.kept
        ),
        ("undo", Some(run), 3, 1)
    );
    // Only apply runs can be undone, and only runs that exist.
    assert!(matches!(
        undo_as(&s.database, outcome.run).await,
        Err(repair::RepairError::NotAnApplyRun { .. })
    ));
    assert!(matches!(
        undo_as(&s.database, 999_999).await,
        Err(repair::RepairError::UnknownRun(999_999))
    ));
}

#[actix_rt::test]
async fn verify_reports_nothing_after_apply_and_a_row_lost_since() {
    let s = seed().await;
    let (run, _) = apply(&s, &Scope::default()).await;
    let clean = verify(&s.database, &s.client, run, 2)
        .await
        .expect("verify");
    assert!(clean.is_clean(), "{clean:?}");
    assert_eq!(clean.projects, 10);
    s.db.execute(&format!(
        "DELETE FROM container_repositories WHERE project_id = {} AND name = 'a/b'",
        s.ids["plain"]
    ))
    .await;
    let found = verify(&s.database, &s.client, run, 2)
        .await
        .expect("verify");
    assert_eq!(
        found
            .unrestored
            .iter()
            .map(|u| (u.project_id, u.name.as_str()))
            .collect::<Vec<_>>(),
        vec![(s.ids["plain"], "a/b")]
    );
}

#[actix_rt::test]
async fn undo_leaves_every_row_gitlab_worked_on_since_and_counts_its_projects() {
    let (_w, db, database, registry) = many(3, Duration::ZERO).await;
    let before = repositories(&database).await;
    let settings = many_settings(&db, &registry, 2);
    let repaired = repair_run(&settings, &database, &Scope::default(), Mode::Apply).await;
    let run = repaired.run.expect("an apply run");
    assert_eq!(restored_names(&repaired.written).len(), 9);
    // What GitLab may do to a row after the apply, one thing per row; the third project's rows
    // are left alone.
    let changes = [
        (
            0,
            "",
            "expiration_policy_started_at = now(), expiration_policy_cleanup_status = 3",
            "cleanup ran",
        ),
        (
            0,
            "a",
            "expiration_policy_completed_at = now(), last_cleanup_deleted_tags_count = 2",
            "cleanup ran",
        ),
        (0, "b/c", "delete_started_at = now()", "deletion started"),
        (
            1,
            "",
            "failed_deletion_count = 1, next_delete_attempt_at = now()",
            "deletion started",
        ),
        (1, "a", "status = 0, status_updated_at = now()", "status 0"),
        (
            1,
            "b/c",
            "updated_at = updated_at + interval '1 second'",
            "updated since",
        ),
    ];
    let ids: Vec<i64> = {
        let mut ids: Vec<i64> = repaired.written.iter().map(Written::project_id).collect();
        ids.sort();
        ids
    };
    for (project, name, set, _) in changes {
        db.execute(&format!(
            "UPDATE container_repositories SET {set} WHERE project_id = {} AND name = '{name}'",
            ids[project]
        ))
        .await;
    }
    let outcome = undo_as(&database, run).await.expect("undo");
    assert_eq!(outcome.deleted.len(), 3, "the untouched project's rows");
    let mut kept: Vec<(i64, String, String)> = outcome
        .kept
        .iter()
        .map(|k| (k.project_id, k.name.clone(), k.why.clone()))
        .collect();
    kept.sort();
    let mut want: Vec<(i64, String, String)> = changes
        .iter()
        .map(|(project, name, _, why)| (ids[*project], name.to_string(), why.to_string()))
        .collect();
    want.sort();
    assert_eq!(kept, want);
    let after = repositories(&database).await;
    assert_eq!(after.len(), before.len() + 6);
    // The undo run counts the projects it worked on, once it has finished too.
    let row = repair::run(&database, outcome.run)
        .await
        .expect("query")
        .expect("undo run");
    assert_eq!(
        (row.kind.as_str(), row.projects, row.deleted, row.kept),
        ("undo", 3, 3, 6)
    );
    assert!(row.finished_at.is_some());
}
