//! What changes under a repair between its listing and its write, or during the write itself: the
//! write locks the project and its route, asks every guard again, and writes nothing for a
//! project whose path moved; GitLab's own deletion or rename that starts during the write waits
//! for its commit and then sees the new rows; a cleanup policy enabled or the registry switched
//! off while the write runs is waited for and seen. And the write's fences: an apply or undo
//! whose lease was taken over or deleted, or whose renewals lapsed, writes nothing.

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};

use super::*;

#[actix_rt::test]
async fn a_registry_switched_off_or_a_cleanup_policy_enabled_after_the_plan_holds_the_write_back() {
    for (change, reason) in [
        (
            "UPDATE project_features SET container_registry_access_level = 0 WHERE project_id = {}",
            Reason::RegistryDisabled,
        ),
        (
            "UPDATE container_expiration_policies SET enabled = true WHERE project_id = {}",
            Reason::CleanupPolicyEnabled,
        ),
    ] {
        let s = seed().await;
        let plans = plain_plan(&s).await;
        assert_eq!(plans[0].with_action(Action::Restore).count(), 3);
        s.db.execute(&change.replace("{}", &s.ids["plain"].to_string()))
            .await;
        let before = repositories(&s.database).await;
        let (_, written) = write(&s, &plans).await;
        let Written::Applied { plan, restored, .. } = &written[0] else {
            panic!("{written:?}");
        };
        assert!(restored.is_empty(), "{reason}");
        assert_eq!(repositories(&s.database).await, before, "{reason}");
        assert_eq!(
            decisions([plan]),
            [
                ("", reason.action(), Some(reason)),
                ("a", reason.action(), Some(reason)),
                ("a/b", reason.action(), Some(reason)),
                // The earlier of the two reasons in the guards' order.
                (
                    "deep/x/y",
                    Action::Skip,
                    Some(reason.min(Reason::NameUnaddressable)),
                ),
            ]
            .into_iter()
            .map(|(name, action, reason)| ((s.ids["plain"], name.to_string()), (action, reason)))
            .collect::<Decisions>(),
            "{reason}"
        );
    }
}

#[actix_rt::test]
async fn a_path_that_changes_between_the_listing_and_the_write_gets_nothing_and_verify_says_so() {
    // A rename of the project itself, and a rename of its parent group (which rewrites the
    // project's route and never touches `projects`).
    for (what, rename) in [
        (
            "project rename",
            "UPDATE routes SET path = 'Repair_Grp/Sub/Renamed', updated_at = now() \
             WHERE source_type = 'Project' AND path = 'Repair_Grp/Sub/Plain'",
        ),
        (
            "parent group rename",
            "UPDATE routes SET path = 'Repair_Grp/Moved' || substr(path, length('Repair_Grp/Sub') + 1), \
                    updated_at = now() \
             WHERE path = 'Repair_Grp/Sub' OR path LIKE 'Repair_Grp/Sub/%'",
        ),
    ] {
        let s = seed().await;
        let plans = plain_plan(&s).await;
        s.db.execute(rename).await;
        let before = (
            repositories(&s.database).await,
            tracking_rows(&s.database).await,
        );
        let (run, written) = write(&s, &plans).await;
        let Written::PathChanged { plan, now } = &written[0] else {
            panic!("{what}: {written:?}");
        };
        assert!(
            plan.repositories
                .iter()
                .all(|r| r.reason == Some(Reason::PathChanged)),
            "{what}"
        );
        assert!(
            now.is_some() && now.as_deref() != Some("Repair_Grp/Sub/Plain"),
            "{what}: {now:?}"
        );
        let after = (
            repositories(&s.database).await,
            tracking_rows(&s.database).await,
        );
        assert_eq!(after, before, "{what}: nothing written, the tracking row as it was");
        assert_eq!(
            count(
                &s.database,
                &format!("SELECT count(*) AS n FROM registry_repair_skipped WHERE run_id = {run}")
            )
            .await,
            0,
            "{what}"
        );

        // The result says so, the run completes, and verify does not call it clean.
        let mut printed = Outcome::new(Some(run));
        printed.add_written(&written[0]);
        assert_eq!(printed.path_changed.len(), 1, "{what}");
        assert_eq!(printed.totals.skip["path_changed"], 4, "{what}");
        repair::finish_apply(&s.database, run)
            .await
            .expect("finish");
        let row = repair::run(&s.database, run)
            .await
            .expect("query")
            .expect("run");
        assert_eq!(
            (row.projects, row.path_changed, row.restored),
            (0, 1, 0),
            "{what}"
        );
        let found = verify(&s.database, &s.client, run, 2)
            .await
            .expect("verify");
        assert!(!found.is_clean(), "{what}: {found:?}");
        assert_eq!(found.not_written.len(), 1, "{what}");
        assert_eq!(found.not_written[0].written_later_by, None, "{what}");

        // The same batch again (a retry) answers the same, and writes nothing.
        let again = apply_as(&s.database, run, &plans)
            .await
            .expect("again");
        assert_eq!(again, written, "{what}");

        // A later apply plans the project under its new path (where the registry holds none of
        // those images) and writes it; the first run's verify then points there.
        let (later, _) = apply(
            &s,
            &only(s.ids["plain"]),
        )
        .await;
        let found = verify(&s.database, &s.client, run, 2)
            .await
            .expect("verify");
        assert_eq!(found.not_written[0].written_later_by, Some(later), "{what}");
        assert!(found.is_clean(), "{what}: {found:?}");
    }
}

