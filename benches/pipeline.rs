//! The scale benchmark: seeds a GitLab-shaped database of N projects server-side, runs the real
//! `registry-repair` binary against a simulated registry with a set latency, and prints
//! projects/s, registry requests/s against `max_concurrency / latency`, database time per
//! scheduling batch (beside GitLab's own query), Writer rows/s and peak RSS.
//!
//!     cargo bench --bench pipeline -- --projects 1000000
//!     cargo bench --bench pipeline -- --projects 10000000 --concurrency 2,32,256
//!     cargo bench --bench pipeline -- --projects 100000 --only repair
//!     cargo bench --bench pipeline -- --projects 1000000 --only fleet
//!     cargo bench --bench pipeline -- --projects 1000000 --only sizes
//!
//! The `repair` section makes every project a repair candidate (a tracking row with one missing
//! repository, which the registry then holds) and measures `repair plan` and `repair apply` on
//! the same pipeline, at the same latency and concurrencies as the analysis.
//!
//! The seeded database (`rr_bench_<N>`) is kept between runs; `--reseed` makes it again.
//! `REGISTRY_REPAIR_BENCH_BIN=/path/to/registry-repair` times another binary (an older release)
//! against the same database, for a before-and-after in turn.

use std::collections::HashMap;
use std::io::Write as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use diesel::sql_types::{BigInt, Nullable};
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use registry_repair::admin::AdminClient;
use registry_repair::analysis::Tracking;
use registry_repair::config::Shard;
use registry_repair::db::tracking::TrackingRow;
use registry_repair::db::{self, projects, Database};
use registry_repair::demo::database::{database_url, load_gitlab_schema, recreate_database};
use registry_repair::registry::simulator::{RegistrySimulator, TrustedIssuer};
use registry_repair::registry::TokenSigner;
use registry_repair::scheduler::ServiceStatus;
use registry_repair::writer::{Flush, GetWriterStats, Record, Writer};

const KEY: &str = include_str!("../tests/fixtures/registry.key");

/// Whether the binary's `repair` takes `--admin` (an older release serves the API always).
fn offers_admin_flag() -> bool {
    Command::new(binary())
        .args(["repair", "plan", "--help"])
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("--admin"))
}

/// The binary timed: this build's, or another (an older release, for a before-and-after) named by
/// `REGISTRY_REPAIR_BENCH_BIN`.
fn binary() -> String {
    std::env::var("REGISTRY_REPAIR_BENCH_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_registry-repair").to_string())
}
const GROUPS: i64 = 1000;
/// One project in this many has repositories (most have none, as in real installations).
const WITH_REPOS_EVERY: i64 = 100;

