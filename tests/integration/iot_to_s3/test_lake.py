"""iot-to-s3 against the real broker and MinIO: layout, schema, SSE, rotation, late events."""

from __future__ import annotations

import asyncio
import gc
import json
import re
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from aiokafka import TopicPartition
from structlog.testing import capture_logs

from indutech_common.kafka import create_consumer, create_producer, start_client
from indutech_common.metrics import WorkerMetrics
from indutech_common.s3 import create_s3_client, sha256_checksum
from indutech_iot_to_s3.segments import PlannedObject
from indutech_iot_to_s3.sinks import Intent, IntentConflictError, IntentJournal, S3Calls
from indutech_iot_to_s3.worker import IotToS3Worker
from tests.integration.iot_to_s3.conftest import (
    BASE_TIME,
    Lake,
    client_ticket,
    committed_offset,
    lake_filesystem,
    lake_keys,
    produce,
    read_dead_letters,
    records,
    sensor_reading,
    settings_for,
    wait_for_rows,
)
from tests.support.stack import StackSettings

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

KEY_PATTERN = re.compile(
    r"iot/(?P<topic>[^/]+)/year=\d{4}/month=\d{2}/day=\d{2}/hour=\d{2}/"
    r"(?P=topic)\+\d+\+\d{20}\.parquet$"
)


@asynccontextmanager
async def running_worker(
    stack: StackSettings, lake: Lake, **overrides: Any
) -> AsyncIterator[IotToS3Worker]:
    """The worker in this process, drained (as on SIGTERM) when the block ends."""
    worker = IotToS3Worker(settings_for(stack, lake, **overrides))
    task = asyncio.create_task(worker.serve(install_signal_handlers=False))
    try:
        yield worker
    finally:
        worker.request_exit()
        assert await asyncio.wait_for(task, timeout=60) == 0


def object_sizes(stack: StackSettings, keys: list[str]) -> dict[str, int]:
    filesystem = lake_filesystem(stack)
    sizes = {}
    for key in keys:
        with filesystem.open_input_file(f"{stack.s3.lake_bucket}/{key}") as handle:
            sizes[key] = pq.ParquetFile(handle).metadata.num_rows
    return sizes


async def parquet_keys(stack: StackSettings, lake: Lake, topic: str) -> list[str]:
    return await lake_keys(stack, f"{lake.prefix}iot/{topic}/")


async def wait_until(predicate: Callable[[], Any], timeout_s: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.3)
    raise AssertionError("condition not met in time")


async def has_read(worker: IotToS3Worker, stream: str, count: int) -> bool:
    """The worker's ``indutech_records_in_total`` of ``stream`` has reached ``count``."""
    read = worker.metrics.registry.get_sample_value(
        "indutech_records_in_total", {"worker": worker.name, "stream": stream}
    )
    return (read or 0) >= count


async def is_committed(stack: StackSettings, lake: Lake, tp: TopicPartition, offset: int) -> bool:
    return await committed_offset(stack, lake, tp) == offset


