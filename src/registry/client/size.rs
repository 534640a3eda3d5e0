//! A repository's size: `GET /gitlab/v1/repositories/<path>/?size=self`, the call GitLab's own
//! UI makes. The registry answers the deduplicated size of the repository alone (the unique
//! layers its tagged manifests reference), with a token granting `pull` on that exact name.

use std::time::Instant;

use reqwest::header::AUTHORIZATION;
use reqwest::StatusCode;
use serde::Deserialize;

use super::answer::{read_bounded, Body};
use super::{ErrorBody, RegistryClient, RegistryError};
use crate::registry::retry;
use crate::registry::token::{sign_exact, Token};

/// After this many size requests of one project in a row failed for unclear reasons (5xx,
/// timeouts after their retries), its remaining sizes are not asked: a registry that cannot size
/// that project's repositories would otherwise hold a slot for each of them.
const MAX_UNCLEAR_IN_A_ROW: u32 = 3;

/// The most a repository's details may take: a handful of fields.
const MAX_DETAILS_BODY: usize = 64 * 1024;

/// What the registry said of a repository's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    Bytes(i64),
    /// It answered without `size_bytes` (a registry too old to compute it).
    NotGiven,
    /// 404 NAME_UNKNOWN: the repository is gone since it was listed.
    Gone,
}

/// The sizes of one project's missing repositories.
#[derive(Debug)]
pub struct Sizes {
    /// In the order asked; `None` where the registry gave none.
    pub sizes: Vec<Option<i64>>,
    /// Of those, the ones that failed for unclear reasons (5xx, timeouts, broken answers after
    /// the retries): the registry's trouble as a whole, unless it serves other paths meanwhile.
    pub unclear: u32,
    /// The last of those failures.
    pub last_unclear: Option<RegistryError>,
}

#[derive(Deserialize)]
struct Details {
    size_bytes: Option<i64>,
}

impl RegistryClient {
    /// The repository details URL for `path`, asking for its own size.
    pub fn size_url(&self, path: &str) -> url::Url {
        let mut url = self.api_url(
            ["gitlab", "v1", "repositories"]
                .into_iter()
                .chain(path.split('/'))
                .chain([""]),
        );
        url.query_pairs_mut().append_pair("size", "self");
        url
    }

    /// Asks `path`'s own size once, with `token` (which must name `path` exactly).
    pub async fn repository_size(&self, path: &str, token: &Token) -> Result<Size, RegistryError> {
        let started = Instant::now();
        let answer = self
            .fence
            .guard(async {
                let response = self
                    .http
                    .get(self.size_url(path))
                    .header(AUTHORIZATION, format!("Bearer {}", token.bearer))
                    .send()
                    .await?;
                let status = response.status();
                let body = read_bounded(response, MAX_DETAILS_BODY).await?;
                Ok::<_, reqwest::Error>((status, body))
            })
            .await
            .map_err(|_| RegistryError::Fenced {
                path: path.to_string(),
            })?;
        self.metrics.observe(
            answer.as_ref().ok().map(|(status, _)| status.as_u16()),
            started.elapsed(),
        );
        let (status, body) = answer.map_err(|e| self.transport_error(path, e))?;
        let malformed = |reason: String| RegistryError::Malformed {
            path: path.to_string(),
            reason,
        };
        let Body::Read(body) = body else {
            return Err(malformed(format!(
                "repository details longer than {MAX_DETAILS_BODY} bytes"
            )));
        };
        if status == StatusCode::OK {
            let details: Details = serde_json::from_slice(&body)
                .map_err(|e| malformed(format!("body is not a repository's details: {e}")))?;
            return Ok(match details.size_bytes {
                Some(bytes) if bytes >= 0 => Size::Bytes(bytes),
                Some(bytes) => return Err(malformed(format!("a size of {bytes} bytes"))),
                None => Size::NotGiven,
            });
        }
        let code = serde_json::from_slice::<ErrorBody>(&body)
            .ok()
            .and_then(|b| b.errors.into_iter().next())
            .map(|e| e.code);
        if status == StatusCode::NOT_FOUND && code.as_deref() == Some("NAME_UNKNOWN") {
            return Ok(Size::Gone);
        }
        Err(RegistryError::Status {
            path: path.to_string(),
            status: status.as_u16(),
            code,
        })
    }

    /// The size of each of `repositories` (one project's missing repositories), in order, with
    /// tokens naming them exactly, as few as the token size bound allows. A size the registry
    /// cannot give is `None` (logged); an `Err` is the registry out of reach (it cannot be
    /// connected to, or no token can be signed), when the project is better analysed again later.
    pub async fn sizes(&self, repositories: &[String]) -> Result<Sizes, RegistryError> {
        let mut sizes = Vec::with_capacity(repositories.len());
        let (mut unclear_in_a_row, mut unclear, mut last_unclear) = (0, 0, None);
        let mut rest = repositories;
        for len in self.signer.exact_batch_lengths(repositories) {
            let (group, after) = rest.split_at(len.min(rest.len()));
            rest = after;
            if unclear_in_a_row >= MAX_UNCLEAR_IN_A_ROW {
                sizes.extend(group.iter().map(|_| None));
                continue;
            }
            let mut token = sign_exact(&self.signer, group.to_vec()).await?;
            for path in group {
                if unclear_in_a_row >= MAX_UNCLEAR_IN_A_ROW {
                    sizes.push(None);
                    continue;
                }
                if !self.token_is_fresh(&token) {
                    token = sign_exact(&self.signer, group.to_vec()).await?;
                }
                let size = match self.repository_size_retrying(path, &token).await {
                    Ok(Size::Bytes(bytes)) => Some(bytes),
                    Ok(Size::NotGiven) => {
                        tracing::info!(repository = %path, "the registry gave no size for the repository (a registry older than size=self)");
                        None
                    }
                    Ok(Size::Gone) => {
                        tracing::info!(repository = %path, "the repository is gone since it was listed; its size is unknown");
                        None
                    }
                    Err(error) if error.is_outage() => return Err(error),
                    Err(error) => {
                        tracing::warn!(repository = %path, %error, "the registry did not give the repository's size");
                        if error.blame() == super::Blame::Unclear {
                            unclear_in_a_row += 1;
                            unclear += 1;
                            last_unclear = Some(error);
                        }
                        None
                    }
                };
                if size.is_some() {
                    unclear_in_a_row = 0;
                }
                sizes.push(size);
            }
        }
        if unclear_in_a_row >= MAX_UNCLEAR_IN_A_ROW {
            tracing::warn!(
                first = repositories.first().map(String::as_str).unwrap_or_default(),
                unknown = sizes.iter().filter(|s| s.is_none()).count(),
                "the registry failed {MAX_UNCLEAR_IN_A_ROW} size requests in a row; the project's other sizes were not asked"
            );
        }
        Ok(Sizes {
            sizes,
            unclear,
            last_unclear,
        })
    }

    /// [`repository_size`](Self::repository_size), tried again on transient errors as every
    /// registry request is ([`retry`]).
    pub async fn repository_size_retrying(
        &self,
        path: &str,
        token: &Token,
    ) -> Result<Size, RegistryError> {
        let mut attempt = 0;
        loop {
            match self.repository_size(path, token).await {
                Err(error) => match retry::again(&error, attempt) {
                    Some(pause) => {
                        tokio::time::sleep(pause).await;
                        attempt += 1;
                    }
                    None => return Err(error),
                },
                answer => return answer,
            }
        }
    }
}
