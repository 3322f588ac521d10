"""iot-aggregator against the real broker (SASL_SSL) and the PostgreSQL warehouse: the views
equal the reference aggregation exactly; bad and late records are dead-lettered with a reason."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from structlog.testing import capture_logs

from indutech_common.kafka import create_consumer, start_client
from indutech_iot_aggregator.worker import IotAggregatorWorker
from tests.integration.iot_aggregator.conftest import (
    BASE_TIME,
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
)
from tests.support.stack import StackSettings


async def dead_letters(stack: StackSettings, topic: str, expected: int) -> list[dict[str, str]]:
    """The headers of the dead letters (``reason``, ``source``, ``offset``, ``error``)."""
    consumer = create_consumer(stack.kafka, topic, group_id=None)
    await start_client(consumer, stack.kafka)
    found: list[dict[str, str]] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while len(found) < expected and loop.time() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                found += [{k: v.decode() for k, v in r.headers} for r in records]
    finally:
        await consumer.stop()
    return found


class TestAggregates:
    async def test_views_equal_the_reference_aggregation_exactly(
        self, stack: StackSettings, names: Names
    ) -> None:
        """Tickets and readings over four windows and two partitions each: every row of the
        views equals the aggregation of what was produced (exact decimals), all final; the
        offsets table holds each partition's end; bad records are dead-lettered with reason."""
        tickets = [client_ticket(i, BASE_TIME + timedelta(seconds=i * 0.8)) for i in range(300)]
        readings = [sensor_reading(i, BASE_TIME + timedelta(seconds=i)) for i in range(240)]
        bad = [
            b"{not json",
            json.dumps({"ticket_id": "x", "customer_id": "c", "region": "r"}).encode(),
            # revenue as a float: refused by the contract (it would have lost digits)
            client_ticket(1, BASE_TIME).model_dump(mode="json") | {"revenue": 1.1},
        ]
        await produce(stack, names.ticket_topic, tickets)
        await produce(stack, names.sensor_topic, readings)
        await produce(
            stack,
            names.ticket_topic,
            [b if isinstance(b, bytes) else json.dumps(b).encode() for b in bad],
        )
        want_tickets = expected_tickets(tickets)
        want_readings = expected_readings(readings)
        assert len(want_tickets) > 20  # several windows, customers and regions

        async with running_worker(stack, names) as worker:
            got_tickets = await wait_for(
                lambda: view_tickets(stack, names.schema), lambda v: v == want_tickets
            )
            got_readings = await wait_for(
                lambda: view_readings(stack, names.schema), lambda v: v == want_readings
            )
            finals = await wait_for(
                lambda: fetch(
                    stack, names.schema, "SELECT bool_and(final) AS f FROM ticket_aggregates"
                ),
                lambda rows: rows[0]["f"] is True,
            )
            metric = worker.metrics.registry.get_sample_value
            labels = {"worker": "iot-aggregator"}
            ticket_stream = {**labels, "stream": names.ticket_topic}
            # the seed's alarm: now minus the end of the newest window written final
            ingestion_lag = metric("indutech_iot_aggregator_ingestion_lag_seconds", labels)
            event_lag = metric("indutech_lag_seconds", ticket_stream)
            records_out = metric("indutech_records_out_total", ticket_stream)
            dead = metric(
                "indutech_dead_lettered_records_total", {**labels, "reason": "schema_validation"}
            )
        assert got_tickets == want_tickets
        assert got_readings == want_readings
        assert finals[0]["f"] is True
        newest_end = BASE_TIME + timedelta(seconds=240)  # the last events (239 s) end at 240 s
        assert ingestion_lag is not None
        assert abs(ingestion_lag - (datetime.now(UTC) - newest_end).total_seconds()) < 10
        assert event_lag is not None
        assert event_lag > 0
        assert records_out == len(tickets) + len(bad)
        assert dead == 2
        revenue = sum(v[1] for v in got_tickets.values())
        assert revenue == sum((t.revenue for t in tickets), Decimal("0.00"))

        offsets = await fetch(
            stack,
            names.schema,
            "SELECT topic, sum(next_offset) AS n FROM consumer_offsets "
            "WHERE consumer_group = $1 GROUP BY topic",
            names.group_id,
        )
        assert {r["topic"]: r["n"] for r in offsets} == {
            names.ticket_topic: len(tickets) + len(bad),
            names.sensor_topic: len(readings),
        }
        letters = await dead_letters(stack, names.dead_letter_topic, len(bad))
        assert Counter(h["reason"] for h in letters) == Counter(
            {"invalid_json": 1, "schema_validation": 2}
        )
        assert all(h["source"].startswith(f"{names.ticket_topic}[") for h in letters)
        assert any("never a float" in h["error"] for h in letters)

    async def test_late_events_are_dead_lettered_or_corrected_by_setting(
        self, stack: StackSettings, names: Names
    ) -> None:
        """An open window is written provisionally (final false); an event past end + grace
        closes it (final true); a later event for it is dead-lettered with reason late_event
        under late_policy=dead_letter, and never counted."""
        p0 = {"partition": 0}
        async with running_worker(stack, names, late_policy="dead_letter", idle_close_s=600):
            await produce(
                stack,
                names.ticket_topic,
                [client_ticket(0, BASE_TIME + timedelta(seconds=5))],
                **p0,
            )
            provisional = await wait_for(
                lambda: fetch(stack, names.schema, "SELECT * FROM ticket_aggregates"),
                lambda rows: len(rows) == 1,
            )
            assert provisional[0]["ticket_count"] == 1
            assert provisional[0]["final"] is False
            # 66 s: past the window's end (60 s) plus grace (5 s): the first window closes
            await produce(
                stack,
                names.ticket_topic,
                [client_ticket(5, BASE_TIME + timedelta(seconds=66))],
                **p0,
            )
            closed = await wait_for(
                lambda: fetch(
                    stack,
                    names.schema,
                    "SELECT final FROM ticket_aggregates WHERE window_start = $1",
                    BASE_TIME,
                ),
                lambda rows: rows and rows[0]["final"] is True,
            )
            assert closed[0]["final"] is True
            late = client_ticket(10, BASE_TIME + timedelta(seconds=30))
            await produce(stack, names.ticket_topic, [late], **p0)
            letters = await dead_letters(stack, names.dead_letter_topic, 1)
        assert [h["reason"] for h in letters] == ["late_event"]
        assert "late_policy=correction" in letters[0]["error"]
        rows = await fetch(
            stack,
            names.schema,
            "SELECT ticket_count, late_events FROM ticket_aggregates WHERE window_start = $1",
            BASE_TIME,
        )
        assert [(r["ticket_count"], r["late_events"]) for r in rows] == [(1, 0)]


