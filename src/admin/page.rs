//! The live page, `GET /`: one self-contained HTML page (its style and script inline, nothing
//! fetched from elsewhere, since installations are often air-gapped) whose script reads `status`
//! and `damage` every 2 s and fills the figures in. And `GET /damage`, the JSON it reads.
//!
//! The page is a maud template ([`live_page`]) that holds no figure: the script writes each one
//! as text (`textContent`), so a project path in `last_error` shows as it is, never as markup.

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::{error, AdminState};

const STYLE: &str = include_str!("page.css");
const SCRIPT: &str = include_str!("page.js");

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
        .body(live_page().into_string())
}

/// The page: every figure a dash until the script fills it in.
fn live_page() -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                link rel="icon" href="data:,";
                title { "registry-repair" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                div.wrap {
                    header {
                        h1 { "registry-repair" }
                        span.work #work {}
                        span.badge #state data-tone="off" aria-label="State" { "connecting" }
                        p.connection #connection role="status" aria-live="polite" {
                            "Connecting to the service…"
                        }
                    }
                    noscript {
                        p.error {
                            "This page needs JavaScript to fill in its figures; without it, read "
                            a href="status" { "status" } " and " a href="damage" { "damage" }
                            " (JSON)."
                        }
                    }
                    main #figures .stale aria-busy="true" { (cards()) }
                    footer {
                        "Refreshes every 2 seconds. The same figures as JSON: "
                        a href="status" { "status" } ", " a href="damage" { "damage" }
                        "; for Prometheus: " a href="metrics" { "metrics" } "."
                    }
                }
                script { (PreEscaped(SCRIPT)) }
            }
        }
    }
}

/// A card titled `title`, its heading's id `h-{name}`; `wide`: across the whole page.
fn card(name: &str, title: &str, wide: bool, body: Markup) -> Markup {
    html! {
        section.card.wide[wide] aria-labelledby={ "h-" (name) } {
            h2 id={ "h-" (name) } { (title) }
            (body)
        }
    }
}

/// A figure's row: its label, and the element `id` the script writes the figure into.
fn figure(label: &str, id: &str) -> Markup {
    html! { div { dt { (label) } dd id=(id) { "–" } } }
}

fn cards() -> Markup {
    let progress = html! {
        p.headline #progress-text { "–" }
        progress #progress max="1" aria-labelledby="h-progress" aria-describedby="progress-text" {}
        dl.row {
            (figure("Analysed", "analysed"))
            (figure("Total", "total"))
            (figure("Left", "remaining"))
            (figure("Rate", "rate"))
            (figure("ETA", "eta"))
        }
    };
    let work = html! {
        dl {
            div { dt #max-concurrency-label { "Max concurrency" } dd #max-concurrency { "–" } }
            // A member of a fleet only.
            div #share-row hidden { dt { "This instance's share" } dd #share { "–" } }
            (figure("In flight", "in-flight"))
            (figure("Queued", "queued"))
            (figure("Feature flag", "enabled"))
            (figure("Uptime", "uptime"))
        }
    };
    let registry = html! {
        dl {
            div { dt { "Breaker" } dd { span.badge #breaker data-tone="off" { "–" } } }
            (figure("Breaker trips", "breaker-trips"))
            (figure("Deferred (to try again)", "deferred"))
            (figure("Completed", "completed"))
            (figure("Failed", "failed"))
        }
    };
    let damage = html! {
        dl #damage-figures {
            (figure("Projects affected", "damage-projects"))
            (figure("Missing repositories", "damage-repositories"))
            (figure("Their size", "damage-bytes"))
            (figure("Sizes not known", "damage-unknown"))
        }
        // Instead of the figures when the database cannot give them.
        p.error #damage-error role="alert" hidden {}
        p.note {
            "Recorded by every instance. Sizes in binary units (1 KiB = 1,024 bytes); hover for \
             the exact figure."
        }
    };
    let fleet = [
        "Member",
        "Share",
        "In flight",
        "Analysed",
        "Heartbeat",
        "Shard",
        "State",
    ];
    html! {
        (card("progress", "Progress", true, progress))
        (card("work", "Work", false, work))
        (card("registry", "Registry", false, registry))
        (card("damage", "Damage found so far", false, damage))
        (card("error", "Last error", true, html! { pre #last-error .none { "none" } }))
        // Its members, a row each, when there are two or more.
        section.card.wide #fleet aria-labelledby="h-fleet" hidden {
            h2 #h-fleet { "Fleet" }
            p.headline #fleet-summary {}
            div.scroll {
                table {
                    thead { tr { @for name in fleet { th scope="col" { (name) } } } }
                    tbody #fleet-members {}
                }
            }
        }
    }
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
        let page = live_page().into_string();
        // Nothing loaded from another origin, nothing but the inline script.
        for needle in ["http://", "https://", "src=", "@import", "url("] {
            assert!(!page.contains(needle), "the page holds {needle:?}");
        }
        assert!(page.contains("<progress"));
    }
}
