//! The columns of GitLab's tables that the service reads, and its tracking table.
//! Written by hand: these are GitLab's tables, not ours to generate.

diesel::table! {
    projects (id) {
        id -> BigInt,
        namespace_id -> BigInt,
    }
}

diesel::table! {
    routes (id) {
        id -> BigInt,
        source_id -> BigInt,
        source_type -> VarChar,
        path -> VarChar,
    }
}

diesel::table! {
    container_repositories (id) {
        id -> BigInt,
        project_id -> BigInt,
        name -> VarChar,
    }
}

diesel::table! {
    container_registry_data_repair_details (project_id) {
        missing_count -> Nullable<Integer>,
        project_id -> BigInt,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        status -> SmallInt,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    projects,
    routes,
    container_repositories,
    container_registry_data_repair_details,
);