#[derive(Parser, Debug)]
#[command(about = "registry-repair scale benchmark")]
struct Args {
    /// Projects in the seeded database.
    #[arg(long, default_value_t = 1_000_000)]
    projects: i64,
    /// max_concurrency values to measure at --latency-ms.
    #[arg(long, value_delimiter = ',', default_value = "2,32,256")]
    concurrency: Vec<usize>,
    /// Registry latency per request for the concurrency runs.
    #[arg(long, default_value_t = 20)]
    latency_ms: u64,
    /// max_concurrency for the run without registry latency.
    #[arg(long, default_value_t = 64)]
    unlimited_concurrency: usize,
    /// Seconds measured per run (after a warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// PostgreSQL server.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    server: String,
    /// Drop and seed the database again.
    #[arg(long)]
    reseed: bool,
    /// Rows for the Writer measurement.
    #[arg(long, default_value_t = 200_000)]
    writer_rows: i64,
    /// Sections to run, of throughput, pick, restart, writer, repair, fleet, sizes (default:
    /// all).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "throughput,pick,restart,writer,repair,fleet,sizes"
    )]
    only: Vec<String>,
    /// The fleet's total concurrency for the `fleet` section, and the concurrency of the `sizes`
    /// section (at --latency-ms).
    #[arg(long, default_value_t = 32)]
    fleet_total: usize,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let system = actix_rt::System::new();
    system.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let n = args.projects;
    let name = format!("rr_bench_{n}");
    let url = database_url(&args.server, &name)?;
    println!("# registry-repair pipeline benchmark");
    println!(
        "machine: {} cores, {}; PostgreSQL at {}",
        std::thread::available_parallelism()
            .map(|p| p.get())
            .unwrap_or(1),
        mem_total(),
        db::redact(&args.server)
    );
    let seeded = Instant::now();
    if args.reseed || !is_seeded(&url, n).await {
        seed(&args.server, &name, &url, n).await?;
        println!(
            "seeded {n} projects in {:.1} s",
            seeded.elapsed().as_secs_f64()
        );
    } else {
        // This version's migrations, on a database an older one seeded (idempotent).
        db::migrate(&url, Duration::from_secs(10))?;
        println!("reusing the seeded database {name}");
    }
    let database = Database::new(&url, 4, Duration::from_secs(5))?;
    let signer = TokenSigner::from_pem(
        KEY,
        "fixture",
        "gitlab-issuer",
        "container_registry",
        Duration::from_secs(300),
    )?;
    let registry = RegistrySimulator::start_with_workers(
        registry_paths(n),
        TrustedIssuer {
            public_key_pem: signer.public_key_pem().to_string(),
            kid: signer.kid().to_string(),
            issuer: "gitlab-issuer".into(),
            audience: "container_registry".into(),
        },
        0,
        2,
    )?;

    token_costs(&signer)?;

    round_trip(&registry, &signer, Duration::from_millis(args.latency_ms)).await?;

    let section = |name: &str| args.only.iter().any(|s| s == name);
    let mut rss = Vec::new();
    if section("throughput") {
        // Throughput, with nothing analysed yet.
        set_analysed(&url, 0, None).await?;
        println!(
            "\n## Throughput ({} s per run, after 2 s of warm-up)",
            args.seconds
        );
        println!(
        "| latency | max_concurrency | projects/s | registry req/s | limit (c/latency) | of limit | CPU (cores): service / registry sim / PostgreSQL | service peak RSS |"
    );
        println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
        for &c in &args.concurrency {
            let r = throughput(
                &url,
                &registry,
                Duration::from_millis(args.latency_ms),
                c,
                args.seconds,
            )
            .await?;
            rss.push(r.peak_rss_kib);
            r.print(args.latency_ms, c);
        }
        let r = throughput(
            &url,
            &registry,
            Duration::ZERO,
            args.unlimited_concurrency,
            args.seconds,
        )
        .await?;
        rss.push(r.peak_rss_kib);
        r.print(0, args.unlimited_concurrency);
    }

    if section("pick") {
        println!("\n## Picking the next batch of 1,000 (database time, median of 5)");
        println!("Analysed lowest ids first is the order this service leaves (with its watermark); highest first is the order GitLab's worker left (`ORDER BY id DESC`, no watermark).");
        println!("| analysed | order | ours, from the watermark | ours, from id 0 | GitLab's `LEFT JOIN ... IS NULL ORDER BY id DESC LIMIT 8` |");
        println!("| --- | --- | --- | --- | --- |");
        for share in [0.0, 0.5, 0.9] {
            let count = (n as f64 * share) as i64;
            for highest_first in [false, true] {
                if share == 0.0 && highest_first {
                    continue;
                }
                let watermark = (!highest_first).then_some(count);
                set_analysed_in(&url, n, count, highest_first, watermark).await?;
                let from = watermark.unwrap_or(0);
                let ours = time_ours(&database, from).await?;
                let cold = time_ours(&database, 0).await?;
                let gitlab = time_gitlab(&url).await?;
                println!(
                    "| {:.0}% ({count}) | {} | {} | {} | {} |",
                    share * 100.0,
                    if highest_first {
                        "highest first"
                    } else {
                        "lowest first"
                    },
                    if highest_first {
                        "(no watermark)".to_string()
                    } else {
                        ms(ours)
                    },
                    ms(cold),
                    ms(gitlab)
                );
            }
        }
    }

    if section("restart") {
        println!("\n## Restart with 90% analysed");
        let through = (n as f64 * 0.9) as i64;
        set_analysed(&url, through, Some(through)).await?;
        let first = first_dispatch(&url, &registry).await?;
        println!(
        "from process start to the registry's first request: {} (the binary connects, reads the watermark, walks from it)",
        ms(first)
    );
    }

    if section("writer") {
        println!("\n## Writer");
        for batch in [500usize, 5000] {
            // Inserts each time: a row already there is an answer the Writer leaves alone.
            set_analysed(&url, 0, None).await?;
            let rate = writer_rate(&database, args.writer_rows.min(n), batch).await?;
            println!(
                "batch_size {batch}: {rate:.0} rows/s ({} rows, one UNNEST upsert per batch)",
                args.writer_rows.min(n)
            );
        }
        set_analysed(&url, 0, None).await?;
    }

    if section("repair") {
        println!(
            "\n## Repair ({} s per run, after 2 s of warm-up; every project a candidate)",
            args.seconds
        );
        println!("Each project: one missing repository the registry holds, the registry listed again, the guards' lookups, and for apply one transaction (the rows, the audit, the tracking row).");
        println!("| latency | max_concurrency | planned projects/s | applied projects/s | limit (c/latency) | service peak RSS (apply) |");
        println!("| --- | --- | --- | --- | --- | --- |");
        for i in 1..=n {
            registry.add_repository(&format!("group-{}/proj-{i}/r", 1 + i % GROUPS));
        }
        let latency = Duration::from_millis(args.latency_ms);
        for &c in &args.concurrency {
            let planned = repair_rate(&url, &registry, latency, c, args.seconds, false).await?;
            let applied = repair_rate(&url, &registry, latency, c, args.seconds, true).await?;
            rss.push(applied.peak_rss_kib);
            println!(
                "| {} ms | {c} | {:.0} | {:.0} | {:.0} | {} |",
                args.latency_ms,
                planned.projects_per_s,
                applied.projects_per_s,
                c as f64 / latency.as_secs_f64().max(1e-9),
                applied
                    .peak_rss_kib
                    .map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
                    .unwrap_or_else(|| "n/a".into())
            );
            let _ = std::io::stdout().flush();
        }
        reset_repair(&url, n, false).await?;
        set_analysed(&url, 0, None).await?;
    }

    if section("fleet") {
        fleet(&url, &registry, &args).await?;
    }

    if section("sizes") {
        sizes(&url, &registry, &args).await?;
    }

    println!("\n## Peak RSS of the service");
    println!(
        "{} projects: {} (largest of the runs above)",
        n,
        rss.iter()
            .flatten()
            .max()
            .map(|k| format!("{:.1} MiB", *k as f64 / 1024.0))
            .unwrap_or_else(|| "n/a".into())
    );
    registry.stop().await;
    Ok(())
}

