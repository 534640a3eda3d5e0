//! List Sub Repositories: the handler, with the misbehaviours tests switch on, around [`page`],
//! the registry's paging as a pure function.

use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::atomic::Ordering;
use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use super::auth::authorize;
use super::details::created_at;
use super::state::{delay_from, error, without_api, Fault, InFlight, State};
use super::Hostile;
use crate::registry::token::pull_access;
use crate::sync::lock;

#[derive(Serialize)]
struct EntryOut<'a> {
    name: &'a str,
    path: &'a str,
    created_at: String,
    updated_at: String,
}

#[derive(Deserialize)]
pub(super) struct ListQuery {
    n: Option<String>,
    last: Option<String>,
}

pub(super) async fn list(
    req: HttpRequest,
    state: web::Data<State>,
    path: web::Path<String>,
    query: web::Query<ListQuery>,
) -> HttpResponse {
    let entered = Instant::now();
    if let Some(answer) = without_api(&req, &state) {
        return answer;
    }
    let path = path.into_inner();
    state.list_requests.fetch_add(1, Ordering::SeqCst);
    *lock(&state.per_path).entry(path.clone()).or_insert(0) += 1;
    let _in_flight = InFlight::enter(&state);
    delay_from(&state, entered).await;
    if state.outage.load(Ordering::SeqCst) {
        return error(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", "outage");
    }
    if let Some(refusal) = proxy_header_limit(&req, &state) {
        return refusal;
    }
    let fault = state.draw_fault();
    if let Some(Fault::Hang(pause)) = fault {
        // Longer than the client waits: it has given up by the time this answers.
        tokio::time::sleep(pause).await;
    }

    if let Err(message) = authorize(&req, &state, &pull_access(&path)) {
        state.unauthorized.fetch_add(1, Ordering::SeqCst);
        return error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", &message);
    }
    if let Some(status) = lock(&state.refused).get(&path).copied() {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return error(status, "UNKNOWN", "refused by the simulator");
    }
    match fault {
        Some(Fault::ServerError(status)) => {
            return error(status, "UNKNOWN", "simulated server error")
        }
        Some(Fault::Reset) => return broken_stream(),
        Some(Fault::Malformed(kind)) => return malformed(kind),
        Some(Fault::Hang(_)) | None => {}
    }
    let n = match query.n.as_deref() {
        None => 100,
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if (1..=1000).contains(&n) => n,
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "PAGINATION_NUMBER_INVALID",
                    "n must be an integer between 1 and 1000",
                )
            }
        },
    };
    let hostile = lock(&state.hostile).get(&path).copied();
    if let Some(Hostile::HugeBody { bytes, declared }) = hostile {
        return huge_body(bytes, declared);
    }

    let guard = match state.repositories.read() {
        Ok(repos) => repos,
        Err(poisoned) => poisoned.into_inner(),
    };
    // A name no registry could hold, listed as if it were one of the path's repositories.
    let with_ungrammatical = match hostile {
        Some(Hostile::UngrammaticalEntry(name)) => {
            let mut with = guard.clone();
            with.insert(format!("{path}/{name}"));
            Some(with)
        }
        _ => None,
    };
    let repos: &BTreeSet<String> = with_ungrammatical.as_ref().unwrap_or(&guard);
    let top_level = path.split('/').next().unwrap_or_default();
    let top_prefix = format!("{top_level}/");
    let namespace_known = repos
        .range::<str, _>((Bound::Included(top_prefix.as_str()), Bound::Unbounded))
        .next()
        .is_some_and(|p| p.starts_with(&top_prefix));
    if !namespace_known {
        return error(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            "repository name not known to registry",
        );
    }

    let Page {
        entries: mut page,
        mut next_last,
    } = self::page(repos, &path, n, query.last.as_deref());
    drop(with_ungrammatical);
    drop(guard);

    let foreign = if query.last.is_none() {
        lock(&state.foreign).get(&path).cloned().unwrap_or_default()
    } else {
        Vec::new()
    };
    let mut link_host = String::new();
    match hostile {
        Some(Hostile::OversizedPage) => {
            page.extend((0..=n).map(|i| format!("{path}/extra-{i:04}")));
        }
        Some(Hostile::EndlessPages) => {
            let last = query.last.clone().unwrap_or_else(|| path.clone());
            next_last = Some(format!("{last}~"));
        }
        Some(Hostile::LinkToOtherHost(port)) => link_host = format!("http://127.0.0.1:{port}"),
        Some(
            Hostile::LinkWithoutLast | Hostile::HugeBody { .. } | Hostile::UngrammaticalEntry(_),
        )
        | None => {}
    }
    if query.last.is_none() && next_last.is_some() && lock(&state.vanishing).remove(&path) {
        if let Ok(mut repos) = state.repositories.write() {
            repos.retain(|p| p != top_level && !p.starts_with(&top_prefix));
        }
    }
    let mut body: Vec<EntryOut<'_>> = page.iter().map(|p| entry(p.as_str())).collect();
    body.extend(foreign.iter().map(|p| entry(p.as_str())));

    let mut response = HttpResponse::Ok();
    if let Some(last) = next_last {
        let last = (hostile != Some(Hostile::LinkWithoutLast)).then_some(last.as_str());
        response.insert_header(("Link", next_link(&link_host, &path, n, last)));
    }
    response.json(body)
}

