"""copy_arrow_batches: Arrow batches into real PostgreSQL tables by pipelined binary COPY,
typed by the target's columns; exact values and NULLs round-trip, bad input loads nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, time
from decimal import Decimal
from uuid import UUID

import asyncpg
import pyarrow as pa
import pytest

from indutech_common.warehouse import (
    QUEUE_DEPTH,
    ArrowCopyError,
    connect_warehouse,
    copy_arrow_batches,
)
from tests.support.stack import StackSettings

_TABLE = """
CREATE TEMP TABLE t (
    i int, b bigint, s smallint, n numeric(12,2), nn numeric, f float8, r real, ok bool,
    tx text, vc varchar(5), d date, ts timestamp, tz timestamptz, by bytea, u uuid,
    j jsonb, tm time
)
"""


def _sample() -> pa.RecordBatch:
    return pa.record_batch(
        {
            "i": pa.array([1, None], pa.int64()),
            "b": pa.array([2**62, None]),
            "s": pa.array([3, None], pa.uint8()),
            "n": pa.array([Decimal("1234567890.12"), None], pa.decimal128(12, 2)),
            "nn": pa.array([Decimal("-0.000000000001"), None], pa.decimal128(38, 12)),
            "f": pa.array([1.5, None]),
            "r": pa.array([2.5, None], pa.float32()),
            "ok": pa.array([True, None]),
            "tx": pa.array(["héllo", None]),
            "vc": pa.array(["abc", None]),
            "d": pa.array([date(9999, 12, 31), None]),
            "ts": pa.array([datetime(1, 1, 1), None], pa.timestamp("us")),
            "tz": pa.array([datetime(2020, 1, 1, tzinfo=UTC), None], pa.timestamp("us", tz="UTC")),
            "by": pa.array([b"\x00\x01", None]),
            "u": pa.array(["00000000-0000-0000-0000-000000003039", None]),
            "j": pa.array(['{"a": 1}', None]),
            "tm": pa.array([time(23, 59, 59, 999999), None]),
        }
    )


@pytest.fixture
async def connection(stack: StackSettings) -> AsyncIterator[asyncpg.Connection]:
    connection = await connect_warehouse(stack.warehouse)
    try:
        yield connection
    finally:
        await connection.close()


class TestCopy:
    async def test_every_type_and_null_round_trips(self, connection: asyncpg.Connection) -> None:
        """A batch of every supported type, from a list and from an async iterable, reads
        back as the same values (date 9999-12-31 and year 1 stay themselves), NULLs NULL."""
        await connection.execute(_TABLE)
        batch = _sample()

        async def twice() -> AsyncIterator[pa.RecordBatch]:
            yield batch
            yield batch.slice(1)

        assert await copy_arrow_batches(connection, "t", [batch]) == 2
        assert await copy_arrow_batches(connection, "t", twice()) == 3
        rows = await connection.fetch("SELECT * FROM t WHERE i IS NOT NULL")
        assert len(rows) == 2
        assert dict(rows[0]) == {
            "i": 1,
            "b": 2**62,
            "s": 3,
            "n": Decimal("1234567890.12"),
            "nn": Decimal("-0.000000000001"),
            "f": 1.5,
            "r": 2.5,
            "ok": True,
            "tx": "héllo",
            "vc": "abc",
            "d": date(9999, 12, 31),
            "ts": datetime(1, 1, 1),
            "tz": datetime(2020, 1, 1, tzinfo=UTC),
            "by": b"\x00\x01",
            "u": UUID(int=12345),
            "j": '{"a": 1}',
            "tm": time(23, 59, 59, 999999),
        }
        assert await connection.fetchval("SELECT nn::text FROM t WHERE i = 1 LIMIT 1") == (
            "-0.000000000001"
        )
        nulls = await connection.fetch("SELECT * FROM t WHERE i IS NULL")
        assert len(nulls) == 3
        assert all(value is None for row in nulls for value in row.values())

    async def test_columns_are_the_batch_names_in_their_order(
        self, connection: asyncpg.Connection, unique: str
    ) -> None:
        """Columns are matched by name in any order, into a schema-qualified table; the
        columns the batches lack take their defaults."""
        schema = f"copy_{unique}"
        await connection.execute(f'CREATE SCHEMA "{schema}"')
        try:
            await connection.execute(
                f'CREATE TABLE "{schema}"."Mixed Case" (a int, "B" text, c int DEFAULT 7)'
            )
            batch = pa.record_batch({"B": ["x", "y"], "a": pa.array([1, 2], pa.int32())})
            copied = await copy_arrow_batches(
                connection, "Mixed Case", iter([batch]), schema_name=schema
            )
            rows = await connection.fetch(f'SELECT * FROM "{schema}"."Mixed Case" ORDER BY a')  # noqa: S608 - a test's own name
        finally:
            await connection.execute(f'DROP SCHEMA "{schema}" CASCADE')
        assert copied == 2
        assert [tuple(r.values()) for r in rows] == [(1, "x", 7), (2, "y", 7)]

    async def test_no_batches_copy_nothing(self, connection: asyncpg.Connection) -> None:
        """An empty source copies 0 rows (and needs no table)."""
        assert await copy_arrow_batches(connection, "absent", []) == 0


class TestRefusals:
    @pytest.mark.parametrize(
        ("ddl", "column", "message"),
        [
            ("x int", pa.array([1, 2**40]), r"column x: a value of Arrow int64 would change"),
            (
                "x numeric(12,2)",
                pa.array([Decimal("1.234")], pa.decimal128(10, 3)),
                r"column x: a value of Arrow decimal128\(10, 3\) would change",
            ),
            (
                "x timestamp",
                pa.array([1_000_000_001], pa.timestamp("ns")),
                r"column x: a value of Arrow timestamp\[ns\] would change",
            ),
            ("x real", pa.array([0.1]), r"column x: Arrow double does not load into real"),
            ("x int", pa.array(["1"]), r"column x: Arrow string does not load into integer"),
            ("x uuid", pa.array(["not-a-uuid"]), r"column x: 'not-a-uuid' is not a UUID"),
            ("x int[]", pa.array([1]), r"column x: Arrow int64 does not load into integer\[\]"),
            ("y int", pa.array([1]), r"has no column\(s\) x \(it has y\)"),
        ],
    )
    async def test_a_value_or_type_that_would_change_loads_nothing(
        self, connection: asyncpg.Connection, ddl: str, column: pa.Array, message: str
    ) -> None:
        """A column whose values a safe cast would change, or whose type does not load into
        the target's, raises ArrowCopyError naming it; the table stays empty."""
        await connection.execute(f"CREATE TEMP TABLE bad ({ddl})")
        good = pa.record_batch({"x": pa.array([None], column.type)})
        with pytest.raises(ArrowCopyError, match=message):
            await copy_arrow_batches(connection, "bad", [good, pa.record_batch({"x": column})])
        assert await connection.fetchval("SELECT count(*) FROM bad") == 0

    async def test_a_later_batch_of_another_type_is_checked_too(
        self, connection: asyncpg.Connection
    ) -> None:
        """A batch whose column type differs from the first batch's is held to the same
        pairs: text is not parsed into an integer column."""
        await connection.execute("CREATE TEMP TABLE t (x int)")
        batches = [pa.record_batch({"x": pa.array([1], pa.int32())}), pa.record_batch({"x": ["2"]})]
        with pytest.raises(ArrowCopyError, match=r"column x: Arrow string does not load"):
            await copy_arrow_batches(connection, "t", batches)
        assert await connection.fetchval("SELECT count(*) FROM t") == 0

    async def test_a_missing_table_is_named(self, connection: asyncpg.Connection) -> None:
        """A target that does not exist is an ArrowCopyError naming it."""
        with pytest.raises(ArrowCopyError, match=r"the target table nowhere\.t does not exist"):
            await copy_arrow_batches(
                connection, "t", [pa.record_batch({"x": [1]})], schema_name="nowhere"
            )

    async def test_a_failing_reader_aborts_the_copy(self, connection: asyncpg.Connection) -> None:
        """An exception from the batches' iterator mid-copy aborts the COPY (nothing
        loaded), reaches the caller as itself, and leaves the connection usable."""
        await connection.execute("CREATE TEMP TABLE t (x bigint)")

        def failing() -> Iterator[pa.RecordBatch]:
            yield pa.record_batch({"x": [1, 2]})
            yield pa.record_batch({"x": [3]})
            raise OSError("the Parquet file went away")

        with pytest.raises(OSError, match="went away"):
            await copy_arrow_batches(connection, "t", failing())
        assert await connection.fetchval("SELECT count(*) FROM t") == 0

    async def test_a_server_error_loads_nothing(self, connection: asyncpg.Connection) -> None:
        """A row the server refuses (NOT NULL) raises asyncpg's error once the source is
        read (asyncpg notices the server's error only then); nothing is loaded and the
        connection takes the next command."""
        await connection.execute("CREATE TEMP TABLE t (x bigint NOT NULL)")
        batches = [pa.record_batch({"x": pa.array([None, 1], pa.int64())})] * 20
        with pytest.raises(asyncpg.NotNullViolationError):
            await copy_arrow_batches(connection, "t", batches)
        assert await connection.fetchval("SELECT count(*) FROM t") == 0