/// What one signature and one verification cost here: the registry verifies every request's
/// token, the service signs one per batch of projects.
fn token_costs(signer: &TokenSigner) -> anyhow::Result<()> {
    let paths: Vec<String> = (0..16).map(|i| format!("group-1/proj-{i}")).collect();
    let started = Instant::now();
    let rounds = 50;
    let mut token = None;
    for _ in 0..rounds {
        token = Some(signer.mint_for(&paths)?);
    }
    let sign = started.elapsed() / rounds;
    let token = token.map(|t| t.bearer).unwrap_or_default();
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(signer.public_key_pem().as_bytes())?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&["container_registry"]);
    let started = Instant::now();
    for _ in 0..rounds * 10 {
        jsonwebtoken::decode::<serde_json::Value>(&token, &key, &validation)?;
    }
    let verify = started.elapsed() / (rounds * 10);
    println!(
        "RS256 here: signing a token {} ({:.0}/s on one core), verifying one {} ({:.0}/s)",
        ms(sign),
        1.0 / sign.as_secs_f64(),
        ms(verify),
        1.0 / verify.as_secs_f64()
    );
    Ok(())
}

/// One client, one request at a time, no service: what the registry and HTTP cost by themselves.
async fn round_trip(
    registry: &RegistrySimulator,
    signer: &TokenSigner,
    latency: Duration,
) -> anyhow::Result<()> {
    registry.set_latency(latency);
    let client = reqwest::Client::new();
    let token = signer.mint("group-1/proj-1000")?;
    let url = format!(
        "{}/gitlab/v1/repository-paths/group-1/proj-1000/repositories/list/?n=1000",
        registry.url()
    );
    let one_at_a_time = || async {
        let rounds = 100;
        let started = Instant::now();
        for _ in 0..rounds {
            let response = client.get(&url).bearer_auth(&token.bearer).send().await?;
            anyhow::ensure!(
                response.status() == 200,
                "round trip: {}",
                response.status()
            );
            response.bytes().await?;
        }
        anyhow::Ok(started.elapsed() / rounds)
    };
    let seen = one_at_a_time().await?;
    println!(
        "registry round trip with {} ms of latency, one request at a time, no service: {} per request",
        latency.as_millis(),
        ms(seen)
    );
    if !latency.is_zero() {
        // Waking the threads on both sides after a sleep costs this machine a fraction of a
        // millisecond more than the simulator allows for: it answers that much earlier, so that
        // `concurrency / latency` is what this registry can serve and the service is measured
        // against it.
        let mut seen = seen;
        for _ in 0..3 {
            let off = seen.as_secs_f64() - latency.as_secs_f64();
            if off.abs() < 20e-6 {
                break;
            }
            let early = (registry.answer_early().as_secs_f64() + off).max(0.0);
            registry.set_answer_early(Duration::from_secs_f64(early));
            seen = one_at_a_time().await?;
        }
        println!(
            "calibrated: the registry answers {} before its latency is up; a client now sees {} per request",
            ms(registry.answer_early()),
            ms(seen)
        );
    }
    // The same with 32 clients at once sharing one HTTP client, as the service's analysers do.
    let started = Instant::now();
    let loops: Vec<_> = (0..32)
        .map(|_| {
            let (client, url, bearer) = (client.clone(), url.clone(), token.bearer.clone());
            actix_rt::spawn(async move {
                for _ in 0..25 {
                    let _ = client
                        .get(&url)
                        .bearer_auth(&bearer)
                        .send()
                        .await?
                        .bytes()
                        .await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for handle in loops {
        handle.await??;
    }
    println!(
        "the same, 32 clients at once: {} per request",
        ms(started.elapsed() / 25)
    );
    Ok(())
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn mem_total() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_string())
        })
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| format!("{:.0} GiB RAM", kb / 1024.0 / 1024.0))
        .unwrap_or_else(|| "RAM unknown".into())
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = Nullable<BigInt>)]
    n: Option<i64>,
}

async fn connect(url: &str) -> anyhow::Result<db::SingleConn> {
    // As the service connects: the URL's sslmode, sslrootcert and statement mode apply.
    Ok(db::connect::establish_url(url).await?)
}

async fn is_seeded(url: &str, n: i64) -> bool {
    let Ok(mut conn) = connect(url).await else {
        return false;
    };
    let count: Result<Count, _> = diesel::sql_query("SELECT max(id) AS n FROM projects")
        .get_result(&mut conn)
        .await;
    matches!(count, Ok(Count { n: Some(m) }) if m == n)
}

