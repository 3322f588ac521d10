# ruff: noqa: S608 - SQL built from the test's own quoted schema name and constants
"""Deltas split into key-range chunks, TRUNCATE captured by the postgres stand-in, and a delta
that re-reads a whole table (what the mssql dialect does after a TRUNCATE) replacing it."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Any

import pytest

from indutech_common.s3 import create_s3_client
from indutech_common.schemas.sql_backup import BackupDir, Plan
from indutech_sql_backup.dialects import PostgresDialect, Query, TableInfo, TableRef
from indutech_sql_backup.engine import ChunkResult, Engine
from indutech_sql_backup.restore import Restorer
from indutech_sql_backup.sinks import read_part
from indutech_sql_backup.sources import OdbcSource
from indutech_sql_backup.verify import verify
from tests.integration.sql_backup.conftest import (
    DEMO_TABLES,
    RIGHTS,
    Erp,
    assert_sql_backup_policy_in_force,
    generate,
    rows_of,
    s3_with_rights,
    settings_for,
    source_state,
)
from tests.support.stack import StackSettings

DAY0 = date(2026, 5, 1)
DAY1 = date(2026, 5, 2)
DAY2 = date(2026, 5, 3)


async def run_sql(stack: StackSettings, *statements: str) -> None:
    source = OdbcSource(stack.erp, PostgresDialect())
    await asyncio.to_thread(source.execute, list(statements))


def spy_chunks(engine: Engine) -> list[tuple[str, int, bool]]:
    """Record (table, chunk, skipped) of every chunk the engine runs."""
    seen: list[tuple[str, int, bool]] = []
    original = engine.run_chunk

    async def run_chunk(plan: Plan, chunk: int) -> ChunkResult:
        result = await original(plan, chunk)
        seen.append((plan.table, chunk, result.skipped))
        return result

    engine.run_chunk = run_chunk  # type: ignore[method-assign]
    return seen


async def assert_restores_equal(
    stack: StackSettings, erp: Erp, restorer: Restorer, day: date, expected: dict[str, Any]
) -> None:
    for table in DEMO_TABLES:
        target = TableRef(erp.target_schema, f"{table}_{day:%d}")
        await restorer.restore(TableRef(erp.schema, table), day=day, target=target)
        restored = await rows_of(stack.warehouse, target.schema, target.name, demo_table=table)
        assert [tuple(r) for r in restored] == expected[table], f"{table} as of {day}"


class TestDeltaChunks:
    @pytest.mark.slow
    @pytest.mark.timeout(240)
    @pytest.mark.parametrize("rights", RIGHTS)
    async def test_a_big_delta_is_split_resumed_and_restores_equal_to_the_source(
        self, stack: StackSettings, erp: Erp, monkeypatch: pytest.MonkeyPatch, rights: str
    ) -> None:
        """With DELTA_CHUNK_ROWS small, a day's delta of each table is several parts with
        deterministic names; a restarted run skips the parts already recorded; the manifest
        lists them all; verify passes; restore as of the day equals the source (a key deleted
        and inserted again the same day included). Also with only the rights of
        deploy/iam/sql-backup.json: full, resumed delta, verify and restore."""
        await generate(stack, erp)
        s3_settings, credentials = await s3_with_rights(rights, stack, erp, monkeypatch)
        settings = settings_for(stack, erp, s3=s3_settings, chunk_rows=2000, delta_chunk_rows=40)
        async with create_s3_client(settings.s3) as s3:
            engine = Engine(settings, s3)
            tables = await engine.discover()
            await engine.backup(tables, kind="full", day=DAY0)
            await generate(stack, erp, day=1)
            expected = await source_state(stack, erp)
            # A first run dies after two chunks of orders: its plan and records stay.
            orders = next(t for t in tables if t.ref.name == "orders")
            plan, status = await engine.plan(orders, kind="delta", day=DAY1)
            assert status == "new"
            assert len(plan.chunks) > 2, [c.model_dump() for c in plan.chunks]
            for chunk in (0, 1):
                await engine.run_chunk(plan, chunk)
            seen = spy_chunks(engine)
            results = await engine.backup(tables, kind="delta", day=DAY1)
            assert ("orders", 0, True) in seen
            assert ("orders", 1, True) in seen
            assert ("orders", 2, False) in seen
            assert sum(1 for _, _, skipped in seen if skipped) == 2
            manifests = {m.plan.table: m for m, _ in results}
            for name in ("orders", "order_lines", "gl_entries"):
                manifest = manifests[name]
                assert len(manifest.parts) > 1, f"{name}: the delta should be split"
                directory = BackupDir.of(settings.backup_prefix, manifest.plan)
                assert [p.key for p in manifest.parts] == [
                    directory.part(c.chunk) for c in manifest.plan.chunks
                ]
                assert manifest.rows == sum(p.rows for p in manifest.parts)
            assert manifests["orders"].plan.plan_id == plan.plan_id, "the run was resumed"
            # A key's upsert and deletes share a part: order_lines by its leading key column.
            lines = manifests["order_lines"]
            seen_in: dict[int, int] = {}
            for part in lines.parts:
                data = await engine.store.get_bytes(part.key)
                assert data is not None
                for order_id in set(read_part(data).column("order_id").to_pylist()):
                    assert seen_in.setdefault(order_id, part.chunk) == part.chunk
            deletes = sum(p.ops.get("D", 0) for p in manifests["invoices"].parts)
            assert deletes > 0, "deletes must be captured"
            for name in DEMO_TABLES:
                report = await verify(engine, TableRef(erp.schema, name), day=DAY1)
                assert report.ok, report.lines
            await assert_restores_equal(stack, erp, Restorer(settings, s3), DAY1, expected)
        if credentials:
            await assert_sql_backup_policy_in_force(stack, erp, credentials)


class TestTruncate:
    @pytest.mark.slow
    @pytest.mark.timeout(240)
    async def test_a_truncate_is_captured_and_restore_does_not_resurrect_rows(
        self, stack: StackSettings, erp: Erp
    ) -> None:
        """Day 1: TRUNCATE orders and order_lines, insert a few rows (old keys too), delete
        one of them again; the delta (split in parts) carries a truncate marker per part, and
        restore as of day 1 equals the source; day 2's delta continues normally."""
        await generate(stack, erp)
        settings = settings_for(stack, erp, chunk_rows=2000, delta_chunk_rows=3)
        s = f'"{erp.schema}"'
        async with create_s3_client(stack.s3) as s3:
            engine = Engine(settings, s3)
            tables = await engine.discover()
            await engine.backup(tables, kind="full", day=DAY0)
            await generate(stack, erp, day=1)
            await run_sql(
                stack,
                f"TRUNCATE {s}.orders, {s}.order_lines",
                f"INSERT INTO {s}.orders SELECT i, 1, date '2026-05-02', 'new', i * 1.5, 'EUR', "
                "timestamp '2026-05-02 10:00:00', 'after truncate ' || i "
                "FROM generate_series(5, 20) AS i",
                f"INSERT INTO {s}.order_lines SELECT o, 1, 1, 1, 2.5, 2.5 "
                "FROM generate_series(5, 20) AS o",
                f"DELETE FROM {s}.orders WHERE id = 7",
            )
            expected1 = await source_state(stack, erp)
            assert len(expected1["orders"]) == 15
            results = await engine.backup(tables, kind="delta", day=DAY1)
            manifests = {m.plan.table: m for m, _ in results}
            for name in ("orders", "order_lines"):
                parts = manifests[name].parts
                assert len(parts) > 1
                assert all(p.ops.get("T") == 1 for p in parts), [p.ops for p in parts]
            assert not any(p.ops.get("T") for p in manifests["invoices"].parts)
            await generate(stack, erp, day=2)
            await run_sql(stack, f"UPDATE {s}.orders SET status = 'shipped' WHERE id = 5")
            expected2 = await source_state(stack, erp)
            results = await engine.backup(tables, kind="delta", day=DAY2)
            orders = next(m for m, _ in results if m.plan.table == "orders")
            assert not any(p.ops.get("T") for p in orders.parts), "a truncate is emitted once"
            await assert_restores_equal(stack, erp, Restorer(settings, s3), DAY1, expected1)
            await assert_restores_equal(stack, erp, Restorer(settings, s3), DAY2, expected2)