/// One page of a List answer.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Page {
    /// The repositories on it, in order.
    pub entries: Vec<String>,
    /// The `last` of the next page: the page's last entry when the page is full, so that a list
    /// that is an exact multiple of `n` long ends with an empty page, as the registry's does.
    pub next_last: Option<String>,
}

/// The registry's paging: up to `n` of the `repositories` that are `path` itself or under
/// `path/`, in byte order, after `last` (from the first when `None`).
pub(super) fn page(
    repositories: &BTreeSet<String>,
    path: &str,
    n: usize,
    last: Option<&str>,
) -> Page {
    let prefix = format!("{path}/");
    let start = match last {
        Some(last) => Bound::Excluded(last),
        None => Bound::Included(path),
    };
    // Every path under `{path}/` sorts below `{path}0` ('0' follows '/').
    let end = format!("{path}0");
    let past_the_end = last.is_some_and(|last| last >= end.as_str());
    let entries: Vec<String> = if past_the_end {
        Vec::new()
    } else {
        repositories
            .range::<str, _>((start, Bound::Excluded(end.as_str())))
            .filter(|p| *p == path || p.starts_with(&prefix))
            .take(n)
            .cloned()
            .collect()
    };
    let next_last = (entries.len() == n)
        .then(|| entries.last().cloned())
        .flatten();
    Page { entries, next_last }
}

/// The `Link` header that points at the page after `last` (`host` empty: a relative link, as the
/// registry sends; `last` `None`: a link without it, which a hostile registry sends).
pub(super) fn next_link(host: &str, path: &str, n: usize, last: Option<&str>) -> String {
    let mut next = url::form_urlencoded::Serializer::new(String::new());
    next.append_pair("n", &n.to_string());
    if let Some(last) = last {
        next.append_pair("last", last);
    }
    format!(
        "<{host}/gitlab/v1/repository-paths/{path}/repositories/list/?{}>; rel=\"next\"",
        next.finish()
    )
}

/// nginx's answer to a header line longer than one of its `large_client_header_buffers`.
fn proxy_header_limit(req: &HttpRequest, state: &State) -> Option<HttpResponse> {
    let limit = state.header_limit.load(Ordering::SeqCst);
    let too_long = limit > 0
        && req
            .headers()
            .iter()
            .any(|(name, value)| name.as_str().len() + 2 + value.len() > limit);
    if !too_long {
        return None;
    }
    state.headers_too_large.fetch_add(1, Ordering::SeqCst);
    Some(HttpResponse::BadRequest().content_type("text/html").body(
        "<html>\r\n<head><title>400 Request Header Or Cookie Too Large</title></head>\r\n\
                 <body>\r\n<center><h1>400 Bad Request</h1></center>\r\n\
                 <center>Request Header Or Cookie Too Large</center>\r\n\
                 <hr><center>nginx</center>\r\n</body>\r\n</html>\r\n",
    ))
}

/// A 200 whose body breaks off midway: the connection is cut as by a reset.
fn broken_stream() -> HttpResponse {
    let chunks: Vec<Result<web::Bytes, std::io::Error>> = vec![
        Ok(web::Bytes::from_static(b"[{\"name\":\"a\",\"pa")),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "simulated reset",
        )),
    ];
    HttpResponse::Ok()
        .content_type("application/json")
        .streaming(futures_util::stream::iter(chunks))
}

