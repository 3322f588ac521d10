"""``rebuild`` against the real lake: iot-to-s3 writes the Parquet, the stream writes the views;
a damaged range rebuilt from the lake equals the reference window by window, outside it nothing
changes, and a lake behind the stream is refused with nothing written."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError
from structlog.testing import capture_logs

from indutech_common.schemas import ClientTicket, SensorReading
from indutech_iot_aggregator.errors import LakeBehindError
from indutech_iot_aggregator.rebuild import ChunkDone, lake_positions, rebuild
from indutech_iot_to_s3.config import IotToS3Settings
from indutech_iot_to_s3.worker import IotToS3Worker
from tests.integration.iot_aggregator.conftest import (
    BASE_TIME,
    PARTITIONS,
    Names,
    client_ticket,
    expected_readings,
    expected_tickets,
    fetch,
    produce,
    running_worker,
    sensor_reading,
    settings_for,
    view_readings,
    view_tickets,
    wait_for,
    window_of,
)
from tests.support.iam import assume_worker_role, s3_client_as, use_credentials
from tests.support.s3 import delete_prefix
from tests.support.stack import StackSettings

START = BASE_TIME + timedelta(minutes=2)
END = BASE_TIME + timedelta(minutes=6)
TWO_MIN = timedelta(minutes=2)


@pytest.fixture
async def lake_prefix(stack: StackSettings, unique: str) -> AsyncIterator[str]:
    prefix = f"tests/iot-aggregator/{unique}/"
    yield prefix
    await delete_prefix(stack.s3, stack.s3.lake_bucket, prefix)


def inside(key: tuple[Any, ...]) -> bool:
    return bool(START <= key[0] < END)


async def damage(stack: StackSettings, schema: str) -> None:
    """What a bad deployment might leave: every count and sum wrong."""
    await fetch(
        stack,
        schema,
        "UPDATE ticket_aggregates_partial SET ticket_count = ticket_count + 1000, "
        "revenue_sum = 0 RETURNING 1",
    )
    await fetch(
        stack,
        schema,
        "UPDATE reading_aggregates_partial SET reading_count = reading_count + 1000 RETURNING 1",
    )


async def streamed_and_in_lake(
    stack: StackSettings, names: Names, lake_prefix: str
) -> tuple[list[ClientTicket], list[SensorReading], str]:
    """Ten minutes of tickets and readings, aggregated by the stream (views equal the
    reference) and written to the lake by the real iot-to-s3 (its offsets committed);
    returns the records and iot-to-s3's consumer group."""
    tickets = [client_ticket(i, BASE_TIME + timedelta(seconds=i * 2.5)) for i in range(240)]
    readings = [sensor_reading(i, BASE_TIME + timedelta(seconds=i * 3)) for i in range(200)]
    await produce(stack, names.ticket_topic, tickets)
    await produce(stack, names.sensor_topic, readings)
    want_tickets = expected_tickets(tickets)
    want_readings = expected_readings(readings)
    lake_group = f"{names.group_id}-lake"
    to_s3 = IotToS3Worker(
        IotToS3Settings(
            kafka=stack.kafka,
            s3=stack.s3,
            group_id=lake_group,
            sensor_topic=names.sensor_topic,
            ticket_topic=names.ticket_topic,
            dead_letter_topic=names.dead_letter_topic,
            lake_prefix=lake_prefix,
            health={"host": "127.0.0.1", "port": 0},
            session_timeout_ms=6000,
            rotation={"idle_s": 0.5, "max_age_s": 1},
        )
    )
    lake_task = asyncio.create_task(to_s3.serve(install_signal_handlers=False))
    topics = [names.ticket_topic, names.sensor_topic]
    try:
        async with running_worker(stack, names):
            got = await wait_for(
                lambda: view_tickets(stack, names.schema), lambda v: v == want_tickets
            )
            assert got == want_tickets
            assert await view_readings(stack, names.schema) == want_readings
        partitions = [(t, p) for t in topics for p in range(PARTITIONS)]
        in_lake = await wait_for(
            lambda: lake_positions(stack.kafka, lake_group, partitions),
            lambda p: sum(n or 0 for n in p.values()) == len(tickets) + len(readings),
        )
        assert sum(n or 0 for n in in_lake.values()) == len(tickets) + len(readings)
    finally:
        to_s3.request_exit()
        assert await asyncio.wait_for(lake_task, timeout=60) == 0
    return tickets, readings, lake_group


