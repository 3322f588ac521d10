"""Segments: lake keys, the per-hour plan, and when a segment is sealed."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from indutech_common.schemas.lake import object_key
from indutech_iot_to_s3.batches import row_bytes
from indutech_iot_to_s3.config import RotationSettings
from indutech_iot_to_s3.segments import Poll, Segment, split_by_hour

T0 = datetime(2026, 3, 1, 10, 15, tzinfo=UTC)
SCHEMA = pa.schema(
    [
        pa.field("event_time", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("payload", pa.string()),
        pa.field("kafka_offset", pa.int64(), nullable=False),
    ]
)


def rows(offsets_and_minutes: Sequence[tuple[int, int]], payload: str = "x") -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {
            "event_time": [T0 + timedelta(minutes=m) for _, m in offsets_and_minutes],
            "payload": [payload] * len(offsets_and_minutes),
            "kafka_offset": [o for o, _ in offsets_and_minutes],
        },
        schema=SCHEMA,
    )


def filled(offsets_and_minutes: Sequence[tuple[int, int | None]], chunk: int = 1) -> Segment:
    """A segment fed ``chunk`` records at a time (None minutes: a dead-lettered record)."""
    segment = Segment("iot.sensor-readings.v1", 3)
    for i in range(0, len(offsets_and_minutes), chunk):
        part = offsets_and_minutes[i : i + chunk]
        valid = [(o, m) for o, m in part if m is not None]
        segment.add(part[0][0], part[-1][0], rows(valid) if valid else None, len(part) - len(valid))
    return segment


def contents(segment: Segment) -> dict[datetime, list[int]]:
    return {
        hour: [o for b in buffer.batches for o in b.column("kafka_offset").to_pylist()]
        for hour, buffer in segment.hours.items()
    }


class TestLakeKey:
    def test_planned_keys_are_the_lake_contract(self) -> None:
        """Each planned object is named by indutech_common.schemas.lake, whatever the zone."""
        segment = filled([(42, 0), (43, 70)])
        assert [p.key for p in segment.plan("p/")] == [
            object_key("p/", segment.topic, T0.astimezone(), 3, 42),
            object_key("p/", segment.topic, T0 + timedelta(hours=1), 3, 43),
        ]


class TestPlan:
    def test_one_object_per_hour_named_by_its_first_offset(self) -> None:
        """Late and early events go to their own hour; invalid records only widen the range."""
        segment = filled([(10, 0), (11, -120), (12, None), (13, 50), (14, 1)])
        plan = segment.plan("")
        assert [(p.hour.hour, p.first_offset, p.last_offset, p.records) for p in plan] == [
            (10, 10, 14, 2),
            (8, 11, 11, 1),
            (11, 13, 13, 1),
        ]
        assert (segment.start, segment.end, segment.records, segment.invalid) == (10, 14, 4, 1)

    def test_the_plan_is_a_pure_function_of_the_records(self) -> None:
        """The same offsets give the same keys: what makes a replay overwrite, not duplicate."""
        records = [(o, (o * 37) % 180 - 60) for o in range(100, 160)]
        assert filled(records).plan("x/") == filled(records).plan("x/")

    def test_the_plan_does_not_depend_on_how_records_were_polled(self) -> None:
        """One record at a time or in chunks of mixed hours: the same keys, the same rows."""
        records: list[tuple[int, int | None]] = [
            (o, None if o % 7 == 0 else (o * 37) % 180 - 60) for o in range(100, 160)
        ]
        one_by_one, chunked = filled(records), filled(records, chunk=13)
        assert chunked.plan("x/") == one_by_one.plan("x/")
        assert contents(chunked) == contents(one_by_one)
        assert (chunked.start, chunked.end, chunked.records, chunked.invalid) == (
            one_by_one.start,
            one_by_one.end,
            one_by_one.records,
            one_by_one.invalid,
        )


class TestSplitByHour:
    def test_hours_ascending_each_in_offset_order(self) -> None:
        """Late and early rows leave the batch for their own hour, keeping their order."""
        batch = rows([(1, 0), (2, -120), (3, 50), (4, -100), (5, 1), (6, 44)])
        pieces = split_by_hour(batch)
        assert [(h.hour, p.column("kafka_offset").to_pylist()) for h, p in pieces] == [
            (8, [2, 4]),
            (10, [1, 5, 6]),
            (11, [3]),
        ]
        assert all(h.tzinfo is UTC and h.minute == 0 for h, _ in pieces)

    def test_one_hour_is_the_batch_itself(self) -> None:
        """The usual case (everything in one hour) costs no copy."""
        batch = rows([(1, 0), (2, 44), (3, -15)])
        ((hour, piece),) = split_by_hour(batch)
        assert piece is batch
        assert hour == datetime(2026, 3, 1, 10, tzinfo=UTC)


class TestRotation:
    def test_reasons_in_order(self) -> None:
        """Count, bytes, age and idleness each seal a segment; an empty one never."""
        rotation = RotationSettings(max_records=3, max_bytes=10_000, max_age_s=5, idle_s=2)
        segment = Segment("t", 0)
        assert segment.rotation_due(rotation, 0) is None
        segment.add(1, 1, rows([(1, 0)]))
        now = segment.opened_at
        assert segment.rotation_due(rotation, now) is None
        assert segment.rotation_due(rotation, now + 2.5) == "idle"
        assert segment.rotation_due(rotation, now + 6) == "max_age"
        segment.add(2, 3, rows([(2, 0), (3, 0)]))
        assert segment.rotation_due(rotation, now) == "max_records"
        big = Segment("t", 0)
        big.add(1, 1, rows([(1, 0)], payload="x" * 20_000))
        assert big.rotation_due(rotation, big.opened_at) == "max_bytes"

    def test_a_replay_ends_only_at_its_recorded_end(self) -> None:
        """Whatever the current settings, a replayed segment is sealed at its intent's end."""
        rotation = RotationSettings(max_records=1, max_bytes=1, max_age_s=0.001, idle_s=0.001)
        segment = Segment("t", 0, replay_end=12)
        segment.add(10, 10, rows([(10, 0)]))
        assert segment.rotation_due(rotation, segment.opened_at + 100) is None
        segment.add(11, 12, rows([(12, 0)]), invalid=1)
        assert segment.rotation_due(rotation, segment.opened_at) == "replay_complete"


