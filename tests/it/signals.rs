//! Signals on the real binary. SIGTERM and SIGINT stop dispatching, let in-flight projects finish,
//! flush and exit 0. SIGKILL, at any moment, leaves only right rows behind, and the next start
//! analyses exactly the projects without one. The simulated registry runs inside the test process
//! and counts the requests made for each project, which shows what every start asked for.

use crate::common::TestApp;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::common;
use crate::common::process::{cli, service_env, spawn, Env, Running};
use crate::common::{assert_rows_match, eventually, trusted, TestDb};
use diesel::sql_types::{BigInt, Integer, Nullable, SmallInt};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use registry_repair::demo::seed::World;
use registry_repair::registry::simulator::RegistrySimulator;

/// `n` projects under two top-level groups (and a subgroup of each), with mixed-case paths. Each
/// has one to three registry repositories; Rails knows all, none, some of them, or one more.
fn two_group_world(n: usize) -> World {
    const NAMES: [&str; 3] = ["", "api", "tools/cache"];
    let mut w = World::new();
    let alpha = w.group(None, "Alpha-Org");
    let alpha_sub = w.group(Some(alpha), "Platform_Team");
    let beta = w.group(None, "beta.Group");
    let beta_sub = w.group(Some(beta), "Sub-Team.X");
    let homes = [alpha, alpha_sub, beta, beta_sub];
    for i in 0..n {
        let path = match i % 3 {
            0 => format!("Service-{i}"),
            1 => format!("app_{i}"),
            _ => format!("Web.App-{i}"),
        };
        let registry: Vec<&str> = (0..1 + i % 3).map(|k| NAMES[(i + k) % 3]).collect();
        let mut rails: Vec<&str> = match (i / 3) % 4 {
            0 => registry.clone(),
            1 => Vec::new(),
            2 => registry[..1].to_vec(),
            _ => registry.clone(),
        };
        if (i / 3) % 4 == 3 {
            rails.push("deleted/long-ago");
        }
        w.project(homes[i % homes.len()], &path, &registry, &rails);
    }
    w
}

/// The registry path each project of `world` is listed under (what `requests_for` counts).
fn registry_paths(world: &World) -> HashMap<i64, String> {
    world
        .projects
        .iter()
        .filter_map(|p| Some((p.id, p.full_path.as_deref()?.to_lowercase())))
        .collect()
}

/// List requests the registry has had for each project so far.
fn asked(registry: &RegistrySimulator, paths: &HashMap<i64, String>) -> HashMap<i64, u64> {
    paths
        .iter()
        .map(|(id, path)| (*id, registry.requests_for(path)))
        .collect()
}

#[derive(Debug, diesel::QueryableByName)]
struct Backends {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(Debug, diesel::QueryableByName)]
struct RawRow {
    #[diesel(sql_type = BigInt)]
    project_id: i64,
    #[diesel(sql_type = SmallInt)]
    status: i16,
    #[diesel(sql_type = Nullable<Integer>)]
    missing_count: Option<i32>,
}

/// Waits until no other session is connected to the test database: a killed process's backends
/// may still be finishing a statement, and only once they are gone is the table final.
async fn wait_for_other_sessions_to_end(conn: &mut AsyncPgConnection) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let b: Backends = diesel::sql_query(
            "SELECT count(*) AS n FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .get_result(conn)
        .await
        .expect("reading pg_stat_activity");
        if b.n == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} sessions still connected to the test database after 10 s",
            b.n
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every row is the one its project must end with: a project of the world, `completed` or
/// `failed` as `world.expected()` says (never `ongoing`), the right `missing_count`, one row per
/// project. Returns the projects that have a row.
async fn assert_every_row_right(world: &World, db: &TestDb) -> HashSet<i64> {
    let mut conn = AsyncPgConnection::establish(&db.url)
        .await
        .expect("connecting to the test database");
    wait_for_other_sessions_to_end(&mut conn).await;
    let rows: Vec<RawRow> = diesel::sql_query(
        "SELECT project_id, status, missing_count \
         FROM container_registry_data_repair_details ORDER BY project_id",
    )
    .load(&mut conn)
    .await
    .expect("reading the tracking table");
    let expected = world.expected();
    let mut recorded = HashSet::new();
    for row in &rows {
        assert!(
            recorded.insert(row.project_id),
            "two rows for project {}",
            row.project_id
        );
        assert_ne!(row.status, 0, "an `ongoing` row: {row:?}");
        let e = expected
            .get(&row.project_id)
            .unwrap_or_else(|| panic!("a row for a project not in the world: {row:?}"));
        assert_eq!(
            (row.status, row.missing_count),
            (e.status as i16, Some(e.missing)),
            "project {}",
            row.project_id
        );
    }
    // Each missing repository recorded with its row, in its transaction: never without it.
    let entries = registry_repair::db::missing::all(&db.database())
        .await
        .expect("reading the recorded missing repositories");
    let mut per_project: std::collections::HashMap<i64, i32> = std::collections::HashMap::new();
    for (project, _) in &entries {
        assert!(
            recorded.contains(project),
            "a recorded missing repository of project {project}, which has no row"
        );
        *per_project.entry(*project).or_default() += 1;
    }
    for row in &rows {
        assert_eq!(
            per_project.get(&row.project_id).copied().unwrap_or(0),
            row.missing_count.unwrap_or(0),
            "recorded missing repositories of project {}",
            row.project_id
        );
    }
    recorded
}

