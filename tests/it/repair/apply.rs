//! `repair apply`'s writes: exactly the planned rows once, retried batches, the write-time guards, a
//! broken unique index, and a pooler's statement mode.

use super::*;

#[actix_rt::test]
async fn apply_writes_exactly_the_planned_rows_once_and_a_second_apply_restores_nothing() {
    let s = seed().await;
    let before = repositories(&s.database).await;
    let (run, written) = apply(&s, &Scope::default()).await;
    let mut wanted: Vec<(i64, String)> = expected(&s.ids)
        .into_iter()
        .filter(|(_, (action, _))| *action == Action::Restore)
        .map(|(key, _)| key)
        .collect();
    wanted.sort();
    assert_eq!(restored_names(&written), wanted);

    // Exactly those rows are new; every row there before is byte-identical.
    let after = repositories(&s.database).await;
    assert_eq!(&after[..before.len()], &before[..]);
    let new = lines(
        &s.database,
        &format!(
            "SELECT project_id, name, status, expiration_policy_cleanup_status, failed_deletion_count, \
                    created_at = updated_at AS same_times, \
                    abs(extract(epoch FROM (now() AT TIME ZONE 'UTC') - created_at)) < 60 AS utc_now \
             FROM container_repositories WHERE id > (SELECT max(id) FROM container_repositories) - {} \
             ORDER BY project_id, name",
            after.len() - before.len()
        ),
    )
    .await;
    assert_eq!(new.len(), wanted.len());
    for line in &new {
        assert!(
            line.contains("\"status\":null")
                && line.contains("\"expiration_policy_cleanup_status\":0")
                && line.contains("\"same_times\":true")
                && line.contains("\"utc_now\":true"),
            "{line}"
        );
    }
    // The audit holds one row per restored row, the skipped ones with their reasons.
    let audit = lines(
        &s.database,
        &format!(
            "SELECT r.project_id, r.name, r.registry_path, r.registry_created_at IS NOT NULL AS dated \
             FROM registry_repair_restored r JOIN container_repositories c ON c.id = r.repository_id \
             WHERE r.run_id = {run} ORDER BY r.project_id, r.name"
        ),
    )
    .await;
    assert_eq!(audit.len(), wanted.len());
    assert!(audit
        .iter()
        .any(|l| l.contains("\"registry_path\":\"repair_grp/sub/plain/a/b\"")));
    let skipped = lines(
        &s.database,
        &format!("SELECT project_id, name, action, reason FROM registry_repair_skipped WHERE run_id = {run}"),
    )
    .await;
    assert_eq!(skipped.len(), expected(&s.ids).len() - wanted.len());
    assert!(skipped
        .iter()
        .any(|l| l.contains("\"name\":\"deep/x/y\"") && l.contains("name_unaddressable")));

    // The tracking rows say what is still missing.
    let missing: HashMap<i64, i32> =
        s.db.rows()
            .await
            .into_iter()
            .map(|r| (r.project_id, r.missing_count))
            .collect();
    assert_eq!(missing[&s.ids["plain"]], 1, "the deep name");
    assert_eq!(missing[&s.ids["elsewhere"]], 0);
    assert_eq!(missing[&s.ids["pending"]], 2);
    assert_eq!(missing[&s.ids["reused"]], 1);

    // The run is recorded with its counts; GitLab's statistics and cleanup policies are named.
    let row = repair::run(&s.database, run)
        .await
        .expect("query")
        .expect("run");
    assert_eq!(
        (
            row.kind.as_str(),
            row.projects,
            row.restored,
            row.skipped,
            row.review
        ),
        ("apply", 10, wanted.len() as i32, 8, 2)
    );
    assert!(row.finished_at.is_some());
    assert_eq!(
        repair::restored_projects(&s.database, run)
            .await
            .expect("query"),
        vec![s.ids["plain"], s.ids["elsewhere"]]
    );
    assert_eq!(
        repair::under_cleanup_policy(&s.database, run)
            .await
            .expect("query"),
        0,
        "the project with an enabled cleanup policy was held for review"
    );

    // Again: the restored projects have nothing missing any more (no longer candidates), the
    // others are planned again and nothing is restored twice.
    let (second, written) = apply(&s, &Scope::default()).await;
    assert!(restored_names(&written).is_empty());
    assert_eq!(repositories(&s.database).await, after);
    let row = repair::run(&s.database, second)
        .await
        .expect("query")
        .expect("run");
    assert_eq!(row.restored, 0);
    assert_eq!(row.projects, 9, "elsewhere has nothing missing now");
    let runs = repair::runs(&s.database).await.expect("runs");
    assert_eq!(
        runs.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![second, run]
    );
}

