DROP INDEX IF EXISTS index_registry_repair_run_projects_on_project_id;
ALTER TABLE registry_repair_run_projects
    DROP CONSTRAINT IF EXISTS registry_repair_run_projects_outcome,
    DROP COLUMN IF EXISTS path_at_write,
    DROP COLUMN IF EXISTS outcome;
ALTER TABLE registry_repair_runs
    DROP COLUMN IF EXISTS path_changed,
    DROP COLUMN IF EXISTS include_cleanup_policy,
    DROP COLUMN IF EXISTS include_older_than_path;
