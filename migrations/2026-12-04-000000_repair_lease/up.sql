-- One repair at a time: the lease `repair apply` and `repair undo` hold while they write. A row,
-- not a session-level advisory lock, so that it works through PgBouncer in transaction pooling
-- mode (where a session is not the client's). Idempotent, like the earlier migrations.
--
-- One row per lease name (`repair`). A holder renews `expires_at` while it runs and deletes the
-- row when it ends; a row whose `expires_at` has passed (its process died) may be taken over.
-- Times are the database's (`now()`), never a host's.
CREATE TABLE IF NOT EXISTS registry_repair_leases (
    name text PRIMARY KEY,
    -- The holder's run (registry_repair_runs.id); NULL until its run row exists.
    run_id bigint,
    -- `apply` or `undo`.
    kind text NOT NULL,
    host text NOT NULL,
    pid integer NOT NULL,
    acquired_at timestamp with time zone NOT NULL DEFAULT now(),
    expires_at timestamp with time zone NOT NULL
);
