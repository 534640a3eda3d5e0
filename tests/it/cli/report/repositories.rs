//! `report --repositories`: the missing repositories themselves in every format, narrowed by
//! `--project` and `--namespace` (any case, nested), cut by `--limit`; why a project asked for
//! lists nothing; and the combinations refused with exit 2.

use super::fixture::damaged;
use super::parse::csv_line;

/// `(project_id, full_path, registry_path, name, registry_created_at, size_bytes)` of each
/// repository of a `--format json` listing, and `matched`.
fn listed(stdout: &str) -> (i64, Vec<[String; 6]>) {
    let json: serde_json::Value =
        serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON: {e}\n{stdout}"));
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    };
    let rows = json["repositories"]
        .as_array()
        .unwrap_or_else(|| panic!("no list: {json}"))
        .iter()
        .map(|r| {
            [
                "project_id",
                "full_path",
                "registry_path",
                "name",
                "registry_created_at",
                "size_bytes",
            ]
            .map(|field| text(&r[field]))
        })
        .collect();
    (json["matched"].as_i64().expect("matched"), rows)
}

#[actix_rt::test]
async fn every_format_lists_the_missing_repositories_with_their_project_creation_and_size() {
    let world = damaged().await;
    let ids = world.ids;
    let json = world.report(&["--repositories", "--format", "json"]).await;
    json.assert_exit(0);
    let (matched, rows) = listed(&json.stdout);
    let row = |id: i64, full: &str, path: &str, name: &str, created: &str, size: &str| {
        [
            id.to_string(),
            full.into(),
            path.into(),
            name.into(),
            created.into(),
            size.into(),
        ]
    };
    let deep = "Top-Group/Sub_Team/Deep.Project";
    let want = vec![
        row(
            ids.lonely,
            "Empty-NS/Lonely",
            "empty-ns/lonely",
            "",
            "2025-07-04T00:00:00Z",
            "5368709120",
        ),
        row(
            ids.lonely,
            "Empty-NS/Lonely",
            "empty-ns/lonely/cache",
            "cache",
            "",
            "",
        ),
        row(
            ids.deep,
            deep,
            "top-group/sub_team/deep.project",
            "",
            "2024-05-02T06:00:00Z",
            "3221225472",
        ),
        row(
            ids.deep,
            deep,
            "top-group/sub_team/deep.project/a/b/c",
            "a/b/c",
            "2024-05-20T12:00:00Z",
            "",
        ),
        row(
            ids.deep,
            deep,
            "top-group/sub_team/deep.project/x",
            "x",
            "",
            "12345",
        ),
        row(
            ids.web,
            "Top-Group/Web-App",
            "top-group/web-app",
            "",
            "2023-01-15T10:00:00Z",
            "104857600",
        ),
        row(
            ids.web,
            "Top-Group/Web-App",
            "top-group/web-app/api/v2",
            "api/v2",
            "2023-01-31T23:59:59Z",
            "1000001",
        ),
    ];
    assert_eq!(
        rows, want,
        "in registry path order; the restored one is gone"
    );
    assert_eq!(matched, 7);

    let csv = world.report(&["--repositories", "--format", "csv"]).await;
    csv.assert_exit(0);
    let mut lines = csv.stdout.lines();
    assert_eq!(
        lines.next(),
        Some("project_id,full_path,registry_path,name,registry_created_at,size_bytes")
    );
    let csv_rows: Vec<Vec<String>> = lines.map(csv_line).collect();
    let json_rows: Vec<Vec<String>> = want.iter().map(|r| r.to_vec()).collect();
    assert_eq!(csv_rows, json_rows, "{}", csv.dump());

    let table = world.report(&["--repositories"]).await;
    table.assert_exit(0);
    for line in [
        "2024-05-02    3.00 GiB  top-group/sub_team/deep.project        Top-Group/Sub_Team/Deep.Project",
        "unknown        unknown  empty-ns/lonely/cache                  Empty-NS/Lonely",
        "7 of 7 listed; their known sizes: 8.10 GiB (8,695,804,538 bytes;",
    ] {
        table.assert_stdout_has(line);
    }
}

