"""Redshift's staged Parquet: the staging table's columns in order, values exact."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq

from indutech_iot_aggregator.sinks.sql import READINGS, TICKETS
from indutech_iot_aggregator.sinks.staging import encode_parquet, parquet_schema

START = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
END = datetime(2026, 3, 1, 10, 1, tzinfo=UTC)


class TestStagedParquet:
    def test_ticket_rows_round_trip_exactly(self) -> None:
        """COPY maps Parquet columns by position: same order as the table, exact decimals,
        UTC microsecond timestamps."""
        revenue = Decimal("12345678901234.56")
        row = (START, END, "c1", "emea", "t", 3, 2, revenue, 30, 2, 5, 25, 1, True, END)
        table = pq.read_table(io.BytesIO(encode_parquet(TICKETS, [row])))
        assert tuple(table.column_names) == TICKETS.columns
        assert table.schema.field("revenue_sum").type == pa.decimal128(38, 2)
        assert table.schema.field("window_start").type == pa.timestamp("us", tz="UTC")
        assert tuple(table.to_pylist()[0].values()) == row

    def test_reading_schema_matches_the_table(self) -> None:
        schema = parquet_schema(READINGS)
        assert tuple(schema.names) == READINGS.columns
        assert schema.field("value_sum").type == pa.float64()
        assert schema.field("source_partition").type == pa.int32()
