//! The registry's List Sub Repositories API (GitLab v1): one page per call, its errors and whose
//! fault they are, and the probe of `GET /gitlab/v1/`. The walk over a project's pages is in
//! `pages`, reading an answer's body and headers within bounds in `answer`.

mod answer;
mod pages;
mod size;

pub use self::pages::{PageStep, Pages};

use self::answer::{max_body, next_marker, read_bounded, shown_location, Body};
pub use self::size::{Size, Sizes};

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::AUTHORIZATION;
use reqwest::StatusCode;
use serde::Deserialize;

use super::grammar::{is_addressable, shown, MAX_PATH_BYTES};
use super::metrics::RegistryMetrics;
use super::token::{SharedToken, Token, TokenError, TokenSigner};
use crate::config::{ConfigError, Settings};
use crate::fence::Fence;

/// How long before its expiry a token is replaced, on top of one request timeout.
const TOKEN_RENEW_MARGIN: Duration = Duration::from_secs(30);

/// One repository as the registry lists it. `name` is only the last segment; `path` is the whole.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub path: String,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

#[cfg(test)]
impl Entry {
    /// The entry the registry lists for `path`, undated.
    pub(crate) fn at(path: &str) -> Self {
        Self {
            name: path.rsplit('/').next().unwrap_or(path).to_string(),
            path: path.to_string(),
            created_at: None,
            updated_at: None,
        }
    }
}

/// Why a client could not be made from the settings: a setting the operator must fix, or the
/// HTTP client itself.
#[derive(Debug, thiserror::Error)]
pub enum ClientSetupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry request for {path}: cannot reach the registry: {message}")]
    Connect { path: String, message: String },
    /// The TLS handshake refused the certificate the registry presented: no retry mends that.
    #[error("registry request for {path}: cannot reach the registry: invalid peer certificate: {reason}")]
    UntrustedCertificate {
        path: String,
        reason: rustls::CertificateError,
    },
    #[error("registry request for {path}: no answer within {timeout:?}")]
    Timeout { path: String, timeout: Duration },
    #[error("registry request for {path}: the registry answered {status}{}", code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Status {
        path: String,
        status: u16,
        code: Option<String>,
    },
    #[error("registry request for {path}: malformed answer: {reason}")]
    Malformed { path: String, reason: String },
    #[error("listing {path}: more than {max_pages} pages; giving up on this project")]
    TooManyPages { path: String, max_pages: u32 },
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The listing named a repository path that breaks the registry's own name grammar
    /// ([`is_addressable`]): no registry can hold such a repository, so the answer is hostile
    /// (or broken beyond a retry), and nothing of the project it lists can be trusted. `entry`
    /// is the offending path as it may be shown ([`shown`]: escaped, cut short), never raw.
    #[error("listing {path}: the registry listed the repository path {entry}, which breaks the registry's name grammar (per `/`-separated segment [a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*, at most {MAX_PATH_BYTES} bytes in all); no registry can hold it, so the answer is hostile and nothing of this project was recorded")]
    HostileName { path: String, entry: String },
    /// This process's hold on its work lapsed ([`Fence`]): nothing was asked, or what was asked
    /// was cancelled. Nobody's fault: the work goes back, uncounted.
    #[error("registry request for {path}: not sent: {}", crate::fence::Fenced)]
    Fenced { path: String },
}

impl RegistryError {
    /// Whether the same request may succeed if tried again.
    pub fn is_transient(&self) -> bool {
        match self {
            // A certificate refused now may be one rotated in a moment (the service keeps
            // trying, as for an unreachable registry; at start it stops, see `service`).
            RegistryError::Connect { .. }
            | RegistryError::UntrustedCertificate { .. }
            | RegistryError::Timeout { .. }
            | RegistryError::Malformed { .. } => true,
            RegistryError::Status { status, .. } => *status == 429 || *status >= 500,
            RegistryError::TooManyPages { .. }
            | RegistryError::HostileName { .. }
            | RegistryError::Token(_)
            | RegistryError::Fenced { .. } => false,
        }
    }

    /// The registry cannot be reached at all, or no token can be signed for it: nothing asked
    /// now can be answered, whatever the path.
    pub fn is_outage(&self) -> bool {
        matches!(
            self,
            RegistryError::Connect { .. }
                | RegistryError::UntrustedCertificate { .. }
                | RegistryError::Token(_)
                | RegistryError::Fenced { .. }
        )
    }

