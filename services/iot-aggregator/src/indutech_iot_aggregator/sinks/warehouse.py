"""The warehouse sink: partial aggregates and consumer offsets in one transaction.

Exactly-once in effect, and why:

- A batch holds, per partition, the *deltas* of the records read since the
  offsets the warehouse holds, and the offset after the last of them.
- One transaction adds the deltas to the rows (COPY into a staging table, then
  an upsert) and moves each partition's offsets with a *compare-and-set*: only
  if the warehouse still holds the offset the batch starts from. If any
  partition does not match, the whole transaction rolls back (``FencedError``).
- So a crash before the commit leaves neither the deltas nor the offsets (the
  records are read again); a crash after it leaves both (they are not read
  again); a commit whose acknowledgement was lost, or a former owner still
  writing after a rebalance, is refused by the compare-and-set instead of
  adding a delta twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncpg

from indutech_common.settings import WarehouseSettings
from indutech_common.warehouse import create_warehouse_pool
from indutech_iot_aggregator.errors import FencedError
from indutech_iot_aggregator.sinks.sql import (
    READINGS,
    TABLES,
    TICKETS,
    AggregateTable,
    Statements,
)
from indutech_iot_aggregator.windows import Committed, PartitionBatch, from_us, to_us

# The lower bound of a partition's first finalize: every window before its first close.
_BEGINNING = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class WarehouseBatch:
    """What one warehouse transaction writes: the deltas and offsets of several partitions."""

    group_id: str
    window_us: int
    partitions: list[PartitionBatch]

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.partitions)

    @property
    def records(self) -> int:
        return sum(p.records for p in self.partitions)


def ticket_rows(batch: WarehouseBatch, now: datetime) -> list[tuple[Any, ...]]:
    """Rows in ``TICKETS.columns`` order."""
    rows = []
    for part in batch.partitions:
        for (start, customer_id, region), agg in part.tickets.items():
            final = part.closed_before_us is not None and start < part.closed_before_us
            rows.append(
                (
                    from_us(start),
                    from_us(start + batch.window_us),
                    customer_id,
                    region,
                    part.topic,
                    part.partition,
                    agg.count,
                    agg.revenue,
                    agg.latency_sum,
                    agg.latency_count,
                    agg.latency_min,
                    agg.latency_max,
                    agg.late_events,
                    final,
                    now,
                )
            )
    return rows


def reading_rows(batch: WarehouseBatch, now: datetime) -> list[tuple[Any, ...]]:
    """Rows in ``READINGS.columns`` order."""
    rows = []
    for part in batch.partitions:
        for (start, sensor_id, site, metric), agg in part.readings.items():
            final = part.closed_before_us is not None and start < part.closed_before_us
            rows.append(
                (
                    from_us(start),
                    from_us(start + batch.window_us),
                    sensor_id,
                    site,
                    metric,
                    part.topic,
                    part.partition,
                    agg.count,
                    agg.total,
                    agg.minimum,
                    agg.maximum,
                    agg.late_events,
                    final,
                    now,
                )
            )
    return rows


def _ts(micros: int | None) -> datetime | None:
    return None if micros is None else from_us(micros)


class WarehouseSink:
    """Writes ``WarehouseBatch``es through an asyncpg pool; the dialect's subclass says how
    (``PostgresSink``: binary COPY + ON CONFLICT; ``RedshiftSink``: staged Parquet + MERGE)."""

    name = "warehouse"

    def __init__(self, pool: asyncpg.Pool, statements: Statements) -> None:
        self._pool = pool
        self.statements = statements

    @property
    def schema(self) -> str:
        return self.statements.schema

    async def ping(self) -> None:
        async with self._pool.acquire() as connection:
            await connection.fetchval("SELECT 1")

    async def close(self) -> None:
        await self._pool.close()

    async def migrate(self) -> None:
        """Create the schema, tables and views if missing (safe to run from every replica)."""
        async with self._pool.acquire() as connection, connection.transaction():
            await self._serialise_migrations(connection)
            for statement in self.statements.create_schema():
                await connection.execute(statement)

    async def _serialise_migrations(self, connection: asyncpg.Connection) -> None:
        """Concurrent CREATE … IF NOT EXISTS can still collide in PostgreSQL's catalogue."""

    async def load_offsets(
        self, group_id: str, topics: Sequence[str]
    ) -> dict[tuple[str, int], Committed]:
        """The warehouse's position of every partition of ``topics`` it knows."""
        async with self._pool.acquire() as connection:
            rows = await connection.fetch(
                self.statements.select_offsets(len(topics)), group_id, *topics
            )
        return {
            (row["topic"], row["source_partition"]): Committed(
                next_offset=row["next_offset"],
                watermark_us=None if row["watermark"] is None else to_us(row["watermark"]),
                closed_before_us=(
                    None if row["closed_before"] is None else to_us(row["closed_before"])
                ),
            )
            for row in rows
        }

    async def write(self, batch: WarehouseBatch) -> None:
        """One transaction: offsets compare-and-set, deltas upserted, windows finalised."""
        now = datetime.now(UTC)
        async with self._pool.acquire() as connection, connection.transaction():
            # The offsets first: a fenced batch stops before any load, and a rebuild (which
            # locks the same rows first) and a write never wait for each other crosswise.
            moved = await self._move_offsets(connection, batch, now)
            fenced = [
                (p.topic, p.partition)
                for p in batch.partitions
                if (p.topic, p.partition) not in moved
            ]
            if fenced:
                raise FencedError(fenced)  # leaving the block rolls the whole batch back
            await self._upsert(connection, batch, now)
            closing = [
                p for p in batch.partitions if p.final_due and p.closed_before_us is not None
            ]
            if closing:
                await self._finalize(connection, closing, now)

    async def replace_range(
        self,
        group_id: str,
        topics: Sequence[str],
        start: datetime,
        end: datetime,
        build: Callable[[dict[tuple[str, int], int]], WarehouseBatch],
    ) -> WarehouseBatch:
        """Rebuild: in one transaction, replace the rows of windows in ``[start, end)`` with
        ``build(positions)``, where positions are the stream's next offsets, read under a
        lock (the stream's writes of those partitions wait until the commit).

        Only partitions the stream has positions for are replaced: ``build`` must cover
        exactly their records below those offsets (so nothing is lost or counted twice
        with what the stream writes afterwards)."""
        now = datetime.now(UTC)
        async with self._pool.acquire() as connection, connection.transaction():
            await self._lock_offsets(connection)
            locked = await connection.fetch(
                self.statements.select_offsets(len(topics), lock=True), group_id, *topics
            )
            positions = {(r["topic"], r["source_partition"]): r["next_offset"] for r in locked}
            batch = build(positions)
            await self._delete_range(connection, start, end, list(positions))
            await self._upsert(connection, batch, now)
        return batch

    # -- what each dialect does its own way ------------------------------------------------

    async def _move_offsets(
        self, connection: asyncpg.Connection, batch: WarehouseBatch, now: datetime
    ) -> set[tuple[str, int]]:
        """Compare-and-set every partition's offsets; returns the partitions moved."""
        raise NotImplementedError

    async def _upsert(
        self, connection: asyncpg.Connection, batch: WarehouseBatch, now: datetime
    ) -> None:
        """Add the batch's deltas to the stored rows."""
        raise NotImplementedError

    async def _finalize(
        self, connection: asyncpg.Connection, closing: list[PartitionBatch], now: datetime
    ) -> None:
        """Mark final the rows of the windows each partition closed since its last write."""
        raise NotImplementedError

    async def _lock_offsets(self, connection: asyncpg.Connection) -> None:
        """Before reading the positions a rebuild works from (PostgreSQL: FOR UPDATE)."""

    async def _delete_range(
        self,
        connection: asyncpg.Connection,
        start: datetime,
        end: datetime,
        partitions: list[tuple[str, int]],
    ) -> None:
        raise NotImplementedError


