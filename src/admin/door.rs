//! The one door every admin call passes through, before any handler: who may call, from where,
//! and how. The decision is [`Door::decide`], a pure function of what the call brings; [`guard`]
//! is the middleware that applies it and marks every answer `Cache-Control: no-store`.
//!
//! In this order:
//! 1. **Host.** The `Host` header names the service by an IP address (any: a DNS rebinding attack
//!    needs a name the attacker's DNS answers for, and a browser that was given an IP address
//!    asks no DNS at all), by `localhost` or a name under `.localhost` (browsers and resolvers
//!    keep those on loopback), or by a name in `admin.allowed_hosts` (a reverse proxy's).
//!    Anything else is a page under another name reading the service through a rebound name:
//!    403.
//! 2. **Origin.** When a browser says which page a call comes from, it must be the service's own:
//!    `Origin`'s `host[:port]` is the `Host`, or its host is in `admin.allowed_hosts`. `null`
//!    (a sandboxed frame, a `file:` page) and anything unreadable: 403.
//! 3. **Control calls are JSON.** Anything but GET and HEAD must say `Content-Type:
//!    application/json`. A page can make a browser send a form or `text/plain` to any site
//!    without asking; a JSON content type it cannot send cross-site without a CORS preflight,
//!    which this API never answers. 415 otherwise, with or without `admin.token`.
//! 4. **The token**, where `admin.token` is set ([`auth::decide`]): 401, with the Basic challenge
//!    only on the live page (`/`), where a browser should prompt.
//! 5. **GitLab steers**, under `control.source = "gitlab"`: control calls are refused (409) with
//!    where the switches live.
//!
//! A refusal is logged at debug with the peer, method, path and reason (never a credential).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::error::InternalError;
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{Error, HttpResponse};
use futures_util::future::LocalBoxFuture;

use super::{auth, ErrorBody};
use crate::config::Secret;
use crate::db::switches;

/// What the door lets through: the configured names and token, and whether control calls are.
#[derive(Debug, Clone, Default)]
pub struct Door {
    /// `admin.allowed_hosts`, lowercased, without a trailing dot (as the configuration keeps them).
    pub allowed_hosts: Vec<String>,
    /// `admin.token`.
    pub token: Option<Secret>,
    /// `control.source = "gitlab"`: GitLab's own switches steer, so control calls are refused.
    pub follows_gitlab: bool,
}

/// A header as the call brings it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field<'a> {
    Absent,
    One(&'a [u8]),
    /// More than one: which one counts is ambiguous, so none does.
    Several,
}

impl<'a> Field<'a> {
    /// `name` in `headers`.
    pub fn of(headers: &'a HeaderMap, name: &HeaderName) -> Self {
        let mut values = headers.get_all(name);
        match (values.next(), values.next()) {
            (None, _) => Field::Absent,
            (Some(value), None) => Field::One(value.as_bytes()),
            (Some(_), Some(_)) => Field::Several,
        }
    }

    /// The value as text, when there is exactly one and it is text.
    fn text(self) -> Option<&'a str> {
        match self {
            Field::One(bytes) => std::str::from_utf8(bytes).ok(),
            _ => None,
        }
    }

    /// The value as it can be shown in a message.
    fn shown(self) -> String {
        match self {
            Field::Absent => "none".to_string(),
            Field::One(bytes) => format!("`{}`", String::from_utf8_lossy(bytes)),
            Field::Several => "several".to_string(),
        }
    }
}

/// What a call brings that the door looks at.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// The socket's peer; `None` when not known (treated as not loopback).
    pub peer: Option<IpAddr>,
    pub method: &'a Method,
    pub path: &'a str,
    pub host: Field<'a>,
    pub origin: Field<'a>,
    pub content_type: Field<'a>,
    /// The `Authorization` header, when there is one and it is text.
    pub authorization: Option<&'a str>,
}

impl<'a> Call<'a> {
    pub fn of(req: &'a ServiceRequest) -> Self {
        let headers = req.headers();
        Self {
            peer: req.peer_addr().map(|addr| addr.ip()),
            method: req.method(),
            path: req.path(),
            host: Field::of(headers, &header::HOST),
            origin: Field::of(headers, &header::ORIGIN),
            content_type: Field::of(headers, &header::CONTENT_TYPE),
            authorization: headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok()),
        }
    }
}