/// GitLab's tables, filled server-side with generate_series: projects in 1,000 groups, one in a
/// hundred with three registry repositories of which Rails kept two.
async fn seed(server: &str, name: &str, url: &str, n: i64) -> anyhow::Result<()> {
    recreate_database(server, name, None).await?;
    load_gitlab_schema(url).await?;
    db::migrate(url, Duration::from_secs(10))?;
    let mut conn = connect(url).await?;
    let steps = [
        format!(
            "INSERT INTO namespaces (id, name, path, type, created_at, updated_at) \
             SELECT g, 'Group-' || g, 'Group-' || g, 'Group', now(), now() FROM generate_series(1, {GROUPS}) g"
        ),
        "DROP INDEX index_routes_on_path; DROP INDEX index_routes_on_source_type_and_source_id; \
         DROP INDEX index_routes_on_lower_path; DROP INDEX index_projects_on_namespace_id"
            .into(),
        format!(
            "INSERT INTO projects (id, name, path, namespace_id, created_at, updated_at) \
             SELECT i, 'Proj-' || i, 'Proj-' || i, 1 + i % {GROUPS}, now(), now() FROM generate_series(1, {n}) i"
        ),
        format!(
            "INSERT INTO routes (source_id, source_type, path, created_at, updated_at) \
             SELECT i, 'Project', 'Group-' || (1 + i % {GROUPS}) || '/Proj-' || i, now(), now() \
             FROM generate_series(1, {n}) i"
        ),
        "CREATE UNIQUE INDEX index_routes_on_path ON routes USING btree (path); \
         CREATE UNIQUE INDEX index_routes_on_source_type_and_source_id ON routes USING btree (source_type, source_id); \
         CREATE INDEX index_routes_on_lower_path ON routes USING btree (lower((path)::text)); \
         CREATE INDEX index_projects_on_namespace_id ON projects USING btree (namespace_id)"
            .into(),
        format!(
            "INSERT INTO container_repositories (project_id, name, created_at, updated_at) \
             SELECT i, nm, now(), now() FROM generate_series({WITH_REPOS_EVERY}, {n}, {WITH_REPOS_EVERY}) i, \
             unnest(ARRAY['', 'a']) nm"
        ),
        "VACUUM ANALYZE".into(),
    ];
    for sql in steps {
        let started = Instant::now();
        conn.batch_execute(&sql).await?;
        eprintln!(
            "  {:>6.1} s  {}",
            started.elapsed().as_secs_f64(),
            sql.chars().take(70).collect::<String>()
        );
    }
    Ok(())
}

/// What the registry holds: root, `a` and `b` under every hundredth project.
fn registry_paths(n: i64) -> Vec<String> {
    let mut paths = Vec::with_capacity((n / WITH_REPOS_EVERY * 3) as usize);
    for i in (WITH_REPOS_EVERY..=n).step_by(WITH_REPOS_EVERY as usize) {
        let base = format!("group-{}/proj-{i}", 1 + i % GROUPS);
        paths.push(format!("{base}/a"));
        paths.push(format!("{base}/b"));
        paths.push(base);
    }
    paths
}

/// Leaves exactly the projects with id <= `through` analysed, and the watermark at `watermark`.
async fn set_analysed(url: &str, through: i64, watermark: Option<i64>) -> anyhow::Result<()> {
    set_analysed_in(url, through, through, false, watermark).await
}

/// Leaves `count` of the `n` projects analysed, the lowest ids or the highest, and the watermark.
async fn set_analysed_in(
    url: &str,
    n: i64,
    count: i64,
    highest_first: bool,
    watermark: Option<i64>,
) -> anyhow::Result<()> {
    let (first, last) = if highest_first {
        (n - count + 1, n)
    } else {
        (1, count)
    };
    let mut conn = connect(url).await?;
    conn.batch_execute(&format!(
        "TRUNCATE container_registry_data_repair_details; TRUNCATE registry_repair_watermarks; \
         TRUNCATE registry_repair_claims, registry_repair_passes, registry_repair_members; \
         INSERT INTO container_registry_data_repair_details (project_id, missing_count, status, created_at, updated_at) \
         SELECT i, 0, 1, now(), now() FROM generate_series({first}, {last}) i"
    ))
    .await?;
    // Separately: VACUUM refuses to run inside the implicit transaction of a multi-statement batch.
    conn.batch_execute("VACUUM ANALYZE container_registry_data_repair_details")
        .await?;
    if let Some(w) = watermark.filter(|w| *w > 0) {
        conn.batch_execute(&format!(
            "INSERT INTO registry_repair_watermarks (shard, analysed_through, updated_at) VALUES ('0/1', {w}, now())"
        ))
        .await?;
    }
    Ok(())
}

/// The median of five runs of the service's own keyset query, from `after`.
async fn time_ours(db: &Database, after: i64) -> anyhow::Result<Duration> {
    let mut times = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let batch = projects::next_unanalysed(db, after, 1000, Shard::ALL).await?;
        times.push(started.elapsed());
        anyhow::ensure!(!batch.is_empty() || after > 0, "no project found");
    }
    times.sort();
    Ok(times[2])
}

