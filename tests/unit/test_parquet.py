"""indutech_common.parquet: the writer options every worker's Parquet files share."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from indutech_common.parquet import writer_options

TABLE = pa.table(
    {
        "site": pa.array(["lyon", "lyon", "porto"]),
        "at": pa.array([datetime(2026, 3, 1, tzinfo=UTC)] * 3, type=pa.timestamp("us", tz="UTC")),
    }
)


def _write(table: pa.Table, **options: object) -> pq.FileMetaData:
    sink = io.BytesIO()
    pq.write_table(table, sink, **options)
    return pq.ParquetFile(io.BytesIO(sink.getvalue())).metadata


class TestWriterOptions:
    def test_zstd_statistics_and_chosen_dictionaries(self) -> None:
        """Every column zstd with statistics; a dictionary only where the caller asked."""
        meta = _write(TABLE, **writer_options(dictionary_columns=["site"], coerce_timestamps="us"))
        site, at = meta.row_group(0).column(0), meta.row_group(0).column(1)
        assert site.compression == at.compression == "ZSTD"
        assert site.statistics is not None
        assert at.statistics is not None
        assert "RLE_DICTIONARY" in site.encodings
        assert "RLE_DICTIONARY" not in at.encodings

    def test_a_timestamp_is_never_truncated(self) -> None:
        """Nanoseconds that microseconds cannot hold raise instead of losing digits."""
        table = pa.table({"at": pa.array([1_000_000_001], type=pa.timestamp("ns", tz="UTC"))})
        with pytest.raises(pa.ArrowInvalid, match="lose data"):
            _write(table, **writer_options(dictionary_columns=[], coerce_timestamps="us"))

    def test_without_coercion_each_unit_is_kept(self) -> None:
        """coerce_timestamps=None (a backup) stores nanoseconds as nanoseconds."""
        table = pa.table({"at": pa.array([1_000_000_001], type=pa.timestamp("ns", tz="UTC"))})
        sink = io.BytesIO()
        pq.write_table(table, sink, **writer_options(dictionary_columns=[]))
        column = pq.read_table(io.BytesIO(sink.getvalue())).column("at")
        assert column.type == pa.timestamp("ns", tz="UTC")
        assert column.cast(pa.int64()).to_pylist() == [1_000_000_001]