/// Why the door stays shut. Each says what was refused, by what it shows (never a credential).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `Host` missing, unreadable, several, or a name the service is not reached by (shown).
    Host(String),
    /// `Origin` of another page, `null`, unreadable or several (shown).
    Origin(String),
    /// A call that is not a read without `Content-Type: application/json` (what it had, shown).
    NotJson(String),
    /// `admin.token` is set and the call does not bring it as [`auth`] accepts it.
    Token {
        refusal: auth::Refusal,
        /// Answer with the Basic challenge, so that a browser prompts (the live page only).
        challenge: bool,
    },
    /// A control call while GitLab's own switches steer the service.
    FollowsGitlab,
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::Host(_) | Refusal::Origin(_) => StatusCode::FORBIDDEN,
            Refusal::NotJson(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Refusal::Token { .. } => StatusCode::UNAUTHORIZED,
            Refusal::FollowsGitlab => StatusCode::CONFLICT,
        }
    }

    pub fn message(&self) -> String {
        match self {
            Refusal::Host(host) => format!(
                "this admin API answers only calls that name it in Host by an IP address, \
                 `localhost`, or a name in admin.allowed_hosts (for a reverse proxy), so that a \
                 page under another name cannot read or steer it through DNS rebinding (Host: \
                 {host})"
            ),
            Refusal::Origin(origin) => format!(
                "a call from another web page is refused: this admin API answers only its own \
                 pages, whose Origin's host[:port] is the Host, or whose host is in \
                 admin.allowed_hosts (Origin: {origin})"
            ),
            Refusal::NotJson(content_type) => format!(
                "send control calls with `Content-Type: application/json` (Content-Type: \
                 {content_type}): a web page cannot make a browser send that to another site \
                 without a CORS preflight, which this API never answers, so no other site can \
                 steer the service"
            ),
            Refusal::Token { refusal, .. } => refusal.message().to_string(),
            Refusal::FollowsGitlab => format!(
                "this service follows GitLab's own switches (control.source = \"gitlab\"): change the application setting {} \
                 (Admin > Settings > CI/CD > Container registry, or the application settings API), or the feature flag {} \
                 (`Feature.enable(:{})` / `Feature.disable(:{})` in a Rails console)",
                switches::SETTING,
                switches::FEATURE_FLAG,
                switches::FEATURE_FLAG,
                switches::FEATURE_FLAG
            ),
        }
    }
}

impl Door {
    /// Whether `call` may go on to its handler.
    pub fn decide(&self, call: &Call<'_>) -> Result<(), Refusal> {
        let host = call
            .host
            .text()
            .filter(|host| self.host_accepted(host))
            .ok_or_else(|| Refusal::Host(call.host.shown()))?;
        match call.origin {
            Field::Absent => {}
            origin => {
                let accepted = origin
                    .text()
                    .is_some_and(|origin| self.origin_accepted(origin, host));
                if !accepted {
                    return Err(Refusal::Origin(origin.shown()));
                }
            }
        }
        let read = *call.method == Method::GET || *call.method == Method::HEAD;
        if !read && !is_json(call.content_type) {
            return Err(Refusal::NotJson(call.content_type.shown()));
        }
        let token = self.token.as_ref().map(Secret::expose);
        let credentials = auth::Call {
            peer: call.peer,
            method: call.method,
            authorization: call.authorization,
        };
        auth::decide(token, &credentials).map_err(|refusal| Refusal::Token {
            refusal,
            challenge: call.path == "/"
                && matches!(refusal, auth::Refusal::Missing | auth::Refusal::Wrong)
                && auth::basic_accepted(&credentials),
        })?;
        if !read && self.follows_gitlab {
            return Err(Refusal::FollowsGitlab);
        }
        Ok(())
    }

    /// `Host`'s value: `host[:port]`, the host an IP address, a loopback name or an allowed one.
    fn host_accepted(&self, value: &str) -> bool {
        match authority(value) {
            Some(Authority::Ip(_)) => true,
            Some(Authority::Name(name)) => is_localhost(name) || self.allowed(name),
            None => false,
        }
    }

