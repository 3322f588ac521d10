"""Where sql-to-redshift writes: the warehouse (``erp_raw``, its ledger, and ``erp``)."""

from indutech_sql_to_redshift.sinks.staging import (
    ArrowCopyStager,
    S3ManifestStager,
    Stager,
    Target,
    stager_for,
)
from indutech_sql_to_redshift.sinks.warehouse import Applied, WarehouseSink

__all__ = [
    "Applied",
    "ArrowCopyStager",
    "S3ManifestStager",
    "Stager",
    "Target",
    "WarehouseSink",
    "stager_for",
]
