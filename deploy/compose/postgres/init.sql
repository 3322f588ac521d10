-- Run once by the postgres image on a new volume, as POSTGRES_USER (indutech), in
-- POSTGRES_DB (warehouse): the same databases and schemas as the native stack's
-- pg_bootstrap (deploy/local/components/postgres.sh). `erp` stands in for SQL Server.
CREATE SCHEMA IF NOT EXISTS rt;
CREATE SCHEMA IF NOT EXISTS erp_raw;
CREATE SCHEMA IF NOT EXISTS erp;
CREATE DATABASE erp;
