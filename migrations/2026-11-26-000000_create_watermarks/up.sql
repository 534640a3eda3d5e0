-- The service's own bookkeeping (GitLab never reads it): per shard, an id below which every
-- project has a tracking row, so that a restart or a rescan starts there instead of at id 0.
CREATE TABLE IF NOT EXISTS registry_repair_watermarks (
    shard text PRIMARY KEY,
    analysed_through bigint NOT NULL,
    updated_at timestamp with time zone NOT NULL
);
