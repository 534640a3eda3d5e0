//! A simulated container registry serving the GitLab v1 List Sub Repositories API on loopback, as
//! SPEC section 2 describes it: sorted paths, `n` and `last`, a `Link` header on every full page
//! (so an exact multiple ends with an empty page), 404 NAME_UNKNOWN, the trailing slash, and JWTs
//! checked for signature, `kid`, issuer, audience, expiry and scope. The demo serves it; the tests
//! measure against it (requests, the most in flight at once) and switch its faults on.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::token::{pull_access, Claims};

use crate::sync::lock;

/// What the simulated registry trusts.
#[derive(Clone)]
pub struct TrustedIssuer {
    pub public_key_pem: String,
    pub kid: String,
    pub issuer: String,
    pub audience: String,
}

/// Counters a test or the demo reads back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimulatorStats {
    /// List Sub Repositories requests, whatever their answer.
    pub list_requests: u64,
    /// Requests refused with 401.
    pub unauthorized: u64,
    /// The most List requests in flight at any one moment.
    pub max_in_flight: usize,
    pub in_flight: usize,
    /// Requests refused with 400 because a header line was over the proxy limit.
    pub headers_too_large: u64,
}

#[derive(Serialize)]
struct EntryOut<'a> {
    name: &'a str,
    path: &'a str,
    created_at: &'static str,
    updated_at: &'static str,
}

struct State {
    repositories: RwLock<BTreeSet<String>>,
    trusted: TrustedIssuer,
    decoding_key: DecodingKey,
    latency_ms: AtomicU64,
    list_requests: AtomicU64,
    unauthorized: AtomicU64,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    per_path: Mutex<HashMap<String, u64>>,
    /// Paths whose every answer is this status (a registry that refuses one project).
    refused: Mutex<HashMap<String, u16>>,
    /// Entries a hostile registry adds to a path's first page although they are not under it.
    foreign: Mutex<HashMap<String, Vec<String>>>,
    /// How the registry misbehaves for one path, on every request.
    hostile: Mutex<HashMap<String, Hostile>>,
    /// Random faults on every List request.
    faults: Mutex<(FaultMix, StdRng)>,
    /// While set, every request is answered 503.
    outage: AtomicBool,
    api_mode: Mutex<ApiMode>,
    /// A proxy's limit on one header line (nginx: `large_client_header_buffers 4 8k`); 0 for none.
    header_limit: AtomicUsize,
    headers_too_large: AtomicU64,
    /// Paths whose namespace is deleted right after their first page is served.
    vanishing: Mutex<BTreeSet<String>>,
    /// Tokens whose signature was checked, by their text.
    verified: Mutex<HashMap<String, Claims>>,
    alarms: Alarms,
    /// How much before `latency` the handler answers, in microseconds: what reading the request
    /// and writing the answer add outside it, so that a client sees `latency`.
    answer_early_us: AtomicU64,
}

/// How the registry answers on `/gitlab/v1/` as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ApiMode {
    /// GitLab's container registry with its metadata database.
    #[default]
    Gitlab,
    /// The distribution registry (Debian's `docker-registry`), or GitLab's without its metadata
    /// database: Go's plain-text `404 page not found` on every `/gitlab/v1/` path.
    Distribution,
    /// An `http://` URL to a registry that redirects to `https://`: 301 for every request.
    RedirectToHttps,
}

/// Ways a registry can misbehave for one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hostile {
    /// More entries than `n`.
    OversizedPage,
    /// A `Link: rel="next"` without a `last` parameter.
    LinkWithoutLast,
    /// A `Link` pointing at another server on this loopback port (its `last` is right: only that
    /// may be used, and the token must not go there).
    LinkToOtherHost(u16),
    /// A `Link` on every page, for ever.
    EndlessPages,
    /// A 200 whose body is `bytes` long (whitespace inside `[]`: an empty page, if read to the
    /// end), produced as it is sent. `declared`: with `Content-Length`; otherwise chunked.
    HugeBody { bytes: u64, declared: bool },
}

/// Random faults, each a probability per List request.
#[derive(Debug, Clone, Copy, Default)]
pub struct FaultMix {
    /// 500, 502 or 503.
    pub server_errors: f64,
    /// The answer comes only after `hang_for` (past the client's timeout).
    pub hangs: f64,
    pub hang_for: Duration,
    /// The body breaks off midway and the connection is cut.
    pub resets: f64,
    /// Invalid JSON, an object instead of an array, or entries without `path`.
    pub malformed: f64,
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    ServerError(StatusCode),
    Hang(Duration),
    Reset,
    Malformed(u8),
}

