"""Redshift's bulk path: the deltas as Parquet under the lake's ``warehouse-staging/`` prefix,
loaded with ``COPY … FORMAT AS PARQUET`` inside the write transaction (DESIGN.md, Warehouse).

Redshift has no ``COPY FROM STDIN``. The staged objects are written with the lake's
SSE (enforced by the common S3 client) and deleted after the transaction, committed
or not; a crash may leave some behind (a lifecycle rule on the prefix removes them).
"""

from __future__ import annotations

import io
import uuid
from typing import TYPE_CHECKING, Any

import asyncpg
import pyarrow as pa
import pyarrow.parquet as pq

from indutech_common.s3 import delete_staged
from indutech_iot_aggregator.sinks.sql import TEXT, AggregateTable, Statements

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

TIMESTAMP = pa.timestamp("us", tz="UTC")
_ARROW_TYPES: dict[str, pa.DataType] = {
    TEXT: pa.string(),
    "BIGINT": pa.int64(),
    "NUMERIC(38, 2)": pa.decimal128(38, 2),
    "DOUBLE PRECISION": pa.float64(),
}


def parquet_schema(table: AggregateTable) -> pa.Schema:
    """The staged file's columns, in the staging table's order (COPY maps by position)."""
    fields = [
        pa.field("window_start", TIMESTAMP, nullable=False),
        pa.field("window_end", TIMESTAMP, nullable=False),
        *(pa.field(name, _ARROW_TYPES[sql_type], nullable=False) for name, sql_type in table.group),
        pa.field("source_topic", pa.string(), nullable=False),
        pa.field("source_partition", pa.int32(), nullable=False),
        *(pa.field(m.name, _ARROW_TYPES[m.sql_type], nullable=False) for m in table.measures),
        pa.field("final", pa.bool_(), nullable=False),
        pa.field("updated_at", TIMESTAMP, nullable=False),
    ]
    schema = pa.schema(fields)
    if tuple(schema.names) != table.columns:
        raise AssertionError(f"staged columns of {table.name} out of order")  # a bug here
    return schema


def encode_parquet(table: AggregateTable, rows: list[tuple[Any, ...]]) -> bytes:
    schema = parquet_schema(table)
    columns: list[list[Any]] = [[] for _ in schema]
    for row in rows:
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    arrays = [pa.array(values, type=f.type) for values, f in zip(columns, schema, strict=True)]
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_arrays(arrays, schema=schema), sink, compression="zstd")
    return sink.getvalue()


class S3ParquetStager:
    """Stages each table's deltas as one Parquet object and COPYs it into the stage table."""

    def __init__(self, s3: S3Client, *, bucket: str, prefix: str, iam_role: str) -> None:
        self._s3 = s3
        self.bucket = bucket
        self.prefix = prefix
        self.iam_role = iam_role
        self._staged: list[str] = []

    async def stage(
        self,
        connection: asyncpg.Connection,
        statements: Statements,
        table: AggregateTable,
        rows: list[tuple[Any, ...]],
    ) -> None:
        key = f"{self.prefix}{statements.schema}/{uuid.uuid4().hex}/{table.name}.parquet"
        await self._s3.put_object(Bucket=self.bucket, Key=key, Body=encode_parquet(table, rows))
        self._staged.append(key)
        await self.copy(connection, statements, table, f"s3://{self.bucket}/{key}")

    async def copy(
        self,
        connection: asyncpg.Connection,
        statements: Statements,
        table: AggregateTable,
        uri: str,
    ) -> None:
        """Redshift's ``COPY`` of the staged object into the stage table (it reads the object
        with ``iam_role``'s rights, not ours). A seam: the tests play it on PostgreSQL."""
        await connection.execute(statements.rs_copy_stage(table, uri=uri, iam_role=self.iam_role))

    async def cleanup(self) -> None:
        """The staged objects deleted, best effort (``delete_staged``): the batch's
        transaction, not this, decides whether it was written (a failed delete raised here
        would have the batch retried against its own committed offsets)."""
        staged, self._staged = self._staged, []
        await delete_staged(self._s3, self.bucket, staged)