#[actix_rt::test]
async fn project_and_namespace_narrow_the_list_and_limit_cuts_it() {
    let world = damaged().await;
    let ids = world.ids;
    let paths = |stdout: &str| -> Vec<String> {
        listed(stdout).1.into_iter().map(|r| r[2].clone()).collect()
    };
    let json = |extra: &'static [&'static str]| {
        let mut args = vec!["--repositories", "--format", "json"];
        args.extend_from_slice(extra);
        args
    };

    let deep = ids.deep.to_string();
    let web = ids.web.to_string();
    let out = world
        .report(&[json(&[]), vec!["--project", &deep]].concat())
        .await;
    out.assert_exit(0);
    assert_eq!(
        paths(&out.stdout),
        [
            "top-group/sub_team/deep.project",
            "top-group/sub_team/deep.project/a/b/c",
            "top-group/sub_team/deep.project/x"
        ]
    );
    let out = world
        .report(&[json(&[]), vec!["--project", &deep, "--project", &web]].concat())
        .await;
    out.assert_exit(0);
    assert_eq!(paths(&out.stdout).len(), 5);

    for (namespace, want) in [
        ("TOP-GROUP", 5),
        ("top-group/SUB_TEAM", 3),
        ("/Empty-NS/", 2),
        ("Other.Org", 0),
    ] {
        let out = world
            .report(&[json(&[]), vec!["--namespace", namespace]].concat())
            .await;
        out.assert_exit(0);
        let (matched, rows) = listed(&out.stdout);
        assert_eq!(
            (matched, rows.len()),
            (want, want as usize),
            "--namespace {namespace}\n{}",
            out.dump()
        );
    }
    // The namespace and a project outside it: nothing.
    let out = world
        .report(&[json(&["--namespace", "Empty-NS"]), vec!["--project", &deep]].concat())
        .await;
    out.assert_exit(0);
    assert_eq!(listed(&out.stdout), (0, vec![]));

    let out = world.report(&json(&["--limit", "2"])).await;
    out.assert_exit(0)
        .assert_stderr_has("Listed 2 of 7 missing repositories");
    assert_eq!(
        paths(&out.stdout),
        ["empty-ns/lonely", "empty-ns/lonely/cache"]
    );
    assert_eq!(listed(&out.stdout).0, 7);
    let out = world.report(&json(&["--limit", "0"])).await;
    out.assert_exit(0);
    assert_eq!(paths(&out.stdout).len(), 7);
    assert!(!out.stderr.contains("Listed"), "{}", out.dump());
}

#[actix_rt::test]
async fn a_project_listing_nothing_says_why() {
    let world = damaged().await;
    let ids = world.ids;
    let legacy = ids.legacy.to_string();
    let table = world
        .report(&["--repositories", "--project", &legacy])
        .await;
    table
        .assert_exit(0)
        .assert_stdout_has("No missing repository recorded matches.")
        .assert_stdout_has(&format!(
            "Project {legacy}: 2 missing repositories counted, but not itemised"
        ));
    // JSON stays parseable: the note goes to standard error.
    let json = world
        .report(&["--repositories", "--format", "json", "--project", &legacy])
        .await;
    json.assert_exit(0).assert_stderr_has("not itemised");
    assert_eq!(listed(&json.stdout), (0, vec![]));

    for (id, why) in [
        (ids.clean, "no missing repository"),
        (ids.calm, "no missing repository"),
        (
            ids.orphan,
            "its analysis failed (no_route: the project has no route, so no registry path); \
             the project has no route in GitLab's database",
        ),
        (
            ids.orphan,
            "`run --retry-failed` cannot help until it has a route.",
        ),
        (
            ids.huge,
            "(too_many_pages: listing top-group/huge: more than 10000 pages; giving up on this \
             project); its listing has more pages than registry.max_pages: raise \
             registry.max_pages, then `run --retry-failed`.",
        ),
        (
            ids.old,
            "its analysis failed; reason not recorded (GitLab's own worker or an earlier \
             release): `run --retry-failed` analyses it again",
        ),
        (ids.restored, "has a container_repositories row again"),
    ] {
        let id = id.to_string();
        world
            .report(&["--repositories", "--project", &id])
            .await
            .assert_exit(0)
            .assert_stdout_has(&format!("Project {id}: "))
            .assert_stdout_has(why);
    }
}

#[actix_rt::test]
async fn wrong_combinations_and_unknown_names_exit_2_saying_what_to_fix() {
    let world = damaged().await;
    for (args, says) in [
        (&["--project", "5"][..], "--repositories"),
        (&["--namespace", "Top-Group"][..], "--repositories"),
        (&["--limit", "3"][..], "--repositories"),
        (&["--repositories", "--top", "3"][..], "cannot be used with"),
        (
            &["--repositories", "--namespaces", "3"][..],
            "cannot be used with",
        ),
        (
            &["--repositories", "--min-missing", "2"][..],
            "cannot be used with",
        ),
        (
            &["--repositories", "--format", "html"][..],
            "--format html is the summary page",
        ),
        (&["--repositories", "--project", "0"][..], "--project"),
        (&["--repositories", "--limit=-1"][..], "--limit"),
        (&["--format", "pdf"][..], "html"),
        (
            &["--repositories", "--namespace", "top-group/sub"][..],
            "no top-level group, subgroup or user has the path `top-group/sub`",
        ),
        (
            &["--repositories", "--namespace", "Nope"][..],
            "configuration `--namespace`",
        ),
        (
            &["--repositories", "--project", "999999"][..],
            "no project has the id 999999",
        ),
    ] {
        let out = world.report(args).await;
        out.assert_exit(2).assert_stderr_has(says);
        assert!(out.stdout.is_empty(), "{args:?} printed\n{}", out.dump());
    }
    // Each flag is in --help, with its bound.
    let help = world.report(&["--help"]).await;
    help.assert_exit(0)
        .assert_stdout_has("--repositories")
        .assert_stdout_has("default 1000; 0: all")
        .assert_stdout_has("html");
}