/// What loopback HTTP adds to a request outside the handler on an idle machine.
const DEFAULT_ANSWER_EARLY: Duration = Duration::from_micros(150);

impl State {
    fn answer_early(&self) -> Duration {
        Duration::from_micros(self.answer_early_us.load(Ordering::Relaxed))
    }

    fn draw_fault(&self) -> Option<Fault> {
        let mut guard = lock(&self.faults);
        let (mix, rng) = &mut *guard;
        let roll: f64 = rng.gen();
        let mut edge = mix.server_errors;
        if roll < edge {
            let status = [500, 502, 503][rng.gen_range(0..3)];
            return Some(Fault::ServerError(
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            ));
        }
        edge += mix.hangs;
        if roll < edge {
            return Some(Fault::Hang(mix.hang_for));
        }
        edge += mix.resets;
        if roll < edge {
            return Some(Fault::Reset);
        }
        edge += mix.malformed;
        if roll < edge {
            return Some(Fault::Malformed(rng.gen_range(0..3)));
        }
        None
    }
}

pub struct RegistrySimulator {
    state: Arc<State>,
    addr: SocketAddr,
    server: actix_web::dev::ServerHandle,
    /// Served over TLS: `url()` is `https://`.
    tls: bool,
}

/// The certificate chain (server certificate first) and private key the simulator serves TLS with,
/// both PEM.
#[derive(Clone)]
pub struct TlsIdentity {
    pub cert_chain_pem: String,
    pub key_pem: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SimulatorError {
    #[error("simulated registry: the public key is not a PEM RSA public key: {0}")]
    Key(String),
    #[error("simulated registry: binding 127.0.0.1:{port}: {error}")]
    Bind { port: u16, error: std::io::Error },
    #[error("simulated registry: the TLS certificate or key cannot be used: {0}")]
    Tls(String),
}

impl RegistrySimulator {
    /// Serves `repositories` (full registry paths, lowercase, each holding at least one tag) on
    /// 127.0.0.1:`port` (0 picks one). Must be called inside an actix System.
    pub fn start(
        repositories: impl IntoIterator<Item = String>,
        trusted: TrustedIssuer,
        port: u16,
    ) -> Result<Self, SimulatorError> {
        Self::start_with_workers(repositories, trusted, port, 1)
    }

    /// As [`start`](Self::start), with `workers` threads serving requests (benchmarks).
    pub fn start_with_workers(
        repositories: impl IntoIterator<Item = String>,
        trusted: TrustedIssuer,
        port: u16,
        workers: usize,
    ) -> Result<Self, SimulatorError> {
        Self::launch(repositories, trusted, port, workers, None)
    }

    /// As [`start`](Self::start), served over TLS with `identity` (a registry behind a private
    /// CA); [`url`](Self::url) is then `https://127.0.0.1:PORT`.
    pub fn start_tls(
        repositories: impl IntoIterator<Item = String>,
        trusted: TrustedIssuer,
        port: u16,
        identity: &TlsIdentity,
    ) -> Result<Self, SimulatorError> {
        let config = server_tls_config(identity)?;
        Self::launch(repositories, trusted, port, 1, Some(config))
    }

