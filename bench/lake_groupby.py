"""The rebuild benchmark's peer: the same lake range aggregated by plain pyarrow.

``python -m bench.lake_groupby TOPIC LAKE_PREFIX FROM TO WINDOW_S`` reads every Parquet
object of the topic's hour folders overlapping ``[FROM, TO)`` with the same S3 client as
``iot-aggregator rebuild`` (``indutech_common.s3``), keeps the records of the range, and
computes per (window, customer, region) the ticket count, revenue sum and latency
sum/count/min/max with ``pa.Table.group_by().aggregate``; nothing is written anywhere.
Prints one JSON line: records, groups, revenue total, objects and the seconds from the
first S3 call to the aggregate (imports and settings excluded, as for ours).
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
import time
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from indutech_common.s3 import create_s3_client
from indutech_common.schemas.lake import hour_prefix, hours_overlapping
from tests.support.stack import load_stack

COLUMNS = ["event_time", "customer_id", "region", "revenue", "latency_ms"]


async def _read(topic: str, prefix: str, start: datetime, end: datetime) -> tuple[pa.Table, int]:
    settings = load_stack().s3
    tables: list[pa.Table] = []
    objects = 0
    async with create_s3_client(settings) as s3:
        paginator = s3.get_paginator("list_objects_v2")
        for hour in hours_overlapping(start, end):
            keys: list[str] = []
            async for page in paginator.paginate(
                Bucket=settings.lake_bucket, Prefix=hour_prefix(prefix, topic, hour)
            ):
                keys += [item["Key"] for item in page.get("Contents", [])]
            for key in sorted(k for k in keys if k.endswith(".parquet")):
                response = await s3.get_object(Bucket=settings.lake_bucket, Key=key)
                async with response["Body"] as body:
                    data = await body.read()
                table = pq.read_table(io.BytesIO(data), columns=COLUMNS)
                moment = table.column("event_time")
                inside = pc.and_(
                    pc.greater_equal(moment, pa.scalar(start, moment.type)),
                    pc.less(moment, pa.scalar(end, moment.type)),
                )
                tables.append(table.filter(inside))
                objects += 1
    return pa.concat_tables(tables), objects


def main(argv: list[str]) -> int:
    topic, prefix, start_text, end_text, window_text = argv
    start, end = datetime.fromisoformat(start_text), datetime.fromisoformat(end_text)
    began = time.perf_counter()
    table, objects = asyncio.run(_read(topic, prefix, start, end))
    window = pc.floor_temporal(table.column("event_time"), int(window_text), "second")
    groups = (
        table.append_column("window_start", window)
        .group_by(["window_start", "customer_id", "region"])
        .aggregate(
            [
                ("latency_ms", "count"),
                ("revenue", "sum"),
                ("latency_ms", "sum"),
                ("latency_ms", "min"),
                ("latency_ms", "max"),
            ]
        )
    )
    seconds = time.perf_counter() - began
    report = {
        "records": table.num_rows,
        "groups": groups.num_rows,
        "revenue": str(pc.sum(groups.column("revenue_sum")).as_py()),
        "objects": objects,
        "seconds": seconds,
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
