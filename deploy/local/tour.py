"""A tour of the foundation with generated data, run by `make demo`.

Generated sensor readings go through a Kafka transaction and back
(read_committed), become a Parquet object in the lake (SSE checked), land in
the warehouse through binary COPY, and both directories are counted.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import random
import sys
import uuid
from datetime import UTC, datetime, timedelta

import ldap3
import pyarrow as pa
import pyarrow.parquet as pq

from indutech_common.kafka import create_consumer, create_producer, start_client
from indutech_common.ldap import ldap_connect
from indutech_common.logging import configure_logging
from indutech_common.s3 import create_s3_client
from indutech_common.schemas import SensorReading, Topics
from indutech_common.warehouse import connect_warehouse
from tests.support.stack import load_stack

SITES = ["lyon", "porto", "gdansk", "monterrey"]
METRICS = {"temperature": "C", "pressure": "bar", "vibration": "mm/s", "power": "kW"}


def generate(count: int, rng: random.Random) -> list[SensorReading]:
    start = datetime.now(UTC) - timedelta(seconds=count)
    readings = []
    for i in range(count):
        metric = rng.choice(list(METRICS))
        readings.append(
            SensorReading(
                event_id=str(uuid.UUID(int=rng.getrandbits(128))),
                sensor_id=f"sensor-{rng.randrange(50):03d}",
                site=rng.choice(SITES),
                metric=metric,
                value=round(rng.gauss(50, 10), 3),
                unit=METRICS[metric],
                event_time=start + timedelta(seconds=i),
            )
        )
    return readings


async def tour(count: int) -> None:
    stack = load_stack()
    readings = generate(count, random.Random())  # noqa: S311 - demo data, not secrets
    ids = {r.event_id for r in readings}

    producer = create_producer(stack.kafka, transactional_id=f"demo-tour-{uuid.uuid4().hex[:6]}")
    await start_client(producer, stack.kafka)
    async with producer.transaction():
        for reading in readings:
            await producer.send(Topics.SENSOR_READINGS, reading.to_json_bytes(), key=reading.key())
    await producer.stop()
    consumer = create_consumer(stack.kafka, Topics.SENSOR_READINGS, group_id=None)
    await start_client(consumer, stack.kafka)
    seen: set[str | None] = set()
    for _ in range(40):
        batches = await consumer.getmany(timeout_ms=250)
        for records in batches.values():
            seen |= {
                SensorReading.model_validate_json(m.value).event_id for m in records if m.value
            }
        if ids <= seen:
            break
    await consumer.stop()
    print(
        f"kafka      {len(ids & seen)}/{count} generated readings committed and read back "
        f"(SASL_SSL, read_committed) on {Topics.SENSOR_READINGS}"
    )

    table = pa.Table.from_pylist([r.model_dump(mode="python") for r in readings])
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    key = f"demo/tour/{uuid.uuid4().hex}.parquet"
    async with create_s3_client(stack.s3) as s3:
        await s3.put_object(Bucket=stack.s3.lake_bucket, Key=key, Body=buffer.getvalue())
        head = await s3.head_object(Bucket=stack.s3.lake_bucket, Key=key)
    print(
        f"s3         s3://{stack.s3.lake_bucket}/{key}: {head['ContentLength']} bytes, "
        f"{table.num_rows} rows, SSE {head['ServerSideEncryption']}"
    )

    connection = await connect_warehouse(stack.warehouse)
    try:
        await connection.execute(
            "CREATE TEMP TABLE demo_readings (sensor_id text, site text, value float8, "
            "event_time timestamptz)"
        )
        await connection.copy_records_to_table(
            "demo_readings",
            records=[(r.sensor_id, r.site, r.value, r.event_time) for r in readings],
        )
        rows = await connection.fetch(
            "SELECT site, count(*) AS n, round(avg(value)::numeric, 2) AS avg "
            "FROM demo_readings GROUP BY site ORDER BY site"
        )
    finally:
        await connection.close()
    summary = ", ".join(f"{r['site']} n={r['n']} avg={r['avg']}" for r in rows)
    print(f"warehouse  binary COPY of {count} rows; by site: {summary}")

    for name, settings in (("corp AD", stack.ad_onprem), ("aws AD", stack.ad_aws)):
        conn = await asyncio.to_thread(ldap_connect, settings)
        try:
            await asyncio.to_thread(
                conn.search,
                settings.base_dn,
                "(objectClass=user)",
                ldap3.SUBTREE,
                attributes=["cn"],
            )
            users = len([e for e in conn.response if e.get("type") == "searchResEntry"])
        finally:
            conn.unbind()
        print(f"{name:<10} {settings.url}: {users} user objects (LDAPS, certificate verified)")


def main() -> int:
    parser = argparse.ArgumentParser(description="Tour the local stack with generated data.")
    parser.add_argument("--records", type=int, default=500, help="readings to generate")
    args = parser.parse_args()
    configure_logging(level="WARNING", fmt="console")
    asyncio.run(tour(args.records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