    /// `Origin`'s value: `http(s)://host[:port]`, the same as `Host` or an allowed name.
    fn origin_accepted(&self, origin: &str, host: &str) -> bool {
        let Some((scheme, rest)) = origin.split_once("://") else {
            return false;
        };
        if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
            return false;
        }
        match authority(rest) {
            Some(_) if rest.eq_ignore_ascii_case(host) => true,
            Some(Authority::Name(name)) => self.allowed(name),
            _ => false,
        }
    }

    fn allowed(&self, name: &str) -> bool {
        let name = name.strip_suffix('.').unwrap_or(name);
        self.allowed_hosts
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(name))
    }
}

/// The host part of a `host[:port]`.
#[derive(Debug, PartialEq, Eq)]
enum Authority<'a> {
    Ip(IpAddr),
    Name(&'a str),
}

/// `host[:port]` as `Host` and `Origin` carry it (an IPv6 address in brackets); `None` when it is
/// not one (a path, user info, a bare IPv6 address, a port that is not a number).
fn authority(value: &str) -> Option<Authority<'_>> {
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let ip: Ipv6Addr = inside.parse().ok()?;
        let port = if after.is_empty() {
            None
        } else {
            Some(after.strip_prefix(':')?)
        };
        (Authority::Ip(IpAddr::V6(ip)), port)
    } else {
        let (host, port) = match value.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (value, None),
        };
        let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        if host.is_empty() || !host.chars().all(valid) {
            return None;
        }
        match host.parse::<Ipv4Addr>() {
            Ok(ip) => (Authority::Ip(IpAddr::V4(ip)), port),
            Err(_) => (Authority::Name(host), port),
        }
    };
    // RFC 3986 allows an empty port after the colon.
    port.is_none_or(|port| port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit()))
        .then_some(host)
}

/// `localhost` and the names under it, which never leave the machine (RFC 6761).
fn is_localhost(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    const SUFFIX: &str = ".localhost";
    name.eq_ignore_ascii_case("localhost")
        || (name.len() > SUFFIX.len()
            && name.is_char_boundary(name.len() - SUFFIX.len())
            && name[name.len() - SUFFIX.len()..].eq_ignore_ascii_case(SUFFIX))
}

/// `Content-Type: application/json`, with any parameters (`; charset=utf-8`).
fn is_json(content_type: Field<'_>) -> bool {
    content_type.text().is_some_and(|value| {
        value
            .split(';')
            .next()
            .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
    })
}

/// The refusal as the caller sees it: its status and `{"error": ...}`.
fn refused(refusal: &Refusal) -> HttpResponse {
    let mut answer = HttpResponse::build(refusal.status()).json(ErrorBody {
        error: refusal.message(),
    });
    if let Refusal::Token {
        challenge: true, ..
    } = refusal
    {
        answer.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(auth::CHALLENGE),
        );
    }
    answer
}

/// The middleware: `door`'s decision on `req`, then the handler (or the refusal), every answer
/// marked `Cache-Control: no-store` (the status and the damage name private project paths).
pub fn guard<S, B>(
    door: &Door,
    req: ServiceRequest,
    service: &S,
) -> LocalBoxFuture<'static, Result<ServiceResponse<BoxBody>, Error>>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    S::Future: 'static,
    B: MessageBody + 'static,
{
    if let Err(refusal) = door.decide(&Call::of(&req)) {
        tracing::debug!(
            peer = ?req.peer_addr().map(|addr| addr.ip()),
            method = %req.method(),
            path = req.path(),
            reason = %refusal.message(),
            "admin call refused"
        );
        let mut response = req.into_response(refused(&refusal));
        not_stored(response.headers_mut());
        return Box::pin(async move { Ok(response) });
    }
    let handled = service.call(req);
    Box::pin(async move {
        match handled.await {
            Ok(mut response) => {
                not_stored(response.headers_mut());
                Ok(response.map_into_boxed_body())
            }
            // An error the handlers did not turn into an answer themselves: the answer it will
            // become, marked too.
            Err(error) => {
                let mut response = error.error_response();
                not_stored(response.headers_mut());
                Err(InternalError::from_response(error, response).into())
            }
        }
    })
}

