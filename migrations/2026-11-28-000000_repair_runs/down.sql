DROP TABLE IF EXISTS registry_repair_skipped;
DROP TABLE IF EXISTS registry_repair_restored;
DROP TABLE IF EXISTS registry_repair_run_projects;
DROP TABLE IF EXISTS registry_repair_runs;
