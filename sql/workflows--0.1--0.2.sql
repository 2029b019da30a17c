/* workflows--0.1--0.2.sql: update a database created with 0.1 to 0.2 */

\echo Use "ALTER EXTENSION workflows UPDATE" to load this file. \quit

/*
 * Each section says which change of 0.2 it carries; a fresh 0.2 install
 * (sql/install/) and a 0.1 database updated with this script end with the
 * same schema (test/t/011_upgrade.pl compares them).
 */

-- orderly stops are not crashes: attempts they cut short are counted apart
ALTER TABLE workflows.steps ADD COLUMN interrupted integer NOT NULL DEFAULT 0;
