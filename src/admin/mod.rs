//! The admin HTTP API on `admin.listen`: status and control, each a message to the Scheduler; the
//! live page (`GET /`, [`page`]) and the damage it shows (`GET /damage`, [`damage`]); the one
//! [`door`] every call passes through (who may call, from where, how; the token's rule is
//! [`auth`]); and the [`AdminClient`] the control commands use to reach it.

mod auth;
mod client;
mod damage;
mod door;
mod page;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix::Addr;
use actix_web::{web, App, HttpResponse, HttpServer};
use serde::{Deserialize, Serialize};

pub use client::AdminClient;

use crate::config::Secret;
use crate::db::Database;
use crate::fleet::{Fleet, GetFleetStatus};
use crate::registry::RegistryMetrics;
use crate::scheduler::{
    GetStatus, SchedulerAddr, ServiceStatus, SetConcurrency, SetEnabled, Takes,
};

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
    pub scheduler: SchedulerAddr,
    /// This instance as a member of the fleet (an analysis): `status` shows the fleet.
    pub fleet: Option<Addr<Fleet>>,
    /// When set, every call (`/status` and `/metrics` too: `last_error` names private project
    /// paths) needs it: as a bearer token, or as HTTP Basic's password on the read-only calls
    /// over loopback ([`auth`]).
    pub token: Option<Secret>,
    /// `admin.allowed_hosts`: the names besides IP addresses and `localhost` that calls may name
    /// the service by in `Host` ([`door`]).
    pub allowed_hosts: Vec<String>,
    pub registry_metrics: Arc<RegistryMetrics>,
    /// `control.source = "gitlab"`: GitLab's switches steer; the [`door`] refuses control calls.
    pub follows_gitlab: bool,
    /// The service's database, for `GET /damage`; without it `/damage` answers 503.
    pub db: Option<Database>,
}

/// What the handlers share: the deps, and the damage totals kept between calls.
struct AdminState {
    deps: AdminDeps,
    damage: damage::DamageCache,
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
        let damage = damage::DamageCache::new(deps.db.clone());
        let gate = Arc::new(door::Door {
            allowed_hosts: deps.allowed_hosts.clone(),
            token: deps.token.clone(),
            follows_gitlab: deps.follows_gitlab,
        });
        let state = web::Data::new(AdminState { deps, damage });
        let server = HttpServer::new(move || {
            let gate = gate.clone();
            App::new()
                // Every route, and the 404 of any other path, behind it.
                .wrap_fn(move |req, service| door::guard(&gate, req, service))
                .app_data(state.clone())
                .app_data(web::JsonConfig::default().error_handler(|err, _req| {
                    let message = format!("bad request body: {err}");
                    actix_web::error::InternalError::from_response(
                        err,
                        HttpResponse::BadRequest().json(ErrorBody { error: message }),
                    )
                    .into()
                }))
                .route("/", web::get().to(page::page))
                .route("/damage", web::get().to(page::damage))
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

async fn reply<M>(state: &AdminDeps, msg: M) -> HttpResponse
where
    M: actix::Message<Result = ServiceStatus> + Send + 'static,
    SchedulerAddr: Takes<M>,
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

async fn status(state: web::Data<AdminState>) -> HttpResponse {
    reply(&state.deps, GetStatus).await
}

/// Prometheus sends the token with `authorization: {credentials: ...}` in its scrape config.
async fn metrics(state: web::Data<AdminState>) -> HttpResponse {
    let state = &state.deps;
    let status = match state.scheduler.send(GetStatus).await {
        Ok(status) => with_fleet(state, status).await,
        Err(e) => {
            return error(
                actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
                format!("the scheduler is not running: {e}"),
            )
        }
    };
    match crate::metrics::render(status, &state.registry_metrics) {
        Ok(text) => HttpResponse::Ok()
            .content_type(crate::metrics::CONTENT_TYPE)
            .body(text),
        Err(e) => error(
            actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("writing the metrics as Prometheus text: {e}"),
        ),
    }
}

async fn concurrency(
    state: web::Data<AdminState>,
    body: web::Json<ConcurrencyRequest>,
) -> HttpResponse {
    let Ok(limit) = usize::try_from(body.max_concurrency) else {
        return error(
            actix_web::http::StatusCode::BAD_REQUEST,
            format!(
                "max_concurrency must be a whole number >= 0 (got {})",
                body.max_concurrency
            ),
        );
    };
    reply(&state.deps, SetConcurrency(limit)).await
}

async fn pause(state: web::Data<AdminState>) -> HttpResponse {
    reply(&state.deps, SetEnabled(false)).await
}

async fn resume(state: web::Data<AdminState>) -> HttpResponse {
    reply(&state.deps, SetEnabled(true)).await
}
