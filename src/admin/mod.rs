//! The admin HTTP API on `admin.listen` (status and control, each a message to the Scheduler) and
//! the client the `status`, `concurrency`, `pause` and `resume` commands use to reach it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::time::Duration;

use actix::Addr;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde::{Deserialize, Serialize};

use std::sync::Arc;

use crate::config::Secret;
use crate::db::switches;
use crate::fleet::{Fleet, GetFleetStatus};
use crate::registry::RegistryMetrics;
use crate::scheduler::{GetStatus, Scheduler, ServiceStatus, SetConcurrency, SetEnabled};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("binding the admin API to {addr} (admin.listen): {error}")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("no registry-repair service answers at {url} (admin.listen): {message}")]
    NotRunning { url: String, message: String },
    #[error("the service at {url} refused: {message} (HTTP {status})")]
    Refused {
        url: String,
        status: u16,
        message: String,
    },
    #[error("the service at {url} answered something unreadable: {message}")]
    Malformed { url: String, message: String },
}

/// What the admin API needs besides its listener.
pub struct AdminDeps {
    pub scheduler: Addr<Scheduler>,
    /// This instance as a member of the fleet (an analysis): `status` shows the fleet.
    pub fleet: Option<Addr<Fleet>>,
    /// When set, every call (`/status` and `/metrics` too: `last_error` names private project
    /// paths) needs it as a bearer token.
    pub token: Option<Secret>,
    pub registry_metrics: Arc<RegistryMetrics>,
    /// `control.source = "gitlab"`: GitLab's switches steer; control calls are refused.
    pub follows_gitlab: bool,
}

/// The body of `POST /concurrency`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ConcurrencyRequest {
    pub max_concurrency: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct ErrorBody {
    error: String,
}

pub struct AdminServer {
    pub addr: SocketAddr,
    handle: actix_web::dev::ServerHandle,
}

/// Binds `admin.listen` (port 0 picks one) before anything else starts, so that a port in use
/// fails the start cleanly.
pub fn bind(listen: SocketAddr) -> Result<TcpListener, AdminError> {
    TcpListener::bind(listen).map_err(|error| AdminError::Bind {
        addr: listen,
        error,
    })
}

impl AdminServer {
    /// Serves the API on `listener` (from [`bind`]). Must be called inside the actix System.
    pub fn start(listener: TcpListener, deps: AdminDeps) -> Result<Self, AdminError> {
        let listen = listener.local_addr().map_err(|error| AdminError::Bind {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            error,
        })?;
        let state = web::Data::new(deps);
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(web::JsonConfig::default().error_handler(|err, _req| {
                    let message = format!("bad request body: {err}");
                    actix_web::error::InternalError::from_response(
                        err,
                        HttpResponse::BadRequest().json(ErrorBody { error: message }),
                    )
                    .into()
                }))
                .route("/status", web::get().to(status))
                .route("/metrics", web::get().to(metrics))
                .route("/concurrency", web::post().to(concurrency))
                .route("/pause", web::post().to(pause))
                .route("/resume", web::post().to(resume))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .map_err(|error| AdminError::Bind {
            addr: listen,
            error,
        })?;
        let addr = server.addrs().first().copied().unwrap_or(listen);
        let server = server.run();
        let handle = server.handle();
        actix_rt::spawn(server);
        tracing::info!(%addr, "admin API listening");
        Ok(Self { addr, handle })
    }

    pub async fn stop(&self) {
        self.handle.stop(true).await;
    }
}

fn error(status: actix_web::http::StatusCode, message: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status).json(ErrorBody {
        error: message.into(),
    })
}

/// Control calls need the configured bearer token (compared without early exit), and are refused
/// when GitLab's own switches steer the service.
fn authorized(req: &HttpRequest, state: &AdminDeps) -> Result<(), Box<HttpResponse>> {
    if state.follows_gitlab {
        return Err(Box::new(error(
            actix_web::http::StatusCode::CONFLICT,
            format!(
                "this service follows GitLab's own switches (control.source = \"gitlab\"): change the application setting {} \
                 (Admin > Settings > CI/CD > Container registry, or the application settings API), or the feature flag {} \
                 (`Feature.enable(:{})` / `Feature.disable(:{})` in a Rails console)",
                switches::SETTING,
                switches::FEATURE_FLAG,
                switches::FEATURE_FLAG,
                switches::FEATURE_FLAG
            ),
        )));
    }
    check_token(req, state)
}

fn check_token(req: &HttpRequest, state: &AdminDeps) -> Result<(), Box<HttpResponse>> {
    let Some(expected) = state.token.as_ref().map(Secret::expose) else {
        return Ok(());
    };
    let given = req
        .headers()
        .get("Authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let same = given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same {
        Ok(())
    } else {
        Err(Box::new(error(
            actix_web::http::StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token (admin.token)",
        )))
    }
}

