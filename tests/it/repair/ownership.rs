//! Whose images a repository holds, as GitLab would decide: a project that moved to its path
//! after the images were pushed (its own rename or transfer, or a parent group's), another
//! project at one of the nodes GitLab resolves a path by (parents included), and paths too deep
//! for GitLab to resolve at all.

use super::*;

/// Moves every route at or under `from` to `to` at time `at`, as GitLab's rename or transfer of a
/// project or group does (`Route#rename_descendants` rewrites each descendant route, with
/// `updated_at`).
async fn rename(db: &TestDb, from: &str, to: &str, at: &str) {
    db.execute(&format!(
        "UPDATE routes SET path = '{to}' || substr(path, length('{from}') + 1), updated_at = '{at}' \
         WHERE path = '{from}' OR path LIKE '{from}/%'"
    ))
    .await;
}

/// What the analysis records for `project` once its path lists `missing` lost repositories.
async fn analysed_as(db: &TestDb, project: i64, missing: i32) {
    db.execute(&format!(
        "UPDATE container_registry_data_repair_details SET missing_count = {missing} \
         WHERE project_id = {project}"
    ))
    .await;
}

#[actix_rt::test]
async fn images_left_behind_by_a_project_that_moved_away_are_not_handed_to_the_one_that_moved_in() {
    use Action::*;
    use Reason::*;
    let mut w = World::new();
    let own = w.group(None, "Own");
    let crew = w.group(Some(own), "Crew");
    let team = w.group(Some(own), "Team");
    let mut ids = HashMap::new();
    // Pushed `own/home/img` (between mid-2023 and mid-2024, as the simulator dates every
    // repository), lost the rows, and was renamed away in mid-2024: GitLab let it, since it looks at rows.
    ids.insert("leaver", w.project(own, "Home", &["img", "img/cache"], &[]));
    // Created in 2020 elsewhere, renamed into `Own/Home` in 2025: it lists the leaver's images.
    ids.insert("arriver", w.project(own, "Settled", &[], &[]));
    // The same through groups: `Own/Crew` held a project with images and was renamed away; the
    // group `Own/Team` was renamed to `Own/Crew` later, moving its project `Svc` onto them.
    ids.insert("old_svc", w.project(crew, "Svc", &["api"], &[]));
    ids.insert("new_svc", w.project(team, "Svc", &[], &[]));
    // Moved into its path before the images were pushed: they are its own.
    ids.insert("early", w.project(own, "Early", &["x"], &[]));
    // An old route without timestamps: the project's creation alone decides.
    ids.insert("untimed", w.project(own, "Untimed", &["y"], &[]));
    let s = Seeded::from(&w, ids).await;
    rename(&s.db, "Own/Home", "Own/Away", "2024-06-01").await;
    rename(&s.db, "Own/Settled", "Own/Home", "2025-01-01").await;
    rename(&s.db, "Own/Crew", "Own/Crew-Old", "2024-06-01").await;
    rename(&s.db, "Own/Team", "Own/Crew", "2025-01-01").await;
    rename(&s.db, "Own/Early", "Own/Early", "2023-06-01").await;
    s.db.execute(&format!(
        "UPDATE routes SET created_at = NULL, updated_at = NULL WHERE source_id = {}",
        s.ids["untimed"]
    ))
    .await;
    // The analysis after the moves: the images are listed under the projects now at their paths.
    for (project, missing) in [
        ("leaver", 0),
        ("arriver", 2),
        ("old_svc", 0),
        ("new_svc", 1),
    ] {
        analysed_as(&s.db, s.ids[project], missing).await;
    }

    let planned = decisions(&plan(&s, &Scope::default()).await);
    let d = |project: &str, name: &str, action, reason| {
        ((s.ids[project], name.to_string()), (action, reason))
    };
    let want: Decisions = [
        d("arriver", "img", Review, Some(OlderThanPath)),
        d("arriver", "img/cache", Review, Some(OlderThanPath)),
        d("new_svc", "api", Review, Some(OlderThanPath)),
        d("early", "x", Restore, None),
        d("untimed", "y", Restore, None),
    ]
    .into_iter()
    .collect();
    assert_eq!(planned, want);

    // Without the flag, apply writes none of them; with it (after a look), it restores them.
    let before = repositories(&s.database).await;
    let arriver = only(s.ids["arriver"]);
    let (_, written) = apply(&s, &arriver).await;
    assert!(restored_names(&written).is_empty());
    assert_eq!(repositories(&s.database).await, before);
    let consented = Scope {
        consent: Consent {
            older_than_path: true,
            ..Consent::default()
        },
        ..arriver
    };
    let (run, written) = apply(&s, &consented).await;
    assert_eq!(
        restored_names(&written),
        vec![
            (s.ids["arriver"], "img".to_string()),
            (s.ids["arriver"], "img/cache".to_string())
        ]
    );
    let row = repair::run(&s.database, run)
        .await
        .expect("query")
        .expect("run");
    assert_eq!(
        row.scope,
        format!("--project {} --include-older-than-path", s.ids["arriver"])
    );
}

