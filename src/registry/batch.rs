//! Dispatch batches: consecutive projects that share one registry token. Signing is the costliest
//! step of analysing a project without repositories, so a batch signs once, ahead of need, while
//! the projects before it run. The Scheduler only says which projects come next.

use std::sync::Arc;

use super::grammar::is_addressable;
use super::token::SharedToken;
use super::RegistryClient;

/// Projects that share one registry token at most (a token grants pull on each of their paths;
/// it is also bounded by its size).
pub const TOKEN_BATCH: usize = 16;

impl RegistryClient {
    /// The token each project of `paths` (registry paths in dispatch order; `None` for a project
    /// without a route) shares with its neighbours: one per consecutive run that fits a token (see
    /// [`TokenSigner::batch_lengths`](super::TokenSigner::batch_lengths)). A path the registry
    /// cannot hold is answered without a request, so it takes no room in its batch's token.
    pub fn share_tokens(&self, paths: Vec<Option<String>>) -> Vec<Arc<SharedToken>> {
        let paths: Vec<Option<String>> = paths
            .into_iter()
            .map(|path| path.filter(|p| is_addressable(p)))
            .collect();
        let lengths = {
            let refs: Vec<Option<&str>> = paths.iter().map(Option::as_deref).collect();
            self.signer().batch_lengths(&refs, TOKEN_BATCH)
        };
        let mut tokens = Vec::with_capacity(paths.len());
        let mut paths = paths.into_iter();
        for len in lengths {
            let token = Arc::new(SharedToken::new(
                paths.by_ref().take(len).flatten().collect(),
            ));
            tokens.extend(std::iter::repeat_n(token, len));
        }
        tokens
    }

    /// Signs `token` now, on the blocking pool, unless that was asked for already: the first
    /// project of its batch then does not wait for the signature (nor the others behind it).
    pub fn sign_ahead(&self, token: &Arc<SharedToken>) {
        if !token.start_warming() {
            return;
        }
        let (registry, token) = (self.clone(), token.clone());
        actix_rt::spawn(async move {
            if let Err(error) = registry.warm(&token).await {
                tracing::debug!(%error, "signing a batch token ahead failed; its projects will sign it");
            }
        });
    }
}
