// @generated automatically by Diesel CLI.

diesel::table! {
    registry_repair_claims (id) {
        id -> Int8,
        shard -> Text,
        pass -> Int8,
        kind -> Text,
        after_id -> Int8,
        through_id -> Int8,
        owner -> Nullable<Text>,
        taken_from -> Nullable<Text>,
        claimed_at -> Timestamptz,
    }
}

diesel::table! {
    registry_repair_failures (project_id) {
        project_id -> Int8,
        cause -> Text,
        reason -> Text,
        failed_at -> Timestamptz,
    }
}

diesel::table! {
    registry_repair_fleet (id) {
        id -> Int4,
        max_concurrency -> Int4,
        enabled -> Bool,
        version -> Int8,
        updated_at -> Timestamptz,
        updated_by -> Text,
        set_by_command -> Bool,
    }
}

diesel::table! {
    registry_repair_leases (name) {
        name -> Text,
        run_id -> Nullable<Int8>,
        kind -> Text,
        host -> Text,
        pid -> Int4,
        acquired_at -> Timestamptz,
        expires_at -> Timestamptz,
        boot_id -> Text,
        pid_ns -> Text,
        process_started -> Int8,
    }
}

diesel::table! {
    registry_repair_members (id) {
        id -> Text,
        host -> Text,
        pid -> Int4,
        boot_id -> Text,
        process_started -> Int8,
        shard -> Text,
        started_at -> Timestamptz,
        heartbeat_at -> Timestamptz,
        share -> Int4,
        in_flight -> Int4,
        wants_work -> Bool,
        state -> Text,
        analysed -> Int8,
        pid_ns -> Text,
        work -> Text,
    }
}

diesel::table! {
    registry_repair_missing_repositories (project_id, registry_path) {
        project_id -> Int8,
        registry_path -> Text,
        name -> Text,
        registry_created_at -> Nullable<Timestamptz>,
        size_bytes -> Nullable<Int8>,
        recorded_at -> Timestamptz,
    }
}

diesel::table! {
    registry_repair_passes (shard) {
        shard -> Text,
        pass -> Int8,
        started_at -> Timestamptz,
        not_before -> Timestamptz,
        walk_after -> Int8,
        walk_done -> Bool,
        sweep_after -> Nullable<Int8>,
        sweep_through -> Nullable<Int8>,
        sweep_started_at -> Nullable<Timestamptz>,
        failed_after -> Nullable<Int8>,
        failed_through -> Nullable<Int8>,
        found -> Int8,
        last_found -> Nullable<Int8>,
        last_sweep_started_at -> Nullable<Timestamptz>,
        left_at_start -> Nullable<Int8>,
        left_estimated -> Bool,
        counting_since -> Nullable<Timestamptz>,
        walked -> Int8,
        itemise_after -> Nullable<Int8>,
        itemise_through -> Nullable<Int8>,
    }
}

diesel::table! {
    registry_repair_restored (run_id, project_id, repository_id) {
        run_id -> Int8,
        project_id -> Int8,
        repository_id -> Int8,
        name -> Text,
        registry_path -> Text,
        registry_created_at -> Nullable<Timestamptz>,
        restored_at -> Timestamptz,
        undone_by -> Nullable<Int8>,
        undone_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    registry_repair_run_projects (run_id, project_id) {
        run_id -> Int8,
        project_id -> Int8,
        full_path -> Text,
        restored -> Int4,
        already_present -> Int4,
        skipped -> Int4,
        review -> Int4,
        missing_before -> Nullable<Int4>,
        missing_after -> Int4,
        applied_at -> Timestamptz,
        outcome -> Text,
        path_at_write -> Nullable<Text>,
    }
}

diesel::table! {
    registry_repair_runs (id) {
        id -> Int8,
        kind -> Text,
        started_at -> Timestamptz,
        finished_at -> Nullable<Timestamptz>,
        scope -> Text,
        include_older -> Bool,
        projects -> Int4,
        restored -> Int4,
        skipped -> Int4,
        review -> Int4,
        deleted -> Int4,
        kept -> Int4,
        undo_of -> Nullable<Int8>,
        include_older_than_path -> Bool,
        include_cleanup_policy -> Bool,
        path_changed -> Int4,
    }
}

diesel::table! {
    registry_repair_skipped (run_id, project_id, name) {
        run_id -> Int8,
        project_id -> Int8,
        name -> Text,
        registry_path -> Text,
        action -> Text,
        reason -> Text,
        registry_created_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    registry_repair_watermarks (shard) {
        shard -> Text,
        analysed_through -> Int8,
        updated_at -> Timestamptz,
        swept_at -> Nullable<Timestamptz>,
    }
}

diesel::joinable!(registry_repair_run_projects -> registry_repair_runs (run_id));
diesel::joinable!(registry_repair_skipped -> registry_repair_runs (run_id));

diesel::allow_tables_to_appear_in_same_query!(
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
);