/// Fails the test, with the child's output, if it is no longer running.
async fn assert_still_running(child: &mut Running, what: &str) {
    if child.has_exited() {
        let out = child.wait(Duration::from_secs(1)).await;
        panic!("{what}: the service exited by itself\n{}", out.dump());
    }
}

fn seed() -> u64 {
    std::env::var("SIGNALS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
        })
}

#[actix_rt::test]
async fn sigkill_at_random_moments_leaves_only_right_rows_and_the_next_start_redoes_exactly_the_unrecorded(
) {
    let seed = seed();
    println!("random kill moments from seed {seed} (replay: SIGNALS_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);

    let world = two_group_world(800);
    let total = world.projects.len();
    let TestApp { db, registry, .. } = TestApp::prepare(&world).await;
    registry.set_latency(Duration::from_millis(20));
    let paths = registry_paths(&world);
    assert_eq!(paths.len(), total, "every project has a registry path");
    let env: Env = service_env(&db, &registry.url(), "127.0.0.1:0")
        .set("WORKER__MAX_CONCURRENCY", "4")
        .set("WRITER__FLUSH_INTERVAL_MS", "200")
        .set("WRITER__BATCH_SIZE", "20");

    // Projects with a row, and the requests made for each of them, as of the last kill.
    let mut recorded_then: HashMap<i64, u64> = HashMap::new();
    let mut asked_then: HashMap<i64, u64> = asked(&registry, &paths);
    let mut after_each_kill = Vec::new();
    for round in 1..=4 {
        if recorded_then.len() == total {
            break;
        }
        let delay = Duration::from_millis(rng.gen_range(300..=1500));
        let what = format!("kill {round} after {delay:?}");
        let requests_before = registry.stats().list_requests;
        let mut child = spawn(&["run"], &env);
        // The random moment counts from the first request, not from the spawn: a loaded machine
        // may take seconds to start the binary.
        let working = eventually(Duration::from_secs(30), || async {
            registry.stats().list_requests > requests_before
        })
        .await;
        assert_still_running(&mut child, &what).await;
        assert!(working, "{what}: the service never asked the registry");
        tokio::time::sleep(delay).await;
        assert_still_running(&mut child, &what).await;
        child.signal(libc::SIGKILL);
        let killed = child.wait(Duration::from_secs(10)).await;
        assert_eq!(
            killed.code,
            None,
            "{what}: ended by the signal\n{}",
            killed.dump()
        );
        assert!(
            eventually(Duration::from_secs(5), || async {
                registry.stats().in_flight == 0
            })
            .await,
            "{what}: the killed process's requests end"
        );

        let recorded = assert_every_row_right(&world, &db).await;
        let asked_now = asked(&registry, &paths);
        for (id, before) in &recorded_then {
            assert!(recorded.contains(id), "{what}: project {id} lost its row");
            assert_eq!(
                asked_now[id], *before,
                "{what}: project {id} ({}) had a row before this start, yet was asked for again",
                paths[id]
            );
        }
        println!(
            "{what}: {} of {total} projects recorded, {} list requests so far",
            recorded.len(),
            registry.stats().list_requests
        );
        after_each_kill.push(recorded.len());
        recorded_then = recorded.iter().map(|id| (*id, asked_now[id])).collect();
        asked_then = asked_now;
    }
    assert!(
        after_each_kill.iter().any(|&n| n > 0 && n < total),
        "no kill landed mid-run (projects recorded after each kill: {after_each_kill:?}, seed {seed})"
    );

    // The last start finishes the work, asking only for the projects without a row.
    let done = cli(&["run", "--until-done"], &env, Duration::from_secs(30)).await;
    done.assert_exit(0).assert_no_panic();
    assert_rows_match(&world, &db).await;
    let asked_now = asked(&registry, &paths);
    for (id, path) in &paths {
        if recorded_then.contains_key(id) {
            assert_eq!(
                asked_now[id],
                asked_then[id],
                "project {id} ({path}) had a row, yet the last start asked for it\n{}",
                done.dump()
            );
        } else {
            assert!(
                asked_now[id] > asked_then[id],
                "project {id} ({path}) had no row, yet the last start did not ask for it\n{}",
                done.dump()
            );
        }
    }
}

#[actix_rt::test]
async fn sigterm_and_sigint_mid_run_finish_in_flight_work_flush_and_exit_0() {
    let world = two_group_world(120);
    let total = world.projects.len();
    let TestApp { db, registry, .. } = TestApp::prepare(&world).await;
    registry.set_latency(Duration::from_millis(300));
    let paths = registry_paths(&world);
    // Neither the timer nor the batch size can flush during the test: only the shutdown can.
    let env = service_env(&db, &registry.url(), "127.0.0.1:0")
        .set("WORKER__MAX_CONCURRENCY", "4")
        .set("WRITER__FLUSH_INTERVAL_MS", "60000")
        .set("WRITER__BATCH_SIZE", "1000");

    for (name, signal) in [("SIGTERM", libc::SIGTERM), ("SIGINT", libc::SIGINT)] {
        let rows_before = assert_every_row_right(&world, &db).await.len();
        let requests_before = registry.stats().list_requests;
        let mut child = spawn(&["run"], &env);

        // Busy: four requests in flight, and some projects already answered (so buffered).
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            assert_still_running(&mut child, name).await;
            let stats = registry.stats();
            if stats.in_flight >= 4 && stats.list_requests >= requests_before + 8 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: the service never had 4 requests in flight: {stats:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            db.rows().await.len(),
            rows_before,
            "{name}: nothing is written before the shutdown flush"
        );

        let signalled = Instant::now();
        child.signal(signal);
        let stopped = child.wait(Duration::from_secs(15)).await;
        stopped.assert_exit(0).assert_no_panic();
        assert!(
            stopped.stderr.contains(name),
            "{name}: the log names the signal\n{}",
            stopped.dump()
        );
        println!(
            "{name}: exited 0 {:?} after the signal",
            signalled.elapsed()
        );

        // Every project the registry was asked about was finished and written; nothing else was.
        let recorded = assert_every_row_right(&world, &db).await;
        let stats = registry.stats();
        assert_eq!(stats.in_flight, 0, "{name}: {stats:?}");
        assert_eq!(
            recorded.len() as u64,
            stats.list_requests,
            "{name}: one row per project asked (each has one page)\n{}",
            stopped.dump()
        );
        for (id, path) in &paths {
            let n = registry.requests_for(path);
            assert_eq!(
                n,
                u64::from(recorded.contains(id)),
                "{name}: project {id} ({path}) was asked {n} times; recorded: {}",
                recorded.contains(id)
            );
        }
        assert!(
            recorded.len() >= rows_before + 8,
            "{name}: the projects answered before the signal and those in flight were written \
             ({rows_before} rows before, {} after)",
            recorded.len()
        );
        assert!(recorded.len() < total, "{name}: stopped before the end");
    }
}

#[actix_rt::test]
async fn sigterm_while_starting_exits_0_and_a_second_signal_cuts_the_drain_short() {
    // A registry that accepts connections and never answers: the start-up probe waits on it.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("silent registry");
    let silent_url = format!("http://{}", silent.local_addr().expect("address"));
    let db = TestDb::new().await;
    let world = two_group_world(20);
    world.insert(&db.database()).await.expect("seed");
    let admin = format!("127.0.0.1:{}", common::process::free_port());
    let env = service_env(&db, &silent_url, &admin).set("REGISTRY__TIMEOUT_MS", "20000");
    let mut running = spawn(&["run"], &env);
    // Starting: its start-up probe has connected to the registry, which never answers.
    silent.set_nonblocking(true).expect("non-blocking accept");
    let mut probe = None;
    assert!(
        eventually(Duration::from_secs(20), || {
            if let Ok((stream, _)) = silent.accept() {
                probe = Some(stream);
            }
            std::future::ready(probe.is_some())
        })
        .await,
        "the start-up probe connects to the registry"
    );
    assert!(!running.has_exited(), "still starting");
    running.signal(libc::SIGTERM);
    let finished = running.wait(Duration::from_secs(5)).await;
    finished.assert_exit(0).assert_no_panic();
    assert_eq!(db.rows().await.len(), 0);

    // Draining: in-flight projects wait on a slow registry, a second SIGINT stops the wait.
    let registry =
        RegistrySimulator::start(world.registry_paths(), trusted(), 0).expect("registry");
    registry.set_latency(Duration::from_secs(8));
    let env = service_env(&db, &registry.url(), &admin)
        .set("WORKER__SHUTDOWN_TIMEOUT_S", "60")
        .set("WORKER__MAX_CONCURRENCY", "2");
    let mut running = spawn(&["run"], &env);
    assert!(
        eventually(Duration::from_secs(10), || async {
            registry.stats().in_flight == 2
        })
        .await
    );
    running.signal(libc::SIGTERM);
    assert!(
        running
            .logs_within("signal received; shutting down", Duration::from_secs(10))
            .await,
        "the first signal starts the drain"
    );
    assert!(
        !running.has_exited(),
        "draining: waiting for the two in flight"
    );
    let asked = Instant::now();
    running.signal(libc::SIGINT);
    let finished = running.wait(Duration::from_secs(5)).await;
    finished.assert_exit(0).assert_no_panic();
    assert!(asked.elapsed() < Duration::from_secs(5));
    assert_eq!(
        db.rows().await.len(),
        0,
        "nothing finished, nothing written"
    );
}