class TestRebuild:
    @pytest.mark.slow
    @pytest.mark.parametrize("rights", ["root", "iam-policy"])
    async def test_a_damaged_range_rebuilt_from_the_lake_equals_the_reference(
        self,
        stack: StackSettings,
        names: Names,
        lake_prefix: str,
        rights: str,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Streamed, lake written by iot-to-s3, rows damaged, [10:02, 10:06) rebuilt: those
        windows equal the reference again (exact decimals), the others keep the damage.
        "iam-policy": the rebuild holds only the rights of deploy/iam/iot-aggregator.json
        (its lake prefix is production's empty one moved under the test's)."""
        tickets, readings, lake_group = await streamed_and_in_lake(stack, names, lake_prefix)
        want_tickets = expected_tickets(tickets)
        want_readings = expected_readings(readings)
        await damage(stack, names.schema)
        s3 = stack.s3
        credentials: dict[str, str] = {}
        if rights == "iam-policy":
            credentials = await assume_worker_role("iot-aggregator", stack, {"lake": lake_prefix})
            s3 = use_credentials(monkeypatch, credentials, stack.s3)
        settings = settings_for(
            stack, names, s3=s3, lake_prefix=lake_prefix, lake_group_id=lake_group
        )
        report = await rebuild(settings, START, END)

        assert report.windows == 4
        assert report.left_to_stream == 0
        tickets_now = await view_tickets(stack, names.schema)
        readings_now = await view_readings(stack, names.schema)
        rebuilt = {k: v for k, v in tickets_now.items() if inside(k)}
        assert rebuilt == {k: v for k, v in want_tickets.items() if inside(k)}
        assert {k: v for k, v in readings_now.items() if inside(k)} == {
            k: v for k, v in want_readings.items() if inside(k)
        }
        outside = {k: v for k, v in tickets_now.items() if not inside(k)}
        assert outside
        assert all(v[0] >= 1000 for v in outside.values()), "outside the range: untouched"
        finals = await fetch(
            stack,
            names.schema,
            "SELECT bool_and(final) AS f FROM ticket_aggregates "
            "WHERE window_start >= $1 AND window_start < $2",
            START,
            END,
        )
        assert finals[0]["f"] is True
        if credentials:
            # the policy was in force: the lake is read-only to the rebuild, and the backup
            # bucket is out of its reach
            async with s3_client_as(stack, credentials) as client:
                with pytest.raises(ClientError, match="AccessDenied"):
                    await client.put_object(
                        Bucket=stack.s3.lake_bucket,
                        Key=f"{lake_prefix}iot/{names.ticket_topic}/forged.parquet",
                        Body=b"x",
                    )
                with pytest.raises(ClientError, match="AccessDenied"):
                    await client.list_objects_v2(Bucket=stack.s3.backup_bucket)
                with pytest.raises(ClientError, match="AccessDenied"):
                    await client.get_object(
                        Bucket=stack.s3.backup_bucket, Key=f"{lake_prefix}anything"
                    )

    @pytest.mark.slow
    async def test_a_range_of_several_chunks_holds_one_chunk_and_a_rerun_finishes(
        self, stack: StackSettings, names: Names, lake_prefix: str
    ) -> None:
        """[10:02, 10:06) in one-minute chunks: four transactions; a crash after the second
        leaves those two windows rebuilt and the others damaged; running it again gives
        every window of the reference, with at most one window's lake records held at once
        and progress logged per chunk."""
        tickets, readings, lake_group = await streamed_and_in_lake(stack, names, lake_prefix)
        want_tickets = expected_tickets(tickets)
        want_readings = expected_readings(readings)
        per_window: dict[Any, int] = {}
        for record in [*tickets, *readings]:
            window = window_of(record.event_time)
            if START <= window < END:
                per_window[window] = per_window.get(window, 0) + 1
        settings = settings_for(
            stack,
            names,
            s3=stack.s3,
            lake_prefix=lake_prefix,
            lake_group_id=lake_group,
            rebuild_chunk_s=60,
        )
        await damage(stack, names.schema)

        class CrashError(Exception):
            """The process dies between two chunks."""

        def crash_after_two(done: ChunkDone) -> None:
            if done.index == 2:
                raise CrashError

        with pytest.raises(CrashError):
            await rebuild(settings, START, END, progress=crash_after_two)
        tickets_now = await view_tickets(stack, names.schema)
        first_two = {k: v for k, v in want_tickets.items() if START <= k[0] < START + TWO_MIN}
        assert {k: v for k, v in tickets_now.items() if START <= k[0] < START + TWO_MIN} == (
            first_two
        )
        assert all(v[0] >= 1000 for k, v in tickets_now.items() if START + TWO_MIN <= k[0] < END), (
            "chunks after the crash: not written"
        )

        seen: list[ChunkDone] = []
        with capture_logs() as logs:
            report = await rebuild(settings, START, END, progress=seen.append)

        assert [(d.index, d.chunks) for d in seen] == [(1, 4), (2, 4), (3, 4), (4, 4)]
        assert [d.start for d in seen] == [START + timedelta(minutes=i) for i in range(4)]
        assert report.chunks == 4
        assert report.windows == 4
        assert report.records == sum(per_window.values())
        assert report.peak_records_held == max(per_window.values())
        assert report.peak_records_held < report.records
        assert [d.records_held for d in seen] == [per_window[d.start] for d in seen]
        progress = [e for e in logs if e["event"] == "rebuild_progress"]
        assert [(e["chunk"], e["chunks"], e["records"]) for e in progress] == [
            (d.index, 4, d.records) for d in seen
        ]
        tickets_now = await view_tickets(stack, names.schema)
        readings_now = await view_readings(stack, names.schema)
        assert {k: v for k, v in tickets_now.items() if inside(k)} == {
            k: v for k, v in want_tickets.items() if inside(k)
        }
        assert {k: v for k, v in readings_now.items() if inside(k)} == {
            k: v for k, v in want_readings.items() if inside(k)
        }

    async def test_a_lake_behind_the_stream_is_refused_with_nothing_written(
        self, stack: StackSettings, names: Names, lake_prefix: str
    ) -> None:
        """The stream has counted records the lake group never committed: rebuild stops,
        says what to wait for, and leaves the rows as they were."""
        tickets = [client_ticket(i, BASE_TIME + timedelta(seconds=i)) for i in range(50)]
        await produce(stack, names.ticket_topic, tickets)
        want = expected_tickets(tickets)
        async with running_worker(stack, names):
            await wait_for(lambda: view_tickets(stack, names.schema), lambda v: v == want)
        settings = settings_for(
            stack,
            names,
            s3=stack.s3,
            lake_prefix=lake_prefix,
            lake_group_id=f"{names.group_id}-never-ran",
        )
        with pytest.raises(LakeBehindError, match="Wait for iot-to-s3"):
            await rebuild(settings, BASE_TIME, BASE_TIME + timedelta(minutes=1))
        assert await view_tickets(stack, names.schema) == want