async fn reply<M>(state: &AdminDeps, msg: M) -> HttpResponse
where
    M: actix::Message<Result = ServiceStatus> + Send + 'static,
    Scheduler: actix::Handler<M>,
{
    match state.scheduler.send(msg).await {
        Ok(status) => HttpResponse::Ok().json(with_fleet(state, status).await),
        Err(e) => error(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            format!("the scheduler is not running: {e}"),
        ),
    }
}

/// `status` with the fleet as this member last read it.
async fn with_fleet(state: &AdminDeps, mut status: ServiceStatus) -> ServiceStatus {
    if let Some(fleet) = &state.fleet {
        status.fleet = fleet.send(GetFleetStatus).await.ok().flatten();
    }
    status
}

async fn status(req: HttpRequest, state: web::Data<AdminDeps>) -> HttpResponse {
    if let Err(denied) = check_token(&req, &state) {
        return *denied;
    }
    reply(&state, GetStatus).await
}

/// Prometheus sends the token with `authorization: {credentials: ...}` in its scrape config.
async fn metrics(req: HttpRequest, state: web::Data<AdminDeps>) -> HttpResponse {
    if let Err(denied) = check_token(&req, &state) {
        return *denied;
    }
    match state.scheduler.send(GetStatus).await {
        Ok(status) => HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4")
            .body(crate::metrics::render(
                &with_fleet(&state, status).await,
                &state.registry_metrics,
            )),
        Err(e) => error(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            format!("the scheduler is not running: {e}"),
        ),
    }
}

async fn concurrency(
    req: HttpRequest,
    state: web::Data<AdminDeps>,
    body: web::Json<ConcurrencyRequest>,
) -> HttpResponse {
    if let Err(denied) = authorized(&req, &state) {
        return *denied;
    }
    let Ok(limit) = usize::try_from(body.max_concurrency) else {
        return error(
            actix_web::http::StatusCode::BAD_REQUEST,
            format!(
                "max_concurrency must be a whole number >= 0 (got {})",
                body.max_concurrency
            ),
        );
    };
    reply(&state, SetConcurrency(limit)).await
}

async fn pause(req: HttpRequest, state: web::Data<AdminDeps>) -> HttpResponse {
    if let Err(denied) = authorized(&req, &state) {
        return *denied;
    }
    reply(&state, SetEnabled(false)).await
}

async fn resume(req: HttpRequest, state: web::Data<AdminDeps>) -> HttpResponse {
    if let Err(denied) = authorized(&req, &state) {
        return *denied;
    }
    reply(&state, SetEnabled(true)).await
}

/// Talks to a running service's admin API.
pub struct AdminClient {
    base: String,
    token: Option<Secret>,
    http: reqwest::Client,
}

impl AdminClient {
    /// `listen` is the service's `admin.listen`; a wildcard address is reached on loopback.
    pub fn new(listen: SocketAddr, token: Option<Secret>) -> Self {
        let ip = match listen.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Self {
            base: format!("http://{}", SocketAddr::new(ip, listen.port())),
            token,
            http,
        }
    }

    pub async fn status(&self) -> Result<ServiceStatus, AdminError> {
        self.call(self.http.get(format!("{}/status", self.base)))
            .await
    }

    pub async fn set_concurrency(&self, max_concurrency: i64) -> Result<ServiceStatus, AdminError> {
        let request = self
            .http
            .post(format!("{}/concurrency", self.base))
            .json(&ConcurrencyRequest { max_concurrency });
        self.call(request).await
    }

    pub async fn set_enabled(&self, enabled: bool) -> Result<ServiceStatus, AdminError> {
        let verb = if enabled { "resume" } else { "pause" };
        self.call(self.http.post(format!("{}/{verb}", self.base)))
            .await
    }

    async fn call(
        &self,
        mut request: reqwest::RequestBuilder,
    ) -> Result<ServiceStatus, AdminError> {
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.expose());
        }
        let url = self.base.clone();
        let response = request.send().await.map_err(|e| AdminError::NotRunning {
            url: url.clone(),
            message: crate::errors::chain(&e),
        })?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| AdminError::Malformed {
            url: url.clone(),
            message: e.to_string(),
        })?;
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorBody>(&body)
                .map(|b| b.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
            return Err(AdminError::Refused {
                url,
                status: status.as_u16(),
                message,
            });
        }
        serde_json::from_slice(&body).map_err(|e| AdminError::Malformed {
            url,
            message: e.to_string(),
        })
    }
}