class TestLakeLayout:
    async def test_records_land_as_one_hive_dataset_with_exact_types_and_sse(
        self, stack: StackSettings, lake: Lake
    ) -> None:
        """Both topics land under their hour paths, read back as one dataset, SSE on each."""
        readings = [
            sensor_reading(i, BASE_TIME + timedelta(minutes=4 * i), "layout") for i in range(30)
        ]
        tickets = [client_ticket(i, BASE_TIME + timedelta(minutes=i), "layout") for i in range(12)]
        await produce(stack, lake.sensor_topic, readings, transactional_id=f"{lake.group_id}-s")
        await produce(stack, lake.ticket_topic, tickets)
        async with running_worker(stack, lake, rotation={"idle_s": 0.5}):
            sensors = await wait_for_rows(stack, lake, lake.sensor_topic, 30)
            ticket_table = await wait_for_rows(stack, lake, lake.ticket_topic, 12)
        assert sensors.num_rows == 30
        assert Counter(sensors.column("event_id").to_pylist()) == Counter(
            r.event_id for r in readings
        )
        for row in sensors.to_pylist():
            event_time = row["event_time"]
            assert (row["year"], row["month"], row["day"], row["hour"]) == (
                event_time.year,
                event_time.month,
                event_time.day,
                event_time.hour,
            )
        assert sensors.schema.field("event_time").type == pa.timestamp("us", tz="UTC")
        assert {"kafka_partition", "kafka_offset", "schema_version"} <= set(sensors.column_names)
        assert ticket_table.schema.field("revenue").type == pa.decimal128(18, 2)
        revenue = dict(
            zip(
                ticket_table.column("event_id").to_pylist(),
                ticket_table.column("revenue").to_pylist(),
                strict=True,
            )
        )
        assert revenue == {t.event_id: t.revenue for t in tickets}
        assert revenue["layout-t-7"] == Decimal("7.07")
        keys = await lake_keys(stack, lake.prefix)
        data_keys = [k for k in keys if k.endswith(".parquet")]
        assert all(KEY_PATTERN.search(k) for k in data_keys), data_keys
        assert not [k for k in keys if "/_state/" in k], "intents are deleted after the commit"
        async with create_s3_client(stack.s3) as s3:
            for key in data_keys:
                head = await s3.head_object(Bucket=stack.s3.lake_bucket, Key=key)
                assert head["ServerSideEncryption"] == "aws:kms"
                assert head["SSEKMSKeyId"].endswith(str(stack.s3.kms_key_id))

    async def test_invalid_records_go_to_the_dead_letter_topic(
        self, stack: StackSettings, lake: Lake
    ) -> None:
        """A record that fails validation is dead-lettered with its reason; the rest land."""
        good = records(5, "dlq")
        raw = [r.to_json_bytes() for r in good]
        await produce(stack, lake.sensor_topic, [*raw[:2], b"{not json", *raw[2:]], partition=0)
        async with running_worker(stack, lake, rotation={"idle_s": 0.5}) as worker:
            table = await wait_for_rows(stack, lake, lake.sensor_topic, 5)
        assert Counter(table.column("event_id").to_pylist()) == Counter(r.event_id for r in good)
        counted = worker.metrics.registry.get_sample_value(
            "indutech_dead_lettered_records_total",
            {"worker": worker.name, "reason": "invalid_json"},
        )
        assert counted == 1
        consumer = create_consumer(stack.kafka, lake.dead_letter_topic, group_id=None)
        await start_client(consumer, stack.kafka)
        try:
            batches = await consumer.getmany(timeout_ms=5000)
        finally:
            await consumer.stop()
        (dead,) = [m for ms in batches.values() for m in ms]
        assert dead.value == b"{not json"
        assert dict(dead.headers)["reason"] == b"invalid_json"

    async def test_batch_and_model_paths_in_one_poll_land_as_the_model_decides(
        self, stack: StackSettings, lake: Lake
    ) -> None:
        """Canonical tickets (the batch path), tickets only the model takes (padded strings,
        integer revenue, a multi-line value) and refused ones, in one partition: the lake
        holds the model's values in offset order, the refused ones are dead-lettered once
        with their reasons."""
        run = lake.group_id[-6:]
        good = [client_ticket(i, BASE_TIME + timedelta(seconds=i), run) for i in range(1, 7)]
        canonical = [json.loads(t.to_json_bytes()) for t in good]
        values: list[bytes] = [
            good[0].to_json_bytes(),
            json.dumps({**canonical[1], "customer_id": " padded "}).encode(),  # model: stripped
            b"{not json",
            json.dumps({**canonical[2], "revenue": 12}).encode(),  # model: an integer
            json.dumps({**canonical[3], "revenue": 12.5}).encode(),  # refused: a float
            json.dumps(canonical[4], indent=2).encode(),  # model: several lines
            good[4].to_json_bytes() + good[5].to_json_bytes(),  # refused: two objects
            good[5].to_json_bytes(),
        ]
        await produce(stack, lake.ticket_topic, values, partition=0)
        async with running_worker(stack, lake, rotation={"idle_s": 0.5}):
            table = await wait_for_rows(stack, lake, lake.ticket_topic, 5)
        rows = sorted(table.to_pylist(), key=lambda r: r["kafka_offset"])
        assert [r["kafka_offset"] for r in rows] == [0, 1, 3, 5, 7]
        assert [r["ticket_id"] for r in rows] == ["t-1", "t-2", "t-3", "t-5", "t-6"]
        assert rows[1]["customer_id"] == "padded"
        assert rows[2]["revenue"] == Decimal("12.00")
        assert rows[3]["event_time"] == good[4].event_time
        dead = await read_dead_letters(stack, lake.dead_letter_topic)
        assert sorted(
            (int(dict(d.headers)["offset"]), dict(d.headers)["reason"]) for d in dead
        ) == [
            (2, b"invalid_json"),
            (4, b"schema_validation"),
            (6, b"invalid_json"),
        ]

    async def test_startup_objects_are_frozen_out_of_the_collector(
        self, stack: StackSettings, lake: Lake
    ) -> None:
        """What startup made is frozen (``gc.freeze``): the collections that each poll's
        garbage triggers no longer walk the modules and clients."""
        try:
            with capture_logs() as logs:
                async with running_worker(stack, lake):
                    pass
        finally:
            gc.unfreeze()  # this test process is not the worker's
        (consuming,) = [e for e in logs if e["event"] == "consuming"]
        assert consuming["frozen_objects"] > 10_000


