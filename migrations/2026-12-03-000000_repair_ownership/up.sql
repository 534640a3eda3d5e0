-- What the repair's ownership guards add to its bookkeeping. Idempotent, like the earlier
-- migrations: running it twice, or where the columns exist, changes nothing.

-- The review reasons an apply was allowed to restore (`--include-older-than-path`,
-- `--include-cleanup-policy`; `include_older` is `--include-older`), and how many of its projects
-- were not written because their path changed between the listing and the write.
ALTER TABLE registry_repair_runs
    ADD COLUMN IF NOT EXISTS include_older_than_path boolean NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS include_cleanup_policy boolean NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS path_changed integer NOT NULL DEFAULT 0;

-- `written`: the project's plan was written. `path_changed`: its route was not the path the run
-- listed, so nothing was written for it (its tracking row neither) and `path_at_write` holds the
-- route found then (NULL: no route). `repair verify` reports such a project until a later apply
-- writes it.
ALTER TABLE registry_repair_run_projects
    ADD COLUMN IF NOT EXISTS outcome text NOT NULL DEFAULT 'written',
    ADD COLUMN IF NOT EXISTS path_at_write text;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conname = 'registry_repair_run_projects_outcome') THEN
        ALTER TABLE registry_repair_run_projects ADD CONSTRAINT registry_repair_run_projects_outcome
            CHECK (outcome IN ('written', 'path_changed'));
    END IF;
END $$;

-- "Did a later run write this project": verify asks it of a project whose path changed.
CREATE INDEX IF NOT EXISTS index_registry_repair_run_projects_on_project_id
    ON registry_repair_run_projects (project_id);