async fn time_gitlab(url: &str) -> anyhow::Result<Duration> {
    let mut conn = connect(url).await?;
    let mut times = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        conn.batch_execute(
            "SELECT p.id FROM projects p \
             LEFT JOIN container_registry_data_repair_details t ON p.id = t.project_id \
             WHERE t.project_id IS NULL ORDER BY p.id DESC LIMIT 8",
        )
        .await?;
        times.push(started.elapsed());
    }
    times.sort();
    Ok(times[1])
}

struct Service {
    child: Child,
    admin: AdminClient,
}

impl Service {
    fn spawn(url: &str, registry: &str, concurrency: usize, log: &str) -> anyhow::Result<Self> {
        Self::spawn_with(&["run"], url, registry, concurrency, log, &[])
    }

    /// The binary with `args` (`run`, `repair plan ...`).
    fn spawn_with(
        args: &[&str],
        url: &str,
        registry: &str,
        concurrency: usize,
        log: &str,
        extra_env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let listen = listener.local_addr()?;
        drop(listener);
        let key =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/registry.key");
        std::fs::create_dir_all("target/bench-logs")?;
        let logfile = std::fs::File::create(format!("target/bench-logs/{log}.log"))?;
        let env: HashMap<&str, String> = HashMap::from([
            ("REGISTRY_REPAIR__DATABASE__URL", url.to_string()),
            ("REGISTRY_REPAIR__REGISTRY__URL", registry.to_string()),
            (
                "REGISTRY_REPAIR__REGISTRY__KEY_PATH",
                key.to_string_lossy().into_owned(),
            ),
            ("REGISTRY_REPAIR__ADMIN__LISTEN", listen.to_string()),
            (
                "REGISTRY_REPAIR__WORKER__MAX_CONCURRENCY",
                concurrency.to_string(),
            ),
            ("REGISTRY_REPAIR__LOG__LEVEL", "warn".to_string()),
        ]);
        let child = Command::new(binary())
            .args(args)
            .envs(env)
            .envs(extra_env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logfile)
            .spawn()?;
        Ok(Self {
            child,
            admin: AdminClient::new(listen, None),
        })
    }