#[actix_rt::test]
async fn verify_reports_the_restored_rows_of_a_project_renamed_since_the_apply() {
    let s = seed().await;
    let (run, _) = apply(&s, &Scope::default()).await;
    assert!(verify(&s.database, &s.client, run, 2)
        .await
        .expect("verify")
        .is_clean());
    s.db.execute(
        "UPDATE routes SET path = 'Repair_Grp/Sub/Renamed', updated_at = now() \
         WHERE source_type = 'Project' AND path = 'Repair_Grp/Sub/Plain'",
    )
    .await;
    let found = verify(&s.database, &s.client, run, 2)
        .await
        .expect("verify");
    assert!(!found.is_clean());
    assert_eq!(
        found
            .dangling
            .iter()
            .map(|d| (
                d.project_id,
                d.name.as_str(),
                d.full_path.as_str(),
                d.listed_path.as_deref()
            ))
            .collect::<Vec<_>>(),
        ["", "a", "a/b"]
            .into_iter()
            .map(|name| (
                s.ids["plain"],
                name,
                "Repair_Grp/Sub/Renamed",
                Some("Repair_Grp/Sub/Plain")
            ))
            .collect::<Vec<_>>()
    );
}

/// How many backends of this test's database wait for a lock running a statement that starts
/// with `statement`.
async fn waiting(s: &Seeded, statement: &str) -> i64 {
    count(
        &s.database,
        &format!(
            "SELECT count(*) AS n FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock' \
               AND query LIKE '{statement}%'"
        ),
    )
    .await
}

async fn connect(s: &Seeded) -> AsyncPgConnection {
    AsyncPgConnection::establish(&s.db.url)
        .await
        .expect("a connection of the test's own")
}

#[actix_rt::test]
async fn a_deletion_or_rename_that_starts_during_the_write_waits_for_its_commit_and_sees_the_rows()
{
    let s = seed().await;
    let _xmin = common::keeping_a_transaction_open().await;
    let plans = plain_plan(&s).await;
    let project = s.ids["plain"];
    let within = Duration::from_secs(20);

    // A gate: the write's INSERT waits inside its transaction, after it locked the project and
    // its route.
    let mut gate = connect(&s).await;
    gate.batch_execute("BEGIN; LOCK TABLE container_repositories IN SHARE ROW EXCLUSIVE MODE")
        .await
        .expect("gate");
    let run = repair::start_apply(&s.database, &Scope::default())
        .await
        .expect("run");
    let database = s.database.clone();
    let writing = actix_rt::spawn(async move { apply_as(&database, run, &plans).await });
    assert!(
        common::eventually(within, || async { waiting(&s, "WITH wanted").await == 1 }).await,
        "the write reaches its INSERT"
    );

    // GitLab starts deleting the project (Projects::DestroyService's first UPDATE) and renaming
    // it, each in a transaction of its own.
    let mut deletion = connect(&s).await;
    let deleting = actix_rt::spawn(async move {
        use diesel_async::RunQueryDsl;
        deletion.batch_execute("BEGIN").await.expect("BEGIN");
        deletion
            .batch_execute(&format!(
                "UPDATE projects SET pending_delete = true WHERE id = {project}"
            ))
            .await
            .expect("the deletion's UPDATE");
        // What the deletion then walks: the project's rows, the restored ones among them.
        #[derive(diesel::QueryableByName)]
        struct Name {
            #[diesel(sql_type = Text)]
            name: String,
        }
        let names: Vec<Name> = diesel::sql_query(format!(
            "SELECT name FROM container_repositories WHERE project_id = {project} ORDER BY name"
        ))
        .load(&mut deletion)
        .await
        .expect("the rows the deletion walks");
        deletion.batch_execute("COMMIT").await.expect("commit");
        names.into_iter().map(|n| n.name).collect::<Vec<_>>()
    });
    let mut rename = connect(&s).await;
    let renaming = actix_rt::spawn(async move {
        rename
            .batch_execute(&format!(
                "UPDATE routes SET path = 'Repair_Grp/Sub/Renamed', updated_at = now() \
                 WHERE source_type = 'Project' AND source_id = {project}"
            ))
            .await
            .expect("the rename");
    });
    assert!(
        common::eventually(within, || async {
            waiting(&s, "UPDATE projects").await == 1 && waiting(&s, "UPDATE routes").await == 1
        })
        .await,
        "the deletion and the rename wait for the write's transaction"
    );

    gate.batch_execute("ROLLBACK").await.expect("open the gate");
    let written = tokio::time::timeout(within, writing)
        .await
        .expect("the write ends")
        .expect("the write's task")
        .expect("the write");
    let Written::Applied { restored, .. } = &written[0] else {
        panic!("{written:?}");
    };
    assert_eq!(restored.len(), 3, "written before either committed");
    let seen = tokio::time::timeout(within, deleting)
        .await
        .expect("the deletion ends")
        .expect("the deletion's task");
    assert_eq!(
        seen,
        vec!["", "a", "a/b", "known", "rails-only"],
        "the deletion walks the restored rows too"
    );
    tokio::time::timeout(within, renaming)
        .await
        .expect("the rename ends")
        .expect("the rename's task");
}

