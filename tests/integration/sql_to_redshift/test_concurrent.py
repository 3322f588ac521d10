"""Two loaders of different tables at once (the worker's order_lines, an operator's
``load --table orders``) both refresh ``fact_order_line``: the model lock makes one wait
for the other's commit, so the fact equals the source joined the same way, no duplicates."""

from __future__ import annotations

import asyncio

import pytest

from indutech_sql_to_redshift.cli import opened
from indutech_sql_to_redshift.config import SqlToRedshiftSettings
from indutech_sql_to_redshift.sinks.warehouse import Applied
from tests.integration.sql_to_redshift.conftest import (
    Backups,
    Names,
    fetch,
    load_all,
    loader_settings,
    night,
)
from tests.integration.sql_to_redshift.test_nightly import LINES_FACT, LINES_SOURCE
from tests.support.stack import StackSettings

TABLES = ("customers", "order_lines", "orders", "products")


async def load_meeting(
    settings: SqlToRedshiftSettings, table: str, barrier: asyncio.Barrier
) -> list[Applied]:
    """``load --table``, whose night waits inside its transaction, right before the model
    refresh, until the other loader's night is there too: the race made certain."""

    async def meet(_: str) -> None:
        async with asyncio.timeout(60):
            await barrier.wait()

    async with opened(settings) as loading:
        loading.sink.before_refresh = meet
        return await loading.load_table(table)


class TestTwoTablesAtOnce:
    @pytest.mark.slow
    @pytest.mark.timeout(300)
    async def test_two_loaders_refreshing_one_fact_leave_no_duplicates(
        self, stack: StackSettings, names: Names
    ) -> None:
        backups = Backups(stack, names, TABLES)
        settings = loader_settings(stack, names)
        await backups.full()
        assert (await load_all(settings)).ok
        await backups.delta(1)
        assert (await load_all(settings, only=("customers", "products"))).ok
        barrier = asyncio.Barrier(2)
        lines, orders = await asyncio.gather(
            load_meeting(settings, "order_lines", barrier),
            load_meeting(settings, "orders", barrier),
        )
        assert [(a.table, a.night.day, a.models) for a in lines + orders] == [
            ("order_lines", night(1), ("fact_order_line",)),
            ("orders", night(1), ("fact_order_line",)),
        ]
        m = names.models
        duplicates = await fetch(
            stack,
            f"SELECT order_id, line_no, count(*) FROM {m}.fact_order_line "  # noqa: S608
            "GROUP BY 1, 2 HAVING count(*) > 1 LIMIT 5",
        )
        assert duplicates == []
        expected = await fetch(stack, LINES_SOURCE.format(s=names.erp.schema), source=True)
        assert expected
        assert await fetch(stack, LINES_FACT.format(m=m)) == expected
