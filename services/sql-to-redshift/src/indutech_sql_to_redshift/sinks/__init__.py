"""Where sql-to-redshift writes: the warehouse (``erp_raw``, its ledger, and ``erp``)."""

from indutech_sql_to_redshift.sinks.warehouse import Applied, WarehouseSink

__all__ = ["Applied", "WarehouseSink"]
