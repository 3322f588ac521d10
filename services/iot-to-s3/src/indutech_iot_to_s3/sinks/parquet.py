"""Parquet encoding of one planned object: the lake's columns, zstd, microsecond UTC timestamps."""

from __future__ import annotations

import io
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from indutech_common.parquet import writer_options
from indutech_common.schemas.arrow import arrow_schema
from indutech_common.schemas.lake import OFFSET_COLUMN, PARTITION_FIELD, lake_schema
from indutech_iot_to_s3.batches import batch_schema

# Columns that are (nearly) unique per record: a dictionary only costs time and, as its
# indices do not compress, size. Every other column is dictionary-encoded.
PLAIN_COLUMNS = frozenset({"event_id", "event_time", "ticket_id", OFFSET_COLUMN})


class ParquetEncoder:
    """Builds the Parquet bytes of one object from buffered batches of one model."""

    def __init__(self, model: type[BaseModel]) -> None:
        self.record_schema = arrow_schema(model)
        self.batch_schema = batch_schema(self.record_schema)
        self.schema = lake_schema(model)
        self._options = writer_options(
            dictionary_columns=[n for n in self.schema.names if n not in PLAIN_COLUMNS],
            coerce_timestamps="us",
        )

    def table(self, batches: Sequence[pa.RecordBatch], partition: int) -> pa.Table:
        """The rows of ``batches`` (model columns + ``kafka_offset``) with ``kafka_partition``."""
        records = pa.Table.from_batches(list(batches), schema=self.batch_schema)
        column = pa.repeat(pa.scalar(partition, pa.int32()), records.num_rows)
        position = len(self.record_schema)
        return records.add_column(position, PARTITION_FIELD, column)

    def encode(self, batches: Sequence[pa.RecordBatch], partition: int) -> bytes:
        sink = io.BytesIO()
        pq.write_table(self.table(batches, partition), sink, **self._options)
        return sink.getvalue()