#[actix_rt::test]
async fn a_retried_batch_writes_nothing_twice_and_a_restore_rails_made_meanwhile_is_present() {
    let s = seed().await;
    let plans = plain_plan(&s).await;
    // Rails creates one of the planned rows between the plan and the write.
    s.db.execute(&format!(
        "INSERT INTO container_repositories (project_id, name, created_at, updated_at) \
         VALUES ({}, 'a', now(), now())",
        s.ids["plain"]
    ))
    .await;
    let run = repair::start_apply(&s.database, &Scope::default())
        .await
        .expect("run");
    let first = apply_as(&s.database, run, &plans).await.expect("apply");
    let Written::Applied {
        restored,
        already_present,
        ..
    } = &first[0]
    else {
        panic!("{first:?}");
    };
    assert_eq!(
        restored.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        vec!["", "a/b"]
    );
    assert_eq!(already_present, &vec!["a".to_string()]);
    let after = repositories(&s.database).await;
    let tables = repair_tables(&s.database).await;
    // The batch written again, as after a timeout whose commit went through: nothing is written
    // twice, and the answer is the first write's, read back, so that a result printed from it
    // alone (the first answer lost with the timeout) counts what was written.
    let again = apply_as(&s.database, run, &plans)
        .await
        .expect("apply again");
    assert_eq!(again, first);
    assert_eq!(repositories(&s.database).await, after);
    assert_eq!(repair_tables(&s.database).await, tables);
    let mut printed = Outcome::new(Some(run));
    for written in &again {
        printed.add_written(written);
    }
    assert_eq!(
        (
            printed.totals.projects,
            printed.totals.restore,
            printed.totals.already_present
        ),
        (1, 2, 1)
    );
    let row = repair::run(&s.database, run)
        .await
        .expect("query")
        .expect("run");
    assert_eq!((row.projects, row.restored), (1, 2));
}

#[actix_rt::test]
async fn a_project_whose_deletion_starts_after_the_plan_gets_nothing() {
    let s = seed().await;
    let plans = plain_plan(&s).await;
    s.db.execute(&format!(
        "UPDATE projects SET pending_delete = true WHERE id = {}",
        s.ids["plain"]
    ))
    .await;
    let before = repositories(&s.database).await;
    let run = repair::start_apply(&s.database, &Scope::default())
        .await
        .expect("run");
    let written = apply_as(&s.database, run, &plans).await.expect("apply");
    assert_eq!(repositories(&s.database).await, before);
    let Written::Applied { plan, restored, .. } = &written[0] else {
        panic!("{written:?}");
    };
    assert!(restored.is_empty());
    assert!(plan.repositories.iter().all(|r| r.action == Action::Skip));
}

#[actix_rt::test]
async fn a_missing_or_invalid_unique_index_restores_nothing_anywhere() {
    for breakage in [
        "DROP INDEX index_container_repositories_on_project_id_and_name",
        "UPDATE pg_index SET indisvalid = false \
         WHERE indexrelid = 'index_container_repositories_on_project_id_and_name'::regclass",
    ] {
        let s = seed().await;
        s.db.execute(breakage).await;
        let health = repair::index_health(&s.database).await.expect("query");
        assert!(!health.is_safe(), "{breakage}: {health:?}");
        let before = (
            repositories(&s.database).await,
            tracking_rows(&s.database).await,
        );
        let plans = plan(&s, &Scope::default()).await;
        let got = decisions(&plans);
        for (key, (action, reason)) in expected(&s.ids) {
            // What a flag would lift, and restores, are held back by the index first.
            let want = match reason {
                Some(reason) if reason.action() == Action::Skip => (action, Some(reason)),
                _ => (Action::Skip, Some(Reason::IndexUnsafe)),
            };
            assert_eq!(got[&key], want, "{breakage}: {key:?}");
        }
        let (_, written) = apply(&s, &Scope::default()).await;
        assert!(restored_names(&written).is_empty());
        assert_eq!(repositories(&s.database).await, before.0, "{breakage}");
    }
}

#[actix_rt::test]
async fn duplicate_rows_behind_a_corrupt_index_hold_back_only_their_project() {
    let s = seed().await;
    // A corrupt index (as after a collation change): valid and unique on paper, holding an
    // entry for each of two rows with the same name that got in while it did not enforce.
    s.db.execute(&format!(
        "UPDATE pg_index SET indisunique = false \
         WHERE indexrelid = 'index_container_repositories_on_project_id_and_name'::regclass; \
         INSERT INTO container_repositories (project_id, name, created_at, updated_at) \
             VALUES ({p}, 'known', now(), now()); \
         UPDATE pg_index SET indisunique = true \
         WHERE indexrelid = 'index_container_repositories_on_project_id_and_name'::regclass;",
        p = s.ids["plain"]
    ))
    .await;
    assert!(repair::index_health(&s.database)
        .await
        .expect("query")
        .is_safe());
    let plans = plan(&s, &Scope::default()).await;
    let got = decisions(&plans);
    for name in ["", "a", "a/b"] {
        assert_eq!(
            got[&(s.ids["plain"], name.to_string())],
            (Action::Skip, Some(Reason::IndexUnsafe)),
            "{name:?}"
        );
    }
    assert_eq!(
        got[&(s.ids["plain"], "deep/x/y".to_string())],
        (Action::Skip, Some(Reason::NameUnaddressable))
    );
    assert_eq!(
        got[&(s.ids["elsewhere"], "e".to_string())],
        (Action::Restore, None)
    );
    let (_, written) = apply(&s, &Scope::default()).await;
    assert_eq!(
        restored_names(&written),
        vec![(s.ids["elsewhere"], "e".to_string())]
    );
}