    fn launch(
        repositories: impl IntoIterator<Item = String>,
        trusted: TrustedIssuer,
        port: u16,
        workers: usize,
        tls: Option<rustls::ServerConfig>,
    ) -> Result<Self, SimulatorError> {
        let decoding_key = DecodingKey::from_rsa_pem(trusted.public_key_pem.as_bytes())
            .map_err(|e| SimulatorError::Key(e.to_string()))?;
        let state = Arc::new(State {
            repositories: RwLock::new(repositories.into_iter().collect()),
            trusted,
            decoding_key,
            latency_ms: AtomicU64::new(0),
            list_requests: AtomicU64::new(0),
            unauthorized: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            per_path: Mutex::new(HashMap::new()),
            refused: Mutex::new(HashMap::new()),
            foreign: Mutex::new(HashMap::new()),
            hostile: Mutex::new(HashMap::new()),
            faults: Mutex::new((FaultMix::default(), StdRng::seed_from_u64(2026))),
            outage: AtomicBool::new(false),
            api_mode: Mutex::new(ApiMode::Gitlab),
            header_limit: AtomicUsize::new(0),
            headers_too_large: AtomicU64::new(0),
            vanishing: Mutex::new(BTreeSet::new()),
            alarms: Alarms::start(),
            answer_early_us: AtomicU64::new(DEFAULT_ANSWER_EARLY.as_micros() as u64),
            verified: Mutex::new(HashMap::new()),
        });
        let app_state = web::Data::from(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(app_state.clone())
                .route("/gitlab/v1/", web::get().to(api_root))
                .route(
                    "/gitlab/v1/repository-paths/{path:.+}/repositories/list/",
                    web::get().to(list),
                )
                .route(
                    "/gitlab/v1/repository-paths/{path:.+}/repositories/list",
                    web::get().to(redirect_to_slash),
                )
        })
        .workers(workers.max(1))
        .disable_signals();
        let serves_tls = tls.is_some();
        let server = match tls {
            None => server.bind(("127.0.0.1", port)),
            Some(config) => server.bind_rustls_0_23(("127.0.0.1", port), config),
        }
        .map_err(|error| SimulatorError::Bind { port, error })?;
        let addr = server
            .addrs()
            .first()
            .copied()
            .ok_or(SimulatorError::Bind {
                port,
                error: std::io::Error::other("no address bound"),
            })?;
        let server = server.run();
        let handle = server.handle();
        actix_rt::spawn(server);
        Ok(Self {
            state,
            addr,
            server: handle,
            tls: serves_tls,
        })
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stats(&self) -> SimulatorStats {
        SimulatorStats {
            list_requests: self.state.list_requests.load(Ordering::SeqCst),
            unauthorized: self.state.unauthorized.load(Ordering::SeqCst),
            max_in_flight: self.state.max_in_flight.load(Ordering::SeqCst),
            in_flight: self.state.in_flight.load(Ordering::SeqCst),
            headers_too_large: self.state.headers_too_large.load(Ordering::SeqCst),
        }
    }

    /// Starts a new measuring window for `max_in_flight`.
    pub fn reset_max_in_flight(&self) {
        let now = self.state.in_flight.load(Ordering::SeqCst);
        self.state.max_in_flight.store(now, Ordering::SeqCst);
    }

    /// List requests made for one path (the project's registry path).
    pub fn requests_for(&self, path: &str) -> u64 {
        lock(&self.state.per_path).get(path).copied().unwrap_or(0)
    }

