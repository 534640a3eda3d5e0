//! The simulator's HTTP server: its shared state, the routes, the API root and the redirect to
//! the trailing slash, the random faults it draws, and TLS.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use jsonwebtoken::DecodingKey;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::alarms::Alarms;
use super::list::list;
use super::{
    ApiMode, FaultMix, Hostile, RegistrySimulator, SimulatorError, TlsIdentity, TrustedIssuer,
};
use crate::registry::token::Claims;
use crate::sync::lock;

pub(super) struct State {
    pub(super) repositories: RwLock<BTreeSet<String>>,
    pub(super) trusted: TrustedIssuer,
    pub(super) decoding_key: DecodingKey,
    pub(super) latency_ms: AtomicU64,
    pub(super) list_requests: AtomicU64,
    pub(super) unauthorized: AtomicU64,
    pub(super) in_flight: AtomicUsize,
    pub(super) max_in_flight: AtomicUsize,
    pub(super) per_path: Mutex<HashMap<String, u64>>,
    /// Paths whose every answer is this status (a registry that refuses one project).
    pub(super) refused: Mutex<HashMap<String, u16>>,
    /// Entries a hostile registry adds to a path's first page although they are not under it.
    pub(super) foreign: Mutex<HashMap<String, Vec<String>>>,
    /// How the registry misbehaves for one path, on every request.
    pub(super) hostile: Mutex<HashMap<String, Hostile>>,
    /// Random faults on every List request.
    pub(super) faults: Mutex<(FaultMix, StdRng)>,
    /// While set, every request is answered 503.
    pub(super) outage: AtomicBool,
    pub(super) api_mode: Mutex<ApiMode>,
    /// A proxy's limit on one header line (nginx: `large_client_header_buffers 4 8k`); 0 for none.
    pub(super) header_limit: AtomicUsize,
    pub(super) headers_too_large: AtomicU64,
    /// Paths whose namespace is deleted right after their first page is served.
    pub(super) vanishing: Mutex<BTreeSet<String>>,
    /// Tokens whose signature was checked, by their text.
    pub(super) verified: Mutex<HashMap<String, Claims>>,
    pub(super) alarms: Alarms,
    /// How much before `latency` the handler answers, in microseconds: what reading the request
    /// and writing the answer add outside it, so that a client sees `latency`.
    pub(super) answer_early_us: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Fault {
    ServerError(StatusCode),
    Hang(Duration),
    Reset,
    Malformed(u8),
}

/// What loopback HTTP adds to a request outside the handler on an idle machine.
const DEFAULT_ANSWER_EARLY: Duration = Duration::from_micros(150);

impl State {
    pub(super) fn answer_early(&self) -> Duration {
        Duration::from_micros(self.answer_early_us.load(Ordering::Relaxed))
    }

    pub(super) fn draw_fault(&self) -> Option<Fault> {
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

impl RegistrySimulator {
    pub(super) fn launch(
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
}

pub(super) fn error(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({
        "errors": [{"code": code, "message": message, "detail": null}]
    }))
}

/// The answer of a registry without GitLab's API, if this one is set to be one.
pub(super) fn without_api(req: &HttpRequest, state: &State) -> Option<HttpResponse> {
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

/// rustls's server configuration for `identity`, with the crypto provider reqwest uses.
pub(super) fn tls_config(identity: &TlsIdentity) -> Result<rustls::ServerConfig, SimulatorError> {
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
