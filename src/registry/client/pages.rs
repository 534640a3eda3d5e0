//! The walk over one project's pages: follows `Link` markers to the end with a token that never
//! expires mid-project, starts over when the path vanishes mid-walk, and falls back to a token of
//! its own when a proxy refuses a shared one as too long.

use std::sync::Arc;

use super::{Entry, PageAnswer, RegistryClient, RegistryError};
use crate::registry::grammar::{is_addressable, shown};
use crate::registry::retry;
use crate::registry::token::{sign, SharedToken, Token};

impl RegistryClient {
    /// Starts walking the pages of `path`, with a token of its own.
    pub fn pages(&self, path: &str) -> Pages<'_> {
        self.pages_sharing(path, None)
    }

    /// Every entry the registry lists under `path` (every page; a walk the registry restarts
    /// starts the list again), each request tried again on transient errors. A path the
    /// registry's grammar cannot hold has no entries and is not asked. `shared`: the token the
    /// project shares with its dispatch batch, if any.
    pub async fn list_all(
        &self,
        path: &str,
        shared: Option<Arc<SharedToken>>,
    ) -> Result<Vec<Entry>, RegistryError> {
        if !is_addressable(path) {
            return Ok(Vec::new());
        }
        let mut pages = self.pages_sharing(path, shared);
        let mut entries = Vec::new();
        loop {
            match pages.next_page_retrying().await? {
                PageStep::Page(page) => entries.extend(page),
                PageStep::Restarted => entries.clear(),
                PageStep::Done => return Ok(entries),
            }
        }
    }

    /// Starts walking the pages of `path`, with `shared`'s token when it covers the path.
    pub fn pages_sharing(&self, path: &str, shared: Option<Arc<SharedToken>>) -> Pages<'_> {
        Pages {
            client: self,
            path: path.to_string(),
            shared: shared.filter(|s| s.covers(path) && !s.is_refused()),
            token: None,
            last: None,
            read: 0,
            fetched: 0,
            restarts: 0,
            done: false,
        }
    }
}

/// How often a walk may start over because its path vanished mid-walk before it counts as trouble.
const MAX_RESTARTS: u32 = 3;

/// One step of a walk over a project's pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageStep {
    /// The next page's entries.
    Page(Vec<Entry>),
    /// The path vanished after the first page (404 NAME_UNKNOWN: renamed or deleted mid-walk).
    /// Everything read so far is void; the walk starts again from the first page.
    Restarted,
    /// Every page has been read.
    Done,
}

impl PageStep {
    /// The entries of a page; `None` for the other steps.
    pub fn into_entries(self) -> Option<Vec<Entry>> {
        match self {
            PageStep::Page(entries) => Some(entries),
            PageStep::Restarted | PageStep::Done => None,
        }
    }
}

/// The walk over one project's pages.
pub struct Pages<'a> {
    client: &'a RegistryClient,
    path: String,
    shared: Option<Arc<SharedToken>>,
    token: Option<Token>,
    last: Option<String>,
    /// Pages read in this walk since its last restart.
    read: u32,
    fetched: u32,
    restarts: u32,
    done: bool,
}

impl Pages<'_> {
    /// The next step of the walk, tried again on transient errors (see
    /// [`retry`](crate::registry::retry)). A failed try leaves the walk where it was.
    pub async fn next_page_retrying(&mut self) -> Result<PageStep, RegistryError> {
        let mut attempt = 0;
        loop {
            match self.next_page().await {
                Err(error) => match retry::again(&error, attempt) {
                    Some(pause) => {
                        tracing::debug!(%error, attempt, ?pause, "registry request failed; retrying");
                        tokio::time::sleep(pause).await;
                        attempt += 1;
                    }
                    None => return Err(error),
                },
                step => return step,
            }
        }
    }

    /// The next step of the walk.
    pub async fn next_page(&mut self) -> Result<PageStep, RegistryError> {
        if self.done {
            return Ok(PageStep::Done);
        }
        if self.fetched >= self.client.max_pages {
            return Err(RegistryError::TooManyPages {
                path: self.path.clone(),
                max_pages: self.client.max_pages,
            });
        }
        let token = self.token().await?;
        let sent = token.bearer.len();
        let answer = self
            .client
            .list_page(&self.path, self.last.as_deref(), &token)
            .await;
        self.token = Some(token);
        let answer = match answer {
            // A proxy in front of the registry (nginx: 8 KiB per header line by default) refuses a
            // header it finds too long with 400 or 431. A token shared by several projects grows
            // with their paths; one for this project alone is as short as a token gets.
            Err(RegistryError::Status {
                status: 400 | 431, ..
            }) if self.shared.as_ref().is_some_and(|s| s.paths() > 1) => {
                let refused = sent;
                tracing::info!(path = %self.path, token_bytes = refused, "the registry refused a request with a shared token; retrying with a token for this project alone");
                if let Some(bound) = self.client.signer.refused(refused) {
                    tracing::warn!(token_bytes = refused, bound, "a proxy in front of the registry seems to refuse long Authorization headers; tokens are kept shorter from now on");
                }
                if let Some(shared) = self.shared.take() {
                    shared.mark_refused();
                }
                self.token = None;
                let token = self.token().await?;
                let answer = self
                    .client
                    .list_page(&self.path, self.last.as_deref(), &token)
                    .await;
                self.token = Some(token);
                answer
            }
            other => other,
        };
        let answer = answer?;
        self.fetched += 1;
        match answer {
            PageAnswer::NameUnknown if self.read == 0 => {
                self.done = true;
                Ok(PageStep::Done)
            }
            PageAnswer::NameUnknown => {
                // The path was there a page ago: the earlier pages' count would be a partial one.
                self.restarts += 1;
                if self.restarts > MAX_RESTARTS {
                    return Err(RegistryError::Malformed {
                        path: self.path.clone(),
                        reason: format!(
                            "the path vanished mid-walk {} times (404 NAME_UNKNOWN after the first page)",
                            self.restarts
                        ),
                    });
                }
                self.last = None;
                self.read = 0;
                Ok(PageStep::Restarted)
            }
            PageAnswer::Page { entries, next } => {
                self.read += 1;
                match next {
                    Some(next) => {
                        // A marker that does not move forward would loop for ever.
                        if self
                            .last
                            .as_deref()
                            .is_some_and(|last| next.as_str() <= last)
                        {
                            return Err(RegistryError::Malformed {
                                path: self.path.clone(),
                                reason: format!("next marker {} does not advance", shown(&next)),
                            });
                        }
                        self.last = Some(next);
                    }
                    None => self.done = true,
                }
                Ok(PageStep::Page(entries))
            }
        }
    }

    /// The token for the next request: the one in hand while fresh, else the shared one, else
    /// one for this path alone.
    async fn token(&mut self) -> Result<Token, RegistryError> {
        Ok(match (self.token.take(), &self.shared) {
            (Some(token), _) if self.client.token_is_fresh(&token) => token,
            (_, Some(shared)) => {
                shared
                    .get(&self.client.signer, |t| self.client.token_is_fresh(t))
                    .await?
            }
            (_, None) => sign(&self.client.signer, vec![self.path.clone()]).await?,
        })
    }

    pub fn pages_fetched(&self) -> u32 {
        self.fetched
    }
}
