"""The lake (flow 2's Parquet on S3) as a source of one event-time range, for ``rebuild``.

The key layout and columns are the contract of ``indutech_common.schemas.lake``;
only the hour folders overlapping the range are listed, and only the columns
the aggregation needs are read.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from indutech_common.schemas.lake import (
    OFFSET_COLUMN,
    PARTITION_COLUMN,
    hour_prefix,
    hours_overlapping,
)

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

TICKET_COLUMNS = ("event_time", "customer_id", "region", "revenue", "latency_ms")
READING_COLUMNS = ("event_time", "sensor_id", "site", "metric", "value")


@dataclass(frozen=True)
class LakeProgress:
    topic: str
    hour: datetime
    objects: int
    records: int


class LakeSource:
    """Reads the records of one topic whose event time is in ``[start, end)``."""

    name = "lake"

    def __init__(self, s3: S3Client, *, bucket: str, lake_prefix: str) -> None:
        self._s3 = s3
        self._bucket = bucket
        self._prefix = lake_prefix

    async def read_range(
        self,
        topic: str,
        columns: tuple[str, ...],
        start: datetime,
        end: datetime,
        progress: Callable[[LakeProgress], None] | None = None,
    ) -> pa.Table:
        """The range's records of ``topic``: ``columns`` plus partition and offset."""
        wanted = [*columns, PARTITION_COLUMN, OFFSET_COLUMN]
        tables: list[pa.Table] = []
        for hour in hours_overlapping(start, end):
            keys = await self._keys(hour_prefix(self._prefix, topic, hour))
            records = 0
            for key in keys:
                response = await self._s3.get_object(Bucket=self._bucket, Key=key)
                async with response["Body"] as body:
                    data = await body.read()
                table = pq.read_table(io.BytesIO(data), columns=wanted)
                moment = table.column("event_time")
                inside = pc.and_(
                    pc.greater_equal(moment, pa.scalar(start, moment.type)),
                    pc.less(moment, pa.scalar(end, moment.type)),
                )
                table = table.filter(inside)
                records += table.num_rows
                tables.append(table)
            if progress is not None:
                progress(LakeProgress(topic, hour, len(keys), records))
        if not tables:
            return pa.table({name: pa.array([]) for name in wanted})
        return pa.concat_tables(tables)

    async def _keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        paginator = self._s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self._bucket, Prefix=prefix):
            keys += [item["Key"] for item in page.get("Contents", [])]
        return sorted(k for k in keys if k.endswith(".parquet"))

    async def ping(self) -> None:
        await self._s3.head_bucket(Bucket=self._bucket)

    async def close(self) -> None:
        """The S3 client belongs to the caller."""
