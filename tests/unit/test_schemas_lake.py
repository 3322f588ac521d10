"""The lake's key layout and columns (indutech_common.schemas.lake) against the recorded v1
sample (tests/unit/samples/lake_v1.json, written from iot-to-s3's own code before the layout
moved to common): objects written before the move are still found and read."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from indutech_common.schemas import ClientTicket, SensorReading
from indutech_common.schemas.lake import hours_overlapping, lake_schema, object_key

HOUR = datetime(2026, 3, 1, 10, tzinfo=UTC)
SAMPLE: dict[str, Any] = json.loads(
    (Path(__file__).parent / "samples" / "lake_v1.json").read_text(encoding="utf-8")
)


class TestLakeContract:
    def test_recorded_key_sample_v1(self) -> None:
        """The layout of DESIGN.md, to the character."""
        assert object_key("", "iot.client-tickets.v1", HOUR, 3, 42) == (
            "iot/iot.client-tickets.v1/year=2026/month=03/day=01/hour=10/"
            "iot.client-tickets.v1+3+00000000000000000042.parquet"
        )

    def test_keys_agree_with_the_recorded_sample(self) -> None:
        """The key iot-to-s3 wrote before the move, given the hour in any time zone."""
        recorded = SAMPLE["key"]
        hour = datetime.fromisoformat(recorded["hour"])
        for moment in (hour, hour.astimezone(timezone(timedelta(hours=1)))):
            key = object_key(
                recorded["prefix"],
                recorded["topic"],
                moment,
                recorded["partition"],
                recorded["first_offset"],
            )
            assert key == recorded["key"]

    @pytest.mark.parametrize("model", [SensorReading, ClientTicket])
    def test_columns_agree_with_the_recorded_sample(
        self, model: type[SensorReading] | type[ClientTicket]
    ) -> None:
        """Model columns, then kafka_partition int32 and kafka_offset int64, as written in v1."""
        schema = lake_schema(model)
        columns = [{"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in schema]
        assert columns == SAMPLE["columns"][model.__name__]
        assert schema.field("kafka_partition").type == pa.int32()
        assert schema.field("kafka_offset").type == pa.int64()

    def test_hours_overlapping_a_range(self) -> None:
        """Every hour folder that can hold an event time of [start, end)."""
        start = HOUR + timedelta(minutes=59)
        assert list(hours_overlapping(start, HOUR + timedelta(hours=2))) == [
            HOUR,
            HOUR + timedelta(hours=1),
        ]
        assert list(hours_overlapping(HOUR, HOUR + timedelta(hours=1))) == [HOUR]
