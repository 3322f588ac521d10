"""Parquet encoding of one planned object: explicit schema, zstd, microsecond UTC timestamps."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.json as pa_json
import pyarrow.parquet as pq
from pydantic import BaseModel

from indutech_common.schemas.arrow import arrow_schema

KAFKA_COLUMNS = (
    pa.field("kafka_partition", pa.int32(), nullable=False),
    pa.field("kafka_offset", pa.int64(), nullable=False),
)
# A whole canonical record always fits one JSON block.
JSON_BLOCK_BYTES = 4 * 1024 * 1024


class ParquetEncoder:
    """Builds the Parquet bytes of one object from canonical JSON records of one model."""

    def __init__(self, model: type[BaseModel]) -> None:
        self.record_schema = arrow_schema(model)
        self.schema = pa.schema([*self.record_schema, *KAFKA_COLUMNS])
        self._parse = pa_json.ParseOptions(
            explicit_schema=self.record_schema, unexpected_field_behavior="error"
        )
        self._read = pa_json.ReadOptions(use_threads=False, block_size=JSON_BLOCK_BYTES)

    def table(self, values: list[bytes], partition: int, offsets: list[int]) -> pa.Table:
        records = pa_json.read_json(
            io.BytesIO(b"\n".join(values)), read_options=self._read, parse_options=self._parse
        )
        records = records.select(self.record_schema.names).cast(self.record_schema)
        columns = [
            *records.columns,
            pa.array([partition] * len(offsets), pa.int32()),
            pa.array(offsets, pa.int64()),
        ]
        return pa.Table.from_arrays(columns, schema=self.schema)

    def encode(self, values: list[bytes], partition: int, offsets: list[int]) -> bytes:
        sink = io.BytesIO()
        pq.write_table(
            self.table(values, partition, offsets),
            sink,
            compression="zstd",
            coerce_timestamps="us",
            allow_truncated_timestamps=False,
            write_statistics=True,
        )
        return sink.getvalue()
