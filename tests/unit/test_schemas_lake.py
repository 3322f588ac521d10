"""The lake's key layout and columns (indutech_common.schemas.lake): a recorded sample, and
agreement with what iot-to-s3 writes today."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pyarrow as pa

from indutech_common.schemas import ClientTicket, SensorReading
from indutech_common.schemas.lake import hours_overlapping, lake_schema, object_key
from indutech_iot_to_s3.segments import lake_key
from indutech_iot_to_s3.sinks.parquet import ParquetEncoder

HOUR = datetime(2026, 3, 1, 10, tzinfo=UTC)


class TestLakeContract:
    def test_recorded_key_sample_v1(self) -> None:
        """The layout of DESIGN.md, to the character."""
        assert object_key("", "iot.client-tickets.v1", HOUR, 3, 42) == (
            "iot/iot.client-tickets.v1/year=2026/month=03/day=01/hour=10/"
            "iot.client-tickets.v1+3+00000000000000000042.parquet"
        )

    def test_keys_agree_with_the_writer(self) -> None:
        """iot-to-s3's keys are the contract's, in any time zone the hour is given."""
        paris = HOUR.astimezone(timezone(timedelta(hours=1)))
        for prefix, moment in (("", HOUR), ("tests/x/", paris)):
            assert object_key(prefix, "t", moment, 1, 7) == lake_key(prefix, "t", moment, 1, 7)

    def test_columns_agree_with_the_writer(self) -> None:
        """Model columns, then kafka_partition int32 and kafka_offset int64."""
        for model in (SensorReading, ClientTicket):
            schema = lake_schema(model)
            assert schema == ParquetEncoder(model).schema
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