class TestRotation:
    async def test_rotation_by_record_count(self, stack: StackSettings, lake: Lake) -> None:
        """25 records of one hour with max_records=10 make files of 10, 10 and 5 records."""
        await produce(stack, lake.sensor_topic, records(25, "count"), partition=0)
        async with running_worker(stack, lake, rotation={"max_records": 10, "idle_s": 1}):
            await wait_for_rows(stack, lake, lake.sensor_topic, 25)
        keys = await parquet_keys(stack, lake, lake.sensor_topic)
        assert sorted(object_sizes(stack, keys).values()) == [5, 10, 10]

    async def test_rotation_by_size(self, stack: StackSettings, lake: Lake) -> None:
        """A small max_bytes splits the partition into several files, none above the limit."""
        await produce(stack, lake.sensor_topic, records(40, "size"), partition=0)
        async with running_worker(stack, lake, rotation={"max_bytes": 1000, "idle_s": 1}):
            await wait_for_rows(stack, lake, lake.sensor_topic, 40)
        sizes = object_sizes(stack, await parquet_keys(stack, lake, lake.sensor_topic))
        assert len(sizes) >= 4
        assert sum(sizes.values()) == 40
        assert max(sizes.values()) <= 1000 // 86  # each of these rows is 86-87 Arrow bytes

    async def test_rotation_by_age(self, stack: StackSettings, lake: Lake) -> None:
        """With a steady trickle and no idle gap, max_age_s still closes segments."""
        async with running_worker(stack, lake, rotation={"max_age_s": 1.0, "idle_s": 60}) as worker:
            for batch in range(4):
                await produce(
                    stack,
                    lake.sensor_topic,
                    records(5 * (batch + 1), "age", start=5 * batch),
                    partition=0,
                )
                # Each batch is in the worker before the next one: a slow group join
                # would otherwise hand it all four at once, as one segment.
                await wait_until(partial(has_read, worker, lake.sensor_topic, 5 * (batch + 1)))
                await asyncio.sleep(0.7)
            await wait_for_rows(stack, lake, lake.sensor_topic, 15)
        sizes = object_sizes(stack, await parquet_keys(stack, lake, lake.sensor_topic))
        assert len(sizes) >= 2
        assert sum(sizes.values()) == 20

    async def test_idle_partition_is_flushed(self, stack: StackSettings, lake: Lake) -> None:
        """Records followed by silence are written after idle_s, long before max_age_s."""
        async with running_worker(stack, lake, rotation={"idle_s": 0.5, "max_age_s": 3600}):
            await produce(stack, lake.sensor_topic, records(5, "idle"), partition=1)
            table = await wait_for_rows(stack, lake, lake.sensor_topic, 5, timeout_s=20)
        assert table.num_rows == 5

    async def test_late_events_land_in_their_own_hour(
        self, stack: StackSettings, lake: Lake
    ) -> None:
        """An event two hours late goes to its event hour's path, not the current one."""
        on_time = records(6, "late")
        late = sensor_reading(99, BASE_TIME - timedelta(hours=2), "late")
        await produce(stack, lake.sensor_topic, [*on_time[:3], late, *on_time[3:]], partition=0)
        async with running_worker(stack, lake, rotation={"idle_s": 0.5}):
            table = await wait_for_rows(stack, lake, lake.sensor_topic, 7)
        hours = {row["event_id"]: row["hour"] for row in table.to_pylist()}
        assert hours.pop("late-s-99") == 8
        assert set(hours.values()) == {10}
        keys = await parquet_keys(stack, lake, lake.sensor_topic)
        assert len([k for k in keys if "/hour=08/" in k]) == 1

    async def test_large_files_go_up_in_parts(self, stack: StackSettings, lake: Lake) -> None:
        """Past the multipart threshold the object is uploaded in parts, encrypted and whole."""
        await produce(stack, lake.sensor_topic, records(50, "multipart"), partition=0)
        async with running_worker(
            stack, lake, rotation={"idle_s": 0.5}, multipart_threshold_bytes=1
        ):
            table = await wait_for_rows(stack, lake, lake.sensor_topic, 50)
        assert table.num_rows == 50
        (key,) = await parquet_keys(stack, lake, lake.sensor_topic)
        async with create_s3_client(stack.s3) as s3:
            head = await s3.head_object(Bucket=stack.s3.lake_bucket, Key=key)
        assert head["ServerSideEncryption"] == "aws:kms"
        assert "-" in head["ETag"], "a multipart ETag ends with -<parts>"


def intent_journal(s3: S3Client, stack: StackSettings, lake: Lake) -> IntentJournal:
    """The worker's intent journal under the test's lake prefix."""
    return IntentJournal(
        s3,
        S3Calls(WorkerMetrics("test"), backoff_max_s=1),
        bucket=stack.s3.lake_bucket,
        prefix=lake.prefix,
    )