class PostgresSink(WarehouseSink):
    """PostgreSQL: binary COPY into a temporary staging table, ``INSERT … ON CONFLICT``,
    set-based statements over arrays for the partitions' offsets and finals."""

    async def _serialise_migrations(self, connection: asyncpg.Connection) -> None:
        await connection.execute(
            "SELECT pg_advisory_xact_lock(hashtext($1))", f"iot-aggregator:{self.schema}"
        )

    async def _upsert(
        self, connection: asyncpg.Connection, batch: WarehouseBatch, now: datetime
    ) -> None:
        st = self.statements
        for table, rows in (
            (TICKETS, ticket_rows(batch, now)),
            (READINGS, reading_rows(batch, now)),
        ):
            if not rows:
                continue
            await connection.execute(st.pg_create_stage(table))
            await connection.copy_records_to_table(
                st.stage(table), records=rows, columns=list(table.columns)
            )
            await connection.execute(st.pg_upsert(table))

    async def _finalize(
        self, connection: asyncpg.Connection, closing: list[PartitionBatch], now: datetime
    ) -> None:
        for table in TABLES:
            await connection.execute(
                self.statements.pg_finalize(table),
                [p.topic for p in closing],
                [p.partition for p in closing],
                [from_us(p.closed_before_us or 0) for p in closing],
                now,
                [_ts(p.previous_closed_before_us) or _BEGINNING for p in closing],
            )

    async def _move_offsets(
        self, connection: asyncpg.Connection, batch: WarehouseBatch, now: datetime
    ) -> set[tuple[str, int]]:
        st = self.statements
        first = [p for p in batch.partitions if p.expected_offset is None]
        later = [p for p in batch.partitions if p.expected_offset is not None]
        moved: list[asyncpg.Record] = []
        if later:
            moved += await connection.fetch(
                st.pg_advance_offsets(),
                batch.group_id,
                [p.topic for p in later],
                [p.partition for p in later],
                [p.expected_offset for p in later],
                [p.next_offset for p in later],
                [_ts(p.watermark_us) for p in later],
                [_ts(p.closed_before_us) for p in later],
                now,
            )
        if first:
            moved += await connection.fetch(
                st.pg_insert_offsets(),
                batch.group_id,
                [p.topic for p in first],
                [p.partition for p in first],
                [p.next_offset for p in first],
                [_ts(p.watermark_us) for p in first],
                [_ts(p.closed_before_us) for p in first],
                now,
            )
        return {(row["topic"], row["source_partition"]) for row in moved}

    async def _delete_range(
        self,
        connection: asyncpg.Connection,
        start: datetime,
        end: datetime,
        partitions: list[tuple[str, int]],
    ) -> None:
        for table in TABLES:
            await connection.execute(
                self.statements.pg_delete_range(table),
                start,
                end,
                [topic for topic, _ in partitions],
                [partition for _, partition in partitions],
            )


