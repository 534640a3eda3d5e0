-- The repair's own bookkeeping (GitLab never reads these tables). Idempotent, like the earlier
-- migrations: running it twice, or where the tables exist, changes nothing.

-- One row per `repair apply` and per `repair undo RUN`. `repair plan` writes nothing, so it has
-- none. An apply's counts are the sums of its registry_repair_run_projects rows, each written in
-- the same transaction as its project's rows (so a run stopped by SIGKILL still shows exactly
-- what it did), and stored here when it finishes; an undo raises its counts per project.
CREATE TABLE IF NOT EXISTS registry_repair_runs (
    id bigserial PRIMARY KEY,
    kind text NOT NULL,
    started_at timestamp with time zone NOT NULL DEFAULT now(),
    -- NULL while running, or when the process was stopped before it ended.
    finished_at timestamp with time zone,
    -- The flags the run was given (`--project 1 --namespace g --limit 10 --include-older`).
    scope text NOT NULL DEFAULT '',
    include_older boolean NOT NULL DEFAULT false,
    -- apply: projects written, rows restored, repositories skipped and left for review.
    projects integer NOT NULL DEFAULT 0,
    restored integer NOT NULL DEFAULT 0,
    skipped integer NOT NULL DEFAULT 0,
    review integer NOT NULL DEFAULT 0,
    -- undo: rows deleted, and rows left because they changed since the apply.
    deleted integer NOT NULL DEFAULT 0,
    kept integer NOT NULL DEFAULT 0,
    -- undo: the apply run it undoes.
    undo_of bigint REFERENCES registry_repair_runs (id),
    CONSTRAINT registry_repair_runs_kind CHECK (kind IN ('apply', 'undo')),
    CONSTRAINT registry_repair_runs_undo_of CHECK ((kind = 'undo') = (undo_of IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS index_registry_repair_runs_on_undo_of
    ON registry_repair_runs (undo_of) WHERE undo_of IS NOT NULL;

-- One row per project an apply wrote, in the same transaction as its rows: a project is written
-- once per run (a retried batch skips the projects already here), and verify knows the run's
-- projects from it.
CREATE TABLE IF NOT EXISTS registry_repair_run_projects (
    run_id bigint NOT NULL REFERENCES registry_repair_runs (id),
    project_id bigint NOT NULL,
    -- The route when the run wrote the project (mixed case).
    full_path text NOT NULL,
    restored integer NOT NULL,
    -- Planned restores that had a row by the time of the write (Rails made it meanwhile).
    already_present integer NOT NULL,
    skipped integer NOT NULL,
    review integer NOT NULL,
    -- The tracking row's missing_count before and after (NULL: the project had no tracking row).
    missing_before integer,
    missing_after integer NOT NULL,
    applied_at timestamp with time zone NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, project_id)
);

-- One row per container_repositories row an apply inserted: what undo deletes (only while the
-- row is unchanged: same id, project and name, status still NULL) and verify checks. No foreign
-- key to GitLab's tables: the audit outlives a project GitLab deletes.
CREATE TABLE IF NOT EXISTS registry_repair_restored (
    run_id bigint NOT NULL REFERENCES registry_repair_runs (id),
    project_id bigint NOT NULL,
    -- container_repositories.id as inserted.
    repository_id bigint NOT NULL,
    name text NOT NULL,
    registry_path text NOT NULL,
    -- created_at as the registry listed it.
    registry_created_at timestamp with time zone,
    restored_at timestamp with time zone NOT NULL DEFAULT now(),
    -- Set by the undo run that deleted the row; NULL while the row is the repair's.
    undone_by bigint REFERENCES registry_repair_runs (id),
    undone_at timestamp with time zone,
    -- Undo and verify walk a run project by project.
    PRIMARY KEY (run_id, project_id, repository_id)
);
-- "What did the repair do to project X", across runs.
CREATE INDEX IF NOT EXISTS index_registry_repair_restored_on_project_id
    ON registry_repair_restored (project_id);

-- One row per repository an apply saw without a row and did not restore (skip or review), with
-- the guard's reason: the plan's record, and what verify does not report.
CREATE TABLE IF NOT EXISTS registry_repair_skipped (
    run_id bigint NOT NULL REFERENCES registry_repair_runs (id),
    project_id bigint NOT NULL,
    name text NOT NULL,
    registry_path text NOT NULL,
    action text NOT NULL,
    reason text NOT NULL,
    registry_created_at timestamp with time zone,
    PRIMARY KEY (run_id, project_id, name),
    CONSTRAINT registry_repair_skipped_action CHECK (action IN ('skip', 'review'))
);
