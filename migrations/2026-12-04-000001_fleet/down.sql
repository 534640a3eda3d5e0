DROP TABLE IF EXISTS registry_repair_claims;
DROP TABLE IF EXISTS registry_repair_passes;
DROP TABLE IF EXISTS registry_repair_fleet;
DROP TABLE IF EXISTS registry_repair_members;
