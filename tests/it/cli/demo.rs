//! `demo`: end to end (every row and the repair plan checked against what it seeded, every guard
//! by reason, nothing written by the plan); only ever on a database it made itself (one it did
//! not make is refused, untouched, and a session of it kept; one it made is made again); and
//! `demo --serve`, against which the practice steps of docs/repair.md run as they are written.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use diesel::sql_types::{BigInt, Nullable, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use registry_repair::demo::database::DEMO_MARK;
use registry_repair::demo::seed::World;
use registry_repair::repair::guards::Consent;
use registry_repair::repair::{Action, Reason};

use crate::common::process::{cli, spawn, Env, Finished};
use crate::common::{keeping_a_transaction_open, run_on, server_url, TestDb};

/// The world `demo --projects n` seeds.
fn demo_world(projects: u32) -> World {
    World::generate(projects, 2026)
}

/// (project id, name) → (action, reason), as the demo's world must be planned.
type Decisions = BTreeMap<(i64, String), (Action, Option<Reason>)>;

/// `pg_database`'s comment on `name`: `None` when there is no such database.
async fn mark_of(name: &str) -> Option<Option<String>> {
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Mark {
        #[diesel(sql_type = Nullable<Text>)]
        mark: Option<String>,
    }
    let mut conn = AsyncPgConnection::establish(&server_url())
        .await
        .expect("connecting to the server");
    let marks: Vec<Mark> = diesel::sql_query(
        "SELECT shobj_description(oid, 'pg_database') AS mark FROM pg_database WHERE datname = $1",
    )
    .bind::<Text, _>(name)
    .load(&mut conn)
    .await
    .expect("pg_database");
    marks.into_iter().next().map(|m| m.mark)
}