#[actix_rt::test]
async fn a_project_at_a_parent_node_makes_the_names_gitlab_would_give_it_ambiguous() {
    use Action::*;
    use Reason::*;
    let mut w = World::new();
    let par = w.group(None, "Par");
    let sub = w.group(Some(par), "Sub");
    let mid = w.group(Some(par), "Mid");
    let low = w.group(Some(mid), "Low");
    let mut ids = HashMap::new();
    ids.insert("child", w.project(sub, "Child", &["", "a", "a/b"], &[]));
    ids.insert("deep", w.project(low, "Deep", &["", "a"], &[]));
    // Legacy projects whose routes differ from the groups' only in case: `par/sub` and `par/mid`
    // lowercased. GitLab tries them for the child's root and one-segment names, and for the deep
    // project's root (its grandparent), and gives the repository to the lowest id.
    ids.insert("legacy_sub", w.project(par, "SUB", &[], &[]));
    ids.insert("legacy_mid", w.project(par, "MID", &[], &[]));
    let s = Seeded::from(&w, ids).await;
    // Their own listings hold everything below them.
    analysed_as(&s.db, s.ids["legacy_sub"], 3).await;
    analysed_as(&s.db, s.ids["legacy_mid"], 2).await;

    let planned = decisions(&plan(&s, &Scope::default()).await);
    let d = |project: &str, name: &str, action, reason| {
        ((s.ids[project], name.to_string()), (action, reason))
    };
    let want: Decisions = [
        d("child", "", Skip, Some(AmbiguousPath)),
        d("child", "a", Skip, Some(AmbiguousPath)),
        d("child", "a/b", Restore, None),
        d("deep", "", Skip, Some(AmbiguousPath)),
        d("deep", "a", Restore, None),
        d("legacy_sub", "child", Skip, Some(AmbiguousPath)),
        d("legacy_sub", "child/a", Skip, Some(AmbiguousPath)),
        d("legacy_sub", "child/a/b", Skip, Some(AmbiguousPath)),
        d("legacy_mid", "low/deep", Skip, Some(AmbiguousPath)),
        d("legacy_mid", "low/deep/a", Skip, Some(AmbiguousPath)),
    ]
    .into_iter()
    .collect();
    assert_eq!(planned, want);
}

#[actix_rt::test]
async fn paths_of_twenty_components_or_more_are_never_restored() {
    let mut w = World::new();
    // 18 groups and the project: 19 components, the most `ContainerRegistry::Path#valid?` takes.
    let mut group = w.group(None, "L1");
    for level in 2..=18 {
        group = w.group(Some(group), &format!("L{level}"));
    }
    let deep = w.project(group, "Proj", &["", "a", "b/c"], &[]);
    let s = Seeded::from(&w, [("deep", deep)].into_iter().collect()).await;
    let planned = decisions(&plan(&s, &Scope::default()).await);
    let want: Decisions = [
        ((deep, String::new()), (Action::Restore, None)),
        (
            (deep, "a".to_string()),
            (Action::Skip, Some(Reason::NameUnaddressable)),
        ),
        (
            (deep, "b/c".to_string()),
            (Action::Skip, Some(Reason::NameUnaddressable)),
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(planned, want);
}
