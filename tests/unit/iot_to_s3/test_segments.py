"""Segments: lake keys, the per-hour plan, and when a segment is sealed."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from indutech_iot_to_s3.config import RotationSettings
from indutech_iot_to_s3.segments import Segment, lake_key

T0 = datetime(2026, 3, 1, 10, 15, tzinfo=UTC)


def filled(offsets_and_minutes: Sequence[tuple[int, int | None]]) -> Segment:
    segment = Segment("iot.sensor-readings.v1", 3)
    for offset, minutes in offsets_and_minutes:
        if minutes is None:
            segment.add(offset, None, None)
        else:
            segment.add(offset, b"{}", T0 + timedelta(minutes=minutes))
    return segment


class TestLakeKey:
    def test_key_follows_the_design_layout(self) -> None:
        """Hive partitions by event hour, then topic+partition+first offset on 20 digits."""
        key = lake_key("p/", "iot.x.v1", T0.astimezone(), 2, 42)
        assert key == (
            "p/iot/iot.x.v1/year=2026/month=03/day=01/hour=10/"
            "iot.x.v1+2+00000000000000000042.parquet"
        )


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


class TestRotation:
    def test_reasons_in_order(self) -> None:
        """Count, bytes, age and idleness each seal a segment; an empty one never."""
        rotation = RotationSettings(max_records=3, max_bytes=10_000, max_age_s=5, idle_s=2)
        segment = Segment("t", 0)
        assert segment.rotation_due(rotation, 0) is None
        segment.add(1, b"x" * 10, T0)
        now = segment.opened_at
        assert segment.rotation_due(rotation, now) is None
        assert segment.rotation_due(rotation, now + 2.5) == "idle"
        assert segment.rotation_due(rotation, now + 6) == "max_age"
        segment.add(2, b"x" * 10, T0)
        segment.add(3, b"x" * 10, T0)
        assert segment.rotation_due(rotation, now) == "max_records"
        big = Segment("t", 0)
        big.add(1, b"x" * 20_000, T0)
        assert big.rotation_due(rotation, big.opened_at) == "max_bytes"

    def test_a_replay_ends_only_at_its_recorded_end(self) -> None:
        """Whatever the current settings, a replayed segment is sealed at its intent's end."""
        rotation = RotationSettings(max_records=1, max_bytes=1, max_age_s=0.001, idle_s=0.001)
        segment = Segment("t", 0, replay_end=12)
        segment.add(10, b"{}", T0)
        assert segment.rotation_due(rotation, segment.opened_at + 100) is None
        segment.add(12, b"{}", T0)
        assert segment.rotation_due(rotation, segment.opened_at) == "replay_complete"
