"""How the workers write Parquet: one set of writer options for every file they upload.

zstd, column statistics (readers prune row groups by them), and no silent loss
of precision: a timestamp coerced to a coarser unit that would drop digits
raises instead. Which columns get a dictionary is the caller's choice (it
depends on the data: only columns whose values repeat gain from one), and so is
``coerce_timestamps`` (the lake stores microseconds; a backup keeps each
column's own unit). The same options fit ``pq.write_table`` and
``pq.ParquetWriter``. Uploaded objects carry ``indutech_common.s3.PARQUET_CONTENT_TYPE``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

COMPRESSION = "zstd"


def writer_options(
    *,
    dictionary_columns: Iterable[str],
    coerce_timestamps: Literal["ms", "us"] | None = None,
) -> dict[str, Any]:
    """Keyword arguments for ``pq.write_table(table, sink, **options)`` or ``pq.ParquetWriter``."""
    return {
        "compression": COMPRESSION,
        "use_dictionary": list(dictionary_columns),
        "coerce_timestamps": coerce_timestamps,
        "allow_truncated_timestamps": False,
        "write_statistics": True,
    }
