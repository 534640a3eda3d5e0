//! GitLab's tables, as far as the service reads or writes them. Declared by hand, from GitLab's
//! `db/structure.sql`: they are GitLab's, not ours to generate, and only columns that every GitLab
//! release the service supports has are named here (GitLab adds and drops others).

diesel::table! {
    namespaces (id) {
        id -> Int8,
        name -> Varchar,
        path -> Varchar,
        #[sql_name = "type"]
        type_ -> Varchar,
        parent_id -> Nullable<Int8>,
        traversal_ids -> Array<Nullable<Int8>>,
        created_at -> Nullable<Timestamp>,
        updated_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    projects (id) {
        id -> Int8,
        name -> Nullable<Varchar>,
        path -> Nullable<Varchar>,
        created_at -> Nullable<Timestamp>,
        namespace_id -> Int8,
        pending_delete -> Nullable<Bool>,
        updated_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    routes (id) {
        id -> Int8,
        source_id -> Int8,
        source_type -> Varchar,
        path -> Varchar,
        name -> Nullable<Varchar>,
        created_at -> Nullable<Timestamp>,
        updated_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    container_repositories (id) {
        id -> Int8,
        project_id -> Int8,
        name -> Varchar,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        status -> Nullable<Int2>,
    }
}

diesel::table! {
    application_settings (id) {
        id -> Int8,
        container_registry_data_repair_detail_worker_max_concurrency -> Int4,
    }
}

diesel::table! {
    features (id) {
        id -> Int8,
        key -> Varchar,
    }
}

diesel::table! {
    feature_gates (id) {
        id -> Int8,
        feature_key -> Varchar,
        key -> Varchar,
        value -> Nullable<Varchar>,
    }
}

diesel::table! {
    project_features (id) {
        id -> Int8,
        project_id -> Int8,
        container_registry_access_level -> Int4,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    container_expiration_policies (project_id) {
        project_id -> Int8,
        enabled -> Bool,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

// GitLab's tracking table: GitLab's migration creates it, and so does the service's first
// migration where GitLab's has not run.
diesel::table! {
    container_registry_data_repair_details (project_id) {
        missing_count -> Nullable<Int4>,
        project_id -> Int8,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        status -> Int2,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
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
);