#[actix_rt::test]
async fn a_cleanup_policy_enabled_or_the_registry_switched_off_during_the_write_is_waited_for_and_holds_it_back(
) {
    let within = Duration::from_secs(20);
    for (change, reason) in [
        (
            "UPDATE container_expiration_policies SET enabled = true WHERE project_id = {}",
            Reason::CleanupPolicyEnabled,
        ),
        (
            "UPDATE project_features SET container_registry_access_level = 0 WHERE project_id = {}",
            Reason::RegistryDisabled,
        ),
    ] {
        let s = seed().await;
        let _xmin = common::keeping_a_transaction_open().await;
        let project = s.ids["plain"];
        // The seed gives the project a cleanup policy, disabled, and its registry on.
        assert_eq!(
            count(
                &s.database,
                &format!(
                    "SELECT count(*) AS n FROM container_expiration_policies \
                     WHERE project_id = {project} AND NOT enabled"
                )
            )
            .await,
            1
        );
        let plans = plain_plan(&s).await;
        assert_eq!(plans[0].with_action(Action::Restore).count(), 3, "{reason}");
        let before = repositories(&s.database).await;

        // GitLab's settings update starts before the write and commits while it waits.
        let mut setting = connect(&s).await;
        setting
            .batch_execute(&format!(
                "BEGIN; {}",
                change.replace("{}", &project.to_string())
            ))
            .await
            .expect("the change, not committed");
        let run = repair::start_apply(&s.database, &Scope::default())
            .await
            .expect("run");
        let database = s.database.clone();
        let writing = actix_rt::spawn(async move { apply_as(&database, run, &plans).await });
        assert!(
            common::eventually(within, || async { waiting(&s, "WITH route").await == 1 }).await,
            "{reason}: the write waits for the change when it locks the guarded rows"
        );
        assert_eq!(
            repositories(&s.database).await,
            before,
            "{reason}: nothing written while it waits"
        );
        setting
            .batch_execute("COMMIT")
            .await
            .expect("the change commits");

        let written = tokio::time::timeout(within, writing)
            .await
            .expect("the write ends")
            .expect("the write's task")
            .expect("the write");
        let Written::Applied { plan, restored, .. } = &written[0] else {
            panic!("{reason}: {written:?}");
        };
        assert!(restored.is_empty(), "{reason}: {restored:?}");
        assert_eq!(repositories(&s.database).await, before, "{reason}");
        assert_eq!(
            decisions([plan]),
            [
                ("", reason.action(), Some(reason)),
                ("a", reason.action(), Some(reason)),
                ("a/b", reason.action(), Some(reason)),
                (
                    "deep/x/y",
                    Action::Skip,
                    Some(reason.min(Reason::NameUnaddressable)),
                ),
            ]
            .into_iter()
            .map(|(name, action, reason)| ((project, name.to_string()), (action, reason)))
            .collect::<Decisions>(),
            "{reason}"
        );
        // Held back in the run's own record, with the reason, and still missing.
        assert_eq!(
            lines(
                &s.database,
                &format!(
                    "SELECT name, action, reason FROM registry_repair_skipped \
                     WHERE run_id = {run} AND project_id = {project} AND name <> 'deep/x/y' \
                     ORDER BY name"
                )
            )
            .await,
            ["", "a", "a/b"]
                .iter()
                .map(|name| format!(
                    r#"{{"name":"{name}","action":"{}","reason":"{}"}}"#,
                    reason.action().as_str(),
                    reason.as_str()
                ))
                .collect::<Vec<_>>(),
            "{reason}"
        );
        assert_eq!(
            count(
                &s.database,
                &format!(
                    "SELECT missing_count AS n FROM container_registry_data_repair_details \
                     WHERE project_id = {project}"
                )
            )
            .await,
            4,
            "{reason}: everything still missing"
        );
    }
}

