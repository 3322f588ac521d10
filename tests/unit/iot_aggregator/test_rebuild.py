"""``rebuild``'s pure parts: the range cut into chunks of whole windows, and the pyarrow
aggregation of lake records, which must give exactly the stream's partial aggregates."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from decimal import Decimal
from itertools import pairwise
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from indutech_common.schemas import ClientTicket, SensorReading
from indutech_common.schemas.lake import OFFSET_COLUMN, PARTITION_COLUMN, lake_schema
from indutech_iot_aggregator.rebuild import RebuildReport, aggregate, chunk_bounds
from indutech_iot_aggregator.sources.lake import READING_COLUMNS, TICKET_COLUMNS
from indutech_iot_aggregator.windows import (
    US_PER_S,
    PartitionBatch,
    PartitionWindows,
    WindowSpec,
    from_us,
    to_us,
)

T0 = to_us(datetime(2026, 3, 1, 10, 0, tzinfo=UTC))
MINUTE = 60 * US_PER_S
HOUR = 60 * MINUTE
TICKETS, READINGS = "tickets", "readings"


class TestChunkBounds:
    def test_hour_chunks_follow_the_lake_hour_folders(self) -> None:
        """Boundaries sit on whole hours since the epoch; the first and last chunks are
        cut by the range."""
        chunks = list(
            chunk_bounds(T0 + 30 * MINUTE, T0 + 150 * MINUTE, window_us=MINUTE, chunk_s=3600)
        )
        assert chunks == [
            (T0 + 30 * MINUTE, T0 + HOUR),
            (T0 + HOUR, T0 + 2 * HOUR),
            (T0 + 2 * HOUR, T0 + 150 * MINUTE),
        ]

    def test_a_chunk_is_whole_windows_and_one_window_at_least(self) -> None:
        """A chunk length is rounded down to whole windows (420 s windows, 3600 s asked:
        8 windows); one shorter than a window is one window."""
        window = 420 * US_PER_S
        start = 1000 * window
        chunks = list(chunk_bounds(start, start + 20 * window, window_us=window, chunk_s=3600))
        assert all((high - low) % window == 0 for low, high in chunks)
        assert max(high - low for low, high in chunks) == 8 * window
        assert chunks[0][0] == start
        assert chunks[-1][1] == start + 20 * window
        assert list(chunk_bounds(T0, T0 + 3 * MINUTE, window_us=MINUTE, chunk_s=1)) == [
            (T0, T0 + MINUTE),
            (T0 + MINUTE, T0 + 2 * MINUTE),
            (T0 + 2 * MINUTE, T0 + 3 * MINUTE),
        ]

    @given(
        start=st.integers(-10_000, 10_000),
        windows=st.integers(1, 500),
        chunk_s=st.integers(1, 20_000),
    )
    def test_chunks_cover_the_range_once(self, start: int, windows: int, chunk_s: int) -> None:
        """Consecutive, non-empty, window-aligned, covering [start, end) exactly."""
        window = MINUTE
        low, high = start * window, (start + windows) * window
        chunks = list(chunk_bounds(low, high, window_us=window, chunk_s=chunk_s))
        assert chunks[0][0] == low
        assert chunks[-1][1] == high
        assert all(b == c for (_, b), (c, _) in pairwise(chunks))
        assert all(a < b and a % window == 0 and b % window == 0 for a, b in chunks)


def _table(model: type[Any], columns: tuple[str, ...], rows: list[dict[str, Any]]) -> pa.Table:
    schema = lake_schema(model)
    wanted = [*columns, PARTITION_COLUMN, OFFSET_COLUMN]
    return pa.Table.from_pylist(rows, schema=pa.schema([schema.field(n) for n in wanted]))


def _streamed(
    tickets: list[dict[str, Any]],
    readings: list[dict[str, Any]],
    positions: dict[tuple[str, int], int],
) -> dict[tuple[str, int], PartitionWindows]:
    """The stream's window code, record by record in offset order, nothing late."""
    spec = WindowSpec(MINUTE, 2**62)
    windows = {key: PartitionWindows(*key, spec, "correction") for key in positions}
    for topic, rows in ((TICKETS, tickets), (READINGS, readings)):
        for row in sorted(rows, key=lambda r: (r[PARTITION_COLUMN], r[OFFSET_COLUMN])):
            key = (topic, row[PARTITION_COLUMN])
            if key not in positions or row[OFFSET_COLUMN] >= positions[key]:
                continue
            w = windows[key]
            event_us = to_us(row["event_time"])
            if topic == TICKETS:
                w.add_ticket(
                    row[OFFSET_COLUMN],
                    event_us=event_us,
                    customer_id=row["customer_id"],
                    region=row["region"],
                    revenue=row["revenue"],
                    latency_ms=row["latency_ms"],
                )
            else:
                w.add_reading(
                    row[OFFSET_COLUMN],
                    event_us=event_us,
                    sensor_id=row["sensor_id"],
                    site=row["site"],
                    metric=row["metric"],
                    value=row["value"],
                )
    return windows


record_times = st.integers(-3 * HOUR, 3 * HOUR)  # around T0, and around 1970 (negative)
ticket_rows = st.lists(
    st.tuples(
        st.integers(0, 2),  # partition
        record_times,
        st.sampled_from(["c1", "c2", "c3"]),
        st.sampled_from(["emea", "apac"]),
        st.decimals(min_value=0, max_value=Decimal("9999999999999.99"), places=2),
        st.integers(0, 10**9),
    ),
    max_size=80,
)
reading_rows = st.lists(
    st.tuples(
        st.integers(0, 2),
        record_times,
        st.sampled_from(["s1", "s2"]),
        st.sampled_from(["lyon"]),
        st.sampled_from(["t", "p"]),
        st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12),
    ),
    max_size=80,
)


