//! The simulator's shared state (what it holds, its switches and its counters) and the answers
//! every route may give: a registry error body, and the answer of a registry without GitLab's
//! API. The routes (`server.rs`, `list.rs`) and the token check (`auth.rs`) read it.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use jsonwebtoken::DecodingKey;
use rand::rngs::StdRng;
use rand::Rng;

use super::alarms::Alarms;
use super::{ApiMode, FaultMix, Hostile, TrustedIssuer};
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
    /// Repository details requests, whatever their answer.
    pub(super) size_requests: AtomicU64,
    /// Repositories whose details are answered with this status.
    pub(super) size_refused: Mutex<HashMap<String, u16>>,
    /// Whether details carry `size_bytes` when asked (a registry too old gives none).
    pub(super) sizes_given: AtomicBool,
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
pub(super) const DEFAULT_ANSWER_EARLY: Duration = Duration::from_micros(150);

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

/// Counts a request in flight for as long as it lives.
pub(super) struct InFlight<'a>(&'a State);

impl<'a> InFlight<'a> {
    pub(super) fn enter(state: &'a State) -> Self {
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

/// Waits out the simulated latency of a request that arrived now.
pub(super) async fn delay(state: &State) {
    delay_from(state, Instant::now()).await
}

pub(super) async fn delay_from(state: &State, entered: Instant) {
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
}
