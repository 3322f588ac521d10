"""Property: whatever rows hypothesis draws (every type sql-backup writes, NULLs anywhere,
batches cut at any row), copy_arrow_batches stores exactly what PostgreSQL's own text
parser stores for the same values: compared by the server, value by value and text by text."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from indutech_common.warehouse import connect_warehouse, copy_arrow_batches
from tests.support.stack import StackSettings


@dataclass(frozen=True)
class Column:
    name: str
    pg: str
    arrow: pa.DataType
    values: st.SearchStrategy[Any]
    text: Callable[[Any], str] = str


def _float_text(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(value)


def _decimals(precision: int, scale: int) -> st.SearchStrategy[Decimal]:
    """Every value of numeric(precision, scale); built from text, which Decimal keeps exact
    (its arithmetic would round to 28 digits)."""
    return st.integers(-(10**precision) + 1, 10**precision - 1).map(
        lambda digits: Decimal(f"{digits}E-{scale}")
    )


_CHARACTERS = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")
_KEYS = st.text(_CHARACTERS, max_size=5)
_TEXT = st.text(_CHARACTERS, max_size=40)
_FLOAT32 = st.floats(width=32)
_UTC_TIMES = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59))

COLUMNS = [
    Column("i2", "smallint", pa.int16(), st.integers(-(2**15), 2**15 - 1)),
    Column("tiny", "smallint", pa.uint8(), st.integers(0, 255)),
    Column("i4", "integer", pa.int32(), st.integers(-(2**31), 2**31 - 1)),
    Column("i8", "bigint", pa.int64(), st.integers(-(2**63), 2**63 - 1)),
    Column("money", "numeric(18,4)", pa.decimal128(18, 4), _decimals(18, 4), "{:f}".format),
    Column("wide", "numeric(38,10)", pa.decimal128(38, 10), _decimals(38, 10), "{:f}".format),
    Column("free", "numeric", pa.decimal128(30, 9), _decimals(30, 9), "{:f}".format),
    Column("f8", "double precision", pa.float64(), st.floats(), _float_text),
    Column("f4", "real", pa.float32(), _FLOAT32, _float_text),
    Column("ok", "boolean", pa.bool_(), st.booleans()),
    Column("txt", "text", pa.string(), _TEXT),
    Column("vc", "varchar(40)", pa.large_string(), _TEXT),
    Column("d", "date", pa.date32(), st.dates(), date.isoformat),
    Column("ts", "timestamp", pa.timestamp("us"), _UTC_TIMES, datetime.isoformat),
    Column(
        "tz",
        "timestamptz",
        pa.timestamp("us", tz="UTC"),
        _UTC_TIMES.map(lambda v: v.replace(tzinfo=UTC)),
        datetime.isoformat,
    ),
    Column("t", "time", pa.time64("us"), st.times(), time.isoformat),
    Column("bin", "bytea", pa.binary(), st.binary(max_size=40), lambda v: "\\x" + v.hex()),
    Column("u", "uuid", pa.string(), st.uuids().map(str)),
    Column(
        "j",
        "jsonb",
        pa.string(),
        st.dictionaries(_KEYS, st.integers() | _KEYS, max_size=3).map(json.dumps),
    ),
]
_ROW = st.tuples(*(st.none() | c.values for c in COLUMNS))


async def _check(stack: StackSettings, rows: list[tuple[Any, ...]], cuts: list[int]) -> None:
    connection = await connect_warehouse(stack.warehouse)
    try:
        ddl = ", ".join(f"{c.name} {c.pg}" for c in COLUMNS)
        await connection.execute(f"CREATE TEMP TABLE loaded (id int, {ddl})")
        await connection.execute(f"CREATE TEMP TABLE expected (id int, {ddl})")
        # The reference: every value as text, parsed by the server (no client codec).
        texts = [
            [None if row[i] is None else c.text(row[i]) for row in rows]
            for i, c in enumerate(COLUMNS)
        ]
        casts = ", ".join(f"CAST(${i + 2} AS text[])" for i in range(len(COLUMNS)))
        typed = ", ".join(f"CAST(u.{c.name} AS {c.pg})" for c in COLUMNS)
        names = ", ".join(c.name for c in COLUMNS)
        await connection.execute(
            f"INSERT INTO expected SELECT u.id, {typed} FROM unnest($1::int[], {casts}) "  # noqa: S608
            f"AS u(id, {names})",
            list(range(len(rows))),
            *texts,
        )
        table = pa.table(
            {"id": pa.array(range(len(rows)), pa.int32())}
            | {c.name: pa.array([row[i] for row in rows], c.arrow) for i, c in enumerate(COLUMNS)}
        )
        edges = sorted({0, len(rows), *(cut % (len(rows) + 1) for cut in cuts)})
        batches = [
            table.slice(lo, hi - lo).combine_chunks().to_batches()[0]
            for lo, hi in itertools.pairwise(edges)
            if hi > lo
        ]
        assert await copy_arrow_batches(connection, "loaded", batches) == len(rows)
        differ = " OR ".join(
            f"l.{c.name} IS DISTINCT FROM e.{c.name} "
            f"OR CAST(l.{c.name} AS text) IS DISTINCT FROM CAST(e.{c.name} AS text)"
            for c in COLUMNS
        )
        mismatches = await connection.fetch(
            f"SELECT l.*, e.* FROM loaded l FULL JOIN expected e ON l.id = e.id "  # noqa: S608
            f"WHERE l.id IS NULL OR e.id IS NULL OR {differ} LIMIT 3"
        )
        assert not mismatches, [tuple(m.values()) for m in mismatches]
    finally:
        await connection.close()


class TestEncodingAgainstPostgres:
    @settings(
        max_examples=20,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        rows=st.lists(_ROW, min_size=5, max_size=60),
        cuts=st.lists(st.integers(min_value=0, max_value=60), max_size=4),
    )
    def test_binary_copy_stores_what_the_text_parser_stores(
        self, stack: StackSettings, rows: list[tuple[Any, ...]], cuts: list[int]
    ) -> None:
        """Every type, NULLs anywhere, batches cut at any row: the loaded table equals the
        one PostgreSQL builds from the values' text (exact decimals, extreme integers,
        dates and timestamps from year 1 to 9999, NaN and infinities, any Unicode)."""
        asyncio.run(_check(stack, rows, cuts))
