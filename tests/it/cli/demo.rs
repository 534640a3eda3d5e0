//! `demo`: end to end (every row and the repair plan checked against what it seeded, every guard
//! by reason, nothing written by the plan); only ever on a database it made itself (one it did
//! not make is refused, untouched, and a session of it kept; one it made is made again).

use std::collections::BTreeMap;
use std::time::Duration;

use diesel::sql_types::{BigInt, Nullable, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use registry_repair::demo::database::DEMO_MARK;
use registry_repair::demo::seed::World;
use registry_repair::repair::guards::Consent;
use registry_repair::repair::{Action, Reason};

use crate::common::process::{cli, Env};
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
