-- GitLab's own DDL for the tracking table (db/structure.sql, 15.10 to 19.0), made idempotent so the
-- migration also succeeds where GitLab already created the table, and changes nothing there.
CREATE TABLE IF NOT EXISTS container_registry_data_repair_details (
    missing_count integer DEFAULT 0,
    project_id bigint NOT NULL PRIMARY KEY REFERENCES projects(id) ON DELETE CASCADE,
    created_at timestamp with time zone NOT NULL,
    updated_at timestamp with time zone NOT NULL,
    status smallint DEFAULT 0 NOT NULL
);

CREATE INDEX IF NOT EXISTS index_container_registry_data_repair_details_on_status
    ON container_registry_data_repair_details USING btree (status);
