//! The live page, `GET /`: one self-contained HTML file ([`PAGE`]: its style and script inline,
//! nothing fetched from elsewhere, since installations are often air-gapped) whose script reads
//! `status` and `damage` every 2 s and fills the figures in. And `GET /damage`, the JSON it reads.

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};

use super::{error, AdminState};

/// The page, as served.
pub const PAGE: &str = include_str!("page.html");

/// Nothing but the page itself and its own calls: an inline style and script, `fetch` to the same
/// origin, no frames around it.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; img-src data:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The page; the door has let the caller in (and marks it `no-store`, as every answer).
pub async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .body(PAGE)
}

/// `GET /damage`: [`crate::db::missing::Damage`] as JSON, or 503 naming what failed.
pub async fn damage(state: web::Data<AdminState>) -> HttpResponse {
    match state.damage.get().await {
        Ok(damage) => HttpResponse::Ok().json(damage),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_self_contained() {
        // Nothing loaded from another origin, nothing but the inline script.
        for needle in ["http://", "https://", "src=", "@import", "url("] {
            assert!(!PAGE.contains(needle), "the page holds {needle:?}");
        }
        assert!(PAGE.contains("<progress"));
    }
}