#[actix_rt::test]
async fn apply_and_undo_work_alike_with_prepared_statements_off() {
    // What a pooler in transaction mode needs: every statement in a transaction, and the
    // per-project transaction around them.
    let s = seed().await;
    let before = repositories(&s.database).await;
    let url = format!("{}?prepared_statements=false", s.db.url);
    let pooled = Database::new(&url, 2, Duration::from_secs(5)).expect("pool");
    repair::check_primary(&pooled).await.expect("a primary");
    let mut settings = repair_settings(&s.db, &s.registry);
    settings.database.url = url.parse().expect("a database URL");
    let walked = repair_run(&settings, &pooled, &Scope::default(), Mode::Apply).await;
    let run = walked.run.expect("an apply run");
    assert_eq!(restored_names(&walked.written).len(), 4);
    assert_eq!(repositories(&s.database).await.len(), before.len() + 4);
    let undone = undo_as(&pooled, run).await.expect("undo");
    assert_eq!((undone.deleted.len(), undone.kept.len()), (4, 0));
    assert_eq!(repositories(&s.database).await, before);
}

#[actix_rt::test]
async fn restored_rows_carry_utc_times_whatever_the_session_time_zone() {
    let s = seed().await;
    // A database whose sessions default to UTC+14: the whole pipeline writes through it.
    s.db.execute(&format!(
        "ALTER DATABASE {} SET timezone TO 'Pacific/Kiritimati'",
        s.db.name
    ))
    .await;
    let (_, written) = apply(&s, &only(s.ids["elsewhere"])).await;
    assert_eq!(restored_names(&written).len(), 1);
    // And a connection set to it explicitly, which diesel-async's set-up would otherwise undo:
    // the write itself must not depend on the session.
    let plans = plain_plan(&s).await;
    let run = repair::start_apply(&s.database, &Scope::default())
        .await
        .expect("run");
    let lease = take_lease(&s.database, "apply").await;
    repair_lease::record_run(&s.database, &lease, run)
        .await
        .expect("the run recorded in the lease");
    let mut conn = s.database.conn().await.expect("connection");
    {
        use diesel_async::RunQueryDsl;
        diesel::sql_query("SET TIME ZONE 'Pacific/Kiritimati'")
            .execute(&mut conn)
            .await
            .expect("SET TIME ZONE");
    }
    let written = repair::apply_project(
        &mut conn,
        run,
        &Arc::new(Fence::unbounded()),
        plans[0].clone(),
        true,
    )
    .await
    .expect("apply");
    assert_eq!(restored_names(&[written]).len(), 3);
    drop(conn);
    let times = lines(
        &s.database,
        "SELECT name, \
                abs(extract(epoch FROM (now() AT TIME ZONE 'UTC') - created_at)) < 60 AS utc, \
                abs(extract(epoch FROM (now() AT TIME ZONE 'Pacific/Kiritimati') - created_at)) > 13 * 3600 AS not_local, \
                created_at = updated_at AS same \
         FROM container_repositories WHERE id > (SELECT max(id) - 4 FROM container_repositories) \
         ORDER BY id",
    )
    .await;
    assert_eq!(times.len(), 4);
    for line in &times {
        assert!(
            line.contains("\"utc\":true")
                && line.contains("\"not_local\":true")
                && line.contains("\"same\":true"),
            "{line}"
        );
    }
}

#[actix_rt::test]
async fn apply_verify_and_undo_work_on_the_table_shape_of_gitlab_15_10_to_17_0() {
    let s = seed().await;
    s.db.execute(include_str!(
        "../../fixtures/gitlab-15.10-container-repositories.sql"
    ))
    .await;
    let before = repositories(&s.database).await;
    let (run, written) = apply(&s, &Scope::default()).await;
    assert_eq!(restored_names(&written).len(), 4);
    let new = lines(
        &s.database,
        "SELECT migration_state, migration_retries_count, migration_plan \
         FROM container_repositories WHERE id > (SELECT max(id) - 4 FROM container_repositories)",
    )
    .await;
    assert_eq!(
        new,
        vec![
            "{\"migration_state\":\"default\",\"migration_retries_count\":0,\"migration_plan\":null}";
            4
        ]
    );
    assert!(verify(&s.database, &s.client, run, 2)
        .await
        .expect("verify")
        .is_clean());
    let undone = undo_as(&s.database, run).await.expect("undo");
    assert_eq!((undone.deleted.len(), undone.kept.len()), (4, 0));
    assert_eq!(repositories(&s.database).await, before);
}
