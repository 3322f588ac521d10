"""One part: Arrow batches streamed into a zstd Parquet file, checksummed on the way."""

from __future__ import annotations

import hashlib
import tempfile
from collections import Counter
from pathlib import Path
from types import TracebackType

import pyarrow as pa
import pyarrow.parquet as pq

from indutech_sql_backup.checksum import TableChecksum

ROW_GROUP_ROWS = 100_000
HASH_BLOCK_BYTES = 4 * 1024 * 1024


def dictionary_columns(schema: pa.Schema) -> list[str]:
    """Columns worth dictionary encoding: text (codes, names, statuses repeat). Numbers,
    decimals and timestamps are mostly distinct in ERP tables: their dictionaries are
    built and then abandoned, which cost about half the encoding time and made the
    order_lines parts 40 % larger than plain zstd."""
    text = (pa.types.is_string, pa.types.is_large_string)
    return [f.name for f in schema if any(is_text(f.type) for is_text in text)]


class PartWriter:
    """Writes batches to a temporary file; memory holds one batch at a time."""

    def __init__(self, schema: pa.Schema, *, directory: Path | None = None) -> None:
        self.schema = schema
        self.checksum = TableChecksum(schema)
        self._file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in close()
            prefix="sql-backup-", suffix=".parquet", dir=directory, delete=True
        )
        self._writer = pq.ParquetWriter(
            self._file.name,
            schema,
            compression="zstd",
            use_dictionary=dictionary_columns(schema),
            # Each column keeps the unit the type matrix gave it (µs, or ns for SQL Server's
            # 100 ns types): nothing is coerced, so nothing can be truncated.
            coerce_timestamps=None,
            allow_truncated_timestamps=False,
            write_statistics=True,
        )
        self.rows = 0
        self.ops: Counter[str] = Counter()

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.schema != self.schema:
            batch = batch.cast(self.schema)
        self.checksum.update(batch)
        self._writer.write_batch(batch, row_group_size=ROW_GROUP_ROWS)
        self.rows += batch.num_rows

    @property
    def path(self) -> Path:
        return Path(self._file.name)

    def finish(self) -> tuple[int, bytes]:
        """Close the Parquet file; returns its size and SHA-256 (read in blocks, so a large
        part never sits in memory whole)."""
        self._writer.close()
        digest = hashlib.sha256()
        size = 0
        with self.path.open("rb") as file:
            while block := file.read(HASH_BLOCK_BYTES):
                digest.update(block)
                size += len(block)
        return size, digest.digest()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def read_part(data: bytes) -> pa.Table:
    return pq.read_table(pa.BufferReader(data))