class Stager(Protocol):
    """Fills a staging table with rows: the part of a Redshift write that differs by engine."""

    async def stage(
        self,
        connection: asyncpg.Connection,
        statements: Statements,
        table: AggregateTable,
        rows: list[tuple[Any, ...]],
    ) -> None: ...

    async def cleanup(self) -> None:
        """After the transaction (committed or not): drop what was staged outside it."""
        ...


class CopyStager:
    """Binary COPY from this process: what PostgreSQL takes (and the tests, which run the
    Redshift rendering on PostgreSQL 15)."""

    async def stage(
        self,
        connection: asyncpg.Connection,
        statements: Statements,
        table: AggregateTable,
        rows: list[tuple[Any, ...]],
    ) -> None:
        await connection.copy_records_to_table(
            statements.stage(table), records=rows, columns=list(table.columns)
        )

    async def cleanup(self) -> None:
        return None


class RedshiftSink(WarehouseSink):
    """Redshift: the deltas staged (``stager``: Parquet on S3 + ``COPY … FORMAT AS PARQUET``),
    ``MERGE``, then one compare-and-set statement per partition (no arrays in Redshift)."""

    def __init__(self, pool: asyncpg.Pool, statements: Statements, stager: Stager) -> None:
        super().__init__(pool, statements)
        self._stager = stager

    async def write(self, batch: WarehouseBatch) -> None:
        try:
            await super().write(batch)
        finally:
            await self._stager.cleanup()

    async def replace_range(
        self,
        group_id: str,
        topics: Sequence[str],
        start: datetime,
        end: datetime,
        build: Callable[[dict[tuple[str, int], int]], WarehouseBatch],
    ) -> WarehouseBatch:
        try:
            return await super().replace_range(group_id, topics, start, end, build)
        finally:
            await self._stager.cleanup()

    async def _upsert(
        self, connection: asyncpg.Connection, batch: WarehouseBatch, now: datetime
    ) -> None:
        st = self.statements
        for table, rows in (
            (TICKETS, ticket_rows(batch, now)),
            (READINGS, reading_rows(batch, now)),
        ):
            if not rows:
                continue
            await connection.execute(st.rs_create_stage(table))
            await self._stager.stage(connection, st, table, rows)
            await connection.execute(st.rs_merge(table))
            await connection.execute(st.rs_drop_stage(table))

    async def _finalize(
        self, connection: asyncpg.Connection, closing: list[PartitionBatch], now: datetime
    ) -> None:
        for part in closing:
            for table in TABLES:
                await connection.execute(
                    self.statements.rs_finalize(table),
                    part.topic,
                    part.partition,
                    from_us(part.closed_before_us or 0),
                    now,
                    _ts(part.previous_closed_before_us) or _BEGINNING,
                )

    async def _move_offsets(
        self, connection: asyncpg.Connection, batch: WarehouseBatch, now: datetime
    ) -> set[tuple[str, int]]:
        st = self.statements
        moved: set[tuple[str, int]] = set()
        for part in batch.partitions:
            if part.expected_offset is None:
                status = await connection.execute(
                    st.rs_insert_offset(),
                    batch.group_id,
                    part.topic,
                    part.partition,
                    part.next_offset,
                    _ts(part.watermark_us),
                    _ts(part.closed_before_us),
                    now,
                )
            else:
                status = await connection.execute(
                    st.rs_advance_offset(),
                    batch.group_id,
                    part.topic,
                    part.partition,
                    part.expected_offset,
                    part.next_offset,
                    _ts(part.watermark_us),
                    _ts(part.closed_before_us),
                    now,
                )
            if status.split()[-1] == "1":  # "UPDATE 1" / "INSERT 0 1"
                moved.add((part.topic, part.partition))
        return moved

    async def _lock_offsets(self, connection: asyncpg.Connection) -> None:
        await connection.execute(self.statements.rs_lock_offsets())

    async def _delete_range(
        self,
        connection: asyncpg.Connection,
        start: datetime,
        end: datetime,
        partitions: list[tuple[str, int]],
    ) -> None:
        for topic, partition in partitions:
            for table in TABLES:
                await connection.execute(
                    self.statements.rs_delete_range(table), start, end, topic, partition
                )


async def open_sink(
    warehouse: WarehouseSettings,
    *,
    schema: str,
    stager: Stager | None = None,
) -> WarehouseSink:
    """The sink of the warehouse's dialect; Redshift needs a ``stager`` (S3ParquetStager)."""
    statements = Statements(schema, warehouse.dialect)
    if warehouse.dialect == "redshift":
        if stager is None:
            raise ValueError("a Redshift sink needs a stager (Parquet on S3)")
        return RedshiftSink(await _pool(warehouse), statements, stager)
    return PostgresSink(await _pool(warehouse), statements)


async def _pool(warehouse: WarehouseSettings) -> asyncpg.Pool:
    # Two connections: one writes while the other answers /readyz and offset loads.
    return await create_warehouse_pool(warehouse, min_size=1, max_size=2)