/// `[`, `bytes - 2` spaces, `]`, made as it is sent: a client that stops reading stops the making.
fn huge_body(bytes: u64, declared: bool) -> HttpResponse {
    static SPACES: [u8; 64 * 1024] = [b' '; 64 * 1024];
    let inner = bytes.saturating_sub(2);
    let chunk = SPACES.len() as u64;
    let spaces = (0..inner.div_ceil(chunk))
        .map(move |i| web::Bytes::from_static(&SPACES[..(inner - i * chunk).min(chunk) as usize]));
    let chunks = std::iter::once(web::Bytes::from_static(b"["))
        .chain(spaces)
        .chain(std::iter::once(web::Bytes::from_static(b"]")));
    let body = futures_util::stream::iter(chunks.map(Ok::<_, std::io::Error>));
    let mut response = HttpResponse::Ok();
    response.content_type("application/json");
    if declared {
        response.no_chunking(inner + 2);
    }
    response.streaming(body)
}

fn malformed(kind: u8) -> HttpResponse {
    let body: &'static str = match kind {
        0 => "[{\"name\": \"a\", \"path\": ",
        1 => "{\"repositories\": []}",
        _ => "[{\"name\": \"a\", \"created_at\": \"2024-01-01T00:00:00Z\"}]",
    };
    HttpResponse::Ok()
        .content_type("application/json")
        .body(body)
}

fn entry(path: &str) -> EntryOut<'_> {
    EntryOut {
        name: path.rsplit('/').next().unwrap_or(path),
        path,
        created_at: created_at(path),
        updated_at: created_at(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repositories(paths: &[&str]) -> BTreeSet<String> {
        paths.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn pages_hold_the_path_and_what_is_under_it_in_order_and_never_a_sibling() {
        let repos = repositories(&[
            "group/app",
            "group/app/api",
            "group/app/web",
            "group/app-other",
            "group/app-other/x",
            "group/app0",
            "group/apple",
            "group/ap",
        ]);
        assert_eq!(
            page(&repos, "group/app", 10, None),
            Page {
                entries: vec![
                    "group/app".into(),
                    "group/app/api".into(),
                    "group/app/web".into()
                ],
                next_last: None,
            }
        );
        assert_eq!(
            page(&repos, "group/none", 10, None).entries,
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_full_page_links_on_and_an_exact_multiple_ends_with_an_empty_page() {
        let repos = repositories(&["g/p", "g/p/a", "g/p/b", "g/p/c"]);
        let first = page(&repos, "g/p", 2, None);
        assert_eq!(first.entries, ["g/p", "g/p/a"]);
        assert_eq!(first.next_last.as_deref(), Some("g/p/a"));
        let second = page(&repos, "g/p", 2, first.next_last.as_deref());
        assert_eq!(second.entries, ["g/p/b", "g/p/c"]);
        assert_eq!(second.next_last.as_deref(), Some("g/p/c"));
        let third = page(&repos, "g/p", 2, second.next_last.as_deref());
        assert_eq!(
            third,
            Page {
                entries: vec![],
                next_last: None
            }
        );
        // A short page is the last; so is a `last` past everything under the path.
        assert_eq!(page(&repos, "g/p", 4, Some("g/p")).next_last, None);
        assert_eq!(
            page(&repos, "g/p", 3, Some("g/p0")).entries,
            Vec::<String>::new()
        );
        assert_eq!(
            page(&repos, "g/p", 3, Some("g/q")).entries,
            Vec::<String>::new()
        );
    }

    #[test]
    fn the_next_link_carries_n_and_last_encoded() {
        assert_eq!(
            next_link("", "g/p", 2, Some("g/p/a b")),
            "</gitlab/v1/repository-paths/g/p/repositories/list/?n=2&last=g%2Fp%2Fa+b>; rel=\"next\""
        );
        assert_eq!(
            next_link("http://127.0.0.1:9", "g/p", 5, None),
            "<http://127.0.0.1:9/gitlab/v1/repository-paths/g/p/repositories/list/?n=5>; rel=\"next\""
        );
    }
}