/// One number `sql` (a `SELECT ... AS n`) answers on the database at `url`.
async fn number(url: &str, sql: &str) -> i64 {
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let mut conn = AsyncPgConnection::establish(url)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    let n: N = diesel::sql_query(sql)
        .get_result(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    n.n
}

/// Whether some line of `text` has exactly these words, in this order, among its own.
fn has_line(text: &str, words: &[&str]) -> bool {
    text.lines().any(|line| {
        let mine: Vec<&str> = line.split_whitespace().collect();
        mine.windows(words.len()).any(|w| w == words)
    })
}

/// The reasons held back in `decisions`, in the guards' order, with their counts, as the demo
/// and `repair plan` name them (`skip` or `review` reasons).
fn counted(decisions: &Decisions, action: Action) -> Vec<(Reason, usize)> {
    Reason::ALL
        .into_iter()
        .filter(|r| r.action() == action)
        .map(|r| {
            let n = decisions
                .values()
                .filter(|(a, why)| *a == action && *why == Some(r))
                .count();
            (r, n)
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

fn listed(reasons: &[(Reason, usize)]) -> String {
    reasons
        .iter()
        .map(|(r, n)| format!("{r} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[actix_rt::test]
async fn the_demo_analyses_reports_and_plans_what_it_seeded_and_makes_its_own_database_again() {
    // A name of the test's own that the demo creates; dropped with it. CREATE and DROP DATABASE
    // hold the cluster's xmin like an open transaction.
    let db = TestDb::unborn();
    let _xmin = keeping_a_transaction_open().await;
    let env = Env::new().set("DATABASE__URL", &db.url);
    let demo = cli(
        &["demo", "--projects", "400", "--database", &db.name],
        &env,
        Duration::from_secs(180),
    )
    .await;
    let plan = demo_world(400).expected_plan(Consent::default());
    let restore = plan.values().filter(|(a, _)| *a == Action::Restore).count();
    let (skips, reviews) = (counted(&plan, Action::Skip), counted(&plan, Action::Review));
    // Every guard a shared database can show is there, each by its reason.
    let shown: Vec<Reason> = skips.iter().chain(&reviews).map(|(r, _)| *r).collect();
    for reason in [
        Reason::ProjectPendingDeletion,
        Reason::RegistryDisabled,
        Reason::AmbiguousPath,
        Reason::NameUnaddressable,
        Reason::OlderThanProject,
        Reason::OlderThanPath,
        Reason::CleanupPolicyEnabled,
    ] {
        assert!(shown.contains(&reason), "{reason} in {shown:?}");
    }
    demo.assert_exit(0)
        .assert_no_panic()
        .assert_stdout_has("Check: every one of the 400 projects has exactly the row seeded")
        .assert_stdout_has(&format!(
            "Check: the plan restores exactly the {restore} lost repositories GitLab can give their \
             projects, and holds back the other {}, each for the reason it was seeded with: skip {}; \
             review {}.",
            plan.len() - restore,
            listed(&skips),
            listed(&reviews)
        ))
        .assert_stdout_has(&format!(
            "`registry-repair demo --serve --projects 400 --database {}` keeps the registry and the \
             database serving (docs/repair.md#practising-the-repair).",
            db.name
        ));
    assert_eq!(mark_of(&db.name).await, Some(Some(DEMO_MARK.to_string())));
    // The plan is a dry run: GitLab's rows are the seeded ones, and no repair run exists.
    let seeded: usize = demo_world(400).projects.iter().map(|p| p.rails.len()).sum();
    assert_eq!(
        number(&db.url, "SELECT count(*) AS n FROM container_repositories").await,
        seeded as i64
    );
    assert_eq!(
        number(&db.url, "SELECT count(*) AS n FROM registry_repair_runs").await,
        0
    );

    // The demo's own database is made again, whatever was left in it.
    db.execute("CREATE TABLE left_by_the_test (x int)").await;
    let again = cli(
        &["demo", "--projects", "20", "--database", &db.name],
        &env,
        Duration::from_secs(120),
    )
    .await;
    again
        .assert_exit(0)
        .assert_no_panic()
        .assert_stdout_has("Check: every one of the 20 projects has exactly the row seeded");
    assert_eq!(
        number(
            &db.url,
            "SELECT count(*) AS n FROM pg_class WHERE relname = 'left_by_the_test'"
        )
        .await,
        0,
        "the database was made again"
    );
    assert_eq!(
        number(&db.url, "SELECT count(*) AS n FROM projects").await,
        20
    );
    assert_eq!(mark_of(&db.name).await, Some(Some(DEMO_MARK.to_string())));
}

#[actix_rt::test]
async fn a_database_the_demo_did_not_make_is_refused_untouched_and_its_sessions_kept() {
    let db = TestDb::unborn();
    {
        let _xmin = keeping_a_transaction_open().await;
        run_on(&server_url(), &format!("CREATE DATABASE {}", db.name)).await;
    }
    db.execute("CREATE TABLE kept (note text); INSERT INTO kept VALUES ('the test''s own row')")
        .await;
    // A session of the test's own, open while the demo runs: it must not be ended.
    let mut session = AsyncPgConnection::establish(&db.url)
        .await
        .expect("the test's session");
    session
        .batch_execute("SET application_name = 'the test''s session'")
        .await
        .expect("naming the session");

    let out = cli(
        &["demo", "--projects", "20", "--database", &db.name],
        &Env::new().set("DATABASE__URL", &db.url),
        Duration::from_secs(60),
    )
    .await;
    out.assert_exit(2)
        .assert_no_panic()
        .assert_stderr_has("configuration `--database`")
        .assert_stderr_has(&format!(
            "the database `{}` exists and was not made by `registry-repair demo`",
            db.name
        ))
        .assert_stderr_has("pick another --database")
        .assert_stderr_has(&format!("drop it yourself (`DROP DATABASE {}`)", db.name));
    assert!(!out.stdout.contains("Seeded"), "{}", out.dump());

    #[derive(diesel::QueryableByName)]
    struct Note {
        #[diesel(sql_type = Text)]
        note: String,
    }
    let notes: Vec<Note> =
        diesel_async::RunQueryDsl::load(diesel::sql_query("SELECT note FROM kept"), &mut session)
            .await
            .expect("the test's session is still open");
    let notes: Vec<String> = notes.into_iter().map(|n| n.note).collect();
    assert_eq!(notes, vec!["the test's own row".to_string()]);
    assert_eq!(mark_of(&db.name).await, Some(None), "no mark was written");
    assert_eq!(
        number(
            &db.url,
            "SELECT count(*) AS n FROM pg_class WHERE relname IN ('projects', 'routes')"
        )
        .await,
        0,
        "nothing was seeded"
    );
}

/// A directory of the test's own (the demo's `TMPDIR`); removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("rr-demo-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The commands of docs/repair.md's "Practising the repair", in order, as argument lists after
/// `--config "$CONFIG"`.
fn practice_steps() -> Vec<Vec<String>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/repair.md");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let (_, section) = text
        .split_once("\n## Practising the repair\n")
        .expect("docs/repair.md has a section `Practising the repair`");
    let section = section.split("\n## ").next().unwrap_or(section);
    assert!(section.contains("registry-repair demo --serve"));
    assert!(section
        .contains("CONFIG=/tmp/registry-repair-demo/registry_repair_demo/registry-repair.toml"));
    section
        .lines()
        .filter_map(|line| {
            line.trim()
                .strip_prefix("registry-repair --config \"$CONFIG\" ")
        })
        .map(|rest| rest.split_whitespace().map(str::to_string).collect())
        .collect()
}

/// The run number `apply` or `undo` printed (`Repair run N: ...`, `Undo run N of ...`).
fn run_number(out: &Finished) -> i64 {
    out.stdout
        .lines()
        .find_map(|line| {
            let rest = line
                .strip_prefix("Repair run ")
                .or_else(|| line.strip_prefix("Undo run "))?;
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no run number printed\n{}", out.dump()))
}

/// The repository path `(project, name)` has in the demo's world, as `repair plan` shows it.
fn shown_path(world: &World, project: i64, name: &str) -> String {
    let route = world
        .projects
        .iter()
        .find(|p| p.id == project)
        .and_then(|p| p.full_path.clone())
        .expect("a routed project");
    if name.is_empty() {
        route
    } else {
        format!("{route}/{name}")
    }
}

#[actix_rt::test]
async fn the_practice_steps_of_the_docs_run_as_written_against_demo_serve() {
    let steps = practice_steps();
    let kinds: Vec<String> = steps
        .iter()
        .map(|s| s[..2.min(s.len())].join(" "))
        .collect();
    for kind in [
        "report",
        "status",
        "repair plan",
        "repair apply",
        "repair verify",
        "repair runs",
        "repair undo",
    ] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "docs step `{kind}` in {kinds:?}"
        );
    }
    let world = demo_world(300);
    let plain = world.expected_plan(Consent::default());
    let consented = world.expected_plan(Consent {
        older_than_project: true,
        older_than_path: true,
        cleanup_policy: true,
    });
    let restorable = |decisions: &Decisions, projects: &[i64]| {
        decisions
            .iter()
            .filter(|((p, _), (a, _))| {
                *a == Action::Restore && (projects.is_empty() || projects.contains(p))
            })
            .count() as i64
    };

    let db = TestDb::unborn();
    let scratch = Scratch::new(&db.name);
    let env = Env::new()
        .set("DATABASE__URL", &db.url)
        .var("TMPDIR", scratch.0.to_string_lossy().into_owned());
    let xmin = keeping_a_transaction_open().await;
    let mut demo = spawn(
        &[
            "demo",
            "--serve",
            "--projects",
            "300",
            "--database",
            &db.name,
        ],
        &env,
    );
    assert!(
        demo.prints_within("Ctrl-C to stop.", Duration::from_secs(300))
            .await,
        "demo --serve did not say it serves\n{}",
        demo.stdout_so_far()
    );
    drop(xmin);
    let printed = demo.stdout_so_far();
    let dir = scratch.0.join("registry-repair-demo").join(&db.name);
    let config = dir.join("registry-repair.toml");
    let config_text = config.to_string_lossy().into_owned();
    assert!(
        printed.contains(&format!(
            "Settings for report, status and every repair step: {config_text}\n"
        )),
        "{printed}"
    );
    for step in [
        "report",
        "status",
        "repair plan",
        "repair apply",
        "repair undo RUN",
    ] {
        assert!(
            printed.contains(&format!(
                "  registry-repair --config {config_text} {step}\n"
            )),
            "{printed}"
        );
    }
    assert!(printed.contains(&format!(
        "  export REGISTRY_REPAIR__DATABASE__URL={}\n",
        db.url
    )));
    assert!(printed.contains(&format!(
        "  export REGISTRY_REPAIR__REGISTRY__KEY_PATH={}\n",
        dir.join("demo_registry.key").display()
    )));
    assert!(printed.contains("  export REGISTRY_REPAIR__ADMIN__LISTEN=127.0.0.1:"));
    // Only the user may read the settings and the key, or enter their directory.
    for (path, mode) in [
        (dir.clone(), 0o700),
        (config.clone(), 0o600),
        (dir.join("demo_registry.key"), 0o600),
    ] {
        let meta = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(meta.mode() & 0o777, mode, "{}", path.display());
    }

    // Every step as the docs write it: `--config` and nothing from the environment.
    let bare = Env::new();
    let special: Vec<i64> = (57..=63).collect();
    let mut undone = false;
    for step in &steps {
        let mut args = vec!["--config", config_text.as_str()];
        args.extend(step.iter().map(String::as_str));
        let out = cli(&args, &bare, Duration::from_secs(180)).await;
        out.assert_no_panic();
        let projects: Vec<i64> = step
            .windows(2)
            .filter(|w| w[0] == "--project")
            .filter_map(|w| w[1].parse().ok())
            .collect();
        match args[2..] {
            ["report"] => {
                out.assert_exit(0);
                assert!(
                    has_line(&out.stdout, &["Projects", "300"]),
                    "{}",
                    out.dump()
                );
            }
            ["status"] => {
                out.assert_exit(0).assert_stdout_has("fleet");
                assert!(
                    has_line(&out.stdout, &["work", "analyse"]),
                    "{}",
                    out.dump()
                );
            }
            ["repair", "plan", ..] => {
                out.assert_exit(0);
                let restore = restorable(&plain, &projects).to_string();
                assert!(
                    has_line(&out.stdout, &["restore", &restore]),
                    "{}",
                    out.dump()
                );
                let scoped: Decisions = plain
                    .iter()
                    .filter(|((p, _), _)| projects.is_empty() || projects.contains(p))
                    .map(|(k, v)| (k.clone(), *v))
                    .collect();
                // Each guard's reason, with its count.
                for action in [Action::Skip, Action::Review] {
                    for (reason, n) in counted(&scoped, action) {
                        let n = n.to_string();
                        assert!(
                            has_line(&out.stdout, &[reason.as_str(), &n]),
                            "{reason} {n}\n{}",
                            out.dump()
                        );
                    }
                }
                if projects == special {
                    // The guards' projects alone: each of their lost repositories, with its
                    // action and reason.
                    let theirs: Vec<_> = scoped.iter().collect();
                    assert_eq!(theirs.len(), 10);
                    for ((project, name), (action, reason)) in theirs {
                        let reason = reason.expect("held back");
                        let path = shown_path(&world, *project, name);
                        let id = project.to_string();
                        let words = [id.as_str(), action.as_str(), reason.as_str()];
                        assert!(
                            out.stdout.lines().any(|line| {
                                let mine: Vec<&str> = line.split_whitespace().collect();
                                mine.starts_with(&words) && mine.last() == Some(&path.as_str())
                            }),
                            "{words:?} {path}\n{}",
                            out.dump()
                        );
                    }
                }
            }
            ["repair", "apply", ..] => {
                out.assert_exit(0).assert_stdout_has("rows written");
                let run = run_number(&out);
                let consent = step.iter().any(|a| a.starts_with("--include-"));
                let want = match (consent, projects.as_slice()) {
                    // The canary: its project's restores.
                    (false, [_, ..]) => restorable(&plain, &projects),
                    // Everything else the guards let through.
                    (false, []) => restorable(&plain, &[]) - restorable(&plain, &[51]),
                    // The reviews, lifted for their projects.
                    (true, _) => restorable(&consented, &projects) - restorable(&plain, &projects),
                };
                assert!(want > 0);
                let restored = number(
                    &db.url,
                    &format!(
                        "SELECT count(*) AS n FROM registry_repair_restored r \
                         JOIN container_repositories c ON c.id = r.repository_id \
                         WHERE r.run_id = {run}"
                    ),
                )
                .await;
                assert_eq!(restored, want, "run {run}\n{}", out.dump());
                if consent {
                    out.assert_stdout_has("--include-cleanup-policy");
                }
            }
            ["repair", "verify", run] => {
                let undone_run = undone && run == "3";
                if undone_run {
                    // What the undo took back is missing again: the run meant to restore it.
                    out.assert_exit(1);
                    let still = out
                        .stdout
                        .lines()
                        .filter(|l| l.contains("still without a row"))
                        .count();
                    assert_eq!(still, 5, "{}", out.dump());
                } else {
                    out.assert_exit(0).assert_stdout_has(
                        "Every repository the run meant to restore has a row, and every row it \
                         restored names a repository the registry holds.",
                    );
                }
            }
            ["repair", "runs"] => {
                out.assert_exit(0);
                for run in ["1", "2", "3"] {
                    assert!(has_line(&out.stdout, &[run, "apply"]), "{}", out.dump());
                }
                if undone {
                    out.assert_stdout_has("undone by 4")
                        .assert_stdout_has("undoes run 3");
                }
            }
            ["repair", "undo", "3"] => {
                out.assert_exit(0)
                    .assert_stdout_has("Undo run 4 of repair run 3: 5 rows deleted");
                assert_eq!(
                    number(
                        &db.url,
                        "SELECT count(*) AS n FROM registry_repair_restored r \
                         JOIN container_repositories c ON c.id = r.repository_id \
                         WHERE r.run_id = 3"
                    )
                    .await,
                    0
                );
                undone = true;
            }
            _ => panic!("a practice step this test does not know: {step:?}"),
        }
    }
    assert!(undone, "the practice undoes a run");

    // One demo serves a database at a time: a second is refused and the first serves on.
    let second = cli(
        &["demo", "--projects", "20", "--database", &db.name],
        &env,
        Duration::from_secs(60),
    )
    .await;
    second
        .assert_exit(2)
        .assert_stderr_has("configuration `--database`")
        .assert_stderr_has(&format!(
            "the database `{}` is in use by another demo (registry-repair demo, pid {}",
            db.name,
            demo.pid()
        ));
    cli(
        &["--config", &config_text, "status"],
        &bare,
        Duration::from_secs(30),
    )
    .await
    .assert_exit(0);

    // SIGTERM: it stops, exit 0, its directory removed, the database kept.
    demo.signal(libc::SIGTERM);
    let stopped = demo.wait(Duration::from_secs(60)).await;
    stopped
        .assert_exit(0)
        .assert_no_panic()
        .assert_stdout_has(&format!("{} is removed", dir.display()))
        .assert_stdout_has(&format!("The database `{}` is kept.", db.name));
    assert!(!dir.exists(), "{} is left", dir.display());
    assert_eq!(
        number(&db.url, "SELECT count(*) AS n FROM registry_repair_runs").await,
        4
    );
}
