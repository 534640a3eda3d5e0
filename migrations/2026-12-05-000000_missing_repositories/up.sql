-- The repositories the analysis found missing: one row per repository the registry holds under a
-- project's path with no `container_repositories` row. Written in the same transaction as the
-- project's tracking row, and replaced with it; a project recorded `failed` has none. GitLab's
-- tracking table stays as GitLab defines it: this table is the service's own.
--
-- No foreign key to `projects`: creating one would lock GitLab's busiest table while `migrate`
-- runs, and would add a check to every project deletion. A deleted project's entries stop
-- counting anyway: they are read through its tracking row, which GitLab's own foreign key
-- deletes with the project; a project restored with its old id is analysed again, which replaces
-- them.
CREATE TABLE IF NOT EXISTS registry_repair_missing_repositories (
    project_id bigint NOT NULL,
    -- The registry's path, as it lists it (lower case).
    registry_path text NOT NULL,
    -- `container_repositories.name` the repository would have: the path below the project's.
    name text NOT NULL,
    -- The registry's `created_at`, when it gave one.
    registry_created_at timestamp with time zone,
    -- The registry's deduplicated size of the repository alone (`size=self`); NULL when unknown:
    -- not asked (`analysis.sizes = false`) or not answered.
    size_bytes bigint,
    recorded_at timestamp with time zone NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, registry_path)
);

-- The report's "by month created".
CREATE INDEX IF NOT EXISTS index_registry_repair_missing_repositories_on_created
    ON registry_repair_missing_repositories (registry_created_at);
