//! `repair plan`: the guards' decisions on seeded projects, nothing written, the scope flags.

use super::*;
use registry_repair::registry::simulator::created_at;

#[actix_rt::test]
async fn the_dry_run_writes_nothing_and_plans_exactly_the_missing_names_with_their_reasons() {
    let s = seed().await;
    let before = (
        repositories(&s.database).await,
        tracking_rows(&s.database).await,
        repair_tables(&s.database).await,
    );
    let plans = plan(&s, &Scope::default()).await;
    assert_eq!(decisions(&plans), expected(&s.ids));
    let plain = plans
        .iter()
        .find(|p| p.project_id == s.ids["plain"])
        .expect("plain planned");
    let elsewhere = plans
        .iter()
        .find(|p| p.project_id == s.ids["elsewhere"])
        .expect("elsewhere planned");
    assert_eq!(elsewhere.ignored, 1, "the entry outside the project path");
    assert_eq!(
        plain.repositories[0].registry_created_at.as_deref(),
        Some(created_at(&plain.repositories[0].registry_path).as_str())
    );
    let after = (
        repositories(&s.database).await,
        tracking_rows(&s.database).await,
        repair_tables(&s.database).await,
    );
    assert_eq!(before, after, "plan wrote something");
    // --include-older turns the review into a restore.
    let older = plan(
        &s,
        &Scope {
            projects: vec![s.ids["reused"]],
            consent: Consent {
                older_than_project: true,
                ..Consent::default()
            },
            ..Scope::default()
        },
    )
    .await;
    assert_eq!(
        decisions(&older),
        [(
            (s.ids["reused"], "old".to_string()),
            (Action::Restore, None)
        )]
        .into_iter()
        .collect::<Decisions>()
    );
}

#[actix_rt::test]
async fn the_scope_flags_pick_projects_by_id_namespace_and_count() {
    let s = seed().await;
    let projects = |plans: &[ProjectPlan]| -> Vec<i64> {
        let mut ids: Vec<i64> = plans.iter().map(|p| p.project_id).collect();
        ids.sort();
        ids
    };
    let by_id = plan(
        &s,
        &Scope {
            projects: vec![s.ids["plain"], s.ids["elsewhere"]],
            ..Scope::default()
        },
    )
    .await;
    assert_eq!(projects(&by_id), vec![s.ids["plain"], s.ids["elsewhere"]]);
    // Case-insensitive, everything below, and `_` is not a wildcard.
    let by_namespace = plan(
        &s,
        &Scope {
            namespace: Some("other".into()),
            ..Scope::default()
        },
    )
    .await;
    assert_eq!(projects(&by_namespace), vec![s.ids["elsewhere"]]);
    let below = plan(
        &s,
        &Scope {
            namespace: Some("REPAIR_GRP/sub".into()),
            ..Scope::default()
        },
    )
    .await;
    assert_eq!(projects(&below), vec![s.ids["plain"]]);
    let wildcard = plan(
        &s,
        &Scope {
            namespace: Some("Repair-Grp".into()),
            ..Scope::default()
        },
    )
    .await;
    assert!(wildcard.is_empty());
    assert!(repair::namespace_exists(&s.database, "repair_grp/SUB")
        .await
        .expect("query"));
    assert!(!repair::namespace_exists(&s.database, "nope")
        .await
        .expect("query"));
    let limited = plan(
        &s,
        &Scope {
            limit: Some(3),
            ..Scope::default()
        },
    )
    .await;
    assert_eq!(limited.len(), 3);
    let mut all = projects(&plan(&s, &Scope::default()).await);
    all.truncate(3);
    assert_eq!(projects(&limited), all, "the first three by id");
}
