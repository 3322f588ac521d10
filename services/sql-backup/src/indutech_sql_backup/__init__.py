"""sql-backup (flow 4): the ERP database to S3 as Parquet, full + nightly delta, restorable."""
