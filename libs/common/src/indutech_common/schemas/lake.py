"""The S3 data lake of the iot.* topics: its key layout and columns (DESIGN.md, S3 layout).

Written by iot-to-s3 (flow 2); read by iot-aggregator's ``rebuild`` and by Athena,
Spark or DuckDB. One object holds records of one topic partition whose event time
falls in one UTC hour::

    {lake_prefix}iot/{topic}/year=YYYY/month=MM/day=DD/hour=HH/{topic}+{partition}+{first_offset:020d}.parquet

Columns: the record model's fields with ``arrow_schema(model)`` (timestamps
``timestamp[us, UTC]``, revenue ``decimal128(18, 2)``), then ``kafka_partition``
(int32) and ``kafka_offset`` (int64). The hive columns ``year``, ``month``,
``day``, ``hour`` come from the path only. Paths under ``{lake_prefix}_state/``
are the writer's own state, not data (readers skip names starting with ``_``).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pyarrow as pa
from pydantic import BaseModel

from indutech_common.schemas.arrow import arrow_schema

LAKE_ROOT = "iot"
PARTITION_COLUMN = "kafka_partition"
OFFSET_COLUMN = "kafka_offset"
HIVE_COLUMNS = ("year", "month", "day", "hour")
PARTITION_FIELD = pa.field(PARTITION_COLUMN, pa.int32(), nullable=False)
OFFSET_FIELD = pa.field(OFFSET_COLUMN, pa.int64(), nullable=False)
_HOUR = timedelta(hours=1)


def topic_prefix(lake_prefix: str, topic: str) -> str:
    return f"{lake_prefix}{LAKE_ROOT}/{topic}/"


def hour_prefix(lake_prefix: str, topic: str, hour: datetime) -> str:
    """The folder of one event hour of one topic (every partition's objects)."""
    hour = hour.astimezone(UTC)
    return (
        f"{topic_prefix(lake_prefix, topic)}year={hour.year:04d}/month={hour.month:02d}/"
        f"day={hour.day:02d}/hour={hour.hour:02d}/"
    )


def object_key(
    lake_prefix: str, topic: str, hour: datetime, partition: int, first_offset: int
) -> str:
    """The key of one object: its hour folder, then ``{topic}+{partition}+{first_offset}``."""
    return f"{hour_prefix(lake_prefix, topic, hour)}{topic}+{partition}+{first_offset:020d}.parquet"


def hours_overlapping(start: datetime, end: datetime) -> Iterator[datetime]:
    """The UTC hours whose folders can hold event times in ``[start, end)``."""
    hour = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    while hour < end:
        yield hour
        hour += _HOUR


def lake_schema(model: type[BaseModel]) -> pa.Schema:
    """The columns of a lake object holding records of ``model``."""
    return pa.schema([*arrow_schema(model), PARTITION_FIELD, OFFSET_FIELD])
