"""Where sql-backup writes: Parquet parts, part records, plans and manifests in S3."""

from indutech_sql_backup.sinks.parquet import PartWriter, read_part
from indutech_sql_backup.sinks.store import (
    BackupDir,
    BackupStore,
    ChunkSpec,
    ColumnSpec,
    Manifest,
    PartRecord,
    Plan,
    chain,
)

__all__ = [
    "BackupDir",
    "BackupStore",
    "ChunkSpec",
    "ColumnSpec",
    "Manifest",
    "PartRecord",
    "PartWriter",
    "Plan",
    "chain",
    "read_part",
]
