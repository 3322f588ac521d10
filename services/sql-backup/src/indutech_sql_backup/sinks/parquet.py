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
            coerce_timestamps="us",
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

    def finish(self) -> tuple[bytes, bytes]:
        """Close the Parquet file; returns its bytes and their SHA-256."""
        self._writer.close()
        data = Path(self._file.name).read_bytes()
        return data, hashlib.sha256(data).digest()

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
