//! Repository details (`GET /gitlab/v1/repositories/<path>/`), as the registry's API document and
//! handler give them: `name`, `path`, `created_at`, and with `size=self` the repository's own
//! deduplicated `size_bytes`, with `size=self_with_descendants` the size of it and every
//! repository below. The token must grant `pull` on `<path>` exactly, and for
//! `self_with_descendants` also on the literal name `<path>/*`.
//!
//! Sizes and creation times are derived from the path ([`size_of`], [`created_at`]), so that a
//! test can compute exact sums. No layer is shared between the simulator's repositories, so the
//! size of a repository with its descendants is the plain sum of theirs.

use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::atomic::Ordering;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use super::auth::authorize;
use super::state::{delay, error, without_api, InFlight, State};
use crate::registry::token::{exact_pull_access, Access};
use crate::sync::lock;

/// The size the simulated registry gives `path` (a repository it holds): between 1 MiB and about
/// 2 GiB, fixed by the path.
pub fn size_of(path: &str) -> i64 {
    const MIB: u64 = 1024 * 1024;
    (MIB + fnv1a(path) % (2048 * MIB)) as i64
}

/// When the simulated registry says `path` was created: a day between July 2023 and May 2024
/// fixed by the path, with milliseconds, as the registry writes it. After the seeded projects
/// were created (2020) and before the moves the repair's tests make (mid-2024 and later).
pub fn created_at(path: &str) -> String {
    let hash = fnv1a(path) >> 17;
    let month = (hash % 11) as u32; // 0 = 2023-07
    let (year, month) = if month < 6 {
        (2023, month + 7)
    } else {
        (2024, month - 5)
    };
    let day = 1 + ((hash >> 8) % 28) as u32;
    let seconds = (hash >> 16) % 86_400;
    format!(
        "{year}-{month:02}-{day:02}T{:02}:{:02}:{:02}.000Z",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[derive(Deserialize)]
pub(super) struct DetailsQuery {
    size: Option<String>,
}

#[derive(Serialize)]
struct DetailsOut<'a> {
    name: &'a str,
    path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    size_bytes: Option<i64>,
    created_at: String,
}

pub(super) async fn details(
    req: HttpRequest,
    state: web::Data<State>,
    path: web::Path<String>,
    query: web::Query<DetailsQuery>,
) -> HttpResponse {
    if let Some(answer) = without_api(&req, &state) {
        return answer;
    }
    let path = path.into_inner();
    state.size_requests.fetch_add(1, Ordering::SeqCst);
    let _in_flight = InFlight::enter(&state);
    delay(&state).await;
    if state.outage.load(Ordering::SeqCst) {
        return error(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", "outage");
    }
    let with_descendants = match query.size.as_deref() {
        None => None,
        Some("self") => Some(false),
        Some("self_with_descendants") => Some(true),
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "INVALID_QUERY_PARAMETER_VALUE",
                "size must be self or self_with_descendants",
            )
        }
    };
    let mut needed: Vec<Access> = vec![exact_pull_access(&path)];
    if with_descendants == Some(true) {
        needed.push(exact_pull_access(&format!("{path}/*")));
    }
    if let Err(message) = authorize(&req, &state, &needed) {
        state.unauthorized.fetch_add(1, Ordering::SeqCst);
        return error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", &message);
    }
    if let Some(status) = lock(&state.size_refused).get(&path).copied() {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return error(status, "UNKNOWN", "size refused by the simulator");
    }
    let repos = match state.repositories.read() {
        Ok(repos) => repos,
        Err(poisoned) => poisoned.into_inner(),
    };
    if !repos.contains(&path) {
        return error(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            "repository name not known to registry",
        );
    }
    let size_bytes = match with_descendants {
        _ if !state.sizes_given.load(Ordering::SeqCst) => None,
        None => None,
        Some(false) => Some(size_of(&path)),
        Some(true) => Some(with_descendants_size(&repos, &path)),
    };
    HttpResponse::Ok().json(DetailsOut {
        name: path.rsplit('/').next().unwrap_or(&path),
        path: &path,
        size_bytes,
        created_at: created_at(&path),
    })
}

fn with_descendants_size(repositories: &BTreeSet<String>, path: &str) -> i64 {
    let prefix = format!("{path}/");
    // As the listing's paging: everything under `{path}/` sorts below `{path}0`.
    let end = format!("{path}0");
    repositories
        .range::<str, _>((Bound::Included(path), Bound::Excluded(end.as_str())))
        .filter(|p| *p == path || p.starts_with(&prefix))
        .map(|p| size_of(p))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_dates_are_fixed_by_the_path_and_within_their_bounds() {
        assert_eq!(size_of("g/p/web"), size_of("g/p/web"));
        assert_ne!(size_of("g/p/web"), size_of("g/p/api"));
        for i in 0..2000 {
            let path = format!("group-{i}/project/image-{}", i * 7);
            let size = size_of(&path);
            assert!(
                (1 << 20..(1 << 20) + (2048 << 20)).contains(&size),
                "{size}"
            );
            let at = created_at(&path);
            assert!(
                at.as_str() >= "2023-07-01" && at.as_str() < "2024-06-01",
                "{at}"
            );
            assert!(chrono::DateTime::parse_from_rfc3339(&at).is_ok(), "{at}");
        }
    }

    #[test]
    fn a_repository_with_its_descendants_sums_only_its_own_tree() {
        let repos: BTreeSet<String> = ["g/p", "g/p/a", "g/p/a/b", "g/p-x", "g/p0", "g/q"]
            .into_iter()
            .map(String::from)
            .collect();
        assert_eq!(
            with_descendants_size(&repos, "g/p"),
            size_of("g/p") + size_of("g/p/a") + size_of("g/p/a/b")
        );
    }
}