    /// The handler answers this much before the latency is up, for what HTTP and waking the
    /// threads on both sides add outside it: a benchmark measures a client's round trip and sets
    /// this so that the client sees the latency it asked for.
    pub fn set_answer_early(&self, early: Duration) {
        self.state
            .answer_early_us
            .store(early.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn answer_early(&self) -> Duration {
        self.state.answer_early()
    }

    pub fn set_latency(&self, latency: Duration) {
        self.state
            .latency_ms
            .store(latency.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn add_repository(&self, path: &str) {
        if let Ok(mut repos) = self.state.repositories.write() {
            repos.insert(path.to_string());
        }
    }

    /// Every request for `path` is answered with `status` from now on.
    pub fn refuse(&self, path: &str, status: u16) {
        lock(&self.state.refused).insert(path.to_string(), status);
    }

    /// Requests for `path` are served normally again.
    pub fn accept(&self, path: &str) {
        lock(&self.state.refused).remove(path);
        lock(&self.state.hostile).remove(path);
    }

    /// The first page for `path` also lists these full paths, which are not under `path`.
    pub fn add_foreign_entries(&self, path: &str, entries: &[&str]) {
        lock(&self.state.foreign).insert(
            path.to_string(),
            entries.iter().map(|e| e.to_string()).collect(),
        );
    }

    /// From now on every List request draws its faults from `mix` (seeded: runs repeat).
    pub fn set_fault_mix(&self, mix: FaultMix, seed: u64) {
        *lock(&self.state.faults) = (mix, StdRng::seed_from_u64(seed));
    }

    /// While on, every request (the probe too) is answered 503.
    pub fn set_outage(&self, on: bool) {
        self.state.outage.store(on, Ordering::SeqCst);
    }

    /// From now on the whole `/gitlab/v1/` API answers as `mode` says.
    pub fn set_api_mode(&self, mode: ApiMode) {
        *lock(&self.state.api_mode) = mode;
    }

    /// Answers as nginx in front of a registry does when one request header line is longer than
    /// `bytes` (its default is 8 KiB): 400 with an HTML page. `None` lifts the limit.
    pub fn set_header_limit(&self, bytes: Option<usize>) {
        self.state
            .header_limit
            .store(bytes.unwrap_or(0), Ordering::SeqCst);
    }

    /// Right after the first page of `path` is served, every repository of its top-level
    /// namespace is deleted (the project was renamed or deleted mid-walk), once.
    pub fn vanish_after_first_page(&self, path: &str) {
        lock(&self.state.vanishing).insert(path.to_string());
    }

    /// Every request for `path` misbehaves this way from now on.
    pub fn set_hostile(&self, path: &str, mode: Hostile) {
        lock(&self.state.hostile).insert(path.to_string(), mode);
    }

    pub async fn stop(&self) {
        self.server.stop(false).await;
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({
        "errors": [{"code": code, "message": message, "detail": null}]
    }))
}

/// The answer of a registry without GitLab's API, if this one is set to be one.
fn without_api(req: &HttpRequest, state: &State) -> Option<HttpResponse> {
    match *lock(&state.api_mode) {
        ApiMode::Gitlab => None,
        ApiMode::Distribution => Some(
            HttpResponse::NotFound()
                .content_type("text/plain; charset=utf-8")
                .body("404 page not found\n"),
        ),
        ApiMode::RedirectToHttps => {
            let host = req.connection_info().host().to_string();
            Some(
                HttpResponse::MovedPermanently()
                    .insert_header(("Location", format!("https://{host}{}", req.uri())))
                    .finish(),
            )
        }
    }
}

async fn api_root(req: HttpRequest, state: web::Data<State>) -> HttpResponse {
    if let Some(answer) = without_api(&req, &state) {
        return answer;
    }
    if state.outage.load(Ordering::SeqCst) {
        return error(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", "outage");
    }
    HttpResponse::Ok().json(serde_json::json!({}))
}

async fn redirect_to_slash(req: HttpRequest) -> HttpResponse {
    let target = match req.uri().query() {
        Some(q) => format!("{}/?{q}", req.uri().path()),
        None => format!("{}/", req.uri().path()),
    };
    HttpResponse::MovedPermanently()
        .insert_header(("Location", target))
        .finish()
}

#[derive(Deserialize)]
struct ListQuery {
    n: Option<String>,
    last: Option<String>,
}

/// Wakes each sleeper at its deadline to within tens of microseconds. tokio's timer wheel rounds
/// every deadline up to the next millisecond tick: a registry set to 20 ms answered in 20.5 to 21,
/// and every throughput figure measured against `concurrency / latency` was low by up to 5%.
struct Alarms(Arc<AlarmClock>);

struct AlarmClock {
    queue: Mutex<AlarmQueue>,
    ring: Condvar,
}

#[derive(Default)]
struct AlarmQueue {
    due: BinaryHeap<Reverse<Alarm>>,
    closed: bool,
}

struct Alarm {
    at: Instant,
    wake: tokio::sync::oneshot::Sender<()>,
}

impl PartialEq for Alarm {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}
impl Eq for Alarm {}
impl PartialOrd for Alarm {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Alarm {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.at.cmp(&other.at)
    }
}

impl Alarms {
    fn start() -> Self {
        let clock = Arc::new(AlarmClock {
            queue: Mutex::new(AlarmQueue::default()),
            ring: Condvar::new(),
        });
        let ringer = clock.clone();
        // A thread parked on a condition variable sleeps to the microsecond, not the tick.
        let spawned = std::thread::Builder::new()
            .name("simulator-alarms".into())
            .spawn(move || ringer.run());
        if spawned.is_err() {
            lock(&clock.queue).closed = true;
        }
        Self(clock)
    }

    async fn sleep_until(&self, at: Instant) {
        let (wake, woken) = tokio::sync::oneshot::channel();
        let (queued, earliest) = {
            let mut queue = lock(&self.0.queue);
            if queue.closed {
                (false, false)
            } else {
                queue.due.push(Reverse(Alarm { at, wake }));
                let earliest = queue.due.peek().is_some_and(|Reverse(a)| a.at == at);
                (true, earliest)
            }
        };
        if queued {
            // With one latency for all, a new alarm is nearly always the last due: the alarm
            // thread needs waking only when it must ring sooner than it planned.
            if earliest {
                self.0.ring.notify_one();
            }
            // The clock stops only with the simulator: then nobody waits for this answer.
            let _ = woken.await;
        } else {
            // No alarm thread: tokio's timer, a millisecond coarse, rather than no latency.
            tokio::time::sleep_until(at.into()).await;
        }
    }
}

impl Drop for Alarms {
    fn drop(&mut self) {
        lock(&self.0.queue).closed = true;
        self.0.ring.notify_one();
    }
}

impl AlarmClock {
    fn run(&self) {
        let mut queue = lock(&self.queue);
        while !queue.closed {
            let now = Instant::now();
            while queue.due.peek().is_some_and(|Reverse(a)| a.at <= now) {
                if let Some(Reverse(alarm)) = queue.due.pop() {
                    let _ = alarm.wake.send(());
                }
            }
            queue = match queue.due.peek().map(|Reverse(a)| a.at - now) {
                Some(wait) => match self.ring.wait_timeout(queue, wait) {
                    Ok((queue, _)) => queue,
                    Err(poisoned) => poisoned.into_inner().0,
                },
                None => match self.ring.wait(queue) {
                    Ok(queue) => queue,
                    Err(poisoned) => poisoned.into_inner(),
                },
            };
        }
    }
}

/// Counts a request in flight for as long as it lives.
struct InFlight<'a>(&'a State);

impl<'a> InFlight<'a> {
    fn enter(state: &'a State) -> Self {
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(state)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn list(
    req: HttpRequest,
    state: web::Data<State>,
    path: web::Path<String>,
    query: web::Query<ListQuery>,
) -> HttpResponse {
    let entered = Instant::now();
    if let Some(answer) = without_api(&req, &state) {
        return answer;
    }
    let path = path.into_inner();
    state.list_requests.fetch_add(1, Ordering::SeqCst);
    *lock(&state.per_path).entry(path.clone()).or_insert(0) += 1;
    let _in_flight = InFlight::enter(&state);
    let latency = state.latency_ms.load(Ordering::SeqCst);
    if latency > 0 {
        let answer_at = entered + Duration::from_millis(latency);
        state
            .alarms
            .sleep_until(
                answer_at
                    .checked_sub(state.answer_early())
                    .unwrap_or(answer_at),
            )
            .await;
    }
    if state.outage.load(Ordering::SeqCst) {
        return error(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", "outage");
    }
    if let Some(refusal) = proxy_header_limit(&req, &state) {
        return refusal;
    }
    let fault = state.draw_fault();
    if let Some(Fault::Hang(pause)) = fault {
        // Longer than the client waits: it has given up by the time this answers.
        tokio::time::sleep(pause).await;
    }

    if let Err(message) = authorize(&req, &state, &path) {
        state.unauthorized.fetch_add(1, Ordering::SeqCst);
        return error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", &message);
    }
    if let Some(status) = lock(&state.refused).get(&path).copied() {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return error(status, "UNKNOWN", "refused by the simulator");
    }
    match fault {
        Some(Fault::ServerError(status)) => {
            return error(status, "UNKNOWN", "simulated server error")
        }
        Some(Fault::Reset) => return broken_stream(),
        Some(Fault::Malformed(kind)) => return malformed(kind),
        Some(Fault::Hang(_)) | None => {}
    }
    let n = match query.n.as_deref() {
        None => 100,
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if (1..=1000).contains(&n) => n,
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "PAGINATION_NUMBER_INVALID",
                    "n must be an integer between 1 and 1000",
                )
            }
        },
    };
    let hostile = lock(&state.hostile).get(&path).copied();
    if let Some(Hostile::HugeBody { bytes, declared }) = hostile {
        return huge_body(bytes, declared);
    }

    let repos = match state.repositories.read() {
        Ok(repos) => repos,
        Err(poisoned) => poisoned.into_inner(),
    };
    let top_level = path.split('/').next().unwrap_or_default();
    let top_prefix = format!("{top_level}/");
    let namespace_known = repos
        .range::<str, _>((Bound::Included(top_prefix.as_str()), Bound::Unbounded))
        .next()
        .is_some_and(|p| p.starts_with(&top_prefix));
    if !namespace_known {
        return error(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            "repository name not known to registry",
        );
    }

    let prefix = format!("{path}/");
    let start = match query.last.as_deref() {
        Some(last) => Bound::Excluded(last.to_string()),
        None => Bound::Included(path.clone()),
    };
    // Every path under `{path}/` sorts below `{path}0` ('0' follows '/').
    let end = format!("{path}0");
    let past_the_end = query
        .last
        .as_deref()
        .is_some_and(|last| last >= end.as_str());
    let mut page: Vec<String> = if past_the_end {
        Vec::new()
    } else {
        repos
            .range((start, Bound::Excluded(end)))
            .filter(|p| **p == path || p.starts_with(&prefix))
            .take(n)
            .cloned()
            .collect()
    };
    drop(repos);

    let foreign = if query.last.is_none() {
        lock(&state.foreign).get(&path).cloned().unwrap_or_default()
    } else {
        Vec::new()
    };
    let mut next_last = (page.len() == n).then(|| page.last().cloned()).flatten();
    let mut link_host = String::new();
    match hostile {
        Some(Hostile::OversizedPage) => {
            page.extend((0..=n).map(|i| format!("{path}/extra-{i:04}")));
        }
        Some(Hostile::EndlessPages) => {
            let last = query.last.clone().unwrap_or_else(|| path.clone());
            next_last = Some(format!("{last}~"));
        }
        Some(Hostile::LinkToOtherHost(port)) => link_host = format!("http://127.0.0.1:{port}"),
        Some(Hostile::LinkWithoutLast | Hostile::HugeBody { .. }) | None => {}
    }
    if query.last.is_none() && next_last.is_some() && lock(&state.vanishing).remove(&path) {
        if let Ok(mut repos) = state.repositories.write() {
            repos.retain(|p| p != top_level && !p.starts_with(&top_prefix));
        }
    }
    let mut body: Vec<EntryOut<'_>> = page.iter().map(|p| entry(p.as_str())).collect();
    body.extend(foreign.iter().map(|p| entry(p.as_str())));

    let mut response = HttpResponse::Ok();
    if let Some(last) = next_last {
        let mut next = url::form_urlencoded::Serializer::new(String::new());
        next.append_pair("n", &n.to_string());
        if hostile != Some(Hostile::LinkWithoutLast) {
            next.append_pair("last", &last);
        }
        response.insert_header((
            "Link",
            format!(
                "<{link_host}/gitlab/v1/repository-paths/{path}/repositories/list/?{}>; rel=\"next\"",
                next.finish()
            ),
        ));
    }
    response.json(body)
}

/// nginx's answer to a header line longer than one of its `large_client_header_buffers`.
fn proxy_header_limit(req: &HttpRequest, state: &State) -> Option<HttpResponse> {
    let limit = state.header_limit.load(Ordering::SeqCst);
    let too_long = limit > 0
        && req
            .headers()
            .iter()
            .any(|(name, value)| name.as_str().len() + 2 + value.len() > limit);
    if !too_long {
        return None;
    }
    state.headers_too_large.fetch_add(1, Ordering::SeqCst);
    Some(HttpResponse::BadRequest().content_type("text/html").body(
        "<html>\r\n<head><title>400 Request Header Or Cookie Too Large</title></head>\r\n\
                 <body>\r\n<center><h1>400 Bad Request</h1></center>\r\n\
                 <center>Request Header Or Cookie Too Large</center>\r\n\
                 <hr><center>nginx</center>\r\n</body>\r\n</html>\r\n",
    ))
}

/// A 200 whose body breaks off midway: the connection is cut as by a reset.
fn broken_stream() -> HttpResponse {
    let chunks: Vec<Result<web::Bytes, std::io::Error>> = vec![
        Ok(web::Bytes::from_static(b"[{\"name\":\"a\",\"pa")),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "simulated reset",
        )),
    ];
    HttpResponse::Ok()
        .content_type("application/json")
        .streaming(futures_util::stream::iter(chunks))
}

/// `[`, `bytes - 2` spaces, `]`, made as it is sent: a client that stops reading stops the making.
fn huge_body(bytes: u64, declared: bool) -> HttpResponse {
    static SPACES: [u8; 64 * 1024] = [b' '; 64 * 1024];
    let inner = bytes.saturating_sub(2);
    let chunk = SPACES.len() as u64;
    let spaces = (0..inner.div_ceil(chunk))
        .map(move |i| web::Bytes::from_static(&SPACES[..(inner - i * chunk).min(chunk) as usize]));
    let chunks = std::iter::once(web::Bytes::from_static(b"["))
        .chain(spaces)
        .chain(std::iter::once(web::Bytes::from_static(b"]")));
    let body = futures_util::stream::iter(chunks.map(Ok::<_, std::io::Error>));
    let mut response = HttpResponse::Ok();
    response.content_type("application/json");
    if declared {
        response.no_chunking(inner + 2);
    }
    response.streaming(body)
}

/// rustls's server configuration for `identity`, with the crypto provider reqwest uses.
fn server_tls_config(identity: &TlsIdentity) -> Result<rustls::ServerConfig, SimulatorError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |e: &dyn std::fmt::Display| SimulatorError::Tls(e.to_string());
    let chain = CertificateDer::pem_slice_iter(identity.cert_chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&e))?;
    let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes()).map_err(|e| bad(&e))?;
    rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad(&e))?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| bad(&e))
}

