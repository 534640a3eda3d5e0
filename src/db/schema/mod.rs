//! The tables the service names: GitLab's, declared by hand ([`gitlab`]), and the service's own,
//! written by `diesel print-schema` (diesel.toml names the file and the tables; [`service`]).
//! Regenerate the latter against a migrated database after adding a migration:
//! `diesel print-schema > src/db/schema/service.rs`.

mod gitlab;
mod service;

pub use gitlab::*;
pub use service::*;

/// Lets every GitLab table appear in one query with every table of the service's; each file
/// already allows its own tables together.
macro_rules! allow_across {
    ([$($gitlab:ident),+ $(,)?], $service:tt) => {
        $(allow_across!(@one $gitlab, $service);)+
    };
    (@one $gitlab:ident, [$($service:ident),+ $(,)?]) => {
        $(diesel::allow_tables_to_appear_in_same_query!($gitlab, $service);)+
    };
}

allow_across!(
    [
        namespaces,
        projects,
        routes,
        container_repositories,
        application_settings,
        features,
        feature_gates,
        project_features,
        container_expiration_policies,
        container_registry_data_repair_details,
    ],
    [
        registry_repair_claims,
        registry_repair_failures,
        registry_repair_fleet,
        registry_repair_leases,
        registry_repair_members,
        registry_repair_missing_repositories,
        registry_repair_passes,
        registry_repair_restored,
        registry_repair_run_projects,
        registry_repair_runs,
        registry_repair_skipped,
        registry_repair_watermarks,
    ]
);
