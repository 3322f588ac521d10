"""The warehouse's query queue (the seed's "> 100 queued queries"), asked of the warehouse.

Redshift queues queries in WLM: ``STV_WLM_QUERY_STATE`` lists each query with a
state that starts ``Queued`` while it waits for a slot. PostgreSQL (our local
stand-in) has no WLM; the nearest meaning is a query that is running but waits
on a lock, or a backend waiting for a connection slot is not visible at all, so
locally "queued" is ``pg_stat_activity`` rows in state ``active`` waiting on a
``Lock``. Both report running queries too.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from indutech_common.settings import WarehouseSettings
from indutech_common.warehouse import connect_warehouse
from indutech_metrics_shipper.convert import Datum

if TYPE_CHECKING:
    import asyncpg

QUEUED = "indutech_warehouse_queued_queries"
RUNNING = "indutech_warehouse_running_queries"

# CASE sums, not FILTER: Redshift has no aggregate FILTER clause.
QUERIES = {
    "redshift": (
        "SELECT"
        " SUM(CASE WHEN state LIKE 'Queued%' THEN 1 ELSE 0 END) AS queued,"
        " SUM(CASE WHEN state = 'Running' THEN 1 ELSE 0 END) AS running"
        " FROM stv_wlm_query_state"
    ),
    "postgres": (
        "SELECT"
        " SUM(CASE WHEN wait_event_type = 'Lock' THEN 1 ELSE 0 END) AS queued,"
        " COUNT(*) AS running"
        " FROM pg_stat_activity"
        " WHERE backend_type = 'client backend' AND state = 'active' AND pid <> pg_backend_pid()"
    ),
}


class WarehouseQueueSource:
    """One query a cycle on one connection kept open (a new TLS handshake each minute is waste)."""

    name = "warehouse-queue"

    def __init__(self, settings: WarehouseSettings) -> None:
        self._settings = settings
        self._connection: asyncpg.Connection | None = None

    async def _conn(self) -> asyncpg.Connection:
        if self._connection is None or self._connection.is_closed():
            self._connection = await connect_warehouse(self._settings)
        return self._connection

    async def read(self) -> list[Datum]:
        try:
            row = await (await self._conn()).fetchrow(QUERIES[self._settings.dialect])
        except Exception:
            await self.close()  # a broken connection is opened anew next cycle
            raise
        now = time.time()
        dims = (("dialect", self._settings.dialect),)
        assert row is not None  # noqa: S101 - an aggregate always returns one row
        return [
            # SUM over no rows is NULL: an empty queue
            Datum(QUEUED, dims, now, "Count", value=float(row["queued"] or 0)),
            Datum(RUNNING, dims, now, "Count", value=float(row["running"] or 0)),
        ]

    async def ping(self) -> None:
        await (await self._conn()).fetchval("SELECT 1")

    async def close(self) -> None:
        if self._connection is not None and not self._connection.is_closed():
            await self._connection.close()
        self._connection = None
