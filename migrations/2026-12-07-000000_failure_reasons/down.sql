DROP TABLE IF EXISTS registry_repair_failures;