    /// Whose fault the error is, once retries are spent.
    pub fn blame(&self) -> Blame {
        match self {
            RegistryError::Connect { .. }
            | RegistryError::UntrustedCertificate { .. }
            | RegistryError::Token(_)
            | RegistryError::Fenced { .. } => Blame::Registry,
            RegistryError::Status {
                status: 401 | 403 | 429,
                ..
            } => Blame::Registry,
            // A redirect, or a 404 with no registry error code: the URL reaches no GitLab API
            // (a wrong prefix, a proxy, a registry without its metadata database), whatever the
            // project.
            RegistryError::Status {
                status: 300..=399, ..
            }
            | RegistryError::Status {
                status: 404,
                code: None,
                ..
            } => Blame::Registry,
            RegistryError::Timeout { .. } | RegistryError::Malformed { .. } => Blame::Unclear,
            RegistryError::Status { status, .. } if *status >= 500 => Blame::Unclear,
            RegistryError::Status { .. }
            | RegistryError::TooManyPages { .. }
            | RegistryError::HostileName { .. } => Blame::Project,
        }
    }
}

/// Whose fault a failed request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The registry as a whole: unreachable, or refusing our credentials. Never a project's fault.
    Registry,
    /// A 5xx, a timeout or a broken answer: the project's own if the registry serves others.
    Unclear,
    /// This project: a 4xx of its own, more pages than a sane bound, or a listing that names a
    /// repository no registry can hold.
    Project,
}

/// What `GET /gitlab/v1/` says about the registry.
#[derive(Debug)]
pub enum ApiProbe {
    /// 200 or 401: the GitLab API is there.
    Available(u16),
    /// The registry answers, but not as one with GitLab's API (404, a redirect, another 4xx):
    /// no request will ever succeed until its configuration or `registry.url` changes.
    Absent {
        status: u16,
        location: Option<String>,
    },
    /// No answer, a timeout, 429 or 5xx: wait and ask again.
    Unavailable(RegistryError),
}

/// The registry answered `GET /gitlab/v1/`, but not as one with GitLab's API: no request will
/// succeed until its configuration or `registry.url` changes. Shown as one line naming
/// `registry.url`, the answer and what is needed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub struct NoGitlabApi {
    /// `registry.url` as it may be shown.
    pub registry_url: String,
    pub status: u16,
    /// Where a redirect pointed, as it may be shown.
    pub location: Option<String>,
}

impl NoGitlabApi {
    fn message(&self) -> String {
        let (registry_url, status) = (&self.registry_url, self.status);
        match (status, &self.location) {
            (300..=399, location) => format!(
                "registry.url `{registry_url}`: GET /gitlab/v1/ answered {status} (a redirect{}); \
                 set registry.url to the registry's own base URL (https:// if it redirects there), \
                 since redirects are not followed with a token",
                location
                    .as_deref()
                    .map(|l| format!(" to {l}"))
                    .unwrap_or_default()
            ),
            (404, _) => format!(
                "registry.url `{registry_url}`: GET /gitlab/v1/ answered 404: this registry has no \
                 GitLab API; it needs GitLab's container registry with its metadata database \
                 enabled (the distribution registry has none), and registry.url must be its base \
                 URL without a path prefix"
            ),
            (status, _) => format!(
                "registry.url `{registry_url}`: GET /gitlab/v1/ answered {status}, where GitLab's \
                 container registry answers 200 or 401; it needs GitLab's container registry with \
                 its metadata database enabled, reached at its base URL"
            ),
        }
    }
}

/// One answer of List Sub Repositories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageAnswer {
    /// A page of entries, and the `last` marker of the next page when the registry said there is one.
    Page {
        entries: Vec<Entry>,
        next: Option<String>,
    },
    /// 404 NAME_UNKNOWN: the top-level namespace is unknown to the registry, so nothing lives there.
    NameUnknown,
}

#[derive(Clone)]
pub struct RegistryClient {
    http: reqwest::Client,
    base: url::Url,
    page_size: u32,
    /// The largest answer body read; a longer one is malformed (see [`max_body`]).
    max_body: usize,
    timeout: Duration,
    max_pages: u32,
    signer: Arc<TokenSigner>,
    metrics: Arc<RegistryMetrics>,
    /// Every request waits for it to be open, and is cancelled when it closes.
    fence: Arc<Fence>,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    errors: Vec<ErrorItem>,
}

#[derive(Debug, Deserialize)]
struct ErrorItem {
    code: String,
}

