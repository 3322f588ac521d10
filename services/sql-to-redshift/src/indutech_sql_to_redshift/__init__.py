"""sql-to-redshift: flow 5, the ERP backup in S3 into the warehouse (erp_raw, erp)."""
