-- The fleet: every running instance of `run` against this database, found through it. Nothing
-- here is GitLab's; the service's own bookkeeping, like registry_repair_watermarks.

-- One row per instance of `run` while it runs (and for a while after it died, for `status`).
-- `share` is the part of the fleet's concurrency it may use; the shares of the live members
-- never add up to more than the fleet's total (see src/fleet).
CREATE TABLE IF NOT EXISTS registry_repair_members (
    id text PRIMARY KEY,
    host text NOT NULL,
    pid integer NOT NULL,
    -- The kernel's boot id: with the host name, tells a process of this machine, whose pid can be
    -- checked, from one elsewhere.
    boot_id text NOT NULL DEFAULT '',
    -- When its process started, in clock ticks since boot (/proc/PID/stat): a pid reused, or
    -- the same pid in a restarted container, is another process.
    process_started bigint NOT NULL DEFAULT 0,
    shard text NOT NULL,
    started_at timestamp with time zone NOT NULL DEFAULT now(),
    heartbeat_at timestamp with time zone NOT NULL DEFAULT now(),
    share integer NOT NULL DEFAULT 0,
    in_flight integer NOT NULL DEFAULT 0,
    wants_work boolean NOT NULL DEFAULT true,
    state text NOT NULL DEFAULT 'starting',
    analysed bigint NOT NULL DEFAULT 0
);

-- The fleet's switches when the configuration steers (`control.source = "config"`): one row,
-- written by `registry-repair concurrency|pause|resume` sent to any member; `version` orders the
-- writes.
CREATE TABLE IF NOT EXISTS registry_repair_fleet (
    id integer PRIMARY KEY CHECK (id = 1),
    max_concurrency integer NOT NULL,
    enabled boolean NOT NULL,
    version bigint NOT NULL DEFAULT 1,
    updated_at timestamp with time zone NOT NULL DEFAULT now(),
    updated_by text NOT NULL
);

-- Per shard, the pass the fleet is in: the shared cursors of the walk above the watermark, of a
-- sweep below it and of a retry of failed projects, each handed out in claims.
CREATE TABLE IF NOT EXISTS registry_repair_passes (
    shard text PRIMARY KEY,
    pass bigint NOT NULL,
    started_at timestamp with time zone NOT NULL DEFAULT now(),
    not_before timestamp with time zone NOT NULL DEFAULT now(),
    walk_after bigint NOT NULL,
    walk_done boolean NOT NULL DEFAULT false,
    sweep_after bigint,
    sweep_through bigint,
    sweep_started_at timestamp with time zone,
    failed_after bigint,
    failed_through bigint,
    found bigint NOT NULL DEFAULT 0,
    last_found bigint,
    last_sweep_started_at timestamp with time zone
);

-- What each member works on: a span of ids of one pass's walk, sweep or retry. Its owner answers
-- for every project of the span without an answer; an owner that stops heartbeating loses it to
-- the next member that reads.
CREATE TABLE IF NOT EXISTS registry_repair_claims (
    id bigserial PRIMARY KEY,
    shard text NOT NULL,
    pass bigint NOT NULL,
    kind text NOT NULL,
    after_id bigint NOT NULL,
    through_id bigint NOT NULL,
    owner text,
    taken_from text,
    claimed_at timestamp with time zone NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS registry_repair_claims_shard_pass ON registry_repair_claims (shard, pass);
CREATE INDEX IF NOT EXISTS registry_repair_claims_owner ON registry_repair_claims (owner);