class TestWarehouseIsTheTruth:
    async def test_offsets_reset_under_a_running_worker_fence_it_and_it_rereads(
        self, stack: StackSettings, names: Names
    ) -> None:
        """An operator recomputes from the topics while the worker runs (rows and offsets
        deleted, as the runbook says): the worker's next write is fenced, it re-reads every
        partition from the warehouse's (now empty) offsets, never from Kafka's committed
        ones, and the views hold every record exactly once."""
        first = [client_ticket(i, BASE_TIME + timedelta(seconds=i)) for i in range(20)]
        later = [client_ticket(i, BASE_TIME + timedelta(seconds=i)) for i in range(20, 30)]
        with capture_logs() as logs:
            async with running_worker(stack, names, emit_interval_s=0.2):
                await produce(stack, names.ticket_topic, first)
                want = expected_tickets(first)
                await wait_for(lambda: view_tickets(stack, names.schema), lambda v: v == want)
                await fetch(
                    stack,
                    names.schema,
                    "WITH a AS (DELETE FROM ticket_aggregates_partial RETURNING 1), "
                    "b AS (DELETE FROM reading_aggregates_partial RETURNING 1) "
                    "DELETE FROM consumer_offsets RETURNING 1",
                )
                await produce(stack, names.ticket_topic, later)
                want = expected_tickets(first + later)
                got = await wait_for(lambda: view_tickets(stack, names.schema), lambda v: v == want)
        assert got == want
        events = [e["event"] for e in logs]
        assert "write_fenced" in events, "the worker never noticed the offsets moved under it"
        after = logs[events.index("write_fenced") :]
        again = [e for e in after if e["event"] == "partition_ready"]
        assert again, "fenced partitions were not positioned again"
        assert all(e["next_offset"] is None for e in again), "not re-read from the start"


class TestStartUp:
    async def test_a_missing_topic_stops_the_start_naming_it(
        self, stack: StackSettings, names: Names
    ) -> None:
        """The topic contract is checked before anything is read: exit 2, the topic named."""
        missing = f"{names.dead_letter_topic}.missing"
        worker = IotAggregatorWorker(settings_for(stack, names, dead_letter_topic=missing))
        with capture_logs() as logs:
            assert await worker.serve(install_signal_handlers=False) == 2
        assert missing in str(logs)
