"""Where sql-backup writes: Parquet parts, part records, plans and manifests in S3.

The objects and their keys are a contract (``indutech_common.schemas.sql_backup``).
"""

from indutech_sql_backup.sinks.parquet import PartWriter, read_part
from indutech_sql_backup.sinks.store import (
    BackupStore,
    SchemaDrift,
    chain,
    chain_problems,
    restore_base,
    schema_drift,
)

__all__ = [
    "BackupStore",
    "PartWriter",
    "SchemaDrift",
    "chain",
    "chain_problems",
    "read_part",
    "restore_base",
    "schema_drift",
]
