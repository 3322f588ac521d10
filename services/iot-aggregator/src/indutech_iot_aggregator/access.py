"""Opening the warehouse sink as the settings say, for the commands that are not the worker
(``migrate``, ``rebuild``): the worker adopts the same pieces one by one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from indutech_common.s3 import create_s3_client
from indutech_iot_aggregator.config import IotAggregatorSettings
from indutech_iot_aggregator.sinks.warehouse import Stager, WarehouseSink, open_sink


@asynccontextmanager
async def opened_sink(settings: IotAggregatorSettings) -> AsyncIterator[WarehouseSink]:
    """The warehouse sink (with its S3 staging on Redshift), closed after the block."""
    async with AsyncExitStack() as stack:
        stager: Stager | None = None
        if settings.warehouse.dialect == "redshift" and settings.s3 is not None:
            s3 = await stack.enter_async_context(create_s3_client(settings.s3))
            stager = settings.stager_for(s3)
        sink = await open_sink(settings.warehouse, schema=settings.warehouse_schema, stager=stager)
        stack.push_async_callback(sink.close)
        yield sink
