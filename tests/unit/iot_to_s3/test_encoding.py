"""Records made canonical, and Parquet written with the explicit schema of the models."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from indutech_common.schemas import ClientTicket, SensorReading
from indutech_common.schemas.arrow import arrow_schema
from indutech_iot_to_s3.sinks import ParquetEncoder
from indutech_iot_to_s3.sources import InvalidRecordError, RecordCodec

CODEC = RecordCodec(sensor_topic="s", ticket_topic="t")
TICKET = (
    b'{"ticket_id":"t1","customer_id":"c1","region":"emea","event_time":'
    b'"2026-03-01T12:30:00.123456+02:00","revenue":"12345678901234.56","latency_ms":5,'
    b'"status":"open","event_id":"e1"}'
)


class TestArrowSchema:
    def test_types_come_from_the_models(self) -> None:
        """Money is decimal128(18, 2), times are UTC microseconds, optional fields nullable."""
        tickets = arrow_schema(ClientTicket)
        assert tickets.field("revenue").type == pa.decimal128(18, 2)
        assert tickets.field("event_time").type == pa.timestamp("us", tz="UTC")
        assert not tickets.field("event_time").nullable
        assert tickets.field("event_id").nullable
        assert arrow_schema(SensorReading).field("value").type == pa.float64()


class TestCodec:
    def test_canonical_form_is_utc_with_exact_revenue(self) -> None:
        """An offset timestamp becomes UTC; revenue stays a two-place string."""
        value, event_time = CODEC.decode("t", TICKET)
        assert event_time == datetime(2026, 3, 1, 10, 30, 0, 123456, tzinfo=UTC)
        assert b'"2026-03-01T10:30:00.123456Z"' in value
        assert b'"revenue":"12345678901234.56"' in value

    @pytest.mark.parametrize(
        ("raw", "reason"),
        [
            (b"{nope", "invalid_json"),
            (b'{"ticket_id":"x"}', "schema_validation"),
            (b"", "empty_value"),
        ],
    )
    def test_invalid_records_name_their_reason(self, raw: bytes, reason: str) -> None:
        """Each refusal has a stable reason for the dead-letter headers and metrics."""
        with pytest.raises(InvalidRecordError) as info:
            CODEC.decode("t", raw)
        assert info.value.reason == reason


class TestParquet:
    def test_file_is_zstd_with_exact_decimals_and_kafka_columns(self) -> None:
        """Read back: the same decimal, microsecond UTC time, partition and offsets, zstd."""
        value, _ = CODEC.decode("t", TICKET)
        body = ParquetEncoder(ClientTicket).encode([value, value], 4, [7, 9])
        parquet = pq.ParquetFile(io.BytesIO(body))
        assert parquet.metadata.row_group(0).column(0).compression == "ZSTD"
        table = parquet.read()
        assert table.column("revenue").to_pylist() == [Decimal("12345678901234.56")] * 2
        assert table.schema.field("event_time").type == pa.timestamp("us", tz="UTC")
        assert table.column("kafka_partition").to_pylist() == [4, 4]
        assert table.column("kafka_offset").to_pylist() == [7, 9]
