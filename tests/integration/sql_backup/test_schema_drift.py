# ruff: noqa: S608 - SQL built from the test's own quoted schema name and constants
"""Schema drift on the real ERP: a column added, dropped or retyped after the full makes the
next nightly delta of that table a re-snapshot (logged with the columns), verify passes, and
a restore as of each day has the source's columns and types exactly, row for row."""

from __future__ import annotations

import asyncio
from datetime import date

import pytest
import structlog.testing

from indutech_common.s3 import create_s3_client
from indutech_common.settings import WarehouseSettings
from indutech_common.warehouse import connect_warehouse
from indutech_sql_backup.dialects import PostgresDialect, TableRef
from indutech_sql_backup.engine import Engine
from indutech_sql_backup.restore import Restorer
from indutech_sql_backup.sources import OdbcSource
from indutech_sql_backup.verify import verify
from tests.integration.sql_backup.conftest import (
    Erp,
    erp_database,
    generate,
    rows_of,
    settings_for,
)
from tests.support.stack import StackSettings

DAY0 = date(2026, 6, 1)


async def run_sql(stack: StackSettings, *statements: str) -> None:
    source = OdbcSource(stack.erp, PostgresDialect())
    await asyncio.to_thread(source.execute, list(statements))


async def columns_of(settings: WarehouseSettings, table: TableRef) -> list[tuple[str, str, bool]]:
    """(name, type, NOT NULL) in table order, as the catalogue says."""
    connection = await connect_warehouse(settings)
    try:
        rows = await connection.fetch(
            "SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute "
            "WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            f'"{table.schema}"."{table.name}"',
        )
    finally:
        await connection.close()
    return [(r[0], r[1], r[2]) for r in rows]


class TestSchemaDrift:
    @pytest.mark.slow
    @pytest.mark.timeout(240)
    async def test_add_drop_and_retype_each_resnapshot_and_restore_the_current_schema(
        self, stack: StackSettings, erp: Erp
    ) -> None:
        await generate(stack, erp)
        settings = settings_for(stack, erp, chunk_rows=20)
        source = TableRef(erp.schema, "products")
        products = f'"{erp.schema}".products'
        steps = [
            (
                [
                    f"ALTER TABLE {products} ADD COLUMN color varchar(12)",
                    f"UPDATE {products} SET color = 'red' WHERE id % 3 = 0",
                ],
                "added",
                ["color"],
            ),
            (
                [
                    f"ALTER TABLE {products} DROP COLUMN weight_kg",
                    f"UPDATE {products} SET name = name || ' v2' WHERE id % 5 = 0",
                ],
                "dropped",
                ["weight_kg"],
            ),
            (
                [f"ALTER TABLE {products} ALTER COLUMN unit_price TYPE numeric(14,5)"],
                "changed",
                ["unit_price: numeric(12,4) NOT NULL → numeric(14,5) NOT NULL"],
            ),
        ]
        async with create_s3_client(stack.s3) as s3:
            engine = Engine(settings, s3)
            restorer = Restorer(settings, s3)

            async def restore_equals_source(day: date) -> None:
                target = TableRef(erp.target_schema, f"products_{day:%m%d}")
                await restorer.restore(source, day=day, target=target)
                assert await columns_of(stack.warehouse, target) == await columns_of(
                    erp_database(stack), source
                ), f"columns as of {day}"
                restored = await rows_of(stack.warehouse, target.schema, target.name)
                expected = await rows_of(erp_database(stack), source.schema, source.name)
                assert [tuple(r) for r in restored] == [tuple(r) for r in expected]
                report = await verify(engine, source, day=day)
                assert report.ok, report.lines

            tables = await engine.discover([source.qualified])
            await engine.backup(tables, kind="full", day=DAY0)
            for offset, (statements, field, named) in enumerate(steps, start=1):
                day = date(2026, 6, 1 + offset)
                await run_sql(stack, *statements)
                tables = await engine.discover([source.qualified])  # the table as it is now
                with structlog.testing.capture_logs() as logs:
                    [(manifest, _)] = await engine.backup(tables, kind="delta", day=day)
                drift = [e for e in logs if e["event"] == "schema_drift"]
                assert len(drift) == 1, logs
                assert drift[0][field] == named
                assert drift[0]["action"] == "snapshot"
                assert manifest.plan.snapshot, "a new full of the table, as that day's delta"
                assert manifest.plan.snapshot_reason is not None
                assert len(manifest.parts) > 1
                await restore_equals_source(day)
            # A day without DDL: a delta of changes again, on the new columns.
            await run_sql(
                stack,
                f"INSERT INTO {products} (id, sku, name, unit_price, discontinued, color) "
                f"SELECT max(id) + 1, 'NEW-1', 'new', 1.23456, false, 'blue' FROM {products}",
                f"UPDATE {products} SET color = 'green' WHERE id % 7 = 0",
                f"DELETE FROM {products} WHERE id % 11 = 0",
            )
            tables = await engine.discover([source.qualified])
            with structlog.testing.capture_logs() as logs:
                [(manifest, _)] = await engine.backup(tables, kind="delta", day=date(2026, 6, 5))
            assert not [e for e in logs if e["event"] == "schema_drift"]
            assert manifest.plan.reads_changes
            assert manifest.plan.position_from is not None
            await restore_equals_source(date(2026, 6, 5))
