"""The warehouse queue read from the real PostgreSQL: a query waiting on a lock is queued."""

from __future__ import annotations

import asyncio

import sqlglot

from indutech_common.warehouse import connect_warehouse
from indutech_metrics_shipper.sources import WarehouseQueueSource
from indutech_metrics_shipper.sources.warehouse_queue import QUERIES
from tests.support.stack import StackSettings


class TestWarehouseQueue:
    async def test_a_query_waiting_on_a_lock_is_counted_queued(
        self, stack: StackSettings, unique: str
    ) -> None:
        table = f"public.queue_{unique}"
        holder = await connect_warehouse(stack.warehouse)
        waiter = await connect_warehouse(stack.warehouse)
        source = WarehouseQueueSource(stack.warehouse)
        try:
            await holder.execute(f"CREATE TABLE {table} (id int)")
            transaction = holder.transaction()
            await transaction.start()
            await holder.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            blocked = asyncio.create_task(waiter.fetch(f"SELECT * FROM {table}"))  # noqa: S608
            for _ in range(50):  # until the waiter is seen waiting (a few ms)
                after = {d.name: d.value or 0.0 for d in await source.read()}
                if after["indutech_warehouse_queued_queries"] >= 1:
                    break
                await asyncio.sleep(0.05)
            await transaction.rollback()
            await blocked
        finally:
            await source.close()
            await holder.execute(f"DROP TABLE IF EXISTS {table}")
            await holder.close()
            await waiter.close()
        assert after["indutech_warehouse_queued_queries"] >= 1
        assert after["indutech_warehouse_running_queries"] >= 1

    def test_the_redshift_query_is_redshift(self) -> None:
        parsed = sqlglot.parse_one(QUERIES["redshift"], read="redshift")
        table = parsed.find(sqlglot.exp.Table)
        assert table is not None
        assert table.name == "stv_wlm_query_state"
        assert "FILTER" not in QUERIES["redshift"].upper()  # Redshift has no FILTER clause