fn malformed(kind: u8) -> HttpResponse {
    let body: &'static str = match kind {
        0 => "[{\"name\": \"a\", \"path\": ",
        1 => "{\"repositories\": []}",
        _ => "[{\"name\": \"a\", \"created_at\": \"2024-01-01T00:00:00Z\"}]",
    };
    HttpResponse::Ok()
        .content_type("application/json")
        .body(body)
}

fn entry(path: &str) -> EntryOut<'_> {
    EntryOut {
        name: path.rsplit('/').next().unwrap_or(path),
        path,
        created_at: "2024-01-01T00:00:00.000Z",
        updated_at: "2024-01-02T00:00:00.000Z",
    }
}

/// Checks the bearer token as the registry does: signature and `kid`, `iss`, `aud`, `exp`/`nbf`
/// with 60 s of leeway, and pull access on the path and everything under it.
fn authorize(req: &HttpRequest, state: &State, path: &str) -> Result<(), String> {
    let header = req
        .headers()
        .get("Authorization")
        .and_then(|v| v.to_str().ok())
        .ok_or("no Authorization header")?;
    let token = header
        .strip_prefix("Bearer ")
        .ok_or("Authorization is not a Bearer token")?;
    let jwt_header = jsonwebtoken::decode_header(token).map_err(|e| format!("bad JWT: {e}"))?;
    if jwt_header.alg != Algorithm::RS256 {
        return Err(format!("algorithm {:?} is not RS256", jwt_header.alg));
    }
    if jwt_header.kid.as_deref() != Some(state.trusted.kid.as_str()) {
        return Err("kid names no trusted key".into());
    }
    // A token seen before needs no second signature check (a 2-core benchmark machine cannot
    // spare the registry's own crypto); its time window and scope are checked every time.
    let cached = lock(&state.verified).get(token).cloned();
    let claims = match cached {
        Some(claims) => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            if now > claims.exp + LEEWAY_S || now + LEEWAY_S < claims.nbf {
                return Err("token refused: expired or not yet valid".into());
            }
            claims
        }
        None => {
            let claims = verify(token, state)?;
            let mut verified = lock(&state.verified);
            if verified.len() >= 10_000 {
                verified.clear();
            }
            verified.insert(token.to_string(), claims.clone());
            claims
        }
    };
    for needed in pull_access(path) {
        let granted = claims.access.iter().any(|a| {
            a.kind == needed.kind && a.name == needed.name && a.actions.iter().any(|x| x == "pull")
        });
        if !granted {
            return Err(format!("token grants no pull on {}", needed.name));
        }
    }
    Ok(())
}

/// The registry checks `exp` and `nbf` with this much leeway.
const LEEWAY_S: i64 = 60;

/// Signature, issuer, audience and time window.
fn verify(token: &str, state: &State) -> Result<Claims, String> {
    let mut validation = Validation::new(Algorithm::RS256);
    validation.leeway = LEEWAY_S as u64;
    validation.validate_nbf = true;
    validation.set_audience(&[state.trusted.audience.as_str()]);
    validation.set_issuer(&[state.trusted.issuer.as_str()]);
    validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud"]);
    jsonwebtoken::decode::<Claims>(token, &state.decoding_key, &validation)
        .map(|data| data.claims)
        .map_err(|e| format!("token refused: {e}"))
}
