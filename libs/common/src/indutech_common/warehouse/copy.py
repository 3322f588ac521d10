"""The pipelined Arrow → PostgreSQL binary COPY loader (sql-to-redshift's staging and
sql-backup's restore).

One ``COPY … FROM STDIN (FORMAT binary)`` per call. While the server takes one batch's
bytes, a worker thread reads the next batch (a synchronous iterable, e.g. a Parquet
reader, is iterated in that thread too) and encodes it (``BatchEncoder``: Arrow casts and
pgpq, which leave the event loop free). A small queue bounds what is in flight: at most
``QUEUE_DEPTH`` encoded batches wait, plus the one being encoded and the one being sent.

A failure anywhere (a value that does not fit its column, the reader, the server) aborts
the COPY: nothing of that call is in the table, and the caller's transaction decides the
rest.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from contextlib import suppress

import asyncpg
import pyarrow as pa

from indutech_common.warehouse.encoding import ArrowCopyError, BatchEncoder, TargetColumn

QUEUE_DEPTH = 2
"""Encoded batches waiting for the wire: enough to keep the connection busy while the next
one is encoded; each holds about one batch's binary COPY size in memory."""

_COLUMNS = """
SELECT a.attname AS name,
       coalesce(b.typname, t.typname) AS type_name,
       coalesce(b.typtype, t.typtype) AS type_kind,
       CASE WHEN b.oid IS NULL THEN a.atttypmod ELSE t.typtypmod END AS typmod,
       format_type(a.atttypid, a.atttypmod) AS shown
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_type b ON t.typtype = 'd' AND b.oid = t.typbasetype
WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
"""


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def target_columns(
    connection: asyncpg.Connection,
    table: str,
    names: list[str],
    *,
    schema_name: str | None = None,
) -> list[TargetColumn]:
    """The target table's columns ``names``, in that order, with their (base) types."""
    qualified = f"{_quote(schema_name)}.{_quote(table)}" if schema_name else _quote(table)
    rows = await connection.fetch(_COLUMNS, qualified)
    shown = f"{schema_name}.{table}" if schema_name else table
    if not rows:
        raise ArrowCopyError(
            f"the target table {shown} does not exist (or has no columns): create it before "
            "copying into it."
        )
    found = {row["name"]: row for row in rows}
    missing = [n for n in names if n not in found]
    if missing:
        raise ArrowCopyError(
            f"the target table {shown} has no column(s) {', '.join(missing)} (it has "
            f"{', '.join(found)}): the batches' column names must be the table's."
        )
    return [
        TargetColumn(
            name=n,
            type_name=found[n]["type_name"],
            type_kind=found[n]["type_kind"],
            typmod=found[n]["typmod"],
            shown=found[n]["shown"],
        )
        for n in names
    ]


class _Batches:
    """Batches from a sync or async iterable, read (and encoded) off the event loop."""

    def __init__(self, batches: Iterable[pa.RecordBatch] | AsyncIterable[pa.RecordBatch]) -> None:
        self._sync: Iterator[pa.RecordBatch] | None = None
        self._async: AsyncIterator[pa.RecordBatch] | None = None
        if isinstance(batches, AsyncIterable):
            self._async = aiter(batches)
        else:
            self._sync = iter(batches)

    async def first(self) -> pa.RecordBatch | None:
        if self._async is not None:
            return await anext(self._async, None)
        assert self._sync is not None  # noqa: S101 - one of the two is set in __init__
        return await asyncio.to_thread(next, self._sync, None)

    async def next_encoded(self, encoder: BatchEncoder) -> bytes | None:
        """The next batch encoded, or None at the end: one thread hop for a sync source
        (its read and the encoding), the encoding alone for an async one."""
        if self._async is not None:
            batch = await anext(self._async, None)
            return None if batch is None else await asyncio.to_thread(encoder.encode, batch)
        sync = self._sync

        def read_and_encode() -> bytes | None:
            assert sync is not None  # noqa: S101 - one of the two is set in __init__
            batch = next(sync, None)
            return None if batch is None else encoder.encode(batch)

        return await asyncio.to_thread(read_and_encode)


_End = None
_Item = bytes | BaseException | None


async def _produce(
    batches: _Batches,
    first: pa.RecordBatch,
    encoder: BatchEncoder,
    queue: asyncio.Queue[_Item],
) -> None:
    try:
        await queue.put(encoder.header() + await asyncio.to_thread(encoder.encode, first))
        while (chunk := await batches.next_encoded(encoder)) is not None:
            if chunk:
                await queue.put(chunk)
        await queue.put(encoder.trailer())
        await queue.put(_End)
    except Exception as exc:  # handed to the COPY, which aborts and raises it
        await queue.put(exc)


async def _drain(queue: asyncio.Queue[_Item]) -> AsyncIterator[bytes]:
    while True:
        item = await queue.get()
        if item is _End:
            return
        if isinstance(item, BaseException):
            raise item  # asyncpg sends CopyFail, then raises this
        yield item


async def copy_arrow_batches(
    conn: asyncpg.Connection,
    table: str,
    batches: Iterable[pa.RecordBatch] | AsyncIterable[pa.RecordBatch],
    *,
    schema_name: str | None = None,
) -> int:
    """Copy ``batches`` into ``schema_name.table`` (or ``table`` on the search path) with one
    binary COPY; returns the rows copied (the server's count).

    The columns are the batches' schema names, in order (every batch has the first one's
    columns); the target's column types decide the binary encoding (see
    ``indutech_common.warehouse.encoding``). ``ArrowCopyError`` names a column whose Arrow
    type does not load into its target type, or a value a safe cast would change; the
    server's own errors (NOT NULL, a key, a varchar too long) come as asyncpg raises them.
    """
    source = _Batches(batches)
    first = await source.first()
    if first is None:
        return 0
    names = first.schema.names
    targets = await target_columns(conn, table, names, schema_name=schema_name)
    encoder = BatchEncoder(first.schema, targets)
    queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=QUEUE_DEPTH)
    producer = asyncio.create_task(_produce(source, first, encoder, queue))
    try:
        status = await conn.copy_to_table(
            table, schema_name=schema_name, columns=names, source=_drain(queue), format="binary"
        )
    finally:
        # The COPY failed on the server (or was cancelled): stop reading and encoding.
        producer.cancel()
        with suppress(asyncio.CancelledError):
            await producer
    return int(status.rsplit(" ", 1)[-1])
