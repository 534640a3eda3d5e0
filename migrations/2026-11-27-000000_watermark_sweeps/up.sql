-- When this shard last finished a sweep: a walk from id 0 that finds projects without an answer
-- below the watermark (tracking rows deleted by hand, project rows restored with their old id,
-- projects whose transaction committed after the walk went past them).
ALTER TABLE registry_repair_watermarks ADD COLUMN IF NOT EXISTS swept_at timestamp with time zone;
