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

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from indutech_common.settings import WarehouseSettings
from indutech_common.warehouse import create_warehouse_pool
from indutech_iot_aggregator.errors import FencedError, WarehouseSchemaError
from indutech_iot_aggregator.sinks.sql import READINGS, TABLES, TICKETS, Statements
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
    """Writes ``WarehouseBatch``es to PostgreSQL (binary COPY + ON CONFLICT) through a pool."""

    name = "warehouse"

    def __init__(self, pool: asyncpg.Pool, *, schema: str) -> None:
        self._pool = pool
        self.statements = Statements(schema, "postgres")

    @classmethod
    async def open(cls, settings: WarehouseSettings, *, schema: str) -> WarehouseSink:
        if settings.dialect != "postgres":
            raise WarehouseSchemaError(
                "the Redshift load path (Parquet to the staging prefix, COPY, MERGE) is rendered "
                "by sinks/sql.py but not wired to S3 yet: run iot-aggregator against PostgreSQL "
                "(IOT_AGGREGATOR_WAREHOUSE__DIALECT=postgres)"
            )
        # Two connections: one writes while the other answers /readyz and offset loads.
        pool = await create_warehouse_pool(settings, min_size=1, max_size=2)
        return cls(pool, schema=schema)

    async def ping(self) -> None:
        async with self._pool.acquire() as connection:
            await connection.fetchval("SELECT 1")

    async def close(self) -> None:
        await self._pool.close()

    async def migrate(self) -> None:
        """Create the schema, tables and views if missing (safe to run from every replica)."""
        async with self._pool.acquire() as connection, connection.transaction():
            # Concurrent CREATE … IF NOT EXISTS can still collide in the catalogue.
            await connection.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1))", f"iot-aggregator:{self.schema}"
            )
            for statement in self.statements.create_schema():
                await connection.execute(statement)

    @property
    def schema(self) -> str:
        return self.statements.schema

    async def load_offsets(
        self, group_id: str, topics: Sequence[str]
    ) -> dict[tuple[str, int], Committed]:
        """The warehouse's position of every partition of ``topics`` it knows."""
        async with self._pool.acquire() as connection:
            rows = await connection.fetch(self.statements.load_offsets(), group_id, list(topics))
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
        st = self.statements
        now = datetime.now(UTC)
        async with self._pool.acquire() as connection, connection.transaction():
            # The offsets first: a fenced batch stops before any COPY, and a rebuild (which
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
                for table in TABLES:
                    await connection.execute(
                        st.pg_finalize(table),
                        [p.topic for p in closing],
                        [p.partition for p in closing],
                        [from_us(p.closed_before_us or 0) for p in closing],
                        now,
                        [_ts(p.previous_closed_before_us) or _BEGINNING for p in closing],
                    )

    async def _upsert(
        self, connection: asyncpg.Connection, batch: WarehouseBatch, now: datetime
    ) -> None:
        """Binary COPY of the rows into the staging tables, then add them to the stored rows."""
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
        row lock (the stream's writes of those partitions wait until the commit).

        Only partitions the stream has positions for are replaced: ``build`` must cover
        exactly their records below those offsets (so nothing is lost or counted twice
        with what the stream writes afterwards)."""
        st = self.statements
        now = datetime.now(UTC)
        async with self._pool.acquire() as connection, connection.transaction():
            locked = await connection.fetch(st.lock_offsets(), group_id, list(topics))
            positions = {(r["topic"], r["source_partition"]): r["next_offset"] for r in locked}
            batch = build(positions)
            for table in TABLES:
                await connection.execute(
                    st.delete_range(table),
                    start,
                    end,
                    [topic for topic, _ in positions],
                    [partition for _, partition in positions],
                )
            await self._upsert(connection, batch, now)
        return batch

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
        return _pairs(moved)


def _pairs(rows: Iterable[asyncpg.Record]) -> set[tuple[str, int]]:
    return {(row["topic"], row["source_partition"]) for row in rows}
