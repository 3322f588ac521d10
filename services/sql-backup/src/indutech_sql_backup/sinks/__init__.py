"""Where sql-backup writes: Parquet parts, part records, plans and manifests in S3."""

from indutech_sql_backup.sinks.parquet import PartWriter, read_part
from indutech_sql_backup.sinks.store import (
    BackupDir,
    BackupStore,
    ChunkSpec,
    ColumnSpec,
    FailureRecord,
    Manifest,
    PartRecord,
    Plan,
    SchemaDrift,
    chain,
    chain_problems,
    restore_base,
    schema_drift,
)

__all__ = [
    "BackupDir",
    "BackupStore",
    "ChunkSpec",
    "ColumnSpec",
    "FailureRecord",
    "Manifest",
    "PartRecord",
    "PartWriter",
    "Plan",
    "SchemaDrift",
    "chain",
    "chain_problems",
    "read_part",
    "restore_base",
    "schema_drift",
]
