ALTER TABLE registry_repair_watermarks DROP COLUMN IF EXISTS swept_at;
