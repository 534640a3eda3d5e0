-- The fleet's switches as a control command set them (`pause`, `resume`, `concurrency N`) outlive
-- the members: a fleet paused for maintenance stays paused across restarts, until a command says
-- otherwise. Switches the configuration wrote (the first member of a fleet) give way to the next
-- first member's configuration. Idempotent, like the earlier migrations.
ALTER TABLE registry_repair_fleet ADD COLUMN IF NOT EXISTS set_by_command boolean NOT NULL DEFAULT false;