/// How a run lost its hold on the repair lease before its write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lost {
    /// Another holder's row replaced the run's (as a takeover of an expired lease does).
    TakenOver,
    /// The row is gone.
    Deleted,
    /// The row still names the run, but its renewals lapsed: its fence is closed.
    FenceClosed,
}

const LOST: [Lost; 3] = [Lost::TakenOver, Lost::Deleted, Lost::FenceClosed];

impl Lost {
    /// The lease row changed as this case says, behind the run's back.
    async fn happen(self, s: &Seeded, run: i64) {
        match self {
            Lost::TakenOver => {
                s.db.execute(&format!(
                    "UPDATE registry_repair_leases SET kind = 'apply', host = 'other-host', \
                         pid = 4242, run_id = {}, acquired_at = now(), expires_at = now() + interval '30 seconds'",
                    run + 100
                ))
                .await
            }
            Lost::Deleted => s.db.execute("DELETE FROM registry_repair_leases").await,
            Lost::FenceClosed => {}
        }
    }

    /// The run's fence: closed already in [`Lost::FenceClosed`], never closing otherwise.
    fn fence(self) -> Arc<Fence> {
        Arc::new(match self {
            Lost::FenceClosed => Fence::until(std::time::Instant::now()),
            Lost::TakenOver | Lost::Deleted => Fence::unbounded(),
        })
    }

    /// Asserts that `error` is the refusal this case must end in, naming who holds the lease now:
    /// the write's `doing`, refused where it checks the lease row (`checked_at`), or, with the
    /// fence closed, where it commits (so after it wrote, and rolled back).
    fn assert_refused(self, error: &DbError, doing: &str, checked_at: &str, run: i64) {
        if let (Lost::FenceClosed, DbError::LeaseLapsed { what, .. }) = (self, error) {
            assert_eq!(what, &format!("{doing}committing"), "{self:?}");
            let message = error.to_string();
            assert!(
                message.contains("was not renewed within 15 s") && message.contains("rolled back"),
                "{self:?}: {message}"
            );
            return;
        }
        let DbError::LeaseLost { what, holder } = error else {
            panic!("{self:?}: {error:?}");
        };
        let step = match self {
            Lost::TakenOver | Lost::Deleted => checked_at,
            Lost::FenceClosed => "committing",
        };
        assert_eq!(what, &format!("{doing}{step}"), "{self:?}");
        match self {
            Lost::TakenOver => assert!(
                holder.starts_with(&format!(
                    "repair apply run {} on host other-host, pid 4242",
                    run + 100
                )),
                "{self:?}: {holder}"
            ),
            Lost::Deleted => assert!(holder.starts_with("nobody"), "{self:?}: {holder}"),
            Lost::FenceClosed => panic!("{self:?}: a lapse is no loss to a holder: {holder}"),
        }
        let message = error.to_string();
        assert!(
            message.contains("no longer holds the repair lease"),
            "{self:?}: {message}"
        );
    }
}

/// What an apply or an undo writes, every row of it: GitLab's rows and tracking rows, and the
/// runs' claims, audit, held-back rows and counts.
async fn everything_written(database: &Database) -> Vec<Vec<String>> {
    let mut state = vec![repositories(database).await, tracking_rows(database).await];
    for sql in [
        "SELECT * FROM registry_repair_run_projects ORDER BY run_id, project_id",
        "SELECT * FROM registry_repair_restored ORDER BY run_id, project_id, repository_id",
        "SELECT * FROM registry_repair_skipped ORDER BY run_id, project_id, name",
        "SELECT id, projects, restored, skipped, review, deleted, kept, finished_at \
         FROM registry_repair_runs ORDER BY id",
    ] {
        state.push(lines(database, sql).await);
    }
    state
}

