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

// The repair's own tables (migrations 2026-11-28-000000_repair_runs and
// 2026-12-03-000000_repair_ownership; see `db::repair`).

diesel::table! {
    registry_repair_runs (id) {
        id -> BigInt,
        kind -> Text,
        started_at -> Timestamptz,
        finished_at -> Nullable<Timestamptz>,
        scope -> Text,
        include_older -> Bool,
        include_older_than_path -> Bool,
        include_cleanup_policy -> Bool,
        projects -> Integer,
        restored -> Integer,
        skipped -> Integer,
        review -> Integer,
        deleted -> Integer,
        kept -> Integer,
        undo_of -> Nullable<BigInt>,
        path_changed -> Integer,
    }
}

diesel::table! {
    registry_repair_restored (run_id, project_id, repository_id) {
        run_id -> BigInt,
        project_id -> BigInt,
        repository_id -> BigInt,
        name -> Text,
        registry_path -> Text,
        registry_created_at -> Nullable<Timestamptz>,
        restored_at -> Timestamptz,
        undone_by -> Nullable<BigInt>,
        undone_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    registry_repair_skipped (run_id, project_id, name) {
        run_id -> BigInt,
        project_id -> BigInt,
        name -> Text,
        registry_path -> Text,
        action -> Text,
        reason -> Text,
        registry_created_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    registry_repair_run_projects (run_id, project_id) {
        run_id -> BigInt,
        project_id -> BigInt,
        full_path -> Text,
        restored -> Integer,
        already_present -> Integer,
        skipped -> Integer,
        review -> Integer,
        missing_before -> Nullable<Integer>,
        missing_after -> Integer,
        applied_at -> Timestamptz,
        outcome -> Text,
        path_at_write -> Nullable<Text>,
    }
}

// The repair lease (migration 2026-12-04-000000_repair_lease; see `db::repair::lease`).

diesel::table! {
    registry_repair_leases (name) {
        name -> Text,
        run_id -> Nullable<BigInt>,
        kind -> Text,
        host -> Text,
        pid -> Integer,
        acquired_at -> Timestamptz,
        expires_at -> Timestamptz,
    }
}

// The repositories the analysis found missing (migration 2026-12-05-000000_missing_repositories;
// see `db::missing`): only what the walk over projects counted without them reads.

diesel::table! {
    registry_repair_missing_repositories (project_id, registry_path) {
        project_id -> BigInt,
        registry_path -> Text,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    container_registry_data_repair_details,
    registry_repair_missing_repositories,
);