class TestAggregate:
    @settings(max_examples=150, deadline=None)
    @given(
        tickets=ticket_rows,
        readings=reading_rows,
        limits=st.lists(st.integers(0, 40), min_size=6, max_size=6),
        base=st.sampled_from([T0, 0]),
        seed=st.integers(0, 2**32),
    )
    def test_equals_the_stream_window_code_record_by_record(
        self,
        tickets: list[tuple[Any, ...]],
        readings: list[tuple[Any, ...]],
        limits: list[int],
        base: int,
        seed: int,
    ) -> None:
        """Same keys, counts, exact decimal sums, float sums (same order), extremes, record
        counts and newest event per partition as ``PartitionWindows``; records at or past a
        position are left to the stream; partition 2 of the readings has no position and
        is left out. The lake objects' row order does not matter."""
        offsets: dict[tuple[str, int], int] = {}

        def offset(topic: str, partition: int) -> int:
            offsets[topic, partition] = offsets.get((topic, partition), -1) + 1
            return offsets[topic, partition]

        ticket_dicts = [
            {
                "event_time": from_us(base + t),
                "customer_id": c,
                "region": r,
                "revenue": v,
                "latency_ms": lat,
                PARTITION_COLUMN: p,
                OFFSET_COLUMN: offset(TICKETS, p),
            }
            for p, t, c, r, v, lat in tickets
        ]
        reading_dicts = [
            {
                "event_time": from_us(base + t),
                "sensor_id": s,
                "site": site,
                "metric": m,
                "value": v,
                PARTITION_COLUMN: p,
                OFFSET_COLUMN: offset(READINGS, p),
            }
            for p, t, s, site, m, v in readings
        ]
        positions = {(TICKETS, p): limits[p] for p in range(3)}
        positions |= {(READINGS, p): limits[3 + p] for p in range(2)}
        shuffled = random.Random(seed)
        lake_tickets, lake_readings = list(ticket_dicts), list(reading_dicts)
        shuffled.shuffle(lake_tickets)
        shuffled.shuffle(lake_readings)
        report = RebuildReport()

        batches = aggregate(
            tickets_topic=TICKETS,
            tickets=_table(ClientTicket, TICKET_COLUMNS, lake_tickets),
            readings_topic=READINGS,
            readings=_table(SensorReading, READING_COLUMNS, lake_readings),
            positions=positions,
            window_us=MINUTE,
            end_us=base + 4 * HOUR,
            report=report,
        )

        streamed = _streamed(ticket_dicts, reading_dicts, positions)
        by_key: dict[tuple[str, int], PartitionBatch] = {(b.topic, b.partition): b for b in batches}
        assert set(by_key) == set(positions)
        for key, want in streamed.items():
            got = by_key[key]
            assert got.tickets == want.tickets
            assert got.readings == want.readings
            assert got.records == want.records
            assert got.newest_event_us == want.newest_event_us
            assert (got.expected_offset, got.next_offset) == (positions[key], positions[key])
            assert got.closed_before_us == base + 4 * HOUR
        known = [
            r
            for r in [*ticket_dicts, *reading_dicts]
            if r[PARTITION_COLUMN] != 2 or r in ticket_dicts
        ]
        assert report.records == sum(w.records for w in streamed.values())
        assert report.left_to_stream == len(known) - report.records

    def test_revenue_sums_stay_exact_past_a_float_s_digits(self) -> None:
        """Sums beyond 2**53 cents keep every cent (decimal128, never a float)."""
        big = Decimal("9999999999999999.99")
        rows = [
            {
                "event_time": from_us(T0 + i),
                "customer_id": "c",
                "region": "r",
                "revenue": value,
                "latency_ms": 1,
                PARTITION_COLUMN: 0,
                OFFSET_COLUMN: i,
            }
            for i, value in enumerate([big, big, Decimal("0.01")])
        ]
        batches = aggregate(
            tickets_topic=TICKETS,
            tickets=_table(ClientTicket, TICKET_COLUMNS, rows),
            readings_topic=READINGS,
            readings=_table(SensorReading, READING_COLUMNS, []),
            positions={(TICKETS, 0): 3},
            window_us=MINUTE,
            end_us=T0 + MINUTE,
            report=RebuildReport(),
        )
        (aggregate_,) = batches[0].tickets.values()
        assert aggregate_.revenue == Decimal("19999999999999999.99")
        assert str(aggregate_.revenue) == "19999999999999999.99"

    @pytest.mark.parametrize("rows", [0, 1])
    def test_a_known_partition_without_records_still_gets_its_batch(self, rows: int) -> None:
        """Its rows of the chunk are replaced by nothing (they are deleted)."""
        lake = [
            {
                "event_time": from_us(T0),
                "customer_id": "c",
                "region": "r",
                "revenue": Decimal("1.00"),
                "latency_ms": 1,
                PARTITION_COLUMN: 0,
                OFFSET_COLUMN: 0,
            }
        ][:rows]
        batches = aggregate(
            tickets_topic=TICKETS,
            tickets=_table(ClientTicket, TICKET_COLUMNS, lake),
            readings_topic=READINGS,
            readings=_table(SensorReading, READING_COLUMNS, []),
            positions={(TICKETS, 0): 1, (TICKETS, 1): 5},
            window_us=MINUTE,
            end_us=T0 + MINUTE,
            report=RebuildReport(),
        )
        assert [(b.partition, b.records, len(b.tickets)) for b in batches] == [
            (0, rows, rows),
            (1, 0, 0),
        ]
