-- Why a project's analysis failed: one row per project whose tracking row this service recorded
-- `failed`, written in the same transaction as that row and replaced with it (a retry that
-- completes deletes it). GitLab's tracking table stays as GitLab defines it: this table is the
-- service's own. A `failed` row without one here is GitLab's own worker's, or an earlier
-- release's: its reason was not recorded. Idempotent, like the earlier migrations.
--
-- No foreign key to `projects`, for the reasons given for registry_repair_missing_repositories:
-- it would lock GitLab's busiest table while `migrate` runs; a deleted project's row stops
-- counting anyway, since it is read through the tracking row GitLab deletes with the project.
CREATE TABLE IF NOT EXISTS registry_repair_failures (
    project_id bigint PRIMARY KEY,
    -- A short stable word per kind of failure (`no_route`, `too_many_pages`, ...; docs/operations.md).
    cause text NOT NULL,
    -- The message logged when the project failed (cut to a bound; never raw registry bytes).
    reason text NOT NULL,
    failed_at timestamp with time zone NOT NULL DEFAULT now()
);
