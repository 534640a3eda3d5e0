-- The table may be GitLab's own (created by GitLab before this service ran): never drop it.
SELECT 1;
