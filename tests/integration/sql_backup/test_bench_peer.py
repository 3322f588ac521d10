"""The benchmark's peer (bench/sql_backup.py): psql processes copying the plan's key ranges
at once read exactly the table's rows, each once."""

from __future__ import annotations

import asyncio
import io
from datetime import date
from pathlib import Path

from bench.sql_backup import psql_ranges
from indutech_common.s3 import create_s3_client
from indutech_common.warehouse import connect_warehouse
from indutech_sql_backup.engine import Engine
from tests.integration.sql_backup.conftest import Erp, erp_database, generate, settings_for
from tests.support.stack import StackSettings


class TestPsqlRanges:
    async def test_parallel_ranges_copy_the_table_once(
        self, stack: StackSettings, erp: Erp, tmp_path: Path
    ) -> None:
        """Two psql processes over a plan of several chunks write the bytes of one COPY of
        the whole table: no range lost, none read twice."""
        await generate(stack, erp)
        settings = settings_for(stack, erp, chunk_rows=400)
        async with create_s3_client(stack.s3) as s3:
            engine = Engine(settings, s3)
            tables = await engine.discover([f"{erp.schema}.order_lines"])
            plan, status = await engine.plan(tables[0], kind="full", day=date(2026, 4, 1))
        assert status == "new"
        assert len(plan.chunks) >= 3

        seconds, size = await asyncio.to_thread(psql_ranges, stack.erp, plan, 2, tmp_path)

        whole = io.BytesIO()
        connection = await connect_warehouse(erp_database(stack))
        try:
            await connection.copy_from_query(
                f'SELECT * FROM "{erp.schema}".order_lines',  # noqa: S608 - the test's own schema
                output=whole,
            )
        finally:
            await connection.close()
        assert size == len(whole.getvalue())
        assert seconds > 0
        left = await asyncio.to_thread(lambda: list(tmp_path.glob("*.out")))
        assert left == []  # the copies are removed after counting
