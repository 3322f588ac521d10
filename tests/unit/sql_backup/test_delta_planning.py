"""Planning a delta: its changes split into key-range chunks, or, when SQL Server's Change
Tracking lost them (a TRUNCATE raises CHANGE_TRACKING_MIN_VALID_VERSION), a re-snapshot of
the whole table. The source and the bucket are fakes; every T-SQL statement the planner
runs is parsed with sqlglot (no SQL Server runs here)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import Any

import pytest
import sqlglot
from pydantic import BaseModel

from indutech_common.schemas.sql_backup import ChunkSpec, ColumnSpec, Manifest, Plan
from indutech_sql_backup.config import SqlBackupSettings
from indutech_sql_backup.dialects import Column, Query, TableInfo, TableRef
from indutech_sql_backup.engine import Engine
from indutech_sql_backup.errors import ChangeTrackingError
from tests.unit.sql_backup.test_dialects import parse_tsql

TABLE = TableInfo(
    ref=TableRef("sales", "orders"),
    columns=(
        Column("id", "bigint", nullable=False),
        Column("total", "decimal(18,2)"),
        Column("row_version", "rowversion", nullable=False),
    ),
    key=("id",),
    watermark="row_version",
)
DAY0 = date(2026, 3, 1)
DAY1 = date(2026, 3, 2)


class FakeSource:
    """Answers the planner's queries by what they ask; keeps every query it ran."""

    def __init__(self, *, min_valid: int | None, boundaries: list[str]) -> None:
        self.min_valid = min_valid
        self.boundaries = boundaries
        self.queries: list[Query] = []

    @contextmanager
    def connect(self) -> Iterator[object]:
        yield object()

    def fetch(self, connection: object, query: Query) -> list[tuple[Any, ...]]:
        del connection
        self.queries.append(query)
        if "CHANGE_TRACKING_CURRENT_VERSION()" in query.sql or "pg_current_snapshot()" in (
            query.sql
        ):
            return [("300:900",)]
        if "CHANGE_TRACKING_MIN_VALID_VERSION" in query.sql:
            return [(self.min_valid,)]
        return [(b,) for b in self.boundaries]


class FakeStore:
    """The bucket as a dict: the previous full run's manifest, and the plans written."""

    def __init__(self, previous: Manifest) -> None:
        self.previous = previous
        self.objects: dict[str, BaseModel] = {}

    async def manifest(self, key: str) -> Manifest | None:
        del key
        return None

    async def plan(self, key: str) -> Plan | None:
        found = self.objects.get(key)
        return found if isinstance(found, Plan) else None

    async def manifests(self, database: str, ref: TableRef) -> list[Manifest]:
        del database, ref
        return [self.previous]

    async def put(self, key: str, body: BaseModel, *, create_only: bool = False) -> bool:
        if create_only and key in self.objects:
            return False
        self.objects[key] = body
        return True


def full_manifest(dialect: str, table: TableInfo = TABLE) -> Manifest:
    plan = Plan(
        plan_id="f" * 32,
        kind="full",
        database="erp",
        dialect=dialect,
        schema_name=table.ref.schema,
        table=table.ref.name,
        day=DAY0,
        columns=tuple(
            ColumnSpec(name=c.name, source_type=c.source_type, nullable=c.nullable)
            for c in table.columns
        ),
        key=table.key,
        key_from="primary key",
        watermark=table.watermark,
        chunk_column="id",
        chunks=(ChunkSpec(chunk=0, lo=None, hi=None),),
        position_from=None,
        position_to="100:500",
        created_at=datetime(2026, 3, 1, 2, tzinfo=UTC),
    )
    return Manifest(plan=plan, parts=(), rows=0, bytes=0, completed_at=plan.created_at)


def engine_for(
    dialect: str, source: FakeSource, *, previous: TableInfo = TABLE, **overrides: Any
) -> tuple[Engine, FakeStore]:
    """An engine over the fakes; the bucket holds a full run of ``previous``."""
    settings = SqlBackupSettings(
        erp={"dialect": dialect, "database": "erp", "host": "erp.invalid", "user": "backup"},
        s3={"kms_key_id": "k"},
        health={"host": "127.0.0.1", "port": 0},
        **overrides,
    )
    engine = Engine(settings, None)  # type: ignore[arg-type]
    store = FakeStore(full_manifest(dialect, previous))
    engine.source = source  # type: ignore[assignment]
    engine.store = store  # type: ignore[assignment]
    return engine, store