    async fn ready(&self) -> anyhow::Result<ServiceStatus> {
        for _ in 0..600 {
            if let Ok(status) = self.admin.status().await {
                return Ok(status);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        anyhow::bail!("the service did not answer within 6 s")
    }

    fn cpu_ticks(&self) -> u64 {
        ticks_of(self.child.id())
    }

    fn stop(mut self) {
        // SAFETY: a child of ours that has not been reaped.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

/// User + system CPU ticks of a process so far.
fn ticks_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let after = s.rsplit(')').next()?.split_whitespace().collect::<Vec<_>>();
            Some(after.get(11)?.parse::<u64>().ok()? + after.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

/// CPU ticks of every PostgreSQL process on the machine.
fn postgres_ticks() -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim_end().starts_with("postgres"))
        })
        .map(ticks_of)
        .sum()
}

struct Throughput {
    projects_per_s: f64,
    requests_per_s: f64,
    /// Of them, repository details (size) requests.
    size_requests_per_s: f64,
    limit: Option<f64>,
    /// Cores used by the service, the bench process (the simulated registry), PostgreSQL.
    cpu: [f64; 3],
    peak_rss_kib: Option<u64>,
}

impl Throughput {
    fn print(&self, latency_ms: u64, c: usize) {
        let (limit, share) = match self.limit {
            Some(l) => (
                format!("{l:.0}"),
                format!("{:.1}%", self.requests_per_s / l * 100.0),
            ),
            None => ("-".into(), "-".into()),
        };
        println!(
            "| {latency_ms} ms | {c} | {:.0} | {:.0} | {limit} | {share} | {:.0}% / {:.0}% / {:.0}% | {} |",
            self.projects_per_s,
            self.requests_per_s,
            self.cpu[0] * 100.0,
            self.cpu[1] * 100.0,
            self.cpu[2] * 100.0,
            self.peak_rss_kib
                .map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
                .unwrap_or_else(|| "n/a".into())
        );
        let _ = std::io::stdout().flush();
    }
}

async fn throughput(
    url: &str,
    registry: &RegistrySimulator,
    latency: Duration,
    concurrency: usize,
    seconds: u64,
) -> anyhow::Result<Throughput> {
    throughput_with(url, registry, latency, concurrency, seconds, &[]).await
}

/// [`throughput`] with settings of its own (`REGISTRY_REPAIR__...` variables).
async fn throughput_with(
    url: &str,
    registry: &RegistrySimulator,
    latency: Duration,
    concurrency: usize,
    seconds: u64,
    extra_env: &[(&str, &str)],
) -> anyhow::Result<Throughput> {
    registry.set_latency(latency);
    let service = Service::spawn_with(
        &["run"],
        url,
        &registry.url(),
        concurrency,
        &format!("throughput-{}ms-c{concurrency}", latency.as_millis()),
        extra_env,
    )?;
    service.ready().await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ticks_per_s = 100.0; // USER_HZ on Linux
    let cpu = |service: &Service| {
        [
            service.cpu_ticks(),
            ticks_of(std::process::id()),
            postgres_ticks(),
        ]
    };
    let (s0, r0, z0, t0, cpu0) = (
        service.admin.status().await?,
        registry.stats().list_requests,
        registry.stats().size_requests,
        Instant::now(),
        cpu(&service),
    );
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (s1, r1, z1, elapsed, cpu1) = (
        service.admin.status().await?,
        registry.stats().list_requests,
        registry.stats().size_requests,
        t0.elapsed().as_secs_f64(),
        cpu(&service),
    );
    service.stop();
    eprintln!(
        "  c={concurrency}: dispatch-to-report {:.2} ms per project on average",
        s1.analysis_ms_avg
    );
    let share = |i: usize| cpu1[i].saturating_sub(cpu0[i]) as f64 / ticks_per_s / elapsed;
    Ok(Throughput {
        projects_per_s: (s1.analysed - s0.analysed) as f64 / elapsed,
        requests_per_s: (r1 - r0 + z1 - z0) as f64 / elapsed,
        size_requests_per_s: (z1 - z0) as f64 / elapsed,
        limit: (!latency.is_zero()).then(|| concurrency as f64 / latency.as_secs_f64()),
        cpu: [share(0), share(1), share(2)],
        peak_rss_kib: s1.peak_rss_kib,
    })
}

/// The cost of asking each missing repository's size: throughput with `analysis.sizes` on and
/// off, at `--fleet-total` (32) and `--latency-ms`.
async fn sizes(url: &str, registry: &RegistrySimulator, args: &Args) -> anyhow::Result<()> {
    let c = args.fleet_total;
    println!(
        "\n## The cost of sizes ({} ms latency, max_concurrency {c}, {} s per run after 2 s of warm-up)",
        args.latency_ms, args.seconds
    );
    println!("One project in {WITH_REPOS_EVERY} holds three repositories, one of them without a row: one size request per {WITH_REPOS_EVERY} projects, with a token of its own.");
    println!("| analysis.sizes | projects/s | registry req/s | of them size req/s | CPU (cores): service / registry sim / PostgreSQL |");
    println!("| --- | --- | --- | --- | --- |");
    // In turn, twice: the order of the runs must not decide the difference.
    for on in ["false", "true", "false", "true"] {
        set_analysed(url, 0, None).await?;
        let r = throughput_with(
            url,
            registry,
            Duration::from_millis(args.latency_ms),
            c,
            args.seconds,
            &[("REGISTRY_REPAIR__ANALYSIS__SIZES", on)],
        )
        .await?;
        println!(
            "| {on} | {:.0} | {:.0} | {:.1} | {:.2} / {:.2} / {:.2} |",
            r.projects_per_s, r.requests_per_s, r.size_requests_per_s, r.cpu[0], r.cpu[1], r.cpu[2]
        );
    }
    set_analysed(url, 0, None).await?;
    Ok(())
}

/// 1, 2 and 4 instances at one fleet total: projects/s, and what coordinating costs each instance
/// in the database; then how long the survivor of two takes to use the share of one SIGKILLed.
async fn fleet(url: &str, registry: &RegistrySimulator, args: &Args) -> anyhow::Result<()> {
    let (total, latency) = (args.fleet_total, Duration::from_millis(args.latency_ms));
    registry.set_latency(latency);
    println!(
        "\n## A fleet at a total of {total} ({} ms latency, {} s per run after 3 s of warm-up)",
        args.latency_ms, args.seconds
    );
    println!("Heartbeats and claims are counted from `pg_stat_user_tables` (an UPDATE of `registry_repair_members` per heartbeat, an INSERT into `registry_repair_claims` per read); statements: 3 per heartbeat, 6 per claim besides the reads of projects every instance makes anyway.");
    println!("| instances | projects/s | of limit | heartbeats/s per instance | claims/s per instance | coordination statements/s per instance | CPU (cores): all instances / registry sim / PostgreSQL |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let limit = total as f64 / latency.as_secs_f64();
    for k in [1usize, 2, 4] {
        set_analysed(url, 0, None).await?;
        let members = (0..k)
            .map(|i| Service::spawn(url, &registry.url(), total, &format!("fleet-{k}-{i}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        for member in &members {
            member.ready().await?;
        }
        // Each member counts what is left once, at start (exact up to 1M projects): a one-off
        // that is not the steady state measured here.
        counts_done(url).await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let cpu = |members: &[Service]| {
            [
                members.iter().map(Service::cpu_ticks).sum::<u64>(),
                ticks_of(std::process::id()),
                postgres_ticks(),
            ]
        };
        let (a0, c0, t0, cpu0) = (
            analysed(&members).await?,
            fleet_counts(url).await?,
            Instant::now(),
            cpu(&members),
        );
        tokio::time::sleep(Duration::from_secs(args.seconds)).await;
        let (a1, c1, elapsed, cpu1) = (
            analysed(&members).await?,
            fleet_counts(url).await?,
            t0.elapsed().as_secs_f64(),
            cpu(&members),
        );
        let cores = |i: usize| cpu1[i].saturating_sub(cpu0[i]) as f64 / 100.0 / elapsed;
        for member in members {
            member.stop();
        }
        let per = |d: i64| d as f64 / elapsed / k as f64;
        let (beats, claims) = (per(c1.0 - c0.0), per(c1.1 - c0.1));
        let rate = (a1 - a0) as f64 / elapsed;
        println!(
            "| {k} | {rate:.0} | {:.1}% | {beats:.2} | {claims:.2} | {:.1} | {:.2} / {:.2} / {:.2} |",
            rate / limit * 100.0,
            beats * 3.0 + claims * 6.0,
            cores(0),
            cores(1),
            cores(2)
        );
        let _ = std::io::stdout().flush();
    }
    set_analysed(url, 0, None).await?;
    let survivor = Service::spawn(url, &registry.url(), total, "fleet-survivor")?;
    survivor.ready().await?;
    let victim = Service::spawn(url, &registry.url(), total, "fleet-victim")?;
    victim.ready().await?;
    let half = total / 2;
    let split = wait_for(&survivor, Duration::from_secs(30), |s| {
        s.share == Some(half)
    })
    .await?;
    anyhow::ensure!(split.is_some(), "the two members never split the total");
    // SAFETY: a child of ours that has not been reaped.
    unsafe {
        libc::kill(victim.child.id() as i32, libc::SIGKILL);
    }
    let killed = Instant::now();
    let whole = wait_for(&survivor, Duration::from_secs(60), |s| {
        s.share == Some(total)
    })
    .await?;
    let share_after = killed.elapsed();
    survivor.stop();
    drop(victim);
    match whole {
        Some(_) => println!(
            "\nTakeover: the survivor of two used the whole total {:.1} s after the other was SIGKILLed (fleet.member_timeout_ms 10000, heartbeat 1000).",
            share_after.as_secs_f64()
        ),
        None => println!("\nTakeover: the survivor did not take the whole total within 60 s."),
    }
    Ok(())
}

/// Waits (at most 60 s) until no statement counting the projects left runs in the database.
async fn counts_done(url: &str) -> anyhow::Result<()> {
    #[derive(diesel::QueryableByName)]
    struct Running {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let mut conn = connect(url).await?;
    for _ in 0..600 {
        let running: Running = diesel::sql_query(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() \
             AND state = 'active' AND query LIKE 'SELECT COUNT(*) FROM \"projects\"%'",
        )
        .get_result(&mut conn)
        .await?;
        if running.n == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// The projects the members analysed so far, added up.
async fn analysed(members: &[Service]) -> anyhow::Result<u64> {
    let mut sum = 0;
    for member in members {
        sum += member.admin.status().await?.analysed;
    }
    Ok(sum)
}

/// Heartbeats and claims recorded so far, from PostgreSQL's table statistics.
async fn fleet_counts(url: &str) -> anyhow::Result<(i64, i64)> {
    #[derive(diesel::QueryableByName)]
    struct Counts {
        #[diesel(sql_type = BigInt)]
        beats: i64,
        #[diesel(sql_type = BigInt)]
        claims: i64,
    }
    let mut conn = connect(url).await?;
    let counts: Counts = diesel::sql_query(
        "SELECT COALESCE(sum(n_tup_upd) FILTER (WHERE relname = 'registry_repair_members'), 0)::bigint AS beats, \
                COALESCE(sum(n_tup_ins) FILTER (WHERE relname = 'registry_repair_claims'), 0)::bigint AS claims \
         FROM pg_stat_user_tables",
    )
    .get_result(&mut conn)
    .await?;
    Ok((counts.beats, counts.claims))
}

/// Polls `service`'s status every 50 ms until `check` holds (its status) or `within` passes.
async fn wait_for(
    service: &Service,
    within: Duration,
    check: impl Fn(&ServiceStatus) -> bool,
) -> anyhow::Result<Option<ServiceStatus>> {
    let started = Instant::now();
    while started.elapsed() < within {
        let status = service.admin.status().await?;
        if check(&status) {
            return Ok(Some(status));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(None)
}

/// From spawning the binary to the registry's first List request.
async fn first_dispatch(url: &str, registry: &RegistrySimulator) -> anyhow::Result<Duration> {
    registry.set_latency(Duration::ZERO);
    let before = registry.stats().list_requests;
    let started = Instant::now();
    let service = Service::spawn(url, &registry.url(), 2, "restart")?;
    while registry.stats().list_requests == before {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "no request within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let first = started.elapsed();
    if let Ok(s) = service.admin.status().await {
        println!(
            "scheduler: first dispatch {:.1} ms after it started; {} scheduling batches averaging {:.2} ms (max {:.2} ms)",
            s.first_dispatch_ms.unwrap_or(0.0),
            s.fetches,
            s.fetch_ms_avg,
            s.fetch_ms_max
        );
    }
    service.stop();
    Ok(first)
}

/// Rows/s through the real Writer actor (buffer, bulk upsert), for existing projects.
async fn writer_rate(db: &Database, rows: i64, batch: usize) -> anyhow::Result<f64> {
    use actix::Actor;
    let writer = Writer::new(Tracking::new(db.clone()), batch, Duration::from_secs(3600)).start();
    let started = Instant::now();
    for id in 1..=rows {
        writer.do_send(Record(TrackingRow::completed(id, (id % 3) as i32)));
        if id % 10_000 == 0 {
            // Let the mailbox drain now and then, as analysers would.
            tokio::task::yield_now().await;
        }
    }
    writer
        .send(Flush::PassEnd)
        .await?
        .map_err(anyhow::Error::msg)?;
    let elapsed = started.elapsed().as_secs_f64();
    let stats = writer.send(GetWriterStats).await?;
    anyhow::ensure!(
        stats.rows_written as i64 == rows,
        "wrote {} of {rows}",
        stats.rows_written
    );
    Ok(rows as f64 / elapsed)
}

/// Makes every one of the `n` projects a repair candidate again: the rows an earlier apply
/// restored deleted, the repair's tables emptied, a tracking row `completed` with one missing
/// repository per project, and (once) the `project_features` row GitLab creates with every
/// project, registry enabled. `candidates: false` leaves no tracking row (as the other sections
/// expect).
async fn reset_repair(url: &str, n: i64, candidates: bool) -> anyhow::Result<()> {
    let mut conn = connect(url).await?;
    conn.batch_execute(
        "DELETE FROM container_repositories c USING registry_repair_restored r \
         WHERE c.id = r.repository_id; \
         TRUNCATE registry_repair_runs, registry_repair_run_projects, registry_repair_restored, \
                  registry_repair_skipped CASCADE; \
         TRUNCATE container_registry_data_repair_details",
    )
    .await?;
    if candidates {
        conn.batch_execute(&format!(
            "INSERT INTO project_features (project_id, container_registry_access_level, created_at, updated_at) \
             SELECT i, 20, now(), now() FROM generate_series(1, {n}) i ON CONFLICT (project_id) DO NOTHING; \
             INSERT INTO container_registry_data_repair_details (project_id, missing_count, status, created_at, updated_at) \
             SELECT i, 1, 1, now(), now() FROM generate_series(1, {n}) i"
        ))
        .await?;
    }
    conn.batch_execute("VACUUM ANALYZE container_registry_data_repair_details, container_repositories, project_features")
        .await?;
    Ok(())
}

struct RepairRate {
    projects_per_s: f64,
    peak_rss_kib: Option<u64>,
}

/// Projects/s of `repair plan` (planned, from `status`) or `repair apply` (written, from
/// `registry_repair_run_projects`), over `seconds` after 2 s of warm-up or until the run ends.
/// `--include-older` and `--include-older-than-path`: the simulator dates every repository
/// 2024-01-01, before the seeded projects and their routes, which the guards would hold back.
async fn repair_rate(
    url: &str,
    registry: &RegistrySimulator,
    latency: Duration,
    concurrency: usize,
    seconds: u64,
    apply: bool,
) -> anyhow::Result<RepairRate> {
    let n = projects_total(url).await?;
    reset_repair(url, n, true).await?;
    registry.set_latency(latency);
    let mode = if apply { "apply" } else { "plan" };
    let mut args = vec![
        "repair",
        mode,
        "--format",
        "csv",
        "--include-older",
        "--include-older-than-path",
    ];
    // A repair serves its admin API (read here) only when asked; a release before that always did.
    if offers_admin_flag() {
        args.push("--admin");
    }
    let service = Service::spawn_with(
        &args,
        url,
        &registry.url(),
        concurrency,
        &format!("repair-{mode}-{}ms-c{concurrency}", latency.as_millis()),
        &[],
    )?;
    service.ready().await?;
    let mut conn = connect(url).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let first = service.admin.status().await.ok();
    let (d0, t0) = (
        repair_done(&mut conn, apply, first.as_ref()).await?,
        Instant::now(),
    );
    let mut last = (d0, t0, first.as_ref().and_then(|s| s.peak_rss_kib));
    while t0.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Ok(status) = service.admin.status().await else {
            break; // the run ended: every candidate done
        };
        last = (
            repair_done(&mut conn, apply, Some(&status)).await?,
            Instant::now(),
            status.peak_rss_kib,
        );
    }
    service.stop();
    let (Some(d0), (Some(d1), t1, rss)) = (d0, last) else {
        anyhow::bail!("repair {mode} at c={concurrency}: the run ended within the warm-up; use more --projects");
    };
    Ok(RepairRate {
        projects_per_s: d1.saturating_sub(d0) as f64 / (t1 - t0).as_secs_f64().max(1e-3),
        peak_rss_kib: rss,
    })
}

/// Projects done so far: written (apply, from the database), or planned (plan, from `status`).
async fn repair_done(
    conn: &mut db::SingleConn,
    apply: bool,
    status: Option<&ServiceStatus>,
) -> anyhow::Result<Option<u64>> {
    if !apply {
        return Ok(status.map(|s| s.analysed));
    }
    let c: Count = diesel::sql_query("SELECT count(*) AS n FROM registry_repair_run_projects")
        .get_result(conn)
        .await?;
    Ok(Some(u64::try_from(c.n.unwrap_or(0)).unwrap_or(0)))
}

async fn projects_total(url: &str) -> anyhow::Result<i64> {
    let mut conn = connect(url).await?;
    let c: Count = diesel::sql_query("SELECT max(id) AS n FROM projects")
        .get_result(&mut conn)
        .await?;
    Ok(c.n.unwrap_or(0))
}