fn not_stored(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "s3cret";
    const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn door(allowed: &[&str], token: Option<&str>) -> Door {
        Door {
            allowed_hosts: allowed.iter().map(|h| h.to_string()).collect(),
            token: token.map(Secret::from),
            follows_gitlab: false,
        }
    }

    /// A read of `/status` from loopback with `host`, nothing else.
    fn read(host: &str) -> Call<'_> {
        Call {
            peer: Some(LOOPBACK),
            method: &Method::GET,
            path: "/status",
            host: Field::One(host.as_bytes()),
            origin: Field::Absent,
            content_type: Field::Absent,
            authorization: None,
        }
    }

    /// `POST /pause` with `host`, `origin` and `content_type`.
    fn control<'a>(
        host: &'a str,
        origin: Option<&'a str>,
        content_type: Option<&'a str>,
    ) -> Call<'a> {
        let field = |v: Option<&'a str>| v.map_or(Field::Absent, |v| Field::One(v.as_bytes()));
        Call {
            method: &Method::POST,
            path: "/pause",
            origin: field(origin),
            content_type: field(content_type),
            ..read(host)
        }
    }

    #[test]
    fn any_ip_address_and_localhost_are_hosts_the_service_is_reached_by() {
        let open = door(&[], None);
        for host in [
            "127.0.0.1:9393",
            "127.0.0.1",
            "10.1.2.3:9393",
            "[::1]:9393",
            "[::1]",
            "[2001:db8::7]:80",
            "localhost:9393",
            "LocalHost:9393",
            "localhost.:9393",
            "localhost",
            "grafana.localhost:9393",
            "a.b.LOCALHOST.",
            "localhost:",
        ] {
            assert_eq!(open.decide(&read(host)), Ok(()), "{host}");
        }
    }

    #[test]
    fn any_other_name_is_refused_unless_allowed() {
        let open = door(&[], None);
        for host in [
            "evil.example:9393",
            "evil.example",
            "localhost.evil.example:9393",
            "evillocalhost:9393",
            ".localhost",
            "127.0.0.1.evil.example",
            "127.1:9393",
            "::1",
            "[::1",
            "[not-an-ip]:9393",
            "127.0.0.1:http",
            "127.0.0.1:99999999",
            "user@127.0.0.1",
            "127.0.0.1/status",
            "",
        ] {
            let refused = open.decide(&read(host));
            assert!(
                matches!(&refused, Err(Refusal::Host(shown)) if shown.contains(host)),
                "{host}: {refused:?}"
            );
            assert_eq!(
                refused.as_ref().map_err(Refusal::status),
                Err(StatusCode::FORBIDDEN)
            );
        }
        let proxied = door(&["rr.example.com", "proxy.internal"], None);
        for host in [
            "rr.example.com",
            "RR.Example.Com:443",
            "rr.example.com.",
            "proxy.internal:8080",
        ] {
            assert_eq!(proxied.decide(&read(host)), Ok(()), "{host}");
        }
        assert!(matches!(
            proxied.decide(&read("evil.example")),
            Err(Refusal::Host(_))
        ));
        assert!(matches!(
            proxied.decide(&read("rr.example.com.evil.example")),
            Err(Refusal::Host(_))
        ));
    }

    #[test]
    fn a_host_missing_unreadable_or_twice_is_refused() {
        let open = door(&[], None);
        for host in [Field::Absent, Field::Several, Field::One(b"127.0.0.1\xff")] {
            let call = Call {
                host,
                ..read("127.0.0.1")
            };
            assert!(
                matches!(open.decide(&call), Err(Refusal::Host(_))),
                "{host:?}"
            );
        }
        let message = open
            .decide(&read("evil.example:9393"))
            .expect_err("refused")
            .message();
        assert!(
            message.contains("`evil.example:9393`") && message.contains("admin.allowed_hosts"),
            "{message}"
        );
    }

    #[test]
    fn an_origin_is_accepted_only_when_it_is_the_host_or_an_allowed_name() {
        let d = door(&["rr.example.com"], None);
        let json = Some("application/json");
        for (host, origin) in [
            ("127.0.0.1:9393", "http://127.0.0.1:9393"),
            ("localhost:9393", "http://LOCALHOST:9393"),
            ("[::1]:9393", "https://[::1]:9393"),
            ("127.0.0.1:9393", "https://rr.example.com"),
            ("rr.example.com", "https://rr.example.com"),
        ] {
            assert_eq!(
                d.decide(&control(host, Some(origin), json)),
                Ok(()),
                "{host} {origin}"
            );
        }
        for (host, origin) in [
            ("127.0.0.1:9393", "http://evil.example"),
            ("127.0.0.1:9393", "http://127.0.0.1:8080"),
            ("127.0.0.1:9393", "http://localhost:9393"),
            ("localhost:9393", "http://127.0.0.1:9393"),
            ("127.0.0.1:9393", "null"),
            ("127.0.0.1:9393", "ftp://127.0.0.1:9393"),
            ("127.0.0.1:9393", "http://127.0.0.1:9393/"),
            ("127.0.0.1:9393", "http://user@127.0.0.1:9393"),
            ("127.0.0.1:9393", "127.0.0.1:9393"),
            ("127.0.0.1:9393", "http://rr.example.com.evil.example"),
            ("127.0.0.1:9393", ""),
        ] {
            let refused = d.decide(&control(host, Some(origin), json));
            assert!(
                matches!(&refused, Err(Refusal::Origin(shown)) if shown.contains(origin)),
                "{host} {origin}: {refused:?}"
            );
        }
        // On reads too: a page elsewhere reads nothing.
        let call = Call {
            origin: Field::One(b"http://evil.example"),
            ..read("127.0.0.1:9393")
        };
        assert!(matches!(d.decide(&call), Err(Refusal::Origin(_))));
        let call = Call {
            origin: Field::Several,
            ..read("127.0.0.1:9393")
        };
        assert!(matches!(d.decide(&call), Err(Refusal::Origin(_))));
    }

    #[test]
    fn the_host_is_checked_before_the_origin() {
        let refused = door(&[], None).decide(&control(
            "evil.example:9393",
            Some("http://evil.example:9393"),
            Some("application/json"),
        ));
        assert!(matches!(refused, Err(Refusal::Host(_))), "{refused:?}");
    }

    #[test]
    fn a_control_call_must_be_json_with_or_without_a_token() {
        for token in [None, Some(TOKEN)] {
            let d = door(&[], token);
            for content_type in [
                None,
                Some("application/x-www-form-urlencoded"),
                Some("multipart/form-data; boundary=x"),
                Some("text/plain"),
                Some("text/plain; charset=utf-8"),
                Some("application/jsonp"),
                Some("application/json-seq"),
                Some("application/vnd.api+json"),
                Some(""),
            ] {
                let mut call = control("127.0.0.1:9393", None, content_type);
                call.authorization = Some("Bearer s3cret");
                let refused = d.decide(&call);
                assert!(
                    matches!(refused, Err(Refusal::NotJson(_))),
                    "{content_type:?}: {refused:?}"
                );
                assert_eq!(
                    refused.map_err(|r| r.status()),
                    Err(StatusCode::UNSUPPORTED_MEDIA_TYPE)
                );
            }
            for content_type in [
                "application/json",
                "Application/JSON",
                "application/json; charset=utf-8",
                " application/json ;charset=UTF-8",
            ] {
                let mut call = control("127.0.0.1:9393", None, Some(content_type));
                call.authorization = Some("Bearer s3cret");
                assert_eq!(d.decide(&call), Ok(()), "{content_type}");
            }
            let mut twice = control("127.0.0.1:9393", None, None);
            twice.content_type = Field::Several;
            assert!(matches!(d.decide(&twice), Err(Refusal::NotJson(_))));
        }
        // Every method but the reads.
        for method in [Method::PUT, Method::DELETE, Method::PATCH, Method::OPTIONS] {
            let call = Call {
                method: &method,
                ..read("127.0.0.1:9393")
            };
            assert!(
                matches!(door(&[], None).decide(&call), Err(Refusal::NotJson(_))),
                "{method}"
            );
        }
        let message = door(&[], None)
            .decide(&control("127.0.0.1:9393", None, Some("text/plain")))
            .expect_err("refused")
            .message();
        assert!(
            message.contains("Content-Type: application/json") && message.contains("`text/plain`"),
            "{message}"
        );
    }

    #[test]
    fn the_token_is_checked_last_and_the_page_alone_challenges() {
        let d = door(&[], Some(TOKEN));
        // Host and Origin come first, whatever the credentials.
        let mut call = read("evil.example:9393");
        call.authorization = Some("Bearer s3cret");
        assert!(matches!(d.decide(&call), Err(Refusal::Host(_))));
        let mut call = control(
            "127.0.0.1:9393",
            Some("http://evil.example"),
            Some("application/json"),
        );
        call.authorization = Some("Bearer s3cret");
        assert!(matches!(d.decide(&call), Err(Refusal::Origin(_))));

        let mut call = read("127.0.0.1:9393");
        assert_eq!(
            d.decide(&call),
            Err(Refusal::Token {
                refusal: auth::Refusal::Missing,
                challenge: false
            })
        );
        call.path = "/";
        assert_eq!(
            d.decide(&call),
            Err(Refusal::Token {
                refusal: auth::Refusal::Missing,
                challenge: true
            })
        );
        call.authorization = Some("Bearer s3cret");
        assert_eq!(d.decide(&call), Ok(()));
        // Not from elsewhere: Basic would not be accepted there, so no prompt.
        call.authorization = None;
        call.peer = Some(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)));
        assert_eq!(
            d.decide(&call),
            Err(Refusal::Token {
                refusal: auth::Refusal::Missing,
                challenge: false
            })
        );
        // Basic on a control call: refused, never prompted for.
        let mut call = control("127.0.0.1:9393", None, Some("application/json"));
        call.path = "/";
        call.authorization = Some("Basic b3BzOnMzY3JldA==");
        assert_eq!(
            d.decide(&call),
            Err(Refusal::Token {
                refusal: auth::Refusal::BasicOnControl,
                challenge: false
            })
        );
        assert_eq!(
            d.decide(&call).map_err(|r| r.status()),
            Err(StatusCode::UNAUTHORIZED)
        );
    }

    #[test]
    fn while_gitlab_steers_control_calls_are_refused_after_every_other_check() {
        for token in [None, Some(TOKEN)] {
            let d = Door {
                follows_gitlab: true,
                ..door(&[], token)
            };
            let mut call = control("127.0.0.1:9393", None, Some("application/json"));
            call.authorization = Some("Bearer s3cret");
            let refused = d.decide(&call).expect_err("refused");
            assert_eq!(refused, Refusal::FollowsGitlab);
            assert_eq!(refused.status(), StatusCode::CONFLICT);
            assert!(
                refused
                    .message()
                    .contains("container_registry_data_repair_detail_worker_max_concurrency")
                    && refused.message().contains("registry_data_repair_worker"),
                "{}",
                refused.message()
            );
            // The reads go on.
            assert_eq!(d.decide(&read("127.0.0.1:9393")).is_ok(), token.is_none());
            // A call the other checks refuse is refused by them.
            call.content_type = Field::Absent;
            assert!(matches!(d.decide(&call), Err(Refusal::NotJson(_))));
        }
        let d = Door {
            follows_gitlab: true,
            ..door(&[], Some(TOKEN))
        };
        let call = control("127.0.0.1:9393", None, Some("application/json"));
        assert!(matches!(d.decide(&call), Err(Refusal::Token { .. })));
    }

    #[test]
    fn no_message_shows_a_credential() {
        let d = door(&[], Some(TOKEN));
        let mut call = control("evil.example", None, None);
        call.authorization = Some("Bearer s3cret-but-wrong");
        for host in ["evil.example", "127.0.0.1"] {
            call.host = Field::One(host.as_bytes());
            let message = d.decide(&call).expect_err("refused").message();
            assert!(!message.contains("s3cret"), "{message}");
        }
    }
}