def feed_polls(
    polls: Sequence[Sequence[tuple[int, int | None]]],
    *,
    max_records: int = 1000,
    max_bytes: int = 10**9,
    replay_end: int | None = None,
) -> list[tuple[str | None, int | None, int | None, int, int, int]]:
    """Feed polls as the worker does: (seal reason, start, end, records, invalid, bytes)
    of every sealed segment, then of the open one."""
    segment = Segment("t", 0, replay_end=replay_end)
    sealed: list[tuple[str | None, Segment]] = []
    for records in polls:
        valid = [(o, m) for o, m in records if m is not None]
        poll = Poll([o for o, _ in records], rows(valid) if valid else None)
        while not poll.done():
            reason = poll.feed(segment, max_records=max_records, max_bytes=max_bytes)
            if reason is not None:
                sealed.append((reason, segment))
                segment = Segment("t", 0)
    sealed.append((None, segment))
    return [(r, s.start, s.end, s.records, s.invalid, s.size_bytes) for r, s in sealed]


ROW = pc.sum(row_bytes(rows([(0, 0)]))).as_py()


class TestPoll:
    def test_max_records_is_exact_across_polls(self) -> None:
        """25 records polled 7 at a time with max_records=10: segments of 10, 10 and 5."""
        records = [(o, 0) for o in range(25)]
        polls = [records[i : i + 7] for i in range(0, 25, 7)]
        assert feed_polls(polls, max_records=10) == [
            ("max_records", 0, 9, 10, 0, 10 * ROW),
            ("max_records", 10, 19, 10, 0, 10 * ROW),
            (None, 20, 24, 5, 0, 5 * ROW),
        ]

    def test_max_bytes_is_never_passed(self) -> None:
        """A segment holds the rows that fit; the next row starts the next segment."""
        records: list[tuple[int, int | None]] = [(o, None if o in (3, 4) else 0) for o in range(9)]
        result = feed_polls([records], max_bytes=3 * ROW + ROW // 2)
        assert result == [
            ("max_bytes", 0, 4, 3, 2, 3 * ROW),  # the dead letters 3 and 4 stay in the range
            ("max_bytes", 5, 7, 3, 0, 3 * ROW),
            (None, 8, 8, 1, 0, ROW),
        ]

    def test_a_record_larger_than_max_bytes_goes_alone(self) -> None:
        """Nothing is ever stuck: an oversize record is a segment of its own."""
        assert feed_polls([[(1, 0), (2, 0)]], max_bytes=ROW // 2) == [
            ("max_bytes", 1, 1, 1, 0, ROW),
            ("max_bytes", 2, 2, 1, 0, ROW),
            (None, None, None, 0, 0, 0),
        ]

    def test_a_replay_ends_exactly_at_its_end_offset(self) -> None:
        """Whatever max_records says, the replayed segment is [start, replay_end]."""
        polls: list[list[tuple[int, int | None]]] = [
            [(o, 0) for o in range(10, 14)],
            [(o, None if o == 15 else 0) for o in range(14, 20)],
        ]
        assert feed_polls(polls, max_records=2, replay_end=15) == [
            ("replay_complete", 10, 15, 5, 1, 5 * ROW),
            ("max_records", 16, 17, 2, 0, 2 * ROW),
            ("max_records", 18, 19, 2, 0, 2 * ROW),
            (None, None, None, 0, 0, 0),
        ]

    def test_a_replay_whose_end_offset_never_comes(self) -> None:
        """Offsets past the end (the end was compacted away) seal the replay first."""
        assert feed_polls([[(10, 0)], [(13, 0)]], replay_end=12) == [
            ("replay_complete", 10, 10, 1, 0, ROW),
            (None, 13, 13, 1, 0, ROW),
        ]