impl RegistryClient {
    pub fn new(
        base: &str,
        page_size: u32,
        timeout: Duration,
        max_pages: u32,
        signer: Arc<TokenSigner>,
    ) -> Result<Self, RegistryError> {
        Self::with_ca(base, page_size, timeout, max_pages, signer, Vec::new())
    }

    /// The client the `registry.*` settings describe, signing with `signer`: `registry.url`,
    /// `page_size`, `timeout_ms`, `max_pages`, and the certificates of `registry.ca_file` trusted
    /// besides the system's roots.
    pub fn from_settings(
        settings: &Settings,
        signer: Arc<TokenSigner>,
    ) -> Result<Self, ClientSetupError> {
        let registry = &settings.registry;
        Ok(Self::with_ca(
            registry.url.expose().as_str(),
            registry.page_size,
            registry.timeout,
            registry.max_pages,
            signer,
            settings.registry_ca()?,
        )?)
    }

    /// As [`new`](Self::new), trusting the certificates of `registry.ca_file` besides the
    /// system's roots (a self-managed registry's private CA).
    pub fn with_ca(
        base: &str,
        page_size: u32,
        timeout: Duration,
        max_pages: u32,
        signer: Arc<TokenSigner>,
        ca: Vec<reqwest::Certificate>,
    ) -> Result<Self, RegistryError> {
        let mut base = url::Url::parse(base).map_err(|e| RegistryError::Malformed {
            path: String::new(),
            reason: format!(
                "registry.url `{}` is not a URL: {e}",
                crate::redact::registry_url(base)
            ),
        })?;
        if !base.username().is_empty() || base.password().is_some() {
            // reqwest would send them as Basic credentials next to our Bearer token (two
            // Authorization headers): the registry API takes tokens only.
            tracing::warn!(
                registry = %crate::redact::registry_url(base.as_str()),
                "registry.url carries credentials; they are not used (the registry takes signed tokens)"
            );
            let _ = base.set_password(None);
            let _ = base.set_username("");
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // A redirect could carry the token to another host; the API never redirects a
            // well-formed request, so a redirect is an answer, not a hop.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("registry-repair/", env!("CARGO_PKG_VERSION")))
            // Added to the system's roots (rustls-platform-verifier), not instead of them.
            .tls_certs_merge(ca)
            .build()
            .map_err(|e| RegistryError::Connect {
                path: String::new(),
                message: format!("building the HTTP client: {}", crate::errors::chain(&e)),
            })?;
        Ok(Self {
            http,
            base,
            page_size,
            max_body: max_body(page_size),
            timeout,
            max_pages,
            signer,
            metrics: Arc::default(),
            fence: Arc::default(),
        })
    }

    /// Whether the fence holds its requests back now.
    pub fn is_fenced(&self) -> bool {
        !self.fence.is_open()
    }

    /// The same client, its requests held behind `fence` (a fleet member's hold on its work).
    pub fn fenced_by(self, fence: Arc<Fence>) -> Self {
        Self { fence, ..self }
    }

    pub fn signer(&self) -> &TokenSigner {
        &self.signer
    }

    /// Requests by answer and duration, for `/metrics`.
    pub fn metrics(&self) -> Arc<RegistryMetrics> {
        self.metrics.clone()
    }

    /// `registry.url` followed by `segments`, each escaped as a path segment.
    fn api_url<'s>(&self, segments: impl IntoIterator<Item = &'s str>) -> url::Url {
        let mut url = self.base.clone();
        // Only non-hierarchical URLs (mailto:) lack segments; the config allows http(s) only.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// The List Sub Repositories URL for `path` (trailing slash included, as the API requires).
    pub fn list_url(&self, path: &str, last: Option<&str>) -> url::Url {
        let mut url = self.api_url(
            ["gitlab", "v1", "repository-paths"]
                .into_iter()
                .chain(path.split('/'))
                .chain(["repositories", "list", ""]),
        );
        url.query_pairs_mut()
            .append_pair("n", &self.page_size.to_string());
        if let Some(last) = last {
            url.query_pairs_mut().append_pair("last", last);
        }
        url
    }

    /// Fetches one page. Only the `last` value is taken from a `Link` header: the next request is
    /// always built against `registry.url`, so the token never goes anywhere else.
    pub async fn list_page(
        &self,
        path: &str,
        last: Option<&str>,
        token: &Token,
    ) -> Result<PageAnswer, RegistryError> {
        let url = self.list_url(path, last);
        let started = Instant::now();
        let answer = self
            .fence
            .guard(async {
                let response = self
                    .http
                    .get(url)
                    .header(AUTHORIZATION, format!("Bearer {}", token.bearer))
                    .send()
                    .await?;
                let status = response.status();
                // Read before the body consumes the response.
                let next = next_marker(response.headers());
                let body = read_bounded(response, self.max_body).await?;
                Ok::<_, reqwest::Error>((status, next, body))
            })
            .await
            .map_err(|_| RegistryError::Fenced {
                path: path.to_string(),
            })?;
        self.metrics.observe(
            answer.as_ref().ok().map(|(status, _, _)| status.as_u16()),
            started.elapsed(),
        );
        let (status, next, body) = answer.map_err(|e| self.transport_error(path, e))?;
        let malformed = |reason: String| RegistryError::Malformed {
            path: path.to_string(),
            reason,
        };
        let body = match body {
            Body::Read(body) => body,
            Body::TooLong { declared } => {
                return Err(malformed(format!(
                    "a {} body {}longer than the {} bytes a page of {} entries may take",
                    status.as_u16(),
                    declared.map_or(String::new(), |n| format!("of {n} bytes, ")),
                    self.max_body,
                    self.page_size
                )))
            }
        };
        if status == StatusCode::OK {
            let entries: Vec<Entry> = serde_json::from_slice(&body)
                .map_err(|e| malformed(format!("body is not a JSON array of repositories: {e}")))?;
            if entries.len() > self.page_size as usize {
                return Err(malformed(format!(
                    "{} entries on a page of at most {}",
                    entries.len(),
                    self.page_size
                )));
            }
            check_names(path, &entries)?;
            let next = next.map_err(malformed)?;
            return Ok(PageAnswer::Page { entries, next });
        }
        let code = serde_json::from_slice::<ErrorBody>(&body)
            .ok()
            .and_then(|b| b.errors.into_iter().next())
            .map(|e| e.code);
        if status == StatusCode::NOT_FOUND && code.as_deref() == Some("NAME_UNKNOWN") {
            return Ok(PageAnswer::NameUnknown);
        }
        Err(RegistryError::Status {
            path: path.to_string(),
            status: status.as_u16(),
            code,
        })
    }

    /// Signs `shared`'s token ahead of need, so that the first project of its batch does not wait
    /// for the signature (and the others behind it).
    pub async fn warm(&self, shared: &SharedToken) -> Result<(), RegistryError> {
        shared
            .get(&self.signer, |t| self.token_is_fresh(t))
            .await
            .map(|_| ())
            .map_err(RegistryError::from)
    }

    /// `GET /gitlab/v1/`: whether the registry offers GitLab's API. GitLab's own worker never ran
    /// unless this answered 200 or 401.
    pub async fn probe(&self) -> ApiProbe {
        let sent = self
            .fence
            .guard(self.http.get(self.api_url(["gitlab", "v1", ""])).send())
            .await;
        let response = match sent {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => {
                return ApiProbe::Unavailable(self.transport_error("/gitlab/v1/", error))
            }
            Err(_) => {
                return ApiProbe::Unavailable(RegistryError::Fenced {
                    path: "/gitlab/v1/".into(),
                })
            }
        };
        let status = response.status();
        match status.as_u16() {
            200 | 401 => ApiProbe::Available(status.as_u16()),
            code @ (429 | 500..=599) => ApiProbe::Unavailable(RegistryError::Status {
                path: "/gitlab/v1/".into(),
                status: code,
                code: None,
            }),
            code => ApiProbe::Absent {
                status: code,
                location: response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .map(shown_location),
            },
        }
    }

    /// `registry.url` as it may be shown.
    pub fn display_url(&self) -> String {
        crate::redact::registry_url(self.base.as_str())
    }

    fn transport_error(&self, path: &str, error: reqwest::Error) -> RegistryError {
        if error.is_timeout() {
            RegistryError::Timeout {
                path: path.to_string(),
                timeout: self.timeout,
            }
        } else if error.is_connect() {
            match refused_certificate(&error) {
                Some(reason) => RegistryError::UntrustedCertificate {
                    path: path.to_string(),
                    reason,
                },
                None => RegistryError::Connect {
                    path: path.to_string(),
                    message: crate::errors::chain(&error),
                },
            }
        } else {
            // Connected, but the answer broke off (reset, closed early, bad framing).
            RegistryError::Malformed {
                path: path.to_string(),
                reason: format!("broken answer: {}", crate::errors::chain(&error)),
            }
        }
    }

    fn token_is_fresh(&self, token: &Token) -> bool {
        let needed = SystemTime::now() + self.timeout + TOKEN_RENEW_MARGIN;
        token.expires_at > needed
    }
}

/// Every entry of a page of `path`'s listing names a repository path the registry's grammar
/// allows, those outside `path` too (they are ignored later, but a registry that lists them is
/// no more to be trusted). The first that does not ends the walk: the answer is hostile.
fn check_names(path: &str, entries: &[Entry]) -> Result<(), RegistryError> {
    match entries.iter().find(|e| !is_addressable(&e.path)) {
        None => Ok(()),
        Some(entry) => Err(RegistryError::HostileName {
            path: path.to_string(),
            entry: shown(&entry.path),
        }),
    }
}

/// rustls's reason when `error`'s causes hold a certificate it refused (unknown issuer, another
/// name, expired). A TLS error reaches reqwest inside an `io::Error`, whose `source()` skips the
/// error it wraps, so each one is opened.
fn refused_certificate(
    error: &(dyn std::error::Error + 'static),
) -> Option<rustls::CertificateError> {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(rustls::Error::InvalidCertificate(reason)) =
            error.downcast_ref::<rustls::Error>()
        {
            return Some(reason.clone());
        }
        if let Some(wrapped) = error
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if let Some(reason) = refused_certificate(wrapped) {
                return Some(reason);
            }
        }
        cause = error.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listed_path_that_breaks_the_grammar_fails_the_project_at_once_and_is_shown_escaped() {
        let fine = [
            Entry::at("g/p"),
            Entry::at("g/p/a_b/c-d"),
            Entry::at("g/other/x"),
        ];
        assert!(check_names("g/p", &fine).is_ok());
        assert!(check_names("g/p", &[]).is_ok());
        for (bad, shown_as) in [
            ("g/p/x <script> y", r#""g/p/x <script> y""#),
            ("g/p/x\nINFO forged", r#""g/p/x\nINFO forged""#),
            ("g/p/UPPER", r#""g/p/UPPER""#),
            ("g/p/trailing-", r#""g/p/trailing-""#),
            ("g/p//x", r#""g/p//x""#),
            ("", r#""""#),
            // Outside the project path: just as hostile.
            ("elsewhere/<b>", r#""elsewhere/<b>""#),
        ] {
            let entries = [
                Entry::at("g/p/a"),
                Entry::at(bad),
                Entry::at("g/p/also bad"),
            ];
            let error = check_names("g/p", &entries).expect_err(bad);
            let RegistryError::HostileName { path, entry } = &error else {
                panic!("{bad}: {error:?}");
            };
            assert_eq!(
                (path.as_str(), entry.as_str()),
                ("g/p", shown_as),
                "the first one"
            );
            assert!(!error.is_transient(), "no retry mends it");
            assert!(!error.is_outage());
            assert_eq!(error.blame(), Blame::Project);
            let message = error.to_string();
            assert!(message.starts_with("listing g/p: "), "{message}");
            assert!(message.contains(shown_as), "{message}");
            assert!(
                message.contains(
                    "name grammar (per `/`-separated segment [a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*, at most 255 bytes in all)"
                ),
                "{message}"
            );
            assert!(
                message.contains("nothing of this project was recorded"),
                "{message}"
            );
            assert!(!message.contains('\n'), "{message}");
        }
        let long = format!("g/p/{}", "a".repeat(MAX_PATH_BYTES));
        let error = check_names("g/p", &[Entry::at(&long)]).expect_err("too long");
        assert!(
            error
                .to_string()
                .contains(r#"aaa"… (259 bytes in all), which breaks"#),
            "{error}"
        );
        assert!(error.to_string().len() < 700, "{error}");
    }

    #[test]
    fn list_url_has_the_trailing_slash_and_escapes_nothing_it_should_not() {
        let signer = TokenSigner::from_pem(
            include_str!("../../../tests/fixtures/registry.key"),
            "fixture",
            "i",
            "a",
            Duration::from_secs(300),
        )
        .expect("key");
        let client = RegistryClient::new(
            "http://127.0.0.1:5000/",
            100,
            Duration::from_secs(1),
            10,
            Arc::new(signer),
        )
        .expect("client");
        assert_eq!(
            client.list_url("gitlab-org/build/cng", Some("gitlab-org/build/cng/a")).as_str(),
            "http://127.0.0.1:5000/gitlab/v1/repository-paths/gitlab-org/build/cng/repositories/list/?n=100&last=gitlab-org%2Fbuild%2Fcng%2Fa"
        );
    }
}
