//! The container registry: its API client, the tokens it trusts, and (feature `simulator`) a
//! simulated registry.

pub mod batch;
pub mod client;
pub mod grammar;
pub mod metrics;
pub mod names;
pub mod retry;
mod rs256;
#[cfg(feature = "simulator")]
pub mod simulator;
pub mod token;

pub use client::{Blame, ClientSetupError, Entry, NoGitlabApi, RegistryClient, RegistryError};
pub use metrics::RegistryMetrics;
pub use token::TokenSigner;