class TestResnapshot:
    @pytest.mark.slow
    @pytest.mark.timeout(180)
    async def test_a_delta_the_source_cannot_answer_rereads_and_replaces_the_table(
        self, stack: StackSettings, erp: Erp, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The mssql path on the real stack: when the dialect says the changes since the last
        run are lost (SQL Server after a TRUNCATE), the delta re-reads the table in chunks and
        restore replaces the table with it, so rows removed without a trace do not come back."""
        await generate(stack, erp)
        settings = settings_for(stack, erp, chunk_rows=300)
        s = f'"{erp.schema}"'
        async with create_s3_client(stack.s3) as s3:
            engine = Engine(settings, s3)
            tables = await engine.discover([f"{erp.schema}.orders"])
            await engine.backup(tables, kind="full", day=DAY0)
            # Rows removed behind change capture's back, like a TRUNCATE under Change Tracking.
            await run_sql(
                stack,
                f"ALTER TABLE {s}.orders DISABLE TRIGGER USER",
                f"DELETE FROM {s}.orders WHERE id % 3 = 0",
                f"ALTER TABLE {s}.orders ENABLE TRIGGER USER",
                f"UPDATE {s}.orders SET status = 'shipped' WHERE id % 10 = 1",
            )

            def check(table: TableInfo) -> Query:
                del table
                return Query("SELECT 0")

            def lost(since: str, value: object) -> bool:
                del since, value
                return False

            monkeypatch.setattr(engine.dialect, "delta_check", check)
            monkeypatch.setattr(engine.dialect, "delta_possible", lost)
            [(manifest, _)] = await engine.backup(tables, kind="delta", day=DAY1)
            assert manifest.plan.snapshot
            assert len(manifest.parts) > 1
            assert all(not p.ops for p in manifest.parts)
            report = await verify(engine, tables[0].ref, day=DAY1)
            assert report.ok, report.lines
            target = TableRef(erp.target_schema, "orders")
            restored_report = await Restorer(settings, s3).restore(
                tables[0].ref, day=DAY1, target=target
            )
            # The re-snapshot replaces everything before it: the restore starts there.
            assert restored_report.runs == (f"{DAY1}/delta",)
        expected = (await source_state(stack, erp))["orders"]
        restored = await rows_of(stack.warehouse, target.schema, target.name)
        assert [tuple(r) for r in restored] == expected
