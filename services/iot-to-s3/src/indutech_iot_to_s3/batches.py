"""The batch that passes from the source to the segments and the sinks: Arrow columns.

A buffered batch holds the valid records of one poll of one partition: the
record model's columns (``arrow_schema``), then ``kafka_offset``. The lake's
objects add ``kafka_partition`` before the offset (``indutech_common.schemas.lake``).
The source builds these batches and the sinks encode them; neither imports the other.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from indutech_common.schemas.lake import OFFSET_COLUMN, OFFSET_FIELD

EVENT_TIME_COLUMN = "event_time"

__all__ = ["EVENT_TIME_COLUMN", "OFFSET_COLUMN", "batch_schema", "row_bytes"]


def batch_schema(record_schema: pa.Schema) -> pa.Schema:
    """The columns of a buffered batch: the record's, then ``kafka_offset``."""
    return pa.schema([*record_schema, OFFSET_FIELD])


def row_bytes(batch: pa.RecordBatch) -> pa.Array:
    """The Arrow bytes of each row: fixed widths, string lengths and their 4-byte offsets.

    A pure function of the row (unlike the ``nbytes`` of a slice), so a segment's size
    does not depend on how its records were polled.
    """
    fixed = 0
    sizes: pa.Array | None = None
    for column in batch.columns:
        if pa.types.is_string(column.type) or pa.types.is_binary(column.type):
            fixed += 4
            lengths = pc.fill_null(pc.binary_length(column), 0).cast(pa.int64())
            sizes = lengths if sizes is None else pc.add(sizes, lengths)
        else:
            fixed += max(1, column.type.bit_width // 8)
    if sizes is None:
        return pa.repeat(pa.scalar(fixed, pa.int64()), batch.num_rows)
    return pc.add(sizes, fixed)
