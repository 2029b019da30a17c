/* workflows--0.2.sql: durable execution inside PostgreSQL */

\echo Use "CREATE EXTENSION workflows" to load this file. \quit
