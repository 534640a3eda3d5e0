ALTER TABLE registry_repair_fleet DROP COLUMN IF EXISTS set_by_command;
