//! A simulated container registry serving the GitLab v1 List Sub Repositories and repository
//! details APIs on loopback, as
//! SPEC section 2 describes it: sorted paths, `n` and `last`, a `Link` header on every full page
//! (so an exact multiple ends with an empty page), 404 NAME_UNKNOWN, the trailing slash, and JWTs
//! checked for signature, `kid`, issuer, audience, expiry and scope. The demo serves it; the tests
//! measure against it (requests, the most in flight at once) and switch its faults on. Built with
//! the `simulator` feature (on by default).
//!
//! This file is the handle a test or the demo holds; `server` starts the HTTP server and keeps its
//! state, `list` answers List requests (its paging a pure function), `details` a repository's
//! details and size, `auth` checks tokens, and `alarms` wakes delayed answers on time.

mod alarms;
mod auth;
mod details;
mod list;
mod server;
mod state;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::sync::lock;
pub use details::{created_at, size_of};
use state::State;

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
    /// Repository details (size) requests, whatever their answer.
    pub size_requests: u64,
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
    /// Lists, besides what the path holds, the entry `{path}/{name}` where it sorts, on whichever
    /// page that falls (`name` breaks the registry's own name grammar: `<`, spaces, a line
    /// break), the answer otherwise valid: pages no longer than `n`, `Link`s right.
    UngrammaticalEntry(&'static str),
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
        let config = server::tls_config(identity)?;
        Self::launch(repositories, trusted, port, 1, Some(config))
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
            size_requests: self.state.size_requests.load(Ordering::SeqCst),
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

    /// Every details (size) request for the repository `path` is answered with `status`.
    pub fn refuse_size(&self, path: &str, status: u16) {
        lock(&self.state.size_refused).insert(path.to_string(), status);
    }

    /// `false`: details carry no `size_bytes`, as a registry too old to compute them answers.
    pub fn set_sizes_given(&self, given: bool) {
        self.state.sizes_given.store(given, Ordering::SeqCst);
    }

    /// Requests for `path` (a listing's or a size's) are served normally again.
    pub fn accept(&self, path: &str) {
        lock(&self.state.refused).remove(path);
        lock(&self.state.size_refused).remove(path);
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
