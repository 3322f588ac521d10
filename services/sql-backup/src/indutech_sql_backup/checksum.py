"""A content checksum of rows that does not depend on how they were split into batches.

Per column, three running SHA-256 digests: validity (one byte per value), value
lengths (variable-width types) and value bytes (nulls zeroed or empty). Batches
fed in order give the same digest as one batch of all rows, so the worker (from
ODBC batches), ``verify`` (from the Parquet file, and again from the source) and
a restore agree exactly. Names and Arrow types are part of the digest.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc


class _ColumnDigest:
    def __init__(self) -> None:
        self.validity = hashlib.sha256()
        self.lengths = hashlib.sha256()
        self.values = hashlib.sha256()


def _zero(arrow_type: pa.DataType) -> Any:
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return ""
    if pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type):
        return b""
    if pa.types.is_fixed_size_binary(arrow_type):
        return b"\0" * arrow_type.byte_width
    if pa.types.is_boolean(arrow_type):
        return False
    if pa.types.is_decimal(arrow_type):
        return Decimal(0)
    return 0


def _digest_array(array: pa.Array, digest: _ColumnDigest) -> None:
    digest.validity.update(_fixed_bytes(pc.cast(pc.is_valid(array), pa.uint8()), 1))
    arrow_type = array.type
    if array.null_count:
        array = pc.fill_null(array, pa.scalar(_zero(arrow_type), type=arrow_type))
    if pa.types.is_boolean(arrow_type):
        array = pc.cast(array, pa.uint8())
    elif pa.types.is_dictionary(arrow_type):
        array = pc.cast(array, arrow_type.value_type)
    if (
        pa.types.is_string(array.type)
        or pa.types.is_binary(array.type)
        or pa.types.is_large_string(array.type)
    ):
        array = pc.cast(array, pa.large_binary())
    if pa.types.is_large_binary(array.type):
        lengths = pc.cast(pc.binary_length(array), pa.int64())
        digest.lengths.update(_fixed_bytes(lengths, 8))
        if len(array):
            offsets = array.buffers()[1]
            assert offsets is not None  # noqa: S101 - a binary array always has offsets
            first = int.from_bytes(offsets[array.offset * 8 : array.offset * 8 + 8], "little")
            end = (array.offset + len(array)) * 8
            last = int.from_bytes(offsets[end : end + 8], "little")
            data = array.buffers()[2]
            if data is not None:
                digest.values.update(memoryview(data)[first:last])
        return
    width = 1 if pa.types.is_boolean(arrow_type) else arrow_type.bit_width // 8
    digest.values.update(_fixed_bytes(array, width))


def _fixed_bytes(array: pa.Array, width: int) -> bytes | memoryview:
    data = array.buffers()[1]
    if data is None or not len(array):
        return b""
    return memoryview(data)[array.offset * width : (array.offset + len(array)) * width]


class TableChecksum:
    """Feed record batches in order; ``hexdigest()`` names their content."""

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self.rows = 0
        self._columns = [_ColumnDigest() for _ in schema]

    def update(self, batch: pa.RecordBatch | pa.Table) -> None:
        if batch.schema.names != self.schema.names:
            raise ValueError(f"batch columns {batch.schema.names} != {self.schema.names}")
        self.rows += batch.num_rows
        for index, digest in enumerate(self._columns):
            column = batch.column(index)
            chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
            for chunk in chunks:
                _digest_array(chunk, digest)

    def hexdigest(self) -> str:
        total = hashlib.sha256()
        for field, digest in zip(self.schema, self._columns, strict=True):
            total.update(f"{field.name}:{field.type}\n".encode())
            for part in (digest.validity, digest.lengths, digest.values):
                total.update(part.digest())
        total.update(str(self.rows).encode())
        return total.hexdigest()


def table_checksum(table: pa.Table) -> str:
    checksum = TableChecksum(table.schema)
    checksum.update(table)
    return checksum.hexdigest()
