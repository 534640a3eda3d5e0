-- Fencing, and what the fleet shares besides: who holds what, told apart across containers; what
-- each member does; one count of the work left per pass; the itemising of projects counted
-- without their repositories. Idempotent, like the earlier migrations.

-- A member's pid namespace (`/proc/self/ns/pid`): with the boot id, tells a process whose pid this
-- machine can look up from one in another container that shares the host name and pid numbers.
ALTER TABLE registry_repair_members ADD COLUMN IF NOT EXISTS pid_ns text NOT NULL DEFAULT '';
-- What it does: `analyse`, `repair plan` or `repair apply (run N)`. A repair's registry requests
-- count in the fleet's total too.
ALTER TABLE registry_repair_members ADD COLUMN IF NOT EXISTS work text NOT NULL DEFAULT 'analyse';

-- The repair lease's holder, as a fleet member is known: a holder of this machine whose process
-- is gone is taken over at once.
ALTER TABLE registry_repair_leases ADD COLUMN IF NOT EXISTS boot_id text NOT NULL DEFAULT '';
ALTER TABLE registry_repair_leases ADD COLUMN IF NOT EXISTS pid_ns text NOT NULL DEFAULT '';
ALTER TABLE registry_repair_leases ADD COLUMN IF NOT EXISTS process_started bigint NOT NULL DEFAULT 0;

-- The projects left when the pass began (above the watermark, without an answer), counted once
-- for the whole fleet by one member, with a statement timeout; `left_estimated` when the count
-- gave up and the table statistics stand in. `walked`: projects the pass's walk has read since.
ALTER TABLE registry_repair_passes ADD COLUMN IF NOT EXISTS left_at_start bigint;
ALTER TABLE registry_repair_passes ADD COLUMN IF NOT EXISTS left_estimated boolean NOT NULL DEFAULT false;
ALTER TABLE registry_repair_passes ADD COLUMN IF NOT EXISTS counting_since timestamp with time zone;
ALTER TABLE registry_repair_passes ADD COLUMN IF NOT EXISTS walked bigint NOT NULL DEFAULT 0;
-- A cursor over the projects counted without their repositories (recorded by a release before
-- they were kept): analysed again to itemise them.
ALTER TABLE registry_repair_passes ADD COLUMN IF NOT EXISTS itemise_after bigint;
ALTER TABLE registry_repair_passes ADD COLUMN IF NOT EXISTS itemise_through bigint;