class TestPipelining:
    async def test_reading_ahead_is_bounded(
        self, stack: StackSettings, connection: asyncpg.Connection, unique: str
    ) -> None:
        """While the server takes no data (another session locks the table), the loader
        reads only a few batches ahead (the queue, the one being encoded, the one on the
        wire, what the socket buffers hold), not the whole source; once the lock goes, the
        copy completes."""
        schema = f"copy_{unique}"
        await connection.execute(
            f'CREATE SCHEMA "{schema}"; CREATE UNLOGGED TABLE "{schema}".t (x bytea)'
        )
        batch = pa.record_batch({"x": pa.array([b"\0" * (1 << 20)] * 4)})  # 4 MiB
        total = 16
        pulled = 0

        def batches() -> Iterator[pa.RecordBatch]:
            nonlocal pulled
            for _ in range(total):
                pulled += 1
                yield batch

        locker = await connect_warehouse(stack.warehouse)
        try:
            transaction = locker.transaction()
            await transaction.start()
            await locker.execute(f'LOCK TABLE "{schema}".t IN ACCESS EXCLUSIVE MODE')
            copy = asyncio.create_task(
                copy_arrow_batches(connection, "t", batches(), schema_name=schema)
            )
            await asyncio.sleep(2.0)
            ahead = pulled
            await transaction.rollback()
            copied = await copy
        finally:
            await locker.close()
            await connection.execute(f'DROP SCHEMA "{schema}" CASCADE')
        # Localhost socket buffers take at most ~10 MiB: under 3 batches of 4 MiB.
        assert ahead <= QUEUE_DEPTH + 2 + 3 < total
        assert copied == total * 4
