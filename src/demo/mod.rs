//! The demo's data: a throwaway GitLab-shaped database ([`database`], also the tests' template)
//! and a GitLab-shaped world to seed it with ([`seed`]), with the key its simulated registry
//! trusts. The `demo` command itself is [`crate::commands::demo`].

pub mod database;
pub mod seed;

/// `demo --projects` unless given.
pub const DEMO_PROJECTS: u32 = 3000;
/// `demo --database` unless given.
pub const DEMO_DATABASE: &str = "registry_repair_demo";

/// A key made for the demo alone; it signs tokens only the demo's simulated registry trusts.
pub const DEMO_KEY: &str = include_str!("demo_registry.key");