class TestIntents:
    async def test_a_different_plan_for_the_same_start_is_refused(
        self, stack: StackSettings, lake: Lake
    ) -> None:
        """If-None-Match: the same intent may be written twice, a different one never."""
        hour = BASE_TIME
        first = Intent("t", 0, 10, 20, (PlannedObject("k1", hour, 10, 20, 11),))
        other = Intent("t", 0, 10, 15, (PlannedObject("k1", hour, 10, 15, 6),))
        async with create_s3_client(stack.s3) as s3:
            journal = intent_journal(s3, stack, lake)
            await journal.write(first)
            await journal.write(first)  # a retry whose first answer was lost
            with pytest.raises(IntentConflictError, match="another consumer owns"):
                await journal.write(other)
            assert await journal.pending("t", 0, committed=10) == first
            await journal.delete(first)
            assert await journal.pending("t", 0, committed=None) is None

    async def test_an_intent_is_stored_as_checked_json(
        self, stack: StackSettings, lake: Lake
    ) -> None:
        """Through the common JSON store: JSON content type, a SHA-256 the server verified."""
        intent = Intent("t", 2, 0, 9, (PlannedObject("k", BASE_TIME, 0, 9, 10),))
        async with create_s3_client(stack.s3) as s3:
            journal = intent_journal(s3, stack, lake)
            await journal.write(intent)
            head = await s3.head_object(
                Bucket=stack.s3.lake_bucket, Key=journal.key("t", 2, 0), ChecksumMode="ENABLED"
            )
        assert head["ContentType"] == "application/json"
        assert head.get("ChecksumSHA256") == sha256_checksum(intent.to_json())

    async def test_intents_that_end_before_the_commit_are_deleted_on_recovery(
        self, stack: StackSettings, lake: Lake
    ) -> None:
        """Left by kills between commit and delete, they are done: deleted, not returned."""

        def planned_intent(partition: int, start: int) -> Intent:
            planned = PlannedObject(f"k{partition}-{start}", BASE_TIME, start, start + 9, 10)
            return Intent("t", partition, start, start + 9, (planned,))

        done = [planned_intent(0, start) for start in (0, 10, 20)]
        open_ = planned_intent(0, 30)
        other_partition = planned_intent(1, 0)
        async with create_s3_client(stack.s3) as s3:
            journal = intent_journal(s3, stack, lake)
            for written in [*done, open_, other_partition]:
                await journal.write(written)
            intents = f"{lake.prefix}_state/iot-to-s3/intents/t/"
            assert len(await lake_keys(stack, intents)) == 5
            with capture_logs() as logs:
                assert await journal.pending("t", 0, committed=30) == open_
            assert await lake_keys(stack, intents) == [
                journal.key("t", 0, 30),
                journal.key("t", 1, 0),
            ]
            deleted = [e["start"] for e in logs if e["event"] == "stale_intent_deleted"]
            assert deleted == [0, 10, 20]


class TestFencing:
    async def test_a_fenced_producer_recovers_the_partition_and_commits_once(
        self, stack: StackSettings, lake: Lake
    ) -> None:
        """Another producer takes the partition's transactional id: the worker's commit is
        fenced, the partition recovers with a new producer, and everything lands once."""
        first = records(5, "fenced")
        await produce(stack, lake.sensor_topic, first, partition=0)
        tp = TopicPartition(lake.sensor_topic, 0)
        with capture_logs() as logs:
            async with running_worker(stack, lake, rotation={"idle_s": 0.5}) as worker:
                await wait_for_rows(stack, lake, lake.sensor_topic, 5)
                usurper = create_producer(stack.kafka, transactional_id=worker.transactional_id(tp))
                await start_client(usurper, stack.kafka)  # bumps the epoch: the worker's is fenced
                await usurper.stop()
                second = records(10, "fenced", start=5)
                raw = [r.to_json_bytes() for r in second]
                await produce(stack, lake.sensor_topic, [*raw[:2], b"{bad", *raw[2:]], partition=0)
                table = await wait_for_rows(stack, lake, lake.sensor_topic, 10)
                # uploaded before the fenced commit: wait for the recovery's own commit
                await wait_until(partial(is_committed, stack, lake, tp, 5 + len(raw) + 1))
        assert Counter(table.column("event_id").to_pylist()) == Counter(
            r.event_id for r in [*first, *second]
        )
        events = [e["event"] for e in logs]
        assert "commit_fenced" in events
        assert events.count("partition_ready") >= 5, "the fenced partition recovered"
        letters = await read_dead_letters(stack, lake.dead_letter_topic)
        assert [m.value for m in letters] == [b"{bad"]
