//! The simulator's HTTP server: the routes, the API root and the redirect to the trailing slash,
//! and TLS. Its shared state is `state.rs`.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use jsonwebtoken::DecodingKey;
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::alarms::Alarms;
use super::details::details;
use super::list::list;
use super::state::{error, without_api, State, DEFAULT_ANSWER_EARLY};
use super::{ApiMode, FaultMix, RegistrySimulator, SimulatorError, TlsIdentity, TrustedIssuer};

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
            size_requests: AtomicU64::new(0),
            size_refused: Mutex::new(HashMap::new()),
            sizes_given: AtomicBool::new(true),
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
                .route("/gitlab/v1/repositories/{path:.+}/", web::get().to(details))
                .route(
                    "/gitlab/v1/repositories/{path:.+}",
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