class TestMssqlDeltaAfterTruncate:
    async def test_a_watermark_below_the_min_valid_version_makes_the_delta_a_resnapshot(
        self,
    ) -> None:
        """The stored version (100) is below the table's minimum valid one (250, raised by a
        TRUNCATE): the delta re-reads the whole table in full-snapshot chunks, marked so
        restore replaces the table, and still continues the chain position to position."""
        source = FakeSource(min_valid=250, boundaries=["10", "20"])
        engine, _ = engine_for("mssql", source, chunk_rows=1000, delta_chunk_rows=7)
        plan, status = await engine.plan(TABLE, kind="delta", day=DAY1)
        assert status == "new"
        assert plan.kind == "delta"
        assert plan.snapshot
        assert not plan.reads_changes
        assert (plan.position_from, plan.position_to) == ("100:500", "300:900")
        assert [(c.lo, c.hi) for c in plan.chunks] == [(None, "10"), ("10", "20"), ("20", None)]
        position, check, boundaries = source.queries
        assert "CHANGE_TRACKING_CURRENT_VERSION()" in position.sql, "the position comes first"
        assert "CHANGE_TRACKING_MIN_VALID_VERSION(OBJECT_ID(?))" in check.sql
        assert check.params == ("[sales].[orders]",)
        assert "% 1000 = 0" in boundaries.sql, "chunked like a full (CHUNK_ROWS)"
        assert "CHANGETABLE" not in boundaries.sql
        for query in source.queries:
            parse_tsql(query.sql)
        read, _ = engine.chunk_query(plan, 1)
        select = parse_tsql(read.sql)[-1]
        assert isinstance(select, sqlglot.exp.Select), "the table's rows, no changes union"
        assert "_op" not in read.sql
        assert read.params == ("10", "20")

    async def test_a_valid_watermark_reads_the_changes_in_key_range_chunks(self) -> None:
        source = FakeSource(min_valid=100, boundaries=["40", "80"])
        engine, _ = engine_for("mssql", source, chunk_rows=1000, delta_chunk_rows=7)
        plan, _ = await engine.plan(TABLE, kind="delta", day=DAY1)
        assert not plan.snapshot
        assert plan.reads_changes
        assert len(plan.chunks) == 3
        boundaries = source.queries[-1]
        assert "% 7 = 0" in boundaries.sql, "delta chunks count changes (DELTA_CHUNK_ROWS)"
        assert "CHANGETABLE(CHANGES [sales].[orders]" in boundaries.sql
        assert boundaries.params == ("500", "100")
        for query in source.queries:
            parse_tsql(query.sql)
        read, _ = engine.chunk_query(plan, 1)
        assert isinstance(parse_tsql(read.sql)[-1], sqlglot.exp.Union)
        assert read.params == ("500", "40", "80", "100", "40", "80")

    async def test_change_tracking_off_stops_the_plan(self) -> None:
        source = FakeSource(min_valid=None, boundaries=[])
        engine, store = engine_for("mssql", source)
        with pytest.raises(ChangeTrackingError):
            await engine.plan(TABLE, kind="delta", day=DAY1)
        assert not store.objects, "no plan is written"

    async def test_a_full_never_asks_for_the_min_valid_version(self) -> None:
        source = FakeSource(min_valid=10**9, boundaries=["5"])
        engine, _ = engine_for("mssql", source)
        plan, _ = await engine.plan(TABLE, kind="full", day=DAY1)
        assert not plan.snapshot
        assert not any("MIN_VALID" in q.sql for q in source.queries)


class TestPostgresDeltaChunks:
    async def test_changes_split_by_delta_chunk_rows_without_a_validity_check(self) -> None:
        """The stand-in logs truncates itself: no re-snapshot check, only the change keys."""
        source = FakeSource(min_valid=None, boundaries=["3", "3", "9"])
        table = TableInfo(
            ref=TABLE.ref,
            columns=(Column("id", "bigint", nullable=False), Column("row_version", "bigint")),
            key=("id",),
            watermark="row_version",
        )
        engine, _ = engine_for("postgres", source, previous=table, delta_chunk_rows=2)
        plan, _ = await engine.plan(table, kind="delta", day=DAY1)
        assert not plan.snapshot
        assert [(c.chunk, c.lo, c.hi) for c in plan.chunks] == [
            (0, None, "3"),
            (1, "3", "9"),
            (2, "9", None),
        ]
        assert len(source.queries) == 2
        sqlglot.parse_one(source.queries[1].sql, read="postgres")
        assert "rn % 2 = 0" in source.queries[1].sql

    def test_an_old_plan_without_the_snapshot_field_still_parses(self) -> None:
        """Plans and manifests written before re-snapshots existed read as change deltas."""
        raw = full_manifest("postgres").plan.model_dump(mode="json")
        del raw["snapshot"]
        plan = Plan.model_validate(raw | {"kind": "delta"})
        assert not plan.snapshot
        assert plan.reads_changes