#[actix_rt::test]
async fn an_apply_whose_lease_was_taken_over_or_deleted_or_whose_fence_closed_writes_nothing() {
    for lost in LOST {
        let s = seed().await;
        let plans = plain_plan(&s).await;
        let project = s.ids["plain"];
        let run = repair::start_apply(&s.database, &Scope::default())
            .await
            .expect("run");
        let lease = take_lease(&s.database, "apply").await;
        repair_lease::record_run(&s.database, &lease, run)
            .await
            .expect("the run recorded in the lease");
        lost.happen(&s, run).await;
        let before = everything_written(&s.database).await;

        let error = repair::apply_batch(&s.database, run, &lost.fence(), &plans)
            .await
            .expect_err("the write is refused");
        lost.assert_refused(
            &error,
            &format!("repair run {run}, project {project}: "),
            "writing the project",
            run,
        );
        assert_eq!(
            everything_written(&s.database).await,
            before,
            "{lost:?}: nothing written"
        );
        assert_eq!(
            count(
                &s.database,
                &format!("SELECT count(*) AS n FROM registry_repair_leases WHERE run_id = {run}")
            )
            .await,
            i64::from(lost == Lost::FenceClosed),
            "{lost:?}: the lease row as the case left it"
        );
        // The same batch once the run holds the lease again (taken afresh): written whole, so
        // the refusal left nothing half done.
        let _ = repair_lease::release(&s.database, &lease).await;
        s.db.execute("DELETE FROM registry_repair_leases").await;
        let written = apply_as(&s.database, run, &plans)
            .await
            .expect("written with the lease");
        assert_eq!(restored_names(&written).len(), 3, "{lost:?}");
    }
}

#[actix_rt::test]
async fn an_undo_whose_lease_was_taken_over_or_deleted_or_whose_fence_closed_deletes_nothing() {
    let within = Duration::from_secs(20);
    for lost in LOST {
        let s = seed().await;
        let project = s.ids["plain"];
        let plans = plain_plan(&s).await;
        let (applied, written) = write(&s, &plans).await;
        assert_eq!(restored_names(&written).len(), 3);
        let before = everything_written(&s.database).await;
        let lease = take_lease(&s.database, "undo").await;

        let error = if lost == Lost::FenceClosed {
            repair::undo(&s.database, applied, &lease, &lost.fence()).await
        } else {
            // A gate: the undo has recorded its run in the lease and waits before its first
            // project while the lease changes hands.
            let _xmin = common::keeping_a_transaction_open().await;
            let mut gate = connect(&s).await;
            gate.batch_execute(
                "BEGIN; LOCK TABLE registry_repair_restored IN ACCESS EXCLUSIVE MODE",
            )
            .await
            .expect("gate");
            let database = s.database.clone();
            let (undo_lease, fence) = (lease.clone(), lost.fence());
            let undoing = actix_rt::spawn(async move {
                repair::undo(&database, applied, &undo_lease, &fence).await
            });
            assert!(
                common::eventually(within, || async {
                    waiting(
                        &s,
                        r#"SELECT DISTINCT "registry_repair_restored"."project_id""#,
                    )
                    .await
                        == 1
                })
                .await,
                "{lost:?}: the undo reaches its walk"
            );
            assert_eq!(
                count(
                    &s.database,
                    "SELECT count(*) AS n FROM registry_repair_leases l \
                     JOIN registry_repair_runs r ON r.id = l.run_id AND r.kind = 'undo'"
                )
                .await,
                1,
                "{lost:?}: the lease names the undo's run"
            );
            lost.happen(&s, applied).await;
            gate.batch_execute("ROLLBACK").await.expect("open the gate");
            tokio::time::timeout(within, undoing)
                .await
                .expect("the undo ends")
                .expect("the undo's task")
        };
        let Err(RepairError::Db(error)) = error else {
            panic!("{lost:?}: {error:?}");
        };
        lost.assert_refused(
            &error,
            &format!("undoing repair run {applied}, project {project}: "),
            "deleting",
            applied,
        );
        // The undo's own run row stays, unfinished and counting nothing; nothing else changed.
        let mut after = everything_written(&s.database).await;
        let undo_run = after[5].pop().expect("the undo's run row");
        assert!(
            undo_run.contains(r#""projects":0,"restored":0,"skipped":0,"review":0,"deleted":0,"kept":0,"finished_at":null"#),
            "{lost:?}: {undo_run}"
        );
        assert_eq!(after, before, "{lost:?}: nothing deleted or undone");
        let _ = repair_lease::release(&s.database, &lease).await;
    }
}
