"""Records validated into Arrow columns; Parquet written with the explicit schema of the models."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq

from indutech_common.schemas import ClientTicket, SensorReading
from indutech_common.schemas.arrow import arrow_schema
from indutech_common.schemas.lake import lake_schema
from indutech_iot_to_s3.batches import row_bytes
from indutech_iot_to_s3.sinks import ParquetEncoder
from indutech_iot_to_s3.sources import RecordCodec

CODEC = RecordCodec(sensor_topic="s", ticket_topic="t")
TICKET = (
    b'{"ticket_id":"t1","customer_id":"c1","region":"emea","event_time":'
    b'"2026-03-01T12:30:00.123456+02:00","revenue":"12345678901234.56","latency_ms":5,'
    b'"status":"open","event_id":"e1"}'
)


def ticket(number: int, **changes: object) -> bytes:
    fields: dict[str, object] = {
        "ticket_id": f"t{number}",
        "customer_id": " c1 ",
        "region": "emea",
        "event_time": "2026-03-01T12:30:00.5+02:00",
        "revenue": "10.5",
        "latency_ms": number,
        "status": "open",
        **changes,
    }
    return ClientTicket.model_validate(fields).model_dump_json().encode()


class TestArrowSchema:
    def test_types_come_from_the_models(self) -> None:
        """Money is decimal128(18, 2), times are UTC microseconds, optional fields nullable."""
        tickets = arrow_schema(ClientTicket)
        assert tickets.field("revenue").type == pa.decimal128(18, 2)
        assert tickets.field("event_time").type == pa.timestamp("us", tz="UTC")
        assert not tickets.field("event_time").nullable
        assert tickets.field("event_id").nullable
        assert arrow_schema(SensorReading).field("value").type == pa.float64()


class TestDecodeBatch:
    def test_canonical_columns_are_utc_with_exact_revenue(self) -> None:
        """An offset timestamp becomes UTC; revenue an exact decimal; enums their value."""
        decoded = CODEC.decode_batch("t", [7], [TICKET])
        assert decoded.rejected == []
        assert decoded.valid is not None
        (row,) = decoded.valid.to_pylist()
        assert row["event_time"] == datetime(2026, 3, 1, 10, 30, 0, 123456, tzinfo=UTC)
        assert row["revenue"] == Decimal("12345678901234.56")
        assert row["status"] == "open"
        assert row["kafka_offset"] == 7
        assert decoded.valid.schema == CODEC.batch_schema("t")

    def test_bad_records_in_the_middle_are_refused_with_their_reason(self) -> None:
        """Valid rows keep their order and offsets; each refusal names its record and reason."""
        values: list[bytes | None] = [
            ticket(1),
            b"{nope",
            ticket(2),
            b'{"ticket_id":"x"}',
            None,
            ticket(3, latency_ms=2**70),  # valid for the model, too big for int64
            b"",
            ticket(4),
        ]
        offsets = [100 + i for i in range(len(values))]
        decoded = CODEC.decode_batch("t", offsets, values)
        assert [(r.index, r.reason) for r in decoded.rejected] == [
            (1, "invalid_json"),
            (3, "schema_validation"),
            (4, "empty_value"),
            (5, "out_of_range"),
            (6, "empty_value"),
        ]
        assert all(r.detail for r in decoded.rejected)
        assert decoded.valid is not None
        assert decoded.valid.column("kafka_offset").to_pylist() == [100, 102, 107]
        assert decoded.valid.column("latency_ms").to_pylist() == [1, 2, 4]
        assert decoded.valid.column("customer_id").to_pylist() == ["c1"] * 3  # stripped
        assert decoded.valid_count == 3

    def test_row_bytes_are_the_arrow_bytes_of_each_row(self) -> None:
        """Fixed widths plus string lengths and offsets: the batch's own buffers, row by row."""
        values = [ticket(1), ticket(2, event_id="e" * 50), ticket(3, region="nordics")]
        valid = CODEC.decode_batch("t", [1, 2, 3], values).valid
        assert valid is not None
        sizes = row_bytes(valid).to_pylist()
        assert sizes[1] - sizes[0] == 50  # a null event_id costs only its 4-byte offset
        assert sizes[2] - sizes[0] == len("nordics") - len("emea")
        # what the rows do not account for: one more offset per string column, bitmaps
        assert sum(sizes) <= valid.nbytes <= sum(sizes) + 8 * valid.num_columns

    def test_a_batch_with_no_valid_record(self) -> None:
        """Nothing valid: no Arrow batch, every record refused."""
        decoded = CODEC.decode_batch("s", [1, 2], [b"[]", b"{}"])
        assert decoded.valid is None
        assert decoded.valid_count == 0
        assert [r.reason for r in decoded.rejected] == ["schema_validation"] * 2


class TestParquet:
    def test_file_is_zstd_with_exact_decimals_and_kafka_columns(self) -> None:
        """Read back: the same decimal, microsecond UTC time, partition and offsets, zstd."""
        first = CODEC.decode_batch("t", [7], [TICKET]).valid
        second = CODEC.decode_batch("t", [9], [TICKET]).valid
        assert first is not None
        assert second is not None
        encoder = ParquetEncoder(ClientTicket)
        body = encoder.encode([first, second], 4)
        parquet = pq.ParquetFile(io.BytesIO(body))
        assert parquet.metadata.row_group(0).column(0).compression == "ZSTD"
        table = parquet.read()
        assert table.schema == encoder.schema
        assert table.column("revenue").to_pylist() == [Decimal("12345678901234.56")] * 2
        assert table.schema.field("event_time").type == pa.timestamp("us", tz="UTC")
        assert table.column("kafka_partition").to_pylist() == [4, 4]
        assert table.column("kafka_offset").to_pylist() == [7, 9]


class TestLakeColumns:
    def test_the_encoder_writes_the_lake_contract(self) -> None:
        """What iot-to-s3 writes has exactly indutech_common.schemas.lake's columns."""
        for model in (SensorReading, ClientTicket):
            assert ParquetEncoder(model).schema == lake_schema(model)
