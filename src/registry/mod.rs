//! The container registry: its API client, the tokens it trusts, and (feature `simulator`) a
//! simulated registry.

pub mod client;
pub mod grammar;
#[cfg(feature = "simulator")]
pub mod simulator;
pub mod token;

pub use client::{Blame, Entry, RegistryClient, RegistryError};
pub use token::TokenSigner;
